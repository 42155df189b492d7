//! Watches the HTTP/2 frames the server sends, on the bytes the client reads:
//! its preface, its stream limit and its GOAWAYs; and the streams the client
//! opens, on the bytes it writes, so that a GOAWAY fails every stream the
//! server cannot have seen.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::error::GoAway;
use crate::frames::{FrameEvent, FrameParser, SentStreams};
use crate::state::ConnectionState;

/// What the first frame from the server turned out to be.
#[derive(Debug)]
pub(crate) enum Preface {
    /// A whole SETTINGS frame: the server speaks HTTP/2, and its stream limit
    /// (if it set one) is known.
    Settings,
    /// Some other frame type: not an HTTP/2 server.
    Unexpected,
    /// EOF or an I/O error before a whole SETTINGS frame arrived.
    Closed(Option<io::Error>),
}

pin_project! {
    /// Wraps the transport (above TLS: the plaintext HTTP/2 bytes hyper
    /// reads) and reads the server's frames as they pass.
    ///
    /// hyper and h2 keep the server preface, the stream limit and GOAWAYs to
    /// themselves (h2 tells of a GOAWAY only to the next request); reading
    /// the frame headers as they go by is how the connection learns of them
    /// the moment they arrive. Only SETTINGS and GOAWAY payloads are looked
    /// at; the rest are skipped by counting.
    ///
    /// On the write side it reads the frame headers the client sends, for
    /// the highest stream it has opened, so that a GOAWAY can be handed to
    /// h2 with no higher last-stream-id than that (see
    /// `last_stream_id_for_h2`).
    pub(crate) struct PrefaceWatch<IO> {
        #[pin]
        io: IO,
        parser: FrameParser,
        state: Arc<ConnectionState>,
        peer: Arc<str>,
        report: Option<oneshot::Sender<Preface>>,
        sent: SentStreams,
        // True when h2 last flushed with nothing left to write: every frame
        // it had encoded, every request's HEADERS, was handed to the
        // transport. False from its next write until its next flush.
        flushed: bool,
        // The last-stream-ids of the GOAWAYs so far: the server's, and the
        // one h2 was given.
        go_away_ids: Option<(u32, u32)>,
        // What the GOAWAY being read was rewritten to as its id passed.
        rewritten: Option<u32>,
    }
}

impl<IO> PrefaceWatch<IO> {
    pub(crate) fn new(
        io: IO,
        state: Arc<ConnectionState>,
        peer: Arc<str>,
    ) -> (Self, oneshot::Receiver<Preface>) {
        let (tx, rx) = oneshot::channel();
        let watch = PrefaceWatch {
            io,
            parser: FrameParser::default(),
            state,
            peer,
            report: Some(tx),
            sent: SentStreams::default(),
            flushed: true,
            go_away_ids: None,
            rewritten: None,
        };
        (watch, rx)
    }
}

/// The last-stream-id to hand h2 for a GOAWAY whose server value is
/// `server`, given the GOAWAYs before it (`previous`: the server's and what
/// h2 got), and the highest stream the client has written HEADERS for if
/// nothing is waiting in h2 to be written (`sent`).
///
/// C-core and grpc-go drain in two steps: GOAWAY(2^31-1) and a PING, then
/// the real last-stream-id after the PING's ack. h2 fails only the streams
/// above the id it is given; the others go out even though the server is
/// shutting down, and if it closes before its second GOAWAY they fail with
/// a broken pipe, never retried. But a stream whose HEADERS were not yet
/// written when the GOAWAY was read cannot have been seen by the server:
/// grpc-go fails such streams as unprocessed (its `clientHeaderHandler`
/// once draining). Lowering the id to the highest stream written makes h2
/// do the same: it fails the higher ones with the remote GOAWAY, which the
/// channel retries elsewhere (gRFC A6), and never writes them.
///
/// The id never rises above one h2 already has (RFC 9113 §6.8, which h2
/// enforces), and a server that raises its own is passed through for h2 to
/// reject.
fn last_stream_id_for_h2(server: u32, previous: Option<(u32, u32)>, sent: Option<u32>) -> u32 {
    let mut id = server;
    if let Some((server_before, given_before)) = previous {
        if server > server_before {
            return server;
        }
        id = id.min(given_before);
    }
    match sent {
        Some(sent) => id.min(sent),
        None => id,
    }
}

