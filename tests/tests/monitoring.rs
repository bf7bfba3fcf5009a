//! The dashboard and the alert rules in deploy/monitoring name only
//! metrics a running Wharf exports: traffic is driven through a whole Wharf
//! (connections, frames, a refused token, a foreign subscription, an
//! oversized frame, commands sent now and queued), `/metrics` is scraped,
//! and every `wharf_*` name in the dashboard's queries and in the rules
//! must be among the scraped ones. Every query and rule also passes
//! `promtool` (Debian `prometheus`), and the plain rules file and the
//! PrometheusRule hold the same rules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::mqtt::{Flavor, MqttDevice, Seen};
use wharf_tests::wharf::TestWharf;
use wharf_tests::{WsDevice, http, temp_dir, unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(30);

fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/monitoring")
        .join(file)
}

/// Every PromQL query of the dashboard, with Grafana's `$__rate_interval`
/// made a plain range.
fn dashboard_queries() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries.push(expr.replace("$__rate_interval", "5m"));
        }
    }
    queries
}

/// The `wharf_*` metric names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("wharf_") {
        let start = at + found;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded {
            names.insert(text[start..end].to_owned());
        }
        at = end;
    }
    names
}

/// The rule lines after `groups:`, without indentation: what both rule
/// files must agree on.
fn rule_lines(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(monitoring(file)).unwrap();
    let (_, rules) = text.split_once("groups:").expect("a groups: key");
    rules
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "promtool is missing ({error}): install Debian's prometheus package (.ci/run does)"
            )
        });
    assert!(
        output.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_query_and_rule_parses_and_both_rule_files_agree() {
    promtool(&[
        "check",
        "rules",
        monitoring("wharf.rules.yaml").to_str().unwrap(),
    ]);
    // The dashboard's queries as recording rules: promtool parses each.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, query) in dashboard_queries().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: wharf:dashboard:q{n}\n        expr: {}\n",
            serde_json::to_string(query).unwrap()
        ));
    }
    let file = temp_dir("wharf-dashboard-rules").join("dashboard.rules.yaml");
    std::fs::write(&file, rules).unwrap();
    promtool(&["check", "rules", file.to_str().unwrap()]);
    assert_eq!(
        rule_lines("wharf.rules.yaml"),
        rule_lines("prometheusrule.yaml"),
        "prometheusrule.yaml holds other rules than wharf.rules.yaml"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_and_the_alerts_name_is_exported() {
    let wharf = TestWharf::start(|settings| settings.socket.max_frame_bytes = 16 * 1024).await;
    let api = wharf.api();
    let ws_url = format!("ws://{}/v1/ws", wharf.addresses.websocket.unwrap());

    // A WebSocket device: frames, and a command delivered to it.
    let online = unique("online");
    let token = api.register(&online, json!({})).await;
    let mut ws = WsDevice::connect(&ws_url, &token).await.unwrap();
    ws.send_text(r#"{"temperature":21}"#).await;
    wharf.state_after(&online, 1).await;
    let sent = api
        .post(
            &format!("/v1/devices/{online}/commands/fan"),
            &json!({"args": {"on": true}}),
        )
        .await
        .result();
    api.command_with_status(sent["id"].as_str().unwrap(), "delivered", PATIENCE)
        .await;
    // An oversized frame: dropped, the connection closed with a reason.
    ws.send_binary(vec![0; 20 * 1024]).await;
    ws.closed(PATIENCE).await;

    // A command queued for an offline device, sent when it connects.
    let offline = unique("offline");
    let token = api.register(&offline, json!({})).await;
    let queued = api
        .post(
            &format!("/v1/devices/{offline}/commands/fan"),
            &json!({"args": {"on": false}}),
        )
        .await
        .result();
    api.command_with_status(queued["id"].as_str().unwrap(), "queued", PATIENCE)
        .await;
    let _late = WsDevice::connect(&ws_url, &token).await.unwrap();
    api.command_with_status(queued["id"].as_str().unwrap(), "delivered", PATIENCE)
        .await;

    // A refused token, and an MQTT device subscribing outside its topics.
    WsDevice::refused_status(&ws_url, &wharf.forged_token("forger")).await;
    let mqtt_device = unique("mqtt");
    let mut mqtt = MqttDevice::connect(
        Flavor::V5,
        wharf.addresses.mqtt.unwrap(),
        &mqtt_device,
        &wharf.token(&mqtt_device),
    )
    .await
    .unwrap();
    mqtt.subscribe("devices/someone-else/commands/#").await;
    mqtt.next(PATIENCE, |seen| match seen {
        Seen::SubAck(codes) => Some(codes),
        _ => None,
    })
    .await;
    // A handshake that is not MQTT.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut garbage = tokio::net::TcpStream::connect(wharf.addresses.mqtt.unwrap())
            .await
            .unwrap();
        garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, garbage.read_to_end(&mut rest)).await;
    }

    let named: BTreeSet<String> = dashboard_queries()
        .iter()
        .chain(std::iter::once(
            &std::fs::read_to_string(monitoring("wharf.rules.yaml")).unwrap(),
        ))
        .flat_map(|text| metric_names(text))
        .collect();
    // Counters and histograms are scraped under their sample names; the
    // lag gauge appears with its first measurement (every 10 s).
    let exported = wait_until(PATIENCE, "every named metric on /metrics", || async {
        let (_, exposition) = http::get(wharf.ops(), "/metrics").await?;
        let exported: BTreeSet<String> = exposition
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect();
        named.is_subset(&exported).then_some(exported)
    })
    .await;
    let missing: Vec<&String> = named.difference(&exported).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
    assert!(named.len() >= 20, "the dashboard and rules name {named:?}");
    wharf.stop().await;
}
