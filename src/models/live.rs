//! Models on live traffic: how right they are by what people decide, and how far their world
//! moved from the one they were trained on.
//!
//! * **Live accuracy** — the labels people set after a prediction (a type or component
//!   change, a bug resolved INVALID or moved to Invalid Bugs, the `regression` keyword added
//!   or removed; see [`crate::effects::memory::truths`]) joined with the prediction that came
//!   before, per model and per ISO week: macro F1, accuracy, calibration error (ECE over 10
//!   bins of the top-class probability), and the precision of the predictions the writer
//!   would have acted on (at or above the bundle's threshold, of the writer rule's class).
//! * **Drift** — per model and per week, the share of each predicted class and the mean
//!   top-class probability of the serving bundle's predictions, against what its test set
//!   showed at training (the manifest's confusion matrix and reliability bins). A week that
//!   moved past the catalogue's `[live]` bounds is marked: a metric, a log line, a mark on
//!   the dashboard.
//! * **Compare** — a shadow bundle against the serving one: how often they agree on the same
//!   events, and, on the bugs people labelled after both predicted, accuracy and macro F1 of
//!   each with 95% bootstrap intervals, and the interval of the difference. `promote`
//!   refuses a shadow that is worse by more than `[live] max_f1_drop`.
//!
//! `bugflow run` refreshes the report every `live_refresh_seconds` ([`watch`]): gauges for
//! Prometheus, the dashboard's chart (`/api/dashboard` → `live`), warnings in the log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use serde::Serialize;

use super::ModelKind;
use super::bundle::Manifest;
use super::catalogue::LiveSpec;
use super::linear::SplitMix;
use super::registry::Registry;
use crate::store::{LiveLabel, PredictionRow, Role, Store};
use crate::train::calibration::Reliability;
use crate::train::gate::Verdict;
use crate::train::metrics::Metrics;

/// How many weeks the report looks back.
pub const WEEKS: usize = 12;

/// Bootstrap resamples behind each interval (seeded: the same data gives the same interval).
const RESAMPLES: usize = 1000;

/// Every bug model's live numbers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveReport {
    pub at: Option<DateTime<Utc>>,
    pub models: Vec<ModelLive>,
}

/// One model's live numbers, week by week.
#[derive(Debug, Clone, Serialize)]
pub struct ModelLive {
    pub model: ModelKind,
    /// The serving bundle.
    pub version: String,
    /// The writer's threshold of the serving bundle, if it has one.
    pub threshold: Option<f64>,
    pub reference: Reference,
    pub weeks: Vec<LiveWeek>,
    pub drift: Vec<DriftWeek>,
    /// The newest judged week drifted.
    pub drifting: bool,
}

/// What the serving bundle's test set showed at training.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reference {
    /// Share of each class among the test predictions.
    pub class_share: BTreeMap<String, f64>,
    /// Mean top-class probability on test (after calibration).
    pub mean_confidence: Option<f64>,
    pub test_records: usize,
}

/// The scores of predictions against the labels people set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scores {
    pub labels: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// None when no label kept its prediction's probability.
    pub ece: Option<f64>,
    /// Of the predictions the writer would have acted on: the share that were right.
    pub precision_at_threshold: Option<f64>,
    /// How many predictions were at or above the threshold.
    pub at_threshold: usize,
}

/// One week of live accuracy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveWeek {
    /// ISO week, `2026-W48`.
    pub week: String,
    #[serde(flatten)]
    pub scores: Scores,
}

/// One week of drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftWeek {
    pub week: String,
    pub predictions: usize,
    pub class_share: BTreeMap<String, f64>,
    pub mean_confidence: Option<f64>,
    /// Total variation distance to the test set's class shares: ½ Σ |live − test|.
    pub class_shift: f64,
    /// |live − test| mean confidence.
    pub confidence_shift: Option<f64>,
    /// Too few predictions to judge (`[live] min_predictions`).
    pub judged: bool,
    /// Why the week is marked, if it is.
    pub warnings: Vec<String>,
}

