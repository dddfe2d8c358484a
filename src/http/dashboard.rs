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

pub async fn data(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.monitor.snapshot(&state.models))
}
