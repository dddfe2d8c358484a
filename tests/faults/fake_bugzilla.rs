//! A Bugzilla that keeps state, as the real one does: bugs (created on first read), their
//! history, and every PUT. A PUT applies its change, adds it to the bug's history and moves
//! `last_change_time`, so that a writer that tries again sees its earlier write, exactly as
//! on bugzilla.mozilla.org. Faults are set per bug: 500s, 429s, slow answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// How the fake answers for one bug.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Every call about the bug answers 500.
    Always500,
    /// The first `n` calls answer 500, then it answers.
    First500(u32),
    /// 429 (BMO blocked our IP), an HTML page.
    TooMany,
    /// Answers after this long (longer than the client's timeout: a timeout).
    Slow(Duration),
    /// Error 306: the API key was revoked.
    Revoked,
}

/// How the fake answers a PUT about one bug (reads are not affected).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PutFault {
    /// The next `n` PUTs answer 500 and change nothing.
    Fail500(u32),
    /// Every PUT is applied, then answered 500 (BMO's proxy lost the answer).
    AppliedThen500,
    /// Every PUT is applied at once, and answered after this long (past the client's
    /// timeout: the client sees a timeout for a write that landed).
    AppliedThenSlow(Duration),
    /// Every PUT waits this long, then is applied and answered (a slow but healthy BMO).
    Slow(Duration),
    /// Every PUT answers 401 with error 102: the bot may not edit this bug.
    NoAccess,
}

#[derive(Default)]
pub struct Ledger {
    bugs: HashMap<u64, Value>,
    /// PUT bodies, per bug.
    pub puts: HashMap<u64, Vec<Value>>,
    pub faults: HashMap<u64, Fault>,
    pub put_faults: HashMap<u64, PutFault>,
    /// PUTs applied (a history entry by the bot), per bug.
    pub applied: HashMap<u64, usize>,
    /// Calls answered with a fault, by kind.
    pub faulted: HashMap<&'static str, u64>,
    pub gets: u64,
}

#[derive(Clone)]
pub struct FakeBugzilla {
    pub base: String,
    pub ledger: Arc<Mutex<Ledger>>,
}

impl FakeBugzilla {
    pub async fn start() -> FakeBugzilla {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let app = Router::new()
            .route("/rest/whoami", get(whoami))
            .route("/rest/bug/{id}", get(read).put(write))
            .with_state(ledger.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeBugzilla { base, ledger }
    }

    pub fn fault(&self, bug: u64, fault: Fault) {
        self.ledger.lock().unwrap().faults.insert(bug, fault);
    }

    pub fn put_fault(&self, bug: u64, fault: PutFault) {
        self.ledger.lock().unwrap().put_faults.insert(bug, fault);
    }

    /// PUTs applied to `bug`.
    pub fn applied_to(&self, bug: u64) -> usize {
        self.ledger
            .lock()
            .unwrap()
            .applied
            .get(&bug)
            .copied()
            .unwrap_or(0)
    }

    /// Comments the bot added to `bug` (one per applied PUT).
    pub fn bot_comments(&self, bug: u64) -> usize {
        let ledger = self.ledger.lock().unwrap();
        ledger.bugs.get(&bug).map_or(0, |b| {
            b["comments"].as_array().map_or(0, |c| {
                c.iter()
                    .filter(|c| c["creator"] == "bugflow-bot@example.com")
                    .count()
            })
        })
    }

    /// Bugs written more than once, and the number of bugs written.
    pub fn writes(&self) -> (Vec<(u64, usize)>, usize) {
        let ledger = self.ledger.lock().unwrap();
        let twice = ledger
            .puts
            .iter()
            .filter(|(_, p)| p.len() > 1)
            .map(|(id, p)| (*id, p.len()))
            .collect();
        (twice, ledger.puts.len())
    }

    pub fn puts_for(&self, bug: u64) -> usize {
        self.ledger
            .lock()
            .unwrap()
            .puts
            .get(&bug)
            .map_or(0, Vec::len)
    }

    pub fn faulted(&self, kind: &str) -> u64 {
        self.ledger
            .lock()
            .unwrap()
            .faulted
            .get(kind)
            .copied()
            .unwrap_or(0)
    }
}

/// A webhook event about bug `id` (BMO's shape, from the captured sample).
pub fn event(id: u64) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&crate::common::sample(
        "bmo_webhook_public_bug_modify_example.json",
    ))
    .unwrap();
    body["bug"]["id"] = json!(id);
    body["bug"]["type"] = json!("--");
    serde_json::to_vec(&body).unwrap()
}

/// A webhook event about bug `id` for a change of `field` (its own identity: two of them
/// about one bug are two events).
pub fn change_event(id: u64, field: &str) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&event(id)).unwrap();
    body["event"]["routing_key"] = json!(format!("bug.modify:{field}"));
    body["event"]["changes"][0]["field"] = json!(field);
    serde_json::to_vec(&body).unwrap()
}

