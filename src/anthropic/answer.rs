//! Chat completion → Message, and Message → the Messages event stream.
//!
//! The upstream never streams, so a `stream: true` call is answered by
//! replaying the finished Message as the events Anthropic would have sent:
//! `message_start`, per block `content_block_start` / `content_block_delta`
//! (`text_delta`, `input_json_delta`) / `content_block_stop`, `message_delta`
//! (stop reason and usage), `message_stop`. While the payment runs, `ping`
//! events keep the connection alive (every SDK skips them).

use crate::openai::sse::split;
use bytes::Bytes;
use serde_json::{Value, json};

/// The heartbeat while paying or waiting for the model.
pub const PING: &[u8] = b"event: ping\ndata: {\"type\":\"ping\"}\n\n";

/// Text and tool input are replayed in pieces of about this many bytes.
const PIECE: usize = 256;

/// `finish_reason` → `stop_reason`.
fn stop_reason(finish: Option<&str>, has_tool_calls: bool) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        // Some upstreams say "stop" on a tool call.
        _ if has_tool_calls => "tool_use",
        _ => "end_turn",
    }
}

/// Anthropic usage from OpenAI usage (cached prompt tokens reported as cache reads).
fn usage(u: Option<&Value>) -> Value {
    let n = |k: &str| {
        u.and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = u
        .and_then(|u| u.get("prompt_tokens_details"))
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({
        "input_tokens": n("prompt_tokens").saturating_sub(cached),
        "output_tokens": n("completion_tokens"),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    })
}

/// Ids stay printable ASCII (they are echoed back by clients as they are).
fn id_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .take(120)
        .collect()
}

/// The Message for a `chat.completion` (first choice). `model` is the id the client asked for.
pub fn message(completion: &Value, model: &str) -> Result<Value, String> {
    let obj = completion
        .as_object()
        .ok_or("the upstream completion is not a JSON object")?;
    let choice = obj
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or("the upstream completion has no choices")?;
    let msg = choice.get("message").cloned().unwrap_or(json!({}));
    let upstream_id = obj.get("id").and_then(Value::as_str).unwrap_or("");
    let id = format!("msg_{}", id_safe(upstream_id));
    let mut content = Vec::new();
    if let Some(text) = msg.get("content").and_then(Value::as_str)
        && !text.is_empty()
    {
        content.push(json!({"type": "text", "text": text}));
    } else if let Some(r) = msg.get("refusal").and_then(Value::as_str) {
        content.push(json!({"type": "text", "text": r}));
    }
    let calls = msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, call) in calls.iter().enumerate() {
        let f = call.get("function").cloned().unwrap_or(json!({}));
        let call_id = call
            .get("id")
            .and_then(Value::as_str)
            .map(id_safe)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("toolu_{}_{i}", id_safe(upstream_id)));
        let args = f.get("arguments").and_then(Value::as_str).unwrap_or("");
        // An empty argument string means no arguments; text that is not JSON is
        // passed on as a string so the client reports the bad call to the model.
        let input = if args.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(args).unwrap_or_else(|_| json!(args))
        };
        content.push(json!({"type": "tool_use", "id": call_id,
            "name": f.get("name").cloned().unwrap_or(json!("")), "input": input}));
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    Ok(json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish, !calls.is_empty()),
        "stop_sequence": null,
        "usage": usage(obj.get("usage")),
    }))
}

/// One named SSE event.
pub fn event(name: &str, data: &Value) -> Vec<u8> {
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

/// The event stream that delivers `message` (a Message from [`message`]).
pub fn events(message: &Value) -> Vec<(&'static str, Value)> {
    let mut start = message.clone();
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["stop_sequence"] = Value::Null;
    start["usage"]["output_tokens"] = json!(0);
    let mut out = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": start}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    let blocks = message["content"].as_array().cloned().unwrap_or_default();
    for (index, b) in blocks.iter().enumerate() {
        let delta = |d: Value| {
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": d}),
            )
        };
        match b["type"].as_str() {
            Some("tool_use") => {
                out.push(("content_block_start", json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}})));
                let input = b["input"].to_string();
                for piece in split(&input, PIECE) {
                    out.push(delta(
                        json!({"type": "input_json_delta", "partial_json": piece}),
                    ));
                }
            }
            _ => {
                out.push((
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "text", "text": ""}}),
                ));
                for piece in split(b["text"].as_str().unwrap_or(""), PIECE) {
                    out.push(delta(json!({"type": "text_delta", "text": piece})));
                }
            }
        }
        out.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    out.push((
        "message_delta",
        json!({"type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
            "usage": message["usage"]}),
    ));
    out.push(("message_stop", json!({"type": "message_stop"})));
    out
}

