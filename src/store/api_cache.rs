//! The prediction API's answers (with the bug's `last_change_time` they were computed at)
//! and the requests sent to the workers.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use chrono::Utc;

use super::Store;
use super::backend::{Param, text};

/// A cached answer of the prediction API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResult {
    pub result: Value,
    /// The bug's `last_change_time` when it was computed (none for pushes and unavailable bugs).
    pub change_time: Option<String>,
}

impl Store {
    /// The cached answers among `keys` that are younger than `max_age`.
    pub async fn api_results(
        &self,
        keys: &[String],
        max_age: Duration,
    ) -> anyhow::Result<HashMap<String, ApiResult>> {
        let since =
            (Utc::now() - chrono::Duration::from_std(max_age).unwrap_or_default()).to_rfc3339();
        if keys.is_empty() {
            return Ok(HashMap::new());
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
        let mut found = HashMap::new();
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
}
