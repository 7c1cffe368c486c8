//! `response` object → the Responses event stream, replayed from the finished
//! answer (the upstream never streams): `response.created`, `response.in_progress`,
//! then per output item `output_item.added`, its parts and deltas, `output_item.done`,
//! and `response.completed` (or `response.incomplete`) with usage. Every event
//! carries its `sequence_number`. No `[DONE]`: Responses streams end with the last event.

use crate::openai::sse::split;
use bytes::Bytes;
use serde_json::{Value, json};

/// Text and arguments are replayed in pieces of about this many bytes.
const PIECE: usize = 256;

/// The events for a finished `response`.
pub fn events(response: &Value) -> Vec<Value> {
    let mut ev = Events::default();
    let mut pending = response.clone();
    if let Some(o) = pending.as_object_mut() {
        o.insert("status".into(), json!("in_progress"));
        o.insert("output".into(), json!([]));
        o.insert("usage".into(), Value::Null);
        o.insert("incomplete_details".into(), Value::Null);
    }
    ev.push("response.created", json!({"response": pending}));
    ev.push("response.in_progress", json!({"response": pending}));
    let output = response
        .get("output")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (index, item) in output.iter().enumerate() {
        item_events(&mut ev, index, item);
    }
    let last = match response.get("status").and_then(Value::as_str) {
        Some("incomplete") => "response.incomplete",
        Some("failed") => "response.failed",
        _ => "response.completed",
    };
    ev.push(last, json!({"response": response}));
    ev.0
}

/// The single event that ends a stream whose answer failed after it started.
pub fn failed(response: &Value) -> Vec<Value> {
    let mut ev = Events::default();
    ev.push("response.failed", json!({"response": response}));
    ev.0
}

/// SSE bytes: `event: <type>` + `data: <json>` per event.
pub fn to_sse(events: &[Value]) -> Bytes {
    let mut out = Vec::new();
    for e in events {
        let t = e.get("type").and_then(Value::as_str).unwrap_or("message");
        out.extend_from_slice(format!("event: {t}\ndata: {e}\n\n").as_bytes());
    }
    Bytes::from(out)
}

#[derive(Default)]
struct Events(Vec<Value>);

impl Events {
    fn push(&mut self, kind: &str, mut fields: Value) {
        if let Some(o) = fields.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(self.0.len()));
        }
        self.0.push(fields);
    }
}

fn item_events(ev: &mut Events, index: usize, item: &Value) {
    let id = item.get("id").cloned().unwrap_or(Value::Null);
    let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
    let mut added = item.clone();
    if let Some(o) = added.as_object_mut() {
        o.insert("status".into(), json!("in_progress"));
        match kind {
            "message" => {
                o.insert("content".into(), json!([]));
            }
            "function_call" => {
                o.insert("arguments".into(), json!(""));
            }
            "custom_tool_call" => {
                o.insert("input".into(), json!(""));
            }
            _ => {}
        }
    }
    ev.push(
        "response.output_item.added",
        json!({"output_index": index, "item": added}),
    );
    let at = |extra: Value| {
        let mut v = json!({"item_id": id, "output_index": index});
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    match kind {
        "message" => {
            let parts = item
                .get("content")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (ci, part) in parts.iter().enumerate() {
                let (field, delta_kind, done_kind) = match part.get("type").and_then(Value::as_str)
                {
                    Some("refusal") => {
                        ("refusal", "response.refusal.delta", "response.refusal.done")
                    }
                    _ => (
                        "text",
                        "response.output_text.delta",
                        "response.output_text.done",
                    ),
                };
                let full = part.get(field).and_then(Value::as_str).unwrap_or_default();
                let mut empty = part.clone();
                if let Some(o) = empty.as_object_mut() {
                    o.insert(field.into(), json!(""));
                }
                ev.push(
                    "response.content_part.added",
                    at(json!({"content_index": ci, "part": empty})),
                );
                let text_extra = |mut v: Value| {
                    if field == "text"
                        && let Some(o) = v.as_object_mut()
                    {
                        o.insert("logprobs".into(), json!([]));
                    }
                    v
                };
                for piece in split(full, PIECE) {
                    ev.push(
                        delta_kind,
                        at(text_extra(json!({"content_index": ci, "delta": piece}))),
                    );
                }
                ev.push(
                    done_kind,
                    at(text_extra(json!({"content_index": ci, field: full}))),
                );
                ev.push(
                    "response.content_part.done",
                    at(json!({"content_index": ci, "part": part})),
                );
            }
        }
        "function_call" => {
            let args = item
                .get("arguments")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for piece in split(args, PIECE) {
                ev.push(
                    "response.function_call_arguments.delta",
                    at(json!({"delta": piece})),
                );
            }
            ev.push(
                "response.function_call_arguments.done",
                at(json!({"name": item.get("name"), "arguments": args})),
            );
        }
        "custom_tool_call" => {
            let input = item
                .get("input")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for piece in split(input, PIECE) {
                ev.push(
                    "response.custom_tool_call_input.delta",
                    at(json!({"delta": piece})),
                );
            }
            ev.push(
                "response.custom_tool_call_input.done",
                at(json!({"input": input})),
            );
        }
        _ => {}
    }
    ev.push(
        "response.output_item.done",
        json!({"output_index": index, "item": item}),
    );
}
