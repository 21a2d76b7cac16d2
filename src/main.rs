//! The `stickless` command: `run`, `check`, `demo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing::{error, info, warn};

use stickless::config::{LogFormat, RouteSettings, Settings};
use stickless::listener::Server;
use stickless::report::chain;
use stickless::{logging, notify};

#[derive(Parser)]
#[command(
    name = "stickless",
    version,
    about = "A reverse proxy that makes web apps sticky-free"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy until SIGTERM or SIGINT, then drain in-flight requests. SIGHUP reloads
    /// the configuration file.
    Run {
        #[arg(long, default_value = "proxy.yaml")]
        config: PathBuf,
    },
    /// Validate a configuration file without starting anything.
    Check {
        #[arg(long, default_value = "proxy.yaml")]
        config: PathBuf,
        /// Also connect to the store once (credentials, TLS, reachability); exit 1 if that
        /// fails.
        #[arg(long)]
        connect: bool,
    },
    /// Run a self-contained demo: embedded store, two app instances, the proxy in front.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

/// jemalloc, so that memory freed when connections close goes back to the operating system:
/// glibc's malloc kept the peak of an attack resident after the attack ended. Measured under
/// `scripts/probe.sh`; see "Memory" in the README.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (`_RJEM_MALLOC_CONF` in the environment overrides them): a
/// background thread purges pages unused for a second, instead of waiting for the next
/// allocation to do it, which never comes once an attack is over and the proxy is idle.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Exit statuses of the contract.
const RUNTIME_FAILURE: u8 = 1;
const BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, connect } => check(&config, connect),
        Command::Run { config } => with_runtime(run(config)),
        Command::Demo { listen } => {
            logging::init(LogFormat::Text);
            with_runtime(async move {
                match stickless::demo::run(listen, shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(err) => {
                        error!("{}", chain(&err));
                        ExitCode::from(RUNTIME_FAILURE)
                    }
                }
            })
        }
    }
}

fn check(path: &Path, connect: bool) -> ExitCode {
    let settings = match Settings::load(path) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("stickless: {err}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    print(&format!(
        "{}: valid\n{}",
        path.display(),
        summary(&settings)
    ));
    // A warning, not a refusal: the file is valid, and an operator renewing in a hurry must
    // still be able to reload it. The exit code stays 0.
    if let Some(warning) = settings
        .tls
        .as_ref()
        .and_then(|tls| tls.expiry_warning(std::time::SystemTime::now()))
    {
        eprintln!("stickless: warning: {}: {warning}", path.display());
    }
    if !connect {
        return ExitCode::SUCCESS;
    }
    with_runtime(async move {
        let reached = match stickless::store::Store::open(&settings.store) {
            Ok(store) => store.ping().await,
            Err(err) => Err(err),
        };
        match reached {
            Ok(()) => {
                print("  store: connected\n");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!(
                    "stickless: {}: store {}: {}",
                    path.display(),
                    settings.store.url,
                    chain(&err)
                );
                ExitCode::from(RUNTIME_FAILURE)
            }
        }
    })
}

/// Writes to stdout without `println!`, which panics when stdout is closed
/// (`stickless check | head -1`).
fn print(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
}

/// A short summary of what the file configures; secrets (store passwords) are redacted.
fn summary(s: &Settings) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let _ = writeln!(out, "  listen: {}", s.listen);
    let tls = s.tls.as_ref().map_or_else(
        || "off (plain HTTP/1.1 and h2c)".to_owned(),
        |t| {
            format!(
                "{} with {} (key matches), expires {}, ALPN h2 and http/1.1, TLS 1.2+, handshake timeout {}",
                t.cert_file,
                t.key_file,
                humantime::format_rfc3339_seconds(t.expires()),
                d(s.timeouts.tls_handshake)
            )
        },
    );
    let _ = writeln!(out, "  tls: {tls}");
    let trusted: Vec<String> = s
        .trusted_proxies
        .ranges()
        .iter()
        .map(|r| r.to_string())
        .collect();
    let _ = writeln!(
        out,
        "  trusted_proxies: {}",
        if trusted.is_empty() {
            "none (X-Forwarded-* from clients are replaced)".to_owned()
        } else {
            trusted.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "  store: {} (key prefix `{}:`, on_unavailable: {}, timeout {})",
        s.store.url,
        s.store.key_prefix,
        s.store.on_unavailable.as_str(),
        d(s.store.timeout)
    );
    if let Some(near) = s.store.near_cache {
        let _ = writeln!(
            out,
            "  near cache: up to {} sessions per worker thread, invalidated by Redis (client tracking)",
            near.max_sessions
        );
    }
    let c = &s.session.cookie;
    let _ = writeln!(
        out,
        "  session: cookie {} (secure: {}, http_only: {}, same_site: {}, {}), idle {}, absolute {}, headers {}*, values {}",
        c.name,
        c.secure,
        c.http_only,
        c.same_site.as_str(),
        c.signer.as_ref().map_or("unsigned".to_owned(), |s| format!("signed, {} keys", s.key_count())),
        d(s.session.lifetime.idle),
        d(s.session.lifetime.absolute),
        s.session.prefix.as_str(),
        s.session.sealer.as_ref().map_or("stored as sent".to_owned(), |s| format!("encrypted, {} keys", s.key_count())),
    );
    if let Some(name) = &s.session.id_header {
        let _ = writeln!(
            out,
            "  session id header: {name} (wins over the cookie when present)"
        );
    }
    let admin = s.admin.as_ref().map_or_else(
        || "none".to_owned(),
        |a| format!("{} (/healthz, /readyz, /metrics)", a.listen),
    );
    let _ = writeln!(out, "  admin: {admin}");
    let _ = writeln!(out, "  log: {}", s.log.as_str());
    let _ = writeln!(out, "  routes ({}, first match wins):", s.routes.len());
    for (i, r) in s.routes.iter().enumerate() {
        let _ = writeln!(out, "    [{i}] {}", describe(r));
    }
    out
}