/// The ISO week of a time as the store keeps it (RFC 3339, or BMO's `2026-11-28T11:00:00`).
pub fn week_of(at: &str) -> Option<String> {
    let date = if let Ok(t) = DateTime::parse_from_rfc3339(at) {
        t.with_timezone(&Utc).date_naive()
    } else if let Ok(t) =
        NaiveDateTime::parse_from_str(at.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
    {
        t.date()
    } else {
        NaiveDate::parse_from_str(at.get(..10)?, "%Y-%m-%d").ok()?
    };
    let week = date.iso_week();
    Some(format!("{}-W{:02}", week.year(), week.week()))
}

/// The scores of `labels` for a model whose classes are `classes`. A truth the model has no
/// class for is a class of its own, never predicted: it counts against the model.
/// `writer`: the threshold and the writer rule's class (none: any class).
pub fn score(
    labels: &[LiveLabel],
    classes: &[String],
    writer: (Option<f64>, Option<&str>),
) -> Scores {
    if labels.is_empty() {
        return Scores::default();
    }
    let mut all: Vec<String> = classes.to_vec();
    for l in labels {
        for c in [&l.truth, &l.predicted] {
            if !all.contains(c) {
                all.push(c.clone());
            }
        }
    }
    let index = |c: &str| all.iter().position(|x| x == c).unwrap_or(0);
    let truth: Vec<usize> = labels.iter().map(|l| index(&l.truth)).collect();
    let predicted: Vec<usize> = labels.iter().map(|l| index(&l.predicted)).collect();
    let metrics = Metrics::compute(&all, &truth, &predicted);
    let confident: Vec<(f64, bool)> = labels
        .iter()
        .filter_map(|l| Some((l.confidence?, l.truth == l.predicted)))
        .collect();
    let (threshold, class) = writer;
    let acted: Vec<bool> = match threshold {
        Some(t) => labels
            .iter()
            .filter(|l| l.confidence.is_some_and(|c| c >= t))
            .filter(|l| class.is_none_or(|c| l.predicted == c))
            .map(|l| l.truth == l.predicted)
            .collect(),
        None => Vec::new(),
    };
    Scores {
        labels: labels.len(),
        accuracy: metrics.accuracy,
        macro_f1: metrics.macro_f1,
        ece: (!confident.is_empty()).then(|| Reliability::of_confidence(&confident).ece),
        precision_at_threshold: (!acted.is_empty())
            .then(|| acted.iter().filter(|r| **r).count() as f64 / acted.len() as f64),
        at_threshold: acted.len(),
    }
}

/// [`score`] for each ISO week of the labels' times, oldest first.
pub fn weekly(
    labels: &[LiveLabel],
    classes: &[String],
    writer: (Option<f64>, Option<&str>),
) -> Vec<LiveWeek> {
    let mut by_week: BTreeMap<String, Vec<LiveLabel>> = BTreeMap::new();
    for l in labels {
        if let Some(week) = week_of(&l.at) {
            by_week.entry(week).or_default().push(l.clone());
        }
    }
    by_week
        .into_iter()
        .map(|(week, labels)| LiveWeek {
            week,
            scores: score(&labels, classes, writer),
        })
        .collect()
}

/// What the manifest's test set showed: predicted class shares and mean confidence.
pub fn reference(manifest: &Manifest) -> Reference {
    let confusion = &manifest.metrics.confusion;
    let total: usize = confusion.iter().flatten().sum();
    let class_share = manifest
        .labels
        .iter()
        .enumerate()
        .map(|(c, label)| {
            let predicted: usize = confusion
                .iter()
                .map(|row| row.get(c).copied().unwrap_or(0))
                .sum();
            (label.clone(), predicted as f64 / total.max(1) as f64)
        })
        .collect();
    let mean_confidence = manifest.metrics.calibration.as_ref().and_then(|c| {
        let n: usize = c.after.bins.iter().map(|b| b.count).sum();
        (n > 0).then(|| {
            c.after
                .bins
                .iter()
                .map(|b| b.confidence * b.count as f64)
                .sum::<f64>()
                / n as f64
        })
    });
    Reference {
        class_share,
        mean_confidence,
        test_records: total,
    }
}

/// Per ISO week, the predictions' class shares and mean confidence against `reference`.
pub fn drift(
    predictions: &[PredictionRow],
    reference: &Reference,
    bounds: &LiveSpec,
) -> Vec<DriftWeek> {
    let mut by_week: BTreeMap<String, Vec<&PredictionRow>> = BTreeMap::new();
    for p in predictions {
        if let Some(week) = week_of(&p.at) {
            by_week.entry(week).or_default().push(p);
        }
    }
    by_week
        .into_iter()
        .map(|(week, rows)| drift_week(week, &rows, reference, bounds))
        .collect()
}

fn drift_week(
    week: String,
    rows: &[&PredictionRow],
    reference: &Reference,
    bounds: &LiveSpec,
) -> DriftWeek {
    let n = rows.len();
    let mut class_share: BTreeMap<String, f64> = BTreeMap::new();
    for p in rows {
        *class_share.entry(p.class.clone()).or_default() += 1.0 / n as f64;
    }
    let classes: BTreeSet<&String> = class_share
        .keys()
        .chain(reference.class_share.keys())
        .collect();
    let class_shift = classes
        .iter()
        .map(|c| {
            let live = class_share.get(*c).copied().unwrap_or(0.0);
            let test = reference.class_share.get(*c).copied().unwrap_or(0.0);
            (live - test).abs()
        })
        .sum::<f64>()
        / 2.0;
    let confidences: Vec<f64> = rows.iter().filter_map(|p| p.confidence).collect();
    let mean_confidence = (!confidences.is_empty())
        .then(|| confidences.iter().sum::<f64>() / confidences.len() as f64);
    let confidence_shift = mean_confidence
        .zip(reference.mean_confidence)
        .map(|(live, test)| (live - test).abs());
    let judged = n >= bounds.min_predictions;
    let mut warnings = Vec::new();
    if judged && class_shift > bounds.max_class_shift {
        warnings.push(format!(
            "class shares moved {class_shift:.3} from the test set's (bound {})",
            bounds.max_class_shift
        ));
    }
    if judged && let Some(shift) = confidence_shift.filter(|s| *s > bounds.max_confidence_shift) {
        warnings.push(format!(
            "mean confidence moved {shift:.3} from the test set's (bound {})",
            bounds.max_confidence_shift
        ));
    }
    DriftWeek {
        week,
        predictions: n,
        class_share,
        mean_confidence,
        class_shift,
        confidence_shift,
        judged,
        warnings,
    }
}

/// The live report of every bug model with a trained serving bundle, over the last `weeks`.
pub async fn report(
    store: &Store,
    registry: &Registry,
    weeks: usize,
) -> anyhow::Result<LiveReport> {
    let since = (Utc::now() - chrono::Duration::weeks(weeks as i64)).to_rfc3339();
    let since_week = week_of(&since).unwrap_or_default();
    let mut models = Vec::new();
    for model in ModelKind::bug_models() {
        let Some(version) = registry.history(model)?.current else {
            continue;
        };
        let manifest = &registry.manifest(model, &version)?;
        if manifest.untrained.is_some() {
            continue;
        }
        let spec = model.spec();
        let bounds = spec.map(|s| s.live.clone()).unwrap_or_default();
        let threshold = manifest.writer.as_ref().and_then(|w| w.threshold);
        let writer_class = spec
            .and_then(|s| s.writer.as_ref())
            .and_then(|w| w.class.as_deref());
        let labels = store.live_labels(model.name()).await?;
        let mut weeks = weekly(&labels, &manifest.labels, (threshold, writer_class));
        weeks.retain(|w| w.week >= since_week);
        let predictions: Vec<PredictionRow> = store
            .predictions(model.name(), Role::Serving, &since)
            .await?
            .into_iter()
            .filter(|p| p.version == manifest.version)
            .collect();
        let reference = reference(manifest);
        let drift = drift(&predictions, &reference, &bounds);
        let drifting = drift
            .iter()
            .rev()
            .find(|w| w.judged)
            .is_some_and(|w| !w.warnings.is_empty());
        models.push(ModelLive {
            model,
            version: manifest.version.clone(),
            threshold,
            reference,
            weeks,
            drift,
            drifting,
        });
    }
    Ok(LiveReport {
        at: Some(Utc::now()),
        models,
    })
}

/// Sets the live gauges from `report` (the weeks it holds; a week label is bounded by
/// [`WEEKS`]).
pub fn export(report: &LiveReport) {
    for m in &report.models {
        let model = m.model.name();
        for w in &m.weeks {
            let labels = [("model", model.to_owned()), ("week", w.week.clone())];
            metrics::gauge!("bugflow_live_labels", &labels).set(w.scores.labels as f64);
            metrics::gauge!("bugflow_live_macro_f1", &labels).set(w.scores.macro_f1);
            metrics::gauge!("bugflow_live_accuracy", &labels).set(w.scores.accuracy);
            if let Some(ece) = w.scores.ece {
                metrics::gauge!("bugflow_live_ece", &labels).set(ece);
            }
            if let Some(p) = w.scores.precision_at_threshold {
                metrics::gauge!("bugflow_live_precision_at_threshold", &labels).set(p);
            }
        }
        for d in &m.drift {
            let labels = [("model", model.to_owned()), ("week", d.week.clone())];
            metrics::gauge!("bugflow_drift_class_shift", &labels).set(d.class_shift);
            if let Some(shift) = d.confidence_shift {
                metrics::gauge!("bugflow_drift_confidence_shift", &labels).set(shift);
            }
        }
        metrics::gauge!("bugflow_drift_warning", "model" => model)
            .set(f64::from(u8::from(m.drifting)));
    }
}

/// The latest report, shared with the dashboard.
pub type Shared = Arc<RwLock<LiveReport>>;

/// Every `every` until `shutdown`: the report, its gauges, a warning per newly drifted week.
pub async fn watch(
    store: Arc<Store>,
    registry: Registry,
    every: Duration,
    shared: Shared,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut warned: BTreeSet<(ModelKind, String)> = BTreeSet::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let report = match report(&store, &registry, WEEKS).await {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!(error = %e, "live report failed; trying again next time");
                continue;
            }
        };
        export(&report);
        for m in &report.models {
            for d in m.drift.iter().filter(|d| !d.warnings.is_empty()) {
                if warned.insert((m.model, d.week.clone())) {
                    tracing::warn!(model = %m.model, version = %m.version, week = %d.week, predictions = d.predictions, warnings = %d.warnings.join("; "), "model drift: live predictions moved from the test set's");
                }
            }
        }
        if let Ok(mut slot) = shared.write() {
            *slot = report;
        }
    }
}

