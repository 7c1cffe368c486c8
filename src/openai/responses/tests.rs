use super::request::translate;
use super::*;
use crate::error::ProxyError;
use serde_json::{Value, json};

fn tr(v: Value) -> request::Translated {
    translate(v.to_string().as_bytes()).unwrap()
}

fn refused(v: Value) -> (u16, &'static str, String) {
    match translate(v.to_string().as_bytes()) {
        Err(e) => (e.status().as_u16(), e.code(), e.to_string()),
        Ok(t) => panic!("accepted: {}", t.chat),
    }
}

fn chat_names(chat: &Value) -> Vec<String> {
    chat["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn codex_first_request() {
    let captured: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/codex-0.169.0-first-request.json"
    ))
    .unwrap();
    let t = tr(captured["body"].clone());
    assert!(t.stream);
    assert_eq!(t.model.as_deref(), Some("gpt-4o-mini"));
    let c = &t.chat;
    assert_eq!(c["model"], "gpt-4o-mini");
    assert_eq!(c["stream"], false);
    // Responses-only fields stay behind.
    for k in [
        "input",
        "reasoning",
        "include",
        "store",
        "prompt_cache_key",
        "client_metadata",
        "stream_options",
    ] {
        assert!(c.get(k).is_none(), "{k} forwarded");
    }
    let roles: Vec<&str> = c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "system", "user", "user"]);
    assert!(
        c["messages"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("You are a coding agent running in the Codex CLI")
    );
    assert_eq!(c["messages"][3]["content"], "say hi");
    // Function tools as chat functions, the namespace flattened, the hosted web_search left out.
    let names = chat_names(c);
    assert!(names.contains(&"exec_command".to_string()));
    assert!(names.contains(&"multi_agent_v1__close_agent".to_string()));
    assert!(!names.iter().any(|n| n.contains("web_search")));
    assert!(names.iter().all(|n| {
        n.len() <= 64
            && n.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
    }));
    let flat_count = captured["body"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| match t["type"].as_str() {
            Some("function") => 1,
            Some("namespace") => t["tools"].as_array().unwrap().len(),
            _ => 0,
        })
        .sum::<usize>();
    assert_eq!(names.len(), flat_count);
    let exec = &c["tools"][0]["function"];
    assert_eq!(exec["name"], "exec_command");
    assert_eq!(
        exec["parameters"],
        captured["body"]["tools"][0]["parameters"]
    );
    assert_eq!(exec["strict"], false);
    assert_eq!(c["tool_choice"], "auto");
    assert_eq!(c["parallel_tool_calls"], true);
    assert_eq!(
        t.echo.tools.get("multi_agent_v1__close_agent"),
        Some(&ToolKind::Namespaced {
            namespace: "multi_agent_v1".into(),
            name: "close_agent".into()
        })
    );
    // The same request always gives the same upstream body (retry coalescing keys on it).
    assert_eq!(tr(captured["body"].clone()).chat.to_string(), c.to_string());
}

#[test]
fn instructions_string_input_and_parameters() {
    let t = tr(json!({
        "model": "gpt-4o", "instructions": "Be brief.", "input": "hi",
        "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u1",
        "metadata": {"k": "v"}, "store": false, "stream": false, "some_future_field": {"x": 1},
        "text": {"format": {"type": "json_schema", "name": "answer", "strict": true,
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}, "verbosity": "low"}
    }));
    assert!(!t.stream);
    assert_eq!(
        t.chat,
        json!({
            "model": "gpt-4o", "stream": false,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
            "max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u1",
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "strict": true,
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}
        })
    );
    assert_eq!(t.echo.fields["instructions"], "Be brief.");
    assert_eq!(t.echo.fields["metadata"], json!({"k": "v"}));
    let j = tr(json!({"input": "x", "text": {"format": {"type": "json_object"}}}));
    assert_eq!(j.chat["response_format"], json!({"type": "json_object"}));
    assert!(j.chat.get("model").is_none());
    let plain = tr(json!({"input": "x", "text": {"format": {"type": "text"}}}));
    assert!(plain.chat.get("response_format").is_none());
    assert_eq!(plain.echo.fields["tool_choice"], "auto");
}

