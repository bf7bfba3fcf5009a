//! `wharf tail`: follows Wharf's topics on Kafka, or the event stream of a
//! running `wharf up`, and prints one line per event.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use tokio::sync::mpsc;
use wharf_bus::{Bus, BusConfig};
use wharf_events::{Event, Topics};
use wharf_tail::line::Line;
use wharf_tail::stream::StreamRequest;
use wharf_tail::{Filter, FollowPlan, Output, Start, Story, TopicSelection};

/// What `wharf tail` was asked for.
#[derive(Debug, Clone)]
pub struct TailArgs {
    pub topics: TopicSelection,
    pub filter: Filter,
    /// `--correlation`: one story.
    pub correlation: Option<uuid::Uuid>,
    pub from_beginning: bool,
    pub since: Option<Duration>,
    /// `None`: follow when stdout is a terminal.
    pub follow: Option<bool>,
    pub limit: Option<u64>,
    pub json: bool,
}

/// Where the records come from.
#[derive(Debug, Clone)]
pub enum TailSource {
    /// A bus this process can read (Kafka).
    Bus(BusConfig),
    /// The event stream of a running `wharf up` (`http://host:port`).
    Stream { url: String, topics: Topics },
}

impl TailSource {
    /// The bus `config` names, unless it is an in-process bus: that one
    /// lives inside a `wharf up`, read through its operations port.
    pub fn of(config: BusConfig, ops: std::net::SocketAddr) -> Self {
        if config.url.starts_with("kafka://") {
            TailSource::Bus(config)
        } else {
            let host = if ops.ip().is_unspecified() {
                std::net::SocketAddr::from(([127, 0, 0, 1], ops.port()))
            } else {
                ops
            };
            TailSource::Stream {
                url: format!("http://{host}"),
                topics: config.topics(),
            }
        }
    }
}

/// Prints the records `source` holds that `args` select, until the source
/// ends (without following) or `--limit` lines are printed.
pub async fn tail(source: TailSource, mut args: TailArgs) -> anyhow::Result<()> {
    args.topics.check()?;
    for kind in &args.filter.types {
        if !Event::KINDS.contains(&kind.as_str()) {
            bail!(
                "unknown event type {kind:?}: expected one of {}",
                Event::KINDS.join(", ")
            );
        }
    }
    let terminal = std::io::stdout().is_terminal();
    let follow = args.follow.unwrap_or(terminal);
    if let Some(since) = args.since {
        args.filter.since = Some(SystemTime::now() - since);
    }
    let from_beginning = args.from_beginning || args.since.is_some();
    let output = if args.json {
        Output::Json
    } else {
        Output::Pretty {
            colour: terminal && std::env::var_os("NO_COLOR").is_none(),
        }
    };
    let (tx, mut rx) = mpsc::channel(1024);
    let topics = match &source {
        TailSource::Bus(config) => config.topics(),
        TailSource::Stream { topics, .. } => topics.clone(),
    };
    let reader = tokio::spawn(async move {
        match source {
            TailSource::Bus(config) => {
                let bus = Bus::connect(&config).context("cannot connect to the bus")?;
                let existing = bus
                    .topic_names()
                    .await
                    .with_context(|| format!("cannot list the topics of {}", config.url))?;
                let plan = FollowPlan {
                    topics: args.topics.resolve(&config.topics(), &existing)?,
                    start: if from_beginning {
                        Start::Beginning
                    } else {
                        Start::End
                    },
                    follow,
                };
                if plan.topics.is_empty() {
                    bail!(
                        "no Wharf topics under the prefix {:?} on {}",
                        config.topics().prefix(),
                        config.url
                    );
                }
                wharf_tail::follow::follow(&bus, &plan, tx).await
            }
            TailSource::Stream { url, .. } => {
                let request = StreamRequest {
                    topics: args.topics.clone(),
                    from_beginning,
                    follow,
                };
                wharf_tail::stream::read(&url, &request, tx).await
            }
        }
    });
    let mut printed = 0u64;
    let mut story = args.correlation.map(Story::new);
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    'reading: while args.limit.is_none_or(|limit| printed < limit) {
        let Some(record) = rx.recv().await else { break };
        let envelope = record.decode();
        if !args.filter.admits(&record, &envelope) {
            continue;
        }
        let records = match &mut story {
            Some(story) => story.offer(record, &envelope),
            None => vec![record],
        };
        for record in records {
            if args.limit.is_some_and(|limit| printed >= limit) {
                break 'reading;
            }
            let envelope = record.decode();
            let written = match output.line(&topics, &record, &envelope) {
                Line::Stdout(line) => writeln!(stdout.lock(), "{line}"),
                Line::Stderr(line) => writeln!(stderr.lock(), "{line}"),
            };
            if written.is_err() {
                break 'reading; // the reader went away (`| head`)
            }
            printed += 1;
        }
    }
    drop(rx);
    if args.limit.is_some_and(|limit| printed >= limit) {
        reader.abort();
        return Ok(());
    }
    reader.await.context("the reader failed")??;
    if follow {
        // A followed stream ends only when the `wharf up` serving it stops.
        bail!("the event stream ended: the wharf up serving it stopped");
    }
    Ok(())
}