/// A value and its 95% interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// A shadow bundle against the serving one.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub model: ModelKind,
    pub serving: String,
    pub shadow: String,
    /// Events both scored, and on how many they gave the same class.
    pub events: usize,
    pub agreeing: usize,
    /// Labelled bugs both predicted before the label.
    pub labelled: usize,
    pub serving_accuracy: Estimate,
    pub shadow_accuracy: Estimate,
    pub serving_macro_f1: Estimate,
    pub shadow_macro_f1: Estimate,
    /// Shadow − serving macro F1, paired over the same labels.
    pub macro_f1_difference: Estimate,
    /// The serving and shadow class on each disagreement: (serving, shadow) → count.
    pub disagreements: BTreeMap<String, usize>,
    pub verdict: Verdict,
}

impl Comparison {
    pub fn agreement(&self) -> f64 {
        self.agreeing as f64 / self.events.max(1) as f64
    }
}

/// The value at quantile `q` of `sorted` (nearest rank).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Accuracy and macro F1 of the serving and shadow predictions on the same labels, with
/// paired bootstrap intervals: [serving accuracy, shadow accuracy, serving F1, shadow F1,
/// shadow − serving F1].
pub fn paired(serving: &[LiveLabel], shadow: &[LiveLabel], classes: &[String]) -> [Estimate; 5] {
    let stat = |idx: &[usize]| -> [f64; 5] {
        let pick = |labels: &[LiveLabel]| -> Vec<LiveLabel> {
            idx.iter().map(|&i| labels[i].clone()).collect()
        };
        let (a, b) = (
            score(&pick(serving), classes, (None, None)),
            score(&pick(shadow), classes, (None, None)),
        );
        [
            a.accuracy,
            b.accuracy,
            a.macro_f1,
            b.macro_f1,
            b.macro_f1 - a.macro_f1,
        ]
    };
    let n = serving.len();
    let all: Vec<usize> = (0..n).collect();
    let point = stat(&all);
    let mut draws: [Vec<f64>; 5] = Default::default();
    if n > 0 {
        let mut rng = SplitMix(0x5EED);
        for _ in 0..RESAMPLES {
            let idx: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
            for (d, v) in draws.iter_mut().zip(stat(&idx)) {
                d.push(v);
            }
        }
    }
    std::array::from_fn(|k| {
        draws[k].sort_by(f64::total_cmp);
        Estimate {
            value: point[k],
            low: percentile(&draws[k], 0.025),
            high: percentile(&draws[k], 0.975),
        }
    })
}

