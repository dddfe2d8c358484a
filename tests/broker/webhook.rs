use std::sync::Arc;
use std::time::Duration;

use bugflow::secret::Secret;
use bugflow::sinks::dead_letter::REASON_HEADER;
use tokio_util::sync::CancellationToken;

use crate::common::{TestBroker, sample};

const SECRET: &str = "s3cret-webhook-token";

async fn start_http(config: Arc<bugflow::config::Config>) -> (String, CancellationToken) {
    let mut config = (*config).clone();
    config.http.webhook_secret = Secret::new(SECRET);
    crate::common::serve_http(Arc::new(config)).await
}

fn client() -> reqwest::Client {
    bugflow::init_tls();
    reqwest::Client::new()
}

#[tokio::test]
async fn a_webhook_post_becomes_a_result() {
    let mut broker = TestBroker::new().await;
    let spec = broker.spec("bug-triage");
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let running = broker.start(spec.clone());
    let (base, stop) = start_http(broker.config.clone()).await;
    let url = format!("{base}/bugzilla/webhook");
    let body = sample("bmo_webhook_public_bug_modify_example.json");

    let denied = client()
        .post(&url)
        .header("X-Bugflow-Webhook-Secret", "wrong")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);

    let accepted = client()
        .post(&url)
        .header("X-Bugflow-Webhook-Secret", SECRET)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200, "{:?}", accepted.text().await);

    let got = broker.take(&results, 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "the relayed event was triaged");
    assert_eq!(got[0].routing_key, "bug-triage.bug.1629704");
    let result = got[0].json();
    assert_eq!(result["data"]["event"], "bug.modify:priority");
    assert_eq!(result["data"]["product"], "Firefox");
    assert_eq!(result["data"]["changes"][0]["added"], "P1");
    assert_eq!(
        result["input"]["exchange"],
        broker.config.bugzilla_exchange()
    );

    // A private bug is relayed too, and skipped by the consumer with its reason.
    let private = client()
        .post(&url)
        .header("X-Bugflow-Webhook-Secret", SECRET)
        .body(sample("bmo_webhook_private_bug_modify_example.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(private.status(), 200);
    let stats = running.stats.clone();
    broker
        .eventually(
            Duration::from_secs(10),
            "the private bug is skipped",
            || bugflow::dispatch::Stats::get(&stats.skipped) == 1,
        )
        .await;

    // Not a webhook body: 400 with the reason, and parked in the dead-letter queue.
    let bad = client()
        .post(&url)
        .header("X-Bugflow-Webhook-Secret", SECRET)
        .body("{\"hello\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let dead = broker
        .take(
            &broker.config.dead_letter_queue(),
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].headers[REASON_HEADER]
            .as_str()
            .unwrap()
            .contains("BMO webhook")
    );

    stop.cancel();
    running.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn the_webhook_answers_503_when_no_consumer_queue_is_bound_or_the_broker_is_down() {
    let broker = TestBroker::new().await;
    // Nothing is bound to the bug-events exchange yet: BMO must retry, not lose the event.
    let (base, stop) = start_http(broker.config.clone()).await;
    let response = client()
        .post(format!("{base}/bugzilla/webhook"))
        .header("X-Bugflow-Webhook-Secret", SECRET)
        .body(sample("bmo_webhook_comment_create_example.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    stop.cancel();

    let mut down = (*broker.config).clone();
    down.amqp.url = Secret::new("amqp://guest:guest@127.0.0.1:1/%2f");
    let (base, stop) = start_http(Arc::new(down)).await;
    let started = std::time::Instant::now();
    let response = client()
        .post(format!("{base}/bugzilla/webhook"))
        .header("X-Bugflow-Webhook-Secret", SECRET)
        .body(sample("bmo_webhook_comment_create_example.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "answered in time"
    );
    let ready = client().get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    stop.cancel();
    broker.cleanup().await;
}

/// Issue 12, finding 12: before, the body (up to 2 MB) was read before the secret was
/// checked. Headers that announce 2 MB, a wrong secret and no body: the answer is 401 at
/// once, without waiting for the body.
#[tokio::test]
async fn a_caller_without_the_secret_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = TestBroker::new().await;
    let (base, stop) = start_http(broker.config.clone()).await;
    let address = base.trim_start_matches("http://").to_owned();
    for (path, header) in [
        ("/bugzilla/webhook", "X-Bugflow-Webhook-Secret: wrong"),
        ("/bugtype/predict/batch", "X-Api-Key: wrong"),
    ] {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\n{header}\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(3), socket.read(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer while the body is missing"))
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(
            answer.starts_with("HTTP/1.1 401") || answer.starts_with("HTTP/1.1 503"),
            "{path}: {answer}"
        );
    }
    stop.cancel();
    broker.cleanup().await;
}
