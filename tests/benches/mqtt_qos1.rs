//! MQTT QoS 1 ingest, one client against several servers in one run:
//! `wharf up` on its durable bus (`file://`), `wharf up` on `memory://`, and
//! Mosquitto (Debian's `mosquitto`), each started here and pinned to CPU 0
//! while this client runs on CPU 1.
//!
//! Two measurements per server:
//! - throughput: 50 devices publish QoS 1 as fast as a 32-message window per
//!   connection allows for 10 s; PUBACKs per second, and per second of the
//!   server's CPU time (user + system, from /proc);
//! - latency: 500 devices publish together 20,000 messages per second (40
//!   each, evenly spaced) for 10 s; PUBACK latency p50/p99/p99.9.
//!
//! The client is the same for every server: hand-made MQTT 3.1.1 packets
//! (rumqttc's encoders), one task per connection, send times kept per
//! packet id. Run: `cargo bench -p wharf-tests --bench mqtt_qos1`
//! (`-- --only durable,memory,mosquitto`, `--seconds N`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wharf_auth::TokenIssuer;
use wharf_tests::env::free_port;
use wharf_tests::mqtt::raw;

const THROUGHPUT_DEVICES: usize = 50;
const WINDOW: usize = 32;
const LATENCY_DEVICES: usize = 500;
const LATENCY_RATE: u64 = 20_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let only = option("--only").unwrap_or_else(|| "durable,memory,mosquitto".into());
    let seconds: u64 = option("--seconds").map_or(10, |s| s.parse().expect("--seconds N"));
    pin_self_to(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| server | QoS 1 msg/s | server CPU | msg/s per core | p50 at 20k/s | p99 | p99.9 | 20k/s reached |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for server in only.split(',') {
        let running = Server::start(server);
        runtime.block_on(async {
            running.wait_ready().await;
            let throughput = throughput(&running, Duration::from_secs(seconds)).await;
            let latency = latency(&running, Duration::from_secs(seconds)).await;
            println!(
                "| {server} | {:.0} | {:.2} s in {:.1} s | **{:.0}** | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} msg/s |",
                throughput.rate,
                throughput.cpu.as_secs_f64(),
                throughput.wall.as_secs_f64(),
                throughput.per_core,
                latency.p50_ms,
                latency.p99_ms,
                latency.p999_ms,
                latency.achieved_rate,
            );
        });
        drop(running);
    }
}

