//! The PHP adapter (`adapters/php/stickless_session.php`, installed with `auto_prepend_file`)
//! end to end: two `php -S` instances (php-cli's built-in server, two workers each, each with
//! its own `session.save_path`) behind the proxy, round-robin with no stickiness, a real
//! `redis-server` as the store. The applications are `adapters/php/tests/app` (PHP's own
//! session API only) and Adminer 4.8.1 from Debian's `adminer` package, unmodified, installed
//! by `scripts/thirdparty/php.sh`. Controls run the same instances without the adapter.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::apps::{self, form, App, Browser};
use support::{free_port, RawRequest, RawResponse};

fn have_php() -> bool {
    apps::have("php (php-cli)", apps::runs("php", &["-v"]))
}

fn adapter_dir() -> PathBuf {
    apps::repo().join("adapters").join("php")
}

/// A directory both instances of one test process share (the demo's `?do=set` barrier).
fn barrier_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| apps::scratch("barrier")).clone()
}

/// One `php -S` instance serving `root` (also its working directory), PHP's file sessions in a
/// directory of its own (returned), the adapter prepended when `stickless`, plus `ini`.
fn php_server(name: &str, root: &Path, stickless: bool, ini: &[&str]) -> (App, PathBuf) {
    let port = free_port();
    let sessions = apps::scratch(&format!("sessions-{name}"));
    let mut command = Command::new("php");
    command
        .arg("-S")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-t")
        .arg(root)
        .arg("-d")
        .arg(format!("session.save_path={}", sessions.display()))
        .args(["-d", "display_errors=0", "-d", "log_errors=1"]);
    if stickless {
        command.arg("-d").arg(format!(
            "auto_prepend_file={}",
            adapter_dir().join("stickless_session.php").display()
        ));
    }
    for setting in ini {
        command.args(["-d", setting]);
    }
    command
        .current_dir(root)
        .env("PHP_CLI_SERVER_WORKERS", "2")
        .env("INSTANCE", name)
        .env("BARRIER_DIR", barrier_dir());
    let app = App::spawn(name, &mut command, port, Duration::from_secs(10));
    (app, sessions)
}

/// Redis, two `php -S` instances and the proxy, and each instance's `session.save_path`:
/// with the adapter, PHP never writes there.
struct Rig {
    pair: apps::Pair,
    session_dirs: [PathBuf; 2],
}

impl std::ops::Deref for Rig {
    type Target = apps::Pair;

    fn deref(&self) -> &apps::Pair {
        &self.pair
    }
}

impl Rig {
    async fn start(root: &Path, stickless: bool, ini: &[&str]) -> Rig {
        let (a, dir_a) = php_server("A", root, stickless, ini);
        let (b, dir_b) = php_server("B", root, stickless, ini);
        Rig {
            pair: apps::Pair::start(a, b).await,
            session_dirs: [dir_a, dir_b],
        }
    }

    /// The demo application, with the adapter or without it (the control), every PHP
    /// diagnostic on.
    async fn demo(stickless: bool) -> Rig {
        let root = adapter_dir().join("tests").join("app");
        Rig::start(&root, stickless, &["error_reporting=-1"]).await
    }

    /// Lines PHP logged about the code (`PHP Warning:`, `PHP Deprecated:`, ...).
    fn php_diagnostics(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| l.contains("] PHP ") && !l.contains("Development Server"))
            .map(str::to_owned)
            .collect()
    }

    /// PHP's own session files, which the adapter replaces: there must be none.
    fn php_session_files(&self) -> Vec<PathBuf> {
        self.session_dirs
            .iter()
            .flat_map(|dir| std::fs::read_dir(dir).expect("session dir"))
            .map(|entry| entry.expect("entry").path())
            .collect()
    }
}

/// A demo page: the instance that served it, `session_id()`, and each session key with its
/// `serialize()`d value.
#[derive(Debug)]
struct Page {
    instance: String,
    id: String,
    keys: BTreeMap<String, String>,
}

