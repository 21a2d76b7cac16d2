//! Reading the backend's session updates out of its response headers.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use super::prefix::HeaderPrefix;
use super::record::attribute_name;

/// One response's change to its session, in the order the contract applies it:
/// invalidate wins over everything; otherwise rotate, then remove, then set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub invalidate: bool,
    /// `Invalidate-All`: every session of the current session's principal ends too (with
    /// `invalidate`, which it implies).
    pub invalidate_all: bool,
    pub rotate: bool,
    pub remove: Vec<String>,
    pub set: Vec<(String, Bytes)>,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        !self.invalidate && !self.rotate && self.remove.is_empty() && self.set.is_empty()
    }
}

/// A backend sent an update we cannot apply as written. The whole update is refused (502) and
/// the stored session stays as it was: guessing at the intent could store the wrong thing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedUpdate {
    #[error("`{header}` names an invalid attribute `{name}` (allowed: [a-z0-9][a-z0-9-]{{0,63}}, not `id`)")]
    BadName { header: String, name: String },
    #[error("`{header}` must be `true` or `false`, got `{value}`")]
    BadFlag { header: String, value: String },
    #[error("`{header}` appears more than once")]
    Repeated { header: String },
    #[error("attribute `{name}` would hold {size} bytes, over session.max_value_bytes ({limit})")]
    ValueTooLarge {
        name: String,
        size: usize,
        limit: usize,
    },
    #[error("the session would hold {count} attributes, over session.max_attributes ({limit})")]
    TooManyAttributes { count: usize, limit: usize },
    #[error("the session would be injected as {size} bytes of headers, over session.max_bytes ({limit})")]
    TooLarge { size: usize, limit: usize },
}

/// Removes every prefixed header from a backend response (whether or not the update is valid)
/// and returns the update the canonically spelt ones describe. Anything else with the prefix
/// is dropped silently, as the contract says.
pub fn take_update(
    headers: &mut HeaderMap,
    prefix: &HeaderPrefix,
) -> Result<Update, MalformedUpdate> {
    let update = read_update(headers, prefix);
    prefix.strip(headers);
    update
}

fn read_update(headers: &HeaderMap, prefix: &HeaderPrefix) -> Result<Update, MalformedUpdate> {
    // Invalidate wins over everything, even over siblings we cannot parse: ending a session is
    // the safe direction, and a sloppy logout handler must not leave its user logged in.
    // `Invalidate-All` implies `Invalidate`; either wins over everything else.
    let mut ends = Update::default();
    for name in headers.keys() {
        let all = match prefix.control_suffix(name) {
            Some("invalidate") => false,
            Some("invalidate-all") => true,
            _ => continue,
        };
        if flag(name.as_str(), headers.get_all(name))? {
            ends.invalidate = true;
            ends.invalidate_all |= all;
        }
    }
    if ends.invalidate {
        return Ok(ends);
    }
    let mut update = Update::default();
    for name in headers.keys() {
        let Some(suffix) = prefix.control_suffix(name) else {
            continue;
        };
        let header = name.as_str();
        if let Some(raw) = suffix.strip_prefix("set-") {
            let attr = attribute_name(raw).ok_or_else(|| MalformedUpdate::BadName {
                header: header.to_owned(),
                name: raw.to_owned(),
            })?;
            let mut values = headers.get_all(name).iter();
            if let (Some(value), None) = (values.next(), values.next()) {
                update
                    .set
                    .push((attr, Bytes::copy_from_slice(value.as_bytes())));
            } else {
                return Err(MalformedUpdate::Repeated {
                    header: header.to_owned(),
                });
            }
        } else if suffix == "remove" {
            for value in headers.get_all(name) {
                for raw in split_list(value) {
                    let attr = attribute_name(raw).ok_or_else(|| MalformedUpdate::BadName {
                        header: header.to_owned(),
                        name: raw.to_owned(),
                    })?;
                    update.remove.push(attr);
                }
            }
        } else if suffix == "rotate" {
            update.rotate = flag(header, headers.get_all(name))?;
        }
    }
    Ok(update)
}

