//! Spend summaries for `x402d spend`, `x402d status` and `/metrics`: from the
//! running ledger's in-memory totals ([`rows`] over a [`Snapshot`]), or, when no
//! daemon runs, from the records themselves ([`spend`]). Pure: the caller passes
//! the data, caps, zone and time.

use super::{Payment, Snapshot, State, Totals, window};
use crate::config::AppConfig;
use crate::money::Usd;
use jiff::tz::TimeZone;
use serde::Serialize;
use std::collections::BTreeMap;

/// Name used for the wallet-wide row.
pub const WALLET: &str = "(wallet)";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpendRow {
    pub app: String,
    /// `today`, `month`, `total`, or a date `YYYY-MM-DD` for `--days`.
    pub window: String,
    /// Payment attempts that count (everything but released).
    pub calls: u64,
    pub settled: Usd,
    /// Signed or reserved without a final outcome, at-risk or rejected-but-unexpired.
    pub at_risk: Usd,
    pub cap: Option<Usd>,
    pub remaining: Option<Usd>,
}

/// The caps and clock a report is computed against.
pub struct Limits<'a> {
    pub apps: &'a BTreeMap<String, AppConfig>,
    pub wallet_daily: Option<Usd>,
    pub wallet_monthly: Option<Usd>,
    pub tz: &'a TimeZone,
    pub now_ms: i64,
}

impl<'a> Limits<'a> {
    pub fn from_config(cfg: &'a crate::config::Loaded, now_ms: i64) -> Limits<'a> {
        Limits {
            apps: &cfg.apps,
            wallet_daily: cfg.config.limits.daily,
            wallet_monthly: cfg.config.limits.monthly,
            tz: &cfg.timezone,
            now_ms,
        }
    }
}

/// Per app (and wallet-wide): today, this month, lifetime; plus one row per day
/// for the last `days` days when asked.
pub fn spend(
    payments: &[Payment],
    limits: &Limits<'_>,
    only_app: Option<&str>,
    days: u32,
) -> Vec<SpendRow> {
    let Limits {
        apps,
        wallet_daily,
        wallet_monthly,
        tz,
        now_ms,
    } = *limits;
    let today = window::day(now_ms, tz);
    let month = window::month(now_ms, tz);
    let mut names: Vec<String> = apps.keys().cloned().collect();
    for p in payments {
        if !names.contains(&p.app) {
            names.push(p.app.clone());
        }
    }
    names.sort();
    if only_app.is_none() {
        names.push(WALLET.to_string());
    }
    let mut rows = Vec::new();
    for name in names {
        if only_app.is_some_and(|a| a != name) {
            continue;
        }
        let mine: Vec<&Payment> = payments
            .iter()
            .filter(|p| name == WALLET || p.app == name)
            .filter(|p| p.state.counts())
            .collect();
        let cfg = apps.get(&name);
        let (cap_d, cap_m, cap_t) = if name == WALLET {
            (wallet_daily, wallet_monthly, None)
        } else {
            (
                cfg.and_then(|c| c.daily),
                cfg.and_then(|c| c.monthly),
                cfg.and_then(|c| c.total),
            )
        };
        let row = |label: String, sel: &dyn Fn(&Payment) -> bool, cap: Option<Usd>| {
            let mut calls = 0;
            let mut settled = Usd::ZERO;
            let mut at_risk = Usd::ZERO;
            for p in mine.iter().filter(|p| sel(p)) {
                calls += 1;
                if p.state == State::Settled {
                    settled = settled.saturating_add(Usd(p.amount));
                } else {
                    at_risk = at_risk.saturating_add(Usd(p.amount));
                }
            }
            SpendRow {
                app: name.clone(),
                window: label,
                calls,
                settled,
                at_risk,
                cap,
                remaining: cap.map(|c| c.saturating_sub(settled.saturating_add(at_risk))),
            }
        };
        rows.push(row(
            "today".into(),
            &|p| window::day(p.created_ms, tz) == today,
            cap_d,
        ));
        rows.push(row(
            "month".into(),
            &|p| window::month(p.created_ms, tz) == month,
            cap_m,
        ));
        rows.push(row("total".into(), &|_| true, cap_t));
        let mut d = today;
        for _ in 0..days {
            let label = d.to_string();
            let day = d;
            rows.push(row(label, &|p| window::day(p.created_ms, tz) == day, cap_d));
            match d.yesterday() {
                Ok(y) => d = y,
                Err(_) => break,
            }
        }
    }
    rows
}

/// The rows of [`spend`], from the ledger writer's totals instead of a scan of
/// every record (`snapshot` taken with at least `days` days).
pub fn rows(
    snapshot: &Snapshot,
    limits: &Limits<'_>,
    only_app: Option<&str>,
    days: u32,
) -> Vec<SpendRow> {
    let mut names: std::collections::BTreeSet<&str> =
        limits.apps.keys().map(String::as_str).collect();
    names.extend(snapshot.apps.keys().map(String::as_str));
    let mut names: Vec<&str> = names.into_iter().collect();
    if only_app.is_none() {
        names.push(WALLET);
    }
    let empty = super::AppTotals::default();
    let mut out = Vec::new();
    for name in names {
        if only_app.is_some_and(|a| a != name) {
            continue;
        }
        let t = if name == WALLET {
            &snapshot.wallet
        } else {
            snapshot.apps.get(name).unwrap_or(&empty)
        };
        let cfg = limits.apps.get(name);
        let (cap_d, cap_m, cap_t) = if name == WALLET {
            (limits.wallet_daily, limits.wallet_monthly, None)
        } else {
            (
                cfg.and_then(|c| c.daily),
                cfg.and_then(|c| c.monthly),
                cfg.and_then(|c| c.total),
            )
        };
        let row = |window: String, t: &Totals, cap: Option<Usd>| {
            let settled = Usd(t.settled);
            let at_risk = Usd(t.unsettled);
            SpendRow {
                app: name.to_string(),
                window,
                calls: t.calls,
                settled,
                at_risk,
                cap,
                remaining: cap.map(|c| c.saturating_sub(settled.saturating_add(at_risk))),
            }
        };
        out.push(row("today".into(), &t.today, cap_d));
        out.push(row("month".into(), &t.month, cap_m));
        out.push(row("total".into(), &t.total, cap_t));
        // Day labels from the wallet (always filled): an app with no record has none.
        for (i, (d, _)) in snapshot.wallet.days.iter().take(days as usize).enumerate() {
            let day = t.days.get(i).map(|(_, t)| *t).unwrap_or_default();
            out.push(row(d.to_string(), &day, cap_d));
        }
    }
    out
}

/// At-risk total across the ledger (everything counted but not settled).
pub fn at_risk_total(payments: &[Payment]) -> Usd {
    payments
        .iter()
        .filter(|p| p.state.counts() && p.state != State::Settled)
        .fold(Usd::ZERO, |a, p| a.saturating_add(Usd(p.amount)))
}
