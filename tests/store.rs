//! The store's effect protocol, on SQLite and on the PostgreSQL of this machine.

use std::time::Duration;

use bugflow::effects::Outcome;
use bugflow::store::{Claim, Predicted, Role, Store};

fn postgres_url() -> String {
    std::env::var("BUGFLOW_TEST_POSTGRES_URL")
        // The machine's PostgreSQL has a self-signed certificate no system root vouches for.
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".into())
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

    // A released claim is claimed afresh at once; a renewed one stays in progress.
    let again = format!("again-{id}");
    assert_eq!(
        store.claim(&again, "c", &subject, long).await.unwrap(),
        Claim::Proceed
    );
    store.renew(&again).await.unwrap();
    assert_eq!(
        store.claim(&again, "c", &subject, long).await.unwrap(),
        Claim::InProgress
    );
    store.release(&again).await.unwrap();
    assert_eq!(
        store.claim(&again, "c", &subject, long).await.unwrap(),
        Claim::Proceed
    );

    // A bug's lock: one holder at a time, taken over once its lease ran out.
    let lock = format!("bug:{id}");
    assert!(store.lock(&lock, "a", long).await.unwrap());
    assert!(!store.lock(&lock, "b", long).await.unwrap(), "held by a");
    assert!(store.renew_lock(&lock, "a", Duration::ZERO).await.unwrap());
    assert!(
        !store.renew_lock(&lock, "b", long).await.unwrap(),
        "not b's"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        store.lock(&lock, "b", long).await.unwrap(),
        "a's lease ran out"
    );
    store.unlock(&lock, "a").await.unwrap();
    assert!(
        !store.lock(&lock, "c", long).await.unwrap(),
        "a cannot unlock b's"
    );
    store.unlock(&lock, "b").await.unwrap();
    assert!(store.lock(&lock, "c", long).await.unwrap());
    store.unlock(&lock, "c").await.unwrap();

    // The write budget: taken atomically up to the cap, refunded when a write did not happen.
    let used = store.writes_this_hour().await.unwrap();
    let hour = store
        .reserve_write(used + 1)
        .await
        .unwrap()
        .expect("one left");
    assert_eq!(store.reserve_write(used + 1).await.unwrap(), None, "spent");
    store.refund_write(&hour).await.unwrap();
    assert!(store.reserve_write(used + 1).await.unwrap().is_some());

    // Pruning keeps what is recent and every pending claim.
    store.prune(1).await.unwrap();
    assert_eq!(
        store.effects(&subject).await.unwrap().len(),
        2,
        "recent rows stay"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    store.prune(0).await.unwrap();
    let left = store.effects(&subject).await.unwrap();
    assert_eq!(left.len(), 1, "a done effect older than the cut-off goes");
    assert_eq!(left[0].key, again, "a pending claim stays");

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
    let at = chrono::Utc::now().to_rfc3339();
    let model = format!("bugtype-{}", &id[..8]);
    for (role, version, class, confidence) in [
        (Role::Serving, "v1", "defect", 0.75),
        (Role::Shadow, "v2", "task", 0.625),
    ] {
        let predicted = Predicted {
            bug_id: bug,
            model: &model,
            version,
            role,
            class,
            confidence,
            at: &at,
        };
        store.record_prediction(&predicted).await.unwrap();
    }
    assert!(
        store
            .harvest(bug, &model, "task", "a@b.c", "2026-01-01T00:00:00")
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
    // The same label beside each bundle's prediction, with its probability; the two
    // predictions of one event pair up.
    let served = store.live_labels(&model).await.unwrap();
    assert_eq!(served.len(), 1);
    assert_eq!(
        (served[0].version.as_str(), served[0].confidence),
        ("v1", Some(0.75))
    );
    let shadowed = store.shadow_labels(&model, "v2").await.unwrap();
    assert_eq!(shadowed.len(), 1);
    assert_eq!(
        (shadowed[0].predicted.as_str(), shadowed[0].confidence),
        ("task", Some(0.625))
    );
    assert_eq!(
        store.agreement(&model, "v2").await.unwrap(),
        vec![("defect".to_owned(), "task".to_owned())]
    );
    let rows = store
        .predictions(&model, Role::Shadow, "2000-01-01")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].class, "task");
}

