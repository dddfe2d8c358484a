//! A multinomial logistic regression over sparse features.
//!
//! Text is sparse: a bug's title, description and comments touch a few hundred of the tens
//! of thousands of words and n-grams a model knows. linfa's learners take dense matrices
//! (1,200 documents × 100,000 columns of `f64` would be a gigabyte), so the text models are
//! fitted by [`Learner::Sparse`]: the same objective linfa-logistic minimises (softmax
//! cross-entropy with an L2 penalty) with L-BFGS ([`lbfgs`](super::lbfgs), in place), over
//! a compressed sparse row matrix, with balanced class
//! weights instead of repeated rows, and the penalty `C` chosen on a held-out slice of the
//! training part. [`Learner::Linfa`] keeps linfa-logistic's dense fit for models with a small
//! vocabulary (commit-risk).
//!
//! Inference never builds a dense row: it looks each feature's hash up in the vocabulary and
//! adds its weights, then divides by the calibrated temperature; a model with a
//! [`TopLabelMap`] maps its top class's probability last.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::calibrator::TopLabelMap;
use super::columns::{self, AHEAD, Column, ColumnIndex, prefetch};
use super::lbfgs;
use crate::features::{Features, GROUPS, Group, Groups, feature_hash};

/// How to train (a catalogue file's `[learner]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainParams {
    pub learner: Learner,
    /// Text features must occur in at least this many training documents.
    pub min_df: u32,
    /// Keep at most this many features (the most frequent); 0 keeps every one.
    pub max_features: usize,
    /// Inverse L2 penalty, as scikit-learn's `C`. Several values: the one with the best
    /// macro F1 on a held-out slice of the training part is used (see [`select_c`]).
    pub c: Vec<f64>,
    pub max_iterations: u64,
    /// At most this many L-BFGS steps for the refit on the whole training part (0: as
    /// `max_iterations`). The refit starts from the weights fitted on the training part
    /// less its held-out slice, with the same C, so it starts near where it ends.
    pub refit_iterations: u64,
    /// Multiplies each text group after normalisation (a title weighs more than a body).
    pub group_weights: BTreeMap<Group, f64>,
    pub balance: Balance,
    /// Seed of every random choice (folds, undersampling).
    pub seed: u64,
}

/// Which fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Learner {
    /// Sparse rows, L-BFGS in place (see the module documentation).
    Sparse,
    /// linfa-logistic's `MultiLogisticRegression` on a dense matrix of the kept columns.
    Linfa,
}

/// How class imbalance is handled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Balance {
    /// Train as the data comes.
    None,
    /// Each record weighs `n / (k × n_class)`: scikit-learn's `class_weight="balanced"`.
    Weights,
    /// Repeat the rows of smaller classes up to the largest class.
    Oversample,
    /// Keep at most `ratio` rows of the largest class per row of the others (bugbug's
    /// `RandomUnderSampler`).
    Undersample { ratio: f64 },
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            learner: Learner::Sparse,
            min_df: 2,
            max_features: 0,
            c: vec![1.0, 4.0, 16.0],
            max_iterations: 200,
            refit_iterations: 0,
            group_weights: BTreeMap::new(),
            balance: Balance::Weights,
            seed: 42,
        }
    }
}

/// A fitted model. Serialised into a bundle's `weights.json` as a [`Stored`] model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Stored", into = "Stored")]
pub struct LinearModel {
    /// Shared: every score of this model names them (`BugScore::labels`) without a copy.
    pub classes: std::sync::Arc<[String]>,
    pub group_weights: BTreeMap<Group, f64>,
    /// The vocabulary: feature hash → column, idf and group. Held only here (a served
    /// model's hashes, groups and idf in arrays as well would be 6 MiB more).
    columns: ColumnIndex,
    /// `columns × classes`, row-major.
    pub weights: Vec<f32>,
    pub intercept: Vec<f32>,
    /// The calibrated temperature: probabilities are `softmax(scores / temperature)`.
    pub temperature: f32,
    /// Applied after the temperature, when the training fitted one.
    pub top_label: Option<TopLabelMap>,
}

/// A model as `weights.json` holds it: the vocabulary as arrays in column order.
#[derive(Serialize, Deserialize)]
struct Stored {
    classes: Vec<String>,
    group_weights: BTreeMap<Group, f64>,
    /// Feature hashes, in column order.
    vocab: Vec<u64>,
    /// Group of each column.
    groups: Vec<Group>,
    /// Inverse document frequency of each column (1 for structured features).
    idf: Vec<f32>,
    /// `vocab.len() × classes.len()`, row-major.
    weights: Vec<f32>,
    intercept: Vec<f32>,
    #[serde(default = "one")]
    temperature: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    top_label: Option<TopLabelMap>,
}

impl Stored {
    /// Are the parts the sizes each other says? A bundle whose weights do not match its
    /// vocabulary would index out of bounds on the first prediction; it is refused when it
    /// is read instead.
    fn check(&self) -> Result<(), String> {
        let (n, k) = (self.vocab.len(), self.classes.len());
        if k == 0 {
            return Err("no classes".into());
        }
        if n > super::columns::MAX_COLUMNS {
            return Err(format!(
                "{n} features; a model holds at most {}",
                super::columns::MAX_COLUMNS
            ));
        }
        for (what, len, want) in [
            ("groups", self.groups.len(), n),
            ("idf", self.idf.len(), n),
            ("weights", self.weights.len(), n.saturating_mul(k)),
            ("intercept", self.intercept.len(), k),
        ] {
            if len != want {
                return Err(format!(
                    "{what} has {len} values; {n} features × {k} classes need {want}"
                ));
            }
        }
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !finite(&self.weights) || !finite(&self.intercept) || !finite(&self.idf) {
            return Err("weights, intercepts or idf hold NaN or infinity".into());
        }
        if let Some(map) = &self.top_label {
            map.check()?;
        }
        Ok(())
    }
}

impl TryFrom<Stored> for LinearModel {
    type Error = String;

    fn try_from(stored: Stored) -> Result<LinearModel, String> {
        stored
            .check()
            .map_err(|e| format!("a malformed model: {e}"))?;
        let columns = ColumnIndex::new(&stored.vocab, &stored.idf, &stored.groups);
        if columns.len() != stored.vocab.len() {
            return Err(format!(
                "a malformed model: its {} features repeat a hash ({} distinct)",
                stored.vocab.len(),
                columns.len()
            ));
        }
        let mut weights = stored.weights;
        // The slack a deserialiser's growing vector leaves.
        weights.shrink_to_fit();
        Ok(LinearModel {
            columns,
            classes: stored.classes.into(),
            group_weights: stored.group_weights,
            weights,
            intercept: stored.intercept,
            temperature: stored.temperature,
            top_label: stored.top_label,
        })
    }
}

impl From<LinearModel> for Stored {
    fn from(model: LinearModel) -> Stored {
        let columns = model.columns.columns();
        Stored {
            vocab: columns.iter().map(|(h, _)| *h).collect(),
            groups: columns.iter().map(|(_, c)| c.group).collect(),
            idf: columns.iter().map(|(_, c)| c.idf).collect(),
            classes: model.classes.to_vec(),
            group_weights: model.group_weights,
            weights: model.weights,
            intercept: model.intercept,
            temperature: model.temperature,
            top_label: model.top_label,
        }
    }
}

fn one() -> f32 {
    1.0
}

/// That the processor has AVX: made only by [`Avx::rows_of`], which asks it.
#[derive(Clone, Copy)]
struct Avx(());

impl Avx {
    /// AVX for rows of `k` weights, when they are long enough to gain from it and the
    /// processor has it: asked once per document, not once per term.
    fn rows_of(k: usize) -> Option<Avx> {
        #[cfg(target_arch = "x86_64")]
        if k >= 8 && std::arch::is_x86_feature_detected!("avx") {
            return Some(Avx(()));
        }
        let _ = k;
        None
    }
}

