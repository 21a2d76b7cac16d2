//! The Express adapter (`adapters/node`, package `stickless-session`) end to end: two node
//! instances of a real Express application behind the proxy, round-robin with no stickiness,
//! a real `redis-server` as the store. The applications are the adapter's example shop
//! (`adapters/node/example/cart.js`, express-session's API only) and ungit, an unmodified git
//! GUI from npm (Express, express-session, passport-local) with its one `session({` line
//! changed, both installed by `scripts/thirdparty/node.sh`. Controls run the same instances
//! with express-session's memory store.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::apps::{self, App, Browser};
use support::{free_port, RawRequest, RawResponse};

fn adapter_dir() -> PathBuf {
    apps::repo().join("adapters").join("node")
}

/// `target/thirdparty/node/node_modules`, where the install script puts express,
/// express-session and ungit.
fn modules() -> PathBuf {
    apps::thirdparty("node").join("node_modules")
}

fn have_node() -> bool {
    apps::have("node", apps::runs("node", &["--version"]))
}

fn have_modules() -> bool {
    have_node()
        && apps::have(
            "express, express-session and ungit (scripts/thirdparty/node.sh)",
            modules().join("ungit/source/server.stickless.js").is_file()
                && modules().join("express-session").is_dir(),
        )
}

/// NODE_PATH for the applications: `stickless-session` is this repository's adapter (a
/// symlink to `adapters/node` in a directory of its own), the rest comes from the install.
fn node_path() -> String {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = apps::scratch("node_path");
        std::os::unix::fs::symlink(adapter_dir(), dir.join("stickless-session"))
            .expect("symlink stickless-session");
        dir
    });
    format!("{}:{}", dir.display(), modules().display())
}

/// A directory both instances of one test process share (the shop's `/meet-then-set`).
fn barrier_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| apps::scratch("barrier")).clone()
}

/// One instance of the example shop, with the adapter or (`control`) with express-session.
fn shop(name: &str, control: bool) -> App {
    let port = free_port();
    let mut command = Command::new("node");
    command
        .arg(adapter_dir().join("example").join("cart.js"))
        .env("PORT", port.to_string())
        .env("INSTANCE", name)
        .env("SESSION", if control { "express" } else { "stickless" })
        .env("BARRIER_DIR", barrier_dir())
        .env("NODE_PATH", node_path());
    App::spawn(name, &mut command, port, Duration::from_secs(20))
}

/// One ungit instance with log-in on (user `alice`), its own HOME, no browser, no update
/// check; `stickless` runs the one-line-changed server file, else the original.
fn ungit(name: &str, stickless: bool) -> App {
    let port = free_port();
    let home = apps::scratch(&format!("ungit-home-{name}"));
    let server = if stickless {
        "server.stickless.js"
    } else {
        "server.js"
    };
    let mut command = Command::new("node");
    command
        .arg(modules().join("ungit/source").join(server))
        .args(["--cliconfigonly", "--no-launchBrowser", "--no-bugtracking"])
        .args(["--ungitVersionCheckOverride", "--logLevel=info"])
        .args(["--authentication", "--users.alice=wonderland"])
        .arg(format!("--port={port}"))
        .current_dir(&home)
        .env("HOME", &home)
        .env("NODE_PATH", node_path());
    App::spawn(name, &mut command, port, Duration::from_secs(30))
}

/// Redis, the two shop instances and the proxy.
type Rig = apps::Pair;

impl Rig {
    async fn shop(control: bool) -> Rig {
        Rig::start(shop("A", control), shop("B", control)).await
    }
}

/// The JSON answer, asserting a 200.
fn json(response: &RawResponse, rig: &Rig) -> Value {
    assert!(
        (200..300).contains(&response.status),
        "{}: {}\n{}",
        response.status,
        response.text(),
        rig.logs()
    );
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", response.text(), rig.logs()))
}

/// Sends one request to the shop and returns its JSON, asserting that the instance that
/// served it is not the one that served the previous request (`last`), and that no cookie
/// but the proxy's was ever issued.
async fn step(rig: &Rig, browser: &mut Browser, last: &mut String, path: &str) -> Value {
    let request = browser.request("GET", path);
    let response = browser.send(request).await;
    let body = json(&response, rig);
    let instance = body["instance"].as_str().expect("instance").to_owned();
    assert_ne!(
        &instance, last,
        "round-robin alternates instances ({path}: {body})"
    );
    assert!(
        browser.cookies.keys().all(|name| name == "SESSION"),
        "a cookie besides the proxy's: {:?}",
        browser.cookies
    );
    *last = instance;
    body
}

