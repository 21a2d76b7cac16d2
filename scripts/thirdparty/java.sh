#!/usr/bin/env bash
# Provides the third-party servlet application that tests/adapter_java.rs runs behind stickless
# with the Java adapter: the Servlet and JSP examples of Tomcat 10, from Debian's
# tomcat10-examples package (its session examples: servlets/servlet/SessionExample and the JSP
# shopping cart jsp/sessions/carts.jsp). A pristine copy goes to target/thirdparty/java/examples;
# the test copies it again per container and adds the adapter there.
#
# Needs Debian's tomcat10-examples (and, to run it, tomcat10 and a JDK). Idempotent: a copy of
# the installed version is kept.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/target/thirdparty/java"
source_dir="/usr/share/tomcat10-examples/examples"

if [ ! -f "$source_dir/WEB-INF/web.xml" ]; then
    echo "thirdparty/java: $source_dir is missing: apt-get install tomcat10-examples" >&2
    exit 1
fi
version="$(dpkg-query -W -f='${Version}' tomcat10-examples 2>/dev/null || echo unknown)"

if [ -f "$dest/examples.version" ] && [ "$(cat "$dest/examples.version")" = "$version" ] \
    && [ -f "$dest/examples/WEB-INF/web.xml" ]; then
    echo "thirdparty/java: tomcat10-examples $version already in $dest/examples"
    exit 0
fi

rm -rf "$dest/examples" "$dest/examples.version"
mkdir -p "$dest"
# -L: the package links some files into /usr/share/java; the copy must stand on its own.
cp -rL "$source_dir" "$dest/examples"
echo "$version" >"$dest/examples.version"
echo "thirdparty/java: tomcat10-examples $version copied to $dest/examples"
