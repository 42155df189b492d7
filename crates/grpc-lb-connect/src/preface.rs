//! Detects the server's HTTP/2 preface on the bytes the client reads.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// HTTP/2 frame header length (RFC 9113 §4.1).
const FRAME_HEADER_LEN: usize = 9;
/// Frame type of SETTINGS (RFC 9113 §6.5).
const SETTINGS_FRAME_TYPE: u8 = 0x4;

/// What the first frame from the server turned out to be.
#[derive(Debug)]
pub(crate) enum Preface {
    /// A SETTINGS frame: the server speaks HTTP/2.
    Settings,
    /// Some other frame type: not an HTTP/2 server.
    Unexpected,
    /// EOF or an I/O error before a whole frame header arrived.
    Closed(Option<io::Error>),
}

pin_project! {
    /// Wraps the transport and watches the first nine bytes the server sends.
    ///
    /// hyper reads the server preface inside its connection task and does not tell
    /// anyone; watching the bytes is how the connector learns that the server has
    /// really answered. After the header is seen the wrapper only forwards.
    pub(crate) struct PrefaceWatch<IO> {
        #[pin]
        io: IO,
        header: [u8; FRAME_HEADER_LEN],
        seen: usize,
        report: Option<oneshot::Sender<Preface>>,
    }
}

impl<IO> PrefaceWatch<IO> {
    pub(crate) fn new(io: IO) -> (Self, oneshot::Receiver<Preface>) {
        let (tx, rx) = oneshot::channel();
        let watch = PrefaceWatch {
            io,
            header: [0; FRAME_HEADER_LEN],
            seen: 0,
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
        if this.report.is_none() {
            return result;
        }
        match &result {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if fresh.is_empty() {
                    send(this.report, Preface::Closed(None));
                    return result;
                }
                let take = fresh.len().min(FRAME_HEADER_LEN - *this.seen);
                this.header[*this.seen..*this.seen + take].copy_from_slice(&fresh[..take]);
                *this.seen += take;
                if *this.seen == FRAME_HEADER_LEN {
                    let preface = if this.header[3] == SETTINGS_FRAME_TYPE {
                        Preface::Settings
                    } else {
                        Preface::Unexpected
                    };
                    send(this.report, preface);
                }
            }
            Poll::Ready(Err(_)) => {
                // The connector gets the original error, whose source may be
                // typed (a TLS alert); hyper gets a copy of its message.
                if let Poll::Ready(Err(original)) = result {
                    let copy = io::Error::new(original.kind(), original.to_string());
                    send(this.report, Preface::Closed(Some(original)));
                    return Poll::Ready(Err(copy));
                }
            }
            Poll::Pending => {}
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
        let (mut watch, rx) = PrefaceWatch::new(client);
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
        let (mut watch, rx) = PrefaceWatch::new(Refusing);
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
