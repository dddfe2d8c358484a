//! Builds and checks everything a process runs, from its [`Config`], at start.
//!
//! A consumer file says what a consumer needs (a store, Bugzilla, hg.mozilla.org, a writer);
//! the configuration says what this deployment has. [`App::check`] compares the two before
//! anything runs: a consumer whose needs are not configured stops start-up with a message
//! naming the consumer and the field to set, instead of dead-lettering every message later.
//! [`App::pipeline`] then wires each consumer's pipeline and effects, and [`App::sinks`] its
//! sinks. `bugflow run`, `replay`, `demo`, the bench and the tests all build through here.

use std::sync::Arc;
use std::time::Duration;

use crate::clients::bugzilla::Bugzilla;
use crate::clients::hg;
use crate::config::Config;
use crate::consumer::ConsumerSpec;
use crate::dispatch::Sinks;
use crate::effects::bugzilla::BugzillaWriter;
use crate::events::InputKind;
use crate::models::registry::{ModelSet, Registry};
use crate::models::{Input, ModelKind};
use crate::pipeline::Pipeline;
use crate::pulse::publish::Publisher;
use crate::sinks::dead_letter::DeadLetterSink;
use crate::sinks::jsonl::JsonlSink;
use crate::sinks::results::ResultsSink;
use crate::sinks::retry::RetrySink;
use crate::store::Store;

/// Where a consumer runs: live (effects on) or replayed (no store, no writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `bugflow run`: the store is open, the writer may write.
    Live,
    /// `bugflow replay`, the demo: nothing is written anywhere.
    Replay,
}

/// What a consumer needs that the configuration does not give, said so a person can fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("consumer {consumer}: {needs}; set {field}")]
pub struct Unmet {
    pub consumer: String,
    pub needs: String,
    /// The configuration field (or consumer-file field) to set.
    pub field: String,
}

/// The configuration, the serving models, and the builders of everything that runs.
pub struct App {
    pub config: Arc<Config>,
    pub models: Arc<ModelSet>,
    pub clients: Clients,
}

/// The HTTP clients of a process, built once and shared by every consumer: a Bugzilla
/// client keeps BMO's 429 block and a rejected key for all callers, and the hg client holds
/// hg.mozilla.org's limit of 10 requests at once — copies per consumer would split that.
#[derive(Clone)]
pub struct Clients {
    /// With the API key; `None` without one.
    pub bugzilla: Option<Bugzilla>,
    /// With the key if there is one, anonymous otherwise (reads only).
    pub reader: Bugzilla,
    /// `None` when `hg.enabled` is false.
    pub hg: Option<hg::Source>,
}

impl Clients {
    pub fn new(config: &Config) -> anyhow::Result<Clients> {
        let reader = reader_client(config)?;
        let bugzilla = (!config.bugzilla.api_key.is_empty()).then(|| reader.clone());
        let hg = match config.hg.enabled {
            true => Some(hg::Source::Http(hg_client(config)?)),
            false => None,
        };
        Ok(Clients {
            bugzilla,
            reader,
            hg,
        })
    }
}

impl App {
    /// Loads the serving models of `models_dir` (none if the folder is missing) and builds
    /// the clients.
    pub fn new(config: Arc<Config>) -> anyhow::Result<App> {
        let models = load_models(&config)?;
        let clients = Clients::new(&config)?;
        Ok(App {
            config,
            models,
            clients,
        })
    }

    /// Checks every consumer against the configuration (all problems at once).
    pub fn check(&self, specs: &[ConsumerSpec], mode: Mode) -> anyhow::Result<()> {
        let unmet: Vec<String> = specs
            .iter()
            .flat_map(|spec| unmet(&self.config, spec, mode))
            .map(|u| u.to_string())
            .collect();
        anyhow::ensure!(unmet.is_empty(), "{}", unmet.join("\n"));
        Ok(())
    }

    /// A consumer's pipeline: the serving models, hg.mozilla.org if enabled, Bugzilla if a
    /// key is configured (anonymously for the API's workers), and, live, the store and the
    /// writer if the consumer enables it.
    pub fn pipeline(&self, spec: ConsumerSpec, store: Option<Arc<Store>>) -> Pipeline {
        wire(
            &self.config,
            &self.clients,
            spec,
            self.models.clone(),
            store,
        )
    }
}

/// What `spec` needs that `config` lacks.
pub fn unmet(config: &Config, spec: &ConsumerSpec, mode: Mode) -> Vec<Unmet> {
    let mut found = Vec::new();
    let mut need = |needs: &str, field: &str| {
        found.push(Unmet {
            consumer: spec.name.clone(),
            needs: needs.to_owned(),
            field: field.to_owned(),
        })
    };
    let scores_commits = spec.models.iter().any(|m| m.input() == Input::Commit);
    if scores_commits && !config.hg.enabled {
        need(
            "it scores commits, which are fetched from hg.mozilla.org",
            "hg.enabled = true (or remove commit-risk from its models)",
        );
    }
    if mode == Mode::Live {
        if spec.outputs.bugzilla.enabled && config.bugzilla.api_key.is_empty() {
            need(
                "its Bugzilla writer is enabled, and writing needs an API key",
                "bugzilla.api_key (BUGFLOW_BUGZILLA__API_KEY), or sinks.bugzilla.enabled = false in its file",
            );
        }
        if spec.input == InputKind::PredictionRequest && config.store.expose().is_empty() {
            need(
                "prediction requests are answered through the store",
                "store",
            );
        }
    }
    found
}

