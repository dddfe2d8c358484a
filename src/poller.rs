//! The REST poller: fills the gaps webhooks leave.
//!
//! Every `poller.every_seconds` it searches Bugzilla for bugs changed since the stored
//! `last_change_time` watermark and publishes each as a bug event (`bug.modify`, the webhook
//! body shape) through the same exchange as webhooks, with a publisher confirm. A bug already
//! published at that change time is not published again (its key is in the store), and the
//! watermark survives restarts.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clients::bugzilla::Bugzilla;
use crate::pulse::publish::{Outgoing, Publisher};
use crate::store::{Claim, Store};

pub const WATERMARK: &str = "poller.last_change_time";

pub struct Poller {
    pub client: Bugzilla,
    pub store: Arc<Store>,
    pub publisher: Publisher,
    pub exchange: String,
    /// Where to start when the store has no watermark yet.
    pub initial_since: String,
}

impl Poller {
    /// One search; returns how many events were published.
    pub async fn poll_once(&self) -> anyhow::Result<usize> {
        let since = self
            .store
            .watermark(WATERMARK)
            .await?
            .unwrap_or_else(|| self.initial_since.clone());
        let bugs = self
            .client
            .changed_since(&since, 500)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut published = 0;
        let mut newest = since.clone();
        for bug in bugs {
            let (Some(id), Some(changed)) = (bug["id"].as_u64(), bug["last_change_time"].as_str())
            else {
                continue;
            };
            let key = format!("poller:{id}:{changed}");
            let claim = self
                .store
                .claim(&key, "poller", &id.to_string(), Duration::from_secs(60))
                .await?;
            match claim {
                Claim::Done { .. } => {}
                // Another poller is relaying this change right now (or died doing it): the
                // watermark stays before it, so the next poll sees it again.
                Claim::InProgress => break,
                Claim::Proceed => {
                    let body = serde_json::to_vec(&event(&bug, changed))?;
                    let mut out = Outgoing::json(&self.exchange, "bug.modify", &body);
                    out.message_id = Some(&key);
                    out.mandatory = true;
                    if let Err(e) = self.publisher.publish(&out).await {
                        // Not relayed: give the claim back; the watermark stays before it.
                        self.store.release(&key).await?;
                        self.store.set_watermark(WATERMARK, &newest).await?;
                        return Err(e.into());
                    }
                    self.store
                        .finish(
                            &key,
                            crate::effects::Outcome::Published,
                            "changed since the watermark",
                            None,
                        )
                        .await?;
                    published += 1;
                }
            }
            if changed > newest.as_str() {
                newest = changed.to_owned();
            }
        }
        // Bugs changed at exactly the watermark are searched again next time; their keys
        // keep them from being published twice.
        self.store.set_watermark(WATERMARK, &newest).await?;
        Ok(published)
    }

    /// Polls until `shutdown`.
    pub async fn run(self, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => match self.poll_once().await {
                    Ok(n) => {
                        metrics::counter!("bugflow_poller_published_total").increment(n as u64);
                        tracing::info!(published = n, "Bugzilla poll");
                    }
                    Err(e) => tracing::warn!(error = %e, "Bugzilla poll failed; next poll retries"),
                },
            }
        }
    }
}

/// A REST search hit as a webhook-shaped bug event (`bug.modify`).
fn event(bug: &Value, changed: &str) -> Value {
    json!({
        "bug": {
            "id": bug["id"], "summary": bug["summary"], "product": bug["product"],
            "component": bug["component"], "type": bug["type"], "status": bug["status"],
            "severity": bug["severity"],
            "keywords": bug["keywords"].as_array().cloned().unwrap_or_default(),
            "creation_time": bug["creation_time"], "last_change_time": changed,
            // A bug in any group is restricted: bug-triage skips it, the writer never touches it.
            "is_private": bug["groups"].as_array().is_some_and(|g| !g.is_empty()),
        },
        "event": {"action": "modify", "routing_key": "bug.modify", "target": "bug",
                  "time": changed.trim_end_matches('Z')},
        "webhook_name": "bugflow-poller",
    })
}
