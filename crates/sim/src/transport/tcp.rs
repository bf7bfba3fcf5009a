//! TCP devices: a token frame, a status frame, then frames both ways, with
//! the Socket's framing (u32 big-endian length, or lines).

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{ConnectError, Incoming, Link, connect_tcp};
use crate::stats::ErrorKind;

/// How frames are delimited (`[socket.tcp] framing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length,
    Lines,
}

pub struct TcpLink {
    stream: TcpStream,
    buf: BytesMut,
    framing: Framing,
}

impl TcpLink {
    pub async fn connect(
        target: SocketAddr,
        source: Option<IpAddr>,
        framing: Framing,
        token: &str,
    ) -> Result<Self, ConnectError> {
        let stream = connect_tcp(target, source)
            .await
            .map_err(|error| ConnectError::io(&error))?;
        let mut link = TcpLink {
            stream,
            buf: BytesMut::with_capacity(256),
            framing,
        };
        link.write_frame(token.as_bytes())
            .await
            .map_err(|error| ConnectError::io(&error))?;
        match link
            .read_frame()
            .await
            .map_err(|error| ConnectError::io(&error))?
        {
            Some(status) if status == [0] || status == b"0" => Ok(link),
            Some(status) => Err(ConnectError::new(
                ErrorKind::AuthRefused,
                format!("status {}", String::from_utf8_lossy(&status)),
            )),
            None => Err(ConnectError::new(
                ErrorKind::Closed,
                "closed before its status",
            )),
        }
    }

    async fn write_frame(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 4);
        match self.framing {
            Framing::Length => {
                out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                out.extend_from_slice(payload);
            }
            Framing::Lines => {
                out.extend_from_slice(payload);
                out.push(b'\n');
            }
        }
        self.stream.write_all(&out).await
    }

    /// The next frame, `None` at the end of the stream; cancel-safe.
    async fn read_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.framing {
                Framing::Length if self.buf.len() >= 4 => {
                    let len =
                        u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
                    if self.buf.len() >= 4 + len {
                        self.buf.advance(4);
                        return Ok(Some(self.buf.split_to(len).to_vec()));
                    }
                }
                Framing::Lines => {
                    if let Some(at) = self.buf.iter().position(|b| *b == b'\n') {
                        let mut line = self.buf.split_to(at + 1).to_vec();
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        return Ok(Some(line));
                    }
                }
                Framing::Length => {}
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

impl Link for TcpLink {
    async fn send(&mut self, payload: &[u8]) -> io::Result<Option<u16>> {
        self.write_frame(payload).await?;
        Ok(None)
    }

    async fn next(&mut self) -> io::Result<Incoming> {
        Ok(match self.read_frame().await? {
            None => Incoming::Closed,
            // A one-byte frame is a status, written right before the Socket
            // closes the connection; commands are never that short.
            Some(frame) if frame.len() == 1 => Incoming::Other,
            Some(_) => Incoming::Command,
        })
    }

    async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
