//! Prediction requests: what the HTTP API asks the `api-requests` workers to compute.
//!
//! The web side never runs a model: `GET /<model>/predict/<bug>` publishes one of these to
//! `exchange/<user>/bugflow-requests` and answers 202; a worker computes the answer and
//! writes it to the store, where the next request finds it. Web and workers scale apart.
//!
//! ```json
//! {"request": "bugs", "model": "bugtype", "bugs": [1629704, 35]}
//! {"request": "push-risk", "branch": "integration/autoland", "rev": "5fb1d9a0e1ce"}
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Stage, StageError};

/// bugbug sends at most 100 bugs per job; a request may carry up to this many.
pub const MAX_BUGS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PredictionRequest {
    /// Classify these bugs with `model` (a bug model's name, ours or bugbug's).
    Bugs { model: String, bugs: Vec<u64> },
    /// The risk of the push that contains `rev` on `branch` (`integration/autoland`).
    PushRisk { branch: String, rev: String },
}

impl PredictionRequest {
    /// The routing key it is published with.
    pub fn routing_key(&self) -> String {
        match self {
            PredictionRequest::Bugs { model, .. } => format!("predict.{model}"),
            PredictionRequest::PushRisk { .. } => "push.risk".into(),
        }
    }

    /// Checks what serde cannot: sizes, and names that end up in URLs.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            PredictionRequest::Bugs { model, bugs } => {
                if bugs.is_empty() {
                    return Err("bugs: min length is 1".into());
                }
                if bugs.len() > MAX_BUGS {
                    return Err(format!("bugs: max length is {MAX_BUGS}"));
                }
                if bugs.contains(&0) {
                    return Err("bugs: 0 is not a bug id".into());
                }
                if model.is_empty() || !model.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                {
                    return Err(format!("model: {model:?} is not a model name"));
                }
                Ok(())
            }
            PredictionRequest::PushRisk { branch, rev } => {
                if !is_branch(branch) {
                    return Err(format!("branch: {branch:?} is not a repository path"));
                }
                if !(12..=40).contains(&rev.len()) || !rev.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!(
                        "rev: {rev:?} is not a 12–40 digit hex changeset id"
                    ));
                }
                Ok(())
            }
        }
    }
}

/// `mozilla-central`, `integration/autoland`, `releases/mozilla-beta`: words and slashes.
pub fn is_branch(branch: &str) -> bool {
    !branch.is_empty()
        && branch.len() <= 100
        && branch.split('/').all(|part| {
            !part.is_empty()
                && part != ".."
                && part != "."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

pub fn decode(body: &[u8]) -> Result<PredictionRequest, StageError> {
    let request: PredictionRequest = serde_json::from_slice(body)
        .map_err(|e| StageError::invalid(Stage::Decode, format!("prediction request: {e}")))?;
    request
        .validate()
        .map_err(|e| StageError::invalid(Stage::Decode, format!("prediction request: {e}")))?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let bugs = PredictionRequest::Bugs {
            model: "defectenhancementtask".into(),
            bugs: vec![1, 2],
        };
        let body = serde_json::to_vec(&bugs).unwrap();
        assert_eq!(decode(&body).unwrap(), bugs);
        assert_eq!(bugs.routing_key(), "predict.defectenhancementtask");

        let push =
            br#"{"request": "push-risk", "branch": "integration/autoland", "rev": "5fb1d9a0e1ce"}"#;
        assert!(matches!(
            decode(push).unwrap(),
            PredictionRequest::PushRisk { .. }
        ));

        for bad in [
            &br#"{"request": "bugs", "model": "bugtype", "bugs": []}"#[..],
            br#"{"request": "bugs", "model": "bug type", "bugs": [1]}"#,
            br#"{"request": "push-risk", "branch": "../etc", "rev": "5fb1d9a0e1ce"}"#,
            br#"{"request": "push-risk", "branch": "mozilla-central", "rev": "zz"}"#,
            br#"{"request": "other"}"#,
            b"not json",
        ] {
            let e = decode(bad).unwrap_err();
            assert_eq!(e.action, crate::error::Action::DeadLetter, "{e}");
        }
    }
}
