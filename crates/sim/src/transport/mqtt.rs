//! MQTT 3.1.1 and 5 devices, written with rumqttc's packet codecs over a
//! connection of our own (so the source address can be chosen and every
//! PUBACK timed).

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{ConnectError, Incoming, Link, connect_tcp};
use crate::stats::ErrorKind;

/// Largest packet read from the server.
const MAX_PACKET: usize = 1 << 20;

/// An MQTT connection of one device.
pub struct MqttLink {
    stream: TcpStream,
    buf: BytesMut,
    v5: bool,
    topic: String,
    qos1: bool,
    next_pkid: u16,
}

/// How an MQTT device logs in.
pub struct MqttLogin<'a> {
    pub client_id: &'a str,
    /// Username and password (device id, token); `None` for a broker
    /// without authentication.
    pub credentials: Option<(&'a str, &'a str)>,
    pub telemetry_topic: String,
    pub command_filter: String,
}

impl MqttLink {
    /// Connects, logs in, and subscribes to the device's commands.
    pub async fn connect(
        target: SocketAddr,
        source: Option<IpAddr>,
        v5: bool,
        qos1: bool,
        login: MqttLogin<'_>,
    ) -> Result<Self, ConnectError> {
        let stream = connect_tcp(target, source)
            .await
            .map_err(|error| ConnectError::io(&error))?;
        let mut link = MqttLink {
            stream,
            buf: BytesMut::with_capacity(256),
            v5,
            topic: login.telemetry_topic,
            qos1,
            next_pkid: 1,
        };
        let mut out = BytesMut::new();
        if v5 {
            let connect = v5::Connect {
                keep_alive: 0,
                client_id: login.client_id.to_owned(),
                clean_start: true,
                properties: None,
            };
            let credentials = login
                .credentials
                .map(|(user, password)| v5::Login::new(user, password));
            connect
                .write(&None, &credentials, &mut out)
                .map_err(protocol)?;
        } else {
            let mut connect = rumqttc::Connect::new(login.client_id);
            connect.keep_alive = 0;
            if let Some((user, password)) = login.credentials {
                connect.set_login(user, password);
            }
            connect.write(&mut out).map_err(protocol)?;
        }
        link.write(&out)
            .await
            .map_err(|error| ConnectError::io(&error))?;
        loop {
            match link
                .read_packet()
                .await
                .map_err(|error| ConnectError::io(&error))?
            {
                Read::ConnAck(0) => break,
                Read::ConnAck(code) => {
                    return Err(ConnectError::new(
                        ErrorKind::AuthRefused,
                        format!("CONNACK refused the login (code {code:#04x})"),
                    ));
                }
                Read::Closed => {
                    return Err(ConnectError::new(
                        ErrorKind::Closed,
                        "closed before CONNACK",
                    ));
                }
                _ => {}
            }
        }
        out.clear();
        if v5 {
            let mut subscribe = v5::Subscribe::new(
                v5::Filter::new(
                    login.command_filter,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                ),
                None,
            );
            subscribe.pkid = u16::MAX;
            subscribe.write(&mut out).map_err(protocol)?;
        } else {
            let mut subscribe =
                rumqttc::Subscribe::new(login.command_filter, rumqttc::QoS::AtLeastOnce);
            subscribe.pkid = u16::MAX;
            subscribe.write(&mut out).map_err(protocol)?;
        }
        link.write(&out)
            .await
            .map_err(|error| ConnectError::io(&error))?;
        Ok(link)
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads until one whole packet is buffered; cancel-safe.
    async fn read_packet(&mut self) -> io::Result<Read> {
        loop {
            if let Some(read) = self.decode()? {
                return Ok(read);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(Read::Closed);
            }
        }
    }

    fn decode(&mut self) -> io::Result<Option<Read>> {
        use rumqttc::mqttbytes::Error as E4;
        use rumqttc::v5::mqttbytes::Error as E5;
        if self.v5 {
            match v5::Packet::read(&mut self.buf, Some(MAX_PACKET as u32)) {
                Ok(packet) => Ok(Some(match packet {
                    v5::Packet::ConnAck(ack) => Read::ConnAck(ack.code as u8),
                    v5::Packet::PubAck(ack) => Read::PubAck(ack.pkid),
                    v5::Packet::Publish(publish) => Read::Publish(publish.pkid, publish.qos as u8),
                    v5::Packet::Disconnect(_) => Read::Closed,
                    _ => Read::Other,
                })),
                Err(E5::InsufficientBytes(_)) => Ok(None),
                Err(error) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{error:?}"),
                )),
            }
        } else {
            match rumqttc::Packet::read(&mut self.buf, MAX_PACKET) {
                Ok(packet) => Ok(Some(match packet {
                    rumqttc::Packet::ConnAck(ack) => Read::ConnAck(ack.code as u8),
                    rumqttc::Packet::PubAck(ack) => Read::PubAck(ack.pkid),
                    rumqttc::Packet::Publish(publish) => {
                        Read::Publish(publish.pkid, publish.qos as u8)
                    }
                    rumqttc::Packet::Disconnect => Read::Closed,
                    _ => Read::Other,
                })),
                Err(E4::InsufficientBytes(_)) => Ok(None),
                Err(error) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{error:?}"),
                )),
            }
        }
    }
}

