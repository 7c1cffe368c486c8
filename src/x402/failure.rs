//! Reading why a seller refused or failed a payment, from wherever sellers put
//! it: the `PAYMENT-RESPONSE` header's `errorReason` (sent on a failed
//! settlement too), the `error` of a second `PAYMENT-REQUIRED`, and the body's
//! `error` / `details`. Pure functions over bytes.

use super::parse::{self, SettleResponse};
use serde_json::Value;

/// Longest reason kept (it is seller-controlled and ends up in errors and logs).
const MAX_REASON: usize = 300;

/// What the seller said about a paid request that did not simply succeed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Failure {
    /// The seller's words, clipped; `None` when it said nothing readable.
    pub reason: Option<String>,
    /// A `PAYMENT-RESPONSE` with `success: false`: the seller tried to settle and
    /// says it failed. The transaction may still be on chain.
    pub settlement_failed: bool,
}

impl Failure {
    pub fn reason_or(&self, default: &str) -> String {
        self.reason.clone().unwrap_or_else(|| default.to_string())
    }
}

/// The settlement report on a reply (`PAYMENT-RESPONSE`, or v1 `X-PAYMENT-RESPONSE`).
pub fn settle_response(payment_response: Option<&[u8]>) -> Option<SettleResponse> {
    payment_response.and_then(parse::parse_settle_response)
}

/// Reads the seller's failure from the three places sellers put it, most
/// specific first.
pub fn failure(
    payment_response: Option<&[u8]>,
    payment_required: Option<&[u8]>,
    body: &[u8],
) -> Failure {
    let settle = settle_response(payment_response);
    let settlement_failed = settle.as_ref().is_some_and(|s| !s.success);
    let from_settle = settle
        .filter(|s| !s.success)
        .and_then(|s| s.error_reason)
        .filter(|r| !r.trim().is_empty());
    let from_required = payment_required
        .and_then(|h| parse::parse_402(Some(h), b"").ok())
        .and_then(|p| p.error)
        .filter(|r| !r.trim().is_empty());
    let reason = from_settle
        .or(from_required)
        .or_else(|| body_reason(body))
        .map(|r| clip(&r));
    Failure {
        reason,
        settlement_failed,
    }
}

/// `error` (a string, or an OpenAI-style object with `message`/`code`) and
/// `details`, from a JSON body.
fn body_reason(body: &[u8]) -> Option<String> {
    if body.len() > parse::MAX_REQUIREMENTS_BYTES {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Object(o) => o
                .get("message")
                .or_else(|| o.get("code"))
                .or_else(|| o.get("reason"))
                .and_then(Value::as_str)
                .map(str::to_string),
            Value::Null => None,
            other if !other.is_string() => Some(other.to_string()),
            _ => None,
        }
    };
    let error = v.get("error").and_then(text);
    let details = v.get("details").and_then(text);
    match (error, details) {
        (Some(e), Some(d)) => Some(format!("{e}: {d}")),
        (e, d) => e.or(d),
    }
}

/// Whether a seller's reason says the authorization's nonce was already used
/// (what a re-sent payment gets from a seller that settled the first one).
pub fn says_nonce_used(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    (r.contains("nonce") && (r.contains("used") || r.contains("already")))
        || r.contains("authorization_already_used")
        || r.contains("authorization is used")
        || r.contains("authorization already used")
}

fn clip(s: &str) -> String {
    // Control characters (newlines, escapes) are dropped: the reason is one log field.
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    if clean.len() <= MAX_REASON {
        return clean;
    }
    let mut end = MAX_REASON;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &clean[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(s)
            .into_bytes()
    }

    #[test]
    fn settlement_failure_reason_comes_first() {
        let pr = b64(
            r#"{"success":false,"errorReason":"invalid_exact_evm_nonce_already_used","transaction":"","network":"eip155:84532"}"#,
        );
        let req = b64(r#"{"x402Version":2,"error":"Settlement failed","accepts":[{}]}"#);
        let f = failure(Some(&pr), Some(&req), br#"{"error":"body says"}"#);
        assert!(f.settlement_failed);
        assert_eq!(
            f.reason.as_deref(),
            Some("invalid_exact_evm_nonce_already_used")
        );
        assert!(says_nonce_used(f.reason.as_deref().unwrap()));
    }

    #[test]
    fn second_402_error_then_body() {
        let req = b64(r#"{"x402Version":2,"error":"insufficient_funds","accepts":[{}]}"#);
        let f = failure(None, Some(&req), b"{}");
        assert_eq!(f.reason.as_deref(), Some("insufficient_funds"));
        assert!(!f.settlement_failed);
        // A successful PAYMENT-RESPONSE is not a failure reason.
        let ok = b64(r#"{"success":true,"errorReason":"ignored"}"#);
        let f = failure(
            Some(&ok),
            None,
            br#"{"error":"Payment verification failed","details":"nonce already used"}"#,
        );
        assert_eq!(
            f.reason.as_deref(),
            Some("Payment verification failed: nonce already used")
        );
        assert!(!f.settlement_failed);
        let f = failure(
            None,
            None,
            br#"{"error":{"message":"upstream exploded","type":"x"}}"#,
        );
        assert_eq!(f.reason.as_deref(), Some("upstream exploded"));
        let f = failure(None, None, b"<html>");
        assert_eq!(f.reason, None);
        assert_eq!(f.reason_or("no reason given"), "no reason given");
    }

    #[test]
    fn reasons_are_clipped_and_single_line() {
        let long = format!(r#"{{"error":"a\nb{}"}}"#, "é".repeat(400));
        let r = failure(None, None, long.as_bytes()).reason.unwrap();
        assert!(r.starts_with("abéé") && r.ends_with('…'), "{r}");
        assert!(r.len() <= MAX_REASON + 4);
    }

    #[test]
    fn nonce_used_wording() {
        for s in [
            "invalid_exact_evm_nonce_already_used",
            "Nonce already used",
            "authorization is used or canceled",
            "nonce has been used",
        ] {
            assert!(says_nonce_used(s), "{s}");
        }
        for s in ["insufficient_funds", "invalid_signature", "nonce invalid"] {
            assert!(!says_nonce_used(s), "{s}");
        }
    }
}
