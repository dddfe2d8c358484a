//! `bugflow models list | promote | rollback | shadow | compare | release` and
//! `bugflow evaluate`.
//!
//! The release flow (`deploy/README.md`): a trained bundle that passes the metrics gate
//! becomes the *shadow* (`bugflow train MODEL --shadow`), scores live traffic beside the
//! serving bundle for some days, and is promoted only when `compare` shows it is not worse on
//! the labels people set meanwhile (`release` does this on a schedule). `promote` of the
//! shadow checks the same; `--force` overrides, and the history records it.

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::models::ModelKind;
use crate::models::bundle::Bundle;
use crate::models::live;
use crate::models::registry::{HistoryEntry, Registry};
use crate::store::Store;

pub fn list(registry: &Registry) -> anyhow::Result<()> {
    for model in ModelKind::all() {
        let history = registry.history(model)?;
        let versions = registry.versions(model)?;
        if versions.is_empty() {
            continue;
        }
        println!("{model}");
        for b in versions {
            let m = &b.manifest;
            let serving = history.current.as_deref() == Some(m.version.as_str());
            let shadow = history.shadow.as_deref() == Some(m.version.as_str());
            println!(
                "  {} {:<32} macro F1 {:.3}  accuracy {:.3}  {} train / {} test  {}{}",
                if serving {
                    "*"
                } else if shadow {
                    "~"
                } else {
                    " "
                },
                m.version,
                m.macro_f1(),
                m.metrics.accuracy,
                m.split.train_records,
                m.split.test_records,
                m.gate.as_deref().unwrap_or(""),
                if m.forced { " (forced)" } else { "" }
            );
        }
    }
    Ok(())
}

/// Serves `version`. When it is the model's shadow, it must not be worse than the serving
/// bundle on live labels (`store` holds them) unless `force`; then the metrics gate decides.
pub async fn promote(
    registry: &Registry,
    store: &Store,
    model: ModelKind,
    version: &str,
    force: bool,
) -> anyhow::Result<()> {
    let history = registry.history(model)?;
    let live = match history.current.as_deref() {
        Some(serving) if history.shadow.as_deref() == Some(version) => {
            let live = live::compare_versions(store, registry, model, serving, version).await?;
            print_comparison(&live);
            Some(live)
        }
        _ => None,
    };
    promote_judged(registry, model, version, force, live.as_ref())
}

/// [`promote`], with the shadow's live comparison already made (`None`: not the shadow).
fn promote_judged(
    registry: &Registry,
    model: ModelKind,
    version: &str,
    force: bool,
    live: Option<&live::Comparison>,
) -> anyhow::Result<()> {
    if let Some(live) = live.filter(|l| !l.verdict.pass) {
        let action = if force { "forced_past_live" } else { "refused" };
        registry.record(
            model,
            HistoryEntry {
                at: Utc::now(),
                action: action.into(),
                version: version.into(),
                macro_f1: Some(live.shadow_macro_f1.value),
                note: format!("live comparison: {}", live.verdict.reason),
            },
        )?;
        if !force {
            anyhow::bail!(
                "{model}: refused {version}: {} (use --force to override; recorded)",
                live.verdict.reason
            );
        }
        println!(
            "{model}: forced past the live comparison ({})",
            live.verdict.reason
        );
    }
    let verdict = registry.promote(model, version, force)?;
    if verdict.pass {
        println!("{model}: serving {version} ({})", verdict.reason);
        Ok(())
    } else if force {
        println!(
            "{model}: serving {version}, forced past the gate ({})",
            verdict.reason
        );
        Ok(())
    } else {
        anyhow::bail!(
            "{model}: the gate refused {version}: {} (use --force to override)",
            verdict.reason
        )
    }
}

/// Serves the bundle that served before; `why` goes into the history.
pub fn rollback(registry: &Registry, model: ModelKind, why: &str) -> anyhow::Result<()> {
    let to = registry.rollback(model, why)?;
    println!("{model}: rolled back; serving {to}");
    Ok(())
}

