//! A multinomial logistic regression over sparse features, trained with linfa.
//!
//! linfa's learners take dense matrices; text is sparse. So training keeps a capped
//! vocabulary (features seen in at least `min_df` training documents, the `max_features`
//! most frequent), builds a dense matrix over just those columns for
//! `linfa_logistic::MultiLogisticRegression`, and keeps the fitted weights. Inference never
//! builds a dense row: it looks each feature's hash up in the vocabulary and adds its weights.

use std::collections::{BTreeMap, HashMap};

use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::features::{Features, Group, feature_hash};

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// Text features must occur in at least this many training documents.
    pub min_df: u32,
    /// Keep at most this many features (the most frequent).
    pub max_features: usize,
    /// L2 regularisation (sklearn's `1 / C`).
    pub alpha: f64,
    pub max_iterations: u64,
    /// Multiplies each text group after normalisation (a title weighs more than a body).
    pub group_weights: BTreeMap<Group, f64>,
    pub balance: Balance,
    /// Seed of every random choice (undersampling).
    pub seed: u64,
}

/// How class imbalance is handled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Balance {
    /// Train as the data comes.
    None,
    /// Repeat the rows of smaller classes up to the largest class (sklearn's
    /// `class_weight="balanced"`, in expectation).
    Oversample,
    /// Keep at most `ratio` rows of the largest class per row of the others (bugbug's
    /// `RandomUnderSampler`). As in bugbug, probabilities stay on the undersampled scale: a
    /// rare class (a backout) then scores as a risk, not as a near-zero base rate.
    Undersample { ratio: f64 },
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            min_df: 2,
            max_features: 20_000,
            alpha: 0.05,
            max_iterations: 200,
            group_weights: BTreeMap::new(),
            balance: Balance::Oversample,
            seed: 42,
        }
    }
}

