//! `POST /bugzilla/webhook`: BMO's webhook, relayed to the bug-events exchange.
//!
//! BMO retries any non-2xx answer and queues later events behind a stuck one, so the
//! receiver answers fast and answers 200 only when the event is safe: published to
//! `exchange/<user>/bugflow-bugzilla` and confirmed by the broker. When the broker is down
//! (or no queue is bound yet) it answers 503 and BMO retries. A body that is not a webhook
//! event is dead-lettered with the reason and answered 400.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lapin::types::{AMQPValue, LongString};
use serde_json::json;

use super::AppState;
use crate::events::bmo;
use crate::message::Message;
use crate::pulse::publish::{Outgoing, PublishError};
use crate::pulse::short::checked;
use crate::result::stable_id;
use crate::sinks::dead_letter::DeadLetterSink;

/// BMO gives up on a slow endpoint; answer well within its patience.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);

/// The largest webhook body read (a bug with its fields is a few KiB).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// The secret is checked from the headers before a byte of the body is read: a caller
/// without it cannot make bugflow buffer megabytes.
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused;
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is cut or larger than {MAX_BODY} bytes"),
            );
        }
    };
    let event = match bmo::decode(&body) {
        Ok(event) => event,
        Err(e) => return park(&state, &body, &e).await,
    };
    // BMO names every changed field in the routing key; AMQP carries at most 255 bytes.
    if let Err(e) = checked(&event.event.routing_key, "event.routing_key") {
        let refused = crate::error::StageError::invalid(crate::error::Stage::Decode, e.to_string());
        return park(&state, &body, &refused).await;
    }
    relay(&state, &event, &body).await
}

/// BMO's secret header, compared in constant time.
#[allow(clippy::result_large_err)]
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let config = &state.config;
    let expected = &config.http.webhook_secret;
    if expected.is_empty() {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the webhook is not configured: set http.webhook_secret (BUGFLOW_HTTP__WEBHOOK_SECRET)",
        ));
    }
    let given = headers
        .get(config.http.webhook_auth_header.as_str())
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !super::constant_time_eq(given, expected.expose().as_bytes()) {
        metrics::counter!("bugflow_webhook_requests_total", "status" => "401").increment(1);
        return Err(error(
            StatusCode::UNAUTHORIZED,
            &format!(
                "missing or wrong {} header",
                config.http.webhook_auth_header
            ),
        ));
    }
    Ok(())
}

/// A body that is not a BMO webhook event: dead-lettered with the reason, answered 400.
async fn park(state: &AppState, body: &Bytes, e: &crate::error::StageError) -> Response {
    metrics::counter!("bugflow_webhook_requests_total", "status" => "400").increment(1);
    let mut message = Message::new("(webhook)", "invalid", body.to_vec());
    message.content_type = None;
    let sink = DeadLetterSink::new(state.publisher.clone(), &state.config);
    let store = state.store.as_deref();
    let parked = tokio::time::timeout(PUBLISH_DEADLINE, sink.send(store, "webhook", &message, e))
        .await
        .is_ok_and(|r| r.is_ok());
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": e.reason, "dead_lettered": parked})),
    )
        .into_response()
}

/// The event, published to the bug-events exchange with a confirm (BMO retries a 503).
async fn relay(state: &AppState, event: &bmo::WebhookEvent, body: &Bytes) -> Response {
    let exchange = state.config.bugzilla_exchange();
    let routing_key = event.event.routing_key.clone();
    let message_id = stable_id(&[
        "webhook",
        &event.bug.id.to_string(),
        &routing_key,
        &event.event.time,
    ]);
    let mut out = Outgoing::json(&exchange, &routing_key, body);
    out.message_id = Some(&message_id);
    out.mandatory = true;
    out.headers.insert(
        "x-bugflow-source".into(),
        AMQPValue::LongString(LongString::from("webhook")),
    );
    match tokio::time::timeout(PUBLISH_DEADLINE, state.publisher.publish(&out)).await {
        Ok(Ok(())) => {
            metrics::counter!("bugflow_webhook_requests_total", "status" => "200").increment(1);
            tracing::info!(bug = event.bug.id, %routing_key, "webhook event relayed");
            (
                StatusCode::OK,
                Json(json!({"status": "accepted", "routing_key": routing_key, "message_id": message_id})),
            )
                .into_response()
        }
        Ok(Err(PublishError::Unroutable { .. })) => {
            metrics::counter!("bugflow_webhook_requests_total", "status" => "503").increment(1);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "no queue is bound to {exchange} for {routing_key}: start the bug-triage consumer; BMO will retry"
                ),
            )
        }
        Ok(Err(e)) => {
            metrics::counter!("bugflow_webhook_requests_total", "status" => "503").increment(1);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("broker unavailable ({e}); BMO will retry"),
            )
        }
        Err(_) => {
            metrics::counter!("bugflow_webhook_requests_total", "status" => "503").increment(1);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the broker did not confirm in time; BMO will retry",
            )
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}
