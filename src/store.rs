//! The store: what bugflow did, so that it never does it twice.
//!
//! SQLite by default (a file path), PostgreSQL when the location is a `postgres://` URL (when
//! consumers scale out to several processes). Tables:
//! * `effects` — every Bugzilla write and every skip, keyed by
//!   `(consumer, subject, event, model versions)`: a redelivered or duplicated event finds
//!   its key and does not write again;
//! * `watermarks` — named values (the REST poller's `last_change_time`, the bot's login);
//! * `predictions` and `labels` — what bugflow predicted, and what a human set afterwards;
//! * `api_results` and `api_jobs` — the prediction API's answers (with the bug's
//!   `last_change_time` they were computed at) and the requests sent to the workers.
//!
//! The effect protocol: [`Store::claim`] before the write, [`Store::finish`] after it. A key
//! someone else holds is "in progress" (retry later) until it is older than `stale_after`;
//! then the claimant is presumed dead and the key is taken over — the writer re-reads the
//! bug, whose history shows whether the earlier write landed.

use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use crate::secret::redact_url;

/// A statement parameter.
#[derive(Debug, Clone)]
enum Param {
    Int(i64),
    Text(String),
    OptText(Option<String>),
}

/// A result cell.
#[derive(Debug, Clone)]
enum Cell {
    Int(i64),
    Text(Option<String>),
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Cell::Text(t) => t.clone().unwrap_or_default(),
            Cell::Int(i) => i.to_string(),
        }
    }

    fn opt_text(&self) -> Option<String> {
        match self {
            Cell::Text(t) => t.clone(),
            Cell::Int(i) => Some(i.to_string()),
        }
    }

    fn int(&self) -> i64 {
        match self {
            Cell::Int(i) => *i,
            Cell::Text(t) => t.as_deref().and_then(|t| t.parse().ok()).unwrap_or(0),
        }
    }
}

enum Backend {
    Sqlite(Mutex<rusqlite::Connection>),
    Postgres(tokio_postgres::Client),
}

pub struct Store {
    backend: Backend,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Nobody did this yet (or its claimant is presumed dead): go ahead.
    Proceed,
    /// Another worker claimed it moments ago: try again later.
    InProgress,
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
    "CREATE TABLE IF NOT EXISTS labels (
         bug_id BIGINT NOT NULL, model TEXT NOT NULL, predicted TEXT NOT NULL,
         version TEXT NOT NULL, truth TEXT NOT NULL, by TEXT NOT NULL, at TEXT NOT NULL,
         PRIMARY KEY (bug_id, model, truth, at))",
    "CREATE TABLE IF NOT EXISTS api_results (
         key TEXT PRIMARY KEY, result TEXT NOT NULL, change_time TEXT, updated_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS api_jobs (key TEXT PRIMARY KEY, enqueued_at TEXT NOT NULL)",
];

/// A cached answer of the prediction API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResult {
    pub result: Value,
    /// The bug's `last_change_time` when it was computed (none for pushes and unavailable bugs).
    pub change_time: Option<String>,
}

