//! The payment flow for one proxied call, top to bottom:
//!
//! ```text
//! send unpaid ──(not 402)──────────────────────────────► relay, cost 0
//!     │ 402
//!     ▼
//! parse requirements → choose one → load wallet      (refusal: nothing signed)
//!     ▼
//! Reserved   (ledger: caps checked and budget held, durable)
//!     ▼
//! Signed     (EIP-3009 signature made, nonce/validBefore durable BEFORE sending)
//!     ▼
//! send paid once ─► 2xx ─────────────► Settled  → relay, cost = price
//!                 ├► 402 ────────────► Rejected → payment_rejected error
//!                 ├► connect failed ─► Released (the signature never left)
//!                 └► anything else ──► AtRisk   → relay/err, never retried
//! ```
//!
//! Each transition is persisted before the next step that could move money.

use crate::config::{AppConfig, Loaded};
use crate::error::ProxyError;
use crate::ledger::{Caps, Ledger, Outcome, Reserve};
use crate::money::Usd;
use crate::openai::error::HDR_SHOULD_RETRY;
use crate::upstream::{self, Client};
use crate::wallet;
use crate::x402::{self, Refusal, header::Authorization, parse, select};
use alloy_primitives::{B256, U256};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use std::sync::Arc;
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Response header: USD actually paid (or put at risk) for this call.
pub const HDR_COST: &str = "x-x402d-cost";
/// Response header: the ledger id of the payment, when there was one.
pub const HDR_PAYMENT_ID: &str = "x-x402d-payment-id";
/// Response header: ledger state of the payment (settled, at_risk).
pub const HDR_PAYMENT_STATE: &str = "x-x402d-payment-state";

/// One call as the app made it, after routing and identification.
pub struct Call {
    pub app: String,
    pub model: Option<String>,
    pub method: Method,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub use crate::wallet::slot::WalletSlot;

/// Everything the flow needs besides the call.
pub struct Payer<'a> {
    pub cfg: &'a Loaded,
    pub client: &'a Client,
    pub ledger: &'a Ledger,
    pub wallet: &'a WalletSlot,
    pub metrics: &'a crate::metrics::Metrics,
    /// Time spent waiting on the upstream during this call, in microseconds.
    pub upstream_us: std::sync::atomic::AtomicU64,
}

/// A reserved payment, for recording its outcome.
struct Pending<'c> {
    id: u64,
    app: &'c str,
    network: &'static str,
    amount: Usd,
}

/// What happened, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paid {
    Nothing,
    Settled,
    AtRisk,
}

