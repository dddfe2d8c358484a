//! The HTTP API's prediction requests, as the api-requests consumer reads them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = bugflow::events::request::decode(data) {
        let _ = request.routing_key();
    }
});
