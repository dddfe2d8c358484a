//! Secrets that must never reach a log line.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A password, API key or token. `Debug` and `Display` print `***`; only [`Secret::expose`]
/// gives the value, so every use of it is easy to find.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An AMQP or HTTP URL with its password replaced by `***`, for logs and error messages.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        // Not a URL we can parse: do not risk printing a password.
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
        let shown = redact_url("amqps://bot:hunter2@pulse.mozilla.org:5671/%2f");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("bot:***@pulse.mozilla.org"), "{shown}");
    }
}
