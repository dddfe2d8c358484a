//! One file per CLI command.

pub mod bench;
pub mod bench_cpu;
pub mod bench_models;
pub mod consumers;
pub mod data;
pub mod dead_letters;
pub mod demo;
pub mod models;
pub mod record;
pub mod replay;
pub mod replay_diff;
pub mod run;
pub mod train;
pub mod version;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
