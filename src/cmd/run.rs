//! `bugflow run`: every consumer (or the named ones) against the broker, plus the HTTP side.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clients::bugzilla::Bugzilla;
use crate::clients::hg;
use crate::config::Config;
use crate::consumer::{self, ConsumerSpec};
use crate::dispatch::Sinks;
use crate::effects::bugzilla::BugzillaWriter;
use crate::events::InputKind;
use crate::http::{self, AppState};
use crate::models::registry::{ModelSet, Registry};
use crate::pipeline::Pipeline;
use crate::pulse::publish::Publisher;
use crate::runner::Runner;
use crate::sinks::dead_letter::DeadLetterSink;
use crate::sinks::jsonl::JsonlSink;
use crate::sinks::results::ResultsSink;
use crate::store::Store;
use crate::telemetry;

pub struct RunOptions {
    /// Only these consumers (all when empty).
    pub consumers: Vec<String>,
    /// Serve HTTP (dashboard, API, webhook, health, metrics) on `http.listen`.
    pub http: bool,
    /// Run no consumer: only the HTTP side (the web Deployment).
    pub http_only: bool,
}

/// Picks the consumers to run; an unknown name is an error that lists the known ones.
pub fn select(all: Vec<ConsumerSpec>, names: &[String]) -> anyhow::Result<Vec<ConsumerSpec>> {
    if names.is_empty() {
        return Ok(all);
    }
    let known: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
    let mut chosen = Vec::new();
    for name in names {
        match all.iter().find(|c| &c.name == name) {
            Some(spec) => chosen.push(spec.clone()),
            None => anyhow::bail!("no consumer {name:?}; known: {}", known.join(", ")),
        }
    }
    Ok(chosen)
}

/// The Bugzilla client, when an API key is configured.
pub fn bugzilla_client(config: &Config) -> anyhow::Result<Option<Bugzilla>> {
    if config.bugzilla.api_key.is_empty() {
        return Ok(None);
    }
    reader_client(config).map(Some)
}

/// A Bugzilla client with the API key if there is one, anonymous otherwise (reads only).
pub fn reader_client(config: &Config) -> anyhow::Result<Bugzilla> {
    Bugzilla::new(
        &config.bugzilla.url,
        config.bugzilla.api_key.clone(),
        std::time::Duration::from_secs(config.bugzilla.timeout_seconds),
        std::time::Duration::from_secs(config.bugzilla.block_seconds),
        config.bugzilla.attempts,
    )
}

