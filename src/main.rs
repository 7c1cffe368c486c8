#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use hyper::Method;
use serde_json::Value;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use x402d::config::{self, Loaded};
use x402d::ledger::{self, Ledger, report};
use x402d::server::{self, Shared};
use x402d::{admin, chain, upstream, wallet};

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

/// Local x402 payment proxy for OpenAI-compatible tools.
#[derive(Parser)]
#[command(name = "x402d", version, about, long_about = None)]
struct Cli {
    /// Config file (default: $X402D_CONFIG, else $XDG_CONFIG_HOME/x402d/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy in the foreground.
    Serve,
    /// Manage the wallet key in the OS keyring.
    #[command(subcommand)]
    Wallet(wallet::cmd::WalletCmd),
    /// Validate the config file.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Spend per app and window, with caps and what remains.
    Spend(SpendArgs),
    /// One row per payment attempt, newest first.
    Payments(PaymentsArgs),
    /// Is the daemon running, and what has it spent?
    Status(JsonArg),
    /// Make the running daemon re-read its config.
    Reload,
    /// Check config, wallet, state, ledger, upstream, chain and service; say how to fix each.
    Doctor,
    /// Write the systemd unit for this binary and reload systemd.
    InstallService(InstallArgs),
}

#[derive(Args)]
struct InstallArgs {
    /// A user unit (`systemctl --user`; the default): the wallet is in your keyring.
    #[arg(long, conflicts_with = "system")]
    user: bool,
    /// A system unit for servers: the wallet comes from an encrypted systemd credential.
    #[arg(long)]
    system: bool,
    /// Also install `x402d.socket` (socket activation on 127.0.0.1:8402).
    #[arg(long)]
    socket: bool,
    /// Print the unit and where it would go, change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate the config and print the effective configuration.
    Check,
}

