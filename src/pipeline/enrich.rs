//! What a message's flow fetches from outside, fetched on its own so that it can be kept
//! with the message (`bugflow record --enrich`): a push's json-pushes answer, a bug
//! event's full bug, a prediction request's bugs or push. A replay of such an archive
//! reads them back instead of fetching (see [`Enrichment`]).

use std::sync::Arc;

use super::{Pipeline, filter};
use crate::clients::hg;
use crate::error::{Stage, StageError};
use crate::events::request::PredictionRequest;
use crate::events::{self, Event};
use crate::message::{Enrichment, Message};
use crate::models::ModelKind;

impl Pipeline {
    /// Fetches what this consumer's flow would fetch for `message` (nothing when the
    /// pipeline is offline). Messages that need nothing (a legacy bug change, a private
    /// bug, a push without commit-risk) get an empty enrichment; a skip or a fetch failure
    /// is the flow's own error.
    pub async fn enrichment(&self, message: &Message) -> Result<Enrichment, StageError> {
        filter::body_size(message.body.len(), self.max_body)?;
        let mut enrichment = Enrichment::default();
        if self.offline {
            return Ok(enrichment);
        }
        match events::decode(self.spec.input, message)? {
            Event::HgPush(event) => {
                let (_, entry) = filter::push(&self.spec, &event)?;
                let (Some(source), true) =
                    (&self.hg, self.spec.models.contains(&ModelKind::COMMIT_RISK))
                else {
                    return Ok(enrichment);
                };
                keep_answer(
                    &mut enrichment,
                    &entry.push_full_json_url,
                    source.fetch(&entry.push_full_json_url).await,
                )?;
            }
            Event::Webhook(webhook) if !webhook.bug.is_private => {
                if let Some(client) = &self.bugzilla {
                    // A bug private by its groups is kept as private, and nothing more: a
                    // replay skips it as the live flow did, and the flow reads no more.
                    let full = client.bug(webhook.bug.id).await?;
                    enrichment.bug = Some(Arc::new(public(full)));
                }
            }
            Event::Request(PredictionRequest::Bugs { bugs, .. }) => {
                if let Some(client) = &self.bugzilla {
                    enrichment.bugs =
                        Some(client.bugs(&bugs).await?.into_iter().map(public).collect());
                }
            }
            Event::Request(PredictionRequest::PushRisk { branch, rev }) => {
                if let Some(source) = &self.hg {
                    let url = hg::changeset_url(&self.hg_url, &branch, &rev);
                    keep_answer(&mut enrichment, &url, source.fetch_changeset(&url).await)?;
                }
            }
            _ => {}
        }
        Ok(enrichment)
    }
}

/// Keeps hg's answer at `url`: a json-pushes body, or a refusal (its status). Any other
/// failure (hg busy, a bad URL) is the flow's own error, and nothing is kept.
fn keep_answer(
    enrichment: &mut Enrichment,
    url: &str,
    fetched: Result<String, hg::HgError>,
) -> Result<(), StageError> {
    match fetched {
        Ok(body) => {
            let answer = json_pushes(&body)?;
            enrichment.json_pushes.insert(url.to_owned(), answer);
        }
        Err(hg::HgError::Refused { status, .. }) => {
            enrichment.refused.insert(url.to_owned(), status.as_u16());
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// What hg answered at `url` as `message` stores it: its json-pushes answer, or its
/// refusal as the error the live fetch gave; `None` when nothing is stored.
pub(super) fn stored_answer<'m>(
    message: &'m Message,
    url: &str,
) -> Option<Result<&'m serde_json::Value, hg::HgError>> {
    let stored = message.enrichment.as_deref()?;
    if let Some(answer) = stored.json_pushes.get(url) {
        return Some(Ok(answer));
    }
    let status = *stored.refused.get(url)?;
    Some(Err(hg::refusal(url, status)))
}

/// A json-pushes answer as an archive keeps it: parsed, so that it is stored as JSON.
fn json_pushes(body: &str) -> Result<serde_json::Value, StageError> {
    serde_json::from_str(body)
        .map_err(|e| StageError::skip(Stage::Enrich, format!("json-pushes is not JSON: {e}")))
}

/// A bug as an archive may keep it: a private one (Bugzilla shows it to a key that may see
/// it) only as its id and that it is private, which is all its request's answer, or its
/// event's skip, reads.
fn public(bug: serde_json::Value) -> serde_json::Value {
    if filter::is_private(&bug) {
        filter::private_stub(&bug["id"])
    } else {
        bug
    }
}
