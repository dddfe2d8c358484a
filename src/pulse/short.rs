//! AMQP's short strings: exchange names, routing keys, message ids and header names are at
//! most 255 bytes on the wire.
//!
//! lapin's `ShortString::from` panics on a longer string, and some of ours come from input
//! (a push's repository path becomes a result's routing key; an archive line names its
//! exchange). So every conversion here is checked: [`checked`] refuses with a typed error,
//! and [`fit`] shortens a routing key that bugflow builds, keeping it unique with a hash.

use std::borrow::Cow;

use lapin::types::ShortString;
use sha2::{Digest, Sha256};

/// The longest short string AMQP carries, in bytes.
pub const MAX: usize = 255;

/// A name too long for AMQP.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what} is {bytes} bytes; AMQP allows {MAX}")]
pub struct TooLong {
    pub what: &'static str,
    pub bytes: usize,
}

/// `s` as a short string, or why it cannot be one.
pub fn checked(s: &str, what: &'static str) -> Result<ShortString, TooLong> {
    ShortString::try_new(s).map_err(|_| TooLong {
        what,
        bytes: s.len(),
    })
}

/// `s` itself if it fits; else its first bytes (cut at a character boundary), `~`, and 16
/// hex digits of its SHA-256, 255 bytes in all: the same long input always gives the same
/// key, and two long inputs that share a prefix still differ.
pub fn fit(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX {
        return Cow::Borrowed(s);
    }
    let digest = Sha256::digest(s.as_bytes());
    let hash = hex::encode(&digest[..8]);
    let mut end = MAX - 1 - hash.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}~{hash}", &s[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_shortened_stably_and_distinctly() {
        assert_eq!(fit("pushes.push.try/1"), "pushes.push.try/1");
        let long = format!("pushes.push.{}/1", "é".repeat(200));
        let other = format!("pushes.push.{}/2", "é".repeat(200));
        assert!(fit(&long).len() <= MAX);
        assert_eq!(fit(&long), fit(&long));
        assert_ne!(fit(&long), fit(&other));
        assert!(checked(&fit(&long), "routing key").is_ok());
        let err = checked(&long, "routing key").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("routing key is {} bytes; AMQP allows 255", long.len())
        );
    }
}
