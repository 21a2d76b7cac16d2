//! Logs on stderr, as text or as one flat JSON object per line (`log.format`), switchable by
//! a reload. Both formatters are installed once; a flag chooses which one writes, so a
//! reload never has to rebuild the subscriber.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::LogFormat;

static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber: level from `STICKLESS_LOG` (default `info`), format as
/// given. Only the first call in a process installs anything.
pub fn init(format: LogFormat) {
    set_format(format);
    let filter =
        EnvFilter::try_from_env("STICKLESS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a terminal, never in journald or files.
    let text = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(filter_fn(|_| !JSON.load(Ordering::Relaxed)));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_filter(filter_fn(|_| JSON.load(Ordering::Relaxed)));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .try_init();
}

/// Switches the format of the lines written from now on.
pub fn set_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}
