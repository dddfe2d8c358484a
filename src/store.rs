//! The store: what bugflow did, so that it never does it twice.
//!
//! SQLite (one file, `store.path`). Tables:
//! * `effects` — every Bugzilla write and every skip, keyed by
//!   `(consumer, subject, event, model versions)`: a redelivered or duplicated event finds
//!   its key and does not write again;
//! * `watermarks` — named positions (the REST poller's `last_change_time`).
//!
//! The effect protocol: [`Store::claim`] before the write (a key already `written` means
//! "done, skip"), [`Store::finish`] after it. A key left `pending` by a crash is claimed
//! again: the writer then re-reads the bug, whose history shows whether the write landed.

use std::path::Path;
use std::sync::Mutex;

use chrono::{Duration, Utc};
use rusqlite::{Connection, OptionalExtension, params};

pub struct Store {
    db: Mutex<Connection>,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Nobody did this yet (or a previous attempt did not finish): go ahead.
    Proceed,
    /// Already done: `outcome` and `reason` of the earlier attempt.
    Done { outcome: String, reason: String },
}

/// One recorded effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub key: String,
    pub consumer: String,
    pub subject: String,
    pub outcome: String,
    pub reason: String,
    pub request: Option<String>,
}

impl Store {
    /// Opens (creating) the store; `:memory:` for a private in-memory one.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let db =
            Connection::open(path).map_err(|e| anyhow::anyhow!("store {}: {e}", path.display()))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS effects (
                 key TEXT PRIMARY KEY, consumer TEXT NOT NULL, subject TEXT NOT NULL,
                 outcome TEXT NOT NULL, reason TEXT NOT NULL, request TEXT,
                 updated_at TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS effects_by_time ON effects (outcome, updated_at);
             CREATE TABLE IF NOT EXISTS watermarks (name TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS predictions (
                 bug_id INTEGER NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
                 class TEXT NOT NULL, at TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS predictions_by_bug ON predictions (bug_id, model, at);
             CREATE TABLE IF NOT EXISTS labels (
                 bug_id INTEGER NOT NULL, model TEXT NOT NULL, predicted TEXT NOT NULL,
                 version TEXT NOT NULL, truth TEXT NOT NULL, by TEXT NOT NULL, at TEXT NOT NULL,
                 PRIMARY KEY (bug_id, model, truth, at));",
        )?;
        Ok(Store { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (each call is one statement).
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `key` for an effect about `subject`.
    pub fn claim(&self, key: &str, consumer: &str, subject: &str) -> anyhow::Result<Claim> {
        let db = self.db();
        let existing: Option<(String, String)> = db
            .query_row(
                "SELECT outcome, reason FROM effects WHERE key = ?1",
                params![key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match existing {
            Some((outcome, reason)) if outcome != "pending" => Ok(Claim::Done { outcome, reason }),
            _ => {
                db.execute(
                    "INSERT INTO effects (key, consumer, subject, outcome, reason, updated_at)
                     VALUES (?1, ?2, ?3, 'pending', '', ?4)
                     ON CONFLICT(key) DO UPDATE SET updated_at = excluded.updated_at",
                    params![key, consumer, subject, Utc::now().to_rfc3339()],
                )?;
                Ok(Claim::Proceed)
            }
        }
    }

    /// Records how a claimed effect ended: `written`, `dry_run` or `skipped`, with why.
    pub fn finish(
        &self,
        key: &str,
        outcome: &str,
        reason: &str,
        request: Option<&str>,
    ) -> anyhow::Result<()> {
        self.db().execute(
            "UPDATE effects SET outcome = ?2, reason = ?3, request = ?4, updated_at = ?5 WHERE key = ?1",
            params![key, outcome, reason, request, Utc::now().to_rfc3339()],
        )?;
        Ok(())
    }

    /// Writes made in the last hour (for the hourly cap).
    pub fn writes_in_last_hour(&self) -> anyhow::Result<u64> {
        let since = (Utc::now() - Duration::hours(1)).to_rfc3339();
        Ok(self.db().query_row(
            "SELECT COUNT(*) FROM effects WHERE outcome = 'written' AND updated_at >= ?1",
            params![since],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Every effect about `subject`, oldest first.
    pub fn effects(&self, subject: &str) -> anyhow::Result<Vec<Effect>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT key, consumer, subject, outcome, reason, request FROM effects
             WHERE subject = ?1 ORDER BY updated_at",
        )?;
        let rows = stmt.query_map(params![subject], |r| {
            Ok(Effect {
                key: r.get(0)?,
                consumer: r.get(1)?,
                subject: r.get(2)?,
                outcome: r.get(3)?,
                reason: r.get(4)?,
                request: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Remembers what a model predicted for a bug.
    pub fn record_prediction(
        &self,
        bug_id: u64,
        model: &str,
        version: &str,
        class: &str,
    ) -> anyhow::Result<()> {
        self.db().execute(
            "INSERT INTO predictions (bug_id, model, version, class, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![bug_id as i64, model, version, class, Utc::now().to_rfc3339()],
        )?;
        Ok(())
    }

    /// A human set `truth` for `model`'s field on a bug bugflow predicted: keep the pair.
    /// Returns false when bugflow never predicted this bug.
    pub fn harvest(
        &self,
        bug_id: u64,
        model: &str,
        truth: &str,
        by: &str,
        at: &str,
    ) -> anyhow::Result<bool> {
        let db = self.db();
        let last: Option<(String, String)> = db
            .query_row(
                "SELECT class, version FROM predictions WHERE bug_id = ?1 AND model = ?2
                 ORDER BY at DESC LIMIT 1",
                params![bug_id as i64, model],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((predicted, version)) = last else {
            return Ok(false);
        };
        db.execute(
            "INSERT OR IGNORE INTO labels (bug_id, model, predicted, version, truth, by, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![bug_id as i64, model, predicted, version, truth, by, at],
        )?;
        Ok(true)
    }

    /// Every harvested label, as JSON objects (`bugflow data labels`).
    pub fn labels(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT bug_id, model, predicted, version, truth, by, at FROM labels ORDER BY at",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(serde_json::json!({
                "bug_id": r.get::<_, i64>(0)?, "model": r.get::<_, String>(1)?,
                "predicted": r.get::<_, String>(2)?, "version": r.get::<_, String>(3)?,
                "truth": r.get::<_, String>(4)?, "by": r.get::<_, String>(5)?, "at": r.get::<_, String>(6)?,
            }))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn watermark(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .db()
            .query_row(
                "SELECT value FROM watermarks WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_watermark(&self, name: &str, value: &str) -> anyhow::Result<()> {
        self.db().execute(
            "INSERT INTO watermarks (name, value) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_effect_is_never_claimed_again_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.claim("k", "bug-triage", "1").unwrap(), Claim::Proceed);
        // Crashed before finishing: the key may be claimed again.
        assert_eq!(store.claim("k", "bug-triage", "1").unwrap(), Claim::Proceed);
        store
            .finish("k", "written", "component", Some("{}"))
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.claim("k", "bug-triage", "1").unwrap(),
            Claim::Done {
                outcome: "written".into(),
                reason: "component".into()
            }
        );
        assert_eq!(store.writes_in_last_hour().unwrap(), 1);
        store
            .set_watermark("poller", "2026-01-01T00:00:00Z")
            .unwrap();
        assert_eq!(
            store.watermark("poller").unwrap().as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
    }
}
