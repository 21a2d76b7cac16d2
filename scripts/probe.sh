#!/usr/bin/env bash
# The attack probes of issue 9: stickless next to nginx as a plain reverse proxy, with the
# memory each proxy uses before, during and after each attack.
#
# Starts, on free ports on 127.0.0.1, under a temporary directory:
#   - redis-server (no persistence), the session store,
#   - nginx as the backend: `/` answers a short 200, `/big` is a 2 MB static file, `/post`
#     reads the whole request body (it proxies it to itself) before it answers 200,
#   - nginx as a plain reverse proxy in front of it: 2 workers, default timeouts and
#     buffering (slow readers' responses go to temporary files), pooled keep-alive upstream
#     connections, HTTP/1.1 on one port and h2c on another (nginx 1.22 speaks only HTTP/2 on
#     a cleartext `http2` port); `keepalive_requests` is raised so that h2load's connections
#     are not ended after nginx's default 1,000 requests, and a buffered one-field access log
#     counts its status codes,
#   - stickless (BIN, not built here) in front of the same backend, route `/` with
#     `session: on`, default timeouts except `timeouts.client_write_idle` and
#     `timeouts.upstream_read_idle`, set only when BIN knows them (`stickless check`).
# Then runs each probe against the nginx proxy, then against stickless, same parameters:
#   H     slowhttptest -H: slowloris, request heads sent a header line every 10 s
#   B     slowhttptest -B: slow POST bodies to /post
#   X     slowhttptest -X: slow read of /big through a 10-20 byte receive window
#   R     slowhttptest -R: range attack (Apache killer): HEAD /big with 1,000 overlapping
#         ranges (-b 1000 keeps the header under nginx's 8 KB line limit, so both proxies
#         pass it to the backend instead of answering 400)
#   idle  IDLE_CONNECTIONS keep-alive connections, one GET each, then held idle HOLD s
#   h2    h2load, h2c with prior knowledge, on `/`
# and measures each proxy's resident memory (VmRSS; for nginx the master plus its workers):
# before (just before the attack), peak (sampled every 150 ms from the attack's start until
# the after sample), after (AFTER_WAIT s after the attack tool has exited and closed its
# connections), plus the client and upstream connections left and the open file descriptors.
# With RESTART=1 (the default) both proxies are started afresh before each probe, so each
# probe's figures do not depend on the ones before it; RESTART=0 keeps them running through.
# Prints one line per probe and proxy, then each attack tool's own summary (connections,
# service availability, requests/s), the status codes the proxy answered, and its new log lines.
#
# The goal (issue 9): stickless' peak within 2x nginx's, and its RSS back within 20% of its
# start after each attack.
#
# Everything started here is stopped on exit. Bounded: about 6 minutes with the defaults (each
# slowhttptest probe at most DURATION + AFTER_WAIT s per proxy; every attack is capped with
# `timeout`).
# Needs ulimit -n of at least max(IDLE_CONNECTIONS, 3 x CONNECTIONS) + 1024: it raises the
# soft limit to 65536, or to the hard limit when that is lower, and stops if that is too low.
#
# Usage: scripts/probe.sh   (env: BIN=target/release/stickless CONNECTIONS=1000 RATE=200
#                             DURATION=30 IDLE_CONNECTIONS=5000 HOLD=15 AFTER_WAIT=10
#                             H2_REQUESTS=200000 H2_CLIENTS=100 H2_STREAMS=10
#                             PROBES="H B X R idle h2" RESTART=1
#                             CLIENT_WRITE_IDLE=10s UPSTREAM_READ_IDLE=10s)

set -euo pipefail

# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "$0")/common.sh"

cd "$(dirname "$0")/.."
ROOT=$(pwd)

