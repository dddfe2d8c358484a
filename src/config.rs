// Over 400 lines on purpose: every section of the configuration, with its defaults, in one
// place, so that this file reads as the reference of config/bugflow.toml.
//! bugflow's configuration, in three layers (later wins):
//!
//! 1. defaults compiled into the binary ([`Config::default`]) — enough for a local broker;
//! 2. a TOML file: `config/bugflow.toml` if present, or the file given with `--config`;
//! 3. `BUGFLOW_*` environment variables, `__` separating levels:
//!    `BUGFLOW_AMQP__URL=amqps://user:pass@pulse.mozilla.org:5671`, `BUGFLOW_USER=mybot`.
//!
//! Consumers are configured separately, one TOML file each, see [`crate::consumer`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::secret::{Secret, redact_url};

/// Where `bugflow` looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "config/bugflow.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Pulse user. Pulse only lets it read queues `queue/<user>/…` and write exchanges
    /// `exchange/<user>/…`; `{user}` in names below is replaced with it.
    pub user: String,
    /// Deployment name (`dev`, `prod`) in queue names, so that two deployments sharing a
    /// Pulse user do not steal each other's messages. `{env}` in names is replaced with it.
    pub env: String,
    pub amqp: AmqpConfig,
    pub exchanges: ExchangesConfig,
    /// The queue that collects dead letters of every consumer.
    pub dead_letter_queue: String,
    /// The folder of consumer TOML files.
    pub consumers_dir: PathBuf,
    pub http: HttpConfig,
    pub hg: HgConfig,
    pub bugzilla: BugzillaConfig,
    pub poller: PollerConfig,
    /// The store of Bugzilla effects (with their idempotency keys), watermarks and labels:
    /// a SQLite file path, or a `postgres://` URL when several processes share it.
    pub store: Secret,
    /// Also append every result to this JSON Lines file (`bugflow run`).
    pub results_jsonl: Option<PathBuf>,
    /// Warn when a consumer's queue (ready + unacked) grows past this; Pulse deletes queues
    /// over 8,000 messages.
    pub queue_warn_messages: u32,
    /// The model registry: `models/<model>/<version>/` and `models/<model>/history.json`.
    pub models_dir: PathBuf,
    /// How often a running service checks the registry for a promoted or rolled-back bundle.
    pub models_refresh_seconds: u64,
    /// How often a running service recomputes the live report (accuracy on harvested labels,
    /// drift): its gauges, the dashboard's chart, the drift warnings.
    pub live_refresh_seconds: u64,
    /// Days the store keeps what it recorded (effects, predictions, labels, API answers);
    /// older rows are pruned hourly. Long enough that an old event's redelivery still finds
    /// its effect.
    pub store_keep_days: u64,
    /// What results keep of e-mail addresses (reporters, pushers, authors): `keep`, `hash`
    /// (a stable pseudonym) or `drop`. The results exchange is readable by every Pulse
    /// account.
    pub emails: crate::pipeline::privacy::Emails,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpConfig {
    /// `amqp://` or `amqps://`. For Pulse: `amqps://<user>:<password>@pulse.mozilla.org:5671`
    /// (no trailing slash: `…:5671/` means the empty vhost, which Pulse refuses).
    pub url: Secret,
    /// Declare the input exchanges (true for local and test brokers). On Pulse this is false:
    /// exchanges we do not own are only checked with a passive declare.
    pub declare_exchanges: bool,
    /// Seconds between heartbeats.
    pub heartbeat: u16,
    /// The largest AMQP frame asked of the broker (bytes; the broker may offer less, and a
    /// body larger than a frame is sent as several). lapin keeps 32 frames of buffer each
    /// way per connection: at RabbitMQ's 128 KiB that is 8 MiB a connection, at 16 KiB
    /// 1 MiB. A `frame_max` in the URL wins.
    pub frame_max: u32,
    /// Attempts of the retry policy for publishing a result before the message is requeued.
    pub publish_attempts: usize,
    /// A message body larger than this is dead-lettered as too large, unread.
    pub max_body_bytes: usize,
    /// Tries of a message whose processing fails transiently (Bugzilla 5xx, a write in
    /// progress elsewhere) before it is dead-lettered. Counted in its `x-bugflow-attempt`
    /// header, so a redelivery after a lost connection is not a try.
    pub retry_attempts: u32,
    /// Seconds a failed message waits in its consumer's retry queue before the next try.
    pub retry_delay_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangesConfig {
    /// Where results go (topic, durable).
    pub results: String,
    /// Where dead letters go, with their reason in the `x-bugflow-reason` header.
    pub dead_letter: String,
    /// Where bug events from webhooks (and the REST poller) are relayed.
    pub bugzilla: String,
    /// Where the HTTP API sends prediction requests for the workers (`api-requests`).
    pub requests: String,
    /// Where a failed message waits (each consumer's retry queue) and comes back from.
    pub retry: String,
}

/// Bugzilla's REST API: full bugs for bug events, and the writer's PUTs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BugzillaConfig {
    pub url: String,
    /// `X-BUGZILLA-API-KEY`; empty: bug events are scored from what they carry, nothing is
    /// written. Set it with BUGFLOW_BUGZILLA__API_KEY, never in a file.
    pub api_key: Secret,
    pub timeout_seconds: u64,
    /// After a 429, no call for this long (BMO blocks the IP for an hour).
    pub block_seconds: u64,
    pub attempts: usize,
    /// Calls to Bugzilla in flight at once, across every consumer of the process (200 at
    /// once would risk BMO's one-hour block).
    pub max_concurrent: usize,
}

