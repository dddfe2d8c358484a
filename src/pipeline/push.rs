//! The push flow: an hg push → its changesets (json-pushes) → commit-risk.

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use super::scoring::score_commits;
use super::{Finding, Pipeline, filter};
use crate::clients::hg;
use crate::error::{Stage, StageError};
use crate::events::hgpush::{Changegroup, HgPushEvent};
use crate::message::Message;
use crate::models::ModelKind;
use crate::score::Score;

impl Pipeline {
    pub(super) async fn push(
        &self,
        event: &HgPushEvent,
        message: &Message,
    ) -> Result<Finding, StageError> {
        let (push, entry) = filter::push(&self.spec, event)?;
        let mut data = push_data(push, &message.routing_key);
        let mut models = Vec::new();
        if self.spec.models.contains(&ModelKind::COMMIT_RISK) {
            let stored = super::enrich::stored_answer(message, &entry.push_full_json_url);
            models.push(
                self.score_push(entry.pushid, &entry.push_full_json_url, stored, &mut data)
                    .await?,
            );
        }
        Ok(Finding {
            subject: format!("{}/{}", push.repo(), entry.pushid),
            event: event.kind().to_owned(),
            identity: format!(
                "{}#{}#{}",
                push.repo_url,
                entry.pushid,
                push.heads.join(",")
            ),
            data,
            models,
            shadow: Vec::new(),
            effects: Vec::new(),
        })
    }

    /// Enrich (the push's changesets: the stored json-pushes answer or refusal, or
    /// hg.mozilla.org's) and score each commit; the push's risk is the highest.
    async fn score_push(
        &self,
        pushid: u64,
        url: &str,
        stored: Option<Result<&Value, hg::HgError>>,
        data: &mut Value,
    ) -> Result<Score, StageError> {
        let model = ModelKind::COMMIT_RISK;
        let Some(bundle) = self.models.get(model) else {
            return Ok(Score::not_scored(model, "no serving bundle"));
        };
        let details = match (stored, &self.hg) {
            (Some(answer), _) => hg::parse_push_value(answer?, pushid)?,
            (None, _) if self.offline => {
                return Err(StageError::skip(
                    Stage::Enrich,
                    format!("offline: no stored json-pushes answer for push {pushid}"),
                ));
            }
            (None, Some(source)) => source.push(url, pushid).await?,
            (None, None) => {
                return Ok(Score::not_scored(
                    model,
                    "no hg.mozilla.org source configured (hg.enabled = false)",
                ));
            }
        };
        Ok(score_commits(&bundle, &details, data))
    }
}

/// What a push result says about the push itself.
fn push_data(push: &Changegroup, routing_key: &str) -> Value {
    let entry = push.push();
    json!({
        "repo": push.repo(),
        "repo_url": push.repo_url,
        "routing_key": routing_key,
        "push_id": entry.map(|p| p.pushid),
        "user": entry.map(|p| &p.user),
        "heads": push.heads,
        "time": entry.map(|p| p.time),
        "pushed_at": entry.and_then(|p| Utc.timestamp_opt(p.time, 0).single()),
        "push_full_json_url": entry.map(|p| &p.push_full_json_url),
    })
}
