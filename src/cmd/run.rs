//! `bugflow run`: every consumer (or the named ones) against the broker, plus the HTTP side.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::app::{self, App, Mode};
use crate::config::Config;
use crate::consumer::{self, ConsumerSpec};
use crate::http::{self, AppState};
use crate::pulse::publish::Publisher;
use crate::runner::Runner;
use crate::sinks::archive::ArchiveSink;
use crate::sinks::jsonl::JsonlSink;
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

/// What `bugflow run` keeps running until it stops.
struct Process {
    app: App,
    /// Every consumer of the deployment (the dashboard follows them all).
    all: Vec<ConsumerSpec>,
    /// The consumers this process runs.
    specs: Vec<ConsumerSpec>,
    store: Arc<Store>,
    publisher: Publisher,
    /// The live report, refreshed by a task and read by the dashboard.
    live: crate::models::live::Shared,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

pub async fn run(config: Config, options: RunOptions) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let all = consumer::load_all(&config)?;
    let specs = if options.http_only {
        Vec::new()
    } else {
        select(all.clone(), &options.consumers)?
    };
    let app = App::new(config.clone())?;
    app.check(&specs, Mode::Live)?;
    let mut process = Process {
        store: Arc::new(Store::open(config.store.expose()).await?),
        publisher: Publisher::connect(config.clone()).await?,
        live: Default::default(),
        app,
        all,
        specs,
        shutdown: CancellationToken::new(),
        tasks: tokio::task::JoinSet::new(),
    };
    process.check_bugzilla_key().await?;
    process.start_poller()?;
    process.start_model_watch();
    process.start_live_report();
    process.start_pruning();
    process.start_consumers().await?;
    if options.http {
        let dashboard = options.http_only || options.consumers.is_empty();
        process.start_http(dashboard).await?;
    }
    process.wait().await
}

impl Process {
    /// With an API key: Bugzilla must accept it (`GET /rest/whoami`), and the bot's login is
    /// kept so that its own changes are not harvested as labels.
    async fn check_bugzilla_key(&self) -> anyhow::Result<()> {
        let Some(client) = &self.app.clients.bugzilla else {
            return Ok(());
        };
        let me = client.whoami().await.map_err(|e| {
            anyhow::anyhow!("Bugzilla refused the API key check (GET /rest/whoami): {e}")
        })?;
        let login = me["name"].as_str().unwrap_or_default();
        tracing::info!(%login, "Bugzilla API key accepted");
        self.store
            .set_watermark(crate::pipeline::BOT_LOGIN, login)
            .await
    }

    /// The REST poller, when `poller.enabled` (it needs an API key).
    fn start_poller(&mut self) -> anyhow::Result<()> {
        let config = &self.app.config;
        if !config.poller.enabled {
            return Ok(());
        }
        let Some(client) = self.app.clients.bugzilla.clone() else {
            tracing::warn!("poller.enabled but bugzilla.api_key is empty: not polling");
            return Ok(());
        };
        let poller = crate::poller::Poller {
            client,
            store: self.store.clone(),
            publisher: self.publisher.clone(),
            exchange: config.bugzilla_exchange(),
            initial_since: config.poller.initial_since.clone(),
        };
        let every = std::time::Duration::from_secs(config.poller.every_seconds.max(10));
        let token = self.shutdown.clone();
        self.tasks.spawn(async move {
            poller.run(every, token).await;
            Ok(())
        });
        Ok(())
    }

    /// Prunes the store hourly (`store_keep_days`).
    fn start_pruning(&mut self) {
        let (store, keep) = (self.store.clone(), self.app.config.store_keep_days);
        let token = self.shutdown.clone();
        self.tasks.spawn(async move {
            store
                .prune_every(keep, std::time::Duration::from_secs(3600), token)
                .await;
            Ok(())
        });
    }

    /// Follows `bugflow models promote | rollback` within `models_refresh_seconds`.
    fn start_model_watch(&mut self) {
        for (model, version) in self.app.models.versions() {
            tracing::info!(%model, %version, "model loaded");
        }
        let watcher = self.app.models.clone();
        let every = std::time::Duration::from_secs(self.app.config.models_refresh_seconds.max(1));
        let token = self.shutdown.clone();
        self.tasks.spawn(async move {
            watcher.watch(every, token).await;
            Ok(())
        });
    }

