//! Forgetting: every table the store grows is pruned, so that a service that runs for a year
//! does not carry a year of rows. Run hourly by `bugflow run` ([`Store::prune_every`]).
//!
//! Effects that are done, predictions, API answers and jobs older than `store_keep_days`
//! go; a pending effect stays (it is a claim: its lease decides). Expired locks and
//! past hours of the write budget go once they cannot matter. Labels stay: they are
//! training data. Dead letters are pruned as they arrive (`dead_letters`).

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Store;
use super::backend::text;

impl Store {
    /// Deletes what is older than `keep_days`; returns the rows deleted.
    pub async fn prune(&self, keep_days: u64) -> anyhow::Result<u64> {
        let days = i64::try_from(keep_days).unwrap_or(i64::MAX).min(36_500);
        let now = Utc::now();
        let cutoff = (now - chrono::Duration::days(days)).to_rfc3339();
        let this_hour = now.format("%Y-%m-%dT%H").to_string();
        let mut deleted = 0;
        for (sql, bound) in [
            (
                "DELETE FROM effects WHERE outcome <> 'pending' AND updated_at < ?1",
                &cutoff,
            ),
            ("DELETE FROM predictions WHERE at < ?1", &cutoff),
            ("DELETE FROM api_results WHERE updated_at < ?1", &cutoff),
            ("DELETE FROM api_jobs WHERE enqueued_at < ?1", &cutoff),
            ("DELETE FROM locks WHERE expires_at < ?1", &now.to_rfc3339()),
            ("DELETE FROM write_budget WHERE hour < ?1", &this_hour),
        ] {
            deleted += self.execute(sql, &[text(bound)]).await?;
        }
        Ok(deleted)
    }

    /// Prunes every `every` until `shutdown`.
    pub async fn prune_every(&self, keep_days: u64, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => match self.prune(keep_days).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, keep_days, "store pruned"),
                    Err(e) => tracing::warn!(error = %e, "pruning the store failed; next hour again"),
                },
            }
        }
    }
}
