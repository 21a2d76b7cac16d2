#!/usr/bin/env bash
# Installs the third-party Flask application that tests/adapter_python.rs runs behind stickless
# with the Python adapter: bepasty (a pastebin whose login lives in Flask's session), from PyPI,
# into a virtualenv under target/thirdparty/python that sees Debian's python3-flask and
# gunicorn (--system-site-packages), so the application runs on the distribution's Flask.
#
# Needs Debian's python3, python3-venv, python3-flask and gunicorn. Idempotent: a venv that
# already holds the pinned version is kept.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/target/thirdparty/python"
python="${PYTHON:-/usr/bin/python3}"
version="1.2.2"
venv="$dest/venv"

installed() {
    "$venv/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(0 if m.version('bepasty') == '$version' else 1)" 2>/dev/null
}

if [ -x "$venv/bin/python" ] && installed; then
    echo "thirdparty/python: bepasty $version already in $venv"
    exit 0
fi

rm -rf "$venv"
mkdir -p "$dest"
"$python" -m venv --system-site-packages "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    "bepasty==$version"
"$venv/bin/python" -c "import bepasty.app, flask, gunicorn" >/dev/null
installed
echo "thirdparty/python: bepasty $version installed in $venv"
