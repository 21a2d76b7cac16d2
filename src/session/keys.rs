//! Key lists, as both kinds of secret come (cookie signing, value encryption): newest first,
//! each line at least `MIN_KEY_BYTES` of key material. The newest key makes new signatures
//! and seals new values; every key in the list is accepted, so keys rotate without logging
//! anyone out.

/// The shortest key accepted: 32 bytes, the HMAC-SHA256 block's worth of secret.
pub const MIN_KEY_BYTES: usize = 32;

/// One `T` per key, made by `make`; an error names the key by its place in the list, never
/// by its value.
pub fn each<T>(
    keys: &[Vec<u8>],
    what: &str,
    make: impl Fn(&[u8]) -> Option<T>,
) -> Result<Vec<T>, String> {
    if keys.is_empty() {
        return Err(format!("no {what} key"));
    }
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            if key.len() < MIN_KEY_BYTES {
                return Err(format!(
                    "key {} is shorter than {MIN_KEY_BYTES} bytes",
                    i + 1
                ));
            }
            make(key).ok_or_else(|| format!("key {} is not usable", i + 1))
        })
        .collect()
}
