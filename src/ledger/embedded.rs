//! The embedded ledger: one redb file, one writer thread. All writes go through
//! the writer, which checks caps and commits in the same transaction (group
//! commit: every op waiting when a transaction starts shares its fsync), so
//! concurrent calls can never overshoot a cap and every state change that
//! precedes moving money is durable before the caller continues.

use super::*;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;

pub(crate) const PAYMENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("payments");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_ID: &str = "next_id";
/// Most ops committed in one transaction.
const MAX_BATCH: usize = 512;
/// Key under which wallet-wide totals are indexed (app names cannot contain '*').
const ALL: &str = "*";

enum Op {
    Reserve(
        Box<Reserve>,
        oneshot::Sender<Result<Result<u64, CapExceeded>, LedgerError>>,
    ),
    Signed {
        id: u64,
        payer: String,
        nonce: String,
        valid_before: u64,
        payment_identifier: Option<String>,
        now_ms: i64,
        reply: oneshot::Sender<Result<(), LedgerError>>,
    },
    /// One more send of a signed payment, and why it failed (if it did).
    Attempt {
        id: u64,
        attempts: u32,
        last_error: Option<String>,
        now_ms: i64,
        reply: oneshot::Sender<Result<(), LedgerError>>,
    },
    Finish {
        id: u64,
        outcome: Outcome,
        now_ms: i64,
        /// `None` when nobody waits (see `Ledger::finish_detached`).
        reply: Option<oneshot::Sender<Result<(), LedgerError>>>,
    },
    SetTimezone(TimeZone, oneshot::Sender<Result<(), LedgerError>>),
    /// Read-only: answered from memory, outside any transaction.
    Unresolved(oneshot::Sender<Result<Vec<Payment>, LedgerError>>),
    /// Read-only: wallet-wide counted spend today and the amount without a final outcome.
    Summary(i64, oneshot::Sender<Result<(Usd, Usd), LedgerError>>),
    /// Read-only: the totals behind `spend`/`status`/`/metrics`, from memory.
    Totals {
        now_ms: i64,
        days: u32,
        reply: oneshot::Sender<Result<Snapshot, LedgerError>>,
    },
}

/// The embedded (redb) ledger; cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    tx: mpsc::Sender<Op>,
    db: Arc<Database>,
    path: PathBuf,
    observer: Arc<std::sync::OnceLock<CommitObserver>>,
}

