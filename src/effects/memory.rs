//! Remembering predictions, and learning from the people who correct them.
//!
//! Every scored bug event stores each model's class and its probability, by the serving
//! bundle and by the shadow bundle beside it (`bugflow models shadow`). When a later event
//! shows a person (not bugflow's own Bugzilla account) deciding what a model predicts, that
//! choice is kept beside the last predictions as a harvested label ([`truths`]): the live
//! report and `bugflow models compare` measure the models on them, and `bugflow data
//! labels` lists them.

use crate::events::bmo::WebhookEvent;
use crate::models::ModelKind;
use crate::store::{Predicted, Role, Store};

/// The store key under which `bugflow run` keeps the bot's Bugzilla login (from whoami):
/// its own changes are not harvested as labels.
pub const BOT_LOGIN: &str = "bugzilla.login";

/// The product spam is moved to.
pub const INVALID_BUGS: &str = "Invalid Bugs";

/// What one bug event teaches.
#[derive(Debug, Clone, PartialEq)]
pub struct Remember {
    pub bug_id: u64,
    /// Who made the change (a Bugzilla login; empty when the event does not say).
    pub by: String,
    /// When (the event's time).
    pub at: String,
    /// What the change says each model should have answered: (model, class).
    pub truths: Vec<(ModelKind, String)>,
    /// Each bug model's prediction on this event, serving and shadow.
    pub predictions: Vec<Kept>,
}

/// One model's prediction on an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    pub model: ModelKind,
    pub version: String,
    pub role: Role,
    pub class: String,
    pub confidence: f64,
}

/// The labels a person's change sets, by bugbug's rules for each model:
///
/// | change | label |
/// |---|---|
/// | `type` set | `bugtype`: the type; `defect`: `bug` for a defect, else `nobug` |
/// | product or component moved (not to Invalid Bugs) | `component`: the new one, conflated as the model's classes |
/// | moved to Invalid Bugs, or resolved INVALID | `spam`: `spam` |
/// | moved out of Invalid Bugs, or resolved FIXED | `spam`: `ham` |
/// | `regression` keyword added / removed | `regression`: `regression` / `not-regression` |
pub fn truths(webhook: &WebhookEvent) -> Vec<(ModelKind, String)> {
    let (bug, event) = (&webhook.bug, &webhook.event);
    let change = |field: &str| event.changes.iter().find(|c| c.field == field);
    let mut truths = Vec::new();
    let mut push = |model: &str, class: &str| {
        if let Some(model) = ModelKind::parse(model) {
            truths.push((model, class.to_owned()));
        }
    };
    if let Some(c) = change("type")
        && ["defect", "enhancement", "task"].contains(&c.added.as_str())
    {
        push("bugtype", &c.added);
        push("defect", if c.added == "defect" { "bug" } else { "nobug" });
    }
    let moved = change("product").or(change("component"));
    let to_invalid = change("product").is_some_and(|c| c.added == INVALID_BUGS);
    let from_invalid = change("product").is_some_and(|c| c.removed == INVALID_BUGS);
    if moved.is_some() && bug.product.as_deref() != Some(INVALID_BUGS) {
        let now = serde_json::json!({"product": bug.product, "component": bug.component});
        if let Some(component) = crate::train::data::conflated_component(&now) {
            push("component", &component);
        }
    }
    match change("resolution").map(|c| c.added.as_str()) {
        _ if to_invalid => push("spam", "spam"),
        Some("INVALID") => push("spam", "spam"),
        _ if from_invalid => push("spam", "ham"),
        Some("FIXED") => push("spam", "ham"),
        _ => {}
    }
    if let Some(c) = change("keywords") {
        let has = |list: &str| list.split(',').any(|k| k.trim() == "regression");
        if has(&c.added) {
            push("regression", "regression");
        } else if has(&c.removed) {
            push("regression", "not-regression");
        }
    }
    truths
}

impl Remember {
    /// Harvests the labels a person set, then records this event's predictions.
    pub async fn apply(&self, store: &Store) -> anyhow::Result<()> {
        let ours = store.watermark(BOT_LOGIN).await?;
        if ours.as_deref() != Some(self.by.as_str()) {
            for (model, truth) in &self.truths {
                store
                    .harvest(self.bug_id, model.name(), truth, &self.by, &self.at)
                    .await?;
            }
        }
        // One time for the event's predictions: serving and shadow pair up on it.
        let at = chrono::Utc::now().to_rfc3339();
        for kept in &self.predictions {
            store
                .record_prediction(&Predicted {
                    bug_id: self.bug_id,
                    model: kept.model.name(),
                    version: &kept.version,
                    role: kept.role,
                    class: &kept.class,
                    confidence: kept.confidence,
                    at: &at,
                })
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(product: &str, changes: serde_json::Value) -> WebhookEvent {
        serde_json::from_value(serde_json::json!({
            "bug": {"id": 7, "product": product, "component": "DOM: Events", "is_private": false},
            "event": {"action": "modify", "routing_key": "bug.modify", "target": "bug",
                      "time": "2026-11-30T10:00:00", "changes": changes},
        }))
        .unwrap()
    }

    fn names(truths: Vec<(ModelKind, String)>) -> Vec<(String, String)> {
        truths
            .into_iter()
            .map(|(m, c)| (m.name().to_owned(), c))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(m, c)| ((*m).to_owned(), (*c).to_owned()))
            .collect()
    }

    #[test]
    fn each_change_a_person_makes_labels_the_models_it_decides() {
        let typed = event(
            "Core",
            serde_json::json!([{"field": "type", "removed": "defect", "added": "task"}]),
        );
        assert_eq!(
            names(truths(&typed)),
            pairs(&[("bugtype", "task"), ("defect", "nobug")])
        );
        let moved = event(
            "Core",
            serde_json::json!([{"field": "product", "removed": "Firefox", "added": "Core"}]),
        );
        assert_eq!(names(truths(&moved)), pairs(&[("component", "Core::DOM")]));
        let spam = event(
            INVALID_BUGS,
            serde_json::json!([{"field": "product", "removed": "Firefox", "added": INVALID_BUGS}]),
        );
        assert_eq!(names(truths(&spam)), pairs(&[("spam", "spam")]));
        let invalid = event(
            "Core",
            serde_json::json!([{"field": "resolution", "removed": "", "added": "INVALID"}]),
        );
        assert_eq!(names(truths(&invalid)), pairs(&[("spam", "spam")]));
        let fixed = event(
            "Core",
            serde_json::json!([{"field": "resolution", "removed": "", "added": "FIXED"}]),
        );
        assert_eq!(names(truths(&fixed)), pairs(&[("spam", "ham")]));
        let regressed = event(
            "Core",
            serde_json::json!([{"field": "keywords", "removed": "", "added": "perf, regression"}]),
        );
        assert_eq!(
            names(truths(&regressed)),
            pairs(&[("regression", "regression")])
        );
        let cleared = event(
            "Core",
            serde_json::json!([{"field": "keywords", "removed": "regression", "added": ""}]),
        );
        assert_eq!(
            names(truths(&cleared)),
            pairs(&[("regression", "not-regression")])
        );
        let priority = event(
            "Core",
            serde_json::json!([{"field": "priority", "removed": "P3", "added": "P1"}]),
        );
        assert!(truths(&priority).is_empty());
    }
}
