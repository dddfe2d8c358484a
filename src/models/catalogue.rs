//! The model catalogue: one TOML file per model, `models/catalogue/<name>.toml`.
//!
//! A file says everything bugflow needs to train and serve a model: what it reads (bugs,
//! commits or GitHub issues), its label rule (a field's value, a keyword, a history move, a
//! resolution, bugbug's hand-made label files, and which records are left out), the
//! features it may see, its learner and parameters, its split, and its writer rule. Adding a
//! model is adding a file and running `bugflow train NAME`.
//!
//! The files of `models/catalogue/` are built into the binary; at start-up
//! [`load_dir`] adds (or replaces) the files of the models folder's own `catalogue/`, so a
//! deployment can add a model without a new build.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{LazyLock, RwLock};

use serde::Deserialize;

use super::Input;
use super::linear::TrainParams;
use crate::features::Group;
use crate::features::bug::Exclude;
use crate::train::split::Strategy;

/// One model, as its file describes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The name bugflow uses (folder of its bundles, `bugflow train NAME`).
    pub name: String,
    /// Other names it answers to: bugbug's.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// One line: what it predicts.
    pub about: String,
    /// `bug`, `commit` or `issue`.
    pub reads: Input,
    /// The data it trains on by default (paths relative to the working directory); label
    /// files (`*.csv` with a `bug_id` column) are given here too.
    #[serde(default)]
    pub data: Vec<String>,
    pub label: Label,
    #[serde(default)]
    pub features: FeatureSpec,
    #[serde(default)]
    pub split: SplitSpec,
    #[serde(default)]
    pub learner: TrainParams,
    /// The calibrator fitted on held-out predictions.
    #[serde(default)]
    pub calibration: Calibration,
    /// After C and the calibrator are chosen on the training part's held-out slice, refit on
    /// the whole training part (more data; the calibrator then corrects a slightly sharper
    /// model than the one it was fitted on). `false` ships the model the slice scored.
    #[serde(default = "yes")]
    pub refit: bool,
    /// Fit the calibrator on out-of-fold predictions of the whole training part, cut into
    /// this many folds the way the test part was cut (by time for a time split), rather than
    /// on the held-out slice alone (0). Five folds give the calibrator five times the
    /// records, for five more fits: regression's temperature came from 91 held-out records
    /// and over-claimed on test (ECE 0.089); from 457 out-of-fold ones, 0.052.
    #[serde(default)]
    pub calibration_folds: usize,
    /// Rules of the metrics gate.
    #[serde(default)]
    pub gate: GateSpec,
    /// How live traffic judges it: the promotion margin on harvested labels, drift bounds.
    #[serde(default)]
    pub live: LiveSpec,
    /// Only these classes take part (empty: every class the rule gives).
    #[serde(default)]
    pub classes: Vec<String>,
    /// Records carry a key (issue-type: the repository). `true`: one model learns from
    /// every key (split, and measured, per key); `false`: one model per key.
    #[serde(default)]
    pub pool_keys: bool,
    /// A class needs this many labelled records to be learned (smaller ones are left out).
    #[serde(default = "default_min_class_records")]
    pub min_class_records: usize,
    /// What it may write to Bugzilla, if anything.
    #[serde(default)]
    pub writer: Option<WriterRule>,
    /// Why the shipped bundle is untrained, when no public data can label it.
    #[serde(default)]
    pub untrained: Option<String>,
    /// A two-class model: the class bugbug's HTTP service answers as `1` (`prob[1]` is its
    /// probability). Default: the second class in name order.
    #[serde(default)]
    pub bugbug_one: Option<String>,
    /// `features` as the extractors apply it, built once when the file is read: serving
    /// filters every bug's features through it, per message and model.
    #[serde(skip)]
    pub exclude: Exclude,
}

fn yes() -> bool {
    true
}

fn default_min_class_records() -> usize {
    2
}

/// How a record gets its class. (Unknown fields are refused by [`Rule`], which reads
/// every field but `files` and `leave_out`.)
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Label {
    #[serde(flatten)]
    pub rule: Rule,
    /// Hand-made labels (bugbug's `labels/*.csv`): they win over the rule.
    #[serde(default)]
    pub files: Vec<LabelFile>,
    /// Records left out: a field with one of these values (`{ field = "type", values = [...] }`).
    #[serde(default)]
    pub leave_out: Vec<Condition>,
}