/// `bugflow models compare MODEL`: the shadow against the serving bundle on live traffic.
pub async fn compare(
    store: &Store,
    registry: &Registry,
    model: ModelKind,
) -> anyhow::Result<Comparison> {
    let history = registry.history(model)?;
    let serving = history
        .current
        .ok_or_else(|| anyhow::anyhow!("{model}: no bundle serves"))?;
    let shadow = history.shadow.ok_or_else(|| {
        anyhow::anyhow!("{model}: no shadow bundle runs (bugflow models shadow {model} VERSION)")
    })?;
    compare_versions(store, registry, model, &serving, &shadow).await
}

/// [`compare`] for two given versions (`serving` the one that served while `shadow` scored).
pub async fn compare_versions(
    store: &Store,
    registry: &Registry,
    model: ModelKind,
    serving: &str,
    shadow: &str,
) -> anyhow::Result<Comparison> {
    let classes = registry.manifest(model, serving)?.labels;
    let bounds = model.spec().map(|s| s.live.clone()).unwrap_or_default();
    let pairs = store.agreement(model.name(), shadow).await?;
    let mut disagreements: BTreeMap<String, usize> = BTreeMap::new();
    for (a, b) in pairs.iter().filter(|(a, b)| a != b) {
        *disagreements.entry(format!("{a} → {b}")).or_default() += 1;
    }
    // The same labels, each beside the serving and the shadow prediction made before it.
    let served: BTreeMap<(u64, String, String), LiveLabel> = store
        .live_labels(model.name())
        .await?
        .into_iter()
        .map(|l| ((l.bug_id, l.truth.clone(), l.at.clone()), l))
        .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for l in store.shadow_labels(model.name(), shadow).await? {
        if let Some(s) = served.get(&(l.bug_id, l.truth.clone(), l.at.clone())) {
            a.push(s.clone());
            b.push(l);
        }
    }
    let [
        serving_accuracy,
        shadow_accuracy,
        serving_macro_f1,
        shadow_macro_f1,
        macro_f1_difference,
    ] = paired(&a, &b, &classes);
    let verdict = verdict(
        shadow,
        a.len(),
        &bounds,
        (&serving_macro_f1, &shadow_macro_f1, &macro_f1_difference),
    );
    Ok(Comparison {
        model,
        serving: serving.to_owned(),
        shadow: shadow.to_owned(),
        events: pairs.len(),
        agreeing: pairs.iter().filter(|(a, b)| a == b).count(),
        labelled: a.len(),
        serving_accuracy,
        shadow_accuracy,
        serving_macro_f1,
        shadow_macro_f1,
        macro_f1_difference,
        disagreements,
        verdict,
    })
}

