//! The model registry: which bundle of each model serves, and its history.
//!
//! ```text
//! models/<model>/history.json   {"current": "<version>", "shadow": "<version>", "promoted": [...], "events": [...]}
//! models/<model>/<version>/     bundles
//! ```
//!
//! `promoted` is the stack of versions that served, oldest first: a rollback pops the current
//! one and serves the one before it. `shadow` is a candidate that scores live traffic beside
//! the serving bundle (`bugflow models shadow`): its predictions are stored and published on
//! their own routing key, never written to Bugzilla nor answered on the API, until
//! `bugflow models compare` shows it is not worse and it is promoted. Every train,
//! promotion, refusal, shadow and rollback is an event with its time and macro F1, so the
//! history is never rewritten, only appended to.

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
    /// The candidate scoring live traffic beside `current`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// The time the shadow started (`bugflow models release --after-days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_since: Option<DateTime<Utc>>,
    /// Versions that served, oldest first; the last is `current`.
    pub promoted: Vec<String>,
    pub events: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    /// `trained`, `promoted`, `refused`, `rolled_back`, `shadowed`, `shadow_stopped`.
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

    /// The manifest of bundle `version` of `model`, weights unread (the live report and the
    /// comparison need its classes and test metrics, not a 25 MB weights file).
    pub fn manifest(&self, model: ModelKind, version: &str) -> anyhow::Result<Manifest> {
        let manifest = Bundle::read_manifest(&self.checked_bundle_dir(model, version)?)?;
        if manifest.model != model || manifest.version != version {
            anyhow::bail!(
                "{model}/{version}: its manifest says {}/{}",
                manifest.model,
                manifest.version
            );
        }
        Ok(manifest)
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

    /// Reads the history, lets `change` change it, and writes it back if it changed, while
    /// holding an exclusive lock on `history.lock` beside it: two commands changing one
    /// model's history at once (a scheduled `train` promoting during a `models rollback`)
    /// take turns, and neither loses the other's change. Readers take no lock: the file is
    /// replaced whole ([`save`](Self::save)). An error from `change` writes nothing.
    fn update<T>(
        &self,
        model: ModelKind,
        change: impl FnOnce(&mut History) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let dir = self.model_dir(model);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("history.lock");
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        lock.lock()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let before = self.history(model)?;
        let mut history = before.clone();
        let out = change(&mut history)?;
        if history != before {
            self.save(model, &history)?;
        }
        // Dropping the file gives the lock back.
        drop(lock);
        Ok(out)
    }

    /// Writes the history atomically (a reader never sees half a file). Only under
    /// [`update`](Self::update)'s lock, so that one temporary file a model is enough.
    fn save(&self, model: ModelKind, history: &History) -> anyhow::Result<()> {
        let dir = self.model_dir(model);
        let tmp = dir.join("history.json.tmp");
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
        self.judge_on(model, &self.history(model)?, candidate)
    }

    /// [`judge`](Self::judge) against a history already read. The gate reads the earlier
    /// bundles' manifests only, not their weights.
    fn judge_on(
        &self,
        model: ModelKind,
        history: &History,
        candidate: &Manifest,
    ) -> anyhow::Result<Verdict> {
        let mut earlier = Vec::new();
        for version in &history.promoted {
            earlier.push(self.manifest(model, version)?.macro_f1());
        }
        let serving = match &history.current {
            Some(v) => Some(self.manifest(model, v)?),
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
        self.update(model, |history| {
            history.events.push(event);
            Ok(())
        })
    }

    /// Makes `version` the serving bundle. Unless `force`, the gate must agree.
    pub fn promote(&self, model: ModelKind, version: &str, force: bool) -> anyhow::Result<Verdict> {
        let bundle = self
            .bundle(model, version)
            .map_err(|e| anyhow::anyhow!("no bundle {model}/{version}: {e}"))?;
        let f1 = bundle.manifest.macro_f1();
        // Judged under the lock, on the history it changes.
        self.update(model, |history| {
            let verdict = self.judge_on(model, history, &bundle.manifest)?;
            if !verdict.pass && !force {
                history.events.push(HistoryEntry {
                    at: Utc::now(),
                    action: "refused".into(),
                    version: version.into(),
                    macro_f1: Some(f1),
                    note: verdict.reason.clone(),
                });
                return Ok(verdict);
            }
            history.current = Some(version.to_owned());
            if history.shadow.as_deref() == Some(version) {
                history.shadow = None;
                history.shadow_since = None;
            }
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
            Ok(verdict)
        })
    }

    /// Makes `version` score live traffic beside the serving bundle. It must be a trained
    /// bundle of this model that does not serve already; a shadow running before is
    /// replaced (both recorded).
    pub fn shadow(&self, model: ModelKind, version: &str) -> anyhow::Result<()> {
        let bundle = self
            .bundle(model, version)
            .map_err(|e| anyhow::anyhow!("no bundle {model}/{version}: {e}"))?;
        if let Some(why) = &bundle.manifest.untrained {
            anyhow::bail!("{model}/{version} is untrained ({why}): it has nothing to shadow");
        }
        self.update(model, |history| {
            if history.current.as_deref() == Some(version) {
                anyhow::bail!("{model}/{version} is the serving bundle: shadow another version");
            }
            let note = match history.shadow.replace(version.to_owned()) {
                Some(before) if before != version => format!("replaces shadow {before}"),
                _ => String::new(),
            };
            history.shadow_since = Some(Utc::now());
            history.events.push(HistoryEntry {
                at: Utc::now(),
                action: "shadowed".into(),
                version: version.into(),
                macro_f1: Some(bundle.manifest.macro_f1()),
                note,
            });
            Ok(())
        })
    }

    /// Stops the shadow, if one runs; returns its version.
    pub fn stop_shadow(&self, model: ModelKind, why: &str) -> anyhow::Result<Option<String>> {
        self.update(model, |history| {
            let Some(version) = history.shadow.take() else {
                return Ok(None);
            };
            history.shadow_since = None;
            history.events.push(HistoryEntry {
                at: Utc::now(),
                action: "shadow_stopped".into(),
                version: version.clone(),
                macro_f1: None,
                note: why.to_owned(),
            });
            Ok(Some(version))
        })
    }

    /// Serves the bundle that served before the current one; `why` is recorded.
    pub fn rollback(&self, model: ModelKind, why: &str) -> anyhow::Result<String> {
        self.update(model, |history| {
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
                note: if why.is_empty() {
                    format!("from {from}")
                } else {
                    format!("from {from}: {why}")
                },
            });
            Ok(to)
        })
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
/// `current` changes; beside them each model's shadow bundle, if it has one.
#[derive(Debug)]
pub struct ModelSet {
    registry: Registry,
    loaded: RwLock<BTreeMap<ModelKind, Arc<Bundle>>>,
    shadows: RwLock<BTreeMap<ModelKind, Arc<Bundle>>>,
    /// Versions that serve whatever the registry says (a replay through other bundles).
    pinned: BTreeMap<ModelKind, String>,
}

/// Which of a model's bundles a slot of the set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Serving,
    Shadow,
}

