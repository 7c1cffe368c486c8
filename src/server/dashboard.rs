//! The local dashboard: `GET /` serves a page embedded in the binary (HTML, CSS
//! and JS, no external URL), which polls two read-only JSON endpoints on the
//! same listener: `/api/spend` (per-app and wallet-wide totals against caps, and
//! 30 days per app, from the ledger writer's in-memory totals) and
//! `/api/payments` (the latest payments, a bounded read of the newest records,
//! and the at-risk ones, from the writer's memory). Nothing here writes.
//!
//! Only loopback peers, only allowed `Host` names, and the API only for
//! same-origin requests (see `guard::check_dashboard`).

use super::{Body, Shared, error_response, guard};
use crate::config::Loaded;
use crate::error::ProxyError;
use crate::ledger::{Payment, report};
use crate::money::Usd;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};
use serde::Serialize;
use std::sync::Arc;

pub const PAGE: &str = include_str!("dashboard/index.html");
pub const SCRIPT: &str = include_str!("dashboard/dashboard.js");
pub const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Days in the spend chart.
pub const CHART_DAYS: u32 = 30;
/// Latest payments listed.
pub const LATEST: usize = 25;

/// The page's Content-Security-Policy: only its own files and API, no framing.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

enum What {
    Page,
    Script,
    Style,
    Spend,
    Payments,
}

fn route(method: &Method, path: &str) -> Option<What> {
    if method != Method::GET {
        return None;
    }
    Some(match path {
        "/" | "/index.html" => What::Page,
        "/dashboard.js" => What::Script,
        "/dashboard.css" => What::Style,
        "/api/spend" => What::Spend,
        "/api/payments" => What::Payments,
        _ => return None,
    })
}

/// Answers a dashboard request, or `None` when `req` is not one.
pub async fn handle<B>(
    shared: &Arc<Shared>,
    cfg: &Arc<Loaded>,
    req: &Request<B>,
    peer: Option<std::net::SocketAddr>,
) -> Option<Response<Body>> {
    let what = route(req.method(), req.uri().path())?;
    let not_found = || ProxyError::NotFound {
        method: req.method().to_string(),
        path: req.uri().path().chars().take(200).collect(),
    };
    // Spend is for this machine's user: never for remote peers (allow_remote).
    if peer.is_some_and(|p| !p.ip().is_loopback()) {
        return Some(error_response(
            shared,
            &not_found(),
            None,
            super::ErrorShape::OpenAi,
        ));
    }
    let api = matches!(what, What::Spend | What::Payments);
    if let Err(e) = guard::check_dashboard(cfg, req.headers(), shared.local_port, api) {
        tracing::info!(path = %req.uri().path(), code = e.code(), "dashboard refused: {e}");
        return Some(error_response(shared, &e, None, super::ErrorShape::OpenAi));
    }
    let r = match what {
        What::Page => Ok(asset(PAGE, "text/html; charset=utf-8")),
        What::Script => Ok(asset(SCRIPT, "text/javascript; charset=utf-8")),
        What::Style => Ok(asset(STYLE, "text/css; charset=utf-8")),
        What::Spend => spend(shared, cfg).await,
        What::Payments => payments(shared).await,
    };
    Some(match r {
        Ok(r) => r,
        Err(e) => error_response(shared, &e, None, super::ErrorShape::OpenAi),
    })
}

fn respond(body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body)
            .map_err(|n| -> crate::pay::BoxError { match n {} })
            .boxed(),
    );
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn asset(text: &'static str, content_type: &'static str) -> Response<Body> {
    respond(Bytes::from_static(text.as_bytes()), content_type)
}

fn json(v: &impl Serialize) -> Result<Response<Body>, ProxyError> {
    let body = serde_json::to_vec(v).map_err(|e| ProxyError::Internal(e.to_string()))?;
    Ok(respond(Bytes::from(body), "application/json"))
}

#[derive(Serialize)]
struct SpendView {
    now: String,
    timezone: String,
    /// Oldest first, today last.
    days: Vec<String>,
    /// Per app and `(wallet)`: `today`, `month`, `total` and one row per day.
    rows: Vec<report::SpendRow>,
    /// Counted but not settled (reserved, signed, at-risk, rejected-unexpired).
    at_risk: Usd,
}

