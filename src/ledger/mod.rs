//! The spend ledger: every payment attempt with its state. It is the only source
//! of truth for spend. [`Ledger`] is the one interface the payment flow, the
//! reports and the resolver use; the store behind it is the embedded redb file
//! ([`embedded`], the default). Every store checks caps and records the
//! reservation in one atomic step, so concurrent calls can never overshoot a cap,
//! and every state change that precedes moving money is durable before the
//! caller continues.
//!
//! States: `Reserved → Signed → Settled | Rejected | AtRisk`, and `Released`
//! only when no payment can have happened.

pub mod embedded;
pub mod migrate;
pub mod postgres;
pub mod report;
pub mod window;

use crate::money::Usd;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Budget held; nothing signed yet.
    Reserved,
    /// Signed and persisted; the paid request may be on the wire.
    Signed,
    /// The seller accepted and settled the payment.
    Settled,
    /// The seller refused the payment; counted until it expires unused.
    Rejected,
    /// The outcome is unknown; counted until the chain says otherwise.
    AtRisk,
    /// No payment happened; not counted.
    Released,
}

impl State {
    /// Whether the amount counts against caps.
    pub fn counts(self) -> bool {
        self != State::Released
    }
    /// Whether the outcome is final.
    pub fn is_final(self) -> bool {
        matches!(self, State::Settled | State::Released)
    }
    /// The state named by [`State::as_str`].
    pub fn parse(s: &str) -> Option<State> {
        [
            State::Reserved,
            State::Signed,
            State::Settled,
            State::Rejected,
            State::AtRisk,
            State::Released,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            State::Reserved => "reserved",
            State::Signed => "signed",
            State::Settled => "settled",
            State::Rejected => "rejected",
            State::AtRisk => "at_risk",
            State::Released => "released",
        }
    }
}

/// One payment attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Payment {
    pub id: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub app: String,
    pub model: Option<String>,
    pub route: String,
    /// CAIP-2 network id.
    pub network: String,
    pub asset: String,
    pub pay_to: String,
    /// Atomic USDC units.
    pub amount: u64,
    pub payer: Option<String>,
    pub nonce: Option<String>,
    pub valid_before: Option<u64>,
    pub state: State,
    pub tx: Option<String>,
    pub note: Option<String>,
    /// The x402 `payment-identifier` id sent with this payment (the same on every
    /// re-send of it), when the seller declared the extension.
    #[serde(default)]
    pub payment_identifier: Option<String>,
    /// How many times the signed payment was sent (the first send and every
    /// re-send of the very same signature); 0 for records from before re-sends.
    #[serde(default)]
    pub attempts: u32,
    /// Why the last send did not bring the answer back, if one did not.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// The caps that apply to one reservation (taken from the config at call time).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Caps {
    pub app_per_call: Option<Usd>,
    pub app_daily: Option<Usd>,
    pub app_monthly: Option<Usd>,
    pub app_total: Option<Usd>,
    pub wallet_daily: Option<Usd>,
    pub wallet_monthly: Option<Usd>,
}

/// A request to hold budget for one payment.
#[derive(Debug, Clone)]
pub struct Reserve {
    pub now_ms: i64,
    pub app: String,
    pub model: Option<String>,
    pub route: String,
    pub network: String,
    pub asset: String,
    pub pay_to: String,
    pub amount: Usd,
    pub caps: Caps,
    /// The authorization's parameters, when they are chosen before reserving: the
    /// record is then created already signed-for (one durable commit instead of
    /// two), and counts as at risk if the process dies before its outcome.
    pub auth: Option<Auth>,
}

/// The parameters of a payment authorization that identify it on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The paying address.
    pub payer: String,
    /// EVM: the EIP-3009 nonce (0x-hex).
    pub nonce: String,
    /// EVM: validBefore, unix seconds.
    pub valid_before: u64,
    /// The x402 `payment-identifier` id sent with the payment, if any.
    pub payment_identifier: Option<String>,
}

/// Which cap refused a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapExceeded {
    /// e.g. `app_daily_cap_exceeded`.
    pub code: &'static str,
    pub message: String,
}

