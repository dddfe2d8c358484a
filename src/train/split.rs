//! Reproducible train/test splits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::models::linear::SplitMix;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The newest `test_fraction` of records is the test set.
    Time,
    /// Per class, the newest `test_fraction` is the test set: by time, without a class
    /// vanishing from either side.
    StratifiedTime,
    /// Per class, a seeded random `test_fraction` is the test set.
    Stratified,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Time => "time",
            Strategy::StratifiedTime => "stratified-time",
            Strategy::Stratified => "stratified",
        }
    }
}

/// Splits record indexes. `dates` orders records in time; `labels` are class indexes.
pub fn split(
    strategy: Strategy,
    labels: &[usize],
    dates: &[i64],
    test_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    let by_date = |v: &mut Vec<usize>| v.sort_by_key(|&i| (dates[i], i));
    let (mut train, mut test) = (Vec::new(), Vec::new());
    match strategy {
        Strategy::Time => {
            by_date(&mut order);
            let n_test = (order.len() as f64 * test_fraction).round() as usize;
            let cut = order.len() - n_test;
            train.extend_from_slice(&order[..cut]);
            test.extend_from_slice(&order[cut..]);
        }
        Strategy::StratifiedTime | Strategy::Stratified => {
            for members in per_class(strategy, labels, dates, seed) {
                // A class with a single record cannot be both learned and tested: train on it.
                let n_test = if members.len() < 2 {
                    0
                } else {
                    ((members.len() as f64 * test_fraction).round() as usize).max(1)
                };
                let cut = members.len() - n_test;
                train.extend_from_slice(&members[..cut]);
                test.extend_from_slice(&members[cut..]);
            }
        }
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// Assigns each record one of `k` folds, cut the way [`split`] cuts: for
/// [`Strategy::Time`] `k` consecutive blocks in time; for [`Strategy::StratifiedTime`] each
/// class's records in `k` consecutive blocks in time; for [`Strategy::Stratified`] each
/// class's records shuffled (seeded) and dealt out in `k` blocks. Every fold holds about
/// `1/k` of each class.
pub fn folds(
    strategy: Strategy,
    labels: &[usize],
    dates: &[i64],
    k: usize,
    seed: u64,
) -> Vec<usize> {
    let k = k.max(1);
    let mut fold = vec![0; labels.len()];
    let groups = if strategy == Strategy::Time {
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by_key(|&i| (dates[i], i));
        vec![order]
    } else {
        per_class(strategy, labels, dates, seed)
    };
    for members in groups {
        for (j, &i) in members.iter().enumerate() {
            fold[i] = j * k / members.len();
        }
    }
    fold
}

/// Each class's records (classes in index order): by date for
/// [`Strategy::StratifiedTime`], shuffled (one seeded generator, class after class) for
/// [`Strategy::Stratified`].
fn per_class(strategy: Strategy, labels: &[usize], dates: &[i64], seed: u64) -> Vec<Vec<usize>> {
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &label) in labels.iter().enumerate() {
        groups.entry(label).or_default().push(i);
    }
    let mut rng = SplitMix(seed);
    groups
        .into_values()
        .map(|mut members| {
            if strategy == Strategy::Stratified {
                rng.shuffle(&mut members);
            } else {
                members.sort_by_key(|&i| (dates[i], i));
            }
            members
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_reproducible_and_disjoint() {
        let labels: Vec<usize> = (0..100).map(|i| i % 3).collect();
        let dates: Vec<i64> = (0..100).map(|i| 1000 - i as i64).collect();
        for s in [
            Strategy::Time,
            Strategy::StratifiedTime,
            Strategy::Stratified,
        ] {
            let (a, b) = split(s, &labels, &dates, 0.2, 7);
            assert_eq!((a.clone(), b.clone()), split(s, &labels, &dates, 0.2, 7));
            assert_eq!(a.len() + b.len(), 100);
            assert!(a.iter().all(|i| !b.contains(i)));
        }
        let (_, test) = split(Strategy::Time, &labels, &dates, 0.2, 7);
        assert!(test.iter().all(|&i| i < 20));
    }

    #[test]
    fn folds_hold_each_class_evenly_and_follow_time_where_the_split_does() {
        let labels: Vec<usize> = (0..100).map(|i| usize::from(i % 4 == 0)).collect();
        let dates: Vec<i64> = (0..100).map(|i| 1000 - i as i64).collect();
        for s in [
            Strategy::Time,
            Strategy::StratifiedTime,
            Strategy::Stratified,
        ] {
            let fold = folds(s, &labels, &dates, 5, 7);
            assert_eq!(fold, folds(s, &labels, &dates, 5, 7), "{s:?}");
            for f in 0..5 {
                let members: Vec<usize> = (0..100).filter(|&i| fold[i] == f).collect();
                assert_eq!(members.len(), 20, "{s:?}");
                if s != Strategy::Time {
                    let positive = members.iter().filter(|&&i| labels[i] == 1).count();
                    assert_eq!(positive, 5, "{s:?}");
                }
            }
        }
        // By time, the oldest records (highest index here) are fold 0, the newest fold 4.
        let fold = folds(Strategy::StratifiedTime, &labels, &dates, 5, 7);
        assert!((0..20).all(|i| fold[99 - i] == 0 && fold[i] == 4));
        // At random, a fold is not a block.
        let fold = folds(Strategy::Stratified, &labels, &dates, 5, 7);
        assert!((0..20).any(|i| fold[i] != 4));
    }

    #[test]
    fn the_time_split_tests_the_newest() {
        let labels: Vec<usize> = (0..100).map(|i| i % 3).collect();
        let dates: Vec<i64> = (0..100).map(|i| 1000 - i as i64).collect();
        let (_, test) = split(Strategy::Time, &labels, &dates, 0.2, 7);
        // The newest records (lowest index here) are tested.
        assert!(test.iter().all(|&i| i < 20));
    }
}
