//! One message's whole path: decode → the pipeline's plan with the shipped models (no
//! network: no Bugzilla, no hg) → its effects (none: no store) → the result serialised and
//! read back → the names the publisher would send (routing key, message id), checked as
//! AMQP short strings. The first byte picks the consumer, the bytes up to the first newline
//! are the routing key, the rest is the body. A panic anywhere is a bug; an error must say
//! what to do within `MAX_REASON` bytes.
#![no_main]
use std::sync::LazyLock;

use bugflow::config::Config;
use bugflow::consumer::{BUILTIN, ConsumerSpec};
use bugflow::message::Message;
use bugflow::models::registry::{ModelSet, Registry};
use bugflow::pipeline::Pipeline;
use bugflow::pulse::short::checked;
use bugflow::result::ResultMessage;
use libfuzzer_sys::fuzz_target;

struct World {
    runtime: tokio::runtime::Runtime,
    pipelines: Vec<(String, Pipeline)>,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let config = Config::default();
    let models = ModelSet::load(Registry::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models")))
        .expect("the shipped models load");
    let pipelines = BUILTIN
        .iter()
        .flat_map(|(name, text)| {
            let spec = ConsumerSpec::parse(name, name, text, &config).expect("a shipped consumer");
            let exchanges: Vec<String> = spec.bindings.iter().map(|b| b.exchange.clone()).collect();
            let pipeline = Pipeline::new(spec, models.clone());
            exchanges.into_iter().map(move |e| (e, pipeline.clone()))
        })
        .collect();
    World {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime"),
        pipelines,
    }
});

fuzz_target!(|data: &[u8]| {
    let world = &*WORLD;
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (key, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&b"bug.modify"[..], rest),
    };
    let (exchange, pipeline) = &world.pipelines[usize::from(pick) % world.pipelines.len()];
    let message = Message::new(exchange.as_str(), String::from_utf8_lossy(key), body.to_vec());
    match world.runtime.block_on(pipeline.process(&message)) {
        Ok(results) => {
            for result in results {
                let bytes = serde_json::to_vec(&result).expect("a result serialises");
                let back: ResultMessage = serde_json::from_slice(&bytes).expect("and reads back");
                assert_eq!(back.message_id, result.message_id);
                checked(&result.routing_key, "routing key").expect("a result's key fits AMQP");
                checked(&result.message_id, "message id").expect("a result's id fits AMQP");
            }
        }
        Err(e) => assert!(e.reason.len() <= bugflow::error::MAX_REASON, "{}", e.reason.len()),
    }
});