/// A consumer's pipeline with the serving models, hg.mozilla.org if enabled, Bugzilla if a
/// key is configured, and the Bugzilla writer if the consumer enables it and `store` is given
/// (replays get no store: a replay never writes to Bugzilla).
pub fn pipeline_for(
    config: &Config,
    spec: ConsumerSpec,
    models: Arc<ModelSet>,
    store: Option<Arc<Store>>,
) -> anyhow::Result<Pipeline> {
    let writer_config = spec.sinks.bugzilla.clone();
    let name = spec.name.clone();
    let input = spec.input;
    let mut pipeline = Pipeline::new(spec, models);
    if let Some(store) = &store {
        pipeline = pipeline.with_store(store.clone());
    }
    if let Some(client) = bugzilla_client(config)? {
        if writer_config.enabled
            && let Some(store) = store
        {
            pipeline = pipeline.with_writer(BugzillaWriter {
                client: client.clone(),
                store,
                config: writer_config,
                consumer: name,
            });
        }
        pipeline = pipeline.with_bugzilla(client);
    } else {
        if writer_config.enabled {
            tracing::warn!(consumer = %name, "sinks.bugzilla is enabled but bugzilla.api_key is empty: nothing is written");
        }
        if input == InputKind::PredictionRequest {
            // The API's workers read public bugs anonymously (BMO allows it, rate-limited).
            pipeline = pipeline.with_bugzilla(reader_client(config)?);
        }
    }
    Ok(if config.hg.enabled {
        pipeline
            .with_hg(hg::Source::Http(hg::HttpHg::new(
                config.hg.allowed_hosts.clone(),
                std::time::Duration::from_secs(config.hg.timeout_seconds),
                config.hg.attempts,
            )?))
            .with_hg_url(&config.hg.url)
    } else {
        pipeline
    })
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

/// Builds the sinks of one consumer on a shared publisher.
pub fn sinks_for(
    config: &Config,
    spec: &ConsumerSpec,
    publisher: &Publisher,
    jsonl: Option<JsonlSink>,
) -> Sinks {
    Sinks {
        results: spec
            .sinks
            .results
            .then(|| ResultsSink::new(publisher.clone(), config.results_exchange())),
        dead_letter: Some(DeadLetterSink::new(
            publisher.clone(),
            config.dead_letter_exchange(),
        )),
        jsonl,
    }
}

pub async fn run(config: Config, options: RunOptions) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let all_specs = consumer::load_all(&config)?;
    let specs = if options.http_only {
        Vec::new()
    } else {
        select(all_specs.clone(), &options.consumers)?
    };
    let publisher = Publisher::connect(config.clone()).await?;
    let jsonl = match &config.results_jsonl {
        Some(path) => Some(JsonlSink::open(path).await?),
        None => None,
    };
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let store = Arc::new(Store::open(config.store.expose()).await?);
    if let Some(client) = bugzilla_client(&config)? {
        match client.whoami().await {
            Ok(me) => {
                let login = me["name"].as_str().unwrap_or_default();
                tracing::info!(%login, "Bugzilla API key accepted");
                store
                    .set_watermark(crate::pipeline::BOT_LOGIN, login)
                    .await?;
            }
            Err(e) => anyhow::bail!("Bugzilla refused the API key check (GET /rest/whoami): {e}"),
        }
    }
    if config.poller.enabled {
        match bugzilla_client(&config)? {
            Some(client) => {
                let poller = crate::poller::Poller {
                    client,
                    store: store.clone(),
                    publisher: publisher.clone(),
                    exchange: config.bugzilla_exchange(),
                    initial_since: config.poller.initial_since.clone(),
                };
                let every = std::time::Duration::from_secs(config.poller.every_seconds.max(10));
                let token = shutdown.clone();
                tasks.spawn(async move {
                    poller.run(every, token).await;
                    Ok(())
                });
            }
            None => tracing::warn!("poller.enabled but bugzilla.api_key is empty: not polling"),
        }
    }
    let models = load_models(&config)?;
    for (model, version) in models.versions() {
        tracing::info!(%model, %version, "model loaded");
    }
    let watcher = models.clone();
    let every = std::time::Duration::from_secs(config.models_refresh_seconds.max(1));
    let token = shutdown.clone();
    tasks.spawn(async move {
        watcher.watch(every, token).await;
        Ok(())
    });

    // Ready means: every model a consumer of this process runs has a serving bundle.
    let mut required_models: Vec<_> = specs.iter().flat_map(|s| s.models.clone()).collect();
    required_models.sort();
    required_models.dedup();
    for spec in specs {
        let sinks = sinks_for(&config, &spec, &publisher, jsonl.clone());
        let runner = Runner::new(
            config.clone(),
            Arc::new(pipeline_for(
                &config,
                spec,
                models.clone(),
                Some(store.clone()),
            )?),
            sinks,
            shutdown.clone(),
        );
        tasks.spawn(async move { runner.run().await });
    }

    if options.http {
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http.listen))?;
        tracing::info!(addr = %config.http.listen, "HTTP: / (dashboard), the prediction API, /bugzilla/webhook, /healthz, /readyz, /metrics, /swagger");
        let mut state = AppState::new(
            config.clone(),
            Publisher::new(config.clone()).with_attempts(2),
        );
        state.prometheus = telemetry::prometheus();
        state.store = Some(store.clone());
        state.bugzilla = Some(reader_client(&config)?);
        state.models = models.clone();
        state.required_models = required_models;
        // The dashboard follows the results of every consumer, wherever it runs; a process
        // started for chosen consumers (a worker pod) serves health and metrics only.
        if options.http_only || options.consumers.is_empty() {
            let monitor = state.monitor.clone();
            let (watch_config, token) = (config.clone(), shutdown.clone());
            tasks.spawn(async move {
                monitor.follow(watch_config, all_specs, token).await;
                Ok(())
            });
        }
        let token = shutdown.clone();
        tasks.spawn(async move { Ok(http::serve(listener, state, token).await?) });
    }

    tokio::select! {
        _ = super::shutdown_signal() => tracing::info!("shutting down: finishing in-flight messages"),
        Some(result) = tasks.join_next() => {
            shutdown.cancel();
            while tasks.join_next().await.is_some() {}
            publisher.close().await;
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.into()),
            };
        }
    }
    shutdown.cancel();
    while let Some(result) = tasks.join_next().await {
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "task ended with an error");
        }
    }
    publisher.close().await;
    tracing::info!("stopped");
    Ok(())
}
