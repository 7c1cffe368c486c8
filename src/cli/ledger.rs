//! `ledger verify` and `ledger rebuild`: the stored totals against the records;
//! `ledger migrate`: the embedded file to PostgreSQL (team mode) and back.

use super::report::offline_ledger;
use super::{Cli, Fail, load_config};
use hyper::Method;
use std::process::ExitCode;
use x402d::admin;
use x402d::ledger::{self, Verify};

/// Recomputes every total from the records and compares it with the stored one:
/// through the running daemon, else on the file directly.
pub(crate) async fn verify_cmd(cli: &Cli, json: bool) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    let report: Verify = match admin::call(&cfg.state_dir, Method::GET, "/ledger/verify").await? {
        Some(v) => match v.get("error").and_then(|e| e.as_str()) {
            Some(e) => {
                return Err(Fail(
                    1,
                    format!("the daemon could not verify the ledger: {e}"),
                ));
            }
            None => serde_json::from_value(v)?,
        },
        None => match super::report::team_ledger(&cfg).await? {
            Some(l) => l.verify().await?,
            None => match offline_ledger(&cfg)? {
                Some(db) => ledger::verify_offline(&db, &cfg.timezone)?,
                None => Verify::default(),
            },
        },
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for d in &report.differences {
            outln!("differs: {d}");
        }
    }
    if report.is_ok() {
        if !json {
            outln!(
                "ledger ok: {} records, the stored totals match them",
                report.records
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    Err(Fail(
        1,
        format!(
            "the ledger's stored totals differ from its {} records ({} differences); caps are checked against the stored totals. \
             Stop the daemon, run `x402d ledger rebuild` to recompute them from the records, start it again, and please report this as a bug",
            report.records,
            report.differences.len()
        ),
    ))
}

/// Recomputes the stored totals from the records (only while no daemon runs).
pub(crate) async fn rebuild_cmd(cli: &Cli) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    if let (x402d::config::LedgerBackend::Postgres, Some(url)) =
        (&cfg.config.ledger.backend, &cfg.config.ledger.url)
    {
        // Team mode: one transaction that locks the totals against reservations,
        // so running daemons need not stop.
        let pg = ledger::postgres::Postgres::reader(url, cfg.timezone.clone()).await?;
        pg.rebuild_totals().await?;
        let report = pg.verify().await?;
        outln!(
            "ledger rebuilt: totals recomputed from {} records in {}",
            report.records,
            pg.location()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if admin::call(&cfg.state_dir, Method::GET, "/status")
        .await?
        .is_some()
    {
        return Err(Fail(
            1,
            "the daemon is running and holds the ledger; stop it first (it rebuilds nothing while running)".into(),
        ));
    }
    let Some(db) = offline_ledger(&cfg)? else {
        outln!("no ledger yet (created on first start): nothing to rebuild");
        return Ok(ExitCode::SUCCESS);
    };
    let report = ledger::rebuild_offline(&db, &cfg.timezone)?;
    if !report.is_ok() {
        return Err(Fail(
            1,
            format!(
                "rebuilt, but the totals still differ from the records: {}; please report this as a bug",
                report.differences.join("; ")
            ),
        ));
    }
    outln!(
        "ledger rebuilt: totals recomputed from {} records",
        report.records
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Store {
    Postgres,
    Redb,
}

/// Copies the ledger between the embedded file and PostgreSQL (see `ledger::migrate`).
pub(crate) async fn migrate_cmd(cli: &Cli, to: Store, replace: bool) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    let Some(url) = cfg.config.ledger.url.as_deref() else {
        return Err(Fail(
            1,
            "no [ledger] url in the config: add url = \"postgres://user@host:port/db\"".into(),
        ));
    };
    let tz = cfg.timezone.clone();
    let m = match to {
        Store::Postgres => ledger::migrate::to_postgres(&cfg.state_dir, url, tz, replace).await,
        Store::Redb => ledger::migrate::to_redb(&cfg.state_dir, url, tz, replace).await,
    }
    .map_err(|e| {
        Fail(
            1,
            format!("migration failed, nothing was switched over: {e}"),
        )
    })?;
    outln!(
        "copied {} payments from {} to {} (records read back identical; {} window totals match)",
        m.records,
        m.from,
        m.to,
        m.totals
    );
    Ok(ExitCode::SUCCESS)
}
