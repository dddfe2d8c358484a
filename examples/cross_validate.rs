//! Cross-validated macro F1 of a catalogue model over a grid of min_df, a group's weight
//! and values of C, on its training part only (the test part is cut exactly as `bugflow
//! train` cuts it, and never read). What the catalogue's `c` and `group_weights` were
//! chosen with where its comments say "by cross-validation".
//!
//! ```text
//! cargo run --release --example cross_validate -- issue-type --title 2,1,0.5,0.25 --c 4,8,16,32
//! cargo run --release --example cross_validate -- issue-type --group chars --weight 2,1,0.5 --c 8
//! cargo run --release --example cross_validate -- defect --min-df 2,5,10 --title 2 --c 4
//! ```
//!
//! A model split at random (`strategy = "stratified"`) gets folds cut at random within each
//! stratum (class within key). A model split by time gets forward folds: its training
//! records in date order (within each class, for `stratified-time`) are cut into
//! `folds + 1` blocks, and block `f` is scored by a model fitted on the blocks before it
//! (never on newer records), as its test part is.

use bugflow::features::Group;
use bugflow::models::ModelKind;
use bugflow::models::linear::{LinearModel, SplitMix, Terms, argmax, cores, macro_f1};
use bugflow::train::{self, data, split};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// A catalogue model (`issue-type`, `defect` …): folds at random or forwards in time,
    /// as its split is cut (below).
    model: String,
    /// The feature group whose weight the grid varies (`title`, `body`, `chars`, `headings`
    /// …); the other groups keep the catalogue file's weights.
    #[arg(long, default_value = "title")]
    group: String,
    /// Weights to try for that group (`group_weights`); `--title` is the same option.
    #[arg(
        long,
        alias = "title",
        value_delimiter = ',',
        default_value = "2,1,0.5,0.25,0.125"
    )]
    weight: Vec<f64>,
    /// Values of C to try.
    #[arg(long, value_delimiter = ',', default_value = "2,8,32")]
    c: Vec<f64>,
    /// Values of `min_df` to try (the catalogue file's when not given): a term must occur
    /// in this many training documents to get a column. A smaller vocabulary is also a
    /// smaller column table, which is what scoring a bug mostly waits on.
    #[arg(long, value_delimiter = ',')]
    min_df: Vec<u32>,
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// The split's seed, as `bugflow train --seed`.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The deployment's own catalogue files, as `bugflow train` reads them.
    let config = bugflow::config::Config::load(None)?;
    bugflow::models::catalogue::load_dir(&config.models_dir.join("catalogue"))?;
    let model: ModelKind = args.model.parse().map_err(anyhow::Error::msg)?;
    let spec = model
        .spec()
        .ok_or_else(|| anyhow::anyhow!("{model}: no catalogue file"))?;
    anyhow::ensure!(args.folds >= 2, "at least two folds");
    let group: Group = serde_json::from_value(serde_json::Value::String(args.group.clone()))
        .map_err(|e| anyhow::anyhow!("--group {}: {e}", args.group))?;
    let data = data::load(model, &spec.data)?;
    // The records training reads: labelled, of classes with enough of them, pooled.
    let samples: Vec<&data::Sample> = data::by_key(&data.samples, spec.min_class_records)
        .into_values()
        .flatten()
        .collect();
    // Classes, strata and split exactly as `bugflow train` cuts them: class within key.
    let (classes, all_labels) = train::classes_of(model, &samples)?;
    let keys = train::keys_of(&samples);
    let strata = train::strata_of(&samples, &keys, &all_labels, classes.len());
    let dates: Vec<i64> = samples.iter().map(|s| s.date).collect();
    let (train, _test) = split::split(
        spec.split.strategy,
        &strata,
        &dates,
        spec.split.test_fraction,
        args.seed,
    );
    let terms: Vec<Terms> = train
        .iter()
        .map(|&i| Terms::of(&samples[i].features))
        .collect();
    let labels: Vec<usize> = train.iter().map(|&i| all_labels[i]).collect();
    // Which records each fold fits on and scores: at random within strata, or forwards.
    let folds: Vec<(Vec<usize>, Vec<usize>)> = if spec.split.strategy == split::Strategy::Stratified
    {
        // Each stratum dealt round the folds in a seeded random order.
        let mut fold_of = vec![0usize; train.len()];
        let mut rng = SplitMix(args.seed);
        for stratum in 0..keys.len() * classes.len() {
            let mut members: Vec<usize> = (0..train.len())
                .filter(|&p| strata[train[p]] == stratum)
                .collect();
            rng.shuffle(&mut members);
            for (j, &p) in members.iter().enumerate() {
                fold_of[p] = j % args.folds;
            }
        }
        (0..args.folds)
            .map(|f| (0..train.len()).partition(|&p| fold_of[p] != f))
            .collect()
    } else {
        // Forward: in date order, within each class for a split stratified by time (as its
        // test part is cut: the newest of each class), across classes otherwise.
        let per_class = spec.split.strategy == split::Strategy::StratifiedTime;
        let mut block_of = vec![0usize; train.len()];
        for class in 0..classes.len() {
            let mut members: Vec<usize> = (0..train.len())
                .filter(|&p| !per_class || labels[p] == class)
                .collect();
            members.sort_by_key(|&p| (dates[train[p]], p));
            for (j, &p) in members.iter().enumerate() {
                block_of[p] = j * (args.folds + 1) / members.len();
            }
            if !per_class {
                break;
            }
        }
        (1..=args.folds)
            .map(|f| {
                let fit = (0..train.len()).filter(|&p| block_of[p] < f).collect();
                let held = (0..train.len()).filter(|&p| block_of[p] == f).collect();
                (fit, held)
            })
            .collect()
    };
    println!(
        "{model}: {} {} folds of its {} training records (the test part is not read)",
        args.folds,
        if spec.split.strategy == split::Strategy::Stratified {
            "random"
        } else {
            "forward"
        },
        train.len()
    );
    println!(
        "| min_df | {} weight | C | mean macro F1 | standard error | columns (last fold) | per fold |",
        args.group
    );
    println!("|---:|---:|---:|---:|---:|---:|---|");
    let min_dfs = if args.min_df.is_empty() {
        vec![model.params().min_df]
    } else {
        args.min_df.clone()
    };
    let mut grid = Vec::new();
    for &min_df in &min_dfs {
        for &weight in &args.weight {
            grid.extend(args.c.iter().map(|&c| (min_df, weight, c)));
        }
    }
    for (min_df, weight, c) in grid {
        let mut params = model.params();
        params.group_weights.insert(group, weight);
        params.min_df = min_df;
        let mut f1 = Vec::new();
        let mut columns = 0;
        for (fit, held) in &folds {
            let docs: Vec<&Terms> = fit.iter().map(|&p| &terms[p]).collect();
            let fit_labels: Vec<usize> = fit.iter().map(|&p| labels[p]).collect();
            let fitted = LinearModel::fit_c(&docs, &fit_labels, &classes, &params, c, cores())?;
            columns = fitted.n_features();
            let predicted: Vec<usize> = held
                .iter()
                .map(|&p| argmax(&fitted.scores_terms(&terms[p])))
                .collect();
            let truth: Vec<usize> = held.iter().map(|&p| labels[p]).collect();
            f1.push(macro_f1(&truth, &predicted, classes.len()));
        }
        let n = f1.len() as f64;
        let mean = f1.iter().sum::<f64>() / n;
        let sd = (f1.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let each: Vec<String> = f1.iter().map(|x| format!("{x:.3}")).collect();
        println!(
            "| {min_df} | {weight} | {c} | {mean:.4} | {:.4} | {columns} | {} |",
            sd / n.sqrt(),
            each.join(" ")
        );
    }
    Ok(())
}
