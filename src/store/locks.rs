//! Leases and the write budget: what keeps two workers from writing one bug at once, and the
//! hourly cap from being passed by writers that check it at the same moment.
//!
//! A lock is a lease: a row `(name, owner, expires_at)`. [`Store::lock`] takes it when nobody
//! holds it or its lease ran out (its holder died: `kill -9`, a lost machine); the holder
//! renews it while it works ([`Store::renew_lock`]) and drops it when done
//! ([`Store::unlock`]). Each statement is one atomic step on both backends, so two workers
//! never both hold a lock, whatever their interleaving.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Store;
use super::backend::{Param, text};

/// When a lease taken now ends (a lease is at most a day: config checks keep it short).
fn until(lease: Duration) -> String {
    let lease = chrono::Duration::from_std(lease.min(MAX_LEASE)).unwrap_or_default();
    (Utc::now() + lease).to_rfc3339()
}

/// The longest lease taken.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// The clock hour `at` falls in, the write budget's window (`2026-12-01T22`).
fn hour_of(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H").to_string()
}

impl Store {
    /// Takes the lock `name` for `owner` for `lease`; false when someone else holds it.
    pub async fn lock(&self, name: &str, owner: &str, lease: Duration) -> anyhow::Result<bool> {
        let now = Utc::now().to_rfc3339();
        let inserted = self
            .execute(
                "INSERT INTO locks (name, owner, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                &[text(name), text(owner), text(&until(lease))],
            )
            .await?;
        if inserted == 1 {
            return Ok(true);
        }
        // Taken over only when its lease ran out (or it is ours already).
        let taken = self
            .execute(
                "UPDATE locks SET owner = ?2, expires_at = ?3
                 WHERE name = ?1 AND (expires_at <= ?4 OR owner = ?2)",
                &[text(name), text(owner), text(&until(lease)), text(&now)],
            )
            .await?;
        Ok(taken == 1)
    }

    /// Extends `owner`'s lease on `name`; false when it is no longer `owner`'s.
    pub async fn renew_lock(
        &self,
        name: &str,
        owner: &str,
        lease: Duration,
    ) -> anyhow::Result<bool> {
        let renewed = self
            .execute(
                "UPDATE locks SET expires_at = ?3 WHERE name = ?1 AND owner = ?2",
                &[text(name), text(owner), text(&until(lease))],
            )
            .await?;
        Ok(renewed == 1)
    }

    /// Drops `owner`'s lock on `name` (nothing when someone else holds it now).
    pub async fn unlock(&self, name: &str, owner: &str) -> anyhow::Result<()> {
        self.execute(
            "DELETE FROM locks WHERE name = ?1 AND owner = ?2",
            &[text(name), text(owner)],
        )
        .await?;
        Ok(())
    }

    /// Takes one write from this clock hour's budget of `cap`; false when it is spent.
    /// Returns the hour taken from (to [`Store::refund_write`] a write that did not happen).
    ///
    /// One conditional `UPDATE`: on PostgreSQL the second of two concurrent updates waits
    /// for the first's row lock and re-checks `used < cap`, on SQLite writes are serial, so
    /// the cap holds under any concurrency.
    pub async fn reserve_write(&self, cap: u64) -> anyhow::Result<Option<String>> {
        let hour = hour_of(Utc::now());
        self.execute(
            "INSERT INTO write_budget (hour, used) VALUES (?1, 0) ON CONFLICT (hour) DO NOTHING",
            &[text(&hour)],
        )
        .await?;
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let taken = self
            .execute(
                "UPDATE write_budget SET used = used + 1 WHERE hour = ?1 AND used < ?2",
                &[text(&hour), Param::Int(cap)],
            )
            .await?;
        Ok((taken == 1).then_some(hour))
    }

    /// Gives back a write reserved in `hour` that was not made.
    pub async fn refund_write(&self, hour: &str) -> anyhow::Result<()> {
        self.execute(
            "UPDATE write_budget SET used = used - 1 WHERE hour = ?1 AND used > 0",
            &[text(hour)],
        )
        .await?;
        Ok(())
    }

    /// Writes taken from this clock hour's budget.
    pub async fn writes_this_hour(&self) -> anyhow::Result<u64> {
        let rows = self
            .query(
                "SELECT used FROM write_budget WHERE hour = ?1",
                &[text(&hour_of(Utc::now()))],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r[0].int()).max(0) as u64)
    }
}