impl ModelSet {
    /// Loads the current bundle of every model that has one, and its shadow.
    pub fn load(registry: Registry) -> anyhow::Result<Arc<ModelSet>> {
        let set = Arc::new(ModelSet {
            registry,
            loaded: RwLock::new(BTreeMap::new()),
            shadows: RwLock::new(BTreeMap::new()),
            pinned: BTreeMap::new(),
        });
        // A bundle refused at start leaves its model unloaded (`/readyz` names it); the
        // others serve.
        if let Err(e) = set.refresh() {
            tracing::error!(error = %e, "some model bundles were refused");
        }
        release_freed_memory();
        Ok(set)
    }

    /// This set's serving bundles with `pinned` versions in place of theirs
    /// (`bugflow replay --bundle MODEL=VERSION`): only the pinned bundles are read, the
    /// others are shared. A pinned version that cannot be read is an error; the set has no
    /// shadows, and a refresh keeps the pinned versions.
    pub fn with_pinned(
        &self,
        pinned: BTreeMap<ModelKind, String>,
    ) -> anyhow::Result<Arc<ModelSet>> {
        let mut loaded = self.loaded.read().map(|m| m.clone()).unwrap_or_default();
        for (model, version) in &pinned {
            loaded.insert(*model, Arc::new(self.registry.bundle(*model, version)?));
        }
        Ok(Arc::new(ModelSet {
            registry: self.registry.clone(),
            loaded: RwLock::new(loaded),
            shadows: RwLock::new(BTreeMap::new()),
            pinned,
        }))
    }

