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
            let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for i in order {
                groups.entry(labels[i]).or_default().push(i);
            }
            let mut rng = SplitMix(seed);
            for (_, mut members) in groups {
                if strategy == Strategy::StratifiedTime {
                    by_date(&mut members);
                } else {
                    rng.shuffle(&mut members);
                }
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
        // The newest records (lowest index here) are tested.
        assert!(test.iter().all(|&i| i < 20));
    }
}
