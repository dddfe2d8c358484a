//! The legacy bug event flow: `exchange/bugzilla/simple`'s `{id, delta_ts}`.
//!
//! The event names a bug and a time, nothing else: the result records it, and each model
//! says it was not scored (the poller or a webhook brings the full change).

use serde_json::json;

use super::{Finding, Pipeline};
use crate::events::simple::SimpleBug;
use crate::score::Score;

impl Pipeline {
    pub(super) fn simple_bug(&self, simple: &SimpleBug) -> Finding {
        let models = self
            .spec
            .models
            .iter()
            .map(|m| Score::not_scored(*m, "the legacy event carries only the bug id and time"))
            .collect();
        Finding {
            subject: simple.id.to_string(),
            event: "simple".into(),
            identity: format!("{}#{}", simple.id, simple.delta_ts),
            data: json!({"bug_id": simple.id, "delta_ts": simple.delta_ts, "event": "simple"}),
            models,
            shadow: Vec::new(),
            effects: Vec::new(),
        }
    }
}
