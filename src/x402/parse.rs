//! Parsing the seller's side of the handshake: the 402 requirements (v2 header or
//! v1 body) and the settlement header on the paid reply.

use super::Version;
use base64::Engine as _;
use serde_json::Value;
use serde_json::value::RawValue;

/// Upper bound on offered options; a seller offering more is refused outright.
pub const MAX_ACCEPTS: usize = 64;
/// Upper bound on the encoded `PAYMENT-REQUIRED` header / v1 body we parse.
pub const MAX_REQUIREMENTS_BYTES: usize = 64 * 1024;

/// One payment option offered by the seller, as offered.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub scheme: String,
    /// Network exactly as offered (`eip155:8453` in v2, `base` in v1).
    pub network: String,
    /// The amount field that will be signed, verbatim: v2 `amount`, v1 `maxAmountRequired`.
    pub amount: String,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    pub extra_name: Option<String>,
    pub extra_version: Option<String>,
    /// v1 carries the resource URL per requirement.
    pub resource: Option<String>,
    /// The original JSON object, echoed back as `accepted` in a v2 payment.
    pub raw: Value,
}

/// A parsed 402.
#[derive(Debug, Clone)]
pub struct PaymentRequired {
    pub version: Version,
    /// The seller's `error` string (e.g. why a payment was refused).
    pub error: Option<String>,
    /// v2 top-level `resource` object, echoed back in the payment.
    pub resource: Option<Value>,
    /// Each option, or why it could not be read.
    pub accepts: Vec<Result<Requirement, String>>,
    /// v2 top-level `extensions`, as the exact JSON text the seller sent (echoed
    /// back byte for byte in the payment; see `extensions.rs`).
    pub extensions: Option<Box<RawValue>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the 402 has no PAYMENT-REQUIRED header and its body is not x402 JSON")]
    NotX402,
    #[error("PAYMENT-REQUIRED header is not valid base64")]
    BadBase64,
    #[error("payment requirements are not valid JSON: {0}")]
    BadJson(String),
    #[error(
        "payment requirements are {0} bytes, more than the {MAX_REQUIREMENTS_BYTES}-byte limit"
    )]
    TooLarge(usize),
    #[error("unsupported x402Version {0}")]
    UnsupportedVersion(String),
    #[error("the 402 lists no payment options")]
    NoAccepts,
    #[error("the 402 lists {0} payment options, more than the limit of {MAX_ACCEPTS}")]
    TooManyAccepts(usize),
}

/// Parses a 402 reply: the v2 `PAYMENT-REQUIRED` header when present, else a v1 JSON body.
pub fn parse_402(header: Option<&[u8]>, body: &[u8]) -> Result<PaymentRequired, ParseError> {
    if let Some(h) = header {
        if h.len() > MAX_REQUIREMENTS_BYTES {
            return Err(ParseError::TooLarge(h.len()));
        }
        let trimmed = h.trim_ascii();
        let json = base64::engine::general_purpose::STANDARD
            .decode(trimmed)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(trimmed))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
            .map_err(|_| ParseError::BadBase64)?;
        let v: Value =
            serde_json::from_slice(&json).map_err(|e| ParseError::BadJson(e.to_string()))?;
        let mut pr = from_value(v, Some(Version::V2))?;
        pr.extensions = raw_extensions(&json);
        return Ok(pr);
    }
    if body.len() > MAX_REQUIREMENTS_BYTES {
        return Err(ParseError::TooLarge(body.len()));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| ParseError::NotX402)?;
    if v.get("x402Version").is_none() {
        return Err(ParseError::NotX402);
    }
    let mut pr = from_value(v, None)?;
    if pr.version == Version::V2 {
        pr.extensions = raw_extensions(body);
    }
    Ok(pr)
}

/// The top-level `extensions` member as the seller wrote it (`None` when absent or null).
fn raw_extensions(json: &[u8]) -> Option<Box<RawValue>> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(default)]
        extensions: Option<Box<RawValue>>,
    }
    serde_json::from_slice::<Doc>(json).ok()?.extensions
}

