//! The prediction API, compatible with bugbug's HTTP service.
//!
//! * `GET /<model>/predict/<bug_id>`
//! * `POST /<model>/predict/batch` with `{"bugs": [id, …]}`
//! * `GET /push/<branch>/<rev>/risk` (`autoland` means `integration/autoland`)
//!
//! An answer not in the store yet becomes a request message on
//! `exchange/<user>/bugflow-requests` and the caller gets `202 {"ready": false}`; the
//! `api-requests` workers compute it and write it to the store, where the next call finds
//! it (`200 {"prob", "index", "class", "extra_data"}`, or `{"available": false}` for a bug
//! Bugzilla does not show). As in bugbug, a bug's answer is dropped when the bug's
//! `last_change_time` has moved since it was computed, and answers expire after
//! `http.result_ttl_seconds`. Unlike bugbug, `X-Api-Key` must be one of `http.api_keys`, unless
//! that list is `["*"]` (any non-empty key, bugbug's behaviour).

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::events::request::PredictionRequest;
use crate::models::{Input, ModelKind};
use crate::pipeline::{cache_key_of_bug, cache_key_of_push};
use crate::pulse::publish::Outgoing;
use crate::store::Store;

/// bugbug sends missing bugs to its workers 100 per job.
const BUGS_PER_REQUEST: usize = 100;

/// bugbug's header (Flask matches it case-insensitively, as does axum).
pub const API_KEY_HEADER: &str = "X-Api-Key";

/// Why a request is not answered: a status and a JSON body.
pub struct Refusal {
    status: StatusCode,
    body: Value,
}

impl Refusal {
    fn new(status: StatusCode, message: &str) -> Self {
        Refusal {
            status,
            body: json!({"error": message}),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The largest batch body read (10,000 bug ids are under 100 KiB).
pub const MAX_BATCH_BODY: usize = 1024 * 1024;

/// The most bug ids a batch may hold. bugbug takes any number and bugbot posts every
/// candidate bug at once; the batch is split into requests of [`BUGS_PER_REQUEST`], so the
/// bound is only there to bound the body.
pub const MAX_BATCH_BUGS: usize = 10_000;

pub async fn predict_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((model, bug)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    authorize(&state, &headers)?;
    let model = bug_model(&state, &model)?;
    let Some(bug) = bug.parse::<u64>().ok().filter(|&b| b > 0) else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            &format!("{bug:?} is not a bug id"),
        ));
    };
    let (mut found, _) = answers(&state, model, &[bug]).await?;
    Ok(match found.remove(&bug) {
        Some(answer) => ok(StatusCode::OK, answer),
        None => ok(StatusCode::ACCEPTED, json!({"ready": false})),
    })
}

pub async fn predict_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(model): Path<String>,
    body: axum::body::Body,
) -> Result<Response, Refusal> {
    // The key first: the body is read only for a caller that may send it.
    authorize(&state, &headers)?;
    let body = axum::body::to_bytes(body, MAX_BATCH_BODY)
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is cut or larger than {MAX_BATCH_BODY} bytes"),
            )
        })?;
    let model = bug_model(&state, &model)?;
    let bugs = batch_body(&body).map_err(|errors| {
        metrics::counter!("bugflow_api_requests_total", "status" => "400").increment(1);
        Refusal {
            status: StatusCode::BAD_REQUEST,
            body: json!({"errors": errors}),
        }
    })?;
    let (mut found, all_ready) = answers(&state, model, &bugs).await?;
    let body: serde_json::Map<String, Value> = bugs
        .iter()
        .map(|id| {
            (
                id.to_string(),
                found.remove(id).unwrap_or_else(|| json!({"ready": false})),
            )
        })
        .collect();
    let status = if all_ready {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(ok(status, json!({"bugs": body})))
}

