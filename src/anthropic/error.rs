//! Turning a `ProxyError` into Anthropic's error response
//! (`{"type":"error","error":{"type","message"}}`). Same status, same
//! `x-should-retry` and `x-x402d-error` as the OpenAI rendering: both SDK
//! families obey `x-should-retry` before looking at the status, so a call whose
//! signature may have left is never retried. Nothing else builds Anthropic
//! error JSON by hand.

use crate::error::ProxyError;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::{Value, json};

/// Anthropic error `type` for a proxy error.
pub fn kind(e: &ProxyError) -> &'static str {
    use ProxyError::*;
    match e {
        NotFound { .. } | UnknownModel { .. } => "not_found_error",
        BodyTooLarge { .. } => "request_too_large",
        InvalidJson(_) | BadRequestBody(_) | InvalidRequest { .. } => "invalid_request_error",
        UnknownApp => "authentication_error",
        ModelNotAllowed { .. } | HostNotAllowed(_) | OriginNotAllowed(_) => "permission_error",
        // Refusals to pay: Anthropic's own "out of credit" type, status 402.
        NoAcceptableOption(_)
        | PriceAboveCeiling(_)
        | BudgetExceeded { .. }
        | PaymentRejected { .. } => "billing_error",
        _ => kind_for_status(e.status().as_u16()),
    }
}

/// Anthropic error `type` for an HTTP status (upstream answers, and the rest).
pub fn kind_for_status(status: u16) -> &'static str {
    match status {
        400 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type","message"}}`
pub fn body(e: &ProxyError) -> Value {
    json!({"type": "error", "error": {"type": kind(e), "message": e.to_string()}})
}

pub fn response(e: &ProxyError) -> Response<Full<Bytes>> {
    crate::openai::error::response_with(e, body(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::error::{HDR_ERROR, HDR_SHOULD_RETRY};

    #[test]
    fn shape_status_and_retry_header() {
        let cases: Vec<(ProxyError, u16, &str, &str)> = vec![
            (ProxyError::UnknownApp, 401, "authentication_error", "false"),
            (
                ProxyError::InvalidRequest {
                    param: "messages",
                    code: "invalid_request",
                    message: "x".into(),
                },
                400,
                "invalid_request_error",
                "false",
            ),
            (
                ProxyError::UnknownModel {
                    model: "claude-x".into(),
                    close: String::new(),
                },
                404,
                "not_found_error",
                "false",
            ),
            (
                ProxyError::BudgetExceeded {
                    code: "app_daily_cap_exceeded",
                    message: "m".into(),
                },
                402,
                "billing_error",
                "false",
            ),
            (
                ProxyError::BodyTooLarge { limit: 1 },
                413,
                "request_too_large",
                "false",
            ),
            (
                ProxyError::ModelNotAllowed {
                    app: "a".into(),
                    model: "m".into(),
                    allowed: "x".into(),
                },
                403,
                "permission_error",
                "false",
            ),
            (
                ProxyError::UpstreamTimeout { secs: 1 },
                504,
                "timeout_error",
                "true",
            ),
            (
                ProxyError::UpstreamUnreachable {
                    upstream: "u".into(),
                    reason: "r".into(),
                },
                502,
                "api_error",
                "true",
            ),
            // Money may have moved: a 5xx the SDKs would retry by status, so the header must say no.
            (
                ProxyError::PaymentOutcomeUnknown {
                    reason: "reset".into(),
                    amount: "0.001".into(),
                },
                502,
                "api_error",
                "false",
            ),
            (
                ProxyError::UpstreamBody {
                    paid: true,
                    reason: "r".into(),
                },
                502,
                "api_error",
                "false",
            ),
            (ProxyError::Ledger("l".into()), 500, "api_error", "false"),
        ];
        for (e, status, kind, retry) in cases {
            let r = response(&e);
            assert_eq!(r.status(), status, "{e:?}");
            assert_eq!(r.headers()[HDR_SHOULD_RETRY], retry, "{e:?}");
            assert_eq!(r.headers()[HDR_ERROR], e.code());
            let b = body(&e);
            assert_eq!(b["type"], "error");
            assert_eq!(b["error"]["type"], kind, "{e:?}");
            assert_eq!(b["error"]["message"], e.to_string());
            assert_eq!(b.as_object().unwrap().len(), 2);
        }
    }

    #[test]
    fn status_kinds() {
        assert_eq!(kind_for_status(429), "rate_limit_error");
        assert_eq!(kind_for_status(529), "overloaded_error");
        assert_eq!(kind_for_status(503), "api_error");
        assert_eq!(kind_for_status(401), "authentication_error");
    }
}
