//! The `bugflow` command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use bugflow::cmd;
use bugflow::config::Config;
use bugflow::consumer;

#[derive(Parser)]
#[command(
    name = "bugflow",
    version,
    about = "Mozilla's event streams through machine learning"
)]
struct Cli {
    /// Config file (default: config/bugflow.toml when it exists). BUGFLOW_* variables
    /// override it, e.g. BUGFLOW_AMQP__URL.
    #[arg(long, global = true, env = "BUGFLOW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the consumers against the broker, and the HTTP side (webhook, health, metrics).
    Run {
        /// Run only this consumer (repeatable). Default: every file in consumers/.
        #[arg(long = "consumer")]
        consumers: Vec<String>,
        /// Do not serve HTTP.
        #[arg(long)]
        no_http: bool,
    },
    /// Run an archive (JSON Lines) through the consumers' pipelines.
    Replay {
        /// Archive files.
        #[arg(long = "from", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Send every line to this consumer instead of matching bindings.
        #[arg(long)]
        consumer: Option<String>,
        /// Write results as JSON Lines here (`-` for stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Publish the archived messages back to their exchanges on the broker instead.
        #[arg(long)]
        publish: bool,
    },
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
    },
    /// Run the bundled sample stream through every consumer, in-process, and show the outcome.
    Demo,
    /// Measure the pipeline against a bare relay on the broker.
    Bench {
        #[arg(long, default_value_t = 20_000)]
        messages: u64,
        #[arg(long, default_value_t = 200)]
        prefetch: u16,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// Print the consumers as configured (after {user}/{env} are resolved).
    Consumers,
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
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run { consumers, no_http } => {
            bugflow::telemetry::prometheus();
            cmd::run::run(
                config,
                cmd::run::RunOptions {
                    consumers,
                    http: !no_http,
                },
            )
            .await
        }
        Command::Replay {
            files,
            consumer: forced,
            out,
            publish,
        } => {
            let summary = if publish {
                cmd::replay::publish_back(Arc::new(config), &files).await?
            } else {
                let specs = consumer::load_all(&config)?;
                cmd::replay::replay(
                    &specs,
                    &cmd::replay::ReplayOptions {
                        files,
                        consumer: forced,
                        out,
                        publish,
                    },
                )
                .await?
            };
            summary.print();
            Ok(())
        }
        Command::Record {
            bindings,
            out,
            limit,
            seconds,
        } => {
            let written = cmd::record::record(
                Arc::new(config),
                cmd::record::RecordOptions {
                    bindings,
                    out: out.clone(),
                    limit,
                    duration: seconds.map(Duration::from_secs),
                },
            )
            .await?;
            eprintln!("recorded {written} messages to {}", out.display());
            Ok(())
        }
        Command::Demo => {
            let specs = consumer::load_all(&config)?;
            let mut stdout = std::io::stdout().lock();
            cmd::demo::demo(&specs, &mut stdout)?;
            Ok(())
        }
        Command::Bench {
            messages,
            prefetch,
            rounds,
        } => {
            let options = cmd::bench::BenchOptions {
                messages,
                prefetch,
                rounds,
            };
            let report = cmd::bench::bench(&config, &options).await?;
            report.print(&options);
            Ok(())
        }
        Command::Consumers => {
            for spec in consumer::load_all(&config)? {
                println!("{} — {}", spec.name, spec.description);
                println!("  queue    {} (prefetch {})", spec.queue, spec.prefetch);
                for b in &spec.bindings {
                    println!(
                        "  binds    {} {:?}{}",
                        b.exchange,
                        b.keys,
                        if b.optional { " (optional)" } else { "" }
                    );
                }
            }
            Ok(())
        }
    }
}
