//! The running daemon: owns every background task (accept loop, admin socket,
//! reload, resolver, catalog refresh, watchdog/STATUS, signals) and the shutdown.

use crate::config::{self, Loaded};
use crate::ledger::{self, Ledger};
use crate::server::{self, Shared};
use crate::{admin, alerts, upstream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// Why the daemon could not start, for the user: what failed and what to do.
/// (No `Display`, so any displayable error converts with `?`.)
pub struct Failed(pub String);

impl<E: std::fmt::Display> From<E> for Failed {
    fn from(e: E) -> Self {
        Failed(e.to_string())
    }
}

/// How long stop may take, all steps together: let open connections finish,
/// let payment flows record their outcome, stop the background tasks.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The one cancellation path of the background tasks: flips once, after the
/// connections and payment flows are drained.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Completes once stop is requested.
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// Sleeps for `d`; false when stop was requested meanwhile.
    pub async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.requested() => false,
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT. `config_path` is re-read on reload.
pub async fn run(cfg: Loaded, config_path: Option<PathBuf>) -> Result<(), Failed> {
    let (ledger, recovery) = Ledger::open_configured(&cfg, crate::now_ms())
        .await
        .map_err(|e| match e {
            ledger::LedgerError::Locked(_) => {
                Failed(format!("{e}; stop it first or use another state_dir"))
            }
            e => Failed(e.to_string()),
        })?;
    if recovery.released + recovery.at_risk > 0 {
        tracing::warn!(
            released = recovery.released,
            at_risk = recovery.at_risk,
            "recovered unfinished payments from the last run"
        );
    }
    let client = upstream::client()?;
    let listener = listen(&cfg).await?;
    let listen = listener.local_addr()?;
    let shared = Arc::new(
        Shared::new(cfg, client, ledger, listen.port()).with_timeouts(server::Timeouts::from_env()),
    );
    // Every commit also wakes the alert watcher (a permit, never a wait on the writer).
    {
        let h = shared.metrics.ledger_commit_seconds.clone();
        let signals = shared.alert_signals.clone();
        shared.ledger.observe_commits(Box::new(move |s| {
            h.observe(s);
            signals.commit();
        }));
    }

    let wallet_line = match shared.wallet.get(&shared.config().key_location()).await {
        Ok(w) => format!("wallet {}", w.address()),
        Err(e) => {
            tracing::warn!("{e}");
            "no wallet".to_string()
        }
    };
    // The path is fixed here: a reload may change `state_dir`, but the socket to
    // remove at exit is the one bound now.
    let admin_path = admin::socket_path(&shared.config().state_dir);
    let admin_listener = admin::bind(&shared.config().state_dir)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = Stop(stop_rx);
    let mut tasks = JoinSet::new();

    // Reload requests from SIGHUP and the admin socket go through one channel.
    let (reload_tx, reload_rx) = mpsc::channel::<oneshot::Sender<Result<String, String>>>(8);
    let reload_fn: admin::ReloadFn = {
        let tx = reload_tx.clone();
        Arc::new(move || {
            let (otx, orx) = oneshot::channel();
            let _ = tx.try_send(otx);
            orx
        })
    };
    tasks.spawn(admin::serve(
        admin_listener,
        admin::Ctx {
            shared: shared.clone(),
            reload: reload_fn,
            listen,
        },
        stop.clone(),
    ));
    tasks.spawn(reloads(
        shared.clone(),
        config_path,
        reload_rx,
        stop.clone(),
    ));
    tasks.spawn(resolver(shared.clone(), stop.clone()));
    tasks.spawn(catalog(shared.clone(), stop.clone()));
    tasks.spawn(keyring_keep_alive(shared.clone(), stop.clone()));
    let (alerts_tx, alerts_rx) = mpsc::channel(256);
    let alert_store = alerts::open(&shared.config().state_dir);
    tasks.spawn(alerts::watch(
        shared.clone(),
        alert_store.clone(),
        alerts_tx,
        stop.clone(),
    ));
    tasks.spawn(alerts::deliver(
        shared.clone(),
        alert_store,
        alerts_rx,
        stop.clone(),
    ));
    // Stop signals received: the first stops accepting, a second cuts the drain short.
    // Installed before READY=1, so an early SIGTERM is never the default (abrupt) exit.
    let handlers = Signals::install()?;
    let (signals_tx, mut signals) = watch::channel(0u32);
    tasks.spawn(signal_loop(handlers, reload_tx, signals_tx, stop.clone()));

    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(%listen, upstream = %shared.config().config.upstream, workers, "x402d ready; {wallet_line}");
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(
                &status_line(&shared, &listen.to_string(), &wallet_line).await,
            ),
        ],
    );
    tasks.spawn(watchdog(stop.clone()));
    tasks.spawn(status_updates(
        shared.clone(),
        listen.to_string(),
        wallet_line,
        stop.clone(),
    ));

    let first_signal = {
        let mut s = signals.clone();
        async move {
            let _ = s.wait_for(|n| *n >= 1).await;
        }
    };
    let connections = server::serve(listener, shared.clone(), first_signal).await;

    // The one shutdown sequence, under one deadline.
    let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
    tracing::info!("no longer accepting; waiting for in-flight calls and payment flows");
    if !within(deadline, &mut signals, connections.shutdown()).await {
        tracing::warn!("stopping with calls still open; they are cut off");
    }
    // Payment flows outlive their connections (an app that hung up): each records
    // its outcome before the process may exit.
    if !within(deadline, &mut signals, shared.inflight.drained()).await {
        tracing::warn!(
            flows = shared.inflight.count(),
            "stopping with payment flows still running; their payments stay counted against caps and are resolved at the next start"
        );
    }
    let _ = stop_tx.send(true);
    let joined = within(deadline, &mut signals, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if !joined {
        tasks.abort_all();
    }
    // Outcomes recorded without an fsync of their own reach the disk now.
    if let Err(e) = shared.ledger.flush().await {
        tracing::error!(error = %e, "could not flush the ledger; unfinished outcomes are resolved at the next start");
    }
    if let Err(e) = std::fs::remove_file(&admin_path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %admin_path.display(), error = %e, "could not remove the admin socket");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs `f` until it completes (true), the deadline passes or a second stop
/// signal arrives (false).
async fn within(
    deadline: tokio::time::Instant,
    signals: &mut watch::Receiver<u32>,
    f: impl std::future::Future<Output = ()>,
) -> bool {
    let second_signal = async {
        // The signal task ends with the background tasks; that is no signal.
        if signals.wait_for(|n| *n >= 2).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = f => true,
        _ = tokio::time::sleep_until(deadline) => false,
        _ = second_signal => false,
    }
}

/// The configured `listen` address, or the socket systemd passed, which must obey
/// the same loopback rule.
async fn listen(cfg: &Loaded) -> Result<TcpListener, Failed> {
    if let Some(l) = socket_activated()? {
        let addr = l.local_addr()?;
        if let Some(r) = cfg.config.remote_refusal(addr) {
            let key = match &r.table {
                Some(t) => format!("{t}.{}", r.key),
                None => r.key.to_string(),
            };
            return Err(Failed(format!(
                "refusing the socket passed by systemd ({addr}): `{key}`: {}; or make the socket unit listen on 127.0.0.1 (ListenStream=127.0.0.1:PORT)",
                r.message
            )));
        }
        tracing::info!(%addr, "using the socket passed by systemd (socket activation)");
        return Ok(l);
    }
    TcpListener::bind(cfg.config.listen).await.map_err(|e| {
        Failed(format!(
            "cannot listen on {}: {e} (is another x402d running? change `listen` in the config)",
            cfg.config.listen
        ))
    })
}

/// A listening socket passed by systemd (`LISTEN_FDS`), if any.
fn socket_activated() -> Result<Option<TcpListener>, Failed> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let std_listener = fds
        .take_tcp_listener(0)
        .map_err(|e| format!("the socket passed by systemd is not a TCP listener: {e}"))?;
    let Some(l) = std_listener else {
        return Ok(None);
    };
    l.set_nonblocking(true)?;
    Ok(Some(TcpListener::from_std(l)?))
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Signals, Failed> {
        let install =
            |k| signal(k).map_err(|e| Failed(format!("cannot install the signal handlers: {e}")));
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
        })
    }
}