BIN=${BIN:-$ROOT/target/release/stickless}
CONNECTIONS=${CONNECTIONS:-1000}
RATE=${RATE:-200}
DURATION=${DURATION:-30}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-5000}
HOLD=${HOLD:-15}
AFTER_WAIT=${AFTER_WAIT:-10}
H2_REQUESTS=${H2_REQUESTS:-200000}
H2_CLIENTS=${H2_CLIENTS:-100}
H2_STREAMS=${H2_STREAMS:-10}
PROBES=${PROBES:-H B X R idle h2}
RESTART=${RESTART:-1}
CLIENT_WRITE_IDLE=${CLIENT_WRITE_IDLE:-10s}
UPSTREAM_READ_IDLE=${UPSTREAM_READ_IDLE:-10s}

for probe in $PROBES; do
    case $probe in
    H | B | X | R | idle | h2) ;;
    *) die "unknown probe '$probe' in PROBES (known: H B X R idle h2)" ;;
    esac
done
for knob in CONNECTIONS RATE DURATION IDLE_CONNECTIONS HOLD AFTER_WAIT H2_REQUESTS H2_CLIENTS H2_STREAMS RESTART; do
    [[ "${!knob}" =~ ^[0-9]+$ ]] || die "$knob must be a whole number (seconds for the durations), not '${!knob}'"
done
[ -x "$BIN" ] || die "BIN=$BIN is not an executable (build it first: cargo build --release)"

# --- Tools -------------------------------------------------------------------------------

missing=()
[ -n "$(find_tool slowhttptest)" ] || missing+=(slowhttptest)
[ -n "$(find_tool h2load)" ] || missing+=(nghttp2-client)
[ -n "$(find_tool redis-server)" ] || missing+=(redis-server)
[ -n "$(find_tool nginx)" ] || missing+=(nginx-light)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
# Debian 12's nginx-light has the HTTP/2 module (h2load needs it); if this nginx lacks it,
# nginx-core has it.
if ! "$(find_tool nginx)" -V 2>&1 | grep -- --with-http_v2_module >/dev/null; then
    apt_install nginx-core
fi
SLOWHTTPTEST=$(find_tool slowhttptest)
H2LOAD=$(find_tool h2load)
REDIS_SERVER=$(find_tool redis-server)
REDIS_CLI=$(find_tool redis-cli)
NGINX=$(find_tool nginx)
PYTHON=$(find_tool python3)
require_found SLOWHTTPTEST H2LOAD REDIS_SERVER REDIS_CLI NGINX PYTHON
"$NGINX" -V 2>&1 | grep -- --with-http_v2_module >/dev/null || die "$NGINX has no HTTP/2 module"
need_commands curl ss timeout ps

# --- File descriptors --------------------------------------------------------------------

max() { if [ "$1" -gt "$2" ]; then echo "$1"; else echo "$2"; fi; }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

# The most any one process holds: the idle client (all its connections), or an nginx worker
# that took every slow reader (client socket, upstream socket and temporary file each).
NOFILE_NEEDED=$(($(max "$IDLE_CONNECTIONS" $((3 * CONNECTIONS))) + 1024))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
if [ "$NOFILE" -lt "$NOFILE_NEEDED" ]; then
    die "ulimit -n is $NOFILE (hard limit $(ulimit -Hn)) and cannot be raised to the $NOFILE_NEEDED these probes need; raise the hard limit (root, limits.conf, LimitNOFILE) or lower IDLE_CONNECTIONS/CONNECTIONS"
fi
[ "$NOFILE" -ge 65536 ] || say "note: ulimit -n is $NOFILE (the hard limit), not 65536; enough for these probes ($NOFILE_NEEDED)"
# Per nginx worker: every client of the largest probe plus an upstream connection each.
WORKER_CONNECTIONS=$(min $(($(max "$IDLE_CONNECTIONS" $((2 * CONNECTIONS))) + 1024)) "$NOFILE")
MAX_CONNECTIONS=$(min 20000 $((NOFILE - 1024)))

# --- Processes and clean-up --------------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/stickless-probe.XXXXXX")
# nginx started as root runs its workers as nobody: they must be able to read /big and to
# use the temporary directories below.
chmod 755 "$TMP"
cleanup_on_exit

