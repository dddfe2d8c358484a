//! `bugflow bench models`: inference latency per bug, and training cost on the issues.
//!
//! * Per bug file (the 58 fixture bugs, the 1,014 full BMO bugs with comments): features
//!   once per bug, then each trained bug model on them, timed apart, each bug scored
//!   `repeat` times: p50, p99 and mean in microseconds (the serving bundles of `models/`).
//! * `bugflow train issue-type` on the 1,500 issues in a child process: wall time and peak
//!   resident memory (`getrusage(RUSAGE_CHILDREN)`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;

use crate::features::{Groups, bug};
use crate::models::ModelKind;
use crate::models::linear::Terms;
use crate::models::registry::ModelSet;
use crate::pipeline::scoring::score_terms;

pub struct ModelsBenchOptions {
    /// Bug files (JSON Lines, `.zst` read as it is); each is measured on its own.
    pub bugs: Vec<PathBuf>,
    pub issues: PathBuf,
    /// Every bug is scored this many times; at most `max_bugs` are read from a file.
    pub repeat: usize,
    pub max_bugs: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Per-bug timings of one stage, in microseconds.
#[derive(Default)]
struct Timings(Vec<f64>);

impl Timings {
    fn row(&mut self, what: &str) -> String {
        self.0.sort_by(f64::total_cmp);
        let mean = self.0.iter().sum::<f64>() / self.0.len().max(1) as f64;
        format!(
            "| {what} | {:.1} | {:.1} | {mean:.1} |",
            percentile(&self.0, 50.0),
            percentile(&self.0, 99.0)
        )
    }
}

fn read_bugs(path: &Path, max: usize) -> anyhow::Result<Vec<Value>> {
    use std::io::BufRead;
    let mut bugs = Vec::new();
    for line in crate::train::data::open(path)?.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        bugs.push(serde_json::from_str(&line)?);
        if bugs.len() == max {
            break;
        }
    }
    Ok(bugs)
}

