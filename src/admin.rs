//! The admin endpoint: HTTP over a Unix socket in the state dir (mode 0600,
//! owner only), never on TCP. The CLI's `spend`, `payments`, `status` and
//! `reload` talk to the running daemon through it.

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
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

pub async fn serve(listener: UnixListener, shared: Arc<Shared>, reload: ReloadFn) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let reload = reload.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let reload = reload.clone();
                async move { Ok::<_, Infallible>(handle(&shared, &reload, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
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

async fn handle(
    shared: &Arc<Shared>,
    reload: &ReloadFn,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let q = query(&req);
    let result = match (req.method(), req.uri().path()) {
        (&Method::GET, "/status") => status(shared).await,
        (&Method::GET, "/spend") => {
            let days = q.get("days").and_then(|d| d.parse().ok()).unwrap_or(0);
            spend(shared, q.get("app").map(String::as_str), days).await
        }
        (&Method::GET, "/payments") => {
            let limit = q.get("limit").and_then(|d| d.parse().ok()).unwrap_or(50);
            let app = q.get("app").cloned();
            let ledger = shared.ledger.clone();
            match tokio::task::spawn_blocking(move || ledger.payments(app.as_deref(), limit)).await
            {
                Ok(Ok(ps)) => Ok(Value::Array(ps.iter().map(payment_json).collect())),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
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
    })
}

/// Every ledger record (read off the async threads).
async fn all_payments(shared: &Arc<Shared>) -> Result<Vec<crate::ledger::Payment>, String> {
    let ledger = shared.ledger.clone();
    tokio::task::spawn_blocking(move || ledger.all())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

async fn spend(shared: &Arc<Shared>, app: Option<&str>, days: u32) -> Result<Value, String> {
    let cfg = shared.config();
    let all = all_payments(shared).await?;
    let rows = report::spend(
        &all,
        &report::Limits::from_config(&cfg, crate::now_ms()),
        app,
        days,
    );
    serde_json::to_value(rows).map_err(|e| e.to_string())
}

async fn status(shared: &Arc<Shared>) -> Result<Value, String> {
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
    let all = all_payments(shared).await?;
    let rows = report::spend(
        &all,
        &report::Limits::from_config(&cfg, crate::now_ms()),
        None,
        0,
    );
    let last_error = shared.last_error.lock().ok().and_then(|g| g.clone());
    Ok(json!({
        "running": true,
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "listen": format!("127.0.0.1:{}", shared.local_port),
        "upstream": cfg.config.upstream,
        "wallet": wallet,
        "wallet_store": store,
        "ledger": shared.ledger.path().display().to_string(),
        "at_risk": report::at_risk_total(&all).to_string(),
        "payments": all.len(),
        "spend": rows.into_iter().filter(|r| r.window != "total").collect::<Vec<_>>(),
        "last_error": last_error,
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