/// `/push/<branch>/<rev>/risk`: the branch may hold slashes, so the route takes the rest of
/// the path and this splits it.
pub async fn push_risk(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(rest): Path<String>,
) -> Result<Response, Refusal> {
    authorize(&state, &headers)?;
    if rest.ends_with("/schedules") {
        return Err(no_test_selection("push"));
    }
    let Some((branch, rev)) = rest.strip_suffix("/risk").and_then(|r| r.rsplit_once('/')) else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "use /push/<branch>/<rev>/risk",
        ));
    };
    let branch = if branch == "autoland" {
        "integration/autoland"
    } else {
        branch
    };
    let request = PredictionRequest::PushRisk {
        branch: branch.to_owned(),
        rev: rev.to_owned(),
    };
    request
        .validate()
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, &e))?;
    let store = state.store.as_ref().ok_or_else(no_store)?;
    let key = cache_key_of_push(branch, rev);
    let ttl = Duration::from_secs(state.config.http.result_ttl_seconds);
    let mut found = store
        .api_results(std::slice::from_ref(&key), ttl)
        .await
        .map_err(store_error)?;
    if let Some(answer) = found.remove(&key) {
        return Ok(ok(StatusCode::OK, answer.result));
    }
    send(&state, store, &[key], request).await?;
    Ok(ok(StatusCode::ACCEPTED, json!({"ready": false})))
}

/// `GET /patch/<base_rev>/<patch_hash>/schedules`: bugbug's test selection, which bugflow
/// does not have.
pub async fn patch_schedules(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    authorize(&state, &headers)?;
    Err(no_test_selection("patch"))
}

/// 501 for bugbug's `/push/…/schedules` and `/patch/…/schedules` (Firefox CI's test
/// selection): bugflow has no test-selection model.
fn no_test_selection(what: &str) -> Refusal {
    metrics::counter!("bugflow_api_requests_total", "status" => "501").increment(1);
    Refusal::new(
        StatusCode::NOT_IMPLEMENTED,
        &format!(
            "bugflow has no test-selection model: /{what}/…/schedules is not served (bugbug's testlabelselect and testgroupselect models are not ported)"
        ),
    )
}

/// Checks `X-Api-Key` against `http.api_keys`.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Refusal> {
    let refuse = |message: &str| {
        metrics::counter!("bugflow_api_requests_total", "status" => "401").increment(1);
        // bugbug's 401 body says `message`, not `error`.
        Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            body: json!({"message": message}),
        })
    };
    let Some(given) = headers.get(API_KEY_HEADER) else {
        return refuse("Error, missing X-API-KEY");
    };
    let keys = &state.config.http.api_keys;
    if keys.is_empty() {
        return refuse(
            "Error, no API keys are configured (http.api_keys): every request is refused",
        );
    }
    if key_allowed(keys, given.as_bytes()) {
        Ok(())
    } else {
        refuse("Error, unknown X-API-KEY")
    }
}

/// Whether `given` is one of `keys`; a key `*` accepts any non-empty key, as bugbug does
/// (there the key only names the caller; bugbot always sends `autonag`).
fn key_allowed(keys: &[crate::secret::Secret], given: &[u8]) -> bool {
    keys.iter().any(|k| {
        let key = k.expose();
        if key == "*" {
            !given.is_empty()
        } else {
            !key.is_empty() && super::constant_time_eq(given, key.as_bytes())
        }
    })
}

/// bugbug's models that bugflow has no catalogue file for: 404, saying so.
const NOT_PORTED: &[&str] = &[
    "invalidcompatibilityreport",
    "needsdiagnosis",
    "testlabelselect",
    "testgroupselect",
];

/// A bug model this service can answer for (ours or bugbug's name). A model of the
/// catalogue without a trained bundle is 503 (the model exists; train or promote one), a
/// name the catalogue does not know is 404.
fn bug_model(state: &AppState, name: &str) -> Result<ModelKind, Refusal> {
    let unavailable = |why: String| {
        metrics::counter!("bugflow_api_requests_total", "status" => "503").increment(1);
        Err(Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: json!({"error": format!("Model {name} is not available: {why}"), "model": name}),
        })
    };
    match ModelKind::parse(name) {
        Some(model) if model.input() == Input::Bug => match state.models.get(model) {
            None => unavailable("it has no serving bundle (train or promote one)".into()),
            Some(bundle) => match &bundle.manifest.untrained {
                Some(why) => unavailable(format!(
                    "its serving bundle {} is untrained ({why})",
                    bundle.manifest.version
                )),
                None => Ok(model),
            },
        },
        _ if NOT_PORTED.contains(&name) => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            &format!("Model {name} doesn't exist: bugbug's {name} is not ported to bugflow"),
        )),
        _ => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            &format!("Model {name} doesn't exist"),
        )),
    }
}

