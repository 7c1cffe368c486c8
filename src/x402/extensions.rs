//! v2 extensions in the payment we send: every extension the 402 advertised is
//! echoed back exactly as advertised (a client may add, never delete or change;
//! sellers refuse a mismatch with `extension_echo_mismatch`), and the
//! `payment-identifier` extension gets our id for the call in `info.id`.
//!
//! Work is done on the raw JSON text, never on a re-serialized `Value`, so key
//! order, number spelling and escapes of what the seller sent survive byte for byte.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// Key of the payment-identifier extension.
pub const PAYMENT_IDENTIFIER: &str = "payment-identifier";
pub const ID_MIN: usize = 16;
pub const ID_MAX: usize = 128;
/// Prefix of the ids x402d makes (the Coinbase client uses `pay_`).
const ID_PREFIX: &str = "x402d_";

/// A JSON object as a list of (key, raw value), in the order sent.
#[derive(Debug)]
struct RawObject(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawObject, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Box<RawValue>>()? {
                    out.push((k, v));
                }
                Ok(RawObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl RawObject {
    fn parse(raw: &RawValue) -> Option<RawObject> {
        serde_json::from_str(raw.get()).ok()
    }

    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// Sets `key` (in place when present, appended otherwise).
    fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    fn to_raw(&self) -> Box<RawValue> {
        let mut s = String::from("{");
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            // A key is re-encoded as a JSON string: same text for any key a seller sends.
            s.push_str(&serde_json::Value::String(k.clone()).to_string());
            s.push(':');
            s.push_str(v.get());
        }
        s.push('}');
        // Built from valid JSON parts, so it always parses.
        RawValue::from_string(s).unwrap_or_default()
    }
}

/// What the seller's `payment-identifier` declaration asks of us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRequest {
    /// Not declared.
    None,
    /// Declared in the expected shape (`info.required` a boolean): an id is added.
    Accepted { required: bool },
    /// Declared, but in a shape x402d cannot add an id to; `required` when it
    /// still reads as required (then x402d refuses to pay).
    Unusable { required: bool },
}

/// Reads what the advertised extensions ask for payment-identifier.
pub fn id_request(advertised: Option<&RawValue>) -> IdRequest {
    let Some(obj) = advertised.and_then(RawObject::parse) else {
        return IdRequest::None;
    };
    let Some(decl) = obj.get(PAYMENT_IDENTIFIER) else {
        return IdRequest::None;
    };
    let v: serde_json::Value = serde_json::from_str(decl.get()).unwrap_or_default();
    let info = v.get("info");
    match info.and_then(|i| i.get("required")) {
        Some(serde_json::Value::Bool(required)) if info.is_some_and(|i| i.is_object()) => {
            IdRequest::Accepted {
                required: *required,
            }
        }
        _ => IdRequest::Unusable {
            required: v.get("required") == Some(&serde_json::Value::Bool(true))
                || info.and_then(|i| i.get("required")) == Some(&serde_json::Value::Bool(true)),
        },
    }
}

/// Why the advertised extensions cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EchoError {
    #[error("the 402's `extensions` is not a JSON object")]
    NotAnObject,
    #[error(
        "the seller requires a payment identifier but its `payment-identifier` declaration is unreadable"
    )]
    RequiredIdUnusable,
    #[error("payment id {0:?} is not 16-128 characters of [A-Za-z0-9_-]")]
    BadId(String),
}

/// The `extensions` member of our payment: every advertised extension, each value
/// byte for byte as advertised, except that `payment-identifier` (when declared
/// in the expected shape and `id` is given) carries `info.id`. `None` when the 402
/// advertised none.
pub fn echo(
    advertised: Option<&RawValue>,
    id: Option<&str>,
) -> Result<Option<Box<RawValue>>, EchoError> {
    let Some(raw) = advertised else {
        return Ok(None);
    };
    let mut obj = RawObject::parse(raw).ok_or(EchoError::NotAnObject)?;
    match (id_request(advertised), id) {
        (IdRequest::Accepted { .. }, Some(id)) => {
            if !valid_id(id) {
                return Err(EchoError::BadId(id.to_string()));
            }
            // Accepted means the declaration and its `info` are objects.
            let mut decl = obj
                .get(PAYMENT_IDENTIFIER)
                .and_then(RawObject::parse)
                .ok_or(EchoError::RequiredIdUnusable)?;
            let mut info = decl
                .get("info")
                .and_then(RawObject::parse)
                .ok_or(EchoError::RequiredIdUnusable)?;
            let id_raw = serde_json::value::to_raw_value(id)
                .map_err(|_| EchoError::BadId(id.to_string()))?;
            info.set("id", id_raw);
            decl.set("info", info.to_raw());
            obj.set(PAYMENT_IDENTIFIER, decl.to_raw());
            Ok(Some(obj.to_raw()))
        }
        (IdRequest::Unusable { required: true }, _) => Err(EchoError::RequiredIdUnusable),
        // Nothing added: the exact text the seller sent, object and all.
        _ => Ok(Some(raw.to_owned())),
    }
}

