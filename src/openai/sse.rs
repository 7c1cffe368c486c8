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

/// Message fields replayed by dedicated code; every other non-null message
/// field (e.g. `audio`, `function_call`, a provider's `reasoning`) goes out
/// whole in a delta of its own.
const REPLAYED: [&str; 5] = ["role", "content", "refusal", "tool_calls", "annotations"];

/// Turns a `chat.completion` into the chunk sequence (without `[DONE]`).
/// Every field of the completion reaches the chunks: top-level fields on each
/// chunk, message fields in deltas, `logprobs` on the content (or refusal)
/// chunks they describe, other choice fields on the choice's last chunk.
pub fn chunks(completion: &Value, include_usage: bool) -> Result<Vec<Value>, String> {
    let obj = completion
        .as_object()
        .ok_or("the upstream completion is not a JSON object")?;
    let choices = obj
        .get("choices")
        .and_then(Value::as_array)
        .ok_or("the upstream completion has no choices")?;
    let mut base = Map::new();
    for (k, v) in obj {
        if !matches!(k.as_str(), "choices" | "usage" | "object") {
            base.insert(k.clone(), v.clone());
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
        let delta = |d: Value, logprobs: Value| {
            chunk(json!({"index": index, "delta": d, "logprobs": logprobs, "finish_reason": null}))
        };
        let text = msg.get("content").and_then(Value::as_str);
        // OpenAI opens with `content: ""` for text and `content: null` for a
        // tool-only (or refusal-only) turn.
        let mut first =
            json!({"role": role, "content": if text.is_some() { json!("") } else { Value::Null }});
        if msg.get("refusal").is_some() {
            first["refusal"] = Value::Null;
        }
        out.push(delta(first, Value::Null));
        if let Some(m) = msg.as_object() {
            for (k, v) in m {
                if !REPLAYED.contains(&k.as_str()) && !v.is_null() {
                    out.push(delta(json!({ k.clone(): v.clone() }), Value::Null));
                }
            }
        }
        let logprobs = choice.get("logprobs").filter(|l| !l.is_null());
        if let Some(text) = text {
            let tokens = logprobs
                .and_then(|l| l.get("content"))
                .and_then(Value::as_array);
            for (piece, lp) in pieces(text, tokens) {
                let lp = lp.map_or(Value::Null, |t| json!({"content": t, "refusal": null}));
                out.push(delta(json!({"content": piece}), lp));
            }
        }
        // Content that is not a string (content parts from some providers) goes out whole.
        if let Some(v) = msg
            .get("content")
            .filter(|v| !v.is_null() && !v.is_string())
        {
            out.push(delta(json!({ "content": v }), Value::Null));
        }
        if let Some(r) = msg.get("refusal").and_then(Value::as_str) {
            let tokens = logprobs
                .and_then(|l| l.get("refusal"))
                .and_then(Value::as_array);
            for (piece, lp) in pieces(r, tokens) {
                let lp = lp.map_or(Value::Null, |t| json!({"content": null, "refusal": t}));
                out.push(delta(json!({"refusal": piece}), lp));
            }
        }
        if let Some(a) = msg
            .get("annotations")
            .filter(|a| a.as_array().is_some_and(|a| !a.is_empty()))
        {
            out.push(delta(json!({"annotations": a}), Value::Null));
        }
        if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
            for (i, call) in calls.iter().enumerate() {
                let f = call.get("function").cloned().unwrap_or(json!({}));
                let name = f.get("name").cloned().unwrap_or(json!(""));
                let args = f.get("arguments").and_then(Value::as_str).unwrap_or("");
                out.push(delta(
                    json!({"tool_calls": [{
                        "index": i,
                        "id": call.get("id").cloned().unwrap_or(Value::Null),
                        "type": call.get("type").cloned().unwrap_or(json!("function")),
                        "function": {"name": name, "arguments": ""}
                    }]}),
                    Value::Null,
                ));
                for piece in split(args, PIECE) {
                    out.push(delta(
                        json!({"tool_calls": [{
                            "index": i, "function": {"arguments": piece}
                        }]}),
                        Value::Null,
                    ));
                }
            }
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        let mut last =
            json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": finish});
        if let (Some(c), Some(l)) = (choice.as_object(), last.as_object_mut()) {
            for (k, v) in c {
                if !matches!(
                    k.as_str(),
                    "index" | "message" | "logprobs" | "finish_reason"
                ) {
                    l.insert(k.clone(), v.clone());
                }
            }
        }
        out.push(chunk(last));
    }
    if include_usage && let Some(u) = obj.get("usage") {
        let mut c = base.clone();
        c.insert("choices".into(), json!([]));
        c.insert("usage".into(), u.clone());
        out.push(Value::Object(c));
    }
    Ok(out)
}

/// Pieces of `text` to replay, each with the logprobs of its tokens. When the
/// tokens spell the text exactly, pieces follow token boundaries (about `PIECE`
/// bytes each) and carry their tokens' logprobs; otherwise the text is split by
/// size and the first piece carries every token.
fn pieces<'a>(text: &'a str, tokens: Option<&'a Vec<Value>>) -> Vec<(&'a str, Option<Vec<Value>>)> {
    let spelled = tokens.and_then(|t| {
        let mut at = 0;
        let mut groups = Vec::new();
        let mut group = Vec::new();
        let mut start = 0;
        for tok in t {
            let s = tok.get("token")?.as_str()?;
            if !text[at..].starts_with(s) {
                return None;
            }
            at += s.len();
            group.push(tok.clone());
            if at - start >= PIECE {
                groups.push((&text[start..at], Some(std::mem::take(&mut group))));
                start = at;
            }
        }
        if at != text.len() {
            return None;
        }
        if start < at || !group.is_empty() {
            groups.push((&text[start..at], Some(group)));
        }
        Some(groups)
    });
    if let Some(g) = spelled {
        return g;
    }
    let mut out: Vec<(&str, Option<Vec<Value>>)> =
        split(text, PIECE).into_iter().map(|p| (p, None)).collect();
    if let (Some(first), Some(t)) = (out.first_mut(), tokens) {
        first.1 = Some(t.clone());
    }
    out
}

