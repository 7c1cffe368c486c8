//! Messages request → chat completion request.
//!
//! What is carried: `system` (string or text blocks), `messages` (text, image
//! as base64 or URL, `tool_use`, `tool_result` with string or block content and
//! `is_error`, mid-conversation `system` turns), `tools` (`input_schema` →
//! `parameters`), `tool_choice`, `max_tokens`, `stop_sequences`, `temperature`,
//! `top_p`, `metadata.user_id` → `user`, `output_config.format` →
//! `response_format`. What is dropped on purpose: `thinking` and
//! `redacted_thinking` blocks (the upstream cannot verify Anthropic's
//! signatures), server tools (`web_search_*`, …) and their result blocks,
//! deferred tools (`defer_loading`), `cache_control`, and every unknown field.
//! What is refused with a clear error: `document` and other blocks that have no
//! chat-completion form.

use crate::error::ProxyError;
use serde_json::{Map, Value, json};

/// A translated request.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The model id the client asked for (answers echo it).
    pub model: String,
    pub stream: bool,
    /// The chat completion request, `model` still the client's id, `stream: false`.
    pub body: Map<String, Value>,
}

/// A request x402d cannot carry; `param` is the top-level field the message's path starts with.
fn bad(msg: impl Into<String>) -> ProxyError {
    let message = msg.into();
    let param = ["messages", "system", "tools", "tool_choice", "model"]
        .into_iter()
        .find(|p| {
            message
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with(['.', ':']))
        })
        .unwrap_or("body");
    ProxyError::InvalidRequest {
        param,
        code: "invalid_request",
        message,
    }
}

/// System text blocks that carry client bookkeeping, not instructions.
fn is_bookkeeping(text: &str) -> bool {
    text.starts_with("x-anthropic-billing-header:")
}

pub fn translate(body: &[u8]) -> Result<Translated, ProxyError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ProxyError::InvalidJson(e.to_string()))?;
    let req = v
        .as_object()
        .ok_or_else(|| bad("The request body must be a JSON object."))?;
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("model: field required"))?
        .to_string();
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);

    let mut messages = Vec::new();
    if let Some(system) = req.get("system") {
        let text = system_text(system, "system")?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let input = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages: field required (an array)"))?;
    for (i, m) in input.iter().enumerate() {
        message(m, i, &mut messages)?;
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("stream".into(), json!(false));
    if let Some(n) = req.get("max_tokens").filter(|n| n.is_u64()) {
        out.insert("max_tokens".into(), n.clone());
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "top_p")] {
        if let Some(x) = req.get(from).filter(|x| x.is_number()) {
            out.insert(to.into(), x.clone());
        }
    }
    if let Some(stops) = req.get("stop_sequences").and_then(Value::as_array)
        && !stops.is_empty()
    {
        out.insert("stop".into(), Value::Array(stops.clone()));
    }
    if let Some(user) = req
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), json!(user));
    }
    let tools = tools(req.get("tools"))?;
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = req.get("tool_choice") {
        let (choice, parallel) = tool_choice(tc)?;
        // Without tools a chat upstream refuses `tool_choice`; "none" then means nothing anyway.
        if has_tools {
            out.insert("tool_choice".into(), choice);
            if parallel == Some(false) {
                out.insert("parallel_tool_calls".into(), json!(false));
            }
        }
    }
    if let Some(format) = req.get("output_config").and_then(|o| o.get("format"))
        && format.get("type").and_then(Value::as_str) == Some("json_schema")
    {
        out.insert(
            "response_format".into(),
            json!({"type": "json_schema", "json_schema": {
                "name": "output", "strict": true,
                "schema": format.get("schema").cloned().unwrap_or(json!({}))
            }}),
        );
    }
    Ok(Translated {
        model,
        stream,
        body: out,
    })
}

/// `system` as a string or text blocks, joined.
fn system_text(v: &Value, at: &str) -> Result<String, ProxyError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                        if !is_bookkeeping(t) {
                            parts.push(t);
                        }
                    }
                    other => {
                        return Err(bad(format!(
                            "{at}.{i}: only text blocks are supported in system content, not {:?}",
                            other.unwrap_or("?")
                        )));
                    }
                }
            }
            Ok(parts.join("\n\n"))
        }
        Value::Null => Ok(String::new()),
        _ => Err(bad(format!(
            "{at}: must be a string or an array of text blocks"
        ))),
    }
}

