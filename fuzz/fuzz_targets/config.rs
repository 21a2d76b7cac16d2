//! `config::Settings::from_yaml` on arbitrary text: errors are fine, panics are not.
//!
//! The loader reads files and environment variables named in the YAML (`signing_keys_file`,
//! `password_file`, `store.tls.*`, `*_env`); that is part of what is exercised.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stickless::config::Settings;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Settings::from_yaml(text, "fuzz.yaml");
    }
});
