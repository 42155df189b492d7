//! The HTTP/2 frame watch of grpc-lb-connect (server preface, SETTINGS
//! MAX_CONCURRENT_STREAMS, GOAWAY) over arbitrary bytes cut in arbitrary
//! chunks: never a panic, and the same events however the bytes are cut.
#![no_main]

use grpc_lb_connect::fuzzing::frame_events;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let whole = frame_events(bytes, bytes.len());
    let chunked = frame_events(bytes, usize::from(chunk % 16) + 1);
    assert_eq!(whole, chunked);
});
