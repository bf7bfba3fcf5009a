//! The durable in-process bus (`file://`) across restarts and crashes: what
//! was acknowledged comes back, offsets keep counting, group commits hold, a
//! torn last write is cut, damage elsewhere stops the start, and a process
//! killed with SIGKILL mid-stream loses nothing it acknowledged.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use wharf_bus::{
    Consumer, JournalOptions, MemoryBus, Message, Publisher, Record, Subscriber, TopicSpec,
};

const PATIENCE: Duration = Duration::from_secs(30);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wharf-journal-{name}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open(dir: &Path) -> MemoryBus {
    MemoryBus::open(dir, 2, 10_000, JournalOptions::default()).expect("the journal opens")
}

async fn publish(bus: &MemoryBus, topic: &str, key: &str, range: std::ops::Range<u32>) {
    let mut acks = Vec::new();
    for i in range {
        let record =
            Record::new(topic, key, i.to_string().into_bytes()).with_header("n", i.to_string());
        acks.push(bus.enqueue(record).await.unwrap());
    }
    for ack in acks {
        ack.await.expect("acknowledged once on disk");
    }
}

async fn read_all(bus: &MemoryBus, group: &str, topic: &str, n: usize) -> Vec<Message> {
    let mut consumer = bus.subscribe(group, &[topic.to_owned()]).await.unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let message = tokio::time::timeout(PATIENCE, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records came back", out.len()))
            .unwrap();
        out.push(message);
    }
    out
}

fn payloads(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn records_offsets_and_commits_survive_a_restart() {
    let dir = temp_dir("restart");
    {
        let bus = open(&dir);
        bus.ensure_topics(&[TopicSpec::new("t", 1)]).await.unwrap();
        publish(&bus, "t", "k", 0..10).await;
        let mut consumer = bus.subscribe("g", &["t".to_owned()]).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(consumer.recv().await.unwrap());
        }
        consumer
            .commit(&[seen.last().unwrap().next_position()])
            .await
            .unwrap();
    }
    let bus = open(&dir);
    // The group resumes after its commit; the uncommitted rest comes back
    // with its offsets and headers.
    let again = read_all(&bus, "g", "t", 6).await;
    assert_eq!(payloads(&again), ["4", "5", "6", "7", "8", "9"]);
    assert_eq!(again[0].offset, 4);
    assert_eq!(again[0].headers, [("n".to_owned(), "4".to_owned())]);
    // Offsets keep counting: a consumer's stored position stays meaningful.
    let delivered = bus
        .publish(Record::new("t", "k", b"10".to_vec()))
        .await
        .unwrap();
    assert_eq!(delivered.offset, 10);
}

