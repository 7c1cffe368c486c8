//! `x402d ledger …`: operations on the ledger store itself.

use super::{Cli, Fail, load_config};
use clap::{Subcommand, ValueEnum};
use std::process::ExitCode;
use x402d::ledger::migrate;

#[derive(Subcommand)]
pub(crate) enum LedgerCmd {
    /// Copy every payment between the embedded file and PostgreSQL (team mode), exactly.
    /// Stop the daemon first. Uses `[ledger] url` and this config's state_dir.
    Migrate {
        /// Where to copy to.
        #[arg(long, value_enum)]
        to: Store,
        /// Overwrite a target that already holds payments.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Store {
    Postgres,
    Redb,
}

pub(crate) async fn ledger_cmd(cli: &Cli, c: &LedgerCmd) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    match c {
        LedgerCmd::Migrate { to, replace } => {
            let Some(url) = cfg.config.ledger.url.as_deref() else {
                return Err(Fail(
                    1,
                    "no [ledger] url in the config: add url = \"postgres://user@host:port/db\""
                        .into(),
                ));
            };
            let tz = cfg.timezone.clone();
            let m = match to {
                Store::Postgres => migrate::to_postgres(&cfg.state_dir, url, tz, *replace).await,
                Store::Redb => migrate::to_redb(&cfg.state_dir, url, tz, *replace).await,
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
    }
}