# nginx_head DIR WORKERS: the settings every nginx here shares (the file up to `http {`).
nginx_head() {
    local dir=$1 workers=$2
    cat <<EOF
daemon off;
worker_processes $workers;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $WORKER_CONNECTIONS; }
http {
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
EOF
}

start_nginx() {
    local dir=$1
    "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" 2>"$dir/stderr.log" &
    PIDS+=($!)
}

# --- Redis -------------------------------------------------------------------------------

start_redis

# --- nginx backend -----------------------------------------------------------------------

free_port BACKEND_PORT
mkdir -p "$TMP/backend" "$TMP/www"
head -c $((2 * 1024 * 1024)) /dev/urandom >"$TMP/www/big"
{
    nginx_head "$TMP/backend" 1
    cat <<EOF
    access_log off;
    default_type application/octet-stream;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location = /big { root $TMP/www; }
        # \`return\` alone would answer before the body has arrived (nginx discards it
        # lazily); proxying to itself makes nginx read the whole body first, as an
        # application would.
        location = /post { proxy_pass http://127.0.0.1:$BACKEND_PORT/post-read; }
        location = /post-read { return 200 "ok\n"; }
        location / { return 200 "hello from the backend\n"; }
    }
}
EOF
} >"$TMP/backend/nginx.conf"
start_nginx "$TMP/backend"
wait_http "http://127.0.0.1:$BACKEND_PORT/" "nginx (backend)"
# check_paths URL WHAT: /big, /post and / answer as they should through URL.
check_paths() {
    local url=$1 what=$2 got
    got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$url/big")
    [ "$got" = "200 2097152" ] || die "GET /big from $what: $got, not 200 with 2 MB (logs in $TMP)"
    got=$(curl -s -X POST --data-binary hello "$url/post")
    [ "$got" = ok ] || die "POST /post to $what: '$got', not ok (logs in $TMP)"
    got=$(curl -s "$url/")
    [ "$got" = "hello from the backend" ] || die "GET / from $what: '$got' (logs in $TMP)"
}
check_paths "http://127.0.0.1:$BACKEND_PORT" "the backend"

# --- The proxies --------------------------------------------------------------------------

