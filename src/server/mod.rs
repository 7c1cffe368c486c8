//! The HTTP/1.1 server apps talk to: accept loop, graceful shutdown, and the
//! per-request pipeline (guard → route → identify app → read body → pay → relay).

pub mod guard;

use crate::config::{Loaded, glob_match};
use crate::error::ProxyError;
use crate::ledger::Ledger;
use crate::pay::{Body, BoxError, Call, Paid, Payer, WalletSlot};
use crate::upstream::Client;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Largest request body accepted from an app.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// State shared by every connection.
pub struct Shared {
    cfg: RwLock<Arc<Loaded>>,
    pub client: Client,
    pub ledger: Ledger,
    pub wallet: WalletSlot,
    pub local_port: u16,
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    pub fn new(cfg: Loaded, client: Client, ledger: Ledger, local_port: u16) -> Shared {
        Shared {
            cfg: RwLock::new(Arc::new(cfg)),
            client,
            ledger,
            wallet: WalletSlot::new(),
            local_port,
            last_error: std::sync::Mutex::new(None),
        }
    }

    pub fn config(&self) -> Arc<Loaded> {
        match self.cfg.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_config(&self, cfg: Loaded) {
        match self.cfg.write() {
            Ok(mut g) => *g = Arc::new(cfg),
            Err(p) => *p.into_inner() = Arc::new(cfg),
        }
    }

    fn note_error(&self, e: &ProxyError) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(format!("{} ({})", e.code(), crate::now_ms()));
        }
    }
}

/// Serves until `shutdown` flips to true, then drains connections for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let svc = service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                });
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc);
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tracing::info!("no longer accepting; waiting for in-flight calls");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight calls did not finish within {} s",
            grace.as_secs()
        );
    }
}

enum Route {
    Chat,
    Models,
}

fn route(method: &Method, path: &str) -> Option<Route> {
    match (method, path) {
        (&Method::POST, "/v1/chat/completions")
        | (&Method::POST, "/v1/pro/chat/completions")
        | (&Method::POST, "/v1/premium/chat/completions") => Some(Route::Chat),
        (&Method::GET, "/v1/models") => Some(Route::Models),
        _ => None,
    }
}

/// One request, start to end. Never fails: errors become OpenAI-shaped responses.
pub async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let cfg = shared.config();
    let origin = match guard::check(&cfg, req.headers(), shared.local_port) {
        Ok(o) => o,
        Err(e) => return error_response(shared, &e, None),
    };
    if req.method() == Method::OPTIONS && origin.is_some() {
        return preflight(origin);
    }
    let started = std::time::Instant::now();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match pipeline(shared, &cfg, req).await {
        Ok((mut r, paid)) => {
            tracing::debug!(%method, %path, status = r.status().as_u16(), ?paid,
                ms = started.elapsed().as_millis() as u64, "served");
            cors(&mut r, origin);
            r
        }
        Err(e) => {
            tracing::info!(%method, %path, code = e.code(), "refused: {e}");
            error_response(shared, &e, origin)
        }
    }
}

async fn pipeline(
    shared: &Shared,
    cfg: &Loaded,
    req: Request<Incoming>,
) -> Result<(Response<Body>, Paid), ProxyError> {
    let (parts, body) = req.into_parts();
    let Some(route) = route(&parts.method, parts.uri.path()) else {
        return Err(ProxyError::NotFound {
            method: parts.method.to_string(),
            path: parts.uri.path().chars().take(200).collect(),
        });
    };
    let key = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let app = cfg
        .app_for_key(key)
        .ok_or(ProxyError::UnknownApp)?
        .to_string();

    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = read_body(body, declared).await?;

    let model = match route {
        Route::Chat => {
            let req: ChatRequest = serde_json::from_slice(&body)
                .map_err(|e| ProxyError::InvalidJson(e.to_string()))?;
            req.model
        }
        Route::Models => None,
    };
    if let (Some(model), Some(allowed)) =
        (&model, cfg.apps.get(&app).and_then(|a| a.models.as_ref()))
        && !model_allowed(allowed, model)
    {
        return Err(ProxyError::ModelNotAllowed {
            app,
            model: model.chars().take(200).collect(),
            allowed: allowed.join(", "),
        });
    }

    let call = Call {
        app,
        model,
        method: parts.method,
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        headers: parts.headers,
        body,
    };
    Payer {
        cfg,
        client: &shared.client,
        ledger: &shared.ledger,
        wallet: &shared.wallet,
    }
    .run(call)
    .await
}

/// Bodies up to this size are read to the end even when refused, so the client
/// gets the 413 instead of a broken pipe (which SDKs would retry).
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Buffers the request body (one copy, reused for the paid retry), at most `MAX_BODY`.
async fn read_body(mut body: Incoming, declared: Option<u64>) -> Result<Bytes, ProxyError> {
    let too_large = ProxyError::BodyTooLarge { limit: MAX_BODY };
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large);
    }
    let mut buf =
        bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(MAX_BODY as u64) as usize);
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::BadRequestBody(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen > DRAIN_LIMIT {
                return Err(too_large);
            }
            if seen <= MAX_BODY as u64 {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > MAX_BODY as u64 {
        return Err(too_large);
    }
    Ok(buf.freeze())
}

/// The bits of a chat request the proxy looks at; everything else passes through.
#[derive(serde::Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
}

/// A model matches an allow-list entry in either `vendor/model` or bare form.
pub fn model_allowed(allowed: &[String], model: &str) -> bool {
    let bare = model.rsplit('/').next().unwrap_or(model);
    allowed
        .iter()
        .any(|p| glob_match(p, model) || glob_match(p, bare))
}

fn error_response(shared: &Shared, e: &ProxyError, origin: Option<String>) -> Response<Body> {
    shared.note_error(e);
    let r = crate::openai::error::response(e);
    let mut r = r.map(|b| b.map_err(|never| -> BoxError { match never {} }).boxed());
    cors(&mut r, origin);
    r
}

fn cors(r: &mut Response<Body>, origin: Option<String>) {
    if let Some(o) = origin
        && let Ok(v) = HeaderValue::from_str(&o)
    {
        let h = r.headers_mut();
        h.insert("access-control-allow-origin", v);
        h.insert("vary", HeaderValue::from_static("Origin"));
        h.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("x-x402d-cost, x-x402d-error, x-x402d-payment-id"),
        );
    }
}

fn preflight(origin: Option<String>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| -> BoxError { match never {} })
            .boxed(),
    );
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(
            "authorization, content-type, idempotency-key, x-stainless-retry-count",
        ),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("600"));
    cors(&mut r, origin);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_allow_list() {
        let allowed = vec!["gpt-4o-mini".to_string(), "anthropic/*".to_string()];
        assert!(model_allowed(&allowed, "gpt-4o-mini"));
        assert!(model_allowed(&allowed, "openai/gpt-4o-mini"));
        assert!(model_allowed(&allowed, "anthropic/claude-sonnet-4"));
        assert!(!model_allowed(&allowed, "gpt-4o"));
        assert!(!model_allowed(&allowed, "claude-sonnet-4"));
    }
}
