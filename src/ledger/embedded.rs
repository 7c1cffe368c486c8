//! The embedded ledger: one redb file, one writer thread. All writes go through
//! the writer, which checks caps and commits in the same transaction (group
//! commit: every op waiting when a transaction starts shares its fsync), so
//! concurrent calls can never overshoot a cap and every state change that
//! precedes moving money is durable before the caller continues.
//!
//! Beside the records, the file holds the writer's index (the `index` table:
//! window totals per app and wallet-wide, per-state counts, the apps, the set of
//! records without a final outcome, the next id), updated in the same
//! transaction as each change. Start-up reads that table and the open records
//! only, never the history; a file from before the index, or kept in another
//! time zone, is rebuilt from its records once and then persisted.
//!
//! Outcomes recorded without a waiter ([`Embedded::finish_detached`]) commit
//! without an fsync: the next durable commit (the next reservation, or a flush
//! when the writer goes idle) carries them to disk. A crash in between leaves
//! the record signed, which start-up recovery turns at-risk: fail closed.

use super::*;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;
use tokio::sync::oneshot;

pub(crate) const PAYMENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("payments");
/// Before the index: `next_id` only. Read once when an old file is rebuilt.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The writer's index, persisted (keys and values: see [`Key`]).
pub(crate) const INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index");
const NEXT_ID: &str = "next_id";
/// Version of the `index` table's layout; another value is rebuilt from records.
const FORMAT: u64 = 2;
/// Most ops committed in one transaction.
const MAX_BATCH: usize = 512;
/// Key under which wallet-wide totals are indexed (app names cannot contain '*').
/// How long outcomes may stay committed without an fsync while nothing else
/// commits durably (override: `X402D_LEDGER_FLUSH_MS`, for crash tests).
const FLUSH_AFTER: Duration = Duration::from_millis(500);

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
        /// `None` when nobody waits (see `Ledger::finish_detached`): committed
        /// without an fsync.
        reply: Option<oneshot::Sender<Result<(), LedgerError>>>,
    },
    SetTimezone(TimeZone, oneshot::Sender<Result<(), LedgerError>>),
    /// Makes every earlier commit durable.
    Flush(oneshot::Sender<Result<(), LedgerError>>),
    /// Read-only (like all below): answered once every earlier op is committed.
    Sync(oneshot::Sender<Result<(), LedgerError>>),
    Unresolved(oneshot::Sender<Result<Vec<Payment>, LedgerError>>),
    /// Wallet-wide counted spend today and the amount without a final outcome.
    Summary(i64, oneshot::Sender<Result<(Usd, Usd), LedgerError>>),
    /// The totals behind `spend`/`status`/`/metrics`, from memory.
    Totals {
        now_ms: i64,
        days: u32,
        reply: oneshot::Sender<Result<Snapshot, LedgerError>>,
    },
}

impl Op {
    fn is_read(&self) -> bool {
        matches!(
            self,
            Op::Sync(_) | Op::Unresolved(_) | Op::Summary(..) | Op::Totals { .. }
        )
    }
}

/// Counters of the store's work since it was opened.
#[derive(Default)]
struct Counters {
    decoded: AtomicU64,
    durable: AtomicU64,
    non_durable: AtomicU64,
    flushes: AtomicU64,
}

impl Counters {
    fn stats(&self) -> Stats {
        Stats {
            records_decoded: self.decoded.load(Ordering::Relaxed),
            durable_commits: self.durable.load(Ordering::Relaxed),
            non_durable_commits: self.non_durable.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }
}

/// The embedded (redb) ledger; cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    tx: mpsc::Sender<Op>,
    db: Arc<Database>,
    path: PathBuf,
    tz: Arc<std::sync::Mutex<TimeZone>>,
    observer: Arc<std::sync::OnceLock<CommitObserver>>,
    counters: Arc<Counters>,
}