impl Payer<'_> {
    pub async fn run(&self, call: Call) -> Result<Upstream, ProxyError> {
        let timeout = Duration::from_secs(self.cfg.config.upstream_timeout_secs);
        let uri = self.upstream_uri(&call.path_and_query)?;

        // 1. Unpaid attempt. Nothing is signed, so every failure here is safe to retry.
        let first = self
            .send(&call, &uri, None, timeout)
            .await
            .map_err(|e| match e {
                SendError::Timeout => ProxyError::UpstreamTimeout {
                    secs: timeout.as_secs(),
                },
                // A reply head beyond hyper's limit (e.g. a megabyte PAYMENT-REQUIRED):
                // unusable, and retrying cannot help.
                SendError::HeadTooLarge => ProxyError::BadRequirements(
                    "the upstream's reply headers are too large to read".into(),
                ),
                SendError::Connect(r) | SendError::Other(r) => ProxyError::UpstreamUnreachable {
                    upstream: self.cfg.config.upstream.clone(),
                    reason: r,
                },
            })?;
        if first.status() != StatusCode::PAYMENT_REQUIRED {
            return buffer(first, Usd::ZERO, None, Paid::Nothing, timeout).await;
        }

        // 2. Read the requirements (header for v2, small JSON body for v1).
        let (parts, body) = first.into_parts();
        let header = parts
            .headers
            .get(x402::HDR_PAYMENT_REQUIRED)
            .map(|v| v.as_bytes().to_vec());
        let body = read_limited(body, parse::MAX_REQUIREMENTS_BYTES, timeout).await;
        let body = match body {
            Ok(b) => b,
            // An oversized body is only a problem when it is where the requirements are.
            Err(_) if header.is_some() => Bytes::new(),
            Err(e) => return Err(ProxyError::BadRequirements(e)),
        };
        let pr = parse::parse_402(header.as_deref(), &body)
            .map_err(|e| ProxyError::BadRequirements(e.to_string()))?;

        // 3. Choose what to pay; the ceiling is the smaller of the wallet's and the app's.
        let app_cfg = self.app_cfg(&call.app);
        let ceiling = match app_cfg.max_per_call {
            Some(a) => a.min(self.cfg.config.payment.max_per_call),
            None => self.cfg.config.payment.max_per_call,
        };
        let policy = select::Policy {
            networks: self.cfg.networks.clone(),
            ceiling,
            max_timeout_seconds: self.cfg.config.payment.max_timeout_seconds,
            pay_to: self.cfg.pay_to.clone(),
        };
        let choice = select::choose(&pr, &policy).map_err(refusal_error)?;

        // 4. The wallet (503 with the command to run when there is none).
        let wallet = self.wallet.get(&self.cfg.key_location()).await?;

        // 5. Reserved: caps checked and budget held, durably, before any signature exists.
        let now = crate::now_ms();
        let reserve = Reserve {
            now_ms: now,
            app: call.app.clone(),
            model: call.model.clone(),
            route: path_only(&call.path_and_query).to_string(),
            network: choice.network.caip2.to_string(),
            asset: choice.network.usdc.to_string(),
            pay_to: choice.pay_to.to_string(),
            amount: choice.amount,
            caps: self.caps(&app_cfg),
        };
        let id = match self.ledger.reserve(reserve).await {
            Ok(Ok(id)) => id,
            Ok(Err(cap)) => {
                return Err(ProxyError::BudgetExceeded {
                    code: cap.code,
                    message: cap.message,
                });
            }
            Err(e) => return Err(ProxyError::Ledger(e.to_string())),
        };
        let pending = Pending {
            id,
            app: &call.app,
            network: choice.network.caip2,
            amount: choice.amount,
        };

        // 6. Signed: sign, then persist nonce/amount/validBefore before the request leaves.
        let valid_before = (now / 1000) as u64 + choice.timeout_seconds;
        let auth = Authorization {
            from: wallet.address(),
            to: choice.pay_to,
            value: U256::from(choice.amount.atomic()),
            valid_after: 0,
            valid_before,
            nonce: random_nonce()?,
        };
        let domain = wallet::eip3009::domain(
            choice.network.eip712_name,
            choice.network.eip712_version,
            choice.network.chain_id,
            choice.network.usdc,
        );
        let signature = match wallet.sign(&auth, &domain) {
            Ok(s) => s,
            Err(e) => {
                self.release(&pending, "signing failed").await;
                return Err(ProxyError::Wallet(e.to_string()));
            }
        };
        if let Err(e) = self
            .ledger
            .signed(
                id,
                auth.from.to_string(),
                auth.nonce.to_string(),
                valid_before,
                crate::now_ms(),
            )
            .await
        {
            // Not persisted, so not sent: the signature is dropped unused.
            self.release(&pending, "could not persist the signature")
                .await;
            return Err(ProxyError::Ledger(e.to_string()));
        }
        let payment = x402::header::encode_payment(&pr, &choice, &auth, &signature);
        tracing::info!(
            id, app = %call.app, model = call.model.as_deref().unwrap_or("-"),
            amount = %choice.amount, network = choice.network.caip2, pay_to = %choice.pay_to,
            "payment signed"
        );

        // 7. The one paid attempt.
        let amount = choice.amount;
        let sent = self
            .send(
                &call,
                &uri,
                Some((pr.version.payment_header(), payment)),
                timeout,
            )
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(SendError::Connect(reason)) => {
                // No connection was made, so the signature never left the process.
                self.finish(
                    &pending,
                    Outcome::Released {
                        reason: format!("not sent: {reason}"),
                    },
                )
                .await;
                return Err(ProxyError::UpstreamUnreachable {
                    upstream: self.cfg.config.upstream.clone(),
                    reason,
                });
            }
            Err(e) => {
                let reason = match e {
                    SendError::Timeout => format!("no reply within {} s", timeout.as_secs()),
                    SendError::HeadTooLarge => "the reply headers were too large to read".into(),
                    SendError::Connect(r) | SendError::Other(r) => r,
                };
                self.finish(
                    &pending,
                    Outcome::AtRisk {
                        reason: reason.clone(),
                    },
                )
                .await;
                tracing::warn!(id, app = %call.app, %amount, state = "at_risk", %reason, "paid request failed; payment at risk");
                return Err(ProxyError::PaymentOutcomeUnknown {
                    reason,
                    amount: amount.to_string(),
                });
            }
        };

        let status = resp.status();
        if status.is_success() {
            let settle = resp
                .headers()
                .get(x402::HDR_PAYMENT_RESPONSE)
                .or_else(|| resp.headers().get(x402::HDR_X_PAYMENT_RESPONSE))
                .and_then(|v| parse::parse_settle_response(v.as_bytes()));
            let tx = settle.and_then(|s| s.transaction);
            self.finish(&pending, Outcome::Settled { tx: tx.clone() })
                .await;
            tracing::info!(
                id, app = %call.app, model = call.model.as_deref().unwrap_or("-"), %amount,
                network = choice.network.caip2, state = "settled", tx = tx.as_deref().unwrap_or("-"),
                "payment settled"
            );
            return buffer(resp, amount, Some(id), Paid::Settled, timeout).await;
        }
        if status == StatusCode::PAYMENT_REQUIRED {
            // The seller refused the payment and says why; it was not settled, but the
            // authorization stays counted until it expires unused.
            let (parts, body) = resp.into_parts();
            let body = read_limited(body, parse::MAX_REQUIREMENTS_BYTES, timeout)
                .await
                .unwrap_or_default();
            let reason = parts
                .headers
                .get(x402::HDR_PAYMENT_REQUIRED)
                .map(|h| h.as_bytes().to_vec())
                .and_then(|h| parse::parse_402(Some(&h), b"").ok())
                .or_else(|| parse::parse_402(None, &body).ok())
                .and_then(|p| p.error)
                .unwrap_or_else(|| "no reason given".into());
            self.finish(
                &pending,
                Outcome::Rejected {
                    reason: reason.clone(),
                },
            )
            .await;
            tracing::warn!(id, app = %call.app, %amount, state = "rejected", %reason, "seller rejected the payment");
            return Err(ProxyError::PaymentRejected {
                reason,
                valid_before,
            });
        }
        // Any other answer after the signature left: the seller may have settled.
        let reason = format!("upstream answered {status} to the paid request");
        self.finish(
            &pending,
            Outcome::AtRisk {
                reason: reason.clone(),
            },
        )
        .await;
        tracing::warn!(id, app = %call.app, %amount, state = "at_risk", %reason, "payment at risk");
        buffer(resp, amount, Some(id), Paid::AtRisk, timeout).await
    }

    fn app_cfg(&self, app: &str) -> AppConfig {
        self.cfg.apps.get(app).cloned().unwrap_or_default()
    }

    fn caps(&self, app: &AppConfig) -> Caps {
        Caps {
            app_per_call: app.max_per_call,
            app_daily: app.daily,
            app_monthly: app.monthly,
            app_total: app.total,
            wallet_daily: self.cfg.config.limits.daily,
            wallet_monthly: self.cfg.config.limits.monthly,
        }
    }

    fn upstream_uri(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        self.cfg
            .upstream_url(path_and_query)
            .parse()
            .map_err(|_| ProxyError::Internal("cannot build the upstream URL".into()))
    }

    async fn send(
        &self,
        call: &Call,
        uri: &Uri,
        payment: Option<(&'static str, String)>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, SendError> {
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(uri.clone())
            .body(Full::new(call.body.clone()))
            .map_err(|e| SendError::Other(e.to_string()))?;
        let h = req.headers_mut();
        for (k, v) in call.headers.iter() {
            if forwardable(k) {
                h.append(k.clone(), v.clone());
            }
        }
        upstream::strip_hop_by_hop(h);
        if let Some((name, value)) = payment {
            let v = HeaderValue::from_str(&value).map_err(|e| SendError::Other(e.to_string()))?;
            h.insert(HeaderName::from_static(name), v);
        }
        let started = std::time::Instant::now();
        let res = tokio::time::timeout(timeout, self.client.request(req)).await;
        let took = started.elapsed();
        self.metrics.upstream_seconds.observe(took.as_secs_f64());
        self.upstream_us.fetch_add(
            took.as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        match res {
            Err(_) => Err(SendError::Timeout),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) if e.is_connect() => Err(SendError::Connect(describe_client_error(&e))),
            Ok(Err(e)) if head_too_large(&e) => Err(SendError::HeadTooLarge),
            Ok(Err(e)) => Err(SendError::Other(describe_client_error(&e))),
        }
    }

    async fn release(&self, p: &Pending<'_>, why: &str) {
        self.finish(p, Outcome::Released { reason: why.into() })
            .await;
    }

    async fn finish(&self, p: &Pending<'_>, outcome: Outcome) {
        let id = p.id;
        let state = match &outcome {
            Outcome::Settled { .. } => crate::ledger::State::Settled,
            Outcome::Rejected { .. } => crate::ledger::State::Rejected,
            Outcome::AtRisk { .. } => crate::ledger::State::AtRisk,
            Outcome::Released { .. } => crate::ledger::State::Released,
        };
        self.metrics
            .payment(p.app, p.network, state, p.amount.atomic());
        if let Err(e) = self.ledger.finish(id, outcome, crate::now_ms()).await {
            // The record keeps its last durable state (Signed → at-risk at next start):
            // fail closed, never lose spend.
            tracing::error!(id, error = %e, "could not record the payment outcome");
        }
    }
}

