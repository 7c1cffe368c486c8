//! `serve`: logging, process hardening and the state dir, then the daemon (src/daemon.rs).

use super::{Cli, Fail, load_config};
use std::io::IsTerminal;
use std::process::ExitCode;
use x402d::config::Loaded;

/// Logs go to the journal (structured fields: APP, MODEL, AMOUNT, STATE, TX…) when
/// systemd connected stderr to it, else plain text on stderr.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if stderr_is_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        let journald = journald
            .with_field_prefix(None)
            .with_syslog_identifier("x402d".into());
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// `$JOURNAL_STREAM` is `DEV:INODE` of the journal stream systemd gave us.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(m) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino())
}

fn ensure_state_dir(cfg: &Loaded) -> Result<(), Fail> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.state_dir)
        .map_err(|e| {
            Fail(
                1,
                format!(
                    "cannot create the state dir {}: {e} (set `state_dir` in the config)",
                    cfg.state_dir.display()
                ),
            )
        })
}

pub(crate) async fn serve(cli: &Cli) -> Result<ExitCode, Fail> {
    init_tracing();
    // No core dumps: a dump would contain the key.
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!(error = %e, "could not disable core dumps");
    }
    let cfg = load_config(cli)?;
    ensure_state_dir(&cfg)?;
    x402d::daemon::run(cfg, cli.config.clone())
        .await
        .map_err(|e| Fail(1, e.0))?;
    Ok(ExitCode::SUCCESS)
}