/// The whole stream body for a completion.
pub fn stream_body(completion: &Value, model: &str) -> Result<Bytes, String> {
    let m = message(completion, model)?;
    let mut out = Vec::new();
    for (name, data) in events(&m) {
        out.extend_from_slice(&event(name, &data));
    }
    Ok(Bytes::from(out))
}

/// The `error` event the SDKs raise `APIError` on (for errors after the stream started).
pub fn error_event(error_body: &Value) -> Bytes {
    Bytes::from(event("error", error_body))
}

/// Anthropic's error shape for an upstream's own non-2xx answer, keeping its message.
pub fn upstream_error(status: u16, body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let msg = v
        .get("error")
        .and_then(|e| e.get("message").and_then(Value::as_str).or(e.as_str()))
        .or_else(|| v.get("message").and_then(Value::as_str))
        .map(str::to_string)
        .unwrap_or_else(|| format!("The upstream answered HTTP {status}."));
    json!({"type": "error", "error": {"type": super::error::kind_for_status(status), "message": msg}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(msg: Value, finish: &str) -> Value {
        json!({"id": "chatcmpl-abc.1", "object": "chat.completion", "created": 1, "model": "anthropic/claude-haiku-4.5",
            "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
                      "prompt_tokens_details": {"cached_tokens": 2}}})
    }

    #[test]
    fn text_message() {
        let m = message(
            &completion(json!({"role": "assistant", "content": "hello"}), "stop"),
            "claude-haiku-4-5",
        )
        .unwrap();
        assert_eq!(
            m,
            json!({"id": "msg_chatcmpl-abc1", "type": "message", "role": "assistant",
                "model": "claude-haiku-4-5", "content": [{"type": "text", "text": "hello"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2}})
        );
    }

    #[test]
    fn tool_message_and_stop_reasons() {
        let m = message(
            &completion(
                json!({"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}},
                {"type": "function", "function": {"name": "Noop", "arguments": ""}},
                {"id": "call_3", "type": "function", "function": {"name": "Bad", "arguments": "{oops"}}]}),
                "tool_calls",
            ),
            "m",
        )
        .unwrap();
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(
            m["content"],
            json!([
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "toolu_chatcmpl-abc1_1", "name": "Noop", "input": {}},
                {"type": "tool_use", "id": "call_3", "name": "Bad", "input": "{oops"}
            ])
        );
        let sr =
            |f: &str, msg: Value| message(&completion(msg, f), "m").unwrap()["stop_reason"].clone();
        let text = json!({"role": "assistant", "content": "x"});
        assert_eq!(sr("length", text.clone()), "max_tokens");
        assert_eq!(sr("content_filter", text.clone()), "refusal");
        assert_eq!(sr("weird", text.clone()), "end_turn");
        assert_eq!(
            sr(
                "stop",
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]})
            ),
            "tool_use"
        );
        // Empty answer: no blocks. Refusal text becomes the text block.
        let m = message(
            &completion(json!({"role": "assistant", "content": ""}), "stop"),
            "m",
        )
        .unwrap();
        assert_eq!(m["content"], json!([]));
        let m = message(
            &completion(
                json!({"role": "assistant", "content": null, "refusal": "no"}),
                "stop",
            ),
            "m",
        )
        .unwrap();
        assert_eq!(m["content"], json!([{"type": "text", "text": "no"}]));
        assert!(message(&json!({"id": "x"}), "m").is_err());
        assert!(message(&json!([1]), "m").is_err());
    }

    /// Reassembles a stream the way the SDKs' accumulators do.
    fn reassemble(body: &[u8]) -> Value {
        let text = std::str::from_utf8(body).unwrap();
        let mut msg = Value::Null;
        let mut partial: Vec<String> = Vec::new();
        let mut names = Vec::new();
        for ev in text.split("\n\n").filter(|e| !e.is_empty()) {
            let (name_line, data_line) = ev.split_once('\n').unwrap();
            let name = name_line.strip_prefix("event: ").unwrap();
            let data: Value =
                serde_json::from_str(data_line.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name, "event name matches its type");
            names.push(name.to_string());
            match name {
                "message_start" => msg = data["message"].clone(),
                "content_block_start" => {
                    assert_eq!(
                        data["index"].as_u64().unwrap() as usize,
                        msg["content"].as_array().unwrap().len()
                    );
                    msg["content"]
                        .as_array_mut()
                        .unwrap()
                        .push(data["content_block"].clone());
                    partial.push(String::new());
                }
                "content_block_delta" => {
                    let i = data["index"].as_u64().unwrap() as usize;
                    match data["delta"]["type"].as_str().unwrap() {
                        "text_delta" => {
                            let t = msg["content"][i]["text"].as_str().unwrap().to_string()
                                + data["delta"]["text"].as_str().unwrap();
                            msg["content"][i]["text"] = json!(t);
                        }
                        "input_json_delta" => {
                            partial[i].push_str(data["delta"]["partial_json"].as_str().unwrap())
                        }
                        other => panic!("{other}"),
                    }
                }
                "content_block_stop" => {
                    let i = data["index"].as_u64().unwrap() as usize;
                    if msg["content"][i]["type"] == "tool_use" {
                        msg["content"][i]["input"] = serde_json::from_str(&partial[i]).unwrap();
                    }
                }
                "message_delta" => {
                    msg["stop_reason"] = data["delta"]["stop_reason"].clone();
                    msg["stop_sequence"] = data["delta"]["stop_sequence"].clone();
                    msg["usage"] = data["usage"].clone();
                }
                "message_stop" | "ping" => {}
                other => panic!("unexpected event {other}"),
            }
        }
        assert_eq!(names.first().unwrap(), "message_start");
        assert_eq!(names.last().unwrap(), "message_stop");
        assert_eq!(names[names.len() - 2], "message_delta");
        msg
    }

    #[test]
    fn stream_reassembles_to_the_message() {
        let long = "héllo wörld ".repeat(80);
        let args = json!({"command": "x".repeat(700)}).to_string();
        let c = completion(
            json!({"role": "assistant", "content": long, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": args}}]}),
            "tool_calls",
        );
        let body = stream_body(&c, "claude-sonnet-4-5").unwrap();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(
            text.matches("text_delta").count() > 2,
            "several text deltas"
        );
        assert!(
            text.matches("input_json_delta").count() > 2,
            "several json deltas"
        );
        assert_eq!(reassemble(&body), message(&c, "claude-sonnet-4-5").unwrap());
        // message_start carries no content and zero output tokens yet.
        let first: Value =
            serde_json::from_str(text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(first["message"]["content"], json!([]));
        assert!(first["message"]["stop_reason"].is_null());
        assert_eq!(first["message"]["usage"]["input_tokens"], 10);
        assert_eq!(first["message"]["usage"]["output_tokens"], 0);
    }

    #[test]
    fn ping_and_error_events() {
        let ping = std::str::from_utf8(PING).unwrap();
        assert_eq!(ping, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
        let e =
            error_event(&json!({"type": "error", "error": {"type": "api_error", "message": "m"}}));
        assert!(e.starts_with(b"event: error\ndata: {"));
        let u = upstream_error(
            500,
            br#"{"error":{"message":"boom","type":"server_error"}}"#,
        );
        assert_eq!(
            u,
            json!({"type": "error", "error": {"type": "api_error", "message": "boom"}})
        );
        let u = upstream_error(429, b"not json");
        assert_eq!(u["error"]["type"], "rate_limit_error");
        assert!(u["error"]["message"].as_str().unwrap().contains("429"));
        assert_eq!(
            upstream_error(400, br#"{"error":"bad"}"#)["error"]["message"],
            "bad"
        );
    }
}
