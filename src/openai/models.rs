//! Models and price tiers. The upstream serves each model on one of three tiers
//! (`/v1/chat/completions`, `/v1/pro/…`, `/v1/premium/…`); x402d learns which
//! from the upstream's `GET /v1/models`, lets `[tiers]` in the config override
//! it, routes plain `/v1/chat/completions` calls to the right tier, and answers
//! `GET /v1/models` with one OpenAI-shaped list.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Budget,
    Pro,
    Premium,
}

impl Tier {
    pub fn path(self) -> &'static str {
        match self {
            Tier::Budget => "/v1/chat/completions",
            Tier::Pro => "/v1/pro/chat/completions",
            Tier::Premium => "/v1/premium/chat/completions",
        }
    }

    pub fn from_path(path: &str) -> Option<Tier> {
        [Tier::Budget, Tier::Pro, Tier::Premium]
            .into_iter()
            .find(|t| t.path() == path)
    }

    fn parse(s: &str) -> Option<Tier> {
        match s.to_ascii_lowercase().as_str() {
            "budget" | "basic" | "default" | "standard" => Some(Tier::Budget),
            "pro" => Some(Tier::Pro),
            "premium" => Some(Tier::Premium),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Budget => "budget",
            Tier::Pro => "pro",
            Tier::Premium => "premium",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub id: String,
    pub tier: Tier,
    pub created: i64,
    pub owned_by: String,
}

/// Reads the upstream's model list. Accepts an OpenAI list whose entries carry
/// `tier` (or `tiers`), or a `tiers` object mapping tier names to model ids.
pub fn parse_catalog(body: &[u8]) -> Result<Vec<Model>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "model list is not JSON")?;
    let mut out: Vec<Model> = Vec::new();
    let owner = |id: &str| {
        id.split_once('/')
            .map(|(o, _)| o.to_string())
            .unwrap_or_else(|| "x402d".into())
    };
    let tiers_obj = v.get("tiers").and_then(Value::as_object).or_else(|| {
        v.as_object()
            .filter(|o| o.keys().any(|k| Tier::parse(k).is_some()) && !o.contains_key("data"))
    });
    if let Some(t) = tiers_obj {
        for (name, ids) in t {
            let Some(tier) = Tier::parse(name) else {
                continue;
            };
            for id in ids.as_array().into_iter().flatten() {
                let id = id.as_str().or_else(|| id.get("id").and_then(Value::as_str));
                if let Some(id) = id {
                    out.push(Model {
                        id: id.into(),
                        tier,
                        created: 0,
                        owned_by: owner(id),
                    });
                }
            }
        }
    }
    if let Some(data) = v.get("data").and_then(Value::as_array) {
        for m in data {
            let Some(id) = m.get("id").and_then(Value::as_str) else {
                continue;
            };
            let tier = m
                .get("tier")
                .and_then(Value::as_str)
                .and_then(Tier::parse)
                .or_else(|| {
                    m.get("tiers").and_then(Value::as_array).and_then(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .filter_map(Tier::parse)
                            .min()
                    })
                })
                .unwrap_or(Tier::Budget);
            if out.iter().any(|o| o.id == id) {
                continue;
            }
            out.push(Model {
                id: id.into(),
                tier,
                created: m.get("created").and_then(Value::as_i64).unwrap_or(0),
                owned_by: m
                    .get("owned_by")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| owner(id)),
            });
        }
    }
    if out.is_empty() {
        return Err("model list names no models".into());
    }
    Ok(out)
}

fn bare(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// The tier a model is served on: `[tiers]` overrides, then the catalog
/// (exact id, then `vendor/model` ≡ `model`), else the budget tier.
pub fn tier_of(model: &str, overrides: &BTreeMap<String, Tier>, catalog: &[Model]) -> Tier {
    if let Some(t) = overrides.get(model) {
        return *t;
    }
    if let Some((_, t)) = overrides.iter().find(|(k, _)| bare(k) == bare(model)) {
        return *t;
    }
    if let Some(m) = catalog.iter().find(|m| m.id == model) {
        return m.tier;
    }
    catalog
        .iter()
        .find(|m| bare(&m.id) == bare(model))
        .map(|m| m.tier)
        .unwrap_or(Tier::Budget)
}

/// The OpenAI-shaped list of models an app may use, with the tier visible.
pub fn list(catalog: &[Model], allowed: impl Fn(&Model) -> bool) -> Value {
    let data: Vec<Value> = catalog
        .iter()
        .filter(|m| allowed(m))
        .map(|m| {
            json!({"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by,
                   "tier": m.tier.as_str()})
        })
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_shapes() {
        let a = parse_catalog(br#"{"object":"list","data":[{"id":"openai/gpt-4o-mini","tier":"budget"},{"id":"anthropic/claude-opus-4","tier":"premium","created":5,"owned_by":"anthropic"},{"id":"x"}]}"#).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[1].tier, Tier::Premium);
        assert_eq!(a[2].tier, Tier::Budget);
        let b = parse_catalog(
            br#"{"tiers":{"budget":["gpt-4o-mini"],"pro":["gpt-4o"],"premium":[{"id":"o3"}]}}"#,
        )
        .unwrap();
        assert_eq!(tier_of("o3", &BTreeMap::new(), &b), Tier::Premium);
        let c = parse_catalog(br#"{"budget":["a"],"pro":["b"]}"#).unwrap();
        assert_eq!(c.len(), 2);
        assert!(parse_catalog(b"[]").is_err());
        assert!(parse_catalog(b"nope").is_err());
    }

    #[test]
    fn tier_lookup_forms_and_overrides() {
        let cat = parse_catalog(
            br#"{"data":[{"id":"openai/gpt-4o","tier":"pro"},{"id":"o3","tier":"premium"}]}"#,
        )
        .unwrap();
        let none = BTreeMap::new();
        assert_eq!(tier_of("openai/gpt-4o", &none, &cat), Tier::Pro);
        assert_eq!(tier_of("gpt-4o", &none, &cat), Tier::Pro);
        assert_eq!(tier_of("openai/o3", &none, &cat), Tier::Premium);
        assert_eq!(tier_of("unknown", &none, &cat), Tier::Budget);
        let mut o = BTreeMap::new();
        o.insert("gpt-4o".to_string(), Tier::Budget);
        assert_eq!(tier_of("openai/gpt-4o", &o, &cat), Tier::Budget);
        assert_eq!(Tier::from_path("/v1/pro/chat/completions"), Some(Tier::Pro));
        let l = list(&cat, |m| m.tier != Tier::Premium);
        assert_eq!(l["data"].as_array().unwrap().len(), 1);
        assert_eq!(l["data"][0]["tier"], "pro");
        assert_eq!(l["object"], "list");
    }
}