/// Pins this process to `cpu` (`taskset`, from util-linux).
fn pin_self_to(cpu: u32) {
    let _ = Command::new("taskset")
        .args([
            "-a",
            "-cp",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status();
}

struct Server {
    child: Child,
    mqtt: SocketAddr,
    /// Where `/readyz` answers (Wharf only).
    ops: Option<SocketAddr>,
    /// Signs device tokens (Wharf only; Mosquitto allows anonymous clients).
    issuer: Option<TokenIssuer>,
    _dir: TempDir,
}

impl Server {
    fn start(kind: &str) -> Server {
        let dir = TempDir::new(kind);
        let mqtt: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut command = Command::new("taskset");
        command.args(["-c", "0"]);
        let (ops, issuer) = match kind {
            "mosquitto" => {
                let config = dir.0.join("mosquitto.conf");
                std::fs::write(
                    &config,
                    format!(
                        "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                         max_inflight_messages 0\nmax_queued_messages 100000\nlog_dest none\n",
                        mqtt.port()
                    ),
                )
                .unwrap();
                command.args(["mosquitto", "-c"]).arg(&config);
                (None, None)
            }
            "durable" | "memory" => {
                let secret = wharf_auth::generate_secret();
                let ops: SocketAddr = ([127, 0, 0, 1], free_port()).into();
                let bus = if kind == "memory" {
                    "memory://".to_owned()
                } else {
                    format!("file://{}", dir.0.join("bus").display())
                };
                command
                    .arg(wharf_tests::process::binary("wharf"))
                    .args(["up", "--data-dir"])
                    .arg(&dir.0)
                    .env("WHARF_BUS__URL", bus)
                    .env("WHARF_AUTH__SECRET", &secret)
                    .env("WHARF_SOCKET__MQTT__LISTEN", mqtt.to_string())
                    .env("WHARF_SOCKET__WEBSOCKET__LISTEN", "127.0.0.1:0")
                    .env("WHARF_SOCKET__TCP__LISTEN", "127.0.0.1:0")
                    .env("WHARF_SOCKET__UDP__LISTEN", "127.0.0.1:0")
                    .env("WHARF_SOCKET__RATE_LIMIT__PER_SECOND", "1000000")
                    .env("WHARF_SOCKET__RATE_LIMIT__BURST", "1000000")
                    .env("WHARF_UP__OPS_LISTEN", ops.to_string())
                    .env("WHARF_COMMANDER__API__LISTEN", "127.0.0.1:0")
                    .env("RUST_LOG", "warn");
                (Some(ops), Some(TokenIssuer::new(&secret)))
            }
            other => panic!("unknown server {other} (durable, memory, mosquitto)"),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {kind}: {e}"));
        Server {
            child,
            mqtt,
            ops,
            issuer,
            _dir: dir,
        }
    }

    async fn wait_ready(&self) {
        for _ in 0..600 {
            let ready = match self.ops {
                Some(ops) => wharf_tests::http::get(ops, "/readyz")
                    .await
                    .is_some_and(|(status, _)| status == 200),
                None => TcpStream::connect(self.mqtt).await.is_ok(),
            };
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server did not get ready");
    }

    fn cpu(&self) -> Duration {
        // `taskset` execs the server: the child is the server itself.
        wharf_runtime::process::cpu_time(Some(self.child.id()))
    }

    /// The password of `device` (its token; Mosquitto takes anyone).
    fn login(&self, device: &str) -> String {
        match &self.issuer {
            Some(issuer) => issuer
                .issue(device, "bench", Duration::from_secs(3600))
                .unwrap(),
            None => String::new(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "wharf-bench-{name}-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A connected device: CONNECT sent and CONNACK read.
async fn connect(server: &Server, device: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.mqtt).await.expect("connects");
    stream.set_nodelay(true).unwrap();
    let password = server.login(device);
    stream
        .write_all(&raw::connect_v4(device, &password, 600, None))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "{device} is accepted");
    stream
}

struct Throughput {
    rate: f64,
    cpu: Duration,
    wall: Duration,
    per_core: f64,
}

async fn throughput(server: &Server, duration: Duration) -> Throughput {
    let acked = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::new();
    for i in 0..THROUGHPUT_DEVICES {
        let device = format!("tp-{i}");
        streams.push((device.clone(), connect(server, &device).await));
    }
    let (cpu_before, started) = (server.cpu(), Instant::now());
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (device, stream) in streams {
        let acked = acked.clone();
        tasks.spawn(async move {
            let (mut reader, mut writer) = stream.into_split();
            let topic = format!("devices/{device}/telemetry");
            let payload = br#"{"temperature":21.5,"humidity":40}"#;
            let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
            let reading = {
                let (acked, window) = (acked.clone(), window.clone());
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 4096];
                    let mut pending = 0usize;
                    while let Ok(n) = reader.read(&mut buffer[pending..]).await {
                        if n == 0 {
                            break;
                        }
                        let total = pending + n;
                        let whole = total / 4 * 4;
                        let acks = whole / 4;
                        acked.fetch_add(acks as u64, Ordering::Relaxed);
                        window.add_permits(acks);
                        buffer.copy_within(whole..total, 0);
                        pending = total - whole;
                    }
                })
            };
            let mut pkid = 0u16;
            while Instant::now() < deadline {
                let permit = window.acquire().await.unwrap();
                permit.forget();
                pkid = pkid % 60_000 + 1;
                let packet = raw::publish_v4_qos1(&topic, pkid, payload);
                if writer.write_all(&packet).await.is_err() {
                    break;
                }
            }
            // Let the last acknowledgements arrive, then stop reading.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), window.acquire_many(WINDOW as u32))
                    .await;
            reading.abort();
        });
    }
    while tasks.join_next().await.is_some() {}
    let wall = started.elapsed();
    let cpu = server.cpu().saturating_sub(cpu_before);
    let count = acked.load(Ordering::Relaxed) as f64;
    Throughput {
        rate: count / wall.as_secs_f64(),
        cpu,
        wall,
        per_core: count / cpu.as_secs_f64().max(1e-9),
    }
}

struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    achieved_rate: f64,
}

async fn latency(server: &Server, duration: Duration) -> Latency {
    let per_device = LATENCY_RATE / LATENCY_DEVICES as u64;
    let interval = Duration::from_secs_f64(1.0 / per_device as f64);
    let mut streams = Vec::new();
    for i in 0..LATENCY_DEVICES {
        let device = format!("lat-{i}");
        streams.push((device.clone(), connect(server, &device).await));
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (device, stream)) in streams.into_iter().enumerate() {
        tasks.spawn(async move {
            let (mut reader, mut writer) = stream.into_split();
            let sent: Arc<std::sync::Mutex<HashMap<u16, Instant>>> = Arc::default();
            let deadline = Instant::now() + duration;
            // Acknowledgements may arrive up to 2 s after the last send.
            let reading_ends = tokio::time::Instant::from_std(deadline + Duration::from_secs(2));
            let reading = {
                let sent = sent.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut puback = [0u8; 4];
                    while let Ok(Ok(_)) =
                        tokio::time::timeout_at(reading_ends, reader.read_exact(&mut puback)).await
                    {
                        let pkid = u16::from_be_bytes([puback[2], puback[3]]);
                        if let Some(at) = sent.lock().unwrap().remove(&pkid) {
                            latencies.push(at.elapsed());
                        }
                    }
                    latencies
                })
            };
            let topic = format!("devices/{device}/telemetry");
            let payload = br#"{"temperature":21.5,"humidity":40}"#;
            // Spread the devices' sends over the interval.
            let offset = interval.mul_f64(i as f64 / LATENCY_DEVICES as f64);
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut pkid = 0u16;
            while Instant::now() < deadline {
                ticker.tick().await;
                pkid = pkid % 60_000 + 1;
                sent.lock().unwrap().insert(pkid, Instant::now());
                if writer
                    .write_all(&raw::publish_v4_qos1(&topic, pkid, payload))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let latencies = reading.await.unwrap_or_default();
            drop(writer);
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Ok(latencies) = result {
            all.extend(latencies);
        }
    }
    let wall = started.elapsed().saturating_sub(Duration::from_secs(2));
    all.sort();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1_000.0)
    };
    Latency {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        achieved_rate: all.len() as f64 / wall.as_secs_f64(),
    }
}