impl Embedded {
    /// Opens (or creates) the ledger, runs crash recovery and starts the writer.
    pub fn open(
        path: &Path,
        tz: TimeZone,
        now_ms: i64,
    ) -> Result<(Embedded, Recovery), LedgerError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(storage)?;
        }
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(LedgerError::Locked(path.to_path_buf()));
            }
            Err(e) => return Err(storage(e)),
        };
        // One decoding pass over the file: the index, then recovery of its open records.
        let mut index = Index::build(&db, tz)?;
        let recovery = recover(&db, &mut index, now_ms)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let wdb = db.clone();
        let observer: Arc<std::sync::OnceLock<CommitObserver>> = Arc::default();
        let wobs = observer.clone();
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer(wdb, index, rx, wobs))
            .map_err(storage)?;
        Ok((
            Embedded {
                tx,
                db,
                path: path.to_path_buf(),
                observer,
            },
            recovery,
        ))
    }

    /// Installs the commit-time observer (once).
    pub fn observe_commits(&self, f: CommitObserver) {
        let _ = self.observer.set(f);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one op to the writer and waits for its (durable) answer.
    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, LedgerError>>) -> Op,
    ) -> Result<T, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(op(tx)).map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Holds budget for a payment, or says which cap refuses it.
    ///
    /// Cancel-safe: if the caller stops waiting, a reservation made for it is
    /// released (by the writer when the answer cannot be delivered, or here on drop
    /// when it was delivered but never read), so no budget stays held by nobody.
    pub async fn reserve(&self, r: Reserve) -> Result<Result<u64, CapExceeded>, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Op::Reserve(Box::new(r), tx))
            .map_err(|_| LedgerError::Closed)?;
        let mut pending = PendingReserve {
            ledger: self,
            rx: Some(rx),
        };
        let rx = pending.rx.as_mut().ok_or(LedgerError::Closed)?;
        let answer = rx.await.map_err(|_| LedgerError::Closed)?;
        pending.rx = None;
        answer
    }

    /// Records the signed authorization. Must complete before the request leaves.
    pub async fn signed(
        &self,
        id: u64,
        payer: String,
        nonce: String,
        valid_before: u64,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.signed_with_identifier(id, payer, nonce, valid_before, None, now_ms)
            .await
    }

    /// [`Ledger::signed`], with the `payment-identifier` id sent with the payment.
    pub async fn signed_with_identifier(
        &self,
        id: u64,
        payer: String,
        nonce: String,
        valid_before: u64,
        payment_identifier: Option<String>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.ask(|reply| Op::Signed {
            id,
            payer,
            nonce,
            valid_before,
            payment_identifier,
            now_ms,
            reply,
        })
        .await
    }

    /// Records that a signed payment has now been sent `attempts` times, and why
    /// the last send failed (`None` when it brought an answer). Only while the
    /// payment is signed and its flow still running.
    pub async fn attempt(
        &self,
        id: u64,
        attempts: u32,
        last_error: Option<String>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.ask(|reply| Op::Attempt {
            id,
            attempts,
            last_error,
            now_ms,
            reply,
        })
        .await
    }

    /// Records how a reservation or payment ended.
    ///
    /// The op is queued before the first await, so once this future has been
    /// polled the outcome is recorded even if the caller then stops waiting.
    pub async fn finish(&self, id: u64, outcome: Outcome, now_ms: i64) -> Result<(), LedgerError> {
        self.ask(|reply| Op::Finish {
            id,
            outcome,
            now_ms,
            reply: Some(reply),
        })
        .await
    }

    /// Records an outcome without waiting, for `Drop` impls (which cannot await).
    /// The op joins the writer's queue behind everything already sent, so any later
    /// reservation sees its effect on the caps; it commits with the next batch. If
    /// the process dies first, startup recovery reaches the same answer
    /// (reserved → released, signed → at-risk). A transition the record no longer
    /// allows (it already ended) is logged and changes nothing.
    pub fn finish_detached(&self, id: u64, outcome: Outcome, now_ms: i64) {
        let op = Op::Finish {
            id,
            outcome,
            now_ms,
            reply: None,
        };
        if self.tx.send(op).is_err() {
            tracing::error!(
                id,
                "the ledger writer has stopped; startup recovery will settle this record"
            );
        }
    }

    /// Re-keys the windows after a time-zone change.
    pub async fn set_timezone(&self, tz: TimeZone) -> Result<(), LedgerError> {
        self.ask(|tx| Op::SetTimezone(tz, tx)).await
    }

    /// Payments, newest first (blocking read; readers never wait for the writer).
    pub fn payments(&self, app: Option<&str>, limit: usize) -> Result<Vec<Payment>, LedgerError> {
        read_payments(&*self.db, app, limit)
    }

    /// Every payment (blocking read), oldest first.
    pub fn all(&self) -> Result<Vec<Payment>, LedgerError> {
        read_all(&*self.db)
    }

    /// Wallet-wide spend counted today (settled + pending + at-risk) and the part of
    /// all spend that has no final outcome yet; from memory, no scan.
    pub async fn summary(&self, now_ms: i64) -> Result<(Usd, Usd), LedgerError> {
        self.ask(|tx| Op::Summary(now_ms, tx)).await
    }

    /// Per-app and wallet-wide totals for today, this month, lifetime and the
    /// last `days` days (at most [`MAX_REPORT_DAYS`]), plus per-state counts:
    /// answered by the writer thread from its in-memory index, off the async
    /// workers and without reading a record.
    pub async fn totals(&self, now_ms: i64, days: u32) -> Result<Snapshot, LedgerError> {
        self.ask(|reply| Op::Totals {
            now_ms,
            days,
            reply,
        })
        .await
    }

    /// Payments still waiting for an outcome (at-risk, rejected-not-expired),
    /// from the writer's in-memory index: no scan of the file.
    pub async fn unresolved(&self) -> Result<Vec<Payment>, LedgerError> {
        self.ask(Op::Unresolved).await
    }
}

