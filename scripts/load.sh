#!/usr/bin/env bash
# Load test: stickless compared with a direct path to the same backend, in one run.
#
# Starts, all on 127.0.0.1 and on free ports:
#   - redis-server (no persistence),
#   - nginx as a tiny fast backend: `/` answers a short 200 body, `/login` answers 200 with
#     `X-Session-Set-User: alice` and `X-Session-Set-Role: admin` (so going through stickless
#     creates a two-attribute session), `/whoami` echoes the injected headers,
#   - stickless (release build) in front of nginx, with a `/plain` route (`session: off`) and
#     a `/` route (`session: on`).
# Then runs wrk against:
#   a. nginx directly,
#   b. stickless with the session cookie (one Redis read per request),
#   c. stickless without a cookie (anonymous: no Redis traffic),
#   d. stickless on the `session: off` route (the plain proxy path),
# and prints requests/s, each ratio to the direct figure, and Redis commands per request.
#
# Everything started here is stopped on exit. Bounded: about a minute plus the build.
#
# With SECRETS=1, stickless signs its cookies and seals values at rest (fresh random keys), so
# run b includes verifying the cookie and opening the two values.
#
# With BASELINE=/path/to/another/stickless (an older build, say), that binary runs beside this
# one with the same configuration, and runs b and d alternate between the two ROUNDS times
# (default 3); the medians and their ratio are printed: a before/after comparison in one run.
#
# With TLS=1, a second stickless with the same configuration plus `tls:` (a self-signed P-256
# certificate made here by openssl) runs beside the first, and four more runs compare them on
# the `session: off` route: keep-alive requests/s over https against plain http, and new
# connections/s (wrk with `Connection: close`: a TCP connect, and over https a full TLS
# handshake, per request) over https against plain http. wrk offers no ALPN, so both speak
# HTTP/1.1.
#
# Usage: scripts/load.sh            (env: DURATION=10s THREADS=2 CONNECTIONS=32 SECRETS=0
#                                         BASELINE= ROUNDS=3 TLS=0)

set -euo pipefail

# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "$0")/common.sh"

DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2s}
SECRETS=${SECRETS:-0}
BASELINE=${BASELINE:-}
ROUNDS=${ROUNDS:-3}
TLS=${TLS:-0}

cd "$(dirname "$0")/.."
ROOT=$(pwd)

# --- Tools -------------------------------------------------------------------------------

missing=()
[ -n "$(find_tool wrk)" ] || missing+=(wrk)
[ -n "$(find_tool redis-server)" ] || missing+=(redis-server)
[ -n "$(find_tool nginx)" ] || missing+=(nginx-light)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
WRK=$(find_tool wrk)
REDIS_SERVER=$(find_tool redis-server)
REDIS_CLI=$(find_tool redis-cli)
NGINX=$(find_tool nginx)
require_found WRK REDIS_SERVER REDIS_CLI NGINX
need_commands curl
[ "$TLS" != 1 ] || command -v openssl >/dev/null || die "openssl is needed for TLS=1"

# --- Processes and clean-up --------------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/stickless-load.XXXXXX")
cleanup_on_exit

# --- Build -------------------------------------------------------------------------------

say "building the release binary (cargo build --release)"
cargo build --release --quiet
STICKLESS="$ROOT/target/release/stickless"

# --- Redis -------------------------------------------------------------------------------

start_redis
rcli() { "$REDIS_CLI" -p "$REDIS_PORT" "$@"; }

# --- nginx backend -----------------------------------------------------------------------

free_port NGINX_PORT
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /login {
            add_header X-Session-Set-User alice;
            add_header X-Session-Set-Role admin;
            return 200 "logged in\n";
        }
        location = /whoami {
            return 200 "user=\$http_x_session_user role=\$http_x_session_role\n";
        }
        location / {
            return 200 "hello from the backend\n";
        }
    }
}
EOF
"$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" 2>"$TMP/nginx/stderr.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/" nginx

# --- nginx as a plain reverse proxy (the baseline stickless is judged against) ------------

