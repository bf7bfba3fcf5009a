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
            TailSource::Bus(mut config) => {
                // Deliveries topics of Socket instances started later are
                // found by a pattern, on librdkafka's metadata refresh:
                // every 5 s rather than its default 5 minutes.
                config
                    .kafka
                    .entry("topic.metadata.refresh.interval.ms".to_owned())
                    .or_insert_with(|| "5000".to_owned());
                let bus = Bus::connect(&config).context("cannot connect to the bus")?;
                let existing = bus
                    .topic_names()
                    .await
                    .with_context(|| format!("cannot list the topics of {}", config.url))?;
                let patterns = if args.topics.wants_all_deliveries() {
                    vec![wharf_tail::topics::deliveries_pattern(&config.topics())]
                } else {
                    Vec::new()
                };
                let plan = FollowPlan {
                    topics: args.topics.resolve(&config.topics(), &existing)?,
                    patterns,
                    start: if from_beginning {
                        Start::Beginning
                    } else {
                        Start::End
                    },
                    follow,
                };
                // Nothing to read now, and nothing to wait for either.
                let waits_for_topics = follow && !plan.patterns.is_empty();
                if plan.topics.is_empty() && !waits_for_topics {
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
    let mut printer = Printer {
        output,
        topics,
        limit: args.limit,
        printed: 0,
        closed: false,
    };
    let mut story = args.correlation.map(Story::new);
    // A story read to its end is printed in the order things happened (the
    // topics are read side by side, not in time order); a followed one as
    // it comes.
    let chronological = story.is_some() && !follow;
    let mut told = Vec::new();
    'reading: while !printer.full() {
        let Some(record) = rx.recv().await else { break };
        let envelope = record.decode();
        if !args.filter.admits(&record, &envelope) {
            continue;
        }
        let records = match &mut story {
            Some(story) => story.offer(record, &envelope),
            None => vec![record],
        };
        if chronological {
            told.extend(records);
            continue;
        }
        for record in records {
            if !printer.print(&record) {
                break 'reading;
            }
        }
    }
    if chronological {
        // Events of one millisecond keep their causal order.
        told.sort_by_key(|record| {
            record
                .decode()
                .map(|envelope| (envelope.time, step_of(envelope.kind())))
                .ok()
        });
        for record in &told {
            if !printer.print(record) {
                break;
            }
        }
    }
    drop(rx);
    if printer.full() {
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

/// Where an event type comes in a command's story.
fn step_of(kind: &str) -> u8 {
    match kind {
        "DeviceConnected" | "FrameReceived" | "DesiredStateChanged" => 0,
        "CommandRequested" => 1,
        "CommandRejected" | "CommandQueued" => 2,
        "CommandDispatched" => 3,
        _ => 4, // outcomes
    }
}

/// Prints records, one line each, up to a limit.
struct Printer {
    output: Output,
    topics: wharf_events::Topics,
    limit: Option<u64>,
    printed: u64,
    /// stdout was closed (`| head`): nothing more is printed.
    closed: bool,
}

impl Printer {
    fn full(&self) -> bool {
        self.closed || self.limit.is_some_and(|limit| self.printed >= limit)
    }

    /// Prints `record`; false once nothing more is to be printed (the
    /// limit is reached, or stdout is closed, as with `| head`).
    fn print(&mut self, record: &wharf_tail::TailedRecord) -> bool {
        if self.full() {
            return false;
        }
        let envelope = record.decode();
        let written = match self.output.line(&self.topics, record, &envelope) {
            Line::Stdout(line) => writeln!(std::io::stdout().lock(), "{line}"),
            Line::Stderr(line) => writeln!(std::io::stderr().lock(), "{line}"),
        };
        if written.is_err() {
            self.closed = true;
            return false;
        }
        self.printed += 1;
        !self.full()
    }
}
