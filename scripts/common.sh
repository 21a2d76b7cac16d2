# shellcheck shell=bash
# Helpers shared by scripts/load.sh and scripts/probe.sh; sourced, not run:
#   . "$(dirname "$0")/common.sh"
#
# Provides:
#   say MSG...               MSG on stderr
#   die MSG...               "<script name>: MSG" on stderr, then exit 1
#   find_tool NAME           the path of NAME (on PATH, or /usr/sbin/NAME), or nothing
#   apt_install PKG...       apt-get install -y PKG... (through sudo unless root; apt-get
#                            update first if the install fails)
#   require_found VAR...     dies "cannot find <var>" for each VAR that is empty
#   need_commands CMD...     dies "<cmd> is needed" for each CMD not on PATH
#   free_port VAR            a free port in 20000-31999, below the ephemeral range
#   wait_http URL WHAT [curl options...]
#                            waits up to 15 s for URL to answer with any HTTP status
#   cleanup                  stops every pid in PIDS and removes $TMP
#   cleanup_on_exit          sets the traps that run cleanup on exit and on INT/TERM
#   stop_pid PID             stops a process started here and forgets it
#   start_redis              redis-server without persistence on a free port (REDIS_PORT),
#                            under $TMP, stopped by cleanup
# and the variables PIDS (the processes started by the script, stopped by cleanup) and TAKEN
# (the ports free_port has handed out). Sourcing it only defines these; the script sets TMP
# (a temporary directory) before it calls cleanup_on_exit.

say() { printf '%s\n' "$*" >&2; }
die() {
    say "${0##*/}: $*"
    exit 1
}

# --- Tools -------------------------------------------------------------------------------

find_tool() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true; }

apt_install() {
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    say "installing: $*"
    "${sudo[@]}" apt-get install -y "$@" >&2 ||
        { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y "$@" >&2; }
}

# require_found VAR...: each VAR holds a path found by find_tool; dies naming the first empty one.
require_found() {
    local tool
    for tool in "$@"; do
        [ -n "${!tool}" ] || die "cannot find ${tool,,}"
    done
}

need_commands() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is needed"
    done
}

# --- Processes and clean-up --------------------------------------------------------------

PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}

cleanup_on_exit() {
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# stop_pid PID: stops a process started here and forgets it.
stop_pid() {
    local pid keep=()
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do
        [ "$pid" = "$1" ] || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
}

# free_port VAR: stores in VAR a port nothing listens on now and that this script has not
# handed out yet (there is a small window before our server binds it).
TAKEN=" "
free_port() {
    local port used
    used=$(ss -Htln 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -u || true)
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 12000)) # below the ephemeral range the clients use
        if ! grep -qx "$port" <<<"$used" && [[ "$TAKEN" != *" $port "* ]]; then
            TAKEN="$TAKEN$port "
            printf -v "$1" '%s' "$port"
            return
        fi
    done
    die "no free port found"
}

# wait_http URL WHAT [curl options...]: waits until URL answers with any HTTP status, up to 15 s.
wait_http() {
    local url=$1 what=$2
    shift 2
    for _ in $(seq 1 150); do
        if curl -s -o /dev/null --max-time 1 "$@" "$url"; then
            return
        fi
        sleep 0.1
    done
    die "$what did not come up at $url (logs in $TMP)"
}

# start_redis: a redis-server without persistence on a free port (REDIS_PORT), under $TMP,
# stopped on exit; waits up to 15 s for it to answer. Needs REDIS_SERVER and REDIS_CLI.
start_redis() {
    free_port REDIS_PORT
    "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$TMP" --logfile "$TMP/redis.log" &
    PIDS+=($!)
    for _ in $(seq 1 150); do
        "$REDIS_CLI" -p "$REDIS_PORT" ping >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "redis-server did not start"
}
