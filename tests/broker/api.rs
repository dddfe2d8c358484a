//! The prediction API over real HTTP: requests travel through the broker to an
//! `api-requests` worker, which reads a fake BMO / hg.mozilla.org (wiremock, real payload
//! shapes) and answers through the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bugflow::clients::bugzilla::Bugzilla;
use bugflow::clients::hg;
use bugflow::http::{AppState, serve};
use bugflow::pipeline::Pipeline;
use bugflow::pulse::publish::Publisher;
use bugflow::secret::Secret;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::{TestBroker, sample};

const KEY: &str = "bugbot-test-key";
const BUG: u64 = 1388990;

fn full_bug() -> Value {
    serde_json::from_slice(&sample(
        "bugbug_bmo_bug_1388990_with_comments_history_attachments.json",
    ))
    .unwrap()
}

/// BMO answering the worker's full read and the web side's `last_change_time` check.
async fn mount_bugzilla(server: &MockServer, last_change_time: &str) {
    let mut bug = full_bug();
    bug["last_change_time"] = json!(last_change_time);
    Mock::given(method("GET"))
        .and(path("/rest/bug"))
        .and(query_param("include_fields", "id,last_change_time"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"bugs": [{"id": BUG, "last_change_time": last_change_time}], "faults": []}),
        ))
        .mount(server)
        .await;
    // Bug 999999 is private (or gone): Bugzilla's search leaves it out.
    Mock::given(method("GET"))
        .and(path("/rest/bug"))
        .and(query_param(
            "include_fields",
            "_default,comments,history,attachments",
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"bugs": [bug], "faults": []})),
        )
        .mount(server)
        .await;
}

