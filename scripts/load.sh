#!/usr/bin/env bash
# Load test: every performance figure issue 14 asks for, stickless against nginx as a plain
# reverse proxy and against the direct path to the same backend, in one run, with a closing
# "targets" block (each ratio, its target, PASS or MISS).
#
# Starts, all on 127.0.0.1 and on free ports:
#   - redis-server (no persistence),
#   - nginx as a tiny fast backend (1 worker): `/` answers a short 200 body, `/login` answers
#     200 with `X-Session-Set-User: alice` and `X-Session-Set-Role: admin` (so going through
#     stickless creates a two-attribute session), `/whoami` echoes the injected headers,
#     `/plain/big` is a sparse BULK_SIZE (1 GiB) file,
#   - an upload sink (python3, part bulk only): reads each request's whole body, then answers
#     200 with the number of bytes it read. Not nginx's `return 204`: nginx answers before it
#     has read the body and discards the rest afterwards, and nginx as a proxy, once its
#     upstream has answered, stops forwarding the body (the backend got 2 MB of 1 GiB), so
#     the upload would not cross the proxy at all,
#   - nginx as a plain reverse proxy (2 workers: stickless runs two runtime threads on this
#     machine; pooled keep-alive upstream connections; `keepalive_requests` raised so clients'
#     connections are not ended every 1,000 requests; default buffering on `/`, streaming on
#     the bulk locations) on plain http, and also on https (part tls: the same self-signed
#     P-256 certificate as stickless, TLS 1.2 and 1.3 as stickless, nginx's default session
#     settings: `ssl_session_cache none`, `ssl_session_tickets on`) and on an h2c port (part
#     h2: nginx 1.22 speaks only HTTP/2, with prior knowledge, on a cleartext `http2` port),
#   - stickless (STICKLESS_BIN, or a release build made here) with a `/plain` route
#     (`session: off`), a `/plain/upload` route to the sink (`session: off`, no body limit:
#     `max_body_bytes` has none by default) and a `/` route (`session: on`);
#     `limits.max_connections: 20000` so that the 10,000 idle connections fit (the default is
#     exactly 10000); part tls adds a second stickless with `tls:` and the same routes,
#   - parts main, latency and h2: a stickless with the same configuration plus
#     `store.near_cache: { max_sessions: 100000 }` (opt-in: each worker thread keeps the
#     sessions it read and serves them without a Redis round trip until Redis, through RESP3
#     `CLIENT TRACKING`, invalidates them), on its own port, with the same Redis and backend:
#     the session cookie from the first one works there too. Optional: when the binary under
#     test does not take `store.near_cache` (an older build; `stickless check` fails on that
#     configuration), it says so once and every near-cache run (main b', latency near, h2
#     near) is skipped: its rows print n/a and its targets say "skipped".
# It logs in through stickless to get a two-attribute session, then runs the parts listed in
# PARTS (all by default), in this order:
#   main   wrk --latency, keep-alive HTTP/1.1, against
#            a. the backend directly,
#            b. stickless with the session cookie (one Redis read per request),
#            b'. the near-cache stickless with the same cookie (no Redis read once cached),
#            c. stickless without a cookie (anonymous: no Redis traffic),
#            d. stickless on the `session: off` route (the plain proxy path),
#            e. the nginx proxy;
#          prints requests/s with the ratios to direct and to the nginx proxy, p50/p99 latency
#          (wrk's us/ms/s converted to ms) and the p99 each proxy adds over direct (context
#          only: in a closed loop at saturation on 2 shared cores, latency follows throughput;
#          part latency has the figure with a target), the CPU time per request of the proxy
#          (utime + stime from /proc/<pid>/stat before and after the measured run, divided by
#          its requests; nginx: its workers summed), Redis commands per request in b, b' and
#          c, how many of those in b and in b' write (Redis's own `write` flag from COMMAND
#          INFO, plus EVAL/EVALSHA/FCALL; with Redis 7 the commands a script runs are counted
#          too): 0 while no sliding-expiry extension is due, and Redis round trips per request
#          in b and b' (HGETALL plus EVAL/EVALSHA/FCALL calls: a session read is one pipeline
#          of HGETALL + PTTL, a write one script): 1 in b, about 0 in b'.
#   latency
#          latency at a fixed request rate instead of at saturation: wrk --latency with a Lua
#          script whose delay() hook paces the requests, RATE (8,000) requests/s in all over
#          CONNECTIONS (32) keep-alive connections for LATENCY_DURATION (10 s, after a paced
#          WARMUP): each wrk thread hands out send times one THREADS*1000/RATE ms apart, and a
#          connection whose answer came waits for the next free one (so about
#          CONNECTIONS*1000/RATE ms between its requests; delay() counts whole milliseconds,
#          rounded at random so the mean is kept); a run that fell behind does not catch up,
#          it shows as an achieved rate below RATE (printed, with a warning below 95%).
#          Against the backend directly, the nginx proxy, stickless with the session cookie
#          (near cache off, then on) and on the `session: off` route: achieved requests/s,
#          p50/p90/p99 and the p99 each proxy adds over direct (the latency target).
#   tls    wrk over https (HTTP/1.1: wrk offers no ALPN), on the `session: off` route / the
#          nginx proxy: keep-alive requests/s and CPU time per request, stickless against
#          nginx; and new connections/s (`Connection: close`: a TCP connect and a TLS
#          handshake per request) over https against plain http for stickless, with nginx's
#          https figure for context. Both servers negotiate TLS 1.3 (AES-256-GCM) with wrk and
#          let it resume its session, so each of those handshakes is a resumption (PSK with
#          ECDHE, no certificate signature): checked with nginx's $ssl_session_reused and with
#          `openssl s_client -sess_in` against stickless.
#   h2     h2load (h2c with prior knowledge, -c20 -m10, -D H2_DURATION after a WARMUP run)
#          against stickless with the cookie (near cache off, then on), without it, on the
#          `session: off` route, and against the nginx proxy's h2c port: requests/s, CPU per
#          request, the ratios, and Redis commands per request with the cookie (2, HGETALL +
#          PTTL: the session is found over h2 too; about 0 with the near cache).
#   bulk   BULK_SIZE (1 GiB) down and up, timed by curl (`%{time_total}`), BULK_REPS (3) times
#          each, median: directly (backend file; the sink), through the nginx proxy
#          (`proxy_buffering off; proxy_request_buffering off;` on those two locations, so it
#          streams like stickless instead of spooling to temporary files, with a 64 KB
#          `proxy_buffer_size`, as stickless' backend read buffer) and through stickless on a
#          `session: off` route. Uploads send no `Expect: 100-continue`.
#   idle   VmRSS of stickless before, with IDLE_CONNECTIONS (10,000) idle keep-alive client
#          connections open (each sent one GET on /plain and read the whole answer; measured
#          3 s after the last answer: stickless parks a keep-alive connection after 500 ms
#          quiet, freeing hyper's buffers, and jemalloc returns pages unused for 1 s), and 2 s
#          after they all closed; the same for the nginx proxy's workers, for context.
#   scale  filler sessions (copies of the real session's hash under 43-character ids, with
#          its TTL, by a Lua loop in batches of 100,000) until Redis holds SCALE_SMALL (1,000),
#          then SCALE_LARGE (1,000,000), then SCALE_SMALL again (the same keys); run b at each;
#          prints the three and the ratio of the large run to the mean of the two small ones.
# Then a "targets" block: each figure with its target and PASS or MISS.
#
# Everything started here is stopped on exit. Bounded: about 6 minutes with the defaults on
# a 2-core machine, plus the build when STICKLESS_BIN is not given.
# Raises the soft `ulimit -n` to 65536 (or the hard limit); part idle needs IDLE_CONNECTIONS
# + 1024 of them.
#
# With SECRETS=1, stickless signs its cookies and seals values at rest (fresh random keys), so
# run b includes verifying the cookie and opening the two values.
#
# With BASELINE=/path/to/another/stickless (an older build, say), that binary runs beside this
# one with the same configuration, and runs b and d alternate between the two ROUNDS times
# (default 3) after parts main and latency; the medians and their ratio are printed: a
# before/after comparison in one run.
#
# TLS=0 leaves out part tls (and the TLS listeners), as PARTS without tls does.
#
# Usage: scripts/load.sh   (env: STICKLESS_BIN= DURATION=10s THREADS=2 CONNECTIONS=32 WARMUP=2s
#                            PARTS=main,latency,tls,h2,bulk,idle,scale SECRETS=0 BASELINE=
#                            ROUNDS=3 RATE=8000 LATENCY_DURATION=10s
#                            TLS=1 H2_DURATION=DURATION H2_CLIENTS=20 H2_STREAMS=10
#                            BULK_SIZE=1G BULK_REPS=3 IDLE_CONNECTIONS=10000
#                            SCALE_SMALL=1000 SCALE_LARGE=1000000)

