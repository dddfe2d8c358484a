//! A bundle: one trained model on disk.
//!
//! ```text
//! models/<model>/<version>/
//!   manifest.json   what it is: model, version, bugflow version and git commit, data files
//!                   (sha256, records), split, parameters, metrics, labels
//!   weights.json    the fitted model(s) — one per repository for issue-type — and, for
//!                   commit-risk, the author experience table
//!   report.svg      confusion matrix and per-class scores
//! ```
//!
//! A release is code + models + data: the manifest ties the three together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ModelKind;
use super::linear::{LinearModel, TrainParams};
use crate::features::Groups;
use crate::features::commit::Experience;
use crate::train::calibration::Threshold;
use crate::train::metrics::Metrics;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFile {
    pub path: String,
    pub sha256: String,
    pub records: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub model: ModelKind,
    pub version: String,
    pub bugflow_version: String,
    pub git_commit: String,
    pub created_at: DateTime<Utc>,
    pub data: Vec<DataFile>,
    pub split: SplitInfo,
    pub params: TrainParams,
    /// The C cross-validation chose, per sub-model.
    #[serde(default)]
    pub chosen_c: BTreeMap<String, f64>,
    pub labels: Vec<String>,
    /// component: each class that stands for one real component → its `Product::Component`
    /// (bugbug's `conflated_components_mapping`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conflated_components_mapping: BTreeMap<String, String>,
    /// The held-out metrics (for issue-type: macro F1 averaged over the repositories).
    pub metrics: Metrics,
    /// issue-type: the metrics of each repository's model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_repository: BTreeMap<String, Metrics>,
    /// The writer's operating point on test (its catalogue rule's precision target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<Threshold>,
    /// Why this bundle is untrained (no public data labels the model): it predicts nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untrained: Option<String>,
    pub train_seconds: f64,
    /// Promoted although the metrics gate refused it (`--force`).
    #[serde(default)]
    pub forced: bool,
    /// What the gate said.
    pub gate: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    pub strategy: String,
    /// What orders records in time: `created` (creation time) or `id`.
    #[serde(default)]
    pub by: String,
    pub seed: u64,
    pub test_fraction: f64,
    pub train_records: usize,
    pub test_records: usize,
}

impl Manifest {
    /// The number the gate compares.
    pub fn macro_f1(&self) -> f64 {
        self.metrics.macro_f1
    }

    /// The test ECE after calibration, when it was measured.
    pub fn ece(&self) -> Option<f64> {
        self.metrics.calibration.as_ref().map(|c| c.after.ece)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// Keyed by repository for issue-type, by `""` otherwise.
    pub models: BTreeMap<String, LinearModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experience: Option<Experience>,
}

/// A bundle read from disk, ready to predict.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub weights: Weights,
}

impl Bundle {
    pub fn write(dir: &Path, manifest: &Manifest, weights: &Weights) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_vec_pretty(manifest)?,
        )?;
        std::fs::write(dir.join("weights.json"), serde_json::to_vec(weights)?)?;
        Ok(())
    }

    /// The manifest of the bundle in `dir`, without its weights.
    pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn read(dir: &Path) -> anyhow::Result<Bundle> {
        let manifest = Bundle::read_manifest(dir)?;
        // A model is checked as it is read (`LinearModel`'s `TryFrom<Stored>`).
        let weights: Weights = serde_json::from_slice(
            &std::fs::read(dir.join("weights.json"))
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("weights.json").display()))?,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("weights.json").display()))?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
            weights,
        })
    }

    /// Reads the bundle `version` of `model` from its folder, refusing one that says it is
    /// another model or another version (a folder copied or renamed by hand).
    pub fn read_as(dir: &Path, model: ModelKind, version: &str) -> anyhow::Result<Bundle> {
        let bundle = Bundle::read(dir)?;
        let manifest = &bundle.manifest;
        if manifest.model != model || manifest.version != version {
            anyhow::bail!(
                "{}: its manifest says {}/{}, not {model}/{version}",
                dir.display(),
                manifest.model,
                manifest.version
            );
        }
        Ok(bundle)
    }

    /// The model for `key` (a repository for a per-repository model); the one model (`""`)
    /// of a bundle that pools its keys.
    pub fn model(&self, key: &str) -> Option<&LinearModel> {
        self.weights
            .models
            .get(key)
            .or_else(|| self.weights.models.get(""))
    }

    /// The feature groups its model reads (none for a bundle without one, as an untrained
    /// bundle is).
    pub fn groups(&self) -> Groups {
        self.model("").map_or(Groups::NONE, LinearModel::groups)
    }
}