/// Blocks with no chat-completion form that are safe to leave out: model
/// reasoning and server-side tool traffic (already acted on by the server that ran it).
fn droppable(kind: &str) -> bool {
    matches!(kind, "thinking" | "redacted_thinking" | "server_tool_use")
        || (kind.ends_with("_tool_result") && kind != "tool_result")
}

/// One Messages turn → one or more chat messages (tool results become `tool` messages).
fn message(m: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), ProxyError> {
    let at = format!("messages.{i}");
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{at}.role: field required")))?;
    let content = m.get("content").unwrap_or(&Value::Null);
    match role {
        "system" => {
            let text = system_text(content, &format!("{at}.content"))?;
            out.push(json!({"role": "system", "content": text}));
        }
        "user" => user(content, &at, out)?,
        "assistant" => out.push(assistant(content, &at)?),
        other => {
            return Err(bad(format!(
                "{at}.role: {other:?} is not one of \"user\", \"assistant\""
            )));
        }
    }
    Ok(())
}

fn user(content: &Value, at: &str, out: &mut Vec<Value>) -> Result<(), ProxyError> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(b) => b,
        _ => return Err(bad(format!("{at}.content: must be a string or an array"))),
    };
    // Chat completions want each tool answer right after the assistant turn that
    // asked, so tool results go first, then whatever else the user said.
    let mut parts: Vec<Value> = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("{at}.content.{j}");
        let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "text" => parts.push(text_part(b)),
            "image" => parts.push(image_part(b, &at)?),
            "tool_result" => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{at}.tool_use_id: field required")))?;
                let (text, images) = tool_result_content(b.get("content"), &at)?;
                let text = if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                    format!("Error: {text}")
                } else {
                    text
                };
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
                // A tool message carries text only; its images follow as user content.
                parts.extend(images);
            }
            k if droppable(k) => {}
            "document" => {
                return Err(bad(format!(
                    "{at}: document blocks (PDF or text files) are not supported: x402d's upstream takes chat completions, which have no document input. Send the document's text as a text block instead."
                )));
            }
            other => {
                return Err(bad(format!(
                    "{at}: content blocks of type {other:?} are not supported (supported: text, image, tool_use, tool_result, thinking)."
                )));
            }
        }
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": collapse(parts)}));
    }
    Ok(())
}

fn text_part(b: &Value) -> Value {
    json!({"type": "text", "text": b.get("text").and_then(Value::as_str).unwrap_or("")})
}

/// All-text content becomes one string: every chat upstream takes that.
fn collapse(parts: Vec<Value>) -> Value {
    if parts.iter().all(|p| p["type"] == "text") {
        let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        return json!(texts.join("\n"));
    }
    Value::Array(parts)
}

fn image_part(b: &Value, at: &str) -> Result<Value, ProxyError> {
    let src = b
        .get("source")
        .ok_or_else(|| bad(format!("{at}.source: field required")))?;
    let url = match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = src
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{at}.source.media_type: field required")))?;
            let data = src
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{at}.source.data: field required")))?;
            format!("data:{media};base64,{data}")
        }
        Some("url") => src
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{at}.source.url: field required")))?
            .to_string(),
        other => {
            return Err(bad(format!(
                "{at}.source.type: {:?} is not supported (base64 or url)",
                other.unwrap_or("?")
            )));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A tool result's text, and its images as user content parts.
fn tool_result_content(c: Option<&Value>, at: &str) -> Result<(String, Vec<Value>), ProxyError> {
    match c {
        None | Some(Value::Null) => Ok((String::new(), vec![])),
        Some(Value::String(s)) => Ok((s.clone(), vec![])),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            let mut images = Vec::new();
            for (k, b) in blocks.iter().enumerate() {
                let at = format!("{at}.content.{k}");
                match b.get("type").and_then(Value::as_str).unwrap_or("") {
                    "text" => texts.push(b.get("text").and_then(Value::as_str).unwrap_or("")),
                    "image" => images.push(image_part(b, &at)?),
                    "document" => {
                        return Err(bad(format!(
                            "{at}: document blocks are not supported in tool results; return the text instead."
                        )));
                    }
                    // e.g. `tool_reference`, `search_result`: nothing a chat model can read.
                    _ => {}
                }
            }
            Ok((texts.join("\n"), images))
        }
        Some(_) => Err(bad(format!(
            "{at}.content: must be a string or an array of blocks"
        ))),
    }
}

