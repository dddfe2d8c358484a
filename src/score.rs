//! What a model said about one subject: the typed `models` entries of a result.
//!
//! A [`Score`] is one of four shapes, told apart by their fields on the wire (the JSON is
//! what bugflow has always published, so downstream consumers see no change):
//!
//! | shape | JSON |
//! |---|---|
//! | [`BugScore`] | `{"model", "version", "class", "index", "prob", "labels"}` |
//! | [`PushScore`] | `{"model", "version", "push_risk", "riskiest", "scored_commits", "class"}` |
//! | [`NotScored`] | `{"model", "skipped"}`: why the model did not run |
//! | [`RequestScore`] | `{"model", "version"}`: the bundle that answered an API request |
//!
//! The sinks, the effects, the dashboard and the demo read these types, so renaming a field
//! is a compile error, not a silent `null`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::models::ModelKind;

/// One model's verdict on a result's subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Score {
    Bug(BugScore),
    Push(PushScore),
    Skipped(NotScored),
    Request(RequestScore),
}

/// A bug model's class and probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BugScore {
    pub class: String,
    /// The index of `class` in `labels` and `prob`.
    pub index: usize,
    pub labels: std::sync::Arc<[String]>,
    pub model: ModelKind,
    /// One probability per label, at full precision (bugbot compares `prob[index] == 1.0`).
    pub prob: Vec<f64>,
    pub version: String,
    /// The bundle's writer threshold: the lowest probability at which its test precision met
    /// the catalogue's target, or why there is none (absent: the bundle records no rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<Writes>,
}

/// When a bug model's prediction may be written to Bugzilla.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Writes {
    /// At this probability or more (test precision reached the target there).
    AtOrAbove(f64),
    /// Never: why (the bundle could not reach its precision target on test).
    Never(String),
}

/// The commit-risk of a push: its riskiest commit's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushScore {
    /// `backed-out` at a risk of 0.5 or more, else `clean`; none without scored commits.
    pub class: Option<String>,
    pub model: ModelKind,
    pub push_risk: Option<f64>,
    /// The node of the riskiest commit.
    pub riskiest: Option<String>,
    pub scored_commits: usize,
    pub version: String,
}

/// A model that did not run on this subject, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotScored {
    pub model: ModelKind,
    pub skipped: String,
}

/// The bundle that answered a prediction request (the answers are in the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestScore {
    pub model: ModelKind,
    pub version: String,
}

impl Score {
    pub fn not_scored(model: ModelKind, why: impl Into<String>) -> Score {
        Score::Skipped(NotScored {
            model,
            skipped: why.into(),
        })
    }

    pub fn model(&self) -> ModelKind {
        match self {
            Score::Bug(s) => s.model,
            Score::Push(s) => s.model,
            Score::Skipped(s) => s.model,
            Score::Request(s) => s.model,
        }
    }

    /// The bundle version that scored, if a bundle ran.
    pub fn version(&self) -> Option<&str> {
        match self {
            Score::Bug(s) => Some(&s.version),
            Score::Push(s) => Some(&s.version),
            Score::Request(s) => Some(&s.version),
            Score::Skipped(_) => None,
        }
    }

    pub fn as_bug(&self) -> Option<&BugScore> {
        match self {
            Score::Bug(s) => Some(s),
            _ => None,
        }
    }

    /// Why the model was not scored, if it was not.
    pub fn skipped(&self) -> Option<&str> {
        match self {
            Score::Skipped(s) => Some(&s.skipped),
            _ => None,
        }
    }
}

impl BugScore {
    /// The probability of the predicted class.
    pub fn confidence(&self) -> f64 {
        self.prob.get(self.index).copied().unwrap_or(0.0)
    }

    /// The answer of bugbug's HTTP service, `{"prob", "index", "class", "extra_data"}`.
    ///
    /// * Two-class models answer `class` 0/1 as bugbug does, `1` being the catalogue's
    ///   `bugbug_one` (else the second class), with `prob` in that order;
    /// * the others answer the class name, and `extra_data.labels_map` (bugbug's, for
    ///   `defectenhancementtask`);
    /// * the component model adds bugbug's `conflated_components_mapping`: a class such as
    ///   `Core::DOM` stands for `Core::DOM: Core & HTML`.
    ///
    /// `extra_data` also names the model and version (bugbug's clients ignore other keys).
    pub fn bugbug_answer(&self) -> Value {
        let mut extra = Map::new();
        let (prob, index, class) = if self.labels.len() == 2 {
            let one = self
                .model
                .spec()
                .and_then(|s| s.bugbug_one.as_deref())
                .unwrap_or(&self.labels[1]);
            let flip = self.labels[0] == one;
            let prob: Vec<f64> = if flip {
                self.prob.iter().rev().copied().collect()
            } else {
                self.prob.clone()
            };
            let index = if flip {
                1 - self.index.min(1)
            } else {
                self.index
            };
            (prob, index, json!(index))
        } else {
            let labels_map: Map<String, Value> = self
                .labels
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), json!(i)))
                .collect();
            extra.insert("labels_map".into(), Value::Object(labels_map));
            (self.prob.clone(), self.index, json!(self.class))
        };
        if self.model == ModelKind::COMPONENT {
            let mapping: Map<String, Value> = crate::effects::conflation::mapping()
                .map(|(class, component)| (class.to_owned(), json!(component)))
                .collect();
            extra.insert(
                "conflated_components_mapping".into(),
                Value::Object(mapping),
            );
        }
        extra.insert("model".into(), json!(self.model));
        extra.insert("version".into(), json!(self.version));
        json!({"prob": prob, "index": index, "class": class, "extra_data": extra})
    }
}

