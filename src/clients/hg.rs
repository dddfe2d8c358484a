//! The hg.mozilla.org client: a push's changesets.
//!
//! hg's advice for automated clients: a descriptive User-Agent, at most 10 requests at once,
//! and retries that back off. Notifications go out after every mirror has the push, so a
//! fetch right after the message does not race.
//!
//! Only hosts (and ports: `host:port`; a bare host means its scheme's port) in
//! `allowed_hosts` are fetched: the URL comes from a message, and a message
//! must not be able to make bugflow call an arbitrary address.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::error::{Action, Stage, StageError};
use crate::features::commit::Commit;

/// Why reading a push from hg.mozilla.org failed. [`HgError::action`] says what the message
/// does next.
#[derive(Debug, thiserror::Error)]
pub enum HgError {
    /// A URL from a message that bugflow must not fetch, or that does not parse.
    #[error("push URL {0}")]
    BadUrl(String),
    #[error("push URL host {0:?} is not in hg.allowed_hosts")]
    HostNotAllowed(String),
    #[error("hg.mozilla.org: {0}")]
    Transport(String),
    /// 5xx, 429 or 408: hg is busy or down.
    #[error("hg.mozilla.org answered {0}")]
    Busy(reqwest::StatusCode),
    /// Any other status (404: hg does not know the push or revision).
    #[error("hg.mozilla.org answered {status} for {url}")]
    Refused {
        status: reqwest::StatusCode,
        url: String,
    },
    #[error("hg.mozilla.org body: {0}")]
    Body(String),
    #[error("json-pushes answered something else: {0}")]
    NotJsonPushes(String),
    #[error("json-pushes changeset: {0}")]
    BadChangeset(String),
    #[error("json-pushes has no push {pushid} (it answered {answered:?})")]
    NoSuchPush { pushid: u64, answered: Vec<String> },
    #[error("json-pushes knows no push with this revision")]
    NoPushWithRevision,
    #[error("no bundled json-pushes response for {0}")]
    NotBundled(String),
    #[error("bundled json-pushes responses are looked up by push, not revision")]
    BundledByPushOnly,
    #[error("hg client closed")]
    Closed,
    #[error("hg.mozilla.org answered more than {0} bytes")]
    TooLarge(usize),
}

impl HgError {
    /// What the message whose processing made this call does next.
    pub fn action(&self) -> Action {
        use HgError::*;
        match self {
            Transport(_) | Busy(_) | Body(_) | Closed => Action::Retry,
            BadUrl(_) | HostNotAllowed(_) | NotJsonPushes(_) | BadChangeset(_) | TooLarge(_) => {
                Action::DeadLetter
            }
            Refused { .. }
            | NoSuchPush { .. }
            | NoPushWithRevision
            | NotBundled(_)
            | BundledByPushOnly => Action::Skip,
        }
    }
}

impl From<HgError> for StageError {
    fn from(e: HgError) -> StageError {
        StageError::from_source(Stage::Enrich, e.action(), e)
    }
}

pub const USER_AGENT: &str = concat!(
    "bugflow/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/mozilla/bugbug; event-driven bug and push classification)"
);

/// A push as json-pushes describes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PushDetails {
    pub pushid: u64,
    #[serde(default)]
    pub date: i64,
    #[serde(default)]
    pub user: String,
    /// Empty when every changeset of the push is now obsolete.
    pub changesets: Vec<Commit>,
    #[serde(default)]
    pub obsolete: usize,
}

#[derive(Deserialize)]
struct JsonPushes {
    pushes: BTreeMap<String, RawPush>,
}

#[derive(Deserialize)]
struct RawPush {
    #[serde(default)]
    date: i64,
    #[serde(default)]
    user: String,
    #[serde(default)]
    changesets: Vec<serde_json::Value>,
    #[serde(default)]
    obsoletechangesets: Vec<serde_json::Value>,
}

/// Where changesets come from.
#[derive(Clone)]
pub enum Source {
    /// hg.mozilla.org over HTTPS.
    Http(HttpHg),
    /// json-pushes responses bundled with bugflow, by push URL (`bugflow demo`, offline).
    Bundled(Arc<BTreeMap<String, String>>),
}

impl Source {
    /// The changesets of the push at `push_full_json_url`, and its id.
    pub async fn push(&self, url: &str, pushid: u64) -> Result<PushDetails, HgError> {
        parse_push(&self.fetch(url).await?, pushid)
    }

    /// The json-pushes answer at `url`, as it came (what `bugflow record --enrich` keeps).
    pub async fn fetch(&self, url: &str) -> Result<String, HgError> {
        match self {
            Source::Http(client) => client.get(url).await,
            Source::Bundled(responses) => responses
                .get(url)
                .cloned()
                .ok_or_else(|| HgError::NotBundled(url.to_owned())),
        }
    }

    /// The `json-pushes?changeset=` answer at `url` ([`changeset_url`]), as it came (what
    /// `bugflow record --enrich` keeps of a push-risk request). Bundled answers are by push
    /// URL only.
    pub async fn fetch_changeset(&self, url: &str) -> Result<String, HgError> {
        match self {
            Source::Http(client) => client.get(url).await,
            Source::Bundled(_) => Err(HgError::BundledByPushOnly),
        }
    }
}