/// How a signed payment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Settled {
        tx: Option<String>,
    },
    Rejected {
        reason: String,
    },
    AtRisk {
        reason: String,
    },
    /// Only when the signature provably never left the process.
    Released {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger storage error: {0}")]
    Storage(String),
    #[error("the ledger {0} is in use by another process (is `x402d serve` already running?)")]
    Locked(PathBuf),
    #[error("payment #{0} is not in the ledger")]
    NoSuchPayment(u64),
    #[error("payment #{id} is {from}, it cannot become {to}")]
    BadTransition {
        id: u64,
        from: &'static str,
        to: &'static str,
    },
    #[error("the ledger writer has stopped")]
    Closed,
    /// The shared ledger database cannot be reached (team mode).
    #[error("the ledger database is unreachable ({0})")]
    Unavailable(String),
}

fn storage<E: std::fmt::Display>(e: E) -> LedgerError {
    LedgerError::Storage(e.to_string())
}

/// What startup recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Reservations that never reached "signed": released.
    pub released: usize,
    /// Signed without an outcome: now at-risk.
    pub at_risk: usize,
}

/// Counted spend in one window (released attempts never count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Payment attempts that count.
    pub calls: u64,
    /// Atomic units settled.
    pub settled: u64,
    /// Atomic units counted without being settled (reserved, signed, at-risk, rejected).
    pub unsettled: u64,
}

impl Totals {
    /// What counts against a cap.
    pub fn counted(&self) -> u64 {
        self.settled.saturating_add(self.unsettled)
    }

    fn add(&mut self, p: &Payment, sign: i8) {
        if !p.state.counts() {
            return;
        }
        let step = |v: &mut u64, by: u64| {
            *v = if sign > 0 {
                v.saturating_add(by)
            } else {
                v.saturating_sub(by)
            }
        };
        step(&mut self.calls, 1);
        if p.state == State::Settled {
            step(&mut self.settled, p.amount);
        } else {
            step(&mut self.unsettled, p.amount);
        }
    }
}

/// One app's (or the wallet's) totals per window, as of one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppTotals {
    pub today: Totals,
    pub month: Totals,
    pub total: Totals,
    /// Today first, then each day before it (as many as asked).
    pub days: Vec<(window::Day, Totals)>,
}

/// Every total a report needs, taken from the writer's in-memory index (no
/// record is read or decoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every app that has any record (released ones included), by name.
    pub apps: BTreeMap<String, AppTotals>,
    /// Wallet-wide.
    pub wallet: AppTotals,
    /// Records and their atomic amounts per state.
    pub states: BTreeMap<&'static str, (u64, u64)>,
    /// Number of records.
    pub records: u64,
}

/// What a store has done since it was opened (for `/metrics` and tests: counts,
/// not timings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Records decoded from storage (start-up reads only the open ones).
    pub records_decoded: u64,
    /// Commits made durable before their callers were answered (one fsync each).
    pub durable_commits: u64,
    /// Commits of outcomes nobody waits for, made durable by a later commit.
    pub non_durable_commits: u64,
    /// Commits made only to make earlier non-durable ones durable (when idle).
    pub flushes: u64,
}

/// What `x402d ledger verify` found: the totals recomputed from every record,
/// compared with the stored ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verify {
    /// Records read.
    pub records: u64,
    /// One line per stored total that differs from the records (empty: consistent).
    pub differences: Vec<String>,
}