fn assistant(content: &Value, at: &str) -> Result<Value, ProxyError> {
    let blocks = match content {
        Value::String(s) => return Ok(json!({"role": "assistant", "content": s})),
        Value::Array(b) => b,
        _ => return Err(bad(format!("{at}.content: must be a string or an array"))),
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("{at}.content.{j}");
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            "tool_use" => {
                let id = b
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{at}.id: field required")))?;
                let name = b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{at}.name: field required")))?;
                let input = b.get("input").cloned().unwrap_or(json!({}));
                calls.push(json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": input.to_string()}}));
            }
            k if droppable(k) => {}
            other => {
                return Err(bad(format!(
                    "{at}: assistant content blocks of type {other:?} are not supported (text, tool_use, thinking)."
                )));
            }
        }
    }
    let mut m = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    Ok(m)
}

/// Client tools → chat `function` tools. Server tools (a `type` other than
/// `custom`, e.g. `web_search_20250305`) run on Anthropic's side and have no
/// meaning upstream; deferred tools are not shown to the model until a tool
/// search loads them, which only Anthropic's server does.
fn tools(v: Option<&Value>) -> Result<Vec<Value>, ProxyError> {
    let Some(list) = v.and_then(Value::as_array) else {
        return Ok(vec![]);
    };
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let kind = t.get("type").and_then(Value::as_str).unwrap_or("custom");
        if kind != "custom" || t.get("defer_loading").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("tools.{i}.name: field required")))?;
        let mut f = Map::new();
        f.insert("name".into(), json!(name));
        if let Some(d) = t.get("description").and_then(Value::as_str) {
            f.insert("description".into(), json!(d));
        }
        f.insert(
            "parameters".into(),
            t.get("input_schema")
                .cloned()
                .unwrap_or(json!({"type": "object", "properties": {}})),
        );
        if let Some(s) = t.get("strict").filter(|s| s.is_boolean()) {
            f.insert("strict".into(), s.clone());
        }
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(out)
}

/// `tool_choice` → chat `tool_choice`, plus `parallel_tool_calls` when the
/// client disabled parallel use.
fn tool_choice(v: &Value) -> Result<(Value, Option<bool>), ProxyError> {
    let parallel = v
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|d| !d);
    let choice = match v.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.name: field required"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        other => {
            return Err(bad(format!(
                "tool_choice.type: {:?} is not one of auto, any, tool, none",
                other.unwrap_or("?")
            )));
        }
    };
    Ok((choice, parallel))
}

