//! bugflow's HTTP side (axum):
//!
//! * [`api`] — the prediction API, compatible with bugbug's routes;
//! * [`webhook`] — BMO's webhook, relayed to the bug-events exchange;
//! * [`dashboard`] — `/` and its data, fed by the [`monitor`](crate::monitor) of the
//!   results stream;
//! * [`health`] — `/healthz`, `/readyz`, `/metrics` (Prometheus) and the OpenAPI document.

pub mod api;
pub mod dashboard;
pub mod health;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::CorsLayer;

use crate::clients::bugzilla::Bugzilla;
use crate::config::Config;
use crate::models::ModelKind;
use crate::models::registry::ModelSet;
use crate::pulse::publish::Publisher;
use crate::store::Store;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Publishes webhook events and prediction requests (few attempts: callers retry).
    pub publisher: Publisher,
    pub prometheus: Option<PrometheusHandle>,
    /// Where the workers leave the API's answers (none: the API answers 503).
    pub store: Option<Arc<Store>>,
    /// Asks Bugzilla whether a bug changed since its cached answer.
    pub bugzilla: Option<Bugzilla>,
    /// The serving model bundles (which models the API knows; the dashboard's versions).
    pub models: Arc<ModelSet>,
    /// The models this process must have loaded to be ready.
    pub required_models: Vec<ModelKind>,
    pub monitor: Arc<crate::monitor::Monitor>,
    /// The latest live report (`bugflow run` refreshes it every `live_refresh_seconds`).
    pub live: crate::models::live::Shared,
}

impl AppState {
    /// The state of a process that only relays webhooks and answers health checks; set the
    /// other fields for the API and the dashboard.
    pub fn new(config: Arc<Config>, publisher: Publisher) -> Self {
        AppState {
            config,
            publisher,
            prometheus: None,
            store: None,
            bugzilla: None,
            models: ModelSet::empty(),
            required_models: Vec::new(),
            monitor: crate::monitor::Monitor::new(),
            live: Default::default(),
        }
    }
}

/// Every GET path the router serves without parameters (probes and scrapers point here;
/// tests/deploy.rs checks the manifests against it).
pub const FIXED_GET_PATHS: &[&str] = &[
    "/",
    "/api/dashboard",
    "/healthz",
    "/__lbheartbeat__",
    "/readyz",
    "/metrics",
    "/swagger",
    "/openapi.json",
    "/doc",
];

pub fn router(state: AppState) -> Router {
    // bugbug's prediction routes, the only ones a web page of another origin may call.
    let predictions = Router::new()
        .route("/{model}/predict/{bug_id}", get(api::predict_one))
        .route("/{model}/predict/batch", post(api::predict_batch))
        .route("/push/{*rest}", get(api::push_risk))
        .route("/patch/{*rest}", get(api::patch_schedules));
    let predictions = match cors(&state.config.http.cors_origins) {
        Some(layer) => predictions.layer(layer),
        None => predictions,
    };
    Router::new()
        .merge(predictions)
        .route("/", get(dashboard::page))
        .route("/api/dashboard", get(dashboard::data))
        .route("/bugzilla/webhook", post(webhook::receive))
        .route("/healthz", get(health::healthz))
        .route("/__lbheartbeat__", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/swagger", get(health::openapi))
        .route("/openapi.json", get(health::openapi))
        .route("/doc", get(health::doc))
        .layer(CompressionLayer::new())
        // A panic in a handler answers 500 instead of dropping the connection.
        .layer(CatchPanicLayer::new())
        .with_state(state)
}

/// The CORS layer of `http.cors_origins`: `*` any origin, else those listed (an origin
/// that is not a valid header value is left out, with a warning); none when empty.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    use tower_http::cors::{AllowOrigin, Any};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let listed = origins.iter().filter_map(|o| {
            let value = axum::http::HeaderValue::from_str(o).ok();
            if value.is_none() {
                tracing::warn!(origin = %o, "http.cors_origins: not a valid origin; left out");
            }
            value
        });
        AllowOrigin::list(listed)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers(Any),
    )
}

/// Serves the router on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::ServiceExt;
    use tower::Layer;
    // Before routing: a router's own layers run after a route was chosen.
    let app = tower::util::MapRequestLayer::new(collapse_leading_slashes).layer(router(state));
    axum::serve(
        listener,
        ServiceExt::<axum::extract::Request>::into_make_service(app),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// `//model/predict/batch` is `/model/predict/batch`: bugbot's server constant ends in `/`
/// and it appends `/{model}/…`; bugbug (Flask) routes such a path, so bugflow does too.
fn collapse_leading_slashes(mut request: axum::extract::Request) -> axum::extract::Request {
    let path = request.uri().path();
    if !path.starts_with("//") {
        return request;
    }
    let collapsed = format!("/{}", path.trim_start_matches('/'));
    let with_query = match request.uri().query() {
        Some(query) => format!("{collapsed}?{query}"),
        None => collapsed,
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = with_query.parse().ok();
    if let Ok(uri) = axum::http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}

/// Compares secrets without leaking, through timing, how much of a guess was right.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::{collapse_leading_slashes, constant_time_eq};

    #[test]
    fn doubled_leading_slashes_collapse_and_the_query_stays() {
        let path = |uri: &str| {
            let request = axum::extract::Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap();
            collapse_leading_slashes(request).uri().to_string()
        };
        assert_eq!(path("//bugtype/predict/batch"), "/bugtype/predict/batch");
        assert_eq!(path("///push/a/b/risk?x=1"), "/push/a/b/risk?x=1");
        assert_eq!(path("/healthz"), "/healthz");
        assert_eq!(path("/a//b"), "/a//b");
    }

    /// The OpenAPI document's `model_name` enum is the catalogue's bug models, by every name
    /// they answer to: a model added to the catalogue must be added to the document.
    #[test]
    fn the_documented_model_names_are_the_catalogues() {
        let doc: serde_json::Value = serde_json::from_str(super::health::OPENAPI).unwrap();
        let mut names: Vec<String> = crate::models::ModelKind::bug_models()
            .into_iter()
            .filter_map(|m| m.spec())
            .flat_map(|s| std::iter::once(s.name.clone()).chain(s.aliases.iter().cloned()))
            .collect();
        names.sort();
        for route in [
            "/{model_name}/predict/{bug_id}",
            "/{model_name}/predict/batch",
        ] {
            let operation = doc["paths"][route]
                .as_object()
                .unwrap()
                .values()
                .next()
                .unwrap();
            let enum_ = &operation["parameters"][0]["schema"]["enum"];
            let mut documented: Vec<String> =
                serde_json::from_value(enum_.clone()).unwrap_or_default();
            documented.sort();
            assert_eq!(documented, names, "{route}");
        }
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
