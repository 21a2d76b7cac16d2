//! What the demo app shows: an HTML page for browsers, the same facts as plain text for `curl`.
//! Small and self-contained (no external assets), readable on a phone.

/// What one instance knows about the request it served.
pub struct Page<'a> {
    pub instance: &'a str,
    pub user: Option<&'a str>,
    /// The first characters of the session id, when there is a session.
    pub id: Option<&'a str>,
    pub visits: u64,
    /// Every `X-Session-*` header the instance received, as received.
    pub received: Vec<(String, String)>,
}

/// An inline icon, so the browser has no reason to ask the server for `/favicon.ico`.
pub const ICON_SVG: &str = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><rect width='16' height='16' rx='3' fill='%23245'/><path d='M5 5h6M5 8h6M5 11h6' stroke='%23fff' stroke-width='1.6'/></svg>";

impl Page<'_> {
    /// The answer for `curl`: the first line names the instance.
    pub fn text(&self) -> String {
        let mut body = format!("served by: {}\n", self.instance);
        match self.user {
            Some(user) => body.push_str(&format!(
                "logged in as: {user}\nsession: {}\nvisits this session: {}\n\nlog out: /logout\n",
                self.id.unwrap_or_default(),
                self.visits
            )),
            None => body.push_str("not logged in\n\nlog in: /login?user=alice\n"),
        }
        body
    }

    pub fn html(&self) -> String {
        // Instance B gets the other colour, so the alternation shows at a glance.
        let (class, letter) = if self.instance.ends_with('B') {
            ("b", "B")
        } else {
            ("a", "A")
        };
        let state = match self.user {
            Some(user) => format!(
                "<h1>Logged in as <em>{}</em></h1>\n<p>Visits this session: <strong>{}</strong>. \
                 Reload: the next request goes to the other instance, and the session is still \
                 there.</p>",
                escape(user),
                self.visits
            ),
            None => "<h1>Not logged in</h1>\n<p>Reload a few times: the instances take turns \
                     (round-robin, no sticky sessions). Then log in, and reload again.</p>"
                .to_owned(),
        };
        let actions = match self.user {
            Some(_) => "<a class=\"button\" href=\"/\">Reload</a>\n<a class=\"button quiet\" href=\"/logout\">Log out</a>",
            None => "<a class=\"button\" href=\"/login?user=alice\">Log in as alice</a>\n<a class=\"button quiet\" href=\"/\">Reload</a>",
        };
        let mut rows = String::new();
        for (name, value) in &self.received {
            let value = if name.eq_ignore_ascii_case("x-session-id") {
                format!("{}…", value.chars().take(8).collect::<String>())
            } else {
                value.clone()
            };
            rows.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>\n",
                escape(name),
                escape(&value)
            ));
        }
        let headers = if rows.is_empty() {
            "<p class=\"note\">This request came with no session, so the proxy sent no \
             <code>X-Session-*</code> header.</p>"
                .to_owned()
        } else {
            format!(
                "<p class=\"note\">What instance {letter} received from the proxy with this \
                 request (the app keeps no session of its own):</p>\n<table>\n{rows}</table>"
            )
        };
        format!(
            r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Instance {letter} · stickless demo</title>
<link rel="icon" href="data:image/svg+xml,{ICON_SVG}">
<style>
body {{ font: 17px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }}
main {{ max-width: 34rem; margin: 0 auto; padding: 1.5rem 1rem 3rem; }}
.badge {{ display: inline-block; padding: .35rem .9rem; border-radius: 2rem; color: #fff; font-weight: 600; letter-spacing: .02em; }}
.badge.a {{ background: #1f6feb; }}
.badge.b {{ background: #c2410c; }}
h1 {{ font-size: 1.6rem; margin: 1rem 0 .5rem; }}
.actions {{ display: flex; flex-wrap: wrap; gap: .6rem; margin: 1.2rem 0; }}
.button {{ display: inline-block; padding: .6rem 1.1rem; border-radius: .5rem; background: #1d2330; color: #fff; text-decoration: none; font-weight: 600; }}
.button.quiet {{ background: #fff; color: #1d2330; border: 1px solid #c9ced8; }}
table {{ width: 100%; border-collapse: collapse; background: #fff; border-radius: .5rem; overflow: hidden; font-size: .9rem; }}
th, td {{ text-align: left; padding: .45rem .7rem; border-bottom: 1px solid #eceef2; word-break: break-all; }}
th {{ font-family: ui-monospace, monospace; font-weight: 500; color: #4b5565; width: 45%; }}
.note {{ color: #4b5565; font-size: .95rem; }}
footer {{ margin-top: 2rem; color: #6b7385; font-size: .85rem; }}
</style>
</head>
<body>
<main>
<p><span class="badge {class}">served by instance {letter}</span></p>
{state}
<div class="actions">
{actions}
</div>
{headers}
<footer>stickless demo: two app instances behind one proxy, sessions in its embedded store.
Try it with curl too: it gets this page as plain text.</footer>
</main>
</body>
</html>
"#
        )
    }
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
