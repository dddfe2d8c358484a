//! The training pipeline: data → split → fit → evaluate → bundle → gate → promote.

pub mod data;
pub mod gate;
pub mod metrics;
pub mod report;
pub mod split;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};

use crate::models::ModelKind;
use crate::models::bundle::{Bundle, Manifest, SplitInfo, Weights};
use crate::models::linear::LinearModel;
use crate::models::registry::{HistoryEntry, Registry};
use crate::result::stable_id;
use gate::Verdict;
use metrics::Metrics;
use split::Strategy;

pub struct TrainOptions {
    pub files: Vec<PathBuf>,
    /// The models folder (the registry root).
    pub out: PathBuf,
    /// Default: stratified by time; stratified random for issue-type (see [`default_split`]).
    pub split: Option<Strategy>,
    pub seed: u64,
    pub test_fraction: f64,
    /// Promote even if the gate refuses (recorded in the manifest).
    pub force: bool,
    pub progress: bool,
}

pub struct TrainOutcome {
    pub manifest: Manifest,
    /// The fitted models as they are in memory (the bundle holds the same, serialised).
    pub weights: Weights,
    pub dir: PathBuf,
    pub verdict: Verdict,
    pub promoted: bool,
}

/// The split each model is evaluated with by default.
///
/// Dated Bugzilla and commit data is split by time within each class: the model is tested
/// on newer records than it learned from, and no class vanishes from the test set. The
/// GitHub issues file is the exception: its labels were sampled from different periods
/// (react's newest fifth is 58 bugs of 60), so a time split measures the sampling, not the
/// model; it is split at random within each class, as the published benchmark was.
pub fn default_split(model: ModelKind) -> Strategy {
    match model {
        ModelKind::IssueType => Strategy::Stratified,
        _ => Strategy::StratifiedTime,
    }
}

/// Fewest records a class needs to be learned.
fn min_records(model: ModelKind) -> usize {
    match model {
        ModelKind::Component => 3,
        _ => 2,
    }
}

/// Trains `model` on `options.files`: one sub-model per key (per repository for
/// issue-type), each split, fitted and evaluated; then the bundle, its report, and the gate.
pub fn train(model: ModelKind, options: &TrainOptions) -> anyhow::Result<TrainOutcome> {
    let started = Instant::now();
    let data = data::load(model, &options.files)?;
    if data.rejected_count > 0 {
        tracing::warn!(
            count = data.rejected_count,
            first = ?data.rejected.first(),
            "records that could not be read were left out"
        );
    }
    let strategy = options.split.unwrap_or_else(|| default_split(model));
    let groups = data::by_key(&data.samples, min_records(model));
    let params = model.params();
    let bar = progress_bar(options.progress, groups.len());
    let mut fitted = Fitted::default();
    for (key, samples) in &groups {
        bar.set_message(if key.is_empty() {
            model.to_string()
        } else {
            key.clone()
        });
        let one = fit_one(model, key, samples, strategy, &params, options)?;
        fitted.add(key, one);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let split = SplitInfo {
        strategy: strategy.name().into(),
        seed: options.seed,
        test_fraction: options.test_fraction,
        train_records: fitted.n_train,
        test_records: fitted.n_test,
    };
    let manifest = Manifest {
        model,
        version: version_of(&data.files, options.seed),
        bugflow_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("BUILD_GIT_COMMIT").into(),
        created_at: Utc::now(),
        data: data.files.clone(),
        split,
        params,
        labels: fitted.classes,
        metrics: combine(&fitted.per_key),
        per_repository: if fitted.per_key.len() > 1 {
            fitted.per_key
        } else {
            BTreeMap::new()
        },
        train_seconds: started.elapsed().as_secs_f64(),
        forced: false,
        gate: None,
    };
    let weights = Weights {
        models: fitted.models,
        experience: data.experience,
    };
    bundle_and_gate(manifest, weights, options)
}

fn progress_bar(shown: bool, len: usize) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} training {msg} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// A bundle's version: its training time, and a hash of its data and seed.
fn version_of(files: &[crate::models::bundle::DataFile], seed: u64) -> String {
    let hashes: Vec<&str> = files.iter().map(|f| f.sha256.as_str()).collect();
    format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%S%3f"),
        &stable_id(&[&hashes.join(","), &seed.to_string()])[..8]
    )
}