fn page(response: &RawResponse, rig: &Rig) -> Page {
    assert_eq!(response.status, 200, "{}\n{}", response.text(), rig.logs());
    let text = response.text();
    let mut page = Page {
        instance: String::new(),
        id: String::new(),
        keys: BTreeMap::new(),
    };
    for line in text.lines() {
        if let Some(instance) = line.strip_prefix("instance: ") {
            page.instance = instance.to_owned();
        } else if let Some(id) = line.strip_prefix("id: ") {
            page.id = id.to_owned();
        } else if let Some((key, value)) =
            line.strip_prefix("key ").and_then(|l| l.split_once(" = "))
        {
            page.keys.insert(key.to_owned(), value.to_owned());
        }
    }
    assert!(!page.instance.is_empty(), "not a demo page: {text}");
    page
}

/// Sends one request and returns its page, asserting the instance that served it is not the one
/// that served the previous request (`last`): every step reads on the other instance, and no
/// PHP session cookie ever reaches the browser.
async fn step(
    rig: &Rig,
    browser: &mut Browser,
    last: &mut String,
    request: impl FnOnce(&Browser) -> RawRequest,
) -> Page {
    let request = request(browser);
    let response = browser.send(request).await;
    let page = page(&response, rig);
    assert_ne!(&page.instance, last, "round-robin alternates instances");
    assert!(
        !browser.cookies.contains_key("PHPSESSID"),
        "PHP's own session cookie was issued: {:?}",
        response.all("set-cookie")
    );
    *last = page.instance.clone();
    page
}

fn get(browser: &Browser, path: &str) -> RawRequest {
    browser.request("GET", path)
}

/// `serialize()` of a PHP string (its length in bytes).
fn php_string(text: &str) -> String {
    format!("s:{}:\"{text}\";", text.len())
}