#[derive(Args)]
struct JsonArg {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SpendArgs {
    /// Only this app.
    #[arg(long)]
    app: Option<String>,
    /// Also show one row per day for the last N days.
    #[arg(long, default_value_t = 0)]
    days: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PaymentsArgs {
    #[arg(long)]
    app: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

/// An error for the CLI user, with the exit code to use.
struct Fail(u8, String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(1, e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("x402d: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(Fail(code, msg)) => {
            eprintln!("x402d: {msg}");
            ExitCode::from(code)
        }
    }
}

fn load_config(cli: &Cli) -> Result<Loaded, Fail> {
    config::load(cli.config.as_deref()).map_err(|e| {
        Fail(
            2,
            format!("{e}\n(fix the config file, then check it with `x402d config check`)"),
        )
    })
}

async fn run(cli: Cli) -> Result<ExitCode, Fail> {
    match &cli.cmd {
        Cmd::Serve => serve(&cli).await,
        Cmd::Wallet(w) => wallet_cmd(&cli, w).await,
        Cmd::Config(ConfigCmd::Check) => {
            let cfg = load_config(&cli)?;
            match &cfg.file {
                Some(p) if p.exists() => outln!("# {} is valid", p.display()),
                _ => outln!("# no config file; built-in defaults"),
            }
            outln!("# state_dir = {:?}", cfg.state_dir.display().to_string());
            out!("{}", toml::to_string_pretty(&cfg.config)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Spend(a) => spend_cmd(&cli, a).await,
        Cmd::Payments(a) => payments_cmd(&cli, a).await,
        Cmd::Status(a) => status_cmd(&cli, a.json).await,
        Cmd::Doctor => doctor_cmd(&cli).await,
        Cmd::InstallService(a) => install_service(a).await,
        Cmd::Reload => {
            let cfg = config::load(cli.config.as_deref()).map_err(|e| {
                Fail(
                    1,
                    format!("reload refused, the old config stays in force: {e}"),
                )
            })?;
            match admin::call(&cfg.state_dir, Method::POST, "/reload").await? {
                None => Err(Fail(
                    3,
                    "x402d is not running (no admin socket in the state dir)".into(),
                )),
                Some(v) => {
                    let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
                    if v.get("ok").and_then(Value::as_bool) == Some(true) {
                        outln!("reloaded: {msg}");
                        Ok(ExitCode::SUCCESS)
                    } else {
                        Err(Fail(
                            1,
                            format!("reload refused, the old config stays in force: {msg}"),
                        ))
                    }
                }
            }
        }
    }
}

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

async fn serve(cli: &Cli) -> Result<ExitCode, Fail> {
    init_tracing();
    // No core dumps: a dump would contain the key.
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!(error = %e, "could not disable core dumps");
    }
    let cfg = load_config(cli)?;
    ensure_state_dir(&cfg)?;
    let ledger_path = cfg.state_dir.join("ledger.redb");
    let (ledger, recovery) = Ledger::open(&ledger_path, cfg.timezone.clone(), x402d::now_ms())
        .map_err(|e| match e {
            ledger::LedgerError::Locked(_) => {
                Fail(1, format!("{e}; stop it first or use another state_dir"))
            }
            e => Fail(1, e.to_string()),
        })?;
    if recovery.released + recovery.at_risk > 0 {
        tracing::warn!(
            released = recovery.released,
            at_risk = recovery.at_risk,
            "recovered unfinished payments from the last run"
        );
    }
    let client = upstream::client()?;
    let listener = match socket_activated()? {
        Some(l) => {
            tracing::info!("using the socket passed by systemd (socket activation)");
            l
        }
        None => tokio::net::TcpListener::bind(cfg.config.listen).await.map_err(|e| {
            Fail(
                1,
                format!(
                    "cannot listen on {}: {e} (is another x402d running? change `listen` in the config)",
                    cfg.config.listen
                ),
            )
        })?,
    };
    let listen = listener.local_addr()?;
    let port = listen.port();
    let shared = Arc::new(Shared::new(cfg, client, ledger, port));
    {
        let h = shared.metrics.ledger_commit_seconds.clone();
        shared
            .ledger
            .observe_commits(Box::new(move |s| h.observe(s)));
    }

    let wallet_line = match shared.wallet.get(&shared.config().key_location()).await {
        Ok(w) => format!("wallet {}", w.address()),
        Err(e) => {
            tracing::warn!("{e}");
            "no wallet".to_string()
        }
    };
    let admin_listener = admin::bind(&shared.config().state_dir)?;

    // Reload requests from SIGHUP and the admin socket go through one channel.
    let (reload_tx, mut reload_rx) =
        tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<Result<String, String>>>(8);
    let reload_fn: admin::ReloadFn = {
        let tx = reload_tx.clone();
        Arc::new(move || {
            let (otx, orx) = tokio::sync::oneshot::channel();
            let _ = tx.try_send(otx);
            orx
        })
    };
    tokio::spawn(admin::serve(admin_listener, shared.clone(), reload_fn));
    {
        let shared = shared.clone();
        let path = cli.config.clone();
        tokio::spawn(async move {
            while let Some(reply) = reload_rx.recv().await {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                let r = reload(&shared, path.as_deref()).await;
                match &r {
                    Ok(m) => tracing::info!("config reloaded: {m}"),
                    Err(m) => tracing::error!("config reload refused, keeping the old config: {m}"),
                }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                let _ = reply.send(r);
            }
        });
    }
    // At-risk payments are resolved against the chain in the background.
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut warned_no_rpc = false;
            loop {
                let cfg = shared.config();
                let r = chain::resolve(&shared.client, &shared.ledger, |n| cfg.rpc_url(n)).await;
                if r.settled + r.released > 0 {
                    tracing::info!(
                        settled = r.settled,
                        released = r.released,
                        "resolved at-risk payments"
                    );
                }
                if r.no_rpc > 0 && !warned_no_rpc {
                    tracing::warn!(
                        payments = r.no_rpc,
                        "payments with an unknown outcome stay counted against caps: no [payment.rpc] URL for their network"
                    );
                }
                warned_no_rpc = r.no_rpc > 0;
                tokio::time::sleep(Duration::from_secs(cfg.config.payment.resolve_every_secs))
                    .await;
            }
        });
    }

