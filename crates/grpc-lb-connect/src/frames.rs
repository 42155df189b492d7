//! Reads the HTTP/2 frames a server sends as they pass, for the few facts
//! hyper and h2 keep to themselves: that the server's first frame is a
//! SETTINGS (the preface), its MAX_CONCURRENT_STREAMS, and every GOAWAY with
//! its last-stream-id, error code and debug data. [`SentStreams`] reads the
//! frames the client writes, for the highest stream it has opened.
//!
//! The parser sees the plaintext bytes hyper reads (above TLS), in whatever
//! pieces the transport returns them, and never copies a payload it does not
//! need: DATA and HEADERS payloads are skipped by counting. It accepts any
//! bytes without panicking; a malformed frame is h2's to reject, and the
//! parser only reports what it could read (RFC 9113 §4.1, §6.5, §6.8).

/// HTTP/2 frame header length (RFC 9113 §4.1).
pub(crate) const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
/// SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §6.5.2).
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTING_LEN: usize = 6;
/// Last-stream-id and error code (RFC 9113 §6.8).
const GOAWAY_FIXED_LEN: usize = 8;
/// How much of a GOAWAY's debug data is kept: enough for the reasons servers
/// send (`too_many_pings`, `max_age`, `graceful_stop`), bounded so that a
/// peer cannot make the client buffer a whole 16 MiB frame.
pub(crate) const MAX_DEBUG_DATA: usize = 256;

/// A GOAWAY as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GoAwayFrame {
    pub(crate) last_stream_id: u32,
    pub(crate) error_code: u32,
    /// At most [`MAX_DEBUG_DATA`] bytes of it.
    pub(crate) debug_data: Vec<u8>,
    /// Where its four last-stream-id bytes start in the bytes of the
    /// [`FrameParser::feed`] call that completed the frame, when all four
    /// are in them: whoever holds those bytes may rewrite the id before h2
    /// reads it.
    pub(crate) last_stream_id_at: Option<usize>,
}

/// What the parser found, in the order it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameEvent {
    /// The first frame's header was not a SETTINGS frame: no HTTP/2 server.
    NotHttp2,
    /// A whole SETTINGS frame (not an ACK) was read, with its
    /// MAX_CONCURRENT_STREAMS if it set one. The first of these is the
    /// server's preface.
    Settings {
        max_concurrent_streams: Option<u32>,
    },
    GoAway(GoAwayFrame),
    /// The four last-stream-id bytes of a GOAWAY still being read, all in
    /// the bytes of this `feed` call, starting at `at`: seen before the
    /// frame ends, for whoever must rewrite the id whatever follows.
    GoAwayLastStreamId {
        at: usize,
    },
}

#[derive(Debug)]
enum Part {
    Header,
    /// A payload nobody needs: skipped by counting.
    Skip,
    Settings {
        entry: [u8; SETTING_LEN],
        have: usize,
        max_concurrent_streams: Option<u32>,
    },
    GoAway {
        fixed: [u8; GOAWAY_FIXED_LEN],
        have: usize,
        debug_data: Vec<u8>,
        /// See [`GoAwayFrame::last_stream_id_at`]; cleared when the frame
        /// goes on into the next `feed`.
        last_stream_id_at: Option<usize>,
    },
}

/// An incremental reader of HTTP/2 frame headers and the payloads of SETTINGS
/// and GOAWAY.
#[derive(Debug)]
pub(crate) struct FrameParser {
    part: Part,
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    /// Payload bytes left in the current frame.
    remaining: usize,
    first: bool,
    /// Set after a first frame that is no SETTINGS: nothing after it means
    /// anything.
    stopped: bool,
}

impl Default for FrameParser {
    fn default() -> Self {
        FrameParser {
            part: Part::Header,
            header: [0; FRAME_HEADER_LEN],
            have: 0,
            remaining: 0,
            first: true,
            stopped: false,
        }
    }
}