/// The answer to a reservation while its caller waits. Dropped unread (the caller
/// was cancelled), it stops further answers and releases a reservation that was
/// already made: the caller can no longer sign it.
struct PendingReserve<'a> {
    ledger: &'a Embedded,
    rx: Option<oneshot::Receiver<Result<Result<u64, CapExceeded>, LedgerError>>>,
}

impl Drop for PendingReserve<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        // After close() the writer cannot deliver any more (it releases instead),
        // so an answer is either here now or handled there: never lost between.
        rx.close();
        if let Ok(Ok(Ok(id))) = rx.try_recv() {
            self.ledger
                .finish_detached(id, orphan_release(), crate::now_ms());
        }
    }
}

fn orphan_release() -> Outcome {
    Outcome::Released {
        reason: "released: the caller went away before signing".into(),
    }
}

/// Opens a ledger file for the CLI when no daemon holds it. Opened read-write
/// because a file left by a killed daemon needs redb's repair pass; nothing is
/// written otherwise.
pub fn open_offline(path: &Path) -> Result<Database, LedgerError> {
    match Database::open(path) {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            Err(LedgerError::Locked(path.to_path_buf()))
        }
        Err(e) => Err(storage(e)),
    }
}

pub fn read_all(db: &impl ReadableDatabase) -> Result<Vec<Payment>, LedgerError> {
    let rtx = db.begin_read().map_err(storage)?;
    let table = match rtx.open_table(PAYMENTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(storage(e)),
    };
    let mut out = Vec::new();
    for item in table.iter().map_err(storage)? {
        let (_, v) = item.map_err(storage)?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}

pub fn read_payments(
    db: &impl ReadableDatabase,
    app: Option<&str>,
    limit: usize,
) -> Result<Vec<Payment>, LedgerError> {
    let rtx = db.begin_read().map_err(storage)?;
    let table = match rtx.open_table(PAYMENTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(storage(e)),
    };
    let mut out = Vec::new();
    for item in table.iter().map_err(storage)?.rev() {
        let (_, v) = item.map_err(storage)?;
        let p = decode(v.value())?;
        if app.is_none_or(|a| a == p.app) {
            out.push(p);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

fn decode(b: &[u8]) -> Result<Payment, LedgerError> {
    serde_json::from_slice(b).map_err(|e| LedgerError::Storage(format!("corrupt record: {e}")))
}

fn encode(p: &Payment) -> Result<Vec<u8>, LedgerError> {
    serde_json::to_vec(p).map_err(storage)
}

/// Startup recovery: a crash can leave reservations that never signed (safe to
/// release: nothing left the process) and signed payments without an outcome
/// (the request may have reached the seller: at-risk).
fn recover(db: &Database, index: &mut Index, now_ms: i64) -> Result<Recovery, LedgerError> {
    let mut rec = Recovery::default();
    // Only non-final records can need fixing, and the index already holds them all.
    let fixes: Vec<Payment> = index
        .open
        .values()
        .filter(|p| matches!(p.state, State::Reserved | State::Signed))
        .cloned()
        .collect();
    let wtx = db.begin_write().map_err(storage)?;
    {
        let mut table = wtx.open_table(PAYMENTS).map_err(storage)?;
        wtx.open_table(META).map_err(storage)?;
        for mut p in fixes {
            let outcome = if p.state == State::Reserved {
                rec.released += 1;
                Outcome::Released {
                    reason: "released at startup: never signed".into(),
                }
            } else {
                rec.at_risk += 1;
                Outcome::AtRisk {
                    reason: "at-risk at startup: signed, outcome unknown".into(),
                }
            };
            let before_p = p.clone();
            let before = p.state;
            finish(&mut p, outcome).map_err(|to| LedgerError::BadTransition {
                id: p.id,
                from: before.as_str(),
                to: to.as_str(),
            })?;
            p.updated_ms = now_ms;
            table
                .insert(p.id, encode(&p)?.as_slice())
                .map_err(storage)?;
            index.replace(&before_p, &p);
            if p.state.is_final() {
                index.open.remove(&p.id);
            } else {
                index.open.insert(p.id, p);
            }
        }
    }
    wtx.commit().map_err(storage)?;
    Ok(rec)
}

/// In-memory totals of counted spend per window, rebuilt from the file at start.
struct Index {
    tz: TimeZone,
    day: HashMap<(String, window::Day), Totals>,
    month: HashMap<(String, window::Month), Totals>,
    total: HashMap<String, Totals>,
    /// Every app with a record, and records (count, amount) per state.
    apps: std::collections::BTreeSet<String>,
    states: HashMap<State, (u64, u64)>,
    records: u64,
    /// Records not yet final, by id (so transitions need no read).
    open: BTreeMap<u64, Payment>,
    next_id: u64,
}

impl Index {
    fn build(db: &Database, tz: TimeZone) -> Result<Index, LedgerError> {
        let mut ix = Index {
            tz,
            day: HashMap::new(),
            month: HashMap::new(),
            total: HashMap::new(),
            apps: Default::default(),
            states: HashMap::new(),
            records: 0,
            open: BTreeMap::new(),
            next_id: 1,
        };
        let rtx = db.begin_read().map_err(storage)?;
        if let Ok(meta) = rtx.open_table(META)
            && let Some(v) = meta.get(NEXT_ID).map_err(storage)?
        {
            ix.next_id = v.value();
        }
        for p in read_all(db)? {
            ix.next_id = ix.next_id.max(p.id + 1);
            ix.add(&p);
        }
        Ok(ix)
    }

    /// A new record.
    fn add(&mut self, p: &Payment) {
        self.records += 1;
        if !self.apps.contains(&p.app) {
            self.apps.insert(p.app.clone());
        }
        self.apply(p, 1);
        if !p.state.is_final() {
            self.open.insert(p.id, p.clone());
        } else {
            self.open.remove(&p.id);
        }
    }

    /// A record changed from `before` to `after` (same id, app, amount, time).
    fn replace(&mut self, before: &Payment, after: &Payment) {
        self.apply(before, -1);
        self.apply(after, 1);
    }

    fn apply(&mut self, p: &Payment, sign: i8) {
        let st = self.states.entry(p.state).or_default();
        if sign > 0 {
            *st = (st.0 + 1, st.1.saturating_add(p.amount));
        } else {
            *st = (st.0.saturating_sub(1), st.1.saturating_sub(p.amount));
        }
        if !p.state.counts() {
            return;
        }
        let d = window::day(p.created_ms, &self.tz);
        let m = window::month(p.created_ms, &self.tz);
        for who in [p.app.as_str(), ALL] {
            self.day
                .entry((who.to_string(), d))
                .or_default()
                .add(p, sign);
            self.month
                .entry((who.to_string(), m))
                .or_default()
                .add(p, sign);
            self.total.entry(who.to_string()).or_default().add(p, sign);
        }
    }

    fn totals(&self, now_ms: i64, days: u32) -> Snapshot {
        let today = window::day(now_ms, &self.tz);
        let month = window::month(now_ms, &self.tz);
        let mut day_keys = Vec::new();
        let mut d = today;
        for _ in 0..days.min(MAX_REPORT_DAYS) {
            day_keys.push(d);
            match d.yesterday() {
                Ok(y) => d = y,
                Err(_) => break,
            }
        }
        let of = |who: &str| {
            let key = who.to_string();
            let get_d =
                |d: window::Day| self.day.get(&(key.clone(), d)).copied().unwrap_or_default();
            AppTotals {
                today: get_d(today),
                month: self
                    .month
                    .get(&(key.clone(), month))
                    .copied()
                    .unwrap_or_default(),
                total: self.total.get(&key).copied().unwrap_or_default(),
                days: day_keys.iter().map(|&d| (d, get_d(d))).collect(),
            }
        };
        Snapshot {
            apps: self.apps.iter().map(|a| (a.clone(), of(a))).collect(),
            wallet: of(ALL),
            states: self
                .states
                .iter()
                .filter(|(_, v)| v.0 > 0)
                .map(|(s, v)| (s.as_str(), *v))
                .collect(),
            records: self.records,
        }
    }

    fn check(&self, r: &Reserve) -> Result<(), CapExceeded> {
        let tz = &self.tz;
        let d = window::day(r.now_ms, tz);
        let m = window::month(r.now_ms, tz);
        let amt = r.amount;
        let get_d = |who: &str| {
            Usd(self
                .day
                .get(&(who.to_string(), d))
                .map_or(0, Totals::counted))
        };
        let get_m = |who: &str| {
            Usd(self
                .month
                .get(&(who.to_string(), m))
                .map_or(0, Totals::counted))
        };
        let get_t = |who: &str| Usd(self.total.get(who).map_or(0, Totals::counted));
        let day_reset = window::show(window::day_end(r.now_ms, tz), tz);
        let month_reset = window::show(window::month_end(r.now_ms, tz), tz);
        let app = &r.app;
        if let Some(cap) = r.caps.app_per_call
            && amt > cap
        {
            return Err(CapExceeded {
                code: "app_per_call_cap_exceeded",
                message: format!(
                    "this call costs ${amt}, above app {app:?}'s per-call cap of ${cap}."
                ),
            });
        }
        let checks: [(Option<Usd>, Usd, &'static str, String); 5] = [
            (
                r.caps.app_daily,
                get_d(app),
                "app_daily_cap_exceeded",
                format!("app {app:?}'s daily cap (resets {day_reset})"),
            ),
            (
                r.caps.app_monthly,
                get_m(app),
                "app_monthly_cap_exceeded",
                format!("app {app:?}'s monthly cap (resets {month_reset})"),
            ),
            (
                r.caps.app_total,
                get_t(app),
                "app_total_cap_exceeded",
                format!("app {app:?}'s lifetime cap"),
            ),
            (
                r.caps.wallet_daily,
                get_d(ALL),
                "wallet_daily_cap_exceeded",
                format!("the wallet-wide daily cap (resets {day_reset})"),
            ),
            (
                r.caps.wallet_monthly,
                get_m(ALL),
                "wallet_monthly_cap_exceeded",
                format!("the wallet-wide monthly cap (resets {month_reset})"),
            ),
        ];
        for (cap, used, code, what) in checks {
            if let Some(cap) = cap
                && used.saturating_add(amt) > cap
            {
                return Err(CapExceeded {
                    code,
                    message: format!(
                        "${used} of the ${cap} in {what} is spent, pending or at risk; this call costs ${amt}."
                    ),
                });
            }
        }
        Ok(())
    }
}

fn writer(
    db: Arc<Database>,
    mut index: Index,
    rx: mpsc::Receiver<Op>,
    observer: Arc<std::sync::OnceLock<CommitObserver>>,
) {
    let answer = |op: Op, index: &Index, batch: &mut Vec<Op>| match op {
        Op::Unresolved(reply) => {
            let open = index
                .open
                .values()
                .filter(|p| matches!(p.state, State::AtRisk | State::Rejected))
                .cloned()
                .collect();
            let _ = reply.send(Ok(open));
        }
        Op::Summary(now_ms, reply) => {
            let today = window::day(now_ms, &index.tz);
            let counted = index
                .day
                .get(&(ALL.to_string(), today))
                .map_or(0, Totals::counted);
            let pending: u64 = index.open.values().map(|p| p.amount).sum();
            let _ = reply.send(Ok((Usd(counted), Usd(pending))));
        }
        Op::Totals {
            now_ms,
            days,
            reply,
        } => {
            let _ = reply.send(Ok(index.totals(now_ms, days)));
        }
        op => batch.push(op),
    };
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        answer(first, &index, &mut batch);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => answer(op, &index, &mut batch),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        run_batch(&db, &mut index, batch);
        if let Some(f) = observer.get() {
            f(started.elapsed().as_secs_f64());
        }
    }
}

enum Reply {
    Reserve(
        oneshot::Sender<Result<Result<u64, CapExceeded>, LedgerError>>,
        Result<u64, CapExceeded>,
    ),
    Unit(
        oneshot::Sender<Result<(), LedgerError>>,
        Result<(), LedgerError>,
    ),
    /// A finish nobody waits for: its result is only logged.
    Detached(u64, Result<(), LedgerError>),
}

fn run_batch(db: &Database, index: &mut Index, batch: Vec<Op>) {
    let orphans = commit_batch(db, index, batch);
    if !orphans.is_empty() {
        // Reservations whose caller stopped waiting: release them now (a finish
        // produces no orphans, so this does not recurse further).
        let now = crate::now_ms();
        let ops = orphans
            .into_iter()
            .map(|id| Op::Finish {
                id,
                outcome: orphan_release(),
                now_ms: now,
                reply: None,
            })
            .collect();
        commit_batch(db, index, ops);
    }
}

/// Commits one batch and answers its callers; returns the ids of reservations
/// made for callers that no longer wait.
fn commit_batch(db: &Database, index: &mut Index, batch: Vec<Op>) -> Vec<u64> {
    let mut replies = Vec::with_capacity(batch.len());
    let mut rebuild = false;
    let result = (|| -> Result<(), LedgerError> {
        let wtx = db.begin_write().map_err(storage)?;
        {
            let mut table = wtx.open_table(PAYMENTS).map_err(storage)?;
            let mut meta = wtx.open_table(META).map_err(storage)?;
            let start_id = index.next_id;
            for op in batch {
                match op {
                    Op::Reserve(r, reply) => {
                        let res = match index.check(&r) {
                            Err(e) => Err(e),
                            Ok(()) => {
                                // With the authorization's parameters chosen up
                                // front, the record is created signed-for: one
                                // commit, and at risk if the process dies.
                                let (state, auth) = match r.auth {
                                    Some(a) => (State::Signed, Some(a)),
                                    None => (State::Reserved, None),
                                };
                                let (payer, nonce, valid_before, payment_identifier) = match auth {
                                    Some(a) => (
                                        Some(a.payer),
                                        Some(a.nonce),
                                        Some(a.valid_before),
                                        a.payment_identifier,
                                    ),
                                    None => (None, None, None, None),
                                };
                                let p = Payment {
                                    id: index.next_id,
                                    created_ms: r.now_ms,
                                    updated_ms: r.now_ms,
                                    app: r.app,
                                    model: r.model,
                                    route: r.route,
                                    network: r.network,
                                    asset: r.asset,
                                    pay_to: r.pay_to,
                                    amount: r.amount.atomic(),
                                    payer,
                                    nonce,
                                    valid_before,
                                    state,
                                    tx: None,
                                    note: None,
                                    payment_identifier,
                                    attempts: 0,
                                    last_error: None,
                                };
                                table
                                    .insert(p.id, encode(&p)?.as_slice())
                                    .map_err(storage)?;
                                index.next_id += 1;
                                index.add(&p);
                                Ok(p.id)
                            }
                        };
                        replies.push(Reply::Reserve(reply, res));
                    }
                    Op::Signed {
                        id,
                        payer,
                        nonce,
                        valid_before,
                        payment_identifier,
                        now_ms,
                        reply,
                    } => {
                        let res = transition(index, &mut table, id, now_ms, |p| {
                            if p.state != State::Reserved {
                                return Err(State::Signed);
                            }
                            p.state = State::Signed;
                            p.payer = Some(payer);
                            p.nonce = Some(nonce);
                            p.valid_before = Some(valid_before);
                            p.payment_identifier = payment_identifier;
                            Ok(())
                        });
                        replies.push(Reply::Unit(reply, res));
                    }
                    Op::Attempt {
                        id,
                        attempts,
                        last_error,
                        now_ms,
                        reply,
                    } => {
                        let res = transition(index, &mut table, id, now_ms, |p| {
                            if p.state != State::Signed {
                                return Err(State::Signed);
                            }
                            p.attempts = attempts;
                            if last_error.is_some() {
                                p.last_error = last_error;
                            }
                            Ok(())
                        });
                        replies.push(Reply::Unit(reply, res));
                    }
                    Op::Finish {
                        id,
                        outcome,
                        now_ms,
                        reply,
                    } => {
                        let res = transition(index, &mut table, id, now_ms, |p| {
                            // A signed payment that got an answer was sent at least
                            // once; re-sends record their own count (Op::Attempt).
                            let sent = !matches!(outcome, Outcome::Released { .. });
                            if p.state == State::Signed && sent && p.attempts == 0 {
                                p.attempts = 1;
                            }
                            finish(p, outcome)
                        });
                        replies.push(match reply {
                            Some(reply) => Reply::Unit(reply, res),
                            None => Reply::Detached(id, res),
                        });
                    }
                    // Never batched (answered in `writer`); kept exhaustive.
                    Op::Unresolved(reply) => {
                        let _ = reply.send(Ok(Vec::new()));
                    }
                    Op::Summary(_, reply) => {
                        let _ = reply.send(Ok((Usd::ZERO, Usd::ZERO)));
                    }
                    Op::Totals { reply, .. } => {
                        let _ = reply.send(Ok(Snapshot::default()));
                    }
                    Op::SetTimezone(tz, reply) => {
                        replies.push(Reply::Unit(reply, Ok(())));
                        index.tz = tz;
                        rebuild = true;
                    }
                }
            }
            if index.next_id != start_id {
                meta.insert(NEXT_ID, index.next_id).map_err(storage)?;
            }
        }
        wtx.commit().map_err(storage)
    })();
    if let Err(e) = &result {
        tracing::error!(error = %e, "ledger commit failed; rebuilding the in-memory index");
    }
    // After a failed commit, or a time-zone change, rebuild totals from the file.
    let tz = index.tz.clone();
    if rebuild || result.is_err() {
        match Index::build(db, tz) {
            Ok(ix) => *index = ix,
            Err(e) => tracing::error!(error = %e, "ledger index rebuild failed"),
        }
    }
    let mut orphans = Vec::new();
    for r in replies {
        match (r, &result) {
            (Reply::Reserve(tx, v), Ok(())) => {
                if let Err(Ok(Ok(id))) = tx.send(Ok(v)) {
                    orphans.push(id);
                }
            }
            (Reply::Unit(tx, v), Ok(())) => {
                let _ = tx.send(v);
            }
            (Reply::Reserve(tx, _), Err(e)) => {
                let _ = tx.send(Err(e.clone()));
            }
            (Reply::Unit(tx, _), Err(e)) => {
                let _ = tx.send(Err(e.clone()));
            }
            (Reply::Detached(id, v), Ok(())) => {
                if let Err(e) = v {
                    tracing::warn!(id, error = %e, "detached ledger update not applied");
                }
            }
            (Reply::Detached(id, _), Err(e)) => {
                // Not committed: the record keeps its last durable state, which
                // startup recovery settles (reserved → released, signed → at-risk).
                tracing::error!(id, error = %e, "detached ledger update failed to commit");
            }
        }
    }
    orphans
}

pub(super) fn finish(p: &mut Payment, outcome: Outcome) -> Result<(), State> {
    use State::*;
    let (to, note, tx) = match outcome {
        Outcome::Settled { tx } => (Settled, None, tx),
        Outcome::Rejected { reason } => (Rejected, Some(reason), None),
        Outcome::AtRisk { reason } => (AtRisk, Some(reason), None),
        Outcome::Released { reason } => (Released, Some(reason), None),
    };
    let ok = match (p.state, to) {
        // A reservation that never signed can only be released.
        (Reserved, Released) => true,
        (Signed, Settled | Rejected | AtRisk | Released) => true,
        // Chain resolution of unknown outcomes.
        (AtRisk | Rejected, Settled | Released) => true,
        _ => false,
    };
    if !ok {
        return Err(to);
    }
    p.state = to;
    if tx.is_some() {
        p.tx = tx;
    }
    if note.is_some() {
        p.note = note;
    }
    Ok(())
}

fn transition(
    index: &mut Index,
    table: &mut redb::Table<u64, &[u8]>,
    id: u64,
    now_ms: i64,
    f: impl FnOnce(&mut Payment) -> Result<(), State>,
) -> Result<(), LedgerError> {
    let mut p = match index.open.get(&id) {
        Some(p) => p.clone(),
        None => {
            let stored = table.get(id).map_err(storage)?;
            match stored {
                Some(v) => decode(v.value())?,
                None => return Err(LedgerError::NoSuchPayment(id)),
            }
        }
    };
    let before_p = p.clone();
    let before = p.state;
    f(&mut p).map_err(|to| LedgerError::BadTransition {
        id,
        from: before.as_str(),
        to: to.as_str(),
    })?;
    p.updated_ms = now_ms;
    table.insert(id, encode(&p)?.as_slice()).map_err(storage)?;
    index.replace(&before_p, &p);
    if p.state.is_final() {
        index.open.remove(&id);
    } else {
        index.open.insert(id, p);
    }
    Ok(())
}