/// `bugflow models shadow MODEL VERSION`, or `--stop`.
pub fn shadow(registry: &Registry, model: ModelKind, version: Option<&str>) -> anyhow::Result<()> {
    match version {
        Some(version) => {
            registry.shadow(model, version)?;
            println!(
                "{model}: {version} scores live traffic beside {} (results on <consumer>.shadow.<bug>; \
                 never written or answered); a running service follows within models_refresh_seconds",
                registry
                    .history(model)?
                    .current
                    .unwrap_or_else(|| "nothing".into())
            );
        }
        None => match registry.stop_shadow(model, "stopped by hand")? {
            Some(version) => println!("{model}: shadow {version} stopped"),
            None => println!("{model}: no shadow runs"),
        },
    }
    Ok(())
}

/// `bugflow models compare MODEL`.
pub async fn compare(registry: &Registry, store: &Store, model: ModelKind) -> anyhow::Result<()> {
    let comparison = live::compare(store, registry, model).await?;
    print_comparison(&comparison);
    Ok(())
}

/// `bugflow models release MODEL --after-days N`: promotes the shadow once it has scored
/// live traffic for N days and the live comparison agrees. Waiting (too young, too few
/// labels) is not an error; a refusal is.
pub async fn release(
    registry: &Registry,
    store: &Store,
    model: ModelKind,
    after_days: u64,
) -> anyhow::Result<()> {
    let history = registry.history(model)?;
    let Some(shadow) = history.shadow.clone() else {
        println!("{model}: no shadow runs: nothing to release");
        return Ok(());
    };
    let since = history.shadow_since.unwrap_or_else(Utc::now);
    let days = (Utc::now() - since).num_hours() as f64 / 24.0;
    if days < after_days as f64 {
        println!("{model}: shadow {shadow} has run {days:.1} days of {after_days}: waiting");
        return Ok(());
    }
    let Some(serving) = history.current.as_deref() else {
        anyhow::bail!("{model}: no bundle serves; promote {shadow} by hand");
    };
    let live = live::compare_versions(store, registry, model, serving, &shadow).await?;
    print_comparison(&live);
    let min = model.spec().map(|s| s.live.min_labels).unwrap_or_default();
    if live.labelled < min {
        println!("{model}: {}: waiting for labels", live.verdict.reason);
        return Ok(());
    }
    promote_judged(registry, model, &shadow, false, Some(&live))
}

fn interval(e: &live::Estimate) -> String {
    format!("{:.3} [{:.3}, {:.3}]", e.value, e.low, e.high)
}

pub fn print_comparison(c: &live::Comparison) {
    println!("{} — serving {} vs shadow {}", c.model, c.serving, c.shadow);
    println!(
        "  agreement on {} events both scored: {} ({:.1}%)",
        c.events,
        c.agreeing,
        100.0 * c.agreement()
    );
    for (pair, n) in &c.disagreements {
        println!("    {n:>6}  {pair}");
    }
    println!(
        "  on {} bugs people labelled after both predicted (95% bootstrap intervals):",
        c.labelled
    );
    println!("  {:<10} {:<24} {:<24}", "", "accuracy", "macro F1");
    println!(
        "  {:<10} {:<24} {:<24}",
        "serving",
        interval(&c.serving_accuracy),
        interval(&c.serving_macro_f1)
    );
    println!(
        "  {:<10} {:<24} {:<24}",
        "shadow",
        interval(&c.shadow_accuracy),
        interval(&c.shadow_macro_f1)
    );
    println!(
        "  shadow − serving macro F1: {:+.3} [{:+.3}, {:+.3}]",
        c.macro_f1_difference.value, c.macro_f1_difference.low, c.macro_f1_difference.high
    );
    println!(
        "  verdict: {} — {}",
        if c.verdict.pass {
            "promotable"
        } else {
            "not promotable"
        },
        c.verdict.reason
    );
}

pub fn evaluate(bundle_dir: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let bundle = Bundle::read(bundle_dir)?;
    let evaluation = crate::train::evaluate(&bundle, files)?;
    println!(
        "{} {} on {} file(s)",
        bundle.manifest.model,
        bundle.manifest.version,
        files.len()
    );
    print!("{}", evaluation.table());
    Ok(())
}

/// `bugflow evaluate MODEL --bundle DIR --data FILE…`: the bundle must hold `model`.
pub fn evaluate_command(model: ModelKind, bundle: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let held = Bundle::read(bundle)?.manifest.model;
    anyhow::ensure!(
        held == model,
        "{} holds a {held} bundle, not {model}",
        bundle.display()
    );
    evaluate(bundle, files)
}
