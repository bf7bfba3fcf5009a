//! `wharf tail` as an operator runs it: against a running `wharf up` (its
//! event stream on the operations port) and against Apache Kafka, with a
//! real WebSocket device publishing the frames it prints.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_auth::TokenIssuer;
use wharf_bus::{Publisher as _, Record};
use wharf_events::{Envelope, Topics};
use wharf_tests::process::{Service, binary};
use wharf_tests::socket::SocketPorts;
use wharf_tests::up::{UpPorts, UpProcess};
use wharf_tests::{WsDevice, http, kafka, temp_dir, unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `wharf tail ARGS` to its end (no `--follow`); a tail that has not
/// ended within 30 s fails the test.
async fn tail(args: &[&str]) -> Output {
    let mut command = Command::new(binary("wharf"));
    command
        .arg("tail")
        .args(args)
        .env_remove("WHARF_CONFIG")
        .stdin(Stdio::null());
    let child = command.output();
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.expect("wharf tail runs")),
    )
    .await
    .expect("wharf tail ends by itself without --follow")
    .unwrap()
}

fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every line of JSON output parses as an envelope.
fn envelopes(output: &Output) -> Vec<Envelope> {
    assert!(
        output.status.success(),
        "wharf tail failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout_lines(output)
        .iter()
        .map(|line| {
            Envelope::from_json(line.as_bytes())
                .unwrap_or_else(|error| panic!("{line:?} is not an envelope: {error}"))
        })
        .collect()
}

/// A `wharf tail --follow` process whose output lines are collected as
/// they come; killed when dropped.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(binary("wharf"))
            .args(["tail", "--follow"])
            .args(args)
            .env_remove("WHARF_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("wharf tail starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        Follower { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn envelopes(&self) -> Vec<Envelope> {
        self.lines()
            .iter()
            .map(|line| {
                Envelope::from_json(line.as_bytes())
                    .unwrap_or_else(|error| panic!("{line:?} is not an envelope: {error}"))
            })
            .collect()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The correlation of a frame whose command was delivered, all seen by
/// one tail (the frames sent before a tail started are not).
fn whole_story(events: &[Envelope]) -> Option<uuid::Uuid> {
    events
        .iter()
        .filter(|event| event.kind() == "CommandDelivered")
        .map(|delivered| delivered.correlation)
        .find(|correlation| {
            events
                .iter()
                .any(|event| event.kind() == "FrameReceived" && event.correlation == *correlation)
        })
}

/// On `wharf up`, tails follow its event stream while a device sends frames
/// that trigger the demo rule's command: each tail prints what its filters
/// select, as it happens.
#[tokio::test(flavor = "multi_thread")]
async fn tail_follows_a_running_wharf_up() {
    let data = temp_dir("wharf-tail-up");
    let secret = wharf_auth::generate_secret();
    let ports = UpPorts::free();
    let up = UpProcess::start(&data, ports, &secret, &[]);
    up.ready(PATIENCE).await;
    let from = format!("http://{}", ports.ops);
    let device = unique("thermo");
    let token = TokenIssuer::new(&secret)
        .issue(&device, "demo-thermostat", Duration::from_secs(3600))
        .unwrap();
    let mut ws = WsDevice::connect(&format!("ws://{}/v1/ws", ports.socket.websocket), &token)
        .await
        .unwrap();

    let json = ["--from", &from, "--output", "json"];
    let everything = Follower::start(&[&json[..], &["--device", &device]].concat());
    let frames =
        Follower::start(&[&json[..], &["--device", &device, "--type", "FrameReceived"]].concat());
    let nobody = Follower::start(&[&json[..], &["--device", "nobody"]].concat());
    let pretty = Follower::start(&[
        "--from",
        &from,
        "--device",
        &device,
        "--type",
        "FrameReceived",
    ]);
    let first = Command::new(binary("wharf"))
        .args([
            "tail", "--follow", "--limit", "1", "--from", &from, "--device", &device,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // A tail starts at the end of the topics as they are when it starts:
    // frames go on until the story of one (above the demo rule's threshold,
    // so a command follows) has reached the device.
    let deadline = std::time::Instant::now() + PATIENCE;
    for sent in 1.. {
        // Each follower starts on its own time: frames go on until the
        // filtered ones have printed one too.
        let told = whole_story(&everything.envelopes()).is_some();
        if told && !frames.lines().is_empty() && !pretty.lines().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no command's story in the tail within {PATIENCE:?}: {:?}",
            everything.lines()
        );
        ws.send_text(&format!(r#"{{"temperature": 35, "n": {sent}}}"#))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let story = everything.envelopes();
    assert!(story.iter().all(|event| event.device == device));
    let correlation = whole_story(&story).unwrap();
    let chain: Vec<&str> = story
        .iter()
        .filter(|event| event.correlation == correlation)
        .map(Envelope::kind)
        .collect();
    for kind in [
        "FrameReceived",
        "CommandRequested",
        "CommandDispatched",
        "CommandDelivered",
    ] {
        assert!(
            chain.contains(&kind),
            "{kind} missing from the story {chain:?}"
        );
    }
    let frames = frames.envelopes();
    assert!(!frames.is_empty());
    assert!(frames.iter().all(|event| event.kind() == "FrameReceived"));
    assert_eq!(nobody.lines(), Vec::<String>::new());
    let pretty = pretty.lines();
    assert!(!pretty.is_empty());
    for line in &pretty {
        assert!(
            line.contains(&format!("device-events    FrameReceived       {device} ")),
            "{line}"
        );
        assert!(line.contains(r#""temperature":35"#), "{line}");
    }
    // --limit 1 ended the tail by itself after one line.
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success());
    assert_eq!(String::from_utf8_lossy(&first.stdout).lines().count(), 1);

    // From the beginning: the in-process bus keeps the latest presence of a
    // device (a compacted topic); records every service has consumed are gone.
    let presence = tail(&[
        "--from",
        &from,
        "--from-beginning",
        "--no-follow",
        "--topic",
        "presence",
        "--device",
        &device,
        "--output",
        "json",
    ])
    .await;
    let presence = envelopes(&presence);
    assert_eq!(presence.last().map(Envelope::kind), Some("DeviceConnected"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_reads_kafka_and_shows_what_is_not_an_envelope() {
    let dir = temp_dir("wharf-tail-kafka");
    let prefix = unique("tail");
    let secret = "a-secret-for-this-scenario-only";
    let ports = SocketPorts::free();
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[auth]\nsecret = \"{secret}\"\n\n{}",
            kafka::bus_toml(&prefix, 2),
            ports.toml("socket-tail")
        ),
    )
    .unwrap();
    let _socket = Service::start("wharf-socket", &config, &dir);
    wait_until(PATIENCE, "the Socket to be ready", || async {
        http::get(ports.ops, "/readyz")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
    let device = unique("thermo");
    let token = TokenIssuer::new(secret)
        .issue(&device, "demo-thermostat", Duration::from_secs(3600))
        .unwrap();
    let mut ws = WsDevice::connect(&format!("ws://{}/v1/ws", ports.websocket), &token)
        .await
        .unwrap();
    ws.send_text(r#"{"temperature": 21.5}"#).await;
    // Something on the topic that is not an envelope.
    let topics = Topics::new(&prefix).unwrap();
    kafka::bus()
        .publish(Record::new(
            topics.device_events(),
            device.clone(),
            b"\x00garbage".to_vec(),
        ))
        .await
        .unwrap();

    let config = config.to_str().unwrap();
    let frames = wait_until(PATIENCE, "the frame to be on Kafka", || async {
        let output = tail(&[
            "--config",
            config,
            "--topic",
            "device-events",
            "--from-beginning",
            "--no-follow",
            "--device",
            &device,
            "--output",
            "json",
        ])
        .await;
        let frames = envelopes(&output);
        frames
            .iter()
            .any(|event| event.kind() == "FrameReceived")
            .then_some((frames, output))
    })
    .await;
    let (events, output) = frames;
    assert!(events.iter().all(|event| event.device == device));
    assert_eq!(
        events.iter().map(Envelope::kind).collect::<Vec<_>>(),
        ["DeviceConnected", "FrameReceived"]
    );
    // JSON output keeps stdout for envelopes; the other record is on stderr.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("device-events[")
            && stderr.contains("not an envelope")
            && stderr.contains("\\x00garbage"),
        "{stderr}"
    );
    // One story: the frame's correlation selects the frame alone (the
    // connection is a story of its own).
    let frame = events
        .iter()
        .find(|event| event.kind() == "FrameReceived")
        .unwrap();
    let correlation = frame.correlation.to_string();
    let story = tail(&[
        "--config",
        config,
        "--from-beginning",
        "--no-follow",
        "--correlation",
        &correlation,
        "--output",
        "json",
    ])
    .await;
    assert_eq!(envelopes(&story), std::slice::from_ref(frame));

    // Following from the end: only what comes after the tail started.
    let follower = Follower::start(&[
        "--config",
        config,
        "--topic",
        "device-events",
        "--device",
        &device,
        "--limit",
        "1",
        "--output",
        "json",
    ]);
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut sent = 0;
    while follower.lines().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower printed nothing"
        );
        sent += 1;
        ws.send_text(&format!(r#"{{"temperature": 22, "n": {sent}}}"#))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let followed = follower.envelopes();
    assert_eq!(followed[0].kind(), "FrameReceived");
    assert!(
        String::from_utf8(followed[0].to_json())
            .unwrap()
            .contains(r#""n":"#)
    );

    // A Socket instance started after the tail: its deliveries topic is
    // followed too (found by a pattern on Kafka's metadata refresh).
    let deliveries = Follower::start(&[
        "--config",
        config,
        "--topic",
        "deliveries.*",
        "--limit",
        "1",
        "--output",
        "json",
    ]);
    // Nothing matches yet; the follower must be running before the topic
    // exists for this to prove anything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(deliveries.lines().is_empty());
    let late = topics.deliveries("socket-late");
    let bus = kafka::bus();
    bus.ensure_topics(&[wharf_bus::TopicSpec::new(late.clone(), 1)])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while deliveries.lines().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new deliveries topic was not followed"
        );
        let marker = Envelope::new(
            device.clone(),
            "test",
            wharf_events::Event::DeviceRevoked(wharf_events::DeviceRevoked {
                tokens_issued_before: std::time::SystemTime::UNIX_EPOCH,
            }),
        );
        bus.publish(Record::event(late.clone(), &marker))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(deliveries.envelopes()[0].kind(), "DeviceRevoked");

    // Pretty output prints it in line.
    let pretty = tail(&[
        "--config",
        config,
        "--from-beginning",
        "--no-follow",
        "--device",
        &device,
    ])
    .await;
    let text = String::from_utf8_lossy(&pretty.stdout);
    assert!(
        text.contains("FrameReceived") && text.contains("not an envelope"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_says_clearly_what_is_wrong() {
    let closed = format!("http://127.0.0.1:{}", wharf_tests::env::free_port());
    let nobody = tail(&["--from", &closed, "--no-follow"]).await;
    assert!(!nobody.status.success());
    let stderr = String::from_utf8_lossy(&nobody.stderr);
    assert!(
        stderr.contains("cannot connect") && stderr.contains("wharf up"),
        "{stderr}"
    );

    let bad_type = tail(&["--from", &closed, "--type", "FrameRecieved"]).await;
    assert!(!bad_type.status.success());
    let stderr = String::from_utf8_lossy(&bad_type.stderr);
    assert!(
        stderr.contains("unknown event type \"FrameRecieved\"") && stderr.contains("FrameReceived"),
        "{stderr}"
    );

    let bad_topic = tail(&["--from", &closed, "--topic", "events"]).await;
    assert!(!bad_topic.status.success());
    assert!(String::from_utf8_lossy(&bad_topic.stderr).contains("unknown topic \"events\""));
}
