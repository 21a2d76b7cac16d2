//! Property tests of the header protocol's pure parts: whatever names a client or backend
//! sends, nothing that normalises to the prefix survives, and parsing never panics.

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use stickless::session::prefix::HeaderPrefix;
use stickless::session::update::take_update;

/// `x-session-` in a random spelling (case, `_` for `-`) followed by any token characters.
fn spoofed_name() -> impl Strategy<Value = String> {
    let spelling = proptest::collection::vec((any::<bool>(), any::<bool>()), 10);
    (spelling, "[a-zA-Z0-9_!#$%&'*+.^`|~-]{0,20}").prop_map(|(choices, tail)| {
        let mut name: String = "x-session-"
            .chars()
            .zip(choices)
            .map(|(c, (upper, underscore))| match c {
                '-' if underscore => '_',
                c if upper => c.to_ascii_uppercase(),
                c => c,
            })
            .collect();
        name.push_str(&tail);
        name
    })
}

fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![spoofed_name(), "[a-zA-Z0-9_-]{1,24}"]
}

fn normalized(name: &HeaderName) -> String {
    name.as_str().to_ascii_lowercase().replace('_', "-")
}

fn header_map(names: &[String], value: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    let value = HeaderValue::from_bytes(value).unwrap_or(HeaderValue::from_static("v"));
    for name in names {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            map.append(name, value.clone());
        }
    }
    map
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn client_headers_with_the_prefix_never_survive(names in proptest::collection::vec(any_name(), 1..24)) {
        let prefix = HeaderPrefix::default();
        let mut map = header_map(&names, b"forged");
        let others = map.keys().filter(|n| !normalized(n).starts_with("x-session-")).count();
        prefix.strip(&mut map);
        for name in map.keys() {
            prop_assert!(!normalized(name).starts_with("x-session-"), "{} survived", name);
        }
        prop_assert_eq!(map.keys().count(), others, "only prefixed headers are removed");
    }

    #[test]
    fn backend_updates_never_panic_and_never_leak(
        names in proptest::collection::vec(any_name(), 1..16),
        value in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut map = header_map(&names, &value);
        // Accepted or refused, no prefixed header is left behind.
        let _ = take_update(&mut map, &HeaderPrefix::default());
        for name in map.keys() {
            prop_assert!(!normalized(name).starts_with("x-session-"), "{} leaked", name);
        }
    }
}
