//! The Java servlet adapter (`adapters/java`) on real containers: two Tomcat 10 instances
//! (the Jakarta jar) and two Jetty 9.4 instances (the javax jar), round-robin behind the proxy
//! with no stickiness, a real `redis-server`, the adapter's own test webapp and Tomcat's
//! unmodified servlet and JSP examples (Debian's `tomcat10-examples`). Each container pair
//! starts once per test and serves every scenario of that test, each in its own context:
//! `/app` (the filter declared in web.xml), `/plain` (no adapter: the control), `/fragment`
//! (only the jar, its web-fragment.xml), `/examples` and `/examples-plain`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use support::apps::{
    have, repo, round_robin_config, run_to_end, runs, scratch, thirdparty, App, Browser,
};
use support::{Proxy, RawRequest, RawResponse, RedisServer};

/// The longest a container may take to start (JVM, deployment of every context).
const START_LIMIT: Duration = Duration::from_secs(60);
const TOMCAT_HOME: &str = "/usr/share/tomcat10";
const TOMCAT_CONF: &str = "/etc/tomcat10";
const JETTY_HOME: &str = "/usr/share/jetty9";

fn adapter_dir() -> PathBuf {
    repo().join("adapters").join("java")
}

fn jdk_present() -> bool {
    runs("javac", &["-version"]) && runs("java", &["-version"])
}

fn tomcat_present() -> bool {
    Path::new(TOMCAT_HOME).join("bin/bootstrap.jar").exists()
        && Path::new(TOMCAT_CONF).join("web.xml").exists()
}

fn jetty_present() -> bool {
    Path::new(JETTY_HOME).join("start.jar").exists()
}

/// `build.sh testapps`, once per test process: the jars and the test webapps under
/// `adapters/java/build/testapps/<jakarta|javax>/<app|plain|fragment>`.
fn test_webapps() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mut build = Command::new(adapter_dir().join("build.sh"));
            build.arg("testapps");
            run_to_end(&mut build, Duration::from_secs(240));
            adapter_dir().join("build").join("testapps")
        })
        .clone()
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success(), "cp -r {from:?} {to:?}");
}