fn split_list(value: &HeaderValue) -> impl Iterator<Item = &str> {
    // A non-UTF-8 list cannot hold valid names; yield it whole so it is reported as bad.
    let text = std::str::from_utf8(value.as_bytes()).unwrap_or("\u{fffd}");
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn flag<'a>(
    header: &str,
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> Result<bool, MalformedUpdate> {
    let mut set = false;
    for value in values {
        let text = String::from_utf8_lossy(value.as_bytes());
        match text.trim().to_ascii_lowercase().as_str() {
            "true" => set = true,
            "false" => {}
            _ => {
                return Err(MalformedUpdate::BadFlag {
                    header: header.to_owned(),
                    value: text.into_owned(),
                })
            }
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn parses_every_control_header_and_strips_them() {
        let mut h = headers(&[
            ("X-Session-Set-User", "alice"),
            ("X-Session-Set-Cart", ""),
            ("X-Session-Remove", "a, b"),
            ("x-session-remove", "c"),
            ("X-Session-Rotate", "TRUE"),
            ("X-Session-Id", "forged"),
            ("X_Session_Set_Admin", "1"),
            ("Content-Type", "text/plain"),
        ]);
        let update = take_update(&mut h, &HeaderPrefix::default()).expect("valid");
        assert!(update.rotate && !update.invalidate);
        assert_eq!(update.remove, ["a", "b", "c"]);
        assert_eq!(
            update.set,
            [
                ("user".to_owned(), Bytes::from("alice")),
                ("cart".to_owned(), Bytes::new())
            ]
        );
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn malformed_updates_are_refused() {
        let cases: &[&[(&str, &str)]] = &[
            &[("X-Session-Set-Id", "x")],
            &[("X-Session-Set-", "x")],
            &[("X-Session-Set-a.b", "x")],
            &[("X-Session-Remove", "ok, bad name")],
            &[("X-Session-Rotate", "yes")],
            &[("X-Session-Invalidate", "1")],
            &[("X-Session-Set-User", "a"), ("X-Session-Set-User", "b")],
        ];
        for case in cases {
            assert!(
                take_update(&mut headers(case), &HeaderPrefix::default()).is_err(),
                "{case:?}"
            );
        }
    }

    #[test]
    fn invalidate_wins_even_over_malformed_siblings() {
        let mut h = headers(&[
            ("X-Session-Set-Bad_Name", "x"),
            ("X-Session-Rotate", "maybe"),
            ("X-Session-Invalidate", "true"),
        ]);
        let update = take_update(&mut h, &HeaderPrefix::default()).expect("invalidate");
        assert_eq!(
            update,
            Update {
                invalidate: true,
                ..Update::default()
            }
        );
        assert!(h.is_empty());
        let mut h = headers(&[("X-Session-Invalidate", "perhaps")]);
        assert!(take_update(&mut h, &HeaderPrefix::default()).is_err());
    }

    #[test]
    fn invalidate_all_implies_invalidate_and_wins() {
        let mut h = headers(&[
            ("X-Session-Set-User", "x"),
            ("X-Session-Invalidate-All", "true"),
        ]);
        let update = take_update(&mut h, &HeaderPrefix::default()).expect("valid");
        assert_eq!(
            update,
            Update {
                invalidate: true,
                invalidate_all: true,
                ..Update::default()
            }
        );
        assert!(h.is_empty());
        let mut h = headers(&[("X-Session-Invalidate-All", "false")]);
        assert!(take_update(&mut h, &HeaderPrefix::default())
            .expect("valid")
            .is_empty());
        let mut h = headers(&[("X-Session-Invalidate-All", "everyone")]);
        assert!(take_update(&mut h, &HeaderPrefix::default()).is_err());
    }

    #[test]
    fn false_flags_are_no_ops() {
        let mut h = headers(&[
            ("X-Session-Rotate", "false"),
            ("X-Session-Invalidate", " False "),
        ]);
        assert!(take_update(&mut h, &HeaderPrefix::default())
            .expect("valid")
            .is_empty());
    }
}
