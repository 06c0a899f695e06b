//! The inbound listener's plaintext path: detection, then the proxy's HTTP
//! server. An input whose first byte is odd gets a valid HTTP/2 preface in
//! front, so the fuzzer spends its time on frames (SETTINGS, HEADERS,
//! CONTINUATION, RST_STREAM, ...) rather than on finding the preface.
#![no_main]

use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let input = match data.split_first() {
        Some((first, rest)) if first % 2 == 1 => [PREFACE, rest].concat(),
        _ => data.to_vec(),
    };
    weft_fuzz::serve(&input, true);
});
