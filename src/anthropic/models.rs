//! Which upstream model serves an Anthropic model id.
//!
//! Claude Code and the SDKs name models the Anthropic way
//! (`claude-haiku-4-5-20251001`, `claude-sonnet-4-5`, `claude-opus-5-5`); the
//! upstream lists them its own way (`anthropic/claude-haiku-4.5`). The rule, in
//! order:
//! 1. `[models]` in the config: an exact key, else the first glob key (`claude-opus-*`) that matches.
//! 2. An id the upstream lists, or any id while the list is unknown: as it is.
//! 3. The same model up to spelling: vendor prefix, case, `.` vs `-` in the
//!    version and a date (`-20251001`) or `-latest` suffix do not count
//!    (`claude-3-5-haiku-20241022` → `anthropic/claude-3.5-haiku`); an
//!    `anthropic/` id wins over other vendors' copies.
//! 4. Any other `claude-…` id maps to nothing: an error listing close matches.
//!    Other ids (`gpt-4o-mini`) go upstream as they are, like on the chat route.

use crate::config::glob_match;
use crate::openai::models::Model;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The upstream id to send.
    Model(String),
    /// Maps to nothing; the closest listed ids.
    Unknown(Vec<String>),
}

/// `anthropic/Claude-Haiku-4.5` and `claude-haiku-4-5-20251001` both become `claude-haiku-4-5`.
pub fn normalize(id: &str) -> String {
    let bare = id.rsplit('/').next().unwrap_or(id).to_ascii_lowercase();
    let mut s = bare.replace(['.', '_'], "-");
    if let Some(at) = s.rfind(['@', '-'])
        && s.len() - at == 9
        && s[at + 1..].bytes().all(|b| b.is_ascii_digit())
    {
        s.truncate(at);
    }
    if let Some(stripped) = s.strip_suffix("-latest") {
        s = stripped.to_string();
    }
    s
}

pub fn resolve(requested: &str, aliases: &BTreeMap<String, String>, catalog: &[Model]) -> Resolved {
    if let Some(to) = aliases.get(requested) {
        return Resolved::Model(to.clone());
    }
    if let Some((_, to)) = aliases
        .iter()
        .find(|(k, _)| k.contains('*') && glob_match(k, requested))
    {
        return Resolved::Model(to.clone());
    }
    if catalog.is_empty() || catalog.iter().any(|m| m.id == requested) {
        return Resolved::Model(requested.to_string());
    }
    let want = normalize(requested);
    let mut same: Vec<&str> = catalog
        .iter()
        .filter(|m| normalize(&m.id) == want)
        .map(|m| m.id.as_str())
        .collect();
    same.sort_by_key(|id| (!id.starts_with("anthropic/"), id.len(), *id));
    if let Some(id) = same.first() {
        return Resolved::Model(id.to_string());
    }
    if want.starts_with("claude") {
        return Resolved::Unknown(close(&want, catalog));
    }
    Resolved::Model(requested.to_string())
}

