//! `bugflow models list | promote | rollback` and `bugflow evaluate`.

use std::path::{Path, PathBuf};

use crate::models::ModelKind;
use crate::models::bundle::Bundle;
use crate::models::registry::Registry;

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
            println!(
                "  {} {:<32} macro F1 {:.3}  accuracy {:.3}  {} train / {} test  {}{}",
                if serving { "*" } else { " " },
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

pub fn promote(
    registry: &Registry,
    model: ModelKind,
    version: &str,
    force: bool,
) -> anyhow::Result<()> {
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

pub fn rollback(registry: &Registry, model: ModelKind) -> anyhow::Result<()> {
    let to = registry.rollback(model)?;
    println!("{model}: rolled back; serving {to}");
    Ok(())
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
