//! The running daemon: owns every background task (accept loop, admin socket,
//! reload, resolver, catalog refresh, watchdog/STATUS, signals) and the shutdown.

use crate::config::{self, Loaded};
use crate::ledger::{self, Ledger};
use crate::server::{self, Shared};
use crate::{admin, chain, upstream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Why the daemon could not start, for the user: what failed and what to do.
/// (No `Display`, so any displayable error converts with `?`.)
pub struct Failed(pub String);

impl<E: std::fmt::Display> From<E> for Failed {
    fn from(e: E) -> Self {
        Failed(e.to_string())
    }
}

/// Runs the daemon until SIGTERM/SIGINT. `config_path` is re-read on reload.
pub async fn run(cfg: Loaded, config_path: Option<PathBuf>) -> Result<(), Failed> {
    let ledger_path = cfg.state_dir.join("ledger.redb");
    let (ledger, recovery) = Ledger::open(&ledger_path, cfg.timezone.clone(), crate::now_ms())
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
    let listener = match socket_activated()? {
        Some(l) => {
            tracing::info!("using the socket passed by systemd (socket activation)");
            l
        }
        None => tokio::net::TcpListener::bind(cfg.config.listen).await.map_err(|e| {
            format!(
                    "cannot listen on {}: {e} (is another x402d running? change `listen` in the config)",
                    cfg.config.listen
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
        let path = config_path.clone();
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
    Ok(())
}

/// A listening socket passed by systemd (`LISTEN_FDS`), if any.
fn socket_activated() -> Result<Option<tokio::net::TcpListener>, Failed> {
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
    match shared.ledger.summary(crate::now_ms()).await {
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
    if new.key_location() != old.key_location() {
        shared.wallet.clear().await;
    }
    let apps = new.apps.len();
    shared.set_config(new);
    notes.insert(0, format!("{apps} apps"));
    Ok(notes.join("; "))
}
