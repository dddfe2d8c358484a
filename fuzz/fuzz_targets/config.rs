//! Configuration text: bugflow's TOML config and a consumer file parse or give an error that
//! names the field; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

use bugflow::config::Config;
use bugflow::consumer::ConsumerSpec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = Config::from_toml_str(text).unwrap_or_default();
    let _ = ConsumerSpec::parse("fuzz", "fuzz.toml", text, &config);
});
