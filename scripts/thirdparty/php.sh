#!/usr/bin/env bash
# Installs what tests/adapter_php.rs runs behind stickless with the PHP adapter into
# target/thirdparty/php:
#
# - adminer/: Debian's `adminer` package (Adminer 4.8.1, a database manager: session-backed
#   log-in, CSRF token and SQL history in $_SESSION, session_regenerate_id at log-in), its
#   /usr/share/adminer tree unmodified (0 lines changed). The tests serve the package's own
#   adminer/sqlite.php, which enables Adminer's login-password-less plugin for SQLite
#   (stock Adminer 4.8.1 refuses SQLite log-ins without a password, and its SQLite driver
#   refuses any password).
#
# Taken from the installed package when there is one, else downloaded with `apt-get download`
# and unpacked with dpkg-deb (no root needed; `apt-get install adminer` would also pull in a web
# server through its dependencies). Needs php-cli and php-sqlite3 (the SQLite driver)
# installed to run the tests. Idempotent.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/target/thirdparty/php"
version="4.8.1"
entry="$dest/adminer/adminer/sqlite.php"
stamp="$dest/adminer.version"

if [ -f "$entry" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    echo "thirdparty/php: adminer $version already in $dest/adminer"
    exit 0
fi

mkdir -p "$dest"
rm -rf "$dest/adminer" "$dest/unpack"
installed=$(dpkg-query -W -f='${Status} ${Version}' adminer 2>/dev/null || true)
case "$installed" in
"install ok installed $version"*)
    # Only if the installed files are still the package's.
    if dpkg --verify adminer 2>/dev/null | grep /usr/share/adminer >/dev/null; then
        echo "thirdparty/php: the installed adminer was modified (dpkg --verify)" >&2
        exit 1
    fi
    cp -a /usr/share/adminer "$dest/adminer"
    ;;
*)
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # Only the package (apt-get install would pull in a web server through its dependencies).
    fetch() { (cd "$work" && apt-get download -q adminer >/dev/null 2>&1); }
    if ! fetch; then
        # Package lists not fetched yet on a fresh machine.
        [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null
        fetch || { echo "thirdparty/php: apt-get download adminer failed" >&2; exit 1; }
    fi
    deb=$(ls "$work"/adminer_*.deb)
    case "$(dpkg-deb -f "$deb" Version)" in
    "$version"-*) ;;
    *) echo "thirdparty/php: apt offers adminer $(dpkg-deb -f "$deb" Version), not $version" >&2; exit 1 ;;
    esac
    dpkg-deb -x "$deb" "$dest/unpack"
    mv "$dest/unpack/usr/share/adminer" "$dest/adminer"
    rm -rf "$dest/unpack"
    ;;
esac

[ -f "$entry" ] || { echo "thirdparty/php: $entry missing" >&2; exit 1; }
echo "$version" >"$stamp"
php -m 2>/dev/null | grep -ix 'pdo_sqlite' >/dev/null ||
    echo "thirdparty/php: warning: PHP has no pdo_sqlite (apt-get install php-sqlite3)" >&2
echo "thirdparty/php: adminer $version installed in $dest/adminer (0 lines changed)"