/// The live verdict on a shadow: enough labels, and not worse by more than the margin.
fn verdict(
    shadow: &str,
    labelled: usize,
    bounds: &LiveSpec,
    (serving, candidate, difference): (&Estimate, &Estimate, &Estimate),
) -> Verdict {
    if labelled < bounds.min_labels {
        return Verdict {
            pass: false,
            reason: format!(
                "cannot judge {shadow} on live labels: {labelled} labelled bugs, [live] min_labels is {}",
                bounds.min_labels
            ),
        };
    }
    let pass = difference.value >= -bounds.max_f1_drop;
    let reason = if pass {
        format!(
            "live macro F1 {:.3} vs serving {:.3} on {labelled} labelled bugs (difference {:+.3}, within −{})",
            candidate.value, serving.value, difference.value, bounds.max_f1_drop
        )
    } else {
        format!(
            "live macro F1 {:.3} < serving {:.3} − {} on {labelled} labelled bugs (difference {:+.3}, 95% {:+.3}…{:+.3})",
            candidate.value,
            serving.value,
            bounds.max_f1_drop,
            difference.value,
            difference.low,
            difference.high
        )
    };
    Verdict { pass, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(bug: u64, predicted: &str, truth: &str, confidence: f64, at: &str) -> LiveLabel {
        LiveLabel {
            bug_id: bug,
            version: "v".into(),
            predicted: predicted.into(),
            confidence: Some(confidence),
            truth: truth.into(),
            at: at.into(),
        }
    }

    #[test]
    fn weeks_are_iso_weeks_of_either_time_format() {
        assert_eq!(week_of("2026-11-28T11:00:00").as_deref(), Some("2026-W48"));
        assert_eq!(
            week_of("2026-11-30T09:00:00+00:00").as_deref(),
            Some("2026-W49")
        );
        assert_eq!(week_of("2027-01-01T00:00:00Z").as_deref(), Some("2026-W53"));
        assert_eq!(week_of("not a time"), None);
    }

    #[test]
    fn live_scores_count_by_hand() {
        let classes: Vec<String> = ["defect", "enhancement", "task"].map(String::from).into();
        let labels = [
            label(1, "defect", "defect", 0.95, "2026-11-23T10:00:00"),
            label(2, "defect", "task", 0.92, "2026-11-24T10:00:00"),
            label(3, "task", "task", 0.6, "2026-11-24T11:00:00"),
            label(4, "enhancement", "defect", 0.5, "2026-11-30T10:00:00"),
        ];
        let weeks = weekly(&labels, &classes, (Some(0.9), None));
        assert_eq!(weeks.len(), 2);
        let w48 = &weeks[0].scores;
        assert_eq!((w48.labels, w48.at_threshold), (3, 2));
        assert!((w48.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(w48.precision_at_threshold, Some(0.5));
        // defect: P 1/2 R 1 → 2/3; task: P 1 R 1/2 → 2/3; enhancement never seen.
        assert!((w48.macro_f1 - 2.0 / 3.0).abs() < 1e-12, "{w48:?}");
        // Bins: 0.9 holds 0.95 (right) and 0.92 (wrong): |0.5 − 0.935| × 2/3; 0.6 (right) × 1/3.
        let ece = (0.935f64 - 0.5).abs() * 2.0 / 3.0 + (1.0f64 - 0.6).abs() / 3.0;
        assert!((w48.ece.unwrap() - ece).abs() < 1e-9, "{w48:?}");
        assert_eq!(weeks[1].scores.accuracy, 0.0);
        assert_eq!(weeks[1].scores.precision_at_threshold, None);
    }

    #[test]
    fn drift_is_marked_when_shares_or_confidence_move() {
        let reference = Reference {
            class_share: [("a".to_owned(), 0.5), ("b".to_owned(), 0.5)].into(),
            mean_confidence: Some(0.8),
            test_records: 100,
        };
        let bounds = LiveSpec {
            min_predictions: 4,
            ..LiveSpec::default()
        };
        let row = |class: &str, c: f64, at: &str| PredictionRow {
            bug_id: 1,
            version: "v".into(),
            class: class.into(),
            confidence: Some(c),
            at: at.into(),
        };
        let same = ["a", "b", "a", "b"].map(|c| row(c, 0.8, "2026-11-23T10:00:00+00:00"));
        let moved = ["a", "a", "a", "b"].map(|c| row(c, 0.5, "2026-11-30T10:00:00+00:00"));
        let few = [row("a", 0.1, "2026-12-07T10:00:00+00:00")];
        let rows: Vec<PredictionRow> = same.into_iter().chain(moved).chain(few).collect();
        let weeks = drift(&rows, &reference, &bounds);
        assert_eq!(weeks.len(), 3);
        assert!(weeks[0].warnings.is_empty(), "{:?}", weeks[0]);
        assert!((weeks[1].class_shift - 0.25).abs() < 1e-12);
        assert_eq!(weeks[1].warnings.len(), 2, "{:?}", weeks[1]);
        assert!(!weeks[2].judged && weeks[2].warnings.is_empty());
    }

    #[test]
    fn the_paired_bootstrap_is_seeded_and_brackets_the_point() {
        let classes: Vec<String> = ["x", "y"].map(String::from).into();
        let truth = ["x", "y", "x", "y", "x", "y", "x", "x", "y", "y"];
        let serving: Vec<LiveLabel> = truth
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let flipped = if *t == "x" { "y" } else { "x" };
                let predicted = if i % 3 == 0 { flipped } else { t };
                label(i as u64, predicted, t, 0.7, "2026-11-23T10:00:00")
            })
            .collect();
        let shadow: Vec<LiveLabel> = truth
            .iter()
            .enumerate()
            .map(|(i, t)| label(i as u64, t, t, 0.7, "2026-11-23T10:00:00"))
            .collect();
        let e = paired(&serving, &shadow, &classes);
        assert_eq!(e, paired(&serving, &shadow, &classes));
        assert_eq!(e[1].value, 1.0);
        assert!((e[0].value - 0.6).abs() < 1e-12);
        assert!(e[4].value > 0.0 && e[4].low >= 0.0);
        for (k, e) in e.iter().enumerate() {
            assert!(e.low <= e.value && e.value <= e.high, "{k}: {e:?}");
        }
    }
}
