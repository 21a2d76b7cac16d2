//! Configuration: the file as written (`file`), the YAML reader (`yaml`), and the validated
//! settings the rest of the code uses (`settings`).

pub mod file;
pub mod settings;
mod yaml;

use std::fmt;
use std::path::Path;

pub use file::{LogFormat, OnUnavailable, SameSite, SessionMode};
pub use settings::{
    AdminSettings, AdminToken, CheckSettings, CookieSettings, Durability, HealthSettings, Limits,
    RouteSettings, SessionLimits, SessionSettings, Settings, StoreSettings, Timeouts, TlsFiles,
};

/// One thing wrong with a configuration, located by key path (`routes[1].upstreams[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}{}: {message}", location(*line, *column))]
    Syntax {
        file: String,
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    #[error("{file}: {}", ProblemList(problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        _ => String::new(),
    }
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let many = self.0.len() > 1;
        for (i, problem) in self.0.iter().enumerate() {
            if many {
                write!(f, "\n  ")?;
            } else if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{}: {}", problem.path, problem.message)?;
        }
        Ok(())
    }
}

impl Settings {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Settings::from_yaml(&text, &file)
    }

    /// Parses and validates configuration text; `origin` names it in error messages.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Settings, ConfigError> {
        let raw: file::FileConfig = yaml::from_str(text).map_err(|err| ConfigError::Syntax {
            file: origin.to_string(),
            message: err.message,
            line: err.line,
            column: err.column,
        })?;
        settings::validate(raw).map_err(|problems| ConfigError::Invalid {
            file: origin.to_string(),
            problems,
        })
    }
}
