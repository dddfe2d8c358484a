//! Dead letters, kept: each message bugflow could not process, with why, so that an operator
//! can read them (`bugflow dead-letters list`, the dashboard) and send them again
//! (`bugflow dead-letters replay`) even after Pulse deleted the dead-letter queue.
//!
//! Bounded: a body is kept up to [`MAX_BODY`] bytes (a longer one is marked cut and cannot
//! be replayed), and the table keeps the newest [`KEEP`] dead letters of the last
//! [`KEEP_DAYS`] days; older ones are pruned as new ones arrive.

use chrono::Utc;

use super::Store;
use super::backend::{Param, text};

/// The largest body kept.
pub const MAX_BODY: usize = 256 * 1024;
/// Dead letters kept, newest first.
pub const KEEP: usize = 10_000;
/// Days a dead letter is kept.
pub const KEEP_DAYS: i64 = 30;

/// One dead letter as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: String,
    pub at: String,
    pub consumer: String,
    pub stage: String,
    pub reason: String,
    pub exchange: String,
    pub routing_key: String,
    /// The message's headers, as JSON.
    pub headers: String,
    /// The original body; `None` when it was longer than [`MAX_BODY`] and was cut.
    pub body: Option<Vec<u8>>,
}

/// What to keep about a dead letter.
pub struct NewDeadLetter<'a> {
    pub consumer: &'a str,
    pub stage: &'a str,
    pub reason: &'a str,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub headers: &'a str,
    pub body: &'a [u8],
}

/// A body as text: itself when it is UTF-8 (bugflow's inputs are JSON), else hex.
fn encode(body: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(body) {
        Ok(s) => (s.to_owned(), "utf8"),
        Err(_) => (hex::encode(body), "hex"),
    }
}

fn decode(text: &str, encoding: &str) -> Option<Vec<u8>> {
    match encoding {
        "utf8" => Some(text.as_bytes().to_vec()),
        "hex" => (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
            .collect(),
        _ => None,
    }
}

const SELECT: &str = "SELECT id, at, consumer, stage, reason, exchange, routing_key, headers,
                             body, body_encoding FROM dead_letters";

/// A row of [`SELECT`].
fn row(r: &[super::backend::Cell]) -> DeadLetter {
    DeadLetter {
        id: r[0].text(),
        at: r[1].text(),
        consumer: r[2].text(),
        stage: r[3].text(),
        reason: r[4].text(),
        exchange: r[5].text(),
        routing_key: r[6].text(),
        headers: r[7].text(),
        body: decode(&r[8].text(), &r[9].text()),
    }
}

impl Store {
    /// Keeps a dead letter (and prunes the oldest); returns its id.
    pub async fn add_dead_letter(&self, letter: &NewDeadLetter<'_>) -> anyhow::Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (body, encoding) = if letter.body.len() <= MAX_BODY {
            encode(letter.body)
        } else {
            (String::new(), "cut")
        };
        let now = Utc::now();
        self.execute(
            "INSERT INTO dead_letters (id, at, consumer, stage, reason, exchange, routing_key,
                                       headers, body, body_encoding)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            &[
                text(&id),
                text(&now.to_rfc3339()),
                text(letter.consumer),
                text(letter.stage),
                text(letter.reason),
                text(letter.exchange),
                text(letter.routing_key),
                text(letter.headers),
                text(&body),
                text(encoding),
            ],
        )
        .await?;
        let cutoff = (now - chrono::Duration::days(KEEP_DAYS)).to_rfc3339();
        self.execute(
            "DELETE FROM dead_letters WHERE at < ?1 OR at < (
                 SELECT at FROM dead_letters ORDER BY at DESC LIMIT 1 OFFSET ?2)",
            &[text(&cutoff), Param::Int(KEEP as i64 - 1)],
        )
        .await?;
        Ok(id)
    }

    /// The newest dead letters (of `consumer`, if given), newest first.
    pub async fn dead_letters(
        &self,
        consumer: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<DeadLetter>> {
        let limit = Param::Int(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = match consumer {
            Some(c) => {
                let sql = format!("{SELECT} WHERE consumer = ?1 ORDER BY at DESC LIMIT ?2");
                self.query(&sql, &[text(c), limit]).await?
            }
            None => {
                let sql = format!("{SELECT} ORDER BY at DESC LIMIT ?1");
                self.query(&sql, &[limit]).await?
            }
        };
        Ok(rows.iter().map(|r| row(r)).collect())
    }

    /// One dead letter by its id.
    pub async fn dead_letter(&self, id: &str) -> anyhow::Result<Option<DeadLetter>> {
        let rows = self
            .query(&format!("{SELECT} WHERE id = ?1"), &[text(id)])
            .await?;
        Ok(rows.first().map(|r| row(r)))
    }

    /// How many dead letters are kept.
    pub async fn dead_letter_count(&self) -> anyhow::Result<u64> {
        let rows = self.query("SELECT COUNT(*) FROM dead_letters", &[]).await?;
        Ok(rows.first().map_or(0, |r| r[0].int()).max(0) as u64)
    }

    /// Forgets a dead letter (it was replayed).
    pub async fn remove_dead_letter(&self, id: &str) -> anyhow::Result<()> {
        self.execute("DELETE FROM dead_letters WHERE id = ?1", &[text(id)])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_that_are_not_text_survive_as_hex() {
        let body = [0u8, 159, 146, 150, 255];
        let (text, encoding) = encode(&body);
        assert_eq!(encoding, "hex");
        assert_eq!(decode(&text, encoding).unwrap(), body);
        assert_eq!(decode("{}", "utf8").unwrap(), b"{}");
        assert_eq!(decode("", "cut"), None);
    }
}