/// Splits on char boundaries into pieces of at most `n` bytes (at least one char each);
/// every synthesized stream (chat, Responses, Messages) cuts its text this way.
pub(crate) fn split(s: &str, n: usize) -> Vec<&str> {
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

/// Rewrites a chat request for the non-streaming upstream: `stream: false`, no
/// `stream_options`. Everything else stays byte for byte as the app sent it
/// (key order, number precision, whitespace): the edit is textual, over the
/// spans of the top-level members. Returns the new body and whether the app
/// asked for usage in the stream.
pub fn unstream_request(body: &[u8]) -> Result<(Bytes, bool), String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    // Validates the whole document (and gives serde's error messages).
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| e.to_string())?;
    let members = top_level_members(text)?;
    let mut include_usage = false;
    let mut out = String::with_capacity(text.len() + 16);
    let mut at = 0;
    let mut saw_stream = false;
    for (i, m) in members.iter().enumerate() {
        match m.key.as_str() {
            "stream" => {
                out.push_str(&text[at..m.value.start]);
                out.push_str("false");
                at = m.value.end;
                saw_stream = true;
            }
            "stream_options" => {
                let v: Value =
                    serde_json::from_str(&text[m.value.clone()]).map_err(|e| e.to_string())?;
                include_usage = v
                    .get("include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                // Drop the member with one separating comma: the one after it,
                // or (for the last member) the one before it.
                let (cut_from, cut_to) = match members.get(i + 1) {
                    Some(next) => (m.start, next.start),
                    None => match i.checked_sub(1).and_then(|p| members.get(p)) {
                        Some(prev) => (prev.value.end.max(at), m.value.end),
                        None => (m.start, m.value.end),
                    },
                };
                out.push_str(&text[at..cut_from]);
                at = cut_to;
            }
            _ => {}
        }
    }
    out.push_str(&text[at..]);
    if !saw_stream {
        let open = out
            .find('{')
            .ok_or("the request body is not a JSON object")?
            + 1;
        let empty = out[open..].trim_start().starts_with('}');
        let sep = if empty { "" } else { "," };
        out.insert_str(open, &format!("\"stream\":false{sep}"));
    }
    // Odd inputs (duplicate keys around a removed member) could leave a stray
    // comma: never send a broken document, re-encode instead.
    if serde_json::from_str::<serde::de::IgnoredAny>(&out).is_err() {
        let mut v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let o = v
            .as_object_mut()
            .ok_or("the request body is not a JSON object")?;
        o.insert("stream".into(), Value::Bool(false));
        o.remove("stream_options");
        out = v.to_string();
    }
    Ok((Bytes::from(out), include_usage))
}