# The two write/read idle timeouts are new: set each only if this binary accepts it.
TIMEOUTS=""
for setting in "client_write_idle:$CLIENT_WRITE_IDLE" "upstream_read_idle:$UPSTREAM_READ_IDLE"; do
    key=${setting%%:*} value=${setting#*:}
    cat >"$TMP/try.yaml" <<EOF
store: { url: "redis://127.0.0.1:$REDIS_PORT/0" }
timeouts: { $key: "$value" }
routes: [ { match: { path_prefix: "/" }, upstreams: ["http://127.0.0.1:$BACKEND_PORT"] } ]
EOF
    if "$BIN" check --config "$TMP/try.yaml" >/dev/null 2>&1; then
        TIMEOUTS+="  $key: \"$value\""$'\n'
    else
        say "note: $BIN does not know timeouts.$key; left out"
    fi
done

# start_proxies: nginx as a plain reverse proxy (the baseline) and stickless, each on new
# ports, in front of the backend; sets NGINX_PID, NGINX_PORT, NGINX_H2_PORT, STICKLESS_PID,
# PROXY_PORT, ADMIN_PORT.
start_proxies() {
    free_port NGINX_PORT
    free_port NGINX_H2_PORT
    mkdir -p "$TMP/nginx"
    {
        nginx_head "$TMP/nginx" 2
        cat <<EOF
    log_format status '\$status';
    access_log $TMP/nginx/access.log status buffer=64k flush=1s;
    keepalive_requests 1000000;
    upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        listen 127.0.0.1:$NGINX_H2_PORT http2;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
    } >"$TMP/nginx/nginx.conf"
    start_nginx "$TMP/nginx"
    NGINX_PID=${PIDS[-1]}
    wait_http "http://127.0.0.1:$NGINX_PORT/" "nginx (proxy)"
    wait_http "http://127.0.0.1:$NGINX_H2_PORT/" "nginx (proxy, h2c)" --http2-prior-knowledge
    check_paths "http://127.0.0.1:$NGINX_PORT" "nginx (proxy)"

    free_port PROXY_PORT
    free_port ADMIN_PORT
    cat >"$TMP/proxy.yaml" <<EOF
listen: "127.0.0.1:$PROXY_PORT"
admin:
  listen: "127.0.0.1:$ADMIN_PORT"
store:
  url: "redis://127.0.0.1:$REDIS_PORT/0"
  key_prefix: "stickless-probe"
session:
  cookie:
    secure: false   # plain http on loopback
limits:
  max_connections: $MAX_CONNECTIONS
${TIMEOUTS:+timeouts:
$TIMEOUTS}routes:
  - match: { path_prefix: "/" }
    upstreams: ["http://127.0.0.1:$BACKEND_PORT"]
    session: "on"
EOF
    "$BIN" check --config "$TMP/proxy.yaml" >/dev/null || die "stickless refuses $TMP/proxy.yaml"
    STICKLESS_LOG=warn "$BIN" run --config "$TMP/proxy.yaml" 2>>"$TMP/stickless.log" &
    PIDS+=($!)
    STICKLESS_PID=$!
    wait_http "http://127.0.0.1:$PROXY_PORT/" stickless
    wait_http "http://127.0.0.1:$PROXY_PORT/" "stickless (h2c)" --http2-prior-knowledge
    check_paths "http://127.0.0.1:$PROXY_PORT" stickless
}

# --- The idle-connections client ---------------------------------------------------------

cat >"$TMP/idle_conns.py" <<'EOF'
"""Opens COUNT keep-alive connections, sends one GET on each and reads its answer, holds them
all idle for HOLD seconds, then closes them. Prints one summary line starting with `idle:`."""
import asyncio
import sys
import time

HOST, PORT, COUNT, HOLD = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
PARALLEL = 200  # connection attempts in flight at once
REQUEST = f"GET / HTTP/1.1\r\nHost: {HOST}:{PORT}\r\nUser-Agent: probe-idle\r\n\r\n".encode()


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding") == b"chunked":
        await reader.readuntil(b"0\r\n\r\n")
    return status


async def one(limit, conns, stats):
    async with limit:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, PORT), 10)
        except (OSError, asyncio.TimeoutError):
            stats["connect errors"] += 1
            return
        conns.append((reader, writer))
        try:
            writer.write(REQUEST)
            status = await asyncio.wait_for(read_response(reader), 10)
            stats["answered %d" % status] = stats.get("answered %d" % status, 0) + 1
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            stats["request errors"] += 1


def gone(reader, writer):
    return reader.at_eof() or reader.exception() is not None or writer.transport.is_closing()


async def main():
    limit = asyncio.Semaphore(PARALLEL)
    conns, stats = [], {"connect errors": 0, "request errors": 0}
    start = time.monotonic()
    await asyncio.gather(*(one(limit, conns, stats) for _ in range(COUNT)))
    opened = time.monotonic() - start
    print(f"opened {len(conns)} in {opened:.1f} s; holding them {HOLD:g} s", flush=True)
    await asyncio.sleep(HOLD)
    closed_by_peer = sum(1 for reader, writer in conns if gone(reader, writer))
    for _, writer in conns:
        writer.close()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True), 10)
    except asyncio.TimeoutError:
        pass
    answers = ", ".join(f"{v} {k}" for k, v in sorted(stats.items()) if k.startswith("answered"))
    print(f"idle: {len(conns)}/{COUNT} connections opened in {opened:.1f} s, {answers or 'no answers'},"
          f" held {HOLD:g} s, {closed_by_peer} closed by the proxy meanwhile,"
          f" {stats['connect errors']} connect errors, {stats['request errors']} request errors",
          flush=True)


asyncio.run(main())
EOF

# --- Measuring ---------------------------------------------------------------------------