/// A fitted model. Serialised into a bundle's `weights.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    pub classes: Vec<String>,
    pub group_weights: BTreeMap<Group, f64>,
    /// Feature hashes, in column order.
    pub vocab: Vec<u64>,
    /// Group of each column.
    pub groups: Vec<Group>,
    /// Inverse document frequency of each column (1 for structured features).
    pub idf: Vec<f32>,
    /// `vocab.len() × classes.len()`, row-major.
    pub weights: Vec<f32>,
    pub intercept: Vec<f32>,
    #[serde(skip)]
    index: HashMap<u64, u32>,
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
    /// Rebuilds the hash → column index after deserialising.
    pub fn prepare(&mut self) {
        self.index = self
            .vocab
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, i as u32))
            .collect();
    }

    /// Are the parts of a deserialised model the sizes each other says? A bundle whose
    /// weights do not match its vocabulary would index out of bounds on the first
    /// prediction; it is refused when it is read instead.
    pub fn check(&self) -> Result<(), String> {
        let (n, k) = (self.vocab.len(), self.classes.len());
        if k == 0 {
            return Err("no classes".into());
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
        Ok(())
    }

    pub fn n_features(&self) -> usize {
        self.vocab.len()
    }

    /// The weighted sparse row of a document: `(column, value)`, sorted by column.
    pub fn vectorize(&self, features: &Features) -> Vec<(u32, f64)> {
        let mut counts: HashMap<u32, f64> = HashMap::new();
        for f in &features.items {
            if let Some(col) = self.index.get(&feature_hash(f.group, &f.name)) {
                *counts.entry(*col).or_default() += f.value;
            }
        }
        let mut row: Vec<(u32, f64)> = counts
            .into_iter()
            .map(|(col, v)| {
                let c = col as usize;
                let value = if self.groups[c].is_text() {
                    (1.0 + v.ln()) * f64::from(self.idf[c])
                } else {
                    v
                };
                (col, value)
            })
            .collect();
        row.sort_by_key(|(c, _)| *c);
        // L2-normalise each text group, then weight it.
        let mut norms: HashMap<Group, f64> = HashMap::new();
        for (c, v) in &row {
            let g = self.groups[*c as usize];
            if g.is_text() {
                *norms.entry(g).or_default() += v * v;
            }
        }
        for (c, v) in &mut row {
            let g = self.groups[*c as usize];
            if g.is_text() {
                let norm = norms[&g].sqrt();
                if norm > 0.0 {
                    *v /= norm;
                }
                *v *= self.group_weights.get(&g).copied().unwrap_or(1.0);
            }
        }
        row
    }

    /// Class probabilities for one document.
    pub fn predict(&self, features: &Features) -> Prediction {
        let k = self.classes.len();
        let mut scores: Vec<f64> = self.intercept.iter().map(|b| f64::from(*b)).collect();
        for (col, value) in self.vectorize(features) {
            let base = col as usize * k;
            for (j, score) in scores.iter_mut().enumerate() {
                *score += value * f64::from(self.weights[base + j]);
            }
        }
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut probabilities: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = probabilities.iter().sum();
        for p in &mut probabilities {
            *p /= sum;
        }
        let index = probabilities
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        Prediction {
            class: self.classes[index].clone(),
            probabilities,
            index,
        }
    }

    /// Fits a model on `docs` labelled with indexes into `classes`.
    pub fn fit(
        docs: &[Features],
        labels: &[usize],
        classes: &[String],
        params: &TrainParams,
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

        let mut model = Self::vocabulary(docs, classes, params);
        model.prepare();
        // Rows, balanced; a dense matrix over the kept columns only, fitted with linfa.
        let rows: Vec<Vec<(u32, f64)>> = docs.iter().map(|d| model.vectorize(d)).collect();
        let order = balance(labels, k, params);
        let cols = model.vocab.len().max(1);
        let mut x = Array2::<f64>::zeros((order.len(), cols));
        let mut y = Array1::<usize>::zeros(order.len());
        for (r, &i) in order.iter().enumerate() {
            for &(c, v) in &rows[i] {
                x[[r, c as usize]] = v;
            }
            y[r] = labels[i];
        }
        let dataset = Dataset::new(x, y);
        let fitted = MultiLogisticRegression::default()
            .alpha(params.alpha)
            .max_iterations(params.max_iterations)
            .fit(&dataset)
            .map_err(|e| TrainError(e.to_string()))?;
        // linfa orders its classes by value: map each back to ours.
        let theirs: Vec<usize> = fitted.classes().to_vec();
        let w = fitted.params();
        let b = fitted.intercept();
        model.weights = vec![0.0; model.vocab.len() * k];
        // Every class has examples (checked above), so linfa fitted every one.
        model.intercept = vec![0.0; k];
        for (j, class) in theirs.iter().enumerate() {
            model.intercept[*class] = b[j] as f32;
            for c in 0..model.vocab.len() {
                model.weights[c * k + class] = w[[c, j]] as f32;
            }
        }
        Ok(model)
    }

    /// An unfitted model over the vocabulary of `docs`: text features seen in at least
    /// `min_df` documents, the most frequent `max_features` of them, with their idf.
    fn vocabulary(docs: &[Features], classes: &[String], params: &TrainParams) -> LinearModel {
        let mut df: HashMap<u64, (u32, Group)> = HashMap::new();
        for doc in docs {
            let mut seen: Vec<(u64, Group)> = doc
                .items
                .iter()
                .map(|f| (feature_hash(f.group, &f.name), f.group))
                .collect();
            seen.sort_unstable_by_key(|(h, _)| *h);
            seen.dedup_by_key(|(h, _)| *h);
            for (h, g) in seen {
                df.entry(h).or_insert((0, g)).0 += 1;
            }
        }
        let mut kept: Vec<(u64, u32, Group)> = df
            .into_iter()
            .filter(|(_, (n, g))| !g.is_text() || *n >= params.min_df)
            .map(|(h, (n, g))| (h, n, g))
            .collect();
        // Most frequent first; ties by hash, so the choice is reproducible.
        kept.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        kept.truncate(params.max_features);
        kept.sort_unstable_by_key(|(h, _, _)| *h);
        let n_docs = docs.len() as f64;
        LinearModel {
            classes: classes.to_vec(),
            group_weights: params.group_weights.clone(),
            vocab: kept.iter().map(|(h, _, _)| *h).collect(),
            groups: kept.iter().map(|(_, _, g)| *g).collect(),
            idf: kept
                .iter()
                .map(|(_, n, g)| {
                    if g.is_text() {
                        (((1.0 + n_docs) / (1.0 + f64::from(*n))).ln() + 1.0) as f32
                    } else {
                        1.0
                    }
                })
                .collect(),
            weights: Vec::new(),
            intercept: Vec::new(),
            index: HashMap::new(),
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
        Balance::None => (0..labels.len()).collect(),
        Balance::Oversample => {
            let target = by_class.iter().map(Vec::len).max().unwrap_or(0);
            let mut order = Vec::new();
            for rows in &by_class {
                for j in 0..target {
                    order.push(rows[j % rows.len()]);
                }
            }
            order
        }
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
            for i in (1..pool.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                pool.swap(i, j);
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(words: &str) -> Features {
        let mut f = Features::new();
        f.words(Group::Title, words);
        f
    }

    #[test]
    fn it_learns_separable_text_and_probabilities_sum_to_one() {
        let docs: Vec<Features> = [
            "crash when opening tab",
            "browser crash on start",
            "crash in layout code",
            "add a dark theme option",
            "feature request new option",
            "please add option to sync",
        ]
        .iter()
        .map(|t| doc(t))
        .collect();
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

    #[test]
    fn a_class_without_examples_is_an_error() {
        let classes = vec!["a".to_string(), "b".to_string()];
        assert!(LinearModel::fit(&[doc("x y")], &[0], &classes, &TrainParams::default()).is_err());
    }
}