/// JVM options for a quick start on a small machine.
fn jvm(command: &mut Command, instance: &str, tmp: &Path) {
    command
        .args(["-Xmx192m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
        .arg(format!("-Dstickless.instance={instance}"))
        .arg(format!("-Djava.io.tmpdir={}", tmp.display()));
}

/// One Tomcat 10 instance: a CATALINA_BASE of its own (Debian's conf, a minimal server.xml on
/// a free port, no shutdown port) serving `webapps` (context path, exploded directory).
fn tomcat(instance: &str, webapps: &[(&str, PathBuf)]) -> App {
    let base = scratch(&format!("tomcat-{instance}"));
    for dir in ["conf", "webapps", "logs", "work", "temp"] {
        std::fs::create_dir_all(base.join(dir)).expect("catalina base");
    }
    for file in ["web.xml", "catalina.properties", "context.xml"] {
        std::fs::copy(
            Path::new(TOMCAT_CONF).join(file),
            base.join("conf").join(file),
        )
        .expect("tomcat conf");
    }
    let port = support::free_port();
    // bindOnInit="false": the port accepts once every context is deployed. Header size: the
    // proxy injects up to session.max_bytes of session headers.
    std::fs::write(
        base.join("conf/server.xml"),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector port="{port}" address="127.0.0.1" protocol="HTTP/1.1" bindOnInit="false"
               maxHttpHeaderSize="65536" connectionTimeout="20000"/>
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false"/>
    </Engine>
  </Service>
</Server>
"#
        ),
    )
    .expect("server.xml");
    for (context, dir) in webapps {
        copy_dir(dir, &base.join("webapps").join(context));
    }
    let mut command = Command::new("java");
    jvm(&mut command, instance, &base.join("temp"));
    command
        .arg(format!("-Dcatalina.home={TOMCAT_HOME}"))
        .arg(format!("-Dcatalina.base={}", base.display()))
        .arg("-cp")
        .arg(format!(
            "{TOMCAT_HOME}/bin/bootstrap.jar:{TOMCAT_HOME}/bin/tomcat-juli.jar"
        ))
        .args(["org.apache.catalina.startup.Bootstrap", "start"])
        .current_dir(&base);
    App::spawn(
        &format!("tomcat-{instance}"),
        &mut command,
        port,
        START_LIMIT,
    )
}

/// One Jetty 9.4 instance: a jetty.base of its own (server, http, deploy) on a free port.
fn jetty(instance: &str, webapps: &[(&str, PathBuf)]) -> App {
    let base = scratch(&format!("jetty-{instance}"));
    std::fs::create_dir_all(base.join("webapps")).expect("jetty base");
    std::fs::create_dir_all(base.join("tmp")).expect("jetty base");
    let port = support::free_port();
    std::fs::write(
        base.join("start.ini"),
        format!(
            "--module=server,http,deploy\njetty.http.host=127.0.0.1\njetty.http.port={port}\n\
             jetty.httpConfig.requestHeaderSize=65536\n"
        ),
    )
    .expect("start.ini");
    for (context, dir) in webapps {
        copy_dir(dir, &base.join("webapps").join(context));
    }
    let mut command = Command::new("java");
    jvm(&mut command, instance, &base.join("tmp"));
    command
        .arg("-jar")
        .arg(format!("{JETTY_HOME}/start.jar"))
        .arg(format!("jetty.home={JETTY_HOME}"))
        .arg(format!("jetty.base={}", base.display()))
        .current_dir(&base);
    App::spawn(
        &format!("jetty-{instance}"),
        &mut command,
        port,
        START_LIMIT,
    )
}

/// Instances `a` and `b`, started side by side.
fn pair(start: impl Fn(&str) -> App + Sync) -> [App; 2] {
    std::thread::scope(|scope| {
        let a = scope.spawn(|| start("a"));
        let b = start("b");
        [a.join().expect("instance a started"), b]
    })
}

// ---------------------------------------------------------------------------------------------
// Reading the test webapp's pages

/// `attr <key> = <class> <value>` lines of the test servlet's session dump, by key.
fn attr(response: &RawResponse, key: &str) -> Option<String> {
    let prefix = format!("attr {key} = ");
    response
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

fn field(response: &RawResponse, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    response
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

fn jsessionid(response: &RawResponse) -> bool {
    response
        .all("set-cookie")
        .iter()
        .any(|c| c.to_ascii_uppercase().starts_with("JSESSIONID"))
}

/// A page through the proxy from a context with the adapter: 200, and never a container
/// session cookie.
async fn page(browser: &mut Browser, path: &str) -> RawResponse {
    let response = browser.get(path).await;
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    assert!(
        !jsessionid(&response),
        "{path} issued the container's JSESSIONID: {:?}",
        response.all("set-cookie")
    );
    response.assert_no_session_headers();
    response
}

/// Two requests in a row: they land on both instances, and both see the same session.
async fn on_both(browser: &mut Browser, path: &str) -> [RawResponse; 2] {
    let first = page(browser, path).await;
    let second = page(browser, path).await;
    let mut instances = [field(&first, "instance"), field(&second, "instance")];
    instances.sort();
    assert_eq!(
        instances,
        [Some("a".to_owned()), Some("b".to_owned())],
        "round-robin over both instances"
    );
    [first, second]
}

/// Whether the proxy sent any command that writes to Redis since the last `CONFIG RESETSTAT`.
fn store_writes(redis: &RedisServer) -> Vec<(String, u64)> {
    redis
        .proxy_commands()
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with("eval")
                || name.starts_with("fcall")
                || name == "del"
                || name.starts_with("hset")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The scenarios, the same on Tomcat (Jakarta) and Jetty (javax)

/// Login, values of several types, rotation, concurrent updates, a read-only request, headers
/// already sent, logout: the test webapp's `/app` context with the filter in web.xml.
async fn own_app_scenarios(proxy: &Proxy, redis: &RedisServer, apps: &[App; 2]) {
    let mut browser = Browser::new(proxy.addr);

    // Log in: a session is created (and rotated, as a login does), never a JSESSIONID.
    let login = page(&mut browser, "/app/s/login?user=alice").await;
    assert_eq!(field(&login, "changed").as_deref(), Some("true"));
    let first_id = browser
        .session()
        .expect("the proxy issued a session")
        .to_owned();
    let [a, b] = on_both(&mut browser, "/app/s/show").await;
    for shown in [&a, &b] {
        assert_eq!(
            attr(shown, "user").as_deref(),
            Some("java.lang.String alice")
        );
        assert_eq!(field(shown, "new").as_deref(), Some("false"));
        assert!(!field(shown, "id").unwrap_or_default().starts_with("new-"));
    }
    assert_eq!(
        field(&a, "id"),
        field(&b, "id"),
        "the proxy's id, the same everywhere"
    );

    // Cart-like values of several types, changed in place and replaced, on both instances.
    for (item, at) in [("pen", 5), ("ink", 6), ("ink", 7)] {
        page(&mut browser, &format!("/app/s/cart?item={item}&at={at}")).await;
    }
    for shown in on_both(&mut browser, "/app/s/show").await {
        let expected = [
            ("cart", "java.util.ArrayList [pen, ink, ink]"),
            ("count", "java.lang.Integer 3"),
            ("total", "java.lang.Double 7.5"),
            ("lastSeen", "java.lang.Long 7"),
            ("flags", "java.util.HashMap {ink=true, pen=true}"),
            ("last item", "io.stickless.testapp.CartItem ink x2"),
            ("price", "java.math.BigDecimal 19.99"),
            ("user", "java.lang.String alice"),
        ];
        for (key, value) in expected {
            assert_eq!(
                attr(&shown, key).as_deref(),
                Some(value),
                "{key} in\n{}",
                shown.text()
            );
        }
    }
    // What other code reads in the store: the common name scheme, base64 Java serialization.
    let id = field(&page(&mut browser, "/app/s/show").await, "id").expect("id");
    let key = format!("stickless:session:{id}");
    let cart: String = redis.cmd(&["HGET", &key, "cart"]);
    assert!(cart.starts_with("rO0AB"), "cart stored as {cart}");
    let escaped: Option<String> = redis.cmd(&["HGET", &key, "xlast-20item"]);
    assert!(escaped.is_some(), "`last item` stored as xlast-20item");

    // A request that only reads the session writes nothing.
    redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    page(&mut browser, "/app/s/read").await;
    page(&mut browser, "/app/s/show").await;
    assert_eq!(
        store_writes(redis),
        vec![],
        "read-only requests wrote to the store"
    );

    // Rotation: a new id, the old one dead at once, the data kept.
    let before = browser.session().expect("session").to_owned();
    assert_eq!(before, first_id, "the same session since the login");
    page(&mut browser, "/app/s/rotate").await;
    let after = browser.session().expect("session").to_owned();
    assert_ne!(before, after, "rotation issued a new id");
    let mut stale = Browser::new(proxy.addr);
    stale.cookies.insert("SESSION".into(), before.clone());
    let old = page(&mut stale, "/app/s/show").await;
    assert_eq!(field(&old, "session").as_deref(), Some("none"));
    for shown in on_both(&mut browser, "/app/s/show").await {
        assert_eq!(
            attr(&shown, "user").as_deref(),
            Some("java.lang.String alice")
        );
        assert_eq!(
            attr(&shown, "count").as_deref(),
            Some("java.lang.Integer 3")
        );
    }

    // Concurrent updates of different keys: one request reads the session, then waits until a
    // second one has set another key; both keys persist (the proxy writes deltas).
    let mut slow = browser.clone();
    let waiter =
        tokio::spawn(async move { slow.get("/app/s/wait?token=t1&key=slow&value=1").await });
    let parked = support::eventually(Duration::from_secs(20), async || {
        for app in apps {
            let check = RawRequest::new(app.addr(), "GET", "/app/s/waiting?token=t1")
                .send()
                .await;
            if check.text().trim() == "waiting" {
                return true;
            }
        }
        false
    })
    .await;
    assert!(parked, "the slow request never reached a servlet");
    page(&mut browser, "/app/s/set?key=fast&value=2").await;
    for app in apps {
        RawRequest::new(app.addr(), "GET", "/app/s/release?token=t1")
            .send()
            .await;
    }
    let slow = waiter.await.expect("slow request");
    assert_eq!(slow.status, 200, "{}", slow.text());
    for shown in on_both(&mut browser, "/app/s/show").await {
        assert_eq!(attr(&shown, "slow").as_deref(), Some("java.lang.String 1"));
        assert_eq!(attr(&shown, "fast").as_deref(), Some("java.lang.String 2"));
        assert_eq!(
            attr(&shown, "user").as_deref(),
            Some("java.lang.String alice")
        );
    }

    // Headers already sent: what was set before the flush is saved; what came after cannot be
    // and is logged as lost, at SEVERE level, in the application's log.
    let flushed = page(&mut browser, "/app/s/flush").await;
    assert_eq!(flushed.text().trim(), "flushed");
    let logged = support::eventually(Duration::from_secs(5), async || {
        apps.iter()
            .any(|app| app.log().contains("SEVERE") && app.log().contains("X-Session-Set-late"))
    })
    .await;
    assert!(
        logged,
        "no SEVERE log line for the lost change:\n{}\n{}",
        apps[0].log(),
        apps[1].log()
    );
    // More output than the response buffer: the container commits by itself, after the delta.
    let big = page(&mut browser, "/app/s/big").await;
    assert!(big.body.len() > 64_000);
    for shown in on_both(&mut browser, "/app/s/show").await {
        assert_eq!(
            attr(&shown, "early").as_deref(),
            Some("java.lang.String kept")
        );
        assert_eq!(attr(&shown, "late"), None);
        assert_eq!(
            attr(&shown, "big").as_deref(),
            Some("java.lang.String before-overflow")
        );
    }

    // Logout: invalidate destroys the session everywhere.
    let session = browser.session().expect("session").to_owned();
    let logout = browser.get("/app/s/logout").await;
    assert_eq!(field(&logout, "invalidated").as_deref(), Some("yes"));
    assert!(logout.clears_session());
    let mut stale = Browser::new(proxy.addr);
    stale.cookies.insert("SESSION".into(), session);
    for _ in 0..2 {
        let shown = page(&mut stale, "/app/s/show").await;
        assert_eq!(field(&shown, "session").as_deref(), Some("none"));
    }

    // Logout with a message: destroyed, then written again in the same request.
    page(&mut browser, "/app/s/login?user=bob").await;
    let session = browser.session().expect("session").to_owned();
    page(&mut browser, "/app/s/logout?flash=bye").await;
    let fresh = browser
        .session()
        .expect("a new session for the message")
        .to_owned();
    assert_ne!(fresh, session);
    for shown in on_both(&mut browser, "/app/s/show").await {
        assert_eq!(
            attr(&shown, "flash").as_deref(),
            Some("java.lang.String bye")
        );
        assert_eq!(attr(&shown, "user"), None);
    }
    stale.cookies.insert("SESSION".into(), session);
    let old = page(&mut stale, "/app/s/show").await;
    assert_eq!(field(&old, "session").as_deref(), Some("none"));
}

/// The same two instances without the adapter (`/plain`): the container's own sessions, so a
/// login is lost on the other instance.
async fn control_scenario(proxy: &Proxy) {
    let mut browser = Browser::new(proxy.addr);
    let login = browser.get("/plain/s/set?key=user&value=alice").await;
    assert_eq!(login.status, 200);
    assert!(jsessionid(&login), "the container issues its own session");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let shown = browser.get("/plain/s/show").await;
        seen.push((field(&shown, "instance"), attr(&shown, "user")));
    }
    assert!(
        seen.iter().any(|(_, user)| user.is_none()),
        "without the adapter the session should be lost on the other instance: {seen:?}"
    );
}

/// Only the jar in WEB-INF/lib, nothing declared in web.xml: its web-fragment.xml installs
/// the filter.
async fn fragment_scenario(proxy: &Proxy) {
    let mut browser = Browser::new(proxy.addr);
    page(&mut browser, "/fragment/s/set?key=k&value=v").await;
    for shown in on_both(&mut browser, "/fragment/s/show").await {
        assert_eq!(attr(&shown, "k").as_deref(), Some("java.lang.String v"));
    }
}

/// A request sent straight to one instance, carrying session headers as the proxy would.
async fn direct(app: &App, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut request = RawRequest::new(app.addr(), "GET", path);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await;
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response
}

fn session_headers(response: &RawResponse) -> Vec<String> {
    let mut names: Vec<String> = response
        .headers
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|name| name.starts_with("x-session-"))
        .collect();
    names.sort();
    names
}

/// The exact headers the filter answers with, seen at the instance (the proxy removes them).
async fn delta_scenario(app: &App) {
    let created = direct(app, "/app/s/set?key=cart&value=pen", &[]).await;
    let cart = created.header("x-session-set-cart").expect("Set-cart");
    let headers = [
        ("X-Session-Id", "direct-id"),
        ("X-Session-cart", cart.as_str()),
        ("X-Session-user", "alice"), // written by a backend without the adapter
        ("X-Session-java-created", "1000"),
    ];
    // Reads only: no header at all.
    let read = direct(app, "/app/s/show", &headers).await;
    assert_eq!(session_headers(&read), Vec::<String>::new());
    assert_eq!(
        attr(&read, "user").as_deref(),
        Some("java.lang.String alice")
    );
    assert_eq!(field(&read, "id").as_deref(), Some("direct-id"));
    assert_eq!(field(&read, "created").as_deref(), Some("1000"));
    // One key changed: only that key.
    let set = direct(app, "/app/s/set?key=cart&value=ink", &headers).await;
    assert_eq!(session_headers(&set), vec!["x-session-set-cart".to_owned()]);
    let removed = direct(app, "/app/s/remove?key=user", &headers).await;
    assert_eq!(
        session_headers(&removed),
        vec!["x-session-remove".to_owned()]
    );
    assert_eq!(removed.header("x-session-remove").as_deref(), Some("user"));
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn java_unit_tests_pass() {
    if !have("a JDK (javac)", jdk_present())
        || !have(
            "the servlet API jars (libtomcat10-java, libservlet-api-java)",
            Path::new("/usr/share/java/tomcat10-servlet-api.jar").exists()
                && Path::new("/usr/share/java/servlet-api.jar").exists(),
        )
    {
        return;
    }
    let mut build = Command::new(adapter_dir().join("build.sh"));
    build.arg("test");
    let output = run_to_end(&mut build, Duration::from_secs(240));
    for flavor in ["jakarta", "javax"] {
        assert!(
            output.contains(&format!("AdapterTest ({flavor}):")) && output.contains(" 0 failed"),
            "{output}"
        );
    }
}

/// Two Tomcat 10 instances with the Jakarta jar: the test webapp (every scenario), its
/// control, the web-fragment install, and Tomcat's own examples with and without the adapter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tomcat_sessions_survive_round_robin() {
    if !have("a JDK (javac)", jdk_present())
        || !have("Tomcat 10 (tomcat10)", tomcat_present())
        || !have(
            "Tomcat's examples (scripts/thirdparty/java.sh, tomcat10-examples)",
            thirdparty("java").join("examples/WEB-INF/web.xml").exists(),
        )
    {
        return;
    }
    let webapps = test_webapps().join("jakarta");
    let examples = adapted_examples(&webapps.join("app/WEB-INF/lib/stickless-session-jakarta.jar"));
    let contexts = vec![
        ("app", webapps.join("app")),
        ("plain", webapps.join("plain")),
        ("fragment", webapps.join("fragment")),
        ("examples", examples),
        ("examples-plain", thirdparty("java").join("examples")),
    ];
    let apps = pair(|instance| tomcat(instance, &contexts));
    let redis = RedisServer::start();
    let upstreams = [apps[0].url(), apps[1].url()];
    let proxy = Proxy::start(&round_robin_config(&redis.url(), &upstreams, "")).await;

    delta_scenario(&apps[0]).await;
    own_app_scenarios(&proxy, &redis, &apps).await;
    control_scenario(&proxy).await;

    fragment_scenario(&proxy).await;
    examples_scenario(&proxy).await;
    examples_control(&proxy).await;
}

/// Two Jetty 9.4 instances with the javax jar (Servlet 3.1/4): the same scenarios, the
/// control and the web-fragment install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetty_sessions_survive_round_robin() {
    if !have("a JDK (javac)", jdk_present()) || !have("Jetty 9 (jetty9)", jetty_present()) {
        return;
    }
    let webapps = test_webapps().join("javax");
    let contexts = vec![
        ("app", webapps.join("app")),
        ("plain", webapps.join("plain")),
        ("fragment", webapps.join("fragment")),
    ];
    let apps = pair(|instance| jetty(instance, &contexts));
    let redis = RedisServer::start();
    let upstreams = [apps[0].url(), apps[1].url()];
    let proxy = Proxy::start(&round_robin_config(&redis.url(), &upstreams, "")).await;

    delta_scenario(&apps[1]).await;
    own_app_scenarios(&proxy, &redis, &apps).await;
    control_scenario(&proxy).await;
    fragment_scenario(&proxy).await;
}

// ---------------------------------------------------------------------------------------------
// Tomcat's examples (Debian's tomcat10-examples), unmodified but for the filter declaration

/// The lines added to the examples' web.xml: the filter, declared first, as the README says.
/// Its web.xml is `metadata-complete`, so the jar's web-fragment.xml is not read there.
const FILTER_DECLARATION: &str = "    <filter>
        <filter-name>stickless-session</filter-name>
        <filter-class>io.stickless.SessionFilter</filter-class>
        <async-supported>true</async-supported>
    </filter>
    <filter-mapping>
        <filter-name>stickless-session</filter-name>
        <url-pattern>/*</url-pattern>
    </filter-mapping>
";

/// A copy of the examples with the jar in WEB-INF/lib and the filter declared first in web.xml
/// (configuration: no line of code changes).
fn adapted_examples(jar: &Path) -> PathBuf {
    let dir = scratch("examples-adapted").join("examples");
    copy_dir(&thirdparty("java").join("examples"), &dir);
    std::fs::copy(
        jar,
        dir.join("WEB-INF/lib")
            .join(jar.file_name().expect("jar name")),
    )
    .expect("jar into WEB-INF/lib");
    let web_xml = dir.join("WEB-INF/web.xml");
    let original = std::fs::read_to_string(&web_xml).expect("web.xml");
    let first_filter = original
        .find("    <filter>")
        .expect("the examples declare filters");
    let adapted = format!(
        "{}{FILTER_DECLARATION}{}",
        &original[..first_filter],
        &original[first_filter..]
    );
    std::fs::write(&web_xml, &adapted).expect("web.xml");
    let added = adapted.lines().count() - original.lines().count();
    eprintln!(
        "tomcat10-examples: web.xml +{added} lines (the filter declaration), no code changed"
    );
    dir
}

const MOVIE: &str = "X-files movie";
const BOOK: &str = "JSP Book";
const CARTS: &str = "/examples/jsp/sessions/carts.jsp";
const SESSION_EXAMPLE: &str = "/examples/servlets/servlet/SessionExample";

/// The items listed in the cart (the `<ol>` of carts.jsp; the form below lists every item).
fn cart_items(response: &RawResponse) -> Vec<String> {
    let text = response.text();
    let list = text
        .split_once("<ol>")
        .and_then(|(_, rest)| rest.split_once("</ol>"))
        .map(|(list, _)| list.to_owned())
        .unwrap_or_else(|| panic!("no cart in\n{text}"));
    list.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("<li>")
                .map(|item| item.trim().to_owned())
        })
        .collect()
}

async fn examples_scenario(proxy: &Proxy) {
    let mut browser = Browser::new(proxy.addr);
    // SessionExample: attributes typed into its form, any name.
    page(
        &mut browser,
        &format!("{SESSION_EXAMPLE}?dataname=user&datavalue=alice"),
    )
    .await;
    page(
        &mut browser,
        &format!("{SESSION_EXAMPLE}?dataname=favourite+colour&datavalue=blue"),
    )
    .await;
    for _ in 0..2 {
        let shown = page(&mut browser, SESSION_EXAMPLE).await;
        let text = shown.text();
        assert!(text.contains("user = alice"), "{text}");
        assert!(text.contains("favourite colour = blue"), "{text}");
    }

    // The JSP shopping cart: a session-scoped bean changed in place by each request.
    let mut shopper = Browser::new(proxy.addr);
    page(&mut shopper, &format!("{CARTS}?itemId=1&submit=add")).await;
    page(&mut shopper, &format!("{CARTS}?itemId=4&submit=add")).await;
    for _ in 0..2 {
        let mut items = cart_items(&page(&mut shopper, CARTS).await);
        items.sort();
        assert_eq!(items, [BOOK, MOVIE]);
    }
    page(&mut shopper, &format!("{CARTS}?itemId=1&submit=remove")).await;
    for _ in 0..2 {
        assert_eq!(cart_items(&page(&mut shopper, CARTS).await), [BOOK]);
    }
}

/// The pristine examples on the same instances: the cart does not survive the other instance.
async fn examples_control(proxy: &Proxy) {
    let carts = CARTS.replace("/examples/", "/examples-plain/");
    let mut shopper = Browser::new(proxy.addr);
    let first = shopper.get(&format!("{carts}?itemId=1&submit=add")).await;
    assert!(jsessionid(&first));
    shopper.get(&format!("{carts}?itemId=4&submit=add")).await;
    for _ in 0..2 {
        let items = cart_items(&shopper.get(&carts).await);
        assert!(
            items.len() < 2,
            "without the adapter the cart should not hold both items: {items:?}"
        );
    }
}