/// `/` from another browser that holds `cookie` (an old id): what that id still reaches.
async fn with_cookie(rig: &Rig, last: &mut String, cookie: &str) -> Value {
    let mut other = rig.browser_holding(cookie);
    let body = step(rig, &mut other, last, "/").await;
    assert_eq!(other.session(), Some(cookie), "a dead id is not replaced");
    body
}

/// A query-string value, percent-encoded.
fn q(text: &str) -> String {
    apps::form_encode(text)
}

// ---------------------------------------------------------------------------------------------
// The adapter's own unit tests

#[test]
fn unit_tests_pass() {
    if !have_node() {
        return;
    }
    let tests = adapter_dir().join("test");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests)
        .expect("adapters/node/test")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".test.js"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "unit test files in {}", tests.display());
    let output = apps::run_to_end(
        Command::new("node")
            .arg("--test")
            .args(&files)
            .current_dir(adapter_dir()),
        Duration::from_secs(60),
    );
    assert!(output.contains("\n# fail 0"), "{output}");
    let pass = output
        .lines()
        .find(|l| l.starts_with("# pass"))
        .unwrap_or_default();
    assert!(pass.trim() != "# pass 0", "{output}");
    eprintln!("node --test: {pass}");
}

// ---------------------------------------------------------------------------------------------
// The example shop with the adapter

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cart_and_typed_values_survive_alternating_instances() {
    if !have_modules() {
        return;
    }
    let rig = Rig::shop(false).await;
    let mut browser = rig.browser();
    let mut last = String::new();

    let anonymous = step(&rig, &mut browser, &mut last, "/").await;
    assert_eq!(anonymous["session"], json!({}));
    assert_eq!(anonymous["id"], Value::Null);
    assert_eq!(rig.sessions().len(), 0, "reading creates no session");

    let login = step(&rig, &mut browser, &mut last, "/login?user=alice").await;
    assert_eq!(
        login["id"],
        Value::Null,
        "a new session's id is not known yet"
    );
    assert!(browser.session().is_some(), "the proxy issued its cookie");
    let me = step(&rig, &mut browser, &mut last, "/").await;
    let id = me["id"].as_str().expect("the proxy's id").to_owned();
    assert_eq!(
        me["session"],
        json!({"user": "alice", "loginCount": 1, "cart": {"items": [], "total": 0}, "vip": false})
    );

    // The cart changes in place, on alternating instances.
    let items = [("A-1", 2, "12.5"), ("B-2", 1, "0.99"), ("C-3", 7, "13.75")];
    for (sku, qty, price) in items {
        step(
            &rig,
            &mut browser,
            &mut last,
            &format!("/cart/add?sku={sku}&qty={qty}&price={price}"),
        )
        .await;
    }
    let me = step(&rig, &mut browser, &mut last, "/").await;
    assert_eq!(me["id"], id.as_str(), "the same id on both instances");
    assert_eq!(
        me["session"],
        json!({
            "user": "alice",
            "loginCount": 4,
            "cart": {
                "items": [
                    {"sku": "A-1", "qty": 2, "price": 12.5},
                    {"sku": "B-2", "qty": 1, "price": 0.99},
                    {"sku": "C-3", "qty": 7, "price": 13.75}
                ],
                "total": 122.24
            },
            "vip": true,
            "lastSku": "C-3"
        })
    );

    // Values of every JSON type, and keys that are not attribute names.
    let values = [
        (
            "note",
            json!("h\u{e9}llo \u{2603} \u{1F600}, \"quoted\"\ttab"),
        ),
        ("coupon", Value::Null),
        ("ratio", json!(-0.25)),
        ("flags", json!([true, false, null, 3, "x"])),
        (
            "shippingAddress",
            json!({"city": "Z\u{fc}rich", "zip": "8001"}),
        ),
        ("user_id", json!(42)),
        ("ID", json!("not the session id")),
    ];
    for (key, value) in &values {
        step(
            &rig,
            &mut browser,
            &mut last,
            &format!("/set?key={}&value={}", q(key), q(&value.to_string())),
        )
        .await;
    }
    let me = step(&rig, &mut browser, &mut last, "/").await;
    for (key, value) in &values {
        assert_eq!(&me["session"][key], value, "{key}");
    }
    assert_eq!(
        me["id"],
        id.as_str(),
        "a key named id is not the session id"
    );
    assert_eq!(me["session"]["user"], "alice");

    // What Redis holds is readable JSON under the documented names.
    let sessions = rig.sessions();
    assert_eq!(sessions.len(), 1);
    let stored: std::collections::HashMap<String, String> =
        rig.redis.cmd(&["HGETALL", &sessions[0]]);
    assert_eq!(stored["user"], "\"alice\"");
    assert_eq!(stored["xuser-5fid"], "42");
    assert_eq!(stored["x-49-44"], "\"not the session id\"");
    assert_eq!(
        stored["xshipping-41ddress"],
        r#"{"city":"Z\u00fcrich","zip":"8001"}"#
    );
    assert_eq!(stored["coupon"], "null");

    let me = step(&rig, &mut browser, &mut last, "/forget?key=coupon").await;
    assert!(me["session"].get("coupon").is_none());
    let me = step(&rig, &mut browser, &mut last, "/").await;
    assert!(me["session"].get("coupon").is_none(), "delete persisted");
    assert_eq!(browser.cookies.keys().collect::<Vec<_>>(), ["SESSION"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_changes_nothing_writes_nothing() {
    if !have_modules() {
        return;
    }
    let rig = Rig::shop(false).await;
    let mut browser = rig.browser();
    let mut last = String::new();
    step(&rig, &mut browser, &mut last, "/login?user=dave").await;
    step(
        &rig,
        &mut browser,
        &mut last,
        "/cart/add?sku=A&qty=1&price=2",
    )
    .await;

    rig.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    for _ in 0..4 {
        let me = step(&rig, &mut browser, &mut last, "/").await;
        assert_eq!(me["session"]["user"], "dave");
    }
    assert_eq!(
        rig.writes(),
        0,
        "reads wrote: {:?}",
        rig.redis.proxy_commands()
    );

    // One changed key is one write, and the keys it did not change are as they were.
    let key = rig.sessions().remove(0);
    let before: std::collections::HashMap<String, String> = rig.redis.cmd(&["HGETALL", &key]);
    step(
        &rig,
        &mut browser,
        &mut last,
        "/set?key=theme&value=%22dark%22",
    )
    .await;
    assert_eq!(rig.writes(), 1, "{:?}", rig.redis.proxy_commands());
    let after: std::collections::HashMap<String, String> = rig.redis.cmd(&["HGETALL", &key]);
    assert_eq!(after["theme"], "\"dark\"");
    for (name, value) in &before {
        assert_eq!(&after[name], value, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_rotates_destroy_invalidates() {
    if !have_modules() {
        return;
    }
    let rig = Rig::shop(false).await;
    let mut browser = rig.browser();
    let mut last = String::new();

    // An anonymous session, then a log-in: express-session's regenerate gives a new id and
    // a new empty session, so the anonymous draft is gone too.
    step(&rig, &mut browser, &mut last, "/set?key=draft&value=1").await;
    let anonymous_cookie = browser.session().expect("a session").to_owned();
    step(&rig, &mut browser, &mut last, "/login?user=bob").await;
    let login_cookie = browser.session().expect("a session").to_owned();
    assert_ne!(login_cookie, anonymous_cookie, "log-in rotated the id");
    let me = step(&rig, &mut browser, &mut last, "/").await;
    assert_eq!(me["session"]["user"], "bob");
    assert!(me["session"].get("draft").is_none(), "{me}");
    let login_id = me["id"].clone();
    let dead = with_cookie(&rig, &mut last, &anonymous_cookie).await;
    assert_eq!(dead["session"], json!({}), "the old id stopped working");

    // Rotation that keeps the data (regenerate, then copy it back).
    step(
        &rig,
        &mut browser,
        &mut last,
        "/cart/add?sku=K&qty=1&price=3",
    )
    .await;
    let rotated = step(&rig, &mut browser, &mut last, "/rotate").await;
    assert_eq!(
        rotated["id"],
        Value::Null,
        "the new id is not known before the response"
    );
    let rotated_cookie = browser.session().expect("a session").to_owned();
    assert_ne!(rotated_cookie, login_cookie);
    let me = step(&rig, &mut browser, &mut last, "/").await;
    assert_ne!(me["id"], login_id);
    assert_eq!(me["session"]["user"], "bob", "data kept");
    assert_eq!(me["session"]["cart"]["total"], 3);
    let dead = with_cookie(&rig, &mut last, &login_cookie).await;
    assert_eq!(dead["session"], json!({}));

    // Log-out with a message: regenerate, then write into the new session.
    step(&rig, &mut browser, &mut last, "/logout-with-message").await;
    let message_cookie = browser
        .session()
        .expect("a session for the message")
        .to_owned();
    assert_ne!(message_cookie, rotated_cookie);
    let me = step(&rig, &mut browser, &mut last, "/").await;
    assert_eq!(me["session"], json!({"flash": "You have been logged out"}));

    // Log-in, then destroy: the session ends, the cookie is cleared, Redis is empty.
    step(&rig, &mut browser, &mut last, "/login?user=bob").await;
    let request = browser.request("GET", "/logout");
    let response = browser.send(request).await;
    assert_eq!(response.status, 302, "{}", rig.logs());
    assert!(response.clears_session(), "{:?}", response.headers);
    assert_eq!(browser.session(), None);
    assert_eq!(
        rig.sessions(),
        Vec::<String>::new(),
        "no session left in Redis"
    );
    let me = json(&browser.get("/").await, &rig);
    assert_eq!(me["session"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_different_keys_both_persist() {
    if !have_modules() {
        return;
    }
    let rig = Rig::shop(false).await;
    let mut browser = rig.browser();
    let mut last = String::new();
    step(&rig, &mut browser, &mut last, "/login?user=carol").await;

    // Each request reads the session, waits (bounded) until the other has read it too, then
    // sets its own key: both read a session without the other's key.
    let request = |key: &str, other: &str| {
        browser.request(
            "GET",
            &format!("/meet-then-set?key={key}&other={other}&value=set"),
        )
    };
    let (one, two) = tokio::join!(
        request("left", "right").send(),
        request("right", "left").send()
    );
    let (one, two) = (json(&one, &rig), json(&two, &rig));
    assert_ne!(one["instance"], two["instance"], "served by both instances");
    for saw in [&one["saw"], &two["saw"]] {
        assert!(
            !saw.as_array()
                .expect("keys")
                .iter()
                .any(|k| k == "left" || k == "right"),
            "the requests did not overlap: {saw}"
        );
    }
    let me = json(&browser.get("/").await, &rig);
    assert_eq!(me["session"]["left"], "set", "{me}");
    assert_eq!(me["session"]["right"], "set", "{me}");
    assert_eq!(me["session"]["user"], "carol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_after_the_headers_were_sent_is_logged_as_lost() {
    if !have_modules() {
        return;
    }
    let rig = Rig::shop(false).await;
    let mut browser = rig.browser();
    let mut last = String::new();
    step(&rig, &mut browser, &mut last, "/login?user=erin").await;

    let request = browser.request("GET", "/stream");
    let response = browser.send(request).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "first chunk\nlast chunk\n");
    // The instance that streamed is the one after the log-in's.
    let streamed = if last == "A" { &rig.b } else { &rig.a };
    last = if last == "A" { "B".into() } else { "A".into() };
    let log = streamed.log();
    assert!(
        log.contains("stickless-session: ERROR:")
            && log.contains("LOST (set afterHeaders) on GET /stream"),
        "{}",
        rig.logs()
    );

    let me = step(&rig, &mut browser, &mut last, "/").await;
    assert_eq!(
        me["session"]["beforeHeaders"], true,
        "what came before the headers is kept"
    );
    assert!(me["session"].get("afterHeaders").is_none());
}

// ---------------------------------------------------------------------------------------------
// The control: express-session's MemoryStore

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_without_the_adapter_loses_the_session() {
    if !have_modules() {
        return;
    }
    let rig = Rig::shop(true).await;
    let mut browser = rig.browser();

    let login = json(&browser.get("/login?user=alice").await, &rig);
    assert_eq!(login["session"]["user"], "alice");
    assert!(browser.cookies.contains_key("connect.sid"));
    let other = json(&browser.get("/").await, &rig);
    assert_ne!(other["instance"], login["instance"]);
    assert!(
        other["session"].get("user").is_none(),
        "the other instance knew the session: {other}"
    );
    let same = json(&browser.get("/").await, &rig);
    assert_eq!(same["instance"], login["instance"]);
    assert_eq!(same["session"]["user"], "alice", "only where it was made");
    assert_eq!(
        browser.session(),
        None,
        "the proxy was never asked for a session"
    );
    assert_eq!(rig.sessions(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// ungit, unmodified but for one line

/// The lines that differ between ungit's server.js and the adapter's copy of it.
fn changed_lines(dir: &Path) -> Vec<(String, String)> {
    let original = std::fs::read_to_string(dir.join("server.js")).expect("server.js");
    let patched = std::fs::read_to_string(dir.join("server.stickless.js")).expect("patched");
    assert_eq!(original.lines().count(), patched.lines().count());
    original
        .lines()
        .zip(patched.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

fn login_request(browser: &Browser) -> RawRequest {
    browser
        .request("POST", "/api/login")
        .header("Content-Type", "application/json")
        .body(br#"{"username":"alice","password":"wonderland"}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungit_stays_logged_in_on_both_instances() {
    if !have_modules() {
        return;
    }
    let changed = changed_lines(&modules().join("ungit/source"));
    assert_eq!(
        changed,
        vec![(
            "    session({".to_owned(),
            "    require('stickless-session')({".to_owned()
        )],
        "exactly one line of ungit changed"
    );
    let rig = Rig::start(ungit("A", true), ungit("B", true)).await;
    let mut browser = rig.browser();
    let exists = format!(
        "/api/fs/exists?path={}",
        q(&apps::repo().display().to_string())
    );

    let refused = browser.get(&exists).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    let refused = browser.get(&exists).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(
        rig.sessions(),
        Vec::<String>::new(),
        "anonymous requests store nothing"
    );

    let login = browser.send(login_request(&browser)).await;
    assert_eq!(json(&login, &rig), json!({"ok": true}));
    assert_eq!(
        browser.cookies.keys().collect::<Vec<_>>(),
        ["SESSION"],
        "only the proxy's cookie (no connect.sid)"
    );
    // passport stored the user under its own key, as JSON.
    let sessions = rig.sessions();
    assert_eq!(sessions.len(), 1);
    let passport: String = rig.redis.cmd(&["HGET", &sessions[0], "passport"]);
    assert_eq!(passport, r#"{"user":"alice"}"#);

    for _ in 0..3 {
        let loggedin = json(&browser.get("/api/loggedin").await, &rig);
        assert_eq!(loggedin, json!({"loggedIn": true}), "{}", rig.logs());
        let exists = json(&browser.get(&exists).await, &rig);
        assert_eq!(exists, json!(true), "{}", rig.logs());
    }
    for app in [&rig.a, &rig.b] {
        assert!(
            app.log().contains("GET /api/fs/exists"),
            "{} served no authenticated request:\n{}",
            app.name,
            rig.logs()
        );
    }
    assert!(
        !rig.logs().contains("stickless-session: ERROR"),
        "{}",
        rig.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungit_control_without_the_adapter_loses_the_login() {
    if !have_modules() {
        return;
    }
    let rig = Rig::start(ungit("A", false), ungit("B", false)).await;
    let mut browser = rig.browser();

    let login = browser.send(login_request(&browser)).await;
    assert_eq!(json(&login, &rig), json!({"ok": true}));
    assert!(browser.cookies.contains_key("connect.sid"));
    // The other instance does not know the session, and (saveUninitialized) answers with a
    // session cookie of its own, which the first instance does not know either: lost.
    let mut answers = Vec::new();
    for _ in 0..4 {
        let loggedin = json(&browser.get("/api/loggedin").await, &rig);
        answers.push(loggedin["loggedIn"].as_bool().expect("loggedIn"));
    }
    assert_eq!(answers, [false; 4], "the log-in survived: {}", rig.logs());
    assert_eq!(rig.sessions(), Vec::<String>::new());
}
