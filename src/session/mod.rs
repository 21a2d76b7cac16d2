//! Sessions: the id and its cookie (optionally signed) or header (`id_header`), the header protocol (client side in
//! `prefix`, backend side in `update`), lifetimes, values sealed at rest (`sealing`), what logs
//! say instead of an id (`fingerprint`), and the two phases that touch the store: `resolve`
//! (request) and `persist` (response).

pub mod cookie;
pub mod fingerprint;
pub mod id;
pub mod id_header;
pub mod keys;
pub mod lifetime;
pub mod persist;
pub mod prefix;
pub mod record;
pub mod resolve;
pub mod sealing;
pub mod signing;
pub mod update;
