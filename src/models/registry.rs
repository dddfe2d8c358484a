//! The model registry: which bundle of each model serves, and its history.
//!
//! ```text
//! models/<model>/history.json   {"current": "<version>", "promoted": [...], "events": [...]}
//! models/<model>/<version>/     bundles
//! ```
//!
//! `promoted` is the stack of versions that served, oldest first: a rollback pops the current
//! one and serves the one before it. Every train, promotion, refusal and rollback is an
//! event with its time and macro F1, so the history is never rewritten, only appended to.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ModelKind;
use super::bundle::{Bundle, Manifest};
use crate::train::gate::{self, Verdict};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub current: Option<String>,
    /// Versions that served, oldest first; the last is `current`.
    pub promoted: Vec<String>,
    pub events: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    /// `trained`, `promoted`, `refused`, `rolled_back`.
    pub action: String,
    pub version: String,
    pub macro_f1: Option<f64>,
    pub note: String,
}

/// The registry rooted at a models folder.
#[derive(Debug, Clone)]
pub struct Registry {
    pub root: PathBuf,
}

impl Registry {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Registry { root: root.into() }
    }

    pub fn model_dir(&self, model: ModelKind) -> PathBuf {
        self.root.join(model.name())
    }

    /// The folder of bundle `version` of `model`. A version is one plain folder name
    /// (letters, digits, `.`, `_`, `-`; not `.` or `..`): `../x` or an absolute path would
    /// name a folder outside the model's, another model's bundle among them.
    pub fn bundle_dir(&self, model: ModelKind, version: &str) -> PathBuf {
        self.model_dir(model).join(version)
    }

    /// [`Registry::bundle_dir`], for a version given by a user or a history file: refused
    /// unless it is a plain folder name.
    pub fn checked_bundle_dir(&self, model: ModelKind, version: &str) -> anyhow::Result<PathBuf> {
        let plain = !version.is_empty()
            && version != "."
            && version != ".."
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            anyhow::bail!(
                "{version:?} is not a version of {model}: a version is a folder name in {} \
                 (letters, digits, '.', '_', '-')",
                self.model_dir(model).display()
            );
        }
        Ok(self.bundle_dir(model, version))
    }

    /// Reads bundle `version` of `model`, checked: a plain version, a manifest that says
    /// this model and version, weights of consistent shapes.
    pub fn bundle(&self, model: ModelKind, version: &str) -> anyhow::Result<Bundle> {
        Bundle::read_as(&self.checked_bundle_dir(model, version)?, model, version)
    }

    pub fn history(&self, model: ModelKind) -> anyhow::Result<History> {
        let path = self.model_dir(model).join("history.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(History::default()),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    /// Writes the history atomically (a reader never sees half a file).
    fn save(&self, model: ModelKind, history: &History) -> anyhow::Result<()> {
        let dir = self.model_dir(model);
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!("history.json.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(history)?)?;
        std::fs::rename(&tmp, dir.join("history.json"))?;
        Ok(())
    }

    /// Every bundle of a model, oldest first.
    pub fn versions(&self, model: ModelKind) -> anyhow::Result<Vec<Bundle>> {
        let dir = self.model_dir(model);
        let mut bundles = Vec::new();
        if dir.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("manifest.json").exists())
                .collect();
            entries.sort();
            for path in entries {
                bundles.push(Bundle::read(&path)?);
            }
        }
        Ok(bundles)
    }

    /// The gate's verdict on `candidate` against what served before.
    pub fn judge(&self, model: ModelKind, candidate: &Manifest) -> anyhow::Result<Verdict> {
        let history = self.history(model)?;
        let mut earlier = Vec::new();
        for version in &history.promoted {
            let bundle = self.bundle(model, version)?;
            earlier.push(bundle.manifest.macro_f1());
        }
        let serving = match &history.current {
            Some(v) => Some(self.bundle(model, v)?.manifest),
            None => None,
        };
        let rules = model.spec().map(|s| s.gate.clone()).unwrap_or_default();
        Ok(gate::judge_bundle(
            candidate,
            &earlier,
            serving.as_ref(),
            &rules,
        ))
    }

    /// Records an event without changing what serves.
    pub fn record(&self, model: ModelKind, event: HistoryEntry) -> anyhow::Result<()> {
        let mut history = self.history(model)?;
        history.events.push(event);
        self.save(model, &history)
    }

    /// Makes `version` the serving bundle. Unless `force`, the gate must agree.
    pub fn promote(&self, model: ModelKind, version: &str, force: bool) -> anyhow::Result<Verdict> {
        let bundle = self
            .bundle(model, version)
            .map_err(|e| anyhow::anyhow!("no bundle {model}/{version}: {e}"))?;
        let f1 = bundle.manifest.macro_f1();
        let verdict = self.judge(model, &bundle.manifest)?;
        let mut history = self.history(model)?;
        if !verdict.pass && !force {
            history.events.push(HistoryEntry {
                at: Utc::now(),
                action: "refused".into(),
                version: version.into(),
                macro_f1: Some(f1),
                note: verdict.reason.clone(),
            });
            self.save(model, &history)?;
            return Ok(verdict);
        }
        history.current = Some(version.to_owned());
        history.promoted.retain(|v| v != version);
        history.promoted.push(version.to_owned());
        history.events.push(HistoryEntry {
            at: Utc::now(),
            action: "promoted".into(),
            version: version.into(),
            macro_f1: Some(f1),
            note: if verdict.pass {
                verdict.reason.clone()
            } else {
                format!("forced past the gate: {}", verdict.reason)
            },
        });
        self.save(model, &history)?;
        Ok(verdict)
    }

    /// Serves the bundle that served before the current one.
    pub fn rollback(&self, model: ModelKind) -> anyhow::Result<String> {
        let mut history = self.history(model)?;
        if history.promoted.len() < 2 {
            anyhow::bail!(
                "{model}: nothing to roll back to (promoted: {:?})",
                history.promoted
            );
        }
        let from = history.promoted.pop().unwrap_or_default();
        let to = history.promoted.last().cloned().unwrap_or_default();
        history.current = Some(to.clone());
        history.events.push(HistoryEntry {
            at: Utc::now(),
            action: "rolled_back".into(),
            version: to.clone(),
            macro_f1: None,
            note: format!("from {from}"),
        });
        self.save(model, &history)?;
        Ok(to)
    }

    /// The serving bundle of a model, if any.
    pub fn current(&self, model: ModelKind) -> anyhow::Result<Option<Bundle>> {
        match self.history(model)?.current {
            Some(version) => Ok(Some(self.bundle(model, &version)?)),
            None => Ok(None),
        }
    }
}