impl Verify {
    pub fn is_ok(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Most per-day rows a report asks the writer for (ten years).
pub const MAX_REPORT_DAYS: u32 = 3660;

/// Called with the duration of each commit (seconds), for metrics.
pub type CommitObserver = Box<dyn Fn(f64) + Send + Sync>;

/// Key under which wallet-wide totals are kept (app names cannot contain '*').
pub(crate) const ALL: &str = "*";

/// The window a cap limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Span {
    Day,
    Month,
    Total,
}

/// Checks every cap of `r` against the counted totals `used(who, span)` (`who`
/// is the app, or [`ALL`] for the wallet), the same for every store. `used` is
/// asked only for the caps that are set, and the refusal message is formatted
/// only on refusal: the common case allocates nothing.
pub(crate) fn check_caps(
    r: &Reserve,
    tz: &TimeZone,
    used: impl Fn(&str, Span) -> u64,
) -> Result<(), CapExceeded> {
    let amt = r.amount;
    let app = r.app.as_str();
    if let Some(cap) = r.caps.app_per_call
        && amt > cap
    {
        return Err(CapExceeded {
            code: "app_per_call_cap_exceeded",
            message: format!("this call costs ${amt}, above app {app:?}'s per-call cap of ${cap}."),
        });
    }
    let checks = [
        (r.caps.app_daily, app, Span::Day, "app_daily_cap_exceeded"),
        (
            r.caps.app_monthly,
            app,
            Span::Month,
            "app_monthly_cap_exceeded",
        ),
        (r.caps.app_total, app, Span::Total, "app_total_cap_exceeded"),
        (
            r.caps.wallet_daily,
            ALL,
            Span::Day,
            "wallet_daily_cap_exceeded",
        ),
        (
            r.caps.wallet_monthly,
            ALL,
            Span::Month,
            "wallet_monthly_cap_exceeded",
        ),
    ];
    for (cap, who, span, code) in checks {
        let Some(cap) = cap else { continue };
        let spent = Usd(used(who, span));
        if spent.saturating_add(amt) <= cap {
            continue;
        }
        let resets = |end: jiff::Timestamp| window::show(end, tz);
        let whose = if who == ALL {
            "the wallet-wide".to_string()
        } else {
            format!("app {app:?}'s")
        };
        let what = match span {
            Span::Day => format!(
                "{whose} daily cap (resets {})",
                resets(window::day_end(r.now_ms, tz))
            ),
            Span::Month => format!(
                "{whose} monthly cap (resets {})",
                resets(window::month_end(r.now_ms, tz))
            ),
            Span::Total => format!("{whose} lifetime cap"),
        };
        return Err(CapExceeded {
            code,
            message: format!(
                "${spent} of the ${cap} in {what} is spent, pending or at risk; this call costs ${amt}."
            ),
        });
    }
    Ok(())
}

/// A store's answer to a reservation.
pub(crate) type ReserveAnswer = Result<Result<u64, CapExceeded>, LedgerError>;

/// Waits for a store's answer to a reservation, cancel-safe for every store: if
/// the caller stops waiting, a reservation already made for it is given to
/// `release` (the store's detached finish with [`orphan_release`]), so no
/// budget stays held by nobody.
pub(crate) async fn await_reservation(
    rx: tokio::sync::oneshot::Receiver<ReserveAnswer>,
    release: impl Fn(u64),
) -> ReserveAnswer {
    struct Pending<F: Fn(u64)> {
        rx: Option<tokio::sync::oneshot::Receiver<ReserveAnswer>>,
        release: F,
    }
    impl<F: Fn(u64)> Drop for Pending<F> {
        fn drop(&mut self) {
            let Some(mut rx) = self.rx.take() else { return };
            // After close() the store cannot deliver any more (it releases
            // instead), so an answer is either here now or handled there.
            rx.close();
            if let Ok(Ok(Ok(id))) = rx.try_recv() {
                (self.release)(id);
            }
        }
    }
    let mut pending = Pending {
        rx: Some(rx),
        release,
    };
    let rx = pending.rx.as_mut().ok_or(LedgerError::Closed)?;
    let answer = rx.await.map_err(|_| LedgerError::Closed)?;
    pending.rx = None;
    answer
}

/// How a reservation whose caller went away before signing ends.
pub(crate) fn orphan_release() -> Outcome {
    Outcome::Released {
        reason: "released: the caller went away before signing".into(),
    }
}

/// Handle to the ledger, whichever store is behind it; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Embedded(embedded::Embedded),
    Postgres(postgres::Postgres),
}

impl Ledger {
    /// Opens (or creates) the embedded ledger file, runs crash recovery and starts
    /// its writer.
    pub fn open(path: &Path, tz: TimeZone, now_ms: i64) -> Result<(Ledger, Recovery), LedgerError> {
        let (e, rec) = embedded::Embedded::open(path, tz, now_ms)?;
        Ok((
            Ledger {
                backend: Backend::Embedded(e),
            },
            rec,
        ))
    }

    /// Opens the ledger the config names (`[ledger] backend`), with recovery of
    /// this daemon's open records.
    pub async fn open_configured(
        cfg: &crate::config::Loaded,
        now_ms: i64,
    ) -> Result<(Ledger, Recovery), LedgerError> {
        match (&cfg.config.ledger.backend, &cfg.config.ledger.url) {
            (crate::config::LedgerBackend::Postgres, Some(url)) => {
                Ledger::open_postgres(url, &cfg.state_dir, cfg.timezone.clone(), now_ms).await
            }
            _ => Ledger::open(
                &cfg.state_dir.join("ledger.redb"),
                cfg.timezone.clone(),
                now_ms,
            ),
        }
    }

