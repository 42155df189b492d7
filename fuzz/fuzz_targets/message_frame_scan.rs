//! gRPC message framing scanned in arbitrary chunks: never a panic, and the
//! same verdict however the body is cut.
#![no_main]

use grpc_lb_message_size::{Direction, FrameScanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[limit_byte, cut_seed], body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit = usize::from(limit_byte) * 4;
    let whole = FrameScanner::new().scan(body, limit, Direction::Receive);

    let mut scanner = FrameScanner::new();
    let mut chunked = Ok(());
    let mut rest = body;
    let mut cut = usize::from(cut_seed % 7) + 1;
    while !rest.is_empty() && chunked.is_ok() {
        let n = cut.min(rest.len());
        chunked = scanner.scan(&rest[..n], limit, Direction::Receive);
        rest = &rest[n..];
        cut = cut % 7 + 1;
    }
    assert_eq!(whole, chunked);
});
