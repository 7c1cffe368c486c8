//! Streaming synthesis: the upstream has no streaming, so a `stream: true` call
//! is sent upstream as `stream: false` and the finished `chat.completion` is
//! replayed as the `chat.completion.chunk` events OpenAI would have streamed.
//! Pure functions; the server does the I/O.

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// SSE comment sent while paying/waiting so clients and proxies do not time out.
pub const HEARTBEAT: &[u8] = b": x402d waiting\n\n";
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// One `data:` event.
pub fn event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// The error event both SDKs raise `APIError` on.
pub fn error_event(error_body: &Value) -> Bytes {
    event(error_body)
}

/// Content is replayed in pieces of about this many characters.
const PIECE: usize = 256;

/// Turns a `chat.completion` into the chunk sequence (without `[DONE]`).
pub fn chunks(completion: &Value, include_usage: bool) -> Result<Vec<Value>, String> {
    let obj = completion
        .as_object()
        .ok_or("the upstream completion is not a JSON object")?;
    let choices = obj
        .get("choices")
        .and_then(Value::as_array)
        .ok_or("the upstream completion has no choices")?;
    let mut base = Map::new();
    for k in [
        "id",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
    ] {
        if let Some(v) = obj.get(k) {
            base.insert(k.to_string(), v.clone());
        }
    }
    base.insert("object".into(), json!("chat.completion.chunk"));
    let chunk = |choice: Value| {
        let mut c = base.clone();
        c.insert("choices".into(), json!([choice]));
        Value::Object(c)
    };
    let mut out = Vec::new();
    for (pos, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(pos));
        let msg = choice.get("message").cloned().unwrap_or(json!({}));
        let role = msg.get("role").cloned().unwrap_or(json!("assistant"));
        let delta =
            |d: Value| json!({"index": index, "delta": d, "logprobs": null, "finish_reason": null});
        out.push(chunk(delta(json!({"role": role, "content": ""}))));
        if let Some(text) = msg.get("content").and_then(Value::as_str) {
            for piece in split(text, PIECE) {
                out.push(chunk(delta(json!({"content": piece}))));
            }
        }
        if let Some(r) = msg.get("refusal").and_then(Value::as_str) {
            out.push(chunk(delta(json!({"refusal": r}))));
        }
        if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
            for (i, call) in calls.iter().enumerate() {
                let f = call.get("function").cloned().unwrap_or(json!({}));
                let name = f.get("name").cloned().unwrap_or(json!(""));
                let args = f.get("arguments").and_then(Value::as_str).unwrap_or("");
                out.push(chunk(delta(json!({"tool_calls": [{
                    "index": i,
                    "id": call.get("id").cloned().unwrap_or(Value::Null),
                    "type": call.get("type").cloned().unwrap_or(json!("function")),
                    "function": {"name": name, "arguments": ""}
                }]}))));
                for piece in split(args, PIECE) {
                    out.push(chunk(delta(json!({"tool_calls": [{
                        "index": i, "function": {"arguments": piece}
                    }]}))));
                }
            }
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        out.push(chunk(
            json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": finish}),
        ));
    }
    if include_usage && let Some(u) = obj.get("usage") {
        let mut c = base.clone();
        c.insert("choices".into(), json!([]));
        c.insert("usage".into(), u.clone());
        out.push(Value::Object(c));
    }
    Ok(out)
}

/// Splits on char boundaries into pieces of at most `n` bytes (at least one char each).
fn split(s: &str, n: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let mut end = n.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// Rewrites a chat request for the non-streaming upstream: `stream: false`, no `stream_options`.
/// Returns the new body and whether the app asked for usage in the stream.
pub fn unstream_request(body: &[u8]) -> Result<(Bytes, bool), String> {
    let mut v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let o = v
        .as_object_mut()
        .ok_or("the request body is not a JSON object")?;
    let include_usage = o
        .get("stream_options")
        .and_then(|s| s.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    o.insert("stream".into(), Value::Bool(false));
    o.remove("stream_options");
    Ok((Bytes::from(v.to_string()), include_usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion() -> Value {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "héllo ".repeat(100),
                "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "noop", "arguments": "x".repeat(600)}}
                ]}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        })
    }

    #[test]
    fn chunks_reassemble_to_the_completion() {
        let c = completion();
        let evs = chunks(&c, true).unwrap();
        for e in &evs {
            assert_eq!(e["object"], "chat.completion.chunk");
            assert_eq!(e["id"], "chatcmpl-1");
            assert_eq!(e["model"], "gpt-4o-mini");
            assert_eq!(e["system_fingerprint"], "fp_1");
            assert_eq!(e["created"], 1700000000);
        }
        assert_eq!(evs[0]["choices"][0]["delta"]["role"], "assistant");
        let mut content = String::new();
        let mut calls: Vec<(String, String, String)> = Vec::new();
        let mut finish = None;
        for e in &evs[..evs.len() - 1] {
            let ch = &e["choices"][0];
            if let Some(t) = ch["delta"]["content"].as_str() {
                content.push_str(t);
            }
            if let Some(tc) = ch["delta"]["tool_calls"].as_array() {
                for t in tc {
                    let i = t["index"].as_u64().unwrap() as usize;
                    if calls.len() <= i {
                        calls.push((
                            t["id"].as_str().unwrap().into(),
                            t["function"]["name"].as_str().unwrap().into(),
                            String::new(),
                        ));
                    }
                    calls[i]
                        .2
                        .push_str(t["function"]["arguments"].as_str().unwrap());
                }
            }
            if !ch["finish_reason"].is_null() {
                finish = Some(ch["finish_reason"].clone());
            }
        }
        assert_eq!(content, "héllo ".repeat(100));
        assert_eq!(
            calls[0],
            (
                "call_a".into(),
                "get_weather".into(),
                "{\"city\":\"Paris\"}".into()
            )
        );
        assert_eq!(calls[1].2, "x".repeat(600));
        assert_eq!(finish, Some(json!("tool_calls")));
        let last = evs.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["total_tokens"], 3);
        // Without include_usage there is no usage chunk.
        assert!(
            chunks(&c, false)
                .unwrap()
                .iter()
                .all(|e| e.get("usage").is_none())
        );
    }

    #[test]
    fn refusal_and_bad_input() {
        let c = json!({"id":"x","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop",
            "message":{"role":"assistant","content":null,"refusal":"I can't"}}]});
        let evs = chunks(&c, false).unwrap();
        assert!(
            evs.iter()
                .any(|e| e["choices"][0]["delta"]["refusal"] == "I can't")
        );
        assert!(chunks(&json!([1]), false).is_err());
        assert!(chunks(&json!({"id": "x"}), false).is_err());
    }

    #[test]
    fn request_rewrite() {
        let (b, usage) = unstream_request(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["stream"], false);
        assert!(v.get("stream_options").is_none());
        assert_eq!(v["model"], "m");
        assert!(usage);
        let (_, usage) = unstream_request(br#"{"stream":true}"#).unwrap();
        assert!(!usage);
    }

    #[test]
    fn split_respects_char_boundaries() {
        let s = "é".repeat(300);
        let parts = split(&s, 255);
        assert_eq!(parts.concat(), s);
        assert!(parts.iter().all(|p| p.len() <= 256));
    }
}
