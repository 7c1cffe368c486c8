//! The Anthropic Messages dialect's server side (Claude Code, the Anthropic
//! SDKs): its paths, the model mapping and upstream headers it needs before the
//! common pipeline (allow-lists, tier routing, caps, payment, retry coalescing;
//! see `dialect`), and its answers: a Message or its event stream, `ping` events
//! as the heartbeat, Anthropic-shaped errors. `count_tokens` is answered here,
//! never paid. The translation itself is `crate::anthropic`.

use super::{Body, Shared, coalesce, dialect::Front};
use crate::anthropic::{answer, models, request};
use crate::config::Loaded;
use crate::error::ProxyError;
use crate::openai::models::Tier;
use crate::pay::{BoxError, Upstream};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    CountTokens,
}

/// `/v1/messages` and `/v1/{pro,premium}/messages`, also under a base URL that
/// already ends in `/v1/{tier}` (`ANTHROPIC_BASE_URL=http://127.0.0.1:8402/v1/premium`
/// makes the SDKs call `/v1/premium/v1/messages`). `None` tier: route by model.
pub fn parse_path(path: &str) -> Option<(Option<Tier>, Endpoint)> {
    let (base, ep) = if let Some(b) = path.strip_suffix("/messages/count_tokens") {
        (b, Endpoint::CountTokens)
    } else if let Some(b) = path.strip_suffix("/messages") {
        (b, Endpoint::Messages)
    } else {
        return None;
    };
    let base = match base.strip_suffix("/v1") {
        Some(b) if !b.is_empty() => b,
        _ => base,
    };
    let tier = match base {
        "/v1" => None,
        "/v1/pro" => Some(Tier::Pro),
        "/v1/premium" => Some(Tier::Premium),
        _ => return None,
    };
    Some((tier, ep))
}

/// `POST …/messages/count_tokens`: an estimate (about 4 bytes a token), never
/// paid; Claude Code uses it for context accounting only.
pub(super) fn count_tokens(body: &[u8]) -> Result<Response<Body>, ProxyError> {
    let t = request::translate(body)?;
    let v = serde_json::json!({"input_tokens": request::estimate_tokens(&t)});
    Ok(json_response(hyper::StatusCode::OK, &v, None))
}

/// Points the call at the upstream model that serves the Anthropic id asked
/// for (`crate::anthropic::models`), before allow-lists and tiers look at it.
pub(super) async fn map_model(
    shared: &Arc<Shared>,
    cfg: &Loaded,
    front: &mut Front,
) -> Result<(), ProxyError> {
    let Some(asked) = front.model.clone() else {
        return Ok(());
    };
    let mut catalog = shared.catalog_models();
    if catalog.is_empty() {
        // The model list is free (a 402 is skipped); without it ids cannot be mapped.
        if let Err(e) = shared.refresh_catalog().await {
            tracing::debug!(error = %e, "model list unavailable; Anthropic model ids pass as they are");
        }
        catalog = shared.catalog_models();
    }
    let upstream = match models::resolve(&asked, &cfg.config.models, &catalog) {
        models::Resolved::Model(m) => m,
        models::Resolved::Unknown(close) => {
            return Err(ProxyError::UnknownModel {
                model: asked.chars().take(200).collect(),
                close: models::close_text(&close),
            });
        }
    };
    if upstream != asked {
        let mut body: Value = serde_json::from_slice(&front.upstream_body)
            .map_err(|e| ProxyError::Internal(e.to_string()))?;
        body["model"] = Value::String(upstream.clone());
        front.upstream_body = Bytes::from(body.to_string());
        front.model = Some(upstream);
    }
    Ok(())
}

