//! The real binary: `check`, `run` (exit codes, signals, two instances sharing one Redis) and
//! `demo`, and what the logs show.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::binary::{write_config, Instance, BIN};
use support::{Backend, RawRequest, RawResponse, RedisServer};

fn check(text: &str) -> Output {
    // Tests run in parallel: each check gets a folder of its own for its `check.yaml`.
    static CHECKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CHECKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = write_config(&format!("check-{n}/check.yaml"), text);
    Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run stickless check")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_example_proxy_yaml_is_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(BIN)
        .args(["check", "--config", &format!("{root}/proxy.yaml")])
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.contains("valid") && summary.contains("routes"),
        "{summary}"
    );
}

#[test]
fn check_reports_what_is_wrong_and_where() {
    let base = "store:\n  url: \"memory://\"\nroutes:\n  - match: { path_prefix: \"/\" }\n    upstreams: [\"http://127.0.0.1:9001\"]\n";
    let redis_base = "routes:\n  - match: { path_prefix: \"/\" }\n    upstreams: [\"http://127.0.0.1:9001\"]\nstore:\n  url: \"URL\"\n";
    let cases: &[(String, &[&str])] = &[
        (
            format!("{base}colour: blue\n"),
            &["unknown field `colour`", "check.yaml:6: colour"],
        ),
        (base.replace("url:", "uri:"), &["unknown field `uri`"]),
        (
            format!("{base}  - match: {{ path_prefix: \"/x\" }}\n    upstreams: [\"ftp://h:1\"]\n"),
            &[
                "routes[1].upstreams[0]",
                "http://",
                "check.yaml:7: routes[1]",
            ],
        ),
        (
            base.replace("\"/\"", "\"api\""),
            &["routes[0].match.path_prefix"],
        ),
        (
            format!("{base}session:\n  idle_timeout: soon\n"),
            &["session.idle_timeout", "check.yaml:7: session.idle_timeout"],
        ),
        (
            format!("{base}session:\n  cookie:\n    same_site: none\n    secure: false\n"),
            &["check.yaml:8: session.cookie.same_site"],
        ),
        (base.replace("memory://", "mysql://db"), &["store.url"]),
        // The operating keys.
        (
            format!("{base}  - match: {{ path_prefix: \"/\" }}\n    upstreams: [\"http://127.0.0.1:9002\"]\n"),
            &["check.yaml:6: routes[1].match", "routes[0]", "never used"],
        ),
        (
            base.replace("  - match:", "  - name: app\n    match:")
                + "  - name: app\n    match: { path_prefix: \"/x\" }\n    upstreams: [\"http://127.0.0.1:9002\"]\n",
            &["routes[1].name", "also the name of routes[0]"],
        ),
        (
            base.replace("  - match:", "  - name: \"my route\"\n    match:"),
            &["routes[0].name", "not a route name"],
        ),
        (
            format!("{base}admin:\n  listen: \"localhost:9901\"\n"),
            &["admin.listen", "not a host name"],
        ),
        (
            format!("{base}admin:\n  listen: \"127.0.0.1:9901\"\n  token_file: /nonexistent/token\n"),
            &["admin.token_file", "/nonexistent/token"],
        ),
        (
            format!("{base}listen: \"127.0.0.1:9901\"\nadmin:\n  listen: \"127.0.0.1:9901\"\n"),
            &["admin.listen", "differ from `listen`"],
        ),
        (format!("{base}log:\n  format: xml\n"), &["log.format", "unknown variant"]),
        (
            format!("{base}limits:\n  listen_backlog: 0\n"),
            &["limits.listen_backlog", "greater than zero"],
        ),
        (
            format!("{base}    health: {{ check: {{ path: \"health\" }} }}\n"),
            &["routes[0].health.check.path"],
        ),
        (
            format!("{base}    health: {{ max_fails: 3, fail_timeout: 0s }}\n"),
            &["routes[0].health.fail_timeout"],
        ),
        (
            format!("{base}    session: sometimes\n"),
            &["unknown variant `sometimes`"],
        ),
        (
            format!("{base}    login_url: /login\n"),
            &["routes[0].login_url"],
        ),
        ("store: [\n".to_string(), &["check.yaml:"]),
        (
            "routes: []\nstore:\n  url: \"memory://\"\n".to_string(),
            &["routes: at least one route"],
        ),
        (
            redis_base.replace("URL", "redis://h:6379")
                + "  password_env: STICKLESS_TEST_UNSET_VARIABLE\n",
            &["store.password_env", "STICKLESS_TEST_UNSET_VARIABLE"],
        ),
        (
            redis_base.replace("URL", "redis://:pw@h:6379") + "  password_file: /etc/hostname\n",
            &["more than once"],
        ),
        (
            redis_base.replace("URL", "redis://h:6379") + "  tls: { ca_file: /etc/hostname }\n",
            &["store.tls", "rediss"],
        ),
        (
            redis_base.replace("URL", "rediss://h:6379")
                + "  tls: { ca_file: /nonexistent/ca.pem }\n",
            &["store.tls.ca_file", "/nonexistent/ca.pem"],
        ),
        (
            redis_base.replace("URL", "redis://h:6379")
                + "  durability: { replicas: 0, timeout: 100ms }\n",
            &["store.durability.replicas"],
        ),
        (
            redis_base.replace("URL", "redis+sentinel://h:26379"),
            &["store.url", "master-name"],
        ),
        (
            redis_base.replace("URL", "redis://:s3cret@h:6379/x"),
            &["store.url", "***"],
        ),
    ];
    for (text, expected) in cases {
        let output = check(text);
        assert_eq!(output.status.code(), Some(2), "{text}");
        let message = stderr(&output);
        assert!(message.contains("check.yaml"), "names the file: {message}");
        for needle in *expected {
            assert!(message.contains(needle), "{message} lacks {needle:?}");
        }
        assert!(!message.contains("s3cret"), "a password leaked: {message}");
    }
    // YAML syntax errors carry line and column.
    let output = check("store:\n  url: \"memory://\"\nroutes:\n  - match: { path_prefix: \"/\"\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("check.yaml:"),
        "{}",
        stderr(&output)
    );
    let message = stderr(&output);
    let location = message.split("check.yaml:").nth(1).unwrap_or_default();
    assert!(
        location.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "line:column in {message}"
    );

    // A missing file.
    let output = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/proxy.yaml"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("/nonexistent/proxy.yaml"));
}