/// A packet as the device cares about it.
enum Read {
    ConnAck(u8),
    PubAck(u16),
    /// Packet id and QoS of a command.
    Publish(u16, u8),
    Closed,
    Other,
}

fn protocol(error: impl std::fmt::Debug) -> ConnectError {
    ConnectError::new(ErrorKind::Io, format!("cannot encode a packet: {error:?}"))
}

impl Link for MqttLink {
    async fn send(&mut self, payload: &[u8]) -> io::Result<Option<u16>> {
        let pkid = if self.qos1 {
            let pkid = self.next_pkid;
            // 1..=u16::MAX - 1 (u16::MAX is the SUBSCRIBE's).
            self.next_pkid = if pkid >= u16::MAX - 1 { 1 } else { pkid + 1 };
            pkid
        } else {
            0
        };
        let mut out = BytesMut::with_capacity(payload.len() + self.topic.len() + 8);
        let encoded = if self.v5 {
            let qos = if self.qos1 {
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce
            } else {
                rumqttc::v5::mqttbytes::QoS::AtMostOnce
            };
            let mut publish = v5::Publish::new(self.topic.as_str(), qos, payload.to_vec(), None);
            publish.pkid = pkid;
            publish
                .write(&mut out)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        } else {
            let qos = if self.qos1 {
                rumqttc::QoS::AtLeastOnce
            } else {
                rumqttc::QoS::AtMostOnce
            };
            let mut publish = rumqttc::Publish::new(self.topic.as_str(), qos, payload);
            publish.pkid = pkid;
            publish
                .write(&mut out)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        };
        encoded.map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        self.write(&out).await?;
        Ok(self.qos1.then_some(pkid))
    }

    async fn next(&mut self) -> io::Result<Incoming> {
        Ok(match self.read_packet().await? {
            Read::PubAck(pkid) => Incoming::Ack(pkid),
            Read::Publish(pkid, qos) => {
                if qos > 0 {
                    let mut out = BytesMut::new();
                    let written = if self.v5 {
                        v5::PubAck::new(pkid, None)
                            .write(&mut out)
                            .map(|_| ())
                            .map_err(|e| format!("{e:?}"))
                    } else {
                        rumqttc::PubAck::new(pkid)
                            .write(&mut out)
                            .map(|_| ())
                            .map_err(|e| format!("{e:?}"))
                    };
                    written.map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                    self.write(&out).await?;
                }
                Incoming::Command
            }
            Read::Closed => Incoming::Closed,
            Read::ConnAck(_) | Read::Other => Incoming::Other,
        })
    }

    async fn close(&mut self) {
        let mut out = BytesMut::new();
        let written = if self.v5 {
            v5::Disconnect::new(v5::DisconnectReasonCode::NormalDisconnection)
                .write(&mut out)
                .is_ok()
        } else {
            rumqttc::Disconnect.write(&mut out).is_ok()
        };
        if written {
            let _ = self.write(&out).await;
        }
        let _ = self.stream.shutdown().await;
    }
}