fn send(report: &mut Option<oneshot::Sender<Preface>>, preface: Preface) {
    if let Some(tx) = report.take() {
        let _ = tx.send(preface);
    }
}

impl<IO: AsyncRead> AsyncRead for PrefaceWatch<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.io.poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if fresh.is_empty() {
                    send(this.report, Preface::Closed(None));
                    return result;
                }
                let (state, peer, report) = (&**this.state, &**this.peer, this.report);
                // GOAWAYs are rare: this allocates only for one.
                let mut go_aways: Vec<FrameEvent> = Vec::new();
                this.parser.feed(fresh, |event| match event {
                    FrameEvent::NotHttp2 => send(report, Preface::Unexpected),
                    FrameEvent::Settings {
                        max_concurrent_streams,
                    } => {
                        if let Some(limit) = max_concurrent_streams {
                            tracing::debug!(peer, limit, "server's MAX_CONCURRENT_STREAMS");
                            state.set_limit(limit);
                        }
                        send(report, Preface::Settings);
                    }
                    go_away => go_aways.push(go_away),
                });
                let fresh = &mut buf.filled_mut()[before..];
                for event in go_aways {
                    match event {
                        FrameEvent::GoAwayLastStreamId { at } => {
                            // A GOAWAY after one h2 got lowered must not go
                            // above it, however the rest of it arrives.
                            let id = &mut fresh[at..at + 4];
                            let server = u32::from_be_bytes([id[0] & 0x7f, id[1], id[2], id[3]]);
                            let given = match *this.go_away_ids {
                                Some(_) => last_stream_id_for_h2(server, *this.go_away_ids, None),
                                None => server,
                            };
                            if given != server {
                                id.copy_from_slice(&given.to_be_bytes());
                                *this.rewritten = Some(given);
                            }
                        }
                        FrameEvent::GoAway(frame) => {
                            // Only a frame whose id and end are both in
                            // these bytes is read by h2 before it writes
                            // anything more.
                            let sent = (*this.flushed && frame.last_stream_id_at.is_some())
                                .then(|| this.sent.highest());
                            let mut given = last_stream_id_for_h2(
                                frame.last_stream_id,
                                *this.go_away_ids,
                                sent,
                            );
                            match frame.last_stream_id_at {
                                Some(at) if given != frame.last_stream_id => {
                                    fresh[at..at + 4].copy_from_slice(&given.to_be_bytes());
                                }
                                Some(_) => {}
                                // Its id went by in an earlier read.
                                None => given = this.rewritten.unwrap_or(frame.last_stream_id),
                            }
                            *this.rewritten = None;
                            *this.go_away_ids = Some((frame.last_stream_id, given));
                            // h2 fails the streams above `given`: none of them
                            // was written if `given` is at least the highest
                            // written, which is known only when h2 had
                            // nothing left to write.
                            state.go_away_for_h2(sent.is_some_and(|sent| given >= sent));
                            let go_away = GoAway::new(
                                frame.last_stream_id,
                                frame.error_code,
                                frame.debug_data,
                            );
                            tracing::debug!(
                                peer,
                                %go_away,
                                highest_sent = this.sent.highest(),
                                last_stream_for_h2 = given,
                                "GOAWAY received; connection draining"
                            );
                            state.go_away(go_away);
                        }
                        _ => {}
                    }
                }
            }
            Poll::Ready(Err(_)) if this.report.is_some() => {
                // The connector gets the original error, whose source may be
                // typed (a TLS alert); hyper gets a copy of its message.
                if let Poll::Ready(Err(original)) = result {
                    let copy = io::Error::new(original.kind(), original.to_string());
                    send(this.report, Preface::Closed(Some(original)));
                    return Poll::Ready(Err(copy));
                }
            }
            Poll::Ready(Err(_)) | Poll::Pending => {}
        }
        result
    }
}

