//! Socket benchmarks, recorded in docs/BENCHMARKS.md:
//!
//! 1. idle connections held (half WebSocket, half MQTT; or only one of
//!    WebSocket, MQTT or TCP with `BENCH_ONLY=ws|mqtt|tcp`), and the userspace
//!    memory each costs the Socket;
//! 2. ingest: frames per second per core of Socket CPU into the bus.
//!
//! `cargo bench -p wharf-socket --bench connections -- [--connections N] [--shards K]`
//! (`BENCH_BUS=kafka://HOST:PORT` publishes into a broker instead of the
//! in-process bus.)
//!
//! A process here may hold at most `ulimit -n` descriptors (20,000 in the
//! build sandbox, not raisable), so the connections are spread over K Socket
//! processes (like K pods), each with its own client process; source
//! addresses 127.0.0.2… spread the client ports.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;
use wharf_auth::TokenIssuer;
use wharf_bus::{Bus, BusHandle, MemoryBus};
use wharf_events::Topics;
use wharf_runtime::process::{cpu_time, resident_bytes};
use wharf_runtime::{OpsEndpoint, Reporting};
use wharf_socket::{Socket, SocketConfig, SocketParts};

const SECRET: &str = "benchmark-secret-0123456789abcdef";

/// The system allocator, counting what is allocated and freed: the Socket
/// process reports its live heap, so the table can tell memory its
/// connections hold from what the allocator keeps around them.
#[global_allocator]
static ALLOCATOR: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// The live heap, as `HEAP bytes blocks`.
fn heap_line() -> String {
    let stats = ALLOCATOR.stats();
    // stats_alloc already counts a reallocation's growth in
    // bytes_allocated (and its shrinking in bytes_deallocated);
    // bytes_reallocated is the same change again, not to be added.
    format!(
        "HEAP {} {}",
        stats.bytes_allocated as i64 - stats.bytes_deallocated as i64,
        stats.allocations as i64 - stats.deallocations as i64
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|arg| arg == name)
            .and_then(|at| args.get(at + 1))
            .cloned()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if args.iter().any(|a| a == "serve") {
            1
        } else {
            2
        })
        .enable_all()
        .build()
        .expect("a runtime");
    match args.get(1).map(String::as_str) {
        Some("serve") => runtime.block_on(serve()),
        Some("clients") => runtime.block_on(clients(
            value("--ws").unwrap().parse().unwrap(),
            value("--mqtt").unwrap().parse().unwrap(),
            value("--tcp").unwrap().parse().unwrap(),
            value("--count").unwrap().parse().unwrap(),
            value("--source").unwrap().parse().unwrap(),
        )),
        Some("ingest") => runtime.block_on(ingest_clients(
            value("--ws").unwrap().parse().unwrap(),
            value("--count").unwrap().parse().unwrap(),
            value("--seconds").unwrap().parse().unwrap(),
        )),
        _ => {
            let connections: usize = value("--connections").map_or(100_000, |v| v.parse().unwrap());
            let shards: usize = value("--shards").map_or(6, |v| v.parse().unwrap());
            orchestrate(connections, shards);
        }
    }
}

