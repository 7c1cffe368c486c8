//! Turning a `ProxyError` into the OpenAI error response. Nothing else builds
//! error JSON by hand.

use crate::error::ProxyError;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde_json::json;

/// Proxy's own refusal marker, so users can tell x402d's errors from upstream errors.
pub const HDR_ERROR: &str = "x-x402d-error";
pub const HDR_SHOULD_RETRY: &str = "x-should-retry";

/// `{"error":{"message","type","param","code"}}`
pub fn body(e: &ProxyError) -> serde_json::Value {
    json!({
        "error": {
            "message": e.to_string(),
            "type": e.kind(),
            "param": e.param(),
            "code": e.code(),
        }
    })
}

pub fn response(e: &ProxyError) -> Response<Full<Bytes>> {
    response_with(e, body(e))
}

/// An error response with `body` (the caller's API shape) and the status and
/// headers every shape shares: `x-x402d-error` and `x-should-retry` from the error.
pub fn response_with(e: &ProxyError, body: serde_json::Value) -> Response<Full<Bytes>> {
    let bytes = Bytes::from(body.to_string());
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = e.status();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(HDR_ERROR, HeaderValue::from_static(e.code()));
    h.insert(
        HDR_SHOULD_RETRY,
        HeaderValue::from_static(if e.should_retry() { "true" } else { "false" }),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_headers() {
        let e = ProxyError::BudgetExceeded {
            code: "app_daily_cap_exceeded",
            message: "x".into(),
        };
        let r = response(&e);
        assert_eq!(r.status(), 402);
        assert_eq!(r.headers()[HDR_SHOULD_RETRY], "false");
        assert_eq!(r.headers()[HDR_ERROR], "app_daily_cap_exceeded");
        let b = body(&e);
        assert_eq!(b["error"]["type"], "budget_exceeded");
        assert_eq!(b["error"]["code"], "app_daily_cap_exceeded");
        assert!(b["error"]["param"].is_null());
        assert!(b["error"]["message"].is_string());
    }

    #[test]
    fn never_retry_after_signing() {
        let e = ProxyError::PaymentOutcomeUnknown {
            reason: "reset".into(),
            amount: "0.001".into(),
        };
        assert_eq!(response(&e).headers()[HDR_SHOULD_RETRY], "false");
        // Before any signature, a 502 for an unreachable upstream may be retried.
        let e = ProxyError::UpstreamUnreachable {
            upstream: "u".into(),
            reason: "r".into(),
        };
        assert_eq!(response(&e).headers()[HDR_SHOULD_RETRY], "true");
    }
}
