//! The PostgreSQL ledger (team mode): several daemons share one database, so
//! they share caps. The same states, transitions and crash recovery as the
//! embedded store, with the database doing the serialising:
//!
//! - A reservation is one SQL transaction that locks the per-window total rows
//!   it is checked against (app day/month/lifetime, wallet-wide
//!   day/month/lifetime; always in `(scope, win)` order, so two reservations
//!   never deadlock), checks every cap, inserts the record and adds it to the
//!   totals. Every later transition updates the record and the totals in one
//!   transaction. No daemon can overshoot a cap another daemon is filling.
//! - Each record carries the instance id of the daemon that made it, stable per
//!   state dir (`<state_dir>/instance-id`): a restarted daemon finds and recovers
//!   its own open records (reserved → released, signed → at-risk), never another
//!   live daemon's. A session advisory lock on that id refuses a second daemon
//!   started on the same state dir.
//! - One daemon at a time resolves at-risk payments: the holder of a session
//!   advisory lock ([`Postgres::try_lead_resolver`]).
//! - Unreachable database: every op fails with [`LedgerError::Unavailable`]
//!   before anything is signed (paid calls answer `ledger_unavailable`); the pool
//!   reconnects by itself once the database is back.
//! - All daemons of a team count days in one time zone, the database's
//!   (`x402d_meta.timezone`): a daemon whose `[limits] timezone` differs re-keys
//!   the totals to its own at start or reload, and the others then refuse paid
//!   calls (fail closed) until they are given the same zone.

use super::*;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

/// Versioned schema: migration `n` (1-based) is `MIGRATIONS[n - 1]`, applied once,
/// in order, each in its own transaction, under an advisory lock.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE x402d_payments (
    id                 BIGINT PRIMARY KEY,
    created_ms         BIGINT NOT NULL,
    updated_ms         BIGINT NOT NULL,
    app                TEXT   NOT NULL,
    model              TEXT,
    route              TEXT   NOT NULL,
    network            TEXT   NOT NULL,
    asset              TEXT   NOT NULL,
    pay_to             TEXT   NOT NULL,
    amount             BIGINT NOT NULL CHECK (amount >= 0),
    payer              TEXT,
    nonce              TEXT,
    valid_before       BIGINT,
    state              TEXT   NOT NULL,
    tx                 TEXT,
    note               TEXT,
    payment_identifier TEXT,
    attempts           BIGINT NOT NULL DEFAULT 0,
    last_error         TEXT,
    instance           TEXT   NOT NULL
);
CREATE SEQUENCE x402d_payment_ids;
CREATE INDEX x402d_payments_open ON x402d_payments (instance) WHERE state IN ('reserved', 'signed');
CREATE INDEX x402d_payments_unresolved ON x402d_payments (id) WHERE state IN ('at_risk', 'rejected');
CREATE INDEX x402d_payments_app ON x402d_payments (app, id);
CREATE TABLE x402d_totals (
    scope     TEXT   NOT NULL,
    win       TEXT   NOT NULL,
    calls     BIGINT NOT NULL DEFAULT 0,
    settled   BIGINT NOT NULL DEFAULT 0,
    unsettled BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, win)
);
CREATE TABLE x402d_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"#];

/// Advisory lock keys (one namespace per purpose; instance keys are hashed).
const LOCK_MIGRATE: i64 = 0x7840_3264_0001;
const LOCK_RESOLVER: i64 = 0x7840_3264_0002;
/// Scope of the wallet-wide totals (app names cannot contain '*').
/// How long an op waits for a pooled connection, or to open one.
const CONNECT_WAIT: Duration = Duration::from_secs(3);

const COLS: &str = "id, created_ms, updated_ms, app, model, route, network, asset, pay_to, amount, \
     payer, nonce, valid_before, state, tx, note, payment_identifier, attempts, last_error";

/// Where to connect, parsed from `[ledger] url` with the password resolved.
#[derive(Clone)]
pub struct Target {
    cfg: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// The URL without its password (for `status`, logs and errors).
    shown: String,
}

/// `url` without a password (in the user-info part or a `password=` parameter).
pub fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let auth = match auth.rsplit_once('@') {
                Some((user, host)) => {
                    let user = user.split_once(':').map_or(user, |(u, _)| u);
                    format!("{user}@{host}")
                }
                None => auth.to_string(),
            };
            format!("{scheme}://{auth}{path}")
        }
        None => head.to_string(),
    };
    if let Some(q) = query {
        let kept: Vec<&str> = q
            .split('&')
            .filter(|kv| !kv.to_ascii_lowercase().starts_with("password="))
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

/// Parses a `postgres://` URL (no password lookup): checked at config load.
/// Errors never repeat the URL (it may hold a password).
pub fn parse_url(url: &str) -> Result<Target, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must be a postgres://user@host:port/db URL".into());
    }
    // sslmode and sslrootcert are handled here (rustls), the rest by the driver.
    let (head, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mode = "prefer".to_string();
    let mut root: Option<String> = None;
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("sslmode", v)) => mode = v.to_string(),
            Some(("sslrootcert", v)) => root = Some(v.to_string()),
            _ => rest.push(kv),
        }
    }
    let ssl = match mode.as_str() {
        "disable" => tokio_postgres::config::SslMode::Disable,
        "prefer" => tokio_postgres::config::SslMode::Prefer,
        // rustls always verifies the server certificate (against the web PKI
        // roots, or `sslrootcert`), so require = verify-ca = verify-full here.
        "require" | "verify-ca" | "verify-full" => tokio_postgres::config::SslMode::Require,
        other => {
            return Err(format!(
                "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    let driver_url = if rest.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", rest.join("&"))
    };
    let mut cfg: tokio_postgres::Config = driver_url
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("not a valid PostgreSQL URL ({e})"))?;
    cfg.ssl_mode(ssl);
    cfg.connect_timeout(CONNECT_WAIT);
    cfg.application_name("x402d");
    if cfg.get_user().is_none() {
        return Err("names no user (postgres://USER@host/db)".into());
    }
    let tls = tls_config(root.as_deref())?;
    Ok(Target {
        cfg,
        tls,
        shown: redact(url),
    })
}

