//! Issue 14, memory: lapin keeps 32 frames of buffer each way per connection, so the frame
//! size the broker grants is memory. At RabbitMQ's 128 KiB a consumer's two connections held
//! 16 MiB of buffers; bugflow asks for `amqp.frame_max` (16 KiB) unless the URL says.

use bugflow::config::Config;
use bugflow::pulse::connect::connect;
use bugflow::secret::Secret;

fn config(url: &str) -> Config {
    let mut config = Config::default();
    config.amqp.url =
        Secret::new(std::env::var("BUGFLOW_TEST_AMQP_URL").unwrap_or_else(|_| url.to_owned()));
    config
}

#[tokio::test]
async fn a_connection_asks_for_the_configured_frame_size_unless_the_url_says_otherwise() {
    let local = "amqp://guest:guest@127.0.0.1:5672/%2f";
    let connection = connect(&config(local), "test-frames").await.unwrap();
    assert_eq!(connection.configuration().frame_max(), 16 * 1024);
    let _ = connection.close(200, "done".into()).await;

    let mut larger = config(local);
    larger.amqp.frame_max = 64 * 1024;
    let connection = connect(&larger, "test-frames").await.unwrap();
    assert_eq!(connection.configuration().frame_max(), 64 * 1024);
    let _ = connection.close(200, "done".into()).await;

    if std::env::var("BUGFLOW_TEST_AMQP_URL").is_err() {
        let in_url = config(&format!("{local}?frame_max=32768"));
        let connection = connect(&in_url, "test-frames").await.unwrap();
        assert_eq!(connection.configuration().frame_max(), 32 * 1024);
        let _ = connection.close(200, "done".into()).await;
    }
}
