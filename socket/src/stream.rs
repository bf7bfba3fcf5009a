//! A byte stream a protocol can run over: a TCP connection, or the binary
//! messages of a WebSocket (MQTT over WebSocket).

use std::future::Future;
use std::io;

use bytes::BytesMut;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Bytes in, bytes out.
pub(crate) trait ByteStream: Send {
    /// Reads what is available into `buf`; `Ok(0)` at the end of the stream.
    /// Cancel-safe: nothing read is lost when the future is dropped.
    fn read_into(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;

    /// Writes all of `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Closes gracefully, so what was written last (a DISCONNECT, a status
    /// frame) reaches the peer instead of being lost to a reset.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// How much room a read reserves when the buffer has little left.
const READ_CHUNK: usize = 4096;

/// How long a closing connection reads (and discards) what the peer still
/// sends: closing a TCP socket with unread input resets it.
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);

impl ByteStream for TcpStream {
    /// Waits until the socket is readable before it reserves room: an idle
    /// connection holds no read buffer (its owner frees an empty one).
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            self.readable().await?;
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            match self.try_read_buf(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
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
    async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    buf.extend_from_slice(&bytes);
                    return Ok(bytes.len());
                }
                Some(Ok(Message::Close(_))) | None => return Ok(0),
                Some(Ok(Message::Text(_))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket uses binary messages",
                    ));
                }
                Some(Ok(_)) => continue, // ping, pong: tungstenite answers
                Some(Err(error)) => return Err(io::Error::other(error)),
            }
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
