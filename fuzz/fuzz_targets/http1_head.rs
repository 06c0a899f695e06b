//! An HTTP/1 connection's bytes into the proxy's HTTP server: hyper as the
//! proxy builds it (head size limit, header read timeout) and the proxy's
//! request handler behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let served = weft_fuzz::serve(data, false);
    // Whatever came in, what goes out is HTTP/1 responses (or nothing).
    if !served.response.is_empty() && !data.starts_with(b"PRI * HTTP/2.0") {
        assert!(served.response.starts_with(b"HTTP/1."), "{:?}", String::from_utf8_lossy(&served.response));
    }
});
