#!/usr/bin/env bash
# Installs what tests/adapter_node.rs runs behind stickless with the Node adapter, from npm,
# into target/thirdparty/node:
#
# - express and express-session, for the adapter's own example shop (adapters/node/example)
#   and its control, which keeps sessions in express-session's MemoryStore;
# - ungit (a web GUI for git: Express, express-session with a memory store, passport-local
#   log-in), unmodified, plus source/server.stickless.js next to its source/server.js: the
#   same file with ONE line changed, `session({` -> `require('stickless-session')({`, so that
#   its app.use(session({...})) hands the same options to the adapter (which ignores them).
#
# Needs node and npm (Debian 12: nodejs, npm). Idempotent: pinned versions already installed
# are kept. The adapter itself is not installed here: the tests put adapters/node on
# NODE_PATH as `stickless-session`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/target/thirdparty/node"
express="4.21.2"
express_session="1.18.1"
# 1.5.28: the last ungit that runs on Node 18 (Debian 12's); later ones need Node 20.19.
ungit="1.5.28"
modules="$dest/node_modules"
server="$modules/ungit/source/server.js"
patched="$modules/ungit/source/server.stickless.js"

# The installed version of a package, without build metadata (ungit's say 1.5.28+d6f3ba03).
version_of() {
    local v
    v=$(node -p "require('$modules/$1/package.json').version" 2>/dev/null || true)
    echo "${v%%+*}"
}

installed() {
    [ "$(version_of express)" = "$express" ] &&
        [ "$(version_of express-session)" = "$express_session" ] &&
        [ "$(version_of ungit)" = "$ungit" ] &&
        [ -f "$patched" ]
}

if installed; then
    echo "thirdparty/node: express $express, express-session $express_session, ungit $ungit already in $dest"
    exit 0
fi

mkdir -p "$dest"
npm install --prefix "$dest" --no-audit --no-fund --no-update-notifier --loglevel=error \
    "express@$express" "express-session@$express_session" "ungit@$ungit" >/dev/null

# The one line: ungit's session middleware call (the line `    session({` inside
# `app.use(`), and nothing else.
[ "$(grep -c '^ *session({$' "$server")" = 1 ] ||
    { echo "thirdparty/node: ungit's session line not found once in $server" >&2; exit 1; }
sed "s/^\( *\)session({\$/\1require('stickless-session')({/" "$server" >"$patched.tmp"
changed=$(diff "$server" "$patched.tmp" | grep -c '^>' || true)
[ "$changed" = 1 ] ||
    { echo "thirdparty/node: expected 1 changed line in ungit, got $changed" >&2; exit 1; }
mv "$patched.tmp" "$patched"

installed || { echo "thirdparty/node: the install in $dest is incomplete" >&2; exit 1; }
echo "thirdparty/node: express $express, express-session $express_session, ungit $ungit installed in $dest (ungit: 1 line changed in $patched)"
