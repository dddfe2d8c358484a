//! The `bugflow` command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use bugflow::cmd;
use bugflow::config::Config;

/// mimalloc rather than glibc's allocator: scoring a message allocates and frees many small
/// values (JSON, features), where glibc spent a third of the time (a `perf` profile of
/// `bench replay`), and its per-thread arenas kept freed memory resident under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (option 15; the crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// In a process that runs consumers (`run`, and `bench pipeline` / `bench serve`, which
/// measure them), pages freed under load go back to the kernel after 100 ms rather than
/// mimalloc's default 1,000: with 200 messages in flight, freed and refilled, a second's
/// worth of freed pages stayed resident. `bench pipeline --consumer bug-triage`, the
/// consumer's RSS loaded / at its peak: 45.6–45.8 / 61.3–66.1 MiB at 1,000 ms (six runs),
/// 41.1–41.6 / 56.4–56.8 at 100 ms (three), the ratio to the relay unchanged within noise.
/// Replays and training keep the default: a replay on every core frees faster than it
/// settles, and purging sooner cost it a fifth (`bench replay`, BMO events, 49–54k → 39–44k
/// msg/s, two runs each, alternated).
fn purge_freed_pages_sooner() {
    // SAFETY: sets one of the allocator's options; mimalloc reads it at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
}

#[derive(Parser)]
#[command(
    name = "bugflow",
    about = "Mozilla's event streams through machine learning",
    disable_version_flag = true,
    arg_required_else_help = true
)]
struct Cli {
    /// Print the code version and the versions of the model bundles that would serve.
    #[arg(short = 'V', long)]
    version: bool,
    /// Config file (default: config/bugflow.toml when it exists). BUGFLOW_* variables
    /// override it, e.g. BUGFLOW_AMQP__URL.
    #[arg(long, global = true, env = "BUGFLOW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the consumers against the broker, and the HTTP side (webhook, health, metrics).
    Run {
        /// Run only this consumer (repeatable). Default: every file in consumers/.
        #[arg(long = "consumer")]
        consumers: Vec<String>,
        /// Do not serve HTTP.
        #[arg(long, conflicts_with = "http_only")]
        no_http: bool,
        /// Serve only HTTP (dashboard, prediction API, webhook): no consumer runs here.
        #[arg(long)]
        http_only: bool,
    },
    /// Run an archive (JSON Lines) through the consumers' pipelines.
    Replay(ReplayArgs),
    /// Tap exchanges into an archive.
    Record {
        /// EXCHANGE=KEY[,KEY…] (repeatable); without `=KEY`, every key.
        #[arg(long = "bind", required = true, value_parser = cmd::record::parse_binding)]
        bindings: Vec<(String, Vec<String>)>,
        /// Archive to append to.
        #[arg(long)]
        out: PathBuf,
        /// Stop after this many messages.
        #[arg(long)]
        limit: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
        /// Store with each message what its consumer's flow fetches to score it (the
        /// json-pushes answer, the full bug), so that a replay can run `--offline`.
        #[arg(long)]
        enrich: bool,
    },
    /// Run the bundled sample stream through every consumer, in-process, and show the outcome.
    Demo,
    /// Benchmarks (build with --release): `bench pipeline`, `bench models`.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Train a model: split, fit, evaluate, write a bundle, promote it if the metrics gate agrees.
    Train(TrainArgs),
    /// Score a bundle on any data set.
    Evaluate {
        model: bugflow::models::ModelKind,
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long = "data", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
    /// List, promote or roll back model bundles.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// List the dead letters the store keeps, or send them again.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLettersAction,
    },
    /// Pull training data from Bugzilla.
    Data {
        #[command(subcommand)]
        what: DataWhat,
    },
    /// Print the consumers as configured (after {user}/{env} are resolved).
    Consumers,
}