/// Up to five listed Claude models, same family (opus/sonnet/haiku) first, then by shared prefix.
fn close(want: &str, catalog: &[Model]) -> Vec<String> {
    let family = ["opus", "sonnet", "haiku"]
        .into_iter()
        .find(|f| want.contains(f));
    let mut scored: Vec<(bool, usize, &str)> = catalog
        .iter()
        .filter(|m| normalize(&m.id).contains("claude"))
        .map(|m| {
            let n = normalize(&m.id);
            let prefix = n
                .bytes()
                .zip(want.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            (family.is_some_and(|f| n.contains(f)), prefix, m.id.as_str())
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
    scored
        .into_iter()
        .take(5)
        .map(|(_, _, id)| id.to_string())
        .collect()
}

/// The sentence appended to an unknown-model error.
pub fn close_text(close: &[String]) -> String {
    if close.is_empty() {
        " The upstream lists no Claude model.".into()
    } else {
        format!(" Close matches: {}.", close.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::models::Tier;

    fn cat(ids: &[&str]) -> Vec<Model> {
        ids.iter()
            .map(|id| Model {
                id: id.to_string(),
                tier: Tier::Budget,
                created: 0,
                owned_by: String::new(),
            })
            .collect()
    }

    fn upstream() -> Vec<Model> {
        cat(&[
            "openai/gpt-4o-mini",
            "gpt-4o",
            "anthropic/claude-haiku-4.5",
            "anthropic/claude-sonnet-4.5",
            "anthropic/claude-sonnet-4",
            "anthropic/claude-opus-4.1",
            "anthropic/claude-3.5-haiku",
            "bedrock/claude-sonnet-4.5",
        ])
    }

    fn m(s: &str) -> Resolved {
        Resolved::Model(s.into())
    }

    #[test]
    fn normalize_forms() {
        assert_eq!(normalize("claude-haiku-4-5-20251001"), "claude-haiku-4-5");
        assert_eq!(normalize("anthropic/claude-haiku-4.5"), "claude-haiku-4-5");
        assert_eq!(normalize("claude-3-7-sonnet-latest"), "claude-3-7-sonnet");
        assert_eq!(normalize("claude-sonnet-4@20250514"), "claude-sonnet-4");
        assert_eq!(normalize("Claude-Opus-4"), "claude-opus-4");
        // Not a date: kept.
        assert_eq!(normalize("claude-x-1234567"), "claude-x-1234567");
    }

    #[test]
    fn anthropic_ids_map_to_the_catalog() {
        let c = upstream();
        let none = BTreeMap::new();
        assert_eq!(
            resolve("claude-haiku-4-5-20251001", &none, &c),
            m("anthropic/claude-haiku-4.5")
        );
        assert_eq!(
            resolve("claude-haiku-4-5", &none, &c),
            m("anthropic/claude-haiku-4.5")
        );
        // anthropic/ wins over another vendor's copy.
        assert_eq!(
            resolve("claude-sonnet-4-5", &none, &c),
            m("anthropic/claude-sonnet-4.5")
        );
        assert_eq!(
            resolve("claude-sonnet-4-20250514", &none, &c),
            m("anthropic/claude-sonnet-4")
        );
        assert_eq!(
            resolve("claude-opus-4-1-20250805", &none, &c),
            m("anthropic/claude-opus-4.1")
        );
        assert_eq!(
            resolve("claude-3-5-haiku-latest", &none, &c),
            m("anthropic/claude-3.5-haiku")
        );
    }

    #[test]
    fn upstream_ids_pass_as_they_are() {
        let c = upstream();
        let none = BTreeMap::new();
        assert_eq!(
            resolve("anthropic/claude-sonnet-4.5", &none, &c),
            m("anthropic/claude-sonnet-4.5")
        );
        assert_eq!(
            resolve("bedrock/claude-sonnet-4.5", &none, &c),
            m("bedrock/claude-sonnet-4.5")
        );
        assert_eq!(resolve("gpt-4o", &none, &c), m("gpt-4o"));
        assert_eq!(resolve("gpt-4o-mini", &none, &c), m("openai/gpt-4o-mini"));
        // Not listed and not a Claude id: the upstream decides, as on the chat route.
        assert_eq!(resolve("mistral-large", &none, &c), m("mistral-large"));
        // No catalog yet: nothing to map against.
        assert_eq!(resolve("claude-opus-5-5", &none, &[]), m("claude-opus-5-5"));
    }

    #[test]
    fn aliases_first() {
        let c = upstream();
        let mut a = BTreeMap::new();
        a.insert(
            "claude-opus-5-5".to_string(),
            "anthropic/claude-opus-4.1".to_string(),
        );
        a.insert(
            "claude-haiku-*".to_string(),
            "openai/gpt-4o-mini".to_string(),
        );
        a.insert(
            "claude-sonnet-4-5".to_string(),
            "bedrock/claude-sonnet-4.5".to_string(),
        );
        assert_eq!(
            resolve("claude-opus-5-5", &a, &c),
            m("anthropic/claude-opus-4.1")
        );
        assert_eq!(
            resolve("claude-haiku-4-5-20251001", &a, &c),
            m("openai/gpt-4o-mini")
        );
        assert_eq!(
            resolve("claude-sonnet-4-5", &a, &c),
            m("bedrock/claude-sonnet-4.5")
        );
    }

    #[test]
    fn unknown_claude_ids_list_close_matches() {
        let c = upstream();
        let none = BTreeMap::new();
        let Resolved::Unknown(close) = resolve("claude-opus-5-5", &none, &c) else {
            panic!()
        };
        assert_eq!(close[0], "anthropic/claude-opus-4.1");
        assert!(close.len() <= 5 && close.iter().all(|id| id.contains("claude")));
        let Resolved::Unknown(close) = resolve("claude-sonnet-9", &none, &c) else {
            panic!()
        };
        assert!(
            close[..3].iter().all(|id| id.contains("sonnet")),
            "{close:?}"
        );
        let Resolved::Unknown(close) = resolve("claude-opus-5-5", &none, &cat(&["gpt-4o"])) else {
            panic!()
        };
        assert!(close.is_empty());
        assert_eq!(close_text(&close), " The upstream lists no Claude model.");
        assert_eq!(
            close_text(&["a".into(), "b".into()]),
            " Close matches: a, b."
        );
    }
}
