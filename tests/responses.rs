//! The OpenAI Responses API front door (`POST /v1/responses`) through the real
//! server: translated to one paid chat completion, answered as a `response`
//! object or the Responses event stream, under the same caps, allow-lists, tier
//! routing, retry coalescing, heartbeats and error rules as chat.

mod common;
use common::*;
use serde_json::{Value, json};

const SEPOLIA: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n";

/// An SSE body as (comments, events); each event is its `data` JSON, checked
/// against its `event:` line.
fn parse_events(body: &[u8]) -> (Vec<String>, Vec<Value>) {
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.ends_with("\n\n"), "{text:?}");
    let (mut comments, mut events) = (Vec::new(), Vec::new());
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        if let Some(c) = block.strip_prefix(": ") {
            comments.push(c.to_string());
            continue;
        }
        let (ev, data) = block.split_once('\n').unwrap();
        let kind = ev.strip_prefix("event: ").unwrap();
        let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["type"], kind);
        events.push(v);
    }
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i);
    }
    (comments, events)
}

async fn responses(d: &Daemon, path: &str, key: &str, body: Value) -> Reply {
    let auth = format!("Bearer {key}");
    request(
        "POST",
        &d.url(path),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn plain_and_streamed_answers_are_paid_once_each() {
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = responses(
        &d,
        "/v1/responses",
        "k",
        json!({"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "hi",
            "max_output_tokens": 20, "metadata": {"m": "1"}, "store": false}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("x-x402d-cost").as_deref(), Some("0.001"));
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["instructions"], "Be brief.");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["text"], "paid hello");
    assert_eq!(v["usage"]["input_tokens"], 3);
    assert_eq!(v["usage"]["output_tokens"], 2);
    assert_eq!(v["usage"]["total_tokens"], 5);
    // Upstream: one chat completion, translated, not streaming, metadata not forwarded.
    let c = seller.counts();
    assert_eq!(c.verified, 1);
    assert_eq!(c.paths.last().unwrap(), "/v1/chat/completions");
    let sent: Value = serde_json::from_slice(c.bodies.last().unwrap()).unwrap();
    assert_eq!(
        sent,
        json!({"model": "gpt-4o-mini", "stream": false, "max_tokens": 20, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]})
    );

    let r = responses(
        &d,
        "/v1/responses",
        "k",
        json!({"model": "gpt-4o-mini", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
            "stream": true}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(r.header("x-x402d-cost").as_deref(), Some("0.001"));
    let (_, ev) = parse_events(&r.body);
    assert_eq!(
        kinds(&ev),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(ev[4]["delta"], "paid hello");
    let done = &ev[8]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["usage"]["total_tokens"], 5);
    assert_eq!(done["output"][0]["content"][0]["text"], "paid hello");
    let c = seller.counts();
    assert_eq!(c.verified, 2);
    let sent: Value = serde_json::from_slice(c.bodies.last().unwrap()).unwrap();
    assert_eq!(sent["stream"], false);
    assert_eq!(d.payments().len(), 2);
}

#[tokio::test]
async fn codex_request_gets_a_streamed_tool_call() {
    let completion = json!({
        "id": "chatcmpl-codex", "object": "chat.completion", "created": 1764115200, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_exec", "type": "function",
                "function": {"name": "exec_command", "arguments": "{\"cmd\":\"echo hi\"}"}}]}}],
        "usage": {"prompt_tokens": 900, "completion_tokens": 9, "total_tokens": 909}
    });
    let seller = Seller::start(SellerCfg {
        completion: Some(completion.to_string()),
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let captured: Value =
        serde_json::from_str(include_str!("fixtures/codex-0.169.0-first-request.json")).unwrap();
    let r = responses(&d, "/v1/responses", "sk-codex", captured["body"].clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, ev) = parse_events(&r.body);
    let item = ev
        .iter()
        .find(|e| e["type"] == "response.output_item.done")
        .unwrap();
    assert_eq!(item["item"]["type"], "function_call");
    assert_eq!(item["item"]["name"], "exec_command");
    assert_eq!(item["item"]["call_id"], "call_exec");
    assert_eq!(item["item"]["arguments"], "{\"cmd\":\"echo hi\"}");
    assert_eq!(ev.last().unwrap()["type"], "response.completed");
    let c = seller.counts();
    assert_eq!(c.verified, 1);
    let sent: Value = serde_json::from_slice(c.bodies.last().unwrap()).unwrap();
    let names: Vec<&str> = sent["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"exec_command"));
    assert!(!names.iter().any(|n| n.contains("web_search")));
    assert!(sent.get("reasoning").is_none() && sent.get("include").is_none());
}

const TIERED: &str = r#"{"object":"list","data":[
 {"id":"gpt-4o-mini","object":"model","created":1,"owned_by":"openai","tier":"budget"},
 {"id":"claude-opus-4","object":"model","created":3,"owned_by":"anthropic","tier":"premium"}]}"#;