fn from_value(v: Value, expect: Option<Version>) -> Result<PaymentRequired, ParseError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ParseError::BadJson("not an object".into()))?;
    let version = match obj.get("x402Version") {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Version::V1,
        Some(Value::Number(n)) if n.as_u64() == Some(2) => Version::V2,
        // Seller-controlled: clipped, as it ends up in the app's error message and the log.
        Some(other) => {
            return Err(ParseError::UnsupportedVersion(truncate(
                &other.to_string(),
                32,
            )));
        }
        None => match expect {
            Some(v) => v,
            None => return Err(ParseError::NotX402),
        },
    };
    if expect == Some(Version::V2) && version != Version::V2 {
        // A v1 document in the v2 header is a mixed-up seller; refuse rather than guess.
        return Err(ParseError::UnsupportedVersion(format!(
            "{} in the PAYMENT-REQUIRED header",
            version.number()
        )));
    }
    let accepts = match obj.get("accepts") {
        Some(Value::Array(a)) => a,
        _ => return Err(ParseError::NoAccepts),
    };
    if accepts.is_empty() {
        return Err(ParseError::NoAccepts);
    }
    if accepts.len() > MAX_ACCEPTS {
        return Err(ParseError::TooManyAccepts(accepts.len()));
    }
    Ok(PaymentRequired {
        version,
        error: obj
            .get("error")
            .and_then(Value::as_str)
            .map(|s| truncate(s, 300)),
        resource: obj.get("resource").cloned(),
        accepts: accepts.iter().map(|a| requirement(a, version)).collect(),
        extensions: None,
    })
}

fn requirement(v: &Value, version: Version) -> Result<Requirement, String> {
    let o = v.as_object().ok_or("option is not a JSON object")?;
    let s = |k: &str| -> Result<String, String> {
        match o.get(k) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("`{k}` is not a string")),
            None => Err(format!("`{k}` is missing")),
        }
    };
    // One amount field per version, the same one that is checked and signed.
    let amount_field = match version {
        Version::V1 => "maxAmountRequired",
        Version::V2 => "amount",
    };
    let max_timeout_seconds = match o.get("maxTimeoutSeconds") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or("`maxTimeoutSeconds` is not a non-negative integer")?,
        Some(_) => return Err("`maxTimeoutSeconds` is not a number".into()),
        None => return Err("`maxTimeoutSeconds` is missing".into()),
    };
    let extra = o.get("extra").and_then(Value::as_object);
    let extra_str = |k: &str| extra.and_then(|e| e.get(k)).and_then(Value::as_str);
    Ok(Requirement {
        scheme: s("scheme")?,
        network: s("network")?,
        amount: s(amount_field)?,
        asset: s("asset")?,
        pay_to: s("payTo")?,
        max_timeout_seconds,
        extra_name: extra_str("name").map(str::to_string),
        extra_version: extra_str("version").map(str::to_string),
        resource: o
            .get("resource")
            .and_then(Value::as_str)
            .map(str::to_string),
        raw: v.clone(),
    })
}

/// The seller's settlement report (`PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub transaction: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub payer: Option<String>,
    #[serde(default)]
    pub error_reason: Option<String>,
}