/// The sub-models fitted so far, with their metrics and record counts.
#[derive(Default)]
struct Fitted {
    models: BTreeMap<String, LinearModel>,
    per_key: BTreeMap<String, Metrics>,
    classes: Vec<String>,
    n_train: usize,
    n_test: usize,
}

/// One fitted sub-model, with its test metrics.
struct FitOne {
    model: LinearModel,
    metrics: Metrics,
    n_train: usize,
    n_test: usize,
}

impl Fitted {
    fn add(&mut self, key: &str, one: FitOne) {
        self.n_train += one.n_train;
        self.n_test += one.n_test;
        for c in &one.model.classes {
            if !self.classes.contains(c) {
                self.classes.push(c.clone());
            }
        }
        self.per_key.insert(key.to_owned(), one.metrics);
        self.models.insert(key.to_owned(), one.model);
    }
}

/// Splits one key's samples, fits on the train part, measures on the test part.
fn fit_one(
    model: ModelKind,
    key: &str,
    samples: &[&data::Sample],
    strategy: Strategy,
    params: &crate::models::linear::TrainParams,
    options: &TrainOptions,
) -> anyhow::Result<FitOne> {
    let mut classes: Vec<String> = samples.iter().filter_map(|s| s.label.clone()).collect();
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        anyhow::bail!("{model} {key}: needs at least two classes, found {classes:?}");
    }
    let labels: Vec<usize> = samples
        .iter()
        .map(|s| {
            let label = s.label.as_deref().unwrap_or_default();
            classes
                .binary_search_by(|c| c.as_str().cmp(label))
                .unwrap_or(0)
        })
        .collect();
    let dates: Vec<i64> = samples.iter().map(|s| s.date).collect();
    let (train_idx, test_idx) = split::split(
        strategy,
        &labels,
        &dates,
        options.test_fraction,
        options.seed,
    );
    let docs: Vec<_> = train_idx
        .iter()
        .map(|&i| samples[i].features.clone())
        .collect();
    let train_labels: Vec<usize> = train_idx.iter().map(|&i| labels[i]).collect();
    let fitted = LinearModel::fit(&docs, &train_labels, &classes, params)
        .map_err(|e| anyhow::anyhow!("{model} {key}: {e}"))?;
    let truth: Vec<usize> = test_idx.iter().map(|&i| labels[i]).collect();
    let predictions: Vec<_> = test_idx
        .iter()
        .map(|&i| fitted.predict(&samples[i].features))
        .collect();
    let predicted: Vec<usize> = predictions.iter().map(|p| p.index).collect();
    let mut metrics = Metrics::compute(&classes, &truth, &predicted);
    if classes.len() == 2 {
        let count = |c: usize| train_labels.iter().filter(|l| **l == c).count();
        let minority = if count(1) < count(0) { 1 } else { 0 };
        let positive: Vec<bool> = truth.iter().map(|t| *t == minority).collect();
        let scores: Vec<f64> = predictions
            .iter()
            .map(|p| p.probabilities[minority])
            .collect();
        metrics.roc_auc = Metrics::roc_auc(&positive, &scores);
    }
    Ok(FitOne {
        model: fitted,
        metrics,
        n_train: train_idx.len(),
        n_test: test_idx.len(),
    })
}

