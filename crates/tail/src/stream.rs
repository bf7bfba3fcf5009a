//! The event stream of `wharf up`: `GET /v1/tail` on its operations port
//! serves the records of its in-process bus as Server-Sent Events, one
//! [`TailedRecord`] (JSON) per event, so `wharf tail --from URL` can follow a
//! bus that lives in another process.
//!
//! Query: `topic` (repeatable, as `--topic`), `from_beginning=true`,
//! `follow=false`. Filters are applied by the client.

use std::convert::Infallible;
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wharf_bus::Bus;
use wharf_events::Topics;

use crate::follow::{FollowPlan, Start, follow};
use crate::record::TailedRecord;
use crate::topics::TopicSelection;

/// The path the stream is served at.
pub const PATH: &str = "/v1/tail";

/// Records the server may hold for a slow reader before it waits.
const BUFFER: usize = 1024;

#[derive(Clone)]
struct StreamState {
    bus: Bus,
    topics: Topics,
    stop: CancellationToken,
}

/// The `/v1/tail` route over `bus`, to merge into an operations router.
/// Open streams end when `stop` is cancelled, so a server shutting down
/// gracefully is not held open by a following reader.
pub fn router(bus: Bus, topics: Topics, stop: CancellationToken) -> Router {
    Router::new()
        .route(PATH, get(serve))
        .with_state(StreamState { bus, topics, stop })
}

/// What a stream request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRequest {
    pub topics: TopicSelection,
    pub from_beginning: bool,
    pub follow: bool,
}

impl StreamRequest {
    /// `topic=a&topic=b&from_beginning=true&follow=false`.
    pub fn to_query(&self) -> String {
        let mut query: Vec<String> = self.topics.0.iter().map(|t| format!("topic={t}")).collect();
        query.push(format!("from_beginning={}", self.from_beginning));
        query.push(format!("follow={}", self.follow));
        query.join("&")
    }

    fn from_query(query: &str) -> anyhow::Result<Self> {
        let mut request = StreamRequest {
            follow: true,
            ..StreamRequest::default()
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let flag = || match value {
                "true" | "1" | "" => Ok(true),
                "false" | "0" => Ok(false),
                other => bail!("{name}={other}: expected true or false"),
            };
            match name {
                "topic" => request.topics.0.push(value.to_owned()),
                "from_beginning" => request.from_beginning = flag()?,
                "follow" => request.follow = flag()?,
                other => {
                    bail!("unknown parameter {other:?}: expected topic, from_beginning, follow")
                }
            }
        }
        request.topics.check()?;
        Ok(request)
    }
}

async fn serve(State(state): State<StreamState>, RawQuery(query): RawQuery) -> Response {
    let request = match StreamRequest::from_query(query.as_deref().unwrap_or("")) {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error:#}\n")).into_response(),
    };
    let existing = match state.bus.topic_names().await {
        Ok(existing) => existing,
        Err(error) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response();
        }
    };
    let topics = match request.topics.resolve(&state.topics, &existing) {
        Ok(topics) => topics,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error:#}\n")).into_response(),
    };
    let plan = FollowPlan {
        topics,
        // The in-process bus has no patterns; its one Socket's deliveries
        // topic exists from the start.
        patterns: Vec::new(),
        start: if request.from_beginning {
            Start::Beginning
        } else {
            Start::End
        },
        follow: request.follow,
    };
    let (tx, rx) = mpsc::channel(BUFFER);
    let stop = state.stop.clone();
    tokio::spawn(async move {
        // Ends when the plan is done or the client has gone (send fails).
        if let Err(error) = follow(&state.bus, &plan, tx).await {
            tracing::warn!(error = format!("{error:#}"), "event stream ended early");
        }
    });
    let events = stream::unfold(rx, move |mut rx| {
        let stop = stop.clone();
        async move {
            let record = tokio::select! {
                record = rx.recv() => record?,
                () = stop.cancelled() => return None,
            };
            let event = Event::default()
                .json_data(&record)
                .unwrap_or_else(|_| Event::default().comment("unencodable record"));
            Some((Ok::<_, Infallible>(event), rx))
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Reads the event stream at `base` (`http://127.0.0.1:9100`) and sends
/// every record to `out`; returns when the stream ends or `out` is closed.
pub async fn read(
    base: &str,
    request: &StreamRequest,
    out: mpsc::Sender<TailedRecord>,
) -> anyhow::Result<()> {
    let authority = base
        .strip_prefix("http://")
        .with_context(|| format!("{base}: expected http://host:port"))?
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).await.with_context(|| {
        format!("cannot connect to {authority}: is `wharf up` running, with its operations endpoint there?")
    })?;
    // HTTP/1.0: the answer's body runs until the server closes, so no
    // chunked decoding is needed.
    let head = format!(
        "GET {PATH}?{} HTTP/1.0\r\nHost: {authority}\r\nAccept: text/event-stream\r\n\r\n",
        request.to_query()
    );
    stream.write_all(head.as_bytes()).await?;
    let mut lines = BufReader::new(stream).lines();
    let status = lines
        .next_line()
        .await?
        .with_context(|| format!("{authority} closed the connection without answering"))?;
    let code = status
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    // Skip the headers.
    while let Some(line) = lines.next_line().await? {
        if line.is_empty() {
            break;
        }
    }
    if code != "200" {
        let mut body = Vec::new();
        while let Some(line) = lines.next_line().await? {
            body.push(line);
        }
        bail!("{base}{PATH} answered {code}: {}", body.join(" ").trim());
    }
    while let Some(line) = lines.next_line().await? {
        let Some(data) = line.strip_prefix("data:") else {
            continue; // keep-alive comments, blank separators
        };
        let record: TailedRecord = serde_json::from_str(data.trim_start())
            .with_context(|| format!("{base}{PATH} sent an event that is not a record"))?;
        if out.send(record).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_survives_its_query() {
        let request = StreamRequest {
            topics: TopicSelection(vec!["device-events".into(), "deliveries.*".into()]),
            from_beginning: true,
            follow: false,
        };
        assert_eq!(
            StreamRequest::from_query(&request.to_query()).unwrap(),
            request
        );
        assert!(StreamRequest::from_query("").unwrap().follow);
        assert!(StreamRequest::from_query("topic=nope").is_err());
        assert!(StreamRequest::from_query("colour=red").is_err());
    }
}
