//! Traces to an OpenTelemetry collector, when `log.otlp_endpoint` (or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT`) names one: off by default.
//!
//! Every event a service publishes is a span of its chain's trace, with the
//! ids its `traceparent` header carries ([`wharf_events::trace`]): trace id
//! = the chain's correlation, span id = the event's, parent = its cause's.
//! A span runs from when the service got the cause to when it published the
//! event. Spans are batched (up to 512, or every second) and POSTed as
//! OTLP/HTTP JSON to `<endpoint>/v1/traces`, plain HTTP (run a collector
//! beside the service for TLS). When the collector is slow or away, spans
//! past a buffer of 8,192 are dropped and counted in a warning, never
//! waited for: tracing cannot slow devices down.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use wharf_events::Envelope;

const BUFFER: usize = 8_192;
const BATCH: usize = 512;
const PERIOD: Duration = Duration::from_secs(1);

struct Exporter {
    spans: mpsc::Sender<Span>,
    dropped: AtomicU64,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
}

impl Span {
    /// The span of `envelope`: from `started` (when its cause arrived) to
    /// now, named after its type, with its device and `attributes`.
    pub fn of_event(envelope: &Envelope, started: SystemTime) -> Self {
        let ids = wharf_events::trace::span_ids(envelope);
        let mut attributes = vec![
            ("wharf.device", envelope.device.clone()),
            ("wharf.event.id", envelope.id.to_string()),
            ("wharf.source", envelope.source.clone()),
        ];
        if let Some(command) = command_id(envelope) {
            attributes.push(("wharf.command.id", command));
        }
        let end = SystemTime::now();
        // Event times travel in whole milliseconds: a span starts at its
        // cause's time as every service reads it from the envelope.
        let started = UNIX_EPOCH
            + Duration::from_millis(
                started
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis() as u64),
            );
        Span {
            trace_id: ids.trace_id,
            span_id: ids.span_id,
            parent_span_id: ids.parent_span_id,
            name: envelope.kind().to_owned(),
            start: started.min(end),
            end,
            attributes,
        }
    }
}

fn command_id(envelope: &Envelope) -> Option<String> {
    use wharf_events::Event;
    match &envelope.event {
        Event::CommandRequested(_) => Some(envelope.id.to_string()),
        Event::CommandDispatched(e) => Some(e.command_id.to_string()),
        Event::CommandDelivered(e) => Some(e.command_id.to_string()),
        Event::CommandFailed(e) => Some(e.command_id.to_string()),
        Event::CommandQueued(e) => Some(e.command_id.to_string()),
        Event::CommandExpired(e) => Some(e.command_id.to_string()),
        Event::CommandRejected(e) => Some(e.command_id.to_string()),
        _ => None,
    }
}

/// Whether spans are exported: build them only then.
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Hands a span to the exporter (nothing when export is off; dropped and
/// counted when the buffer is full).
pub fn export(span: Span) {
    if let Some(exporter) = EXPORTER.get()
        && exporter.spans.try_send(span).is_err()
    {
        exporter.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The span of a published `envelope` whose cause arrived at `started`.
pub fn export_event(envelope: &Envelope, started: SystemTime) {
    if enabled() {
        export(Span::of_event(envelope, started));
    }
}

/// Starts exporting to `endpoint` (`http://host:port`) as `service`. Must
/// run inside a Tokio runtime; a second call keeps the first exporter.
pub fn start(endpoint: &str, service: &str) -> Result<(), String> {
    let target = Target::parse(endpoint)?;
    let (tx, rx) = mpsc::channel(BUFFER);
    let exporter = Exporter {
        spans: tx,
        dropped: AtomicU64::new(0),
    };
    if EXPORTER.set(exporter).is_ok() {
        tokio::spawn(send_batches(target, service.to_owned(), rx));
    }
    Ok(())
}

/// Where the collector listens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    authority: String,
    path: String,
}

impl Target {
    fn parse(endpoint: &str) -> Result<Self, String> {
        let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
            format!("{endpoint:?}: expected http://host:port (plain HTTP; TLS belongs to a collector beside the service)")
        })?;
        let (authority, base) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || !authority.contains(':') {
            return Err(format!("{endpoint:?}: expected http://host:port"));
        }
        let base = base.trim_end_matches('/');
        Ok(Target {
            authority: authority.to_owned(),
            path: if base.is_empty() {
                "/v1/traces".to_owned()
            } else {
                format!("/{base}/v1/traces")
            },
        })
    }
}