/// A Socket on the in-process bus, on free ports; prints its addresses,
/// then serves until its standard input closes.
async fn serve() {
    // A tiny retention: in production the records leave for Kafka.
    let memory = MemoryBus::new(8, 16);
    let mut config = SocketConfig::default();
    let local: SocketAddr = ([127, 0, 0, 1], 0).into();
    config.websocket.listen = local;
    config.mqtt.listen = local;
    config.tcp.listen = local;
    config.udp.enabled = false;
    config.max_connections = 1_000_000;
    config.idle_timeout = Duration::from_secs(3600);
    config.handshake_timeout = Duration::from_secs(120);
    config.rate_limit.per_second = 1_000_000;
    config.rate_limit.burst = 1_000_000;
    let bus = match std::env::var("BENCH_BUS") {
        // e.g. kafka://127.0.0.1:9092: ingest measured into a real broker.
        Ok(url) => BusHandle::connect(&wharf_bus::BusConfig {
            url,
            topic_prefix: format!("bench{}", std::process::id()),
            ..wharf_bus::BusConfig::default()
        })
        .expect("the bus"),
        Err(_) => BusHandle {
            connection: Bus::Memory(memory),
            topics: Topics::new("bench").unwrap(),
            partitions: 8,
        },
    };
    let mut reporting = Reporting::default();
    let parts = SocketParts {
        verifier: wharf_auth::TokenVerifier::new(SECRET),
        bus,
    };
    let socket = Socket::bind(config, parts, &mut reporting)
        .await
        .expect("the socket binds");
    let ops = OpsEndpoint::bind(([127, 0, 0, 1], 0).into()).await.unwrap();
    let addresses = socket.addresses();
    println!(
        "ADDRESSES {} {} {} {}",
        addresses.websocket.unwrap(),
        addresses.mqtt.unwrap(),
        ops.local_addr().unwrap(),
        addresses.tcp.unwrap()
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(ops.serve_while(reporting, socket.run(stop.clone())));
    // Until the parent closes our standard input; each line asks for the
    // live heap.
    let _ = tokio::task::spawn_blocking(|| {
        for _ in std::io::stdin().lines() {
            println!("{}", heap_line());
        }
    })
    .await;
    // BENCH_EXIT_HOLDING=1: exit while the connections are held, so that a
    // heap profiler (heaptrack) reports what they hold as still allocated.
    if std::env::var_os("BENCH_EXIT_HOLDING").is_some() {
        std::process::exit(0);
    }
    stop.cancel();
    let _ = running.await;
}

/// Opens `count` idle connections, half WebSocket and half MQTT, from
/// source addresses `source`, `source`+1, …; prints READY, holds them until
/// standard input closes.
async fn clients(ws: SocketAddr, mqtt: SocketAddr, tcp: SocketAddr, count: usize, source: IpAddr) {
    let issuer = TokenIssuer::new(SECRET);
    let IpAddr::V4(source) = source else {
        panic!("an IPv4 source")
    };
    let mut held = Vec::with_capacity(count);
    let wave: usize = std::env::var("BENCH_WAVE")
        .ok()
        .and_then(|wave| wave.parse().ok())
        .unwrap_or(500);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let device = format!("dev-{source}-{i}");
        let token = issuer
            .issue(&device, "bench", Duration::from_secs(3600))
            .unwrap();
        // Each source address has ~28k ports per destination.
        let octets = source.octets();
        let from = std::net::Ipv4Addr::new(
            octets[0],
            octets[1],
            octets[2],
            octets[3] + (i / 10_000) as u8,
        );
        // Half WebSocket and half MQTT, or one transport (BENCH_ONLY).
        let transport = match std::env::var("BENCH_ONLY").as_deref() {
            Ok("ws") => "ws",
            Ok("mqtt") => "mqtt",
            Ok("tcp") => "tcp",
            _ if i % 2 == 0 => "ws",
            _ => "mqtt",
        };
        let to = match transport {
            "ws" => ws,
            "tcp" => tcp,
            _ => mqtt,
        };
        tasks.spawn(async move {
            let socket = TcpSocket::new_v4().unwrap();
            // Ports in TIME_WAIT from an earlier run may be reused.
            socket.set_reuseaddr(true).unwrap();
            socket.bind((from, 0).into()).unwrap();
            let mut stream = socket.connect(to).await.unwrap();
            if transport == "tcp" {
                // The token as a length-prefixed frame; status 0 is ok.
                let mut frame = (token.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(token.as_bytes());
                stream.write_all(&frame).await.unwrap();
                let mut status = [0u8; 5];
                stream.read_exact(&mut status).await.unwrap();
                assert_eq!(status, [0, 0, 0, 1, 0], "token refused");
            } else if transport == "ws" {
                let request = format!(
                    "GET /v1/ws HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                     Authorization: Bearer {token}\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut response = [0u8; 512];
                let n = stream.read(&mut response).await.unwrap();
                assert!(response[..n].starts_with(b"HTTP/1.1 101"), "handshake refused");
            } else {
                stream.write_all(&mqtt_connect(&device, &token)).await.unwrap();
                let mut connack = [0u8; 4];
                stream.read_exact(&mut connack).await.unwrap();
                assert_eq!(connack[3], 0, "CONNECT refused");
            }
            stream
        });
        // Connect in waves: the accept queue is finite (BENCH_WAVE: how many
        // connections are opening at once; 500 by default).
        if tasks.len() >= wave {
            held.push(tasks.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(stream) = tasks.join_next().await {
        held.push(stream.unwrap());
    }
    println!("READY {}", held.len());
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await;
}

fn mqtt_connect(username: &str, password: &str) -> Vec<u8> {
    use rumqttd::protocol::{Connect, Login, Packet, Protocol as _, v4::V4};
    let connect = Connect {
        keep_alive: 0, // keep-alive off: idle on purpose
        client_id: username.to_owned(),
        clean_session: true,
    };
    let login = Some(Login {
        username: username.to_owned(),
        password: password.to_owned(),
    });
    let mut buffer = bytes::BytesMut::new();
    V4.write(
        Packet::Connect(connect, None, None, None, login),
        &mut buffer,
    )
    .expect("a valid CONNECT");
    buffer.to_vec()
}

/// `count` WebSocket devices sending small JSON frames as fast as they can
/// for `seconds`; prints the frames sent.
async fn ingest_clients(ws: SocketAddr, count: usize, seconds: u64) {
    let issuer = TokenIssuer::new(SECRET);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let token = issuer
            .issue(&format!("ingest-{i}"), "bench", Duration::from_secs(3600))
            .unwrap();
        tasks.spawn(async move {
            use futures_util::SinkExt as _;
            let url = format!("ws://{ws}/v1/ws?token={token}");
            let (mut device, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let mut sent = 0u64;
            while Instant::now() < deadline {
                for _ in 0..100 {
                    let frame = format!("{{\"temperature\":{},\"n\":{sent}}}", 20 + sent % 10);
                    if device
                        .feed(tokio_tungstenite::tungstenite::Message::text(frame))
                        .await
                        .is_err()
                    {
                        return sent;
                    }
                    sent += 1;
                }
                let _ = device.flush().await;
            }
            sent
        });
    }
    let mut total = 0;
    while let Some(sent) = tasks.join_next().await {
        total += sent.unwrap();
    }
    println!("SENT {total}");
}

/// Spreads `connections` over `shards` Socket processes and measures.
fn orchestrate(connections: usize, shards: usize) {
    let exe = std::env::current_exe().unwrap();
    let per_shard = connections.div_ceil(shards);
    println!("{connections} connections over {shards} Socket processes ({per_shard} each)");
    let mut servers: Vec<(Child, SocketAddr, SocketAddr, SocketAddr, SocketAddr)> = (0..shards)
        .map(|_| {
            let mut child = Command::new(&exe)
                .arg("serve")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap();
            let mut words = line.split_whitespace().skip(1);
            let ws = words.next().unwrap().parse().unwrap();
            let mqtt = words.next().unwrap().parse().unwrap();
            let ops = words.next().unwrap().parse().unwrap();
            let tcp = words.next().unwrap().parse().unwrap();
            (child, ws, mqtt, ops, tcp)
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let baseline: Vec<u64> = servers
        .iter()
        .map(|(child, ..)| resident_bytes(Some(child.id())))
        .collect();
    let heap_baseline: Vec<(i64, i64)> = servers
        .iter_mut()
        .map(|(child, ..)| live_heap(child))
        .collect();
    let started = Instant::now();
    let mut clients: Vec<Child> = servers
        .iter()
        .enumerate()
        .map(|(shard, (_, ws, mqtt, _, tcp))| {
            Command::new(&exe)
                .args([
                    "clients",
                    "--ws",
                    &ws.to_string(),
                    "--mqtt",
                    &mqtt.to_string(),
                    "--tcp",
                    &tcp.to_string(),
                ])
                .args(["--count", &per_shard.to_string()])
                // A fresh range of source addresses per run and shard.
                .args([
                    "--source",
                    &format!("127.{}.{}.2", 10 + std::process::id() % 200, shard + 1),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut held = 0;
    for client in &mut clients {
        let mut line = String::new();
        BufReader::new(client.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        held += line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let grown: Vec<u64> = servers
        .iter()
        .zip(&baseline)
        .map(|((child, ..), before)| resident_bytes(Some(child.id())).saturating_sub(*before))
        .collect();
    let total_grown: u64 = grown.iter().sum();
    let (heap_bytes, heap_blocks) = servers
        .iter_mut()
        .zip(&heap_baseline)
        .map(|((child, ..), (bytes, blocks))| {
            let (now_bytes, now_blocks) = live_heap(child);
            (now_bytes - bytes, now_blocks - blocks)
        })
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    println!(
        "\n| connections held | Socket processes | connect time | RSS growth | per connection |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {held} ({}) | {shards} | {:.1} s | {:.1} MiB | {:.0} bytes |",
        match std::env::var("BENCH_ONLY").as_deref() {
            Ok("ws") => "WebSocket",
            Ok("mqtt") => "MQTT",
            Ok("tcp") => "TCP",
            _ => "half WebSocket, half MQTT",
        },
        elapsed.as_secs_f64(),
        total_grown as f64 / (1024.0 * 1024.0),
        total_grown as f64 / held as f64
    );
    println!(
        "\nlive heap per connection: {:.0} bytes in {:.1} blocks (the rest of the RSS growth is the allocator's and the runtime's)",
        heap_bytes as f64 / held as f64,
        heap_blocks as f64 / held as f64
    );
    for mut client in clients {
        drop(client.stdin.take());
        let _ = client.wait();
    }

    // Ingest: one Socket, 64 devices writing as fast as they can.
    let (server, ws, _, ops, _) = &mut servers[0];
    let frames_before = frames_received(*ops);
    let cpu_before = cpu_time(Some(server.id()));
    Command::new(&exe)
        .args([
            "ingest",
            "--ws",
            &ws.to_string(),
            "--count",
            "64",
            "--seconds",
            "10",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let cpu = cpu_time(Some(server.id())) - cpu_before;
    let sent = frames_received(*ops) - frames_before;
    let bus = std::env::var("BENCH_BUS").unwrap_or_else(|_| "in-process bus".into());
    println!("\n| ingest | frames | Socket CPU | frames per second per core |");
    println!("|---|---|---|---|");
    println!(
        "| 64 WebSocket devices, 10 s, {bus} | {sent} | {:.2} s | {:.0} |",
        cpu.as_secs_f64(),
        sent as f64 / cpu.as_secs_f64()
    );
    for (mut child, ..) in servers {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    let _ = std::io::stdout().flush();
}

/// Asks a Socket process for its live heap: (bytes, blocks).
fn live_heap(child: &mut Child) -> (i64, i64) {
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"HEAP\n").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut words = line.split_whitespace().skip(1);
    let mut number = || words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    (number(), number())
}

/// Frames the Socket at `ops` received so far, from its metrics.
fn frames_received(ops: SocketAddr) -> u64 {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(ops).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|line| line.starts_with("wharf_socket_frames_received_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
