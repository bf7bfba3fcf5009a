//! MQTT devices played by rumqttc, 3.1.1 and 5, over TCP or WebSocket. The
//! client's event loop runs in a task; what it sees arrives on a channel.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

/// What a device's event loop reported, reduced to what tests check.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A PUBLISH from the server: topic and payload.
    Publish(String, Vec<u8>),
    /// An MQTT 5 PUBLISH that asks for an answer: topic, payload, its
    /// Response Topic and Correlation Data.
    Request {
        topic: String,
        payload: Vec<u8>,
        response_topic: String,
        correlation: Vec<u8>,
    },
    /// A PUBACK from the server: packet id and reason code (0 for 3.1.1).
    PubAck(u16, u8),
    /// A SUBACK: one code per filter.
    SubAck(Vec<u8>),
    /// A DISCONNECT from the server (v5): its reason code.
    Disconnect(u8),
    /// The connection ended with this error.
    Closed(String),
}

/// The protocol version and transport of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    V4,
    V5,
    /// 3.1.1 over WebSocket at `/mqtt`.
    V4OverWebsocket,
}

/// An MQTT device.
pub struct MqttDevice {
    client: Client,
    seen: mpsc::UnboundedReceiver<Seen>,
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl MqttDevice {
    /// Connects as `device` with `token`; the refusal as text otherwise.
    pub async fn connect(
        flavor: Flavor,
        addr: SocketAddr,
        device: &str,
        token: &str,
    ) -> Result<Self, String> {
        let (tx, seen) = mpsc::unbounded_channel();
        let client = match flavor {
            Flavor::V4 | Flavor::V4OverWebsocket => {
                let host = match flavor {
                    Flavor::V4OverWebsocket => format!("ws://{addr}/mqtt"),
                    _ => addr.ip().to_string(),
                };
                let mut options =
                    rumqttc::MqttOptions::new(format!("{device}-client"), host, addr.port());
                options.set_credentials(device, token);
                options.set_keep_alive(Duration::from_secs(30));
                if flavor == Flavor::V4OverWebsocket {
                    options.set_transport(rumqttc::Transport::Ws);
                }
                let (client, mut events) = rumqttc::AsyncClient::new(options, 64);
                loop {
                    match events.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => break,
                        Ok(_) => {}
                        Err(error) => return Err(error.to_string()),
                    }
                }
                tokio::spawn(async move {
                    loop {
                        let seen = match events.poll().await {
                            Ok(rumqttc::Event::Incoming(packet)) => match packet {
                                rumqttc::Packet::Publish(p) => {
                                    Seen::Publish(p.topic, p.payload.to_vec())
                                }
                                rumqttc::Packet::PubAck(a) => Seen::PubAck(a.pkid, 0),
                                rumqttc::Packet::SubAck(s) => Seen::SubAck(
                                    s.return_codes
                                        .iter()
                                        .map(|code| match code {
                                            rumqttc::SubscribeReasonCode::Success(qos) => {
                                                *qos as u8
                                            }
                                            rumqttc::SubscribeReasonCode::Failure => 0x80,
                                        })
                                        .collect(),
                                ),
                                _ => continue,
                            },
                            Ok(_) => continue,
                            Err(error) => {
                                let _ = tx.send(Seen::Closed(error.to_string()));
                                return;
                            }
                        };
                        if tx.send(seen).is_err() {
                            return;
                        }
                    }
                });
                Client::V4(client)
            }
            Flavor::V5 => {
                use rumqttc::v5::mqttbytes::v5::Packet;
                let mut options = rumqttc::v5::MqttOptions::new(
                    format!("{device}-client"),
                    addr.ip().to_string(),
                    addr.port(),
                );
                options.set_credentials(device, token);
                options.set_keep_alive(Duration::from_secs(30));
                let (client, mut events) = rumqttc::v5::AsyncClient::new(options, 64);
                loop {
                    match events.poll().await {
                        Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(_))) => break,
                        Ok(_) => {}
                        Err(error) => return Err(format!("{error:?}")),
                    }
                }
                tokio::spawn(async move {
                    loop {
                        let seen = match events.poll().await {
                            Ok(rumqttc::v5::Event::Incoming(packet)) => match packet {
                                Packet::Publish(p) => {
                                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                                    match p.properties.and_then(|props| {
                                        Some((props.response_topic?, props.correlation_data))
                                    }) {
                                        Some((response_topic, correlation)) => Seen::Request {
                                            topic,
                                            payload: p.payload.to_vec(),
                                            response_topic,
                                            correlation: correlation
                                                .map(|c| c.to_vec())
                                                .unwrap_or_default(),
                                        },
                                        None => Seen::Publish(topic, p.payload.to_vec()),
                                    }
                                }
                                Packet::PubAck(a) => Seen::PubAck(a.pkid, v5_puback_code(a.reason)),
                                Packet::SubAck(s) => Seen::SubAck(
                                    s.return_codes.iter().map(v5_suback_code).collect(),
                                ),
                                Packet::Disconnect(d) => Seen::Disconnect(d.reason_code as u8),
                                _ => continue,
                            },
                            Ok(_) => continue,
                            Err(error) => {
                                // A DISCONNECT from the server ends rumqttc's loop with an error.
                                if let rumqttc::v5::ConnectionError::MqttState(
                                    rumqttc::v5::StateError::ServerDisconnect {
                                        reason_code, ..
                                    },
                                ) = &error
                                {
                                    let _ = tx.send(Seen::Disconnect(*reason_code as u8));
                                }
                                let _ = tx.send(Seen::Closed(format!("{error:?}")));
                                return;
                            }
                        };
                        if tx.send(seen).is_err() {
                            return;
                        }
                    }
                });
                Client::V5(client)
            }
        };
        Ok(MqttDevice { client, seen })
    }

    /// Subscribes to `filter` at QoS 1.
    pub async fn subscribe(&self, filter: &str) {
        match &self.client {
            Client::V4(c) => c
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .unwrap(),
            Client::V5(c) => c
                .subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .await
                .unwrap(),
        }
    }

    /// Publishes `payload` on `topic` at `qos` (0, 1 or 2).
    pub async fn publish(&self, topic: &str, payload: &[u8], qos: u8) {
        match &self.client {
            Client::V4(c) => {
                let qos = rumqttc::qos(qos).unwrap();
                c.publish(topic, qos, false, payload.to_vec())
                    .await
                    .unwrap()
            }
            Client::V5(c) => {
                let qos = rumqttc::v5::mqttbytes::qos(qos).unwrap();
                c.publish(topic, qos, false, payload.to_vec())
                    .await
                    .unwrap()
            }
        }
    }

    /// MQTT 5: publishes an answer on `topic` at QoS 1 with `correlation` as
    /// its Correlation Data, as request/response clients do.
    pub async fn answer(&self, topic: &str, correlation: &[u8], payload: &[u8]) {
        let Client::V5(client) = &self.client else {
            panic!("Correlation Data is MQTT 5");
        };
        let properties = rumqttc::v5::mqttbytes::v5::PublishProperties {
            correlation_data: Some(bytes::Bytes::copy_from_slice(correlation)),
            ..Default::default()
        };
        client
            .publish_with_properties(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload.to_vec(),
                properties,
            )
            .await
            .unwrap();
    }

    /// The next thing seen that `pick` accepts, within `timeout`.
    pub async fn next<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(Seen) -> Option<T>,
    ) -> T {
        tokio::time::timeout(timeout, async {
            let mut skipped = Vec::new();
            loop {
                let Some(seen) = self.seen.recv().await else {
                    panic!("the connection ended without the expected packet; saw {skipped:?}");
                };
                if let Some(found) = pick(seen.clone()) {
                    return found;
                }
                skipped.push(seen);
            }
        })
        .await
        .expect("the expected packet arrived in time")
    }

    /// The next PUBLISH from the server.
    pub async fn next_publish(&mut self, timeout: Duration) -> (String, Vec<u8>) {
        self.next(timeout, |seen| match seen {
            Seen::Publish(topic, payload) => Some((topic, payload)),
            Seen::Closed(error) => panic!("closed while waiting for a publish: {error}"),
            _ => None,
        })
        .await
    }
}