/// `sums += value · row`, element by element (in f64, in the order scalar code would:
/// the same sums to the last bit). A row of many classes (component's 32) is the inner loop
/// of scoring; with `avx`, four sums at a time.
#[inline]
fn add_row(sums: &mut [f64], row: &[f32], value: f64, avx: Option<Avx>) {
    #[cfg(target_arch = "x86_64")]
    if avx.is_some() {
        // SAFETY: an `Avx` exists only where the processor has AVX (`Avx::rows_of`).
        unsafe { add_row_avx(sums, row, value) };
        return;
    }
    let _ = avx;
    add_row_scalar(sums, row, value);
}

#[inline(always)]
fn add_row_scalar(sums: &mut [f64], row: &[f32], value: f64) {
    for (sum, w) in sums.iter_mut().zip(row) {
        *sum += value * f64::from(*w);
    }
}

/// [`add_row_scalar`] compiled for AVX: the same multiply and add per element (no fused
/// multiply-add, which would round once instead of twice and change the sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn add_row_avx(sums: &mut [f64], row: &[f32], value: f64) {
    add_row_scalar(sums, row, value);
}

/// A term's value in its column before its group is normalised: a text term's is its
/// sublinear tf times its idf (and its square joins the group's norm), a structured
/// feature's is its own.
fn weighted(column: Column, count: f64, norms: &mut [f64; GROUPS]) -> f64 {
    if !column.group.is_text() {
        return count;
    }
    let value = text_value(count, column.idf);
    norms[usize::from(column.group.index())] += value * value;
    value
}

/// A text term's value: its sublinear tf times its idf.
#[inline]
fn text_value(count: f64, idf: f32) -> f64 {
    sublinear_tf(count) * f64::from(idf)
}

/// How many of the smallest counts [`sublinear_tf`] reads from a table.
const TF_TABLE: usize = 64;

/// `1 + ln n` for `n` below [`TF_TABLE`], computed once, with the same `ln`.
static TF_OF_COUNT: LazyLock<[f64; TF_TABLE]> =
    LazyLock::new(|| std::array::from_fn(|n| 1.0 + (n as f64).ln()));

/// A text term's sublinear term frequency, `1 + ln count` (scikit-learn's `sublinear_tf`).
/// Most terms occur once (ln 1 = 0), and most others a few times: a whole count below
/// [`TF_TABLE`] reads its value from a table, so that a bug's comments cost no logarithm
/// per repeated word per model. The same value, to the bit, as the formula.
#[inline]
fn sublinear_tf(count: f64) -> f64 {
    if count == 1.0 {
        return 1.0;
    }
    // `as` saturates (a negative count or NaN becomes 0, which is then not equal to it).
    let n = count as usize;
    if n < TF_TABLE && n as f64 == count {
        TF_OF_COUNT[n]
    } else {
        1.0 + count.ln()
    }
}

/// A document's features hashed once: `(hash, group, summed value)`, each hash once, in the
/// order first met. Training reads every document many times (folds, values of C), so it
/// hashes each once; serving hashes a bug once for every model.
///
/// It also knows where each run of one group's terms ends (a bug's terms come a group at a
/// time: its data, its title's words, their characters, the description's words, the
/// comments'), found once here for every model that reads them: a model that does not
/// read a group passes over its run without looking at its terms.
///
/// Both are private, so that the runs cannot go stale: a `Terms` is made by [`Terms::of`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Terms(Vec<(u64, Group, f64)>, Vec<(Group, usize)>);

impl Terms {
    /// Merges repeated hashes (a word met three times is one term of value 3) through a
    /// small open-addressed table of indexes into the result: one probe a token, where a
    /// sort would compare each a dozen times.
    pub fn of(features: &Features) -> Terms {
        const NONE: u32 = u32::MAX;
        let n = features.items.len() + features.tokens.len();
        let size = (2 * n).next_power_of_two().max(16);
        let shift = 64 - size.trailing_zeros();
        let mut table = vec![NONE; size];
        let mut merged: Vec<(u64, Group, f64)> = Vec::with_capacity(n);
        // Where each run of one group ends, kept as terms are first met.
        let mut ends: Vec<(Group, usize)> = Vec::new();
        let all = features
            .items
            .iter()
            .map(|f| (feature_hash(f.group, &f.name), f.group, f.value))
            .chain(features.tokens.iter().map(|(h, g)| (*h, *g, 1.0)));
        for (h, g, v) in all {
            let mut at = columns::home(h, shift);
            loop {
                match table[at] {
                    NONE => {
                        table[at] = merged.len() as u32;
                        merged.push((h, g, v));
                        match ends.last_mut() {
                            Some((last, end)) if *last == g => *end = merged.len(),
                            _ => ends.push((g, merged.len())),
                        }
                        break;
                    }
                    i if merged[i as usize].0 == h => {
                        merged[i as usize].2 += v;
                        break;
                    }
                    _ => at = (at + 1) & (size - 1),
                }
            }
        }
        Terms(merged, ends)
    }

    /// How many distinct terms the document has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The terms a run of one group at a time, in order (a group may have several runs).
    pub fn runs(&self) -> impl Iterator<Item = (Group, &[(u64, Group, f64)])> {
        let mut start = 0;
        self.1.iter().map(move |&(group, end)| {
            let run = &self.0[start..end];
            start = end;
            (group, run)
        })
    }
}

/// A prediction: the probability of each class (they sum to one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub probabilities: Vec<f64>,
    /// Index of the most probable class.
    pub index: usize,
    pub class: String,
}

/// Training failed (not enough data, a class without examples, a solver error).
#[derive(Debug, thiserror::Error)]
#[error("training failed: {0}")]
pub struct TrainError(pub String);

impl LinearModel {
    pub fn n_features(&self) -> usize {
        self.columns.len()
    }

    /// Whether some column is of `group` (a title-only model reads no `Body`).
    pub fn reads(&self, group: Group) -> bool {
        self.columns.reads(group)
    }

    /// The groups it has columns of: the only terms of a bug it reads.
    pub fn groups(&self) -> Groups {
        self.columns.groups()
    }

    /// The weighted sparse row of a document: `(column, value)`, sorted by column.
    pub fn vectorize(&self, features: &Features) -> Vec<(u32, f64)> {
        self.vectorize_terms(&Terms::of(features))
    }

    /// [`vectorize`](Self::vectorize) of a hashed document: the terms this model knows, TF-IDF
    /// weighted, each text group L2-normalised and then weighted.
    ///
    /// A term the model has no column for is dropped here, which is also how a model's
    /// exclusions hold when it is given every feature of a bug: what a model may not see was
    /// left out when it was trained, so it has no column.
    pub fn vectorize_terms(&self, terms: &Terms) -> Vec<(u32, f64)> {
        let mut norms = [0.0f64; GROUPS];
        let mut row: Vec<(u32, f64)> = Vec::with_capacity(terms.0.len().min(self.n_features()));
        let mut groups: Vec<Group> = Vec::with_capacity(row.capacity());
        for (h, term_group, v) in &terms.0 {
            if !self.columns.reads(*term_group) {
                continue;
            }
            let Some(column) = self.columns.get(*h) else {
                continue;
            };
            let (col, g) = (column.col, column.group);
            let value = weighted(column, *v, &mut norms);
            row.push((col, value));
            groups.push(g);
        }
        let scale = self.group_scales(&norms);
        for ((_, v), g) in row.iter_mut().zip(&groups) {
            if g.is_text() {
                *v *= scale[usize::from(g.index())];
            }
        }
        row.sort_unstable_by_key(|(c, _)| *c);
        row
    }

