//! The Bugzilla (BMO) REST client, careful the way a bot must be.
//!
//! * `X-BUGZILLA-API-KEY` on every call (never in a URL, never in logs).
//! * Errors are `{"error": true, "code": N, "message": …}`: 101/404 (no such bug) and
//!   102/401 (private, no access) are permanent → skip; 5xx and timeouts → retry with backon.
//! * HTTP 429 (an HTML page: BMO blocked our IP for an hour) → no request at all until the
//!   back-off window ends; callers get a transient error, so the message is kept.
//! * 306 (API key rejected or revoked) → the client stops calling: five bad keys in a minute
//!   get the IP blocked, so it never retries in a loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::error::{Action, Stage, StageError};
use crate::secret::Secret;

#[derive(Clone)]
pub struct Bugzilla {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    api_key: Secret,
    client: reqwest::Client,
    blocked_until: Mutex<Option<Instant>>,
    block_window: Duration,
    key_rejected: AtomicBool,
    attempts: usize,
}

impl Bugzilla {
    /// `base` like `https://bugzilla.mozilla.org` (no trailing `/rest`).
    pub fn new(
        base: &str,
        api_key: Secret,
        timeout: Duration,
        block_window: Duration,
        attempts: usize,
    ) -> anyhow::Result<Self> {
        crate::init_tls();
        Ok(Bugzilla {
            inner: Arc::new(Inner {
                base: base.trim_end_matches('/').to_owned(),
                api_key,
                client: reqwest::Client::builder()
                    .user_agent(crate::enrich::hg::USER_AGENT)
                    .timeout(timeout)
                    .build()?,
                blocked_until: Mutex::new(None),
                block_window,
                key_rejected: AtomicBool::new(false),
                attempts: attempts.max(1),
            }),
        })
    }

    /// A bug with its comments, history and attachments (REST shape).
    pub async fn bug(&self, id: u64) -> Result<Value, StageError> {
        let url = format!(
            "{}/rest/bug/{id}?include_fields=_default,comments,history,attachments",
            self.inner.base
        );
        let body = self.call(reqwest::Method::GET, &url, None).await?;
        body.get("bugs")
            .and_then(Value::as_array)
            .and_then(|b| b.first())
            .cloned()
            .ok_or_else(|| {
                StageError::skip(Stage::Enrich, format!("Bugzilla returned no bug {id}"))
            })
    }

    /// Several bugs with comments, history and attachments, in one request. Bugs Bugzilla
    /// does not show (private, deleted, no such id) are simply absent from the answer.
    pub async fn bugs(&self, ids: &[u64]) -> Result<Vec<Value>, StageError> {
        self.search_ids(ids, "_default,comments,history,attachments")
            .await
    }

    /// `id → last_change_time` of the bugs Bugzilla shows among `ids` (one small request).
    pub async fn change_times(
        &self,
        ids: &[u64],
    ) -> Result<std::collections::HashMap<u64, String>, StageError> {
        Ok(self
            .search_ids(ids, "id,last_change_time")
            .await?
            .iter()
            .filter_map(|b| {
                Some((
                    b.get("id")?.as_u64()?,
                    b.get("last_change_time")?.as_str()?.to_owned(),
                ))
            })
            .collect())
    }