/// Issue 16: a store written before predictions kept their role and probability (and labels
/// their probability) gains the columns on open; its rows stay, as serving predictions.
#[tokio::test]
async fn an_older_sqlite_store_gains_the_new_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE predictions (bug_id BIGINT NOT NULL, model TEXT NOT NULL,
                 version TEXT NOT NULL, class TEXT NOT NULL, at TEXT NOT NULL);
             CREATE TABLE labels (bug_id BIGINT NOT NULL, model TEXT NOT NULL,
                 predicted TEXT NOT NULL, version TEXT NOT NULL, truth TEXT NOT NULL,
                 by TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (bug_id, model, truth, at));
             INSERT INTO predictions VALUES (7, 'bugtype', 'v0', 'defect', '2026-01-01T00:00:00+00:00');",
        )
        .unwrap();
    }
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    // Opening twice finds the columns there.
    drop(store);
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    assert!(
        store
            .harvest(7, "bugtype", "task", "a@b.c", "2026-01-02T00:00:00")
            .await
            .unwrap()
    );
    let labels = store.live_labels("bugtype").await.unwrap();
    assert_eq!(labels.len(), 1);
    assert_eq!(
        (labels[0].predicted.as_str(), labels[0].confidence),
        ("defect", None)
    );
    let rows = store
        .predictions("bugtype", Role::Serving, "2000")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the old row is a serving prediction");
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

/// Issue 12, finding 4: before, the store held one connection and never reconnected — after
/// `pg_terminate_backend` every statement failed for good.
#[tokio::test]
async fn the_postgresql_store_comes_back_after_its_connections_are_terminated() {
    // Its own application name, so that only this test's connections are terminated.
    let name = format!(
        "bugflow-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let base = postgres_url();
    let url = format!(
        "{base}{}application_name={name}",
        if base.contains('?') { "&" } else { "?" }
    );
    // TLS is negotiated and the certificate checked: this server's self-signed one is refused.
    let required = url.replace("sslmode=disable", "sslmode=require");
    if required != url {
        let refused = Store::open(&required)
            .await
            .err()
            .expect("an untrusted certificate");
        assert!(format!("{refused:#}").contains("TLS"), "{refused:#}");
    }
    let store = Store::open(&url).await.unwrap();
    store.ping().await.unwrap();
    let (admin, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let terminated = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .unwrap()
        .len();
    assert!(terminated >= 1, "bugflow's connection was found and ended");
    let started = std::time::Instant::now();
    let mut failed = 0;
    let id = uuid::Uuid::new_v4().simple().to_string();
    loop {
        match store
            .claim(&format!("after-{id}"), "c", "s", Duration::from_secs(60))
            .await
        {
            Ok(claim) => {
                assert_eq!(claim, Claim::Proceed);
                break;
            }
            Err(e) => {
                failed += 1;
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "still failing after 10 s: {e:#}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!(
        "postgres: {terminated} connection(s) terminated; {failed} statement(s) failed; \
         answering again after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    store.ping().await.unwrap();
}

/// Two processes that open one new PostgreSQL database at once (two replicas, or a consumer
/// and the API started together) both create its tables. Before, each ran `CREATE … IF NOT
/// EXISTS` on its own, and PostgreSQL's catalogue let one of them fail ("duplicate key value
/// violates unique constraint pg_class_relname_nsp_index"): that process did not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_opened_at_once_on_a_new_postgresql_database_all_open() {
    let base = postgres_url();
    let (admin, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL must answer on 127.0.0.1:5432 (scripts/test starts it)");
    tokio::spawn(connection);
    // A few new databases, each opened by four stores at once: the race was lost in every
    // try of two stores on this machine; four make a loss the more likely.
    for round in 0..3 {
        let database = format!(
            "bugflow_new_{round}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .unwrap();
        let (path, query) = base.split_once('?').unwrap_or((&base, ""));
        let at = path.rfind('/').expect("a URL with a database");
        let url = format!("{}/{database}?{query}", &path[..at]);
        let opened = futures::future::join_all((0..4).map(|_| Store::open(&url))).await;
        let failed: Vec<String> = opened
            .iter()
            .filter_map(|o| o.as_ref().err().map(|e| format!("{e:#}")))
            .collect();
        drop(opened);
        admin
            .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
            .await
            .unwrap();
        assert!(failed.is_empty(), "round {round}: {failed:?}");
    }
}
