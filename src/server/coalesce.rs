//! Retries without double payment. SDKs retry 408/409/429/≥500 and timeouts
//! (marking each retry with `x-stainless-retry-count`); tools like Cursor
//! re-send on their own. A request that is identical to one in flight or
//! finished in the last 60 s (same app, method, path and body) *and* says it is a retry
//! (retry count > 0, or the same `Idempotency-Key`) gets the first call's
//! result instead of a second payment. Identical requests without a retry
//! marker are new calls: people do ask the same question twice. Entries are
//! per logical call: such a new call never evicts the paid call a later retry
//! may still need, and every call's entry ends (and expires) however its flow
//! exits, a panic included.

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

/// One finished call kept for retries, or one call in flight.
struct Entry {
    id: u64,
    rx: watch::Receiver<Option<Outcome>>,
}

/// Every call with one key. Entries are per logical call (an id), not per key:
/// a new identical call never replaces the entry a retry of an earlier one needs.
#[derive(Default)]
struct Slot {
    /// Calls in flight, oldest first.
    running: Vec<Entry>,
    /// The most recent finished call that moved (or may have moved) money.
    paid: Option<Entry>,
}

/// Most finished calls kept for retries (memory stays bounded under load).
pub const MAX_FINISHED: usize = 4096;
/// Most bytes of finished replies kept for retries.
pub const MAX_FINISHED_BYTES: usize = 64 * 1024 * 1024;