#[test]
fn messages_roles_and_parts() {
    let t = tr(json!({"input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"role": "system", "content": "s"},
        {"role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBER", "filename": "a.pdf"}
        ]},
        {"role": "user", "content": [{"type": "input_text", "text": "only text"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok", "annotations": []}]},
        {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}
    ]}));
    assert_eq!(
        t.chat["messages"],
        json!([
            {"role": "system", "content": "a\n\nb"},
            {"role": "system", "content": "s"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER", "filename": "a.pdf"}}
            ]},
            {"role": "user", "content": "only text"},
            {"role": "assistant", "content": "ok"},
            {"role": "assistant", "content": null, "refusal": "no"}
        ])
    );
    let (status, code, _) = refused(json!({"input": [{"role": "tool", "content": "x"}]}));
    assert_eq!((status, code), (400, "invalid_role"));
}

#[test]
fn tool_calls_paired_and_grouped() {
    // Parallel calls (with the assistant text before them and a reasoning item between)
    // are one assistant turn; outputs, in any order and anywhere later, follow that turn.
    let t = tr(json!({"input": [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "reasoning", "id": "rs_2", "summary": []},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
        {"type": "function_call_output", "call_id": "call_2", "output": "rain"},
        {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "sun"}, {"type": "input_text", "text": "25C"}]},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "q"}},
        {"type": "function_call", "call_id": "call_3", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_3", "output": "noon"},
        {"role": "user", "content": "thanks"}
    ]}));
    assert_eq!(
        t.chat["messages"],
        json!([
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sun\n25C"},
            {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_3", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_3", "content": "noon"},
            {"role": "user", "content": "thanks"}
        ])
    );
}

#[test]
fn tool_output_images_follow_as_a_user_message() {
    let t = tr(json!({"input": [
        {"type": "function_call", "call_id": "c", "name": "view_image", "arguments": "{\"path\":\"a.png\"}"},
        {"type": "function_call_output", "call_id": "c", "output": [
            {"type": "input_text", "text": "here"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
        ]}
    ]}));
    let m = t.chat["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(
        m[1],
        json!({"role": "tool", "tool_call_id": "c", "content": "here"})
    );
    assert_eq!(m[2]["role"], "user");
    assert_eq!(
        m[2]["content"][1],
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})
    );
}

#[test]
fn custom_tools_round_trip() {
    let grammar = "start: begin_patch hunk+ end_patch";
    let t = tr(json!({
        "input": [
            {"role": "user", "content": "patch it"},
            {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": "*** Begin Patch\n*** End Patch"},
            {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done!"}
        ],
        "tools": [
            {"type": "custom", "name": "apply_patch", "description": "Edit files.",
             "format": {"type": "grammar", "syntax": "lark", "definition": grammar}},
            {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
            {"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs"]}, {"type": "code_interpreter", "container": {"type": "auto"}}
        ],
        "tool_choice": {"type": "custom", "name": "apply_patch"}
    }));
    let f = &t.chat["tools"][0]["function"];
    assert_eq!(f["name"], "apply_patch");
    assert_eq!(
        f["parameters"]["properties"][CUSTOM_INPUT]["type"],
        "string"
    );
    assert_eq!(f["parameters"]["required"], json!([CUSTOM_INPUT]));
    let d = f["description"].as_str().unwrap();
    assert!(d.starts_with("Edit files.") && d.contains(grammar) && d.contains("lark"));
    assert_eq!(chat_names(&t.chat), ["apply_patch", "shell"]);
    assert_eq!(
        t.chat["tool_choice"],
        json!({"type": "function", "function": {"name": "apply_patch"}})
    );
    let m = &t.chat["messages"];
    assert_eq!(
        m[1]["tool_calls"][0]["function"]["arguments"],
        json!({"input": "*** Begin Patch\n*** End Patch"}).to_string()
    );
    assert_eq!(
        m[2],
        json!({"role": "tool", "tool_call_id": "call_p", "content": "Done!"})
    );
    // The answer maps the function call back to a custom_tool_call with the raw input.
    let completion = json!({"id": "chatcmpl-1", "created": 5, "model": "m", "choices": [{"index": 0,
    "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_x", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\\n\"}"}},
        {"id": "call_y", "type": "function", "function": {"name": "apply_patch", "arguments": "not json"}},
        {"id": "call_z", "type": "function", "function": {"name": "shell", "arguments": "{\"cmd\":\"ls\"}"}}
    ]}}]});
    let r = answer::from_completion(completion.to_string().as_bytes(), &t.echo).unwrap();
    let out = r["output"].as_array().unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["type"], "custom_tool_call");
    assert_eq!(out[0]["call_id"], "call_x");
    assert_eq!(out[0]["name"], "apply_patch");
    assert_eq!(out[0]["input"], "*** Begin Patch\n");
    assert_eq!(out[1]["input"], "not json");
    assert_eq!(out[2]["type"], "function_call");
    assert_eq!(out[2]["arguments"], "{\"cmd\":\"ls\"}");
}