# proxy_pids KIND: the processes whose memory counts for that proxy.
proxy_pids() {
    case $1 in
    nginx) echo "$NGINX_PID" "$(ps -o pid= --ppid "$NGINX_PID" | paste -sd ' ')" ;;
    stickless) echo "$STICKLESS_PID" ;;
    esac
}
# rss_kb PID...: summed VmRSS in kB.
rss_kb() {
    local pid
    for pid in "$@"; do cat "/proc/$pid/status" 2>/dev/null || true; done |
        awk '/^VmRSS:/ { s += $2 } END { print s + 0 }'
}
# fd_count PID...: summed open file descriptors.
fd_count() {
    local pid n=0 fds
    for pid in "$@"; do
        fds=("/proc/$pid/fd/"*)
        [ -e "${fds[0]}" ] && n=$((n + ${#fds[@]}))
    done
    echo "$n"
}
# client_conns PORT: TCP connections on the proxy's side of PORT that are not closed yet
# (established, close-wait, ...; not the listener, not time-wait).
client_conns() {
    ss -Htn state connected exclude time-wait "( sport = :$1 )" 2>/dev/null | wc -l
}
# upstream_conns PID...: the connections those processes hold open to the backend (stickless'
# and nginx's pools of idle keep-alive connections included).
upstream_conns() {
    local pattern
    pattern=$(printf 'pid=%s,|' "$@")
    ss -Htnp state established "( dport = :$BACKEND_PORT )" 2>/dev/null | grep -cE "${pattern%|}" || true
}
# temp_kb DIR PID...: the size of the files under DIR that those processes hold open. nginx
# unlinks its temporary files as soon as it creates them, so they only show up here.
temp_kb() {
    local dir=$1 pid
    shift
    for pid in "$@"; do
        find "/proc/$pid/fd" -maxdepth 1 -lname "$dir/*" -print0 2>/dev/null |
            xargs -0 -r stat -L -c %s 2>/dev/null || true
    done | awk '{ s += $1 } END { print int(s / 1024) }'
}
# status_counts KIND: "code count" lines, the responses KIND has answered so far by status
# (nginx: its access log; stickless: stickless_requests_total).
status_counts() {
    case $1 in
    nginx)
        [ ! -f "$TMP/nginx/access.log" ] ||
            awk '{ n[$1]++ } END { for (c in n) print c, n[c] }' "$TMP/nginx/access.log"
        ;;
    stickless)
        curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" |
            awk '/^stickless_requests_total/ && match($0, /code="[0-9]+"/) {
                n[substr($0, RSTART + 6, RLENGTH - 7)] += $NF
            } END { for (c in n) print c, n[c] }' || true
        ;;
    esac
}
# status_delta BEFORE AFTER: the responses counted in AFTER but not yet in BEFORE (two
# status_counts outputs), as "200: 1000, 408: 3".
status_delta() {
    awk 'NR == FNR { b[$1] = $2; next }
        { d = $2 - b[$1]; if (d > 0) { printf "%s%s: %d", sep, $1, d; sep = ", " } }
        END { if (sep == "") printf "none" }' "$1" <(sort -n "$2")
}
log_file() { if [ "$1" = nginx ]; then echo "$TMP/nginx/error.log"; else echo "$TMP/stickless.log"; fi; }
# new_log_lines FILE OFFSET: how many lines FILE got past OFFSET bytes, and the first of them.
new_log_lines() {
    local lines
    lines=$(tail -c +$(($2 + 1)) "$1" | sed 's/\x1b\[[0-9;]*m//g')
    if [ -z "$lines" ]; then
        echo "no new log lines"
    else
        printf '+%s log lines, first: %s\n' "$(wc -l <<<"$lines")" \
            "$(head -n 1 <<<"$lines" | sed 's/^[0-9/]* [0-9:]* //; s/^[0-9T:.Z-]* *//; s/[0-9]*#[0-9]*: //; s/ request_id="[^"]*"//' | cut -c 1-240)"
    fi
}
# sampler OUT DIR PID...: appends the summed VmRSS to OUT every 150 ms, and every 1.5 s the
# size of the temporary files under DIR (nginx's buffered responses) to OUT.tmp, until killed.
sampler() {
    local out=$1 dir=$2 i=0
    shift 2
    while :; do
        rss_kb "$@" >>"$out"
        if [ -n "$dir" ] && [ $((i % 10)) -eq 0 ]; then
            temp_kb "$dir" "$@" >>"$out.tmp"
        fi
        i=$((i + 1))
        sleep 0.15
    done
}

declare -A BEFORE PEAK AFTER FDS_BEFORE FDS_AFTER LEFT UPSTREAM TEMP_PEAK SUMMARY ELAPSED STATUS LOGS
mkdir -p "$TMP/out"

# measure PROBE KIND PORT CAP CMD...: runs the attack CMD against KIND (output in
# $TMP/out/PROBE-KIND.log, at most CAP s) and records KIND's memory around it.
measure() {
    local probe=$1 kind=$2 port=$3 cap=$4
    shift 4
    local key="$probe/$kind" out="$TMP/out/$probe-$kind" pids sampler_pid start rc=0 dir="" log offset
    read -r -a pids <<<"$(proxy_pids "$kind")"
    [ "$kind" = nginx ] && dir="$TMP/nginx/proxy"
    log=$(log_file "$kind")
    offset=$(stat -c %s "$log" 2>/dev/null || echo 0)
    status_counts "$kind" >"$out.codes-before"
    BEFORE[$key]=$(rss_kb "${pids[@]}")
    FDS_BEFORE[$key]=$(fd_count "${pids[@]}")
    : >"$out.rss"
    sampler "$out.rss" "$dir" "${pids[@]}" &
    sampler_pid=$!
    PIDS+=("$sampler_pid")
    say "  $probe against $kind: $(basename "$1") (at most $cap s) ..."
    start=$SECONDS
    timeout --kill-after=5 "$cap" "$@" >"$out.log" 2>&1 || rc=$?
    ELAPSED[$key]=$((SECONDS - start))
    [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || echo "probe.sh: stopped by timeout after $cap s" >>"$out.log"
    sleep "$AFTER_WAIT"
    AFTER[$key]=$(rss_kb "${pids[@]}")
    FDS_AFTER[$key]=$(fd_count "${pids[@]}")
    LEFT[$key]=$(client_conns "$port")
    UPSTREAM[$key]=$(upstream_conns "${pids[@]}")
    stop_pid "$sampler_pid"
    status_counts "$kind" >"$out.codes-after"
    STATUS[$key]=$(status_delta "$out.codes-before" "$out.codes-after")
    LOGS[$key]=$(new_log_lines "$log" "$offset")
    PEAK[$key]=$({ cat "$out.rss"; echo "${BEFORE[$key]}"; echo "${AFTER[$key]}"; } | sort -n | tail -n 1)
    TEMP_PEAK[$key]=$({ cat "$out.rss.tmp" 2>/dev/null || true; echo 0; } | sort -n | tail -n 1)
    kill -0 "${pids[0]}" 2>/dev/null || die "$kind exited during probe $probe (logs in $TMP)"
    SUMMARY[$key]=$(summarize "$probe" "$out")
    say "    ${ELAPSED[$key]} s; RSS $(mb "${BEFORE[$key]}") -> peak $(mb "${PEAK[$key]}") -> $(mb "${AFTER[$key]}") MB; ${SUMMARY[$key]}; statuses ${STATUS[$key]}"
}

# summarize PROBE OUT: one line from the attack tool's own report.
summarize() {
    local probe=$1 out=$2 text
    case $probe in
    H | B | X | R)
        text=$(sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$out.log")
        # CSV columns: seconds, closed, pending, connected, service available (0 = not).
        awk -F, -v exit_status="$(sed -n 's/^Exit status: *//p' <<<"$text" | tail -n 1)" \
            -v errors="$(awk '/^error:/ { e = $2 } END { print e + 0 }' <<<"$text")" '
            NR > 1 { if ($4 > peak) peak = $4; if ($5 == 0) down++; closed = $2; connected = $4 }
            END {
                printf "slowhttptest: peak %d connected, at the end %d connected %d closed %d errors; service unavailable %d s; %s",
                    peak, connected, closed, errors, down, (exit_status == "" ? "no exit status" : exit_status)
            }' "$out.csv" 2>/dev/null || echo "slowhttptest: no report ($(tail -n 1 <<<"$text"))"
        ;;
    idle) grep '^idle:' "$out.log" | tail -n 1 || echo "idle: no summary ($(tail -n 1 "$out.log"))" ;;
    h2)
        awk '
            /^finished in/ { rps = $4 " req/s" }
            /^requests:/ { req = $2 " requests, " $8 " succeeded, " $10 " failed, " $12 " errored, " $14 " timeout" }
            /^status codes:/ { codes = $3 " 2xx, " $5 " 3xx, " $7 " 4xx, " $9 " 5xx" }
            END { printf "h2load: %s; %s; %s", (rps ? rps : "no req/s"), req, codes }' "$out.log"
        ;;
    esac
}

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# run_probe PROBE: the probe against nginx, then against stickless.
run_probe() {
    local probe=$1 kind port h2port url cap
    say "probe $probe"
    for kind in nginx stickless; do
        if [ "$kind" = nginx ]; then
            port=$NGINX_PORT h2port=$NGINX_H2_PORT
        else
            port=$PROXY_PORT h2port=$PROXY_PORT
        fi
        url="http://127.0.0.1:$port"
        cap=$((DURATION + 30))
        local slow=("$SLOWHTTPTEST" -c "$CONNECTIONS" -r "$RATE" -l "$DURATION" -p 5 -g -o "$TMP/out/$probe-$kind")
        case $probe in
        H) measure H "$kind" "$port" "$cap" "${slow[@]}" -H -i 10 -u "$url/" ;;
        B) measure B "$kind" "$port" "$cap" "${slow[@]}" -B -i 10 -s 4096 -u "$url/post" ;;
        X) measure X "$kind" "$port" "$cap" "${slow[@]}" -X -w 10 -y 20 -n 5 -z 32 -u "$url/big" ;;
        R) measure R "$kind" "$port" "$cap" "${slow[@]}" -R -a 5 -b 1000 -u "$url/big" ;;
        idle)
            measure idle "$kind" "$port" $((HOLD + 90)) \
                "$PYTHON" "$TMP/idle_conns.py" 127.0.0.1 "$port" "$IDLE_CONNECTIONS" "$HOLD"
            ;;
        h2)
            measure h2 "$kind" "$h2port" 120 \
                "$H2LOAD" -n "$H2_REQUESTS" -c "$H2_CLIENTS" -m "$H2_STREAMS" "http://127.0.0.1:$h2port/"
            ;;
        esac
    done
}