#[test]
fn check_reports_every_shape_error_at_once() {
    let output = check(
        "store:\n  url: \"memory://\"\n  uri: \"memory://\"\nroutes:\n  - match: { path_prefix: \"/\" }\n    upstreams: [\"http://127.0.0.1:9001\"]\n    colour: red\n  - match: { path_prefix: \"/x\", hots: a }\n    upstreams: [\"http://127.0.0.1:9001\"]\n    session: sometimes\nsession:\n  cookie:\n    nmae: SESSION\n",
    );
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    for needle in [
        "5 problems",
        "check.yaml:3: store.uri: unknown field `uri`",
        "check.yaml:7: routes[0].colour: unknown field `colour`",
        "check.yaml:8: routes[1].match.hots: unknown field `hots`",
        "check.yaml:10: routes[1].session: unknown variant `sometimes`",
        "check.yaml:13: session.cookie.nmae: unknown field `nmae`",
    ] {
        assert!(message.contains(needle), "{message} lacks {needle:?}");
    }
    // One problem a line, so that each can be jumped to.
    assert_eq!(message.lines().count(), 6, "{message}");
}

#[test]
fn check_refuses_a_login_url_that_loops() {
    let route = |prefix: &str, extra: &str| {
        format!("  - match: {{ path_prefix: \"{prefix}\" }}\n    upstreams: [\"http://127.0.0.1:9001\"]\n{extra}")
    };
    let hosted = |host: &str, extra: &str| {
        format!("  - match: {{ path_prefix: \"/\", host: \"{host}\" }}\n    upstreams: [\"http://127.0.0.1:9001\"]\n{extra}")
    };
    let required = |login: &str| format!("    session: required\n    login_url: \"{login}\"\n");
    let config =
        |routes: &[String]| format!("store:\n  url: \"memory://\"\nroutes:\n{}", routes.concat());
    let loops = [
        // The route sends to itself.
        (
            config(&[route("/", &required("/login"))]),
            "check.yaml:7: routes[0].login_url",
            "routes[0] (this route)",
        ),
        // Another route that requires a session takes the login page first.
        (
            config(&[
                route("/login", "    session: required\n"),
                route("/", &required("/login?next=/")),
            ]),
            "check.yaml:10: routes[1].login_url",
            "routes[0],",
        ),
        // An absolute URL on the route's own host (any case, any port).
        (
            config(&[hosted(
                "app.example.com",
                &required("https://APP.example.com:8443/login"),
            )]),
            "check.yaml:7: routes[0].login_url",
            "routes[0] (this route)",
        ),
    ];
    for (text, at, target) in loops {
        let output = check(&text);
        assert_eq!(output.status.code(), Some(2), "{text}");
        let message = stderr(&output);
        for needle in [&format!("{at}: `"), target, "requires a session", "loop"] {
            assert!(message.contains(needle), "{message} lacks {needle:?}");
        }
    }
    let fine = [
        // The login page is served by a route that does not require a session.
        config(&[
            route("/login", "    session: \"off\"\n"),
            route("/", &required("/login")),
        ]),
        config(&[route("/login", ""), route("/", &required("/login"))]),
        // On another host: an identity provider, or this proxy's route for that host.
        config(&[route("/", &required("https://idp.example.org/login"))]),
        config(&[route("/", &required("//idp.example.org/login"))]),
        config(&[
            hosted("app.example.com", &required("https://login.example.com/")),
            hosted("login.example.com", ""),
        ]),
        // Without a login URL a request gets 401: nothing to loop.
        config(&[route("/", "    session: required\n")]),
    ];
    for text in fine {
        let output = check(&text);
        assert!(output.status.success(), "{text}\n{}", stderr(&output));
    }
}

