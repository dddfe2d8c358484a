//! Running the models: bug models on a bug's features, commit-risk on a push's commits.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{MAX_LISTED, Pipeline};
use crate::clients::hg::PushDetails;
use crate::features::{Features, Group, Groups, bug, commit};
use crate::models::bundle::Bundle;
use crate::models::linear::{LinearModel, Prediction, Terms};
use crate::models::{Input, ModelKind};
use crate::score::{BugScore, PushScore, Score, Writes, round};

/// The bundles one bug is scored with, each bug model's serving bundle and its shadow,
/// taken once: the groups of the bug's text that are read and the scores come from the same
/// bundles, even when `bugflow models promote` swaps one in meanwhile.
pub(super) struct BugBundles(Vec<ModelBundles>);

/// One bug model's bundles.
pub(super) struct ModelBundles {
    model: ModelKind,
    serving: Option<Arc<Bundle>>,
    shadow: Option<Arc<Bundle>>,
}

impl BugBundles {
    /// The groups read by some bundle that answers on `record`: a term of any other group
    /// would be looked up by none, and its text (a full bug's comments, when no model reads
    /// them; an event's later comment, when the only model that reads comments does not
    /// answer without the description) need not be read.
    pub(super) fn groups(&self, record: Record) -> Groups {
        self.0
            .iter()
            .flat_map(|m| [&m.serving, &m.shadow])
            .flatten()
            .filter_map(|bundle| answering(bundle, record).ok())
            .map(LinearModel::groups)
            .collect()
    }

    /// A bug's features in the groups read by the bundles that answer on `record`.
    pub(super) fn features(&self, rest_bug: &Value, record: Record) -> Features {
        bug::extract_groups(rest_bug, self.groups(record))
    }

    /// Every serving bundle on a bug's terms.
    pub(super) fn score_all(&self, terms: &Terms, record: Record) -> Vec<Score> {
        self.0
            .iter()
            .map(|m| match &m.serving {
                Some(bundle) => score_record(m.model, bundle, terms, record),
                None => Score::not_scored(m.model, "no serving bundle"),
            })
            .collect()
    }

    /// The shadow bundles on the same terms (only the models that have one: `bugflow
    /// models shadow`).
    pub(super) fn score_shadows(&self, terms: &Terms, record: Record) -> Vec<Score> {
        self.0
            .iter()
            .filter_map(|m| Some(score_record(m.model, m.shadow.as_ref()?, terms, record)))
            .collect()
    }
}

impl Pipeline {
    /// Every bug model of this consumer on one bug (REST shape). Features are extracted
    /// and hashed once, in the groups the models read, and every model reads the same
    /// terms (see [`score_terms`]).
    pub fn score_bug(&self, rest_bug: &Value) -> Vec<Score> {
        let bundles = self.bug_bundles();
        bundles.score_all(
            &Terms::of(&bundles.features(rest_bug, Record::Full)),
            Record::Full,
        )
    }

    /// This consumer's bug models' bundles, as they are now.
    pub(super) fn bug_bundles(&self) -> BugBundles {
        BugBundles(
            self.bug_models()
                .map(|model| ModelBundles {
                    model,
                    serving: self.models.get(model),
                    shadow: self.models.shadow(model),
                })
                .collect(),
        )
    }

    fn bug_models(&self) -> impl Iterator<Item = ModelKind> + '_ {
        self.spec
            .models
            .iter()
            .copied()
            .filter(|m| m.input() == Input::Bug)
    }

    /// One bug model's serving bundle on one bug (REST shape), read in the groups it reads:
    /// its class, index, probabilities, labels and bundle version, or why it was not scored.
    pub(super) fn score_model(&self, model: ModelKind, rest_bug: &Value) -> Score {
        let Some(bundle) = self.models.get(model) else {
            return Score::not_scored(model, "no serving bundle");
        };
        let terms = Terms::of(&bug::extract_groups(rest_bug, bundle.groups()));
        score_record(model, &bundle, &terms, Record::Full)
    }
}