/// Decodes a settlement header; `None` when it is absent or unreadable.
pub fn parse_settle_response(header: &[u8]) -> Option<SettleResponse> {
    if header.len() > MAX_REQUIREMENTS_BYTES {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(header.trim_ascii())
        .ok()?;
    let mut r: SettleResponse = serde_json::from_slice(&bytes).ok()?;
    // Only keep a transaction hash that looks like one; it ends up in the ledger and logs.
    if let Some(tx) = &r.transaction
        && !is_tx_hash(tx)
    {
        r.transaction = None;
    }
    Some(r)
}

/// An EVM transaction hash (0x + 64 hex), or a Solana transaction signature
/// (base58 of 64 bytes).
pub fn is_tx_hash(s: &str) -> bool {
    (s.len() == 66 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit()))
        || (s.len() <= 88 && bs58::decode(s).into_vec().is_ok_and(|b| b.len() == 64))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// Real header from `@x402/express` 2.27.0 (peer-harness capture 402-v2.txt, POST /v1/chat/completions).
    pub const V2_HEADER: &str = "eyJ4NDAyVmVyc2lvbiI6MiwiZXJyb3IiOiJQYXltZW50IHJlcXVpcmVkIiwicmVzb3VyY2UiOnsidXJsIjoiaHR0cDovLzEyNy4wLjAuMTo0MDIxL3YxL2NoYXQvY29tcGxldGlvbnMiLCJkZXNjcmlwdGlvbiI6IkNoYXQgY29tcGxldGlvbiIsIm1pbWVUeXBlIjoiYXBwbGljYXRpb24vanNvbiJ9LCJhY2NlcHRzIjpbeyJzY2hlbWUiOiJleGFjdCIsIm5ldHdvcmsiOiJlaXAxNTU6ODQ1MzIiLCJhbW91bnQiOiIxMDAwIiwiYXNzZXQiOiIweDAzNkNiRDUzODQyYzU0MjY2MzRlNzkyOTU0MWVDMjMxOGYzZENGN2UiLCJwYXlUbyI6IjB4M0M0NENkRGRCNmE5MDBmYTJiNTg1ZGQyOTllMDNkMTJGQTQyOTNCQyIsIm1heFRpbWVvdXRTZWNvbmRzIjozMDAsImV4dHJhIjp7Im5hbWUiOiJVU0RDIiwidmVyc2lvbiI6IjIifX1dfQ==";
    /// Real v1 body from `x402-express` 1.2.0 (peer-harness capture 402-v1.txt).
    pub const V1_BODY: &str = r#"{"x402Version":1,"error":"X-PAYMENT header is required","accepts":[{"scheme":"exact","network":"base-sepolia","maxAmountRequired":"1000","resource":"http://127.0.0.1:4031/weather","description":"Weather report","mimeType":"","payTo":"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC","maxTimeoutSeconds":60,"asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e","outputSchema":{"input":{"type":"http","method":"GET","discoverable":true}},"extra":{"name":"USDC","version":"2"}}]}"#;
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    /// Real settlement header (capture 402-v2.txt).
    const V2_SETTLE: &str = "eyJzdWNjZXNzIjp0cnVlLCJwYXllciI6IjB4NzA5OTc5NzBDNTE4MTJkYzNBMDEwQzdkMDFiNTBlMGQxN2RjNzlDOCIsInRyYW5zYWN0aW9uIjoiMHhhMTY5NDJjOGY1YTNmNzY1MTU0MDFjNWRiZTE0Yjc0MjBhZjFkNmQ2ODcyYjMwYzZmZGQxMzEzOGM1Nzk3MWRmIiwibmV0d29yayI6ImVpcDE1NTo4NDUzMiJ9";
    const V1_SETTLE: &str = "eyJzdWNjZXNzIjp0cnVlLCJ0cmFuc2FjdGlvbiI6IjB4MjRlZjk2NGNkMmQ5NDg3NjExYjAzZDA5M2Y2ODY3YzZkYzFlNzQ4ZDhmNDlkMjEyYmUzZDkxNzA2MDVlYjA4YiIsIm5ldHdvcmsiOiJiYXNlLXNlcG9saWEiLCJwYXllciI6IjB4NzA5OTc5NzBDNTE4MTJkYzNBMDEwQzdkMDFiNTBlMGQxN2RjNzlDOCJ9";

    #[test]
    fn parses_captured_v2_header() {
        let pr = parse_402(Some(V2_HEADER.as_bytes()), b"{}").unwrap();
        assert_eq!(pr.version, Version::V2);
        assert_eq!(pr.error.as_deref(), Some("Payment required"));
        assert_eq!(
            pr.resource.as_ref().unwrap()["url"],
            "http://127.0.0.1:4021/v1/chat/completions"
        );
        let r = pr.accepts[0].as_ref().unwrap();
        assert_eq!(r.scheme, "exact");
        assert_eq!(r.network, "eip155:84532");
        assert_eq!(r.amount, "1000");
        assert_eq!(r.asset, "0x036CbD53842c5426634e7929541eC2318f3dCF7e");
        assert_eq!(r.pay_to, "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");
        assert_eq!(r.max_timeout_seconds, 300);
        assert_eq!(r.extra_name.as_deref(), Some("USDC"));
        assert_eq!(r.extra_version.as_deref(), Some("2"));
    }

    #[test]
    fn parses_captured_v1_body() {
        let pr = parse_402(None, V1_BODY.as_bytes()).unwrap();
        assert_eq!(pr.version, Version::V1);
        let r = pr.accepts[0].as_ref().unwrap();
        assert_eq!(r.network, "base-sepolia");
        assert_eq!(r.amount, "1000");
        assert_eq!(r.max_timeout_seconds, 60);
        assert_eq!(r.resource.as_deref(), Some("http://127.0.0.1:4031/weather"));
    }

    #[test]
    fn v2_header_wins_over_body() {
        let pr = parse_402(Some(V2_HEADER.as_bytes()), V1_BODY.as_bytes()).unwrap();
        assert_eq!(pr.version, Version::V2);
    }

    #[test]
    fn v2_amount_field_only() {
        // A v2 option carrying only the v1 field is unreadable, not $0.
        let doc = r#"{"x402Version":2,"accepts":[{"scheme":"exact","network":"eip155:8453","maxAmountRequired":"1","asset":"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913","payTo":"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC","maxTimeoutSeconds":60}]}"#;
        let h = base64::engine::general_purpose::STANDARD.encode(doc);
        let pr = parse_402(Some(h.as_bytes()), b"").unwrap();
        assert_eq!(pr.accepts[0].as_ref().unwrap_err(), "`amount` is missing");
    }

    #[test]
    fn malformed_inputs() {
        assert_eq!(
            parse_402(Some(b"%%%not base64"), b"").unwrap_err(),
            ParseError::BadBase64
        );
        let h = base64::engine::general_purpose::STANDARD.encode("{nope");
        assert!(matches!(
            parse_402(Some(h.as_bytes()), b""),
            Err(ParseError::BadJson(_))
        ));
        assert_eq!(parse_402(None, b"{}").unwrap_err(), ParseError::NotX402);
        assert_eq!(parse_402(None, b"<html>").unwrap_err(), ParseError::NotX402);
        assert_eq!(
            parse_402(None, br#"{"x402Version":1,"accepts":[]}"#).unwrap_err(),
            ParseError::NoAccepts
        );
        assert!(matches!(
            parse_402(None, br#"{"x402Version":3,"accepts":[{}]}"#),
            Err(ParseError::UnsupportedVersion(_))
        ));
        let many = format!(
            r#"{{"x402Version":1,"accepts":[{}]}}"#,
            vec!["{}"; 10_000].join(",")
        );
        assert_eq!(
            parse_402(None, many.as_bytes()).unwrap_err(),
            ParseError::TooManyAccepts(10_000)
        );
        let huge = format!(r#"{{"x402Version":1,"pad":"{}"}}"#, "x".repeat(100_000));
        assert!(matches!(
            parse_402(None, huge.as_bytes()),
            Err(ParseError::TooLarge(_))
        ));
        let some = format!(
            r#"{{"x402Version":1,"accepts":[{}]}}"#,
            vec!["{}"; 65].join(",")
        );
        assert_eq!(
            parse_402(None, some.as_bytes()).unwrap_err(),
            ParseError::TooManyAccepts(65)
        );
        // Numbers where strings belong are reported per option.
        let pr = parse_402(
            None,
            br#"{"x402Version":1,"accepts":[{"scheme":"exact","network":"base","maxAmountRequired":1000,"asset":"x","payTo":"y","maxTimeoutSeconds":60}]}"#,
        )
        .unwrap();
        assert_eq!(
            pr.accepts[0].as_ref().unwrap_err(),
            "`maxAmountRequired` is not a string"
        );
    }

    #[test]
    fn unsupported_version_is_clipped() {
        // Found by the hostile suite: a 40 KB `x402Version` came back whole in the error.
        let doc = format!(
            r#"{{"x402Version":"{}é","accepts":[{{}}]}}"#,
            "v".repeat(40_000)
        );
        let h = base64::engine::general_purpose::STANDARD.encode(&doc);
        for e in [
            parse_402(Some(h.as_bytes()), b"").unwrap_err(),
            parse_402(None, doc.as_bytes()).unwrap_err(),
        ] {
            let ParseError::UnsupportedVersion(v) = &e else {
                panic!("{e:?}")
            };
            assert!(v.starts_with("\"vvv") && v.ends_with('…'), "{v}");
            assert!(e.to_string().len() < 100, "{e}");
        }
        // Multi-byte characters at the cut are not split.
        let doc = format!(r#"{{"x402Version":"{}","accepts":[]}}"#, "é".repeat(100));
        let e = parse_402(None, doc.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("éé…"), "{e}");
    }

    #[test]
    fn settle_headers() {
        let s = parse_settle_response(V2_SETTLE.as_bytes()).unwrap();
        assert!(s.success);
        assert_eq!(
            s.transaction.as_deref(),
            Some("0xa16942c8f5a3f76515401c5dbe14b7420af1d6d6872b30c6fdd13138c57971df")
        );
        assert_eq!(s.network.as_deref(), Some("eip155:84532"));
        let s = parse_settle_response(V1_SETTLE.as_bytes()).unwrap();
        assert_eq!(s.network.as_deref(), Some("base-sepolia"));
        assert!(parse_settle_response(b"garbage").is_none());
    }

    #[test]
    fn solana_signatures_are_transaction_ids() {
        let sig = bs58::encode([7u8; 64]).into_string();
        assert!(is_tx_hash(&sig));
        assert!(!is_tx_hash(&bs58::encode([7u8; 32]).into_string()));
        assert!(!is_tx_hash("<script>"));
        assert!(!is_tx_hash(&format!("{sig} x")));
    }
}