# A second nginx, in front of the first, with pooled keep-alive upstream connections and two
# workers (stickless runs two runtime threads on this machine).
free_port NGINX_PROXY_PORT
mkdir -p "$TMP/nginx-proxy"
cat >"$TMP/nginx-proxy/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $TMP/nginx-proxy/nginx.pid;
error_log $TMP/nginx-proxy/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx-proxy/body;
    proxy_temp_path $TMP/nginx-proxy/proxy;
    fastcgi_temp_path $TMP/nginx-proxy/fastcgi;
    uwsgi_temp_path $TMP/nginx-proxy/uwsgi;
    scgi_temp_path $TMP/nginx-proxy/scgi;
    upstream app { server 127.0.0.1:$NGINX_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PROXY_PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }
}
EOF
"$NGINX" -p "$TMP/nginx-proxy" -e "$TMP/nginx-proxy/error.log" -c "$TMP/nginx-proxy/nginx.conf" 2>"$TMP/nginx-proxy/stderr.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$NGINX_PROXY_PORT/" "nginx (proxy)"

# --- stickless ---------------------------------------------------------------------------

free_port PROXY_PORT
SIGNING="" SEALING=""
if [ "$SECRETS" = 1 ]; then
    head -c 48 /dev/urandom | base64 >"$TMP/signing.keys"
    head -c 48 /dev/urandom | base64 >"$TMP/sealing.keys"
    SIGNING="    signing_keys_file: \"$TMP/signing.keys\""
    SEALING="  encryption_keys_file: \"$TMP/sealing.keys\""
fi
cat >"$TMP/proxy.yaml" <<EOF
listen: "127.0.0.1:$PROXY_PORT"
store:
  url: "redis://127.0.0.1:$REDIS_PORT/0"
  key_prefix: "stickless-load"
session:
  cookie:
    secure: false   # plain http on loopback
$SIGNING
$SEALING
routes:
  - match: { path_prefix: "/plain" }
    upstreams: ["http://127.0.0.1:$NGINX_PORT"]
    session: "off"
  - match: { path_prefix: "/" }
    upstreams: ["http://127.0.0.1:$NGINX_PORT"]
    session: "on"
EOF
"$STICKLESS" check --config "$TMP/proxy.yaml" >/dev/null
STICKLESS_LOG=warn "$STICKLESS" run --config "$TMP/proxy.yaml" 2>"$TMP/stickless.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$PROXY_PORT/" stickless
PROXY="http://127.0.0.1:$PROXY_PORT"
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || die "BASELINE=$BASELINE is not an executable"
    free_port BASE_PORT
    sed "s/127.0.0.1:$PROXY_PORT/127.0.0.1:$BASE_PORT/" "$TMP/proxy.yaml" >"$TMP/baseline.yaml"
    "$BASELINE" check --config "$TMP/baseline.yaml" >/dev/null
    STICKLESS_LOG=warn "$BASELINE" run --config "$TMP/baseline.yaml" 2>"$TMP/baseline.log" &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$BASE_PORT/" "stickless (baseline)"
fi

if [ "$TLS" = 1 ]; then
    free_port TLS_PORT
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$TMP/tls-key.pem" -out "$TMP/tls-cert.pem" 2>"$TMP/openssl.log"
    sed "s/127.0.0.1:$PROXY_PORT/127.0.0.1:$TLS_PORT/" "$TMP/proxy.yaml" >"$TMP/tls.yaml"
    printf 'tls:\n  cert_file: "%s"\n  key_file: "%s"\n' "$TMP/tls-cert.pem" "$TMP/tls-key.pem" >>"$TMP/tls.yaml"
    "$STICKLESS" check --config "$TMP/tls.yaml" >/dev/null
    STICKLESS_LOG=warn "$STICKLESS" run --config "$TMP/tls.yaml" 2>"$TMP/stickless-tls.log" &
    PIDS+=($!)
    for _ in $(seq 1 150); do
        curl -sk -o /dev/null --max-time 1 "https://127.0.0.1:$TLS_PORT/" && break
        sleep 0.1
    done
    curl -sk -o /dev/null --max-time 1 "https://127.0.0.1:$TLS_PORT/" ||
        die "stickless (TLS) did not come up (logs in $TMP)"
fi

# --- A session with two attributes -------------------------------------------------------