#[tokio::test]
async fn caps_allow_lists_and_tiers_apply() {
    let seller = Seller::start(SellerCfg {
        models_body: Some(TIERED.into()),
        ..Default::default()
    })
    .await;
    let cfg = format!(
        "{SEPOLIA}[apps.capped]\napi_key = \"sk-capped\"\nmax_per_call = \"0.01\"\ndaily = \"0.0015\"\n\
         [apps.picky]\napi_key = \"sk-picky\"\nmodels = [\"gpt-4o-mini\"]\n\
         [apps.cheap]\napi_key = \"sk-cheap\"\ntiers = [\"budget\"]\n"
    );
    let d = Daemon::start(&seller.url(), &cfg);
    // The model list (and so the tier of each model) is known before the calls.
    assert_eq!(
        request("GET", &d.url("/v1/models"), &[], "").await.status,
        200
    );
    let ask = |stream: bool| json!({"model": "gpt-4o-mini", "input": "hi", "stream": stream});
    // The cap: one call fits, the next is refused before any signature, streaming or not.
    assert_eq!(
        responses(&d, "/v1/responses", "sk-capped", ask(false))
            .await
            .status,
        200
    );
    for stream in [false, true] {
        let r = responses(&d, "/v1/responses", "sk-capped", ask(stream)).await;
        assert_eq!(r.status, 402);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
        assert_eq!(r.json()["error"]["type"], "budget_exceeded");
        assert_eq!(r.json()["error"]["code"], "app_daily_cap_exceeded");
    }
    assert_eq!(seller.counts().payment_attempts, 1);
    // The model allow-list.
    let r = responses(
        &d,
        "/v1/responses",
        "sk-picky",
        json!({"model": "gpt-4o", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "model_not_allowed");
    assert_eq!(r.json()["error"]["param"], "model");
    // Tiers: by path, and by model on the plain path; an app limited to budget is refused premium.
    let opus = json!({"model": "claude-opus-4", "input": "hi"});
    assert_eq!(
        responses(&d, "/v1/pro/responses", "k", ask(false))
            .await
            .status,
        200
    );
    assert_eq!(
        responses(&d, "/v1/responses", "k", opus.clone())
            .await
            .status,
        200
    );
    let r = responses(&d, "/v1/responses", "sk-cheap", opus).await;
    assert_eq!(r.status, 403);
    let chat_paths: Vec<String> = seller
        .counts()
        .paths
        .into_iter()
        .filter(|p| p.contains("chat"))
        .collect();
    // Each paid call is seen twice by the seller (the 402 probe and the paid request);
    // the two capped calls once (the probe that tells the price).
    assert_eq!(
        chat_paths,
        [
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/pro/chat/completions",
            "/v1/pro/chat/completions",
            "/v1/premium/chat/completions",
            "/v1/premium/chat/completions"
        ]
    );
    assert_eq!(seller.counts().verified, 3);
}

#[tokio::test]
async fn unsupported_state_and_bad_input_are_400_before_paying() {
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    for (body, param, code) in [
        (
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
            "unsupported_parameter",
        ),
        (
            json!({"model": "m", "input": "x", "store": true}),
            "store",
            "unsupported_parameter",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}),
            "input",
            "invalid_tool_output",
        ),
    ] {
        let r = responses(&d, "/v1/responses", "k", body).await;
        assert_eq!(r.status, 400);
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["param"], param);
        assert_eq!(e["code"], code);
        assert!(e["message"].is_string());
        assert_eq!(r.header("x-x402d-error").as_deref(), Some(code));
    }
    let r = request(
        "POST",
        &d.url("/v1/responses"),
        &[("authorization", "Bearer k")],
        "{nope",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_json");
    let r = request("GET", &d.url("/v1/responses/resp_1"), &[], "").await;
    assert_eq!(r.status, 404);
    assert_eq!(seller.counts().requests, 0, "nothing reached the seller");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_coalesce_and_get_the_same_answer() {
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 800,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let url = d.url("/v1/responses");
    let send = |stream: bool| {
        let url = url.clone();
        async move {
            let body = json!({"model": "gpt-4o-mini", "input": "hi", "stream": stream}).to_string();
            request(
                "POST",
                &url,
                &[("authorization", "Bearer k"), ("idempotency-key", "same")],
                body,
            )
            .await
        }
    };
    let first = tokio::spawn(send(false));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let retry = send(false).await;
    let first = first.await.unwrap();
    assert_eq!((first.status, retry.status), (200, 200));
    assert_eq!(first.body, retry.body, "same response, same ids");
    assert_eq!(seller.counts().verified, 1);
    // The same call asked as a stream is the same upstream call: its answer, as events.
    let a = send(true).await;
    let (_, ev) = parse_events(&a.body);
    let done = &ev.last().unwrap()["response"];
    assert_eq!(done["id"], first.json()["id"]);
    assert_eq!(done["output"], first.json()["output"]);
    assert_eq!(seller.counts().verified, 1);
}

#[tokio::test]
async fn slow_payment_heartbeats_then_events_and_late_errors_are_response_failed() {
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 2500,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let ask = json!({"model": "gpt-4o-mini", "input": "hi", "stream": true});
    let r = responses(&d, "/v1/responses", "k", ask.clone()).await;
    assert_eq!(r.status, 200);
    let (comments, ev) = parse_events(&r.body);
    assert!(!comments.is_empty());
    assert!(comments.iter().all(|c| c == "x402d waiting"));
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.find(": x402d waiting").unwrap() < text.find("event: ").unwrap());
    assert_eq!(ev[0]["type"], "response.created");
    assert_eq!(ev.last().unwrap()["type"], "response.completed");

    seller.set(|c| c.after_pay = AfterPay::Fail500);
    let r = responses(
        &d,
        "/v1/responses",
        "k",
        json!({"model": "gpt-4o-mini", "input": "again", "stream": true}),
    )
    .await;
    assert_eq!(r.status, 200);
    let (_, ev) = parse_events(&r.body);
    assert_eq!(kinds(&ev), ["response.failed"]);
    let resp = &ev[0]["response"];
    assert_eq!(resp["status"], "failed");
    assert_eq!(resp["error"]["message"], "model crashed");
    assert_eq!(seller.counts().verified, 2);
}

