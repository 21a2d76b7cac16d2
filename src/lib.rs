//! stickless: a reverse proxy that makes web apps sticky-free.
//!
//! It resolves the session cookie against a store (Redis, or the embedded `memory://` store),
//! injects the session's attributes into the upstream request as `X-Session-*` headers, and
//! persists the updates the backend sends back as response headers, before the client sees
//! the response. Any instance can serve any request.
//!
//! # Layout
//!
//! The folders follow a request through the proxy:
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | the YAML file (`file`), its one parser (`yaml`), validated [`config::Settings`] |
//! | [`live`] | the live configuration: one validated snapshot, swapped atomically, taken once per request |
//! | [`reload`] | SIGHUP: validate, refuse what cannot change live, swap the snapshot |
//! | [`listener`] | accepts connections, serves HTTP/1.1 and h2c (or HTTPS with ALPN h2 and http/1.1) under per-connection and per-stream deadlines, drains on shutdown |
//! | [`worker`] | a thread per core, each with its own runtime, upstream pool and store connection; the listener hands each connection to one, which serves everything it causes |
//! | [`certificate`] | the HTTPS certificate: read and checked from PEM, swapped on reload for new handshakes |
//! | [`routing`] | picks the route (host + path prefix, first match) |
//! | [`proxy`] | **the request path, top to bottom**: route → strip → resolve → inject → forward → apply updates → persist → respond → log |
//! | [`context`] | the per-request context; its log phase, when the response body ends, writes the access line and the metrics |
//! | [`request_id`] | `X-Request-Id`: kept or made, passed on, returned |
//! | [`session`] | ids and cookies, the header protocol, lifetimes; `resolve` (request) and `persist` (response) |
//! | [`store`] | the store trait and its implementations: `memory`, `redis` |
//! | [`upstream`] | pooled client, round-robin with fail-over, upstream health (passive ejection, active checks), hop-by-hop headers, `X-Forwarded-*`, streamed bodies, request bodies buffered whole where a route asks |
//! | [`tunnel`] | upgraded connections (WebSocket): bytes both ways, idle and drain limits, and the sessions they keep alive (`keepalive`) |
//! | [`admin`] | the admin listener: `/healthz`, `/readyz`, `/metrics` |
//! | [`metrics`] | the Prometheus registry and the handles the request path uses |
//! | [`logging`] | text or JSON logs, switchable by a reload |
//! | [`notify`] | systemd notifications: ready, reloading, stopping, watchdog |
//! | `stall` | the one idle timer behind every pause deadline (client body, backend body, client reads) |
//! | `sync` | a lock that survives a panic elsewhere, for the few shared maps and slots |
//! | [`redact`] | what debug logs may show of headers (no cookies, credentials or session data) |
//! | [`error`] | failures by origin (client, upstream, store, internal), mapped to statuses in one place |
//! | [`demo`] | `stickless demo`: embedded store, two demo app instances, the proxy in front |
//! | [`report`] | an error and its causes as one line, each cause said once |

pub mod admin;
pub mod certificate;
pub mod config;
pub mod context;
pub mod demo;
pub mod error;
pub mod listener;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod redact;
pub mod reload;
pub mod report;
pub mod request_id;
pub mod routing;
pub mod session;
mod stall;
pub mod store;
mod sync;
pub mod tunnel;
pub mod upstream;
pub mod worker;
