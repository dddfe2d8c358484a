//! Remembering predictions, and learning from the people who correct them.
//!
//! Every scored bug event stores each model's class. When a later event shows a person (not
//! bugflow's own Bugzilla account) setting the bug's type or moving its component, that
//! choice is kept beside the last prediction as a harvested label (`bugflow data labels`).

use crate::models::ModelKind;
use crate::store::Store;

/// The store key under which `bugflow run` keeps the bot's Bugzilla login (from whoami):
/// its own changes are not harvested as labels.
pub const BOT_LOGIN: &str = "bugzilla.login";

/// What one bug event teaches.
#[derive(Debug, Clone, PartialEq)]
pub struct Remember {
    pub bug_id: u64,
    /// Who made the change (a Bugzilla login; empty when the event does not say).
    pub by: String,
    /// When (the event's time).
    pub at: String,
    /// The type the change set, if it set one.
    pub bug_type: Option<String>,
    /// The (conflated) component the bug is in now, if the change moved it.
    pub component: Option<String>,
    /// Each bug model's class on this event: (model, bundle version, class).
    pub predictions: Vec<(ModelKind, String, String)>,
}

impl Remember {
    /// Harvests the labels a person set, then records this event's predictions.
    pub async fn apply(&self, store: &Store) -> anyhow::Result<()> {
        let ours = store.watermark(BOT_LOGIN).await?;
        if ours.as_deref() != Some(self.by.as_str()) {
            let harvested = [
                (ModelKind::BUGTYPE, &self.bug_type),
                (ModelKind::COMPONENT, &self.component),
            ];
            for (model, truth) in harvested {
                if let Some(truth) = truth {
                    store
                        .harvest(self.bug_id, model.name(), truth, &self.by, &self.at)
                        .await?;
                }
            }
        }
        for (model, version, class) in &self.predictions {
            store
                .record_prediction(self.bug_id, model.name(), version, class)
                .await?;
        }
        Ok(())
    }
}