enum SendError {
    Connect(String),
    Timeout,
    HeadTooLarge,
    Other(String),
}

/// Whether hyper refused the reply because its head exceeded the size limit.
fn head_too_large(e: &hyper_util::client::legacy::Error) -> bool {
    use std::error::Error as _;
    let mut src = e.source();
    while let Some(inner) = src {
        if inner
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_parse_too_large())
        {
            return true;
        }
        src = inner.source();
    }
    false
}

fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Request headers that go upstream: not the app's key, not hop-by-hop, not
/// anything the proxy sets itself.
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "authorization"
            | "host"
            | "content-length"
            | "accept-encoding"
            | "cookie"
            | "origin"
            | "referer"
            | "payment-signature"
            | "x-payment"
            | "idempotency-key"
    ) && !name.as_str().starts_with("x-x402d-")
}

fn path_only(pq: &str) -> &str {
    pq.split('?').next().unwrap_or(pq)
}

fn random_nonce() -> Result<B256, ProxyError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| ProxyError::Internal(format!("no randomness: {e}")))?;
    Ok(B256::from(b))
}

fn refusal_error(refusals: Vec<Refusal>) -> ProxyError {
    let list = refusals
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    if !refusals.is_empty() && refusals.iter().all(|r| r.over_ceiling) {
        ProxyError::PriceAboveCeiling(list)
    } else {
        ProxyError::NoAcceptableOption(list)
    }
}

