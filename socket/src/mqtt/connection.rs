//! The byte side of an MQTT connection: its read and write buffers and the
//! codec its CONNECT picked (3.1.1 or 5), without any session state.

use bytes::BytesMut;
use rumqttd::protocol::{ConnAck, ConnAckProperties, ConnectReturnCode, Packet};

use super::codec::{self, Codec, CodecError, Received};
use crate::limits::MAX_PRE_AUTH_BYTES;
use crate::stream::{ByteStream, poll_decoded};

/// The byte-level side of a connection: buffers and the codec.
pub(crate) struct Connection {
    pub(crate) buf: BytesMut,
    max_packet: usize,
    codec: Option<Codec>,
}

impl Connection {
    pub(crate) fn is_v5(&self) -> bool {
        self.codec.as_ref().is_some_and(Codec::is_v5)
    }

    /// A connection's buffers before anything was read.
    pub(crate) fn new(max_packet: usize) -> Self {
        Connection {
            buf: BytesMut::new(),
            max_packet,
            codec: None,
        }
    }

    /// The CONNECT, once the buffered bytes hold it (picking the codec from
    /// it): at most [`MAX_PRE_AUTH_BYTES`], whatever `max_frame_bytes`
    /// allows once the device is authenticated.
    pub(crate) fn buffered_connect(&mut self) -> Result<Option<Packet>, CodecError> {
        if self.codec.is_none() {
            self.codec = Codec::detect(&self.buf)?;
        }
        let max = self.max_packet.min(MAX_PRE_AUTH_BYTES);
        let Some(codec) = self.codec.as_mut() else {
            return Ok(None);
        };
        match codec.read(&mut self.buf, max)? {
            None => Ok(None),
            Some(Received {
                packet: packet @ Packet::Connect(..),
                ..
            }) => Ok(Some(packet)),
            Some(_) => Err(CodecError::Malformed(
                "the first packet must be CONNECT".into(),
            )),
        }
    }

    /// Reads the CONNECT ([`Connection::buffered_connect`]).
    pub(crate) async fn read_connect<S: ByteStream>(
        &mut self,
        stream: &mut S,
    ) -> Result<Packet, CodecError> {
        loop {
            if let Some(connect) = self.buffered_connect()? {
                return Ok(connect);
            }
            match stream.read_into(&mut self.buf).await {
                Ok(0) | Err(_) => {
                    return Err(CodecError::Malformed("closed before CONNECT".into()));
                }
                Ok(_) => {}
            }
        }
    }

    pub(crate) fn read_buffered(&mut self) -> Result<Option<Received>, CodecError> {
        let codec = self.codec.as_mut().expect("the codec is chosen at CONNECT");
        codec.read(&mut self.buf, self.max_packet)
    }

    /// Waits until a whole packet is buffered ([`Connection::read_buffered`]
    /// then decodes it); `Ok(false)` when the stream ended. Cancel-safe.
    /// Only whether a packet came is returned: a decoded packet is large,
    /// and this wait is what every idle connection's task holds.
    pub(crate) fn wait_packet<'a, S: ByteStream>(
        &'a mut self,
        stream: &'a mut S,
    ) -> impl std::future::Future<Output = Result<bool, CodecError>> + Send + 'a {
        let max = self.max_packet;
        std::future::poll_fn(move |cx| {
            let whole = |buf: &mut BytesMut| Codec::has_packet(buf, max).map(|w| w.then_some(()));
            poll_decoded(stream, cx, &mut self.buf, whole).map_ok(|found| found.is_some())
        })
    }

    pub(crate) async fn send<S: ByteStream>(
        &mut self,
        stream: &mut S,
        packet: Packet,
    ) -> std::io::Result<()> {
        // A buffer per packet, not per connection: idle connections hold none.
        let mut out = BytesMut::new();
        let codec = self.codec.as_ref().expect("the codec is chosen at CONNECT");
        codec.write(packet, &mut out).map_err(|error| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{error:?}"))
        })?;
        stream.write_all(&out).await
    }

    pub(crate) async fn send_connack<S: ByteStream>(
        &mut self,
        stream: &mut S,
        code: ConnectReturnCode,
    ) -> std::io::Result<()> {
        let properties =
            (self.is_v5() && code == ConnectReturnCode::Success).then(|| ConnAckProperties {
                max_qos: Some(1),
                retain_available: Some(0),
                max_packet_size: Some(self.max_packet as u32),
                wildcard_subscription_available: Some(1),
                shared_subscription_available: Some(0),
                ..ConnAckProperties::default()
            });
        let connack = ConnAck {
            session_present: false,
            code,
        };
        // Boxed: a CONNACK is sent once; its state need not stay in the task.
        Box::pin(self.send(stream, Packet::ConnAck(connack, properties))).await
    }

    /// Tells a v5 client why it is disconnected; v4 has no way to say.
    pub(crate) async fn send_disconnect<S: ByteStream>(&mut self, stream: &mut S, reason: u8) {
        if self.is_v5() {
            let _ = stream.write_all(&codec::disconnect_v5(reason)).await;
        }
    }
}