set -euo pipefail

# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "$0")/common.sh"

STICKLESS_BIN=${STICKLESS_BIN:-}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2s}
PARTS=${PARTS:-main,latency,tls,h2,bulk,idle,scale}
SECRETS=${SECRETS:-0}
BASELINE=${BASELINE:-}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-8000}
LATENCY_DURATION=${LATENCY_DURATION:-10s}
TLS=${TLS:-1}
H2_DURATION=${H2_DURATION:-$DURATION}
H2_CLIENTS=${H2_CLIENTS:-20}
H2_STREAMS=${H2_STREAMS:-10}
BULK_SIZE=${BULK_SIZE:-1G}
BULK_REPS=${BULK_REPS:-3}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
SCALE_SMALL=${SCALE_SMALL:-1000}
SCALE_LARGE=${SCALE_LARGE:-1000000}

cd "$(dirname "$0")/.."
ROOT=$(pwd)

ALL_PARTS="main latency tls h2 bulk idle scale"
for part in ${PARTS//,/ }; do
    [[ " $ALL_PARTS " == *" $part "* ]] || die "unknown part '$part' in PARTS (known: ${ALL_PARTS// /,})"
done
for knob in H2_CLIENTS H2_STREAMS BULK_REPS IDLE_CONNECTIONS SCALE_SMALL SCALE_LARGE ROUNDS RATE; do
    if ! [[ "${!knob}" =~ ^[0-9]+$ ]] || [ "${!knob}" -eq 0 ]; then
        die "$knob must be a whole number above 0, not '${!knob}'"
    fi
done
# has_part NAME: NAME is to run (TLS=0 takes tls out, as before there were parts).
has_part() {
    [ "$1" != tls ] || [ "$TLS" != 0 ] || return 1
    [[ ",$PARTS," == *",$1,"* ]]
}

# --- Tools -------------------------------------------------------------------------------

missing=()
[ -n "$(find_tool wrk)" ] || missing+=(wrk)
[ -n "$(find_tool redis-server)" ] || missing+=(redis-server)
[ -n "$(find_tool nginx)" ] || missing+=(nginx-light)
! has_part h2 || [ -n "$(find_tool h2load)" ] || missing+=(nghttp2-client)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
WRK=$(find_tool wrk)
REDIS_SERVER=$(find_tool redis-server)
REDIS_CLI=$(find_tool redis-cli)
NGINX=$(find_tool nginx)
require_found WRK REDIS_SERVER REDIS_CLI NGINX
need_commands curl pgrep
if has_part h2; then
    # Debian 12's nginx-light has the HTTP/2 module; if this nginx lacks it, nginx-core has it.
    "$NGINX" -V 2>&1 | grep -q -- --with-http_v2_module || apt_install nginx-core
    "$NGINX" -V 2>&1 | grep -q -- --with-http_v2_module || die "$NGINX has no HTTP/2 module (part h2)"
    H2LOAD=$(find_tool h2load)
    require_found H2LOAD
fi
! has_part tls || need_commands openssl
if has_part bulk || has_part idle; then
    PYTHON=$(find_tool python3)
    require_found PYTHON
fi
! has_part bulk || need_commands truncate
CLK_TCK=$(getconf CLK_TCK)

# --- File descriptors --------------------------------------------------------------------

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
WORKER_CONNECTIONS=4096
if has_part idle; then
    # The idle client holds every connection, and so may one stickless or nginx worker.
    [ "$NOFILE" -ge $((IDLE_CONNECTIONS + 1024)) ] ||
        die "ulimit -n is $NOFILE (hard limit $(ulimit -Hn)); part idle needs $((IDLE_CONNECTIONS + 1024)): lower IDLE_CONNECTIONS or leave idle out of PARTS"
    WORKER_CONNECTIONS=$((IDLE_CONNECTIONS + 1024))
fi
# The brief's 20000, within the file descriptors (upstream connections need some too).
MAX_CONNECTIONS=$((NOFILE - 1024 < 20000 ? NOFILE - 1024 : 20000))

# --- Processes and clean-up --------------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/stickless-load.XXXXXX")
# nginx started as root runs its workers as nobody: they must be able to read the bulk file.
chmod 755 "$TMP"
cleanup_on_exit

STARTED=$SECONDS
declare -A PART_SECONDS

# --- Build -------------------------------------------------------------------------------

if [ -n "$STICKLESS_BIN" ]; then
    [ -x "$STICKLESS_BIN" ] || die "STICKLESS_BIN=$STICKLESS_BIN is not an executable"
    STICKLESS=$STICKLESS_BIN
else
    say "building the release binary (cargo build --release)"
    cargo build --release --quiet
    STICKLESS="$ROOT/target/release/stickless"
fi

# --- Redis -------------------------------------------------------------------------------

start_redis
rcli() { "$REDIS_CLI" -p "$REDIS_PORT" "$@"; }

# --- TLS certificate (stickless and nginx use the same one) --------------------------------

if has_part tls; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$TMP/tls-key.pem" -out "$TMP/tls-cert.pem" 2>"$TMP/openssl.log"
fi

# --- nginx backend -----------------------------------------------------------------------

free_port NGINX_PORT
mkdir -p "$TMP/nginx" "$TMP/www/plain"
BULK_FILE="$TMP/www/plain/big"
if has_part bulk; then
    truncate -s "$BULK_SIZE" "$BULK_FILE" # sparse: no disk, and reads cost no I/O
    BULK_BYTES=$(stat -c %s "$BULK_FILE")
fi
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
    client_max_body_size 0;   # no request body limit (uploads go to the sink, not here)
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
        location = /plain/big {
            root $TMP/www;
            default_type application/octet-stream;
            sendfile on;   # the backend's cheapest way; without it, it reads 32 KB at a time
        }
        location / {
            return 200 "hello from the backend\n";
        }
    }
}
EOF
"$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" 2>"$TMP/nginx/stderr.log" &
PIDS+=($!)
NGINX_PID=$!
wait_http "http://127.0.0.1:$NGINX_PORT/" nginx

# --- Upload sink (part bulk) -----------------------------------------------------------------

free_port SINK_PORT # the stickless route names it even when part bulk does not run
if has_part bulk; then
    cat >"$TMP/sink.py" <<'EOF'
"""The upload sink: HTTP/1.1 on 127.0.0.1:PORT; reads each request's whole body (Content-Length
or chunked) into one reused buffer, then answers 200 with the number of body bytes it read.
Keep-alive, a thread per connection."""
import socket
import sys
import threading

BUF = 1 << 20


class Conn:
    def __init__(self, sock):
        self.sock, self.pending = sock, b""
        self.view = memoryview(bytearray(BUF))

    def line(self):
        while b"\r\n" not in self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.pending += data
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line

    def skip(self, n):
        """Reads n bytes and drops them."""
        take = min(n, len(self.pending))
        self.pending, n = self.pending[take:], n - take
        while n > 0:
            got = self.sock.recv_into(self.view, min(n, BUF))
            if not got:
                raise EOFError
            n -= got


def serve(sock):
    conn = Conn(sock)
    try:
        while True:
            conn.line()  # the request line
            headers = {}
            while line := conn.line():
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip().lower()
            size = 0
            if headers.get(b"transfer-encoding", b"").endswith(b"chunked"):
                while chunk := int(conn.line().split(b";")[0], 16):
                    conn.skip(chunk + 2)
                    size += chunk
                while conn.line():  # trailers, up to the empty line
                    pass
            elif b"content-length" in headers:
                size = int(headers[b"content-length"])
                conn.skip(size)
            body = b"%d\n" % size
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
    except (EOFError, OSError, ValueError):
        pass
    finally:
        sock.close()


listener = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=128)
while True:
    client, _ = listener.accept()
    threading.Thread(target=serve, args=(client,), daemon=True).start()
EOF
    "$PYTHON" "$TMP/sink.py" "$SINK_PORT" 2>"$TMP/sink.log" &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$SINK_PORT/" "the upload sink"
fi

# --- nginx as a plain reverse proxy (the baseline stickless is judged against) ------------