/// `{"bugs": [int, …]}`, at least one, and nothing else; errors in bugbug's (cerberus)
/// shape, an unknown field among them (`{"extra": ["unknown field"]}`).
fn batch_body(body: &[u8]) -> Result<Vec<u64>, Value> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| json!({"body": [format!("not JSON: {e}")]}))?;
    let Some(fields) = value.as_object() else {
        return Err(json!({"body": ["must be of dict type"]}));
    };
    let unknown: serde_json::Map<String, Value> = fields
        .keys()
        .filter(|k| *k != "bugs")
        .map(|k| (k.clone(), json!(["unknown field"])))
        .collect();
    if !unknown.is_empty() {
        return Err(Value::Object(unknown));
    }
    let Some(list) = value.get("bugs") else {
        return Err(json!({"bugs": ["required field"]}));
    };
    let Some(list) = list.as_array() else {
        return Err(json!({"bugs": ["must be of list type"]}));
    };
    if list.is_empty() {
        return Err(json!({"bugs": ["min length is 1"]}));
    }
    if list.len() > MAX_BATCH_BUGS {
        return Err(json!({"bugs": [format!("max length is {MAX_BATCH_BUGS}")]}));
    }
    let mut bugs = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        match item.as_u64() {
            Some(id) if id > 0 => bugs.push(id),
            _ => return Err(json!({"bugs": [{i.to_string(): ["must be of integer type"]}]})),
        }
    }
    bugs.sort_unstable();
    bugs.dedup();
    Ok(bugs)
}

/// The answers ready for `bugs`, and whether all are; sends requests for the others.
async fn answers(
    state: &AppState,
    model: ModelKind,
    bugs: &[u64],
) -> Result<(HashMap<u64, Value>, bool), Refusal> {
    let store = state.store.as_ref().ok_or_else(no_store)?;
    let keys: Vec<String> = bugs.iter().map(|&b| cache_key_of_bug(model, b)).collect();
    let ttl = Duration::from_secs(state.config.http.result_ttl_seconds);
    let cached = store.api_results(&keys, ttl).await.map_err(store_error)?;
    // bugbug asks Bugzilla for each requested bug's last_change_time and drops answers
    // computed on an older bug. When Bugzilla cannot be asked, the cached answer stands.
    let times = match (&state.bugzilla, cached.is_empty()) {
        (Some(client), false) => match client.change_times(bugs).await {
            Ok(times) => Some(times),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check last_change_time; serving cached answers");
                None
            }
        },
        _ => None,
    };
    let mut ready = HashMap::new();
    let mut missing = Vec::new();
    for (&bug, key) in bugs.iter().zip(&keys) {
        let Some(answer) = cached.get(key) else {
            missing.push((bug, key.clone()));
            continue;
        };
        let stale = times.as_ref().is_some_and(|times| {
            times.get(&bug).map(String::as_str) != answer.change_time.as_deref()
        });
        if stale {
            store.drop_api_result(key).await.map_err(store_error)?;
            missing.push((bug, key.clone()));
        } else {
            ready.insert(bug, answer.result.clone());
        }
    }
    let all_ready = missing.is_empty();
    for chunk in missing.chunks(BUGS_PER_REQUEST) {
        let keys: Vec<String> = chunk.iter().map(|(_, k)| k.clone()).collect();
        let request = PredictionRequest::Bugs {
            model: model.name().to_owned(),
            bugs: chunk.iter().map(|(b, _)| *b).collect(),
        };
        send(state, store, &keys, request).await?;
    }
    metrics::counter!("bugflow_api_requests_total", "status" => if all_ready { "200" } else { "202" })
        .increment(1);
    Ok((ready, all_ready))
}