impl Default for BugzillaConfig {
    fn default() -> Self {
        BugzillaConfig {
            url: "https://bugzilla.mozilla.org".into(),
            api_key: Secret::default(),
            timeout_seconds: 30,
            block_seconds: 3600,
            max_concurrent: 8,
            attempts: 3,
        }
    }
}

/// The REST poller that fills the gaps webhooks leave (needs `bugzilla.api_key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollerConfig {
    pub enabled: bool,
    pub every_seconds: u64,
    /// Where the first poll starts (RFC 3339) when the store has no watermark yet.
    pub initial_since: String,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            enabled: false,
            every_seconds: 300,
            initial_since: "2026-01-01T00:00:00Z".into(),
        }
    }
}

/// hg.mozilla.org, where pushes' changesets are fetched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HgConfig {
    /// Fetch changesets (needed to score pushes).
    pub enabled: bool,
    /// Push URLs come from messages: only these hosts are ever fetched.
    pub allowed_hosts: Vec<String>,
    pub timeout_seconds: u64,
    /// Attempts per fetch (retries back off exponentially, with jitter).
    pub attempts: usize,
    /// The server `GET /push/<branch>/<rev>/risk` asks for a revision's push.
    pub url: String,
}

impl Default for HgConfig {
    fn default() -> Self {
        HgConfig {
            enabled: true,
            allowed_hosts: vec!["hg.mozilla.org".into()],
            timeout_seconds: 30,
            attempts: 4,
            url: "https://hg.mozilla.org".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The header BMO sends with each webhook POST (configured in BMO's webhook settings).
    pub webhook_auth_header: String,
    /// Its expected value. Empty: the webhook endpoint answers 503 (not configured).
    pub webhook_secret: Secret,
    /// Keys accepted in the prediction API's `X-Api-Key` header. Set them with
    /// BUGFLOW_HTTP__API_KEYS='[key1, key2]'. Empty: every prediction request is refused
    /// (401). `["*"]` accepts any non-empty key, as bugbug does (there the key only names
    /// the caller; bugbot always sends `autonag`): a choice for a service behind its own
    /// access control, not the default.
    pub api_keys: Vec<Secret>,
    /// A prediction request not answered within this many seconds is sent again.
    pub job_timeout_seconds: u64,
    /// Results older than this are computed again (bugbug keeps them 7 days).
    pub result_ttl_seconds: u64,
    /// Web origins allowed to call the prediction routes from a browser (CORS): `["*"]`,
    /// any (bugbug's behaviour), a list of origins, or none. No other route is ever
    /// readable cross-origin (the dashboard's data has no key).
    pub cors_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            user: "bugflow".into(),
            env: "dev".into(),
            amqp: AmqpConfig::default(),
            exchanges: ExchangesConfig::default(),
            dead_letter_queue: "queue/{user}/bugflow-dead-letter-{env}".into(),
            consumers_dir: PathBuf::from("consumers"),
            http: HttpConfig::default(),
            hg: HgConfig::default(),
            bugzilla: BugzillaConfig::default(),
            poller: PollerConfig::default(),
            store: Secret::new("var/bugflow.sqlite"),
            results_jsonl: None,
            queue_warn_messages: 2000,
            models_dir: PathBuf::from("models"),
            models_refresh_seconds: 5,
            live_refresh_seconds: 300,
            store_keep_days: 90,
            emails: crate::pipeline::privacy::Emails::Keep,
        }
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            declare_exchanges: true,
            heartbeat: 60,
            frame_max: 16 * 1024,
            publish_attempts: 5,
            max_body_bytes: 1024 * 1024,
            retry_attempts: 5,
            retry_delay_seconds: 15,
        }
    }
}

