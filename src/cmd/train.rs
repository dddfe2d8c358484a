//! `bugflow train MODEL --data FILE…`: fit, evaluate, bundle, and promote if the gate agrees.

use crate::models::ModelKind;
use crate::train::{self, TrainOptions};

/// Returns whether the bundle was promoted or made the shadow (the CLI exits non-zero when
/// not).
pub fn run(model: ModelKind, options: &TrainOptions) -> anyhow::Result<bool> {
    let outcome = train::train(model, options)?;
    let m = &outcome.manifest;
    println!(
        "{model} {} — {} train / {} test records ({} split, seed {}), {:.1} s",
        m.version,
        m.split.train_records,
        m.split.test_records,
        m.split.strategy,
        m.split.seed,
        m.train_seconds
    );
    if !m.per_repository.is_empty() {
        println!("  {:<28} {:>9} {:>9}", "repository", "macro F1", "accuracy");
        for (repo, metrics) in &m.per_repository {
            println!(
                "  {:<28} {:>9.3} {:>9.3}",
                repo, metrics.macro_f1, metrics.accuracy
            );
        }
        println!(
            "  {:<28} {:>9.3} {:>9.3}",
            "mean", m.metrics.macro_f1, m.metrics.accuracy
        );
        println!();
    }
    print!("{}", m.metrics.table());
    println!("bundle: {}", outcome.dir.display());
    println!("report: {}", outcome.dir.join("report.svg").display());
    let used = if outcome.shadowed {
        "shadowing the serving bundle (bugflow models compare, then release or promote)"
    } else {
        "promoted"
    };
    let taken = outcome.promoted || outcome.shadowed;
    match (outcome.verdict.pass, taken) {
        (true, _) => println!("gate: passed ({}); {used}", outcome.verdict.reason),
        (false, true) => println!(
            "gate: REFUSED ({}); {used} anyway (--force, recorded in the manifest)",
            outcome.verdict.reason
        ),
        (false, false) => println!("gate: REFUSED ({}); not used", outcome.verdict.reason),
    }
    Ok(taken)
}

/// `bugflow train`: trains off the async workers; an unpromoted bundle is an error (exit 1).
pub async fn command(model: ModelKind, options: TrainOptions) -> anyhow::Result<()> {
    let promoted = tokio::task::spawn_blocking(move || run(model, &options)).await??;
    anyhow::ensure!(
        promoted,
        "{model}: the new bundle was not used (metrics gate)"
    );
    Ok(())
}
