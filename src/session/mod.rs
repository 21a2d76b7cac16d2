//! Sessions: the id and its cookie, the header protocol (client side in `prefix`, backend side
//! in `update`), lifetimes, and the two phases that touch the store: `resolve` (request) and
//! `persist` (response).

pub mod cookie;
pub mod id;
pub mod lifetime;
pub mod persist;
pub mod prefix;
pub mod record;
pub mod resolve;
pub mod signing;
pub mod update;