# A second nginx, in front of the first, with pooled keep-alive upstream connections and two
# workers (stickless runs two runtime threads on this machine). keepalive_requests is raised,
# as on the backend: nginx's default ends a client connection every 1,000 requests (over TLS a
# new handshake each time), which stickless does not.
free_port NGINX_PROXY_PORT
LISTEN_TLS="" LISTEN_H2=""
if has_part tls; then
    free_port NGINX_TLS_PORT
    # TLS 1.2 and 1.3 as stickless (nginx 1.22 offers 1.0 to 1.2 by default, and wrk would get
    # 1.2). nginx's default session settings (ssl_session_cache none, ssl_session_tickets on):
    # as with rustls' defaults, a client may resume a TLS 1.3 session.
    LISTEN_TLS="listen 127.0.0.1:$NGINX_TLS_PORT ssl;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate $TMP/tls-cert.pem;
        ssl_certificate_key $TMP/tls-key.pem;"
fi
if has_part h2; then
    free_port NGINX_H2_PORT
    LISTEN_H2="listen 127.0.0.1:$NGINX_H2_PORT http2;   # h2c with prior knowledge only"
fi
# proxy_common: what every location of the nginx proxy sets.
# shellcheck disable=SC2016 # $proxy_add_x_forwarded_for is nginx's, for nginx to expand
proxy_common='proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;'
mkdir -p "$TMP/nginx-proxy"
cat >"$TMP/nginx-proxy/nginx.conf" <<EOF
daemon off;
worker_processes 2;
worker_rlimit_nofile $NOFILE;
pid $TMP/nginx-proxy/nginx.pid;
error_log $TMP/nginx-proxy/error.log warn;
events { worker_connections $WORKER_CONNECTIONS; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_max_body_size 0;   # no request body limit, as on the stickless routes
    client_body_temp_path $TMP/nginx-proxy/body;
    proxy_temp_path $TMP/nginx-proxy/proxy;
    fastcgi_temp_path $TMP/nginx-proxy/fastcgi;
    uwsgi_temp_path $TMP/nginx-proxy/uwsgi;
    scgi_temp_path $TMP/nginx-proxy/scgi;
    upstream app { server 127.0.0.1:$NGINX_PORT; keepalive 64; }
    upstream sink { server 127.0.0.1:$SINK_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PROXY_PORT;
        $LISTEN_TLS
        $LISTEN_H2
        location / {
            proxy_pass http://app;
            $proxy_common
        }
        # The bulk transfers: streamed both ways, as stickless streams them, instead of nginx's
        # default of spooling a large response or request body to a temporary file first.
        # Unbuffered, nginx reads the upstream into one proxy_buffer_size buffer (a 4 KB page
        # by default): 64k, as stickless' backend read buffer. proxy_buffers goes unused, but
        # nginx wants the default proxy_busy_buffers_size (2 x 64k) below its total less one.
        location = /plain/big {
            proxy_pass http://app;
            $proxy_common
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
        }
        location = /plain/upload {
            proxy_pass http://sink;
            $proxy_common
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
            client_body_buffer_size 64k;   # the request body's pieces (16 KB by default)
        }
    }
}
EOF
"$NGINX" -p "$TMP/nginx-proxy" -e "$TMP/nginx-proxy/error.log" -c "$TMP/nginx-proxy/nginx.conf" 2>"$TMP/nginx-proxy/stderr.log" &
PIDS+=($!)
NGINX_PROXY_PID=$!
wait_http "http://127.0.0.1:$NGINX_PROXY_PORT/" "nginx (proxy)"
! has_part tls || wait_http "https://127.0.0.1:$NGINX_TLS_PORT/" "nginx (proxy, https)" -k
! has_part h2 || wait_http "http://127.0.0.1:$NGINX_H2_PORT/" "nginx (proxy, h2c)" --http2-prior-knowledge

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
limits:
  max_connections: $MAX_CONNECTIONS   # part idle opens 10,000; the default is exactly 10000
routes:
  - match: { path_prefix: "/plain/upload" }
    upstreams: ["http://127.0.0.1:$SINK_PORT"]
    session: "off"
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
STICKLESS_PID=$!
wait_http "http://127.0.0.1:$PROXY_PORT/" stickless
! has_part h2 || wait_http "http://127.0.0.1:$PROXY_PORT/" "stickless (h2c)" --http2-prior-knowledge
PROXY="http://127.0.0.1:$PROXY_PORT"
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || die "BASELINE=$BASELINE is not an executable"
    free_port BASE_PORT
    sed "s/127.0.0.1:$PROXY_PORT/127.0.0.1:$BASE_PORT/" "$TMP/proxy.yaml" >"$TMP/baseline.yaml"
    "$BASELINE" check --config "$TMP/baseline.yaml" >/dev/null
    STICKLESS_LOG=warn "$BASELINE" run --config "$TMP/baseline.yaml" 2>"$TMP/baseline.log" &
    PIDS+=($!)
    BASE_PID=$!
    wait_http "http://127.0.0.1:$BASE_PORT/" "stickless (baseline)"
fi

# The near-cache stickless: the same configuration, its own port, `store.near_cache` added.
# Optional: a build that does not take store.near_cache (an older one, measured as the
# "before" figure) fails `check` on it; then NEAR_OK=0 and every near-cache run is skipped.
NEAR_OK=0
if has_part main || has_part latency || has_part h2; then
    free_port NEAR_PORT
    sed "s/127.0.0.1:$PROXY_PORT/127.0.0.1:$NEAR_PORT/" "$TMP/proxy.yaml" |
        awk '{ print } /^  key_prefix:/ { print "  near_cache: { max_sessions: 100000 }   # opt-in" }' >"$TMP/near.yaml"
    grep -q '^  near_cache:' "$TMP/near.yaml" || die "no store.key_prefix line in $TMP/proxy.yaml to put near_cache after"
    if "$STICKLESS" check --config "$TMP/near.yaml" >"$TMP/near-check.log" 2>&1; then
        NEAR_OK=1
    else
        say "this build has no store.near_cache: runs b' skipped"
    fi
fi
if [ "$NEAR_OK" = 1 ]; then
    STICKLESS_LOG=warn "$STICKLESS" run --config "$TMP/near.yaml" 2>"$TMP/stickless-near.log" &
    PIDS+=($!)
    NEAR_PID=$!
    wait_http "http://127.0.0.1:$NEAR_PORT/" "stickless (near cache)"
    ! has_part h2 || wait_http "http://127.0.0.1:$NEAR_PORT/" "stickless (near cache, h2c)" --http2-prior-knowledge
    NEAR="http://127.0.0.1:$NEAR_PORT"
fi

if has_part tls; then
    free_port TLS_PORT
    sed "s/127.0.0.1:$PROXY_PORT/127.0.0.1:$TLS_PORT/" "$TMP/proxy.yaml" >"$TMP/tls.yaml"
    printf 'tls:\n  cert_file: "%s"\n  key_file: "%s"\n' "$TMP/tls-cert.pem" "$TMP/tls-key.pem" >>"$TMP/tls.yaml"
    "$STICKLESS" check --config "$TMP/tls.yaml" >/dev/null
    STICKLESS_LOG=warn "$STICKLESS" run --config "$TMP/tls.yaml" 2>"$TMP/stickless-tls.log" &
    PIDS+=($!)
    TLS_PID=$!
    wait_http "https://127.0.0.1:$TLS_PORT/" "stickless (TLS)" -k
fi

# --- A session with two attributes -------------------------------------------------------