/// A rough token count of what the request would send (about 4 bytes a token),
/// for `count_tokens`: never paid, never exact.
pub fn estimate_tokens(t: &Translated) -> u64 {
    let mut n = 0usize;
    for k in ["messages", "tools"] {
        if let Some(v) = t.body.get(k) {
            n += v.to_string().len();
        }
    }
    (n as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(v: Value) -> Translated {
        translate(v.to_string().as_bytes()).unwrap()
    }

    fn err(v: Value) -> String {
        match translate(v.to_string().as_bytes()) {
            Err(ProxyError::InvalidRequest { message, .. }) => message,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn minimal_string_content() {
        let t = tr(json!({"model": "claude-haiku-4-5", "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(t.model, "claude-haiku-4-5");
        assert!(!t.stream);
        assert_eq!(
            Value::Object(t.body),
            json!({"model": "claude-haiku-4-5", "stream": false, "max_tokens": 100,
                "messages": [{"role": "user", "content": "hi"}]})
        );
    }

    #[test]
    fn system_string_and_blocks() {
        let t = tr(json!({"model": "m", "system": "be brief", "messages": []}));
        assert_eq!(
            t.body["messages"],
            json!([{"role": "system", "content": "be brief"}])
        );
        let t = tr(json!({"model": "m", "messages": [], "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"},
            {"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "two"}]}));
        assert_eq!(
            t.body["messages"],
            json!([{"role": "system", "content": "one\n\ntwo"}])
        );
        assert!(
            err(json!({"model": "m", "messages": [], "system": [{"type": "image"}]}))
                .contains("system.0")
        );
        assert!(err(json!({"model": "m", "messages": [], "system": 5})).contains("system"));
    }

    #[test]
    fn user_blocks_text_and_images() {
        let t = tr(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}}]}]}),
        );
        assert_eq!(
            t.body["messages"],
            json!([{"role": "user", "content": "a\nb"}])
        );
        let t = tr(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
            {"type": "image", "source": {"type": "url", "url": "https://e.x/a.jpg"}}]}]}),
        );
        assert_eq!(
            t.body["messages"][0]["content"],
            json!([
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "image_url", "image_url": {"url": "https://e.x/a.jpg"}}
            ])
        );
        assert!(
            err(
                json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]})
            )
            .contains("messages.0.content.0.source.type")
        );
    }

    #[test]
    fn tool_round_trip() {
        let t = tr(json!({"model": "m", "max_tokens": 10,
            "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}},
                      {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
                      {"type": "custom", "name": "Later", "input_schema": {"type": "object"}, "defer_loading": true}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "list files"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Running ls."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {"command": "pwd"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt\nb.txt"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                     "content": [{"type": "text", "text": "denied"}, {"type": "image", "source": {"type": "url", "url": "https://e.x/s.png"}}]},
                    {"type": "text", "text": "and now?"}]}]}));
        assert_eq!(
            t.body["tools"],
            json!([{"type": "function", "function": {"name": "Bash", "description": "run",
                "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}])
        );
        assert_eq!(t.body["tool_choice"], "auto");
        assert_eq!(t.body["parallel_tool_calls"], false);
        assert_eq!(
            t.body["messages"],
            json!([
                {"role": "user", "content": "list files"},
                {"role": "assistant", "content": "Running ls.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"pwd\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "a.txt\nb.txt"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: denied"},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "https://e.x/s.png"}},
                    {"type": "text", "text": "and now?"}]}
            ])
        );
    }

    #[test]
    fn assistant_only_tool_use_has_null_content() {
        let t = tr(
            json!({"model": "m", "messages": [{"role": "assistant", "content": [
            {"type": "redacted_thinking", "data": "x"},
            {"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]}),
        );
        assert!(t.body["messages"][0]["content"].is_null());
        assert_eq!(
            t.body["messages"][1],
            json!({"role": "tool", "tool_call_id": "t", "content": ""})
        );
        assert_eq!(t.body["messages"].as_array().unwrap().len(), 2);
        let t = tr(json!({"model": "m", "messages": [{"role": "assistant", "content": "plain"}]}));
        assert_eq!(
            t.body["messages"][0],
            json!({"role": "assistant", "content": "plain"})
        );
    }

    #[test]
    fn tool_choice_forms() {
        let with = |tc: Value| {
            tr(json!({"model": "m", "messages": [], "tool_choice": tc,
                "tools": [{"name": "f", "input_schema": {"type": "object"}}]}))
            .body
        };
        assert_eq!(with(json!({"type": "any"}))["tool_choice"], "required");
        assert_eq!(with(json!({"type": "none"}))["tool_choice"], "none");
        assert_eq!(
            with(json!({"type": "tool", "name": "f"}))["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert!(
            with(json!({"type": "auto"}))
                .get("parallel_tool_calls")
                .is_none()
        );
        assert!(
            err(json!({"model": "m", "messages": [], "tool_choice": {"type": "tool"}}))
                .contains("tool_choice.name")
        );
        assert!(
            err(json!({"model": "m", "messages": [], "tool_choice": {"type": "x"}}))
                .contains("tool_choice.type")
        );
        // No tools left (only server tools): no tool_choice upstream.
        let t = tr(
            json!({"model": "m", "messages": [], "tool_choice": {"type": "auto"},
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
        );
        assert!(t.body.get("tools").is_none() && t.body.get("tool_choice").is_none());
    }

    #[test]
    fn sampling_and_metadata() {
        let t = tr(json!({"model": "m", "messages": [], "max_tokens": 128000,
            "temperature": 0.2, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"}, "stream": true, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "context_management": {}, "service_tier": "auto",
            "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}}}));
        assert!(t.stream);
        let b = Value::Object(t.body);
        assert_eq!(b["max_tokens"], 128000);
        assert_eq!(b["temperature"], 0.2);
        assert_eq!(b["top_p"], 0.9);
        assert_eq!(b["stop"], json!(["END"]));
        assert_eq!(b["user"], "u-1");
        assert_eq!(b["stream"], false);
        assert_eq!(
            b["response_format"]["json_schema"]["schema"],
            json!({"type": "object"})
        );
        for gone in [
            "top_k",
            "thinking",
            "context_management",
            "service_tier",
            "metadata",
        ] {
            assert!(b.get(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn mid_conversation_system_turn() {
        let t = tr(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "reminder", "cache_control": {"type": "ephemeral"}}]}]}));
        assert_eq!(
            t.body["messages"][1],
            json!({"role": "system", "content": "reminder"})
        );
    }

    #[test]
    fn refusals_are_clear() {
        let m = err(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}]}]}),
        );
        assert!(
            m.contains("messages.0.content.0") && m.contains("document"),
            "{m}"
        );
        let e = translate(json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "document"}]}]}).to_string().as_bytes()).unwrap_err();
        assert_eq!(e.param(), Some("messages"));
        assert_eq!(e.code(), "invalid_request");
        assert_eq!(bad("tool_choice.name: x").param(), Some("tool_choice"));
        assert_eq!(
            bad("The request body must be a JSON object.").param(),
            Some("body")
        );
        assert!(err(json!({"messages": []})).contains("model"));
        assert!(err(json!({"model": "m"})).contains("messages"));
        assert!(
            err(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}))
                .contains("role")
        );
        assert!(err(json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]})).contains("video"));
        assert!(err(json!([1])).contains("object"));
        assert!(matches!(
            translate(b"{nope"),
            Err(ProxyError::InvalidJson(_))
        ));
    }

    #[test]
    fn server_tool_history_is_dropped() {
        let t = tr(json!({"model": "m", "messages": [
            {"role": "assistant", "content": [
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                {"type": "text", "text": "found"}]}]}));
        assert_eq!(
            t.body["messages"],
            json!([{"role": "assistant", "content": "found"}])
        );
    }

    /// The first request Claude Code 2.1.328 sends (tests/fixtures/claude-code-2.1.328-first-request.json).
    #[test]
    fn claude_code_first_request() {
        let cap: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/claude-code-2.1.328-first-request.json"
        ))
        .unwrap();
        let t = translate(cap["body"].to_string().as_bytes()).unwrap();
        assert_eq!(t.model, "claude-opus-5-5");
        assert!(t.stream);
        let b = &t.body;
        assert_eq!(b["max_tokens"], 128000);
        assert_eq!(b["stream"], false);
        let msgs = b["messages"].as_array().unwrap();
        // system blocks (minus the billing header), the user turn, the mid-conversation system turn.
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0]["role"], "system");
        let sys = msgs[0]["content"].as_str().unwrap();
        assert!(sys.starts_with("You are a Claude agent"));
        assert!(!sys.contains("x-anthropic-billing-header"));
        assert_eq!(msgs[1]["role"], "user");
        assert!(msgs[1]["content"].as_str().unwrap().ends_with("\nsay hi"));
        assert_eq!(msgs[2]["role"], "system");
        // 12 tools offered, the deferred placeholder left out; schemas carried as they are.
        let tools = b["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 11);
        assert!(tools.iter().all(|t| t["type"] == "function"));
        let names: Vec<&str> = tools
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"Bash") && !names.contains(&"DeferredToolPlaceholder"));
        let bash = cap["body"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "Bash")
            .unwrap();
        let out = tools
            .iter()
            .find(|t| t["function"]["name"] == "Bash")
            .unwrap();
        assert_eq!(out["function"]["parameters"], bash["input_schema"]);
        assert!(b["user"].as_str().unwrap().contains("device_id"));
        for gone in [
            "thinking",
            "context_management",
            "output_config",
            "metadata",
        ] {
            assert!(b.get(gone).is_none(), "{gone}");
        }
        assert!(estimate_tokens(&t) > 1000);
    }
}