impl Embedded {
    /// Opens (or creates) the ledger, runs crash recovery and starts the writer.
    /// Reads the persisted index and the open records only (a file without a
    /// current index is rebuilt from its records once).
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
        let counters = Arc::new(Counters::default());
        let loaded = {
            let rtx = db.begin_read().map_err(storage)?;
            Index::load(&rtx, &tz, &counters.decoded)?
        };
        let mut index = match loaded {
            Some(ix) => ix,
            None => rebuild(&db, tz.clone(), &counters.decoded)?,
        };
        let recovery = recover(&db, &mut index, now_ms)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let wdb = db.clone();
        let observer: Arc<std::sync::OnceLock<CommitObserver>> = Arc::default();
        let wobs = observer.clone();
        let wcounters = counters.clone();
        let (closed_tx, closed_rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                let db = writer(wdb, index, rx, wobs, wcounters);
                close(db);
                drop(closed_tx);
            })
            .map_err(storage)?;
        if let Ok(mut open) = OPEN_WRITERS.lock() {
            open.push(closed_rx);
        }
        Ok((
            Embedded {
                tx,
                db,
                path: path.to_path_buf(),
                tz: Arc::new(std::sync::Mutex::new(tz)),
                observer,
                counters,
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

    /// What the store has done since it was opened.
    pub fn stats(&self) -> Stats {
        self.counters.stats()
    }

    /// Sends one op to the writer and waits for its answer.
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
        await_reservation(rx, |id| {
            self.finish_detached(id, orphan_release(), crate::now_ms())
        })
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

    /// Records how a reservation or payment ended, durably.
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

    /// Records an outcome without waiting, and without an fsync of its own. The op
    /// joins the writer's queue behind everything already sent, so any later op
    /// (a reservation, a read) sees its effect; it reaches the disk with the next
    /// durable commit or flush. If the process dies first, startup recovery
    /// reaches a fail-closed answer (reserved → released, signed → at-risk). A
    /// transition the record no longer allows (it already ended) is logged and
    /// changes nothing.
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

    /// Makes every commit so far durable (at shutdown; the writer also does it
    /// by itself shortly after it goes idle).
    pub async fn flush(&self) -> Result<(), LedgerError> {
        self.ask(Op::Flush).await
    }

    /// Re-keys the windows after a time-zone change (rebuilt from the records
    /// once, then persisted).
    pub async fn set_timezone(&self, tz: TimeZone) -> Result<(), LedgerError> {
        if let Ok(mut g) = self.tz.lock() {
            *g = tz.clone();
        }
        self.ask(|tx| Op::SetTimezone(tz, tx)).await
    }

    /// Payments, newest first, reading only as many records as needed (blocking
    /// read, after every op already queued, detached outcomes included).
    pub fn payments(&self, app: Option<&str>, limit: usize) -> Result<Vec<Payment>, LedgerError> {
        read_payments_counted(&*self.db, app, limit, &self.counters.decoded)
    }

    /// Waits until every op queued so far is committed (so a read sees them).
    pub async fn sync(&self) -> Result<(), LedgerError> {
        self.ask(Op::Sync).await
    }

    /// Every payment (blocking read), oldest first.
    pub fn all(&self) -> Result<Vec<Payment>, LedgerError> {
        read_all_counted(&*self.db, &self.counters.decoded)
    }

    /// Recomputes every total from the records and compares (blocking read of the
    /// whole file, in one snapshot; the writer keeps working meanwhile).
    pub fn verify(&self) -> Result<Verify, LedgerError> {
        let tz = self.tz.lock().map_err(storage)?.clone();
        verify(&*self.db, &tz)
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

/// Opens a ledger file for the CLI when no daemon holds it. Opened read-write
/// because a file left by a killed daemon needs redb's repair pass; nothing is
/// written otherwise (except by `x402d ledger rebuild`).
pub fn open_offline(path: &Path) -> Result<Database, LedgerError> {
    match Database::open(path) {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            Err(LedgerError::Locked(path.to_path_buf()))
        }
        Err(e) => Err(storage(e)),
    }
}

/// The totals of a ledger file no daemon holds, from its persisted index (no
/// record decoded); from its records when the index is missing, stale or kept in
/// another zone (nothing is written: the daemon rebuilds it at its next start).
pub fn totals_offline(
    db: &impl ReadableDatabase,
    tz: &TimeZone,
    now_ms: i64,
    days: u32,
) -> Result<Snapshot, LedgerError> {
    let decoded = AtomicU64::new(0);
    let rtx = db.begin_read().map_err(storage)?;
    let ix = match Index::load(&rtx, tz, &decoded)? {
        Some(ix) => ix,
        None => Index::from_records(tz.clone(), &rtx, &decoded)?,
    };
    Ok(ix.totals(now_ms, days))
}

/// `x402d ledger verify` on a ledger file no daemon holds.
pub fn verify_offline(db: &impl ReadableDatabase, tz: &TimeZone) -> Result<Verify, LedgerError> {
    verify(db, tz)
}

/// How many records a ledger file holds (no record decoded).
pub fn count_offline(db: &impl ReadableDatabase) -> Result<u64, LedgerError> {
    let rtx = db.begin_read().map_err(storage)?;
    match rtx.open_table(PAYMENTS) {
        Ok(t) => t.len().map_err(storage),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(storage(e)),
    }
}

/// Rebuilds a ledger file's index from its records (`x402d ledger rebuild`,
/// only when no daemon holds it).
pub fn rebuild_offline(db: &Database, tz: &TimeZone) -> Result<Verify, LedgerError> {
    rebuild(db, tz.clone(), &AtomicU64::new(0))?;
    verify(db, tz)
}

pub fn read_all(db: &impl ReadableDatabase) -> Result<Vec<Payment>, LedgerError> {
    read_all_counted(db, &AtomicU64::new(0))
}

fn read_all_counted(
    db: &impl ReadableDatabase,
    decoded: &AtomicU64,
) -> Result<Vec<Payment>, LedgerError> {
    let rtx = db.begin_read().map_err(storage)?;
    records(&rtx, decoded)
}

/// Every record in one read snapshot, oldest first.
fn records(rtx: &ReadTransaction, decoded: &AtomicU64) -> Result<Vec<Payment>, LedgerError> {
    let mut out = Vec::new();
    each_record(rtx, decoded, |p| out.push(p))?;
    Ok(out)
}

/// Calls `f` with every record of one read snapshot, oldest first, one at a
/// time (a rebuild or a verify of a long history holds one record in memory).
fn each_record(
    rtx: &ReadTransaction,
    decoded: &AtomicU64,
    mut f: impl FnMut(Payment),
) -> Result<(), LedgerError> {
    let table = match rtx.open_table(PAYMENTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(storage(e)),
    };
    for item in table.iter().map_err(storage)? {
        let (_, v) = item.map_err(storage)?;
        f(decode(v.value(), decoded)?);
    }
    Ok(())
}

/// Payments, newest first, at most `limit`: reads from the end of the table and
/// stops there (with `app`, it reads past other apps' records until `limit` match).
pub fn read_payments(
    db: &impl ReadableDatabase,
    app: Option<&str>,
    limit: usize,
) -> Result<Vec<Payment>, LedgerError> {
    read_payments_counted(db, app, limit, &AtomicU64::new(0))
}

fn read_payments_counted(
    db: &impl ReadableDatabase,
    app: Option<&str>,
    limit: usize,
    decoded: &AtomicU64,
) -> Result<Vec<Payment>, LedgerError> {
    let rtx = db.begin_read().map_err(storage)?;
    let table = match rtx.open_table(PAYMENTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(storage(e)),
    };
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    for item in table.iter().map_err(storage)?.rev() {
        let (_, v) = item.map_err(storage)?;
        let p = decode(v.value(), decoded)?;
        if app.is_none_or(|a| a == p.app) {
            out.push(p);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

fn decode(b: &[u8], decoded: &AtomicU64) -> Result<Payment, LedgerError> {
    decoded.fetch_add(1, Ordering::Relaxed);
    serde_json::from_slice(b).map_err(|e| LedgerError::Storage(format!("corrupt record: {e}")))
}

fn encode(p: &Payment) -> Result<Vec<u8>, LedgerError> {
    serde_json::to_vec(p).map_err(storage)
}

/// Recomputes the index from the records of one snapshot and compares it with
/// the persisted one.
fn verify(db: &impl ReadableDatabase, tz: &TimeZone) -> Result<Verify, LedgerError> {
    let decoded = AtomicU64::new(0);
    let rtx = db.begin_read().map_err(storage)?;
    let want = Index::from_records(tz.clone(), &rtx, &decoded)?;
    let mut differences = Vec::new();
    let stored = match Index::read_raw(&rtx)? {
        None => {
            differences.push("the file has no index of totals yet".to_string());
            HashMap::new()
        }
        Some(s) => s,
    };
    let want_map: HashMap<Vec<u8>, Vec<u8>> = want
        .all_keys()
        .iter()
        .filter_map(|k| want.value_of(k).map(|v| (k.encode(), v)))
        .collect();
    let mut keys: Vec<&Vec<u8>> = want_map.keys().chain(stored.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (w, s) = (want_map.get(k), stored.get(k));
        if w == s {
            continue;
        }
        let what = Key::decode(k).map_or_else(|| format!("{k:?}"), |k| k.describe());
        let show = |v: Option<&Vec<u8>>| match (Key::decode(k), v) {
            (_, None) => "nothing".to_string(),
            (Some(key), Some(v)) => key.show_value(v),
            (None, Some(v)) => format!("{v:?}"),
        };
        differences.push(format!(
            "{what}: stored {}, the records say {}",
            show(s),
            show(w)
        ));
    }
    Ok(Verify {
        records: want.records,
        differences,
    })
}

/// Rebuilds the index from every record and persists it (durably), in one
/// transaction; the time zone and the format are stored with it.
fn rebuild(db: &Database, tz: TimeZone, decoded: &AtomicU64) -> Result<Index, LedgerError> {
    let mut ix = {
        let rtx = db.begin_read().map_err(storage)?;
        Index::from_records(tz, &rtx, decoded)?
    };
    if ix.records > 0 {
        tracing::info!(
            records = ix.records,
            "rebuilding the ledger's totals from its records (once: new format or time zone)"
        );
    }
    let wtx = db.begin_write().map_err(storage)?;
    {
        wtx.open_table(PAYMENTS).map_err(storage)?;
        wtx.delete_table(INDEX).map_err(storage)?;
        let mut t = wtx.open_table(INDEX).map_err(storage)?;
        ix.dirty = ix.all_keys().into_iter().collect();
        ix.persist(&mut t)?;
    }
    wtx.commit().map_err(storage)?;
    Ok(ix)
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
    if fixes.is_empty() {
        return Ok(rec);
    }
    let wtx = db.begin_write().map_err(storage)?;
    {
        let mut table = wtx.open_table(PAYMENTS).map_err(storage)?;
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
            let before = p.clone();
            finish(&mut p, outcome).map_err(|to| LedgerError::BadTransition {
                id: p.id,
                from: before.state.as_str(),
                to: to.as_str(),
            })?;
            p.updated_ms = now_ms;
            table
                .insert(p.id, encode(&p)?.as_slice())
                .map_err(storage)?;
            index.replace(&before, p);
        }
        let mut ixt = wtx.open_table(INDEX).map_err(storage)?;
        index.persist(&mut ixt)?;
    }
    wtx.commit().map_err(storage)?;
    Ok(rec)
}

/// One entry of the persisted index. Encoded keys start with a tag byte; values
/// are little-endian u64s (totals: calls, settled, unsettled).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Format,
    Tz,
    NextId,
    Records,
    /// A record without a final outcome (value empty).
    Open(u64),
    /// Records and their amount in one state.
    State(State),
    /// Records of one app (its presence lists the app).
    App(String),
    Day(String, window::Day),
    Month(String, window::Month),
    Total(String),
}

fn put_date(k: &mut Vec<u8>, year: i16, month: i8, day: i8) {
    k.extend_from_slice(&((year as u16) ^ 0x8000).to_be_bytes());
    k.push(month as u8);
    k.push(day as u8);
}

fn u64s<const N: usize>(v: &[u8]) -> Option<[u64; N]> {
    if v.len() != N * 8 {
        return None;
    }
    let mut out = [0u64; N];
    for (i, c) in v.chunks_exact(8).enumerate() {
        out[i] = u64::from_le_bytes(c.try_into().ok()?);
    }
    Some(out)
}

fn bytes_of(vs: &[u64]) -> Vec<u8> {
    vs.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Key {
    fn encode(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(16);
        match self {
            Key::Format => k.push(b'f'),
            Key::Tz => k.push(b'z'),
            Key::NextId => k.push(b'n'),
            Key::Records => k.push(b'r'),
            Key::Open(id) => {
                k.push(b'o');
                k.extend_from_slice(&id.to_be_bytes());
            }
            Key::State(s) => {
                k.push(b's');
                k.extend_from_slice(s.as_str().as_bytes());
            }
            Key::App(a) => {
                k.push(b'a');
                k.extend_from_slice(a.as_bytes());
            }
            Key::Day(who, d) => {
                k.push(b'd');
                put_date(&mut k, d.year(), d.month(), d.day());
                k.extend_from_slice(who.as_bytes());
            }
            Key::Month(who, m) => {
                k.push(b'm');
                put_date(&mut k, m.0, m.1, 0);
                k.extend_from_slice(who.as_bytes());
            }
            Key::Total(who) => {
                k.push(b't');
                k.extend_from_slice(who.as_bytes());
            }
        }
        k
    }

    fn decode(k: &[u8]) -> Option<Key> {
        let (&tag, rest) = k.split_first()?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let date = |b: &[u8]| -> Option<(i16, i8, i8)> {
            let y = (u16::from_be_bytes([*b.first()?, *b.get(1)?]) ^ 0x8000) as i16;
            Some((y, *b.get(2)? as i8, *b.get(3)? as i8))
        };
        Some(match tag {
            b'f' => Key::Format,
            b'z' => Key::Tz,
            b'n' => Key::NextId,
            b'r' => Key::Records,
            b'o' => Key::Open(u64::from_be_bytes(rest.try_into().ok()?)),
            b's' => Key::State(State::parse(std::str::from_utf8(rest).ok()?)?),
            b'a' => Key::App(text(rest)?),
            b'd' => {
                let (y, m, d) = date(rest)?;
                Key::Day(text(rest.get(4..)?)?, jiff::civil::Date::new(y, m, d).ok()?)
            }
            b'm' => {
                let (y, m, _) = date(rest)?;
                Key::Month(text(rest.get(4..)?)?, window::Month(y, m))
            }
            b't' => Key::Total(text(rest)?),
            _ => return None,
        })
    }

    /// For `ledger verify`.
    fn describe(&self) -> String {
        let who = |w: &str| {
            if w == ALL {
                "the wallet".to_string()
            } else {
                format!("app {w:?}")
            }
        };
        match self {
            Key::Format => "the index format".into(),
            Key::Tz => "the index time zone".into(),
            Key::NextId => "the next payment id".into(),
            Key::Records => "the number of records".into(),
            Key::Open(id) => format!("payment #{id} in the open set"),
            Key::State(s) => format!("records {}", s.as_str()),
            Key::App(a) => format!("records of app {a:?}"),
            Key::Day(w, d) => format!("{} on {d}", who(w)),
            Key::Month(w, m) => format!("{} in {}-{:02}", who(w), m.0, m.1),
            Key::Total(w) => format!("{} in total", who(w)),
        }
    }

    fn show_value(&self, v: &[u8]) -> String {
        match self {
            Key::Tz => String::from_utf8_lossy(v).into_owned(),
            Key::Open(_) => "open".into(),
            Key::State(_) => match u64s::<2>(v) {
                Some([n, amount]) => format!("{n} records, {amount} atomic units"),
                None => format!("{v:?}"),
            },
            Key::Day(..) | Key::Month(..) | Key::Total(_) => match u64s::<3>(v) {
                Some([calls, settled, unsettled]) => format!(
                    "{calls} calls, {settled} settled, {unsettled} unsettled (atomic units)"
                ),
                None => format!("{v:?}"),
            },
            _ => match u64s::<1>(v) {
                Some([n]) => n.to_string(),
                None => format!("{v:?}"),
            },
        }
    }
}

/// The persisted index as raw keys and values.
type RawIndex = HashMap<Vec<u8>, Vec<u8>>;

/// The time zone as stored with the index.
fn tz_id(tz: &TimeZone) -> String {
    match tz.iana_name() {
        Some(n) => n.to_string(),
        None => format!("{tz:?}"),
    }
}

/// The writer's totals of counted spend per window, the open records and the
/// counters; loaded from the `index` table at start and kept in step with it
/// (every change marks its keys dirty; the commit writes them).
struct Index {
    tz: TimeZone,
    day: HashMap<(String, window::Day), Totals>,
    month: HashMap<(String, window::Month), Totals>,
    total: HashMap<String, Totals>,
    /// Every app with a record, and how many it has.
    apps: BTreeMap<String, u64>,
    /// Records (count, amount) per state.
    states: HashMap<State, (u64, u64)>,
    records: u64,
    /// Records not yet final, by id (so transitions need no read).
    open: BTreeMap<u64, Payment>,
    next_id: u64,
    /// Keys changed since the last persist.
    dirty: HashSet<Key>,
}

impl Index {
    fn empty(tz: TimeZone) -> Index {
        Index {
            tz,
            day: HashMap::new(),
            month: HashMap::new(),
            total: HashMap::new(),
            apps: BTreeMap::new(),
            states: HashMap::new(),
            records: 0,
            open: BTreeMap::new(),
            next_id: 1,
            dirty: HashSet::new(),
        }
    }

    /// Every persisted entry, raw (for `verify`); `None` without an index table.
    fn read_raw(rtx: &ReadTransaction) -> Result<Option<RawIndex>, LedgerError> {
        let t = match rtx.open_table(INDEX) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        let mut out = HashMap::new();
        for item in t.iter().map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            out.insert(k.value().to_vec(), v.value().to_vec());
        }
        Ok(Some(out))
    }

    /// The persisted index, with the open records decoded; `None` when it is
    /// missing, of another format or zone, or does not match the records' count
    /// (then the caller rebuilds it from the records).
    fn load(
        rtx: &ReadTransaction,
        tz: &TimeZone,
        decoded: &AtomicU64,
    ) -> Result<Option<Index>, LedgerError> {
        let t = match rtx.open_table(INDEX) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        let get = |k: Key| -> Result<Option<Vec<u8>>, LedgerError> {
            Ok(t.get(k.encode().as_slice())
                .map_err(storage)?
                .map(|v| v.value().to_vec()))
        };
        if get(Key::Format)?.and_then(|v| u64s::<1>(&v)) != Some([FORMAT]) {
            return Ok(None);
        }
        if get(Key::Tz)?.as_deref() != Some(tz_id(tz).as_bytes()) {
            return Ok(None);
        }
        let payments = match rtx.open_table(PAYMENTS) {
            Ok(p) => Some(p),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(storage(e)),
        };
        let on_file = match &payments {
            Some(p) => p.len().map_err(storage)?,
            None => 0,
        };
        let mut ix = Index::empty(tz.clone());
        let mut open_ids = Vec::new();
        for item in t.iter().map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            let (k, v) = (k.value(), v.value());
            let corrupt = || LedgerError::Storage(format!("corrupt index entry {k:?}"));
            let key = Key::decode(k).ok_or_else(corrupt)?;
            let totals = || {
                u64s::<3>(v)
                    .map(|[calls, settled, unsettled]| Totals {
                        calls,
                        settled,
                        unsettled,
                    })
                    .ok_or_else(corrupt)
            };
            let one = || u64s::<1>(v).map(|[n]| n).ok_or_else(corrupt);
            match key {
                Key::Format | Key::Tz => {}
                Key::NextId => ix.next_id = one()?,
                Key::Records => ix.records = one()?,
                Key::Open(id) => open_ids.push(id),
                Key::State(s) => {
                    let [n, a] = u64s::<2>(v).ok_or_else(corrupt)?;
                    ix.states.insert(s, (n, a));
                }
                Key::App(a) => {
                    ix.apps.insert(a, one()?);
                }
                Key::Day(w, d) => {
                    ix.day.insert((w, d), totals()?);
                }
                Key::Month(w, m) => {
                    ix.month.insert((w, m), totals()?);
                }
                Key::Total(w) => {
                    ix.total.insert(w, totals()?);
                }
            }
        }
        if ix.records != on_file {
            tracing::warn!(
                indexed = ix.records,
                on_file,
                "the ledger's index does not match its records; rebuilding it"
            );
            return Ok(None);
        }
        if let Some(p) = &payments {
            for id in open_ids {
                let Some(v) = p.get(id).map_err(storage)? else {
                    tracing::warn!(
                        id,
                        "the ledger's open set names a missing record; rebuilding"
                    );
                    return Ok(None);
                };
                let p = decode(v.value(), decoded)?;
                if p.state.is_final() {
                    // Changed behind the index's back (an older x402d ran on it).
                    tracing::warn!(
                        id,
                        "the ledger's open set names a finished record; rebuilding"
                    );
                    return Ok(None);
                }
                ix.open.insert(id, p);
            }
        }
        Ok(Some(ix))
    }

    /// The index of every record of one snapshot (all keys dirty: see `rebuild`).
    fn from_records(
        tz: TimeZone,
        rtx: &ReadTransaction,
        decoded: &AtomicU64,
    ) -> Result<Index, LedgerError> {
        let mut ix = Index::empty(tz);
        if let Ok(meta) = rtx.open_table(META)
            && let Some(v) = meta.get(NEXT_ID).map_err(storage)?
        {
            ix.next_id = v.value();
        }
        each_record(rtx, decoded, |p| {
            ix.next_id = ix.next_id.max(p.id + 1);
            ix.add(p);
        })?;
        ix.dirty.clear();
        Ok(ix)
    }

    /// Every key the index has a value for.
    fn all_keys(&self) -> Vec<Key> {
        let mut keys = vec![Key::Format, Key::Tz, Key::NextId, Key::Records];
        keys.extend(self.open.keys().map(|&id| Key::Open(id)));
        keys.extend(self.states.keys().map(|&s| Key::State(s)));
        keys.extend(self.apps.keys().map(|a| Key::App(a.clone())));
        keys.extend(self.day.keys().map(|(w, d)| Key::Day(w.clone(), *d)));
        keys.extend(self.month.keys().map(|(w, m)| Key::Month(w.clone(), *m)));
        keys.extend(self.total.keys().map(|w| Key::Total(w.clone())));
        keys
    }

    /// The value stored under `k` (`None`: no entry).
    fn value_of(&self, k: &Key) -> Option<Vec<u8>> {
        let t = |t: &Totals| bytes_of(&[t.calls, t.settled, t.unsettled]);
        let some = |t: &&Totals| **t != Totals::default();
        match k {
            Key::Format => Some(bytes_of(&[FORMAT])),
            Key::Tz => Some(tz_id(&self.tz).into_bytes()),
            Key::NextId => Some(bytes_of(&[self.next_id])),
            Key::Records => Some(bytes_of(&[self.records])),
            Key::Open(id) => self.open.contains_key(id).then(Vec::new),
            Key::State(s) => self
                .states
                .get(s)
                .filter(|(n, _)| *n > 0)
                .map(|(n, a)| bytes_of(&[*n, *a])),
            Key::App(a) => self.apps.get(a).map(|n| bytes_of(&[*n])),
            // A window nothing counts in any more is no entry (the records say the same).
            Key::Day(w, d) => self.day.get(&(w.clone(), *d)).filter(some).map(t),
            Key::Month(w, m) => self.month.get(&(w.clone(), *m)).filter(some).map(t),
            Key::Total(w) => self.total.get(w).filter(some).map(t),
        }
    }

    /// Writes the keys changed since the last persist (in the caller's transaction).
    fn persist(&mut self, t: &mut redb::Table<&[u8], &[u8]>) -> Result<(), LedgerError> {
        let mut dirty: Vec<(Vec<u8>, Key)> = self.dirty.drain().map(|k| (k.encode(), k)).collect();
        dirty.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, k) in dirty {
            match self.value_of(&k) {
                Some(v) => {
                    t.insert(key.as_slice(), v.as_slice()).map_err(storage)?;
                }
                None => {
                    t.remove(key.as_slice()).map_err(storage)?;
                }
            }
        }
        Ok(())
    }

    /// A new record.
    fn add(&mut self, p: Payment) {
        self.records += 1;
        *self.apps.entry(p.app.clone()).or_default() += 1;
        self.dirty.insert(Key::Records);
        self.dirty.insert(Key::App(p.app.clone()));
        self.dirty.insert(Key::NextId);
        self.apply(&p, 1);
        self.set_open(p);
    }

    /// A record changed from `before` to `after` (same id, app, amount, time).
    fn replace(&mut self, before: &Payment, after: Payment) {
        self.apply(before, -1);
        self.apply(&after, 1);
        self.set_open(after);
    }

    fn set_open(&mut self, p: Payment) {
        let (id, open) = (p.id, !p.state.is_final());
        let changed = if open {
            self.open.insert(id, p).is_none()
        } else {
            self.open.remove(&id).is_some()
        };
        if changed {
            self.dirty.insert(Key::Open(id));
        }
    }

    fn apply(&mut self, p: &Payment, sign: i8) {
        let st = self.states.entry(p.state).or_default();
        if sign > 0 {
            *st = (st.0 + 1, st.1.saturating_add(p.amount));
        } else {
            *st = (st.0.saturating_sub(1), st.1.saturating_sub(p.amount));
        }
        self.dirty.insert(Key::State(p.state));
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
            self.dirty.insert(Key::Day(who.to_string(), d));
            self.dirty.insert(Key::Month(who.to_string(), m));
            self.dirty.insert(Key::Total(who.to_string()));
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
            apps: self.apps.keys().map(|a| (a.clone(), of(a))).collect(),
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
        let d = window::day(r.now_ms, &self.tz);
        let m = window::month(r.now_ms, &self.tz);
        check_caps(r, &self.tz, |who, span| {
            let who = who.to_string();
            match span {
                Span::Day => self.day.get(&(who, d)),
                Span::Month => self.month.get(&(who, m)),
                Span::Total => self.total.get(&who),
            }
            .map_or(0, Totals::counted)
        })
    }
}

/// How long outcomes may wait for an fsync while the writer is idle.
fn flush_after() -> Duration {
    std::env::var("X402D_LEDGER_FLUSH_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(FLUSH_AFTER, Duration::from_millis)
}

fn writer(
    db: Arc<Database>,
    mut index: Index,
    rx: mpsc::Receiver<Op>,
    observer: Arc<std::sync::OnceLock<CommitObserver>>,
    counters: Arc<Counters>,
) -> Arc<Database> {
    let observe = |started: std::time::Instant| {
        if let Some(f) = observer.get() {
            f(started.elapsed().as_secs_f64());
        }
    };
    let flush_after = flush_after();
    // When the oldest commit made without an fsync (and not yet followed by a
    // durable one) must be made durable: counted from that commit, not from the
    // last op, so steady reads or refused calls never postpone it.
    let mut flush_by: Option<std::time::Instant> = None;
    loop {
        let first = if let Some(deadline) = flush_by {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(wait) {
                Ok(op) => op,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let started = std::time::Instant::now();
                    match flush(&db) {
                        Ok(()) => {
                            counters.flushes.fetch_add(1, Ordering::Relaxed);
                            flush_by = None;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "ledger flush failed; retrying");
                            flush_by = Some(started + flush_after);
                        }
                    }
                    observe(started);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(op) => op,
                Err(_) => break,
            }
        };
        // Reads are answered after the writes queued with them are committed, so
        // a read sees every op sent before it (detached outcomes included).
        let mut batch = Vec::new();
        let mut reads = Vec::new();
        let mut next = Some(first);
        while let Some(op) = next.take() {
            if op.is_read() {
                reads.push(op);
            } else {
                batch.push(op);
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let started = std::time::Instant::now();
            if let Some(durable) = run_batch(&db, &mut index, batch, &counters) {
                observe(started);
                flush_by = if durable {
                    None
                } else {
                    flush_by.or(Some(started + flush_after))
                };
            }
        }
        for op in reads {
            answer(op, &index);
        }
    }
    if flush_by.is_some()
        && let Err(e) = flush(&db)
    {
        tracing::error!(error = %e, "ledger flush at exit failed");
    }
    db
}

/// Writer threads still running, each signalling (by hanging up) once its file
/// is closed.
static OPEN_WRITERS: std::sync::Mutex<Vec<mpsc::Receiver<()>>> = std::sync::Mutex::new(Vec::new());

/// Closes the file once the writer holds the last reference (the handles that
/// sent its last ops drop theirs a moment after): redb marks a file closed only
/// when the `Database` drops, and a file not marked closed is repaired at the
/// next open, a walk of the whole file (seconds at a million payments).
fn close(db: Arc<Database>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut db = db;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => {
                drop(db);
                return;
            }
            Err(still_shared) if std::time::Instant::now() < deadline => {
                db = still_shared;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => {
                tracing::warn!("ledger still referenced at exit; the next start repairs it");
                return;
            }
        }
    }
}

/// Waits (at most `limit`) until every ledger writer of this process has closed
/// its file. Called last on the way out, after every handle was dropped, so the
/// process does not exit between a writer's last commit and the close that lets
/// the next start skip redb's repair pass.
pub fn wait_closed(limit: Duration) {
    let waiting = match OPEN_WRITERS.lock() {
        Ok(mut w) => std::mem::take(&mut *w),
        Err(_) => return,
    };
    let deadline = std::time::Instant::now() + limit;
    for rx in waiting {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // Disconnected = closed; a timeout means a handle outlived the runtime.
        let _ = rx.recv_timeout(left);
    }
}

/// Answers a read-only op from memory.
fn answer(op: Op, index: &Index) {
    match op {
        Op::Sync(reply) => {
            let _ = reply.send(Ok(()));
        }
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
        _ => tracing::error!("a ledger write was answered as a read"),
    }
}

/// A commit with nothing in it but an fsync: makes earlier non-durable ones durable.
fn flush(db: &Database) -> Result<(), LedgerError> {
    let wtx = db.begin_write().map_err(storage)?;
    wtx.commit().map_err(storage)
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

/// Commits a batch (and the release of any reservation whose caller went away);
/// whether the batch's commit was durable, `None` when nothing was committed.
fn run_batch(
    db: &Database,
    index: &mut Index,
    batch: Vec<Op>,
    counters: &Counters,
) -> Option<bool> {
    let (orphans, committed) = commit_batch(db, index, batch, counters);
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
        // Detached releases: a commit without an fsync, left for the flush.
        if let Some(false) = commit_batch(db, index, ops, counters).1 {
            return Some(false);
        }
    }
    committed
}

/// Builds the record a reservation creates: signed-for when the authorization's
/// parameters came with it (one commit, and at risk if the process dies).
fn new_record(id: u64, r: Reserve) -> Payment {
    let (state, payer, nonce, valid_before, payment_identifier) = match r.auth {
        Some(a) => (
            State::Signed,
            Some(a.payer),
            Some(a.nonce),
            Some(a.valid_before),
            a.payment_identifier,
        ),
        None => (State::Reserved, None, None, None, None),
    };
    Payment {
        id,
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
    }
}

/// Commits one batch and answers its callers; returns the ids of reservations
/// made for callers that no longer wait, and whether the commit was durable
/// (`None`: nothing to commit). It is durable when an op whose caller waits
/// changed something; a batch of detached outcomes commits without an fsync.
fn commit_batch(
    db: &Database,
    index: &mut Index,
    batch: Vec<Op>,
    counters: &Counters,
) -> (Vec<u64>, Option<bool>) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut new_tz = None;
    let mut flushes = Vec::new();
    let mut committed = true;
    let mut durable = false;
    let result = (|| -> Result<(), LedgerError> {
        let mut wtx = db.begin_write().map_err(storage)?;
        {
            let mut table = wtx.open_table(PAYMENTS).map_err(storage)?;
            for op in batch {
                match op {
                    Op::Reserve(r, reply) => {
                        let res = match index.check(&r) {
                            Err(e) => Err(e),
                            Ok(()) => {
                                let p = new_record(index.next_id, *r);
                                table
                                    .insert(p.id, encode(&p)?.as_slice())
                                    .map_err(storage)?;
                                index.next_id += 1;
                                let id = p.id;
                                index.add(p);
                                durable = true;
                                Ok(id)
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
                        let res = transition(index, &mut table, id, now_ms, counters, |p| {
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
                        durable |= res.is_ok();
                        replies.push(Reply::Unit(reply, res));
                    }
                    Op::Attempt {
                        id,
                        attempts,
                        last_error,
                        now_ms,
                        reply,
                    } => {
                        let res = transition(index, &mut table, id, now_ms, counters, |p| {
                            if p.state != State::Signed {
                                return Err(State::Signed);
                            }
                            p.attempts = attempts;
                            if last_error.is_some() {
                                p.last_error = last_error;
                            }
                            Ok(())
                        });
                        durable |= res.is_ok();
                        replies.push(Reply::Unit(reply, res));
                    }
                    Op::Finish {
                        id,
                        outcome,
                        now_ms,
                        reply,
                    } => {
                        let res = transition(index, &mut table, id, now_ms, counters, |p| {
                            // A signed payment that got an answer was sent at least
                            // once; re-sends record their own count (Op::Attempt).
                            let sent = !matches!(outcome, Outcome::Released { .. });
                            if p.state == State::Signed && sent && p.attempts == 0 {
                                p.attempts = 1;
                            }
                            finish(p, outcome)
                        });
                        replies.push(match reply {
                            Some(reply) => {
                                durable |= res.is_ok();
                                Reply::Unit(reply, res)
                            }
                            None => Reply::Detached(id, res),
                        });
                    }
                    Op::SetTimezone(tz, reply) => {
                        replies.push(Reply::Unit(reply, Ok(())));
                        new_tz = Some(tz);
                    }
                    Op::Flush(reply) => {
                        durable = true;
                        flushes.push(reply);
                    }
                    // Never batched (see `writer`).
                    read => answer(read, index),
                }
            }
            if index.dirty.is_empty() && flushes.is_empty() {
                // Nothing changed (e.g. only refused reservations): no commit.
                committed = false;
            } else {
                let mut ixt = wtx.open_table(INDEX).map_err(storage)?;
                index.persist(&mut ixt)?;
            }
        }
        if !committed {
            return wtx.abort().map_err(storage);
        }
        if !durable {
            wtx.set_durability(Durability::None).map_err(storage)?;
        }
        wtx.commit().map_err(storage)?;
        let c = if durable {
            &counters.durable
        } else {
            &counters.non_durable
        };
        c.fetch_add(1, Ordering::Relaxed);
        Ok(())
    })();
    if let Err(e) = &result {
        tracing::error!(error = %e, "ledger commit failed; reloading the index from the file");
        index.dirty.clear();
        let tz = index.tz.clone();
        let reloaded = db
            .begin_read()
            .map_err(storage)
            .and_then(|rtx| Index::load(&rtx, &tz, &counters.decoded));
        match reloaded {
            Ok(Some(ix)) => *index = ix,
            Ok(None) => match rebuild(db, tz, &counters.decoded) {
                Ok(ix) => *index = ix,
                Err(e) => tracing::error!(error = %e, "ledger index rebuild failed"),
            },
            Err(e) => tracing::error!(error = %e, "ledger index reload failed"),
        }
    }
    // A time-zone change re-keys every window: rebuilt from the records, persisted.
    if let Some(tz) = new_tz
        && result.is_ok()
    {
        match rebuild(db, tz, &counters.decoded) {
            Ok(ix) => *index = ix,
            Err(e) => tracing::error!(error = %e, "ledger index rebuild failed"),
        }
    }
    for reply in flushes {
        let _ = reply.send(result.clone());
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
                // Not committed: the record keeps its last committed state, which
                // startup recovery settles (reserved → released, signed → at-risk).
                tracing::error!(id, error = %e, "detached ledger update failed to commit");
            }
        }
    }
    (orphans, (committed && result.is_ok()).then_some(durable))
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
    counters: &Counters,
    f: impl FnOnce(&mut Payment) -> Result<(), State>,
) -> Result<(), LedgerError> {
    let mut p = match index.open.get(&id) {
        Some(p) => p.clone(),
        None => {
            let stored = table.get(id).map_err(storage)?;
            match stored {
                Some(v) => decode(v.value(), &counters.decoded)?,
                None => return Err(LedgerError::NoSuchPayment(id)),
            }
        }
    };
    let before = p.clone();
    f(&mut p).map_err(|to| LedgerError::BadTransition {
        id,
        from: before.state.as_str(),
        to: to.as_str(),
    })?;
    p.updated_ms = now_ms;
    table.insert(id, encode(&p)?.as_slice()).map_err(storage)?;
    index.replace(&before, p);
    Ok(())
}