/// The rule itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// A field's value, mapped to a class; an unmapped value leaves the record out.
    Field {
        field: String,
        map: BTreeMap<String, String>,
    },
    /// `Product::Component`, with bugbug's conflation unless `conflate = false`. Components
    /// whose name ends with one of `leave_out_components` (`::General`), except those named
    /// in `keep_components` (`GeckoView::General`), and products not in `products` are left
    /// out.
    Component {
        #[serde(default)]
        products: Vec<String>,
        #[serde(default)]
        leave_out_components: Vec<String>,
        #[serde(default)]
        keep_components: Vec<String>,
        #[serde(default = "yes")]
        conflate: bool,
    },
    /// `positive` when a keyword is set (or was ever added); else `negative`, but only for
    /// records that meet one of `negative_only` (bugbug: regressions are learned among
    /// defects); with no conditions, every other record is `negative`.
    Keyword {
        keywords: Vec<String>,
        positive: String,
        negative: String,
        #[serde(default)]
        negative_only: Vec<Condition>,
    },
    /// A move in the bug's history: out of `place` → `out_of`, into it → `into`.
    Moved {
        place: String,
        out_of: String,
        into: String,
    },
    /// Resolved bugs: `positive` when the resolution is `value`, else `negative`.
    Resolution {
        value: String,
        positive: String,
        negative: String,
    },
    /// bugbug's steps-to-reproduce rule: `cf_has_str` yes/no; else the `stepswanted` keyword
    /// (no steps), or its removal in the history (steps given).
    StepsToReproduce { positive: String, negative: String },
    /// bugbug's `performancebug` rule, among bugs whose `cf_performance_impact` is set and
    /// not `?` or `none`: `positive` when the impact is low/medium/high, a keyword starts
    /// with `perf`, `topperf` or `main-thread-io`, or the whiteboard holds a performance tag
    /// (`[fxperf`, `[snappy`…); else `negative`.
    Performance { positive: String, negative: String },
    /// bugbug's `accessibility` rule, among bugs that have `cf_accessibility_severity`:
    /// `positive` when it is not `---`, the `access` keyword is set, or the bug is in
    /// Firefox::Disability Access; else `negative`.
    Accessibility { positive: String, negative: String },
    /// bugbug's spam rule: in *Invalid Bugs* → spam; moved out of it, or FIXED → ham; a
    /// reporter with a `@mozilla` address is left out.
    Spam,
    /// Commits: backed out (`backed_out_by`) or clean.
    BackedOut,
    /// A column of the data (GitHub issues: `label`).
    Column { column: String },
}

/// A condition on a bug: its `field` has one of `values`; `field = "label_file"` asks
/// whether one of the model's label files gives the bug one of `values` (raw, before `map`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub field: String,
    pub values: Vec<String>,
}

/// A label file: `bug_id` → `column`, each value mapped to a class (unmapped: no label).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelFile {
    /// A file name, or a prefix ending in `*` (`defect_enhancement_task*`).
    pub name: String,
    pub column: String,
    pub map: BTreeMap<String, String>,
}

/// What a model may see.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Feature groups kept (empty: all).
    #[serde(default)]
    pub groups: Vec<Group>,
    /// Keywords hidden (they are the label, or give it away).
    #[serde(default)]
    pub hide_keywords: Vec<String>,
    /// Structured fields hidden (`product`, `component`, `type`).
    #[serde(default)]
    pub hide_fields: Vec<String>,
}

/// How records are split into train and test.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    pub strategy: Strategy,
    /// `created` (creation time) or `id` (bug id: ids grow with time).
    pub by: String,
    pub test_fraction: f64,
}

impl Default for SplitSpec {
    fn default() -> Self {
        SplitSpec {
            strategy: Strategy::StratifiedTime,
            by: "created".into(),
            test_fraction: 0.2,
        }
    }
}

/// The calibrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Calibration {
    /// Temperature scaling, then the top-label map ([`TopLabelMap`]), both fitted on the
    /// training part's held-out slice; each only where it earns its place there
    /// ([`fit_calibrator`]): else the temperature alone, or the model's own probabilities.
    ///
    /// [`TopLabelMap`]: super::calibrator::TopLabelMap
    /// [`fit_calibrator`]: crate::train::calibration::fit_calibrator
    #[default]
    Isotonic,
    /// Temperature scaling alone, fitted on the training part's held-out slice.
    Temperature,
    /// None (the learner's own probabilities).
    None,
}

/// The gate's rules beyond bugbug's macro F1 check.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// A class with fewer test records than this makes its metric noise: refused.
    pub min_test_support: usize,
    /// Refused when ECE (after calibration) is worse than the serving bundle's by more.
    pub max_ece_increase: f64,
}

impl Default for GateSpec {
    fn default() -> Self {
        GateSpec {
            min_test_support: 10,
            max_ece_increase: 0.02,
        }
    }
}

/// How a model is judged on live traffic (`bugflow models compare`, the live report):
/// against the labels people set after its predictions, and against its training data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveSpec {
    /// `promote` refuses a shadow whose live macro F1 is below the serving bundle's, on the
    /// same labelled bugs, by more than this.
    pub max_f1_drop: f64,
    /// Below this many labelled bugs the comparison says it cannot judge, and
    /// `models release` waits.
    pub min_labels: usize,
    /// Drift: a week whose predicted class shares differ from the test set's by more than
    /// this (total variation distance, ½ Σ |live − test|) is marked.
    pub max_class_shift: f64,
    /// Drift: a week whose mean top-class probability differs from the test set's by more
    /// than this is marked.
    pub max_confidence_shift: f64,
    /// A week with fewer predictions than this is not judged for drift.
    pub min_predictions: usize,
}

