//! Issue 12, finding 10: only bugbug's prediction routes are readable cross-origin.
//!
//! Before the fix every route answered `Access-Control-Allow-Origin: *`, the
//! unauthenticated `/api/dashboard` included: any web page a colleague opened could read it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

async fn start(origins: Vec<String>) -> (String, CancellationToken) {
    let mut config = bugflow::config::Config::default();
    config.http.cors_origins = origins;
    crate::common::serve_http(Arc::new(config)).await
}

async fn allowed_origin(base: &str, path: &str, origin: &str) -> Option<String> {
    bugflow::init_tls();
    let answer = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("Origin", origin)
        .send()
        .await
        .unwrap();
    answer
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn cross_origin_reads_only_the_prediction_routes() {
    let (base, stop) = start(vec!["*".into()]).await;
    let page = "https://elsewhere.example";
    for private in ["/api/dashboard", "/", "/metrics", "/readyz"] {
        assert_eq!(
            allowed_origin(&base, private, page).await,
            None,
            "{private} is not readable cross-origin"
        );
    }
    assert_eq!(
        allowed_origin(&base, "/defectenhancementtask/predict/1", page)
            .await
            .as_deref(),
        Some("*"),
        "bugbug's routes stay open, as bugbug's"
    );
    stop.cancel();

    let (base, stop) = start(vec!["https://bugbot.example".into()]).await;
    let path = "/bugtype/predict/1";
    assert_eq!(
        allowed_origin(&base, path, "https://bugbot.example")
            .await
            .as_deref(),
        Some("https://bugbot.example")
    );
    assert_eq!(allowed_origin(&base, path, page).await, None);
    stop.cancel();
}