impl FrameParser {
    /// Reads `bytes`, the next ones from the server, calling `on` for each
    /// event they complete.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(FrameEvent)) {
        let fed = bytes.len();
        if let Part::GoAway {
            last_stream_id_at, ..
        } = &mut self.part
        {
            // An offset into the previous call's bytes means nothing here.
            *last_stream_id_at = None;
        }
        while !bytes.is_empty() && !self.stopped {
            match &mut self.part {
                // The common case, a whole header at hand, skips the copy.
                Part::Header if self.have == 0 && bytes.len() >= FRAME_HEADER_LEN => {
                    let (header, rest) = bytes.split_at(FRAME_HEADER_LEN);
                    self.header.copy_from_slice(header);
                    bytes = rest;
                    self.start_frame(&mut on);
                }
                Part::Header => {
                    let take = bytes.len().min(FRAME_HEADER_LEN - self.have);
                    self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                    self.have += take;
                    bytes = &bytes[take..];
                    if self.have == FRAME_HEADER_LEN {
                        self.have = 0;
                        self.start_frame(&mut on);
                    }
                }
                Part::Skip => {
                    let take = bytes.len().min(self.remaining);
                    self.remaining -= take;
                    bytes = &bytes[take..];
                    if self.remaining == 0 {
                        self.part = Part::Header;
                    }
                    continue;
                }
                Part::Settings {
                    entry,
                    have,
                    max_concurrent_streams,
                } => {
                    let take = bytes.len().min(self.remaining).min(SETTING_LEN - *have);
                    entry[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    self.remaining -= take;
                    bytes = &bytes[take..];
                    if *have == SETTING_LEN {
                        *have = 0;
                        let id = u16::from_be_bytes([entry[0], entry[1]]);
                        if id == MAX_CONCURRENT_STREAMS {
                            let value =
                                u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                            *max_concurrent_streams = Some(value);
                        }
                    }
                }
                Part::GoAway {
                    fixed,
                    have,
                    debug_data,
                    last_stream_id_at,
                } => {
                    let take = bytes.len().min(self.remaining);
                    let (head, rest) = bytes[..take].split_at(take.min(GOAWAY_FIXED_LEN - *have));
                    if *have == 0 && head.len() >= 4 {
                        let at = fed - bytes.len();
                        *last_stream_id_at = Some(at);
                        on(FrameEvent::GoAwayLastStreamId { at });
                    }
                    fixed[*have..*have + head.len()].copy_from_slice(head);
                    *have += head.len();
                    let keep = rest.len().min(MAX_DEBUG_DATA - debug_data.len());
                    debug_data.extend_from_slice(&rest[..keep]);
                    self.remaining -= take;
                    bytes = &bytes[take..];
                }
            }
            if self.remaining == 0 && !matches!(self.part, Part::Header | Part::Skip) {
                self.end_frame(&mut on);
            }
        }
    }

    fn start_frame(&mut self, on: &mut impl FnMut(FrameEvent)) {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = self.header;
        self.remaining = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        let stream = u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]);
        let first = std::mem::replace(&mut self.first, false);
        if first && kind != SETTINGS {
            self.stopped = true;
            on(FrameEvent::NotHttp2);
            return;
        }
        self.part = match kind {
            SETTINGS if stream == 0 && flags & ACK == 0 => Part::Settings {
                entry: [0; SETTING_LEN],
                have: 0,
                max_concurrent_streams: None,
            },
            GOAWAY if stream == 0 => Part::GoAway {
                fixed: [0; GOAWAY_FIXED_LEN],
                have: 0,
                debug_data: Vec::new(),
                last_stream_id_at: None,
            },
            _ => Part::Skip,
        };
        if self.remaining == 0 {
            match self.part {
                Part::Skip => self.part = Part::Header,
                _ => self.end_frame(on),
            }
        }
    }

    fn end_frame(&mut self, on: &mut impl FnMut(FrameEvent)) {
        match std::mem::replace(&mut self.part, Part::Header) {
            Part::Settings {
                max_concurrent_streams,
                ..
            } => on(FrameEvent::Settings {
                max_concurrent_streams,
            }),
            // A GOAWAY shorter than its fixed part is h2's protocol error to
            // report; there is nothing to tell from it.
            Part::GoAway {
                fixed,
                have: GOAWAY_FIXED_LEN,
                debug_data,
                last_stream_id_at,
            } => on(FrameEvent::GoAway(GoAwayFrame {
                last_stream_id: u32::from_be_bytes([fixed[0] & 0x7f, fixed[1], fixed[2], fixed[3]]),
                error_code: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
                debug_data,
                last_stream_id_at,
            })),
            Part::GoAway { .. } | Part::Skip | Part::Header => {}
        }
    }
}

/// The client connection preface, which comes before the client's first
/// frame (RFC 9113 §3.4).
const CLIENT_PREFACE_LEN: usize = 24;

/// Reads the bytes the client writes (its preface, then frames) for the
/// highest stream id it has sent a HEADERS frame on: the streams a server can
/// have seen. Payloads are skipped by counting.
#[derive(Debug)]
pub(crate) struct SentStreams {
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    /// Bytes to pass over: the preface, then each frame's payload.
    skip: usize,
    highest: u32,
}