# --- Runs --------------------------------------------------------------------------------

STARTED=$SECONDS
first=1
for probe in $PROBES; do
    if [ "$first" = 1 ] || [ "$RESTART" = 1 ]; then
        if [ "$first" = 0 ]; then
            stop_pid "$NGINX_PID"
            stop_pid "$STICKLESS_PID"
        fi
        start_proxies
        say "started nginx proxy (pid $NGINX_PID) and stickless (pid $STICKLESS_PID, $BIN)"
    fi
    first=0
    run_probe "$probe"
done

# --- Report ------------------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }

describe() {
    case $1 in
    H) echo "slowhttptest -H -c $CONNECTIONS -r $RATE -l $DURATION -i 10 (slowloris) on /" ;;
    B) echo "slowhttptest -B -c $CONNECTIONS -r $RATE -l $DURATION -i 10 -s 4096 (slow body) on /post" ;;
    X) echo "slowhttptest -X -c $CONNECTIONS -r $RATE -l $DURATION -w 10 -y 20 -n 5 -z 32 (slow read) on /big (2 MB)" ;;
    R) echo "slowhttptest -R -c $CONNECTIONS -r $RATE -l $DURATION -a 5 -b 1000 (range attack: HEAD with 1,000 overlapping ranges) on /big" ;;
    idle) echo "$IDLE_CONNECTIONS keep-alive connections, one GET / each, held idle $HOLD s" ;;
    h2) echo "h2load -n $H2_REQUESTS -c $H2_CLIENTS -m $H2_STREAMS, h2c prior knowledge, on /" ;;
    esac
}