impl<IO: AsyncRead + AsyncWrite> PrefaceWatch<IO> {
    /// A write failed before the server's preface arrived. The server's reason
    /// may be waiting to be read (a TLS 1.3 server refusing the client
    /// certificate sends an alert and closes, and the client's next write can
    /// fail first): read it, so that the verdict names it rather than the
    /// broken pipe.
    fn write_failed<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Poll::Ready(Err(write_error)) = result else {
            return result;
        };
        let this = self.project();
        if this.report.is_none() {
            return Poll::Ready(Err(write_error));
        }
        let mut scratch = [0; 256];
        let mut buf = ReadBuf::new(&mut scratch);
        match this.io.poll_read(cx, &mut buf) {
            Poll::Ready(Err(read_error)) => {
                send(this.report, Preface::Closed(Some(read_error)));
                Poll::Ready(Err(write_error))
            }
            _ => {
                // The connector gets the original (its source may be typed);
                // hyper a copy of its message.
                let copy = io::Error::new(write_error.kind(), write_error.to_string());
                send(this.report, Preface::Closed(Some(write_error)));
                Poll::Ready(Err(copy))
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite> AsyncWrite for PrefaceWatch<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.as_mut().project();
        *this.flushed = false;
        let result = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = result {
            this.sent.feed(&buf[..written]);
        }
        self.write_failed(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.as_mut().project();
        *this.flushed = false;
        let result = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = result {
            let mut left = written;
            for buf in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(buf.len());
                this.sent.feed(&buf[..take]);
                left -= take;
            }
        }
        self.write_failed(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.as_mut().project();
        let result = this.io.poll_flush(cx);
        // h2 flushes the transport only once its own buffer is empty.
        if let Poll::Ready(Ok(())) = result {
            *this.flushed = true;
        }
        self.write_failed(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn first_frame(bytes: &'static [u8], chunk: usize) -> Preface {
        let (client, mut server) = tokio::io::duplex(64);
        let (mut watch, rx) = PrefaceWatch::new(client, Arc::default(), "peer".into());
        tokio::spawn(async move {
            for part in bytes.chunks(chunk) {
                server.write_all(part).await.unwrap();
                server.flush().await.unwrap();
            }
        });
        let mut sink = Vec::new();
        let _ = watch.read_to_end(&mut sink).await;
        rx.await.expect("a verdict is always sent")
    }

    #[tokio::test]
    async fn settings_frame_split_across_reads_is_recognised() {
        // An empty SETTINGS frame: length 0, type 4, flags 0, stream 0.
        let frame: &'static [u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
        assert!(matches!(first_frame(frame, 2).await, Preface::Settings));
    }

    #[tokio::test]
    async fn http1_response_is_not_a_preface() {
        let reply: &'static [u8] = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        assert!(matches!(first_frame(reply, 64).await, Preface::Unexpected));
    }

    /// A transport whose writes fail and whose read has the reason.
    struct Refusing;

    impl AsyncRead for Refusing {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "received fatal alert: CertificateRequired",
            )))
        }
    }

