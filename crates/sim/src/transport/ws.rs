//! WebSocket devices: `/v1/ws` with `Authorization: Bearer <token>`, text
//! frames both ways.

use std::io;
use std::net::{IpAddr, SocketAddr};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{ConnectError, Incoming, Link, connect_tcp};
use crate::stats::ErrorKind;

pub struct WsLink {
    ws: WebSocketStream<TcpStream>,
}

impl WsLink {
    pub async fn connect(
        target: SocketAddr,
        source: Option<IpAddr>,
        token: &str,
    ) -> Result<Self, ConnectError> {
        let stream = connect_tcp(target, source)
            .await
            .map_err(|error| ConnectError::io(&error))?;
        let mut request = format!("ws://{target}/v1/ws")
            .into_client_request()
            .map_err(|error| ConnectError::new(ErrorKind::Io, error.to_string()))?;
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| ConnectError::new(ErrorKind::Io, "the token is not a valid header"))?;
        request.headers_mut().insert("authorization", bearer);
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((ws, _)) => Ok(WsLink { ws }),
            Err(tungstenite::Error::Http(response)) if response.status() == 401 => Err(
                ConnectError::new(ErrorKind::AuthRefused, "HTTP 401 at the upgrade"),
            ),
            Err(error) => Err(ConnectError::new(ErrorKind::Io, error.to_string())),
        }
    }
}

fn io_error(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(error) => error,
        other => io::Error::other(other),
    }
}

impl Link for WsLink {
    async fn send(&mut self, payload: &[u8]) -> io::Result<Option<u16>> {
        let message = match std::str::from_utf8(payload) {
            Ok(text) => Message::text(text),
            Err(_) => Message::binary(payload.to_vec()),
        };
        self.ws.send(message).await.map_err(io_error)?;
        Ok(None)
    }

    async fn next(&mut self) -> io::Result<Incoming> {
        Ok(match self.ws.next().await {
            None | Some(Ok(Message::Close(_))) => Incoming::Closed,
            Some(Ok(Message::Text(_) | Message::Binary(_))) => Incoming::Command,
            Some(Ok(_)) => Incoming::Other,
            Some(Err(error)) => return Err(io_error(error)),
        })
    }

    async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}