/// Checks an endpoint without starting anything (configuration checks).
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    Target::parse(endpoint).map(drop)
}

async fn send_batches(target: Target, service: String, mut spans: mpsc::Receiver<Span>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let deadline = tokio::time::sleep(PERIOD);
        tokio::pin!(deadline);
        while batch.len() < BATCH {
            tokio::select! {
                span = spans.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        if batch.is_empty() {
            if spans.is_closed() {
                return;
            }
            continue;
        }
        let body = encode(&service, &batch);
        batch.clear();
        if let Err(error) = post(&target, &body).await {
            let dropped = EXPORTER
                .get()
                .map_or(0, |exporter| exporter.dropped.swap(0, Ordering::Relaxed));
            // At most one warning a minute: a missing collector is not news
            // every second.
            if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                last_warning = Some(std::time::Instant::now());
                tracing::warn!(%error, collector = %target.authority, dropped_since_last_warning = dropped,
                    "traces could not be exported");
            }
        }
    }
}

async fn post(target: &Target, body: &str) -> std::io::Result<()> {
    let exchange = crate::http_client::call(
        &target.authority,
        "POST",
        &target.path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Err(_) => Err(std::io::Error::other(
            "the collector did not answer within 10 s",
        )),
        Ok(Err(error)) => Err(error),
        Ok(Ok(answer)) if (200..300).contains(&answer.status) => Ok(()),
        Ok(Ok(answer)) => Err(std::io::Error::other(format!(
            "the collector answered {}",
            answer.status
        ))),
    }
}

fn nanos(time: SystemTime) -> String {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos())
        .to_string()
}

/// OTLP/HTTP JSON: one resource (the service), one scope, the spans. Ids
/// are hex, times nanoseconds since the epoch as strings, as OTLP's JSON
/// mapping says.
fn encode(service: &str, spans: &[Span]) -> String {
    use serde_json::json;
    let string = |key: &str, value: &str| json!({"key": key, "value": {"stringValue": value}});
    let spans: Vec<serde_json::Value> = spans
        .iter()
        .map(|span| {
            let mut value = json!({
                "traceId": span.trace_id,
                "spanId": span.span_id,
                "name": span.name,
                "kind": 1,
                "startTimeUnixNano": nanos(span.start),
                "endTimeUnixNano": nanos(span.end),
                "attributes": span.attributes.iter().map(|(k, v)| string(k, v)).collect::<Vec<_>>(),
            });
            if let Some(parent) = &span.parent_span_id {
                value["parentSpanId"] = json!(parent);
            }
            value
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [string("service.name", service)]},
            "scopeSpans": [{"scope": {"name": "wharf"}, "spans": spans}],
        }]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_http_with_a_port() {
        assert_eq!(
            Target::parse("http://collector:4318").unwrap(),
            Target {
                authority: "collector:4318".into(),
                path: "/v1/traces".into()
            }
        );
        assert_eq!(
            Target::parse("http://c:4318/otlp/").unwrap().path,
            "/otlp/v1/traces"
        );
        assert!(
            Target::parse("https://collector:4318")
                .unwrap_err()
                .contains("plain HTTP")
        );
        assert!(Target::parse("http://collector").is_err());
    }

    #[test]
    fn spans_encode_as_otlp_json() {
        let span = Span {
            trace_id: "0123456789abcdef0123456789abcdef".into(),
            span_id: "0123456789abcdef".into(),
            parent_span_id: Some("fedcba9876543210".into()),
            name: "CommandRequested".into(),
            start: UNIX_EPOCH + Duration::from_millis(1),
            end: UNIX_EPOCH + Duration::from_millis(3),
            attributes: vec![("wharf.device", "thermo-1".into())],
        };
        let json: serde_json::Value =
            serde_json::from_str(&encode("wharf-receiver", &[span])).unwrap();
        let resource = &json["resourceSpans"][0];
        assert_eq!(
            resource["resource"]["attributes"][0]["value"]["stringValue"],
            "wharf-receiver"
        );
        let span = &resource["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "0123456789abcdef0123456789abcdef");
        assert_eq!(span["parentSpanId"], "fedcba9876543210");
        assert_eq!(span["startTimeUnixNano"], "1000000");
        assert_eq!(span["endTimeUnixNano"], "3000000");
        assert_eq!(span["attributes"][0]["key"], "wharf.device");
    }
}
