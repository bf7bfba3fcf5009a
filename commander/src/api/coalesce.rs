//! Read coalescing: identical GETs arriving together share one database
//! read, and its answer serves identical GETs for a short while after
//! (`commander.api.read_cache`). Writes through this API clear it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::envelope::ApiError;

/// Above this many remembered reads, expired ones are swept out (at most
/// once per freshness window, so a busy API does not sweep on every read).
const SWEEP_ABOVE: usize = 1024;

type Answer = Result<Value, ApiError>;

/// Reads in flight and recently answered, by key.
pub struct Coalescer {
    fresh_for: Duration,
    reads: Mutex<Reads>,
}

struct Reads {
    by_key: HashMap<String, Arc<Read>>,
    next_sweep: Instant,
}

struct Read {
    started: Instant,
    answer: OnceCell<Answer>,
}

impl Read {
    /// Whether a request arriving now may take this read's answer: it is
    /// still running, or it started within the freshness window.
    fn shareable(&self, now: Instant, fresh_for: Duration) -> bool {
        !self.answer.initialized() || now.duration_since(self.started) <= fresh_for
    }
}

impl Coalescer {
    pub fn new(fresh_for: Duration) -> Self {
        Coalescer {
            fresh_for,
            reads: Mutex::new(Reads {
                by_key: HashMap::new(),
                next_sweep: Instant::now(),
            }),
        }
    }

    /// The answer for `key`: shared with an identical read in flight or
    /// recent, else from `read`.
    pub async fn read<F, Fut>(&self, key: String, read: F) -> Answer
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Answer>,
    {
        let shared = {
            let now = Instant::now();
            let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
            if reads.by_key.len() > SWEEP_ABOVE && now >= reads.next_sweep {
                reads
                    .by_key
                    .retain(|_, read| read.shareable(now, self.fresh_for));
                reads.next_sweep = now + self.fresh_for;
            }
            match reads.by_key.get(&key) {
                Some(existing) if existing.shareable(now, self.fresh_for) => existing.clone(),
                _ => {
                    let fresh = Arc::new(Read {
                        started: now,
                        answer: OnceCell::new(),
                    });
                    reads.by_key.insert(key, fresh.clone());
                    fresh
                }
            }
        };
        // If the request doing the read goes away, a waiting one takes over.
        shared.answer.get_or_init(read).await.clone()
    }

    /// Forgets every answer: a write may have changed any of them.
    pub fn clear(&self) {
        self.reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_key
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn concurrent_identical_reads_share_one() {
        let coalescer = Arc::new(Coalescer::new(Duration::from_millis(250)));
        let reads = Arc::new(AtomicUsize::new(0));
        let mut waiting = Vec::new();
        for _ in 0..20 {
            let (coalescer, reads) = (coalescer.clone(), reads.clone());
            waiting.push(tokio::spawn(async move {
                coalescer
                    .read("twin:a".into(), || async {
                        reads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(json!({"n": 1}))
                    })
                    .await
            }));
        }
        for task in waiting {
            assert_eq!(task.await.unwrap().unwrap(), json!({"n": 1}));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_go_stale_and_writes_clear_them() {
        let coalescer = Coalescer::new(Duration::from_millis(250));
        let reads = AtomicUsize::new(0);
        let read = || async {
            let n = reads.fetch_add(1, Ordering::SeqCst);
            Ok(json!(n))
        };
        assert_eq!(coalescer.read("k".into(), read).await.unwrap(), json!(0));
        assert_eq!(
            coalescer.read("k".into(), read).await.unwrap(),
            json!(0),
            "fresh"
        );
        assert_eq!(
            coalescer.read("other".into(), read).await.unwrap(),
            json!(1),
            "another key"
        );
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(
            coalescer.read("k".into(), read).await.unwrap(),
            json!(2),
            "stale"
        );
        coalescer.clear();
        assert_eq!(
            coalescer.read("k".into(), read).await.unwrap(),
            json!(3),
            "cleared"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn many_keys_are_swept_once_stale() {
        let coalescer = Coalescer::new(Duration::from_millis(250));
        let remembered = || coalescer.reads.lock().unwrap().by_key.len();
        for n in 0..=SWEEP_ABOVE {
            coalescer
                .read(format!("k{n}"), || async { Ok(json!(n)) })
                .await
                .unwrap();
        }
        assert_eq!(remembered(), SWEEP_ABOVE + 1, "all fresh: none swept");
        tokio::time::advance(Duration::from_millis(300)).await;
        coalescer
            .read("new".into(), || async { Ok(json!(0)) })
            .await
            .unwrap();
        assert_eq!(remembered(), 1, "the stale ones went");
    }
}
