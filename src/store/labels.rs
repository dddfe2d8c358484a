//! Predictions and harvested labels: what bugflow predicted for a bug, and what a person
//! set afterwards (`bugflow data labels`).

use serde_json::{Value, json};

use chrono::Utc;

use super::Store;
use super::backend::{Param, text};

impl Store {
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
}