impl Default for ExchangesConfig {
    fn default() -> Self {
        ExchangesConfig {
            results: "exchange/{user}/bugflow-results".into(),
            dead_letter: "exchange/{user}/bugflow-dead-letter-{env}".into(),
            bugzilla: "exchange/{user}/bugflow-bugzilla".into(),
            requests: "exchange/{user}/bugflow-requests".into(),
            retry: "exchange/{user}/bugflow-retry-{env}".into(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            webhook_auth_header: "X-Bugflow-Webhook-Secret".into(),
            webhook_secret: Secret::default(),
            api_keys: Vec::new(),
            job_timeout_seconds: 300,
            result_ttl_seconds: 7 * 24 * 3600,
            cors_origins: vec!["*".into()],
        }
    }
}

/// figment's error without the values it quotes: the key, the source (file or variable)
/// and what was wrong, but not what was given (it may be a secret: an API key written
/// without brackets, a numeric webhook secret).
fn redacted(error: figment::Error) -> anyhow::Error {
    use figment::error::{Actual, Kind};
    let shape = |a: &Actual| match a {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "another kind of value",
    };
    let problems: Vec<String> = error
        .into_iter()
        .map(|e| {
            let what = match &e.kind {
                Kind::InvalidType(a, expected) | Kind::InvalidValue(a, expected) => {
                    format!("expected {expected}, found {}", shape(a))
                }
                Kind::UnknownField(field, _) => format!("unknown field `{field}`"),
                Kind::MissingField(field) => format!("missing field `{field}`"),
                Kind::UnknownVariant(..) => "not one of the allowed values".into(),
                Kind::InvalidLength(n, expected) => format!("{n} items, expected {expected}"),
                _ => "a value of the wrong kind".into(),
            };
            // Where it came from: the file, or the environment variable by its name.
            let from = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(source) => format!(" (in {source})"),
                    None => {
                        let profile = e.profile.clone().unwrap_or_default();
                        format!(" ({} {})", m.name, m.interpolate(&profile, &e.path))
                    }
                })
                .unwrap_or_default();
            format!("field `{}`: {what}{from}", e.path.join("."))
        })
        .collect();
    anyhow::anyhow!("bad configuration: {}", problems.join("; "))
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: field `{field}`: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub problem: String,
}

