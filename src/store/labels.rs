//! Predictions and harvested labels: what bugflow predicted for a bug (by the serving bundle
//! and by a shadow beside it), and what a person set afterwards (`bugflow data labels`,
//! `bugflow models compare`, the live report).

use serde_json::{Value, json};

use super::Store;
use super::backend::{Cell, Param, text};

/// Which bundle made a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The bundle that serves: its predictions are published, answered and written.
    Serving,
    /// A candidate scoring beside it (`bugflow models shadow`): stored and published on the
    /// shadow routing key only.
    Shadow,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Serving => "serving",
            Role::Shadow => "shadow",
        }
    }
}

/// One prediction to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicted<'a> {
    pub bug_id: u64,
    pub model: &'a str,
    pub version: &'a str,
    pub role: Role,
    pub class: &'a str,
    /// The probability of `class`.
    pub confidence: f64,
    /// When it was made (RFC 3339); the serving and shadow predictions of one event share it.
    pub at: &'a str,
}

/// A stored prediction (drift reads these).
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRow {
    pub bug_id: u64,
    pub version: String,
    pub class: String,
    pub confidence: Option<f64>,
    pub at: String,
}

/// A harvested label beside the prediction that came before it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveLabel {
    pub bug_id: u64,
    pub version: String,
    pub predicted: String,
    /// The probability of `predicted` (none for labels harvested before it was kept).
    pub confidence: Option<f64>,
    pub truth: String,
    /// When the person made the change (the event's time).
    pub at: String,
}

fn confidence(cell: &Cell) -> Option<f64> {
    cell.opt_text().and_then(|t| t.parse().ok())
}

fn live_label(row: &[Cell]) -> LiveLabel {
    LiveLabel {
        bug_id: row[0].int() as u64,
        version: row[1].text(),
        predicted: row[2].text(),
        confidence: confidence(&row[3]),
        truth: row[4].text(),
        at: row[5].text(),
    }
}

impl Store {
    /// Remembers what a model predicted for a bug.
    pub async fn record_prediction(&self, p: &Predicted<'_>) -> anyhow::Result<()> {
        self.execute(
            "INSERT INTO predictions (bug_id, model, version, class, at, role, confidence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            &[
                Param::Int(p.bug_id as i64),
                text(p.model),
                text(p.version),
                text(p.class),
                text(p.at),
                text(p.role.name()),
                text(&p.confidence.to_string()),
            ],
        )
        .await?;
        Ok(())
    }

    /// The latest prediction of `model` for a bug by `role`: (class, version, confidence).
    async fn latest_prediction(
        &self,
        bug_id: u64,
        model: &str,
        role: Role,
    ) -> anyhow::Result<Option<(String, String, Option<String>)>> {
        let rows = self
            .query(
                "SELECT class, version, confidence FROM predictions
                 WHERE bug_id = ?1 AND model = ?2 AND role = ?3 ORDER BY at DESC LIMIT 1",
                &[Param::Int(bug_id as i64), text(model), text(role.name())],
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| (r[0].text(), r[1].text(), r[2].opt_text())))
    }

    /// A human set `truth` for `model`'s field on a bug bugflow predicted: keep the pair,
    /// and the pair with the shadow's prediction when a shadow scored the bug too. Returns
    /// false when bugflow never predicted this bug.
    pub async fn harvest(
        &self,
        bug_id: u64,
        model: &str,
        truth: &str,
        by: &str,
        at: &str,
    ) -> anyhow::Result<bool> {
        let Some((class, version, confidence)) =
            self.latest_prediction(bug_id, model, Role::Serving).await?
        else {
            return Ok(false);
        };
        self.execute(
            "INSERT INTO labels (bug_id, model, predicted, version, truth, by, at, confidence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
            &[
                Param::Int(bug_id as i64),
                text(model),
                text(&class),
                text(&version),
                text(truth),
                text(by),
                text(at),
                Param::OptText(confidence),
            ],
        )
        .await?;
        if let Some((class, version, confidence)) =
            self.latest_prediction(bug_id, model, Role::Shadow).await?
        {
            self.execute(
                "INSERT INTO shadow_labels (bug_id, model, version, predicted, confidence, truth, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                &[
                    Param::Int(bug_id as i64),
                    text(model),
                    text(&version),
                    text(&class),
                    Param::OptText(confidence),
                    text(truth),
                    text(at),
                ],
            )
            .await?;
        }
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

    /// The labels of `model` beside the serving bundle's predictions, oldest first.
    pub async fn live_labels(&self, model: &str) -> anyhow::Result<Vec<LiveLabel>> {
        let rows = self
            .query(
                "SELECT bug_id, version, predicted, confidence, truth, at FROM labels
                 WHERE model = ?1 ORDER BY at, bug_id",
                &[text(model)],
            )
            .await?;
        Ok(rows.iter().map(|r| live_label(r)).collect())
    }

    /// The labels of `model` beside shadow `version`'s predictions, oldest first.
    pub async fn shadow_labels(
        &self,
        model: &str,
        version: &str,
    ) -> anyhow::Result<Vec<LiveLabel>> {
        let rows = self
            .query(
                "SELECT bug_id, version, predicted, confidence, truth, at FROM shadow_labels
                 WHERE model = ?1 AND version = ?2 ORDER BY at, bug_id",
                &[text(model), text(version)],
            )
            .await?;
        Ok(rows.iter().map(|r| live_label(r)).collect())
    }

    /// The predictions of `model` by `role` made at `since` (RFC 3339) or later.
    pub async fn predictions(
        &self,
        model: &str,
        role: Role,
        since: &str,
    ) -> anyhow::Result<Vec<PredictionRow>> {
        let rows = self
            .query(
                "SELECT bug_id, version, class, confidence, at FROM predictions
                 WHERE model = ?1 AND role = ?2 AND at >= ?3 ORDER BY at",
                &[text(model), text(role.name()), text(since)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| PredictionRow {
                bug_id: r[0].int() as u64,
                version: r[1].text(),
                class: r[2].text(),
                confidence: confidence(&r[3]),
                at: r[4].text(),
            })
            .collect())
    }

    /// The serving and shadow `version` classes of `model` on the same events:
    /// (serving class, shadow class), one pair per event both scored.
    pub async fn agreement(
        &self,
        model: &str,
        version: &str,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let rows = self
            .query(
                "SELECT s.class, h.class FROM predictions s JOIN predictions h
                   ON s.bug_id = h.bug_id AND s.model = h.model AND s.at = h.at
                 WHERE s.model = ?1 AND s.role = 'serving' AND h.role = 'shadow'
                   AND h.version = ?2",
                &[text(model), text(version)],
            )
            .await?;
        Ok(rows.iter().map(|r| (r[0].text(), r[1].text())).collect())
    }
}