#[derive(Default)]
pub struct Coalescer {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Slot>,
    /// Finished calls (and the size of their replies), oldest first, for expiry.
    finished: std::collections::VecDeque<(Instant, Key, u64, usize)>,
    finished_bytes: usize,
    next_id: u64,
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while let Some(&(t, k, id, size)) = self.finished.front() {
            if now.duration_since(t) < WINDOW
                && self.finished.len() <= MAX_FINISHED
                && self.finished_bytes <= MAX_FINISHED_BYTES
            {
                break;
            }
            self.finished.pop_front();
            self.finished_bytes -= size;
            // Only drop it if it is still that call (not a newer paid one).
            if let Some(slot) = self.map.get_mut(&k)
                && slot.paid.as_ref().is_some_and(|e| e.id == id)
            {
                slot.paid = None;
                self.drop_if_empty(k);
            }
        }
    }

    fn drop_if_empty(&mut self, k: Key) {
        if self
            .map
            .get(&k)
            .is_some_and(|s| s.running.is_empty() && s.paid.is_none())
        {
            self.map.remove(&k);
        }
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
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

/// The key of a request (length-prefixed parts, hashed in place).
pub fn key(app: &str, method: &str, path: &str, idempotency_key: Option<&str>, body: &[u8]) -> Key {
    let (a, b) = hashers();
    let (mut h1, mut h2) = (a.build_hasher(), b.build_hasher());
    for part in [
        app.as_bytes(),
        method.as_bytes(),
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
    /// Wait for an earlier call's outcome.
    Follower(watch::Receiver<Option<Outcome>>),
}

/// The right (and duty) to publish one call's outcome. Dropped without
/// [`Leader::finish`] (the flow panicked or was cancelled), it publishes an
/// error and keeps it for retries like a paid outcome: a signature may have
/// left, so a retry must not pay again; the entry still expires after `WINDOW`.
pub struct Leader {
    inner: Arc<Mutex<Inner>>,
    key: Key,
    id: u64,
    tx: watch::Sender<Option<Outcome>>,
    done: bool,
}

impl Leader {
    pub fn subscribe(&self) -> watch::Receiver<Option<Outcome>> {
        self.tx.subscribe()
    }

    /// Publishes the outcome. Only outcomes where money moved (or may have) are
    /// kept for retries; when nothing was signed, a retry runs again (it cannot
    /// pay twice, and it may succeed where a transient error did not).
    pub fn finish(mut self, outcome: Outcome) {
        let keep = match &*outcome {
            Ok(u) => u.paid != crate::pay::Paid::Nothing,
            Err(e) => e.signature_sent(),
        };
        self.publish(outcome, keep);
    }

    fn publish(&mut self, outcome: Outcome, keep: bool) {
        self.done = true;
        {
            let mut inner = lock(&self.inner);
            let entry = inner.map.get_mut(&self.key).and_then(|slot| {
                let at = slot.running.iter().position(|e| e.id == self.id)?;
                Some(slot.running.remove(at))
            });
            if let Some(entry) = entry {
                if keep {
                    let now = Instant::now();
                    let size = match &*outcome {
                        Ok(u) => u.body.len() + 64 * u.headers.len(),
                        Err(_) => 256,
                    };
                    if let Some(slot) = inner.map.get_mut(&self.key) {
                        slot.paid = Some(entry);
                    }
                    inner.finished.push_back((now, self.key, self.id, size));
                    inner.finished_bytes += size;
                    inner.expire(now);
                } else {
                    inner.drop_if_empty(self.key);
                }
            }
        }
        let _ = self.tx.send(Some(outcome));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.done {
            self.publish(
                Arc::new(Err(ProxyError::Internal(
                    "the call ended abnormally and a payment may have been made; check `x402d payments` before retrying".into(),
                ))),
                true,
            );
        }
    }
}

impl Coalescer {
    /// A retry (`is_retry`) joins the most recent finished call with this key
    /// that moved money, else the newest one in flight; otherwise it, like any
    /// request without a retry marker, is a new call of its own.
    pub fn join(&self, key: Key, is_retry: bool) -> Join {
        let mut inner = lock(&self.inner);
        inner.expire(Instant::now());
        if is_retry
            && let Some(slot) = inner.map.get(&key)
            && let Some(e) = slot.paid.as_ref().or(slot.running.last())
        {
            return Join::Follower(e.rx.clone());
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (tx, rx) = watch::channel(None);
        inner
            .map
            .entry(key)
            .or_default()
            .running
            .push(Entry { id, rx });
        Join::Leader(Leader {
            inner: self.inner.clone(),
            key,
            id,
            tx,
            done: false,
        })
    }

    /// Publishes the leader's outcome (see [`Leader::finish`]).
    pub fn finish(&self, leader: Leader, outcome: Outcome) {
        leader.finish(outcome);
    }

    /// Calls in flight plus finished calls kept for retries.
    pub fn len(&self) -> usize {
        lock(&self.inner)
            .map
            .values()
            .map(|s| s.running.len() + usize::from(s.paid.is_some()))
            .sum()
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
        let k = key("a", "POST", "/p", None, b"{}");
        assert_ne!(k, key("b", "POST", "/p", None, b"{}"));
        assert_ne!(k, key("a", "POST", "/p", Some("idem"), b"{}"));
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
            let k = key("a", "POST", "/p", None, &i.to_le_bytes());
            let Join::Leader(l) = c.join(k, false) else {
                panic!()
            };
            c.finish(l, ok());
        }
        assert_eq!(c.len(), MAX_FINISHED);
        // The oldest were evicted; the newest still coalesce.
        let oldest = key("a", "POST", "/p", None, &0usize.to_le_bytes());
        assert!(matches!(c.join(oldest, true), Join::Leader(_)));
        let newest = key("a", "POST", "/p", None, &(MAX_FINISHED + 99).to_le_bytes());
        assert!(matches!(c.join(newest, true), Join::Follower(_)));
    }

    #[tokio::test]
    async fn unpaid_outcomes_are_forgotten() {
        let c = Coalescer::default();
        let k = key("a", "POST", "/p", None, b"{}");
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
        let k = key("a", "POST", "/p", None, b"{}");
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

    fn unpaid_failure() -> Outcome {
        Arc::new(Ok(Upstream {
            status: hyper::StatusCode::INTERNAL_SERVER_ERROR,
            headers: Default::default(),
            body: bytes::Bytes::new(),
            paid: Paid::Nothing,
        }))
    }

    #[tokio::test]
    async fn a_new_identical_call_does_not_evict_the_paid_one() {
        let c = Coalescer::default();
        let k = key("a", "POST", "/p", None, b"{}");
        let Join::Leader(a) = c.join(k, false) else {
            panic!()
        };
        c.finish(a, ok());
        // The same request without a retry marker: a new call, which fails unpaid.
        let Join::Leader(b) = c.join(k, false) else {
            panic!()
        };
        c.finish(b, unpaid_failure());
        // A retry of the first call still gets its paid answer, not a new payment.
        let Join::Follower(rx) = c.join(k, true) else {
            panic!("a retry of the paid call would pay again")
        };
        assert_eq!(wait(rx).await.as_ref().as_ref().unwrap().body, "x");
    }

    #[tokio::test]
    async fn a_retry_prefers_the_paid_call_over_one_in_flight() {
        let c = Coalescer::default();
        let k = key("a", "POST", "/p", None, b"{}");
        let Join::Leader(a) = c.join(k, false) else {
            panic!()
        };
        c.finish(a, ok());
        let Join::Leader(b) = c.join(k, false) else {
            panic!()
        };
        let Join::Follower(rx) = c.join(k, true) else {
            panic!()
        };
        assert!(rx.borrow().is_some(), "joined the finished paid call");
        c.finish(b, unpaid_failure());
        assert_eq!(c.len(), 1);
    }

    #[tokio::test]
    async fn an_abandoned_leader_publishes_an_error_and_expires() {
        let c = Coalescer::default();
        let k = key("a", "POST", "/p", None, b"{}");
        let Join::Leader(l) = c.join(k, false) else {
            panic!()
        };
        let Join::Follower(rx) = c.join(k, true) else {
            panic!()
        };
        // The flow panics mid-call.
        let flow = tokio::spawn(async move {
            let _leader = l;
            panic!("flow panicked");
        });
        assert!(flow.await.is_err());
        let o = wait(rx).await;
        assert!(matches!(o.as_ref(), Err(ProxyError::Internal(_))));
        // A signature may have left: a retry gets that error, not a new payment...
        assert!(matches!(c.join(k, true), Join::Follower(_)));
        // ...and the entry expires like any finished call.
        lock(&c.inner).expire(Instant::now() + WINDOW);
        assert!(c.is_empty());
        assert!(matches!(c.join(k, true), Join::Leader(_)));
    }
}
