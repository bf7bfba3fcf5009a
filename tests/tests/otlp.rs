//! With `log.otlp_endpoint` set, `wharf up` exports a span per published
//! event to an OpenTelemetry collector (OTLP/HTTP JSON): the frame, the
//! command the rule asked for, its dispatch and its delivery are one trace,
//! each span's parent its cause. The collector here is a minimal HTTP
//! server that keeps what it is sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use wharf_auth::TokenIssuer;
use wharf_tests::up::{UpPorts, UpProcess};
use wharf_tests::{WsDevice, temp_dir, unique, wait_until};

/// Every span the collector got: (service, span).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

async fn collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let kept = received.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                assert!(line.starts_with("POST /v1/traces "), "{line}");
                let mut length = 0;
                loop {
                    line.clear();
                    reader.read_line(&mut line).await.unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).await.unwrap();
                let request: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                for resource in request["resourceSpans"].as_array().unwrap() {
                    let service = resource["resource"]["attributes"][0]["value"]["stringValue"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    for scope in resource["scopeSpans"].as_array().unwrap() {
                        for span in scope["spans"].as_array().unwrap() {
                            kept.lock().unwrap().push((service.clone(), span.clone()));
                        }
                    }
                }
                let mut stream = reader.into_inner();
                stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    )
                    .await
                    .unwrap();
            });
        }
    });
    (endpoint, received)
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|attribute| attribute["key"] == key)?["value"]["stringValue"]
        .as_str()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_triggered_command_is_one_trace_at_the_collector() {
    let (endpoint, received) = collector().await;
    let data = temp_dir("wharf-otlp");
    let secret = wharf_auth::generate_secret();
    let ports = UpPorts::free();
    let up = UpProcess::start(
        &data,
        ports,
        &secret,
        &[("WHARF_LOG__OTLP_ENDPOINT", &endpoint)],
    );
    up.ready(Duration::from_secs(60)).await;
    let device = unique("thermo");
    let token = TokenIssuer::new(&secret)
        .issue(&device, "demo-thermostat", Duration::from_secs(3600))
        .unwrap();
    let mut ws = WsDevice::connect(&format!("ws://{}/v1/ws", ports.socket.websocket), &token)
        .await
        .unwrap();
    ws.send_text(r#"{"temperature": 35}"#).await;
    ws.next_text(Duration::from_secs(30)).await; // the fan command

    let ours = wait_until(Duration::from_secs(30), "the delivery's span", || {
        let spans: Vec<Value> = received
            .lock()
            .unwrap()
            .iter()
            .filter(|(service, span)| {
                service == "wharf" && attribute(span, "wharf.device") == Some(&device)
            })
            .map(|(_, span)| span.clone())
            .collect();
        async move {
            spans
                .iter()
                .any(|span| span["name"] == "CommandDelivered")
                .then_some(spans)
        }
    })
    .await;
    let named = |name: &str| {
        ours.iter()
            .find(|span| span["name"] == name)
            .unwrap_or_else(|| panic!("no {name} span: {ours:#?}"))
    };
    // The dispatch goes out on two topics, and is one span.
    let dispatches = ours
        .iter()
        .filter(|span| span["name"] == "CommandDispatched")
        .count();
    assert_eq!(dispatches, 1, "{ours:#?}");
    let frame = named("FrameReceived");
    let request = named("CommandRequested");
    let dispatch = named("CommandDispatched");
    let delivered = named("CommandDelivered");
    for span in [request, dispatch, delivered] {
        assert_eq!(span["traceId"], frame["traceId"], "one trace: {ours:#?}");
    }
    assert_eq!(
        request["parentSpanId"], frame["spanId"],
        "the frame caused the request"
    );
    assert_eq!(
        dispatch["parentSpanId"], request["spanId"],
        "the request caused the dispatch"
    );
    assert_eq!(
        delivered["parentSpanId"], dispatch["spanId"],
        "the dispatch caused the delivery"
    );
    assert_eq!(
        attribute(request, "wharf.command.id"),
        attribute(delivered, "wharf.command.id")
    );
    // A span runs from when its cause happened: the request's from the
    // frame, the delivery's from the dispatch.
    let nanos = |span: &Value, key: &str| span[key].as_str().unwrap().parse::<u128>().unwrap();
    assert_eq!(
        nanos(request, "startTimeUnixNano"),
        nanos(frame, "startTimeUnixNano")
    );
    assert_eq!(
        nanos(delivered, "startTimeUnixNano"),
        nanos(dispatch, "startTimeUnixNano")
    );
    assert!(nanos(delivered, "endTimeUnixNano") > nanos(delivered, "startTimeUnixNano"));
}