fn describe(r: &RouteSettings) -> String {
    let upstreams: Vec<String> = r.upstreams.iter().map(|a| format!("http://{a}")).collect();
    let login = r
        .login_url
        .as_deref()
        .map(|u| format!(", login_url {u}"))
        .unwrap_or_default();
    let h = &r.health;
    let passive = match h.max_fails {
        0 => "never skipped".to_owned(),
        n => format!(
            "skipped {} after {n} failure{}",
            humantime::format_duration(h.fail_timeout),
            if n == 1 { "" } else { "s" }
        ),
    };
    let check = h.check.as_ref().map_or_else(String::new, |c| {
        format!(
            ", checked GET {} every {}",
            c.path,
            humantime::format_duration(c.interval)
        )
    });
    let buffering = r.request_buffering.as_ref().map_or_else(String::new, |b| {
        let dir = b.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        format!(
            "; request bodies read whole first: {} bytes in memory, the rest up to {} in {}",
            b.memory_bytes,
            b.max_bytes,
            dir.display()
        )
    });
    format!(
        "{}: host {} path {}* -> {} (session: {}{login}; upstreams {passive}{check}{buffering})",
        r.name,
        r.host.as_deref().unwrap_or("*"),
        r.path_prefix,
        upstreams.join(", "),
        r.session.as_str()
    )
}

async fn run(path: PathBuf) -> ExitCode {
    // Before anything else: SIGHUP's default action ends the process, and a reload sent
    // while we start must not.
    let signals = match Signals::new() {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("stickless: cannot install signal handlers: {err}");
            return ExitCode::from(RUNTIME_FAILURE);
        }
    };
    let settings = match Settings::load(&path) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("stickless: {err}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    logging::init(settings.log);
    let server = match Server::bind(&settings).await {
        Ok(server) => server,
        Err(err) => {
            error!("{}", chain(&err));
            return ExitCode::from(RUNTIME_FAILURE);
        }
    };
    match server.store().ping().await {
        Ok(()) => {
            server.proxy().metrics().store_up.set(1);
        }
        // Wrong credentials, missing permissions or TLS against a plain port will not fix
        // themselves: refuse to start, loudly, rather than answer 503 forever.
        Err(err) if err.is_misconfiguration() => {
            error!(store = %settings.store.url, "{}", chain(&err));
            return ExitCode::from(RUNTIME_FAILURE);
        }
        // Not fatal: Redis may be restarting, and the store reconnects by itself. Requests
        // meanwhile follow `store.on_unavailable`.
        Err(err) => warn!(store = %settings.store.url, "{}", chain(&err)),
    }
    match server.local_addr() {
        Ok(addr) => {
            let admin = server
                .admin_addr()
                .map_or_else(|| "none".to_owned(), |a| a.to_string());
            let tls = if settings.tls.is_some() {
                "https"
            } else {
                "http"
            };
            info!(store = %settings.store.url, routes = settings.routes.len(), %admin, %tls, "listening on {addr}")
        }
        Err(err) => warn!(error = %err, "listening (address unknown)"),
    }
    if let Some(warning) = settings
        .tls
        .as_ref()
        .and_then(|tls| tls.expiry_warning(std::time::SystemTime::now()))
    {
        warn!("{}: {warning}", path.display());
    }
    drop(settings);
    let reloader = server.reloader();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(signals.serve(path, reloader, stop));
    notify::ready();
    notify::spawn_watchdog();
    server
        .run(async {
            let _ = stopped.await;
        })
        .await;
    ExitCode::SUCCESS
}

/// The signals `run` answers: SIGHUP reloads, SIGTERM (systemd stop) and SIGINT (Ctrl-C)
/// drain and stop.
struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Reloads on every SIGHUP, one at a time, until a stop signal, which it passes on.
    async fn serve(
        mut self,
        path: PathBuf,
        reloader: stickless::reload::Reloader,
        stop: tokio::sync::oneshot::Sender<()>,
    ) {
        loop {
            tokio::select! {
                _ = self.hangup.recv() => {
                    notify::reloading();
                    // A refused file is logged by the reloader; the running configuration
                    // goes on either way.
                    let _ = reloader.reload_file(&path);
                    notify::ready();
                }
                _ = self.terminate.recv() => break,
                _ = self.interrupt.recv() => break,
            }
        }
        info!("stop signal received");
        let _ = stop.send(());
    }
}

/// The main thread's runtime: accepting, signals, reloads, the admin listener, health checks.
/// Requests are served by the worker threads (`stickless::worker`), each on its own runtime.
fn with_runtime(work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(err) => {
            eprintln!("stickless: cannot start the async runtime: {err}");
            ExitCode::from(RUNTIME_FAILURE)
        }
    }
}

/// Completes on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    info!("stop signal received");
}