echo
echo "stickless attack probes (issue 9): $(nproc) CPUs, all on 127.0.0.1, ulimit -n $NOFILE, $((SECONDS - STARTED)) s of probes"
echo "stickless: $BIN ($("$BIN" --version 2>/dev/null || echo '?')), timeouts: $(if [ -n "$TIMEOUTS" ]; then tr -d '"' <<<"$TIMEOUTS" | paste -sd ',' | sed 's/  */ /g; s/^ //'; else echo "defaults (client_write_idle, upstream_read_idle unknown to this binary)"; fi), max_connections $MAX_CONNECTIONS"
echo "nginx: $("$NGINX" -v 2>&1 | sed 's/.*: //') as a plain reverse proxy, 2 workers, worker_connections $WORKER_CONNECTIONS (preallocated per worker), default timeouts and buffering"
echo "RSS: VmRSS in MB (nginx: master + workers); peak sampled every 150 ms from the attack's start to the after sample, taken $AFTER_WAIT s after the attack ended"
if [ "$RESTART" = 1 ]; then
    echo "both proxies started afresh before each probe (RESTART=1): 'before' is a new process"
else
    echo "both proxies kept running through all probes (RESTART=0): 'before' carries what the earlier probes left"
fi
echo
printf '%-5s %-10s %9s %9s %9s %11s %13s  %s\n' probe proxy "before MB" "peak MB" "after MB" "peak/nginx" "after/before" "left after the attack"
for probe in $PROBES; do
    for kind in nginx stickless; do
        key="$probe/$kind"
        note="${LEFT[$key]} client, ${UPSTREAM[$key]} upstream conns; fds ${FDS_BEFORE[$key]} -> ${FDS_AFTER[$key]}"
        [ "${TEMP_PEAK[$key]}" -gt 0 ] && note+="; temp files up to $(mb "${TEMP_PEAK[$key]}") MB"
        printf '%-5s %-10s %9s %9s %9s %11s %13s  %s\n' "$probe" "$kind" \
            "$(mb "${BEFORE[$key]}")" "$(mb "${PEAK[$key]}")" "$(mb "${AFTER[$key]}")" \
            "$(if [ "$kind" = stickless ]; then ratio "${PEAK[$key]}" "${PEAK[$probe/nginx]}"; else echo -; fi)" \
            "$(ratio "${AFTER[$key]}" "${BEFORE[$key]}")" "$note"
    done