/// hg's refusal of `url` with `status`, as an archive stored it
/// ([`crate::message::Enrichment::refused`]): the error the live fetch gave.
pub fn refusal(url: &str, status: u16) -> HgError {
    match reqwest::StatusCode::from_u16(status) {
        Ok(status) => HgError::Refused {
            status,
            url: url.to_owned(),
        },
        Err(_) => {
            HgError::NotJsonPushes(format!("a stored refusal of {status}, not an HTTP status"))
        }
    }
}

/// The json-pushes URL of the push that contains `rev` on `base/branch` (for
/// `GET /push/<branch>/<rev>/risk`).
pub fn changeset_url(base: &str, branch: &str, rev: &str) -> String {
    format!(
        "{}/{branch}/json-pushes?version=2&full=1&changeset={rev}",
        base.trim_end_matches('/')
    )
}

/// The push of a `changeset=` answer: its only one (the latest, were there several).
pub fn parse_changeset_answer(body: &str) -> Result<PushDetails, HgError> {
    let parsed: JsonPushes =
        serde_json::from_str(body).map_err(|e| HgError::NotJsonPushes(e.to_string()))?;
    push_of_changeset(&parsed)
}

/// [`parse_changeset_answer`] of an answer already parsed as JSON (one an archive line
/// stored).
pub fn parse_changeset_value(body: &serde_json::Value) -> Result<PushDetails, HgError> {
    let parsed =
        JsonPushes::deserialize(body).map_err(|e| HgError::NotJsonPushes(e.to_string()))?;
    push_of_changeset(&parsed)
}

fn push_of_changeset(parsed: &JsonPushes) -> Result<PushDetails, HgError> {
    let pushid = parsed
        .pushes
        .keys()
        .filter_map(|k| k.parse().ok())
        .max()
        .ok_or(HgError::NoPushWithRevision)?;
    push_of_answer(parsed, pushid)
}

/// Reads one push out of a json-pushes v2 (`full=1`) response.
pub fn parse_push(body: &str, pushid: u64) -> Result<PushDetails, HgError> {
    let parsed: JsonPushes =
        serde_json::from_str(body).map_err(|e| HgError::NotJsonPushes(e.to_string()))?;
    push_of_answer(&parsed, pushid)
}

/// [`parse_push`] of an answer already parsed as JSON (one an archive line stored).
pub fn parse_push_value(body: &serde_json::Value, pushid: u64) -> Result<PushDetails, HgError> {
    let parsed =
        JsonPushes::deserialize(body).map_err(|e| HgError::NotJsonPushes(e.to_string()))?;
    push_of_answer(&parsed, pushid)
}

fn push_of_answer(parsed: &JsonPushes, pushid: u64) -> Result<PushDetails, HgError> {
    let raw = parsed
        .pushes
        .get(&pushid.to_string())
        .ok_or_else(|| HgError::NoSuchPush {
            pushid,
            answered: parsed.pushes.keys().cloned().collect(),
        })?;
    let mut changesets = Vec::new();
    for c in &raw.changesets {
        // Without `full=1` changesets are bare nodes: nothing to score.
        if c.is_object() {
            let commit: Commit = serde_json::from_value(c.clone())
                .map_err(|e| HgError::BadChangeset(e.to_string()))?;
            changesets.push(commit);
        }
    }
    Ok(PushDetails {
        pushid,
        date: raw.date,
        user: raw.user.clone(),
        changesets,
        obsolete: raw.obsoletechangesets.len(),
    })
}

/// HTTP access to hg.mozilla.org.
#[derive(Clone)]
pub struct HttpHg {
    client: reqwest::Client,
    allowed_hosts: Arc<Vec<String>>,
    permits: Arc<Semaphore>,
    attempts: usize,
}

impl HttpHg {
    pub fn new(
        allowed_hosts: Vec<String>,
        timeout: Duration,
        attempts: usize,
    ) -> anyhow::Result<Self> {
        crate::init_tls();
        let allowed = Arc::new(allowed_hosts);
        let for_redirects = allowed.clone();
        // A redirect is followed only to an allowed host, over http(s), at most 5 times.
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            let ok = allowed_url(&for_redirects, attempt.url());
            if attempt.previous().len() >= 5 || !ok {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        Ok(HttpHg {
            client: reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .timeout(timeout)
                .redirect(redirects)
                .build()?,
            allowed_hosts: allowed,
            permits: Arc::new(Semaphore::new(10)),
            attempts: attempts.max(1),
        })
    }

    async fn get(&self, url: &str) -> Result<String, HgError> {
        let parsed = url::Url::parse(url).map_err(|e| HgError::BadUrl(format!("{url:?}: {e}")))?;
        if !allowed_url(&self.allowed_hosts, &parsed) {
            let host = parsed.host_str().unwrap_or_default();
            return Err(HgError::HostNotAllowed(format!(
                "{}://{host}",
                parsed.scheme()
            )));
        }
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.attempts - 1)
            .with_jitter();
        (|| self.get_once(url))
            .retry(policy)
            .when(|e: &HgError| e.action() == Action::Retry)
            .notify(|e, after| tracing::warn!(error = %e, retry_in = ?after, "hg.mozilla.org; retrying"))
            .await
    }

