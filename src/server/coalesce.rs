//! Retries without double payment. SDKs retry 408/409/429/≥500 and timeouts
//! (marking each retry with `x-stainless-retry-count`); tools like Cursor
//! re-send on their own. A request that is identical to one in flight or
//! finished in the last 60 s (same app, path and body) *and* says it is a retry
//! (retry count > 0, or the same `Idempotency-Key`) gets the first call's
//! result instead of a second payment. Identical requests without a retry
//! marker are new calls: people do ask the same question twice.

use crate::error::ProxyError;
use crate::pay::Upstream;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a finished call can absorb retries.
pub const WINDOW: Duration = Duration::from_secs(60);

pub type Outcome = Arc<Result<Upstream, ProxyError>>;

struct Entry {
    rx: watch::Receiver<Option<Outcome>>,
    finished: Option<Instant>,
}

/// Most finished calls kept for retries (memory stays bounded under load).
pub const MAX_FINISHED: usize = 4096;
/// Most bytes of finished replies kept for retries.
pub const MAX_FINISHED_BYTES: usize = 64 * 1024 * 1024;

#[derive(Default)]
pub struct Coalescer {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    /// Finished keys (and the size of their replies), oldest first, for expiry.
    finished: std::collections::VecDeque<(Instant, Key, usize)>,
    finished_bytes: usize,
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while let Some(&(t, k, size)) = self.finished.front() {
            if now.duration_since(t) < WINDOW
                && self.finished.len() <= MAX_FINISHED
                && self.finished_bytes <= MAX_FINISHED_BYTES
            {
                break;
            }
            self.finished.pop_front();
            self.finished_bytes -= size;
            // Only drop the entry if it is still that finished call (not a newer one).
            if self.map.get(&k).is_some_and(|e| e.finished == Some(t)) {
                self.map.remove(&k);
            }
        }
    }
}

/// Identity of a logical call: 128 bits of SipHash under two per-process random
/// keys (an outsider cannot aim for collisions; no cryptographic hash needed).
pub type Key = u128;

type Hashers = (
    std::collections::hash_map::RandomState,
    std::collections::hash_map::RandomState,
);

fn hashers() -> &'static Hashers {
    static H: std::sync::OnceLock<Hashers> = std::sync::OnceLock::new();
    H.get_or_init(Default::default)
}

/// The key of a logical call (length-prefixed parts, hashed in place).
pub fn key(app: &str, path: &str, idempotency_key: Option<&str>, body: &[u8]) -> Key {
    let (a, b) = hashers();
    let (mut h1, mut h2) = (a.build_hasher(), b.build_hasher());
    for part in [
        app.as_bytes(),
        path.as_bytes(),
        idempotency_key.unwrap_or("").as_bytes(),
        body,
    ] {
        for h in [&mut h1, &mut h2] {
            h.write_u64(part.len() as u64);
            h.write(part);
        }
    }
    (u128::from(h1.finish()) << 64) | u128::from(h2.finish())
}

pub enum Join {
    /// Run the call and publish its outcome.
    Leader(Leader),
    /// Wait for the first call's outcome.
    Follower(watch::Receiver<Option<Outcome>>),
}

pub struct Leader {
    key: Key,
    tx: watch::Sender<Option<Outcome>>,
}

impl Leader {
    pub fn subscribe(&self) -> watch::Receiver<Option<Outcome>> {
        self.tx.subscribe()
    }
}