session=$(curl -s -D - -o /dev/null "$PROXY/login" |
    tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: SESSION=\([^;]*\).*/\1/p' | head -n 1)
[ -n "$session" ] || die "logging in through stickless set no SESSION cookie"
COOKIE="SESSION=$session"
SESSION_KEY="stickless-load:session:${session%%.*}"
whoami=$(curl -s -H "Cookie: $COOKIE" "$PROXY/whoami")
[ "$whoami" = "user=alice role=admin" ] ||
    die "the backend did not receive the session (got: $whoami)"
fields=$(rcli --no-raw hgetall "$SESSION_KEY" | paste -sd ' ')
say "session created: backend sees '$whoami'; Redis hash: $fields"
if [ -n "${NEAR_PID:-}" ]; then
    whoami=$(curl -s -H "Cookie: $COOKIE" "$NEAR/whoami")
    [ "$whoami" = "user=alice role=admin" ] ||
        die "the backend did not receive the session through the near-cache stickless (got: $whoami)"
fi

# --- Measuring ---------------------------------------------------------------------------

# pids_of WHO: the processes whose CPU time counts for WHO (nginx: its workers).
pids_of() {
    case $1 in
    backend) pgrep -P "$NGINX_PID" | paste -sd ' ' || true ;;
    nginx) pgrep -P "$NGINX_PROXY_PID" | paste -sd ' ' || true ;;
    stickless) echo "$STICKLESS_PID" ;;
    stickless-near) echo "$NEAR_PID" ;;
    stickless-tls) echo "$TLS_PID" ;;
    baseline) echo "$BASE_PID" ;;
    esac
}
# cpu_ticks PID...: user + system CPU time so far, summed, in clock ticks (fields 14 and 15 of
# /proc/<pid>/stat, counted after the command name, which may hold spaces).
cpu_ticks() {
    local pid
    for pid in "$@"; do cat "/proc/$pid/stat" 2>/dev/null || true; done |
        awk '{ sub(/.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}
# rss_kb PID...: summed VmRSS in kB.
rss_kb() {
    local pid
    for pid in "$@"; do cat "/proc/$pid/status" 2>/dev/null || true; done |
        awk '/^VmRSS:/ { s += $2 } END { print s + 0 }'
}
# us_per_request TICKS REQUESTS: CPU microseconds per request.
us_per_request() {
    awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }'
}
# to_ms VALUE: wrk's latency (e.g. 812.00us, 1.20ms, 1.05s, 1.00m) in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /m$/) n *= 60000
        else if (v ~ /h$/) n *= 3600000; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n
    }'
}

# run NAME WHO URL [wrk options...]: warm up, measure; records requests/s, the request count,
# p50, p90 and p99 in ms and WHO's CPU microseconds per request.
declare -A RPS REQS P50 P90 P99 CPU_US
# Without the near cache, its runs' figures are "n/a" (ratio, minus, per_request and the
# targets block pass that on), so the report prints them as skipped.
if [ "$NEAR_OK" = 0 ]; then
    for name in near lat-near h2near; do
        RPS[$name]=n/a REQS[$name]=n/a P50[$name]=n/a P90[$name]=n/a P99[$name]=n/a CPU_US[$name]=n/a
    done
    NEAR_CALLS=n/a NEAR_WRITES=n/a NEAR_TRIPS=n/a NEAR_DETAIL="skipped: no store.near_cache in this build"
    H2_NEAR_CALLS=n/a
fi
run() {
    local name=$1 who=$2 url=$3 out before after pids
    shift 3
    "$WRK" -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$@" "$url" >/dev/null
    [ "$who" = backend ] || rcli config resetstat >/dev/null
    read -r -a pids <<<"$(pids_of "$who")"
    before=$(cpu_ticks "${pids[@]}")
    out=$("$WRK" --latency -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$@" "$url")
    after=$(cpu_ticks "${pids[@]}")
    RPS[$name]=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    REQS[$name]=$(awk '/ requests in / {print $1}' <<<"$out")
    P50[$name]=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    P90[$name]=$(to_ms "$(awk '$1 == "90%" {print $2}' <<<"$out")")
    P99[$name]=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    CPU_US[$name]=$(us_per_request $((after - before)) "${REQS[$name]}")
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
        say "warning: run $name had errors:"
        grep -E 'Non-2xx|Socket errors' <<<"$out" >&2
    fi
    say "  $name: ${RPS[$name]} requests/s (${REQS[$name]} requests in $DURATION), p50 ${P50[$name]} ms, p99 ${P99[$name]} ms, $who ${CPU_US[$name]} µs CPU/request"
}

# h2run NAME WHO URL [h2load options...]: the same with h2load (h2c, prior knowledge).
h2run() {
    local name=$1 who=$2 url=$3 out before after pids h2=("$H2LOAD" -t"$THREADS" -c"$H2_CLIENTS" -m"$H2_STREAMS")
    shift 3
    "${h2[@]}" -D "$WARMUP" "$@" "$url" >/dev/null
    [ "$who" = backend ] || rcli config resetstat >/dev/null
    read -r -a pids <<<"$(pids_of "$who")"
    before=$(cpu_ticks "${pids[@]}")
    out=$("${h2[@]}" -D "$H2_DURATION" "$@" "$url")
    after=$(cpu_ticks "${pids[@]}")
    RPS[$name]=$(awk '/^finished in/ { printf "%.2f", $4 }' <<<"$out")
    REQS[$name]=$(awk '/^requests:/ { print $8 }' <<<"$out")
    CPU_US[$name]=$(us_per_request $((after - before)) "${REQS[$name]}")
    local bad
    bad=$(awk '/^requests:/ { e = $10 + $12 + $14 } /^status codes:/ { e += $5 + $7 + $9 } END { print e + 0 }' <<<"$out")
    if [ "$bad" != 0 ] || [ -z "${RPS[$name]}" ]; then
        say "warning: run $name had failed requests or non-2xx answers:"
        grep -E '^(requests|status codes):' <<<"$out" >&2 || say "$out"
    fi
    say "  $name: ${RPS[$name]} requests/s (${REQS[$name]} requests in $H2_DURATION), $who ${CPU_US[$name]} µs CPU/request"
}

# redis_calls: "TOTAL WRITES TRIPS DETAIL": the Redis commands executed since the last CONFIG
# RESETSTAT (our own CONFIG, INFO and COMMAND excluded), how many of them write, the round
# trips stickless made for them, and the calls per command (writes marked). A command writes
# if Redis flags it `write` (COMMAND INFO); the scripts (EVAL, EVALSHA, FCALL) stickless
# writes with count as writes too, and Redis 7 also counts the commands they run. Round trips:
# HGETALL and script calls (a session read is one pipeline of HGETALL + PTTL, a write one
# script; the commands a script runs ride in its trip).
declare -A IS_WRITE
redis_calls() {
    local stats name calls total=0 writes=0 trips=0 detail="" sep=""
    stats=$(rcli info commandstats | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_/ {
            sub(/^cmdstat_/, "", $1); split($1, c, "|")
            if (c[1] != "config" && c[1] != "info" && c[1] != "command") print $1, $3
        }')
    while read -r name calls; do
        [ -n "$name" ] || continue
        if [ -z "${IS_WRITE[$name]:-}" ]; then
            case $name in
            eval | evalsha | fcall) IS_WRITE[$name]=1 ;;
            *) if rcli command info "$name" | grep -qx write; then IS_WRITE[$name]=1; else IS_WRITE[$name]=0; fi ;;
            esac
        fi
        total=$((total + calls))
        case $name in hgetall | eval | evalsha | fcall) trips=$((trips + calls)) ;; esac
        detail+="$sep$name=$calls"
        if [ "${IS_WRITE[$name]}" = 1 ]; then
            writes=$((writes + calls))
            detail+=" (write)"
        fi
        sep=", "
    done <<<"$stats"
    echo "$total $writes $trips $detail"
}

part_start() {
    PART_BEGAN=$SECONDS
    say "part $1"
}
part_end() { PART_SECONDS[$1]=$((SECONDS - PART_BEGAN)); }

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

# --- Part main ---------------------------------------------------------------------------

if has_part main; then
    part_start main
    say "running wrk --latency -t$THREADS -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up each)"
    run direct backend "http://127.0.0.1:$NGINX_PORT/"
    run session stickless "$PROXY/" -H "Cookie: $COOKIE"
    read -r SESSION_CALLS SESSION_WRITES SESSION_TRIPS SESSION_DETAIL <<<"$(redis_calls)"
    if [ "$NEAR_OK" = 1 ]; then
        run near stickless-near "$NEAR/" -H "Cookie: $COOKIE"
        read -r NEAR_CALLS NEAR_WRITES NEAR_TRIPS NEAR_DETAIL <<<"$(redis_calls)"
    else
        say "  near: skipped (this build has no store.near_cache)"
    fi
    run anonymous stickless "$PROXY/"
    read -r ANON_CALLS _ _ ANON_DETAIL <<<"$(redis_calls)"
    run plain stickless "$PROXY/plain"
    run nginxproxy nginx "http://127.0.0.1:$NGINX_PROXY_PORT/"
    part_end main
fi

# --- Part latency ------------------------------------------------------------------------

# paced NAME WHO URL [wrk options...]: run, paced to RATE requests/s by $TMP/pace.lua, for
# LATENCY_DURATION; warns when the achieved rate is below 95% of RATE.
paced() {
    local name=$1
    DURATION=$LATENCY_DURATION run "$@" -s "$TMP/pace.lua"
    awk -v a="${RPS[$name]}" -v r="$RATE" 'BEGIN { exit !(a < 0.95 * r) }' &&
        say "warning: run $name achieved ${RPS[$name]} requests/s, below 95% of RATE=$RATE: its latencies are at a lower load"
    return 0
}