impl Config {
    /// Loads the three layers. `file` is `--config`; without it `config/bugflow.toml` is read
    /// when it exists.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let path = file.map(Path::to_path_buf).or_else(|| {
            let default = PathBuf::from(DEFAULT_CONFIG_FILE);
            default.exists().then_some(default)
        });
        if let Some(path) = &path {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("BUGFLOW_").split("__").ignore(&["config"]));
        let config: Config = figment.extract().map_err(redacted)?;
        config.validate(path.as_deref())?;
        Ok(config)
    }

    /// The configuration a TOML text gives over the defaults (no file, no environment): what
    /// `load` does with a file's content. Used by the config fuzzer.
    pub fn from_toml_str(text: &str) -> anyhow::Result<Config> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(redacted)?;
        config.validate(None)?;
        Ok(config)
    }

    /// Durations and counts that time arithmetic or a loop would choke on (a huge
    /// `block_seconds` overflows `Instant + Duration`): `(field, problem)` of the first out of
    /// its range.
    fn check_ranges(&self) -> Result<(), (&'static str, String)> {
        const DAY: u64 = 24 * 3600;
        for (field, value, low, high) in [
            (
                "bugzilla.timeout_seconds",
                self.bugzilla.timeout_seconds,
                1,
                600,
            ),
            (
                "bugzilla.block_seconds",
                self.bugzilla.block_seconds,
                1,
                DAY,
            ),
            ("bugzilla.attempts", self.bugzilla.attempts as u64, 1, 20),
            (
                "bugzilla.max_concurrent",
                self.bugzilla.max_concurrent as u64,
                1,
                64,
            ),
            ("hg.timeout_seconds", self.hg.timeout_seconds, 1, 600),
            ("poller.every_seconds", self.poller.every_seconds, 1, DAY),
            (
                "http.job_timeout_seconds",
                self.http.job_timeout_seconds,
                1,
                DAY,
            ),
            (
                "http.result_ttl_seconds",
                self.http.result_ttl_seconds,
                1,
                365 * DAY,
            ),
            (
                "amqp.retry_attempts",
                u64::from(self.amqp.retry_attempts),
                1,
                100,
            ),
            (
                "amqp.retry_delay_seconds",
                self.amqp.retry_delay_seconds,
                1,
                DAY,
            ),
            (
                "amqp.publish_attempts",
                self.amqp.publish_attempts as u64,
                1,
                100,
            ),
            (
                "models_refresh_seconds",
                self.models_refresh_seconds,
                1,
                DAY,
            ),
            ("live_refresh_seconds", self.live_refresh_seconds, 1, DAY),
            ("store_keep_days", self.store_keep_days, 1, 3650),
        ] {
            if !(low..=high).contains(&value) {
                return Err((field, format!("{value} is outside {low}..={high}")));
            }
        }
        Ok(())
    }

    /// Refuses a `store` that is neither a `postgres://` URL nor a file path: a mistyped
    /// scheme (`postgress://user:pw@…`) or a libpq `host=… password=…` string would
    /// otherwise become a local SQLite file named after it. The value is never quoted.
    fn check_store(&self) -> Result<(), String> {
        let store = self.store.expose();
        if let Some((scheme, _)) = store.split_once("://") {
            if scheme != "postgres" && scheme != "postgresql" {
                return Err(format!(
                    "a {scheme:.20}:// URL: use postgres:// (PostgreSQL) or a file path (SQLite)"
                ));
            }
        } else if store.split_whitespace().any(|w| w.contains('=')) {
            return Err(
                "looks like a libpq key=value string: write it as a postgres:// URL".into(),
            );
        }
        Ok(())
    }

    /// The `[amqp]` values a broker would refuse or misread: the URL's scheme, vhost and
    /// kombu-style `?ssl`, and a frame below AMQP's minimum. The URL is quoted redacted.
    fn check_amqp(&self) -> Result<(), (&'static str, String)> {
        let err = |field: &'static str, problem: String| (field, problem);
        let url = url::Url::parse(self.amqp.url.expose()).map_err(|e| {
            err(
                "amqp.url",
                format!("{} is not a URL: {e}", redact_url(self.amqp.url.expose())),
            )
        })?;
        if url.scheme() != "amqp" && url.scheme() != "amqps" {
            return Err(err(
                "amqp.url",
                format!("scheme {:?}: use amqp:// or amqps://", url.scheme()),
            ));
        }
        if url.path() == "/" {
            return Err(err(
                "amqp.url",
                "ends with a slash, which means the empty vhost; drop the slash for vhost `/` \
                 or write /%2f"
                    .into(),
            ));
        }
        if url.query_pairs().any(|(k, _)| k == "ssl") {
            return Err(err(
                "amqp.url",
                "`?ssl=1` does not turn TLS on here: use the amqps:// scheme".into(),
            ));
        }
        if self.amqp.frame_max < 4096 {
            return Err(err(
                "amqp.frame_max",
                format!(
                    "{} bytes: AMQP frames are at least 4096 bytes",
                    self.amqp.frame_max
                ),
            ));
        }
        Ok(())
    }

    fn validate(&self, file: Option<&Path>) -> Result<(), ConfigError> {
        let file = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "defaults and BUGFLOW_* environment".into());
        let err = |field: &str, problem: String| ConfigError {
            file: file.clone(),
            field: field.into(),
            problem,
        };
        self.check_store()
            .map_err(|problem| err("store", problem))?;
        if !is_pulse_name(&self.user) {
            return Err(err(
                "user",
                format!(
                    "{:?} is not a Pulse user name ([a-zA-Z][a-zA-Z0-9._-]*)",
                    self.user
                ),
            ));
        }
        self.check_amqp()
            .map_err(|(field, problem)| err(field, problem))?;
        for (field, name) in [
            ("exchanges.results", &self.exchanges.results),
            ("exchanges.dead_letter", &self.exchanges.dead_letter),
            ("exchanges.bugzilla", &self.exchanges.bugzilla),
            ("exchanges.requests", &self.exchanges.requests),
            ("exchanges.retry", &self.exchanges.retry),
        ] {
            let resolved = self.resolve(name);
            if !resolved.starts_with(&format!("exchange/{}/", self.user)) {
                return Err(err(
                    field,
                    format!(
                        "{resolved:?}: Pulse lets user {} write only exchanges exchange/{}/…",
                        self.user, self.user
                    ),
                ));
            }
        }
        let dlq = self.resolve(&self.dead_letter_queue);
        if !dlq.starts_with(&format!("queue/{}/", self.user)) {
            return Err(err(
                "dead_letter_queue",
                format!("{dlq:?} must be named queue/{}/…", self.user),
            ));
        }
        self.check_ranges()
            .map_err(|(field, problem)| err(field, problem))?;
        Ok(())
    }

    /// Replaces `{user}` and `{env}` in a queue or exchange name.
    pub fn resolve(&self, template: &str) -> String {
        template
            .replace("{user}", &self.user)
            .replace("{env}", &self.env)
    }

    pub fn results_exchange(&self) -> String {
        self.resolve(&self.exchanges.results)
    }

    pub fn dead_letter_exchange(&self) -> String {
        self.resolve(&self.exchanges.dead_letter)
    }

    pub fn bugzilla_exchange(&self) -> String {
        self.resolve(&self.exchanges.bugzilla)
    }

    pub fn requests_exchange(&self) -> String {
        self.resolve(&self.exchanges.requests)
    }

    pub fn retry_exchange(&self) -> String {
        self.resolve(&self.exchanges.retry)
    }

    pub fn dead_letter_queue(&self) -> String {
        self.resolve(&self.dead_letter_queue)
    }
}