    // A kernel-keyring key: keep the uid's persistent keyring from expiring while we run.
    {
        let shared = shared.clone();
        tokio::spawn(wallet::keyring::keep_alive_forever(move || {
            shared.config().key_location()
        }));
    }

    // The upstream's model list (for tier routing and /v1/models), refreshed in the background.
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                match shared.refresh_catalog().await {
                    Ok(n) => tracing::debug!(models = n, "model list refreshed"),
                    Err(e) => tracing::debug!(error = %e, "model list not refreshed"),
                }
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        });
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let reload_tx = reload_tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        let (otx, _orx) = tokio::sync::oneshot::channel();
                        let _ = reload_tx.try_send(otx);
                    }
                }
            }
            tracing::info!("stopping");
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            let _ = stop_tx.send(true);
        });
    }

    tracing::info!(%listen, upstream = %shared.config().config.upstream, "x402d ready; {wallet_line}");
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(
                &status_line(&shared, &listen.to_string(), &wallet_line).await,
            ),
        ],
    );
    spawn_watchdog_and_status(shared.clone(), listen.to_string(), wallet_line.clone());
    server::serve(listener, shared.clone(), stop_rx, Duration::from_secs(30)).await;
    let _ = std::fs::remove_file(admin::socket_path(&shared.config().state_dir));
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// A listening socket passed by systemd (`LISTEN_FDS`), if any.
fn socket_activated() -> Result<Option<tokio::net::TcpListener>, Fail> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let std_listener = fds.take_tcp_listener(0).map_err(|e| {
        Fail(
            1,
            format!("the socket passed by systemd is not a TCP listener: {e}"),
        )
    })?;
    let Some(l) = std_listener else {
        return Ok(None);
    };
    l.set_nonblocking(true)?;
    Ok(Some(tokio::net::TcpListener::from_std(l)?))
}

/// Watchdog pings from the runtime (a wedged runtime stops them) and a STATUS=
/// line with today's spend.
fn spawn_watchdog_and_status(shared: Arc<Shared>, listen: String, wallet_line: String) {
    // Like sd_watchdog_enabled(3): WATCHDOG_USEC set, and WATCHDOG_PID (if set) is us.
    let usec = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
    let (watchdog, usec) = match usec {
        Some(u) if for_us && u > 0 => (true, u),
        _ => (false, 0),
    };
    let ping_every = if watchdog {
        Duration::from_micros(usec / 2).max(Duration::from_millis(100))
    } else {
        Duration::from_secs(30)
    };
    tokio::spawn(async move {
        let mut last_status = std::time::Instant::now();
        loop {
            if watchdog {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
            if last_status.elapsed() >= Duration::from_secs(30) {
                last_status = std::time::Instant::now();
                let line = status_line(&shared, &listen, &wallet_line).await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&line)]);
            }
            tokio::time::sleep(ping_every).await;
        }
    });
}

async fn status_line(shared: &Arc<Shared>, listen: &str, wallet_line: &str) -> String {
    // From the ledger writer's memory: no file scan every 30 s.
    match shared.ledger.summary(x402d::now_ms()).await {
        Ok((today, pending)) => {
            format!("listening on {listen}; {wallet_line}; ${today} today (${pending} at risk)")
        }
        Err(_) => format!("listening on {listen}; {wallet_line}"),
    }
}