fn tls_config(root: Option<&str>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = root {
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("sslrootcert {path:?}: {e}"))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("sslrootcert {path:?}: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
}

/// The target of `[ledger] url`, with the password from the URL, else `$PGPASSWORD`,
/// else the systemd credential `$CREDENTIALS_DIRECTORY/pgpassword`.
pub fn target(url: &str) -> Result<Target, LedgerError> {
    let mut t = parse_url(url).map_err(|m| LedgerError::Storage(format!("[ledger] url: {m}")))?;
    if t.cfg.get_password().is_none() {
        if let Some(p) = std::env::var_os("PGPASSWORD") {
            t.cfg.password(p.into_encoded_bytes());
        } else if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let f = std::path::Path::new(&dir).join("pgpassword");
            if let Ok(mut p) = std::fs::read(&f) {
                while p.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    p.pop();
                }
                t.cfg.password(p);
            }
        }
    }
    Ok(t)
}

/// Internal error: a driver error (classified at the edge) or a ledger answer.
enum E {
    Pg(tokio_postgres::Error),
    Pool(String),
    L(LedgerError),
}

impl From<tokio_postgres::Error> for E {
    fn from(e: tokio_postgres::Error) -> E {
        E::Pg(e)
    }
}
impl From<LedgerError> for E {
    fn from(e: LedgerError) -> E {
        E::L(e)
    }
}
impl From<deadpool_postgres::PoolError> for E {
    fn from(e: deadpool_postgres::PoolError) -> E {
        match e {
            // Connecting failed: classify the driver's own error (a refused
            // password is not an outage).
            deadpool_postgres::PoolError::Backend(e) => E::Pg(e),
            e => E::Pool(e.to_string()),
        }
    }
}

impl E {
    /// Serialization failure or deadlock: the transaction may simply be run again.
    fn retry(&self) -> bool {
        matches!(self, E::Pg(e) if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
            || e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED))
    }

    fn into_ledger(self) -> LedgerError {
        match self {
            E::L(e) => e,
            E::Pool(m) => LedgerError::Unavailable(m),
            E::Pg(e) => classify(&e),
        }
    }
}

/// A driver error: the database answered with an error (storage), or it could
/// not be reached / the connection broke / the server is shutting down
/// (unavailable, and nothing was committed by us that we know of).
fn classify(e: &tokio_postgres::Error) -> LedgerError {
    match e.as_db_error() {
        Some(db) => {
            let class = &db.code().code()[..2];
            // 08 connection exception, 57 operator intervention (shutdown), 53 resources.
            if matches!(class, "08" | "57" | "53") {
                LedgerError::Unavailable(db.message().to_string())
            } else {
                LedgerError::Storage(format!("PostgreSQL: {}", db.message()))
            }
        }
        None => {
            let mut m = e.to_string();
            if let Some(src) = std::error::Error::source(e) {
                m = format!("{m}: {src}");
            }
            LedgerError::Unavailable(m)
        }
    }
}

/// The PostgreSQL ledger; cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    target: Target,
    tz: std::sync::RwLock<TimeZone>,
    instance: String,
    observer: OnceLock<CommitObserver>,
    /// The long-lived session holding this instance's lock and, when leading,
    /// the resolver lock (`None` for a reader, or after the connection broke).
    session: tokio::sync::Mutex<Session>,
    /// Whether this handle owns records (a daemon) or only reads (the CLI).
    owner: bool,
    /// Committed write transactions, and records read at start (recovery).
    commits: std::sync::atomic::AtomicU64,
    decoded: std::sync::atomic::AtomicU64,
    /// Detached outcomes not yet committed, and a wake-up when that reaches 0.
    detached: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

#[derive(Default)]
struct Session {
    client: Option<tokio_postgres::Client>,
    leading: bool,
}

/// A change to one record, re-appliable (a transaction may be retried).
#[derive(Clone)]
enum Change {
    Signed {
        payer: String,
        nonce: String,
        valid_before: u64,
        payment_identifier: Option<String>,
    },
    Attempt {
        attempts: u32,
        last_error: Option<String>,
    },
    Finish(Outcome),
}

impl Change {
    fn apply(&self, p: &mut Payment) -> Result<(), State> {
        match self.clone() {
            Change::Signed {
                payer,
                nonce,
                valid_before,
                payment_identifier,
            } => {
                if p.state != State::Reserved {
                    return Err(State::Signed);
                }
                p.state = State::Signed;
                p.payer = Some(payer);
                p.nonce = Some(nonce);
                p.valid_before = Some(valid_before);
                p.payment_identifier = payment_identifier;
                Ok(())
            }
            Change::Attempt {
                attempts,
                last_error,
            } => {
                if p.state != State::Signed {
                    return Err(State::Signed);
                }
                p.attempts = attempts;
                if last_error.is_some() {
                    p.last_error = last_error;
                }
                Ok(())
            }
            Change::Finish(outcome) => {
                // As in the embedded store: a signed payment that got an answer
                // was sent at least once.
                let sent = !matches!(outcome, Outcome::Released { .. });
                if p.state == State::Signed && sent && p.attempts == 0 {
                    p.attempts = 1;
                }
                embedded::finish(p, outcome)
            }
        }
    }
}

fn day_key(d: window::Day) -> String {
    format!("d:{d}")
}
fn month_key(m: window::Month) -> String {
    format!("m:{:04}-{:02}", m.0, m.1)
}
const TOTAL_KEY: &str = "t";

/// The three window keys a record created at `ms` counts in.
fn wins(ms: i64, tz: &TimeZone) -> Vec<String> {
    vec![
        day_key(window::day(ms, tz)),
        month_key(window::month(ms, tz)),
        TOTAL_KEY.to_string(),
    ]
}

fn tz_name(tz: &TimeZone) -> String {
    tz.iana_name().unwrap_or("UTC").to_string()
}