    /// The class scores (logits) of one document, before calibration.
    pub fn scores(&self, features: &Features) -> Vec<f64> {
        self.scores_terms(&Terms::of(features))
    }

    /// [`scores`](Self::scores) of a hashed document: a sparse dot product with the
    /// `columns × classes` weight matrix.
    ///
    /// One pass over the terms, with no row built: a group's L2 norm is known only at the
    /// end, but the dot product is linear, so each text group's products are summed apart
    /// and scaled once: `score = b + Σ_g scale_g · Σ_{t ∈ g} value_t · w_t`.
    pub fn scores_terms(&self, terms: &Terms) -> Vec<f64> {
        let k = self.classes.len();
        let mut partial = vec![0.0f64; GROUPS * k];
        let mut norms = [0.0f64; GROUPS];
        // The weighted hits first; then their weight rows asked for ahead (as the index's
        // slots are), then summed, by then from cache.
        // Room for every term: a hit list grown as it fills is copied at each doubling.
        let mut hits: Vec<(usize, usize, f64)> = Vec::with_capacity(terms.0.len());
        // A group the model does not read is passed over a run at a time, not tested term
        // by term (bugtype and component read a bug's title alone: a tenth of its terms).
        for (group, run) in terms.runs() {
            if !self.columns.reads(group) {
                continue;
            }
            let g = usize::from(group.index());
            let hash = |(h, _, _): &(u64, Group, f64)| *h;
            if group.is_text() {
                // As `weighted`: a text term's value, its square added to the group's norm
                // (in the same order, so to the same sum).
                let mut norm = norms[g];
                let (sum, hits) = (&mut norm, &mut hits);
                // `move`: the closure holds `k` and `g` themselves, not their addresses.
                self.columns
                    .lookup_all(run, hash, move |(_, _, count), col, idf| {
                        let value = text_value(*count, idf);
                        *sum += value * value;
                        hits.push((col as usize * k, g, value));
                    });
                norms[g] = norm;
            } else {
                let hits = &mut hits;
                self.columns
                    .lookup_all(run, hash, move |(_, _, value), col, _| {
                        hits.push((col as usize * k, g, *value));
                    });
            }
        }
        match k {
            // Rows of two or three weights (defect, regression, bugtype, commit-risk): the
            // same sums, with the row's length a constant.
            2 => self.sum_rows_of::<2>(&hits, &mut partial),
            3 => self.sum_rows_of::<3>(&hits, &mut partial),
            // Rows of 32 (component), with AVX: a group's sums held in registers.
            #[cfg(target_arch = "x86_64")]
            32 if Avx::rows_of(32).is_some() => {
                // SAFETY: `Avx::rows_of` found AVX on this processor.
                unsafe { self.sum_rows_avx::<32>(&hits, &mut partial) }
            }
            _ => self.sum_rows(&hits, &mut partial),
        }
        let scale = self.group_scales(&norms);
        let mut scores: Vec<f64> = self.intercept.iter().map(|b| f64::from(*b)).collect();
        for (g, sums) in partial.chunks_exact(k).enumerate() {
            let factor = if g == usize::from(Group::Data.index()) {
                1.0
            } else {
                scale[g]
            };
            for (score, sum) in scores.iter_mut().zip(sums) {
                *score += factor * sum;
            }
        }
        scores
    }

    /// Asks for each cache line of the row of `k` weights at `base` (a line holds 16
    /// weights; the last one asked for covers a row that starts mid-line): for rows of two
    /// or three, its first and last weight.
    #[inline(always)]
    fn ask_row(&self, base: usize, k: usize) {
        let row = &self.weights[base..base + k];
        let mut at = 0;
        while at < k {
            prefetch(&row[at]);
            at += 16;
        }
        prefetch(&row[k - 1]);
    }

    /// `partial[g] += value · row` for each hit `(row start, group g, value)`, each row
    /// asked for [`AHEAD`] hits before it is read. A row of many classes (component: 32)
    /// spans several cache lines: each is asked for (a line holds 16 weights; the last one
    /// asked for covers a row that starts mid-line).
    fn sum_rows(&self, hits: &[(usize, usize, f64)], partial: &mut [f64]) {
        let k = self.classes.len();
        let ask = |base: usize| self.ask_row(base, k);
        let avx = Avx::rows_of(k);
        hits.iter().take(AHEAD).for_each(|(base, _, _)| ask(*base));
        for (i, &(base, gi, value)) in hits.iter().enumerate() {
            if let Some((next, _, _)) = hits.get(i + AHEAD) {
                ask(*next);
            }
            add_row(
                &mut partial[gi * k..(gi + 1) * k],
                &self.weights[base..base + k],
                value,
                avx,
            );
        }
    }

