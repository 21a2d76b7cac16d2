//! `session::update::take_update` on arbitrary backend response headers.
//!
//! Input: `name: value` lines (`\n`); lines without a colon, or whose name or value is not a
//! valid header name/value, are skipped, as hyper would have refused them.

#![no_main]

use http::header::TRAILER;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use stickless::session::prefix::HeaderPrefix;
use stickless::session::update::{take_update, Update};

/// `[a-z0-9][a-z0-9-]{0,63}`, not `id`: what `MalformedUpdate::BadName` promises.
fn valid_attribute(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && name != "id"
}

/// The prefix in any spelling: lower-cased, `_` read as `-`.
fn ours(name: &str) -> bool {
    name.to_ascii_lowercase()
        .replace('_', "-")
        .starts_with("x-session-")
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }

    let prefix = HeaderPrefix::default();
    let result = take_update(&mut headers, &prefix);

    // "Removes every prefixed header from a backend response (whether or not the update is
    // valid)", in any spelling (`HeaderPrefix::strip`).
    for name in headers.keys() {
        assert!(!ours(name.as_str()), "`{name}` survived take_update");
    }
    // `strip` also drops our names from the `Trailer` announcement.
    for value in headers.get_all(TRAILER) {
        if let Ok(list) = value.to_str() {
            for name in list.split(',').map(str::trim) {
                assert!(!ours(name), "`{name}` still announced in Trailer");
            }
        }
    }
    // Nothing prefixed is left, so a second pass finds no update.
    assert_eq!(take_update(&mut headers, &prefix), Ok(Update::default()));

    if let Ok(update) = result {
        for name in update
            .remove
            .iter()
            .chain(update.set.iter().map(|(name, _)| name))
        {
            assert!(valid_attribute(name), "invalid attribute name `{name}`");
        }
        // "invalidate wins over everything"
        if update.invalidate {
            assert_eq!(
                update,
                Update {
                    invalidate: true,
                    invalidate_all: update.invalidate_all,
                    ..Update::default()
                }
            );
        }
    }
});
