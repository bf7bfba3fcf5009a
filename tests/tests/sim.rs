//! `wharf sim` as a team sizing a fleet runs it: a thousand devices over
//! every transport against a running `wharf up`, the same tool against a
//! stopped Wharf, and against Mosquitto for a side-by-side run.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use wharf_tests::env::free_port;
use wharf_tests::temp_dir;
use wharf_tests::up::{UpPorts, UpProcess};

/// Runs `wharf sim ARGS` to its end.
async fn sim(args: &[String], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(wharf_tests::process::binary("wharf"));
    command
        .arg("sim")
        .args(args)
        .env_remove("WHARF_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || command.output().expect("wharf sim runs")),
    )
    .await
    .expect("wharf sim ends by itself")
    .unwrap()
}

fn report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "the report is JSON ({error}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// `--mqtt`, `--ws`, `--tcp`, `--udp` for a Socket's listeners.
fn listener_flags(socket: &wharf_tests::socket::SocketPorts) -> Vec<String> {
    [
        ("--mqtt", socket.mqtt),
        ("--ws", socket.websocket),
        ("--tcp", socket.tcp),
        ("--udp", socket.udp),
    ]
    .into_iter()
    .flat_map(|(flag, address)| [flag.to_owned(), address.to_string()])
    .collect()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_devices_over_every_transport_against_wharf_up() {
    let data = temp_dir("wharf-sim-up");
    let secret = wharf_auth::generate_secret();
    let ports = UpPorts::free();
    let up = UpProcess::start(&data, ports, &secret, &[]);
    up.ready(Duration::from_secs(60)).await;
    let socket = ports.socket;
    let mut args = strings(&[
        "--devices",
        "1000",
        "--transport",
        "mix",
        "--duration",
        "10s",
        "--json",
    ]);
    args.extend(listener_flags(&socket));
    let output = sim(&args, &[("WHARF_AUTH__SECRET", &secret)]).await;
    let report = report(&output);
    assert!(
        output.status.success(),
        "wharf sim failed: {}\n{report:#}",
        String::from_utf8_lossy(&output.stderr)
    );
    let total = &report["total"];
    assert_eq!(total["connected"], 1000, "{report:#}");
    assert_eq!(total["errors"], serde_json::json!({}), "{report:#}");
    // Every QoS 1 frame the MQTT devices sent was acknowledged.
    let expected = total["ack_expected"].as_u64().unwrap();
    assert!(expected > 0, "{report:#}");
    assert_eq!(total["acked"].as_u64(), Some(expected), "{report:#}");
    assert_eq!(report["ack_latency_ms"]["count"].as_u64(), Some(expected));
    for transport in ["mqtt", "mqtt5", "ws", "tcp", "udp"] {
        let by = &report["by_transport"][transport];
        assert_eq!(by["connected"], 200, "{transport}: {report:#}");
        assert!(by["sent"].as_u64().unwrap() > 0, "{transport}: {report:#}");
        // The demo rule answers hot readings with a command, on every transport.
        assert!(
            by["commands"].as_u64().unwrap() > 0,
            "{transport}: {report:#}"
        );
    }
    assert!(report["command_latency_ms"]["count"].as_u64().unwrap() > 0);
    assert!(report["command_latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn against_a_stopped_wharf_it_exits_non_zero_and_says_why() {
    let closed = |_| format!("127.0.0.1:{}", free_port());
    let mut args = strings(&["--devices", "20", "--transport", "mix", "--duration", "2s"]);
    for flag in ["--mqtt", "--ws", "--tcp", "--udp"] {
        args.extend([flag.to_owned(), closed(flag)]);
    }
    let output = sim(
        &args,
        &[("WHARF_AUTH__SECRET", "a-secret-for-this-scenario-only")],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no device could connect") && stderr.contains("Connection refused"),
        "{stderr}"
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("error connect_refused: 20"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_load_runs_against_mosquitto() {
    let dir = temp_dir("wharf-sim-mosquitto");
    let port = free_port();
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"
        ),
    )
    .unwrap();
    // Debian installs it in /usr/sbin, which a non-root PATH may lack.
    let binary = ["/usr/sbin/mosquitto", "mosquitto"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or("mosquitto");
    let mosquitto = KilledOnDrop(
        Command::new(binary)
            .arg("-c")
            .arg(&config)
            .spawn()
            .expect("mosquitto (Debian's mosquitto package) starts"),
    );
    let target = format!("mosquitto://127.0.0.1:{port}");
    let output =
        wharf_tests::wait_until(Duration::from_secs(10), "mosquitto to listen", || async {
            let output = sim(
                &strings(&[
                    "--target",
                    &target,
                    "--devices",
                    "50",
                    "--duration",
                    "3s",
                    "--json",
                ]),
                &[],
            )
            .await;
            output.status.success().then_some(output)
        })
        .await;
    drop(mosquitto);
    let report = report(&output);
    assert_eq!(report["total"]["connected"], 50);
    let expected = report["total"]["ack_expected"].as_u64().unwrap();
    assert!(expected >= 100, "{report:#}");
    assert_eq!(report["total"]["acked"].as_u64(), Some(expected));
}

/// A child process killed (and reaped) when the test ends, panics included.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_registered_through_the_api_connect_with_their_tokens() {
    let data = temp_dir("wharf-sim-api");
    let ports = UpPorts::free();
    let up = UpProcess::start(&data, ports, &wharf_auth::generate_secret(), &[]);
    up.ready(Duration::from_secs(60)).await;
    let key = std::fs::read_to_string(data.join("api-key")).expect("wharf up keeps its API key");
    let socket = ports.socket;
    let mut args = strings(&[
        "--devices",
        "20",
        "--transport",
        "mix",
        "--duration",
        "3s",
        "--json",
    ]);
    args.extend([
        "--api".to_owned(),
        format!("http://{}", ports.api),
        "--api-key".to_owned(),
        key.trim().to_owned(),
    ]);
    args.extend(listener_flags(&socket));
    // Twice: the second run finds the devices registered and registers them
    // again. No secret is given: the tokens are the API's.
    for run in 0..2 {
        let output = sim(&args, &[]).await;
        let report = report(&output);
        assert!(output.status.success(), "run {run}: {report:#}");
        assert_eq!(report["total"]["connected"], 20, "run {run}: {report:#}");
        assert_eq!(
            report["total"]["errors"],
            serde_json::json!({}),
            "run {run}"
        );
    }
    let bad = sim(
        &[
            strings(&["--devices", "1", "--duration", "1s", "--api"]),
            vec![
                format!("http://{}", ports.api),
                "--api-key".into(),
                "wharf_nope".into(),
            ],
        ]
        .concat(),
        &[],
    )
    .await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
