//! Encoding the payment we send (`PAYMENT-SIGNATURE` in v2, `X-PAYMENT` in v1).

use super::{PaymentRequired, Version, select::Choice};
use alloy_primitives::{Address, B256, U256};
use base64::Engine as _;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// The EIP-3009 `TransferWithAuthorization` message fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub from: Address,
    pub to: Address,
    pub value: U256,
    pub valid_after: u64,
    pub valid_before: u64,
    pub nonce: B256,
}

impl Authorization {
    fn to_json(&self) -> Value {
        json!({
            "from": self.from.to_string(),
            "to": self.to.to_string(),
            "value": self.value.to_string(),
            "validAfter": self.valid_after.to_string(),
            "validBefore": self.valid_before.to_string(),
            "nonce": self.nonce.to_string(),
        })
    }
}

/// The v2 payment document. A struct (not a `Value`) so `extensions` can be
/// carried as raw JSON text, byte for byte as advertised.
#[derive(serde::Serialize)]
struct V2Payment<'a> {
    #[serde(rename = "x402Version")]
    version: u8,
    payload: Value,
    accepted: &'a Value,
    /// Echoed only when the 402 had one: `"resource": null` is not a resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extensions: Option<&'a RawValue>,
}

/// Builds the payment header value (base64 JSON) for the chosen requirement.
/// `extensions` is what v2 echoes back (see `extensions::echo`); v1 has none.
pub fn encode_payment(
    pr: &PaymentRequired,
    choice: &Choice,
    auth: &Authorization,
    signature: &[u8; 65],
    extensions: Option<&RawValue>,
) -> String {
    let sig = format!("0x{}", hex::encode(signature));
    let doc = match pr.version {
        Version::V2 => serde_json::to_string(&V2Payment {
            version: 2,
            payload: json!({ "authorization": auth.to_json(), "signature": sig }),
            accepted: &choice.requirement.raw,
            resource: pr.resource.as_ref(),
            extensions,
        })
        .unwrap_or_default(),
        Version::V1 => json!({
            "x402Version": 1,
            "scheme": choice.requirement.scheme,
            "network": choice.requirement.network,
            "payload": { "signature": sig, "authorization": auth.to_json() },
        })
        .to_string(),
    };
    base64::engine::general_purpose::STANDARD.encode(doc)
}

