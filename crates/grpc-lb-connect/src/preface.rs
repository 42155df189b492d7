//! Watches the HTTP/2 frames the server sends, on the bytes the client reads:
//! its preface, its stream limit and its GOAWAYs.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::error::GoAway;
use crate::frames::{FrameEvent, FrameParser};
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
    pub(crate) struct PrefaceWatch<IO> {
        #[pin]
        io: IO,
        parser: FrameParser,
        state: Arc<ConnectionState>,
        peer: Arc<str>,
        report: Option<oneshot::Sender<Preface>>,
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
        };
        (watch, rx)
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
                    FrameEvent::GoAway(frame) => {
                        let go_away =
                            GoAway::new(frame.last_stream_id, frame.error_code, frame.debug_data);
                        tracing::debug!(peer, %go_away, "GOAWAY received; connection draining");
                        state.go_away(go_away);
                    }
                });
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
        let result = self.as_mut().project().io.poll_write(cx, buf);
        self.write_failed(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = self.as_mut().project().io.poll_write_vectored(cx, bufs);
        self.write_failed(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = self.as_mut().project().io.poll_flush(cx);
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

    #[tokio::test]
    async fn eof_before_header_is_closed() {
        let short: &'static [u8] = &[0, 0, 0];
        assert!(matches!(
            first_frame(short, 64).await,
            Preface::Closed(None)
        ));
    }
}
