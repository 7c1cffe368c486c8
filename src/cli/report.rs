//! `spend`, `payments` and `status`: from the running daemon, else from the ledger file.

use super::{Cli, Fail, PaymentsArgs, SpendArgs, cell, load_config, print_table};
use hyper::Method;
use serde_json::Value;
use std::process::ExitCode;
use x402d::admin;
use x402d::config::Loaded;
use x402d::ledger::{self, report};

/// The ledger file, opened directly (only when no daemon holds it); `None` before the first run.
pub(crate) fn offline_ledger(cfg: &Loaded) -> Result<Option<redb::Database>, Fail> {
    let path = cfg.state_dir.join("ledger.redb");
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(ledger::open_offline(&path)?))
}

/// With `[ledger] backend = "postgres"`: the team's database, read directly
/// (no daemon needed; the totals are everyone's).
pub(crate) async fn team_ledger(cfg: &Loaded) -> Result<Option<ledger::Ledger>, Fail> {
    match (&cfg.config.ledger.backend, &cfg.config.ledger.url) {
        (x402d::config::LedgerBackend::Postgres, Some(url)) => Ok(Some(
            ledger::Ledger::postgres_reader(url, cfg.timezone.clone()).await?,
        )),
        _ => Ok(None),
    }
}

/// Rows from the running daemon's admin endpoint `path` (with `&app=` when
/// filtered); `None` when no daemon is running.
async fn daemon_rows(
    cfg: &Loaded,
    mut path: String,
    app: Option<&str>,
) -> Result<Option<Vec<Value>>, Fail> {
    if let Some(app) = app {
        path.push_str(&format!("&app={app}"));
    }
    match admin::call(&cfg.state_dir, Method::GET, &path).await? {
        Some(Value::Array(v)) => Ok(Some(v)),
        Some(_) => Err(Fail(1, "unexpected reply from the daemon".into())),
        None => Ok(None),
    }
}

pub(crate) async fn spend_cmd(cli: &Cli, a: &SpendArgs) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    let path = format!("/spend?days={}", a.days);
    let rows: Vec<Value> = match daemon_rows(&cfg, path, a.app.as_deref()).await? {
        Some(v) => v,
        None => {
            // The store's totals (the team's database, or the file's persisted
            // totals): no record is read.
            let now = x402d::now_ms();
            let limits = report::Limits::from_config(&cfg, now);
            let rows = match team_ledger(&cfg).await? {
                Some(l) => {
                    let snapshot = l.totals(now, a.days).await?;
                    report::rows(&snapshot, &limits, a.app.as_deref(), a.days)
                }
                None => match offline_ledger(&cfg)? {
                    Some(db) => {
                        let snapshot = ledger::totals_offline(&db, &cfg.timezone, now, a.days)?;
                        report::rows(&snapshot, &limits, a.app.as_deref(), a.days)
                    }
                    None => report::spend(&[], &limits, a.app.as_deref(), a.days),
                },
            };
            serde_json::to_value(rows)?
                .as_array()
                .cloned()
                .unwrap_or_default()
        }
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = cell;
    let mut t = vec![vec![
        "APP".to_string(),
        "WINDOW".into(),
        "CALLS".into(),
        "SETTLED".into(),
        "AT-RISK".into(),
        "CAP".into(),
        "REMAINING".into(),
    ]];
    for r in &rows {
        t.push(vec![
            s(r, "app"),
            s(r, "window"),
            s(r, "calls"),
            s(r, "settled"),
            s(r, "at_risk"),
            s(r, "cap"),
            s(r, "remaining"),
        ]);
    }
    print_table(&t);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn payments_cmd(cli: &Cli, a: &PaymentsArgs) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    let path = format!("/payments?limit={}", a.limit);
    let rows: Vec<Value> = match daemon_rows(&cfg, path, a.app.as_deref()).await? {
        Some(v) => v,
        None => match team_ledger(&cfg).await? {
            Some(l) => l
                .payments(a.app.as_deref(), a.limit)
                .await?
                .iter()
                .map(admin::payment_json)
                .collect(),
            None => match offline_ledger(&cfg)? {
                Some(db) => ledger::read_payments(&db, a.app.as_deref(), a.limit)?
                    .iter()
                    .map(admin::payment_json)
                    .collect(),
                None => Vec::new(),
            },
        },
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = cell;
    let mut t = vec![vec![
        "ID".to_string(),
        "TIME".into(),
        "APP".into(),
        "MODEL".into(),
        "AMOUNT".into(),
        "NETWORK".into(),
        "STATE".into(),
        "TX".into(),
        "SENT".into(),
        "PAYMENT-ID".into(),
        "LAST ERROR".into(),
    ]];
    for r in &rows {
        let time = s(r, "time");
        t.push(vec![
            s(r, "id"),
            time.get(..19).unwrap_or(&time).to_string(),
            s(r, "app"),
            s(r, "model"),
            s(r, "amount"),
            s(r, "network"),
            s(r, "state"),
            s(r, "tx"),
            s(r, "attempts"),
            s(r, "payment_identifier"),
            s(r, "last_error"),
        ]);
    }
    print_table(&t);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn status_cmd(cli: &Cli, json: bool) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    match admin::call(&cfg.state_dir, Method::GET, "/status").await? {
        None => {
            if json {
                outln!("{}", serde_json::json!({"running": false}));
            } else {
                outln!(
                    "x402d is not running (state dir {})",
                    cfg.state_dir.display()
                );
            }
            Ok(ExitCode::from(3))
        }
        Some(v) => {
            if json {
                outln!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            let g = |k: &str| match &v[k] {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                o => o.to_string(),
            };
            outln!("x402d {} running (pid {})", g("version"), g("pid"));
            outln!("  listen:     {}", g("listen"));
            outln!("  upstream:   {}", g("upstream"));
            outln!("  ledger:     {}", g("ledger"));
            outln!(
                "  wallet:     {}",
                if v["wallet"].is_null() {
                    "none (run `x402d wallet import`)".into()
                } else {
                    g("wallet")
                }
            );
            if let Some(sol) = v["solana_wallet"].as_str() {
                outln!("  solana:     {sol}");
            }
            if let Some(ks) = v["wallet_store"].as_str() {
                outln!("  key store:  {ks}");
            }
            outln!("  at-risk:    ${}", g("at_risk"));
            outln!("  last error: {}", g("last_error"));
            let mut t = vec![vec![
                "APP".to_string(),
                "WINDOW".into(),
                "SPENT".into(),
                "AT-RISK".into(),
                "CAP".into(),
                "REMAINING".into(),
            ]];
            if let Some(rows) = v["spend"].as_array() {
                for r in rows {
                    let s = |k: &str| match &r[k] {
                        Value::String(s) => s.clone(),
                        Value::Null => "-".into(),
                        o => o.to_string(),
                    };
                    t.push(vec![
                        s("app"),
                        s("window"),
                        s("settled"),
                        s("at_risk"),
                        s("cap"),
                        s("remaining"),
                    ]);
                }
            }
            print_table(&t);
            Ok(ExitCode::SUCCESS)
        }
    }
}