struct Api {
    base: String,
    stop: CancellationToken,
    client: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("X-Api-Key", KEY)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Calls until the answer is 200 (or 20 s pass).
    async fn until_ready(&self, path: &str, body: Option<&str>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, value) = match body {
                Some(body) => self.post(path, body).await,
                None => self.get(path, Some(KEY)).await,
            };
            if status == 200 {
                return value;
            }
            assert_eq!(status, 202, "{value}");
            assert!(
                Instant::now() < deadline,
                "{path} never became ready: {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A running API: its fakes, its store and its worker, kept alive with it.
struct Started {
    api: Api,
    bugzilla: MockServer,
    _hgmo: MockServer,
    store: Arc<bugflow::store::Store>,
    _dir: tempfile::TempDir,
    worker: crate::common::Running,
}

/// The `api-requests` worker and the web side, on a fake BMO and hg.mozilla.org, with
/// `keys` as `http.api_keys`.
async fn start(broker: &mut TestBroker, keys: Vec<Secret>) -> Started {
    let bugzilla = MockServer::start().await;
    mount_bugzilla(&bugzilla, "2019-06-01T10:00:00Z").await;
    let hgmo = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex("^/integration/autoland/json-pushes$"))
        .and(query_param("changeset", "16df582a3768"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            sample("treeherder_hg_json_pushes_v2_full_response.json"),
            "application/json",
        ))
        .mount(&hgmo)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("json-pushes$"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error": "unknown revision 'abcdef123456'"})),
        )
        .with_priority(10)
        .mount(&hgmo)
        .await;

    let (store, dir) = crate::common::temp_store().await;
    let models = crate::common::shipped_models();
    let client = Bugzilla::new(
        &bugzilla.uri(),
        Secret::default(),
        Duration::from_secs(5),
        Duration::from_secs(60),
        2,
        8,
    )
    .unwrap();

    // The worker.
    let spec = broker.spec("api-requests");
    broker.declare(&spec).await;
    let here = format!("127.0.0.1:{}", hgmo.address().port());
    let source = hg::Source::Http(hg::HttpHg::new(vec![here], Duration::from_secs(5), 2).unwrap());
    let pipeline = Pipeline::new(spec, models.clone())
        .with_store(store.clone())
        .with_bugzilla(client.clone())
        .with_hg(source)
        .with_hg_url(&hgmo.uri());
    let worker = broker.start_pipeline(pipeline);

    // The web side.
    let mut config = (*broker.config).clone();
    config.http.api_keys = keys;
    let config = Arc::new(config);
    let mut state = AppState::new(config.clone(), Publisher::new(config).with_attempts(2));
    state.store = Some(store.clone());
    state.bugzilla = Some(client);
    state.models = models;
    // issue-type ships no bundle: this process is not ready, and /readyz says why.
    state.required_models = vec![
        bugflow::models::ModelKind::BUGTYPE,
        bugflow::models::ModelKind::ISSUE_TYPE,
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = Api {
        base: format!("http://{}", listener.local_addr().unwrap()),
        stop: CancellationToken::new(),
        client: {
            bugflow::init_tls();
            reqwest::Client::new()
        },
    };
    let token = api.stop.clone();
    tokio::spawn(async move { serve(listener, state, token).await });
    Started {
        api,
        bugzilla,
        _hgmo: hgmo,
        store,
        _dir: dir,
        worker,
    }
}

#[tokio::test]
async fn predictions_go_from_202_to_200_through_the_broker() {
    let mut broker = TestBroker::new().await;
    let running = start(
        &mut broker,
        vec![Secret::new("another-key"), Secret::new(KEY)],
    )
    .await;
    let results = broker.results_queue().await;
    let (api, bugzilla, store) = (&running.api, &running.bugzilla, &running.store);

    // Keys: missing, wrong → 401.
    let (status, body) = api.get(&format!("/bugtype/predict/{BUG}"), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["message"], "Error, missing X-API-KEY");
    let (status, _) = api
        .get(&format!("/bugtype/predict/{BUG}"), Some("guess"))
        .await;
    assert_eq!(status, 401);

    // An unknown model → 404, as bugbug says it.
    let (status, body) = api.get("/nosuchmodel/predict/1", Some(KEY)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "Model nosuchmodel doesn't exist");

    // Invalid batch bodies → 400 with the reason.
    let (status, body) = api.post("/bugtype/predict/batch", r#"{"bugs": []}"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"]["bugs"][0], "min length is 1");
    let (status, body) = api.post("/bugtype/predict/batch", "{not json").await;
    assert_eq!(status, 400);
    assert!(
        body["errors"]["body"][0]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{body}"
    );

    // One bug, by bugbug's model name: 202 first, then 200 with bugbug's fields.
    let one = format!("/defectenhancementtask/predict/{BUG}");
    let (status, body) = api.get(&one, Some(KEY)).await;
    assert_eq!((status, &body), (202, &json!({"ready": false})));
    let answer = api.until_ready(&one, None).await;
    let probs = answer["prob"].as_array().unwrap();
    assert_eq!(probs.len(), 3, "{answer}");
    let total: f64 = probs.iter().map(|p| p.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-3, "{answer}");
    let index = answer["index"].as_u64().unwrap() as usize;
    let labels = answer["extra_data"]["labels_map"].as_object().unwrap();
    assert_eq!(
        labels[answer["class"].as_str().unwrap()],
        json!(index),
        "{answer}"
    );
    assert!(["defect", "enhancement", "task"].contains(&answer["class"].as_str().unwrap()));

    // A batch with one answer ready and one not: 202, the ready one included.
    let batch = format!(r#"{{"bugs": [{BUG}, 999999]}}"#);
    let (status, body) = api
        .post("/defectenhancementtask/predict/batch", &batch)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["bugs"][BUG.to_string()], answer);
    assert_eq!(body["bugs"]["999999"], json!({"ready": false}));
    let all = api
        .until_ready("/defectenhancementtask/predict/batch", Some(&batch))
        .await;
    assert_eq!(all["bugs"]["999999"], json!({"available": false}));
    assert_eq!(all["bugs"][BUG.to_string()], answer);
    // Firefox CI's test selection: 501 with the reason (issue 15; before: 404 "use …/risk").
    for path in [
        "/push/autoland/abcdef123456/schedules",
        "/patch/abcdef123456/0123/schedules",
    ] {
        let (status, body) = api.get(path, Some(KEY)).await;
        assert_eq!(status, 501, "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("no test-selection model"),
            "{body}"
        );
    }
    // bugbot's path: its server constant ends in `/` (issue 15; before: 404, empty body).
    let doubled = api
        .until_ready("//defectenhancementtask/predict/batch", Some(&batch))
        .await;
    assert_eq!(doubled, all);

    // A binary model answers class 0/1, as bugbug.
    let regression = api
        .until_ready(&format!("/regression/predict/{BUG}"), None)
        .await;
    assert!(regression["class"].is_u64(), "{regression}");
    // The shipped spam bundle is untrained (no public spam data): 503 naming it (issue 15;
    // before: 202, then 200 `{"available": false}`, as if Bugzilla hid the bug).
    let (status, spam) = api.get(&format!("/spambug/predict/{BUG}"), Some(KEY)).await;
    assert_eq!(status, 503, "{spam}");
    assert_eq!(spam["model"], "spambug");
    assert!(
        spam["error"].as_str().unwrap().contains("untrained"),
        "{spam}"
    );

    // The bug changes on Bugzilla: its answer is dropped and computed again.
    bugzilla.reset().await;
    mount_bugzilla(bugzilla, "2026-11-28T09:00:00Z").await;
    let (status, _) = api.get(&one, Some(KEY)).await;
    assert_eq!(status, 202, "a changed bug is computed again");
    api.until_ready(&one, None).await;
    let cached = store
        .api_results(
            &[bugflow::pipeline::cache_key_of_bug(
                bugflow::models::ModelKind::BUGTYPE,
                BUG,
            )],
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let cached = cached.values().next().unwrap();
    assert_eq!(cached.change_time.as_deref(), Some("2026-11-28T09:00:00Z"));

    // Push risk: `autoland` means integration/autoland; an unknown revision is unavailable.
    let risk = api
        .until_ready("/push/autoland/16df582a3768/risk", None)
        .await;
    assert_eq!(risk["push_id"], 136598, "{risk}");
    let r = risk["risk"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&r));
    assert!(!risk["commits"].as_array().unwrap().is_empty());
    let unknown = api
        .until_ready("/push/mozilla-central/abcdef123456/risk", None)
        .await;
    assert_eq!(unknown["available"], false, "{unknown}");
    let (status, _) = api
        .get("/push/mozilla-central/not-a-rev/risk", Some(KEY))
        .await;
    assert_eq!(status, 400);

    // Each answer was also published as a result.
    let got = broker.take(&results, 1, Duration::from_secs(5)).await;
    assert!(
        got[0].routing_key.starts_with("api-requests.prediction."),
        "{}",
        got[0].routing_key
    );

    // Readiness names each serving bundle (every catalogue model ships one); liveness does
    // not care.
    let (status, ready) = api.get("/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["broker"], "connected");
    assert_eq!(ready["missing_models"], json!([]));
    for model in bugflow::models::ModelKind::all() {
        assert!(
            ready["models"][model.name()].is_string(),
            "{model}: {ready}"
        );
    }
    let (status, _) = api.get("/healthz", None).await;
    assert_eq!(status, 200);

    // The OpenAPI document describes the routes.
    let (status, doc) = api.get("/swagger", None).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/{model_name}/predict/batch"]["post"].is_object());

    api.stop.cancel();
    running.worker.stop().await;
    broker.cleanup().await;
}

/// bugbot's classification calls, played as bugbot makes them (issue 15): its server
/// constant ends in `/`, so it posts to `//<model>/predict/batch`; it always sends
/// `X-Api-Key: autonag`; it polls while any bug is `ready: false`, and reads `class`, `prob`,
/// `index` and `extra_data` under the bug id as a string. Served here with `api_keys = ["*"]`.
#[tokio::test]
async fn bugbots_call_pattern_works_for_every_model_it_uses() {
    let mut broker = TestBroker::new().await;
    let running = start(&mut broker, vec![Secret::new("*")]).await;
    let api = &running.api;
    let batch = format!(r#"{{"bugs": [{BUG}]}}"#);
    let bugbot = |model: &str| {
        let batch = batch.clone();
        let path = format!("//{model}/predict/batch");
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let response = api
                    .client
                    .post(format!("{}{path}", api.base))
                    .header("X-Api-Key", "autonag")
                    .json(&serde_json::from_str::<Value>(&batch).unwrap())
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                let pending = body["bugs"]
                    .as_object()
                    .is_some_and(|b| b.values().any(|v| v["ready"] == false));
                if status != 202 || !pending || Instant::now() > deadline {
                    return (status, body);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let key = BUG.to_string();

    // defectenhancementtask: the class through labels_map to its probability.
    let (status, body) = bugbot("defectenhancementtask").await;
    assert_eq!(status, 200, "{body}");
    let bug = &body["bugs"][&key];
    let class = bug["class"].as_str().unwrap();
    let labels_map = bug["extra_data"]["labels_map"].as_object().unwrap();
    let index = labels_map[class].as_u64().unwrap() as usize;
    assert_eq!(bug["index"], json!(index), "{bug}");
    let p = bug["prob"][index].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));

    // component: the conflated mapping applied gives a real Product::Component.
    let (status, body) = bugbot("component").await;
    assert_eq!(status, 200, "{body}");
    let bug = &body["bugs"][&key];
    let class = bug["class"].as_str().unwrap();
    let mapping = bug["extra_data"]["conflated_components_mapping"]
        .as_object()
        .expect("bugbug's conflated_components_mapping");
    let suggested = mapping.get(class).and_then(Value::as_str).unwrap_or(class);
    let (product, component) = suggested.split_once("::").expect("Product::Component");
    assert!(
        crate::common::real_components().contains(&format!("{product}::{component}")),
        "{suggested} is no component of the data"
    );
    let p = bug["prob"][bug["index"].as_u64().unwrap() as usize]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&p));

    // regression: a binary model, class 0/1, bugbot reads prob[1].
    let (status, body) = bugbot("regression").await;
    assert_eq!(status, 200, "{body}");
    let bug = &body["bugs"][&key];
    assert!(bug["class"] == 0 || bug["class"] == 1, "{bug}");
    assert_eq!(bug["prob"].as_array().unwrap().len(), 2);
    assert_eq!(bug["class"], bug["index"]);

    // The models whose shipped bundle is untrained (no public data labels them): 503 naming
    // the model, never 404 "doesn't exist" (before issue 15: 404 for the last five, and a
    // silent `{"available": false}` for spambug).
    for model in [
        "spambug",
        "stepstoreproduce",
        "componentspecific",
        "performancebug",
        "accessibility",
        "fenixcomponent",
    ] {
        let (status, body) = bugbot(model).await;
        assert_eq!(status, 503, "{model}: {body}");
        assert_eq!(body["model"], model, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("untrained"),
            "{model}: {body}"
        );
    }

    running.api.stop.cancel();
    running.worker.stop().await;
    broker.cleanup().await;
}
