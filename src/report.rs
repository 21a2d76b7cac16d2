//! Errors as operators read them: one line, each cause said once.

use std::error::Error;

/// An error with its causes, `a: b: c`. A cause whose text is already in the line is left
/// out: many errors (redis', io's wrappers) repeat their source's message in their own, and
/// `Connection refused: Connection refused` reads like two failures.
pub fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    /// An error whose message may or may not include its cause's, as real ones do.
    #[derive(Debug)]
    struct Layer {
        text: String,
        cause: Option<Box<Layer>>,
    }

    impl Layer {
        fn new(text: &str, cause: Option<Layer>) -> Layer {
            Layer {
                text: text.to_owned(),
                cause: cause.map(Box::new),
            }
        }
    }

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.text)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.cause.as_deref().map(|c| c as &(dyn Error + 'static))
        }
    }

    #[test]
    fn causes_are_joined() {
        let err = Layer::new(
            "cannot bind",
            Some(Layer::new(
                "address in use",
                Some(Layer::new("os error 98", None)),
            )),
        );
        assert_eq!(chain(&err), "cannot bind: address in use: os error 98");
        assert_eq!(chain(&Layer::new("alone", None)), "alone");
    }

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        let refused = "Connection refused (os error 111)";
        let err = Layer::new(
            "the session store is unavailable",
            Some(Layer::new(refused, Some(Layer::new(refused, None)))),
        );
        assert_eq!(
            chain(&err),
            "the session store is unavailable: Connection refused (os error 111)"
        );
        // Included in an outer message, not just equal to the one before.
        let err = Layer::new(
            "connect failed: timed out",
            Some(Layer::new("timed out", None)),
        );
        assert_eq!(chain(&err), "connect failed: timed out");
        // An empty message adds nothing, not a dangling `: `.
        let err = Layer::new(
            "outer",
            Some(Layer::new("", Some(Layer::new("inner", None)))),
        );
        assert_eq!(chain(&err), "outer: inner");
    }
}