done
echo
echo "what the attack tools saw; statuses: nginx's access log, stickless' stickless_requests_total (both count"
echo "slowhttptest's own probe requests too); log lines: nginx's error.log (warn), stickless' stderr (STICKLESS_LOG=warn)"
for probe in $PROBES; do
    echo "$probe: $(describe "$probe")"
    for kind in nginx stickless; do
        printf '  %-10s %3s s  %s\n' "$kind" "${ELAPSED[$probe/$kind]}" "${SUMMARY[$probe/$kind]}"
        printf '  %-10s        statuses %s; %s\n' "" "${STATUS[$probe/$kind]}" "${LOGS[$probe/$kind]}"
    done
done
goal_peak="" goal_after=""
for probe in $PROBES; do
    key="$probe/stickless"
    awk -v p="${PEAK[$key]}" -v n="${PEAK[$probe/nginx]}" 'BEGIN { exit !(p > 2 * n) }' && goal_peak+=" $probe"
    awk -v a="${AFTER[$key]}" -v b="${BEFORE[$key]}" 'BEGIN { exit !(a > 1.2 * b) }' && goal_after+=" $probe"
done
echo
echo "goal, stickless peak within 2x nginx's: ${goal_peak:+missed in}${goal_peak:-met in every probe}"
echo "goal, stickless RSS back within 20% of its start: ${goal_after:+missed in}${goal_after:-met in every probe}"
