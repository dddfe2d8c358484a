//! The Bugzilla (BMO) REST client, careful the way a bot must be.
//!
//! * `X-BUGZILLA-API-KEY` on every call (never in a URL, never in logs).
//! * Errors are `{"error": true, "code": N, "message": …}`: 101/404 (no such bug) and
//!   102/401 (private, no access) are permanent → skip; reads on 5xx and timeouts → retry
//!   with backon. A PUT is sent once: it is not idempotent.
//! * HTTP 429 (an HTML page: BMO blocked our IP for an hour) → no request at all until the
//!   back-off window ends; callers get a transient error, so the message is kept.
//! * At most `bugzilla.max_concurrent` calls in flight; without a key, calls are spaced to
//!   [`ANONYMOUS_PER_MINUTE`] a minute (BMO blocks an IP past 75 anonymous reads a minute).
//! * 306 (API key rejected or revoked) → the client stops calling: five bad keys in a minute
//!   get the IP blocked, so it never retries in a loop. The error's action is `Halt`: the
//!   consumer stops taking messages (they stay queued) and `/readyz` names the cause.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::error::{Action, Stage, StageError};
use crate::secret::Secret;

/// Why a Bugzilla call failed. [`BugzillaError::action`] says what the message does next.
#[derive(Debug, thiserror::Error)]
pub enum BugzillaError {
    #[error("Bugzilla timed out (bugzilla.timeout_seconds)")]
    Timeout,
    /// The request did not get an answer (connection refused, reset, TLS).
    #[error("Bugzilla: {0}")]
    Transport(String),
    /// An earlier 429 blocks every call until its window ends.
    #[error("Bugzilla blocked us (429); back-off for {0:?} more")]
    Blocked(Duration),
    /// This call was answered 429: BMO blocked our IP.
    #[error("Bugzilla answered 429: no calls for {0:?}")]
    TooManyRequests(Duration),
    #[error("Bugzilla answered {0}")]
    Server(reqwest::StatusCode),
    #[error("Bugzilla body: {0}")]
    Body(String),
    /// 306: the API key was rejected or revoked; no call is made until it is replaced.
    #[error("the Bugzilla API key was rejected (306)")]
    KeyRejected,
    /// A call after a 306.
    #[error("the Bugzilla API key was rejected (306): no more calls until it is replaced")]
    KeyWasRejected,
    /// 101 or 404.
    #[error("no such bug ({code}): {message}")]
    NoSuchBug { code: i64, message: String },
    /// 102 or 401: private, or the key cannot see it.
    #[error("no access: the bug is private or the key cannot see it ({code})")]
    NoAccess { code: i64 },
    /// A search answered without the bug asked for.
    #[error("Bugzilla returned no bug {0}")]
    Missing(u64),
    /// Any other error Bugzilla answered.
    #[error("Bugzilla error {code} ({status}): {message}")]
    Api {
        code: i64,
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("bugzilla.url: {0}")]
    BadUrl(String),
    #[error("Bugzilla answered more than {0} bytes")]
    TooLarge(usize),
}

impl BugzillaError {
    /// What the message whose processing made this call does next.
    pub fn action(&self) -> Action {
        use BugzillaError::*;
        match self {
            Timeout | Transport(_) | Blocked(_) | TooManyRequests(_) | Server(_) | Body(_) => {
                Action::Retry
            }
            // Every later call would fail alike, and retrying gets the IP blocked.
            KeyRejected | KeyWasRejected => Action::Halt,
            NoSuchBug { .. } | NoAccess { .. } | Missing(_) => Action::Skip,
            Api { .. } | BadUrl(_) | TooLarge(_) => Action::DeadLetter,
        }
    }

    /// Might Bugzilla have carried out the request anyway? A timeout, a broken connection,
    /// a 5xx or a cut answer say nothing about whether a PUT was applied.
    pub fn outcome_unknown(&self) -> bool {
        use BugzillaError::*;
        matches!(self, Timeout | Transport(_) | Server(_) | Body(_))
    }

    /// Worth another attempt inside the client? Transient failures are, but not a 429:
    /// BMO's block lasts an hour, and the message goes back to its queue instead.
    pub fn retry_now(&self) -> bool {
        self.action() == Action::Retry
            && !matches!(
                self,
                BugzillaError::Blocked(_) | BugzillaError::TooManyRequests(_)
            )
    }
}

impl From<BugzillaError> for StageError {
    fn from(e: BugzillaError) -> StageError {
        StageError::from_source(Stage::Enrich, e.action(), e)
    }
}