    /// [`sum_rows_of`](Self::sum_rows_of) compiled for AVX (component's rows of 32: a row
    /// is eight loads of four, its sums eight registers).
    ///
    /// # Safety
    ///
    /// The processor must have AVX ([`Avx::rows_of`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    unsafe fn sum_rows_avx<const K: usize>(
        &self,
        hits: &[(usize, usize, f64)],
        partial: &mut [f64],
    ) {
        self.sum_rows_of::<K>(hits, partial);
    }

    /// [`sum_rows`](Self::sum_rows) for rows of `K` weights, `K` a constant: the class loop
    /// unrolled. Hits come in runs of one group (the terms are merged run by run), and a
    /// run's `K` sums are read once, held in registers while its rows are added, and
    /// written once, where a hit at a time loaded and stored every sum (component's 32:
    /// scoring 79.8k → 70.2k instructions a BMO event, callgrind). The same products added
    /// in the same order: the same sums, to the bit.
    #[inline(always)]
    fn sum_rows_of<const K: usize>(&self, hits: &[(usize, usize, f64)], partial: &mut [f64]) {
        debug_assert_eq!(self.classes.len(), K);
        let ask = |base: usize| self.ask_row(base, K);
        hits.iter().take(AHEAD).for_each(|(base, _, _)| ask(*base));
        let mut i = 0;
        while let Some(&(_, gi, _)) = hits.get(i) {
            // Slices of length K: the conversions cannot fail, and cost nothing.
            let sums: &mut [f64; K] = (&mut partial[gi * K..gi * K + K])
                .try_into()
                .expect("a slice of K");
            let mut held = *sums;
            while let Some(&(base, g, value)) = hits.get(i)
                && g == gi
            {
                if let Some((next, _, _)) = hits.get(i + AHEAD) {
                    ask(*next);
                }
                let row: &[f32; K] = self.weights[base..base + K]
                    .try_into()
                    .expect("a slice of K");
                for c in 0..K {
                    held[c] += value * f64::from(row[c]);
                }
                i += 1;
            }
            *sums = held;
        }
    }

    /// Each text group's factor: its weight over its L2 norm (a group without terms keeps
    /// its weight; nothing is multiplied by it).
    fn group_scales(&self, norms: &[f64; GROUPS]) -> [f64; GROUPS] {
        let mut scale = [1.0f64; GROUPS];
        for (g, weight) in &self.group_weights {
            scale[usize::from(g.index())] = *weight;
        }
        for (i, norm) in norms.iter().enumerate() {
            if *norm > 0.0 {
                scale[i] /= norm.sqrt();
            }
        }
        scale
    }

    /// Class probabilities for one hashed document (calibrated).
    pub fn predict_terms(&self, terms: &Terms) -> Prediction {
        self.prediction(&self.probabilities(&self.scores_terms(terms)))
    }

    /// Class probabilities for one document (calibrated).
    pub fn predict(&self, features: &Features) -> Prediction {
        self.prediction(&self.probabilities(&self.scores(features)))
    }

    /// Calibrated probabilities of `scores` (logits): the temperature, then the top-label
    /// map if the model has one.
    pub fn probabilities(&self, scores: &[f64]) -> Vec<f64> {
        let mut p = softmax(scores, f64::from(self.temperature));
        if let Some(map) = &self.top_label {
            map.apply(&mut p);
        }
        p
    }

    /// The prediction of given probabilities.
    pub fn prediction(&self, probabilities: &[f64]) -> Prediction {
        let index = argmax(probabilities);
        Prediction {
            class: self.classes[index].clone(),
            probabilities: probabilities.to_vec(),
            index,
        }
    }

    /// Fits a model on `docs` labelled with indexes into `classes`, with one `c` (the
    /// first of `params.c`); [`cross_validate`] chooses among several.
    pub fn fit(
        docs: &[Features],
        labels: &[usize],
        classes: &[String],
        params: &TrainParams,
    ) -> Result<LinearModel, TrainError> {
        let c = params.c.first().copied().unwrap_or(1.0);
        let terms: Vec<Terms> = docs.iter().map(Terms::of).collect();
        Self::fit_c(&terms, labels, classes, params, c, 1)
    }

    /// Fits with the inverse penalty `c`, each loss and gradient computed on `threads`
    /// threads (the rows split between them).
    pub fn fit_c<D: Borrow<Terms>>(
        docs: &[D],
        labels: &[usize],
        classes: &[String],
        params: &TrainParams,
        c: f64,
        threads: usize,
    ) -> Result<LinearModel, TrainError> {
        Self::fit_from(docs, labels, classes, params, (c, threads), None)
    }

    /// Fits again on `docs` (what `self` was fitted on and more) with `self`'s C, starting
    /// from `self`'s weights (a column new to `docs` starts at 0), in at most
    /// `params.refit_iterations` steps. linfa's fit has no starting point: it fits anew.
    pub fn refit(
        &self,
        docs: &[Terms],
        labels: &[usize],
        params: &TrainParams,
        c: f64,
        threads: usize,
    ) -> Result<LinearModel, TrainError> {
        let mut params = params.clone();
        if params.refit_iterations > 0 {
            params.max_iterations = params.refit_iterations;
        }
        Self::fit_from(
            docs,
            labels,
            &self.classes,
            &params,
            (c, threads),
            Some(self),
        )
    }

    fn fit_from<D: Borrow<Terms>>(
        docs: &[D],
        labels: &[usize],
        classes: &[String],
        params: &TrainParams,
        (c, threads): (f64, usize),
        warm: Option<&LinearModel>,
    ) -> Result<LinearModel, TrainError> {
        if docs.len() != labels.len() || docs.is_empty() {
            return Err(TrainError("no training documents".into()));
        }
        let k = classes.len();
        let mut per_class = vec![0usize; k];
        for &l in labels {
            per_class[l] += 1;
        }
        if let Some(missing) = per_class.iter().position(|n| *n == 0) {
            return Err(TrainError(format!(
                "class {:?} has no training example",
                classes[missing]
            )));
        }
        if !(c.is_finite() && c > 0.0) {
            return Err(TrainError(format!("C must be positive, not {c}")));
        }
        let mut model = Self::vocabulary(docs, classes, params);
        let rows: Vec<Vec<(u32, f64)>> = docs
            .iter()
            .map(|d| model.vectorize_terms(d.borrow()))
            .collect();
        let order = balance(labels, k, params);
        match params.learner {
            Learner::Sparse => {
                let start = model.start_from(warm);
                model.fit_sparse(&rows, labels, &order, params, (c, threads), start)?
            }
            Learner::Linfa => model.fit_linfa(&rows, labels, &order, params, c)?,
        }
        Ok(model)
    }

    /// The point L-BFGS starts from: `warm`'s weight row for each column `warm` has too
    /// (same classes), its intercept; zeros elsewhere, and everywhere without `warm`.
    fn start_from(&self, warm: Option<&LinearModel>) -> Vec<f64> {
        let k = self.classes.len();
        let mut start = vec![0.0; self.n_features() * k + k];
        let Some(warm) = warm.filter(|w| w.classes == self.classes && w.intercept.len() == k)
        else {
            return start;
        };
        for (hash, column) in self.columns.columns() {
            if let Some(old) = warm.columns.get(hash) {
                let (to, from) = (column.col as usize * k, old.col as usize * k);
                for (s, w) in start[to..to + k]
                    .iter_mut()
                    .zip(&warm.weights[from..from + k])
                {
                    *s = f64::from(*w);
                }
            }
        }
        let bias = self.n_features() * k;
        for (s, b) in start[bias..].iter_mut().zip(&warm.intercept) {
            *s = f64::from(*b);
        }
        start
    }

    /// L-BFGS over the sparse rows (see the module documentation).
    fn fit_sparse(
        &mut self,
        rows: &[Vec<(u32, f64)>],
        labels: &[usize],
        order: &[usize],
        params: &TrainParams,
        (c, threads): (f64, usize),
        start: Vec<f64>,
    ) -> Result<(), TrainError> {
        let k = self.classes.len();
        let n_features = self.n_features();
        let weights = sample_weights(labels, order, k, params.balance);
        let problem = Softmax {
            rows: order.iter().map(|&i| rows[i].as_slice()).collect(),
            labels: order.iter().map(|&i| labels[i]).collect(),
            weights,
            k,
            n_features,
            inverse_c: 1.0 / c,
        };
        let options = lbfgs::Options {
            memory: 10,
            max_iterations: params.max_iterations,
            tolerance_grad: 1e-5,
            tolerance_cost: 1e-9,
        };
        let mut spare = vec![Vec::new(); threads.max(1) - 1];
        let mut panicked = false;
        let (best, loss) = lbfgs::minimize(
            |p, g| {
                problem.eval(p, g, &mut spare).unwrap_or_else(|| {
                    panicked = true;
                    f64::NAN
                })
            },
            start,
            options,
        );
        if panicked {
            // The optimiser stopped at the point before: a model, but not the fitted one.
            return Err(TrainError(format!(
                "a thread computing the gradient panicked at C = {c}"
            )));
        }
        if !loss.is_finite() {
            return Err(TrainError(format!("the loss diverged ({loss}) at C = {c}")));
        }
        self.weights = best
            .iter()
            .take(n_features * k)
            .map(|w| *w as f32)
            .collect();
        self.intercept = best
            .iter()
            .skip(n_features * k)
            .map(|b| *b as f32)
            .collect();
        Ok(())
    }

    /// linfa-logistic on a dense matrix of the kept columns (rows repeated or dropped by
    /// `balance`; class weights are not a linfa option, so `weights` oversamples here).
    fn fit_linfa(
        &mut self,
        rows: &[Vec<(u32, f64)>],
        labels: &[usize],
        order: &[usize],
        params: &TrainParams,
        c: f64,
    ) -> Result<(), TrainError> {
        let k = self.classes.len();
        let order = if params.balance == Balance::Weights {
            oversample(labels, k)
        } else {
            order.to_vec()
        };
        let cols = self.n_features().max(1);
        let mut x = Array2::<f64>::zeros((order.len(), cols));
        let mut y = Array1::<usize>::zeros(order.len());
        for (r, &i) in order.iter().enumerate() {
            for &(col, v) in &rows[i] {
                x[[r, col as usize]] = v;
            }
            y[r] = labels[i];
        }
        let fitted = MultiLogisticRegression::default()
            .alpha(1.0 / c)
            .max_iterations(params.max_iterations)
            .fit(&Dataset::new(x, y))
            .map_err(|e| TrainError(e.to_string()))?;
        // linfa orders its classes by value: map each back to ours.
        let theirs: Vec<usize> = fitted.classes().to_vec();
        let (w, b) = (fitted.params(), fitted.intercept());
        self.weights = vec![0.0; self.n_features() * k];
        self.intercept = vec![0.0; k];
        for (j, class) in theirs.iter().enumerate() {
            self.intercept[*class] = b[j] as f32;
            for col in 0..self.n_features() {
                self.weights[col * k + class] = w[[col, j]] as f32;
            }
        }
        Ok(())
    }

    /// An unfitted model over the vocabulary of `docs`: text features seen in at least
    /// `min_df` documents, the most frequent `max_features` of them, with their idf.
    fn vocabulary<D: Borrow<Terms>>(
        docs: &[D],
        classes: &[String],
        params: &TrainParams,
    ) -> LinearModel {
        let mut df: HashMap<u64, (u32, Group)> = HashMap::new();
        for doc in docs {
            // Terms are unique per document.
            for (h, g, _) in &doc.borrow().0 {
                df.entry(*h).or_insert((0, *g)).0 += 1;
            }
        }
        let mut kept: Vec<(u64, u32, Group)> = df
            .into_iter()
            .filter(|(_, (n, g))| !g.is_text() || *n >= params.min_df)
            .map(|(h, (n, g))| (h, n, g))
            .collect();
        // Most frequent first; ties by hash, so the choice is reproducible.
        kept.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        if params.max_features > 0 {
            kept.truncate(params.max_features);
        }
        kept.sort_unstable_by_key(|(h, _, _)| *h);
        let n_docs = docs.len() as f64;
        let vocab: Vec<u64> = kept.iter().map(|(h, _, _)| *h).collect();
        let groups: Vec<Group> = kept.iter().map(|(_, _, g)| *g).collect();
        let idf: Vec<f32> = kept
            .iter()
            .map(|(_, n, g)| {
                if g.is_text() {
                    (((1.0 + n_docs) / (1.0 + f64::from(*n))).ln() + 1.0) as f32
                } else {
                    1.0
                }
            })
            .collect();
        LinearModel {
            classes: classes.into(),
            group_weights: params.group_weights.clone(),
            columns: ColumnIndex::new(&vocab, &idf, &groups),
            weights: Vec::new(),
            intercept: Vec::new(),
            temperature: 1.0,
            top_label: None,
        }
    }
}

