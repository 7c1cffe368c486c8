//! Responses request → chat completion request.
//!
//! Rules (what agents send, and what the upstream can take):
//! - `instructions` → a leading system message; `input` as a string → one user message.
//! - `message` items: `developer`/`system` → system, `user`, `assistant`; parts `input_text`,
//!   `output_text`, `input_image` (URL or data URL), `input_file`, `refusal`.
//! - `function_call` / `custom_tool_call` items become `tool_calls` of one assistant turn
//!   (consecutive calls, and the assistant text right before them, are one turn: that is how
//!   the model produced them), and each turn is followed by the outputs of its calls, paired
//!   by `call_id` wherever they sit in `input`. A call without an output, or an output
//!   without a call, is refused before anything is paid (the upstream would refuse it after).
//! - `reasoning` items are dropped (the upstream keeps no reasoning state); so are item
//!   types the upstream has no equivalent for (`web_search_call`, …).
//! - Tools: `function` as is; `custom` (freeform, e.g. Codex's `apply_patch`) as a function
//!   with one string parameter `input`; functions inside a `namespace` tool flat as
//!   `<ns>__<name>`; hosted tools (`web_search`, `file_search`, …) are left out.
//! - `max_output_tokens` → `max_tokens`, `text.format` → `response_format`, `temperature`,
//!   `top_p`, `user`, `tool_choice`, `parallel_tool_calls` carried over; `metadata`,
//!   `reasoning`, `include`, `prompt_cache_key`, … are not forwarded; unknown fields are ignored.
//! - State x402d does not keep (`previous_response_id`, `conversation`, `store: true`,
//!   `item_reference`) is a 400.

use super::{CUSTOM_INPUT, Echo, ToolKind};
use crate::error::ProxyError;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// One translated request.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The chat completion request body for the upstream (never streaming).
    pub chat: Value,
    /// Whether the app asked for the event stream.
    pub stream: bool,
    pub model: Option<String>,
    pub echo: Echo,
}

fn refuse(param: &'static str, code: &'static str, message: impl Into<String>) -> ProxyError {
    ProxyError::InvalidRequest {
        param,
        code,
        message: message.into(),
    }
}

fn no_state(param: &'static str, what: &str) -> ProxyError {
    refuse(
        param,
        "unsupported_parameter",
        format!(
            "{what} is not supported: x402d keeps no conversation state. Send the whole conversation in `input` (with `store: false`)."
        ),
    )
}

/// Translates a `POST /v1/responses` body.
pub fn translate(body: &[u8]) -> Result<Translated, ProxyError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ProxyError::InvalidJson(e.to_string()))?;
    let req = v
        .as_object()
        .ok_or_else(|| ProxyError::InvalidJson("the request body is not a JSON object".into()))?;
    let present = |k: &str| req.get(k).is_some_and(|v| !v.is_null());
    if present("previous_response_id") {
        return Err(no_state("previous_response_id", "`previous_response_id`"));
    }
    if present("conversation") {
        return Err(no_state("conversation", "`conversation`"));
    }
    if req.get("store") == Some(&Value::Bool(true)) {
        return Err(no_state("store", "`store: true`"));
    }

    let mut tool_map = BTreeMap::new();
    let tools = translate_tools(req.get("tools"), &mut tool_map);

    let mut messages = Vec::new();
    match req.get("instructions") {
        Some(Value::String(s)) if !s.is_empty() => {
            messages.push(json!({"role": "system", "content": s}))
        }
        Some(Value::Array(items)) => messages.extend(translate_input(items)?),
        _ => {}
    }
    match req.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => messages.extend(translate_input(items)?),
        None | Some(Value::Null) => {}
        Some(_) => {
            return Err(refuse(
                "input",
                "invalid_type",
                "`input` must be a string or an array of input items.",
            ));
        }
    }

    let mut chat = Map::new();
    if let Some(m) = req.get("model") {
        chat.insert("model".into(), m.clone());
    }
    chat.insert("messages".into(), Value::Array(messages));
    chat.insert("stream".into(), Value::Bool(false));
    if !tools.is_empty() {
        chat.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = req.get("tool_choice").and_then(tool_choice) {
            chat.insert("tool_choice".into(), tc);
        }
        if let Some(p) = req.get("parallel_tool_calls").filter(|p| p.is_boolean()) {
            chat.insert("parallel_tool_calls".into(), p.clone());
        }
    }
    if let Some(n) = req.get("max_output_tokens").filter(|n| n.is_u64()) {
        chat.insert("max_tokens".into(), n.clone());
    }
    for k in ["temperature", "top_p"] {
        if let Some(x) = req.get(k).filter(|x| x.is_number()) {
            chat.insert(k.into(), x.clone());
        }
    }
    if let Some(u) = req.get("user").filter(|u| u.is_string()) {
        chat.insert("user".into(), u.clone());
    }
    if let Some(rf) = req
        .get("text")
        .and_then(|t| t.get("format"))
        .and_then(response_format)
    {
        chat.insert("response_format".into(), rf);
    }

    Ok(Translated {
        chat: Value::Object(chat),
        stream: req.get("stream") == Some(&Value::Bool(true)),
        model: req.get("model").and_then(Value::as_str).map(str::to_string),
        echo: Echo {
            fields: echo_fields(req),
            tools: tool_map,
        },
    })
}