/// SIGHUP asks for a reload; SIGTERM/SIGINT count stop signals.
async fn signal_loop(
    mut s: Signals,
    reload_tx: mpsc::Sender<oneshot::Sender<Result<String, String>>>,
    signals: watch::Sender<u32>,
    mut stop: Stop,
) {
    loop {
        tokio::select! {
            _ = s.term.recv() => {}
            _ = s.int.recv() => {}
            _ = s.hup.recv() => {
                let (otx, _orx) = oneshot::channel();
                let _ = reload_tx.try_send(otx);
                continue;
            }
            _ = stop.requested() => return,
        }
        signals.send_modify(|n| *n += 1);
        match *signals.borrow() {
            1 => {
                tracing::info!("stopping");
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            }
            2 => tracing::warn!("second stop signal: exiting without waiting any longer"),
            _ => {}
        }
    }
}

async fn reloads(
    shared: Arc<Shared>,
    path: Option<PathBuf>,
    mut rx: mpsc::Receiver<oneshot::Sender<Result<String, String>>>,
    mut stop: Stop,
) {
    loop {
        let reply = tokio::select! {
            r = rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = stop.requested() => return,
        };
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
        let r = reload(&shared, path.as_deref()).await;
        match &r {
            Ok(m) => tracing::info!("config reloaded: {m}"),
            Err(m) => tracing::error!("config reload refused, keeping the old config: {m}"),
        }
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        let _ = reply.send(r);
    }
}