    /// Opens a team's PostgreSQL ledger as the daemon whose state dir is
    /// `state_dir` (its instance id lives there), with recovery of its own
    /// open records.
    pub async fn open_postgres(
        url: &str,
        state_dir: &Path,
        tz: TimeZone,
        now_ms: i64,
    ) -> Result<(Ledger, Recovery), LedgerError> {
        let (p, rec) = postgres::Postgres::open(url, state_dir, tz, now_ms).await?;
        Ok((
            Ledger {
                backend: Backend::Postgres(p),
            },
            rec,
        ))
    }

    /// A read-only handle on a team's database (the CLI when no daemon runs).
    pub async fn postgres_reader(url: &str, tz: TimeZone) -> Result<Ledger, LedgerError> {
        Ok(Ledger {
            backend: Backend::Postgres(postgres::Postgres::reader(url, tz).await?),
        })
    }

    /// Whether this daemon should resolve at-risk payments now: always for the
    /// embedded store; for a shared database, only the one daemon holding the
    /// resolver lock.
    pub async fn try_lead_resolver(&self) -> bool {
        match &self.backend {
            Backend::Embedded(_) => true,
            Backend::Postgres(p) => p.try_lead_resolver().await,
        }
    }

    /// Where the ledger lives, for `status` (a file path or a database URL
    /// without its password).
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Embedded(e) => e.path().display().to_string(),
            Backend::Postgres(p) => p.location(),
        }
    }

    /// Installs the commit-time observer (once).
    pub fn observe_commits(&self, f: CommitObserver) {
        match &self.backend {
            Backend::Embedded(e) => e.observe_commits(f),
            Backend::Postgres(p) => p.observe_commits(f),
        }
    }

    /// Holds budget for a payment, or says which cap refuses it. Durable before it
    /// answers. Cancel-safe: if the caller stops waiting, a reservation made for it
    /// is released, so no budget stays held by nobody.
    pub async fn reserve(&self, r: Reserve) -> Result<Result<u64, CapExceeded>, LedgerError> {
        match &self.backend {
            Backend::Embedded(e) => e.reserve(r).await,
            Backend::Postgres(p) => p.reserve(r).await,
        }
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
        match &self.backend {
            Backend::Embedded(e) => {
                e.signed_with_identifier(id, payer, nonce, valid_before, payment_identifier, now_ms)
                    .await
            }
            Backend::Postgres(p) => {
                p.signed_with_identifier(id, payer, nonce, valid_before, payment_identifier, now_ms)
                    .await
            }
        }
    }

    /// Records that a signed payment has now been sent `attempts` times, and why
    /// the last send failed (`None` when it brought an answer).
    pub async fn attempt(
        &self,
        id: u64,
        attempts: u32,
        last_error: Option<String>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        match &self.backend {
            Backend::Embedded(e) => e.attempt(id, attempts, last_error, now_ms).await,
            Backend::Postgres(p) => p.attempt(id, attempts, last_error, now_ms).await,
        }
    }

    /// Records how a reservation or payment ended, durably. Once this future has
    /// been polled the outcome is recorded even if the caller stops waiting.
    pub async fn finish(&self, id: u64, outcome: Outcome, now_ms: i64) -> Result<(), LedgerError> {
        match &self.backend {
            Backend::Embedded(e) => e.finish(id, outcome, now_ms).await,
            Backend::Postgres(p) => p.finish(id, outcome, now_ms).await,
        }
    }

    /// Records an outcome without waiting and without an fsync of its own (for
    /// `Drop` impls, and outcomes recorded after the answer is on its way). Any
    /// later op (a reservation, a read) sees its effect; it is made durable by the
    /// next durable commit or a flush. If the process dies before that, startup
    /// recovery reaches a fail-closed answer (reserved → released, signed →
    /// at-risk, resolved on chain).
    pub fn finish_detached(&self, id: u64, outcome: Outcome, now_ms: i64) {
        match &self.backend {
            Backend::Embedded(e) => e.finish_detached(id, outcome, now_ms),
            Backend::Postgres(p) => p.finish_detached(id, outcome, now_ms),
        }
    }

    /// Makes every outcome recorded so far durable (at shutdown: outcomes recorded
    /// with [`Ledger::finish_detached`] are otherwise made durable by the next
    /// durable commit, or a flush shortly after the store goes idle).
    pub async fn flush(&self) -> Result<(), LedgerError> {
        match &self.backend {
            Backend::Embedded(e) => e.flush().await,
            Backend::Postgres(p) => p.flush().await,
        }
    }

    /// What the store has done since it was opened (records decoded, commits
    /// with and without an fsync).
    pub fn stats(&self) -> Stats {
        match &self.backend {
            Backend::Embedded(e) => e.stats(),
            Backend::Postgres(p) => p.stats(),
        }
    }

    /// Recomputes every total from the records and compares them with the
    /// stored ones (reads the whole history: for `x402d ledger verify`).
    pub async fn verify(&self) -> Result<Verify, LedgerError> {
        match &self.backend {
            Backend::Embedded(e) => {
                e.sync().await?;
                let e = e.clone();
                blocking(move || e.verify()).await
            }
            Backend::Postgres(p) => p.verify().await,
        }
    }

    /// Re-keys the windows after a time-zone change.
    pub async fn set_timezone(&self, tz: TimeZone) -> Result<(), LedgerError> {
        match &self.backend {
            Backend::Embedded(e) => e.set_timezone(tz).await,
            Backend::Postgres(p) => p.set_timezone(tz).await,
        }
    }

    /// Payments, newest first, at most `limit`, optionally of one app.
    pub async fn payments(
        &self,
        app: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Payment>, LedgerError> {
        match &self.backend {
            Backend::Embedded(e) => {
                // After every op already queued (an outcome recorded detached).
                e.sync().await?;
                let (e, app) = (e.clone(), app.map(str::to_owned));
                blocking(move || e.payments(app.as_deref(), limit)).await
            }
            Backend::Postgres(p) => p.payments(app, limit).await,
        }
    }

    /// [`Ledger::payments`] read in place (tests that poll from sync closures).
    #[cfg(test)]
    pub(crate) fn payments_now(
        &self,
        app: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Payment>, LedgerError> {
        match &self.backend {
            Backend::Embedded(e) => e.payments(app, limit),
            Backend::Postgres(_) => Err(LedgerError::Storage("payments_now: embedded only".into())),
        }
    }

    /// Every payment, oldest first.
    pub async fn all(&self) -> Result<Vec<Payment>, LedgerError> {
        match &self.backend {
            Backend::Embedded(e) => {
                e.sync().await?;
                let e = e.clone();
                blocking(move || e.all()).await
            }
            Backend::Postgres(p) => p.all().await,
        }
    }

    /// Wallet-wide spend counted today (settled + pending + at-risk) and the part
    /// of all spend that has no final outcome yet; no scan of history.
    pub async fn summary(&self, now_ms: i64) -> Result<(Usd, Usd), LedgerError> {
        match &self.backend {
            Backend::Embedded(e) => e.summary(now_ms).await,
            Backend::Postgres(p) => p.summary(now_ms).await,
        }
    }

    /// Per-app and wallet-wide totals for today, this month, lifetime and the
    /// last `days` days (at most [`MAX_REPORT_DAYS`]), plus per-state counts;
    /// no record is read.
    pub async fn totals(&self, now_ms: i64, days: u32) -> Result<Snapshot, LedgerError> {
        match &self.backend {
            Backend::Embedded(e) => e.totals(now_ms, days).await,
            Backend::Postgres(p) => p.totals(now_ms, days).await,
        }
    }

    /// Payments still waiting for an outcome (at-risk, rejected-not-expired).
    pub async fn unresolved(&self) -> Result<Vec<Payment>, LedgerError> {
        match &self.backend {
            Backend::Embedded(e) => e.unresolved().await,
            Backend::Postgres(p) => p.unresolved().await,
        }
    }
}

/// Runs a blocking read off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LedgerError::Storage(format!("ledger read task failed: {e}")))?
}

pub use embedded::{
    count_offline, open_offline, read_all, read_payments, rebuild_offline, totals_offline,
    verify_offline, wait_closed,
};

#[cfg(test)]
mod tests;
