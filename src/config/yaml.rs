//! The only module that knows which YAML library we use.
//!
//! `serde_yaml` is archived upstream; keeping every call to it here means moving to a maintained
//! fork is a one-line change (the `use` below), not a hunt through the code base.

use serde::de::DeserializeOwned;
use serde_yaml as backend;

/// A YAML document that did not deserialize, with where it went wrong.
#[derive(Debug)]
pub struct YamlError {
    /// The parser's message, without its own location suffix (we print the location ourselves,
    /// in the `file:line:column` form editors understand).
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    backend::from_str(text).map_err(|err| {
        let location = err.location();
        let mut message = err.to_string();
        if let Some(at) = message.find(" at line ") {
            message.truncate(at);
        }
        YamlError {
            message,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
        }
    })
}