/// One top-level member of a JSON object: where it starts (its key's quote),
/// its decoded key, and the byte span of its value.
struct Member {
    start: usize,
    key: String,
    value: std::ops::Range<usize>,
}

/// The members of the top-level object in `text` (already validated JSON).
fn top_level_members(text: &str) -> Result<Vec<Member>, String> {
    let b = text.as_bytes();
    let ws = |mut i: usize| {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    };
    let not_object = || "the request body is not a JSON object".to_string();
    let mut i = ws(0);
    if b.get(i) != Some(&b'{') {
        return Err(not_object());
    }
    i = ws(i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        return Ok(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Err(not_object());
        }
        let start = i;
        let mut j = i + 1;
        while j < b.len() && b[j] != b'"' {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        let key_end = (j + 1).min(b.len());
        let key: String = serde_json::from_str(&text[start..key_end]).map_err(|e| e.to_string())?;
        i = ws(key_end);
        if b.get(i) != Some(&b':') {
            return Err(not_object());
        }
        i = ws(i + 1);
        let mut de = serde_json::Deserializer::from_str(&text[i..]);
        let raw: &serde_json::value::RawValue =
            serde::Deserialize::deserialize(&mut de).map_err(|e| e.to_string())?;
        // The raw value borrows from `text`: its offset is where it starts.
        let v_start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
        let value = v_start..v_start + raw.get().len();
        i = ws(value.end);
        out.push(Member { start, key, value });
        match b.get(i) {
            Some(b',') => i = ws(i + 1),
            Some(b'}') => return Ok(out),
            _ => return Err(not_object()),
        }
    }
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

    /// A completion shaped like a captured gpt-4o-search answer with logprobs.
    fn search_completion() -> Value {
        let words: Vec<String> = (0..120).map(|i| format!("w{i} ")).collect();
        let text: String = words.concat();
        let tokens: Vec<Value> = words
            .iter()
            .map(
                |w| json!({"token": w, "logprob": -0.5, "bytes": w.as_bytes(), "top_logprobs": []}),
            )
            .collect();
        json!({
            "id": "chatcmpl-2", "object": "chat.completion", "created": 1700000001,
            "model": "gpt-4o-search-preview", "service_tier": "default",
            "system_fingerprint": "fp_2", "provider": "acme",
            "choices": [{"index": 0, "finish_reason": "stop", "native_finish_reason": "end_turn",
                "logprobs": {"content": tokens, "refusal": null},
                "message": {"role": "assistant", "content": text, "refusal": null,
                    "reasoning": "thought about it",
                    "annotations": [{"type": "url_citation", "url_citation": {
                        "start_index": 0, "end_index": 3, "url": "https://example.com", "title": "Ex"}}]}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 120, "total_tokens": 121}
        })
    }

    #[test]
    fn every_field_reaches_the_chunks() {
        let c = search_completion();
        let evs = chunks(&c, false).unwrap();
        for e in &evs {
            assert_eq!(e["service_tier"], "default");
            assert_eq!(e["system_fingerprint"], "fp_2");
            assert_eq!(e["provider"], "acme");
            assert_eq!(e["created"], 1700000001);
        }
        let first = &evs[0]["choices"][0]["delta"];
        assert_eq!(
            first,
            &json!({"role": "assistant", "content": "", "refusal": null})
        );
        let (mut content, mut tokens, mut annotations, mut reasoning) =
            (String::new(), Vec::new(), None, None);
        for e in &evs {
            let ch = &e["choices"][0];
            if let Some(t) = ch["delta"]["content"].as_str().filter(|t| !t.is_empty()) {
                content.push_str(t);
                // Each content chunk carries the logprobs of exactly its tokens.
                let lp = ch["logprobs"]["content"].as_array().unwrap();
                let spelled: String = lp.iter().map(|t| t["token"].as_str().unwrap()).collect();
                assert_eq!(spelled, t);
                tokens.extend(lp.iter().cloned());
            } else {
                assert!(ch["logprobs"].is_null());
            }
            if let Some(a) = ch["delta"].get("annotations") {
                annotations = Some(a.clone());
            }
            if let Some(r) = ch["delta"].get("reasoning") {
                reasoning = Some(r.clone());
            }
        }
        let msg = &c["choices"][0]["message"];
        assert_eq!(content, msg["content"].as_str().unwrap());
        assert!(evs.len() > 4, "content is replayed in several pieces");
        assert_eq!(Value::Array(tokens), c["choices"][0]["logprobs"]["content"]);
        assert_eq!(annotations.as_ref(), Some(&msg["annotations"]));
        assert_eq!(reasoning, Some(json!("thought about it")));
        let last = &evs.last().unwrap()["choices"][0];
        assert_eq!(last["finish_reason"], "stop");
        assert_eq!(last["native_finish_reason"], "end_turn");
    }

    #[test]
    fn content_parts_go_out_whole() {
        let parts = json!([{"type": "text", "text": "hi"}]);
        let c = json!({"id": "x", "created": 1, "model": "m", "choices": [{"index": 0,
            "finish_reason": "stop", "message": {"role": "assistant", "content": parts}}]});
        let evs = chunks(&c, false).unwrap();
        assert!(
            evs.iter()
                .any(|e| e["choices"][0]["delta"]["content"] == parts)
        );
    }

    #[test]
    fn tool_only_turns_open_with_null_content() {
        let c = json!({"id": "x", "created": 1, "model": "m", "choices": [{"index": 0,
            "finish_reason": "tool_calls", "logprobs": null, "message": {"role": "assistant",
            "content": null, "refusal": null, "tool_calls": [{"id": "call_a", "type": "function",
            "function": {"name": "f", "arguments": "{}"}}]}}]});
        let evs = chunks(&c, false).unwrap();
        assert_eq!(
            evs[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": null, "refusal": null})
        );
        assert!(
            evs.iter()
                .all(|e| e["choices"][0]["delta"].get("content").is_none()
                    || e["choices"][0]["delta"]["content"].is_null())
        );
    }

    #[test]
    fn logprobs_that_do_not_spell_the_text_go_on_the_first_piece() {
        let c = json!({"id": "x", "created": 1, "model": "m", "choices": [{"index": 0,
            "finish_reason": "stop", "logprobs": {"content": [{"token": "zz", "logprob": 0}]},
            "message": {"role": "assistant", "content": "hello"}}]});
        let evs = chunks(&c, false).unwrap();
        assert_eq!(evs[1]["choices"][0]["delta"]["content"], "hello");
        assert_eq!(
            evs[1]["choices"][0]["logprobs"]["content"][0]["token"],
            "zz"
        );
    }

    #[test]
    fn request_rewrite_keeps_everything_else_byte_for_byte() {
        let cases: [(&str, &str, bool); 8] = [
            (
                r#"{"z":1,"model":"m","stream":true,"big":123456789012345678901234567890,"f":1.10,"stream_options":{"include_usage":true},"a":{"y":1,"x":2}}"#,
                r#"{"z":1,"model":"m","stream":false,"big":123456789012345678901234567890,"f":1.10,"a":{"y":1,"x":2}}"#,
                true,
            ),
            (
                "{\n  \"stream\": true,\n  \"stream_options\": {\"include_usage\": true},\n  \"messages\": []\n}",
                "{\n  \"stream\": false,\n  \"messages\": []\n}",
                true,
            ),
            (
                r#"{"stream": true, "stream_options": {}}"#,
                r#"{"stream": false}"#,
                false,
            ),
            (
                r#"{"stream_options":{"include_usage":false},"stream":true}"#,
                r#"{"stream":false}"#,
                false,
            ),
            (
                r#"{"str\u0065am":true,"n":1e400}"#,
                r#"{"str\u0065am":false,"n":1e400}"#,
                false,
            ),
            (r#"{"model":"m"}"#, r#"{"stream":false,"model":"m"}"#, false),
            (r#" { } "#, r#" {"stream":false } "#, false),
            (
                r#"{"messages":[{"content":"\"stream\":true"}],"stream":true}"#,
                r#"{"messages":[{"content":"\"stream\":true"}],"stream":false}"#,
                false,
            ),
        ];
        for (input, want, usage) in cases {
            let (b, u) = unstream_request(input.as_bytes()).unwrap();
            assert_eq!(std::str::from_utf8(&b).unwrap(), want, "{input}");
            assert_eq!(u, usage, "{input}");
        }
        // Duplicate keys still give a valid document with stream false.
        let (b, _) = unstream_request(br#"{"a":1,"stream_options":1,"stream_options":2}"#).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v, json!({"a": 1, "stream": false}));
        for bad in [&b"[1]"[..], b"{\"a\":", b"{\"a\":1} x", b"\xff"] {
            assert!(unstream_request(bad).is_err());
        }
    }
}
