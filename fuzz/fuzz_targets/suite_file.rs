//! Suite files (`suites/*.toml`): parse and validate. Errors must name a
//! line and column inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = suites::suite::parse(text, "fuzz.toml") {
        let message = e.to_string();
        assert!(message.contains("fuzz.toml"), "{message}");
    }
});