/// Re-reads the config; on any error the old config stays in force.
async fn reload(shared: &Shared, path: Option<&std::path::Path>) -> Result<String, String> {
    let new = config::load(path).map_err(|e| e.to_string())?;
    let old = shared.config();
    let mut notes = Vec::new();
    if new.config.listen != old.config.listen {
        notes.push(format!(
            "`listen` changed to {} but needs a restart",
            new.config.listen
        ));
    }
    if new.state_dir != old.state_dir {
        notes.push("`state_dir` changed but needs a restart".to_string());
    }
    if new.config.limits.timezone != old.config.limits.timezone {
        shared
            .ledger
            .set_timezone(new.timezone.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    let apps = new.apps.len();
    let loc = new.key_location();
    shared.set_config(new);
    notes.insert(0, format!("{apps} apps"));
    // The key is re-read too: a rotated or removed key must not keep paying.
    notes.push(match shared.wallet.reload(&loc).await {
        Ok(Some(w)) => format!("wallet {}", w.address()),
        Ok(None) => "no wallet key".into(),
        Err(e) => format!("wallet: {e}"),
    });
    Ok(notes.join("; "))
}

async fn wallet_cmd(cli: &Cli, cmd: &wallet::cmd::WalletCmd) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    wallet::cmd::run(&cfg, cmd)
        .await
        .map_err(|wallet::cmd::CmdError(code, msg)| Fail(code, msg))?;
    Ok(ExitCode::SUCCESS)
}

/// Reads the ledger file directly (only when no daemon holds it).
fn offline_payments(cfg: &Loaded) -> Result<Vec<ledger::Payment>, Fail> {
    let path = cfg.state_dir.join("ledger.redb");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let db = ledger::open_offline(&path)?;
    Ok(ledger::read_all(&db)?)
}

async fn spend_cmd(cli: &Cli, a: &SpendArgs) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    let mut path = format!("/spend?days={}", a.days);
    if let Some(app) = &a.app {
        path.push_str(&format!("&app={app}"));
    }
    let rows: Vec<Value> = match admin::call(&cfg.state_dir, Method::GET, &path).await? {
        Some(Value::Array(v)) => v,
        Some(_) => return Err(Fail(1, "unexpected reply from the daemon".into())),
        None => {
            let all = offline_payments(&cfg)?;
            let rows = report::spend(
                &all,
                &report::Limits::from_config(&cfg, x402d::now_ms()),
                a.app.as_deref(),
                a.days,
            );
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

async fn payments_cmd(cli: &Cli, a: &PaymentsArgs) -> Result<ExitCode, Fail> {
    let cfg = load_config(cli)?;
    let mut path = format!("/payments?limit={}", a.limit);
    if let Some(app) = &a.app {
        path.push_str(&format!("&app={app}"));
    }
    let rows: Vec<Value> = match admin::call(&cfg.state_dir, Method::GET, &path).await? {
        Some(Value::Array(v)) => v,
        Some(_) => return Err(Fail(1, "unexpected reply from the daemon".into())),
        None => {
            let path = cfg.state_dir.join("ledger.redb");
            if path.exists() {
                let db = ledger::open_offline(&path)?;
                ledger::read_payments(&db, a.app.as_deref(), a.limit)?
                    .iter()
                    .map(admin::payment_json)
                    .collect()
            } else {
                Vec::new()
            }
        }
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
        ]);
    }
    print_table(&t);
    Ok(ExitCode::SUCCESS)
}

async fn status_cmd(cli: &Cli, json: bool) -> Result<ExitCode, Fail> {
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
            outln!(
                "  wallet:     {}",
                if v["wallet"].is_null() {
                    "none (run `x402d wallet import`)".into()
                } else {
                    g("wallet")
                }
            );
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

async fn doctor_cmd(cli: &Cli) -> Result<ExitCode, Fail> {
    use x402d::doctor::Level;
    let cfg = match config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            outln!("FAIL config: {e}");
            outln!("     fix: edit the file; `x402d config check` shows the effective config");
            return Ok(ExitCode::from(1));
        }
    };
    let running = matches!(
        admin::call(&cfg.state_dir, Method::GET, "/status").await,
        Ok(Some(_))
    );
    let checks = x402d::doctor::run(&cfg, running).await;
    let mut failed = false;
    outln!(
        "{:<4} {:<10} daemon {}",
        "",
        "",
        if running { "running" } else { "not running" }
    );
    for c in &checks {
        let tag = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => {
                failed = true;
                "FAIL"
            }
            Level::Skip => "skip",
        };
        outln!("{tag} {:<10} {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            outln!("     {:<10} fix: {fix}", "");
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

const USER_UNIT: &str = include_str!("../systemd/x402d.service");
const SYSTEM_UNIT: &str = include_str!("../systemd/x402d-system.service");
const SOCKET_UNIT: &str = include_str!("../systemd/x402d.socket");

/// A path as a unit-file word: `%` escaped, quoted when it has spaces.
fn unit_path(p: &str) -> String {
    let p = p.replace('%', "%%");
    if p.contains(char::is_whitespace) || p.contains('"') {
        format!("\"{}\"", p.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        p
    }
}

async fn install_service(a: &InstallArgs) -> Result<ExitCode, Fail> {
    let exe = std::env::current_exe()
        .map_err(|e| Fail(1, format!("cannot find this binary's path: {e}")))?;
    let exe = exe.display().to_string();
    if a.system && (exe.starts_with("/home/") || exe.starts_with("/root/")) {
        return Err(Fail(
            2,
            format!(
                "{exe} is under /home or /root, which the system unit's sandbox hides (ProtectHome=yes); \
                 install the binary first: `sudo install -m 0755 {exe} /usr/local/bin/x402d`, then run \
                 `sudo /usr/local/bin/x402d install-service --system`"
            ),
        ));
    }
    let (template, path, scope) = if a.system {
        (
            SYSTEM_UNIT,
            PathBuf::from("/etc/systemd/system/x402d.service"),
            "",
        )
    } else {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .ok_or_else(|| Fail(1, "neither XDG_CONFIG_HOME nor HOME is set".into()))?;
        (
            USER_UNIT,
            base.join("systemd/user/x402d.service"),
            "--user ",
        )
    };
    let unit = template.replace("/usr/local/bin/x402d", &unit_path(&exe));
    let socket_path = path.with_file_name("x402d.socket");
    let what = if a.socket { "x402d.socket" } else { "x402d" };
    if a.dry_run {
        outln!("# would write {}", path.display());
        out!("{unit}");
        if a.socket {
            outln!("# would write {}", socket_path.display());
            out!("{SOCKET_UNIT}");
        }
        outln!("# then: systemctl {scope}daemon-reload && systemctl {scope}enable --now {what}");
        return Ok(ExitCode::SUCCESS);
    }
    if a.socket {
        if let Some(dir) = socket_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Fail(1, format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(&socket_path, SOCKET_UNIT)
            .map_err(|e| Fail(1, format!("cannot write {}: {e}", socket_path.display())))?;
        outln!("wrote {}", socket_path.display());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Fail(1, format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(&path, &unit).map_err(|e| {
        Fail(
            1,
            format!(
                "cannot write {}: {e}{}",
                path.display(),
                if a.system { " (run as root)" } else { "" }
            ),
        )
    })?;
    outln!("wrote {}", path.display());
    let mut cmd = tokio::process::Command::new("systemctl");
    if !a.system {
        cmd.arg("--user");
    }
    match cmd.arg("daemon-reload").status().await {
        Ok(s) if s.success() => outln!("systemd reloaded"),
        Ok(s) => {
            eprintln!("warning: `systemctl {scope}daemon-reload` exited with {s}; run it yourself")
        }
        Err(e) => eprintln!(
            "warning: cannot run systemctl ({e}); run `systemctl {scope}daemon-reload` yourself"
        ),
    }
    if a.system {
        outln!(
            "next: put the key in the credential (see the README), then: systemctl enable --now x402d"
        );
    } else {
        outln!(
            "next: systemctl --user enable --now x402d   (and `loginctl enable-linger $USER` to run without a login)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One table cell from a JSON field: strings bare, null as `-`.
fn cell(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_table(rows: &[Vec<String>]) {
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