/// Reads at most `limit` bytes of a body.
async fn read_limited(body: Incoming, limit: usize, timeout: Duration) -> Result<Bytes, String> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err("timed out reading the 402 body".into()),
        Ok(Err(e)) => Err(format!("cannot read the 402 body: {e}")),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// Largest upstream reply relayed (completions are JSON, never streamed upstream).
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// An upstream reply, fully read: what the app gets, byte for byte, plus what it cost.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub paid: Paid,
}

impl Upstream {
    /// The reply as the app gets it: same status, headers (minus hop-by-hop),
    /// same body bytes, plus the cost headers.
    pub fn into_response(self) -> Response<Body> {
        let mut r = Response::new(
            Full::new(self.body)
                .map_err(|never| -> BoxError { match never {} })
                .boxed(),
        );
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers;
        r
    }
}

/// Reads the whole reply and stamps the proxy's headers on it.
async fn buffer(
    resp: Response<Incoming>,
    cost: Usd,
    id: Option<u64>,
    paid: Paid,
    timeout: Duration,
) -> Result<Upstream, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    upstream::strip_hop_by_hop(&mut parts.headers);
    // The body is re-framed by our server (content-length of the bytes we hold).
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    let h = &mut parts.headers;
    if let Ok(v) = HeaderValue::from_str(&cost.to_string()) {
        h.insert(HDR_COST, v);
    }
    if let Some(id) = id
        && let Ok(v) = HeaderValue::from_str(&id.to_string())
    {
        h.insert(HDR_PAYMENT_ID, v);
    }
    match paid {
        Paid::Nothing => {}
        Paid::Settled => {
            h.insert(HDR_PAYMENT_STATE, HeaderValue::from_static("settled"));
        }
        Paid::AtRisk => {
            h.insert(HDR_PAYMENT_STATE, HeaderValue::from_static("at_risk"));
            h.insert(HDR_SHOULD_RETRY, HeaderValue::from_static("false"));
        }
    }
    let body = match tokio::time::timeout(timeout, Limited::new(body, MAX_RESPONSE).collect()).await
    {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) => {
            return Err(ProxyError::UpstreamBody {
                paid: paid != Paid::Nothing,
                reason: e.to_string(),
            });
        }
        Err(_) => {
            return Err(ProxyError::UpstreamBody {
                paid: paid != Paid::Nothing,
                reason: format!("no complete reply within {} s", timeout.as_secs()),
            });
        }
    };
    Ok(Upstream {
        status: parts.status,
        headers: parts.headers,
        body,
        paid,
    })
}

/// Shared handle type for the flow's dependencies.
pub type SharedWallet = Arc<WalletSlot>;
