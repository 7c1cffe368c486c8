//! The HTTP/1.1 server apps talk to: accept loop, graceful shutdown, and the
//! per-request pipeline (guard → route → identify app → read body → pay → relay).

pub mod anthropic;
pub mod coalesce;
pub mod dashboard;
pub mod dialect;
pub mod guard;

use crate::config::{Loaded, glob_match};
use crate::error::ProxyError;
use crate::ledger::Ledger;
use crate::openai::models;
use crate::openai::sse;
use crate::pay::{Body, BoxError, Call, Payer, WalletSlot};
use crate::upstream::Client;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
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
    pub coalescer: coalesce::Coalescer,
    catalog: RwLock<Arc<Vec<models::Model>>>,
    /// Payment flows still running (they outlive their connections).
    pub inflight: InFlight,
    pub metrics: crate::metrics::Metrics,
    pub timeouts: Timeouts,
    /// Reads the chain: the background resolver, and the payment flow when a
    /// re-sent payment is refused (one cache of RPCs that proved their chain).
    pub resolver: crate::chain::Resolver,
    /// Wakes the budget-alert watcher (commits, calls a cap refused).
    pub alert_signals: Arc<crate::alerts::Signals>,
}

/// Counts running payment flows so shutdown can wait for them.
#[derive(Default)]
pub struct InFlight {
    n: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

pub struct InFlightGuard<'a>(&'a InFlight);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlightGuard(self)
    }
    pub fn count(&self) -> usize {
        self.n.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Waits until no flow runs.
    pub async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
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
            coalescer: coalesce::Coalescer::default(),
            catalog: RwLock::new(Arc::new(Vec::new())),
            inflight: InFlight::default(),
            metrics: crate::metrics::Metrics::new(),
            timeouts: Timeouts::default(),
            resolver: crate::chain::Resolver::default(),
            alert_signals: Arc::default(),
        }
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Shared {
        self.timeouts = timeouts;
        self
    }

    /// A payment flow for one call under `cfg`.
    pub fn payer<'a>(&'a self, cfg: &'a Loaded) -> Payer<'a> {
        Payer {
            cfg,
            client: &self.client,
            ledger: &self.ledger,
            wallet: &self.wallet,
            metrics: &self.metrics,
            resolver: &self.resolver,
            upstream_us: Default::default(),
        }
    }

    /// The upstream's model list as last fetched (empty until known).
    pub fn catalog_models(&self) -> Arc<Vec<models::Model>> {
        match self.catalog.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_catalog(&self, list: Vec<models::Model>) {
        match self.catalog.write() {
            Ok(mut g) => *g = Arc::new(list),
            Err(p) => *p.into_inner() = Arc::new(list),
        }
    }

    /// Refreshes the model list from the upstream without paying (a 402 is skipped).
    pub async fn refresh_catalog(&self) -> Result<usize, String> {
        let uri = self.config().upstream_url("/v1/models");
        let req = Request::get(uri)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("upstream answered {}", resp.status()));
        }
        let body = http_body_util::Limited::new(resp.into_body(), 8 << 20)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let list = models::parse_catalog(&body)?;
        let n = list.len();
        self.set_catalog(list);
        Ok(n)
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

/// How long an app may take before its connection is closed (a slow or stuck
/// client must not hold a connection, or a payment decision, forever).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// From the moment a connection waits for a request until its headers are in.
    /// hyper starts this timer whenever the connection waits for the next request,
    /// so it also closes a keep-alive connection left idle this long.
    pub header: Duration,
    /// Reading a whole request body.
    pub body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(30),
            body: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// The defaults, or `X402D_HEADER_TIMEOUT_MS` / `X402D_BODY_TIMEOUT_MS` when set
    /// (undocumented knobs for tests and odd networks).
    pub fn from_env() -> Timeouts {
        let ms = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&n| n > 0)
                .map(Duration::from_millis)
        };
        let d = Timeouts::default();
        Timeouts {
            header: ms("X402D_HEADER_TIMEOUT_MS").unwrap_or(d.header),
            body: ms("X402D_BODY_TIMEOUT_MS").unwrap_or(d.body),
        }
    }
}

/// Accepts connections until `shutdown` completes, then stops accepting and
/// returns the open connections, for the caller to drain under its deadline.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) -> hyper_util::server::graceful::GracefulShutdown {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.keep_alive(true)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(shared.timeouts.header);
    tokio::pin!(shutdown);
    let mut backoff = crate::admin::Backoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => {
                        backoff.reset();
                        s
                    }
                    Err(e) => {
                        // Persistent errors (out of file descriptors) back off to 1 s
                        // and log once per run of failures, instead of spinning.
                        let (wait, first) = backoff.failed();
                        if first {
                            tracing::warn!(error = %e, "accept failed; retrying with backoff");
                        }
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let svc = service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(&shared, req, Some(peer)).await) }
                });
                let conn = http.serve_connection(TokioIo::new(stream), svc);
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful
}