/// Row order after balancing.
fn balance(labels: &[usize], k: usize, params: &TrainParams) -> Vec<usize> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    match params.balance {
        Balance::None | Balance::Weights => (0..labels.len()).collect(),
        Balance::Oversample => oversample(labels, k),
        Balance::Undersample { ratio } => {
            let (largest, _) = by_class
                .iter()
                .enumerate()
                .max_by_key(|(_, r)| r.len())
                .unwrap_or((0, &by_class[0]));
            let others: usize = by_class
                .iter()
                .enumerate()
                .filter(|(c, _)| *c != largest)
                .map(|(_, r)| r.len())
                .sum();
            let keep = ((others as f64 * ratio).ceil() as usize).min(by_class[largest].len());
            let mut rng = SplitMix(params.seed);
            let mut pool = by_class[largest].clone();
            rng.shuffle(&mut pool);
            pool.truncate(keep);
            pool.sort_unstable();
            let mut order: Vec<usize> = by_class
                .iter()
                .enumerate()
                .filter(|(c, _)| *c != largest)
                .flat_map(|(_, r)| r.iter().copied())
                .collect();
            order.extend(pool);
            order.sort_unstable();
            order
        }
    }
}

/// Every row of the smaller classes repeated up to the size of the largest.
fn oversample(labels: &[usize], k: usize) -> Vec<usize> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    let target = by_class.iter().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::new();
    for rows in by_class.iter().filter(|r| !r.is_empty()) {
        for j in 0..target {
            order.push(rows[j % rows.len()]);
        }
    }
    order
}

/// The weight of each row of `order`: `n / (k × n_class)` under [`Balance::Weights`], else 1.
fn sample_weights(labels: &[usize], order: &[usize], k: usize, balance: Balance) -> Vec<f64> {
    if balance != Balance::Weights {
        return vec![1.0; order.len()];
    }
    let mut per_class = vec![0usize; k];
    for &i in order {
        per_class[labels[i]] += 1;
    }
    let n = order.len() as f64;
    order
        .iter()
        .map(|&i| n / (k as f64 * per_class[labels[i]].max(1) as f64))
        .collect()
}

/// `softmax(scores / temperature)`.
pub fn softmax(scores: &[f64], temperature: f64) -> Vec<f64> {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut p: Vec<f64> = scores.iter().map(|s| ((s - max) / t).exp()).collect();
    let sum: f64 = p.iter().sum();
    for x in &mut p {
        *x /= sum;
    }
    p
}

/// The index of the largest value (the first of equals).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// The objective: weighted softmax cross-entropy plus `‖W‖² / 2C` (the intercepts are not
/// penalised). Parameters are `W` row-major (`n_features × k`), then the `k` intercepts.
struct Softmax<'a> {
    rows: Vec<&'a [(u32, f64)]>,
    labels: Vec<usize>,
    weights: Vec<f64>,
    k: usize,
    n_features: usize,
    inverse_c: f64,
}

impl Softmax<'_> {
    /// The loss at `params`, and its gradient into `g`. With `spare` gradients, the rows
    /// are split between `1 + spare.len()` threads, each summing into its own; `None` if
    /// one of them panicked.
    fn eval(&self, params: &[f64], g: &mut [f64], spare: &mut [Vec<f64>]) -> Option<f64> {
        let nw = self.n_features * self.k;
        let w = &params[..nw.min(params.len())];
        let chunk = self.rows.len().div_ceil(spare.len() + 1).max(1);
        let mut loss = if spare.is_empty() {
            self.eval_rows(0..self.rows.len(), params, g)
        } else {
            std::thread::scope(|scope| {
                let others: Vec<_> = spare
                    .iter_mut()
                    .enumerate()
                    .map(|(t, buffer)| {
                        let from = ((t + 1) * chunk).min(self.rows.len());
                        let to = (from + chunk).min(self.rows.len());
                        scope.spawn(move || {
                            buffer.resize(params.len(), 0.0);
                            self.eval_rows(from..to, params, buffer)
                        })
                    })
                    .collect();
                let mine = self.eval_rows(0..chunk.min(self.rows.len()), params, g);
                others
                    .into_iter()
                    .map(|t| t.join().ok())
                    .sum::<Option<f64>>()
                    .map(|theirs| theirs + mine)
            })?
        };
        for buffer in spare.iter() {
            for (gi, bi) in g.iter_mut().zip(buffer) {
                *gi += bi;
            }
        }
        let mut penalty = 0.0;
        for v in w {
            penalty += v * v;
        }
        for (gi, wi) in g.iter_mut().zip(w) {
            *gi += self.inverse_c * wi;
        }
        loss += 0.5 * self.inverse_c * penalty;
        Some(loss)
    }

    /// The data loss of the rows `range`, and its gradient into `g` (overwritten).
    ///
    /// Two and three classes (every bug model but component, and issue-type) get a copy of
    /// the loop in which `k` is a constant, so that the loops over the classes unroll. The
    /// sums are the same, in the same order: the same weights to the last bit. (Iterating
    /// the classes with `zip` instead made component's 32-class fit slower.)
    fn eval_rows(&self, range: std::ops::Range<usize>, params: &[f64], g: &mut [f64]) -> f64 {
        match self.k {
            2 => self.eval_rows_of(2, range, params, g),
            3 => self.eval_rows_of(3, range, params, g),
            k => self.eval_rows_of(k, range, params, g),
        }
    }

    #[inline(always)]
    fn eval_rows_of(
        &self,
        k: usize,
        range: std::ops::Range<usize>,
        params: &[f64],
        g: &mut [f64],
    ) -> f64 {
        let nw = self.n_features * k;
        g.fill(0.0);
        let (w, b) = params.split_at(nw.min(params.len()));
        let mut loss = 0.0;
        let mut z = vec![0.0; k];
        let rows = self.rows[range.clone()].iter();
        let labels = &self.labels[range.clone()];
        let weights = &self.weights[range];
        for ((row, &y), &sw) in rows.zip(labels).zip(weights) {
            z.copy_from_slice(&b[..k]);
            for &(col, x) in row.iter() {
                let base = col as usize * k;
                for j in 0..k {
                    z[j] += x * w[base + j];
                }
            }
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
            loss += sw * (max + sum.ln() - z[y]);
            for j in 0..k {
                let d = sw * ((z[j] - max).exp() / sum - f64::from(u8::from(j == y)));
                z[j] = d;
                g[nw + j] += d;
            }
            for &(col, x) in row.iter() {
                let base = col as usize * k;
                for j in 0..k {
                    g[base + j] += x * z[j];
                }
            }
        }
        loss
    }
}