/// The call's idempotency key for retry coalescing (`start_call` reads it; it
/// never goes upstream). Besides an app's own `Idempotency-Key`, Claude Code
/// retries on its own with `x-stainless-retry-count: 0` every time, but names its
/// session: the same request body again within one session is a retry (each turn
/// of a conversation carries a longer history). Only calls where money moved are
/// kept for retries, so a retry after an unpaid failure still runs again.
fn retry_marker(headers: &HeaderMap) -> Option<HeaderValue> {
    if let Some(k) = headers.get("idempotency-key") {
        return Some(k.clone());
    }
    let session = headers
        .get("x-claude-code-session-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())?;
    HeaderValue::from_str(&format!("claude-code-session:{session}")).ok()
}

/// Only what the upstream needs (plus the retry marker, which `pay` never
/// forwards): the app's key (`x-api-key`), Anthropic's headers and Claude
/// Code's session ids stay here.
pub(super) fn upstream_headers(from: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for name in ["accept", "user-agent", "x-stainless-retry-count"] {
        if let Some(v) = from.get(name) {
            h.insert(name, v.clone());
        }
    }
    if let Some(k) = retry_marker(from) {
        h.insert("idempotency-key", k);
    }
    h
}

/// The x402d and relay headers an answer carries over from the upstream reply.
const CARRIED: [&str; 6] = [
    crate::pay::HDR_COST,
    crate::pay::HDR_PAYMENT_ID,
    crate::pay::HDR_PAYMENT_STATE,
    crate::openai::error::HDR_SHOULD_RETRY,
    "x-request-id",
    "retry-after",
];

fn carry(into: &mut HeaderMap, u: Option<&Upstream>) {
    if let Some(u) = u {
        for name in CARRIED {
            if let Some(v) = u.headers.get(name) {
                into.insert(name, v.clone());
            }
        }
    }
}

fn json_response(status: hyper::StatusCode, v: &Value, u: Option<&Upstream>) -> Response<Body> {
    let mut r = Response::new(boxed(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    carry(h, u);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if u.is_none() {
        h.insert(crate::pay::HDR_COST, HeaderValue::from_static("0"));
    }
    r
}

fn boxed(b: Bytes) -> Body {
    Full::new(b).map_err(|n| -> BoxError { match n {} }).boxed()
}

/// A finished upstream reply as a Message, or as an Anthropic error with the upstream's status.
pub(super) fn answer(u: &Upstream, model: &str) -> Response<Body> {
    if !u.status.is_success() {
        let v = answer::upstream_error(u.status.as_u16(), &u.body);
        return json_response(u.status, &v, Some(u));
    }
    match completion(u).and_then(|c| answer::message(&c, model)) {
        Ok(m) => json_response(hyper::StatusCode::OK, &m, Some(u)),
        Err(msg) => not_a_completion(u, &msg),
    }
}

fn completion(u: &Upstream) -> Result<Value, String> {
    serde_json::from_slice(&u.body).map_err(|_| "the upstream completion is not JSON".to_string())
}

/// A 2xx that is not a chat completion: nothing to translate. It may have been paid, so never retry.
fn not_a_completion(u: &Upstream, msg: &str) -> Response<Body> {
    let v = serde_json::json!({"type": "error", "error": {"type": "api_error",
        "message": format!("The upstream answered, but {msg}; the call may have been paid, do not retry.")}});
    let mut r = json_response(hyper::StatusCode::BAD_GATEWAY, &v, Some(u));
    r.headers_mut().insert(
        crate::openai::error::HDR_SHOULD_RETRY,
        HeaderValue::from_static("false"),
    );
    r
}

/// The whole event stream for a finished 2xx reply; `Err` when it is not a completion.
pub(super) fn synthesize(u: &Upstream, model: &str) -> Result<Bytes, String> {
    completion(u).and_then(|c| answer::stream_body(&c, model))
}

/// What ends a stream whose headers are out: the events, or one `error` event.
pub(super) fn tail(o: &coalesce::Outcome, model: &str) -> Bytes {
    let failed = |body: Value| answer::error_event(&body);
    match o.as_ref() {
        Err(e) => failed(crate::anthropic::error::body(e)),
        Ok(u) if !u.status.is_success() => {
            failed(answer::upstream_error(u.status.as_u16(), &u.body))
        }
        Ok(u) => completion(u)
            .and_then(|c| answer::stream_body(&c, model))
            .unwrap_or_else(|msg| {
                failed(serde_json::json!({"type": "error", "error": {"type": "api_error",
                    "message": format!("The upstream answered, but {msg}; the call may have been paid, do not retry.")}}))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        use Endpoint::*;
        assert_eq!(parse_path("/v1/messages"), Some((None, Messages)));
        assert_eq!(
            parse_path("/v1/messages/count_tokens"),
            Some((None, CountTokens))
        );
        assert_eq!(
            parse_path("/v1/pro/messages"),
            Some((Some(Tier::Pro), Messages))
        );
        assert_eq!(
            parse_path("/v1/premium/v1/messages"),
            Some((Some(Tier::Premium), Messages))
        );
        assert_eq!(
            parse_path("/v1/premium/v1/messages/count_tokens"),
            Some((Some(Tier::Premium), CountTokens))
        );
        assert_eq!(parse_path("/v1/chat/completions"), None);
        assert_eq!(parse_path("/messages"), None);
        assert_eq!(parse_path("/v2/messages"), None);
        assert_eq!(parse_path("/v1/basic/messages"), None);
    }

    #[test]
    fn retry_markers() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert_eq!(retry_marker(&h(&[])), None);
        assert_eq!(retry_marker(&h(&[("x-stainless-retry-count", "0")])), None);
        assert_eq!(
            retry_marker(&h(&[
                ("x-claude-code-session-id", "s1"),
                ("x-stainless-retry-count", "0")
            ]))
            .unwrap(),
            "claude-code-session:s1"
        );
        assert_eq!(
            retry_marker(&h(&[
                ("idempotency-key", "k"),
                ("x-claude-code-session-id", "s1")
            ]))
            .unwrap(),
            "k"
        );
    }

    #[test]
    fn app_key_and_anthropic_headers_stay_here() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("sk-claude"));
        h.insert("authorization", HeaderValue::from_static("Bearer sk"));
        h.insert("anthropic-beta", HeaderValue::from_static("x"));
        h.insert("x-claude-code-session-id", HeaderValue::from_static("s"));
        h.insert("x-stainless-retry-count", HeaderValue::from_static("1"));
        let out = upstream_headers(&h);
        assert_eq!(out.len(), 3);
        assert_eq!(out["content-type"], "application/json");
        assert_eq!(out["x-stainless-retry-count"], "1");
        assert_eq!(out["idempotency-key"], "claude-code-session:s");
    }
}
