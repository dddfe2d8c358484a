//! `bugflow bench models`: inference latency per bug, and training cost on the issues.
//!
//! * Features + every bug model, per bug, over the 58 fixture bugs, each bug scored
//!   `repeat` times: p50, p99 and mean in microseconds (the serving bundles of `models/`).
//! * `bugflow train issue-type` on the 1,500 issues in a child process: wall time and peak
//!   resident memory (`getrusage(RUSAGE_CHILDREN)`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;

use crate::features::bug;
use crate::models::ModelKind;
use crate::models::registry::ModelSet;

pub struct ModelsBenchOptions {
    pub bugs: PathBuf,
    pub issues: PathBuf,
    pub repeat: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn run(models: &ModelSet, options: &ModelsBenchOptions) -> anyhow::Result<()> {
    let bugs: Vec<Value> = std::fs::read_to_string(&options.bugs)
        .map_err(|e| anyhow::anyhow!("{}: {e}", options.bugs.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut serving = Vec::new();
    for kind in ModelKind::bug_models() {
        let bundle = models
            .get(kind)
            .ok_or_else(|| anyhow::anyhow!("no serving {kind} bundle in the models folder"))?;
        serving.push((kind, bundle));
    }
    let mut micros = Vec::with_capacity(bugs.len() * options.repeat);
    let mut checksum = 0.0;
    for _ in 0..options.repeat {
        for b in &bugs {
            let started = Instant::now();
            let all = bug::extract_all(b);
            for (kind, bundle) in &serving {
                if let Some(model) = bundle.model("") {
                    let p = model.predict(&kind.exclude().apply(&all));
                    checksum += p.probabilities[0];
                }
            }
            micros.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    std::hint::black_box(checksum);
    micros.sort_by(f64::total_cmp);
    let mean = micros.iter().sum::<f64>() / micros.len().max(1) as f64;

    let (seconds, peak_mib) = train_in_child(&options.issues)?;

    println!(
        "bugflow bench models — {} bugs × {} repeats",
        bugs.len(),
        options.repeat
    );
    println!("| what | value |");
    println!("|---|---:|");
    println!(
        "| features + 4 bug models per bug, p50 | {:.1} µs |",
        percentile(&micros, 50.0)
    );
    println!(
        "| features + 4 bug models per bug, p99 | {:.1} µs |",
        percentile(&micros, 99.0)
    );
    println!("| features + 4 bug models per bug, mean | {mean:.1} µs |");
    println!(
        "| train issue-type on {} (wall) | {seconds:.1} s |",
        options.issues.display()
    );
    println!("| train issue-type, peak RSS | {peak_mib:.0} MiB |");
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
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
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
