//! Fuzzes the control protocol's request decoding, as the daemon runs it on every line a client sends: any bytes
//! must give a request or an error to send back, never a panic, and a decoded request must survive the trip
//! through the encoder the client uses.
#![no_main]

use inspeq_daemon::control::protocol::{MAX_REQUEST_BYTES, RequestLine, VERSION, decode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_request(data) {
        Ok(request) => {
            assert!(data.len() <= MAX_REQUEST_BYTES);
            let line = serde_json::to_vec(&RequestLine { version: VERSION, request: request.clone() }).unwrap();
            assert_eq!(decode_request(&line).unwrap(), request);
        }
        Err(err) => {
            // The reply is one line for people.
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }
});