    async fn search_ids(&self, ids: &[u64], fields: &str) -> Result<Vec<Value>, StageError> {
        let mut all = Vec::with_capacity(ids.len());
        // BMO's URL length limit: bugbug asks 700 ids at a time.
        for chunk in ids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
            let mut url = url::Url::parse(&format!("{}/rest/bug", self.inner.base))
                .map_err(|e| StageError::invalid(Stage::Enrich, format!("bugzilla.url: {e}")))?;
            url.query_pairs_mut()
                .append_pair("id", &list.join(","))
                .append_pair("include_fields", fields);
            let body = self.call(reqwest::Method::GET, url.as_str(), None).await?;
            all.extend(
                body.get("bugs")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        Ok(all)
    }

    /// Bugs changed at or after `since` (RFC 3339), oldest change first, page by page.
    pub async fn changed_since(&self, since: &str, page: usize) -> Result<Vec<Value>, StageError> {
        let mut all = Vec::new();
        loop {
            let mut url = url::Url::parse(&format!("{}/rest/bug", self.inner.base))
                .map_err(|e| StageError::invalid(Stage::Enrich, format!("bugzilla.url: {e}")))?;
            url.query_pairs_mut()
                .append_pair("last_change_time", since)
                .append_pair("order", "changeddate")
                .append_pair("limit", &page.to_string())
                .append_pair("offset", &all.len().to_string())
                .append_pair(
                    "include_fields",
                    "id,summary,product,component,type,status,severity,keywords,creation_time,last_change_time,groups",
                );
            let body = self.call(reqwest::Method::GET, url.as_str(), None).await?;
            let bugs = body
                .get("bugs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let n = bugs.len();
            all.extend(bugs);
            if n < page {
                return Ok(all);
            }
        }
    }

    /// `PUT /rest/bug/{id}`.
    pub async fn update(&self, id: u64, change: &Value) -> Result<Value, StageError> {
        let url = format!("{}/rest/bug/{id}", self.inner.base);
        self.call(reqwest::Method::PUT, &url, Some(change)).await
    }

    /// The bot's identity (checks the API key at start).
    pub async fn whoami(&self) -> Result<Value, StageError> {
        let url = format!("{}/rest/whoami", self.inner.base);
        self.call(reqwest::Method::GET, &url, None).await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, StageError> {
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.inner.attempts - 1)
            .with_jitter();
        (|| self.call_once(method.clone(), url, body))
            .retry(policy)
            // A 429 block is retried only after its window: not here.
            .when(|e: &StageError| e.action == Action::Retry && !e.reason.contains("429"))
            .notify(|e, after| tracing::warn!(error = %e, retry_in = ?after, "Bugzilla; retrying"))
            .await
    }

    async fn call_once(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, StageError> {
        if self.inner.key_rejected.load(Ordering::Relaxed) {
            return Err(StageError::skip(
                Stage::Enrich,
                "the Bugzilla API key was rejected (306): no more calls until it is replaced",
            ));
        }
        if let Some(until) = *self.inner.blocked_until.lock().await
            && Instant::now() < until
        {
            return Err(StageError::transient(
                Stage::Enrich,
                format!(
                    "Bugzilla blocked us (429); back-off for {:?} more",
                    until - Instant::now()
                ),
            ));
        }
        let mut request = self.inner.client.request(method, url);
        // Anonymous reads work (rate-limited by BMO to 75 a minute); writes need the key.
        if !self.inner.api_key.is_empty() {
            request = request.header("X-BUGZILLA-API-KEY", self.inner.api_key.expose());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            let reason = if e.is_timeout() {
                "Bugzilla timed out (bugzilla.timeout_seconds)".to_owned()
            } else {
                format!("Bugzilla: {}", e.without_url())
            };
            StageError::transient(Stage::Enrich, reason)
        })?;
        let status = response.status();
        if status.as_u16() == 429 {
            *self.inner.blocked_until.lock().await = Some(Instant::now() + self.inner.block_window);
            metrics::counter!("bugflow_bugzilla_blocked_total").increment(1);
            return Err(StageError::transient(
                Stage::Enrich,
                format!(
                    "Bugzilla answered 429: no calls for {:?}",
                    self.inner.block_window
                ),
            ));
        }
        if status.is_server_error() {
            return Err(StageError::transient(
                Stage::Enrich,
                format!("Bugzilla answered {status}"),
            ));
        }
        let text = response.text().await.map_err(|e| {
            StageError::transient(Stage::Enrich, format!("Bugzilla body: {}", e.without_url()))
        })?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if value.get("error").and_then(Value::as_bool) == Some(true) || !status.is_success() {
            let code = value.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            return Err(match (code, status.as_u16()) {
                (306, _) => {
                    self.inner.key_rejected.store(true, Ordering::Relaxed);
                    tracing::error!(
                        "Bugzilla rejected the API key (306); bugflow stops calling Bugzilla"
                    );
                    StageError::skip(Stage::Enrich, "the Bugzilla API key was rejected (306)")
                }
                (101, _) | (_, 404) => {
                    StageError::skip(Stage::Enrich, format!("no such bug ({code}): {message}"))
                }
                (102, _) | (_, 401) => StageError::skip(
                    Stage::Enrich,
                    format!("no access: the bug is private or the key cannot see it ({code})"),
                ),
                _ => StageError::invalid(
                    Stage::Enrich,
                    format!("Bugzilla error {code} ({status}): {message}"),
                ),
            });
        }
        Ok(value)
    }
}