impl Default for SentStreams {
    fn default() -> Self {
        SentStreams {
            header: [0; FRAME_HEADER_LEN],
            have: 0,
            skip: CLIENT_PREFACE_LEN,
            highest: 0,
        }
    }
}

impl SentStreams {
    /// Reads `bytes`, the next ones written to the server.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let take = self.skip.min(bytes.len());
                self.skip -= take;
                bytes = &bytes[take..];
                continue;
            }
            let take = bytes.len().min(FRAME_HEADER_LEN - self.have);
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have == FRAME_HEADER_LEN {
                self.have = 0;
                let [l0, l1, l2, kind, _, s0, s1, s2, s3] = self.header;
                self.skip = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
                if kind == HEADERS {
                    let stream = u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]);
                    self.highest = self.highest.max(stream);
                }
            }
        }
    }

    /// The highest stream id a HEADERS frame went out on (0 before any).
    pub(crate) fn highest(&self) -> u32 {
        self.highest
    }
}

/// Every event in `bytes` fed `chunk` bytes at a time, in `Debug` form: for
/// the unit tests and the fuzz target.
pub(crate) fn events_in_chunks(bytes: &[u8], chunk: usize) -> Vec<String> {
    let mut parser = FrameParser::default();
    let mut events = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        parser.feed(piece, |event| {
            if let Some(event) = without_offset(event) {
                events.push(format!("{event:?}"));
            }
        });
    }
    events
}