#[test]
fn check_says_listen_takes_an_ip_address() {
    let routes = "store:\n  url: \"memory://\"\nroutes:\n  - match: { path_prefix: \"/\" }\n    upstreams: [\"http://127.0.0.1:9001\"]\n";
    for name in ["localhost:8080", "proxy.internal:80"] {
        let output = check(&format!("listen: \"{name}\"\n{routes}"));
        assert_eq!(output.status.code(), Some(2));
        let message = stderr(&output);
        for needle in [
            &format!("check.yaml:1: listen: `{name}`"),
            "IP address and port",
            "127.0.0.1:8080",
            "[::]:8080",
            "not a host name",
        ] {
            assert!(message.contains(needle), "{message} lacks {needle:?}");
        }
    }
    for garbage in ["nowhere", "127.0.0.1", "1.2.3.4:99999"] {
        let output = check(&format!("listen: \"{garbage}\"\n{routes}"));
        assert_eq!(output.status.code(), Some(2));
        let message = stderr(&output);
        assert!(
            message.contains("is not an address of the form host:port")
                && !message.contains("host name"),
            "{message}"
        );
    }
    for good in ["127.0.0.1:0", "[::1]:8080", "0.0.0.0:80"] {
        let output = check(&format!("listen: \"{good}\"\n{routes}"));
        assert!(output.status.success(), "{good}: {}", stderr(&output));
    }
}

#[test]
fn check_shows_the_near_cache_and_refuses_it_where_it_cannot_work() {
    let routes =
        "routes:\n  - match: { path_prefix: \"/\" }\n    upstreams: [\"http://127.0.0.1:9001\"]\n";
    let on = check(&format!(
        "store:\n  url: \"redis://127.0.0.1:6379/0\"\n  near_cache: {{ max_sessions: 5000 }}\n{routes}"
    ));
    assert!(on.status.success(), "{}", stderr(&on));
    let summary = String::from_utf8_lossy(&on.stdout);
    assert!(
        summary.contains("near cache: up to 5000 sessions per worker thread"),
        "{summary}"
    );
    let cluster = check(&format!(
        "store:\n  url: \"redis+cluster://127.0.0.1:7000\"\n  near_cache: {{ max_sessions: 5000 }}\n{routes}"
    ));
    assert_eq!(cluster.status.code(), Some(2));
    let message = stderr(&cluster);
    assert!(
        message.contains("store.near_cache") && message.contains("redis+cluster://"),
        "{message}"
    );
}