/// Risks and monitor figures travel with 4 decimals (a bug model's probabilities do not:
/// bugbug's clients compare them exactly).
pub fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The first of `scores` by `model` that is a bug score.
pub fn bug_score(scores: &[Score], model: ModelKind) -> Option<&BugScore> {
    scores
        .iter()
        .filter_map(Score::as_bug)
        .find(|s| s.model == model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shape_reads_back_as_itself() {
        let shapes = [
            json!({"model": "bugtype", "version": "v1", "class": "task", "index": 1,
                   "prob": [0.2, 0.8], "labels": ["defect", "task"]}),
            json!({"model": "commit-risk", "version": "v1", "push_risk": null, "riskiest": null,
                   "scored_commits": 0, "class": null}),
            json!({"model": "spam", "skipped": "no serving bundle"}),
            json!({"model": "bugtype", "version": "v1"}),
        ];
        let read: Vec<Score> = shapes
            .iter()
            .map(|s| serde_json::from_value(s.clone()).unwrap())
            .collect();
        assert!(matches!(read[0], Score::Bug(_)));
        assert!(matches!(read[1], Score::Push(_)));
        assert!(matches!(read[2], Score::Skipped(_)));
        assert!(matches!(read[3], Score::Request(_)));
        for (shape, score) in shapes.iter().zip(&read) {
            assert_eq!(&serde_json::to_value(score).unwrap(), shape);
        }
    }

    #[test]
    fn binary_models_answer_bugbug_with_the_class_index() {
        let s = BugScore {
            class: "spam".into(),
            index: 1,
            labels: vec!["ham".into(), "spam".into()].into(),
            model: ModelKind::SPAM,
            prob: vec![0.1, 0.9],
            version: "v1".into(),
            writes: None,
        };
        let a = s.bugbug_answer();
        assert_eq!(a["class"], 1);
        assert_eq!(a["prob"], json!([0.1, 0.9]));
        assert_eq!(s.confidence(), 0.9);
    }

    #[test]
    fn a_binary_model_whose_first_class_is_bugbugs_one_answers_flipped() {
        // defect's classes are bug / nobug; bugbug's defect model answers 1 for a bug.
        let s = BugScore {
            class: "bug".into(),
            index: 0,
            labels: vec!["bug".into(), "nobug".into()].into(),
            model: ModelKind::parse("defect").unwrap(),
            prob: vec![0.7, 0.3],
            version: "v1".into(),
            writes: None,
        };
        let a = s.bugbug_answer();
        assert_eq!(a["class"], 1);
        assert_eq!(a["index"], 1);
        assert_eq!(a["prob"], json!([0.3, 0.7]));
    }

    #[test]
    fn component_answers_carry_bugbugs_mapping_and_bugtype_its_labels_map() {
        let component = BugScore {
            class: "Core::DOM".into(),
            index: 0,
            labels: vec![
                "Core::DOM".into(),
                "Core::Layout".into(),
                "Firefox::Sync".into(),
            ]
            .into(),
            model: ModelKind::COMPONENT,
            prob: vec![0.6, 0.3, 0.1],
            version: "v1".into(),
            writes: None,
        };
        let a = component.bugbug_answer();
        let mapping = &a["extra_data"]["conflated_components_mapping"];
        assert_eq!(mapping["Core::DOM"], "Core::DOM: Core & HTML");
        assert_eq!(
            mapping["Firefox Build System"],
            "Firefox Build System::General"
        );
        assert_eq!(
            mapping.as_object().unwrap().len(),
            8,
            "bugbug's eight entries"
        );
        let bugtype = BugScore {
            model: ModelKind::BUGTYPE,
            labels: vec!["defect".into(), "enhancement".into(), "task".into()].into(),
            class: "task".into(),
            index: 2,
            prob: vec![0.1, 0.1, 0.8],
            ..component
        };
        let a = bugtype.bugbug_answer();
        assert_eq!(a["class"], "task");
        assert_eq!(
            a["extra_data"]["labels_map"],
            json!({"defect": 0, "enhancement": 1, "task": 2})
        );
    }
}