/// Features once per bug, then each serving bug model on them, timed apart: the table of
/// one bug file.
///
/// The repeats are timed after one pass over the bugs that is not: the first bugs a process
/// reads compile the cleanup's regexes and build their lazy DFA's states (about 9 ms on the
/// fixture bugs), which a consumer does once in its life. That pass is shown on its own
/// row. (bugbug's side is warmed up as well: `scripts/bugbug_classify.py`.)
fn bench_bugs(
    serving: &[(ModelKind, std::sync::Arc<crate::models::bundle::Bundle>)],
    path: &Path,
    options: &ModelsBenchOptions,
) -> anyhow::Result<()> {
    let bugs = read_bugs(path, options.max_bugs)?;
    let mut features = Timings::default();
    let mut total = Timings::default();
    let mut first = Timings::default();
    let mut per_model: Vec<Timings> = serving.iter().map(|_| Timings::default()).collect();
    let (mut checksum, mut terms_seen) = (0.0, 0usize);
    // The groups the models read, as a consumer extracts them (`BugBundles::features`).
    let groups: Groups = serving.iter().map(|(_, bundle)| bundle.groups()).collect();
    // One bug: µs of its features, µs of each model, and how many terms it has.
    let mut time_one = |b: &Value| -> (f64, Vec<f64>, usize) {
        let started = Instant::now();
        let terms = Terms::of(&bug::extract_groups(b, groups));
        let extracted = started.elapsed().as_secs_f64() * 1e6;
        let models = serving
            .iter()
            .map(|(_, bundle)| {
                let started = Instant::now();
                if let Some(model) = bundle.model("") {
                    checksum += score_terms(model, &terms).probabilities[0];
                }
                started.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        (extracted, models, terms.len())
    };
    for b in &bugs {
        let (extracted, models, _) = time_one(b);
        first.0.push(extracted + models.iter().sum::<f64>());
    }
    for _ in 0..options.repeat {
        for b in &bugs {
            let (extracted, models, terms) = time_one(b);
            features.0.push(extracted);
            total.0.push(extracted + models.iter().sum::<f64>());
            for (timings, took) in per_model.iter_mut().zip(models) {
                timings.0.push(took);
            }
            terms_seen += terms;
        }
    }
    std::hint::black_box(checksum);
    let mean_terms = terms_seen / (bugs.len() * options.repeat).max(1);
    println!(
        "{} — {} bugs × {} repeats (µs per bug)",
        path.display(),
        bugs.len(),
        options.repeat
    );
    let models: Vec<ModelKind> = serving.iter().map(|(kind, _)| *kind).collect();
    print_table(&models, mean_terms, features, per_model, total, first);
    Ok(())
}

/// [`bench_bugs`]'s table: the features, each model, all of them, and the first pass.
fn print_table(
    models: &[ModelKind],
    mean_terms: usize,
    mut features: Timings,
    mut per_model: Vec<Timings>,
    mut total: Timings,
    mut first: Timings,
) {
    println!("| stage | p50 | p99 | mean |");
    println!("|---|---:|---:|---:|");
    println!(
        "{}",
        features.row(&format!(
            "features of the groups the models read, hashed once per bug ({mean_terms} distinct terms on average)"
        ))
    );
    for (kind, timings) in models.iter().zip(&mut per_model) {
        println!("{}", timings.row(&format!("{kind} (model only)")));
    }
    println!(
        "{}",
        total.row(&format!("features + {} models", models.len()))
    );
    println!(
        "{}",
        first.row(&format!(
            "features + {} models, the pass before (regexes compiled, DFA states built; not in the rows above)",
            models.len()
        ))
    );
    println!();
}

pub fn run(models: &ModelSet, options: &ModelsBenchOptions) -> anyhow::Result<()> {
    // The trained bug models (an untrained bundle scores nothing).
    let serving: Vec<_> = ModelKind::bug_models()
        .into_iter()
        .filter_map(|kind| models.get(kind).map(|b| (kind, b)))
        .filter(|(_, b)| b.model("").is_some())
        .collect();
    anyhow::ensure!(
        !serving.is_empty(),
        "no trained bug model in the models folder"
    );
    let loaded_rss = super::bench::rss_mib();
    for path in &options.bugs {
        bench_bugs(&serving, path, options)?;
    }
    let (seconds, peak_mib) = train_in_child(&options.issues)?;
    println!("| training | value |");
    println!("|---|---:|");
    println!(
        "| train issue-type on {} (wall) | {seconds:.1} s |",
        options.issues.display()
    );
    println!("| train issue-type, peak RSS | {peak_mib:.0} MiB |");
    if let Some(rss) = loaded_rss {
        println!("| RSS with every serving bundle loaded, before any bug is read | {rss:.0} MiB |");
    }
    Ok(())
}

/// Runs `bugflow train issue-type` as a child; returns its wall time and peak RSS.
fn train_in_child(issues: &Path) -> anyhow::Result<(f64, f64)> {
    let out = tempfile_dir()?;
    let started = Instant::now();
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["train", "issue-type", "--data"])
        .arg(issues)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&out);
    anyhow::ensure!(status.success(), "training failed: {status}");
    let usage = super::bench_cpu::rusage(libc::RUSAGE_CHILDREN)
        .ok_or_else(|| anyhow::anyhow!("getrusage(RUSAGE_CHILDREN) failed"))?;
    // ru_maxrss is in KiB on Linux.
    Ok((seconds, usage.ru_maxrss as f64 / 1024.0))
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bugflow-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `bugflow bench models` with the serving bundles of the configuration.
pub async fn command(
    config: &crate::config::Config,
    options: ModelsBenchOptions,
) -> anyhow::Result<()> {
    let models = crate::app::load_models(config)?;
    tokio::task::spawn_blocking(move || run(&models, &options)).await?
}