/// Writes the bundle and its report, records it, and asks the gate to promote it.
fn bundle_and_gate(
    mut manifest: Manifest,
    weights: Weights,
    options: &TrainOptions,
) -> anyhow::Result<TrainOutcome> {
    let (model, version) = (manifest.model, manifest.version.clone());
    let registry = Registry::new(&options.out);
    let dir = registry.bundle_dir(model, &version);
    Bundle::write(&dir, &manifest, &weights)?;
    report::write_svg(
        &dir.join("report.svg"),
        &format!("{model} {version}"),
        &manifest.metrics,
    )?;
    let split = &manifest.split;
    registry.record(
        model,
        HistoryEntry {
            at: Utc::now(),
            action: "trained".into(),
            version: version.clone(),
            macro_f1: Some(manifest.macro_f1()),
            note: format!(
                "{} train / {} test records",
                split.train_records, split.test_records
            ),
        },
    )?;
    let verdict = registry.promote(model, &version, options.force)?;
    let promoted = verdict.pass || options.force;
    manifest.forced = options.force && !verdict.pass;
    manifest.gate = Some(if verdict.pass {
        format!("passed: {}", verdict.reason)
    } else if options.force {
        format!("refused, promoted with --force: {}", verdict.reason)
    } else {
        format!("refused: {}", verdict.reason)
    });
    Bundle::write(&dir, &manifest, &weights)?;
    Ok(TrainOutcome {
        manifest,
        weights,
        dir,
        verdict,
        promoted,
    })
}

/// One set of metrics from several sub-models: macro F1 and accuracy averaged (as the
/// per-repository benchmark reports them), confusion matrices summed per class name.
fn combine(per_key: &BTreeMap<String, Metrics>) -> Metrics {
    if per_key.len() == 1 {
        return per_key
            .values()
            .next()
            .cloned()
            .unwrap_or_else(|| Metrics::compute(&[], &[], &[]));
    }
    let mut classes: Vec<String> = per_key
        .values()
        .flat_map(|m| m.classes.iter().map(|c| c.class.clone()))
        .collect();
    classes.sort();
    classes.dedup();
    let (mut truth, mut predicted) = (Vec::new(), Vec::new());
    for m in per_key.values() {
        for (t, row) in m.confusion.iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                let ti = classes.binary_search(&m.classes[t].class).unwrap_or(0);
                let pi = classes.binary_search(&m.classes[p].class).unwrap_or(0);
                truth.extend(std::iter::repeat_n(ti, n));
                predicted.extend(std::iter::repeat_n(pi, n));
            }
        }
    }
    let mut combined = Metrics::compute(&classes, &truth, &predicted);
    let n = per_key.len() as f64;
    combined.macro_f1 = per_key.values().map(|m| m.macro_f1).sum::<f64>() / n;
    combined.accuracy = per_key.values().map(|m| m.accuracy).sum::<f64>() / n;
    combined
}

/// Scores a bundle on any data set (no split: every labelled record is a test record).
pub fn evaluate(
    bundle: &Bundle,
    files: &[PathBuf],
) -> anyhow::Result<(Metrics, BTreeMap<String, Metrics>, usize)> {
    let model = bundle.manifest.model;
    let data = data::load(model, files)?;
    let groups = data::by_key(&data.samples, 1);
    let mut per_key = BTreeMap::new();
    let mut unknown = 0;
    for (key, samples) in &groups {
        let Some(fitted) = bundle.model(key) else {
            unknown += samples.len();
            continue;
        };
        let (mut truth, mut predicted) = (Vec::new(), Vec::new());
        for s in samples {
            match fitted
                .classes
                .iter()
                .position(|c| Some(c) == s.label.as_ref())
            {
                Some(t) => {
                    truth.push(t);
                    predicted.push(fitted.predict(&s.features).index);
                }
                None => unknown += 1,
            }
        }
        per_key.insert(
            key.clone(),
            Metrics::compute(&fitted.classes, &truth, &predicted),
        );
    }
    if per_key.is_empty() {
        anyhow::bail!("none of the records can be scored by this bundle");
    }
    Ok((combine(&per_key), per_key, unknown))
}
