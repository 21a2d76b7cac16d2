#!/bin/sh
# Builds the stickless servlet adapter from one source tree (written against jakarta.servlet):
#
#   build/stickless-session-jakarta.jar   Jakarta Servlet 5+ (Tomcat 10+, Jetty 11+), Java 11+
#   build/stickless-session-javax.jar     Servlet 3.1/4 (Tomcat 8.5/9, Jetty 9.4), Java 8+,
#                                         made by rewriting the package names (sed)
#
# Usage: build.sh            the two jars
#        build.sh test       the jars, then the JDK-only unit tests against both APIs
#        build.sh testapps   the jars, then the test webapps under build/testapps/
#
# Needs a JDK (javac, jar) and the servlet API jars of Debian's packages: libtomcat10-java
# (Jakarta) and libservlet-api-java (javax). Other locations: JAKARTA_SERVLET_API and
# JAVAX_SERVLET_API.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
build="$here/build"
what="${1:-jars}"

fail() {
    echo "build.sh: $*" >&2
    exit 1
}

first_file() {
    for candidate in "$@"; do
        if [ -f "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

command -v javac >/dev/null 2>&1 || fail "javac not found: install a JDK (apt-get install default-jdk-headless)"
command -v jar >/dev/null 2>&1 || fail "jar not found: install a JDK (apt-get install default-jdk-headless)"

jakarta_api="${JAKARTA_SERVLET_API:-$(first_file /usr/share/java/tomcat10-servlet-api.jar \
    /usr/share/tomcat10/lib/servlet-api.jar || true)}"
javax_api="${JAVAX_SERVLET_API:-$(first_file /usr/share/java/servlet-api-4.0.1.jar \
    /usr/share/java/servlet-api.jar || true)}"
[ -n "$jakarta_api" ] && [ -f "$jakarta_api" ] || fail "the Jakarta servlet API jar is missing:" \
    "apt-get install libtomcat10-java (or set JAKARTA_SERVLET_API=/path/to/jakarta.servlet-api.jar)"
[ -n "$javax_api" ] && [ -f "$javax_api" ] || fail "the javax servlet API jar is missing:" \
    "apt-get install libservlet-api-java (or set JAVAX_SERVLET_API=/path/to/servlet-api.jar)"

mkdir -p "$build"
# One build at a time (cargo runs tests in parallel threads).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$build/.lock"
    flock -w 120 9 || fail "another build.sh holds $build/.lock"
fi

# Rewrites a jakarta source tree for javax: package names, the XML namespace, and the lines
# marked //javax-only (methods Servlet 6 removed but Servlet 3.1/4 declares abstract).
to_javax() {
    src="$1"
    dst="$2"
    rm -rf "$dst"
    mkdir -p "$dst"
    (cd "$src" && find . -type f) | while read -r file; do
        mkdir -p "$dst/$(dirname "$file")"
        sed -e 's/jakarta\.servlet/javax.servlet/g' \
            -e 's#^\( *\)//javax-only #\1#' \
            -e 's#^//javax-only$##' \
            -e 's#https://jakarta.ee/xml/ns/jakartaee#http://xmlns.jcp.org/xml/ns/javaee#g' \
            -e 's#version="5.0"#version="3.1"#' \
            "$src/$file" >"$dst/$file"
    done
}

# compile <flavor> <release> <api jar> <source dir> <classes dir>
compile() {
    rm -rf "$5"
    mkdir -p "$5"
    # shellcheck disable=SC2046
    javac -nowarn -XDsuppressNotes -Xlint:-options --release "$2" -encoding UTF-8 -cp "$3" -d "$5" \
        $(find "$4" -name '*.java' | sort) || fail "javac failed for the $1 build"
}

jars() {
    compile jakarta 11 "$jakarta_api" "$here/src" "$build/classes-jakarta"
    mkdir -p "$build/classes-jakarta/META-INF"
    cp "$here/src/META-INF/web-fragment.xml" "$build/classes-jakarta/META-INF/"
    jar --create --file "$build/stickless-session-jakarta.jar" -C "$build/classes-jakarta" .

    to_javax "$here/src" "$build/src-javax"
    compile javax 8 "$javax_api" "$build/src-javax" "$build/classes-javax"
    mkdir -p "$build/classes-javax/META-INF"
    cp "$build/src-javax/META-INF/web-fragment.xml" "$build/classes-javax/META-INF/"
    jar --create --file "$build/stickless-session-javax.jar" -C "$build/classes-javax" .
    echo "built $build/stickless-session-jakarta.jar and $build/stickless-session-javax.jar"
}

unit_tests() {
    # The tests sit in the adapter's package (they reach package-private classes).
    compile "jakarta tests" 11 "$jakarta_api:$build/classes-jakarta" "$here/test" "$build/test-jakarta"
    java -cp "$jakarta_api:$build/classes-jakarta:$build/test-jakarta" io.stickless.AdapterTest jakarta
    to_javax "$here/test" "$build/test-src-javax"
    compile "javax tests" 8 "$javax_api:$build/classes-javax" "$build/test-src-javax" "$build/test-javax"
    java -cp "$javax_api:$build/classes-javax:$build/test-javax" io.stickless.AdapterTest javax
}

# build/testapps/<flavor>/{app,plain,fragment}: the test webapp with the filter declared in
# web.xml, without the adapter at all, and with only the jar (its web-fragment.xml).
testapps() {
    for flavor in jakarta javax; do
        if [ "$flavor" = jakarta ]; then
            api="$jakarta_api"
            release=11
            src="$here/testapp"
        else
            api="$javax_api"
            release=8
            to_javax "$here/testapp" "$build/testapp-src-javax"
            src="$build/testapp-src-javax"
        fi
        out="$build/testapps/$flavor"
        rm -rf "$out"
        compile "$flavor test app" "$release" "$api" "$src/src" "$out/classes"
        for variant in app plain fragment; do
            mkdir -p "$out/$variant/WEB-INF/lib"
            cp -r "$out/classes" "$out/$variant/WEB-INF/classes"
            if [ "$variant" = app ]; then
                cp "$src/WEB-INF/web.xml" "$out/$variant/WEB-INF/web.xml"
            else
                sed '/<!-- stickless -->/,/<!-- \/stickless -->/d' "$src/WEB-INF/web.xml" \
                    >"$out/$variant/WEB-INF/web.xml"
            fi
            if [ "$variant" != plain ]; then
                cp "$build/stickless-session-$flavor.jar" "$out/$variant/WEB-INF/lib/"
            fi
        done
        rm -rf "$out/classes"
    done
    echo "built $build/testapps"
}

case "$what" in
    jars) jars ;;
    test)
        jars
        unit_tests
        ;;
    testapps)
        jars
        testapps
        ;;
    *) fail "unknown target \"$what\" (jars, test, testapps)" ;;
esac
