//! Models: what each one predicts, its bundles, the registry that serves the current one.
//!
//! * [`catalogue`] — one TOML file per model: what it reads, its label rule, features,
//!   learner, split, calibration, gate and writer rule;
//! * [`linear`] — the learner (linfa logistic regression, sparse inference);
//! * [`calibrator`] — the top-label map that follows the temperature;
//! * [`columns`] — a model's feature hash → column table, laid out for scoring;
//! * [`bundle`] — a trained model on disk: `manifest.json` + `weights.json`;
//! * [`registry`] — `models/<model>/<version>/`, the promotion history, promote and
//!   rollback, and the [`ModelSet`](registry::ModelSet) the consumers read from, which picks
//!   up a promoted or rolled-back bundle while the service runs, and each model's shadow;
//! * [`live`] — the models on live traffic: accuracy by the labels people set, drift from
//!   the training data, a shadow against the serving bundle.

pub mod bundle;
pub mod calibrator;
pub mod catalogue;
pub mod columns;
pub mod lbfgs;
pub mod linear;
pub mod live;
pub mod registry;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::features::bug::Exclude;
pub use catalogue::Spec;
use linear::TrainParams;

/// A model of the catalogue, by its name: `ModelKind::BUGTYPE`, or any name a catalogue
/// file gives (`ModelKind::parse`). Cheap to copy; its [`Spec`] says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelKind(&'static str);

/// What a model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    Bug,
    Commit,
    Issue,
}

impl ModelKind {
    /// defect / enhancement / task (bugbug's `defectenhancementtask`).
    pub const BUGTYPE: ModelKind = ModelKind("bugtype");
    /// `Product::Component`, with bugbug's conflation.
    pub const COMPONENT: ModelKind = ModelKind("component");
    /// spam / ham (bugbug's `spambug`).
    pub const SPAM: ModelKind = ModelKind("spam");
    /// regression / not-regression, among defects.
    pub const REGRESSION: ModelKind = ModelKind("regression");
    /// Will a commit be backed out (bugbug's `backout`, the landings risk).
    pub const COMMIT_RISK: ModelKind = ModelKind("commit-risk");
    /// GitHub issues: bug / feature / question, one model per repository.
    pub const ISSUE_TYPE: ModelKind = ModelKind("issue-type");

    /// Every model of the catalogue, by name.
    pub fn all() -> Vec<ModelKind> {
        catalogue::all()
            .into_iter()
            .map(|s| ModelKind(s.name.as_str()))
            .collect()
    }

    /// The models that read bugs (the bug-triage consumer's).
    pub fn bug_models() -> Vec<ModelKind> {
        Self::all()
            .into_iter()
            .filter(|m| m.input() == Input::Bug)
            .collect()
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    /// Our names and bugbug's (a catalogue file's `aliases`).
    pub fn parse(name: &str) -> Option<ModelKind> {
        catalogue::find(name).map(|s| ModelKind(s.name.as_str()))
    }

    /// Its catalogue file. `None` only for a constant whose file was removed.
    pub fn spec(self) -> Option<&'static Spec> {
        catalogue::find(self.0)
    }

    pub fn input(self) -> Input {
        self.spec().map(|s| s.reads).unwrap_or(Input::Bug)
    }

    /// Features a bug model must not see: its own label, or what gives it away (its
    /// catalogue file's `[features]`, built when the file was read).
    pub fn exclude(self) -> &'static Exclude {
        static NOTHING: std::sync::LazyLock<Exclude> = std::sync::LazyLock::new(Exclude::default);
        self.spec().map(|s| &s.exclude).unwrap_or(&NOTHING)
    }

    /// Training parameters (the catalogue file's `[learner]`).
    pub fn params(self) -> TrainParams {
        self.spec().map(|s| s.learner.clone()).unwrap_or_default()
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelKind::parse(s).ok_or_else(|| {
            format!(
                "unknown model {s:?}; the catalogue has: {}",
                ModelKind::all()
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

impl Serialize for ModelKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for ModelKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}