/// What [`select_c`] found: the chosen `c`, the model fitted with it, its macro F1 on the
/// held-out part, and the held-out scores (logits), which fit the calibrator.
#[derive(Debug, Clone)]
pub struct Selection {
    pub c: f64,
    pub model: LinearModel,
    pub macro_f1: f64,
    /// Per `c` tried: its held-out macro F1.
    pub tried: Vec<(f64, f64)>,
    pub held_scores: Vec<Vec<f64>>,
}

/// Chooses `c` among `params.c`: each is fitted on `fit` and scored on `held` (the training
/// part's newest slice for a model split by time, so that C and the calibrator are chosen
/// on data as new to the model as its test data will be). The fits run on every core.
pub fn select_c<D: Borrow<Terms> + Sync>(
    fit: (&[D], &[usize]),
    held: (&[D], &[usize]),
    classes: &[String],
    params: &TrainParams,
) -> Result<Selection, TrainError> {
    let k = classes.len();
    let grid = if params.c.is_empty() {
        vec![1.0]
    } else {
        params.c.clone()
    };
    // The values of C are fitted side by side; cores left over split each fit's rows.
    let threads_each = (cores() / grid.len()).max(1);
    let score = |c: &f64| -> Result<(LinearModel, Vec<Vec<f64>>), TrainError> {
        let model = LinearModel::fit_c(fit.0, fit.1, classes, params, *c, threads_each)?;
        let scores = held
            .0
            .iter()
            .map(|d| model.scores_terms(d.borrow()))
            .collect();
        Ok((model, scores))
    };
    let results = parallel_map(&grid, score)
        .ok_or_else(|| TrainError("a training thread panicked".into()))?;
    let mut best: Option<Selection> = None;
    let mut tried = Vec::new();
    for (&c, result) in grid.iter().zip(results) {
        let (model, scores) = result?;
        let predicted: Vec<usize> = scores.iter().map(|s| argmax(s)).collect();
        let f1 = macro_f1(held.1, &predicted, k);
        tried.push((c, f1));
        if best.as_ref().is_none_or(|b| f1 > b.macro_f1 + 1e-9) {
            best = Some(Selection {
                c,
                model,
                macro_f1: f1,
                tried: Vec::new(),
                held_scores: scores,
            });
        }
    }
    let mut best = best.ok_or_else(|| TrainError("no value of C to try".into()))?;
    best.tried = tried;
    Ok(best)
}

/// The machine's cores (1 when it cannot tell), asked once: on Linux the answer reads the
/// cgroup's files, and a replay asks for every batch.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` over `items`, on as many threads as the machine has cores (results in order);
/// `None` if a thread panicked.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Option<Vec<R>> {
    let threads = cores().min(items.len()).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    if out.len() != items.len() {
        return None;
    }
    out.sort_by_key(|(i, _)| *i);
    Some(out.into_iter().map(|(_, r)| r).collect())
}

/// Macro F1 over `k` classes (a class neither true nor predicted counts 0, as scikit-learn).
pub fn macro_f1(truth: &[usize], predicted: &[usize], k: usize) -> f64 {
    let (mut tp, mut fp, mut fn_) = (vec![0.0; k], vec![0.0; k], vec![0.0; k]);
    for (&t, &p) in truth.iter().zip(predicted) {
        if t == p {
            tp[t] += 1.0;
        } else {
            fp[p] += 1.0;
            fn_[t] += 1.0;
        }
    }
    let f1: f64 = (0..k)
        .map(|j| {
            let d = 2.0 * tp[j] + fp[j] + fn_[j];
            if d > 0.0 { 2.0 * tp[j] / d } else { 0.0 }
        })
        .sum();
    f1 / k.max(1) as f64
}