#[test]
fn check_connect_says_each_cause_once() {
    let path = write_config(
        "unreachable.yaml",
        "store:\n  url: \"redis://127.0.0.1:1\"\nroutes:\n  - match: { path_prefix: \"/\" }\n    upstreams: [\"http://127.0.0.1:9001\"]\n",
    );
    let output = Command::new(BIN)
        .args(["check", "--connect", "--config"])
        .arg(&path)
        .output()
        .expect("run stickless check --connect");
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("unreachable.yaml") && message.contains("redis://127.0.0.1:1"),
        "{message}"
    );
    let parts: Vec<&str> = message
        .trim()
        .split(": ")
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "`{part}` said twice: {message}"
        );
    }
}

#[test]
fn run_refuses_a_bad_config_with_exit_2() {
    let path = write_config(
        "bad-run.yaml",
        "listen: nowhere\nstore:\n  url: \"memory://\"\nroutes: []\n",
    );
    let output = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("listen") && message.contains("routes"),
        "{message}"
    );
}

fn run_config(name: &str, store: &str, backends: &[&Backend]) -> PathBuf {
    let ups: Vec<String> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.url()))
        .collect();
    write_config(
        name,
        &format!(
            "listen: \"127.0.0.1:0\"\nstore:\n  url: \"{store}\"\nroutes:\n  - match: {{ path_prefix: \"/\" }}\n    upstreams: [{}]\n",
            ups.join(", ")
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_sessions_and_one_can_die() {
    let redis = RedisServer::start();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let config = run_config("shared.yaml", &redis.url(), &[&a, &b]);
    let first = Instance::start(&config);
    let second = Instance::start(&config);

    let login = RawRequest::new(first.addr, "GET", "/login")
        .reply("X-Session-Set-User", "alice")
        .send()
        .await;
    let id = login.issued_session().expect("session");

    // A round-robin balancer in front: alternate between the instances.
    let mut instances_seen = std::collections::BTreeSet::new();
    for i in 0..6 {
        let proxy = if i % 2 == 0 { second.addr } else { first.addr };
        let response = RawRequest::new(proxy, "GET", "/")
            .session(Some(&id))
            .reply("X-Session-Set-Count", &i.to_string())
            .send()
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.backend_saw("x-session-user").as_deref(),
            Some("alice")
        );
        if i > 0 {
            assert_eq!(
                response.backend_saw("x-session-count"),
                Some((i - 1).to_string()),
                "write on the other instance is seen"
            );
        }
        instances_seen.insert(response.instance().expect("instance"));
    }
    assert_eq!(
        instances_seen.len(),
        2,
        "both app instances served the same session"
    );

    // One proxy dies hard; the other carries on with the same session.
    let mut first = first;
    first.signal("-KILL");
    first.wait();
    for _ in 0..3 {
        let response = RawRequest::new(second.addr, "GET", "/")
            .session(Some(&id))
            .send()
            .await;
        assert_eq!(
            response.backend_saw("x-session-user").as_deref(),
            Some("alice"),
            "nobody logged out"
        );
    }
}

/// Debug logs show every header's name but no session id, cookie, credential or session
/// value; the access log names sessions by a short keyed hash that correlates requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_show_ids_cookies_credentials_or_values() {
    let backend = Backend::start("a").await;
    let config = run_config("logs.yaml", "memory://", &[&backend]);
    let proxy = Instance::start_with(&config, &[("STICKLESS_LOG", "debug")]);
    let login = RawRequest::new(proxy.addr, "GET", "/login")
        .header("Authorization", "Bearer token-sekrit")
        .reply("X-Session-Set-User", "alice-value")
        .send()
        .await;
    let id = login.issued_session().expect("session");
    let other = RawRequest::new(proxy.addr, "GET", "/login")
        .reply("X-Session-Set-User", "bob")
        .send()
        .await
        .issued_session()
        .expect("session");
    // (The test backend's reply instructions carry the value in a request header; from here on
    // the value only travels as a session attribute.)
    support::eventually(Duration::from_secs(5), async || {
        proxy
            .log()
            .iter()
            .filter(|l| l.contains("stickless::access"))
            .count()
            == 2
    })
    .await;
    let logins = proxy.log().len();
    for cookie in [&id, &id, &other] {
        let response = RawRequest::new(proxy.addr, "GET", "/page")
            .session(Some(cookie))
            .header("Authorization", "Basic dXNlcjpzZWtyaXQ=")
            .header("Proxy-Authorization", "Bearer proxy-sekrit")
            .send()
            .await;
        assert_eq!(response.status, 200);
    }
    let seen = support::eventually(Duration::from_secs(5), async || {
        proxy
            .log()
            .iter()
            .filter(|l| l.contains("/page") && l.contains("status=200"))
            .count()
            == 3
    })
    .await;
    let log = proxy.log();
    assert!(seen, "three access lines: {log:#?}");
    let text = log.join("\n");
    for secret in [id.as_str(), other.as_str(), "sekrit", "dXNl"] {
        assert!(!text.contains(secret), "`{secret}` in the log:\n{text}");
    }
    let pages_text = log[logins..].join("\n");
    assert!(!pages_text.contains("alice-value"), "{pages_text}");
    for shown in [
        "authorization",
        "Bearer <redacted>",
        "Basic <redacted>",
        "SESSION=<redacted>",
        "x-session-user",
    ] {
        assert!(text.contains(shown), "`{shown}` not in the log:\n{text}");
    }
    let fingerprint = |line: &String| {
        line.split("session=")
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
    };
    let pages: Vec<String> = log
        .iter()
        .filter(|l| l.contains("stickless::access") && l.contains("/page"))
        .filter_map(fingerprint)
        .collect();
    assert_eq!(pages.len(), 3, "{log:#?}");
    assert!(
        pages[0].len() == 12 && pages[0].bytes().all(|b| b.is_ascii_hexdigit()),
        "{pages:?}"
    );
    assert_eq!(pages[0], pages[1], "one session, one fingerprint");
    assert_ne!(pages[0], pages[2], "two sessions, two fingerprints");
    let issued = log
        .iter()
        .find(|l| l.contains("stickless::access") && l.contains("/login"))
        .and_then(fingerprint);
    assert_eq!(
        issued.as_deref(),
        Some(pages[0].as_str()),
        "the login line names the session it issued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let backend = Backend::start("a").await;
    let config = run_config("drain.yaml", "memory://", &[&backend]);
    let mut instance = Instance::start(&config);
    let addr = instance.addr;
    let slow = tokio::spawn(
        RawRequest::new(addr, "GET", "/")
            .header("X-Reply-Delay-Ms", "1000")
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    instance.signal("-TERM");
    let response = slow.await.expect("task");
    assert_eq!(response.status, 200, "the in-flight request finished");
    assert_eq!(
        tokio::task::spawn_blocking(move || instance.wait())
            .await
            .expect("wait"),
        Some(0)
    );
}

/// `stickless demo` on a free port, and the address its banner names.
fn start_demo() -> (std::process::Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("STICKLESS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let url_line = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a line")
        .expect("read");
    let addr: SocketAddr = url_line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no URL in {url_line}"));
    (child, addr)
}

async fn stop_demo(child: std::process::Child) {
    let mut child = child;
    support::send_signal(child.id(), "-INT");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_two_instances_behind_one_proxy() {
    let (child, addr) = start_demo();

    let login = RawRequest::new(addr, "GET", "/login?user=alice")
        .send()
        .await;
    assert_eq!(login.status, 303);
    let id = login.issued_session().expect("session");
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let page = RawRequest::new(addr, "GET", "/")
            .session(Some(&id))
            .send()
            .await;
        assert_eq!(page.status, 200);
        let text = page.text();
        assert!(text.contains("logged in as: alice"), "{text}");
        served_by.insert(text.lines().next().unwrap_or_default().to_owned());
    }
    assert_eq!(served_by.len(), 2, "{served_by:?}");
    let logout = RawRequest::new(addr, "GET", "/logout")
        .session(Some(&id))
        .send()
        .await;
    assert!(logout.clears_session());
    let page = RawRequest::new(addr, "GET", "/")
        .session(Some(&id))
        .send()
        .await;
    assert!(page.text().contains("not logged in"));
    stop_demo(child).await;
}

const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

/// The instance a demo page names, from its HTML.
fn page_instance(page: &RawResponse) -> String {
    let text = page.text();
    let at = text
        .find("served by instance ")
        .unwrap_or_else(|| panic!("no instance in {text}"));
    text[at..].chars().skip(19).take(1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_is_html_for_browsers_text_for_curl_and_favicons_keep_the_alternation() {
    let (child, addr) = start_demo();
    let page = |id: Option<String>| {
        RawRequest::new(addr, "GET", "/")
            .header("Accept", BROWSER_ACCEPT)
            .session(id.as_deref())
    };

    // A browser gets a page: self-contained, sized for a phone, never cached.
    let anonymous = page(None).send().await;
    assert_eq!(anonymous.status, 200);
    assert_eq!(
        anonymous.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        anonymous.header("cache-control").as_deref(),
        Some("no-store")
    );
    let html = anonymous.text();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("name=\"viewport\""), "{html}");
    assert!(
        html.contains("href=\"/login?user=alice\""),
        "a log-in link: {html}"
    );
    assert!(html.contains("<h1>Not logged in</h1>"), "{html}");
    for external in ["src=", "href=\"http", "url(", "@import"] {
        assert!(
            !html.contains(external),
            "no external assets ({external}): {html}"
        );
    }
    assert!(
        anonymous.issued_session().is_none(),
        "anonymous visits create no session"
    );

    // curl's `Accept: */*` (or none) gets the text answer.
    let text = RawRequest::new(addr, "GET", "/")
        .header("Accept", "*/*")
        .send()
        .await;
    assert_eq!(
        text.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert!(
        text.text().starts_with("served by: instance "),
        "{}",
        text.text()
    );

    let login = RawRequest::new(addr, "GET", "/login?user=alice")
        .header("Accept", BROWSER_ACCEPT)
        .send()
        .await;
    assert_eq!(login.status, 303);
    assert_eq!(login.header("location").as_deref(), Some("/"));
    let id = login.issued_session().expect("session");

    // Reloads alternate strictly, with the browser's own icon requests in between.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let response = page(Some(id.clone())).send().await;
        assert_eq!(response.status, 200);
        let html = response.text();
        assert!(html.contains("Logged in as <em>alice</em>"), "{html}");
        assert!(html.contains("href=\"/logout\""), "a log-out link: {html}");
        assert!(
            html.contains("<th>X-Session-User</th><td>alice</td>"),
            "{html}"
        );
        seen.push(page_instance(&response));
        for icon in [
            "/favicon.ico",
            "/apple-touch-icon.png",
            "/apple-touch-icon-precomposed.png",
        ] {
            let icon = RawRequest::new(addr, "GET", icon)
                .header("Accept", "image/avif,image/webp,*/*")
                .session(Some(&id))
                .send()
                .await;
            assert_eq!(icon.status, 200);
            assert!(icon.issued_session().is_none() && !icon.clears_session());
        }
    }
    let alternating = seen.windows(2).all(|pair| pair[0] != pair[1]);
    assert!(alternating, "instances served in turn: {seen:?}");

    let logout = RawRequest::new(addr, "GET", "/logout")
        .header("Accept", BROWSER_ACCEPT)
        .session(Some(&id))
        .send()
        .await;
    assert!(logout.clears_session());
    let after = page(Some(id)).send().await;
    assert!(after.text().contains("<h1>Not logged in</h1>"));
    stop_demo(child).await;
}
