//! `stickless demo`: the embedded store, two demo app instances and the proxy in front of
//! them, in one process, with no Redis needed.

mod app;
mod page;

use std::io::Write;
use std::net::SocketAddr;

use crate::config::Settings;
use crate::listener::{Server, StartError};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start a demo app instance")]
    App(#[source] std::io::Error),
    #[error("the demo configuration is invalid")]
    Config(#[source] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Starts the demo and serves until `shutdown` completes.
pub async fn run(
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DemoError> {
    let server = start(listen).await?;
    let addr = server.local_addr().map_err(DemoError::App)?;
    // Written without `println!`, which panics once stdout is closed (a pipe whose reader
    // went away): the demo must keep serving whoever reads its output.
    let banner = format!(
        "stickless demo: open http://{addr}/ in a browser (two app instances behind one proxy, embedded store)\n  \
         try: curl -c jar -b jar -L 'http://{addr}/login?user=alice'; then curl -b jar -c jar http://{addr}/ a few times\n  \
         Ctrl-C to stop\n"
    );
    let mut stdout = std::io::stdout();
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());
    server.run(shutdown).await;
    Ok(())
}

/// Starts the two app instances and binds the proxy in front of them.
pub async fn start(listen: SocketAddr) -> Result<Server, DemoError> {
    let a = app::spawn("instance A").await.map_err(DemoError::App)?;
    let b = app::spawn("instance B").await.map_err(DemoError::App)?;
    let yaml = format!(
        r#"
listen: "{listen}"
store:
  url: "memory://"
session:
  cookie:
    # Plain http on localhost: a Secure cookie would not come back from every client.
    secure: false
routes:
  # What a browser fetches on its own gets a route of its own, so it never takes an
  # instance's round-robin turn: reloading the page alternates A, B, A, B.
  - match: {{ path_prefix: "/favicon.ico" }}
    upstreams: ["http://{a}"]
    session: "off"
  - match: {{ path_prefix: "/apple-touch-icon" }}
    upstreams: ["http://{a}"]
    session: "off"
  - match: {{ path_prefix: "/" }}
    upstreams: ["http://{a}", "http://{b}"]
"#
    );
    let settings = Settings::from_yaml(&yaml, "demo").map_err(DemoError::Config)?;
    Ok(Server::bind(&settings).await?)
}