if has_part latency; then
    part_start latency
    # One wrk thread's requests are THREAD_GAP ms apart: each delay() call (a connection got its
    # answer and is to send its next request) takes the next free send time and returns the
    # wait until it. wrk waits whole milliseconds (it truncates), so the wait is rounded up or
    # down at random, keeping its mean. A thread behind its schedule (every connection busy)
    # sends at once and starts the schedule again from now: no catching up in a burst.
    THREAD_GAP=$(awk -v t="$THREADS" -v r="$RATE" 'BEGIN { printf "%.6f", t * 1000 / r }')
    cat >"$TMP/pace.lua" <<EOF
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } pace_timespec;
int clock_gettime(int clock, pace_timespec *ts);
]]
local ts = ffi.new("pace_timespec")
local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local gap, due = $THREAD_GAP, nil
function delay()
    local now = now_ms()
    due = math.max((due or now) + gap, now)
    return math.floor(due - now + math.random())
end
EOF
    say "running wrk --latency -t$THREADS -c$CONNECTIONS -d$LATENCY_DURATION paced to $RATE requests/s (one every $THREAD_GAP ms per thread; after a $WARMUP paced warm-up each)"
    paced lat-direct backend "http://127.0.0.1:$NGINX_PORT/"
    paced lat-nginx nginx "http://127.0.0.1:$NGINX_PROXY_PORT/"
    paced lat-session stickless "$PROXY/" -H "Cookie: $COOKIE"
    if [ "$NEAR_OK" = 1 ]; then
        paced lat-near stickless-near "$NEAR/" -H "Cookie: $COOKIE"
    else
        say "  lat-near: skipped (this build has no store.near_cache)"
    fi
    paced lat-plain stickless "$PROXY/plain"
    part_end latency
fi

# --- Baseline: this build against another, alternating ------------------------------------

if [ -n "$BASELINE" ]; then
    part_start baseline
    say "comparing with the baseline $BASELINE, $ROUNDS alternating rounds"
    declare -a NEW_SESSION BASE_SESSION NEW_PLAIN BASE_PLAIN
    for round in $(seq 1 "$ROUNDS"); do
        run "session-$round" stickless "$PROXY/" -H "Cookie: $COOKIE"
        NEW_SESSION+=("${RPS[session-$round]}")
        run "baseline-session-$round" baseline "http://127.0.0.1:$BASE_PORT/" -H "Cookie: $COOKIE"
        BASE_SESSION+=("${RPS[baseline-session-$round]}")
        run "plain-$round" stickless "$PROXY/plain"
        NEW_PLAIN+=("${RPS[plain-$round]}")
        run "baseline-plain-$round" baseline "http://127.0.0.1:$BASE_PORT/plain"
        BASE_PLAIN+=("${RPS[baseline-plain-$round]}")
    done
    part_end baseline
fi

# --- Part tls ----------------------------------------------------------------------------

if has_part tls; then
    part_start tls
    run tls stickless-tls "https://127.0.0.1:$TLS_PORT/plain"
    run nginxtls nginx "https://127.0.0.1:$NGINX_TLS_PORT/plain"
    run plainclose stickless "$PROXY/plain" -H "Connection: close"
    run tlsclose stickless-tls "https://127.0.0.1:$TLS_PORT/plain" -H "Connection: close"
    run nginxtlsclose nginx "https://127.0.0.1:$NGINX_TLS_PORT/plain" -H "Connection: close"
    part_end tls
fi

# --- Part h2 -----------------------------------------------------------------------------

if has_part h2; then
    part_start h2
    say "running h2load -t$THREADS -c$H2_CLIENTS -m$H2_STREAMS -D $H2_DURATION, h2c (after a $WARMUP warm-up each)"
    h2run h2session stickless "$PROXY/" -H "Cookie: $COOKIE"
    read -r H2_SESSION_CALLS _ _ _ <<<"$(redis_calls)"
    if [ "$NEAR_OK" = 1 ]; then
        h2run h2near stickless-near "$NEAR/" -H "Cookie: $COOKIE"
        read -r H2_NEAR_CALLS _ _ _ <<<"$(redis_calls)"
    else
        say "  h2near: skipped (this build has no store.near_cache)"
    fi
    h2run h2anonymous stickless "$PROXY/"
    h2run h2plain stickless "$PROXY/plain"
    h2run h2nginx nginx "http://127.0.0.1:$NGINX_H2_PORT/"
    part_end h2
fi

# --- Part bulk ---------------------------------------------------------------------------

# transfer KIND URL: one BULK_SIZE download or upload through URL; prints curl's time_total
# in seconds, after checking that every byte arrived (for an upload, at the sink).
transfer() {
    local kind=$1 url=$2 got
    if [ "$kind" = download ]; then
        got=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$url")
        [ "${got% *}" = "200 $BULK_BYTES" ] || die "download from $url: got '$got', not 200 and $BULK_BYTES bytes (logs in $TMP)"
    else
        # No `Expect: 100-continue`: no path should wait for a 100 (curl waits up to 1 s).
        got=$(curl -s -H 'Expect:' -T "$BULK_FILE" -o "$TMP/upload.out" -w '%{http_code} %{time_total}' "$url")
        [ "${got% *} $(cat "$TMP/upload.out")" = "200 $BULK_BYTES" ] ||
            die "upload to $url: got '$got', the sink read '$(cat "$TMP/upload.out")' bytes, not $BULK_BYTES (logs in $TMP)"
    fi
    echo "${got##* }"
}

declare -A BULK
if has_part bulk; then
    part_start bulk
    say "$BULK_SIZE down and up, $BULK_REPS times each, median"
    # Reading a hole of a sparse file puts zero pages in the page cache: done once here, so the
    # first download does not pay for it.
    cat "$BULK_FILE" >/dev/null
    declare -A BULK_URL=(
        [download/direct]="http://127.0.0.1:$NGINX_PORT/plain/big"
        [download/nginx]="http://127.0.0.1:$NGINX_PROXY_PORT/plain/big"
        [download/stickless]="$PROXY/plain/big"
        [upload/direct]="http://127.0.0.1:$SINK_PORT/plain/upload"
        [upload/nginx]="http://127.0.0.1:$NGINX_PROXY_PORT/plain/upload"
        [upload/stickless]="$PROXY/plain/upload"
    )
    declare -A BULK_TIMES
    # Rounds rather than one path at a time, so a drift of the machine touches all three alike.
    for rep in $(seq 1 "$BULK_REPS"); do
        for kind in download upload; do
            for path in direct nginx stickless; do
                t=$(transfer "$kind" "${BULK_URL[$kind/$path]}")
                BULK_TIMES[$kind/$path]+="$t "
            done
        done
        say "  round $rep: $(for k in download upload; do for p in direct nginx stickless; do printf '%s %s %s s; ' "$k" "$p" "$(awk '{ print $NF }' <<<"${BULK_TIMES[$k/$p]}")"; done; done)"
    done
    for key in "${!BULK_TIMES[@]}"; do
        # shellcheck disable=SC2086 # the times, one word each
        BULK[$key]=$(printf '%s\n' ${BULK_TIMES[$key]} | median)
    done
    part_end bulk
fi

# --- Part idle ---------------------------------------------------------------------------

if has_part idle; then
    cat >"$TMP/idle.py" <<'EOF'
"""Opens COUNT keep-alive connections to HOST:PORT, sends `GET PATH` on each and reads the whole
answer (at most PARALLEL connections opening or awaiting their answer at once), then holds them
all open and idle. Writes a summary line to READY once every connection has its answer or has
failed, and closes them all once the file STOP exists (or after 10 minutes)."""
import errno
import os
import resource
import selectors
import socket
import sys
import time