/// The request fields a `response` object repeats, with the API's defaults.
fn echo_fields(req: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let get = |k: &str, default: Value| req.get(k).cloned().unwrap_or(default);
    out.insert("model".into(), get("model", Value::Null));
    out.insert(
        "instructions".into(),
        req.get("instructions")
            .filter(|i| i.is_string())
            .cloned()
            .unwrap_or(Value::Null),
    );
    out.insert("tools".into(), get("tools", json!([])));
    out.insert("tool_choice".into(), get("tool_choice", json!("auto")));
    out.insert(
        "parallel_tool_calls".into(),
        get("parallel_tool_calls", json!(true)),
    );
    out.insert("temperature".into(), get("temperature", Value::Null));
    out.insert("top_p".into(), get("top_p", Value::Null));
    out.insert(
        "max_output_tokens".into(),
        get("max_output_tokens", Value::Null),
    );
    out.insert(
        "text".into(),
        get("text", json!({"format": {"type": "text"}})),
    );
    out.insert("reasoning".into(), get("reasoning", Value::Null));
    out.insert("metadata".into(), get("metadata", json!({})));
    out.insert("user".into(), get("user", Value::Null));
    out.insert("truncation".into(), get("truncation", json!("disabled")));
    out.insert("store".into(), json!(false));
    out.insert("previous_response_id".into(), Value::Null);
    out
}

/// `text.format` → `response_format` (`text` needs none).
fn response_format(f: &Value) -> Option<Value> {
    match f.get("type").and_then(Value::as_str)? {
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => {
            let mut js = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(x) = f.get(k).filter(|x| !x.is_null()) {
                    js.insert(k.into(), x.clone());
                }
            }
            Some(json!({"type": "json_schema", "json_schema": js}))
        }
        _ => None,
    }
}

/// Chat function names are limited to `[a-zA-Z0-9_-]{1,64}`.
fn flat_name(namespace: &str, name: &str) -> String {
    format!("{namespace}__{name}")
}

/// `tools` → chat `tools`; fills `map` with the names that do not map back to a plain `function_call`.
fn translate_tools(tools: Option<&Value>, map: &mut BTreeMap<String, ToolKind>) -> Vec<Value> {
    let mut out = Vec::new();
    let Some(tools) = tools.and_then(Value::as_array) else {
        return out;
    };
    for t in tools {
        match t.get("type").and_then(Value::as_str) {
            Some("namespace") => {
                let ns = t.get("name").and_then(Value::as_str).unwrap_or_default();
                for inner in t
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let Some(name) = inner.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    let flat = flat_name(ns, name);
                    if let Some(f) = one_tool(inner, &flat) {
                        map.insert(
                            flat,
                            ToolKind::Namespaced {
                                namespace: ns.into(),
                                name: name.into(),
                            },
                        );
                        out.push(f);
                    }
                }
            }
            _ => {
                let Some(name) = t.get("name").and_then(Value::as_str) else {
                    continue;
                };
                if let Some(f) = one_tool(t, name) {
                    if t.get("type").and_then(Value::as_str) == Some("custom") {
                        map.insert(name.into(), ToolKind::Custom { name: name.into() });
                    }
                    out.push(f);
                }
            }
        }
    }
    out
}

