//! gRPC's length-prefixed message framing, followed across body chunks.

use std::fmt;

/// The size of a gRPC message prefix: a compressed flag and a big-endian
/// `u32` length.
pub const PREFIX_LEN: usize = 5;

/// Which way a message was going when it broke its limit.
///
/// ```
/// use grpc_lb_message_size::{Direction, FrameScanner};
///
/// let reply = [0, 0, 0, 0, 9];
/// let too_large = FrameScanner::new().scan(&reply, 4, Direction::Receive).unwrap_err();
/// assert_eq!(too_large.direction(), Direction::Receive);
/// assert!(too_large.to_string().starts_with("grpc: received"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A request message, from the client.
    Send,
    /// A response message, from the server.
    Receive,
}

/// A message longer than its limit.
///
/// The message is grpc-go's, so that logs and tests written against grpc-go
/// read the same: `trying to send message larger than max (5000 vs. 4096)`,
/// `grpc: received message larger than max (5000 vs. 4096)`. The RPC fails
/// with `RESOURCE_EXHAUSTED` carrying this as its message.
///
/// ```
/// use grpc_lb_message_size::{Direction, FrameScanner};
///
/// let mut scanner = FrameScanner::new();
/// let too_large = scanner.scan(&[0, 0, 0, 0x13, 0x88], 4096, Direction::Send).unwrap_err();
/// assert_eq!(too_large.size(), 5000);
/// assert_eq!(too_large.limit(), 4096);
/// assert_eq!(too_large.to_string(), "trying to send message larger than max (5000 vs. 4096)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageTooLarge {
    direction: Direction,
    size: u32,
    limit: usize,
}

impl MessageTooLarge {
    /// Which way the message was going.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The length its prefix declared, in bytes.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The limit it broke, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The `RESOURCE_EXHAUSTED` status an RPC fails with, this as its source.
    pub fn to_status(self) -> tonic::Status {
        let mut status = tonic::Status::resource_exhausted(self.to_string());
        status.set_source(std::sync::Arc::new(self));
        status
    }
}

impl fmt::Display for MessageTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.direction {
            Direction::Send => write!(f, "trying to send message larger than max ("),
            Direction::Receive => write!(f, "grpc: received message larger than max ("),
        }?;
        write!(f, "{} vs. {})", self.size, self.limit)
    }
}

impl std::error::Error for MessageTooLarge {}

/// Follows the message prefixes of a gRPC body through chunks of any size,
/// without buffering the messages: only a prefix split across chunks is kept,
/// in five bytes.
///
/// ```
/// use grpc_lb_message_size::{Direction, FrameScanner};
///
/// // Two messages, of 3 and 2 bytes, cut into awkward chunks.
/// let body = [0, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 2, b'd', b'e'];
/// let mut scanner = FrameScanner::new();
/// for chunk in body.chunks(4) {
///     scanner.scan(chunk, 3, Direction::Receive).unwrap();
/// }
/// assert_eq!(scanner.messages(), 2);
/// assert!(scanner.at_boundary());
/// ```
#[derive(Clone, Debug, Default)]
pub struct FrameScanner {
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
    messages: u64,
}

impl FrameScanner {
    /// A scanner at the start of a body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `chunk`, the next bytes of the body. Fails on the first message
    /// whose declared length is above `limit`; the scanner should not be used
    /// after that.
    pub fn scan(
        &mut self,
        mut chunk: &[u8],
        limit: usize,
        direction: Direction,
    ) -> Result<(), MessageTooLarge> {
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skipped = chunk
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                chunk = &chunk[skipped..];
                self.remaining -= skipped as u64;
                continue;
            }
            let wanted = PREFIX_LEN - self.prefix_len;
            let taken = wanted.min(chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + taken].copy_from_slice(&chunk[..taken]);
            self.prefix_len += taken;
            chunk = &chunk[taken..];
            if self.prefix_len < PREFIX_LEN {
                break;
            }
            self.prefix_len = 0;
            self.messages += 1;
            let [_, a, b, c, d] = self.prefix;
            let size = u32::from_be_bytes([a, b, c, d]);
            if u64::from(size) > limit as u64 {
                return Err(MessageTooLarge {
                    direction,
                    size,
                    limit,
                });
            }
            self.remaining = u64::from(size);
        }
        Ok(())
    }

    /// How many message prefixes have been read.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// True between messages: every message begun has ended.
    pub fn at_boundary(&self) -> bool {
        self.prefix_len == 0 && self.remaining == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(sizes: &[u32]) -> Vec<u8> {
        let mut body = Vec::new();
        for &size in sizes {
            body.push(0);
            body.extend_from_slice(&size.to_be_bytes());
            body.extend(std::iter::repeat_n(7u8, size as usize));
        }
        body
    }

    #[test]
    fn a_message_exactly_at_the_limit_passes() {
        let mut scanner = FrameScanner::new();
        scanner.scan(&frame(&[8]), 8, Direction::Send).unwrap();
        assert!(scanner.at_boundary());
        let error = FrameScanner::new()
            .scan(&frame(&[9]), 8, Direction::Send)
            .unwrap_err();
        assert_eq!((error.size(), error.limit()), (9, 8));
    }

    #[test]
    fn the_largest_declared_length_is_read_without_overflow() {
        let mut scanner = FrameScanner::new();
        let error = scanner
            .scan(
                &[1, 0xff, 0xff, 0xff, 0xff],
                usize::MAX >> 40,
                Direction::Receive,
            )
            .unwrap_err();
        assert_eq!(error.size(), u32::MAX);
        let mut scanner = FrameScanner::new();
        scanner
            .scan(
                &[0, 0xff, 0xff, 0xff, 0xff, 1, 2],
                usize::MAX,
                Direction::Receive,
            )
            .unwrap();
        assert!(!scanner.at_boundary());
    }

    #[test]
    fn status_is_resource_exhausted_with_grpc_go_message() {
        let status = FrameScanner::new()
            .scan(&frame(&[10]), 4, Direction::Receive)
            .unwrap_err()
            .to_status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "grpc: received message larger than max (10 vs. 4)"
        );
    }

    proptest! {
        /// However the body is cut, the scanner finds the same messages and
        /// the same first oversized one as a scan of the whole body.
        #[test]
        fn chunking_does_not_change_the_verdict(
            sizes in proptest::collection::vec(0u32..64, 0..8),
            cuts in proptest::collection::vec(1usize..17, 1..40),
            limit in 0usize..64,
        ) {
            let body = frame(&sizes);
            let expected = sizes.iter().position(|&s| s as usize > limit);
            let mut scanner = FrameScanner::new();
            let mut verdict = Ok(());
            let mut rest = &body[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() && verdict.is_ok() {
                let n = (*cut.next().unwrap()).min(rest.len());
                verdict = scanner.scan(&rest[..n], limit, Direction::Send);
                rest = &rest[n..];
            }
            match expected {
                Some(index) => {
                    let error = verdict.unwrap_err();
                    prop_assert_eq!(error.size(), sizes[index]);
                    prop_assert_eq!(scanner.messages(), index as u64 + 1);
                }
                None => {
                    prop_assert!(verdict.is_ok());
                    prop_assert_eq!(scanner.messages(), sizes.len() as u64);
                    prop_assert!(scanner.at_boundary());
                }
            }
        }
    }
}