/// A Bugzilla client with the API key if there is one, anonymous otherwise (reads only).
pub fn reader_client(config: &Config) -> anyhow::Result<Bugzilla> {
    Bugzilla::new(
        &config.bugzilla.url,
        config.bugzilla.api_key.clone(),
        Duration::from_secs(config.bugzilla.timeout_seconds),
        Duration::from_secs(config.bugzilla.block_seconds),
        config.bugzilla.attempts,
        config.bugzilla.max_concurrent,
    )
}

/// The hg.mozilla.org client of the configuration.
pub fn hg_client(config: &Config) -> anyhow::Result<hg::HttpHg> {
    hg::HttpHg::new(
        config.hg.allowed_hosts.clone(),
        Duration::from_secs(config.hg.timeout_seconds),
        config.hg.attempts,
    )
}

/// See [`App::pipeline`], with clients of its own; `store` is `None` for replays (a
/// replay never writes).
pub fn pipeline_for(
    config: &Config,
    spec: ConsumerSpec,
    models: Arc<ModelSet>,
    store: Option<Arc<Store>>,
) -> anyhow::Result<Pipeline> {
    Ok(wire(config, &Clients::new(config)?, spec, models, store))
}

fn wire(
    config: &Config,
    clients: &Clients,
    spec: ConsumerSpec,
    models: Arc<ModelSet>,
    store: Option<Arc<Store>>,
) -> Pipeline {
    let writer_config = spec.outputs.bugzilla.clone();
    let name = spec.name.clone();
    // The API's workers read public bugs anonymously (BMO allows it, rate-limited).
    let client = match spec.input {
        InputKind::PredictionRequest => Some(clients.reader.clone()),
        _ => clients.bugzilla.clone(),
    };
    let mut pipeline = Pipeline::new(spec, models)
        .with_max_body(config.amqp.max_body_bytes)
        .with_emails(config.emails);
    if let Some(store) = &store {
        pipeline = pipeline.with_store(store.clone());
        if writer_config.enabled
            && let Some(client) = clients.bugzilla.clone()
        {
            pipeline = pipeline.with_writer(BugzillaWriter {
                client,
                store: store.clone(),
                config: writer_config,
                consumer: name,
            });
        }
    }
    if let Some(client) = client {
        pipeline = pipeline.with_bugzilla(client);
    }
    if let Some(source) = &clients.hg {
        pipeline = pipeline.with_hg(source.clone()).with_hg_url(&config.hg.url);
    }
    pipeline
}

/// The serving models of the registry at `models_dir` (none if the folder is missing).
pub fn load_models(config: &Config) -> anyhow::Result<Arc<ModelSet>> {
    if config.models_dir.is_dir() {
        ModelSet::load(Registry::new(&config.models_dir))
    } else {
        tracing::warn!(dir = %config.models_dir.display(), "no models folder: results carry no predictions");
        Ok(ModelSet::empty())
    }
}

/// The sinks of one consumer on a shared publisher.
pub fn sinks_for(
    config: &Config,
    spec: &ConsumerSpec,
    publisher: &Publisher,
    jsonl: Option<JsonlSink>,
) -> Sinks {
    Sinks {
        results: spec
            .outputs
            .results
            .then(|| ResultsSink::new(publisher.clone(), config.results_exchange())),
        dead_letter: Some(DeadLetterSink::new(publisher.clone(), config)),
        retry: Some(RetrySink::new(
            publisher.clone(),
            config.retry_exchange(),
            config.amqp.retry_delay_seconds.saturating_mul(1000),
            config.amqp.retry_attempts,
        )),
        jsonl,
        // Opened by `bugflow run`, once for every consumer naming the same file.
        archive: None,
    }
}

/// Every model the consumers of this process run (what `/readyz` waits for).
pub fn required_models(specs: &[ConsumerSpec]) -> Vec<ModelKind> {
    let mut models: Vec<ModelKind> = specs.iter().flat_map(|s| s.models.clone()).collect();
    models.sort();
    models.dedup();
    models
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> ConsumerSpec {
        ConsumerSpec::builtin(name, &Config::default()).unwrap()
    }

    #[test]
    fn a_consumer_whose_needs_are_not_configured_is_named_with_the_field() {
        let mut config = Config::default();
        assert!(unmet(&config, &spec("pushes"), Mode::Live).is_empty());
        config.hg.enabled = false;
        let found = unmet(&config, &spec("landings"), Mode::Replay);
        assert_eq!(found.len(), 1);
        let text = found[0].to_string();
        assert!(text.starts_with("consumer landings:"), "{text}");
        assert!(text.contains("hg.enabled"), "{text}");

        let mut writer = spec("bug-triage");
        writer.outputs.bugzilla.enabled = true;
        let text = unmet(&Config::default(), &writer, Mode::Live)[0].to_string();
        assert!(text.contains("bugzilla.api_key"), "{text}");
        assert!(
            unmet(&Config::default(), &writer, Mode::Replay).is_empty(),
            "a replay never writes: no key needed"
        );
    }
}