/// The largest answer read: a bug with thousands of comments is a few MiB.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

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
    /// At most this many calls in flight (shared by every clone of the client).
    in_flight: tokio::sync::Semaphore,
    /// Without a key, calls are spaced this far apart: BMO allows anonymous reads 75 times
    /// a minute per IP, then blocks it.
    pace: Option<Duration>,
    next_call: Mutex<Instant>,
}

/// Anonymous calls a minute (BMO's limit is 75).
pub const ANONYMOUS_PER_MINUTE: u32 = 70;

impl Bugzilla {
    /// `base` like `https://bugzilla.mozilla.org` (no trailing `/rest`).
    pub fn new(
        base: &str,
        api_key: Secret,
        timeout: Duration,
        block_window: Duration,
        attempts: usize,
        max_concurrent: usize,
    ) -> anyhow::Result<Self> {
        crate::init_tls();
        let origin = url::Url::parse(base)?.origin();
        // The API key travels in a header of every request: a redirect is followed only
        // to Bugzilla itself (same scheme, host and port), never to another host.
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() < 5 && attempt.url().origin() == origin {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        Ok(Bugzilla {
            inner: Arc::new(Inner {
                base: base.trim_end_matches('/').to_owned(),
                api_key: api_key.clone(),
                client: reqwest::Client::builder()
                    .user_agent(crate::clients::hg::USER_AGENT)
                    .timeout(timeout)
                    .redirect(redirects)
                    .build()?,
                blocked_until: Mutex::new(None),
                block_window,
                key_rejected: AtomicBool::new(false),
                attempts: attempts.max(1),
                in_flight: tokio::sync::Semaphore::new(max_concurrent.max(1)),
                pace: api_key
                    .is_empty()
                    .then(|| Duration::from_secs(60) / ANONYMOUS_PER_MINUTE),
                next_call: Mutex::new(Instant::now()),
            }),
        })
    }

    /// A bug with its comments, history and attachments (REST shape).
    pub async fn bug(&self, id: u64) -> Result<Value, BugzillaError> {
        let url = format!(
            "{}/rest/bug/{id}?include_fields=_default,comments,history,attachments",
            self.inner.base
        );
        let body = self.call(reqwest::Method::GET, &url, None).await?;
        body.get("bugs")
            .and_then(Value::as_array)
            .and_then(|b| b.first())
            .cloned()
            .ok_or(BugzillaError::Missing(id))
    }

    /// Several bugs with comments, history and attachments, in one request. Bugs Bugzilla
    /// does not show (private, deleted, no such id) are simply absent from the answer.
    pub async fn bugs(&self, ids: &[u64]) -> Result<Vec<Value>, BugzillaError> {
        self.search_ids(ids, "_default,comments,history,attachments")
            .await
    }

    /// `id → last_change_time` of the bugs Bugzilla shows among `ids` (one small request).
    pub async fn change_times(
        &self,
        ids: &[u64],
    ) -> Result<std::collections::HashMap<u64, String>, BugzillaError> {
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

    async fn search_ids(&self, ids: &[u64], fields: &str) -> Result<Vec<Value>, BugzillaError> {
        let mut all = Vec::with_capacity(ids.len());
        // BMO's URL length limit: bugbug asks 700 ids at a time.
        for chunk in ids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
            let mut url = url::Url::parse(&format!("{}/rest/bug", self.inner.base))
                .map_err(|e| BugzillaError::BadUrl(e.to_string()))?;
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
    pub async fn changed_since(
        &self,
        since: &str,
        page: usize,
    ) -> Result<Vec<Value>, BugzillaError> {
        let mut all = Vec::new();
        loop {
            let mut url = url::Url::parse(&format!("{}/rest/bug", self.inner.base))
                .map_err(|e| BugzillaError::BadUrl(e.to_string()))?;
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

    /// `PUT /rest/bug/{id}`, sent once. It is not idempotent (each one adds a comment), so
    /// it is never retried here: on an error whose outcome is unknown
    /// ([`BugzillaError::outcome_unknown`]) the caller re-reads the bug to learn whether it
    /// landed.
    pub async fn update(&self, id: u64, change: &Value) -> Result<Value, BugzillaError> {
        let url = format!("{}/rest/bug/{id}", self.inner.base);
        self.call_once(reqwest::Method::PUT, &url, Some(change))
            .await
    }

    /// The bot's identity (checks the API key at start).
    pub async fn whoami(&self) -> Result<Value, BugzillaError> {
        let url = format!("{}/rest/whoami", self.inner.base);
        self.call(reqwest::Method::GET, &url, None).await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, BugzillaError> {
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.inner.attempts - 1)
            .with_jitter();
        (|| self.call_once(method.clone(), url, body))
            .retry(policy)
            // A 429 block is retried only after its window: not here.
            .when(BugzillaError::retry_now)
            .notify(|e, after| tracing::warn!(error = %e, retry_in = ?after, "Bugzilla; retrying"))
            .await
    }

    async fn call_once(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, BugzillaError> {
        if self.inner.key_rejected.load(Ordering::Relaxed) {
            return Err(BugzillaError::KeyWasRejected);
        }
        // A permit per call: the 201st concurrent event waits here, not at BMO.
        let _permit = self
            .inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| BugzillaError::Transport("the client is shutting down".into()))?;
        self.wait_turn().await?;
        let mut request = self.inner.client.request(method, url);
        // Anonymous reads work (rate-limited by BMO to 75 a minute); writes need the key.
        if !self.inner.api_key.is_empty() {
            request = request.header("X-BUGZILLA-API-KEY", self.inner.api_key.expose());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                BugzillaError::Timeout
            } else {
                BugzillaError::Transport(e.without_url().to_string())
            }
        })?;
        let status = response.status();
        if status.as_u16() == 429 {
            *self.inner.blocked_until.lock().await = Some(Instant::now() + self.inner.block_window);
            metrics::counter!("bugflow_bugzilla_blocked_total").increment(1);
            return Err(BugzillaError::TooManyRequests(self.inner.block_window));
        }
        if status.is_server_error() {
            return Err(BugzillaError::Server(status));
        }
        let text = super::read_capped(response, MAX_BODY)
            .await
            .map_err(|e| match e {
                super::BodyError::TooLarge => BugzillaError::TooLarge(MAX_BODY),
                super::BodyError::Broken(e) => BugzillaError::Body(e.without_url().to_string()),
            })?;
        let value: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
        if value.get("error").and_then(Value::as_bool) == Some(true) || !status.is_success() {
            let code = value.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            return Err(self.refused(code, status, message));
        }
        Ok(value)
    }

    /// Waits for this call's turn: none during a 429 block; without a key, spaced to
    /// [`ANONYMOUS_PER_MINUTE`].
    async fn wait_turn(&self) -> Result<(), BugzillaError> {
        if let Some(until) = *self.inner.blocked_until.lock().await
            && Instant::now() < until
        {
            return Err(BugzillaError::Blocked(until - Instant::now()));
        }
        if let Some(pace) = self.inner.pace {
            let at = {
                let mut next = self.inner.next_call.lock().await;
                let at = (*next).max(Instant::now());
                *next = at + pace;
                at
            };
            tokio::time::sleep_until(at.into()).await;
        }
        Ok(())
    }

    /// The error of an answer Bugzilla refused (`{"error": true, "code": …}` or a 4xx). A
    /// 306 also stops every later call.
    fn refused(&self, code: i64, status: reqwest::StatusCode, message: String) -> BugzillaError {
        match (code, status.as_u16()) {
            (306, _) => {
                self.inner.key_rejected.store(true, Ordering::Relaxed);
                tracing::error!(
                    "Bugzilla rejected the API key (306); bugflow stops calling Bugzilla"
                );
                BugzillaError::KeyRejected
            }
            (101, _) | (_, 404) => BugzillaError::NoSuchBug { code, message },
            (102, _) | (_, 401) => BugzillaError::NoAccess { code },
            _ => BugzillaError::Api {
                code,
                status,
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_says_what_to_do_and_stays_reachable_as_the_source() {
        let block = BugzillaError::TooManyRequests(Duration::from_secs(3600));
        assert_eq!(block.action(), Action::Retry);
        assert!(
            !block.retry_now(),
            "a 429 waits for its window, not a backon retry"
        );
        assert!(BugzillaError::Timeout.retry_now());
        assert_eq!(BugzillaError::NoAccess { code: 102 }.action(), Action::Skip);
        let api = BugzillaError::Api {
            code: 51,
            status: reqwest::StatusCode::BAD_REQUEST,
            message: "bad field".into(),
        };
        assert_eq!(api.action(), Action::DeadLetter);
        let stage: StageError = BugzillaError::KeyRejected.into();
        assert_eq!(stage.action, Action::Halt);
        assert_eq!(stage.stage, Stage::Enrich);
        assert!(matches!(
            stage.source_as::<BugzillaError>(),
            Some(BugzillaError::KeyRejected)
        ));
    }
}
