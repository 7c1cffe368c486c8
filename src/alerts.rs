//! Budget alerts: when counted spend (settled, pending or at risk: what caps
//! count) reaches a configured fraction of a cap, x402d says so once per window
//! and threshold: a WARN log line, a counter in `/metrics`, and, when configured,
//! a webhook POST and a desktop notification. What was raised is persisted in
//! `state_dir/alerts.json` (replaced atomically) before anything is delivered, so
//! a restart never raises it again.
//!
//! Nothing here is on the payment path: the watcher wakes after ledger commits,
//! reads the writer's in-memory totals, and hands alerts to a delivery task whose
//! retries only ever delay other alerts.

use crate::daemon::Stop;
use crate::ledger::Snapshot;
use crate::ledger::report::{self, Limits, WALLET};
use crate::ledger::window;
use crate::money::Usd;
use crate::server::Shared;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// File in `state_dir` that remembers which alerts were raised.
pub const SENT_FILE: &str = "alerts.json";
/// Webhook attempts per alert (backoff 1 s, 2 s, 4 s, … capped at 5 min: about 20 min in all).
const WEBHOOK_ATTEMPTS: u32 = 10;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often spend is looked at without a commit (a reload may lower a cap).
const RECHECK: Duration = Duration::from_secs(60);
/// At most one check per this long: commits come in bursts (several per paid
/// call), and a check per commit woke a worker and queried the ledger writer
/// each time (issue 17's profile). A wake during the gap is kept (a `Notify`
/// permit), so the check after it still sees every commit.
const CHECK_GAP: Duration = Duration::from_secs(1);

/// What wakes the watcher: ledger commits, and calls a cap refused. A cap can
/// refuse a call before spend reaches it exactly (the next call would not fit);
/// that window then counts as full, so its 100 % alert is not lost.
#[derive(Default)]
pub struct Signals {
    wake: Notify,
    /// (app or `(wallet)`, window) whose cap refused a call since the last check.
    full: std::sync::Mutex<BTreeSet<(String, &'static str)>>,
}

impl Signals {
    /// A ledger commit happened (called on the writer thread: never waits).
    pub fn commit(&self) {
        self.wake.notify_one();
    }

    /// `app`'s call was refused with `code` (an `x-x402d-error` `*_cap_exceeded` code).
    pub fn refused(&self, app: &str, code: &str) {
        let (who, window) = match code {
            "app_daily_cap_exceeded" => (app, "daily"),
            "app_monthly_cap_exceeded" => (app, "monthly"),
            "app_total_cap_exceeded" => (app, "total"),
            "wallet_daily_cap_exceeded" => (WALLET, "daily"),
            "wallet_monthly_cap_exceeded" => (WALLET, "monthly"),
            _ => return,
        };
        if let Ok(mut g) = self.full.lock() {
            g.insert((who.to_string(), window));
        }
        self.wake.notify_one();
    }

    fn take_full(&self) -> BTreeSet<(String, &'static str)> {
        self.full
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default()
    }
}

/// One threshold crossing. Serialized as the webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Alert {
    /// Stable for one app, window, period and threshold: receivers may dedupe on it.
    pub id: String,
    /// The app, or `(wallet)` for the wallet-wide `[limits]`.
    pub app: String,
    /// `app` or `wallet`.
    pub scope: String,
    /// `daily`, `monthly` or `total`.
    pub window: String,
    /// The window's date (`2026-12-01`), month (`2026-12`) or `lifetime`.
    pub period: String,
    /// The fraction of the cap that was reached.
    pub threshold: f64,
    /// Counted spend: settled, pending and at risk.
    pub spent: Usd,
    pub cap: Usd,
    /// When the window resets (RFC 3339), none for lifetime caps.
    pub resets_at: Option<String>,
}

impl Alert {
    pub fn summary(&self) -> String {
        let who = if self.scope == "wallet" {
            "wallet-wide".to_string()
        } else {
            format!("app {}", self.app)
        };
        format!(
            "x402d: {who} at {}% of its {} cap",
            (self.threshold * 100.0).round(),
            self.window
        )
    }

