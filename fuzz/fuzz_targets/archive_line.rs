//! Archive lines (`bugflow replay`): parse, and a parsed message writes back to a line that
//! parses again to the same body.
#![no_main]
use libfuzzer_sys::fuzz_target;

use bugflow::archive::ArchiveLine;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = ArchiveLine::parse(line) {
        let again = ArchiveLine::from_message(&message).to_line();
        let back = ArchiveLine::parse(&again).expect("a written line parses");
        assert_eq!(back.body, message.body);
        assert_eq!(back.routing_key, message.routing_key);
    }
});
