//! The Flask adapter (`adapters/python/stickless_session.py`) end to end: two gunicorn
//! instances of a real Flask application behind the proxy, round-robin with no stickiness, a
//! real `redis-server` as the store. The application is `adapters/python/tests/demo_app.py`
//! (Flask's own session API only) and bepasty, an unmodified pastebin from PyPI installed by
//! `scripts/thirdparty/python.sh`. Controls run the same instances without the adapter.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::apps::{self, form, App, Browser};
use support::{free_port, RawRequest, RawResponse};

/// The Python that has both Flask and gunicorn: Debian's (`python3-flask`, `gunicorn`) on CI,
/// else the first `python3` that has them.
fn python() -> Option<String> {
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| apps::runs(p, &["-c", "import flask, gunicorn"]))
        .map(str::to_owned)
}

fn adapter_dir() -> PathBuf {
    apps::repo().join("adapters").join("python")
}

/// One gunicorn instance (two worker processes, which share no memory either) serving
/// `module` from `adapters/python/tests`, with the adapter importable.
fn gunicorn(python: &str, name: &str, module: &str, env: &[(&str, &str)]) -> App {
    let port = free_port();
    let mut command = Command::new(python);
    command
        .args(["-m", "gunicorn", "--workers", "2", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--chdir")
        .arg(adapter_dir().join("tests"))
        .arg(module)
        .env("PYTHONPATH", adapter_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("INSTANCE", name)
        .env("BARRIER_DIR", barrier_dir());
    for (key, value) in env {
        command.env(key, value);
    }
    App::spawn(name, &mut command, port, Duration::from_secs(20))
}

/// A directory both instances of one test process share (the demo's `/meet-then-set`).
fn barrier_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| apps::scratch("barrier")).clone()
}

/// Redis, two gunicorn instances and the proxy.
type Rig = apps::Pair;

impl Rig {
    /// The demo shop, with the adapter (`stickless`) or as the control without it (Flask's
    /// signed cookie, each instance with its own SECRET_KEY).
    async fn demo(python: &str, stickless: bool) -> Rig {
        let env = |key: &'static str| {
            if stickless {
                vec![("STICKLESS", "1")]
            } else {
                vec![("STICKLESS", "0"), ("SECRET_KEY", key)]
            }
        };
        let a = gunicorn(python, "A", "demo_app:app", &env("secret-of-a"));
        let b = gunicorn(python, "B", "demo_app:app", &env("secret-of-b"));
        Rig::start(a, b).await
    }
}

/// The demo's JSON answer, asserting a 200.
fn json(response: &RawResponse, rig: &Rig) -> Value {
    assert_eq!(response.status, 200, "{}\n{}", response.text(), rig.logs());
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.text()))
}

/// Sends one request and returns its JSON, asserting the instance that served it is not the
/// one that served the previous request (`last`): every step below reads on the other one.
async fn step(
    rig: &Rig,
    browser: &mut Browser,
    last: &mut String,
    request: impl FnOnce(&Browser) -> RawRequest,
) -> Value {
    let request = request(browser);
    let response = browser.send(request).await;
    let body = json(&response, rig);
    let instance = body["instance"].as_str().expect("instance").to_owned();
    assert_ne!(&instance, last, "round-robin alternates instances");
    assert!(
        !browser.cookies.contains_key("session"),
        "Flask's own session cookie was issued: {:?}",
        response.all("set-cookie")
    );
    *last = instance;
    body
}

/// `/whoami` from another browser that holds `cookie` (an old id), in the same alternation.
async fn with_cookie(rig: &Rig, last: &mut String, cookie: &str) -> Value {
    let mut other = rig.browser_holding(cookie);
    let body = step(rig, &mut other, last, |b| get(b, "/whoami")).await;
    assert_eq!(other.session(), Some(cookie), "a dead id is not replaced");
    body
}

fn get(browser: &Browser, path: &str) -> RawRequest {
    browser.request("GET", path)
}

