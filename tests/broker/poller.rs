use std::sync::Arc;
use std::time::Duration;

use bugflow::clients::bugzilla::Bugzilla;
use bugflow::poller::{Poller, WATERMARK};
use bugflow::pulse::publish::Publisher;
use bugflow::secret::Secret;
use bugflow::store::Store;
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::TestBroker;

async fn search(server: &MockServer, since: &str, bugs: serde_json::Value) {
    Mock::given(method("GET"))
        .and(path("/rest/bug"))
        .and(query_param("last_change_time", since))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"bugs": bugs})))
        .mount(server)
        .await;
}

/// A poller on the fake BMO at `server`, relaying to the test's bug-events exchange.
fn poller_on(
    server: &MockServer,
    broker: &TestBroker,
    store: Arc<Store>,
    attempts: usize,
) -> Poller {
    Poller {
        client: Bugzilla::new(
            &server.uri(),
            Secret::new("k"),
            Duration::from_secs(5),
            Duration::from_secs(3600),
            2,
            8,
        )
        .unwrap(),
        store,
        publisher: Publisher::new(broker.config.clone()).with_attempts(attempts),
        exchange: broker.config.bugzilla_exchange(),
        initial_since: "2026-11-01T00:00:00Z".into(),
    }
}

#[tokio::test]
async fn the_poller_publishes_a_change_after_the_watermark_once() {
    let mut broker = TestBroker::new().await;
    let events = broker.config.resolve("queue/{user}/test-bug-events");
    broker
        .bind_queue(&events, &broker.config.bugzilla_exchange(), "bug.*")
        .await;
    let server = MockServer::start().await;
    search(
        &server,
        "2026-11-01T00:00:00Z",
        json!([
            {"id": 10, "summary": "old", "last_change_time": "2026-11-20T10:00:00Z", "groups": []},
            {"id": 11, "summary": "new", "last_change_time": "2026-11-27T10:00:00Z", "groups": []},
        ]),
    )
    .await;
    // BMO's search includes changes at the watermark itself.
    search(
        &server,
        "2026-11-27T10:00:00Z",
        json!([
            {"id": 11, "summary": "new", "last_change_time": "2026-11-27T10:00:00Z", "groups": []},
        ]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("store.sqlite");
    let poller = |store: Arc<Store>| poller_on(&server, &broker, store, 5);

    let first = poller(Arc::new(
        Store::open(store_path.to_str().unwrap()).await.unwrap(),
    ));
    assert_eq!(first.poll_once().await.unwrap(), 2);
    assert_eq!(
        first.poll_once().await.unwrap(),
        0,
        "bug 11 at the watermark is not published again"
    );
    drop(first);
    // After a restart, the watermark and the keys are still there.
    let store = Arc::new(Store::open(store_path.to_str().unwrap()).await.unwrap());
    assert_eq!(
        store.watermark(WATERMARK).await.unwrap().as_deref(),
        Some("2026-11-27T10:00:00Z")
    );
    assert_eq!(poller(store).poll_once().await.unwrap(), 0);

    let got = broker.take(&events, 3, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2);
    let body = got[1].json();
    assert_eq!(body["bug"]["id"], 11);
    assert_eq!(body["event"]["routing_key"], "bug.modify");
    // It decodes as a bug event for bug-triage.
    assert!(bugflow::events::bmo::decode(&got[1].body).is_ok());
    broker.cleanup().await;
}

/// Issue 12, finding 7: before, a change whose publish failed kept its claim `pending`; the
/// next poll skipped it as "in progress" while the watermark moved past it, so that change
/// was never relayed. Now the claim is given back and the watermark stays before it.
#[tokio::test]
async fn a_change_whose_relay_failed_is_relayed_by_the_next_poll() {
    let mut broker = TestBroker::new().await;
    let server = MockServer::start().await;
    search(
        &server,
        "2026-11-01T00:00:00Z",
        json!([
            {"id": 20, "summary": "a", "last_change_time": "2026-11-20T10:00:00Z", "groups": []},
            {"id": 21, "summary": "b", "last_change_time": "2026-11-27T10:00:00Z", "groups": []},
        ]),
    )
    .await;
    search(
        &server,
        "2026-11-27T10:00:00Z",
        json!([
            {"id": 21, "summary": "b", "last_change_time": "2026-11-27T10:00:00Z", "groups": []},
        ]),
    )
    .await;
    let (store, _dir) = crate::common::temp_store().await;
    let poller = poller_on(&server, &broker, store.clone(), 1);
    // No queue is bound yet: the mandatory publish of bug 20 is returned, the poll fails.
    assert!(poller.poll_once().await.is_err());
    let events = broker.config.resolve("queue/{user}/test-bug-events");
    broker
        .bind_queue(&events, &broker.config.bugzilla_exchange(), "bug.*")
        .await;
    assert_eq!(
        poller.poll_once().await.unwrap(),
        2,
        "both changes, 20 included"
    );
    let got = broker.take(&events, 3, Duration::from_secs(5)).await;
    let ids: Vec<u64> = got
        .iter()
        .map(|m| m.json()["bug"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [20, 21]);
    broker.cleanup().await;
}