    async fn get_once(&self, url: &str) -> Result<String, HgError> {
        let _permit = self.permits.acquire().await.map_err(|_| HgError::Closed)?;
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| HgError::Transport(e.to_string()))?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(HgError::Busy(status));
        }
        if status.is_redirection() {
            // Our redirect policy stopped it: it pointed off the allowed hosts.
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("?");
            return Err(HgError::HostNotAllowed(format!("a redirect to {to:.100}")));
        }
        if !status.is_success() {
            return Err(HgError::Refused {
                status,
                url: url.to_owned(),
            });
        }
        let body = super::read_capped(response, MAX_BODY)
            .await
            .map_err(|e| match e {
                super::BodyError::TooLarge => HgError::TooLarge(MAX_BODY),
                super::BodyError::Broken(e) => HgError::Body(e.to_string()),
            })?;
        String::from_utf8(body).map_err(|e| HgError::Body(e.to_string()))
    }
}

/// The largest json-pushes answer read (a push of thousands of changesets is a few MiB).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Is `url` one bugflow may fetch: http(s), on an allowed host and port? An entry
/// `host` allows the scheme's own port only (443, 80); `host:port` allows that port.
fn allowed_url(allowed: &[String], url: &url::Url) -> bool {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let default = url.port().is_none();
    matches!(url.scheme(), "https" | "http")
        && allowed.iter().any(|entry| match entry.rsplit_once(':') {
            Some((h, p)) => h == host && p.parse::<u16>() == Ok(port),
            None => entry == host && default,
        })
}

#[cfg(test)]
mod allowed_tests {
    use super::allowed_url;

    #[test]
    fn scheme_host_and_port_are_all_checked() {
        let allowed = vec!["hg.mozilla.org".to_owned(), "127.0.0.1:8080".to_owned()];
        let ok = |u: &str| allowed_url(&allowed, &url::Url::parse(u).unwrap());
        assert!(ok("https://hg.mozilla.org/try/json-pushes"));
        assert!(ok("https://hg.mozilla.org:443/try"));
        assert!(
            !ok("https://hg.mozilla.org:22/try"),
            "another port of an allowed host"
        );
        assert!(!ok("ftp://hg.mozilla.org/try"));
        assert!(ok("http://127.0.0.1:8080/x"));
        assert!(!ok("http://127.0.0.1:8081/x"));
        assert!(!ok("http://127.0.0.1/x"));
        assert!(!ok("https://hg.mozilla.org.evil.example/x"));
    }
}

/// One page of a repository's pushlog: `(push id, date, changesets)` in id order, and the
/// repository's last push id.
pub type Page = (Vec<(u64, i64, Vec<serde_json::Value>)>, u64);

impl HttpHg {
    /// `json-pushes?version=2&full=1&startID=start&endID=end` (start exclusive, end inclusive)
    /// on `base/repo`, as hg.mozilla.org advises: both bounds, at most 10 requests at once.
    pub async fn pushes(
        &self,
        base: &str,
        repo: &str,
        start: u64,
        end: u64,
    ) -> Result<Page, HgError> {
        let url = format!(
            "{}/{repo}/json-pushes?version=2&full=1&startID={start}&endID={end}",
            base.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        let parsed: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| HgError::NotJsonPushes(e.to_string()))?;
        let last = parsed["lastpushid"].as_u64().unwrap_or(0);
        let mut pushes: Vec<(u64, i64, Vec<serde_json::Value>)> = parsed["pushes"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(id, p)| {
                Some((
                    id.parse().ok()?,
                    p["date"].as_i64().unwrap_or(0),
                    p["changesets"].as_array().cloned().unwrap_or_default(),
                ))
            })
            .collect();
        pushes.sort_by_key(|p| p.0);
        Ok((pushes, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_captured_json_pushes_response_parses() {
        let body = include_str!(
            "../../tests/fixtures/pulse/treeherder_hg_json_pushes_v2_full_response.json"
        );
        let push = parse_push(body, 136598).unwrap();
        assert!(!push.changesets.is_empty());
        assert!(push.changesets.iter().all(|c| c.node.len() == 40));
    }

    #[test]
    fn an_all_obsolete_push_has_no_changesets() {
        let body = include_str!(
            "../../tests/fixtures/pulse/vct_json_pushes_v2_full_obsolete_git_fields.json"
        );
        let push = parse_push(body, 2).unwrap();
        assert!(push.changesets.is_empty());
        assert_eq!(push.obsolete, 2);
        let later = parse_push(body, 3).unwrap();
        assert_eq!(later.changesets.len(), 2);
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let raw = &v["pushes"]["3"]["changesets"][0];
        assert_eq!(
            later.changesets[0].git_node.as_deref(),
            raw["git_node"].as_str()
        );
        assert_eq!(
            later.changesets[0].git_parents.len(),
            raw["git_parents"].as_array().unwrap().len()
        );
    }
}
