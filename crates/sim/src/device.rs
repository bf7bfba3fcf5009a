//! One simulated device's life: connect at its place in the ramp, send on
//! its schedule until the end, read acknowledgements and commands, wait
//! for outstanding PUBACKs, close.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::{Instant, MissedTickBehavior};
use wharf_auth::TokenIssuer;

use crate::stats::{ErrorKind, Stats};
use crate::template::Xorshift;
use crate::transport::mqtt::{MqttLink, MqttLogin};
use crate::transport::tcp::TcpLink;
use crate::transport::udp::UdpLink;
use crate::transport::ws::WsLink;
use crate::transport::{ConnectError, Incoming, Link, within};
use crate::{SimPlan, TransportKind};

/// Above this many devices, connections come from many loopback addresses
/// (127.1.0.0 and up): one source address has ~28,000 ports per target.
const SPREAD_ABOVE: usize = 20_000;

/// Who one device is.
pub struct DeviceSpec {
    pub index: usize,
    pub id: String,
    pub transport: TransportKind,
    /// `None` for an anonymous broker.
    pub token: Option<String>,
    pub source: Option<IpAddr>,
    pub target: SocketAddr,
}

impl DeviceSpec {
    pub fn new(plan: &SimPlan, index: usize, issuer: Option<&TokenIssuer>) -> anyhow::Result<Self> {
        let id = plan.device_id(index);
        let transport = plan.transport.of(index);
        let target = plan.targets.of(transport);
        let token = issuer
            .map(|issuer| {
                // Valid for the run and an hour more.
                issuer.issue(&id, &plan.model, plan.duration + Duration::from_secs(3600))
            })
            .transpose()
            .with_context(|| format!("cannot mint a token for {id}"))?;
        let source = (plan.devices > SPREAD_ABOVE && target.ip().is_loopback() && target.is_ipv4())
            .then(|| {
                let [_, b, c, d] = (index as u32).to_be_bytes();
                IpAddr::V4(Ipv4Addr::new(127, 1 + b, c, d))
            });
        Ok(DeviceSpec {
            index,
            id,
            transport,
            token,
            source,
            target,
        })
    }
}

/// Runs the device from `started` (the run's start) to its end.
pub async fn run(spec: DeviceSpec, plan: &SimPlan, stats: &Stats, started: Instant) {
    let offset = plan.ramp.mul_f64(spec.index as f64 / plan.devices as f64);
    tokio::time::sleep_until(started + offset).await;
    let end = started + plan.duration;
    if Instant::now() >= end {
        return;
    }
    let token = spec.token.as_deref().unwrap_or("");
    let (target, source) = (spec.target, spec.source);
    let connected = match spec.transport {
        kind @ (TransportKind::Mqtt | TransportKind::Mqtt5) => {
            let login = MqttLogin {
                client_id: &spec.id,
                credentials: spec.token.as_deref().map(|token| (spec.id.as_str(), token)),
                telemetry_topic: format!("devices/{}/telemetry", spec.id),
                command_filter: format!("devices/{}/commands/#", spec.id),
            };
            let v5 = kind == TransportKind::Mqtt5;
            let connect = MqttLink::connect(target, source, v5, plan.qos == 1, login);
            connect_then_drive(connect, &spec, plan, stats, end).await
        }
        TransportKind::Ws => {
            let connect = WsLink::connect(target, source, token);
            connect_then_drive(connect, &spec, plan, stats, end).await
        }
        TransportKind::Tcp => {
            let connect = TcpLink::connect(target, source, plan.targets.tcp_framing, token);
            connect_then_drive(connect, &spec, plan, stats, end).await
        }
        TransportKind::Udp => {
            let connect = UdpLink::connect(target, source, token);
            connect_then_drive(connect, &spec, plan, stats, end).await
        }
    };
    if let Err(ConnectError { kind, detail }) = connected {
        stats.error(spec.transport, kind, || {
            format!(
                "{} {} at {target}: {detail}",
                spec.transport.as_str(),
                spec.id
            )
        });
    }
}

async fn connect_then_drive<L: Link>(
    connect: impl Future<Output = Result<L, ConnectError>>,
    spec: &DeviceSpec,
    plan: &SimPlan,
    stats: &Stats,
    end: Instant,
) -> Result<(), ConnectError> {
    let link = within(plan.connect_timeout, connect).await?;
    drive(link, spec, plan, stats, end).await;
    Ok(())
}

/// A connected device until the end of the run.
async fn drive<L: Link>(
    mut link: L,
    spec: &DeviceSpec,
    plan: &SimPlan,
    stats: &Stats,
    end: Instant,
) {
    let counters = stats.of(spec.transport);
    counters
        .connected
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let count = |counter: &std::sync::atomic::AtomicU64| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let period = plan.period();
    let mut random = Xorshift::seeded(
        0x9e37_79b9_7f4a_7c15 ^ (spec.index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d),
    );
    // Devices spread their frames over the period instead of sending together.
    let mut ticks =
        tokio::time::interval_at(Instant::now() + period.mul_f64(random.next_f64()), period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut in_flight: HashMap<u16, Instant> = HashMap::new();
    // The latest frame not yet answered by a command.
    let mut last_frame: Option<Instant> = None;
    let mut seq = 0u64;
    let mut sending = true;
    let drained_by = end + plan.drain;
    loop {
        if !sending && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            _ = ticks.tick(), if sending => {
                if Instant::now() >= end {
                    sending = false;
                    continue;
                }
                seq += 1;
                let payload = plan.payload.render(&spec.id, seq, &mut || random.next_f64());
                let sent_at = Instant::now();
                match link.send(&payload).await {
                    Ok(ack) => {
                        count(&counters.sent);
                        if let Some(id) = ack {
                            count(&counters.ack_expected);
                            in_flight.insert(id, sent_at);
                        }
                        last_frame = Some(sent_at);
                    }
                    Err(error) => {
                        stats.error(spec.transport, ErrorKind::Io, || format!("{} sending: {error}", spec.id));
                        break;
                    }
                }
            }
            () = tokio::time::sleep_until(drained_by), if !sending => break,
            incoming = link.next() => match incoming {
                Ok(Incoming::Ack(id)) => {
                    if let Some(sent_at) = in_flight.remove(&id) {
                        count(&counters.acked);
                        stats.ack_latency(sent_at.elapsed());
                    }
                }
                Ok(Incoming::Command) => {
                    count(&counters.commands);
                    if let Some(sent_at) = last_frame.take() {
                        stats.command_latency(sent_at.elapsed());
                    }
                }
                Ok(Incoming::Other) => {}
                Ok(Incoming::Closed) => {
                    stats.error(spec.transport, ErrorKind::Closed, || {
                        format!("{}: the server closed the connection", spec.id)
                    });
                    break;
                }
                Err(error) => {
                    stats.error(spec.transport, ErrorKind::Io, || format!("{}: {error}", spec.id));
                    break;
                }
            },
        }
    }
    let unacked = in_flight.len() as u64;
    if unacked > 0 {
        stats.error(spec.transport, ErrorKind::Unacked, || {
            format!("{}: {unacked} frames never acknowledged", spec.id)
        });
        counters.errors_of(ErrorKind::Unacked, unacked - 1);
    }
    link.close().await;
}
