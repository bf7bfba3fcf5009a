//! UDP devices: `HELLO <token>`, an 8-byte session id, then datagrams of
//! the session id and the payload.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

use super::{ConnectError, Incoming, Link};
use crate::stats::ErrorKind;

/// The Socket's reply words: anything else it sends is a command.
const REPLY_WORDS: [&[u8]; 7] = [
    b"UNAUTHORIZED",
    b"UNKNOWN_SESSION",
    b"BUSY",
    b"TRY_LATER",
    b"GOING_AWAY",
    b"TAKEN_OVER",
    b"SLOW_DOWN",
];

pub struct UdpLink {
    socket: UdpSocket,
    session: [u8; 8],
    buf: Vec<u8>,
}

impl UdpLink {
    pub async fn connect(
        target: SocketAddr,
        source: Option<IpAddr>,
        token: &str,
    ) -> Result<Self, ConnectError> {
        let local = match (source, target) {
            (Some(source), _) => SocketAddr::new(source, 0),
            (None, SocketAddr::V4(_)) => SocketAddr::from(([0, 0, 0, 0], 0)),
            (None, SocketAddr::V6(_)) => SocketAddr::from(([0u16; 8], 0)),
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|error| ConnectError::io(&error))?;
        // Connected: an ICMP "port unreachable" comes back as a refused read.
        socket
            .connect(target)
            .await
            .map_err(|error| ConnectError::io(&error))?;
        let hello = [b"HELLO ".as_slice(), token.as_bytes()].concat();
        socket
            .send(&hello)
            .await
            .map_err(|error| ConnectError::io(&error))?;
        let mut buf = vec![0u8; 65_536];
        let len = socket
            .recv(&mut buf)
            .await
            .map_err(|error| ConnectError::io(&error))?;
        let answer = &buf[..len];
        if let Ok(session) = <[u8; 8]>::try_from(answer) {
            return Ok(UdpLink {
                socket,
                session,
                buf,
            });
        }
        let kind = if answer == b"UNAUTHORIZED" {
            ErrorKind::AuthRefused
        } else {
            ErrorKind::Io
        };
        Err(ConnectError::new(
            kind,
            String::from_utf8_lossy(answer).into_owned(),
        ))
    }
}

impl Link for UdpLink {
    async fn send(&mut self, payload: &[u8]) -> io::Result<Option<u16>> {
        let datagram = [self.session.as_slice(), payload].concat();
        self.socket.send(&datagram).await?;
        Ok(None)
    }

    async fn next(&mut self) -> io::Result<Incoming> {
        let len = self.socket.recv(&mut self.buf).await?;
        let datagram = &self.buf[..len];
        Ok(match datagram {
            b"UNKNOWN_SESSION" | b"GOING_AWAY" | b"TAKEN_OVER" => Incoming::Closed,
            word if REPLY_WORDS.contains(&word) => Incoming::Other,
            _ => Incoming::Command,
        })
    }

    async fn close(&mut self) {}
}