/// SQLite's `?1` placeholders as PostgreSQL's `$1`.
fn dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl Store {
    /// Opens (creating) the store at `location`: a file path, or a `postgres://` URL.
    pub async fn open(location: &str) -> anyhow::Result<Store> {
        let backend =
            if location.starts_with("postgres://") || location.starts_with("postgresql://") {
                let (client, connection) = tokio_postgres::connect(location, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| anyhow::anyhow!("store {}: {e}", redact_url(location)))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::error!(error = %e, "store connection to PostgreSQL ended");
                    }
                });
                Backend::Postgres(client)
            } else {
                let path = std::path::Path::new(location);
                if let Some(parent) = path.parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent)?;
                }
                let db = rusqlite::Connection::open(path)
                    .map_err(|e| anyhow::anyhow!("store {location}: {e}"))?;
                db.execute_batch("PRAGMA journal_mode = WAL;")?;
                Backend::Sqlite(Mutex::new(db))
            };
        let store = Store { backend };
        for statement in SCHEMA {
            store.execute(statement, &[]).await?;
        }
        Ok(store)
    }

    async fn execute(&self, sql: &str, params: &[Param]) -> anyhow::Result<u64> {
        match &self.backend {
            Backend::Sqlite(db) => {
                let db = db.lock().unwrap_or_else(|p| p.into_inner());
                Ok(db.execute(
                    sql,
                    rusqlite::params_from_iter(params.iter().map(sqlite_value)),
                )? as u64)
            }
            Backend::Postgres(client) => {
                let values = pg_values(params);
                let refs = pg_refs(&values);
                Ok(client.execute(&dollar(sql), &refs).await?)
            }
        }
    }

    async fn query(&self, sql: &str, params: &[Param]) -> anyhow::Result<Vec<Vec<Cell>>> {
        match &self.backend {
            Backend::Sqlite(db) => {
                let db = db.lock().unwrap_or_else(|p| p.into_inner());
                let mut stmt = db.prepare(sql)?;
                let n = stmt.column_count();
                let rows = stmt.query_map(
                    rusqlite::params_from_iter(params.iter().map(sqlite_value)),
                    |row| {
                        (0..n)
                            .map(|i| {
                                Ok(match row.get_ref(i)? {
                                    rusqlite::types::ValueRef::Integer(v) => Cell::Int(v),
                                    rusqlite::types::ValueRef::Null => Cell::Text(None),
                                    other => Cell::Text(Some(
                                        String::from_utf8_lossy(
                                            other.as_bytes().unwrap_or_default(),
                                        )
                                        .into_owned(),
                                    )),
                                })
                            })
                            .collect::<Result<Vec<_>, rusqlite::Error>>()
                    },
                )?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            Backend::Postgres(client) => {
                let values = pg_values(params);
                let refs = pg_refs(&values);
                let rows = client.query(&dollar(sql), &refs).await?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| match *row.columns()[i].type_() {
                                tokio_postgres::types::Type::INT8 => {
                                    Cell::Int(row.get::<_, i64>(i))
                                }
                                _ => Cell::Text(row.get::<_, Option<String>>(i)),
                            })
                            .collect()
                    })
                    .collect())
            }
        }
    }

    /// Claims `key` for an effect about `subject`.
    pub async fn claim(
        &self,
        key: &str,
        consumer: &str,
        subject: &str,
        stale_after: Duration,
    ) -> anyhow::Result<Claim> {
        let now = Utc::now();
        let inserted = self
            .execute(
                "INSERT INTO effects (key, consumer, subject, outcome, reason, updated_at)
                 VALUES (?1, ?2, ?3, 'pending', '', ?4) ON CONFLICT (key) DO NOTHING",
                &[
                    text(key),
                    text(consumer),
                    text(subject),
                    text(&now.to_rfc3339()),
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(Claim::Proceed);
        }
        let row = self
            .query(
                "SELECT outcome, reason FROM effects WHERE key = ?1",
                &[text(key)],
            )
            .await?;
        let (outcome, reason) = row
            .first()
            .map(|r| (r[0].text(), r[1].text()))
            .unwrap_or_default();
        if outcome != "pending" {
            return Ok(Claim::Done { outcome, reason });
        }
        let cutoff = now - chrono::Duration::from_std(stale_after).unwrap_or_default();
        let taken = self
            .execute(
                "UPDATE effects SET updated_at = ?2 WHERE key = ?1 AND outcome = 'pending' AND updated_at <= ?3",
                &[text(key), text(&now.to_rfc3339()), text(&cutoff.to_rfc3339())],
            )
            .await?;
        Ok(if taken == 1 {
            Claim::Proceed
        } else {
            Claim::InProgress
        })
    }

    /// Records how a claimed effect ended: `written`, `dry_run`, `skipped`, `published`.
    pub async fn finish(
        &self,
        key: &str,
        outcome: &str,
        reason: &str,
        request: Option<&str>,
    ) -> anyhow::Result<()> {
        self.execute(
            "UPDATE effects SET outcome = ?2, reason = ?3, request = ?4, updated_at = ?5 WHERE key = ?1",
            &[
                text(key),
                text(outcome),
                text(reason),
                Param::OptText(request.map(str::to_owned)),
                text(&Utc::now().to_rfc3339()),
            ],
        )
        .await?;
        Ok(())
    }

    /// Writes made in the last hour (for the hourly cap).
    pub async fn writes_in_last_hour(&self) -> anyhow::Result<u64> {
        let since = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        let rows = self
            .query(
                "SELECT COUNT(*) FROM effects WHERE outcome = 'written' AND updated_at >= ?1",
                &[text(&since)],
            )
            .await?;
        Ok(rows.first().map(|r| r[0].int()).unwrap_or(0) as u64)
    }

    /// Every effect about `subject`, oldest first.
    pub async fn effects(&self, subject: &str) -> anyhow::Result<Vec<Effect>> {
        let rows = self
            .query(
                "SELECT key, consumer, subject, outcome, reason, request FROM effects
                 WHERE subject = ?1 ORDER BY updated_at",
                &[text(subject)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Effect {
                key: r[0].text(),
                consumer: r[1].text(),
                subject: r[2].text(),
                outcome: r[3].text(),
                reason: r[4].text(),
                request: r[5].opt_text(),
            })
            .collect())
    }

    /// Remembers what a model predicted for a bug.
    pub async fn record_prediction(
        &self,
        bug_id: u64,
        model: &str,
        version: &str,
        class: &str,
    ) -> anyhow::Result<()> {
        self.execute(
            "INSERT INTO predictions (bug_id, model, version, class, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            &[Param::Int(bug_id as i64), text(model), text(version), text(class), text(&Utc::now().to_rfc3339())],
        )
        .await?;
        Ok(())
    }

    /// A human set `truth` for `model`'s field on a bug bugflow predicted: keep the pair.
    /// Returns false when bugflow never predicted this bug.
    pub async fn harvest(
        &self,
        bug_id: u64,
        model: &str,
        truth: &str,
        by: &str,
        at: &str,
    ) -> anyhow::Result<bool> {
        let last = self
            .query(
                "SELECT class, version FROM predictions WHERE bug_id = ?1 AND model = ?2 ORDER BY at DESC LIMIT 1",
                &[Param::Int(bug_id as i64), text(model)],
            )
            .await?;
        let Some(row) = last.first() else {
            return Ok(false);
        };
        self.execute(
            "INSERT INTO labels (bug_id, model, predicted, version, truth, by, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
            &[
                Param::Int(bug_id as i64),
                text(model),
                text(&row[0].text()),
                text(&row[1].text()),
                text(truth),
                text(by),
                text(at),
            ],
        )
        .await?;
        Ok(true)
    }

    /// Every harvested label, as JSON objects (`bugflow data labels`).
    pub async fn labels(&self) -> anyhow::Result<Vec<Value>> {
        let rows = self
            .query(
                "SELECT bug_id, model, predicted, version, truth, by, at FROM labels ORDER BY at",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                json!({"bug_id": r[0].int(), "model": r[1].text(), "predicted": r[2].text(),
                       "version": r[3].text(), "truth": r[4].text(), "by": r[5].text(), "at": r[6].text()})
            })
            .collect())
    }

    /// The cached answers among `keys` that are younger than `max_age`.
    pub async fn api_results(
        &self,
        keys: &[String],
        max_age: Duration,
    ) -> anyhow::Result<std::collections::HashMap<String, ApiResult>> {
        let since =
            (Utc::now() - chrono::Duration::from_std(max_age).unwrap_or_default()).to_rfc3339();
        if keys.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        // One query for the whole batch: `key IN (?2, ?3, …)`.
        let placeholders: Vec<String> = (0..keys.len()).map(|i| format!("?{}", i + 2)).collect();
        let mut params = vec![text(&since)];
        params.extend(keys.iter().map(|k| text(k)));
        let rows = self
            .query(
                &format!(
                    "SELECT key, result, change_time FROM api_results
                     WHERE updated_at >= ?1 AND key IN ({})",
                    placeholders.join(", ")
                ),
                &params,
            )
            .await?;
        let mut found = std::collections::HashMap::new();
        for row in rows {
            let result = serde_json::from_str(&row[1].text())?;
            found.insert(
                row[0].text(),
                ApiResult {
                    result,
                    change_time: row[2].opt_text(),
                },
            );
        }
        Ok(found)
    }

    /// Stores an answer (replacing an older one) and closes its pending request.
    pub async fn put_api_result(
        &self,
        key: &str,
        result: &Value,
        change_time: Option<&str>,
    ) -> anyhow::Result<()> {
        self.execute(
            "INSERT INTO api_results (key, result, change_time, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET result = excluded.result,
                 change_time = excluded.change_time, updated_at = excluded.updated_at",
            &[
                text(key),
                text(&result.to_string()),
                Param::OptText(change_time.map(str::to_owned)),
                text(&Utc::now().to_rfc3339()),
            ],
        )
        .await?;
        self.execute("DELETE FROM api_jobs WHERE key = ?1", &[text(key)])
            .await?;
        Ok(())
    }

    /// Drops an answer that no longer holds (the bug changed since).
    pub async fn drop_api_result(&self, key: &str) -> anyhow::Result<()> {
        self.execute("DELETE FROM api_results WHERE key = ?1", &[text(key)])
            .await?;
        Ok(())
    }

    /// Marks the request for `key` as sent unless one was sent less than `timeout` ago.
    /// Returns true when the caller must send it (exactly one caller wins a race).
    pub async fn begin_api_job(&self, key: &str, timeout: Duration) -> anyhow::Result<bool> {
        let now = Utc::now();
        let inserted = self
            .execute(
                "INSERT INTO api_jobs (key, enqueued_at) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                &[text(key), text(&now.to_rfc3339())],
            )
            .await?;
        if inserted == 1 {
            return Ok(true);
        }
        let cutoff = now - chrono::Duration::from_std(timeout).unwrap_or_default();
        let taken = self
            .execute(
                "UPDATE api_jobs SET enqueued_at = ?2 WHERE key = ?1 AND enqueued_at <= ?3",
                &[
                    text(key),
                    text(&now.to_rfc3339()),
                    text(&cutoff.to_rfc3339()),
                ],
            )
            .await?;
        Ok(taken == 1)
    }

    /// Forgets a request that could not be sent, so that the next call sends it.
    pub async fn abandon_api_job(&self, key: &str) -> anyhow::Result<()> {
        self.execute("DELETE FROM api_jobs WHERE key = ?1", &[text(key)])
            .await?;
        Ok(())
    }

    pub async fn watermark(&self, name: &str) -> anyhow::Result<Option<String>> {
        let rows = self
            .query(
                "SELECT value FROM watermarks WHERE name = ?1",
                &[text(name)],
            )
            .await?;
        Ok(rows.first().map(|r| r[0].text()))
    }

    pub async fn set_watermark(&self, name: &str, value: &str) -> anyhow::Result<()> {
        self.execute(
            "INSERT INTO watermarks (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            &[text(name), text(value)],
        )
        .await?;
        Ok(())
    }
}

fn text(s: &str) -> Param {
    Param::Text(s.to_owned())
}

fn sqlite_value(p: &Param) -> rusqlite::types::Value {
    match p {
        Param::Int(i) => rusqlite::types::Value::Integer(*i),
        Param::Text(t) => rusqlite::types::Value::Text(t.clone()),
        Param::OptText(Some(t)) => rusqlite::types::Value::Text(t.clone()),
        Param::OptText(None) => rusqlite::types::Value::Null,
    }
}

/// The boxed values as the `&dyn ToSql` slice tokio-postgres takes.
fn pg_refs(values: &[PgValue]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

type PgValue = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

fn pg_values(params: &[Param]) -> Vec<PgValue> {
    params
        .iter()
        .map(|p| -> PgValue {
            match p {
                Param::Int(i) => Box::new(*i),
                Param::Text(t) => Box::new(t.clone()),
                Param::OptText(t) => Box::new(t.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_translate() {
        assert_eq!(
            dollar("a = ?1 AND b = ?12 OR c = '?'"),
            "a = $1 AND b = $12 OR c = '?'"
        );
    }
}