#[tokio::test]
async fn custom_and_namespaced_tool_calls_map_back() {
    let patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch";
    let completion = json!({
        "id": "chatcmpl-tools", "object": "chat.completion", "created": 1764115200, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [
                {"id": "call_p", "type": "function", "function": {"name": "apply_patch", "arguments": json!({"input": patch}).to_string()}},
                {"id": "call_n", "type": "function", "function": {"name": "agents__close", "arguments": "{\"id\":\"a1\"}"}}
            ]}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18}
    });
    let seller = Seller::start(SellerCfg {
        completion: Some(completion.to_string()),
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let body = json!({"model": "gpt-4o-mini", "input": "add a file", "stream": true, "tools": [
        {"type": "custom", "name": "apply_patch", "description": "Edit files.",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: patch"}},
        {"type": "namespace", "name": "agents", "description": "Sub-agents.", "tools": [
            {"type": "function", "name": "close", "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}]},
        {"type": "web_search"}
    ]});
    let r = responses(&d, "/v1/responses", "k", body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, ev) = parse_events(&r.body);
    let items: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"] == "response.output_item.done")
        .map(|e| &e["item"])
        .collect();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["type"], "custom_tool_call");
    assert_eq!(items[0]["name"], "apply_patch");
    assert_eq!(items[0]["call_id"], "call_p");
    assert_eq!(items[0]["input"], patch);
    assert!(
        ev.iter()
            .any(|e| e["type"] == "response.custom_tool_call_input.done" && e["input"] == patch)
    );
    assert_eq!(items[1]["type"], "function_call");
    assert_eq!(items[1]["name"], "close");
    assert_eq!(items[1]["namespace"], "agents");
    assert_eq!(items[1]["arguments"], "{\"id\":\"a1\"}");
    // What the upstream was offered: two functions, the hosted tool left out.
    let sent: Value = serde_json::from_slice(seller.counts().bodies.last().unwrap()).unwrap();
    let names: Vec<&str> = sent["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["apply_patch", "agents__close"]);
    assert_eq!(seller.counts().verified, 1);
}

/// Codex CLI retries a failed turn without marking it, within one session: the
/// same body again in that session joins the call that already moved money.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_unmarked_retries_in_one_session_never_pay_twice() {
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::Fail500,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let send = |session: &'static str, input: &'static str| {
        let url = d.url("/v1/responses");
        async move {
            let body = json!({"model": "gpt-4o-mini", "input": input}).to_string();
            request(
                "POST",
                &url,
                &[
                    ("authorization", "Bearer k"),
                    ("originator", "codex_exec"),
                    ("session-id", session),
                ],
                body,
            )
            .await
        }
    };
    // Paid, then the seller failed: the payment is at risk and Codex retries.
    let first = send("s1", "hi").await;
    assert_eq!(
        first.status,
        500,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    // Distinct signatures (x402d may re-send the same one to recover the answer).
    let signatures = || {
        let mut n = seller.counts().nonces;
        n.sort();
        n.dedup();
        n.len()
    };
    let signed_once = signatures();
    assert_eq!(signed_once, 1);
    let retry = send("s1", "hi").await;
    assert_eq!(retry.status, first.status);
    assert_eq!(
        retry.body, first.body,
        "the retry gets the first call's outcome"
    );
    assert_eq!(signatures(), signed_once, "no new payment");
    // A new turn (a different body) or another session is a new call.
    send("s1", "next").await;
    assert_eq!(signatures(), 2);
    send("s2", "hi").await;
    assert_eq!(signatures(), 3);
}
