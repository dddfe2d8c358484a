//! hg.mozilla.org push messages (`exchange/hgpushes/v1|v2`): any bytes decode or give a
//! typed error, and a decoded push answers every accessor without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = bugflow::events::hgpush::decode(data) {
        let _ = event.kind();
        if let bugflow::events::hgpush::HgPushEvent::Changegroup(push) = &event {
            let _ = push.repo();
            let _ = push.push();
        }
    }
});
