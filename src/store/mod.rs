//! The store: what bugflow did, so that it never does it twice.
//!
//! SQLite by default (a file path), PostgreSQL when the location is a `postgres://` URL (when
//! consumers scale out to several processes); `backend` holds the SQL layer. Tables, one
//! file each:
//! * `effects` — every Bugzilla write and every skip, keyed by
//!   `(consumer, subject, event, model versions)`: a redelivered or duplicated event finds
//!   its key and does not write again;
//! * `locks` — leases on a name (one writer per bug at a time), renewed while held;
//! * `write_budget` — the writer's hourly cap, counted atomically;
//! * `watermarks` — named values (the REST poller's `last_change_time`, the bot's login);
//! * `predictions` and `labels` — what bugflow predicted (by the serving bundle, and by a
//!   shadow bundle beside it, with the top-class probability), and what a human set
//!   afterwards beside the serving prediction; `shadow_labels` — the same label beside the
//!   shadow's prediction (`bugflow models compare`, the live report);
//! * `dead_letters` — each message that could not be processed, with why (bounded, pruned);
//! * `api_results` and `api_jobs` — the prediction API's answers (with the bug's
//!   `last_change_time` they were computed at) and the requests sent to the workers.
//!

mod api_cache;
mod backend;
mod dead_letters;
mod effects;
mod labels;
mod locks;
mod prune;
mod watermarks;

pub use api_cache::ApiResult;
pub use dead_letters::{DeadLetter, NewDeadLetter};
pub use effects::{Claim, Effect, EffectState};
pub use labels::{LiveLabel, Predicted, PredictionRow, Role};

use backend::{Backend, Cell, Param};

/// How long `/readyz` waits for the store to answer.
pub const PING_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub struct Store {
    backend: Backend,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS effects (
         key TEXT PRIMARY KEY, consumer TEXT NOT NULL, subject TEXT NOT NULL,
         outcome TEXT NOT NULL, reason TEXT NOT NULL, request TEXT, updated_at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS effects_by_time ON effects (outcome, updated_at)",
    "CREATE TABLE IF NOT EXISTS watermarks (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS predictions (
         bug_id BIGINT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
         class TEXT NOT NULL, at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS predictions_by_bug ON predictions (bug_id, model, at)",
    "CREATE INDEX IF NOT EXISTS predictions_by_model ON predictions (model, at)",
    "CREATE TABLE IF NOT EXISTS labels (
         bug_id BIGINT NOT NULL, model TEXT NOT NULL, predicted TEXT NOT NULL,
         version TEXT NOT NULL, truth TEXT NOT NULL, by TEXT NOT NULL, at TEXT NOT NULL,
         PRIMARY KEY (bug_id, model, truth, at))",
    "CREATE INDEX IF NOT EXISTS labels_by_model ON labels (model, at)",
    "CREATE TABLE IF NOT EXISTS shadow_labels (
         bug_id BIGINT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
         predicted TEXT NOT NULL, confidence TEXT, truth TEXT NOT NULL, at TEXT NOT NULL,
         PRIMARY KEY (bug_id, model, version, truth, at))",
    "CREATE TABLE IF NOT EXISTS api_results (
         key TEXT PRIMARY KEY, result TEXT NOT NULL, change_time TEXT, updated_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS locks (
         name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS write_budget (hour TEXT PRIMARY KEY, used BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dead_letters (
         id TEXT PRIMARY KEY, at TEXT NOT NULL, consumer TEXT NOT NULL, stage TEXT NOT NULL,
         reason TEXT NOT NULL, exchange TEXT NOT NULL, routing_key TEXT NOT NULL,
         headers TEXT NOT NULL, body TEXT NOT NULL, body_encoding TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (at)",
    "CREATE TABLE IF NOT EXISTS api_jobs (key TEXT PRIMARY KEY, enqueued_at TEXT NOT NULL)",
];

/// Columns added after a table was first shipped: added to a store that lacks them. (An
/// `ADD COLUMN` of a column that is there fails, in both backends, with an error that
/// [`Backend::create_tables`] passes over.) `confidence` is the top-class probability, kept as text so
/// that both backends store every digit alike.
const ADDED_COLUMNS: &[&str] = &[
    "ALTER TABLE predictions ADD COLUMN role TEXT NOT NULL DEFAULT 'serving'",
    "ALTER TABLE predictions ADD COLUMN confidence TEXT",
    "ALTER TABLE labels ADD COLUMN confidence TEXT",
];

impl Store {
    /// Opens (creating) the store at `location`: a file path, or a `postgres://` URL.
    pub async fn open(location: &str) -> anyhow::Result<Store> {
        let backend = Backend::open(location).await?;
        backend.create_tables(SCHEMA, ADDED_COLUMNS).await?;
        Ok(Store { backend })
    }

    /// Does the store answer? (`/readyz`)
    pub async fn ping(&self) -> anyhow::Result<()> {
        self.query("SELECT 1", &[]).await.map(|_| ())
    }

    async fn execute(&self, sql: &str, params: &[Param]) -> anyhow::Result<u64> {
        self.backend.execute(sql, params).await
    }

    async fn query(&self, sql: &str, params: &[Param]) -> anyhow::Result<Vec<Vec<Cell>>> {
        self.backend.query(sql, params).await
    }
}