impl Default for LiveSpec {
    fn default() -> Self {
        LiveSpec {
            max_f1_drop: 0.02,
            min_labels: 30,
            max_class_shift: 0.15,
            max_confidence_shift: 0.10,
            min_predictions: 50,
        }
    }
}

/// What the writer may change, and the precision it must reach on test to do so.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterRule {
    /// The Bugzilla field it writes (documentation; the rule's code is in `effects::rules`).
    pub field: String,
    /// Only predictions of this class write (binary models); none: any class.
    #[serde(default)]
    pub class: Option<String>,
    /// Test precision required at the threshold.
    pub precision: f64,
    /// The lowest threshold ever used (bugbot's).
    pub floor: f64,
}

impl Spec {
    /// Reads and checks one catalogue file.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Spec> {
        let mut spec: Spec = toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        spec.exclude = Exclude {
            keywords: spec.features.hide_keywords.clone(),
            fields: spec.features.hide_fields.clone(),
            groups: spec.features.groups.clone(),
        };
        let fits = match spec.label.rule {
            Rule::BackedOut => spec.reads == Input::Commit,
            Rule::Column { .. } => spec.reads == Input::Issue,
            _ => spec.reads == Input::Bug,
        };
        anyhow::ensure!(
            fits,
            "{origin}: label rule {:?} does not label {:?} records",
            spec.label.rule,
            spec.reads
        );
        let ok_name = !spec.name.is_empty()
            && spec
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        anyhow::ensure!(
            ok_name,
            "{origin}: name {:?} must be lower-case letters, digits and '-'",
            spec.name
        );
        let f = spec.split.test_fraction;
        anyhow::ensure!(
            f > 0.0 && f < 0.9,
            "{origin}: split.test_fraction {f} must be in (0, 0.9)"
        );
        anyhow::ensure!(
            ["created", "id"].contains(&spec.split.by.as_str()),
            "{origin}: split.by must be \"created\" or \"id\""
        );
        if let Some(w) = &spec.writer {
            anyhow::ensure!(
                (0.0..=1.0).contains(&w.precision) && (0.0..=1.0).contains(&w.floor),
                "{origin}: writer precision and floor must be in [0, 1]"
            );
        }
        Ok(spec)
    }
}

/// The files built into the binary (generated by build.rs from `models/catalogue/`).
const BUILT_IN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/catalogue.rs"));

static CATALOGUE: LazyLock<RwLock<Vec<&'static Spec>>> = LazyLock::new(|| {
    let mut specs = Vec::new();
    for (file, text) in BUILT_IN {
        // The build checks these files (tests/models.rs parses each), so a failure here is
        // a bug of this build; it is logged and the model left out rather than a panic.
        match Spec::parse(text, file) {
            Ok(spec) => specs.push(&*Box::leak(Box::new(spec))),
            Err(e) => tracing::error!(error = %e, "a built-in catalogue file does not parse"),
        }
    }
    specs.sort_by(|a: &&Spec, b| a.name.cmp(&b.name));
    RwLock::new(specs)
});

/// Every model of the catalogue, by name.
pub fn all() -> Vec<&'static Spec> {
    CATALOGUE.read().map(|c| c.clone()).unwrap_or_default()
}

/// The model called `name` (or with `name` among its aliases).
pub fn find(name: &str) -> Option<&'static Spec> {
    let specs = CATALOGUE.read().ok()?;
    specs
        .iter()
        .find(|s| s.name == name)
        .or_else(|| specs.iter().find(|s| s.aliases.iter().any(|a| a == name)))
        .copied()
}

/// Adds the `*.toml` files of `dir` to the catalogue (a file of a model already there
/// replaces it). Returns the names read. A missing folder adds nothing.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<String>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut read = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let spec = Spec::parse(&text, &path.display().to_string())?;
        read.push(spec.name.clone());
        add(spec);
    }
    Ok(read)
}

fn add(spec: Spec) {
    let Ok(mut specs) = CATALOGUE.write() else {
        return;
    };
    if let Some(same) = specs.iter().position(|s| s.name == spec.name) {
        if *specs[same] == spec {
            return;
        }
        specs.remove(same);
    }
    specs.push(Box::leak(Box::new(spec)));
    specs.sort_by(|a, b| a.name.cmp(&b.name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_file_parses_and_a_rule_must_fit_what_the_model_reads() {
        for (file, text) in BUILT_IN {
            Spec::parse(text, file).unwrap();
        }
        let wrong = "name = \"x\"\nabout = \"x\"\nreads = \"issue\"\n[label]\nrule = \"spam\"\n";
        let err = Spec::parse(wrong, "x.toml").unwrap_err().to_string();
        assert!(err.contains("does not label"), "{err}");
    }
}