#[tokio::test]
async fn offsets_keep_counting_after_everything_was_consumed_and_compacted_away() {
    let dir = temp_dir("compacted-away");
    let options = JournalOptions {
        segment_bytes: 4096,
    };
    {
        let bus = MemoryBus::open(&dir, 1, 10_000, options).unwrap();
        let mut consumer = bus.subscribe("g", &["t".to_owned()]).await.unwrap();
        for round in 0..60u32 {
            publish(&bus, "t", "k", round * 50..(round + 1) * 50).await;
            let mut last = None;
            for _ in 0..50 {
                last = Some(consumer.recv().await.unwrap());
            }
            consumer
                .commit(&[last.unwrap().next_position()])
                .await
                .unwrap();
        }
        // ~130 KB went through 4 KB segments: without snapshots replacing
        // consumed segments there would be over 30.
        let held = segments(&dir).len();
        assert!(held <= 10, "consumed segments are deleted: {held} left");
    }
    let bus = MemoryBus::open(&dir, 1, 10_000, options).unwrap();
    // A start replaces what is consumed by a snapshot (unless the newest
    // old segment is itself no more than such a snapshot).
    let held: u64 = segments(&dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        segments(&dir).len() <= 2 && held < 8192,
        "{} segments, {held} bytes",
        segments(&dir).len()
    );
    let delivered = bus
        .publish(Record::new("t", "k", b"next".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        delivered.offset, 3000,
        "offsets continue after the records are gone"
    );
    let next = read_all(&bus, "g", "t", 1).await;
    assert_eq!(payloads(&next), ["next"]);
}

#[tokio::test]
async fn a_compacted_topic_keeps_the_latest_record_per_key_across_restarts() {
    let dir = temp_dir("compact");
    let options = JournalOptions {
        segment_bytes: 4096,
    };
    {
        let bus = MemoryBus::open(&dir, 1, 10_000, options).unwrap();
        bus.ensure_topics(&[TopicSpec::compacted("presence", 1)])
            .await
            .unwrap();
        for round in 0..200u32 {
            for device in ["a", "b", "c"] {
                let value = format!("{device}{round}").into_bytes();
                bus.publish(Record::new("presence", device, value))
                    .await
                    .unwrap();
            }
        }
    }
    let bus = MemoryBus::open(&dir, 1, 10_000, options).unwrap();
    let mut reader = bus
        .subscribe_from_start("reader", &["presence".to_owned()])
        .await
        .unwrap();
    let mut latest = BTreeMap::new();
    while let Ok(Ok(message)) =
        tokio::time::timeout(Duration::from_millis(300), reader.recv()).await
    {
        latest.insert(
            message.key.clone().unwrap(),
            String::from_utf8(message.payload).unwrap(),
        );
    }
    assert_eq!(
        latest.into_iter().collect::<Vec<_>>(),
        [
            ("a".into(), "a199".into()),
            ("b".into(), "b199".into()),
            ("c".into(), "c199".into())
        ]
    );
    assert!(
        bus.retained("presence") < 200,
        "compaction dropped superseded records"
    );
}

#[tokio::test]
async fn a_torn_last_write_is_cut_and_nothing_before_it_is_lost() {
    let dir = temp_dir("torn");
    {
        let bus = open(&dir);
        publish(&bus, "t", "k", 0..100).await;
    }
    let newest = newest_segment(&dir);
    let whole = std::fs::metadata(&newest).unwrap().len();
    // A crash in the middle of a write: half a frame header and body.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    file.write_all(&[57, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, b'{', b'"'])
        .unwrap();
    drop(file);

    let bus = open(&dir);
    assert_eq!(
        std::fs::metadata(&newest).unwrap().len(),
        whole,
        "the torn bytes are cut"
    );
    let all = read_all(&bus, "g", "t", 100).await;
    assert_eq!(
        payloads(&all),
        (0..100).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    publish(&bus, "t", "k", 100..110).await;
    drop(bus);
    let bus = open(&dir);
    assert_eq!(read_all(&bus, "g2", "t", 110).await.len(), 110);
}

#[tokio::test]
async fn damage_before_the_last_segment_refuses_to_start_with_the_file_named() {
    let dir = temp_dir("damaged");
    {
        let bus = open(&dir);
        publish(&bus, "t", "k", 0..20).await;
    }
    {
        // A second run adds a newer segment.
        let bus = open(&dir);
        publish(&bus, "t", "k", 20..30).await;
    }
    let oldest = oldest_segment(&dir);
    let mut bytes = std::fs::read(&oldest).unwrap();
    assert!(bytes.len() > 40, "the oldest segment holds records");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&oldest, bytes).unwrap();

    let error = MemoryBus::open(&dir, 2, 10_000, JournalOptions::default())
        .err()
        .expect("a damaged journal does not open")
        .to_string();
    assert!(error.contains(&oldest.display().to_string()), "{error}");
    assert!(error.contains("damaged at byte"), "{error}");
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_is_refused() {
    let dir = temp_dir("locked");
    let _bus = open(&dir);
    let error = MemoryBus::open(&dir, 2, 10_000, JournalOptions::default())
        .err()
        .expect("the directory is locked")
        .to_string();
    assert!(error.contains("in use by another process"), "{error}");
}

/// The child side of the SIGKILL test: publishes numbered records as fast as
/// acknowledgements allow (up to 1,000 in flight), printing each acknowledged
/// number, until it is killed.
#[tokio::test(flavor = "multi_thread")]
async fn journal_crash_child() {
    let Some(dir) = std::env::var_os("WHARF_JOURNAL_CHILD_DIR") else {
        return; // only runs as the child of the test below
    };
    let bus = MemoryBus::open(
        Path::new(&dir),
        4,
        100_000,
        JournalOptions {
            segment_bytes: 256 << 10,
        },
    )
    .unwrap();
    let start: u64 = std::env::var("WHARF_JOURNAL_CHILD_START")
        .unwrap()
        .parse()
        .unwrap();
    let (acked, mut acks) = tokio::sync::mpsc::channel::<u64>(10_000);
    let printer = tokio::spawn(async move {
        while let Some(n) = acks.recv().await {
            println!("{n}");
        }
    });
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(1_000));
    for n in start.. {
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let key = format!("device-{}", n % 50);
        let ack = bus
            .enqueue(Record::new("t", key, n.to_string().into_bytes()))
            .await
            .unwrap();
        let acked = acked.clone();
        tokio::spawn(async move {
            ack.await.unwrap();
            let _ = acked.send(n).await;
            drop(permit);
        });
    }
    drop(printer);
}

#[test]
fn nothing_acknowledged_is_lost_when_the_process_is_killed() {
    let dir = temp_dir("sigkill");
    let mut acknowledged = HashSet::new();
    let mut next = 0u64;
    for (round, kill_after) in [700u64, 1_300, 450].into_iter().enumerate() {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "journal_crash_child",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("WHARF_JOURNAL_CHILD_DIR", &dir)
            .env("WHARF_JOURNAL_CHILD_START", next.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_ack, acking) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acked = Vec::new();
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(n) = line.trim().parse::<u64>() {
                    if acked.is_empty() {
                        let _ = first_ack.send(());
                    }
                    acked.push(n);
                }
            }
            acked
        });
        // Killed a while after it started acknowledging (a loaded machine
        // may take seconds to start it).
        acking
            .recv_timeout(Duration::from_secs(60))
            .expect("the child acknowledges records");
        std::thread::sleep(Duration::from_millis(kill_after));
        child.kill().unwrap(); // SIGKILL: no flush, no goodbye
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        assert!(
            !acked.is_empty(),
            "round {round}: the child acknowledged nothing before the kill"
        );
        next = acked.iter().max().unwrap() + 1_000_000;
        acknowledged.extend(acked);
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let bus = MemoryBus::open(&dir, 4, 100_000, JournalOptions::default()).unwrap();
        let mut consumer = bus.subscribe("audit", &["t".to_owned()]).await.unwrap();
        let mut stored = HashSet::new();
        let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        while let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await
        {
            let n: u64 = String::from_utf8(message.payload).unwrap().parse().unwrap();
            assert!(stored.insert(n), "record {n} is stored twice");
            per_key.entry(message.key.unwrap()).or_default().push(n);
        }
        let lost: Vec<&u64> = acknowledged.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged records lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        for (key, numbers) in per_key {
            assert!(
                numbers.windows(2).all(|w| w[0] < w[1]),
                "records of {key} out of order"
            );
        }
        eprintln!(
            "{} acknowledged records over 3 kills, all stored ({} stored in all)",
            acknowledged.len(),
            stored.len()
        );
    });
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    segments
}

fn newest_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().unwrap()
}

fn oldest_segment(dir: &Path) -> PathBuf {
    segments(dir).remove(0)
}
