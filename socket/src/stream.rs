//! A byte stream a protocol can run over: a TCP connection, or the binary
//! messages of a WebSocket (MQTT over WebSocket).

use std::future::Future;
use std::io;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Bytes in, bytes out.
pub(crate) trait ByteStream: Send {
    /// Reads what is available into `buf`; `Ok(0)` at the end of the stream.
    /// A poll, not a future: an idle connection's task waits in it, and a
    /// poll keeps no state of its own there.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>>;

    /// [`poll_read_into`](Self::poll_read_into) as a future. Cancel-safe:
    /// nothing read is lost when it is dropped.
    fn read_into<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a
    where
        Self: Sized,
    {
        std::future::poll_fn(move |cx| self.poll_read_into(cx, buf))
    }

    /// Writes all of `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Closes gracefully, so what was written last (a DISCONNECT, a status
    /// frame) reaches the peer instead of being lost to a reset.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// Reads from `stream` into `buf` until `decode` finds something there;
/// `Ok(None)` when the stream ended or failed (the connection is lost
/// either way). Between reads an empty `buf` is freed, so an idle
/// connection holds no buffer. A poll, not a future: an idle connection's
/// task waits in it and it keeps no state of its own.
pub(crate) fn poll_decoded<S: ByteStream, T, E>(
    stream: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
) -> Poll<Result<Option<T>, E>> {
    loop {
        match decode(buf) {
            Ok(None) => {}
            decoded => return Poll::Ready(decoded),
        }
        if buf.is_empty() {
            *buf = BytesMut::new();
        }
        match ready!(stream.poll_read_into(cx, buf)) {
            Ok(0) | Err(_) => return Poll::Ready(Ok(None)),
            Ok(_) => {}
        }
    }
}

/// How much room a read reserves when the buffer has little left.
const READ_CHUNK: usize = 4096;

/// Reads what a readable socket holds into `buf`. With little room left in
/// `buf`, the bytes land on the stack first: readiness can be stale, and a
/// buffer reserved for a read that then would block stays with an idle
/// connection for as long as it is idle.
fn read_ready(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() >= READ_CHUNK / 4 {
        return stream.try_read_buf(buf);
    }
    let mut chunk = [0u8; READ_CHUNK];
    let read = stream.try_read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..read]);
    Ok(read)
}

/// How long a closing connection reads (and discards) what the peer still
/// sends: closing a TCP socket with unread input resets it.
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);

impl ByteStream for TcpStream {
    /// Waits until the socket is readable before it reserves room: an idle
    /// connection holds no read buffer (its owner frees an empty one).
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_read_ready(cx))?;
            // A read that would block clears the readiness; the next poll
            // registers for more.
            match read_ready(self, buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        AsyncWriteExt::write_all(self, bytes).await
    }

    async fn close(&mut self) {
        let _ = self.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(LINGER, async {
            while matches!(self.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// The binary messages of a WebSocket as one byte stream.
pub(crate) struct WsBytes {
    ws: WebSocketStream<TcpStream>,
}

impl WsBytes {
    pub(crate) fn new(ws: WebSocketStream<TcpStream>) -> Self {
        WsBytes { ws }
    }
}

impl ByteStream for WsBytes {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        loop {
            return Poll::Ready(match ready!(self.ws.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(bytes))) => {
                    buf.extend_from_slice(&bytes);
                    Ok(bytes.len())
                }
                Some(Ok(Message::Close(_))) | None => Ok(0),
                Some(Ok(Message::Text(_))) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "MQTT over WebSocket uses binary messages",
                )),
                Some(Ok(_)) => continue, // ping, pong: tungstenite answers
                Some(Err(error)) => Err(io::Error::other(error)),
            });
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .await
            .map_err(io::Error::other)
    }

    async fn close(&mut self) {
        let _ = tokio::time::timeout(LINGER, self.ws.close(None)).await;
    }
}
