#!/usr/bin/env bash
# Builds what an operator installs, into dist/:
#   dist/stickless                        x86_64 Linux, needs only glibc 2.28+ (Amazon Linux
#                                         2023, Debian 10+, Ubuntu 20.04+), debug info split off
#   dist/stickless.debug                  that debug info (gdb and perf find it by build id or
#                                         .gnu_debuglink)
#   dist/stickless_<version>_amd64.deb    Debian and Ubuntu
#   dist/stickless-<version>-1.x86_64.rpm Amazon Linux, RHEL and Fedora
#
# Usage: scripts/package.sh [--version V] [--no-build] [--out DIR]
#   --version V   package version (default: Cargo.toml's)
#   --no-build    package the dist/stickless already built (the package tests use it to make
#                 an "upgrade" of another version without a second build)
#   --out DIR     where the packages go (default dist/)
#
# The binary is linked against glibc 2.28 with cargo-zigbuild and zig (PyPI's `ziglang`), so
# it runs on systems older than the one building it; both are installed under
# target/package-tools when missing (zig in a Python venv). Also needs binutils (objcopy,
# objdump), dpkg-deb and rpmbuild (Debian: `apt-get install binutils python3-venv rpm`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
. scripts/common.sh

GLIBC=2.28
TARGET=x86_64-unknown-linux-gnu
MAX_BYTES=$((20 * 1024 * 1024))
# What the binary may link: glibc's own libraries only (zig links the unwinder in, so not
# even libgcc_s).
ALLOWED_NEEDED='^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-x86-64\.so\.2)$'

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
build=1
out=dist
while [ $# -gt 0 ]; do
    case "$1" in
    --version) version=${2:?--version needs a value}; shift 2 ;;
    --no-build) build=0; shift ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    *) die "unknown argument: $1 (see the comment at the top)" ;;
    esac
done
[[ $version =~ ^[0-9]+(\.[0-9]+)*$ ]] || die "version must be digits and dots: $version"
need_commands objcopy objdump dpkg-deb rpmbuild
mkdir -p dist "$out"

# --- The binary ---------------------------------------------------------------------------

tools=$PWD/target/package-tools
if [ "$build" = 1 ]; then
    if ! command -v zig >/dev/null; then
        # A virtual environment of its own: Debian's python refuses pip installs outside one.
        zig=$(find "$tools/venv" -path '*/ziglang/zig' -type f 2>/dev/null | head -1 || true)
        if [ -z "$zig" ]; then
            say "installing zig (PyPI ziglang) into $tools/venv"
            python3 -m venv "$tools/venv"
            "$tools/venv/bin/pip" install --quiet --disable-pip-version-check ziglang
            zig=$(find "$tools/venv" -path '*/ziglang/zig' -type f | head -1)
        fi
        [ -x "$zig" ] || die "no zig in $tools/venv"
        export PATH="${zig%/zig}:$PATH"
    fi
    if ! cargo zigbuild --help >/dev/null 2>&1; then
        if [ ! -x "$tools/bin/cargo-zigbuild" ]; then
            say "installing cargo-zigbuild into $tools"
            cargo install --quiet --locked --root "$tools" cargo-zigbuild
        fi
        export PATH="$tools/bin:$PATH"
    fi
    say "building $TARGET against glibc $GLIBC"
    # A build id, so debuggers and perf match dist/stickless.debug to the binary (zig's
    # linker adds none by default).
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-Wl,--build-id=sha1"
    # The profiling profile: the release build with line tables, split off below.
    cargo zigbuild --profile profiling --locked --target "$TARGET.$GLIBC"
    built=${CARGO_TARGET_DIR:-target}/$TARGET/profiling/stickless
    rm -f dist/stickless dist/stickless.debug
    objcopy --only-keep-debug "$built" dist/stickless.debug
    # The symbol table stays: panic backtraces and perf keep function names.
    objcopy --strip-debug --add-gnu-debuglink=dist/stickless.debug "$built" dist/stickless
    chmod 0755 dist/stickless
fi
bin=dist/stickless
[ -x "$bin" ] || die "no $bin: run without --no-build first"

size=$(stat -c %s "$bin")
[ "$size" -le "$MAX_BYTES" ] || die "$bin is $size bytes, over $MAX_BYTES"
newest=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
[ "$(printf '%s\n%s\n' "$newest" "$GLIBC" | sort -V | tail -1)" = "$GLIBC" ] ||
    die "$bin needs glibc $newest, newer than $GLIBC"
while read -r lib; do
    [[ $lib =~ $ALLOWED_NEEDED ]] || die "$bin links $lib, which is not part of glibc"
done < <(objdump -p "$bin" | awk '$1 == "NEEDED" { print $2 }')
say "$bin: $size bytes, glibc $newest at most"

# --- The files both packages carry ---------------------------------------------------------

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
files=$work/files
install -D -m 0755 "$bin" "$files/usr/bin/stickless"
install -d -m 0755 "$files/usr/lib/systemd/system"
sed 's#/usr/local/bin/stickless#/usr/bin/stickless#g' systemd/stickless.service \
    >"$files/usr/lib/systemd/system/stickless.service"
chmod 0644 "$files/usr/lib/systemd/system/stickless.service"
grep -q '^ExecStart=/usr/bin/stickless run' "$files/usr/lib/systemd/system/stickless.service" ||
    die "the unit's ExecStart does not name /usr/bin/stickless"
install -D -m 0640 proxy.yaml "$files/etc/stickless/proxy.yaml"
install -D -m 0644 README.md "$files/usr/share/doc/stickless/README.md"

# --- .deb ------------------------------------------------------------------------------------

deb=$work/deb
cp -a "$files" "$deb"
install -d -m 0755 "$deb/DEBIAN"
sed -e "s/@VERSION@/$version/" -e "s/@SIZE_KIB@/$(du -sk "$files" | cut -f1)/" \
    packaging/deb/control >"$deb/DEBIAN/control"
install -m 0644 packaging/deb/conffiles "$deb/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "packaging/deb/$script" "$deb/DEBIAN/$script"
done
install -D -m 0644 /dev/stdin "$deb/usr/share/doc/stickless/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: stickless

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
EOF
rm -f "$out"/stickless_*_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$deb" "$out/stickless_${version}_amd64.deb" >/dev/null

# --- .rpm ------------------------------------------------------------------------------------

top=$work/rpm
mkdir -p "$top/SOURCES" "$top/SPECS"
cp "$files/usr/bin/stickless" "$files/usr/lib/systemd/system/stickless.service" \
    "$files/etc/stickless/proxy.yaml" "$files/usr/share/doc/stickless/README.md" "$top/SOURCES/"
sed "s/@VERSION@/$version/" packaging/rpm/stickless.spec >"$top/SPECS/stickless.spec"
# The binary is already stripped and its debug info split: none of rpm's post-processing.
rpmbuild --quiet -bb \
    --define "_topdir $top" \
    --define "_sourcedir $top/SOURCES" \
    --define "_rpmdir $top/RPMS" \
    --define "debug_package %{nil}" \
    --define "__os_install_post %{nil}" \
    "$top/SPECS/stickless.spec"
rm -f "$out"/stickless-*.x86_64.rpm
cp "$top/RPMS/x86_64/stickless-$version-1.x86_64.rpm" "$out/"

say "built:"
ls -l "$bin" "$out/stickless_${version}_amd64.deb" "$out/stickless-$version-1.x86_64.rpm" >&2
