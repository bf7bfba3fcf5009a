//! A WebSocket device, played by tokio-tungstenite over a real socket.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A connected WebSocket device.
pub struct WsDevice {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsDevice {
    /// Connects to `url` with `Authorization: Bearer <token>`.
    pub async fn connect(url: &str, token: &str) -> Result<Self, Error> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is a header value"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsDevice { ws })
    }

    /// Connects to `url` as it is: the token, if any, is in its query.
    pub async fn connect_url(url: &str) -> Result<Self, Error> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(WsDevice { ws })
    }

    /// Connects with `token`, returning the HTTP status of a refusal.
    pub async fn refused_status(url: &str, token: &str) -> StatusCode {
        match Self::connect(url, token).await {
            Ok(_) => panic!("the connection was accepted"),
            Err(Error::Http(response)) => response.status(),
            Err(other) => panic!("expected an HTTP refusal, got {other}"),
        }
    }

    /// Sends one text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.try_send_text(text).await.expect("frame sent");
    }

    /// Sends `text` as a message in fragments of `piece` bytes (a text
    /// frame, then continuation frames), as a client may.
    pub async fn send_fragmented_text(&mut self, text: &str, piece: usize) {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let pieces: Vec<&[u8]> = text.as_bytes().chunks(piece).collect();
        for (i, bytes) in pieces.iter().enumerate() {
            let opcode = if i == 0 { Data::Text } else { Data::Continue };
            let last = i + 1 == pieces.len();
            let frame = Frame::message(bytes.to_vec(), OpCode::Data(opcode), last);
            self.ws
                .send(Message::Frame(frame))
                .await
                .expect("fragment sent");
        }
    }

    /// Sends a ping and waits for its pong's bytes.
    pub async fn ping(&mut self, bytes: &[u8], timeout: Duration) -> Vec<u8> {
        self.ws
            .send(Message::Ping(bytes.to_vec().into()))
            .await
            .expect("ping sent");
        tokio::time::timeout(timeout, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Pong(bytes))) => return bytes.to_vec(),
                    Some(Ok(_)) => continue,
                    other => panic!("no pong: {other:?}"),
                }
            }
        })
        .await
        .expect("a pong in time")
    }

    /// Sends one text frame; an error once the connection is gone.
    pub async fn try_send_text(&mut self, text: &str) -> Result<(), Error> {
        self.ws.send(Message::text(text.to_owned())).await
    }

    /// The next text frame, within `timeout`.
    pub async fn next_text(&mut self, timeout: Duration) -> String {
        loop {
            let message = tokio::time::timeout(timeout, self.ws.next())
                .await
                .expect("a frame arrived in time")
                .expect("the connection is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => return text.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends one binary frame; false when the connection refused it.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> bool {
        self.ws.send(Message::binary(bytes)).await.is_ok()
    }

    /// Waits for the server to close the connection; its close code and reason.
    pub async fn closed(&mut self, timeout: Duration) -> (u16, String) {
        tokio::time::timeout(timeout, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => {
                        return (u16::from(frame.code), frame.reason.to_string());
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("the connection ended without a close frame: {other:?}"),
                }
            }
        })
        .await
        .expect("the server closed the connection in time")
    }

    /// Closes with `code` and returns the code of the server's answering
    /// close frame (the close handshake).
    pub async fn close_with(mut self, code: u16, timeout: Duration) -> u16 {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let frame = CloseFrame {
            code: code.into(),
            reason: "bye".into(),
        };
        self.ws
            .send(Message::Close(Some(frame)))
            .await
            .expect("close sent");
        tokio::time::timeout(timeout, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                    Some(Ok(_)) => continue,
                    other => panic!("no close frame came back: {other:?}"),
                }
            }
        })
        .await
        .expect("the server answered the close in time")
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
