//! The legacy `exchange/bugzilla/simple` messages.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bugflow::events::simple::decode(data);
});