/// Whether `id` is a valid payment identifier: 16–128 characters of `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    (ID_MIN..=ID_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A payment identifier for one logical call, from 16 random bytes (the caller
/// draws them once per call and re-sends reuse the whole payment, id included).
pub fn payment_id(random: &[u8; 16]) -> String {
    format!("{ID_PREFIX}{}", hex::encode(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    /// Shaped like `@x402/extensions` 2.27 `declarePaymentIdentifierExtension(true)`
    /// plus a second, unknown extension with odd spacing, number spelling and escapes.
    const ADVERTISED: &str = r#"{"payment-identifier":{"info":{"required":true},"schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"required":{"type":"boolean"},"id":{"type":"string","minLength":16,"maxLength":128,"pattern":"^[a-zA-Z0-9_-]+$"}},"required":["required"]}},"x-odd" : {"info": {"z":1.50, "a":"\u00e9\/", "n":12345678901234567890123}, "b":[ ]}}"#;

    #[test]
    fn echoes_other_extensions_byte_for_byte_and_adds_the_id() {
        let id = payment_id(&[7; 16]);
        let out = echo(Some(&raw(ADVERTISED)), Some(&id)).unwrap().unwrap();
        let text = out.get();
        // The unknown extension, exactly as sent.
        assert!(
            text.contains(r#""x-odd":{"info": {"z":1.50, "a":"\u00e9\/", "n":12345678901234567890123}, "b":[ ]}"#),
            "{text}"
        );
        // payment-identifier: every advertised byte, plus info.id appended.
        assert!(
            text.starts_with(&format!(
                r#"{{"payment-identifier":{{"info":{{"required":true,"id":"{id}"}},"schema":{{"$schema":"#
            )),
            "{text}"
        );
        let adv_schema = &ADVERTISED
            [ADVERTISED.find(r#""schema""#).unwrap()..ADVERTISED.find(r#","x-odd""#).unwrap()];
        assert!(text.contains(adv_schema), "{text}");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["payment-identifier"]["info"]["id"], id.as_str());
        assert_eq!(
            v.as_object().unwrap().len(),
            2,
            "nothing deleted, nothing added"
        );
    }

    #[test]
    fn without_payment_identifier_the_object_is_echoed_whole() {
        let adv = r#"{ "bazaar" : {"info":{"x":[1, 2]}} }"#;
        let out = echo(Some(&raw(adv)), Some(&payment_id(&[1; 16])))
            .unwrap()
            .unwrap();
        assert_eq!(out.get(), adv);
        assert!(echo(None, Some("abcdefghijklmnop")).unwrap().is_none());
        assert_eq!(
            echo(Some(&raw("[1]")), None).unwrap_err(),
            EchoError::NotAnObject
        );
    }

    #[test]
    fn an_existing_id_is_replaced_in_place() {
        let adv =
            r#"{"payment-identifier":{"info":{"id":"seller-put-this-here","required":false}}}"#;
        let id = payment_id(&[2; 16]);
        let out = echo(Some(&raw(adv)), Some(&id)).unwrap().unwrap();
        assert_eq!(
            out.get(),
            format!(r#"{{"payment-identifier":{{"info":{{"id":"{id}","required":false}}}}}}"#)
        );
    }

    #[test]
    fn unusable_declarations() {
        // Not the expected shape, not required: echoed untouched, no id.
        let adv = r#"{"payment-identifier":{"info":"yes"}}"#;
        assert_eq!(
            id_request(Some(&raw(adv))),
            IdRequest::Unusable { required: false }
        );
        let out = echo(Some(&raw(adv)), Some(&payment_id(&[3; 16])))
            .unwrap()
            .unwrap();
        assert_eq!(out.get(), adv);
        // Required, but no `info` object to put the id in: refused, nothing to sign.
        let adv = r#"{"payment-identifier":{"required":true}}"#;
        assert_eq!(
            id_request(Some(&raw(adv))),
            IdRequest::Unusable { required: true }
        );
        assert_eq!(
            echo(Some(&raw(adv)), Some(&payment_id(&[3; 16]))).unwrap_err(),
            EchoError::RequiredIdUnusable
        );
        let adv = r#"{"payment-identifier":{"info":{"required":"true"}}}"#;
        assert_eq!(
            id_request(Some(&raw(adv))),
            IdRequest::Unusable { required: false }
        );
        assert_eq!(id_request(Some(&raw(r#"{"a":{}}"#))), IdRequest::None);
        assert_eq!(
            id_request(Some(&raw(ADVERTISED))),
            IdRequest::Accepted { required: true }
        );
    }

    #[test]
    fn ids_are_valid_stable_per_call_and_unique_across_calls() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000u32 {
            let mut r = [0u8; 16];
            getrandom::fill(&mut r).unwrap();
            r[..4].copy_from_slice(&i.to_le_bytes());
            let id = payment_id(&r);
            assert!(valid_id(&id), "{id}");
            assert!(seen.insert(id.clone()), "duplicate {id}");
            // Stable: the same call's id echoes to the same bytes every time.
            let a = echo(Some(&raw(ADVERTISED)), Some(&id)).unwrap().unwrap();
            let b = echo(Some(&raw(ADVERTISED)), Some(&id)).unwrap().unwrap();
            assert_eq!(a.get(), b.get());
        }
        assert!(!valid_id("short"));
        assert!(!valid_id(&"a".repeat(129)));
        assert!(valid_id(&"a".repeat(128)));
        assert!(!valid_id("abcdefghijklmnop!"));
        assert_eq!(
            echo(Some(&raw(ADVERTISED)), Some("bad id with spaces")).unwrap_err(),
            EchoError::BadId("bad id with spaces".into())
        );
    }
}
