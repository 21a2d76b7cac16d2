#!/usr/bin/env bash
# Installs, upgrades and removes a package inside a throwaway root: an overlay of this
# machine's / whose writes land in a temporary directory, in a private mount namespace, so
# the host's own /usr, /etc and package databases are never touched.
#
#   throwaway_root.sh deb|rpm V1_PACKAGE V2_PACKAGE
#
# Prints "ok: <step>" per step; exits non-zero at the first failed check.
set -euo pipefail
kind=$1 v1=$2 v2=$3

if [ "${IN_THROWAWAY_NAMESPACE:-}" != 1 ]; then
    base=$(mktemp -d /var/tmp/stickless-root.XXXXXX)
    trap 'rm -rf "$base"' EXIT
    mkdir -p "$base/upper" "$base/work" "$base/root"
    cp "$v1" "$base/upper/v1.$kind"
    cp "$v2" "$base/upper/v2.$kind"
    cp "$0" "$base/upper/steps.sh"
    IN_THROWAWAY_NAMESPACE=1 BASE=$base unshare --mount --pid --fork --mount-proc=/proc \
        "$0" "$kind" "/v1.$kind" "/v2.$kind"
    exit
fi

if [ "${IN_THROWAWAY_ROOT:-}" != 1 ]; then
    # In the namespace: mount the overlay, give it fresh /run, /tmp and /proc, and go in.
    : "${BASE:?set by the first stage}"
    mount --make-rprivate /
    mount -t overlay overlay \
        -o "lowerdir=/,upperdir=$BASE/upper,workdir=$BASE/work" "$BASE/root"
    mount -t proc proc "$BASE/root/proc"
    mount -t tmpfs tmpfs "$BASE/root/run"
    mount -t tmpfs tmpfs "$BASE/root/tmp"
    # The maintainer scripts' systemd branch runs (daemon-reload fails harmlessly: there is
    # no systemd in here); nothing may start the service.
    mkdir -p "$BASE/root/run/systemd/system"
    exec env IN_THROWAWAY_ROOT=1 PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        chroot "$BASE/root" /bin/bash /steps.sh "$kind" "$v1" "$v2"
fi

fail() { echo "FAILED: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
[ ! -e /usr/bin/stickless ] || fail "a stickless is already installed in the root"
! getent passwd stickless >/dev/null || fail "a stickless user already exists in the root"

installed_checks() {
    [ -x /usr/bin/stickless ] || fail "no /usr/bin/stickless"
    getent passwd stickless >/dev/null || fail "no stickless user"
    getent group stickless >/dev/null || fail "no stickless group"
    [ "$(stat -c '%a %U:%G' /etc/stickless/proxy.yaml)" = "640 root:stickless" ] ||
        fail "proxy.yaml is $(stat -c '%a %U:%G' /etc/stickless/proxy.yaml)"
    [ "$(stat -c '%a %U:%G' /usr/bin/stickless)" = "755 root:root" ] || fail "binary mode"
    grep -q '^ExecStart=/usr/bin/stickless run --config /etc/stickless/proxy.yaml' \
        /usr/lib/systemd/system/stickless.service || fail "unit ExecStart"
    /usr/bin/stickless check --config /etc/stickless/proxy.yaml >/dev/null ||
        fail "check on the installed config"
    ok "installed: binary, unit, user, config 0640 root:stickless, check passes"
    if command -v systemd-analyze >/dev/null; then
        systemd-analyze verify /usr/lib/systemd/system/stickless.service ||
            fail "systemd-analyze verify"
        ok "unit verifies"
    fi
}

case "$kind" in
deb)
    dpkg -i "$v1" </dev/null >/dev/null || fail "dpkg -i v1"
    installed_checks
    echo "# edited by the administrator" >>/etc/stickless/proxy.yaml
    dpkg -i "$v2" </dev/null >/dev/null || fail "dpkg -i v2 (upgrade)"
    [ "$(dpkg-query -W -f '${Version}' stickless)" = "$(dpkg-deb -f "$v2" Version)" ] ||
        fail "not upgraded"
    grep -q '^# edited by the administrator' /etc/stickless/proxy.yaml || fail "config lost"
    [ ! -e /etc/stickless/proxy.yaml.dpkg-dist ] || fail "config set aside"
    installed_checks
    ok "upgrade kept the edited config"
    dpkg -r stickless </dev/null >/dev/null || fail "dpkg -r"
    [ ! -e /usr/bin/stickless ] || fail "binary left after remove"
    [ ! -e /usr/lib/systemd/system/stickless.service ] || fail "unit left after remove"
    [ -e /etc/stickless/proxy.yaml ] || fail "remove deleted the config (only purge may)"
    ok "remove: binary and unit gone, config kept"
    dpkg -P stickless </dev/null >/dev/null || fail "dpkg -P"
    [ ! -e /etc/stickless/proxy.yaml ] || fail "config left after purge"
    ok "purge: config gone"
    ;;
rpm)
    rpm --initdb
    # --nodeps: this root is Debian, whose packages rpm's database does not know.
    rpm -i --nodeps "$v1" >/dev/null || fail "rpm -i v1"
    installed_checks
    echo "# edited by the administrator" >>/etc/stickless/proxy.yaml
    rpm -U --nodeps "$v2" >/dev/null || fail "rpm -U v2 (upgrade)"
    [ "$(rpm -q --qf '%{VERSION}' stickless)" = "$(rpm -qp --qf '%{VERSION}' "$v2")" ] ||
        fail "not upgraded"
    grep -q '^# edited by the administrator' /etc/stickless/proxy.yaml || fail "config lost"
    installed_checks
    ok "upgrade kept the edited config"
    rpm -e --nodeps stickless >/dev/null || fail "rpm -e"
    [ ! -e /usr/bin/stickless ] || fail "binary left after erase"
    [ ! -e /usr/lib/systemd/system/stickless.service ] || fail "unit left after erase"
    grep -q '^# edited by the administrator' /etc/stickless/proxy.yaml.rpmsave ||
        fail "erase lost the edited config (rpm keeps it as .rpmsave)"
    ok "erase: binary and unit gone, edited config kept as proxy.yaml.rpmsave"
    ;;
*) fail "unknown package kind $kind" ;;
esac