#[test]
fn hosted_tools_only_and_tool_choice_forms() {
    let t = tr(
        json!({"input": "x", "tools": [{"type": "web_search"}], "tool_choice": "required", "parallel_tool_calls": false}),
    );
    for k in ["tools", "tool_choice", "parallel_tool_calls"] {
        assert!(t.chat.get(k).is_none(), "{k}");
    }
    assert_eq!(t.echo.fields["tools"], json!([{"type": "web_search"}]));
    let tools = json!([{"type": "function", "name": "f", "parameters": {"type": "object"}}]);
    for (choice, want) in [
        (json!("none"), Some(json!("none"))),
        (json!("required"), Some(json!("required"))),
        (
            json!({"type": "function", "name": "f"}),
            Some(json!({"type": "function", "function": {"name": "f"}})),
        ),
        (
            json!({"type": "allowed_tools", "mode": "required", "tools": []}),
            Some(json!("required")),
        ),
        (json!({"type": "web_search"}), None),
    ] {
        let t = tr(json!({"input": "x", "tools": tools, "tool_choice": choice}));
        assert_eq!(t.chat.get("tool_choice").cloned(), want, "{choice}");
    }
}

#[test]
fn state_and_bad_input_are_refused_before_paying() {
    for (body, param) in [
        (
            json!({"input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (json!({"input": "x", "store": true}), "store"),
        (
            json!({"input": "x", "conversation": "conv_1"}),
            "conversation",
        ),
        (
            json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
            "input",
        ),
    ] {
        let e = translate(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(e.code(), "unsupported_parameter");
        assert_eq!(e.param(), Some(param));
        assert!(e.to_string().contains("keeps no conversation state"), "{e}");
        let b = crate::openai::error::body(&e);
        assert_eq!(b["error"]["type"], "invalid_request_error");
    }
    // `null` means absent.
    tr(json!({"input": "x", "previous_response_id": null, "store": false}));
    let (s, code, msg) = refused(json!({"input": [
        {"type": "function_call_output", "call_id": "nope", "output": "x"}]}));
    assert_eq!((s, code), (400, "invalid_tool_output"));
    assert!(msg.contains("nope"));
    let (s, code, msg) = refused(json!({"input": [
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}]}));
    assert_eq!((s, code), (400, "missing_tool_output"));
    assert!(msg.contains("c1"));
    let (_, code, _) = refused(json!({"input": [
        {"type": "function_call", "name": "f", "arguments": "{}"}]}));
    assert_eq!(code, "invalid_input_item");
    let (_, code, _) = refused(json!({"input": 5}));
    assert_eq!(code, "invalid_type");
    assert!(matches!(
        translate(b"{nope"),
        Err(ProxyError::InvalidJson(_))
    ));
    assert!(matches!(translate(b"[1]"), Err(ProxyError::InvalidJson(_))));
}

fn completion(message: Value, finish: &str) -> Vec<u8> {
    json!({"id": "chatcmpl-9", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini-2024",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
            "prompt_tokens_details": {"cached_tokens": 4}}})
    .to_string()
    .into_bytes()
}

#[test]
fn answer_text_usage_and_ids() {
    let echo = tr(json!({"model": "gpt-4o-mini", "input": "hi", "instructions": "be nice"})).echo;
    let body = completion(json!({"role": "assistant", "content": "hello"}), "stop");
    let r = answer::from_completion(&body, &echo).unwrap();
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["created_at"], 1700000000);
    assert_eq!(r["model"], "gpt-4o-mini-2024");
    assert_eq!(r["instructions"], "be nice");
    assert_eq!(r["store"], false);
    assert!(r["incomplete_details"].is_null());
    assert!(r["error"].is_null());
    assert!(r["id"].as_str().unwrap().starts_with("resp_"));
    let out = r["output"].as_array().unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["type"], "message");
    assert_eq!(out[0]["role"], "assistant");
    assert_eq!(out[0]["status"], "completed");
    assert!(out[0]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        out[0]["content"],
        json!([{"type": "output_text", "text": "hello", "annotations": [], "logprobs": []}])
    );
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 11, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 7,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 18})
    );
    // Stable: the same upstream bytes give the same ids; other bytes other ids.
    assert_eq!(answer::from_completion(&body, &echo).unwrap(), r);
    let other = completion(json!({"role": "assistant", "content": "hello!"}), "stop");
    assert_ne!(
        answer::from_completion(&other, &echo).unwrap()["id"],
        r["id"]
    );
    // Cut short → incomplete.
    let cut = answer::from_completion(
        &completion(json!({"role": "assistant", "content": "hel"}), "length"),
        &echo,
    )
    .unwrap();
    assert_eq!(cut["status"], "incomplete");
    assert_eq!(
        cut["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    // Refusal.
    let no = answer::from_completion(
        &completion(
            json!({"role": "assistant", "content": null, "refusal": "I can't"}),
            "stop",
        ),
        &echo,
    )
    .unwrap();
    assert_eq!(
        no["output"][0]["content"],
        json!([{"type": "refusal", "refusal": "I can't"}])
    );
    // Not a completion.
    assert!(answer::from_completion(b"{\"id\":1}", &echo).is_err());
    assert!(answer::from_completion(b"nope", &echo).is_err());
}

#[test]
fn answer_tool_calls_with_text_and_namespaces() {
    let echo = tr(
        json!({"input": "x", "tools": [{"type": "namespace", "name": "ns", "tools": [
        {"type": "function", "name": "close", "parameters": {"type": "object"}}]}]}),
    )
    .echo;
    let body = completion(
        json!({"role": "assistant", "content": "On it.", "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "ns__close", "arguments": "{\"t\":1}"}},
        {"id": "call_b", "type": "function", "function": {"name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"}}]}),
        "tool_calls",
    );
    let r = answer::from_completion(&body, &echo).unwrap();
    let out = r["output"].as_array().unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["content"][0]["text"], "On it.");
    assert_eq!(out[1]["type"], "function_call");
    assert_eq!(out[1]["name"], "close");
    assert_eq!(out[1]["namespace"], "ns");
    assert_eq!(out[1]["call_id"], "call_a");
    assert_eq!(out[2]["name"], "exec_command");
    assert_eq!(out[2]["arguments"], "{\"cmd\":\"ls\"}");
    assert!(out[2].get("namespace").is_none());
    let ids: std::collections::HashSet<&str> =
        out.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(r["status"], "completed");
}