/// `GET /api/spend`: from the ledger writer's in-memory totals (no record is read).
async fn spend(shared: &Shared, cfg: &Loaded) -> Result<Response<Body>, ProxyError> {
    let now = crate::now_ms();
    let snapshot = shared
        .ledger
        .totals(now, CHART_DAYS)
        .await
        .map_err(ProxyError::from)?;
    let limits = report::Limits::from_config(cfg, now);
    let mut days: Vec<String> = snapshot
        .wallet
        .days
        .iter()
        .map(|(d, _)| d.to_string())
        .collect();
    days.reverse();
    json(&SpendView {
        now: ts(now),
        timezone: cfg.config.limits.timezone.clone(),
        days,
        rows: report::rows(&snapshot, &limits, None, CHART_DAYS),
        at_risk: Usd(snapshot.wallet.total.unsettled),
    })
}

#[derive(Serialize)]
struct PaymentView {
    id: u64,
    time: String,
    app: String,
    model: Option<String>,
    amount: Usd,
    /// CAIP-2 id and its short name.
    network: String,
    network_name: Option<&'static str>,
    state: &'static str,
    tx: Option<String>,
    tx_url: Option<String>,
}

impl From<&Payment> for PaymentView {
    fn from(p: &Payment) -> Self {
        PaymentView {
            id: p.id,
            time: ts(p.created_ms),
            app: p.app.clone(),
            model: p.model.clone(),
            amount: Usd(p.amount),
            network: p.network.clone(),
            network_name: crate::x402::networks::v1_name_of(&p.network),
            state: p.state.as_str(),
            tx: p.tx.clone(),
            tx_url: p
                .tx
                .as_deref()
                .and_then(|t| crate::x402::networks::explorer_tx_url(&p.network, t)),
        }
    }
}

#[derive(Serialize)]
struct PaymentsView {
    latest: Vec<PaymentView>,
    at_risk: Vec<PaymentView>,
}

/// `GET /api/payments`: the newest [`LATEST`] records (a bounded read from the end
/// of the table) and the unresolved ones (from the writer's memory).
async fn payments(shared: &Shared) -> Result<Response<Body>, ProxyError> {
    let latest = shared
        .ledger
        .payments(None, LATEST)
        .await
        .map_err(ProxyError::from)?;
    let mut at_risk = shared.ledger.unresolved().await.map_err(ProxyError::from)?;
    at_risk.sort_by_key(|p| std::cmp::Reverse(p.id));
    json(&PaymentsView {
        latest: latest.iter().map(PaymentView::from).collect(),
        at_risk: at_risk.iter().map(PaymentView::from).collect(),
    })
}

fn ts(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page must work offline and load nothing from elsewhere: no absolute
    /// or protocol-relative URL anywhere in the embedded files.
    #[test]
    fn embedded_page_has_no_external_urls() {
        for (name, text) in [
            ("index.html", PAGE),
            ("dashboard.js", SCRIPT),
            ("dashboard.css", STYLE),
        ] {
            let lower = text.to_ascii_lowercase();
            for bad in ["http:", "https:", "//", "ftp:", "ws:", "wss:", "@import"] {
                // `//` comments in JS are fine; a `//host` URL is quoted or after `=`/`(`.
                if bad == "//" {
                    for q in ["\"//", "'//", "`//", "(//", "=//"] {
                        assert!(!lower.contains(q), "{name} contains {q}");
                    }
                    continue;
                }
                assert!(!lower.contains(bad), "{name} contains {bad}");
            }
            assert!(
                !lower.contains("<script>"),
                "{name}: inline script (CSP forbids it)"
            );
            assert!(
                !lower.contains("style=\""),
                "{name}: inline style (CSP forbids it)"
            );
            assert!(
                !lower.contains("innerhtml"),
                "{name}: innerHTML (data is untrusted)"
            );
        }
        // CSS may load nothing by url() (the JS's `new URL(…)` only parses a link).
        assert!(!STYLE.to_ascii_lowercase().contains("url("));
        assert!(PAGE.contains("src=\"/dashboard.js\""));
        assert!(PAGE.contains("href=\"/dashboard.css\""));
    }
}
