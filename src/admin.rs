//! The admin endpoint: HTTP over a Unix socket in the state dir (mode 0600,
//! owner only), never on TCP. The CLI's `spend`, `payments`, `status`,
//! `ledger verify` and `reload` talk to the running daemon through it.

use crate::ledger::report;
use crate::server::Shared;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};

pub const SOCKET: &str = "admin.sock";

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Something the admin endpoint asks the daemon's main loop to do.
pub type ReloadFn =
    Arc<dyn Fn() -> tokio::sync::oneshot::Receiver<Result<String, String>> + Send + Sync>;

/// Binds the socket with owner-only permissions.
pub fn bind(state_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(state_dir);
    if path.exists() {
        // A stale socket from a crashed daemon; a live one would have been
        // detected earlier by the ledger lock.
        std::fs::remove_file(&path)?;
    }
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// What the admin endpoint answers from.
#[derive(Clone)]
pub struct Ctx {
    pub shared: Arc<Shared>,
    pub reload: ReloadFn,
    /// The address the proxy really listens on (configured or passed by systemd).
    pub listen: SocketAddr,
}

/// Serves the admin socket until stop. A failing accept (e.g. out of file
/// descriptors) backs off instead of spinning.
pub async fn serve(listener: UnixListener, ctx: Ctx, mut stop: crate::daemon::Stop) {
    let mut backoff = Backoff::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.requested() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff.reset();
                stream
            }
            Err(e) => {
                let (wait, first) = backoff.failed();
                if first {
                    tracing::warn!(error = %e, "admin socket: accept failed; retrying with backoff");
                }
                if !stop.sleep(wait).await {
                    return;
                }
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Waits between retries of a failing operation: 10 ms doubling up to 1 s.
#[derive(Default, Debug)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait before the next retry, and whether this is the first failure in a row.
    pub fn failed(&mut self) -> (Duration, bool) {
        let first = self.failures == 0;
        let wait = Duration::from_millis(10u64 << self.failures.min(7)).min(Duration::from_secs(1));
        self.failures = self.failures.saturating_add(1);
        (wait, first)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn json_response(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (shared, reload) = (&ctx.shared, &ctx.reload);
    let q = query(&req);
    let result = match (req.method(), req.uri().path()) {
        (&Method::GET, "/status") => status(shared, ctx.listen).await,
        (&Method::GET, "/spend") => {
            let days = q.get("days").and_then(|d| d.parse().ok()).unwrap_or(0);
            spend(shared, q.get("app").map(String::as_str), days).await
        }
        (&Method::GET, "/payments") => {
            let limit = q.get("limit").and_then(|d| d.parse().ok()).unwrap_or(50);
            let app = q.get("app").map(String::as_str);
            match shared.ledger.payments(app, limit).await {
                Ok(ps) => Ok(Value::Array(ps.iter().map(payment_json).collect())),
                Err(e) => Err(e.to_string()),
            }
        }
        // `x402d ledger verify`: reads the whole history (off the writer).
        (&Method::GET, "/ledger/verify") => match shared.ledger.verify().await {
            Ok(v) => serde_json::to_value(v).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        // After `x402d wallet new/import/remove`: use what the store holds now.
        (&Method::POST, "/wallet/reload") => {
            let r = shared.wallet.reload(&shared.config().key_location()).await;
            Ok(match r {
                Ok(w) => json!({"ok": true, "wallet": w.map(|w| w.address().to_string())}),
                Err(e) => json!({"ok": false, "wallet": null, "error": e.to_string()}),
            })
        }
        (&Method::POST, "/reload") => match reload().await {
            Ok(Ok(msg)) => Ok(json!({"ok": true, "message": msg})),
            Ok(Err(msg)) => Ok(json!({"ok": false, "message": msg})),
            Err(_) => Err("reload did not answer".into()),
        },
        _ => return json_response(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    };
    match result {
        Ok(v) => json_response(StatusCode::OK, v),
        Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": e})),
    }
}

/// The stable JSON form of a payment (for `payments --json`).
pub fn payment_json(p: &crate::ledger::Payment) -> Value {
    let time = jiff::Timestamp::from_millisecond(p.created_ms)
        .map(|t| t.to_string())
        .unwrap_or_default();
    json!({
        "id": p.id,
        "time": time,
        "app": p.app,
        "model": p.model,
        "route": p.route,
        "amount": crate::money::Usd(p.amount).to_string(),
        "amount_atomic": p.amount.to_string(),
        "network": p.network,
        "asset": p.asset,
        "pay_to": p.pay_to,
        "payer": p.payer,
        "nonce": p.nonce,
        "valid_before": p.valid_before,
        "state": p.state.as_str(),
        "tx": p.tx,
        "note": p.note,
        "payment_identifier": p.payment_identifier,
        "attempts": p.attempts,
        "last_error": p.last_error,
    })
}

/// The ledger writer's totals (from memory: no record is read).
async fn totals(
    shared: &Arc<Shared>,
    now_ms: i64,
    days: u32,
) -> Result<crate::ledger::Snapshot, String> {
    shared
        .ledger
        .totals(now_ms, days)
        .await
        .map_err(|e| e.to_string())
}

async fn spend(shared: &Arc<Shared>, app: Option<&str>, days: u32) -> Result<Value, String> {
    let cfg = shared.config();
    let now = crate::now_ms();
    let t = totals(shared, now, days).await?;
    let rows = report::rows(&t, &report::Limits::from_config(&cfg, now), app, days);
    serde_json::to_value(rows).map_err(|e| e.to_string())
}

async fn status(shared: &Arc<Shared>, listen: SocketAddr) -> Result<Value, String> {
    let cfg = shared.config();
    let wallet = shared
        .wallet
        .get(&cfg.key_location())
        .await
        .ok()
        .map(|w| w.address().to_string());
    let loc = cfg.key_location();
    let store = tokio::task::spawn_blocking(move || {
        crate::wallet::ops::StoreInfo::for_location(&loc).summary()
    })
    .await
    .ok();
    let now = crate::now_ms();
    let t = totals(shared, now, 0).await?;
    let rows = report::rows(&t, &report::Limits::from_config(&cfg, now), None, 0);
    let last_error = shared.last_error.lock().ok().and_then(|g| g.clone());
    Ok(json!({
        "running": true,
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "listen": listen.to_string(),
        "upstream": cfg.config.upstream,
        "wallet": wallet,
        "wallet_store": store,
        "ledger": shared.ledger.location(),
        "at_risk": crate::money::Usd(t.wallet.total.unsettled).to_string(),
        "payments": t.records,
        "spend": rows.into_iter().filter(|r| r.window != "total").collect::<Vec<_>>(),
        "last_error": last_error,
        "clock_skew_seconds": shared.metrics.clock_skew.get(),
    }))
}

/// Calls the running daemon. `Ok(None)` when no daemon listens on the socket.
pub async fn call(state_dir: &Path, method: Method, path: &str) -> Result<Option<Value>, String> {
    let sock = socket_path(state_dir);
    let stream = match UnixStream::connect(&sock).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(format!("cannot connect to {}: {e}", sock.display())),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "x402d")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("bad admin reply: {e}"))?;
    if !status.is_success() {
        return Err(v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("admin error")
            .to_string());
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<_> = (0..10).map(|_| b.failed()).collect();
        assert_eq!(waits[0], (Duration::from_millis(10), true));
        assert_eq!(waits[1], (Duration::from_millis(20), false));
        assert!(waits.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(waits[9].0, Duration::from_secs(1));
        b.reset();
        assert_eq!(b.failed(), (Duration::from_millis(10), true));
    }
}