/// The event without what depends on how the bytes were split: no
/// [`GoAwayFrame::last_stream_id_at`], no [`FrameEvent::GoAwayLastStreamId`].
fn without_offset(event: FrameEvent) -> Option<FrameEvent> {
    match event {
        FrameEvent::GoAway(frame) => Some(FrameEvent::GoAway(GoAwayFrame {
            last_stream_id_at: None,
            ..frame
        })),
        FrameEvent::GoAwayLastStreamId { .. } => None,
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }

    fn events(bytes: &[u8], chunk: usize) -> Vec<FrameEvent> {
        let mut parser = FrameParser::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            parser.feed(piece, |e| out.extend(without_offset(e)));
        }
        out
    }

    fn goaway(last: u32, code: u32, debug: &[u8]) -> Vec<u8> {
        let mut payload = last.to_be_bytes().to_vec();
        payload.extend(code.to_be_bytes());
        payload.extend(debug);
        frame(GOAWAY, 0, 0, &payload)
    }

    #[test]
    fn settings_data_and_goaway_in_every_split() {
        // SETTINGS: HEADER_TABLE_SIZE 4096, MAX_CONCURRENT_STREAMS 2.
        let mut bytes = frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 16, 0, 0, 3, 0, 0, 0, 2]);
        bytes.extend(frame(SETTINGS, ACK, 0, &[]));
        bytes.extend(frame(0x0, 0x1, 1, &[7; 300]));
        bytes.extend(goaway(5, 0, b"max_age"));
        let expected = vec![
            FrameEvent::Settings {
                max_concurrent_streams: Some(2),
            },
            FrameEvent::GoAway(GoAwayFrame {
                last_stream_id: 5,
                error_code: 0,
                debug_data: b"max_age".to_vec(),
                last_stream_id_at: None,
            }),
        ];
        for chunk in 1..=bytes.len() {
            assert_eq!(events(&bytes, chunk), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn the_last_stream_id_is_located_only_when_the_feed_holds_it_and_the_frame_end() {
        let settings = frame(SETTINGS, 0, 0, &[]);
        let mut bytes = settings.clone();
        bytes.extend(goaway(2_147_483_647, 0, b"Server shutdown"));
        let at = settings.len() + FRAME_HEADER_LEN;
        let located = |split: usize| {
            let mut parser = FrameParser::default();
            let mut found = Vec::new();
            parser.feed(&bytes[..split], |_| {});
            parser.feed(&bytes[split..], |e| {
                if let FrameEvent::GoAway(frame) = e {
                    found.push(frame.last_stream_id_at.map(|offset| offset + split));
                }
            });
            found
        };
        // Whole, or split before the id: found, at its place in the feed.
        assert_eq!(located(0), [Some(at)]);
        assert_eq!(located(at), [Some(at)]);
        // Split inside the id, or after it: not all in the last feed.
        assert_eq!(located(at + 2), [None]);
        assert_eq!(located(at + 6), [None]);

        // The id alone is reported as it passes, even when the frame ends
        // in a later feed (split in the debug data).
        let mut parser = FrameParser::default();
        let mut seen = Vec::new();
        parser.feed(&bytes[..at + 10], |e| seen.push(e));
        assert_eq!(seen.last(), Some(&FrameEvent::GoAwayLastStreamId { at }));
        parser.feed(&bytes[at + 10..], |e| seen.push(e));
        assert!(matches!(
            seen.last(),
            Some(FrameEvent::GoAway(GoAwayFrame {
                last_stream_id: 2_147_483_647,
                last_stream_id_at: None,
                ..
            }))
        ));
    }

    #[test]
    fn sent_streams_are_the_client_headers_after_its_preface() {
        let mut written = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        written.extend(frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 0]));
        written.extend(frame(0x1, 0x4, 1, &[0x82; 30]));
        written.extend(frame(0x0, 0x1, 1, &[0x1; 100]));
        written.extend(frame(0x1, 0x4, 7, &[0x82; 30]));
        written.extend(frame(0x3, 0, 5, &[0, 0, 0, 8])); // RST_STREAM opens none
        written.extend(frame(0x1, 0x4, 3, &[0x82; 30]));
        for chunk in 1..=written.len() {
            let mut sent = SentStreams::default();
            for piece in written.chunks(chunk) {
                sent.feed(piece);
            }
            assert_eq!(sent.highest(), 7, "chunk {chunk}");
        }
        assert_eq!(SentStreams::default().highest(), 0);
    }

    #[test]
    fn empty_settings_set_no_limit_and_later_settings_are_seen() {
        let mut bytes = frame(SETTINGS, 0, 0, &[]);
        bytes.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
        assert_eq!(
            events(&bytes, 4),
            [
                FrameEvent::Settings {
                    max_concurrent_streams: None
                },
                FrameEvent::Settings {
                    max_concurrent_streams: Some(100)
                }
            ]
        );
    }

    #[test]
    fn a_first_frame_that_is_not_settings_stops_the_parser() {
        let reply = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        assert_eq!(events(reply, 64), [FrameEvent::NotHttp2]);
        let mut bytes = frame(GOAWAY, 0, 0, &[0; 8]);
        bytes.extend(goaway(1, 0, b""));
        assert_eq!(events(&bytes, 3), [FrameEvent::NotHttp2]);
    }

    #[test]
    fn debug_data_is_bounded_and_the_reserved_bit_ignored() {
        let mut bytes = frame(SETTINGS, 0, 0, &[]);
        bytes.extend(goaway(0x8000_0007, 11, &[b'x'; 1000]));
        let got = events(&bytes, 100);
        let FrameEvent::GoAway(goaway) = &got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(goaway.last_stream_id, 7);
        assert_eq!(goaway.error_code, 11);
        assert_eq!(goaway.debug_data.len(), MAX_DEBUG_DATA);
    }

    #[test]
    fn malformed_frames_are_reported_as_far_as_they_go() {
        let mut bytes = frame(SETTINGS, 0, 0, &[0, 3, 0, 0]); // half an entry
        bytes.extend(frame(GOAWAY, 0, 0, &[0, 0, 0])); // short GOAWAY
        bytes.extend(frame(GOAWAY, 0, 3, &[0; 8])); // on a stream: not a GOAWAY
        bytes.extend(frame(SETTINGS, 0, 1, &[0, 3, 0, 0, 0, 1])); // on a stream
        assert_eq!(
            events(&bytes, 5),
            [FrameEvent::Settings {
                max_concurrent_streams: None
            }]
        );
    }

    /// What a unary gRPC response costs the watch: run under callgrind
    /// (docs/tls-and-connectors.md gives the command and the count).
    #[test]
    #[ignore = "a measurement, run by hand under callgrind"]
    fn cost_of_a_unary_response() {
        // Response HEADERS (24 bytes of HPACK), one 32-byte DATA frame and
        // the trailers (16 bytes), as one read delivers them.
        let mut response = frame(0x1, 0x4, 1, &[0x88; 24]);
        response.extend(frame(0x0, 0x0, 1, &[0; 32]));
        response.extend(frame(0x1, 0x5, 1, &[0x40; 16]));
        let mut parser = FrameParser::default();
        parser.feed(&frame(SETTINGS, 0, 0, &[]), |_| {});
        let mut events = 0;
        for _ in 0..100_000 {
            parser.feed(std::hint::black_box(&response), |_| events += 1);
        }
        assert_eq!(events, 0);
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic walk over many inputs; fuzz/ goes further.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let mut bytes = frame(SETTINGS, 0, 0, &[]);
            for _ in 0..(seed % 200) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(seed as u8);
            }
            let whole = events_in_chunks(&bytes, bytes.len());
            assert_eq!(events_in_chunks(&bytes, (seed % 17) as usize), whole);
        }
    }
}