enum Route {
    /// A paid call, in the app's dialect (see `dialect`).
    Call(dialect::Dialect),
    Models,
    Metrics,
    /// `…/messages/count_tokens`: an estimate, never paid.
    CountTokens,
}

fn route(method: &Method, path: &str) -> Option<Route> {
    match (method, path) {
        (&Method::POST, p)
            if anthropic::parse_path(p)
                .is_some_and(|(_, e)| e == anthropic::Endpoint::CountTokens) =>
        {
            Some(Route::CountTokens)
        }
        (&Method::POST, p) => dialect::parse_path(p).map(|(d, _)| Route::Call(d)),
        (&Method::GET, "/v1/models") => Some(Route::Models),
        (&Method::GET, "/metrics") => Some(Route::Metrics),
        _ => None,
    }
}

/// One request, start to end. Never fails: errors become OpenAI-shaped responses.
pub async fn handle(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    peer: Option<std::net::SocketAddr>,
) -> Response<Body> {
    let cfg = shared.config();
    // The read-only dashboard and its API have their own (same-origin) guard.
    if let Some(r) = dashboard::handle(shared, &cfg, &req, peer).await {
        return r;
    }
    let shape = ErrorShape::of(req.uri().path());
    let origin = match guard::check(&cfg, req.headers(), shared.local_port) {
        Ok(o) => o,
        Err(e) => return error_response(shared, &e, None, shape),
    };
    if req.uri().path() == "/metrics" && peer.is_some_and(|p| !p.ip().is_loopback()) {
        return error_response(
            shared,
            &ProxyError::NotFound {
                method: req.method().to_string(),
                path: "/metrics".into(),
            },
            origin,
            shape,
        );
    }
    let app_label = bearer(req.headers())
        .and_then(|k| cfg.keys.get(k).cloned())
        .unwrap_or_else(|| crate::config::DEFAULT_APP.to_string());
    let route_label = match route(req.method(), req.uri().path()) {
        Some(_) => req.uri().path().to_string(),
        None => "other".to_string(),
    };
    let resp = handle_inner(shared, &cfg, req, origin).await;
    if resp.status() == StatusCode::PAYMENT_REQUIRED
        && let Some(code) = resp
            .headers()
            .get(crate::openai::error::HDR_ERROR)
            .and_then(|v| v.to_str().ok())
    {
        shared.alert_signals.refused(&app_label, code);
    }
    shared
        .metrics
        .requests
        .get_or_create(&crate::metrics::RequestLabels {
            app: app_label,
            route: route_label,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

async fn handle_inner(
    shared: &Arc<Shared>,
    cfg: &Arc<Loaded>,
    req: Request<Incoming>,
    origin: Option<String>,
) -> Response<Body> {
    if req.method() == Method::OPTIONS && origin.is_some() {
        return preflight(origin);
    }
    let started = std::time::Instant::now();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match pipeline(shared, cfg, req, origin.as_deref(), started).await {
        Ok(mut r) => {
            tracing::debug!(%method, %path, status = r.status().as_u16(),
                ms = started.elapsed().as_millis() as u64, "served");
            cors(&mut r, origin);
            r
        }
        Err(e) => {
            tracing::info!(%method, %path, code = e.code(), "refused: {e}");
            error_response(shared, &e, origin, ErrorShape::of(&path))
        }
    }
}

async fn pipeline(
    shared: &Arc<Shared>,
    cfg: &Arc<Loaded>,
    req: Request<Incoming>,
    origin: Option<&str>,
    received: std::time::Instant,
) -> Result<Response<Body>, ProxyError> {
    let (parts, body) = req.into_parts();
    let Some(route) = route(&parts.method, parts.uri.path()) else {
        return Err(ProxyError::NotFound {
            method: parts.method.to_string(),
            path: parts.uri.path().chars().take(200).collect(),
        });
    };
    if let Route::Metrics = route {
        return metrics_response(shared, cfg).await;
    }
    // Both remaining routes can pay: no browser subresource load or navigation.
    guard::check_paid(&parts.headers, origin)?;
    let key = bearer(&parts.headers);
    let app = cfg
        .app_for_key(key)
        .ok_or(ProxyError::UnknownApp)?
        .to_string();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = read_body(body, declared, shared.timeouts.body).await?;
    let app_cfg = cfg.apps.get(&app).cloned().unwrap_or_default();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();

    let dialect = match route {
        Route::Models => return models(shared, cfg, &app, &app_cfg, parts.headers, &query).await,
        Route::Metrics => return metrics_response(shared, cfg).await,
        Route::CountTokens => return anthropic::count_tokens(&body),
        Route::Call(d) => d,
    };

    // Translated to one chat request first: model, tier, caps and coalescing see
    // the same thing whatever the app's dialect.
    let mut front = dialect::Front::parse(dialect, body)?;
    if dialect == dialect::Dialect::Messages {
        // Anthropic model ids name the upstream's models their own way.
        anthropic::map_model(shared, cfg, &mut front).await?;
    }
    let dialect::Front {
        model,
        stream,
        upstream_body,
        back,
    } = front;
    if let (Some(model), Some(allowed)) = (&model, app_cfg.models.as_ref())
        && !model_allowed(allowed, model)
    {
        return Err(ProxyError::ModelNotAllowed {
            app,
            model: model.chars().take(200).collect(),
            allowed: allowed.join(", "),
        });
    }
    // Tier routing: plain /v1/chat/completions goes to the tier that serves the model.
    let requested = dialect::parse_path(parts.uri.path())
        .map(|(_, t)| t)
        .unwrap_or(models::Tier::Budget);
    let tier = match (&model, requested) {
        (Some(m), models::Tier::Budget) => {
            models::tier_of(m, &cfg.config.tiers, &shared.catalog_models())
        }
        _ => requested,
    };
    if let Some(tiers) = &app_cfg.tiers
        && !tiers.contains(&tier)
    {
        return Err(ProxyError::ModelNotAllowed {
            app,
            model: model.unwrap_or_default().chars().take(200).collect(),
            allowed: format!(
                "the {} tier is not in this app's tiers [{}]",
                tier.as_str(),
                tiers
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    // The Messages query (`?beta=true`) is Anthropic's, not the upstream's.
    let query = if dialect == dialect::Dialect::Messages {
        ""
    } else {
        &query
    };
    let path = format!("{}{query}", tier.path());
    let rx = start_call(
        shared,
        cfg,
        received,
        Call {
            app,
            model,
            method: parts.method,
            path_and_query: path,
            headers: dialect::upstream_headers(dialect, parts.headers),
            body: upstream_body,
        },
    );
    if !stream {
        let o = coalesce::wait(rx).await;
        return match o.as_ref() {
            Ok(u) => Ok(back.answer(u)),
            Err(_) => Err(shared_err(o)),
        };
    }
    stream_response(rx, back).await
}

/// Starts (or, for a retry, joins) one call. The payment flow runs on its own
/// task, counted in `inflight`: a client that hangs up mid-payment must not
/// cancel it between "reserved", "signed" and "outcome recorded". `received` is
/// when the request's head arrived (the start of x402d's own time on it).
fn start_call(
    shared: &Arc<Shared>,
    cfg: &Arc<Loaded>,
    received: std::time::Instant,
    call: Call,
) -> tokio::sync::watch::Receiver<Option<coalesce::Outcome>> {
    let idempotency = call
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok());
    let is_retry = idempotency.is_some()
        || call
            .headers
            .get("x-stainless-retry-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .is_some_and(|n| n > 0);
    let ckey = coalesce::key(
        &call.app,
        call.method.as_str(),
        &call.path_and_query,
        idempotency,
        &call.body,
    );
    match shared.coalescer.join(ckey, is_retry) {
        coalesce::Join::Follower(rx) => {
            tracing::info!(app = %call.app, "retry of a call in flight or just finished: reusing its result, not paying again");
            rx
        }
        coalesce::Join::Leader(leader) => {
            let rx = leader.subscribe();
            let shared = shared.clone();
            let cfg = cfg.clone();
            tokio::spawn(async move {
                let _inflight = shared.inflight.enter();
                let payer = shared.payer(&cfg);
                let out = payer.run(call).await;
                let upstream = std::time::Duration::from_micros(
                    payer.upstream_us.load(std::sync::atomic::Ordering::Relaxed),
                );
                let own = received.elapsed().saturating_sub(upstream).as_secs_f64();
                shared.metrics.overhead_seconds.observe(own);
                if matches!(&out, Ok(u) if u.paid != crate::pay::Paid::Nothing) {
                    shared.metrics.paid_overhead_seconds.observe(own);
                }
                leader.finish(Arc::new(out));
            });
            rx
        }
    }
}

/// An error shared by coalesced calls.
fn shared_err(o: coalesce::Outcome) -> ProxyError {
    match o.as_ref() {
        Err(e) => e.clone(),
        Ok(_) => ProxyError::Internal("not an error".into()),
    }
}

/// How long a streaming call may take before the SSE headers go out anyway.
const STREAM_HOLD: Duration = Duration::from_millis(1500);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

async fn stream_response(
    rx: tokio::sync::watch::Receiver<Option<coalesce::Outcome>>,
    back: dialect::Back,
) -> Result<Response<Body>, ProxyError> {
    // Known quickly (the usual case, including over-budget and refusals): answer
    // errors as plain HTTP errors, before any byte of the stream.
    if let Ok(o) = tokio::time::timeout(STREAM_HOLD, coalesce::wait(rx.clone())).await {
        return match o.as_ref() {
            Err(_) => Err(shared_err(o)),
            Ok(u) if !u.status.is_success() => Ok(back.answer(u)),
            Ok(u) => match back.synthesize(u) {
                Ok(bytes) => Ok(sse_response(
                    Some(u),
                    BoxBody::new(Full::new(bytes).map_err(|n| match n {})),
                )),
                // A 2xx that is not a completion: answered as the dialect answers it.
                Err(_) => Ok(back.answer(u)),
            },
        };
    }
    // Slow (paying, or a slow model): start the stream now and keep it alive.
    let (tx, body_rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let heartbeat = back.heartbeat();
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
        let wait = coalesce::wait(rx);
        tokio::pin!(wait);
        let final_bytes = loop {
            tokio::select! {
                o = &mut wait => break back.tail(&o),
                _ = beat.tick() => {
                    if tx.send(Bytes::from_static(heartbeat)).await.is_err() {
                        // The app hung up; the payment flow still finishes on its own task.
                        return;
                    }
                }
            }
        };
        let _ = tx.send(final_bytes).await;
    });
    Ok(sse_response(None, BoxBody::new(ChannelBody(body_rx))))
}

/// What ends a stream whose headers are already out: the chunks, or an error event.
fn stream_tail(o: &coalesce::Outcome, include_usage: bool) -> Bytes {
    match o.as_ref() {
        Err(e) => {
            let mut b = sse::error_event(&crate::openai::error::body(e)).to_vec();
            b.extend_from_slice(sse::DONE);
            Bytes::from(b)
        }
        Ok(u) if u.status.is_success() => match synthesize(u, include_usage) {
            Ok(b) => b,
            Err(msg) => Bytes::from(format!(
                "data: {}\n\n",
                serde_json::json!({"error": {"message": msg, "type": "upstream_error", "param": null, "code": "invalid_completion"}})
            )),
        },
        Ok(u) => {
            // The upstream's own error object when it has one.
            let v: serde_json::Value = serde_json::from_slice(&u.body).unwrap_or_default();
            let err = if v.get("error").is_some() {
                v
            } else {
                serde_json::json!({"error": {"message": format!("upstream answered {}", u.status), "type": "upstream_error", "param": null, "code": null}})
            };
            let mut b = sse::error_event(&err).to_vec();
            b.extend_from_slice(sse::DONE);
            Bytes::from(b)
        }
    }
}

fn synthesize(u: &crate::pay::Upstream, include_usage: bool) -> Result<Bytes, String> {
    let v: serde_json::Value = serde_json::from_slice(&u.body)
        .map_err(|_| "the upstream completion is not JSON".to_string())?;
    let mut out = Vec::with_capacity(u.body.len() * 2 + 64);
    for c in sse::chunks(&v, include_usage)? {
        out.extend_from_slice(&sse::event(&c));
    }
    out.extend_from_slice(sse::DONE);
    Ok(Bytes::from(out))
}

fn sse_response(
    u: Option<&crate::pay::Upstream>,
    body: BoxBody<Bytes, BoxError>,
) -> Response<Body> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    if let Some(u) = u {
        for name in [
            crate::pay::HDR_COST,
            crate::pay::HDR_PAYMENT_ID,
            crate::pay::HDR_PAYMENT_STATE,
            "x-should-retry",
            "x-request-id",
            "openai-processing-ms",
        ] {
            if let Some(v) = u.headers.get(name) {
                h.insert(hyper::header::HeaderName::from_static(name), v.clone());
            }
        }
    }
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// A response body fed from a channel (the slow-stream case).
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// `GET /metrics`: Prometheus text (the listener is loopback-only unless `allow_remote`,
/// and then only loopback peers may read it; see `handle`).
async fn metrics_response(
    shared: &Arc<Shared>,
    cfg: &Arc<Loaded>,
) -> Result<Response<Body>, ProxyError> {
    // From the ledger writer's in-memory totals: no record is read or decoded,
    // and nothing runs on the async workers but the rendering.
    let now = crate::now_ms();
    let totals = shared
        .ledger
        .totals(now, 0)
        .await
        .map_err(ProxyError::from)?;
    shared.metrics.set_ledger_stats(&shared.ledger.stats());
    let text = shared.metrics.render(
        &totals,
        &crate::ledger::report::Limits::from_config(cfg, now),
    );
    let mut r = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|n| -> BoxError { match n {} })
            .boxed(),
    );
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(r)
}

/// `GET /v1/models`: one OpenAI list of what this app may use, with tiers.
async fn models(
    shared: &Arc<Shared>,
    cfg: &Arc<Loaded>,
    app: &str,
    app_cfg: &crate::config::AppConfig,
    headers: hyper::HeaderMap,
    query: &str,
) -> Result<Response<Body>, ProxyError> {
    let mut catalog = shared.catalog_models();
    if catalog.is_empty() {
        // No list yet: ask the upstream (paying, like any call, if it wants money).
        let rx = start_call(
            shared,
            cfg,
            std::time::Instant::now(),
            Call {
                app: app.to_string(),
                model: None,
                method: Method::GET,
                path_and_query: format!("/v1/models{query}"),
                headers,
                body: Bytes::new(),
            },
        );
        let o = coalesce::wait(rx).await;
        let u = match o.as_ref() {
            Ok(u) => u,
            Err(_) => return Err(shared_err(o)),
        };
        match (u.status.is_success(), models::parse_catalog(&u.body)) {
            (true, Ok(list)) => {
                shared.set_catalog(list.clone());
                catalog = Arc::new(list);
            }
            _ => return Ok(u.clone().into_response()),
        }
    }
    let allowed = |m: &models::Model| {
        app_cfg
            .models
            .as_ref()
            .is_none_or(|a| model_allowed(a, &m.id))
            && app_cfg
                .tiers
                .as_ref()
                .is_none_or(|t| t.contains(&models::tier_of(&m.id, &cfg.config.tiers, &catalog)))
    };
    let mut with_tiers: Vec<models::Model> = catalog.iter().cloned().collect();
    for m in &mut with_tiers {
        m.tier = models::tier_of(&m.id, &cfg.config.tiers, &catalog);
    }
    let body = models::list(&with_tiers, allowed).to_string();
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|n| -> BoxError { match n {} })
            .boxed(),
    );
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(crate::pay::HDR_COST, HeaderValue::from_static("0"));
    Ok(r)
}

/// Bodies up to this size are read to the end even when refused, so the client
/// gets the 413 instead of a broken pipe (which SDKs would retry).
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Buffers the request body (one copy, reused for the paid retry), at most
/// `MAX_BODY`, arriving within `timeout` (a stalled app must not hold the call).
async fn read_body(
    body: Incoming,
    declared: Option<u64>,
    timeout: Duration,
) -> Result<Bytes, ProxyError> {
    tokio::time::timeout(timeout, read_body_inner(body, declared))
        .await
        .map_err(|_| {
            ProxyError::BadRequestBody(format!(
                "the request body did not arrive within {timeout:?}"
            ))
        })?
}

async fn read_body_inner(mut body: Incoming, declared: Option<u64>) -> Result<Bytes, ProxyError> {
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

/// The API key an app sent (`Authorization: Bearer <key>`, or Anthropic's
/// `x-api-key: <key>`), which names the app.
fn bearer(headers: &hyper::HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

/// A model matches an allow-list entry in either `vendor/model` or bare form.
pub fn model_allowed(allowed: &[String], model: &str) -> bool {
    let bare = model.rsplit('/').next().unwrap_or(model);
    allowed
        .iter()
        .any(|p| glob_match(p, model) || glob_match(p, bare))
}

/// Which API's error shape a path answers in.
#[derive(Clone, Copy)]
enum ErrorShape {
    OpenAi,
    Anthropic,
}

impl ErrorShape {
    fn of(path: &str) -> ErrorShape {
        if anthropic::parse_path(path).is_some() {
            ErrorShape::Anthropic
        } else {
            ErrorShape::OpenAi
        }
    }
}

fn error_response(
    shared: &Shared,
    e: &ProxyError,
    origin: Option<String>,
    shape: ErrorShape,
) -> Response<Body> {
    shared.note_error(e);
    let r = match shape {
        ErrorShape::OpenAi => crate::openai::error::response(e),
        ErrorShape::Anthropic => crate::anthropic::error::response(e),
    };
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
            "authorization, content-type, idempotency-key, x-stainless-retry-count, x-api-key, anthropic-version, anthropic-beta",
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
