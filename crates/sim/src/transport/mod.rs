//! One connection per simulated device: [`Link`], implemented per transport.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

pub mod mqtt;
pub mod tcp;
pub mod udp;
pub mod ws;

use crate::stats::ErrorKind;

/// What the server sent a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The acknowledgement of the frame sent with this id (MQTT PUBACK).
    Ack(u16),
    /// A command (already acknowledged when the protocol wants it).
    Command,
    /// The server ended the session.
    Closed,
    /// Anything else (SUBACK, PINGRESP, …).
    Other,
}

/// A connected device.
pub trait Link: Send {
    /// Sends one frame; `Some(id)` when the server will acknowledge it as
    /// [`Incoming::Ack`] with that id.
    fn send(&mut self, payload: &[u8]) -> impl Future<Output = io::Result<Option<u16>>> + Send;

    /// The next thing from the server. Cancel-safe: nothing read is lost
    /// when the future is dropped.
    fn next(&mut self) -> impl Future<Output = io::Result<Incoming>> + Send;

    /// Ends the session politely.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// Why a device could not connect.
#[derive(Debug)]
pub struct ConnectError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl ConnectError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        ConnectError {
            kind,
            detail: detail.into(),
        }
    }

    pub fn io(error: &io::Error) -> Self {
        let kind = match error.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
            _ => ErrorKind::Io,
        };
        ConnectError::new(kind, error.to_string())
    }
}

/// Connects to `target`, from `source` when given (spreading many
/// connections over loopback addresses).
pub async fn connect_tcp(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Runs a handshake step under the connect timeout.
pub async fn within<T>(
    timeout: Duration,
    step: impl Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    tokio::time::timeout(timeout, step)
        .await
        .unwrap_or_else(|_| {
            Err(ConnectError::new(
                ErrorKind::ConnectTimeout,
                format!("no answer within {timeout:?}"),
            ))
        })
}
