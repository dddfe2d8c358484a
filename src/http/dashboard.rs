//! `GET /`: the dashboard, one page served from the binary (no CDN), and
//! `GET /api/dashboard`, the JSON it polls every two seconds.

use axum::Json;
use axum::extract::State;
use axum::response::{Html, IntoResponse};

use super::AppState;

const PAGE: &str = include_str!("assets/dashboard.html");

pub async fn page() -> impl IntoResponse {
    Html(PAGE)
}

/// The monitor's view, with the dead letters the store keeps (how many, the newest ten) and
/// the live report (accuracy on harvested labels and drift, per model and week).
pub async fn data(State(state): State<AppState>) -> impl IntoResponse {
    let mut snapshot = state.monitor.snapshot(&state.models);
    if let Ok(live) = state.live.read() {
        snapshot["live"] = serde_json::to_value(&*live).unwrap_or_default();
    }
    if let Some(store) = &state.store
        && let (Ok(seen), Ok(recent)) = (
            store.dead_letter_count().await,
            store.dead_letters(None, 10).await,
        )
    {
        snapshot["dead_letters"]["seen"] = seen.into();
        snapshot["dead_letters"]["recent"] = recent
            .iter()
            .map(|d| {
                serde_json::json!({
                    "at": d.at, "consumer": d.consumer, "stage": d.stage,
                    "routing_key": d.routing_key, "reason": d.reason,
                })
            })
            .collect();
    }
    Json(snapshot)
}