    /// An empty set (no models: results carry no predictions).
    pub fn empty() -> Arc<ModelSet> {
        Arc::new(ModelSet {
            registry: Registry::new(PathBuf::from("/nonexistent")),
            loaded: RwLock::new(BTreeMap::new()),
            shadows: RwLock::new(BTreeMap::new()),
            pinned: BTreeMap::new(),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn get(&self, model: ModelKind) -> Option<Arc<Bundle>> {
        self.loaded.read().ok().and_then(|m| m.get(&model).cloned())
    }

    /// The model's shadow bundle, if one runs.
    pub fn shadow(&self, model: ModelKind) -> Option<Arc<Bundle>> {
        self.shadows
            .read()
            .ok()
            .and_then(|m| m.get(&model).cloned())
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

    fn slot(&self, slot: Slot) -> &RwLock<BTreeMap<ModelKind, Arc<Bundle>>> {
        match slot {
            Slot::Serving => &self.loaded,
            Slot::Shadow => &self.shadows,
        }
    }

    /// Re-reads each model's `current` and `shadow`; loads and swaps in what changed.
    /// Returns the models whose serving bundle changed. A bundle that cannot be read or is
    /// malformed is refused: the one that served goes on serving, and the refusal is logged
    /// and counted (`bugflow_model_load_failures_total`); the error names every refusal.
    ///
    /// Files are read without the lock; it is held only to swap a bundle in, so
    /// predictions never wait for disk.
    pub fn refresh(&self) -> anyhow::Result<Vec<ModelKind>> {
        let mut changed = Vec::new();
        let mut refused = Vec::new();
        for model in ModelKind::all() {
            let history = match self.registry.history(model) {
                Ok(history) => history,
                Err(e) => {
                    refused.push(format!("{model}: {e}"));
                    continue;
                }
            };
            let (serving, shadow) = match self.pinned.get(&model) {
                Some(version) => (Some(version.clone()), None),
                None if !self.pinned.is_empty() => (history.current, None),
                None => (history.current, history.shadow),
            };
            match self.swap(model, Slot::Serving, serving) {
                Ok(true) => changed.push(model),
                Ok(false) => {}
                Err(e) => refused.push(e),
            }
            if let Err(e) = self.swap(model, Slot::Shadow, shadow) {
                refused.push(e);
            }
        }
        if !refused.is_empty() {
            anyhow::bail!("refused: {}", refused.join("; "));
        }
        Ok(changed)
    }

    /// Puts bundle `wanted` of `model` in `slot` (none: empties it); true when it changed.
    fn swap(&self, model: ModelKind, slot: Slot, wanted: Option<String>) -> Result<bool, String> {
        let held = self
            .slot(slot)
            .read()
            .ok()
            .and_then(|m| m.get(&model).map(|b| b.manifest.version.clone()));
        if wanted == held {
            return Ok(false);
        }
        let bundle = match &wanted {
            Some(version) => match self.registry.bundle(model, version) {
                Ok(bundle) => Some(Arc::new(bundle)),
                Err(e) => {
                    metrics::counter!("bugflow_model_load_failures_total", "model" => model.name())
                        .increment(1);
                    tracing::error!(model = %model, version = %version, slot = ?slot, error = %e, held = ?held, "refused a model bundle; keeping the loaded one");
                    return Err(format!("{model}/{version}: {e}"));
                }
            },
            None => None,
        };
        let mut loaded = self
            .slot(slot)
            .write()
            .map_err(|_| "model set lock poisoned".to_owned())?;
        match bundle {
            Some(bundle) => {
                tracing::info!(model = %model, version = %bundle.manifest.version, slot = ?slot, "model bundle loaded");
                loaded.insert(model, bundle);
            }
            None => {
                loaded.remove(&model);
            }
        }
        Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two `bugflow` commands that change one model's history at once (a scheduled
    /// `train` promoting while someone runs `models rollback`, two trainings) each read the
    /// history, change it and write it back. Before, the later write lost the earlier one's
    /// change, and writers in one process shared a temporary file name.
    #[test]
    fn changes_made_at_once_to_one_history_are_all_kept() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let registry = Registry::new(dir.path());
        let model = ModelKind::REGRESSION;
        let writers = 8;
        let each = 10;
        std::thread::scope(|scope| {
            for w in 0..writers {
                let registry = &registry;
                scope.spawn(move || {
                    for i in 0..each {
                        registry
                            .record(
                                model,
                                HistoryEntry {
                                    at: Utc::now(),
                                    action: "trained".into(),
                                    version: format!("{w}-{i}"),
                                    macro_f1: None,
                                    note: String::new(),
                                },
                            )
                            .expect("an event is recorded");
                    }
                });
            }
        });
        let mut kept: Vec<String> = registry
            .history(model)
            .expect("the history reads")
            .events
            .into_iter()
            .map(|e| e.version)
            .collect();
        kept.sort();
        let mut wanted: Vec<String> = (0..writers)
            .flat_map(|w| (0..each).map(move |i| format!("{w}-{i}")))
            .collect();
        wanted.sort();
        assert_eq!(kept, wanted);
    }
}
