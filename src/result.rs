//! A result: what bugflow publishes about one input message.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::effects::EffectRecord;
use crate::score::Score;

/// One result, ready for the results exchange and the JSONL sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    /// Stable across redeliveries and replays of the same input, so that downstream
    /// consumers can deduplicate: a hash of consumer, kind, subject and input event.
    pub message_id: String,
    /// `<consumer>.<kind>.<subject>`.
    pub routing_key: String,
    pub consumer: String,
    pub kind: String,
    /// What the result is about: `integration/autoland/136598`, `1629704`.
    pub subject: String,
    pub input: InputRef,
    /// What was learned about the subject (today: what the message itself holds).
    pub data: Value,
    /// Model predictions (name, version, class, probabilities), or why a model did not run.
    pub models: Vec<Score>,
    /// Effects taken or skipped, each with its reason (the Bugzilla writer's).
    pub actions: Vec<EffectRecord>,
    /// This result may repeat an earlier one with the same `message_id`: its input was
    /// redelivered, or it was re-published after a publish whose confirm never came (the
    /// broker may have kept the first copy). Downstream drops repeats by `message_id`.
    /// Absent (an older result) means no.
    #[serde(default)]
    pub possible_duplicate: bool,
    pub bugflow_version: String,
    pub produced_at: DateTime<Utc>,
}

/// The input a result came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRef {
    pub exchange: String,
    pub routing_key: String,
    /// `changegroup.1`, `bug.modify:priority`, `simple` …
    pub event: String,
    /// True when this result comes from a redelivered input: it may duplicate an earlier
    /// result with the same `message_id`.
    pub redelivered: bool,
    pub received_at: DateTime<Utc>,
}

impl ResultMessage {
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of strings, numbers and `Value`s cannot fail.
        serde_json::to_vec(self).expect("a result serializes to JSON")
    }
}

/// A stable id: the first 128 bits of SHA-256 over the parts, hex-encoded.
pub fn stable_id(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ids_depend_on_every_part_and_its_boundaries() {
        assert_eq!(stable_id(&["a", "b"]), stable_id(&["a", "b"]));
        assert_ne!(stable_id(&["a", "b"]), stable_id(&["ab", ""]));
        assert_eq!(stable_id(&["x"]).len(), 32);
    }
}
