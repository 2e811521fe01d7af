//! A lingering close for client connections.
//!
//! When the gateway answers before reading a whole request body (a 413 for a body over the
//! cap), the rest of the body is still arriving as the connection closes, and closing a socket
//! with unread data makes the kernel send a reset, which can destroy the answer before the
//! client reads it: the client sees a broken connection instead of the documented error. So a
//! connection dropped while its client may still be sending first sends its end of the stream,
//! then reads and discards what the client still sends until the client closes, for a bounded
//! time and amount. hyper drops the connection on every path (after a clean shutdown or an
//! error), so the drop is where this happens.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Longest a closed connection keeps reading what its client still sends.
pub const LINGER_FOR: Duration = Duration::from_secs(2);
/// Longest it waits for the client's next bytes before giving up on it.
pub const LINGER_QUIET: Duration = Duration::from_millis(500);
/// Most bytes a closed connection reads and discards.
pub const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// A client connection that lingers when dropped while its client may still be sending.
#[derive(Debug)]
pub struct LingeringClose {
    /// Taken only when dropped.
    stream: Option<TcpStream>,
}

impl LingeringClose {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream: Some(stream),
        }
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(
            self.stream
                .as_mut()
                .expect("the stream is taken only when dropped"),
        )
    }
}

impl Drop for LingeringClose {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let mut probe = [0u8; 1024];
        let read = match stream.try_read(&mut probe) {
            // The client closed its end, or the socket is broken: nothing to wait for.
            Ok(0) => return,
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return,
            Ok(n) => n,
            Err(_) => 0,
        };
        // Outside a runtime (its shutdown) there is nothing left to drain with.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream, read));
        }
    }
}

/// Sends our end of the stream, then discards what comes until the client closes, goes quiet,
/// or a bound is reached; `read` bytes were discarded already.
async fn linger(mut stream: TcpStream, read: usize) {
    let _ = tokio::time::timeout(LINGER_FOR, async {
        if stream.shutdown().await.is_err() {
            return;
        }
        let mut left = LINGER_BYTES.saturating_sub(read);
        let mut scratch = vec![0u8; 64 * 1024];
        while left > 0 {
            match tokio::time::timeout(LINGER_QUIET, stream.read(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => return,
            }
        }
    })
    .await;
}

impl AsyncRead for LingeringClose {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for LingeringClose {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}