#[test]
fn stream_event_lifecycle() {
    let echo = tr(json!({"model": "gpt-4o-mini", "input": "x"})).echo;
    let text = "héllo wörld ".repeat(60);
    let args = format!("{{\"cmd\":\"{}\"}}", "x".repeat(600));
    let body = completion(
        json!({"role": "assistant", "content": text, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "exec_command", "arguments": args}}]}),
        "tool_calls",
    );
    let r = answer::from_completion(&body, &echo).unwrap();
    let ev = stream::events(&r);
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["sequence_number"], i, "{e}");
    }
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let mut dedup = kinds.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(ev[0]["response"]["status"], "in_progress");
    assert_eq!(ev[0]["response"]["output"], json!([]));
    assert!(ev[0]["response"]["usage"].is_null());
    assert_eq!(ev[0]["response"]["id"], r["id"]);
    // Deltas reassemble to the full text and arguments (several pieces each, multi-byte safe).
    let joined = |k: &str| {
        let parts: Vec<&str> = ev
            .iter()
            .filter(|e| e["type"] == k)
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        (parts.len(), parts.concat())
    };
    let (n, t) = joined("response.output_text.delta");
    assert!(n > 1);
    assert_eq!(t, text);
    let (n, a) = joined("response.function_call_arguments.delta");
    assert!(n > 1);
    assert_eq!(a, args);
    let done = ev
        .iter()
        .find(|e| e["type"] == "response.output_text.done")
        .unwrap();
    assert_eq!(done["text"], text.as_str());
    assert_eq!(done["item_id"], r["output"][0]["id"]);
    assert_eq!(done["output_index"], 0);
    let added = ev
        .iter()
        .filter(|e| e["type"] == "response.output_item.added")
        .nth(1)
        .unwrap();
    assert_eq!(added["output_index"], 1);
    assert_eq!(added["item"]["arguments"], "");
    assert_eq!(added["item"]["call_id"], "call_a");
    assert_eq!(added["item"]["status"], "in_progress");
    let fdone = ev
        .iter()
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(fdone["arguments"], args.as_str());
    assert_eq!(fdone["name"], "exec_command");
    let items_done: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"] == "response.output_item.done")
        .map(|e| &e["item"])
        .collect();
    assert_eq!(
        items_done,
        r["output"].as_array().unwrap().iter().collect::<Vec<_>>()
    );
    let last = ev.last().unwrap();
    assert_eq!(last["response"], r);
    assert_eq!(last["response"]["usage"]["total_tokens"], 18);

    // SSE framing: an event line and a data line per event, no [DONE].
    let sse = String::from_utf8(stream::to_sse(&ev).to_vec()).unwrap();
    let blocks: Vec<&str> = sse.split("\n\n").filter(|b| !b.is_empty()).collect();
    assert_eq!(blocks.len(), ev.len());
    assert!(blocks[0].starts_with("event: response.created\ndata: {"));
    assert!(!sse.contains("[DONE]"));
}