session=$(curl -s -D - -o /dev/null "$PROXY/login" |
    tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: SESSION=\([^;]*\).*/\1/p' | head -n 1)
[ -n "$session" ] || die "logging in through stickless set no SESSION cookie"
COOKIE="SESSION=$session"
whoami=$(curl -s -H "Cookie: $COOKIE" "$PROXY/whoami")
[ "$whoami" = "user=alice role=admin" ] ||
    die "the backend did not receive the session (got: $whoami)"
fields=$(rcli --no-raw hgetall "stickless-load:session:${session%%.*}" | paste -sd ' ')
say "session created: backend sees '$whoami'; Redis hash: $fields"

# --- Runs --------------------------------------------------------------------------------

# run NAME URL [wrk options...]: warm up, measure, record requests/s and request count.
declare -A RPS REQS
run() {
    local name=$1 url=$2 out
    shift 2
    "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$@" "$url" >/dev/null
    [ "$name" = direct ] || rcli config resetstat >/dev/null
    out=$("$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$@" "$url")
    RPS[$name]=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    REQS[$name]=$(awk '/ requests in / {print $1}' <<<"$out")
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
        say "warning: run $name had errors:"
        grep -E 'Non-2xx|Socket errors' <<<"$out" >&2
    fi
    say "  $name: ${RPS[$name]} requests/s (${REQS[$name]} requests in $DURATION)"
}

# Redis commands executed since the last CONFIG RESETSTAT, excluding our own CONFIG/INFO.
redis_calls() {
    rcli info commandstats | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_/ && $1 !~ /^cmdstat_(config|info)/ {
            sub(/^cmdstat_/, "", $1); total += $3; detail = detail sep $1 "=" $3; sep = ", "
        } END { printf "%d %s\n", total, detail }'
}

say "running wrk -t$THREADS -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up each)"
run direct "http://127.0.0.1:$NGINX_PORT/"
run session "$PROXY/" -H "Cookie: $COOKIE"
read -r SESSION_CALLS SESSION_DETAIL <<<"$(redis_calls)"
run anonymous "$PROXY/"
read -r ANON_CALLS ANON_DETAIL <<<"$(redis_calls)"
run plain "$PROXY/plain"
run nginxproxy "http://127.0.0.1:$NGINX_PROXY_PORT/"
if [ "$TLS" = 1 ]; then
    run tls "https://127.0.0.1:$TLS_PORT/plain"
    run plainclose "$PROXY/plain" -H "Connection: close"
    run tlsclose "https://127.0.0.1:$TLS_PORT/plain" -H "Connection: close"
fi

# --- Baseline: this build against another, alternating ------------------------------------

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
if [ -n "$BASELINE" ]; then
    say "comparing with the baseline $BASELINE, $ROUNDS alternating rounds"
    declare -a NEW_SESSION BASE_SESSION NEW_PLAIN BASE_PLAIN
    for round in $(seq 1 "$ROUNDS"); do
        run "session-$round" "$PROXY/" -H "Cookie: $COOKIE"
        NEW_SESSION+=("${RPS[session-$round]}")
        run "baseline-session-$round" "http://127.0.0.1:$BASE_PORT/" -H "Cookie: $COOKIE"
        BASE_SESSION+=("${RPS[baseline-session-$round]}")
        run "plain-$round" "$PROXY/plain"
        NEW_PLAIN+=("${RPS[plain-$round]}")
        run "baseline-plain-$round" "http://127.0.0.1:$BASE_PORT/plain"
        BASE_PLAIN+=("${RPS[baseline-plain-$round]}")
    done
fi

# --- Report ------------------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
per_request() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }

echo
echo "stickless load test: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $(nproc) CPUs, all on 127.0.0.1$([ "$SECRETS" = 1 ] && echo ", signed cookies + sealed values")"
echo "backend: nginx (1 worker) answering a 23-byte 200; store: redis-server $("$REDIS_SERVER" --version | awk '{print $3}' | sed 's/v=//')"
echo
printf '%-44s %12s %10s\n' "path" "requests/s" "vs direct"
printf '%-44s %12s %10s\n' "a. direct to nginx" "${RPS[direct]}" "1.00"
printf '%-44s %12s %10s\n' "b. stickless, with session cookie" "${RPS[session]}" "$(ratio "${RPS[session]}" "${RPS[direct]}")"
printf '%-44s %12s %10s\n' "c. stickless, no cookie (anonymous)" "${RPS[anonymous]}" "$(ratio "${RPS[anonymous]}" "${RPS[direct]}")"
printf '%-44s %12s %10s\n' "d. stickless, session: off route" "${RPS[plain]}" "$(ratio "${RPS[plain]}" "${RPS[direct]}")"
printf '%-44s %12s %10s\n' "e. nginx as a plain reverse proxy" "${RPS[nginxproxy]}" "$(ratio "${RPS[nginxproxy]}" "${RPS[direct]}")"
echo
echo "ratio stickless/direct (with session): $(ratio "${RPS[session]}" "${RPS[direct]}")"
echo "ratio stickless (with session) / nginx reverse proxy: $(ratio "${RPS[session]}" "${RPS[nginxproxy]}")"
echo "ratio stickless (session: off) / nginx reverse proxy: $(ratio "${RPS[plain]}" "${RPS[nginxproxy]}")"
echo "Redis commands per request, run b: $(per_request "$SESSION_CALLS" "${REQS[session]}") ($SESSION_CALLS calls / ${REQS[session]} requests; ${SESSION_DETAIL:-none})"
echo "Redis commands per request, run c: $(per_request "$ANON_CALLS" "${REQS[anonymous]}") ($ANON_CALLS calls / ${REQS[anonymous]} requests${ANON_DETAIL:+; $ANON_DETAIL})"
if [ "$TLS" = 1 ]; then
    echo
    echo "TLS (stickless with a self-signed P-256 certificate, session: off route, HTTP/1.1):"
    printf '%-52s %12s %10s\n' "path" "requests/s" "vs http"
    printf '%-52s %12s %10s\n' "d. http, keep-alive" "${RPS[plain]}" "1.00"
    printf '%-52s %12s %10s\n' "f. https, keep-alive" "${RPS[tls]}" "$(ratio "${RPS[tls]}" "${RPS[plain]}")"
    printf '%-52s %12s %10s\n' "g. http, a new connection per request" "${RPS[plainclose]}" "1.00"
    printf '%-52s %12s %10s\n' "h. https, a new connection (handshake) per request" "${RPS[tlsclose]}" "$(ratio "${RPS[tlsclose]}" "${RPS[plainclose]}")"
    echo "ratio https/http, keep-alive: $(ratio "${RPS[tls]}" "${RPS[plain]}")"
    echo "ratio https/http, new connection per request: $(ratio "${RPS[tlsclose]}" "${RPS[plainclose]}") (TLS handshakes/s: ${RPS[tlsclose]}; wrk's own side of each handshake runs on the same CPUs)"
fi
if [ -n "$BASELINE" ]; then
    m() { printf '%s\n' "$@" | median; }
    echo
    echo "this build vs baseline ($BASELINE), medians of $ROUNDS alternating rounds:"
    printf '%-44s %12s %12s %8s\n' "path" "this build" "baseline" "ratio"
    printf '%-44s %12s %12s %8s\n' "b. with session cookie" "$(m "${NEW_SESSION[@]}")" "$(m "${BASE_SESSION[@]}")" \
        "$(ratio "$(m "${NEW_SESSION[@]}")" "$(m "${BASE_SESSION[@]}")")"
    printf '%-44s %12s %12s %8s\n' "d. session: off route" "$(m "${NEW_PLAIN[@]}")" "$(m "${BASE_PLAIN[@]}")" \
        "$(ratio "$(m "${NEW_PLAIN[@]}")" "$(m "${BASE_PLAIN[@]}")")"
    echo "rounds, this build (b): ${NEW_SESSION[*]}; baseline (b): ${BASE_SESSION[*]}"
    echo "rounds, this build (d): ${NEW_PLAIN[*]}; baseline (d): ${BASE_PLAIN[*]}"
    # Each pair ran back to back, so its ratio is robust to the machine drifting between rounds.
    pair_ratios() {
        local -n new=$1 base=$2
        for i in "${!new[@]}"; do ratio "${new[$i]}" "${base[$i]}"; echo; done
    }
    echo "median of the per-round ratios: b $(pair_ratios NEW_SESSION BASE_SESSION | median), d $(pair_ratios NEW_PLAIN BASE_PLAIN | median)"
fi
