//! BMO webhook bodies: decode or a typed error; a decoded event converts to the REST shape
//! and through bugbug's feature extractors.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = bugflow::events::bmo::decode(data) {
        let rest = event.bug.to_rest();
        let _ = bugflow::features::bug::extract_all(&rest);
    }
});