    impl AsyncWrite for Refusing {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_failed_write_reports_the_reason_waiting_to_be_read() {
        let (mut watch, rx) = PrefaceWatch::new(Refusing, Arc::default(), "peer".into());
        let write = watch.write_all(b"PRI * HTTP/2.0").await.unwrap_err();
        assert_eq!(write.kind(), io::ErrorKind::BrokenPipe);
        match rx.await.expect("a verdict is sent") {
            Preface::Closed(Some(cause)) => {
                assert!(cause.to_string().contains("CertificateRequired"), "{cause}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_last_stream_id_h2_gets_is_the_highest_sent_and_never_rises() {
        const MAX: u32 = 0x7fff_ffff;
        // The first GOAWAY, with everything written: lowered to what was sent.
        assert_eq!(last_stream_id_for_h2(MAX, None, Some(103)), 103);
        assert_eq!(last_stream_id_for_h2(7, None, Some(103)), 7);
        assert_eq!(last_stream_id_for_h2(MAX, None, Some(0)), 0);
        // HEADERS may be waiting in h2: the server's value, as it is.
        assert_eq!(last_stream_id_for_h2(MAX, None, None), MAX);
        // A later one never goes above what h2 already has.
        assert_eq!(last_stream_id_for_h2(103, Some((MAX, 103)), None), 103);
        assert_eq!(last_stream_id_for_h2(MAX, Some((MAX, 103)), None), 103);
        assert_eq!(last_stream_id_for_h2(99, Some((MAX, 103)), Some(103)), 99);
        // A server raising its own is h2's to reject.
        assert_eq!(last_stream_id_for_h2(9, Some((5, 5)), Some(9)), 9);
    }

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend([kind, 0x4]);
        out.extend(stream.to_be_bytes());
        out.extend(payload);
        out
    }

    /// What h2 reads of GOAWAY(2^31-1) after the client wrote HEADERS on
    /// stream 5, flushed or not.
    async fn last_stream_id_read(flush: bool) -> u32 {
        let (client, mut server) = tokio::io::duplex(1024);
        let (mut watch, _rx) = PrefaceWatch::new(client, Arc::default(), "peer".into());
        let mut written = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        written.extend(frame(0x1, 5, &[0x82]));
        watch.write_all(&written).await.unwrap();
        if flush {
            watch.flush().await.unwrap();
        }
        let mut goaway = 0x7fff_ffff_u32.to_be_bytes().to_vec();
        goaway.extend([0; 4]);
        let mut bytes = frame(0x4, 0, &[]);
        bytes.extend(frame(0x7, 0, &goaway));
        server.write_all(&bytes).await.unwrap();
        let mut read = vec![0; bytes.len()];
        watch.read_exact(&mut read).await.unwrap();
        let at = 2 * 9;
        u32::from_be_bytes(read[at..at + 4].try_into().unwrap())
    }

    #[tokio::test]
    async fn a_goaway_is_read_with_the_highest_stream_written_once_all_is_flushed() {
        assert_eq!(last_stream_id_read(true).await, 5);
        assert_eq!(last_stream_id_read(false).await, 0x7fff_ffff);
    }

    #[tokio::test]
    async fn a_later_goaway_never_reaches_h2_above_a_lowered_one_even_split() {
        let (client, mut server) = tokio::io::duplex(1024);
        let (mut watch, _rx) = PrefaceWatch::new(client, Arc::default(), "peer".into());
        let mut written = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        written.extend(frame(0x1, 5, &[0x82]));
        watch.write_all(&written).await.unwrap();
        watch.flush().await.unwrap();
        let mut goaway = 0x7fff_ffff_u32.to_be_bytes().to_vec();
        goaway.extend([0; 4]);
        goaway.extend(b"graceful shutdown");
        let mut first = frame(0x4, 0, &[]);
        first.extend(frame(0x7, 0, &goaway));
        // The same GOAWAY again (RFC 9113 allows an equal id), its debug
        // data split across two reads.
        let second = frame(0x7, 0, &goaway);
        let id_at = 9;
        let mut read = vec![0; first.len()];
        server.write_all(&first).await.unwrap();
        watch.read_exact(&mut read).await.unwrap();
        assert_eq!(read[9 + id_at..9 + id_at + 4], 5u32.to_be_bytes());
        let (head, tail) = second.split_at(id_at + 8);
        let mut read = vec![0; head.len()];
        server.write_all(head).await.unwrap();
        watch.read_exact(&mut read).await.unwrap();
        assert_eq!(read[id_at..id_at + 4], 5u32.to_be_bytes());
        let mut rest = vec![0; tail.len()];
        server.write_all(tail).await.unwrap();
        watch.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, tail);
    }

    #[tokio::test]
    async fn eof_before_header_is_closed() {
        let short: &'static [u8] = &[0, 0, 0];
        assert!(matches!(
            first_frame(short, 64).await,
            Preface::Closed(None)
        ));
    }
}
