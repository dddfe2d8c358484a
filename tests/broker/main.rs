//! Black-box tests against the real RabbitMQ on 127.0.0.1:5672. Each test works in a
//! namespace of its own (`queue/t<random>/…`, `exchange/t<random>/…`) and deletes it after.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod backlog;
mod cli;
mod cors;
mod dashboard;
mod dead_letter;
mod frames;
mod long_names;
mod model_switch;
mod oversized;
mod poller;
mod pushes;
mod record_and_shutdown;
mod replay;
mod webhook;