/// The serving bundles, shared by every consumer, swapped in place when the registry's
/// `current` changes.
#[derive(Debug)]
pub struct ModelSet {
    registry: Registry,
    loaded: RwLock<BTreeMap<ModelKind, Arc<Bundle>>>,
}

impl ModelSet {
    /// Loads the current bundle of every model that has one.
    pub fn load(registry: Registry) -> anyhow::Result<Arc<ModelSet>> {
        let set = Arc::new(ModelSet {
            registry,
            loaded: RwLock::new(BTreeMap::new()),
        });
        // A bundle refused at start leaves its model unloaded (`/readyz` names it); the
        // others serve.
        if let Err(e) = set.refresh() {
            tracing::error!(error = %e, "some model bundles were refused");
        }
        release_freed_memory();
        Ok(set)
    }

    /// An empty set (no models: results carry no predictions).
    pub fn empty() -> Arc<ModelSet> {
        Arc::new(ModelSet {
            registry: Registry::new(PathBuf::from("/nonexistent")),
            loaded: RwLock::new(BTreeMap::new()),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn get(&self, model: ModelKind) -> Option<Arc<Bundle>> {
        self.loaded.read().ok().and_then(|m| m.get(&model).cloned())
    }

    /// Versions now serving.
    pub fn versions(&self) -> BTreeMap<ModelKind, String> {
        self.loaded
            .read()
            .map(|m| {
                m.iter()
                    .map(|(k, b)| (*k, b.manifest.version.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Re-reads each model's `current`; loads and swaps in what changed. Returns the models
    /// that changed. A bundle that cannot be read or is malformed is refused: the one that
    /// served goes on serving, and the refusal is logged and counted
    /// (`bugflow_model_load_failures_total`); the error names every refusal.
    ///
    /// Files are read without the lock; it is held only to swap a bundle in, so
    /// predictions never wait for disk.
    pub fn refresh(&self) -> anyhow::Result<Vec<ModelKind>> {
        let mut changed = Vec::new();
        let mut refused = Vec::new();
        for model in ModelKind::all() {
            let wanted = self.registry.history(model).map(|h| h.current);
            let wanted = match wanted {
                Ok(wanted) => wanted,
                Err(e) => {
                    refused.push(format!("{model}: {e}"));
                    continue;
                }
            };
            let serving = self.get(model).map(|b| b.manifest.version.clone());
            if wanted == serving {
                continue;
            }
            let bundle = match &wanted {
                Some(version) => match self.registry.bundle(model, version) {
                    Ok(bundle) => Some(Arc::new(bundle)),
                    Err(e) => {
                        metrics::counter!("bugflow_model_load_failures_total", "model" => model.name())
                            .increment(1);
                        tracing::error!(model = %model, version = %version, error = %e, serving = ?serving, "refused a model bundle; still serving the loaded one");
                        refused.push(format!("{model}/{version}: {e}"));
                        continue;
                    }
                },
                None => None,
            };
            let mut loaded = self
                .loaded
                .write()
                .map_err(|_| anyhow::anyhow!("model set lock poisoned"))?;
            match bundle {
                Some(bundle) => {
                    tracing::info!(model = %model, version = %bundle.manifest.version, "serving model bundle");
                    loaded.insert(model, bundle);
                }
                None => {
                    loaded.remove(&model);
                }
            }
            changed.push(model);
        }
        if !refused.is_empty() {
            anyhow::bail!("refused: {}", refused.join("; "));
        }
        Ok(changed)
    }

    /// Refreshes every `every` until `shutdown`: a promotion or rollback reaches a running
    /// service without a restart.
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let set = self.clone();
                    match tokio::task::spawn_blocking(move || set.refresh()).await {
                        Ok(Ok(changed)) if !changed.is_empty() => {
                            metrics::counter!("bugflow_model_reloads_total").increment(changed.len() as u64);
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "model refresh failed; still serving the loaded bundles"),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Gives the pages freed while reading bundles back to the system. Reading a 25 MB
/// `weights.json` leaves its text and the parser's buffers free but resident in the
/// allocator's heap; without this a service with every model loaded keeps twice the memory
/// its models need.
fn release_freed_memory() {
    // SAFETY: both only return free pages to the kernel (mimalloc's, the binary's
    // allocator, and glibc's, for what is allocated outside it); no live allocation is
    // touched.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        libc::malloc_trim(0);
    }
}