/// How much of a bug a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The bug as Bugzilla's REST API gives it (fetched, or stored with the message), or an
    /// event that carries its description.
    Full,
    /// A webhook event's own fields, without the description: a summary, a product, a
    /// status, perhaps a later comment.
    WithoutDescription,
}

/// Why a model that learned from descriptions does not answer on a record without one.
pub const NO_DESCRIPTION: &str = "it learned from bug descriptions and this event carries none; \
     no full bug was fetched: configure [bugzilla], or replay a recording made with --enrich";

/// One bundle of `model` on a record: its prediction, or why it gives none ([`answering`]).
fn score_record(model: ModelKind, bundle: &Bundle, terms: &Terms, record: Record) -> Score {
    match answering(bundle, record) {
        Ok(fitted) => score_fitted(model, bundle, fitted, terms),
        Err(silent) => Score::not_scored(model, silent.to_string()),
    }
}

/// Why a bundle gives no prediction on a record.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Silent<'a> {
    /// An untrained bundle, and why it is (no public data set, say).
    Untrained(&'a str),
    NoModel,
    /// A model that learned from descriptions, on a record without one.
    NoDescription,
}

impl std::fmt::Display for Silent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Silent::Untrained(why) => write!(f, "untrained bundle: {why}"),
            Silent::NoModel => f.write_str("bundle has no model"),
            Silent::NoDescription => f.write_str(NO_DESCRIPTION),
        }
    }
}

/// The model a bundle answers with on `record`, or why it gives no answer there: the one
/// list of the reasons, read by scoring (which says the reason) and by the groups a bug is
/// read in (those of the bundles that answer).
///
/// A model that learned from descriptions (its columns read a bug's first comment or its
/// comments) gives none on a record without one: what it would say there is a guess its
/// training data never saw made (on the demo's webhook test bug, regression said
/// not-regression at 0.95 on an `attachment.create`).
fn answering(bundle: &Bundle, record: Record) -> Result<&LinearModel, Silent<'_>> {
    if let Some(why) = &bundle.manifest.untrained {
        return Err(Silent::Untrained(why));
    }
    let fitted = bundle.model("").ok_or(Silent::NoModel)?;
    // A full record (nearly every message once Bugzilla is configured) asks nothing more.
    if record == Record::WithoutDescription
        && (fitted.reads(Group::Body) || fitted.reads(Group::Comments))
    {
        return Err(Silent::NoDescription);
    }
    Ok(fitted)
}

/// One bundle of `model` on a bug's terms, with its model `fitted`.
fn score_fitted(model: ModelKind, bundle: &Bundle, fitted: &LinearModel, terms: &Terms) -> Score {
    let p = score_terms(fitted, terms);
    let writes = bundle.manifest.writer.as_ref().map(|w| match w.threshold {
        Some(t) => Writes::AtOrAbove(t),
        None => Writes::Never(w.reason.clone().unwrap_or_default()),
    });
    Score::Bug(BugScore {
        class: p.class,
        index: p.index,
        labels: fitted.classes.clone(),
        model,
        // Full precision: bugbot fixes a bug's type when `prob[index] == 1.0`, which
        // rounding would make true for any p ≥ 0.99995.
        prob: p.probabilities,
        version: bundle.manifest.version.clone(),
        writes,
    })
}

/// A bug model on every term of a bug. Its exclusions need no filter: what a model may not
/// see was left out of its training, so it has no column for it and the term is dropped
/// (`tests/models.rs` checks that every shipped bundle scores the same either way).
pub fn score_terms(fitted: &LinearModel, terms: &Terms) -> Prediction {
    fitted.predict_terms(terms)
}

