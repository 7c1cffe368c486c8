//! The command line: clap types and dispatch; one file per command group.

use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use x402d::config::Loaded;

/// Writes to stdout; a closed pipe (`x402d payments | head`) ends the program quietly.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod config;
mod docs;
mod doctor;
mod ledger;
mod report;
mod serve;
mod service;
mod wallet;

/// Local x402 payment proxy for OpenAI-compatible tools.
#[derive(Parser)]
#[command(name = "x402d", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Config file (default: $X402D_CONFIG, else $XDG_CONFIG_HOME/x402d/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Run the proxy in the foreground.
    Serve,
    /// Manage the wallet key in the OS keyring.
    #[command(subcommand)]
    Wallet(x402d::wallet::cmd::WalletCmd),
    /// Validate the config file.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Spend per app and window, with caps and what remains.
    Spend(SpendArgs),
    /// One row per payment attempt, newest first.
    Payments(PaymentsArgs),
    /// Check the ledger's stored totals against its records.
    #[command(subcommand)]
    Ledger(LedgerCmd),
    /// Is the daemon running, and what has it spent?
    Status(JsonArg),
    /// Make the running daemon re-read its config.
    Reload,
    /// Check config, wallet, state, ledger, upstream, chain and service; say how to fix each.
    Doctor,
    /// Write the systemd unit for this binary and reload systemd.
    InstallService(InstallArgs),
    /// Print the shell completion script (bash, zsh or fish).
    Completions {
        #[arg(value_enum)]
        shell: docs::CompletionShell,
    },
    /// Print the man page, x402d(1), in roff.
    Man,
}

#[derive(Args)]
pub(crate) struct InstallArgs {
    /// A user unit (`systemctl --user`; the default): the wallet is in your keyring.
    #[arg(long, conflicts_with = "system")]
    pub(crate) user: bool,
    /// A system unit for servers: the wallet comes from an encrypted systemd credential.
    #[arg(long)]
    pub(crate) system: bool,
    /// Also install `x402d.socket` (socket activation on 127.0.0.1:8402).
    #[arg(long)]
    pub(crate) socket: bool,
    /// Print the unit and where it would go, change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Subcommand)]
pub(crate) enum LedgerCmd {
    /// Recompute every total (per app and wallet-wide, per day, month and in
    /// total, per state) from the records and report any difference from the
    /// stored ones; exits 1 on a difference. Reads the whole history.
    Verify(JsonArg),
    /// Recompute the stored totals from the records (the daemon must be stopped).
    Rebuild,
    /// Copy every payment between the embedded file and PostgreSQL (team mode), exactly.
    /// Stop the daemon first. Uses `[ledger] url` and this config's state_dir.
    Migrate {
        /// Where to copy to.
        #[arg(long, value_enum)]
        to: ledger::Store,
        /// Overwrite a target that already holds payments.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConfigCmd {
    /// Validate the config and print the effective configuration.
    Check,
}

#[derive(Args)]
pub(crate) struct JsonArg {
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct SpendArgs {
    /// Only this app.
    #[arg(long)]
    pub(crate) app: Option<String>,
    /// Also show one row per day for the last N days.
    #[arg(long, default_value_t = 0)]
    pub(crate) days: u32,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct PaymentsArgs {
    #[arg(long)]
    pub(crate) app: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: usize,
    #[arg(long)]
    pub(crate) json: bool,
}

/// An error for the CLI user, with the exit code to use.
pub(crate) struct Fail(pub(crate) u8, pub(crate) String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(1, e.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match runtime(&cli) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("x402d: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(run(cli));
    // Every task (and its ledger handle) goes with the runtime; then the ledger
    // writer closes its file, so the next start need not repair it.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    x402d::ledger::wait_closed(std::time::Duration::from_secs(5));
    match result {
        Ok(code) => code,
        Err(Fail(code, msg)) => {
            eprintln!("x402d: {msg}");
            ExitCode::from(code)
        }
    }
}

/// The async runtime. `serve` gets `X402D_WORKER_THREADS` workers (an
/// undocumented knob for measurements; default [`SERVE_WORKERS`]).
fn runtime(cli: &Cli) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if !matches!(cli.cmd, Cmd::Serve) {
        return b.enable_all().build();
    }
    let workers = std::env::var("X402D_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(SERVE_WORKERS);
    b.worker_threads(workers).enable_all().build()
}

/// Worker threads of `x402d serve`. The daemon mostly waits (on apps, the
/// upstream and the ledger's fsync), and what it computes per call is small;
/// with a second worker, each wake-up (a reply from the upstream, a ledger
/// commit done) also woke the idle worker to look for work to steal: 28 context
/// switches per sequential paid call with two workers, 20 with one (issue 17,
/// `cargo bench --bench paid`); paid calls/s at c=64 on 2 cores stayed within
/// the noise of a loaded machine (at that load the one worker is never idle).
/// Blocking work (keyring, ledger reads, file writes) runs on the blocking pool
/// and the ledger writes on its own thread, so one worker never waits on disk.
const SERVE_WORKERS: usize = 1;

pub(crate) fn load_config(cli: &Cli) -> Result<Loaded, Fail> {
    x402d::config::load(cli.config.as_deref()).map_err(|e| {
        Fail(
            2,
            format!("{e}\n(fix the config file, then check it with `x402d config check`)"),
        )
    })
}

pub(crate) async fn run(cli: Cli) -> Result<ExitCode, Fail> {
    match &cli.cmd {
        Cmd::Serve => serve::serve(&cli).await,
        Cmd::Wallet(w) => wallet::wallet_cmd(&cli, w).await,
        Cmd::Config(ConfigCmd::Check) => config::check(&cli),
        Cmd::Spend(a) => report::spend_cmd(&cli, a).await,
        Cmd::Payments(a) => report::payments_cmd(&cli, a).await,
        Cmd::Status(a) => report::status_cmd(&cli, a.json).await,
        Cmd::Ledger(LedgerCmd::Verify(a)) => ledger::verify_cmd(&cli, a.json).await,
        Cmd::Ledger(LedgerCmd::Rebuild) => ledger::rebuild_cmd(&cli).await,
        Cmd::Ledger(LedgerCmd::Migrate { to, replace }) => {
            ledger::migrate_cmd(&cli, *to, *replace).await
        }
        Cmd::Doctor => doctor::doctor_cmd(&cli).await,
        Cmd::InstallService(a) => service::install_service(a).await,
        Cmd::Reload => config::reload(&cli).await,
        Cmd::Completions { shell } => docs::completions(*shell),
        Cmd::Man => docs::man(),
    }
}

/// One table cell from a JSON field: strings bare, null as `-`.
pub(crate) fn cell(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub(crate) fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        outln!("{}", line.join("  ").trim_end());
    }
}