fn new_bug(id: u64) -> Value {
    let filed = chrono::Utc::now() - chrono::Duration::days(1);
    json!({
        "id": id,
        "summary": format!("Firefox crashes when opening tab {id} with a video playing"),
        "product": "Firefox",
        "component": "General",
        // Not a type the model predicts: every bug gets exactly one type change.
        "type": "--",
        "status": "NEW",
        "severity": "--",
        "priority": "--",
        "keywords": [],
        "groups": [],
        "is_private": false,
        "creator": "reporter@example.com",
        "creation_time": filed.to_rfc3339(),
        "last_change_time": filed.to_rfc3339(),
        "comments": [{"id": id * 10, "count": 0, "text": "STR: open a tab, play a video. Actual: crash. Expected: no crash.", "creator": "reporter@example.com", "creation_time": filed.to_rfc3339()}],
        "history": [],
        "attachments": [],
    })
}

/// Applies the bug's fault, if any: the response to give instead of the real answer.
async fn faulted(ledger: &Arc<Mutex<Ledger>>, id: u64) -> Option<Response> {
    let fault = {
        let mut l = ledger.lock().unwrap();
        let mut fault = l.faults.get(&id).copied();
        if let Some(Fault::First500(n)) = fault {
            if n <= 1 {
                l.faults.remove(&id);
            } else {
                l.faults.insert(id, Fault::First500(n - 1));
            }
            if n == 0 {
                fault = None;
            }
        }
        if let Some(f) = fault {
            let kind = match f {
                Fault::Always500 | Fault::First500(_) => "500",
                Fault::TooMany => "429",
                Fault::Slow(_) => "slow",
                Fault::Revoked => "306",
            };
            *l.faulted.entry(kind).or_default() += 1;
        }
        fault
    }?;
    match fault {
        Fault::Always500 | Fault::First500(_) => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": true, "code": 100500, "message": "internal error"})),
            )
                .into_response(),
        ),
        Fault::TooMany => Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("content-type", "text/html")],
                "<html><body>Too many requests: this IP is blocked for an hour</body></html>",
            )
                .into_response(),
        ),
        Fault::Slow(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Fault::Revoked => Some(
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": true, "code": 306, "message": "The API key you specified is invalid."})),
            )
                .into_response(),
        ),
    }
}

async fn whoami() -> impl IntoResponse {
    Json(json!({"id": 1, "name": "bugflow-bot@example.com", "real_name": "bugflow"}))
}

async fn read(State(ledger): State<Arc<Mutex<Ledger>>>, Path(id): Path<u64>) -> Response {
    if let Some(response) = faulted(&ledger, id).await {
        return response;
    }
    let mut l = ledger.lock().unwrap();
    l.gets += 1;
    let bug = l.bugs.entry(id).or_insert_with(|| new_bug(id)).clone();
    Json(json!({"bugs": [bug], "faults": []})).into_response()
}

async fn write(
    State(ledger): State<Arc<Mutex<Ledger>>>,
    Path(id): Path<u64>,
    Json(change): Json<Value>,
) -> Response {
    if let Some(response) = faulted(&ledger, id).await {
        return response;
    }
    let fault = {
        let mut l = ledger.lock().unwrap();
        l.puts.entry(id).or_default().push(change.clone());
        let fault = l.put_faults.get(&id).copied();
        if let Some(PutFault::Fail500(n)) = fault {
            if n <= 1 {
                l.put_faults.remove(&id);
            } else {
                l.put_faults.insert(id, PutFault::Fail500(n - 1));
            }
        }
        fault
    };
    let error = || {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": true, "code": 100500, "message": "internal error"})),
        )
            .into_response()
    };
    match fault {
        Some(PutFault::Fail500(_)) => return error(),
        Some(PutFault::NoAccess) => {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": true, "code": 102, "message": "You are not authorized to edit bug"})),
            )
                .into_response();
        }
        Some(PutFault::Slow(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    let answer = apply(&ledger, id, &change);
    match fault {
        Some(PutFault::AppliedThen500) => error(),
        Some(PutFault::AppliedThenSlow(d)) => {
            tokio::time::sleep(d).await;
            answer
        }
        _ => answer,
    }
}

/// Applies a PUT as BMO does: the fields change, the history and the comments grow, and
/// `last_change_time` moves.
fn apply(ledger: &Arc<Mutex<Ledger>>, id: u64, change: &Value) -> Response {
    let mut l = ledger.lock().unwrap();
    *l.applied.entry(id).or_default() += 1;
    let bug = l.bugs.entry(id).or_insert_with(|| new_bug(id));
    let now = chrono::Utc::now().to_rfc3339();
    let mut changes = Vec::new();
    for field in ["type", "product", "component", "status", "resolution"] {
        if let Some(added) = change.get(field) {
            changes.push(json!({"field_name": field, "removed": bug[field], "added": added}));
            bug[field] = added.clone();
        }
    }
    if let Some(add) = change["keywords"]["add"].as_array() {
        changes.push(json!({"field_name": "keywords", "removed": "", "added": add[0]}));
        bug["keywords"]
            .as_array_mut()
            .unwrap()
            .extend(add.iter().cloned());
    }
    bug["history"]
        .as_array_mut()
        .unwrap()
        .push(json!({"when": now, "who": "bugflow-bot@example.com", "changes": changes}));
    if let Some(text) = change["comment"]["body"].as_str() {
        let count = bug["comments"].as_array().map_or(0, Vec::len);
        bug["comments"].as_array_mut().unwrap().push(json!({
            "id": id * 10 + count as u64, "count": count, "text": text,
            "creator": "bugflow-bot@example.com", "creation_time": now}));
    }
    bug["last_change_time"] = json!(now);
    Json(json!({"bugs": [{"id": id, "last_change_time": now, "changes": {}}]})).into_response()
}
