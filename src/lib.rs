//! bugflow: Mozilla's event streams (Pulse, BMO webhooks) through feature extraction and
//! model inference, with at-least-once input and exactly-once effects.
//!
//! A message's path, one module per stage:
//!
//! ```text
//! pulse::tap ─► events ─► pipeline::<flow> ─► effects ─► sinks ─► ack (runner)
//!  (AMQP)       (typed     (reads: clients,    (store,    (results exchange,
//! archive  ┘     inputs)    features, models;   Bugzilla   JSONL; dead letters)
//! (replay)                  plans effects)      writer)
//!               └──────── dispatch: plan → effects → publish → settle ────────┘
//! http::webhook ─► bug events exchange ─► (the bug-triage consumer)
//! ```
//!
//! [`app`] builds and checks all of it from the configuration at start; [`telemetry`]
//! counts each step once; [`monitor`] folds the results stream into the dashboard's view.

pub mod app;
pub mod archive;
pub mod clients;
pub mod cmd;
pub mod config;
pub mod consumer;
pub mod dispatch;
pub mod effects;
pub mod error;
pub mod events;
pub mod features;
pub mod http;
pub mod message;
pub mod models;
pub mod monitor;
pub mod names;
pub mod pipeline;
pub mod poller;
pub mod pulse;
pub mod result;
pub mod runner;
pub mod score;
pub mod secret;
pub mod sinks;
pub mod store;
pub mod telemetry;
pub mod train;

/// Installs ring as rustls' crypto provider (we build rustls without aws-lc). Idempotent.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