    pub fn body(&self) -> String {
        let resets = match &self.resets_at {
            Some(r) => format!("; resets {r}"),
            None => String::new(),
        };
        let full = if self.spent < self.cap {
            " (the cap refuses the next call)"
        } else {
            ""
        };
        format!("${} of ${} spent{full}{resets}", self.spent, self.cap)
    }
}

/// A threshold as parts per million, so crossings are exact integer comparisons.
fn ppm(t: f64) -> u64 {
    (t * 1_000_000.0).round() as u64
}

/// The day and month windows `now_ms` falls in, as alert periods.
pub fn periods(now_ms: i64, tz: &jiff::tz::TimeZone) -> [String; 2] {
    let d = window::day(now_ms, tz);
    [d.to_string(), d.strftime("%Y-%m").to_string()]
}

/// Every (cap, threshold) that counted spend has reached at `limits.now_ms`, or
/// that is `full` (its cap refused a call: every threshold counts as reached). Pure.
pub fn reached(
    snapshot: &Snapshot,
    limits: &Limits<'_>,
    thresholds: &[f64],
    full: &BTreeSet<(String, &'static str)>,
) -> Vec<Alert> {
    let now = limits.now_ms;
    let tz = limits.tz;
    let [day, month] = periods(now, tz);
    let day_end = window::day_end(now, tz).to_string();
    let month_end = window::month_end(now, tz).to_string();
    let mut out = Vec::new();
    for row in report::rows(snapshot, limits, None, 0) {
        let Some(cap) = row.cap.filter(|c| c.atomic() > 0) else {
            continue;
        };
        let (window, period, resets_at) = match row.window.as_str() {
            "today" => ("daily", day.clone(), Some(day_end.clone())),
            "month" => ("monthly", month.clone(), Some(month_end.clone())),
            "total" => ("total", "lifetime".to_string(), None),
            _ => continue,
        };
        let spent = row.settled.saturating_add(row.at_risk);
        let refused = full.contains(&(row.app.clone(), window));
        for &t in thresholds {
            let reached = refused
                || u128::from(spent.atomic()) * 1_000_000
                    >= u128::from(ppm(t)) * u128::from(cap.atomic());
            if !reached {
                continue;
            }
            out.push(Alert {
                id: format!("{}|{window}|{period}|{}", row.app, ppm(t)),
                app: row.app.clone(),
                scope: if row.app == WALLET { "wallet" } else { "app" }.into(),
                window: window.into(),
                period: period.clone(),
                threshold: t,
                spent,
                cap,
                resets_at: resets_at.clone(),
            });
        }
    }
    out
}

/// The alerts already raised, and those whose webhook delivery is not done yet,
/// as persisted in `alerts.json`.
pub struct Sent {
    path: PathBuf,
    ids: BTreeSet<String>,
    pending: Vec<Alert>,
}

#[derive(Serialize, serde::Deserialize, Default)]
struct SentFile {
    sent: BTreeSet<String>,
    /// Raised, webhook delivery not finished (re-queued at start).
    #[serde(default)]
    pending: Vec<Alert>,
}

/// The alert record, shared by the watcher and the delivery task.
pub type Store = Arc<tokio::sync::Mutex<Sent>>;

/// Opens `state_dir/alerts.json` for the daemon.
pub fn open(state_dir: &Path) -> Store {
    Arc::new(tokio::sync::Mutex::new(Sent::load(
        &state_dir.join(SENT_FILE),
    )))
}

impl Sent {
    /// Reads the file; a missing file is an empty set, an unreadable one is logged.
    pub fn load(path: &Path) -> Sent {
        let file = match std::fs::read(path) {
            Ok(b) => match serde_json::from_slice::<SentFile>(&b) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable alert record; alerts of the current windows may repeat");
                    SentFile::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SentFile::default(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the alert record; alerts of the current windows may repeat");
                SentFile::default()
            }
        };
        Sent {
            path: path.to_path_buf(),
            ids: file.sent,
            pending: file.pending,
        }
    }

    /// Alerts raised whose webhook delivery had not finished (at load: by the last run).
    pub fn pending(&self) -> &[Alert] {
        &self.pending
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Adds `new`, forgets ids of windows that are over (any period but
    /// `periods` and `lifetime`) and replaces the file atomically (write, fsync,
    /// rename). Blocking: async callers use [`Sent::record_async`].
    pub fn record(&mut self, new: &[Alert], periods: &[String]) -> std::io::Result<()> {
        self.update(new, periods, false);
        write_atomic(&self.path, &self.body()?)
    }

    /// [`Sent::record`], also keeping `new` as pending webhook deliveries when
    /// `webhook`, with the file write on the blocking pool.
    pub async fn record_async(
        &mut self,
        new: &[Alert],
        periods: &[String],
        webhook: bool,
    ) -> std::io::Result<()> {
        self.update(new, periods, webhook);
        self.save().await
    }

    /// The webhook delivery of `id` is over (delivered, or given up on).
    pub async fn delivered(&mut self, id: &str) -> std::io::Result<()> {
        let before = self.pending.len();
        self.pending.retain(|a| a.id != id);
        if self.pending.len() == before {
            return Ok(());
        }
        self.save().await
    }

    async fn save(&self) -> std::io::Result<()> {
        let body = self.body()?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomic(&path, &body))
            .await
            .map_err(std::io::Error::other)?
    }

    fn body(&self) -> std::io::Result<Vec<u8>> {
        Ok(serde_json::to_vec_pretty(&SentFile {
            sent: self.ids.clone(),
            pending: self.pending.clone(),
        })?)
    }

    fn update(&mut self, new: &[Alert], periods: &[String], webhook: bool) {
        self.ids.retain(|id| {
            id.split('|')
                .nth(2)
                .is_some_and(|p| p == "lifetime" || periods.iter().any(|c| c == p))
        });
        self.ids.extend(new.iter().map(|a| a.id.clone()));
        if webhook {
            self.pending.extend(new.iter().cloned());
        }
    }
}

fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Wakes on every ledger commit and cap refusal (and every minute), raises new
/// crossings and queues them for delivery. Owned by src/daemon.rs.
pub async fn watch(shared: Arc<Shared>, store: Store, out: mpsc::Sender<Delivery>, mut stop: Stop) {
    // Deliveries the last run did not finish go first (the webhook only: a
    // desktop notification is for now or never).
    let unfinished: Vec<Alert> = store.lock().await.pending().to_vec();
    for a in unfinished {
        tracing::info!(id = %a.id, "alert webhook delivery not finished by the last run: retrying");
        let _ = out.try_send(Delivery {
            alert: a,
            desktop: false,
        });
    }
    loop {
        check(&shared, &store, &out).await;
        let checked = tokio::time::Instant::now();
        tokio::select! {
            _ = shared.alert_signals.wake.notified() => {}
            _ = tokio::time::sleep(RECHECK) => {}
            _ = stop.requested() => return,
        }
        let rest = CHECK_GAP.saturating_sub(checked.elapsed());
        if !rest.is_zero() && !stop.sleep(rest).await {
            return;
        }
    }
}

/// One alert to deliver.
#[derive(Debug)]
pub struct Delivery {
    alert: Alert,
    /// Also as a desktop notification (when configured).
    desktop: bool,
}

async fn check(shared: &Shared, store: &Store, out: &mpsc::Sender<Delivery>) {
    let now = crate::now_ms();
    let full = shared.alert_signals.take_full();
    let totals = match shared.ledger.totals(now, 0).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "alerts: no totals");
            return;
        }
    };
    let cfg = shared.config();
    let limits = Limits::from_config(&cfg, now);
    let current = reached(&totals, &limits, &cfg.config.alerts.thresholds, &full);
    let mut sent = store.lock().await;
    let new: Vec<Alert> = current
        .iter()
        .filter(|a| !sent.contains(&a.id))
        .cloned()
        .collect();
    if new.is_empty() {
        return;
    }
    // Persisted first, with the webhook deliveries still to make: a restart
    // neither raises these again nor forgets to deliver them.
    let webhook = cfg.config.alerts.webhook.is_some();
    if let Err(e) = sent
        .record_async(&new, &periods(now, &cfg.timezone), webhook)
        .await
    {
        tracing::error!(error = %e, "cannot persist the alert record; these alerts may repeat after a restart");
    }
    for a in new {
        tracing::warn!(
            app = %a.app,
            scope = %a.scope,
            window = %a.window,
            period = %a.period,
            threshold = a.threshold,
            spent = %a.spent,
            cap = %a.cap,
            resets_at = a.resets_at.as_deref().unwrap_or("never"),
            "budget alert: {}: {}",
            a.summary(),
            a.body()
        );
        shared.metrics.alert(&a.app, &a.window, a.threshold);
        let d = Delivery {
            alert: a,
            desktop: true,
        };
        if out.try_send(d).is_err() {
            tracing::warn!("alert delivery queue full; this alert is only logged");
        }
    }
}