/// A small, seedable generator (SplitMix64) for reproducible sampling and splits.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A whole number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_adds_to_the_same_sums_to_the_last_bit_on_every_path() {
        let mut rng = SplitMix(7);
        for k in 1..=40 {
            let row: Vec<f32> = (0..k).map(|_| (rng.unit() * 8.0 - 4.0) as f32).collect();
            let start: Vec<f64> = (0..k).map(|_| rng.unit() - 0.5).collect();
            let value = rng.unit() * 3.0;
            let (mut dispatched, mut scalar) = (start.clone(), start.clone());
            add_row(&mut dispatched, &row, value, Avx::rows_of(k));
            add_row_scalar(&mut scalar, &row, value);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&dispatched), bits(&scalar), "{k} classes");
            let by_hand: Vec<f64> = start
                .iter()
                .zip(&row)
                .map(|(s, w)| s + value * f64::from(*w))
                .collect();
            assert_eq!(bits(&scalar), bits(&by_hand), "{k} classes");
        }
    }

    /// The table of small counts gives what the formula gives, to the bit; other counts
    /// (large, fractional, zero, negative, not a number) go to the formula.
    #[test]
    fn the_sublinear_tf_of_a_count_is_one_plus_its_logarithm() {
        let mut counts: Vec<f64> = (0..200).map(f64::from).collect();
        counts.extend([0.5, 1.5, 2.25, 63.5, 64.0, 1e9, -1.0, -3.0, f64::NAN]);
        for count in counts {
            let want = 1.0 + count.ln();
            let got = sublinear_tf(count);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{count}: {got} against {want}"
            );
        }
    }

    /// Scoring sums a model's rows of two or three weights with the row length a constant
    /// (`sum_rows_of`), rows of 32 with AVX a group's run at a time (`sum_rows_avx`), and
    /// any other with the general loop (`sum_rows`): all give the same sums to the last
    /// bit, hit by hit in the same order, whether the hits' groups come in runs or not.
    #[test]
    fn rows_of_a_constant_length_add_to_the_same_sums_as_rows_of_any() {
        let mut rng = SplitMix(23);
        for (k, in_runs) in [
            (2usize, false),
            (2, true),
            (3, false),
            (3, true),
            (32, false),
            (32, true),
        ] {
            let n = 300;
            let model: LinearModel = serde_json::from_value(serde_json::json!({
                "classes": (0..k).map(|c| format!("c{c}")).collect::<Vec<_>>(),
                "group_weights": {},
                "vocab": (1..=n as u64).collect::<Vec<_>>(),
                "groups": vec!["title"; n],
                "idf": vec![1.0; n],
                "weights": (0..n * k).map(|_| rng.unit() * 8.0 - 4.0).collect::<Vec<_>>(),
                "intercept": vec![0.0; k],
            }))
            .unwrap();
            let mut hits: Vec<(usize, usize, f64)> = (0..1_000)
                .map(|_| (rng.below(n) * k, rng.below(GROUPS), rng.unit() * 3.0))
                .collect();
            if in_runs {
                hits.sort_by_key(|(_, g, _)| *g);
            }
            let start: Vec<f64> = (0..GROUPS * k).map(|_| rng.unit() - 0.5).collect();
            let (mut constant, mut any) = (start.clone(), start.clone());
            match k {
                2 => model.sum_rows_of::<2>(&hits, &mut constant),
                3 => model.sum_rows_of::<3>(&hits, &mut constant),
                #[cfg(target_arch = "x86_64")]
                32 if Avx::rows_of(k).is_some() => {
                    // SAFETY: `Avx::rows_of` found AVX on this processor.
                    unsafe { model.sum_rows_avx::<32>(&hits, &mut constant) }
                }
                // Without AVX, the same loop compiled for any x86-64.
                _ => model.sum_rows_of::<32>(&hits, &mut constant),
            }
            model.sum_rows(&hits, &mut any);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&constant), bits(&any), "{k} classes");
            assert_ne!(bits(&constant), bits(&start));
        }
    }

    fn doc(words: &str) -> Features {
        let mut f = Features::new();
        f.words(Group::Title, words);
        f
    }

    /// Three bugs, then three feature requests.
    const BUGS_THEN_FEATURES: [&str; 6] = [
        "crash when opening tab",
        "browser crash on start",
        "crash in layout code",
        "add a dark theme option",
        "feature request new option",
        "please add option to sync",
    ];

    #[test]
    fn it_learns_separable_text_and_probabilities_sum_to_one() {
        let docs: Vec<Features> = BUGS_THEN_FEATURES.iter().map(|t| doc(t)).collect();
        let labels = [0, 0, 0, 1, 1, 1];
        let classes = vec!["bug".to_string(), "feature".to_string()];
        let params = TrainParams {
            min_df: 1,
            ..TrainParams::default()
        };
        let model = LinearModel::fit(&docs, &labels, &classes, &params).unwrap();
        let p = model.predict(&doc("crash on tab"));
        assert_eq!(p.class, "bug");
        assert!((p.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(model.predict(&doc("add option")).class, "feature");
    }

    /// The one-pass scores are the dot product of the weighted row, and a term of a group
    /// the model has no column of changes nothing.
    #[test]
    fn scores_are_the_dot_product_of_the_weighted_row() {
        let texts = [
            ("crash when opening tab", "stack trace attached"),
            ("browser crash on start", "it crashes every time"),
            ("add a dark theme option", "would be nice to have"),
            ("feature request new option", "please consider it"),
        ];
        let docs: Vec<Features> = texts
            .iter()
            .map(|(title, body)| {
                let mut f = doc(title);
                f.words(Group::Body, body);
                f.char_ngrams(title, 200);
                f.num("severity=S3", 1.0);
                f
            })
            .collect();
        let classes = vec!["bug".to_string(), "feature".to_string()];
        let params = TrainParams {
            min_df: 1,
            ..TrainParams::default()
        };
        let model = LinearModel::fit(&docs, &[0, 0, 1, 1], &classes, &params).unwrap();
        let mut probe = doc("crash on the new tab option");
        probe.words(Group::Body, "stack trace would be nice");
        probe.char_ngrams("crash on the new tab option", 200);
        probe.num("severity=S3", 1.0);
        // A document's scores, checked against the dot product of its weighted row.
        let scored = |terms: &Terms| {
            let mut reference: Vec<f64> = model.intercept.iter().map(|b| f64::from(*b)).collect();
            for (col, value) in model.vectorize_terms(terms) {
                for (j, score) in reference.iter_mut().enumerate() {
                    *score += value * f64::from(model.weights[col as usize * 2 + j]);
                }
            }
            let scores = model.scores_terms(terms);
            for (a, b) in scores.iter().zip(&reference) {
                assert!((a - b).abs() < 1e-9, "{scores:?} against {reference:?}");
            }
            scores
        };
        let scores = scored(&Terms::of(&probe));
        assert!(
            scores
                .iter()
                .zip(&model.intercept)
                .any(|(s, b)| (s - f64::from(*b)).abs() > 1e-6)
        );

        let mut with_comments = probe.clone();
        with_comments.words(Group::Comments, "a comment group this model never saw");
        assert_eq!(model.scores_terms(&Terms::of(&with_comments)), scores);

        // A group the model does not read between the terms of one it reads: they are
        // passed over, and the rest scored, as the dot product has it.
        let mut interleaved = Features::new();
        for (i, word) in ["crash", "tab", "option", "crash", "new"]
            .iter()
            .enumerate()
        {
            interleaved.token(Group::Comments, &format!("unseen{i}"));
            interleaved.token(Group::Title, word);
            interleaved.token(Group::Body, word);
        }
        let interleaved = scored(&Terms::of(&interleaved));
        assert_ne!(interleaved, model.scores_terms(&Terms::default()));
    }

    /// A document's runs are its terms in order, a group at a time: each run of one group,
    /// neighbours of different groups, a group met again a run of its own.
    #[test]
    fn runs_are_the_terms_a_group_at_a_time() {
        let mut f = doc("tab crash tab");
        f.char_ngrams("tab crash", 200);
        f.num("severity=S3", 2.0);
        f.words(Group::Title, "crash again");
        f.words(Group::Comments, "a comment");
        let terms = Terms::of(&f);
        let runs: Vec<_> = terms.runs().collect();
        let groups: Vec<Group> = runs.iter().map(|(g, _)| *g).collect();
        assert_eq!(
            groups,
            // A document's data come first (`Terms::of` reads its items before its tokens).
            [
                Group::Data,
                Group::Title,
                Group::Chars,
                Group::Title,
                Group::Comments
            ]
        );
        let joined: Vec<(u64, Group, f64)> = runs
            .iter()
            .flat_map(|(_, run)| run.iter().copied())
            .collect();
        assert_eq!(joined, terms.0, "every term once, in order");
        for (g, run) in &runs {
            assert!(!run.is_empty() && run.iter().all(|(_, tg, _)| tg == g));
        }
        assert_eq!(Terms::default().runs().count(), 0);
    }

    /// The loss is convex: a refit that starts from a fit on fewer rows ends where a fit
    /// from zero ends, in fewer steps; a word only the new rows have starts at 0.
    #[test]
    fn a_refit_from_a_fit_on_fewer_rows_ends_where_a_fit_from_zero_ends() {
        let texts = BUGS_THEN_FEATURES
            .iter()
            .chain(&["hang when closing the last tab", "add a sidebar option"]);
        let docs: Vec<Terms> = texts.map(|t| Terms::of(&doc(t))).collect();
        let labels = [0, 0, 0, 1, 1, 1, 0, 1];
        let classes = vec!["bug".to_string(), "feature".to_string()];
        let params = TrainParams {
            min_df: 1,
            max_iterations: 500,
            ..TrainParams::default()
        };
        let part = LinearModel::fit_c(&docs[..6], &labels[..6], &classes, &params, 4.0, 1).unwrap();
        let cold = LinearModel::fit_c(&docs, &labels, &classes, &params, 4.0, 1).unwrap();
        let warm = part.refit(&docs, &labels, &params, 4.0, 1).unwrap();
        assert_eq!(warm.columns, cold.columns);
        assert!(
            warm.n_features() > part.n_features(),
            "the new rows' words have columns"
        );
        let far = |a: &LinearModel, b: &LinearModel| {
            a.weights
                .iter()
                .chain(&a.intercept)
                .zip(b.weights.iter().chain(&b.intercept))
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        assert!(
            far(&warm, &cold) < 1e-3,
            "weights differ by {}",
            far(&warm, &cold)
        );
        // The starting point is the part's weights, column by column (by hash).
        let start = warm.start_from(Some(&part));
        for (hash, column) in warm.columns.columns() {
            let row = &start[column.col as usize * 2..column.col as usize * 2 + 2];
            match part.columns.get(hash) {
                Some(old) => {
                    let w = &part.weights[old.col as usize * 2..old.col as usize * 2 + 2];
                    assert_eq!(row, [f64::from(w[0]), f64::from(w[1])]);
                }
                None => assert_eq!(row, [0.0, 0.0]),
            }
        }
        assert!(warm.start_from(None).iter().all(|v| *v == 0.0));
    }

    /// Terms merge each hash once, summing its values, whatever the order of the tokens.
    #[test]
    fn terms_hold_each_hash_once_with_its_summed_value() {
        let mut f = doc("tab crash tab crash tab");
        f.char_ngrams("tab crash tab", 200);
        f.num("severity=S3", 2.0);
        let terms = Terms::of(&f);
        let mut expected: BTreeMap<u64, f64> = BTreeMap::new();
        for (h, _) in &f.tokens {
            *expected.entry(*h).or_default() += 1.0;
        }
        *expected
            .entry(feature_hash(Group::Data, "severity=S3"))
            .or_default() += 2.0;
        let got: BTreeMap<u64, f64> = terms.0.iter().map(|(h, _, v)| (*h, *v)).collect();
        assert_eq!(got.len(), terms.0.len(), "no hash twice");
        assert_eq!(got, expected);
        assert_eq!(got[&feature_hash(Group::Title, "tab")], 3.0);
        assert_eq!(got[&feature_hash(Group::Chars, " ta")], 2.0);
    }

    /// From one distinct hash to thousands: each hash once, in the order first met, with
    /// its summed value.
    #[test]
    fn terms_merge_repeats_of_many_hashes_in_the_order_first_met() {
        for distinct in [1usize, 7, 9, 300, 1_025, 5_000] {
            let mut rng = SplitMix(distinct as u64);
            let mut f = Features::new();
            for _ in 0..3 * distinct {
                f.token(Group::Comments, &format!("w{}", rng.below(distinct)));
            }
            let mut first_met: Vec<u64> = Vec::new();
            let mut sums: BTreeMap<u64, f64> = BTreeMap::new();
            for (h, _) in &f.tokens {
                let sum = sums.entry(*h).or_insert_with(|| {
                    first_met.push(*h);
                    0.0
                });
                *sum += 1.0;
            }
            let terms = Terms::of(&f);
            let hashes: Vec<u64> = terms.0.iter().map(|(h, _, _)| *h).collect();
            assert_eq!(
                hashes, first_met,
                "{distinct}: each hash once, as first met"
            );
            for (h, _, v) in &terms.0 {
                assert_eq!(*v, sums[h], "{distinct}");
            }
        }
    }

    /// Splitting the rows between threads changes only the order of the sums.
    #[test]
    fn a_fit_on_two_threads_is_the_fit_on_one() {
        let texts = BUGS_THEN_FEATURES
            .iter()
            .chain(&["hang when closing the last tab"]);
        let docs: Vec<Terms> = texts.map(|t| Terms::of(&doc(t))).collect();
        let labels = [0, 0, 0, 1, 1, 1, 0];
        let classes = vec!["bug".to_string(), "feature".to_string()];
        let params = TrainParams {
            min_df: 1,
            ..TrainParams::default()
        };
        let one = LinearModel::fit_c(&docs, &labels, &classes, &params, 4.0, 1).unwrap();
        let two = LinearModel::fit_c(&docs, &labels, &classes, &params, 4.0, 2).unwrap();
        assert_eq!(one.columns, two.columns);
        let far = one
            .weights
            .iter()
            .chain(&one.intercept)
            .zip(two.weights.iter().chain(&two.intercept))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(far < 1e-4, "weights differ by {far}");
        assert!(one.weights.iter().any(|w| w.abs() > 0.01));
    }

    /// The objective's loss is the weighted cross-entropy plus the penalty, and its gradient
    /// is its slope, for two and three classes (a loop of their own) and for five (the
    /// general one).
    #[test]
    fn the_objective_is_its_formula_and_its_gradient_its_slope_for_any_number_of_classes() {
        let n_features = 7;
        let rows: Vec<Vec<(u32, f64)>> = (0..12u32)
            .map(|i| vec![(i % 4, 1.0 + f64::from(i) / 10.0), (4 + i % 3, 0.5)])
            .collect();
        for k in [2usize, 3, 5] {
            let objective = Softmax {
                rows: rows.iter().map(Vec::as_slice).collect(),
                labels: (0..rows.len()).map(|i| i % k).collect(),
                weights: (0..rows.len()).map(|i| 1.0 + (i % 2) as f64).collect(),
                k,
                n_features,
                inverse_c: 0.5,
            };
            let params: Vec<f64> = (0..(n_features + 1) * k)
                .map(|i| ((i * 37 % 11) as f64 - 5.0) / 10.0)
                .collect();
            let loss_at = |p: &[f64]| {
                let mut scratch = vec![0.0; p.len()];
                objective.eval(p, &mut scratch, &mut []).unwrap()
            };
            // The loss, summed here from its definition.
            let (w, b) = params.split_at(n_features * k);
            let mut expected = 0.5 * 0.5 * w.iter().map(|v| v * v).sum::<f64>();
            for (i, row) in rows.iter().enumerate() {
                let z: Vec<f64> = (0..k)
                    .map(|j| {
                        b[j] + row
                            .iter()
                            .map(|&(c, x)| x * w[c as usize * k + j])
                            .sum::<f64>()
                    })
                    .collect();
                let log_sum = z.iter().map(|v| v.exp()).sum::<f64>().ln();
                expected += objective.weights[i] * (log_sum - z[i % k]);
            }
            let mut g = vec![0.0; params.len()];
            let loss = objective.eval(&params, &mut g, &mut []).unwrap();
            assert!(
                (loss - expected).abs() < 1e-9,
                "k {k}: loss {loss}, expected {expected}"
            );
            for i in 0..params.len() {
                let h = 1e-6;
                let (mut up, mut down) = (params.clone(), params.clone());
                up[i] += h;
                down[i] -= h;
                let slope = (loss_at(&up) - loss_at(&down)) / (2.0 * h);
                assert!(
                    (slope - g[i]).abs() < 1e-5 * (1.0 + slope.abs()),
                    "k {k}, parameter {i}: gradient {} against slope {slope}",
                    g[i]
                );
            }
        }
    }

    /// `weights.json` holds the vocabulary as arrays; the model holds it once, in its table.
    #[test]
    fn a_model_reads_back_as_it_was_written_and_a_repeated_hash_is_refused() {
        let docs: Vec<Terms> = BUGS_THEN_FEATURES
            .iter()
            .map(|t| Terms::of(&doc(t)))
            .collect();
        let classes = vec!["bug".to_string(), "feature".to_string()];
        let params = TrainParams {
            min_df: 1,
            ..TrainParams::default()
        };
        let model =
            LinearModel::fit_c(&docs, &[0, 0, 0, 1, 1, 1], &classes, &params, 4.0, 1).unwrap();
        let text = serde_json::to_string(&model).unwrap();
        let back: LinearModel = serde_json::from_str(&text).unwrap();
        assert_eq!(back, model);
        assert_eq!(back.scores_terms(&docs[0]), model.scores_terms(&docs[0]));

        let mut stored: serde_json::Value = serde_json::from_str(&text).unwrap();
        let first = stored["vocab"][0].clone();
        stored["vocab"][1] = first;
        let e = serde_json::from_value::<LinearModel>(stored).unwrap_err();
        assert!(e.to_string().contains("repeat a hash"), "{e}");
    }

    #[test]
    fn a_class_without_examples_is_an_error() {
        let classes = vec!["a".to_string(), "b".to_string()];
        assert!(LinearModel::fit(&[doc("x y")], &[0], &classes, &TrainParams::default()).is_err());
    }
}