/// The headers an application sent that the proxy would act on (`x-session-*`).
fn updates(response: &RawResponse) -> Vec<(String, String)> {
    response
        .headers
        .iter()
        .filter(|(name, _)| name.starts_with("x-session-"))
        .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The adapter's own unit tests

#[test]
fn unit_tests_pass() {
    if !have_php() {
        return;
    }
    let output = apps::run_to_end(
        Command::new("php").arg(adapter_dir().join("tests").join("run.php")),
        Duration::from_secs(60),
    );
    assert!(output.contains(" checks, 0 failed"), "{output}");
    eprintln!("{}", output.lines().last().unwrap_or_default());
}

// ---------------------------------------------------------------------------------------------
// The demo application with the adapter

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cart_and_typed_values_survive_alternating_instances() {
    if !have_php() {
        return;
    }
    let rig = Rig::demo(true).await;
    let mut browser = rig.browser();
    let mut last = String::new();

    let anonymous = step(&rig, &mut browser, &mut last, |b| get(b, "/?do=show")).await;
    assert!(anonymous.keys.is_empty(), "{anonymous:?}");
    assert!(browser.cookies.is_empty(), "{:?}", browser.cookies);
    assert!(rig.sessions().is_empty(), "reading creates no session");

    step(&rig, &mut browser, &mut last, |b| {
        form(b, "/?do=login", &[("user", "alice")])
    })
    .await;
    let cookie = browser
        .session()
        .expect("the proxy issued its cookie")
        .to_owned();
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/?do=show")).await;
    assert_eq!(me.keys["user"], php_string("alice"));
    assert_eq!(me.keys["loginAt"], "i:1700000000;");
    assert_eq!(me.id, cookie, "session_id() is the proxy's id");

    step(&rig, &mut browser, &mut last, |b| get(b, "/?do=cart")).await;
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/?do=show")).await;
    let note = "crème brûlée ✓";
    let expected: BTreeMap<String, String> = [
        (
            "cart",
            r#"a:1:{i:0;O:8:"CartItem":2:{s:3:"sku";s:2:"A1";s:3:"qty";i:2;}}"#.to_owned(),
        ),
        ("count", "i:3;".to_owned()),
        ("coupon", "N;".to_owned()),
        ("gift", "b:0;".to_owned()),
        ("loginAt", "i:1700000000;".to_owned()),
        ("note", php_string(note)),
        ("total", "d:19.5;".to_owned()),
        ("user", php_string("alice")),
        ("user_id", "i:42;".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(me.keys, expected, "every value back with its type");
    assert_eq!(me.id, cookie, "the same id on the other instance");

    // How other code finds them in Redis (README: names and values).
    let key = format!("stickless:session:{cookie}");
    let hget = |field: &str| rig.redis.cmd::<Option<String>>(&["HGET", &key, field]);
    assert_eq!(hget("user_id"), None);
    assert_eq!(hget("xuser-5fid").as_deref(), Some("i:42;"));
    assert_eq!(hget("xlogin-41t").as_deref(), Some("i:1700000000;"));
    let stored_note = hget("note").expect("note");
    assert!(
        stored_note.starts_with('~'),
        "non-ASCII in base64: {stored_note}"
    );

    // In-place changes (an object appended to an array, an increment) and unset().
    step(&rig, &mut browser, &mut last, |b| {
        get(b, "/?do=add&sku=B2&qty=1")
    })
    .await;
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/?do=show")).await;
    assert_eq!(
        me.keys["cart"],
        r#"a:2:{i:0;O:8:"CartItem":2:{s:3:"sku";s:2:"A1";s:3:"qty";i:2;}i:1;O:8:"CartItem":2:{s:3:"sku";s:2:"B2";s:3:"qty";i:1;}}"#
    );
    assert_eq!(me.keys["count"], "i:4;");
    step(&rig, &mut browser, &mut last, |b| {
        get(b, "/?do=drop&key=coupon")
    })
    .await;
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/?do=show")).await;
    assert!(!me.keys.contains_key("coupon"), "{me:?}");
    assert_eq!(me.keys.len(), 8);

    assert_eq!(rig.sessions().len(), 1);
    assert_eq!(browser.cookies.keys().collect::<Vec<_>>(), ["SESSION"]);
    assert_eq!(rig.php_session_files(), Vec::<PathBuf>::new());
    assert_eq!(rig.php_diagnostics(), Vec::<String>::new());
}

/// The demo's page from a browser that holds `cookie` (an old id), in the same alternation.
async fn with_cookie(rig: &Rig, last: &mut String, cookie: &str) -> Page {
    let mut other = rig.browser_holding(cookie);
    step(rig, &mut other, last, |b| get(b, "/?do=show")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_data_and_kills_the_old_id_then_logout_ends_it() {
    if !have_php() {
        return;
    }
    let rig = Rig::demo(true).await;
    let mut browser = rig.browser();
    let mut last = String::new();

    // An anonymous cart, then a login: session_regenerate_id(true) (fixation protection).
    step(&rig, &mut browser, &mut last, |b| get(b, "/?do=cart")).await;
    let anonymous_cookie = browser
        .session()
        .expect("cart created a session")
        .to_owned();
    let login = step(&rig, &mut browser, &mut last, |b| {
        form(b, "/?do=login", &[("user", "bob")])
    })
    .await;
    assert_ne!(
        login.id, anonymous_cookie,
        "a provisional id until the next request"
    );
    let login_cookie = browser.session().expect("session").to_owned();
    assert_ne!(login_cookie, anonymous_cookie, "login rotated the id");
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/?do=show")).await;
    assert_eq!(me.keys["user"], php_string("bob"));
    assert_eq!(me.keys["count"], "i:3;", "the cart kept");
    assert_eq!(me.id, login_cookie);
    let dead = with_cookie(&rig, &mut last, &anonymous_cookie).await;
    assert!(dead.keys.is_empty(), "the old id stopped working: {dead:?}");

    // session_regenerate_id() alone.
    step(&rig, &mut browser, &mut last, |b| get(b, "/?do=rotate")).await;
    let rotated_cookie = browser.session().expect("session").to_owned();
    assert_ne!(rotated_cookie, login_cookie);
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/?do=show")).await;
    assert_eq!(me.keys["user"], php_string("bob"), "data kept");
    assert_eq!(me.id, rotated_cookie);
    let dead = with_cookie(&rig, &mut last, &login_cookie).await;
    assert!(dead.keys.is_empty(), "the old id stopped working: {dead:?}");

    // Logout with a message: session_destroy(), session_start(), a flash value: a new id, old
    // data gone, the message there on the other instance.
    let flash = step(&rig, &mut browser, &mut last, |b| {
        get(b, "/?do=logout-flash")
    })
    .await;
    assert_eq!(flash.keys.keys().collect::<Vec<_>>(), ["flash"]);
    let after = browser
        .session()
        .expect("a session, for the flash")
        .to_owned();
    assert_ne!(after, rotated_cookie);
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/?do=show")).await;
    let only_flash: BTreeMap<String, String> =
        [("flash".to_owned(), php_string("logged out"))].into();
    assert_eq!(me.keys, only_flash);
    let dead = with_cookie(&rig, &mut last, &rotated_cookie).await;
    assert!(dead.keys.is_empty(), "{dead:?}");

    // Log in again and out: session_destroy() ends the session.
    step(&rig, &mut browser, &mut last, |b| {
        form(b, "/?do=login", &[("user", "bob")])
    })
    .await;
    let request = get(&browser, "/?do=logout");
    let response = browser.send(request).await;
    last = page(&response, &rig).instance;
    assert!(response.clears_session(), "{:?}", response.headers);
    assert_eq!(browser.session(), None);
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/?do=show")).await;
    assert!(me.keys.is_empty(), "{me:?}");
    assert!(rig.sessions().is_empty(), "no session left in Redis");
    assert_eq!(rig.php_session_files(), Vec::<PathBuf>::new());
    assert_eq!(rig.php_diagnostics(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_different_keys_both_persist() {
    if !have_php() {
        return;
    }
    let rig = Rig::demo(true).await;
    let mut browser = rig.browser();
    let mut last = String::new();
    step(&rig, &mut browser, &mut last, |b| {
        form(b, "/?do=login", &[("user", "carol")])
    })
    .await;

    // Each request reads the session, then waits (bounded) until the other has read it too,
    // then sets its own key: both read a session without the other's key.
    let pair = format!("pair-{}", free_port());
    let set = |key: &str| {
        get(
            &browser,
            &format!("/?do=set&pair={pair}&key={key}&value=set"),
        )
    };
    let (one, two) = tokio::join!(set("left").send(), set("right").send());
    let (one, two) = (page(&one, &rig), page(&two, &rig));
    assert_ne!(one.instance, two.instance, "served by both instances");
    assert!(
        !one.keys.contains_key("right") && !two.keys.contains_key("left"),
        "the requests did not overlap: {one:?} {two:?}"
    );
    let me = page(&browser.get("/?do=show").await, &rig);
    assert_eq!(
        me.keys.get("left").map(String::as_str),
        Some("s:3:\"set\";"),
        "{me:?}"
    );
    assert_eq!(
        me.keys.get("right").map(String::as_str),
        Some("s:3:\"set\";"),
        "{me:?}"
    );
    assert_eq!(me.keys["user"], php_string("carol"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_changes_nothing_sends_nothing() {
    if !have_php() {
        return;
    }
    let rig = Rig::demo(true).await;

    // Straight at one instance, with headers as the proxy injects them (`plain` as a backend
    // that is not PHP would write it, `other-app` a name this encoding never makes).
    let direct = |path: &str| {
        RawRequest::new(rig.a.addr(), "GET", path)
            .header("X-Session-Id", "fake-proxy-id")
            .header("X-Session-User", "s:5:\"alice\";")
            .header("X-Session-Cart", "a:1:{i:0;s:5:\"apple\";}")
            .header("X-Session-Count", "i:1;")
            .header("X-Session-Plain", "bob")
            .header("X-Session-Other-App", "kept")
    };
    for path in ["/?do=show", "/?do=plain"] {
        let response = direct(path).send().await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(updates(&response), [], "{path}");
        assert!(
            response.all("set-cookie").is_empty(),
            "{:?}",
            response.headers
        );
    }
    let shown = page(&direct("/?do=show").send().await, &rig);
    assert_eq!(shown.id, "fake-proxy-id");
    assert_eq!(
        shown.keys["plain"],
        php_string("bob"),
        "a foreign value is a plain string"
    );
    assert!(!shown.keys.contains_key("other-app"), "{shown:?}");
    let plain = direct("/?do=plain").send().await;
    assert!(
        plain.text().contains("headers: \n"),
        "X-Session-* are gone from $_SERVER: {}",
        plain.text()
    );

    let response = direct("/?do=add&sku=B2&qty=1").send().await;
    assert_eq!(
        updates(&response),
        [
            (
                "x-session-set-cart".to_owned(),
                r#"a:2:{i:0;s:5:"apple";i:1;O:8:"CartItem":2:{s:3:"sku";s:2:"B2";s:3:"qty";i:1;}}"#
                    .to_owned()
            ),
            ("x-session-set-count".to_owned(), "i:2;".to_owned()),
        ],
        "only the changed keys"
    );

    // Through the proxy: reads cost Redis no write.
    let mut browser = rig.browser();
    let login = form(&browser, "/?do=login", &[("user", "dave")]);
    page(&browser.send(login).await, &rig);
    rig.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    for _ in 0..4 {
        let me = page(&browser.get("/?do=show").await, &rig);
        assert_eq!(me.keys["user"], php_string("dave"));
    }
    assert_eq!(rig.writes(), 0, "{:?}", rig.redis.proxy_commands());
    page(&browser.get("/?do=cart").await, &rig);
    assert!(rig.writes() > 0, "{:?}", rig.redis.proxy_commands());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_after_output_was_flushed_is_logged_as_lost() {
    if !have_php() {
        return;
    }
    let rig = Rig::demo(true).await;
    let mut browser = rig.browser();
    page(
        &browser
            .send(form(&browser, "/?do=login", &[("user", "erin")]))
            .await,
        &rig,
    );

    // flush() before the change: headers are gone, the change cannot follow them.
    let response = browser.get("/?do=flushed").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "streaming\n");
    let logged = support::eventually(Duration::from_secs(5), async || {
        rig.logs()
            .contains("stickless_session: ERROR session changes NOT saved")
    })
    .await;
    assert!(logged, "no error in the application's log:\n{}", rig.logs());
    assert!(
        rig.logs().contains("lost: X-Session-Set-late"),
        "{}",
        rig.logs()
    );
    let me = page(&browser.get("/?do=show").await, &rig);
    assert!(!me.keys.contains_key("late"), "{me:?}");

    // Written with session_write_close() before the flush: kept.
    let response = browser.get("/?do=closed-first").await;
    assert_eq!(response.text(), "streaming\n");
    // Written, then every queued header taken back with header_remove(): set again.
    let response = browser.get("/?do=cleared").await;
    assert_eq!(response.text(), "cleared\n");
    // Output before the change but not flushed: the adapter's buffer holds it until the end.
    let response = browser.get("/?do=after-output").await;
    assert_eq!(response.text().len(), 10001);
    let me = page(&browser.get("/?do=show").await, &rig);
    assert_eq!(
        me.keys.get("early").map(String::as_str),
        Some("s:4:\"kept\";"),
        "{me:?}"
    );
    assert_eq!(
        me.keys.get("cleared").map(String::as_str),
        Some("s:4:\"kept\";"),
        "{me:?}"
    );
    assert_eq!(
        me.keys.get("after").map(String::as_str),
        Some("s:4:\"kept\";"),
        "{me:?}"
    );
    assert_eq!(
        rig.logs().matches("stickless_session: ERROR").count(),
        1,
        "{}",
        rig.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_auto_start_is_taken_over() {
    if !have_php() {
        return;
    }
    let root = adapter_dir().join("tests").join("app");
    let rig = Rig::start(&root, true, &["session.auto_start=1"]).await;
    let mut browser = rig.browser();
    let mut last = String::new();
    let anonymous = step(&rig, &mut browser, &mut last, |b| get(b, "/?do=show")).await;
    assert!(anonymous.keys.is_empty());
    assert!(browser.cookies.is_empty(), "{:?}", browser.cookies);
    step(&rig, &mut browser, &mut last, |b| {
        form(b, "/?do=login", &[("user", "frank")])
    })
    .await;
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/?do=show")).await;
    assert_eq!(me.keys["user"], php_string("frank"));
    assert_eq!(Some(me.id.as_str()), browser.session());
    assert_eq!(browser.cookies.keys().collect::<Vec<_>>(), ["SESSION"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_without_the_adapter_loses_the_session_across_instances() {
    if !have_php() {
        return;
    }
    let rig = Rig::demo(false).await;
    let mut browser = rig.browser();
    let login = page(
        &browser
            .send(form(&browser, "/?do=login", &[("user", "grace")]))
            .await,
        &rig,
    );
    assert_eq!(login.keys["user"], php_string("grace"));
    assert!(browser.cookies.contains_key("PHPSESSID"), "PHP's cookie");
    assert_eq!(browser.session(), None, "nothing stored in the proxy");
    let other = page(&browser.get("/?do=show").await, &rig);
    assert_ne!(other.instance, login.instance);
    assert!(
        !other.keys.contains_key("user"),
        "the other instance lost the login: {other:?}"
    );
    assert!(rig.sessions().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Adminer 4.8.1, unmodified, from Debian's package

/// The unpacked package's `adminer/` directory, when scripts/thirdparty/php.sh installed it
/// and PHP has its SQLite driver.
fn adminer_root() -> Option<PathBuf> {
    if !have_php() {
        return None;
    }
    let root = apps::thirdparty("php").join("adminer").join("adminer");
    let sqlite = Command::new("php")
        .arg("-m")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "pdo_sqlite")
        })
        .unwrap_or(false);
    let ready = apps::have(
        "adminer (scripts/thirdparty/php.sh)",
        root.join("sqlite.php").exists(),
    ) && apps::have("PHP's SQLite driver (php-sqlite3)", sqlite);
    ready.then_some(root)
}

/// Adminer's page title.
fn title(response: &RawResponse) -> String {
    let text = response.text();
    text.split_once("<title>")
        .and_then(|(_, rest)| rest.split_once("</title>"))
        .map(|(title, _)| title.to_owned())
        .unwrap_or_else(|| panic!("no title ({}): {text}", response.status))
}

/// The CSRF token in an Adminer form.
fn token(response: &RawResponse) -> String {
    let text = response.text();
    text.split_once(r#"name="token" value=""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(token, _)| token.to_owned())
        .unwrap_or_else(|| panic!("no token: {text}"))
}

/// Requests the instance logged (`php -S` logs one line per request).
fn served(app: &App, path_start: &str) -> usize {
    app.log().matches(&format!("]: GET {path_start}")).count()
}

/// Adminer's log-in form for SQLite, as its `sqlite.php` entry ships: the database file, and
/// the password that page's plugin expects.
fn adminer_login(db: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("auth[driver]", "sqlite".to_owned()),
        ("auth[server]", String::new()),
        ("auth[username]", String::new()),
        ("auth[password]", "YOUR_PASSWORD_HERE".to_owned()),
        ("auth[db]", db.display().to_string()),
    ]
}

async fn adminer(stickless: bool) -> Option<(Rig, PathBuf)> {
    let root = adminer_root()?;
    let db = apps::scratch("adminer-db").join("shop.db");
    std::fs::write(&db, b"").expect("database file");
    Some((Rig::start(&root, stickless, &[]).await, db))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adminer_login_csrf_and_history_survive_alternating_instances() {
    let Some((rig, db)) = adminer(true).await else {
        return;
    };
    let mut browser = rig.browser();
    let start = browser.get("/sqlite.php").await;
    assert_eq!(title(&start), "Login - Adminer", "{}", rig.logs());
    let before = browser.session().map(str::to_owned);

    let fields = adminer_login(&db);
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let login = browser.send(form(&browser, "/sqlite.php", &fields)).await;
    assert_eq!(login.status, 302, "{}\n{}", login.text(), rig.logs());
    assert!(browser.session().is_some(), "the proxy's cookie");
    assert_ne!(
        browser.session().map(str::to_owned),
        before,
        "session_regenerate_id rotated it"
    );

    let home = format!(
        "/sqlite.php?sqlite=&username=&db={}",
        apps::form_encode(&db.display().to_string())
    );
    for _ in 0..4 {
        let response = browser.get(&home).await;
        assert_eq!(response.status, 200, "{}", rig.logs());
        assert_eq!(
            title(&response),
            format!("Database: {} - Adminer", db.display())
        );
    }
    let home_path = "/sqlite.php?sqlite=";
    assert!(
        served(&rig.a, home_path) >= 2 && served(&rig.b, home_path) >= 2,
        "both instances served the logged-in page\n{}",
        rig.logs()
    );

    // A query needs the CSRF token kept in the session; its text goes into the session's
    // history, read back on both instances.
    let sql = format!("{home}&sql=");
    let form_page = browser.get(&sql).await;
    let query = "CREATE TABLE fruit (name TEXT)";
    let run = form(
        &browser,
        &sql,
        &[("query", query), ("token", &token(&form_page))],
    );
    let run = browser.send(run).await;
    assert!(
        run.text().contains("Query executed OK"),
        "{}\n{}",
        run.text(),
        rig.logs()
    );
    for _ in 0..2 {
        let history = browser.get(&format!("{sql}&history=all")).await;
        assert!(
            history.text().contains(query),
            "history lost: {}",
            history.text()
        );
    }
    let forged = form(
        &browser,
        &sql,
        &[("query", "DROP TABLE fruit"), ("token", "1:2")],
    );
    let forged = browser.send(forged).await;
    assert!(
        forged.text().contains("Invalid CSRF token"),
        "{}",
        forged.text()
    );

    // Logout (Adminer clears its keys from the session; the session itself stays).
    let logout_page = browser.get(&home).await;
    let logout = form(
        &browser,
        &home,
        &[("logout", "1"), ("token", &token(&logout_page))],
    );
    assert_eq!(browser.send(logout).await.status, 302, "{}", rig.logs());
    for _ in 0..2 {
        assert_eq!(
            title(&browser.get(&home).await),
            "Login - Adminer",
            "logged out everywhere"
        );
    }
    assert!(
        !browser.cookies.contains_key("adminer_sid"),
        "Adminer's own session cookie was issued: {:?}",
        browser.cookies
    );
    assert_eq!(rig.php_session_files(), Vec::<PathBuf>::new());
    // Adminer warns about its own code (an undefined `Min_DB::$info` with SQLite); nothing
    // about sessions.
    let logs = rig.logs();
    let session_warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("PHP ") && l.to_lowercase().contains("session"))
        .collect();
    assert_eq!(session_warnings, Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adminer_control_without_the_adapter_loses_the_login() {
    let Some((rig, db)) = adminer(false).await else {
        return;
    };
    let mut browser = rig.browser();
    assert_eq!(title(&browser.get("/sqlite.php").await), "Login - Adminer");
    let fields = adminer_login(&db);
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let login = browser.send(form(&browser, "/sqlite.php", &fields)).await;
    assert_eq!(login.status, 302, "{}", rig.logs());
    assert!(
        browser.cookies.contains_key("adminer_sid"),
        "Adminer's own cookie"
    );
    assert_eq!(browser.session(), None);
    let home = format!(
        "/sqlite.php?sqlite=&username=&db={}",
        apps::form_encode(&db.display().to_string())
    );
    assert_eq!(
        title(&browser.get(&home).await),
        "Login - Adminer",
        "the other instance lost the login"
    );
    assert!(rig.sessions().is_empty());
}