fn i64_of(v: u64, what: &str) -> Result<i64, LedgerError> {
    i64::try_from(v).map_err(|_| LedgerError::Storage(format!("{what} {v} is out of range")))
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn state_of(s: &str) -> Result<State, LedgerError> {
    Ok(match s {
        "reserved" => State::Reserved,
        "signed" => State::Signed,
        "settled" => State::Settled,
        "rejected" => State::Rejected,
        "at_risk" => State::AtRisk,
        "released" => State::Released,
        other => return Err(LedgerError::Storage(format!("unknown state {other:?}"))),
    })
}

fn payment_of(r: &tokio_postgres::Row) -> Result<Payment, E> {
    Ok(Payment {
        id: u64_of(r.try_get(0)?),
        created_ms: r.try_get(1)?,
        updated_ms: r.try_get(2)?,
        app: r.try_get(3)?,
        model: r.try_get(4)?,
        route: r.try_get(5)?,
        network: r.try_get(6)?,
        asset: r.try_get(7)?,
        pay_to: r.try_get(8)?,
        amount: u64_of(r.try_get(9)?),
        payer: r.try_get(10)?,
        nonce: r.try_get(11)?,
        valid_before: r.try_get::<_, Option<i64>>(12)?.map(u64_of),
        state: state_of(r.try_get(13)?)?,
        tx: r.try_get(14)?,
        note: r.try_get(15)?,
        payment_identifier: r.try_get(16)?,
        attempts: u32::try_from(r.try_get::<_, i64>(17)?).unwrap_or(u32::MAX),
        last_error: r.try_get(18)?,
    })
}

/// Counted spend of one record as a signed delta (released records count nothing).
fn delta(p: &Payment, sign: i64) -> [i64; 3] {
    if !p.state.counts() {
        return [0; 3];
    }
    let a = i64::try_from(p.amount).unwrap_or(i64::MAX);
    if p.state == State::Settled {
        [sign, sign * a, 0]
    } else {
        [sign, 0, sign * a]
    }
}

/// Inserts one record (every column, the given id) inside `tx`.
async fn insert_record(
    tx: &deadpool_postgres::Transaction<'_>,
    p: &Payment,
    instance: &str,
) -> Result<(), E> {
    let st = tx
        .prepare_cached(
            "INSERT INTO x402d_payments (id, created_ms, updated_ms, app, model, route, network, asset, \
             pay_to, amount, payer, nonce, valid_before, state, tx, note, payment_identifier, attempts, \
             last_error, instance) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)",
        )
        .await?;
    let vb = p
        .valid_before
        .map(|v| i64_of(v, "valid_before"))
        .transpose()?;
    let params: [&(dyn ToSql + Sync); 20] = [
        &i64_of(p.id, "id")?,
        &p.created_ms,
        &p.updated_ms,
        &p.app,
        &p.model,
        &p.route,
        &p.network,
        &p.asset,
        &p.pay_to,
        &i64_of(p.amount, "amount")?,
        &p.payer,
        &p.nonce,
        &vb,
        &p.state.as_str(),
        &p.tx,
        &p.note,
        &p.payment_identifier,
        &i64::from(p.attempts),
        &p.last_error,
        &instance,
    ];
    tx.execute(&st, &params).await?;
    Ok(())
}

/// Locks the total rows of `scopes` × `wins` in key order (creating missing
/// ones first) and returns them with the database's time zone.
async fn lock_totals(
    tx: &deadpool_postgres::Transaction<'_>,
    scopes: &[&str],
    wins: &[String],
) -> Result<(HashMap<(String, String), u64>, Option<String>), E> {
    let sel = tx
        .prepare_cached(
            "SELECT scope, win, calls, settled, unsettled, \
             (SELECT value FROM x402d_meta WHERE key = 'timezone') \
             FROM x402d_totals WHERE scope = ANY($1) AND win = ANY($2) \
             ORDER BY scope, win FOR UPDATE",
        )
        .await?;
    let mut rows = tx.query(&sel, &[&scopes, &wins]).await?;
    if rows.len() < scopes.len() * wins.len() {
        let ins = tx
            .prepare_cached(
                "INSERT INTO x402d_totals (scope, win) \
                 SELECT s, w FROM unnest($1::text[]) s CROSS JOIN unnest($2::text[]) w \
                 ORDER BY s, w ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&ins, &[&scopes, &wins]).await?;
        rows = tx.query(&sel, &[&scopes, &wins]).await?;
    }
    let mut tz = None;
    let mut out = HashMap::new();
    for r in rows {
        let counted = u64_of(r.try_get::<_, i64>(3)?).saturating_add(u64_of(r.try_get(4)?));
        out.insert((r.try_get(0)?, r.try_get(1)?), counted);
        tz = r.try_get(5)?;
    }
    Ok((out, tz))
}

async fn add_totals(
    tx: &deadpool_postgres::Transaction<'_>,
    scopes: &[&str],
    wins: &[String],
    d: [i64; 3],
) -> Result<(), E> {
    if d == [0; 3] {
        return Ok(());
    }
    let up = tx
        .prepare_cached(
            "UPDATE x402d_totals SET calls = calls + $3, settled = settled + $4, unsettled = unsettled + $5 \
             WHERE scope = ANY($1) AND win = ANY($2)",
        )
        .await?;
    tx.execute(&up, &[&scopes, &wins, &d[0], &d[1], &d[2]])
        .await?;
    Ok(())
}

/// Per-window totals of `records` in `tz`: what `x402d_totals` must hold. Every
/// app with a record gets its lifetime row (so reports list it).
pub(crate) fn totals_of(records: &[Payment], tz: &TimeZone) -> HashMap<(String, String), [i64; 3]> {
    let mut out: HashMap<(String, String), [i64; 3]> = HashMap::new();
    for p in records {
        out.entry((p.app.clone(), TOTAL_KEY.into())).or_default();
        out.entry((ALL.into(), TOTAL_KEY.into())).or_default();
        let d = delta(p, 1);
        if d == [0; 3] {
            continue;
        }
        for scope in [p.app.as_str(), ALL] {
            for w in wins(p.created_ms, tz) {
                let e = out.entry((scope.to_string(), w)).or_default();
                for i in 0..3 {
                    e[i] += d[i];
                }
            }
        }
    }
    out
}

impl Postgres {
    /// Connects, applies pending schema migrations and (for a daemon) takes this
    /// instance's lock and recovers its own open records.
    pub async fn open(
        url: &str,
        state_dir: &Path,
        tz: TimeZone,
        now_ms: i64,
    ) -> Result<(Postgres, Recovery), LedgerError> {
        let instance = instance_id(state_dir)?;
        let pg = Postgres::connect(url, tz, instance, true).await?;
        pg.take_instance_lock().await?;
        let rec = pg.recover(now_ms).await?;
        Ok((pg, rec))
    }

    /// A handle for reading (reports, migration): no instance lock, no recovery.
    pub async fn reader(url: &str, tz: TimeZone) -> Result<Postgres, LedgerError> {
        Postgres::connect(url, tz, "reader".into(), false).await
    }

    /// A handle that writes records for `instance` (migration) without recovery.
    pub(crate) async fn writer_for(
        url: &str,
        tz: TimeZone,
        instance: String,
    ) -> Result<Postgres, LedgerError> {
        Postgres::connect(url, tz, instance, false).await
    }

    async fn connect(
        url: &str,
        tz: TimeZone,
        instance: String,
        owner: bool,
    ) -> Result<Postgres, LedgerError> {
        let target = target(url)?;
        let mgr = Manager::from_config(
            target.cfg.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(CONNECT_WAIT),
                create: Some(CONNECT_WAIT),
                recycle: Some(CONNECT_WAIT),
            })
            .build()
            .map_err(|e| LedgerError::Storage(format!("PostgreSQL pool: {e}")))?;
        let pg = Postgres {
            inner: Arc::new(Inner {
                pool,
                target,
                tz: std::sync::RwLock::new(tz),
                instance,
                observer: OnceLock::new(),
                session: tokio::sync::Mutex::new(Session::default()),
                owner,
                commits: Default::default(),
                decoded: Default::default(),
                detached: Default::default(),
                idle: tokio::sync::Notify::new(),
            }),
        };
        pg.migrate().await.map_err(|e| match e.into_ledger() {
            LedgerError::Unavailable(m) => LedgerError::Unavailable(format!(
                "cannot reach the ledger database {}: {m}",
                pg.inner.target.shown
            )),
            e => e,
        })?;
        Ok(pg)
    }

    /// Applies pending migrations under an advisory lock (daemons starting
    /// together wait for each other), then makes the database's time zone ours.
    async fn migrate(&self) -> Result<(), E> {
        let mut c = self.inner.pool.get().await?;
        c.batch_execute(&format!("SELECT pg_advisory_lock({LOCK_MIGRATE})"))
            .await?;
        let r = async {
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS x402d_schema_version \
                 (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)",
            )
            .await?;
            let v: i32 = c
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM x402d_schema_version",
                    &[],
                )
                .await?
                .try_get(0)?;
            let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
            if v > known {
                return Err(E::L(LedgerError::Storage(format!(
                    "the ledger database has schema version {v}, newer than this x402d knows ({known}): upgrade x402d"
                ))));
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(v).unwrap_or(0)) {
                let tx = c.transaction().await?;
                tx.batch_execute(sql).await?;
                let n = i32::try_from(i + 1).unwrap_or(i32::MAX);
                tx.execute(
                    "INSERT INTO x402d_schema_version (version, applied_ms) VALUES ($1, $2)",
                    &[&n, &crate::now_ms()],
                )
                .await?;
                tx.commit().await?;
                tracing::info!(version = n, "ledger database schema migrated");
            }
            if self.inner.owner {
                let stored: Option<String> = c
                    .query_opt("SELECT value FROM x402d_meta WHERE key = 'timezone'", &[])
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                let ours = tz_name(&self.tz());
                if stored.as_deref() != Some(ours.as_str()) {
                    if let Some(s) = &stored {
                        tracing::warn!(
                            from = %s,
                            to = %ours,
                            "the ledger database counted days in another time zone: re-keying the totals; every daemon sharing it must use the same [limits] timezone"
                        );
                    }
                    rebuild(&mut c, &self.tz()).await?;
                }
            }
            Ok(())
        }
        .await;
        let _ = c
            .batch_execute(&format!("SELECT pg_advisory_unlock({LOCK_MIGRATE})"))
            .await;
        r
    }

    fn tz(&self) -> TimeZone {
        self.inner
            .tz
            .read()
            .map(|t| t.clone())
            .unwrap_or(TimeZone::UTC)
    }

    /// The URL without its password.
    pub fn location(&self) -> String {
        self.inner.target.shown.clone()
    }

    /// This daemon's instance id.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn observe_commits(&self, f: CommitObserver) {
        let _ = self.inner.observer.set(f);
    }

    fn observed(&self, started: std::time::Instant) {
        self.inner
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(f) = self.inner.observer.get() {
            f(started.elapsed().as_secs_f64());
        }
    }

    /// Opens the long-lived session and takes this instance's lock on it.
    async fn session(&self, s: &mut Session) -> Result<(), LedgerError> {
        if s.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        s.client = None;
        s.leading = false;
        let (client, conn) = self
            .inner
            .target
            .cfg
            .connect(self.inner.target.tls.clone())
            .await
            .map_err(|e| classify(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let key = lock_key(&self.inner.instance);
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| classify(&e))?;
        if !got {
            return Err(LedgerError::Storage(format!(
                "another running x402d uses this state dir's instance id {} on {}: each daemon needs its own state_dir",
                self.inner.instance, self.inner.target.shown
            )));
        }
        s.client = Some(client);
        Ok(())
    }

    async fn take_instance_lock(&self) -> Result<(), LedgerError> {
        let mut s = self.inner.session.lock().await;
        self.session(&mut s).await
    }

    /// Whether this daemon is the one that resolves at-risk payments now (it
    /// holds the resolver lock; taken when free, kept while the session lives).
    pub async fn try_lead_resolver(&self) -> bool {
        if !self.inner.owner {
            return false;
        }
        let mut s = self.inner.session.lock().await;
        if let Err(e) = self.session(&mut s).await {
            tracing::warn!(error = %e, "ledger database session unavailable; not resolving payments now");
            return false;
        }
        if s.leading {
            return true;
        }
        let Some(c) = s.client.as_ref() else {
            return false;
        };
        match c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_RESOLVER])
            .await
            .and_then(|r| r.try_get::<_, bool>(0))
        {
            Ok(true) => {
                tracing::info!("this daemon now resolves the team's at-risk payments");
                s.leading = true;
                true
            }
            _ => false,
        }
    }

    /// Startup recovery of this instance's own open records.
    async fn recover(&self, now_ms: i64) -> Result<Recovery, LedgerError> {
        let rows = {
            let c = self
                .inner
                .pool
                .get()
                .await
                .map_err(|e| E::from(e).into_ledger())?;
            c.query(
                "SELECT id, state FROM x402d_payments WHERE instance = $1 AND state IN ('reserved', 'signed') ORDER BY id",
                &[&self.inner.instance],
            )
            .await
            .map_err(|e| classify(&e))?
        };
        let mut rec = Recovery::default();
        self.inner
            .decoded
            .fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for r in rows {
            let id = u64_of(r.try_get(0).map_err(|e| classify(&e))?);
            let state: String = r.try_get(1).map_err(|e| classify(&e))?;
            let outcome = if state == "reserved" {
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
            self.change(id, Change::Finish(outcome), now_ms).await?;
        }
        Ok(rec)
    }

    async fn reserve_once(&self, r: &Reserve) -> Result<Result<u64, CapExceeded>, E> {
        let tz = self.tz();
        let mut c = self.inner.pool.get().await?;
        let tx = c.transaction().await?;
        let scopes = [r.app.as_str(), ALL];
        let wins = wins(r.now_ms, &tz);
        let (used, db_tz) = lock_totals(&tx, &scopes, &wins).await?;
        let ours = tz_name(&tz);
        if db_tz.as_deref().is_some_and(|t| t != ours) {
            return Err(E::L(LedgerError::Storage(format!(
                "the ledger database counts days in {} but this daemon's [limits] timezone is {ours}: give every daemon of the team the same timezone",
                db_tz.unwrap_or_default()
            ))));
        }
        let (day, month) = (
            day_key(window::day(r.now_ms, &tz)),
            month_key(window::month(r.now_ms, &tz)),
        );
        if let Err(e) = check_caps(r, &tz, |who, span| {
            let win = match span {
                Span::Day => day.as_str(),
                Span::Month => month.as_str(),
                Span::Total => TOTAL_KEY,
            };
            used.get(&(who.to_string(), win.to_string()))
                .copied()
                .unwrap_or(0)
        }) {
            tx.rollback().await?;
            return Ok(Err(e));
        }
        let id: i64 = tx
            .query_one("SELECT nextval('x402d_payment_ids')", &[])
            .await?
            .try_get(0)?;
        let (state, payer, nonce, valid_before, payment_identifier) = match &r.auth {
            Some(a) => (
                State::Signed,
                Some(a.payer.clone()),
                Some(a.nonce.clone()),
                Some(a.valid_before),
                a.payment_identifier.clone(),
            ),
            None => (State::Reserved, None, None, None, None),
        };
        let p = Payment {
            id: u64_of(id),
            created_ms: r.now_ms,
            updated_ms: r.now_ms,
            app: r.app.clone(),
            model: r.model.clone(),
            route: r.route.clone(),
            network: r.network.clone(),
            asset: r.asset.clone(),
            pay_to: r.pay_to.clone(),
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
        insert_record(&tx, &p, &self.inner.instance).await?;
        add_totals(&tx, &scopes, &wins, delta(&p, 1)).await?;
        if let Err(e) = tx.commit().await {
            // The commit's fate is unknown: if it landed, the record holds
            // budget that no caller will use (nothing was signed for it, or the
            // signature is dropped unsent), so release it once the database answers.
            self.release_later(p.id);
            return Err(e.into());
        }
        Ok(Ok(p.id))
    }

    /// Releases a record whose reservation commit had an unknown outcome, as
    /// soon as the database answers (a no-op if it never landed).
    fn release_later(&self, id: u64) {
        let me = self.clone();
        tokio::spawn(async move {
            for n in 0u32..600 {
                match me
                    .change_once(id, &Change::Finish(orphan_release()), crate::now_ms())
                    .await
                {
                    Ok(()) => return,
                    Err(E::L(
                        LedgerError::NoSuchPayment(_) | LedgerError::BadTransition { .. },
                    )) => {
                        return;
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(n.min(10)) + 100))
                            .await
                    }
                }
            }
            tracing::error!(
                id,
                "could not release an orphaned reservation; it counts until this daemon restarts"
            );
        });
    }

    /// Holds budget for a payment, or says which cap refuses it.
    ///
    /// Cancel-safe: the transaction runs in its own task; if the caller stops
    /// waiting, a reservation made for it is released.
    pub async fn reserve(&self, r: Reserve) -> Result<Result<u64, CapExceeded>, LedgerError> {
        let (tx, rx) = oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut n = 0;
            let res = loop {
                match me.reserve_once(&r).await {
                    Err(e) if e.retry() && n < 8 => n += 1,
                    other => break other.map_err(E::into_ledger),
                }
            };
            me.observed(started);
            if let Err(Ok(Ok(id))) = tx.send(res) {
                me.finish_detached(id, orphan_release(), crate::now_ms());
            }
        });
        await_reservation(rx, |id| {
            self.finish_detached(id, orphan_release(), crate::now_ms())
        })
        .await
    }

    async fn change_once(&self, id: u64, ch: &Change, now_ms: i64) -> Result<(), E> {
        let tz = self.tz();
        let mut c = self.inner.pool.get().await?;
        let tx = c.transaction().await?;
        let sel = tx
            .prepare_cached(&format!(
                "SELECT {COLS} FROM x402d_payments WHERE id = $1 FOR UPDATE"
            ))
            .await?;
        let row = tx.query_opt(&sel, &[&i64_of(id, "id")?]).await?;
        let Some(row) = row else {
            return Err(E::L(LedgerError::NoSuchPayment(id)));
        };
        let mut p = payment_of(&row)?;
        let before = p.clone();
        ch.apply(&mut p).map_err(|to| {
            E::L(LedgerError::BadTransition {
                id,
                from: before.state.as_str(),
                to: to.as_str(),
            })
        })?;
        p.updated_ms = now_ms;
        let up = tx
            .prepare_cached(
                "UPDATE x402d_payments SET updated_ms = $2, state = $3, payer = $4, nonce = $5, \
                 valid_before = $6, payment_identifier = $7, attempts = $8, last_error = $9, tx = $10, \
                 note = $11 WHERE id = $1",
            )
            .await?;
        let vb = p
            .valid_before
            .map(|v| i64_of(v, "valid_before"))
            .transpose()?;
        tx.execute(
            &up,
            &[
                &i64_of(id, "id")?,
                &p.updated_ms,
                &p.state.as_str(),
                &p.payer,
                &p.nonce,
                &vb,
                &p.payment_identifier,
                &i64::from(p.attempts),
                &p.last_error,
                &p.tx,
                &p.note,
            ],
        )
        .await?;
        let (a, b) = (delta(&before, -1), delta(&p, 1));
        let d = [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
        if d != [0; 3] {
            let scopes = [p.app.as_str(), ALL];
            let wins = wins(p.created_ms, &tz);
            lock_totals(&tx, &scopes, &wins).await?;
            add_totals(&tx, &scopes, &wins, d).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Applies one change in its own task (it completes even if the caller
    /// stops waiting), retrying serialization failures.
    async fn change(&self, id: u64, ch: Change, now_ms: i64) -> Result<(), LedgerError> {
        let me = self.clone();
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut n = 0;
            let r = loop {
                match me.change_once(id, &ch, now_ms).await {
                    Err(e) if e.retry() && n < 8 => n += 1,
                    other => break other.map_err(E::into_ledger),
                }
            };
            me.observed(started);
            r
        });
        task.await
            .map_err(|e| LedgerError::Storage(format!("ledger task failed: {e}")))?
    }

    pub async fn signed_with_identifier(
        &self,
        id: u64,
        payer: String,
        nonce: String,
        valid_before: u64,
        payment_identifier: Option<String>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.change(
            id,
            Change::Signed {
                payer,
                nonce,
                valid_before,
                payment_identifier,
            },
            now_ms,
        )
        .await
    }

    pub async fn attempt(
        &self,
        id: u64,
        attempts: u32,
        last_error: Option<String>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        self.change(
            id,
            Change::Attempt {
                attempts,
                last_error,
            },
            now_ms,
        )
        .await
    }

    pub async fn finish(&self, id: u64, outcome: Outcome, now_ms: i64) -> Result<(), LedgerError> {
        self.change(id, Change::Finish(outcome), now_ms).await
    }

    /// Records an outcome without waiting. Retried while the database is
    /// unreachable; if this process dies first, startup recovery settles the
    /// record (reserved → released, signed → at-risk). Until it commits, the
    /// record keeps counting against the caps (fail closed).
    pub fn finish_detached(&self, id: u64, outcome: Outcome, now_ms: i64) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                id,
                "no runtime to record a payment outcome; startup recovery will settle it"
            );
            return;
        };
        let me = self.clone();
        self.inner
            .detached
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        rt.spawn(async move {
            let _done = Detached(me.clone());
            let ch = Change::Finish(outcome);
            for n in 0u32..120 {
                let started = std::time::Instant::now();
                match me.change_once(id, &ch, now_ms).await {
                    Ok(()) => {
                        me.observed(started);
                        return;
                    }
                    Err(e) if e.retry() => continue,
                    Err(e) => match e.into_ledger() {
                        LedgerError::Unavailable(_) => {
                            tokio::time::sleep(Duration::from_millis(
                                250 * u64::from(n.min(20)) + 50,
                            ))
                            .await;
                        }
                        e => {
                            tracing::warn!(id, error = %e, "detached ledger update not applied");
                            return;
                        }
                    },
                }
            }
            tracing::error!(
                id,
                "detached ledger update failed; startup recovery will settle this record"
            );
        });
    }

    /// Waits (at most 10 s) until every detached outcome has committed; each
    /// commit is durable on its own, so there is nothing else to flush.
    pub async fn flush(&self) -> Result<(), LedgerError> {
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                if self
                    .inner
                    .detached
                    .load(std::sync::atomic::Ordering::SeqCst)
                    == 0
                {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .map_err(|_| {
                LedgerError::Unavailable("outcomes still waiting for the ledger database".into())
            })
    }

    /// Every commit here is durable (PostgreSQL's own WAL flush).
    pub fn stats(&self) -> Stats {
        use std::sync::atomic::Ordering::Relaxed;
        Stats {
            records_decoded: self.inner.decoded.load(Relaxed),
            durable_commits: self.inner.commits.load(Relaxed),
            non_durable_commits: 0,
            flushes: 0,
        }
    }

    /// Recomputes every per-window total from the records and compares it with
    /// the stored one (reads the whole history).
    pub async fn verify(&self) -> Result<Verify, LedgerError> {
        let records = self.all().await?;
        let expected = totals_of(&records, &self.tz());
        let stored = self.stored_totals().await?;
        let mut differences = Vec::new();
        let mut keys: Vec<&(String, String)> = expected.keys().chain(stored.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let (e, s) = (expected.get(k), stored.get(k));
            // A stored row of zeros for a window without counted records is fine.
            if e.copied().unwrap_or_default() != s.copied().unwrap_or_default() {
                differences.push(format!(
                    "{} {}: stored (calls, settled, unsettled) {:?}, records say {:?}",
                    k.0,
                    k.1,
                    s.copied().unwrap_or_default(),
                    e.copied().unwrap_or_default()
                ));
            }
        }
        Ok(Verify {
            records: records.len() as u64,
            differences,
        })
    }

    /// Recomputes every stored total from the records (`x402d ledger rebuild`).
    pub async fn rebuild_totals(&self) -> Result<(), LedgerError> {
        let mut c = self
            .inner
            .pool
            .get()
            .await
            .map_err(|e| E::from(e).into_ledger())?;
        rebuild(&mut c, &self.tz()).await.map_err(E::into_ledger)
    }

    /// Re-keys the totals to `tz` (the whole team's windows move with it).
    pub async fn set_timezone(&self, tz: TimeZone) -> Result<(), LedgerError> {
        if tz_name(&tz) == tz_name(&self.tz()) {
            return Ok(());
        }
        if let Ok(mut t) = self.inner.tz.write() {
            *t = tz.clone();
        }
        let mut c = self
            .inner
            .pool
            .get()
            .await
            .map_err(|e| E::from(e).into_ledger())?;
        rebuild(&mut c, &tz).await.map_err(E::into_ledger)
    }

    async fn read<T>(
        &self,
        f: impl AsyncFnOnce(&deadpool_postgres::Client) -> Result<T, E>,
    ) -> Result<T, LedgerError> {
        let c = self
            .inner
            .pool
            .get()
            .await
            .map_err(|e| E::from(e).into_ledger())?;
        f(&c).await.map_err(E::into_ledger)
    }

    pub async fn payments(
        &self,
        app: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Payment>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(async |c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLS} FROM x402d_payments WHERE ($1::text IS NULL OR app = $1) ORDER BY id DESC LIMIT $2"
                    ),
                    &[&app, &limit],
                )
                .await?;
            rows.iter().map(payment_of).collect()
        })
        .await
    }

    pub async fn all(&self) -> Result<Vec<Payment>, LedgerError> {
        self.read(async |c| {
            let rows = c
                .query(
                    &format!("SELECT {COLS} FROM x402d_payments ORDER BY id"),
                    &[],
                )
                .await?;
            rows.iter().map(payment_of).collect()
        })
        .await
    }

    pub async fn summary(&self, now_ms: i64) -> Result<(Usd, Usd), LedgerError> {
        let today = day_key(window::day(now_ms, &self.tz()));
        self.read(async |c| {
            let r = c
                .query_one(
                    "SELECT (SELECT coalesce(settled + unsettled, 0) FROM x402d_totals WHERE scope = '*' AND win = $1), \
                     (SELECT coalesce(sum(amount), 0)::bigint FROM x402d_payments \
                      WHERE state IN ('reserved', 'signed', 'at_risk', 'rejected'))",
                    &[&today],
                )
                .await?;
            let counted: Option<i64> = r.try_get(0)?;
            let pending: i64 = r.try_get(1)?;
            Ok((Usd(u64_of(counted.unwrap_or(0))), Usd(u64_of(pending))))
        })
        .await
    }

    pub async fn totals(&self, now_ms: i64, days: u32) -> Result<Snapshot, LedgerError> {
        let tz = self.tz();
        let today = window::day(now_ms, &tz);
        let month = month_key(window::month(now_ms, &tz));
        let mut day_keys = Vec::new();
        let mut d = today;
        for _ in 0..days.min(MAX_REPORT_DAYS) {
            day_keys.push(d);
            match d.yesterday() {
                Ok(y) => d = y,
                Err(_) => break,
            }
        }
        let mut wanted: Vec<String> = day_keys.iter().map(|d| day_key(*d)).collect();
        wanted.push(day_key(today));
        wanted.push(month.clone());
        wanted.push(TOTAL_KEY.into());
        self.read(async |c| {
            let mut rows: HashMap<(String, String), Totals> = HashMap::new();
            let mut apps = Vec::new();
            for r in c
                .query(
                    "SELECT scope, win, calls, settled, unsettled FROM x402d_totals WHERE win = ANY($1)",
                    &[&wanted],
                )
                .await?
            {
                let (scope, win): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                if win == TOTAL_KEY && scope != ALL {
                    apps.push(scope.clone());
                }
                rows.insert(
                    (scope, win),
                    Totals {
                        calls: u64_of(r.try_get(2)?),
                        settled: u64_of(r.try_get(3)?),
                        unsettled: u64_of(r.try_get(4)?),
                    },
                );
            }
            let mut states = BTreeMap::new();
            let mut records = 0;
            for r in c
                .query(
                    "SELECT state, count(*), coalesce(sum(amount), 0)::bigint FROM x402d_payments GROUP BY state",
                    &[],
                )
                .await?
            {
                let st = state_of(r.try_get(0)?)?;
                let n = u64_of(r.try_get(1)?);
                records += n;
                if n > 0 {
                    states.insert(st.as_str(), (n, u64_of(r.try_get(2)?)));
                }
            }
            let of = |who: &str| {
                let get = |w: &str| rows.get(&(who.to_string(), w.to_string())).copied().unwrap_or_default();
                AppTotals {
                    today: get(&day_key(today)),
                    month: get(&month),
                    total: get(TOTAL_KEY),
                    days: day_keys.iter().map(|&d| (d, get(&day_key(d)))).collect(),
                }
            };
            Ok(Snapshot {
                apps: apps.iter().map(|a| (a.clone(), of(a))).collect(),
                wallet: of(ALL),
                states,
                records,
            })
        })
        .await
    }

    pub async fn unresolved(&self) -> Result<Vec<Payment>, LedgerError> {
        self.read(async |c| {
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLS} FROM x402d_payments WHERE state IN ('at_risk', 'rejected') ORDER BY id"
                    ),
                    &[],
                )
                .await?;
            rows.iter().map(payment_of).collect()
        })
        .await
    }

    /// Number of records (migration refuses a non-empty target).
    pub(crate) async fn count(&self) -> Result<u64, LedgerError> {
        self.read(async |c| {
            Ok(u64_of(
                c.query_one("SELECT count(*) FROM x402d_payments", &[])
                    .await?
                    .try_get(0)?,
            ))
        })
        .await
    }

    /// Replaces every record with `records` (same ids, every field), each owned
    /// by the instance it names, moves the id sequence past them and recomputes
    /// the totals; one transaction.
    pub(crate) async fn load(
        &self,
        records: &[(Payment, String)],
        replace: bool,
    ) -> Result<(), LedgerError> {
        let tz = self.tz();
        let mut c = self
            .inner
            .pool
            .get()
            .await
            .map_err(|e| E::from(e).into_ledger())?;
        let r: Result<(), E> = async {
            let tx = c.transaction().await?;
            tx.batch_execute("LOCK TABLE x402d_payments, x402d_totals IN EXCLUSIVE MODE")
                .await?;
            let n: i64 = tx
                .query_one("SELECT count(*) FROM x402d_payments", &[])
                .await?
                .try_get(0)?;
            if n > 0 && !replace {
                return Err(E::L(LedgerError::Storage(format!(
                    "the ledger database already holds {n} payments"
                ))));
            }
            tx.batch_execute("DELETE FROM x402d_payments").await?;
            for (p, inst) in records {
                insert_record(&tx, p, inst).await?;
            }
            let max = records.iter().map(|(p, _)| p.id).max().unwrap_or(0);
            // The next id handed out is max + 1 (as the embedded store would).
            tx.execute(
                "SELECT setval('x402d_payment_ids', $1, $2)",
                &[&i64_of(max.max(1), "id")?, &(max > 0)],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        r.map_err(E::into_ledger)?;
        rebuild(&mut c, &tz).await.map_err(E::into_ledger)
    }

    /// Every record with the instance that owns it.
    pub(crate) async fn all_with_instance(&self) -> Result<Vec<(Payment, String)>, LedgerError> {
        self.read(async |c| {
            let rows = c
                .query(
                    &format!("SELECT {COLS}, instance FROM x402d_payments ORDER BY id"),
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| Ok((payment_of(r)?, r.try_get::<_, String>(19)?)))
                .collect()
        })
        .await
    }

    /// The stored per-window totals, for comparison with ones recomputed from records.
    pub(crate) async fn stored_totals(
        &self,
    ) -> Result<HashMap<(String, String), [i64; 3]>, LedgerError> {
        self.read(async |c| {
            let mut out = HashMap::new();
            for r in c
                .query(
                    "SELECT scope, win, calls, settled, unsettled FROM x402d_totals",
                    &[],
                )
                .await?
            {
                out.insert(
                    (r.try_get(0)?, r.try_get(1)?),
                    [r.try_get(2)?, r.try_get(3)?, r.try_get(4)?],
                );
            }
            Ok(out)
        })
        .await
    }

    pub(crate) fn timezone(&self) -> TimeZone {
        self.tz()
    }
}

/// Recomputes every total row from the records in `tz` and makes `tz` the
/// database's time zone; one transaction, totals locked against reservations.
async fn rebuild(c: &mut deadpool_postgres::Client, tz: &TimeZone) -> Result<(), E> {
    let tx = c.transaction().await?;
    tx.batch_execute("LOCK TABLE x402d_totals IN EXCLUSIVE MODE")
        .await?;
    let rows = tx
        .query(&format!("SELECT {COLS} FROM x402d_payments"), &[])
        .await?;
    let records: Vec<Payment> = rows.iter().map(payment_of).collect::<Result<_, _>>()?;
    tx.batch_execute("DELETE FROM x402d_totals").await?;
    let totals = totals_of(&records, tz);
    let ins = tx
        .prepare_cached(
            "INSERT INTO x402d_totals (scope, win, calls, settled, unsettled) VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    for ((scope, win), t) in &totals {
        tx.execute(&ins, &[scope, win, &t[0], &t[1], &t[2]]).await?;
    }
    tx.execute(
        "INSERT INTO x402d_meta (key, value) VALUES ('timezone', $1) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&tz_name(tz)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A stable 63-bit advisory lock key for a string.
fn lock_key(s: &str) -> i64 {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("x402d-instance:{s}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    i64::from_be_bytes(b) & i64::MAX
}

/// This state dir's instance id (created once, 16 random hex digits).
///
/// Stable per state dir rather than random per start: a restarted daemon must
/// find the open records its previous run left (to release or mark them at
/// risk), and only those; a per-start id would leave them open forever.
pub fn instance_id(state_dir: &Path) -> Result<String, LedgerError> {
    let f = state_dir.join("instance-id");
    if let Ok(s) = std::fs::read_to_string(&f) {
        let s = s.trim();
        if !s.is_empty() {
            return Ok(s.to_string());
        }
    }
    std::fs::create_dir_all(state_dir).map_err(storage)?;
    let mut b = [0u8; 8];
    getrandom::fill(&mut b)
        .map_err(|e| LedgerError::Storage(format!("random instance id: {e}")))?;
    let id = hex::encode(b);
    std::fs::write(&f, format!("{id}\n")).map_err(storage)?;
    Ok(id)
}

/// Counts a detached outcome as done when its task ends (however it ends).
struct Detached(Postgres);

impl Drop for Detached {
    fn drop(&mut self) {
        if self
            .0
            .inner
            .detached
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.inner.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_the_password() {
        assert_eq!(
            redact("postgres://bob:s3cret@db.example:5432/x402d?sslmode=require"),
            "postgres://bob@db.example:5432/x402d?sslmode=require"
        );
        assert_eq!(redact("postgres://bob@h/db"), "postgres://bob@h/db");
        assert_eq!(
            redact("postgres://bob@h/db?password=s3cret&sslmode=require"),
            "postgres://bob@h/db?sslmode=require"
        );
        assert_eq!(redact("postgres://bob:pa:ss@h/db"), "postgres://bob@h/db");
    }

    #[test]
    fn parse_errors_never_repeat_the_url() {
        for u in [
            "postgres://bob:s3cret@h/db?sslmode=bogus",
            "postgres://bob:s3cret@h/db?nosuchoption=1",
            "mysql://bob:s3cret@h/db",
            "postgres://:s3cret@h/db",
        ] {
            if let Err(e) = parse_url(u) {
                assert!(!e.contains("s3cret"), "{e}");
            }
        }
        assert!(parse_url("postgres://bob@h:5/db?sslmode=verify-full").is_ok());
        assert!(parse_url("postgres://bob@h/db?sslmode=bogus").is_err());
    }

    #[test]
    fn ledger_config_is_checked_at_load() {
        let bad = |t: &str| crate::config::parse(t, None).unwrap_err().to_string();
        let e = bad("[ledger]\nbackend = \"postgres\"\n");
        assert!(e.contains("`ledger.url`") && e.contains("needs url"), "{e}");
        let e = bad("[ledger]\nbackend = \"postgres\"\nurl = \"mysql://u:s3cret@h/db\"\n");
        assert!(e.contains("`ledger.url`") && !e.contains("s3cret"), "{e}");
        let e = bad("[ledger]\nbackend = \"sqlite\"\n");
        assert!(e.contains("`redb` or `postgres`"), "{e}");
        let ok = crate::config::parse(
            "[ledger]\nbackend = \"postgres\"\nurl = \"postgres://u:s3cret@h/db\"\n",
            None,
        )
        .unwrap();
        assert_eq!(
            ok.config.ledger.backend,
            crate::config::LedgerBackend::Postgres
        );
        let shown = toml::to_string(&ok.config).unwrap();
        assert!(
            shown.contains("postgres://u@h/db") && !shown.contains("s3cret"),
            "{shown}"
        );
        let default = crate::config::parse("", None).unwrap();
        assert_eq!(
            default.config.ledger.backend,
            crate::config::LedgerBackend::Redb
        );
    }

    #[test]
    fn totals_of_counts_like_the_embedded_index() {
        let tz = TimeZone::UTC;
        let p = |id, state, amount| Payment {
            id,
            created_ms: 1_780_000_000_000,
            updated_ms: 0,
            app: "a".into(),
            model: None,
            route: "/v1".into(),
            network: "eip155:8453".into(),
            asset: "0x".into(),
            pay_to: "0x".into(),
            amount,
            payer: None,
            nonce: None,
            valid_before: None,
            state,
            tx: None,
            note: None,
            payment_identifier: None,
            attempts: 0,
            last_error: None,
        };
        let t = totals_of(
            &[
                p(1, State::Settled, 10),
                p(2, State::AtRisk, 5),
                p(3, State::Released, 7),
            ],
            &tz,
        );
        assert_eq!(t[&("a".to_string(), "t".to_string())], [2, 10, 5]);
        assert_eq!(t[&("*".to_string(), "t".to_string())], [2, 10, 5]);
        assert_eq!(t.len(), 6);
    }
}
