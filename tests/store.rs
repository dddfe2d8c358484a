//! The store's effect protocol, on SQLite and on the PostgreSQL of this machine.

use std::time::Duration;

use bugflow::effects::Outcome;
use bugflow::store::{Claim, Store};

fn postgres_url() -> String {
    std::env::var("BUGFLOW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn protocol(store: &Store) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let key = format!("k-{id}");
    let subject = format!("s-{id}");
    let long = Duration::from_secs(600);
    assert_eq!(
        store
            .claim(&key, "bug-triage", &subject, long)
            .await
            .unwrap(),
        Claim::Proceed
    );
    assert_eq!(
        store
            .claim(&key, "bug-triage", &subject, long)
            .await
            .unwrap(),
        Claim::InProgress,
        "a fresh claim of another worker is respected"
    );
    assert_eq!(
        store
            .claim(&key, "bug-triage", &subject, Duration::ZERO)
            .await
            .unwrap(),
        Claim::Proceed,
        "a stale claim (its worker died) is taken over"
    );
    store
        .finish(
            &key,
            Outcome::Written,
            "component",
            Some("{\"product\":\"Core\"}"),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .claim(&key, "bug-triage", &subject, Duration::ZERO)
            .await
            .unwrap(),
        Claim::Done {
            outcome: Outcome::Written,
            reason: "component".into()
        }
    );
    let effects = store.effects(&subject).await.unwrap();
    assert_eq!(effects.len(), 1);
    assert_eq!(
        effects[0].request.as_deref(),
        Some("{\"product\":\"Core\"}")
    );
    assert!(store.writes_in_last_hour().await.unwrap() >= 1);

    let mark = format!("poller-{id}");
    assert_eq!(store.watermark(&mark).await.unwrap(), None);
    store
        .set_watermark(&mark, "2026-01-01T00:00:00Z")
        .await
        .unwrap();
    store
        .set_watermark(&mark, "2026-02-01T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(
        store.watermark(&mark).await.unwrap().as_deref(),
        Some("2026-02-01T00:00:00Z")
    );

    let bug = u64::from_str_radix(&id[..12], 16).unwrap();
    assert!(
        !store
            .harvest(bug, "bugtype", "task", "a@b.c", "2026-01-01T00:00:00")
            .await
            .unwrap()
    );
    store
        .record_prediction(bug, "bugtype", "v1", "defect")
        .await
        .unwrap();
    assert!(
        store
            .harvest(bug, "bugtype", "task", "a@b.c", "2026-01-01T00:00:00")
            .await
            .unwrap()
    );
    let labels = store.labels().await.unwrap();
    let mine: Vec<_> = labels
        .iter()
        .filter(|l| l["bug_id"] == bug as i64)
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["predicted"], "defect");
    assert_eq!(mine[0]["truth"], "task");
}

#[tokio::test]
async fn the_effect_protocol_on_sqlite_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite");
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    protocol(&store).await;
    store.claim("kept", "c", "s", Duration::ZERO).await.unwrap();
    store
        .finish("kept", Outcome::Written, "r", None)
        .await
        .unwrap();
    drop(store);
    let again = Store::open(path.to_str().unwrap()).await.unwrap();
    assert!(matches!(
        again.claim("kept", "c", "s", Duration::ZERO).await.unwrap(),
        Claim::Done { .. }
    ));
}

#[tokio::test]
async fn the_effect_protocol_on_postgresql() {
    let store = Store::open(&postgres_url())
        .await
        .expect("PostgreSQL must answer on 127.0.0.1:5432 (scripts/test starts it)");
    protocol(&store).await;
}