/// One `function` or `custom` tool as a chat function named `name`; hosted tools give `None`.
fn one_tool(t: &Value, name: &str) -> Option<Value> {
    let desc = t.get("description").and_then(Value::as_str);
    match t.get("type").and_then(Value::as_str)? {
        "function" => {
            let mut f = Map::new();
            f.insert("name".into(), json!(name));
            if let Some(d) = desc {
                f.insert("description".into(), json!(d));
            }
            f.insert(
                "parameters".into(),
                t.get("parameters")
                    .filter(|p| p.is_object())
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            );
            if let Some(s) = t.get("strict").filter(|s| s.is_boolean()) {
                f.insert("strict".into(), s.clone());
            }
            Some(json!({"type": "function", "function": f}))
        }
        "custom" => {
            let mut d = desc.unwrap_or_default().to_string();
            let format = t.get("format");
            if format.and_then(|f| f.get("type")).and_then(Value::as_str) == Some("grammar") {
                let syntax = format
                    .and_then(|f| f.get("syntax"))
                    .and_then(Value::as_str)
                    .unwrap_or("lark");
                let def = format
                    .and_then(|f| f.get("definition"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                d.push_str(&format!(
                    "\n\nThe `{CUSTOM_INPUT}` string must follow this {syntax} grammar:\n{def}"
                ));
            }
            Some(json!({"type": "function", "function": {
                "name": name,
                "description": d.trim_start(),
                "parameters": {
                    "type": "object",
                    "properties": {CUSTOM_INPUT: {"type": "string", "description": "The raw input of the tool."}},
                    "required": [CUSTOM_INPUT],
                    "additionalProperties": false
                }
            }}))
        }
        _ => None,
    }
}

/// `tool_choice` → chat `tool_choice`; `None` when it names nothing the upstream has.
fn tool_choice(c: &Value) -> Option<Value> {
    match c {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Some(c.clone()),
        Value::Object(o) => match o.get("type").and_then(Value::as_str)? {
            "function" | "custom" => {
                let name = o.get("name").and_then(Value::as_str)?;
                let name = match o.get("namespace").and_then(Value::as_str) {
                    Some(ns) => flat_name(ns, name),
                    None => name.to_string(),
                };
                Some(json!({"type": "function", "function": {"name": name}}))
            }
            "allowed_tools" => o
                .get("mode")
                .filter(|m| matches!(m.as_str(), Some("auto" | "required")))
                .cloned(),
            _ => None,
        },
        _ => None,
    }
}

/// A tool call as it sits in an assistant turn.
struct Call {
    id: String,
    name: String,
    arguments: String,
}

/// One assistant turn being assembled from consecutive items.
#[derive(Default)]
struct Turn {
    text: Option<String>,
    refusal: Option<String>,
    calls: Vec<Call>,
}

/// A tool output: the tool message, plus images a tool message cannot carry.
struct Output {
    message: Value,
    images: Vec<Value>,
}

/// `input` items → chat messages.
fn translate_input(items: &[Value]) -> Result<Vec<Value>, ProxyError> {
    // Outputs first, by call_id: each one goes right after the turn that made its call.
    let mut outputs: HashMap<String, Output> = HashMap::new();
    let mut output_order: Vec<String> = Vec::new();
    for it in items {
        if matches!(kind(it), "function_call_output" | "custom_tool_call_output") {
            let id = call_id(it)?;
            let (text, images) = tool_output(it.get("output"));
            output_order.push(id.clone());
            outputs.insert(
                id.clone(),
                Output {
                    message: json!({"role": "tool", "tool_call_id": id, "content": text}),
                    images,
                },
            );
        }
    }
    let mut used: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut turn: Option<Turn> = None;
    for it in items {
        match kind(it) {
            "function_call" | "custom_tool_call" => {
                let id = call_id(it)?;
                let name = it
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid_item(it, "has no `name`"))?;
                let name = match it.get("namespace").and_then(Value::as_str) {
                    Some(ns) if !ns.is_empty() => flat_name(ns, name),
                    _ => name.to_string(),
                };
                let arguments = if kind(it) == "custom_tool_call" {
                    json!({CUSTOM_INPUT: it.get("input").and_then(Value::as_str).unwrap_or_default()})
                        .to_string()
                } else {
                    match it.get("arguments") {
                        Some(Value::String(s)) => s.clone(),
                        Some(v) if !v.is_null() => v.to_string(),
                        _ => "{}".to_string(),
                    }
                };
                turn.get_or_insert_with(Turn::default).calls.push(Call {
                    id,
                    name,
                    arguments,
                });
            }
            "function_call_output" | "custom_tool_call_output" => {
                // The outputs of a turn's calls end the turn: a later call is a new turn.
                let id = call_id(it)?;
                if turn
                    .as_ref()
                    .is_some_and(|t| t.calls.iter().any(|c| c.id == id))
                {
                    flush(&mut turn, &mut out, &mut outputs, &mut used)?;
                }
            }
            "reasoning" => {}
            "item_reference" => {
                return Err(no_state("input", "An `item_reference` input item"));
            }
            "message" => {
                let role = it.get("role").and_then(Value::as_str).unwrap_or("user");
                if role == "assistant" {
                    // A new assistant message starts a new turn.
                    flush(&mut turn, &mut out, &mut outputs, &mut used)?;
                    let (text, refusal) = assistant_content(it.get("content"));
                    turn = Some(Turn {
                        text,
                        refusal,
                        calls: Vec::new(),
                    });
                } else {
                    flush(&mut turn, &mut out, &mut outputs, &mut used)?;
                    out.push(message(role, it.get("content"))?);
                }
            }
            // Hosted-tool calls and other items the upstream has no equivalent for.
            _ => {}
        }
    }
    flush(&mut turn, &mut out, &mut outputs, &mut used)?;
    if let Some(orphan) = output_order.iter().find(|id| !used.contains(id)) {
        return Err(refuse(
            "input",
            "invalid_tool_output",
            format!("No tool call found for the tool output with call_id {orphan:?} in `input`."),
        ));
    }
    Ok(out)
}

/// Ends the assistant turn being built: the assistant message, then its tool outputs.
fn flush(
    turn: &mut Option<Turn>,
    out: &mut Vec<Value>,
    outputs: &mut HashMap<String, Output>,
    used: &mut Vec<String>,
) -> Result<(), ProxyError> {
    let Some(t) = turn.take() else {
        return Ok(());
    };
    let mut m = Map::new();
    m.insert("role".into(), json!("assistant"));
    m.insert(
        "content".into(),
        t.text.map(Value::String).unwrap_or(Value::Null),
    );
    if let Some(r) = t.refusal {
        m.insert("refusal".into(), json!(r));
    }
    if !t.calls.is_empty() {
        let calls: Vec<Value> = t
            .calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    out.push(Value::Object(m));
    let mut images = Vec::new();
    for c in &t.calls {
        let Some(o) = outputs.remove(&c.id) else {
            return Err(refuse(
                "input",
                "missing_tool_output",
                format!(
                    "No tool output found for the call {:?} (call_id {:?}) in `input`: every function_call needs its function_call_output.",
                    c.name, c.id
                ),
            ));
        };
        out.push(o.message);
        images.extend(o.images);
        used.push(c.id.clone());
    }
    if !images.is_empty() {
        let mut parts =
            vec![json!({"type": "text", "text": "Images returned by the tool calls above:"})];
        parts.extend(images);
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn kind(it: &Value) -> &str {
    match it.get("type").and_then(Value::as_str) {
        Some(t) => t,
        // An "easy" input message: `{role, content}` without a type.
        None if it.get("role").is_some() => "message",
        None => "",
    }
}

fn invalid_item(it: &Value, what: &str) -> ProxyError {
    refuse(
        "input",
        "invalid_input_item",
        format!("A `{}` item in `input` {what}.", kind(it)),
    )
}

fn call_id(it: &Value) -> Result<String, ProxyError> {
    it.get("call_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| invalid_item(it, "has no `call_id`"))
}

/// A tool output: its text, and image parts (as chat `image_url` parts).
fn tool_output(o: Option<&Value>) -> (String, Vec<Value>) {
    match o {
        Some(Value::String(s)) => (s.clone(), Vec::new()),
        Some(Value::Array(parts)) => {
            let mut text = Vec::new();
            let mut images = Vec::new();
            for p in parts {
                match part(p) {
                    Some(Part::Text(t)) => text.push(t),
                    Some(Part::Other(img)) => images.push(img),
                    None => {}
                }
            }
            (text.join("\n"), images)
        }
        // Codex's older `{content, success}` shape.
        Some(Value::Object(o)) => (
            o.get("content")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| Value::Object(o.clone()).to_string()),
            Vec::new(),
        ),
        Some(Value::Null) | None => (String::new(), Vec::new()),
        Some(v) => (v.to_string(), Vec::new()),
    }
}

enum Part {
    Text(String),
    /// A non-text chat part (image, file).
    Other(Value),
}

/// One content part → a chat part.
fn part(p: &Value) -> Option<Part> {
    if let Value::String(s) = p {
        return Some(Part::Text(s.clone()));
    }
    let text = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
    match p.get("type").and_then(Value::as_str)? {
        "input_text" | "output_text" | "text" | "summary_text" => text("text").map(Part::Text),
        "refusal" => text("refusal").map(Part::Text),
        "input_image" => {
            let url = p
                .get("image_url")
                .and_then(|u| u.as_str().or_else(|| u.get("url").and_then(Value::as_str)))?;
            let mut img = Map::new();
            img.insert("url".into(), json!(url));
            if let Some(d) = p.get("detail").filter(|d| d.is_string()) {
                img.insert("detail".into(), d.clone());
            }
            Some(Part::Other(json!({"type": "image_url", "image_url": img})))
        }
        "input_file" => {
            let mut f = Map::new();
            for k in ["file_data", "file_id", "filename"] {
                if let Some(x) = p.get(k).filter(|x| x.is_string()) {
                    f.insert(k.into(), x.clone());
                }
            }
            (!f.is_empty()).then(|| Part::Other(json!({"type": "file", "file": f})))
        }
        _ => None,
    }
}

/// A system/developer/user message.
fn message(role: &str, content: Option<&Value>) -> Result<Value, ProxyError> {
    let chat_role = match role {
        "developer" | "system" => "system",
        "user" => "user",
        other => {
            return Err(refuse(
                "input",
                "invalid_role",
                format!("Unsupported message role {other:?} in `input`."),
            ));
        }
    };
    let content = match content {
        Some(Value::String(s)) => json!(s),
        Some(Value::Array(parts)) => {
            let parts: Vec<Part> = parts.iter().filter_map(part).collect();
            if chat_role == "system" || parts.iter().all(|p| matches!(p, Part::Text(_))) {
                // Plain text: one string (what every upstream takes for system messages).
                let texts: Vec<String> = parts
                    .into_iter()
                    .filter_map(|p| match p {
                        Part::Text(t) => Some(t),
                        Part::Other(_) => None,
                    })
                    .collect();
                json!(texts.join("\n\n"))
            } else {
                Value::Array(
                    parts
                        .into_iter()
                        .map(|p| match p {
                            Part::Text(t) => json!({"type": "text", "text": t}),
                            Part::Other(v) => v,
                        })
                        .collect(),
                )
            }
        }
        _ => json!(""),
    };
    Ok(json!({"role": chat_role, "content": content}))
}

/// An assistant message's text and refusal.
fn assistant_content(content: Option<&Value>) -> (Option<String>, Option<String>) {
    match content {
        Some(Value::String(s)) => (Some(s.clone()), None),
        Some(Value::Array(parts)) => {
            let mut text = Vec::new();
            let mut refusal = None;
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("refusal") => {
                        refusal = p.get("refusal").and_then(Value::as_str).map(str::to_string)
                    }
                    _ => {
                        if let Some(Part::Text(t)) = part(p) {
                            text.push(t);
                        }
                    }
                }
            }
            ((!text.is_empty()).then(|| text.concat()), refusal)
        }
        _ => (None, None),
    }
}
