//! Models: what each one predicts, its bundles, the registry that serves the current one.
//!
//! * [`linear`] — the learner (linfa logistic regression, sparse inference);
//! * [`bundle`] — a trained model on disk: `manifest.json` + `weights.json`;
//! * [`registry`] — `models/<model>/<version>/`, the promotion history, promote and
//!   rollback, and the [`ModelSet`](registry::ModelSet) the consumers read from, which picks
//!   up a promoted or rolled-back bundle while the service runs.

pub mod bundle;
pub mod linear;
pub mod registry;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::features::Group;
use crate::features::bug::Exclude;
use linear::{Balance, TrainParams};

/// Every model bugflow trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// defect / enhancement / task (bugbug's `defectenhancementtask`).
    Bugtype,
    /// `Product::Component`, with bugbug's conflation.
    Component,
    /// spam / ham (bugbug's `spambug`).
    Spam,
    /// regression / not-regression.
    Regression,
    /// Will a commit be backed out (bugbug's `backout`, the landings risk).
    CommitRisk,
    /// GitHub issues: bug / feature / question, one model per repository.
    IssueType,
}

/// What a model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Bug,
    Commit,
    Issue,
}

impl ModelKind {
    pub const ALL: [ModelKind; 6] = [
        ModelKind::Bugtype,
        ModelKind::Component,
        ModelKind::Spam,
        ModelKind::Regression,
        ModelKind::CommitRisk,
        ModelKind::IssueType,
    ];

    /// The models the bug-triage consumer runs.
    pub const BUG_MODELS: [ModelKind; 4] = [
        ModelKind::Bugtype,
        ModelKind::Component,
        ModelKind::Spam,
        ModelKind::Regression,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Bugtype => "bugtype",
            ModelKind::Component => "component",
            ModelKind::Spam => "spam",
            ModelKind::Regression => "regression",
            ModelKind::CommitRisk => "commit-risk",
            ModelKind::IssueType => "issue-type",
        }
    }

    /// Our names and bugbug's.
    pub fn parse(name: &str) -> Option<ModelKind> {
        Some(match name {
            "bugtype" | "defectenhancementtask" => ModelKind::Bugtype,
            "component" => ModelKind::Component,
            "spam" | "spambug" => ModelKind::Spam,
            "regression" => ModelKind::Regression,
            "commit-risk" | "backout" | "regressor" => ModelKind::CommitRisk,
            "issue-type" => ModelKind::IssueType,
            _ => return None,
        })
    }

    pub fn input(self) -> Input {
        match self {
            ModelKind::CommitRisk => Input::Commit,
            ModelKind::IssueType => Input::Issue,
            _ => Input::Bug,
        }
    }

    /// Features a bug model must not see: its own label, or what gives it away.
    pub fn exclude(self) -> Exclude {
        match self {
            ModelKind::Bugtype => Exclude {
                keywords: vec!["regression", "talos-regression", "feature"],
                product_component: false,
                bug_type: true,
            },
            ModelKind::Regression => Exclude {
                keywords: vec!["regression", "talos-regression", "regressionwindow-wanted"],
                product_component: false,
                bug_type: false,
            },
            ModelKind::Component | ModelKind::Spam => Exclude {
                keywords: vec![],
                product_component: true,
                bug_type: false,
            },
            _ => Exclude::default(),
        }
    }

    /// Training parameters (tuned on held-out data; see the closing notes of issue 3).
    pub fn params(self) -> TrainParams {
        let mut weights = BTreeMap::new();
        weights.insert(Group::Title, 2.0);
        let base = TrainParams {
            group_weights: weights,
            ..TrainParams::default()
        };
        match self {
            ModelKind::IssueType => TrainParams {
                min_df: 2,
                max_features: 30_000,
                alpha: 0.05,
                max_iterations: 300,
                ..base
            },
            ModelKind::CommitRisk => TrainParams {
                min_df: 3,
                max_features: 8_000,
                alpha: 4.0,
                max_iterations: 200,
                balance: Balance::Undersample { ratio: 3.0 },
                ..base
            },
            _ => TrainParams {
                min_df: 2,
                max_features: 10_000,
                alpha: 0.05,
                max_iterations: 200,
                ..base
            },
        }
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
                "unknown model {s:?}; known: {}",
                ModelKind::ALL.map(|m| m.name()).join(", ")
            )
        })
    }
}