/// `mosquitto_sub` (MQTT 5) connected as `device`: it prints the first
/// message on `filter` (after its topic, with `with_topic`) and exits,
/// giving up after 30 s.
pub fn mosquitto_sub_once(
    port: u16,
    device: &str,
    token: &str,
    filter: &str,
    with_topic: bool,
) -> tokio::process::Child {
    tokio::process::Command::new("mosquitto_sub")
        .args(["-V", "5", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-u", device, "-P", token, "-i", device])
        .args(["-t", filter, "-q", "1", "-C", "1", "-W", "30"])
        .args(with_topic.then_some("-v"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed (mosquitto-clients; .ci/run installs it)")
}

fn v5_suback_code(code: &rumqttc::v5::mqttbytes::v5::SubscribeReasonCode) -> u8 {
    use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as Code;
    match code {
        Code::Success(qos) => *qos as u8,
        Code::NotAuthorized => 0x87,
        Code::TopicFilterInvalid => 0x8f,
        Code::QuotaExceeded => 0x97,
        _ => 0x80,
    }
}

fn v5_puback_code(reason: rumqttc::v5::mqttbytes::v5::PubAckReason) -> u8 {
    use rumqttc::v5::mqttbytes::v5::PubAckReason as Reason;
    match reason {
        Reason::Success => 0,
        Reason::NotAuthorized => 0x87,
        Reason::TopicNameInvalid => 0x90,
        _ => 0x80,
    }
}

/// MQTT packets written byte for byte, for what well-behaved clients never
/// send (oversized or QoS 2 publishes, a will outside the device's topics)
/// and for tests that map packet ids one-to-one to messages. Encoded with
/// rumqttc's packet codecs; read back by hand.
pub mod raw {
    use bytes::BytesMut;
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::mqttbytes::v5;
    use tokio::io::AsyncReadExt as _;

    fn bytes(write: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut buffer = BytesMut::new();
        write(&mut buffer);
        buffer.to_vec()
    }

    fn qos5(qos: u8) -> QoS5 {
        match qos {
            0 => QoS5::AtMostOnce,
            1 => QoS5::AtLeastOnce,
            _ => QoS5::ExactlyOnce,
        }
    }

    /// A TCP connection to the MQTT listener at `addr` that has sent an
    /// MQTT 5 CONNECT as `device` with `token` (the CONNACK is left unread).
    pub async fn open_v5(
        addr: std::net::SocketAddr,
        device: &str,
        token: &str,
    ) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt as _;
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("the MQTT listener accepts");
        stream
            .write_all(&connect_v5(device, token))
            .await
            .expect("the CONNECT is written");
        stream
    }

    /// An MQTT 5 CONNECT with username and password, clean start.
    pub fn connect_v5(username: &str, password: &str) -> Vec<u8> {
        let connect = v5::Connect {
            keep_alive: 60,
            client_id: format!("{username}-raw"),
            clean_start: true,
            properties: None,
        };
        let login = Some(v5::Login::new(username, password));
        bytes(|b| {
            connect.write(&None, &login, b).expect("a valid CONNECT");
        })
    }

    /// An MQTT 3.1.1 CONNECT with username and password, keep-alive
    /// `keep_alive` seconds (0: none) and an optional QoS 0 last will.
    pub fn connect_v4(
        username: &str,
        password: &str,
        keep_alive: u16,
        will: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        let mut connect = rumqttc::Connect::new(username);
        connect.keep_alive = keep_alive;
        connect.set_login(username, password);
        connect.last_will = will.map(|(topic, message)| {
            rumqttc::LastWill::new(topic, message, rumqttc::QoS::AtMostOnce, false)
        });
        bytes(|b| {
            connect.write(b).expect("a valid CONNECT");
        })
    }

    /// An MQTT 5 PUBLISH without properties; `pkid` matters only for QoS > 0.
    pub fn publish_v5(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
        let mut publish = v5::Publish::new(topic, qos5(qos), payload.to_vec(), None);
        publish.pkid = pkid;
        bytes(|b| {
            publish.write(b).expect("a valid PUBLISH");
        })
    }

    /// An MQTT 3.1.1 PUBLISH at QoS 1 with packet id `pkid`.
    pub fn publish_v4_qos1(topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
        let mut publish = rumqttc::Publish::new(topic, rumqttc::QoS::AtLeastOnce, payload);
        publish.pkid = pkid;
        bytes(|b| {
            publish.write(b).expect("a valid PUBLISH");
        })
    }

    /// An MQTT 5 SUBSCRIBE to `filter` at QoS 1, packet id 1.
    pub fn subscribe_v5(filter: &str) -> Vec<u8> {
        let mut subscribe = v5::Subscribe::new(v5::Filter::new(filter, QoS5::AtLeastOnce), None);
        subscribe.pkid = 1;
        bytes(|b| {
            subscribe.write(b).expect("a valid SUBSCRIBE");
        })
    }

    /// Reads packets until the server closes the connection (waiting at
    /// most `patience`); the reason code of the MQTT 5 DISCONNECT it sent.
    pub async fn disconnect_reason(
        stream: &mut tokio::net::TcpStream,
        patience: std::time::Duration,
    ) -> u8 {
        let mut bytes = Vec::new();
        tokio::time::timeout(patience, stream.read_to_end(&mut bytes))
            .await
            .expect("the server closed the connection")
            .ok();
        let mut at = 0;
        while at + 1 < bytes.len() {
            let (first, mut length, mut shift, mut i) = (bytes[at], 0usize, 0, at + 1);
            loop {
                length |= usize::from(bytes[i] & 0x7f) << shift;
                shift += 7;
                i += 1;
                if bytes[i - 1] & 0x80 == 0 {
                    break;
                }
            }
            if first == 0xe0 {
                return bytes[i];
            }
            at = i + length;
        }
        panic!("no DISCONNECT in {bytes:x?}");
    }
}
