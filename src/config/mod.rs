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
    NearCacheSettings, RequestBuffering, RouteSettings, SessionLimits, SessionSettings, Settings,
    StoreSettings, Timeouts, TlsFiles,
};

/// One thing wrong with a configuration, located by key path (`routes[1].upstreams[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Empty for a problem with the whole file.
    pub path: String,
    pub message: String,
    /// The line of the text the key path leads to, when it can be found there, so that
    /// editors jump to it (`file:line:`).
    pub line: Option<usize>,
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
    #[error("{}", ProblemList(file, problems))]
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

/// One problem on one line; several under a count, each on its own indented line. Every
/// problem line starts with `file:line:` (when the line is known) for editors and `grep`.
struct ProblemList<'a>(&'a str, &'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ProblemList(file, problems) = *self;
        if problems.is_empty() {
            return write!(f, "{file}: invalid");
        }
        if problems.len() > 1 {
            write!(f, "{file}: {} problems", problems.len())?;
        }
        for problem in problems {
            if problems.len() > 1 {
                write!(f, "\n  ")?;
            }
            write!(f, "{file}")?;
            if let Some(line) = problem.line {
                write!(f, ":{line}")?;
            }
            if !problem.path.is_empty() {
                write!(f, ": {}", problem.path)?;
            }
            write!(f, ": {}", problem.message)?;
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
    ///
    /// Every problem is reported, where the parser allows: a YAML syntax error alone (the
    /// parser cannot go on), else every shape error (unknown key, wrong type), else every
    /// validation problem.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Settings, ConfigError> {
        let invalid = |mut problems: Vec<Problem>| {
            for problem in &mut problems {
                problem.line = yaml::locate(text, &problem.path);
            }
            ConfigError::Invalid {
                file: origin.to_string(),
                problems,
            }
        };
        let raw: file::FileConfig = yaml::from_str(text).map_err(|err| match err {
            yaml::Unread::Syntax(err) => ConfigError::Syntax {
                file: origin.to_string(),
                message: err.message,
                line: err.line,
                column: err.column,
            },
            yaml::Unread::Shape(problems) => invalid(problems),
        })?;
        settings::validate(raw).map_err(invalid)
    }
}
