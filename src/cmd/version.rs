//! `bugflow --version`: what a release is made of — the code and the model bundles.
//!
//! An image bakes both in (`deploy/Dockerfile`), so this is what a running deployment serves.

use std::fmt::Write;
use std::path::Path;

use crate::config::Config;
use crate::models::ModelKind;
use crate::models::registry::Registry;

/// The code version, the commit it was built from, and each model's serving bundle in the
/// configured `models_dir`.
pub fn report(config_file: Option<&Path>) -> String {
    let mut out = format!(
        "bugflow {} (git {})\n",
        env!("CARGO_PKG_VERSION"),
        env!("BUILD_GIT_COMMIT")
    );
    let config = match Config::load(config_file) {
        Ok(config) => config,
        Err(e) => {
            let _ = writeln!(out, "models: unknown ({e})");
            return out;
        }
    };
    let dir = &config.models_dir;
    if !dir.is_dir() {
        let _ = writeln!(out, "models: none ({} does not exist)", dir.display());
        return out;
    }
    let _ = writeln!(out, "models ({}):", dir.display());
    let registry = Registry::new(dir);
    for model in ModelKind::all() {
        let line = match registry.current(model) {
            Ok(Some(bundle)) => format!(
                "{} (macro F1 {:.3}, trained by bugflow {} at {})",
                bundle.manifest.version,
                bundle.manifest.macro_f1(),
                bundle.manifest.bugflow_version,
                bundle.manifest.git_commit
            ),
            Ok(None) => "none serving".to_owned(),
            Err(e) => format!("unreadable: {e}"),
        };
        let _ = writeln!(out, "  {:<12} {line}", model.name());
        if let Ok(Some(shadow)) = registry.history(model).map(|h| h.shadow) {
            let _ = writeln!(
                out,
                "  {:<12} shadow: {shadow} (scores beside it, never written)",
                ""
            );
        }
    }
    out
}
