//! The training pipeline: data → split → fit → evaluate → bundle → gate → promote.

pub mod calibration;
pub mod data;
pub mod evaluate;
pub mod gate;
pub mod labels;
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
use crate::models::catalogue::{Calibration, Spec};
use crate::models::linear::{self, LinearModel, Terms, TrainParams, argmax, softmax};
use crate::models::registry::{HistoryEntry, Registry};
use crate::result::stable_id;
use calibration::{Calibrator, Reliability};
use gate::Verdict;
use metrics::CalibrationReport;
use metrics::Metrics;
use split::Strategy;

pub use evaluate::{Evaluation, evaluate};

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Data files; empty: the catalogue file's `data`.
    pub files: Vec<PathBuf>,
    /// The models folder (the registry root).
    pub out: PathBuf,
    /// Default: the catalogue file's `[split]`.
    pub split: Option<Strategy>,
    pub seed: u64,
    /// Default: the catalogue file's `split.test_fraction`.
    pub test_fraction: Option<f64>,
    /// Promote even if the gate refuses (recorded in the manifest).
    pub force: bool,
    /// A bundle the gate passes becomes the model's shadow (it scores live traffic beside
    /// the serving one until `bugflow models release` or `promote`), not the serving bundle.
    /// The first bundle of a model serves at once: there is nothing to shadow.
    pub shadow: bool,
    pub progress: bool,
    /// Writes every labelled record used (key, id, part `train`/`test`, label, title, body)
    /// to this JSON Lines file: the exact split, for a side-by-side learner
    /// (`scripts/compare-sklearn`).
    pub export: Option<PathBuf>,
}

pub struct TrainOutcome {
    pub manifest: Manifest,
    /// The fitted models as they are in memory (the bundle holds the same, serialised).
    pub weights: Weights,
    pub dir: PathBuf,
    pub verdict: Verdict,
    pub promoted: bool,
    /// It became the shadow (`--shadow`).
    pub shadowed: bool,
}

/// How one training run splits its records: the options over the catalogue file's
/// `[split]`.
#[derive(Debug, Clone, Copy)]
struct Plan {
    strategy: Strategy,
    test_fraction: f64,
    seed: u64,
}

/// Trains `model` on `options.files` (or its catalogue file's data): one sub-model per key
/// (per repository for issue-type), each split, fitted, calibrated and evaluated; then the
/// writer's threshold, the bundle, its report, and the gate.
pub fn train(model: ModelKind, options: &TrainOptions) -> anyhow::Result<TrainOutcome> {
    let started = Instant::now();
    let spec = model
        .spec()
        .ok_or_else(|| anyhow::anyhow!("{model}: no catalogue file"))?;
    let files: Vec<PathBuf> = if options.files.is_empty() {
        spec.data.iter().map(PathBuf::from).collect()
    } else {
        options.files.clone()
    };
    let plan = Plan {
        strategy: options.split.unwrap_or(spec.split.strategy),
        test_fraction: options.test_fraction.unwrap_or(spec.split.test_fraction),
        seed: options.seed,
    };
    if let Some(why) = &spec.untrained {
        return untrained(model, why, &files, plan, options);
    }
    anyhow::ensure!(
        !files.is_empty(),
        "{model}: no data (give --data, or list files in its catalogue file's `data`)"
    );
    let data = data::load(model, &files)?;
    if data.rejected_count > 0 {
        tracing::warn!(
            count = data.rejected_count,
            first = ?data.rejected.first(),
            "records that could not be read were left out"
        );
    }
    let mut groups = data::by_key(&data.samples, spec.min_class_records);
    if spec.pool_keys {
        let all: Vec<&data::Sample> = groups.values().flatten().copied().collect();
        groups = BTreeMap::from([(String::new(), all)]);
    }
    if let Some(why) = too_thin(&data.samples, &groups, spec.min_class_records) {
        return untrained(model, &why, &files, plan, options);
    }
    let fitted = fit_groups(model, &groups, plan, options)?;
    let mut metrics = combine(&fitted.per_key);
    pooled_noise(&mut metrics, fitted.test.values().flat_map(|(p, _)| p));
    let manifest = Manifest {
        chosen_c: fitted.chosen_c.clone(),
        labels: fitted.classes.clone(),
        conflated_components_mapping: conflation_mapping(model, &fitted.classes),
        metrics,
        writer: writer_threshold(spec, &fitted),
        per_repository: if fitted.per_key.len() > 1 {
            fitted.per_key
        } else {
            BTreeMap::new()
        },
        train_seconds: started.elapsed().as_secs_f64(),
        ..manifest(
            model,
            data.files.clone(),
            plan,
            fitted.n_train,
            fitted.n_test,
        )
    };
    let weights = Weights {
        models: fitted.models,
        experience: data.experience,
    };
    bundle_and_gate(manifest, weights, options)
}

