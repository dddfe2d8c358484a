//! Effects: every Bugzilla write and every skip, keyed so that none happens twice.
//!
//! The protocol: [`Store::claim`] before the write, [`Store::finish`] after it, or
//! [`Store::release`] when the attempt failed and should be made again. A claim is a lease:
//! its holder [`Store::renew`]s it while it works, and a key someone else holds is "in
//! progress" (retry later) until it has not been renewed for `stale_after`; then the
//! claimant is presumed dead (`kill -9`) and the key is taken over — the writer re-reads the
//! bug, whose history shows whether the earlier write landed.

use std::time::Duration;

use chrono::Utc;

use super::Store;
use super::backend::{Param, text};
use crate::effects::Outcome;

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Nobody did this yet (or its claimant is presumed dead): go ahead.
    Proceed,
    /// Another worker claimed it moments ago: try again later.
    InProgress,
    /// Already done: `outcome` and `reason` of the earlier attempt.
    Done { outcome: Outcome, reason: String },
}

/// Where a recorded effect stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectState {
    /// Claimed, not finished (being written, or its writer died).
    Pending,
    Done(Outcome),
}

impl EffectState {
    pub fn as_str(self) -> &'static str {
        match self {
            EffectState::Pending => PENDING,
            EffectState::Done(outcome) => outcome.as_str(),
        }
    }

    /// The state stored as `text`. An outcome this version does not know (written by a
    /// newer one) reads as done and skipped: it is never redone.
    fn parse(text: &str) -> EffectState {
        match text {
            PENDING => EffectState::Pending,
            "written" => EffectState::Done(Outcome::Written),
            "dry_run" => EffectState::Done(Outcome::DryRun),
            "already_done" => EffectState::Done(Outcome::AlreadyDone),
            "published" => EffectState::Done(Outcome::Published),
            _ => EffectState::Done(Outcome::Skipped),
        }
    }
}

impl PartialEq<&str> for EffectState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for EffectState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const PENDING: &str = "pending";

/// One recorded effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub key: String,
    pub consumer: String,
    pub subject: String,
    pub outcome: EffectState,
    pub reason: String,
    pub request: Option<String>,
}

impl Store {
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
        let (state, reason) = row
            .first()
            .map(|r| (EffectState::parse(&r[0].text()), r[1].text()))
            .unwrap_or((EffectState::Pending, String::new()));
        if let EffectState::Done(outcome) = state {
            return Ok(Claim::Done { outcome, reason });
        }
        let stale_after = stale_after.min(super::locks::MAX_LEASE);
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

    /// Extends a pending claim's lease (its holder is alive and working).
    pub async fn renew(&self, key: &str) -> anyhow::Result<()> {
        self.execute(
            "UPDATE effects SET updated_at = ?2 WHERE key = ?1 AND outcome = 'pending'",
            &[text(key), text(&Utc::now().to_rfc3339())],
        )
        .await?;
        Ok(())
    }

    /// Gives a pending claim up: the effect did not happen and the next delivery of its
    /// event claims it afresh (rather than waiting for the lease to run out).
    pub async fn release(&self, key: &str) -> anyhow::Result<()> {
        self.execute(
            "DELETE FROM effects WHERE key = ?1 AND outcome = 'pending'",
            &[text(key)],
        )
        .await?;
        Ok(())
    }

    /// Records how a claimed effect ended.
    pub async fn finish(
        &self,
        key: &str,
        outcome: Outcome,
        reason: &str,
        request: Option<&str>,
    ) -> anyhow::Result<()> {
        self.execute(
            "UPDATE effects SET outcome = ?2, reason = ?3, request = ?4, updated_at = ?5 WHERE key = ?1",
            &[
                text(key),
                text(outcome.as_str()),
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
                outcome: EffectState::parse(&r[3].text()),
                reason: r[4].text(),
                request: r[5].opt_text(),
            })
            .collect())
    }
}