#[test]
fn stream_custom_refusal_incomplete_and_failed() {
    let echo = tr(json!({"input": "x", "tools": [{"type": "custom", "name": "apply_patch"}]})).echo;
    let body = completion(
        json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_p", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"PATCH\"}"}}]}),
        "tool_calls",
    );
    let ev = stream::events(&answer::from_completion(&body, &echo).unwrap());
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.custom_tool_call_input.delta",
            "response.custom_tool_call_input.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(ev[2]["item"]["input"], "");
    assert_eq!(ev[4]["input"], "PATCH");
    assert_eq!(ev[5]["item"]["type"], "custom_tool_call");

    let refusal = completion(
        json!({"role": "assistant", "content": null, "refusal": "no"}),
        "stop",
    );
    let ev = stream::events(&answer::from_completion(&refusal, &echo).unwrap());
    assert!(
        ev.iter()
            .any(|e| e["type"] == "response.refusal.done" && e["refusal"] == "no")
    );
    assert!(ev.iter().any(|e| e["type"] == "response.refusal.delta"));

    let cut = completion(json!({"role": "assistant", "content": "ab"}), "length");
    let ev = stream::events(&answer::from_completion(&cut, &echo).unwrap());
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );

    let err =
        json!({"message": "boom", "type": "upstream_error", "code": "payment_outcome_unknown"});
    let f = answer::failed(&err, 7, &echo);
    let ev = stream::failed(&f);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["type"], "response.failed");
    assert_eq!(ev[0]["sequence_number"], 0);
    assert_eq!(ev[0]["response"]["status"], "failed");
    assert_eq!(
        ev[0]["response"]["error"],
        json!({"code": "payment_outcome_unknown", "message": "boom"})
    );
}
