//! Prometheus metrics, served as text on `GET /metrics` (loopback listener only).

use crate::ledger::{Snapshot, State, report};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicI64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub app: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PaymentLabels {
    pub app: String,
    pub network: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResendLabels {
    pub app: String,
    /// `answer` (brought the paid answer back), `answer_lost` (the chain shows the
    /// payment settled, the seller lost the answer), `failed`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitLabels {
    /// `true`: fsync'd before its callers were answered; `false`: outcomes made
    /// durable by a later commit.
    pub durable: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapLabels {
    pub app: String,
    pub window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub app: String,
    pub window: String,
    pub threshold: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub channel: String,
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub alerts: Family<AlertLabels, Counter>,
    pub alert_deliveries: Family<DeliveryLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub payments: Family<PaymentLabels, Counter>,
    pub resends: Family<ResendLabels, Counter>,
    pub paid_atomic: Family<AppLabels, Counter>,
    pub at_risk_atomic: Gauge<i64, AtomicI64>,
    pub cap_remaining_atomic: Family<CapLabels, Gauge<i64, AtomicI64>>,
    pub upstream_seconds: Histogram,
    pub overhead_seconds: Histogram,
    pub ledger_commit_seconds: Histogram,
    ledger_commits: Family<CommitLabels, Counter>,
    ledger_flushes: Counter,
    /// Last estimate of how far the upstream's clock is ahead of ours.
    pub clock_skew: crate::clock::LastSkew,
    clock_skew_seconds: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("x402d");
        let requests = Family::<RequestLabels, Counter>::default();
        let payments = Family::<PaymentLabels, Counter>::default();
        let paid_atomic = Family::<AppLabels, Counter>::default();
        let resends = Family::<ResendLabels, Counter>::default();
        let at_risk_atomic = Gauge::<i64, AtomicI64>::default();
        let cap_remaining_atomic = Family::<CapLabels, Gauge<i64, AtomicI64>>::default();
        let upstream_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        let overhead_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        let ledger_commit_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "requests",
            "Requests by app, route and status",
            requests.clone(),
        );
        registry.register(
            "payments",
            "Payment outcomes by app, network and state",
            payments.clone(),
        );
        registry.register(
            "payment_resends",
            "Re-sends of the same signed payment after the paid answer was lost, by result",
            resends.clone(),
        );
        registry.register(
            "paid_atomic_units",
            "USDC paid (settled), in atomic units (1e-6 USD)",
            paid_atomic.clone(),
        );
        registry.register(
            "at_risk_atomic_units",
            "USDC signed whose outcome is unknown or rejected-but-unexpired",
            at_risk_atomic.clone(),
        );
        registry.register(
            "cap_remaining_atomic_units",
            "Budget left per app and window (atomic units)",
            cap_remaining_atomic.clone(),
        );
        registry.register(
            "upstream_seconds",
            "Upstream round-trip time per leg",
            upstream_seconds.clone(),
        );
        registry.register(
            "overhead_seconds",
            "Time x402d itself adds to a call (total minus upstream time)",
            overhead_seconds.clone(),
        );
        registry.register(
            "ledger_commit_seconds",
            "Ledger write-transaction commit time (one fsync per group commit)",
            ledger_commit_seconds.clone(),
        );
        let ledger_commits = Family::<CommitLabels, Counter>::default();
        registry.register(
            "ledger_commits",
            "Ledger commits for payment ops, by whether each was fsync'd before answering (a paid call makes one durable commit: its reservation)",
            ledger_commits.clone(),
        );
        let ledger_flushes = Counter::default();
        registry.register(
            "ledger_flushes",
            "Ledger commits made only to make earlier non-durable ones durable (when idle)",
            ledger_flushes.clone(),
        );
        let clock_skew_seconds = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "clock_skew_seconds",
            "Seconds the upstream's clock (Date header) is ahead of this machine's",
            clock_skew_seconds.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "alerts",
            "Budget alerts raised, by app, window and threshold",
            alerts.clone(),
        );
        let alert_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "alert_deliveries",
            "Alert delivery attempts by channel (webhook, desktop) and result",
            alert_deliveries.clone(),
        );
        Metrics {
            alerts,
            alert_deliveries,
            clock_skew: Default::default(),
            clock_skew_seconds,
            registry,
            requests,
            payments,
            resends,
            paid_atomic,
            at_risk_atomic,
            cap_remaining_atomic,
            upstream_seconds,
            overhead_seconds,
            ledger_commit_seconds,
            ledger_commits,
            ledger_flushes,
        }
    }

    /// Copies the ledger's commit counters (read at scrape time).
    pub fn set_ledger_stats(&self, s: &crate::ledger::Stats) {
        use std::sync::atomic::Ordering::Relaxed;
        for (durable, n) in [
            ("true", s.durable_commits),
            ("false", s.non_durable_commits),
        ] {
            self.ledger_commits
                .get_or_create(&CommitLabels {
                    durable: durable.into(),
                })
                .inner()
                .store(n, Relaxed);
        }
        self.ledger_flushes.inner().store(s.flushes, Relaxed);
    }

    pub fn set_clock_skew(&self, secs: i64, now_ms: i64) {
        self.clock_skew.set(secs, now_ms);
        self.clock_skew_seconds.set(secs);
    }

    pub fn alert(&self, app: &str, window: &str, threshold: f64) {
        self.alerts
            .get_or_create(&AlertLabels {
                app: app.into(),
                window: window.into(),
                threshold: threshold.to_string(),
            })
            .inc();
    }

    pub fn alert_delivery(&self, channel: &str, ok: bool) {
        self.alert_deliveries
            .get_or_create(&DeliveryLabels {
                channel: channel.into(),
                result: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
    }

    pub fn payment(&self, app: &str, network: &str, state: State, amount: u64) {
        self.payments
            .get_or_create(&PaymentLabels {
                app: app.into(),
                network: network.into(),
                state: state.as_str().into(),
            })
            .inc();
        if state == State::Settled {
            self.paid_atomic
                .get_or_create(&AppLabels { app: app.into() })
                .inc_by(amount);
        }
    }

    /// One re-send of a signed payment and what it brought.
    pub fn resend(&self, app: &str, result: &str) {
        self.resends
            .get_or_create(&ResendLabels {
                app: app.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Renders the text exposition, refreshing the ledger-derived gauges first
    /// (from the ledger writer's totals: no record is read).
    pub fn render(&self, totals: &Snapshot, limits: &report::Limits<'_>) -> String {
        self.at_risk_atomic
            .set(i64::try_from(totals.wallet.total.unsettled).unwrap_or(i64::MAX));
        for row in report::rows(totals, limits, None, 0) {
            if let Some(rem) = row.remaining {
                self.cap_remaining_atomic
                    .get_or_create(&CapLabels {
                        app: row.app.clone(),
                        window: row.window.clone(),
                    })
                    .set(rem.atomic() as i64);
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