impl Coalescer {
    pub fn join(&self, key: Key, is_retry: bool) -> Join {
        let mut inner = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        inner.expire(Instant::now());
        if is_retry && let Some(e) = inner.map.get(&key) {
            return Join::Follower(e.rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        inner.map.insert(key, Entry { rx, finished: None });
        Join::Leader(Leader { key, tx })
    }

    /// Publishes the leader's outcome. Only outcomes where money moved (or may
    /// have) are kept for retries; when nothing was signed, a retry runs again
    /// (it cannot pay twice, and it may succeed where a transient error did not).
    pub fn finish(&self, leader: Leader, outcome: Outcome) {
        let forget = match &*outcome {
            Ok(u) => u.paid == crate::pay::Paid::Nothing,
            Err(e) => !e.signature_sent(),
        };
        {
            let mut inner = match self.inner.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            // The entry may already belong to a newer call with the same key.
            let mine = inner
                .map
                .get(&leader.key)
                .is_some_and(|e| e.rx.same_channel(&leader.tx.subscribe()));
            if mine {
                if forget {
                    inner.map.remove(&leader.key);
                } else {
                    let now = Instant::now();
                    if let Some(e) = inner.map.get_mut(&leader.key) {
                        e.finished = Some(now);
                    }
                    let size = match &*outcome {
                        Ok(u) => u.body.len() + 64 * u.headers.len(),
                        Err(_) => 256,
                    };
                    inner.finished.push_back((now, leader.key, size));
                    inner.finished_bytes += size;
                    inner.expire(now);
                }
            }
        }
        let _ = leader.tx.send(Some(outcome));
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|m| m.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Waits for a published outcome.
pub async fn wait(mut rx: watch::Receiver<Option<Outcome>>) -> Outcome {
    loop {
        if let Some(o) = rx.borrow_and_update().clone() {
            return o;
        }
        if rx.changed().await.is_err() {
            return Arc::new(Err(ProxyError::Internal(
                "the first call was abandoned".into(),
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pay::Paid;

    fn ok() -> Outcome {
        Arc::new(Ok(Upstream {
            status: hyper::StatusCode::OK,
            headers: Default::default(),
            body: bytes::Bytes::from_static(b"x"),
            paid: Paid::Settled,
        }))
    }

    #[tokio::test]
    async fn retries_join_and_new_calls_do_not() {
        let c = Coalescer::default();
        let k = key("a", "/p", None, b"{}");
        assert_ne!(k, key("b", "/p", None, b"{}"));
        assert_ne!(k, key("a", "/p", Some("idem"), b"{}"));
        let Join::Leader(l) = c.join(k, false) else {
            panic!()
        };
        // A retry while in flight follows.
        let Join::Follower(rx) = c.join(k, true) else {
            panic!()
        };
        let w = tokio::spawn(wait(rx));
        c.finish(l, ok());
        assert_eq!(w.await.unwrap().as_ref().as_ref().unwrap().body, "x");
        // A retry after completion follows too.
        let Join::Follower(rx) = c.join(k, true) else {
            panic!()
        };
        assert!(wait(rx).await.is_ok());
        // The same request without a retry marker is a new call.
        assert!(matches!(c.join(k, false), Join::Leader(_)));
    }

    #[tokio::test]
    async fn finished_calls_are_bounded() {
        let c = Coalescer::default();
        for i in 0..(MAX_FINISHED + 100) {
            let k = key("a", "/p", None, &i.to_le_bytes());
            let Join::Leader(l) = c.join(k, false) else {
                panic!()
            };
            c.finish(l, ok());
        }
        assert_eq!(c.len(), MAX_FINISHED);
        // The oldest were evicted; the newest still coalesce.
        let oldest = key("a", "/p", None, &0usize.to_le_bytes());
        assert!(matches!(c.join(oldest, true), Join::Leader(_)));
        let newest = key("a", "/p", None, &(MAX_FINISHED + 99).to_le_bytes());
        assert!(matches!(c.join(newest, true), Join::Follower(_)));
    }

    #[tokio::test]
    async fn unpaid_outcomes_are_forgotten() {
        let c = Coalescer::default();
        let k = key("a", "/p", None, b"{}");
        let Join::Leader(l) = c.join(k, false) else {
            panic!()
        };
        c.finish(
            l,
            Arc::new(Ok(Upstream {
                status: hyper::StatusCode::SERVICE_UNAVAILABLE,
                headers: Default::default(),
                body: bytes::Bytes::new(),
                paid: Paid::Nothing,
            })),
        );
        assert!(matches!(c.join(k, true), Join::Leader(_)));
    }

    #[tokio::test]
    async fn retryable_failures_are_forgotten() {
        let c = Coalescer::default();
        let k = key("a", "/p", None, b"{}");
        let Join::Leader(l) = c.join(k, false) else {
            panic!()
        };
        c.finish(
            l,
            Arc::new(Err(ProxyError::UpstreamUnreachable {
                upstream: "u".into(),
                reason: "r".into(),
            })),
        );
        assert!(matches!(c.join(k, true), Join::Leader(_)));
    }
}