/// Delivers queued alerts to the webhook (retried with backoff) and the desktop.
/// Owned by src/daemon.rs.
pub async fn deliver(
    shared: Arc<Shared>,
    store: Store,
    mut rx: mpsc::Receiver<Delivery>,
    mut stop: Stop,
) {
    loop {
        let d = tokio::select! {
            d = rx.recv() => match d {
                Some(d) => d,
                None => return,
            },
            _ = stop.requested() => return,
        };
        let a = d.alert;
        let cfg = shared.config();
        if d.desktop && cfg.config.alerts.desktop {
            let ok = desktop(&a).await;
            shared.metrics.alert_delivery("desktop", ok);
        }
        let Some(url) = cfg.config.alerts.webhook.clone() else {
            // No webhook (any more): nothing left to deliver for this alert.
            let _ = store.lock().await.delivered(&a.id).await;
            continue;
        };
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            match post(&shared.client, &url, &a).await {
                Ok(()) => {
                    shared.metrics.alert_delivery("webhook", true);
                    break;
                }
                Err(e) => {
                    shared.metrics.alert_delivery("webhook", false);
                    if attempt == WEBHOOK_ATTEMPTS {
                        tracing::error!(id = %a.id, attempts = attempt, error = %e, "alert webhook failed; giving up on this alert");
                        break;
                    }
                    tracing::warn!(id = %a.id, attempt, retry_in_s = delay.as_secs(), error = %e, "alert webhook failed; retrying");
                    if !stop.sleep(delay).await {
                        return;
                    }
                    delay = (delay * 2).min(Duration::from_secs(300));
                }
            }
        }
        // Delivered or given up on: either way not to be retried at the next start.
        if let Err(e) = store.lock().await.delivered(&a.id).await {
            tracing::warn!(id = %a.id, error = %e, "cannot update the alert record; this webhook alert may be sent again after a restart");
        }
    }
}