HOST, PORT, PATH, COUNT, READY, STOP = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
PARALLEL = 256  # well under the listen backlog of both proxies (511)
REQUEST = f"GET {PATH} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\nUser-Agent: load-idle\r\n\r\n".encode()

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft != resource.RLIM_INFINITY and soft < COUNT + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def answered(data):
    """True once data holds a whole response (Content-Length or chunked)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    for line in data[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            return len(data) >= end + 4 + int(value)
        if name == b"transfer-encoding" and value.strip().lower().endswith(b"chunked"):
            return data.endswith(b"0\r\n\r\n")
    return False


sel = selectors.DefaultSelector()
idle, received, statuses = [], {}, {}
errors = started = pending = 0
begin = time.monotonic()


def fail(sock):
    global errors, pending
    sel.unregister(sock)
    sock.close()
    received.pop(sock, None)
    errors += 1
    pending -= 1


while (started < COUNT or pending) and time.monotonic() - begin < 120:
    while started < COUNT and pending < PARALLEL:
        started += 1
        sock = socket.socket()
        sock.setblocking(False)
        if sock.connect_ex((HOST, PORT)) not in (0, errno.EINPROGRESS):
            sock.close()
            errors += 1
            continue
        sel.register(sock, selectors.EVENT_WRITE)
        pending += 1
    for key, events in sel.select(timeout=1):
        sock = key.fileobj
        if events & selectors.EVENT_WRITE:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                fail(sock)
                continue
            sock.send(REQUEST)  # a few dozen bytes into an empty socket buffer
            sel.modify(sock, selectors.EVENT_READ)
            received[sock] = b""
            continue
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            fail(sock)
            continue
        received[sock] += data
        if answered(received[sock]):
            status = received.pop(sock).split(b" ", 2)[1].decode()
            statuses[status] = statuses.get(status, 0) + 1
            sel.unregister(sock)
            idle.append(sock)
            pending -= 1
timed_out = pending
opened = time.monotonic() - begin
answers = ", ".join(f"{n} answered {s}" for s, n in sorted(statuses.items())) or "none answered"
with open(READY + ".tmp", "w") as out:
    out.write(f"{len(idle)} idle of {COUNT} ({answers}; {errors} failed, {timed_out} timed out) in {opened:.1f} s\n")
os.rename(READY + ".tmp", READY)

while not os.path.exists(STOP) and time.monotonic() - begin < 600:
    time.sleep(0.1)
closed = 0
for sock in idle:  # closed by the proxy meanwhile: readable, and reading gives nothing
    try:
        closed += sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
    sock.close()
print(f"{closed} of the {len(idle)} idle connections were closed by the proxy while held", flush=True)
EOF
fi

# idle_rss WHO PORT: WHO's RSS before, with IDLE_CONNECTIONS idle connections on PORT, and
# after they closed; sets RSS_BEFORE[WHO], RSS_IDLE[WHO], RSS_AFTER[WHO] (kB), IDLE_NOTE[WHO].
declare -A RSS_BEFORE RSS_IDLE RSS_AFTER IDLE_NOTE
idle_rss() {
    local who=$1 port=$2 pids client
    read -r -a pids <<<"$(pids_of "$who")"
    rm -f "$TMP/idle.ready" "$TMP/idle.stop"
    RSS_BEFORE[$who]=$(rss_kb "${pids[@]}")
    "$PYTHON" "$TMP/idle.py" 127.0.0.1 "$port" /plain "$IDLE_CONNECTIONS" "$TMP/idle.ready" "$TMP/idle.stop" \
        >"$TMP/idle-$who.out" 2>&1 &
    client=$!
    PIDS+=("$client")
    for _ in $(seq 1 1500); do
        [ -f "$TMP/idle.ready" ] || ! kill -0 "$client" 2>/dev/null || { sleep 0.1; continue; }
        break
    done
    [ -f "$TMP/idle.ready" ] || die "the idle client against $who ended without a summary: $(cat "$TMP/idle-$who.out")"
    # 3 s: the proxy parks a keep-alive connection after 500 ms quiet, which frees hyper's
    # buffers; jemalloc then returns pages unused for 1 s. Let both settle.
    sleep 3
    RSS_IDLE[$who]=$(rss_kb "${pids[@]}")
    IDLE_NOTE[$who]=$(cat "$TMP/idle.ready")
    touch "$TMP/idle.stop"
    wait "$client" 2>/dev/null || true
    stop_pid "$client"
    IDLE_NOTE[$who]+="; $(cat "$TMP/idle-$who.out")"
    sleep 2
    RSS_AFTER[$who]=$(rss_kb "${pids[@]}")
    say "  $who: RSS $(mb "${RSS_BEFORE[$who]}") MB -> $(mb "${RSS_IDLE[$who]}") MB with the idle connections -> $(mb "${RSS_AFTER[$who]}") MB after; ${IDLE_NOTE[$who]}"
}
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

if has_part idle; then
    part_start idle
    say "$IDLE_CONNECTIONS idle keep-alive connections, one GET /plain each"
    idle_rss stickless "$PROXY_PORT"
    idle_rss nginx "$NGINX_PROXY_PORT"
    part_end idle
fi

# --- Part scale --------------------------------------------------------------------------

# resize_sessions TARGET: adds filler sessions (copies of the real session's hash, with its
# TTL) or removes the newest ones, until Redis holds TARGET keys (it holds nothing but
# sessions). Filler ids are numbered: 40 hex digits of SHA-1 of the number plus 3 more, 43
# characters within the base64url alphabet of real ids, so going back down leaves the same
# keys as on the way up. Batches of 100,000 per EVAL, so Redis is never blocked for long.
FILLER_SCRIPT='local fields = redis.call("HGETALL", KEYS[1])
for i = tonumber(ARGV[2]), tonumber(ARGV[3]) do
    local key = ARGV[1] .. redis.sha1hex("filler" .. i) .. string.format("%03x", i % 4096)
    if ARGV[5] == "add" then
        redis.call("HSET", key, unpack(fields))
        redis.call("PEXPIRE", key, ARGV[4])
    else
        redis.call("DEL", key)
    end
end
return 0'
FILLED=0 # filler sessions 1 to FILLED exist
resize_sessions() {
    local target=$1 have ttl batch
    have=$(rcli dbsize)
    ttl=$(rcli pttl "$SESSION_KEY")
    [ "$ttl" -gt 0 ] || die "the session $SESSION_KEY has no TTL ($ttl)"
    while [ "$have" -lt "$target" ]; do
        batch=$((target - have < 100000 ? target - have : 100000))
        rcli eval "$FILLER_SCRIPT" 1 "$SESSION_KEY" "stickless-load:session:" \
            $((FILLED + 1)) $((FILLED + batch)) "$ttl" add >/dev/null
        FILLED=$((FILLED + batch))
        have=$(rcli dbsize)
    done
    while [ "$have" -gt "$target" ] && [ "$FILLED" -gt 0 ]; do
        batch=$((have - target < 100000 ? have - target : 100000))
        batch=$((batch < FILLED ? batch : FILLED))
        rcli eval "$FILLER_SCRIPT" 1 "$SESSION_KEY" "stickless-load:session:" \
            $((FILLED - batch + 1)) "$FILLED" "$ttl" drop >/dev/null
        FILLED=$((FILLED - batch))
        have=$(rcli dbsize)
    done
    say "  Redis holds $have sessions ($(rcli info memory | tr -d '\r' | sed -n 's/^used_memory_human://p') used)"
}

# Small, large, small again: the large run is compared with the mean of the two small ones
# around it, so a drift of the machine during the part does not pass for an effect.
declare -A STORED
if has_part scale; then
    part_start scale
    resize_sessions "$SCALE_SMALL"
    STORED[small]=$(rcli dbsize)
    run scale-small stickless "$PROXY/" -H "Cookie: $COOKIE"
    resize_sessions "$SCALE_LARGE"
    STORED[large]=$(rcli dbsize)
    run scale-large stickless "$PROXY/" -H "Cookie: $COOKIE"
    resize_sessions "$SCALE_SMALL"
    run scale-small2 stickless "$PROXY/" -H "Cookie: $COOKIE"
    SCALE_SMALL_MEAN=$(awk -v a="${RPS[scale-small]}" -v b="${RPS[scale-small2]}" 'BEGIN { printf "%.2f", (a + b) / 2 }')
    part_end scale
fi

# --- Report ------------------------------------------------------------------------------

# ratio, per_request, minus: "n/a" when either figure is "n/a" (a skipped run).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a") printf "n/a"; else if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
per_request() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a") printf "n/a"; else printf "%.3f", (b > 0 ? a / b : 0) }'; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a") printf "n/a"; else printf "%.3f", a - b }'; }
# target LABEL VALUE OP LIMIT [NOTE]: one line of the targets block (OP: <= or >=).
# context LABEL VALUE [NOTE]: a line of it with no target of its own.
TARGETS=()
target() {
    local verdict
    verdict=$(awk -v v="$2" -v op="$3" -v l="$4" 'BEGIN {
        if (v == "n/a") print "skipped"; else if (v == "" || v == "-") print "n/a"; else print ((op == "<=" ? v + 0 <= l + 0 : v + 0 >= l + 0) ? "PASS" : "MISS")
    }')
    TARGETS+=("$(printf '%-68s %10s  %-9s %s%s' "$1" "$2" "$3 $4" "$verdict" "${5:+  ($5)}")")
}
context() { TARGETS+=("$(printf '%-68s %10s  %-9s %s%s' "$1" "$2" "-" "$([ "$2" = n/a ] && echo skipped || echo context)" "${3:+  ($3)}")"); }

echo
echo "stickless load test: $(nproc) CPUs, all on 127.0.0.1, parts: $(for p in $ALL_PARTS baseline; do [ -z "${PART_SECONDS[$p]:-}" ] || printf '%s %s s, ' "$p" "${PART_SECONDS[$p]}"; done)total $((SECONDS - STARTED)) s$([ "$SECRETS" = 1 ] && echo ", signed cookies + sealed values")"
echo "stickless: $STICKLESS ($("$STICKLESS" --version 2>/dev/null || echo '?')); nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'); redis-server $("$REDIS_SERVER" --version | awk '{print $3}' | sed 's/v=//')"
echo "backend: nginx (1 worker) answering a 23-byte 200; nginx proxy: 2 workers, upstream keepalive 64; CPU: utime + stime of the proxy process (nginx: its workers) over the measured run"

if has_part main; then
    echo
    echo "main: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, HTTP/1.1 keep-alive (p50/p99 at saturation: context only, see part latency)"
    printf '%-48s %11s %9s %9s %9s %9s %12s %8s\n' "path" "requests/s" "vs direct" "vs nginx" "p50 ms" "p99 ms" "+p99 vs a." "CPU µs"
    row() {
        local label=$1 name=$2 vs_nginx
        vs_nginx=$(ratio "${RPS[$name]}" "${RPS[nginxproxy]}")
        printf '%-48s %11s %9s %9s %9s %9s %12s %8s\n' "$label" "${RPS[$name]}" "$(ratio "${RPS[$name]}" "${RPS[direct]}")" \
            "$vs_nginx" "${P50[$name]}" "${P99[$name]}" "$(minus "${P99[$name]}" "${P99[direct]}")" "${CPU_US[$name]}"
    }
    row "a. direct to the backend (its CPU)" direct
    row "b. stickless, with session cookie" session
    row "b'. stickless, with session cookie, near cache" near
    row "c. stickless, no cookie (anonymous)" anonymous
    row "d. stickless, session: off route" plain
    row "e. nginx as a plain reverse proxy" nginxproxy
    echo "p99 added over direct (context: closed loop at saturation, latency follows throughput; part latency measures it at a fixed rate): nginx proxy $(minus "${P99[nginxproxy]}" "${P99[direct]}") ms, stickless with session $(minus "${P99[session]}" "${P99[direct]}") ms, with session and near cache $(minus "${P99[near]}" "${P99[direct]}") ms, session: off $(minus "${P99[plain]}" "${P99[direct]}") ms"
    echo "ratio stickless (with session, near cache off) / nginx reverse proxy: $(ratio "${RPS[session]}" "${RPS[nginxproxy]}") (target >= 0.90)"
    echo "ratio stickless (with session, near cache on, opt-in) / nginx reverse proxy: $(ratio "${RPS[near]}" "${RPS[nginxproxy]}") (target >= 0.90)"
    echo "ratio stickless (session: off) / nginx reverse proxy: $(ratio "${RPS[plain]}" "${RPS[nginxproxy]}") (target >= 1.00)"
    echo "ratio stickless (anonymous) / nginx reverse proxy: $(ratio "${RPS[anonymous]}" "${RPS[nginxproxy]}") (no target of its own; context)"
    echo "CPU per request over http, stickless session: off / nginx proxy: ${CPU_US[plain]} / ${CPU_US[nginxproxy]} µs = $(ratio "${CPU_US[plain]}" "${CPU_US[nginxproxy]}") (context)"
    echo "Redis commands per request, run b: $(per_request "$SESSION_CALLS" "${REQS[session]}") ($SESSION_CALLS calls / ${REQS[session]} requests; ${SESSION_DETAIL:-none})"
    echo "Redis write commands per request, run b: $(per_request "$SESSION_WRITES" "${REQS[session]}") ($SESSION_WRITES writes; target 0 between sliding-expiry extensions)"
    echo "Redis round trips per request, run b: $(per_request "$SESSION_TRIPS" "${REQS[session]}") ($SESSION_TRIPS trips: HGETALL + script calls; a read pipelines HGETALL and PTTL)"
    echo "Redis commands per request, run b' (near cache): $(per_request "$NEAR_CALLS" "${REQS[near]}") ($NEAR_CALLS calls / ${REQS[near]} requests; ${NEAR_DETAIL:-none})"
    echo "Redis write commands per request, run b' (near cache): $(per_request "$NEAR_WRITES" "${REQS[near]}") ($NEAR_WRITES writes)"
    echo "Redis round trips per request, run b' (near cache): $(per_request "$NEAR_TRIPS" "${REQS[near]}") ($NEAR_TRIPS trips; expected about 0: sessions served from the worker's cache)"
    echo "Redis commands per request, run c: $(per_request "$ANON_CALLS" "${REQS[anonymous]}") ($ANON_CALLS calls / ${REQS[anonymous]} requests${ANON_DETAIL:+; $ANON_DETAIL})"
    target "main: req/s stickless session (near cache off) / nginx proxy" "$(ratio "${RPS[session]}" "${RPS[nginxproxy]}")" ">=" 0.9
    target "main: req/s stickless session (near cache on, opt-in) / nginx proxy" "$(ratio "${RPS[near]}" "${RPS[nginxproxy]}")" ">=" 0.9
    target "main: req/s stickless session: off / nginx proxy" "$(ratio "${RPS[plain]}" "${RPS[nginxproxy]}")" ">=" 1.0
    context "main: req/s stickless anonymous / nginx proxy" "$(ratio "${RPS[anonymous]}" "${RPS[nginxproxy]}")"
    target "main: Redis writes per request, session (near cache off)" "$(per_request "$SESSION_WRITES" "${REQS[session]}")" "<=" 0
    target "main: Redis writes per request, session (near cache on, opt-in)" "$(per_request "$NEAR_WRITES" "${REQS[near]}")" "<=" 0
    context "main: Redis round trips per request, session (near cache off)" "$(per_request "$SESSION_TRIPS" "${REQS[session]}")" "expected 1: HGETALL + PTTL, pipelined"
    context "main: Redis round trips per request, session (near cache on, opt-in)" "$(per_request "$NEAR_TRIPS" "${REQS[near]}")" "expected about 0"
    context "main: saturated p99 added over direct (ms), session (near cache off)" "$(minus "${P99[session]}" "${P99[direct]}")" "closed loop at saturation; the target is on part latency"
    context "main: saturated p99 added over direct (ms), session (near cache on)" "$(minus "${P99[near]}" "${P99[direct]}")" "closed loop at saturation; the target is on part latency"
fi

if has_part latency; then
    echo
    echo "latency: wrk -t$THREADS -c$CONNECTIONS -d$LATENCY_DURATION --latency, HTTP/1.1 keep-alive, paced to $RATE requests/s by delay() (not saturated)"
    printf '%-48s %11s %8s %9s %9s %9s %14s %8s\n' "path" "requests/s" "of RATE" "p50 ms" "p90 ms" "p99 ms" "+p99 vs direct" "CPU µs"
    for pair in "direct to the backend (its CPU):lat-direct" "nginx as a plain reverse proxy:lat-nginx" \
        "stickless, session (near cache off):lat-session" "stickless, session (near cache on, opt-in):lat-near" \
        "stickless, session: off route:lat-plain"; do
        name=${pair##*:}
        added=""
        [ "$name" = lat-direct ] || added=$(minus "${P99[$name]}" "${P99[lat-direct]}")
        printf '%-48s %11s %8s %9s %9s %9s %14s %8s\n' "${pair%:*}" "${RPS[$name]}" "$(ratio "${RPS[$name]}" "$RATE")" \
            "${P50[$name]}" "${P90[$name]}" "${P99[$name]}" "$added" "${CPU_US[$name]}"
    done
    echo "target rate $RATE requests/s; achieved: $(for n in lat-direct lat-nginx lat-session lat-near lat-plain; do printf '%s %s, ' "${n#lat-}" "${RPS[$n]}"; done | sed 's/, $//') (a run below 95% of it is warned about above)"
    note="paced at $RATE req/s over -c$CONNECTIONS"
    target "latency: stickless session added p99 over direct (ms), near cache off" "$(minus "${P99[lat-session]}" "${P99[lat-direct]}")" "<=" 1 "$note"
    target "latency: stickless session added p99 over direct (ms), near cache on" "$(minus "${P99[lat-near]}" "${P99[lat-direct]}")" "<=" 1 "$note; opt-in"
    context "latency: stickless session: off added p99 over direct (ms)" "$(minus "${P99[lat-plain]}" "${P99[lat-direct]}")" "$note"
    context "latency: nginx proxy added p99 over direct (ms)" "$(minus "${P99[lat-nginx]}" "${P99[lat-direct]}")" "$note"
fi

if has_part tls; then
    echo
    echo "tls: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, https with a self-signed P-256 certificate (HTTP/1.1), session: off route / plain nginx location"
    printf '%-56s %11s %8s %12s\n' "path" "requests/s" "vs http" "CPU µs/req"
    printf '%-56s %11s %8s %12s\n' "f. stickless, https, keep-alive" "${RPS[tls]}" "$(ratio "${RPS[tls]}" "${RPS[plain]:-}")" "${CPU_US[tls]}"
    printf '%-56s %11s %8s %12s\n' "f'. nginx proxy, https, keep-alive" "${RPS[nginxtls]}" "$(ratio "${RPS[nginxtls]}" "${RPS[nginxproxy]:-}")" "${CPU_US[nginxtls]}"
    printf '%-56s %11s %8s %12s\n' "g. stickless, http, a new connection per request" "${RPS[plainclose]}" "1.00" "${CPU_US[plainclose]}"
    printf '%-56s %11s %8s %12s\n' "h. stickless, https, a new connection per request" "${RPS[tlsclose]}" "$(ratio "${RPS[tlsclose]}" "${RPS[plainclose]}")" "${CPU_US[tlsclose]}"
    printf '%-56s %11s %8s %12s\n' "h'. nginx proxy, https, a new connection per request" "${RPS[nginxtlsclose]}" "" "${CPU_US[nginxtlsclose]}"
    echo "keep-alive https, stickless / nginx: requests/s $(ratio "${RPS[tls]}" "${RPS[nginxtls]}"), CPU per request ${CPU_US[tls]} / ${CPU_US[nginxtls]} µs = $(ratio "${CPU_US[tls]}" "${CPU_US[nginxtls]}") (target <= 1.00)"
    has_part main && echo "ratio https/http, stickless keep-alive: $(ratio "${RPS[tls]}" "${RPS[plain]}")"
    echo "ratio https/http, stickless new connection per request: $(ratio "${RPS[tlsclose]}" "${RPS[plainclose]}") (TLS handshakes/s, each a TLS 1.3 resumption: ${RPS[tlsclose]}, nginx ${RPS[nginxtlsclose]}; wrk's own side of each handshake runs on the same CPUs)"
    target "tls: CPU/request stickless / nginx, https keep-alive" "$(ratio "${CPU_US[tls]}" "${CPU_US[nginxtls]}")" "<=" 1.0
    context "tls: req/s stickless / nginx, https keep-alive" "$(ratio "${RPS[tls]}" "${RPS[nginxtls]}")"
fi

if has_part h2; then
    echo
    echo "h2: h2load -t$THREADS -c$H2_CLIENTS -m$H2_STREAMS -D $H2_DURATION, h2c with prior knowledge"
    printf '%-48s %11s %9s %12s\n' "path" "requests/s" "vs nginx" "CPU µs/req"
    for pair in "stickless, with session cookie:h2session" "stickless, with session cookie, near cache:h2near" \
        "stickless, no cookie (anonymous):h2anonymous" "stickless, session: off route:h2plain" "nginx proxy (h2c port):h2nginx"; do
        printf '%-48s %11s %9s %12s\n' "${pair%:*}" "${RPS[${pair##*:}]}" "$(ratio "${RPS[${pair##*:}]}" "${RPS[h2nginx]}")" "${CPU_US[${pair##*:}]}"
    done
    echo "Redis commands per request, with session cookie: $(per_request "$H2_SESSION_CALLS" "${REQS[h2session]}"); with the near cache: $(per_request "$H2_NEAR_CALLS" "${REQS[h2near]}")"
    for pair in "session (near cache off):h2session" "session (near cache on, opt-in):h2near" "anonymous:h2anonymous" "session: off:h2plain"; do
        context "h2: req/s stickless ${pair%:*} / nginx" "$(ratio "${RPS[${pair##*:}]}" "${RPS[h2nginx]}")"
    done
fi

if has_part bulk; then
    echo
    echo "bulk: $BULK_SIZE ($BULK_BYTES bytes) each way, curl time_total, median of $BULK_REPS (stickless: session: off route; nginx: proxy_buffering off, proxy_request_buffering off)"
    printf '%-10s %10s %10s %10s %18s %18s\n' "" "direct s" "nginx s" "stickless s" "stickless/nginx" "stickless/direct"
    for kind in download upload; do
        printf '%-10s %10s %10s %10s %18s %18s\n' "$kind" "${BULK[$kind/direct]}" "${BULK[$kind/nginx]}" "${BULK[$kind/stickless]}" \
            "$(ratio "${BULK[$kind/stickless]}" "${BULK[$kind/nginx]}")" "$(ratio "${BULK[$kind/stickless]}" "${BULK[$kind/direct]}")"
        echo "  $kind rounds (s): direct ${BULK_TIMES[$kind/direct]}; nginx ${BULK_TIMES[$kind/nginx]}; stickless ${BULK_TIMES[$kind/stickless]}"
        target "bulk: $kind time stickless / nginx" "$(ratio "${BULK[$kind/stickless]}" "${BULK[$kind/nginx]}")" "<=" 2.0
    done
fi

if has_part idle; then
    echo
    echo "idle: $IDLE_CONNECTIONS idle keep-alive connections (one GET /plain each), VmRSS"
    printf '%-28s %10s %14s %12s %14s\n' "" "before MB" "with idle MB" "KB/conn" "after close MB"
    for who in stickless nginx; do
        printf '%-28s %10s %14s %12s %14s\n' "$([ "$who" = nginx ] && echo "nginx proxy (workers)" || echo stickless)" \
            "$(mb "${RSS_BEFORE[$who]}")" "$(mb "${RSS_IDLE[$who]}")" \
            "$(awk -v a="${RSS_IDLE[$who]}" -v b="${RSS_BEFORE[$who]}" -v n="$IDLE_CONNECTIONS" 'BEGIN { printf "%.1f", (a - b) / n }')" \
            "$(mb "${RSS_AFTER[$who]}")"
        echo "  $who: ${IDLE_NOTE[$who]}"
    done
    note=""
    [ "$IDLE_CONNECTIONS" = 10000 ] || note="with $IDLE_CONNECTIONS connections; the target is for 10000"
    target "idle: stickless RSS with 10k idle connections (MB)" "$(mb "${RSS_IDLE[stickless]}")" "<=" 50 "$note"
fi

if has_part scale; then
    echo
    echo "scale: run b (wrk -t$THREADS -c$CONNECTIONS -d$DURATION, with session cookie) by sessions stored in Redis, in this order"
    printf '%-28s %11s %9s %9s %12s\n' "sessions stored" "requests/s" "p50 ms" "p99 ms" "CPU µs/req"
    for run_name in scale-small scale-large scale-small2; do
        size=${STORED[large]}
        [ "$run_name" = scale-large ] || size=${STORED[small]}
        printf '%-28s %11s %9s %9s %12s\n' "$size" "${RPS[$run_name]}" "${P50[$run_name]}" "${P99[$run_name]}" "${CPU_US[$run_name]}"
    done
    echo "ratio ${STORED[large]} / ${STORED[small]} stored (the mean of the two runs at ${STORED[small]}: $SCALE_SMALL_MEAN): $(ratio "${RPS[scale-large]}" "$SCALE_SMALL_MEAN") (target about 1.00)"
    target "scale: req/s at ${STORED[large]} / at ${STORED[small]} sessions" "$(ratio "${RPS[scale-large]}" "$SCALE_SMALL_MEAN")" ">=" 0.9 "target ~1.0; 0.9 allows for run-to-run noise"
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

if [ ${#TARGETS[@]} -gt 0 ]; then
    echo
    echo "targets ($(nproc) CPUs, shared by the clients, both proxies, the backend and Redis):"
    printf '%s\n' "${TARGETS[@]}"
fi