fn have_python() -> Option<String> {
    let python = python();
    if apps::have("python3 with flask and gunicorn", python.is_some()) {
        python
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// The adapter's own unit tests

/// Which interpreter `python` is, when it has Flask.
fn executable(python: &str) -> Option<String> {
    let output = Command::new(python)
        .args(["-c", "import flask, sys; print(sys.executable)"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[test]
fn unit_tests_pass_on_every_python_with_flask() {
    let Some(debian) = have_python() else { return };
    let mut pythons = vec![debian];
    // The python3 on PATH too, when it is another one with Flask (pyenv's with Flask 3.x here;
    // on CI it is Debian's again).
    if executable("python3").is_some_and(|other| Some(other) != executable(&pythons[0])) {
        pythons.push("python3".to_owned());
    }
    for python in pythons {
        let output = apps::run_to_end(
            Command::new(&python)
                .args(["-m", "unittest", "discover", "-v", "-s"])
                .arg(adapter_dir().join("tests"))
                .env("PYTHONDONTWRITEBYTECODE", "1"),
            Duration::from_secs(60),
        );
        assert!(output.contains("\nOK"), "{python}:\n{output}");
        eprintln!("{python}: {}", output.lines().last().unwrap_or_default());
    }
}

// ---------------------------------------------------------------------------------------------
// The demo shop with the adapter

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cart_and_typed_values_survive_alternating_instances() {
    let Some(python) = have_python() else { return };
    let rig = Rig::demo(&python, true).await;
    let mut browser = rig.browser();
    let mut last = String::new();

    let anonymous = step(&rig, &mut browser, &mut last, |b| get(b, "/whoami")).await;
    assert_eq!(anonymous["user"], Value::Null);
    assert_eq!(anonymous["sid"], Value::Null);
    assert_eq!(rig.sessions().len(), 0, "reading creates no session");

    step(&rig, &mut browser, &mut last, |b| {
        form(b, "/login", &[("user", "alice"), ("id", "42")])
    })
    .await;
    assert!(browser.session().is_some(), "the proxy issued its cookie");
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/whoami")).await;
    assert_eq!(me["user"], "alice");
    let sid = me["sid"].as_str().expect("the proxy's id").to_owned();
    assert_eq!(
        me["keys"],
        serde_json::json!(["_flashes", "user", "userId"]),
        "{me}"
    );
    let flashes = step(&rig, &mut browser, &mut last, |b| get(b, "/flashes")).await;
    assert_eq!(flashes["flashes"], serde_json::json!(["welcome alice"]));
    let flashes = step(&rig, &mut browser, &mut last, |b| get(b, "/flashes")).await;
    assert_eq!(flashes["flashes"], serde_json::json!([]), "shown once");

    for item in ["apple", "pear", "plum"] {
        step(&rig, &mut browser, &mut last, |b| {
            form(b, "/cart", &[("item", item)])
        })
        .await;
    }
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/whoami")).await;
    assert_eq!(me["cart"], serde_json::json!(["apple", "pear", "plum"]));
    assert_eq!(me["sid"], sid.as_str(), "the same id on both instances");

    let written = step(&rig, &mut browser, &mut last, |b| form(b, "/types", &[])).await;
    let read = step(&rig, &mut browser, &mut last, |b| get(b, "/types")).await;
    assert_eq!(
        read["types"], written["types"],
        "typed values read back equal"
    );
    let types = &read["types"];
    assert_eq!(types["pair"], "(1, 'a', (2, 3))");
    assert_eq!(types["blob"], "b'\\x00\\xffraw'");
    assert_eq!(
        types["when"],
        "datetime.datetime(2024, 2, 29, 13, 45, 6, tzinfo=datetime.timezone.utc)"
    );
    assert_eq!(
        types["order"],
        "UUID('12345678-1234-5678-1234-567812345678')"
    );
    assert_eq!(types["label"], "Markup('<b>sale</b>')");
    assert_eq!(types["note"], "'h\u{e9}llo \u{2603} \u{1F600}'");
    assert_eq!(
        types["meta"],
        "{' t': ['not', 'a', 'tuple'], 'deep': {'k': (1, 2)}}"
    );
    assert_eq!(
        types["shippingAddress"],
        "{'city': 'Z\u{fc}rich', 'zip': '8001'}"
    );
    assert_eq!(types["coupon"], "None");
    assert_eq!(rig.sessions().len(), 1);
    assert_eq!(browser.cookies.keys().collect::<Vec<_>>(), ["SESSION"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_data_and_kills_the_old_id_then_logout_ends_it() {
    let Some(python) = have_python() else { return };
    let rig = Rig::demo(&python, true).await;
    let mut browser = rig.browser();
    let mut last = String::new();

    // An anonymous cart, then a login that rotates the id (fixation protection).
    step(&rig, &mut browser, &mut last, |b| {
        form(b, "/cart", &[("item", "apple")])
    })
    .await;
    let anonymous_cookie = browser
        .session()
        .expect("cart created a session")
        .to_owned();
    step(&rig, &mut browser, &mut last, |b| {
        form(b, "/login", &[("user", "bob")])
    })
    .await;
    let login_cookie = browser.session().expect("session").to_owned();
    assert_ne!(login_cookie, anonymous_cookie, "login rotated the id");
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/whoami")).await;
    assert_eq!(
        (&me["user"], &me["cart"]),
        (&"bob".into(), &serde_json::json!(["apple"]))
    );
    let old_sid = me["sid"].clone();

    let dead = with_cookie(&rig, &mut last, &anonymous_cookie).await;
    assert_eq!((&dead["user"], &dead["cart"]), (&Value::Null, &Value::Null));

    // rotate() alone.
    let rotated = step(&rig, &mut browser, &mut last, |b| form(b, "/rotate", &[])).await;
    assert_eq!(rotated["rotated"], true);
    let rotated_cookie = browser.session().expect("session").to_owned();
    assert_ne!(rotated_cookie, login_cookie);
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/whoami")).await;
    assert_eq!(me["user"], "bob", "data kept");
    assert_ne!(me["sid"], old_sid);
    let dead = with_cookie(&rig, &mut last, &login_cookie).await;
    assert_eq!(dead["user"], Value::Null, "the old id stopped working");

    // Logout with a message: session.clear() then flash() — a new id, old data gone, the
    // message kept for the next page on the other instance.
    step(&rig, &mut browser, &mut last, |b| {
        form(b, "/logout", &[("say", "goodbye bob")])
    })
    .await;
    let after = browser
        .session()
        .expect("still a session, for the flash")
        .to_owned();
    assert_ne!(after, rotated_cookie);
    let me = step(&rig, &mut browser, &mut last, |b| get(b, "/whoami")).await;
    assert_eq!(me["user"], Value::Null);
    assert_eq!(me["keys"], serde_json::json!(["_flashes"]));
    let flashes = step(&rig, &mut browser, &mut last, |b| get(b, "/flashes")).await;
    assert_eq!(flashes["flashes"], serde_json::json!(["goodbye bob"]));
    let dead = with_cookie(&rig, &mut last, &rotated_cookie).await;
    assert_eq!(dead["user"], Value::Null);

    // Log in again and out without a message: session.clear() destroys the session.
    step(&rig, &mut browser, &mut last, |b| {
        form(b, "/login", &[("user", "bob")])
    })
    .await;
    let _ = step(&rig, &mut browser, &mut last, |b| get(b, "/flashes")).await;
    let request = form(&browser, "/logout", &[]);
    let response = browser.send(request).await;
    assert_eq!(response.status, 200);
    assert!(response.clears_session(), "{:?}", response.headers);
    assert_eq!(browser.session(), None);
    assert_eq!(rig.sessions().len(), 0, "no session left in Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_different_keys_both_persist() {
    let Some(python) = have_python() else { return };
    let rig = Rig::demo(&python, true).await;
    let mut browser = rig.browser();
    let mut last = String::new();
    step(&rig, &mut browser, &mut last, |b| {
        form(b, "/login", &[("user", "carol")])
    })
    .await;

    // Each request reads the session, then waits (bounded) until the other has read it too,
    // then sets its own key: both read a session without the other's key.
    let fields =
        |key: &'static str, other: &'static str| [("key", key), ("other", other), ("value", "set")];
    let (one, two) = tokio::join!(
        form(&browser, "/meet-then-set", &fields("left", "right")).send(),
        form(&browser, "/meet-then-set", &fields("right", "left")).send()
    );
    let (one, two) = (json(&one, &rig), json(&two, &rig));
    assert_ne!(one["instance"], two["instance"], "served by both instances");
    for saw in [&one["saw"], &two["saw"]] {
        let saw: Vec<&str> = saw
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            !saw.contains(&"left") && !saw.contains(&"right"),
            "the requests did not overlap: {saw:?}"
        );
    }
    let me = json(&browser.get("/whoami").await, &rig);
    let keys = me["keys"].as_array().expect("keys");
    assert!(
        keys.contains(&"left".into()) && keys.contains(&"right".into()),
        "a write was lost: {me}"
    );
    assert_eq!(me["user"], "carol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_changes_nothing_sends_nothing() {
    let Some(python) = have_python() else { return };
    let rig = Rig::demo(&python, true).await;

    // Straight at one instance, with headers as the proxy injects them.
    let direct = |path: &str, method: &str| {
        RawRequest::new(rig.a.addr(), method, path)
            .header("X-Session-Id", "some-id")
            .header("X-Session-User", "\"alice\"")
            .header("X-Session-Cart", "[\"apple\"]")
            .header("X-Session-Xuser-49d", "7")
    };
    for path in ["/whoami", "/types", "/flashes"] {
        let response = direct(path, "GET").send().await;
        assert_eq!(response.status, 200, "{}", response.text());
        let updates: Vec<&String> = response
            .headers
            .iter()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with("x-session-"))
            .collect();
        assert!(updates.is_empty(), "{path} sent {updates:?}");
        assert!(response.all("set-cookie").is_empty());
    }
    let response = direct("/cart", "POST")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(b"item=pear")
        .send()
        .await;
    let updates: Vec<(String, String)> = response
        .headers
        .iter()
        .filter(|(name, _)| name.starts_with("x-session-"))
        .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
        .collect();
    assert_eq!(
        updates,
        [(
            "x-session-set-cart".to_owned(),
            "[\"apple\",\"pear\"]".to_owned()
        )],
        "only the changed key"
    );

    // Through the proxy: reads cost Redis no write.
    let mut browser = rig.browser();
    let login = form(&browser, "/login", &[("user", "dave")]);
    json(&browser.send(login).await, &rig);
    json(&browser.get("/flashes").await, &rig);
    rig.redis.cmd::<String>(&["CONFIG", "RESETSTAT"]);
    for _ in 0..4 {
        assert_eq!(json(&browser.get("/whoami").await, &rig)["user"], "dave");
    }
    assert_eq!(rig.writes(), 0, "{:?}", rig.redis.proxy_commands());
    let cart = form(&browser, "/cart", &[("item", "fig")]);
    json(&browser.send(cart).await, &rig);
    assert!(rig.writes() > 0, "{:?}", rig.redis.proxy_commands());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_after_the_headers_went_out_is_logged_as_lost() {
    let Some(python) = have_python() else { return };
    let rig = Rig::demo(&python, true).await;
    let mut browser = rig.browser();
    let response = browser.get("/stream").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "streamed body");
    // The check runs when the WSGI server closes the response, right after the last chunk.
    let logged = support::eventually(Duration::from_secs(5), async || {
        let logs = rig.logs();
        logs.contains("LOST") && logs.contains("late")
    })
    .await;
    assert!(logged, "no error in the application's log:\n{}", rig.logs());
    assert!(rig.logs().contains("ERROR"), "{}", rig.logs());
    let me = json(&browser.get("/whoami").await, &rig);
    assert_eq!(me["keys"], serde_json::json!(["before"]), "{me}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_without_the_adapter_loses_the_session_across_instances() {
    let Some(python) = have_python() else { return };
    let rig = Rig::demo(&python, false).await;
    let mut browser = rig.browser();
    let login = form(&browser, "/login", &[("user", "erin")]);
    let login = json(&browser.send(login).await, &rig);
    assert!(browser.cookies.contains_key("session"), "Flask's cookie");
    assert_eq!(browser.session(), None, "nothing stored in the proxy");
    let other = json(&browser.get("/whoami").await, &rig);
    assert_ne!(other["instance"], login["instance"]);
    assert_eq!(
        other["user"],
        Value::Null,
        "the other instance lost the login"
    );
    assert_eq!(rig.sessions().len(), 0);
}

// ---------------------------------------------------------------------------------------------
// bepasty, unmodified, from PyPI

/// bepasty's configuration for one instance: a shared storage directory (as a shared volume
/// would be), the site name telling the instances apart, and no SECRET_KEY at all unless
/// given (the control's per-instance keys).
fn bepasty_config(dir: &std::path::Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(format!("bepasty-{name}.conf"));
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).expect("storage dir");
    std::fs::write(
        &path,
        format!(
            "SITENAME = 'instance-{name}'\n\
             SECRET_KEY = '{secret}'\n\
             SESSION_COOKIE_SECURE = False\n\
             STORAGE_FILESYSTEM_DIRECTORY = '{}'\n\
             PERMISSIONS = {{'uploader-token': 'list,create,read,delete'}}\n\
             DEFAULT_PERMISSIONS = ''\n",
            storage.display()
        ),
    )
    .expect("bepasty config");
    path
}

async fn bepasty(stickless: bool) -> Option<Rig> {
    let venv = apps::thirdparty("python").join("venv/bin/python");
    if !apps::have(
        "bepasty (scripts/thirdparty/python.sh)",
        venv.exists() && apps::runs(venv.to_str()?, &["-c", "import bepasty, gunicorn"]),
    ) {
        return None;
    }
    let dir = apps::scratch("bepasty");
    let mut instances = Vec::new();
    for name in ["A", "B"] {
        let secret = if stickless {
            String::new()
        } else {
            format!("own-secret-of-{name}-{}", free_port())
        };
        let config = bepasty_config(&dir, name, &secret);
        let env = [
            ("STICKLESS", if stickless { "1" } else { "0" }),
            ("BEPASTY_CONFIG", config.to_str()?),
        ];
        instances.push(gunicorn(venv.to_str()?, name, "bepasty_wsgi:app", &env));
    }
    let b = instances.pop()?;
    let a = instances.pop()?;
    Some(Rig::start(a, b).await)
}

/// Which instance rendered a bepasty page (its SITENAME is in the layout).
fn bepasty_instance(response: &RawResponse) -> &'static str {
    let text = response.text();
    match (text.contains("instance-A"), text.contains("instance-B")) {
        (true, false) => "A",
        (false, true) => "B",
        _ => panic!("no instance in the page:\n{text}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bepasty_login_and_uploads_survive_alternating_instances() {
    let Some(rig) = bepasty(true).await else {
        return;
    };
    let mut browser = rig.browser();
    let list = browser.get("/+list").await;
    assert_eq!(list.status, 403, "not logged in yet\n{}", rig.logs());

    let login = form(&browser, "/+login", &[("token", "uploader-token")]);
    let login = browser.send(login).await;
    assert_eq!(login.status, 302, "{}\n{}", login.text(), rig.logs());
    assert!(browser.session().is_some(), "the proxy's cookie");

    // Uploading needs the `create` permission the login put in the session.
    let upload = form(
        &browser,
        "/+upload",
        &[
            ("text", "pasted through stickless"),
            ("filename", "note.txt"),
            ("contenttype", "text/plain"),
        ],
    );
    let upload = browser.send(upload).await;
    assert_eq!(upload.status, 302, "{}\n{}", upload.text(), rig.logs());
    let location = upload.header("location").expect("the new item");
    let item = location
        .trim_start_matches('/')
        .split('#')
        .next()
        .expect("item name")
        .to_owned();

    let mut served = Vec::new();
    for _ in 0..4 {
        let list = browser.get("/+list").await;
        assert_eq!(
            list.status,
            200,
            "logged in on both instances\n{}",
            rig.logs()
        );
        assert!(list.text().contains("note.txt"), "{}", list.text());
        served.push(bepasty_instance(&list));
    }
    assert!(served.windows(2).all(|w| w[0] != w[1]), "{served:?}");
    let download = browser.get(&format!("/{item}/+download")).await;
    assert_eq!(download.status, 200);
    assert_eq!(download.text(), "pasted through stickless");

    let logout = form(&browser, "/+logout", &[]);
    assert_eq!(browser.send(logout).await.status, 302);
    for _ in 0..2 {
        assert_eq!(
            browser.get("/+list").await.status,
            403,
            "logged out everywhere"
        );
    }
    assert!(
        !browser.cookies.contains_key("session"),
        "bepasty's own cookie was issued: {:?}",
        browser.cookies
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bepasty_control_without_the_adapter_loses_the_login() {
    let Some(rig) = bepasty(false).await else {
        return;
    };
    let mut browser = rig.browser();
    let login = form(&browser, "/+login", &[("token", "uploader-token")]);
    assert_eq!(browser.send(login).await.status, 302, "{}", rig.logs());
    assert!(
        browser.cookies.contains_key("session"),
        "bepasty's own cookie"
    );
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        let list = browser.get("/+list").await;
        outcomes.push((bepasty_instance(&list), list.status));
    }
    // Logged in only where the login happened: the other instance cannot read the cookie.
    let allowed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.1 == 200)
        .map(|o| o.0)
        .collect();
    let denied: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.1 == 403)
        .map(|o| o.0)
        .collect();
    assert_eq!((allowed.len(), denied.len()), (2, 2), "{outcomes:?}");
    assert!(allowed[0] == allowed[1] && denied[0] == denied[1] && allowed[0] != denied[0]);
}