/// Publishes `request` for the keys no worker is on yet (a request already in flight
/// within `http.job_timeout_seconds` is not sent again).
async fn send(
    state: &AppState,
    store: &Store,
    keys: &[String],
    request: PredictionRequest,
) -> Result<(), Refusal> {
    let timeout = Duration::from_secs(state.config.http.job_timeout_seconds);
    let mut claimed = Vec::new();
    for key in keys {
        if store
            .begin_api_job(key, timeout)
            .await
            .map_err(store_error)?
        {
            claimed.push(key.clone());
        }
    }
    if claimed.is_empty() {
        return Ok(());
    }
    let request = match request {
        // Only the bugs no worker is busy with.
        PredictionRequest::Bugs { model, bugs } => PredictionRequest::Bugs {
            bugs: bugs
                .into_iter()
                .zip(keys)
                .filter(|(_, k)| claimed.contains(k))
                .map(|(b, _)| b)
                .collect(),
            model,
        },
        other => other,
    };
    let body = serde_json::to_vec(&request).unwrap_or_default();
    let exchange = state.config.requests_exchange();
    let routing_key = request.routing_key();
    let mut out = Outgoing::json(&exchange, &routing_key, &body);
    out.mandatory = true;
    let published =
        tokio::time::timeout(Duration::from_secs(10), state.publisher.publish(&out)).await;
    let failure = match published {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(crate::pulse::publish::PublishError::Unroutable { .. })) => {
            "no worker queue is bound to the requests exchange: start the api-requests consumer"
                .to_owned()
        }
        Ok(Err(e)) => format!("broker unavailable ({e})"),
        Err(_) => "the broker did not confirm in time".to_owned(),
    };
    for key in &claimed {
        let _ = store.abandon_api_job(key).await;
    }
    metrics::counter!("bugflow_api_requests_total", "status" => "503").increment(1);
    Err(Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("{failure}; retry later"),
    ))
}

fn ok(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn no_store() -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the prediction API needs the store (bugflow run opens it)",
    )
}

fn store_error(e: anyhow::Error) -> Refusal {
    tracing::error!(error = %e, "store");
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the store is unavailable; retry later",
    )
}

#[cfg(test)]
mod tests {
    use super::{batch_body, key_allowed};

    #[test]
    fn batch_bodies_are_checked_like_bugbug() {
        assert_eq!(batch_body(br#"{"bugs": [3, 1, 3]}"#).unwrap(), vec![1, 3]);
        assert_eq!(
            batch_body(br#"{"bugs": []}"#).unwrap_err()["bugs"][0],
            "min length is 1"
        );
        assert!(batch_body(br#"{"bugs": ["x"]}"#).is_err());
        assert!(batch_body(br#"{"bugs": 5}"#).is_err());
        assert!(batch_body(br#"{}"#).is_err());
        assert!(batch_body(b"nope").is_err());
        // Issue 15: bugbug answers 400 `unknown field` (before: 200, the field ignored).
        assert_eq!(
            batch_body(br#"{"bugs": [1], "extra": 1}"#).unwrap_err(),
            serde_json::json!({"extra": ["unknown field"]})
        );
        assert!(batch_body(b"[1]").is_err());
        // Issue 15: bugbot posts every candidate at once (before: 400 above 1,000).
        let ids = |n: u64| format!("{{\"bugs\": {:?}}}", (1..=n).collect::<Vec<_>>());
        assert_eq!(batch_body(ids(5_000).as_bytes()).unwrap().len(), 5_000);
        assert!(batch_body(ids(10_001).as_bytes()).is_err());
    }

    #[test]
    fn a_star_accepts_any_non_empty_key_and_a_list_only_its_keys() {
        use crate::secret::Secret;
        let star = [Secret::new("*")];
        assert!(key_allowed(&star, b"autonag"));
        assert!(!key_allowed(&star, b""));
        let listed = [Secret::new("s3cret")];
        assert!(key_allowed(&listed, b"s3cret"));
        assert!(!key_allowed(&listed, b"autonag"));
        assert!(!key_allowed(&[], b"autonag"));
    }
}