async fn post(client: &crate::upstream::Client, url: &str, a: &Alert) -> Result<(), String> {
    let body = serde_json::to_vec(a).map_err(|e| e.to_string())?;
    let req = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "x402d-alerts")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(WEBHOOK_TIMEOUT, client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    // Read (a little of) the body so the connection can be reused.
    let _ = tokio::time::timeout(
        WEBHOOK_TIMEOUT,
        http_body_util::Limited::new(resp.into_body(), 64 << 10).collect(),
    )
    .await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {status}"))
    }
}

/// A GVariant text string literal (for `gdbus call` arguments).
fn gvariant_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// One `org.freedesktop.Notifications.Notify` call on the session bus, through
/// `gdbus` (GLib's D-Bus tool): no D-Bus library in the daemon for one call.
async fn desktop(a: &Alert) -> bool {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
        tracing::warn!(
            "alerts.desktop is set but there is no session bus (DBUS_SESSION_BUS_ADDRESS)"
        );
        return false;
    }
    let mut cmd = tokio::process::Command::new("gdbus");
    cmd.args([
        "call",
        "--session",
        "--dest",
        "org.freedesktop.Notifications",
        "--object-path",
        "/org/freedesktop/Notifications",
        "--method",
        "org.freedesktop.Notifications.Notify",
        "'x402d'",
        "0",
        "''",
    ])
    .arg(gvariant_str(&a.summary()))
    .arg(gvariant_str(&a.body()))
    // "int32 -1" (default expiry): a bare "-1" would be read as an option.
    .args(["@as []", "@a{sv} {}", "int32 -1"])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let out = match tokio::time::timeout(Duration::from_secs(10), cmd.output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "desktop alert not shown: cannot run gdbus (install libglib2.0-bin)");
            return false;
        }
        Err(_) => {
            tracing::warn!("desktop alert not shown: the notification service did not answer");
            return false;
        }
    };
    if !out.status.success() {
        tracing::warn!(
            error = %String::from_utf8_lossy(&out.stderr).trim(),
            "desktop alert not shown"
        );
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{AppTotals, Totals};

    fn at(app_today: u64, wallet_today: u64) -> Snapshot {
        let t = |n| AppTotals {
            today: Totals {
                calls: 1,
                settled: n,
                unsettled: 0,
            },
            month: Totals {
                calls: 1,
                settled: n,
                unsettled: 0,
            },
            ..Default::default()
        };
        let mut s = Snapshot::default();
        s.apps.insert("a".into(), t(app_today));
        s.wallet = t(wallet_today);
        s
    }

    #[test]
    fn thresholds_are_exact_and_per_window() {
        let cfg = crate::config::parse(
            "[limits]\ndaily = \"0.05\"\n[apps.a]\ndaily = \"0.010\"\nmonthly = \"1\"\n",
            None,
        )
        .unwrap();
        let now = "2026-12-01T12:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond();
        let limits = Limits::from_config(&cfg, now);
        let th = [0.8, 1.0];
        let none = BTreeSet::new();
        let ids = |s: &Snapshot| {
            reached(s, &limits, &th, &none)
                .into_iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        };
        assert!(ids(&at(7_999, 7_999)).is_empty());
        assert_eq!(ids(&at(8_000, 8_000)), vec!["a|daily|2026-12-01|800000"]);
        assert_eq!(
            ids(&at(10_000, 40_000)),
            vec![
                "a|daily|2026-12-01|800000",
                "a|daily|2026-12-01|1000000",
                "(wallet)|daily|2026-12-01|800000"
            ]
        );
        // A cap that refused a call counts as reached, for every threshold.
        let full = BTreeSet::from([("a".to_string(), "daily")]);
        let refused: Vec<String> = reached(&at(7_000, 7_000), &limits, &th, &full)
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(
            refused,
            ["a|daily|2026-12-01|800000", "a|daily|2026-12-01|1000000"]
        );
        let a = &reached(&at(10_000, 0), &limits, &th, &none)[1];
        assert_eq!(a.resets_at.as_deref(), Some("2026-12-02T00:00:00Z"));
        assert_eq!(a.scope, "app");
        let json = serde_json::to_value(a).unwrap();
        assert_eq!(json["spent"], "0.01");
        assert_eq!(json["cap"], "0.01");
        assert_eq!(json["threshold"], 1.0);
        assert_eq!(json["window"], "daily");
    }

    #[test]
    fn sent_ids_survive_reload_and_old_windows_are_forgotten() {
        let dir = std::env::temp_dir().join(format!("x402d-alerts-{}", std::process::id()));
        let path = dir.join(SENT_FILE);
        let _ = std::fs::remove_file(&path);
        let mk = |period: &str| Alert {
            id: format!("a|daily|{period}|800000"),
            app: "a".into(),
            scope: "app".into(),
            window: "daily".into(),
            period: period.into(),
            threshold: 0.8,
            spent: Usd(8),
            cap: Usd(10),
            resets_at: None,
        };
        let mut s = Sent::load(&path);
        let old = mk("2026-11-30");
        s.record(std::slice::from_ref(&old), &["2026-11-30".into()])
            .unwrap();
        let s = Sent::load(&path);
        assert!(s.contains(&old.id));
        let mut s = s;
        let new = mk("2026-12-01");
        s.record(std::slice::from_ref(&new), &["2026-12-01".into()])
            .unwrap();
        let s = Sent::load(&path);
        assert!(s.contains(&new.id) && !s.contains(&old.id));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn gvariant_strings_are_quoted() {
        assert_eq!(gvariant_str("a'b\\c"), "'a\\'b\\\\c'");
    }
}