/// At-risk payments are resolved against the chain in the background.
async fn resolver(shared: Arc<Shared>, mut stop: Stop) {
    let mut warned_no_rpc = false;
    loop {
        let cfg = shared.config();
        // With a shared ledger database only one daemon of the team resolves.
        if !shared.ledger.try_lead_resolver().await {
            if !stop
                .sleep(Duration::from_secs(cfg.config.payment.resolve_every_secs))
                .await
            {
                return;
            }
            continue;
        }
        let r = shared
            .resolver
            .resolve(
                &shared.client,
                &shared.ledger,
                &shared.metrics,
                |n| cfg.rpc_url(n),
                cfg.config.payment.max_rpc_lag_secs,
            )
            .await;
        let s = shared
            .resolver
            .resolve_solana(&shared.client, &shared.ledger, &shared.metrics, |n| {
                cfg.svm_rpc_url(n)
            })
            .await;
        let r = crate::chain::Resolved {
            settled: r.settled + s.settled,
            released: r.released + s.released,
            pending: r.pending + s.pending,
            no_rpc: r.no_rpc + s.no_rpc,
        };
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
        if !stop
            .sleep(Duration::from_secs(cfg.config.payment.resolve_every_secs))
            .await
        {
            return;
        }
    }
}

/// A kernel-keyring key: keeps the uid's persistent keyring from expiring while we run.
async fn keyring_keep_alive(shared: Arc<Shared>, mut stop: Stop) {
    let cfg = shared.clone();
    tokio::select! {
        _ = crate::wallet::keyring::keep_alive_forever(move || cfg.config().key_location()) => {}
        _ = stop.requested() => {}
    }
}

/// The upstream's model list (for tier routing and /v1/models), refreshed in the background.
async fn catalog(shared: Arc<Shared>, mut stop: Stop) {
    loop {
        let refreshed = tokio::select! {
            r = shared.refresh_catalog() => r,
            _ = stop.requested() => return,
        };
        match refreshed {
            Ok(n) => tracing::debug!(models = n, "model list refreshed"),
            Err(e) => tracing::debug!(error = %e, "model list not refreshed"),
        }
        if !stop.sleep(Duration::from_secs(600)).await {
            return;
        }
    }
}

/// Watchdog pings from the runtime: a wedged runtime stops them. They wait on
/// nothing else (the STATUS= line, which asks the ledger writer, has its own task).
async fn watchdog(mut stop: Stop) {
    // Like sd_watchdog_enabled(3): WATCHDOG_USEC set, and WATCHDOG_PID (if set) is us.
    let usec = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let for_us = std::env::var("WATCHDOG_PID")
        .ok()
        .is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
    let usec = match usec {
        Some(u) if for_us && u > 0 => u,
        _ => return,
    };
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    loop {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        if !stop.sleep(every).await {
            return;
        }
    }
}

/// A STATUS= line with today's spend, every 30 s.
async fn status_updates(shared: Arc<Shared>, listen: String, wallet_line: String, mut stop: Stop) {
    while stop.sleep(Duration::from_secs(30)).await {
        let line = status_line(&shared, &listen, &wallet_line).await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&line)]);
    }
}

async fn status_line(shared: &Arc<Shared>, listen: &str, wallet_line: &str) -> String {
    // From the ledger writer's memory: no file scan. Bounded, so a busy writer
    // delays the line, never the caller for long.
    let summary = tokio::time::timeout(
        Duration::from_secs(5),
        shared.ledger.summary(crate::now_ms()),
    )
    .await;
    match summary {
        Ok(Ok((today, pending))) => {
            format!("listening on {listen}; {wallet_line}; ${today} today (${pending} at risk)")
        }
        _ => format!("listening on {listen}; {wallet_line}"),
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
    if new.config.ledger != old.config.ledger {
        notes.push("`[ledger]` changed but needs a restart".to_string());
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
    match shared.wallet.reload_solana(&loc).await {
        Ok(Some(w)) => notes.push(format!("Solana wallet {}", w.address())),
        Ok(None) => {}
        Err(e) => notes.push(format!("Solana wallet: {e}")),
    }
    Ok(notes.join("; "))
}