    /// Recomputes the live report every `live_refresh_seconds`: gauges, drift warnings, the
    /// dashboard's chart.
    fn start_live_report(&mut self) {
        let store = self.store.clone();
        let registry = self.app.models.registry().clone();
        let every = std::time::Duration::from_secs(self.app.config.live_refresh_seconds.max(1));
        let (shared, token) = (self.live.clone(), self.shutdown.clone());
        self.tasks.spawn(async move {
            crate::models::live::watch(store, registry, every, shared, token).await;
            Ok(())
        });
    }

    async fn start_consumers(&mut self) -> anyhow::Result<()> {
        let config = &self.app.config;
        let jsonl = match &config.results_jsonl {
            Some(path) => Some(JsonlSink::open(path).await?),
            None => None,
        };
        // Consumers that name one archive file share its writer, so their lines never mix.
        let mut archives: HashMap<PathBuf, ArchiveSink> = HashMap::new();
        for spec in self.specs.clone() {
            let mut sinks = app::sinks_for(config, &spec, &self.publisher, jsonl.clone());
            if let Some(archive) = &spec.outputs.archive {
                let sink = match archives.get(&archive.path) {
                    // (They agree on its past days: `consumer::load_all` checks.)
                    Some(sink) => sink.clone(),
                    None => {
                        let sink = ArchiveSink::open_dated(&archive.path, archive.past_days()).await.map_err(|e| {
                            anyhow::anyhow!(
                                "consumer {}: cannot open its archive {} ([sinks.archive] path): {e}",
                                spec.name,
                                archive.path.display()
                            )
                        })?;
                        archives.insert(archive.path.clone(), sink.clone());
                        sink
                    }
                };
                tracing::info!(consumer = %spec.name, archive = %archive.path.display(), "keeping each message with what was fetched for it");
                sinks.archive = Some(sink);
            }
            let pipeline = self.app.pipeline(spec, Some(self.store.clone()));
            let runner = Runner::new(
                config.clone(),
                Arc::new(pipeline),
                sinks,
                self.shutdown.clone(),
            );
            self.tasks.spawn(async move { runner.run().await });
        }
        Ok(())
    }

    /// The HTTP side; with `dashboard`, also the monitor that feeds it (a process started
    /// for chosen consumers, a worker pod, serves health and metrics only).
    async fn start_http(&mut self, dashboard: bool) -> anyhow::Result<()> {
        let config = self.app.config.clone();
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.http.listen))?;
        tracing::info!(addr = %config.http.listen, "HTTP: / (dashboard), the prediction API, /bugzilla/webhook, /healthz, /readyz, /metrics, /swagger");
        let mut state = AppState::new(
            config.clone(),
            Publisher::new(config.clone()).with_attempts(2),
        );
        state.prometheus = telemetry::prometheus();
        state.store = Some(self.store.clone());
        state.bugzilla = Some(self.app.clients.reader.clone());
        state.models = self.app.models.clone();
        state.live = self.live.clone();
        // Ready means: every model a consumer of this process runs has a serving bundle.
        state.required_models = app::required_models(&self.specs);
        if dashboard {
            let monitor = state.monitor.clone();
            let (all, token) = (self.all.clone(), self.shutdown.clone());
            self.tasks.spawn(async move {
                monitor.follow(config, all, token).await;
                Ok(())
            });
        }
        let token = self.shutdown.clone();
        self.tasks
            .spawn(async move { Ok(http::serve(listener, state, token).await?) });
        Ok(())
    }

    /// Until a signal (then finish in-flight work) or the first task to end (then stop the
    /// others and return its error).
    async fn wait(mut self) -> anyhow::Result<()> {
        let first = tokio::select! {
            _ = super::shutdown_signal() => {
                tracing::info!("shutting down: finishing in-flight messages");
                None
            }
            Some(result) = self.tasks.join_next() => Some(result),
        };
        self.shutdown.cancel();
        while let Some(result) = self.tasks.join_next().await {
            if let Ok(Err(e)) = result {
                tracing::warn!(error = %e, "task ended with an error");
            }
        }
        self.publisher.close().await;
        match first {
            None => {
                tracing::info!("stopped");
                Ok(())
            }
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(e.into()),
        }
    }
}