/// `bugflow replay`'s arguments.
#[derive(clap::Args)]
struct ReplayArgs {
    /// Archive files.
    #[arg(long = "from", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Send every line to this consumer instead of matching bindings.
    #[arg(long)]
    consumer: Option<String>,
    /// Write results as JSON Lines here, after what the file holds (`-` for stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Publish the archived messages back to their exchanges on the broker instead.
    #[arg(long)]
    publish: bool,
    /// Never touch the network: json-pushes answers and full bugs come from the archive
    /// (`bugflow record --enrich`); a message without them is counted, not fetched.
    #[arg(long, conflicts_with = "publish")]
    offline: bool,
    /// MODEL=VERSION (repeatable): plan every message with these bundles as well as
    /// the serving ones, and print which decisions change (per class pair, examples)
    /// and what the writer would have done differently.
    #[arg(long = "bundle", value_parser = cmd::replay_diff::parse_bundle, conflicts_with_all = ["publish", "out"])]
    bundles: Vec<(bugflow::models::ModelKind, String)>,
}

/// `bugflow train`'s arguments.
#[derive(clap::Args)]
struct TrainArgs {
    /// A model of the catalogue (`models/catalogue/*.toml`; bugbug's names work too).
    model: String,
    /// Data files: bugs (JSON Lines, `.zst` too) with label files (CSV), commits (JSON
    /// Lines) or issues (CSV). Default: the catalogue file's `data`.
    #[arg(long = "data", num_args = 1..)]
    files: Vec<PathBuf>,
    /// The models folder (default: `models_dir` of the configuration).
    #[arg(long)]
    out: Option<PathBuf>,
    /// How to split train and test (default: the catalogue file's `[split]`).
    #[arg(long, value_enum)]
    split: Option<bugflow::train::split::Strategy>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Default: the catalogue file's `split.test_fraction`.
    #[arg(long)]
    test_fraction: Option<f64>,
    /// Promote even if the metrics gate refuses (recorded in the manifest).
    #[arg(long)]
    force: bool,
    /// Make the new bundle the shadow (scores live traffic beside the serving one) instead
    /// of promoting it: the release flow's first step.
    #[arg(long)]
    shadow: bool,
    /// Also write the records used, with their split, to this JSON Lines file (for
    /// `scripts/compare-sklearn`).
    #[arg(long)]
    export: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// The pipeline against a bare relay on the broker (msg/s and their ratio).
    Pipeline {
        #[arg(long, default_value_t = 20_000)]
        messages: u64,
        #[arg(long, default_value_t = 200)]
        prefetch: u16,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// The shipped consumer measured: pushes, or bug-triage (every bug model, no
        /// Bugzilla enrichment).
        #[arg(long, default_value = "pushes")]
        consumer: String,
        /// The pipeline also keeps each message in this archive, as a consumer with
        /// `[sinks.archive]` does (the file is appended to).
        #[arg(long)]
        archive: Option<PathBuf>,
    },
    /// Started by `bench pipeline`: drains a bench deployment's preloaded queue through the
    /// pipeline alone and prints this process's resident memory (`rss LOADED PEAK`).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        consumer: String,
        /// The bench deployment's user (its queues and exchanges are named after it).
        #[arg(long)]
        user: String,
        #[arg(long)]
        prefetch: u16,
        #[arg(long)]
        messages: u64,
    },
    /// In-process replay msg/s per consumer (no broker, no network).
    Replay {
        #[arg(long, default_value_t = 20_000)]
        messages: u64,
        /// Only this consumer's streams: `pushes`, `bug-triage` or `api-requests` (every one by
        /// default).
        #[arg(long, value_parser = ["pushes", "bug-triage", "api-requests"])]
        consumer: Option<String>,
    },
    /// Features + bug models per bug (p50/p99 µs); training time and peak memory.
    Models {
        /// Bug files (JSON Lines, `.zst` too), each measured on its own.
        #[arg(long, num_args = 1.., default_values = ["tests/fixtures/data/bugs.jsonl", "tests/fixtures/data/bugzilla/bugs-2009-2018-full.jsonl.zst"])]
        bugs: Vec<PathBuf>,
        #[arg(long, default_value = "tests/fixtures/data/github_issues_train.csv")]
        issues: PathBuf,
        #[arg(long, default_value_t = 20)]
        repeat: usize,
        /// At most this many bugs of each file.
        #[arg(long, default_value_t = 2_000)]
        max_bugs: usize,
    },
}

