//! `/healthz` (the process answers), `/readyz` (the broker answers and the models this
//! process needs are loaded), `/metrics` (Prometheus), `/swagger` (the OpenAPI document) and
//! `/doc` (that document rendered as a page, as bugbug serves one).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;

/// The API's OpenAPI 3 description (also served at `/openapi.json`).
pub const OPENAPI: &str = include_str!("assets/openapi.json");

/// The API page: one HTML file that renders [`OPENAPI`] in the browser (no CDN).
const DOC: &str = include_str!("assets/doc.html");

pub async fn doc() -> impl IntoResponse {
    axum::response::Html(DOC)
}

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let broker = match state.publisher.channel().await {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    let missing: Vec<&str> = state
        .required_models
        .iter()
        .filter(|m| state.models.get(**m).is_none())
        .map(|m| m.name())
        .collect();
    let models: Value = state
        .models
        .versions()
        .into_iter()
        .map(|(m, v)| (m.name().to_owned(), Value::String(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    // A consumer that halted (Bugzilla revoked the key) processes nothing until restarted.
    let halted = crate::telemetry::halted();
    let store: Result<String, String> = match &state.store {
        None => Ok("none".into()),
        Some(store) => match tokio::time::timeout(crate::store::PING_WAIT, store.ping()).await {
            Ok(Ok(())) => Ok("answering".into()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("no answer within {:?}", crate::store::PING_WAIT)),
        },
    };
    let ready = broker.is_ok() && missing.is_empty() && halted.is_empty() && store.is_ok();

    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "broker": broker.err().unwrap_or_else(|| "connected".into()),
            "models": models,
            "missing_models": missing,
            "halted": halted,
            "store": store.unwrap_or_else(|e| e),
        })),
    )
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match &state.prometheus {
        Some(handle) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            handle.render(),
        ),
        None => (
            StatusCode::NOT_FOUND,
            [("content-type", "text/plain")],
            "metrics recorder not installed\n".to_owned(),
        ),
    }
}

pub async fn openapi() -> impl IntoResponse {
    ([("content-type", "application/json")], OPENAPI)
}