/// PulseGuardian's rule for user names: `^[a-zA-Z][a-zA-Z0-9._-]*$`.
fn is_pulse_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, finding 11: before the fix, figment's message quoted the value.
    #[test]
    /// Issue 12, finding 12: before, `block_seconds = 9223372036854775807` was accepted
    /// and the first 429 panicked (`Instant + Duration` overflow) in the client.
    fn durations_that_would_overflow_are_refused() {
        for (text, field) in [
            (
                "[bugzilla]\nblock_seconds = 9223372036854775807",
                "bugzilla.block_seconds",
            ),
            (
                "[amqp]\nretry_delay_seconds = 0",
                "amqp.retry_delay_seconds",
            ),
            ("[bugzilla]\nmax_concurrent = 0", "bugzilla.max_concurrent"),
            ("store_keep_days = 100000", "store_keep_days"),
        ] {
            let e = format!("{:#}", Config::from_toml_str(text).unwrap_err());
            assert!(e.contains(field) && e.contains("outside"), "{e}");
        }
        assert!(Config::from_toml_str("[bugzilla]\nblock_seconds = 3600").is_ok());
    }

    #[test]
    /// Issue 12, finding 12: before, production results carried reporters' and pushers'
    /// addresses to an exchange every Pulse account can read.
    fn production_hashes_e_mail_addresses() {
        let production = Config::from_toml_str(include_str!("../config/production.toml")).unwrap();
        assert_eq!(production.emails, crate::pipeline::privacy::Emails::Hash);
    }

    #[test]
    fn config_errors_never_quote_the_values_they_refuse() {
        for text in [
            "[http]\napi_keys = \"sup3rsecretkey\"",
            "[http]\nwebhook_secret = 990123456789",
            "[bugzilla]\napi_key = [\"sup3rsecretkey\"]",
        ] {
            let e = Config::from_toml_str(text).unwrap_err().to_string();
            assert!(
                !e.contains("sup3rsecretkey") && !e.contains("990123456789"),
                "{e}"
            );
            assert!(e.contains("field `"), "names the field: {e}");
        }
        for store in [
            "postgress://bugflow:pw1234@db.example/bugflow",
            "host=db.example user=bugflow password=pw1234",
        ] {
            let text = format!("store = {store:?}");
            let e = Config::from_toml_str(&text).unwrap_err().to_string();
            assert!(e.contains("store"), "{e}");
            assert!(!e.contains("pw1234"), "{e}");
        }
        assert!(Config::from_toml_str("store = \"var/x.sqlite\"").is_ok());
        assert!(Config::from_toml_str("store = \"postgres://u@h/db\"").is_ok());
    }

    #[test]
    fn the_shipped_local_config_equals_the_defaults_as_it_says() {
        let text = include_str!("../config/bugflow.toml");
        assert!(text.contains("These values equal the built-in defaults"));
        assert_eq!(Config::from_toml_str(text).unwrap(), Config::default());
    }

    #[test]
    fn the_trailing_slash_vhost_trap_is_refused() {
        let mut config = Config::default();
        config.amqp.url = Secret::new("amqps://u:secretpw@pulse.mozilla.org:5671/");
        let e = config.validate(None).unwrap_err();
        assert_eq!(e.field, "amqp.url");
        assert!(e.problem.contains("empty vhost"));
        assert!(!e.to_string().contains("secretpw"));
    }

    #[test]
    fn a_frame_smaller_than_amqp_allows_is_refused() {
        let mut config = Config::default();
        config.amqp.frame_max = 1024;
        assert_eq!(config.validate(None).unwrap_err().field, "amqp.frame_max");
        config.amqp.frame_max = 4096;
        assert!(config.validate(None).is_ok());
    }

    #[test]
    fn kombu_ssl_query_is_refused() {
        let mut config = Config::default();
        config.amqp.url = Secret::new("amqp://u:p@pulse.mozilla.org:5671/%2f?ssl=1");
        assert!(config.validate(None).unwrap_err().problem.contains("amqps"));
    }

    #[test]
    fn exchanges_outside_the_user_namespace_are_refused() {
        let mut config = Config::default();
        config.exchanges.results = "exchange/someone-else/results".into();
        assert_eq!(
            config.validate(None).unwrap_err().field,
            "exchanges.results"
        );
    }

    #[test]
    fn a_file_with_an_unknown_field_names_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bugflow.toml");
        std::fs::write(&path, "[amqp]\nurll = \"amqp://x\"\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(e.contains("urll"), "{e}");
        assert!(e.contains("bugflow.toml"), "{e}");
    }
}
