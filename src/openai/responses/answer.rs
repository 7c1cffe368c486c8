//! Chat completion → `response` object.
//!
//! The first choice becomes the output: a `message` item (an `output_text` part,
//! and a `refusal` part when the model refused), then one item per tool call:
//! `custom_tool_call` (raw `input`) for the functions that stand for custom tools,
//! `function_call` (with its `namespace` for flattened namespace tools) otherwise.
//! Ids are derived from the upstream bytes, so every coalesced caller gets the same.

use super::{CUSTOM_INPUT, Echo, ToolKind, fnv};
use serde_json::{Map, Value, json};

/// Translates the upstream's `chat.completion` body.
pub fn from_completion(body: &[u8], echo: &Echo) -> Result<Value, String> {
    let c: Value = serde_json::from_slice(body)
        .map_err(|_| "the upstream completion is not JSON".to_string())?;
    let obj = c
        .as_object()
        .ok_or("the upstream completion is not a JSON object")?;
    let choice = obj
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .ok_or("the upstream completion has no choices")?;
    let tag = format!("{:016x}", fnv(body));
    let msg = choice.get("message").cloned().unwrap_or(json!({}));

    let mut output = Vec::new();
    let text = msg.get("content").and_then(Value::as_str);
    let refusal = msg.get("refusal").and_then(Value::as_str);
    let calls = msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if text.is_some_and(|t| !t.is_empty()) || refusal.is_some() || calls.is_empty() {
        let mut content = Vec::new();
        if text.is_some_and(|t| !t.is_empty()) || refusal.is_none() {
            content.push(
                json!({"type": "output_text", "text": text.unwrap_or_default(),
                "annotations": [], "logprobs": []}),
            );
        }
        if let Some(r) = refusal {
            content.push(json!({"type": "refusal", "refusal": r}));
        }
        output.push(
            json!({"type": "message", "id": format!("msg_{tag}"), "status": "completed",
            "role": "assistant", "content": content}),
        );
    }
    for (i, call) in calls.iter().enumerate() {
        output.push(call_item(call, &format!("{tag}{i:02}"), echo));
    }

    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let incomplete = match finish {
        Some("length") => Some("max_output_tokens"),
        Some("content_filter") => Some("content_filter"),
        _ => None,
    };
    let mut r = base(
        &format!("resp_{tag}"),
        obj.get("created").and_then(Value::as_i64).unwrap_or(0),
        echo,
    );
    if let Some(m) = obj.get("model").filter(|m| m.is_string()) {
        r.insert("model".into(), m.clone());
    }
    r.insert(
        "status".into(),
        json!(if incomplete.is_some() {
            "incomplete"
        } else {
            "completed"
        }),
    );
    r.insert(
        "incomplete_details".into(),
        incomplete.map_or(Value::Null, |why| json!({"reason": why})),
    );
    r.insert("output".into(), Value::Array(output));
    r.insert("usage".into(), obj.get("usage").map_or(Value::Null, usage));
    Ok(Value::Object(r))
}

/// The `response` fields every state shares (status `in_progress`, no output yet).
pub fn base(id: &str, created_at: i64, echo: &Echo) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("id".into(), json!(id));
    r.insert("object".into(), json!("response"));
    r.insert("created_at".into(), json!(created_at));
    r.insert("status".into(), json!("in_progress"));
    r.insert("error".into(), Value::Null);
    r.insert("incomplete_details".into(), Value::Null);
    for (k, v) in &echo.fields {
        r.insert(k.clone(), v.clone());
    }
    r.insert("output".into(), json!([]));
    r.insert("usage".into(), Value::Null);
    r
}

/// A `failed` response carrying `error` (`{code, message}`), for errors after the stream started.
pub fn failed(error: &Value, created_at: i64, echo: &Echo) -> Value {
    let code = error.get("code").cloned().filter(|c| !c.is_null());
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the upstream call failed");
    let id = format!("resp_{:016x}", fnv(error.to_string().as_bytes()));
    let mut r = base(&id, created_at, echo);
    r.insert("status".into(), json!("failed"));
    r.insert(
        "error".into(),
        json!({"code": code.unwrap_or(json!("server_error")), "message": message}),
    );
    Value::Object(r)
}

/// One chat tool call → `function_call` / `custom_tool_call`.
fn call_item(call: &Value, tag: &str, echo: &Echo) -> Value {
    let f = call.get("function").cloned().unwrap_or(json!({}));
    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
    let arguments = match f.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => String::new(),
    };
    let call_id = call
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("call_{tag}"));
    match echo.tools.get(name) {
        Some(ToolKind::Custom { name }) => {
            // The raw input; arguments that are not `{"input": "..."}` are passed on as they came.
            let input = serde_json::from_str::<Value>(&arguments)
                .ok()
                .and_then(|v| {
                    v.get(CUSTOM_INPUT)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or(arguments);
            json!({"type": "custom_tool_call", "id": format!("ctc_{tag}"), "status": "completed",
                "call_id": call_id, "name": name, "input": input})
        }
        Some(ToolKind::Namespaced { namespace, name }) => {
            json!({"type": "function_call", "id": format!("fc_{tag}"), "status": "completed",
                "call_id": call_id, "name": name, "namespace": namespace, "arguments": arguments})
        }
        None => json!({"type": "function_call", "id": format!("fc_{tag}"), "status": "completed",
            "call_id": call_id, "name": name, "arguments": arguments}),
    }
}

/// Chat `usage` → Responses `usage`.
fn usage(u: &Value) -> Value {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let input = n(u.get("prompt_tokens"));
    let output = n(u.get("completion_tokens"));
    let total = u
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(input + output);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": n(u.get("prompt_tokens_details").and_then(|d| d.get("cached_tokens")))},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": n(u.get("completion_tokens_details").and_then(|d| d.get("reasoning_tokens")))},
        "total_tokens": total,
    })
}
