//! Named values: the REST poller's `last_change_time`, the bot's Bugzilla login.

use super::Store;
use super::backend::text;

impl Store {
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