/// Scores each commit of a push with the commit-risk bundle; the push's risk is the highest.
/// Adds the commits (riskiest first, at most [`MAX_LISTED`]) to `data`.
pub fn score_commits(bundle: &Bundle, details: &PushDetails, data: &mut Value) -> Score {
    let model = ModelKind::COMMIT_RISK;
    let Some(fitted) = bundle.model("") else {
        return Score::not_scored(model, "bundle has no model");
    };
    let no_history = commit::Experience::default();
    let experience = bundle.weights.experience.as_ref().unwrap_or(&no_history);
    let risky = fitted
        .classes
        .iter()
        .position(|c| c == "backed-out")
        .unwrap_or(0);
    let mut scored: Vec<(f64, &commit::Commit)> = details
        .changesets
        .iter()
        .filter(|c| !commit::is_backout(c))
        .map(|c| {
            let p = fitted.predict(&commit::extract(c, experience));
            (p.probabilities[risky], c)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let push_risk = scored.first().map(|(r, _)| *r);
    data["changesets"] = json!(details.changesets.len());
    data["obsolete_changesets"] = json!(details.obsolete);
    data["commits"] = scored
        .iter()
        .take(MAX_LISTED)
        .map(|(risk, c)| listed_commit(*risk, c))
        .collect();
    Score::Push(PushScore {
        class: push_risk.map(|r| if r >= 0.5 { "backed-out" } else { "clean" }.to_owned()),
        model,
        push_risk: push_risk.map(round),
        riskiest: scored.first().map(|(_, c)| c.node.clone()),
        scored_commits: scored.len(),
        version: bundle.manifest.version.clone(),
    })
}

/// A commit as a push result lists it.
fn listed_commit(risk: f64, c: &commit::Commit) -> Value {
    let summary: String = c
        .desc
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(100)
        .collect();
    json!({
        "node": c.node,
        "author": commit::author_key(&c.author),
        "summary": summary,
        "files": c.files.len(),
        "components": commit::components(c),
        "risk": round(risk),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::consumer::ConsumerSpec;

    /// The shipped bug-triage consumer with the checkout's models.
    fn bug_triage() -> Pipeline {
        let config = Config {
            models_dir: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"),
            ..Config::default()
        };
        let spec = ConsumerSpec::builtin("bug-triage", &config).unwrap();
        Pipeline::new(spec, crate::app::load_models(&config).unwrap())
    }

    /// On an event without its description, the text only regression reads (the event's
    /// later comment, the structured fields) is not extracted, since regression does not
    /// answer there; the models that answer say what they say given every feature.
    #[test]
    fn an_event_without_its_description_is_read_in_the_groups_of_the_models_that_answer() {
        let bundles = bug_triage().bug_bundles();
        let full = bundles.groups(Record::Full);
        let without = bundles.groups(Record::WithoutDescription);
        assert!(full.contains(Group::Comments) && full.contains(Group::Data));
        for group in [Group::Body, Group::Comments, Group::Data] {
            assert!(
                !without.contains(group),
                "{group:?} read without a description"
            );
        }
        assert!(without.contains(Group::Title));
        let samples = [
            include_str!("../../tests/fixtures/pulse/bmo_webhook_public_bug_modify_example.json"),
            include_str!("../../tests/fixtures/pulse/bmo_webhook_comment_create_example.json"),
            include_str!("../../tests/fixtures/pulse/bmo_webhook_attachment_create_example.json"),
        ];
        for sample in samples {
            let webhook = crate::events::bmo::decode(sample.as_bytes()).unwrap();
            assert!(!webhook.bug.has_description());
            let rest = webhook.bug.to_rest();
            let all = bug::extract_groups(&rest, Groups::ALL);
            let extracted = bundles.features(&rest, Record::WithoutDescription);
            assert!(extracted.items.iter().all(|f| f.group != Group::Data));
            assert!(extracted.items.len() < all.items.len());
            let (every, read) = (Terms::of(&all), Terms::of(&extracted));
            let scores = bundles.score_all(&read, Record::WithoutDescription);
            assert!(scores.iter().any(|s| s.version().is_some()), "{scores:?}");
            assert_eq!(
                scores,
                bundles.score_all(&every, Record::WithoutDescription)
            );
        }
    }
}