#[derive(Subcommand)]
enum DataWhat {
    /// Bugs changed since DATE, with comments, history and attachments, as JSON Lines
    /// (resumable: run it again after an interruption).
    Bugs {
        /// RFC 3339 date or time, e.g. 2026-11-01 or 2026-11-01T00:00:00Z.
        #[arg(long)]
        since: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Harvested labels (a human's type or component after a bugflow prediction) as JSON Lines.
    Labels {
        #[arg(long)]
        out: PathBuf,
    },
    /// A repository's pushes from hg.mozilla.org as commit records (resumable), with
    /// backed_out_by taken from the backouts in the same pull.
    Pushes(cmd::data::PushesOptions),
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Every bundle of every model; `*` marks the one serving, `~` the shadow.
    List,
    /// Serve a bundle (the metrics gate must agree, unless --force).
    Promote {
        model: bugflow::models::ModelKind,
        version: String,
        #[arg(long)]
        force: bool,
    },
    /// Serve the bundle that served before the current one; the reason is recorded.
    Rollback {
        model: bugflow::models::ModelKind,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Score live traffic with VERSION beside the serving bundle (stored, published on
    /// `<consumer>.shadow.<bug>`, never written or answered); `--stop` ends it.
    Shadow {
        model: bugflow::models::ModelKind,
        #[arg(required_unless_present = "stop")]
        version: Option<String>,
        #[arg(long, conflicts_with = "version")]
        stop: bool,
    },
    /// The shadow against the serving bundle: agreement, and accuracy and macro F1 of both
    /// on the bugs people labelled, with 95% intervals.
    Compare { model: bugflow::models::ModelKind },
    /// Promote the shadow once it has run --after-days and the live comparison agrees (the
    /// release CronJob).
    Release {
        model: bugflow::models::ModelKind,
        #[arg(long, default_value_t = 7)]
        after_days: u64,
    },
}

#[derive(Subcommand)]
enum DeadLettersAction {
    /// The newest dead letters, with their reasons.
    List {
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Publish dead letters again to the exchange and routing key they first came through.
    Replay {
        /// One dead letter (an id from `list`); else every kept one, up to --limit.
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bugflow::init_tls();
    bugflow::telemetry::init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.version {
        print!("{}", cmd::version::report(cli.config.as_deref()));
        return Ok(());
    }
    let Some(command) = cli.command else {
        anyhow::bail!("no command given: see bugflow --help");
    };
    let config = Config::load(cli.config.as_deref())?;
    // A deployment's own catalogue files (models/catalogue/*.toml) add to the built-in ones.
    bugflow::models::catalogue::load_dir(&config.models_dir.join("catalogue"))?;
    match command {
        Command::Run {
            consumers,
            no_http,
            http_only,
        } => {
            purge_freed_pages_sooner();
            bugflow::telemetry::prometheus();
            let http = !no_http;
            let options = cmd::run::RunOptions {
                consumers,
                http,
                http_only,
            };
            cmd::run::run(config, options).await
        }
        Command::Replay(args) => replay(config, args).await,
        Command::Record {
            bindings,
            out,
            limit,
            seconds,
            enrich,
        } => {
            let duration = seconds.map(Duration::from_secs);
            let options = cmd::record::RecordOptions {
                bindings,
                out,
                limit,
                duration,
                enrich,
            };
            cmd::record::command(Arc::new(config), options).await
        }
        Command::Demo => cmd::demo::command(&config).await,
        Command::Bench { what } => bench(&config, cli.config.clone(), what).await,
        Command::Train(args) => train(&config, args).await,
        Command::Evaluate {
            model,
            bundle,
            files,
        } => cmd::models::evaluate_command(model, &bundle, &files),
        Command::Models { action } => models(&config, action).await,
        Command::DeadLetters { action } => dead_letters(config, action).await,
        Command::Data { what } => data(&config, what).await,
        Command::Consumers => cmd::consumers::print(&config),
    }
}

async fn dead_letters(config: Config, action: DeadLettersAction) -> anyhow::Result<()> {
    let store = bugflow::store::Store::open(config.store.expose()).await?;
    match action {
        DeadLettersAction::List { consumer, limit } => {
            cmd::dead_letters::list(&store, consumer.as_deref(), limit).await
        }
        DeadLettersAction::Replay {
            id,
            consumer,
            limit,
        } => {
            let which = cmd::dead_letters::Selection {
                id: id.as_deref(),
                consumer: consumer.as_deref(),
                limit,
            };
            cmd::dead_letters::replay(std::sync::Arc::new(config), &store, &which)
                .await
                .map(|_| ())
        }
    }
}

/// In-process, through other bundles (`--bundle`: the diff), or published back.
async fn replay(config: Config, args: ReplayArgs) -> anyhow::Result<()> {
    if !args.bundles.is_empty() {
        let consumer = args.consumer.as_deref();
        return cmd::replay_diff::command(
            config,
            &args.files,
            consumer,
            args.offline,
            &args.bundles,
        )
        .await;
    }
    use std::io::IsTerminal;
    let options = cmd::replay::ReplayOptions {
        files: args.files,
        consumer: args.consumer,
        out: args.out,
        publish: args.publish,
        offline: args.offline,
        progress: std::io::stderr().is_terminal(),
    };
    cmd::replay::command(config, options).await
}

async fn train(config: &Config, args: TrainArgs) -> anyhow::Result<()> {
    let options = bugflow::train::TrainOptions {
        out: args.out.unwrap_or_else(|| config.models_dir.clone()),
        files: args.files,
        split: args.split,
        seed: args.seed,
        test_fraction: args.test_fraction,
        force: args.force,
        shadow: args.shadow,
        progress: true,
        export: args.export,
    };
    let model: bugflow::models::ModelKind = args.model.parse().map_err(anyhow::Error::msg)?;
    cmd::train::command(model, options).await
}

async fn bench(
    config: &Config,
    config_path: Option<PathBuf>,
    what: BenchWhat,
) -> anyhow::Result<()> {
    match what {
        BenchWhat::Pipeline {
            messages,
            prefetch,
            rounds,
            consumer,
            archive,
        } => {
            purge_freed_pages_sooner();
            // The consumer records its metrics as under `run` (0.8 % of its CPU in `perf`).
            bugflow::telemetry::prometheus();
            let options = cmd::bench::BenchOptions {
                messages,
                prefetch,
                rounds,
                consumer,
                config_path,
                archive,
            };
            cmd::bench::bench(config, &options).await?.print(&options);
            Ok(())
        }
        BenchWhat::Serve {
            consumer,
            user,
            prefetch,
            messages,
        } => {
            purge_freed_pages_sooner();
            bugflow::telemetry::prometheus();
            let options = cmd::bench::BenchOptions {
                messages,
                prefetch,
                rounds: 1,
                consumer,
                config_path,
                archive: None,
            };
            cmd::bench::serve_command(config, &options, &user).await
        }
        BenchWhat::Replay { messages, consumer } => {
            cmd::bench::replay_command(config, messages, consumer.as_deref()).await
        }
        BenchWhat::Models {
            bugs,
            issues,
            repeat,
            max_bugs,
        } => {
            let options = cmd::bench_models::ModelsBenchOptions {
                bugs,
                issues,
                repeat,
                max_bugs,
            };
            cmd::bench_models::command(config, options).await
        }
    }
}

async fn models(config: &Config, action: ModelsAction) -> anyhow::Result<()> {
    let registry = bugflow::models::registry::Registry::new(&config.models_dir);
    let store = || bugflow::store::Store::open(config.store.expose());
    match action {
        ModelsAction::List => cmd::models::list(&registry),
        ModelsAction::Promote {
            model,
            version,
            force,
        } => cmd::models::promote(&registry, &store().await?, model, &version, force).await,
        ModelsAction::Rollback { model, reason } => {
            cmd::models::rollback(&registry, model, &reason)
        }
        ModelsAction::Shadow {
            model,
            version,
            stop: _,
        } => cmd::models::shadow(&registry, model, version.as_deref()),
        ModelsAction::Compare { model } => {
            cmd::models::compare(&registry, &store().await?, model).await
        }
        ModelsAction::Release { model, after_days } => {
            cmd::models::release(&registry, &store().await?, model, after_days).await
        }
    }
}

async fn data(config: &Config, what: DataWhat) -> anyhow::Result<()> {
    match what {
        DataWhat::Bugs { since, out } => cmd::data::bugs_command(config, &since, &out).await,
        DataWhat::Labels { out } => cmd::data::labels_command(config, &out).await,
        DataWhat::Pushes(options) => cmd::data::pushes_command(config, &options).await,
    }
}