/// Builds the payment header value for a Solana `exact` payment: the payload is
/// `{"transaction": base64}`, wrapped as `@x402/core` does (v2 echoes `accepted`,
/// `resource` and `extensions`; v1 names scheme and network).
pub fn encode_svm_payment(
    pr: &PaymentRequired,
    requirement: &super::Requirement,
    transaction_b64: &str,
    extensions: Option<&RawValue>,
) -> String {
    let payload = json!({ "transaction": transaction_b64 });
    let doc = match pr.version {
        Version::V2 => serde_json::to_string(&V2Payment {
            version: 2,
            payload,
            accepted: &requirement.raw,
            resource: pr.resource.as_ref(),
            extensions,
        })
        .unwrap_or_default(),
        Version::V1 => json!({
            "x402Version": 1,
            "scheme": requirement.scheme,
            "network": requirement.network,
            "payload": payload,
        })
        .to_string(),
    };
    base64::engine::general_purpose::STANDARD.encode(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Usd;
    use crate::x402::networks;
    use crate::x402::parse::parse_402;
    use crate::x402::select::{Policy, choose};

    #[test]
    fn round_trip_v2_and_v1() {
        let policy = Policy {
            networks: vec![networks::lookup("eip155:84532").unwrap()],
            ceiling: Usd(1_000_000),
            max_timeout_seconds: 3600,
            pay_to: None,
        };
        let auth = Authorization {
            from: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                .parse()
                .unwrap(),
            to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
                .parse()
                .unwrap(),
            value: U256::from(1000),
            valid_after: 0,
            valid_before: 1795483740,
            nonce: B256::repeat_byte(0xab),
        };
        let sig = [7u8; 65];
        let h2 = crate::x402::parse::tests_support::V2_HEADER;
        let pr = parse_402(Some(h2.as_bytes()), b"{}").unwrap();
        let c = choose(&pr, &policy).unwrap();
        let enc = encode_payment(&pr, &c, &auth, &sig, None);
        let v: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(enc)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(v["x402Version"], 2);
        assert_eq!(v["accepted"], c.requirement.raw);
        assert_eq!(v["resource"], pr.resource.clone().unwrap());
        let a = &v["payload"]["authorization"];
        assert_eq!(a["from"], "0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
        assert_eq!(a["to"], "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");
        assert_eq!(a["value"], "1000");
        assert_eq!(a["validAfter"], "0");
        assert_eq!(a["validBefore"], "1795483740");
        assert_eq!(a["nonce"], format!("0x{}", "ab".repeat(32)));
        assert_eq!(v["payload"]["signature"], format!("0x{}", "07".repeat(65)));

        // A 402 without a resource: the key is left out, not sent as null.
        let mut bare = pr.clone();
        bare.resource = None;
        let enc = encode_payment(&bare, &c, &auth, &sig, None);
        let v: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(enc)
                .unwrap(),
        )
        .unwrap();
        assert!(v.get("resource").is_none(), "{v}");
        assert_eq!(v["accepted"], c.requirement.raw);

        let pr1 = parse_402(None, crate::x402::parse::tests_support::V1_BODY.as_bytes()).unwrap();
        let c1 = choose(&pr1, &policy).unwrap();
        let enc = encode_payment(&pr1, &c1, &auth, &sig, None);
        let v: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(enc)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(v["x402Version"], 1);
        assert_eq!(v["scheme"], "exact");
        assert_eq!(v["network"], "base-sepolia");
        assert_eq!(v["payload"]["authorization"]["value"], "1000");
    }

    #[test]
    fn v2_carries_the_echoed_extensions_verbatim() {
        let policy = Policy {
            networks: vec![networks::lookup("eip155:84532").unwrap()],
            ceiling: Usd(1_000_000),
            max_timeout_seconds: 3600,
            pay_to: None,
        };
        let doc = r#"{"x402Version":2,"accepts":[{"scheme":"exact","network":"eip155:84532","amount":"1000","asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e","payTo":"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC","maxTimeoutSeconds":60,"extra":{"name":"USDC","version":"2"}}],"extensions":{"payment-identifier":{"info":{"required":false}},"x-odd" : {"n":1.50}}}"#;
        let h = base64::engine::general_purpose::STANDARD.encode(doc);
        let pr = parse_402(Some(h.as_bytes()), b"").unwrap();
        assert_eq!(
            pr.extensions.as_ref().unwrap().get(),
            r#"{"payment-identifier":{"info":{"required":false}},"x-odd" : {"n":1.50}}"#
        );
        let c = choose(&pr, &policy).unwrap();
        let id = crate::x402::extensions::payment_id(&[9; 16]);
        let ext = crate::x402::extensions::echo(pr.extensions.as_deref(), Some(&id))
            .unwrap()
            .unwrap();
        let auth = Authorization {
            from: Address::ZERO,
            to: Address::ZERO,
            value: U256::from(1000),
            valid_after: 0,
            valid_before: 1,
            nonce: B256::ZERO,
        };
        let enc = encode_payment(&pr, &c, &auth, &[1; 65], Some(&ext));
        let text = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(enc)
                .unwrap(),
        )
        .unwrap();
        assert!(
            text.ends_with(&format!(
                r#","extensions":{{"payment-identifier":{{"info":{{"required":false,"id":"{id}"}}}},"x-odd":{{"n":1.50}}}}}}"#
            )),
            "{text}"
        );
    }

    #[test]
    fn solana_payloads_have_the_sdk_shape() {
        let v: Value =
            serde_json::from_str(include_str!("../../tests/vectors/svm_exact.json")).unwrap();
        for c in v["cases"].as_array().unwrap() {
            let version = c["version"].as_u64().unwrap();
            let amount_key = if version == 2 {
                "amount"
            } else {
                "maxAmountRequired"
            };
            let mut offer = json!({"scheme":"exact","network":c["network"],"asset":c["asset"],
                "payTo":c["payTo"],"maxTimeoutSeconds":60,"extra":{"feePayer":c["feePayer"]},
                "resource":"http://x/y"});
            offer[amount_key] = c["amount"].clone();
            let doc = json!({"x402Version": version, "accepts": [offer],
                "resource": {"url": "http://x/y"}})
            .to_string();
            let pr = crate::x402::parse::parse_402(None, doc.as_bytes()).unwrap();
            let req = pr.accepts[0].clone().unwrap();
            let tx = c["payload"]["payload"]["transaction"].as_str().unwrap();
            let h = encode_svm_payment(&pr, &req, tx, None);
            let got: Value = serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD.decode(h).unwrap(),
            )
            .unwrap();
            // What the scheme client returns, then what @x402/core adds around it.
            let sdk = &c["payload"];
            assert_eq!(got["x402Version"], sdk["x402Version"]);
            assert_eq!(got["payload"], sdk["payload"]);
            if version == 2 {
                assert_eq!(got["accepted"], req.raw);
                assert_eq!(got["resource"], json!({"url": "http://x/y"}));
            } else {
                assert_eq!(got, *sdk, "v1 is the scheme's payload as is");
            }
        }
    }
}
