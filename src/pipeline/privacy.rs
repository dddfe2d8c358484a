//! E-mail addresses in results. Reporters', commenters' and pushers' addresses reach a
//! result through the event it is about (BMO's `user.login`, hg's `user`, a commit's
//! `author`), and the results exchange is readable by every Pulse account. `emails` in the
//! configuration says what a result keeps: `keep` (bugbug's behaviour, the default for a
//! local run), `hash` (a stable pseudonym, `sha256:` and 16 hex digits: the same person
//! reads the same everywhere, so results can still be grouped by author — on in
//! `config/production.toml`), or `drop`.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a result keeps of an e-mail address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Emails {
    #[default]
    Keep,
    Hash,
    Drop,
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+").expect("a valid regex")
});

/// The pseudonym of an address.
pub fn pseudonym(address: &str) -> String {
    let digest = Sha256::digest(address.to_ascii_lowercase().as_bytes());
    let hex = hex::encode(&digest[..8]);
    format!("sha256:{hex}")
}

impl Emails {
    /// Rewrites every address in every string of `value` (keys stay).
    pub fn apply(self, value: &mut Value) {
        if self == Emails::Keep {
            return;
        }
        match value {
            Value::String(s) if EMAIL.is_match(s) => {
                *s = EMAIL
                    .replace_all(s, |m: &regex::Captures<'_>| match self {
                        Emails::Hash => pseudonym(&m[0]),
                        _ => "(e-mail dropped)".to_owned(),
                    })
                    .into_owned();
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.apply(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.apply(v)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_are_hashed_or_dropped_wherever_they_are() {
        let mut v = json!({"user": "Dev@Mozilla.com", "commits": [{"author": "A <a.b@x.co.uk>"}],
                           "note": "pusher wptsync@mozilla.com is skipped", "n": 3});
        Emails::Hash.apply(&mut v);
        assert_eq!(v["user"], pseudonym("dev@mozilla.com"));
        assert!(
            v["commits"][0]["author"]
                .as_str()
                .unwrap()
                .starts_with("A <sha256:")
        );
        assert!(!v.to_string().contains('@'), "{v}");
        assert_eq!(v["n"], 3);
        let mut d = json!(["x@y.org"]);
        Emails::Drop.apply(&mut d);
        assert_eq!(d, json!(["(e-mail dropped)"]));
        let mut k = json!("x@y.org");
        Emails::Keep.apply(&mut k);
        assert_eq!(k, "x@y.org");
    }
}