/// Fits every group (one per key, or one pooled), with a progress bar; writes `--export`.
fn fit_groups(
    model: ModelKind,
    groups: &BTreeMap<String, Vec<&data::Sample>>,
    plan: Plan,
    options: &TrainOptions,
) -> anyhow::Result<Fitted> {
    let params = model.params();
    let bar = progress_bar(options.progress, groups.len());
    let mut fitted = Fitted::default();
    let mut exported = Vec::new();
    for (key, samples) in groups {
        bar.set_message(if key.is_empty() {
            model.to_string()
        } else {
            key.clone()
        });
        let mut one = fit_one(model, samples, plan, &params, options.export.is_some())?;
        exported.append(&mut one.export);
        fitted.add(key, one);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(path) = &options.export {
        let lines: Vec<String> = exported.iter().map(|v| v.to_string()).collect();
        std::fs::write(path, lines.join("\n") + "\n")
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(fitted)
}

/// The writer rule's operating point on the (single) model's test set.
fn writer_threshold(spec: &Spec, fitted: &Fitted) -> Option<calibration::Threshold> {
    let rule = spec.writer.as_ref()?;
    let (probabilities, truth) = fitted.test.get("")?;
    let classes = &fitted.models.get("")?.classes;
    let class = rule
        .class
        .as_ref()
        .and_then(|c| classes.iter().position(|k| k == c));
    Some(calibration::threshold_for(
        probabilities,
        truth,
        class,
        rule.precision,
        rule.floor,
    ))
}

/// What every manifest states (what, when, from which data, how split); a trained one
/// fills in its results over it.
fn manifest(
    model: ModelKind,
    data: Vec<crate::models::bundle::DataFile>,
    plan: Plan,
    train_records: usize,
    test_records: usize,
) -> Manifest {
    Manifest {
        model,
        version: version_of(&data, plan.seed),
        bugflow_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("BUILD_GIT_COMMIT").into(),
        created_at: Utc::now(),
        data,
        split: SplitInfo {
            strategy: plan.strategy.name().into(),
            by: model.spec().map(|s| s.split.by.clone()).unwrap_or_default(),
            seed: plan.seed,
            test_fraction: plan.test_fraction,
            train_records,
            test_records,
        },
        params: model.params(),
        chosen_c: BTreeMap::new(),
        labels: model.spec().map(|s| s.classes.clone()).unwrap_or_default(),
        conflated_components_mapping: BTreeMap::new(),
        metrics: Metrics::compute(&[], &[], &[]),
        per_repository: BTreeMap::new(),
        writer: None,
        untrained: None,
        train_seconds: 0.0,
        forced: false,
        gate: None,
    }
}

/// bugbug's `conflated_components_mapping` for the component model: each class that
/// stands for one real component → that `Product::Component`.
fn conflation_mapping(model: ModelKind, classes: &[String]) -> BTreeMap<String, String> {
    if model != ModelKind::COMPONENT {
        return BTreeMap::new();
    }
    classes
        .iter()
        .filter_map(|c| {
            let full = crate::effects::conflation::component_of(c)?;
            (full != c).then(|| (c.clone(), full.to_owned()))
        })
        .collect()
}

/// Why the data cannot train the model, if it cannot: some sub-model has fewer than two
/// classes with `min` labelled records each.
fn too_thin(
    samples: &[data::Sample],
    groups: &BTreeMap<String, Vec<&data::Sample>>,
    min: usize,
) -> Option<String> {
    let learnable = |members: &Vec<&data::Sample>| {
        let mut classes: Vec<&str> = members.iter().filter_map(|s| s.label.as_deref()).collect();
        classes.sort_unstable();
        classes.dedup();
        classes.len() >= 2
    };
    if !groups.is_empty() && groups.values().all(learnable) {
        return None;
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in samples {
        if let Some(l) = s.label.as_deref() {
            *counts.entry(l).or_default() += 1;
        }
    }
    let listed: Vec<String> = counts.iter().map(|(c, n)| format!("{c} {n}")).collect();
    Some(format!(
        "the data labels too few records ({}): a class needs {min} to be learned, and a model two classes",
        listed.join(", ")
    ))
}

/// A bundle that says it is untrained and why (no public data labels this model): it
/// serves no predictions, and the writer never acts on it.
fn untrained(
    model: ModelKind,
    why: &str,
    files: &[PathBuf],
    plan: Plan,
    options: &TrainOptions,
) -> anyhow::Result<TrainOutcome> {
    let mut described = Vec::new();
    for f in files.iter().filter(|f| f.exists()) {
        described.push(data::describe(f, 0)?);
    }
    let manifest = Manifest {
        untrained: Some(why.to_owned()),
        ..manifest(model, described, plan, 0, 0)
    };
    let weights = Weights {
        models: BTreeMap::new(),
        experience: None,
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
    chosen_c: BTreeMap<String, f64>,
    test: BTreeMap<String, (Vec<Vec<f64>>, Vec<usize>)>,
    classes: Vec<String>,
    n_train: usize,
    n_test: usize,
}

/// One fitted sub-model, with its test metrics per key (one key unless pooled).
struct FitOne {
    model: LinearModel,
    per_key: BTreeMap<String, Metrics>,
    n_train: usize,
    n_test: usize,
    /// The C chosen on the held-out slice, and each C tried with its macro F1 there.
    c: f64,
    tried: Vec<(f64, f64)>,
    /// Per key, calibrated test probabilities and the true classes (for the writer's
    /// threshold).
    test: BTreeMap<String, (Vec<Vec<f64>>, Vec<usize>)>,
    /// The records as `--export` writes them.
    export: Vec<serde_json::Value>,
}

impl Fitted {
    fn add(&mut self, key: &str, one: FitOne) {
        self.n_train += one.n_train;
        self.n_test += one.n_test;
        for c in one.model.classes.iter() {
            if !self.classes.contains(c) {
                self.classes.push(c.clone());
            }
        }
        tracing::debug!(key, c = one.c, tried = ?one.tried, "C chosen on the held-out slice");
        self.per_key.extend(one.per_key);
        self.models.insert(key.to_owned(), one.model);
        self.chosen_c.insert(key.to_owned(), one.c);
        self.test.extend(one.test);
    }
}

/// The share of the training part held out to choose C and fit the calibrator.
const CALIBRATION_FRACTION: f64 = 0.2;

/// Splits a group's samples; fits on the train part but a held-out slice of it (cut as the
/// test part is: by time for a time split), which chooses C and fits the calibrator; then
/// measures on the test part. A pooled group (issue-type: every repository in one model) is
/// split within each repository and class, and measured per repository.
fn fit_one(
    model: ModelKind,
    samples: &[&data::Sample],
    plan: Plan,
    params: &TrainParams,
    export: bool,
) -> anyhow::Result<FitOne> {
    let (classes, labels) = classes_of(model, samples)?;
    let keys = keys_of(samples);
    let strata = strata_of(samples, &keys, &labels, classes.len());
    let dates: Vec<i64> = samples.iter().map(|s| s.date).collect();
    let (train_idx, test_idx) = split::split(
        plan.strategy,
        &strata,
        &dates,
        plan.test_fraction,
        plan.seed,
    );
    let export = if export {
        export_lines(samples, &train_idx, &test_idx)
    } else {
        Vec::new()
    };
    let train = Part {
        terms: train_idx
            .iter()
            .map(|&i| Terms::of(&samples[i].features))
            .collect(),
        labels: train_idx.iter().map(|&i| labels[i]).collect(),
        strata: train_idx.iter().map(|&i| strata[i]).collect(),
        dates: train_idx.iter().map(|&i| dates[i]).collect(),
    };
    let Calibrated {
        model: fitted,
        c,
        tried,
        method,
        fitted_on,
    } = fit_calibrated(model, &train, &classes, plan, params)?;
    let calibrate = model.spec().map(|s| s.calibration).unwrap_or_default();
    let mut per_key = BTreeMap::new();
    let mut test = BTreeMap::new();
    for key in keys {
        let idx: Vec<usize> = test_idx
            .iter()
            .copied()
            .filter(|&i| samples[i].key == key)
            .collect();
        let (mut metrics, probabilities, truth) =
            measure(&fitted, samples, &labels, &idx, &train.labels, calibrate);
        if let (Some(method), Some(report)) = (&method, metrics.calibration.as_mut()) {
            report.method = method.clone();
        }
        if let (Some(on), Some(report)) = (&fitted_on, metrics.calibration.as_mut()) {
            report.method = format!("{} (fitted on {on})", report.method);
        }
        per_key.insert(key.to_owned(), metrics);
        test.insert(key.to_owned(), (probabilities, truth));
    }
    Ok(FitOne {
        model: fitted,
        per_key,
        n_train: train_idx.len(),
        n_test: test_idx.len(),
        c,
        tried,
        test,
        export,
    })
}

/// The keys of a group's samples (repositories for issue-type), sorted, each once.
pub fn keys_of<'a>(samples: &[&'a data::Sample]) -> Vec<&'a str> {
    let mut keys: Vec<&str> = samples.iter().map(|s| s.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Each sample's stratum: its class within its key, so that a split keeps each key's share
/// of each class on both sides.
pub fn strata_of(
    samples: &[&data::Sample],
    keys: &[&str],
    labels: &[usize],
    classes: usize,
) -> Vec<usize> {
    samples
        .iter()
        .zip(labels)
        .map(|(s, l)| keys.binary_search(&s.key.as_str()).unwrap_or(0) * classes + l)
        .collect()
}

/// The classes of a group (sorted), and each sample's class index.
pub fn classes_of(
    model: ModelKind,
    samples: &[&data::Sample],
) -> anyhow::Result<(Vec<String>, Vec<usize>)> {
    let mut classes: Vec<String> = samples.iter().filter_map(|s| s.label.clone()).collect();
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        anyhow::bail!("{model}: needs at least two classes, found {classes:?}");
    }
    let labels = samples
        .iter()
        .map(|s| {
            let label = s.label.as_deref().unwrap_or_default();
            classes
                .binary_search_by(|c| c.as_str().cmp(label))
                .unwrap_or(0)
        })
        .collect();
    Ok((classes, labels))
}

/// The training part of a group: hashed documents, classes, strata and dates.
struct Part {
    terms: Vec<Terms>,
    labels: Vec<usize>,
    strata: Vec<usize>,
    dates: Vec<i64>,
}

/// Chooses C on the training part's own held-out slice (cut the way the test part was),
/// and fits the calibrator on that slice.
fn fit_calibrated(
    model: ModelKind,
    train: &Part,
    classes: &[String],
    plan: Plan,
    params: &TrainParams,
) -> anyhow::Result<Calibrated> {
    let (fit_pos, held_pos) = split::split(
        plan.strategy,
        &train.strata,
        &train.dates,
        CALIBRATION_FRACTION,
        plan.seed.wrapping_add(1),
    );
    let part = |pos: &[usize]| -> (Vec<&Terms>, Vec<usize>) {
        pos.iter()
            .map(|&p| (&train.terms[p], train.labels[p]))
            .unzip()
    };
    let ((fit_docs, fit_labels), (held_docs, held_labels)) = (part(&fit_pos), part(&held_pos));
    let failed = |e: linear::TrainError| anyhow::anyhow!("{model}: {e}");
    let chosen = linear::select_c(
        (&fit_docs, &fit_labels),
        (&held_docs, &held_labels),
        classes,
        params,
    )
    .map_err(failed)?;
    let linear::Selection {
        c,
        model: scored,
        tried,
        held_scores,
        ..
    } = chosen;
    // Without `refit`, the model that scored the held-out slice is the one shipped, so that
    // the calibrator fits the very model it corrects (bugbug's component model, 80/20).
    let mut fitted = if model.spec().is_none_or(|s| s.refit) {
        scored
            .refit(&train.terms, &train.labels, params, c, linear::cores())
            .map_err(failed)?
    } else {
        scored
    };
    let calibrate = model.spec().map(|s| s.calibration).unwrap_or_default();
    let (records, fitted_on) = if calibrate == Calibration::None {
        ((held_scores, held_labels), None)
    } else {
        let folds = model.spec().map_or(0, |s| s.calibration_folds);
        let held = (held_scores, held_labels);
        calibration_records(train, classes, plan, params, c, folds, held).map_err(failed)?
    };
    let method = apply_calibration(model, &mut fitted, calibrate, &records);
    Ok(Calibrated {
        model: fitted,
        c,
        tried,
        method,
        fitted_on,
    })
}

/// What the calibrator fits: the held-out slice's scores (`held`), or with `folds` > 1
/// every training record's out-of-fold scores; with what they are when the catalogue asked
/// for folds (the manifest's method says it).
fn calibration_records(
    train: &Part,
    classes: &[String],
    plan: Plan,
    params: &TrainParams,
    c: f64,
    folds: usize,
    held: Scored,
) -> Result<(Scored, Option<String>), linear::TrainError> {
    if folds <= 1 {
        return Ok((held, None));
    }
    Ok(match out_of_fold(train, classes, plan, params, c, folds)? {
        Ok(scored) => {
            let on = format!("{} out-of-fold predictions, {folds} folds", scored.1.len());
            (scored, Some(on))
        }
        Err(why) => (held, Some(format!("the held-out slice: {why}"))),
    })
}

/// Fits `calibrate`'s calibrator on `records` into `fitted`: a temperature, and for
/// isotonic a top-label map, each where it earns its place; the method in words when some
/// part of it was not kept (and why).
fn apply_calibration(
    model: ModelKind,
    fitted: &mut LinearModel,
    calibrate: Calibration,
    (scores, labels): &Scored,
) -> Option<String> {
    match calibrate {
        Calibration::None => None,
        Calibration::Temperature => {
            fitted.temperature = calibration::fit_temperature(scores, labels) as f32;
            None
        }
        Calibration::Isotonic => match calibration::fit_calibrator(scores, labels) {
            Calibrator::WithMap(t, map) => {
                tracing::info!(%model, knots = map.x.len(), "temperature and a top-label map");
                fitted.temperature = t as f32;
                fitted.top_label = Some(map);
                None
            }
            Calibrator::Temperature(t, why) => {
                fitted.temperature = t as f32;
                Some(CalibrationReport::without_map(&why))
            }
            Calibrator::Identity(why) => {
                tracing::info!(%model, %why, "no calibrator: the model's own probabilities");
                fitted.temperature = 1.0;
                Some(CalibrationReport::neither(&why))
            }
        },
    }
}

/// Scores (logits) of records, with their true classes.
type Scored = (Vec<Vec<f64>>, Vec<usize>);

/// Every training record scored by a model (with `c`) fitted on the other `k - 1` folds
/// ([`split::folds`], cut as the test part was): what the calibrator fits when the
/// catalogue asks for `calibration_folds`. The folds are fitted side by side. When some
/// fold holds every training record of a class (no fit without it could learn the class),
/// why, with a warning: the held-out slice calibrates instead, and the manifest says so.
fn out_of_fold(
    train: &Part,
    classes: &[String],
    plan: Plan,
    params: &TrainParams,
    c: f64,
    k: usize,
) -> Result<Result<Scored, String>, linear::TrainError> {
    let fold = split::folds(
        plan.strategy,
        &train.strata,
        &train.dates,
        k,
        plan.seed.wrapping_add(2),
    );
    if let Some(class) = fold_without_class(&fold, &train.labels, k, classes.len()) {
        let why = format!(
            "one of {k} folds holds every training record of class {:?}",
            classes[class]
        );
        tracing::warn!(%why, "the calibrator fits the held-out slice instead");
        return Ok(Err(why));
    }
    let each: Vec<usize> = (0..k).collect();
    let threads = (linear::cores() / k).max(1);
    let scored = linear::parallel_map(&each, |&f| {
        let (docs, labels): (Vec<&Terms>, Vec<usize>) = (0..fold.len())
            .filter(|&p| fold[p] != f)
            .map(|p| (&train.terms[p], train.labels[p]))
            .unzip();
        let model = LinearModel::fit_c(&docs, &labels, classes, params, c, threads)?;
        Ok((0..fold.len())
            .filter(|&p| fold[p] == f)
            .map(|p| (model.scores_terms(&train.terms[p]), train.labels[p]))
            .collect::<Vec<_>>())
    })
    .ok_or_else(|| linear::TrainError("a training thread panicked".into()))?;
    let mut out = (Vec::new(), Vec::new());
    for fold in scored {
        for (scores, label) in fold? {
            out.0.push(scores);
            out.1.push(label);
        }
    }
    Ok(Ok(out))
}

/// A class all of whose records lie in one fold (fitting without that fold, no record of
/// it is left), if any.
fn fold_without_class(fold: &[usize], labels: &[usize], k: usize, classes: usize) -> Option<usize> {
    let mut per_fold = vec![vec![0usize; classes]; k];
    for (&f, &label) in fold.iter().zip(labels) {
        per_fold[f][label] += 1;
    }
    (0..classes).find(|&class| {
        let total: usize = per_fold.iter().map(|counts| counts[class]).sum();
        per_fold.iter().any(|counts| counts[class] == total)
    })
}

/// What [`fit_calibrated`] ships: the model, the C chosen, each C tried with its macro F1,
/// and, when the catalogue asked for a map and some part of the calibrator was not kept,
/// the method in words (with why).
struct Calibrated {
    model: LinearModel,
    c: f64,
    tried: Vec<(f64, f64)>,
    method: Option<String>,
    /// What the calibrator was fitted on, when the catalogue asked for folds.
    fitted_on: Option<String>,
}

/// Metrics of `fitted` on the records `idx`, with its calibration before and after, and
/// the calibrated probabilities with the true classes.
fn measure(
    fitted: &LinearModel,
    samples: &[&data::Sample],
    labels: &[usize],
    idx: &[usize],
    train_labels: &[usize],
    calibrate: Calibration,
) -> (Metrics, Vec<Vec<f64>>, Vec<usize>) {
    let truth: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
    let scores: Vec<Vec<f64>> = idx
        .iter()
        .map(|&i| fitted.scores(&samples[i].features))
        .collect();
    let raw: Vec<Vec<f64>> = scores.iter().map(|s| softmax(s, 1.0)).collect();
    let probabilities: Vec<Vec<f64>> = scores.iter().map(|s| fitted.probabilities(s)).collect();
    let predicted: Vec<usize> = probabilities.iter().map(|p| argmax(p)).collect();
    let mut metrics = Metrics::compute(&fitted.classes, &truth, &predicted);
    metrics.calibration = Some(CalibrationReport {
        method: CalibrationReport::method_of(calibrate, fitted),
        temperature: f64::from(fitted.temperature),
        before: Reliability::of(&raw, &truth),
        after: Reliability::of(&probabilities, &truth),
        noise: Some(Reliability::noise(&probabilities)),
    });
    if fitted.classes.len() == 2 {
        let count = |c: usize| train_labels.iter().filter(|l| **l == c).count();
        let minority = if count(1) < count(0) { 1 } else { 0 };
        let positive: Vec<bool> = truth.iter().map(|t| *t == minority).collect();
        let minority_scores: Vec<f64> = probabilities.iter().map(|p| p[minority]).collect();
        metrics.roc_auc = Metrics::roc_auc(&positive, &minority_scores);
    }
    (metrics, probabilities, truth)
}

/// The records as `--export` writes them.
fn export_lines(
    samples: &[&data::Sample],
    train_idx: &[usize],
    test_idx: &[usize],
) -> Vec<serde_json::Value> {
    let line = |i: usize, part: &str| {
        let s = samples[i];
        serde_json::json!({"key": s.key, "id": s.id, "part": part, "label": s.label,
                           "title": s.text.0, "body": s.text.1})
    };
    let train = train_idx.iter().map(|&i| line(i, "train"));
    train
        .chain(test_idx.iter().map(|&i| line(i, "test")))
        .collect()
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
    let serving = registry.history(model)?.current;
    let as_shadow = options.shadow && serving.is_some();
    let verdict = if as_shadow && let Some(why) = &manifest.untrained {
        Verdict {
            pass: false,
            reason: format!("untrained ({why}): nothing to shadow"),
        }
    } else if as_shadow {
        let verdict = registry.judge(model, &manifest)?;
        if verdict.pass || options.force {
            registry.shadow(model, &version)?;
        }
        verdict
    } else {
        registry.promote(model, &version, options.force)?
    };
    let shadowed = as_shadow && manifest.untrained.is_none() && (verdict.pass || options.force);
    let promoted = !as_shadow && (verdict.pass || options.force);
    manifest.forced = options.force && !verdict.pass;
    manifest.gate = Some(if verdict.pass {
        format!("passed: {}", verdict.reason)
    } else if options.force {
        format!("refused, used with --force: {}", verdict.reason)
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
        shadowed,
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
    combined.calibration = pooled_calibration(per_key.values());
    let n = per_key.len() as f64;
    combined.macro_f1 = per_key.values().map(|m| m.macro_f1).sum::<f64>() / n;
    combined.accuracy = per_key.values().map(|m| m.accuracy).sum::<f64>() / n;
    combined
}

/// The calibration of several sub-models' test sets taken together: the bins have the same
/// edges, so pooling them is exact (the temperature shown is the mean).
fn pooled_calibration<'a>(metrics: impl Iterator<Item = &'a Metrics>) -> Option<CalibrationReport> {
    let reports: Vec<&CalibrationReport> = metrics.filter_map(|m| m.calibration.as_ref()).collect();
    let first = reports.first()?;
    let pool = |pick: fn(&CalibrationReport) -> &Reliability| {
        let mut bins = pick(first).bins.clone();
        for b in &mut bins {
            (b.count, b.confidence, b.accuracy) = (0, 0.0, 0.0);
        }
        for r in &reports {
            for (into, b) in bins.iter_mut().zip(&pick(r).bins) {
                into.count += b.count;
                into.confidence += b.confidence * b.count as f64;
                into.accuracy += b.accuracy * b.count as f64;
            }
        }
        let n: usize = bins.iter().map(|b| b.count).sum();
        let mut ece = 0.0;
        for b in &mut bins {
            if b.count > 0 {
                b.confidence /= b.count as f64;
                b.accuracy /= b.count as f64;
                ece += b.count as f64 / n as f64 * (b.accuracy - b.confidence).abs();
            }
        }
        Reliability { ece, bins, n }
    };
    Some(CalibrationReport {
        method: first.method.clone(),
        temperature: reports.iter().map(|r| r.temperature).sum::<f64>() / reports.len() as f64,
        before: pool(|r| &r.before),
        after: pool(|r| &r.after),
        // The noise needs every probability, which the reports do not keep: see
        // [`pooled_noise`].
        noise: None,
    })
}

/// Several sub-models measured together: their pooled calibration's noise, from every
/// calibrated test probability (one sub-model's report already has its own).
fn pooled_noise<'a>(metrics: &mut Metrics, probabilities: impl Iterator<Item = &'a Vec<f64>>) {
    if let Some(c) = metrics.calibration.as_mut()
        && c.noise.is_none()
    {
        let confidence: Vec<f64> = probabilities.map(|p| calibration::top(p).1).collect();
        c.noise = Some(Reliability::noise_of_confidence(&confidence));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_held_by_one_fold_alone_is_found() {
        // Classes 0 and 1 spread over three folds; class 2's two records both in fold 1.
        let fold = [0, 1, 2, 0, 1, 2, 1, 1];
        let labels = [0, 0, 0, 1, 1, 1, 2, 2];
        assert_eq!(fold_without_class(&fold, &labels, 3, 3), Some(2));
        let spread = [0, 1, 2, 0, 1, 2, 0, 1];
        assert_eq!(fold_without_class(&spread, &labels, 3, 3), None);
    }
}
