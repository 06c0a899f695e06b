//! Gate policies (`ci/gates.toml`): parse and validate; every problem is
//! reported, none panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = reports::gate::Policy::parse(text, "gates.toml") {
        let _ = e.to_string();
    }
});
