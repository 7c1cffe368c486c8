//! OpenAI client compatibility through the real server: synthesized streaming,
//! tier routing, the merged model list, and retries that never pay twice.

mod common;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const SEPOLIA: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n";

fn tool_completion() -> String {
    json!({
        "id": "chatcmpl-tools", "object": "chat.completion", "created": 1764115200,
        "model": "gpt-4o-mini", "system_fingerprint": "fp_x402d",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check. ".repeat(40),
            "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"c\"}"}}]}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
    })
    .to_string()
}

/// Parses an SSE body: (comments, data payloads in order).
fn parse_sse(body: &[u8]) -> (Vec<String>, Vec<String>) {
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.ends_with("\n\n"),
        "events end with a blank line: {text:?}"
    );
    let (mut comments, mut data) = (Vec::new(), Vec::new());
    for ev in text.split("\n\n").filter(|e| !e.is_empty()) {
        if let Some(c) = ev.strip_prefix(": ") {
            comments.push(c.to_string());
        } else if let Some(d) = ev.strip_prefix("data: ") {
            assert!(!d.contains('\n'), "one line per event");
            data.push(d.to_string());
        } else {
            panic!("unexpected SSE line {ev:?}");
        }
    }
    (comments, data)
}

async fn stream_call(d: &Daemon, key: &str, extra: Value) -> Reply {
    let mut body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "weather?"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let auth = format!("Bearer {key}");
    request(
        "POST",
        &d.url("/v1/chat/completions"),
        &[("authorization", &auth)],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn stream_is_synthesized_from_the_paid_completion() {
    let seller = Seller::start(SellerCfg {
        completion: Some(tool_completion()),
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = stream_call(&d, "k", json!({"stream_options": {"include_usage": true}})).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(r.header("x-x402d-cost").as_deref(), Some("0.001"));
    let (_, data) = parse_sse(&r.body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let events: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let (mut content, mut args, mut finish, mut usage) = (String::new(), String::new(), None, None);
    let (mut id, mut name) = (None, None);
    for e in &events {
        assert_eq!(e["object"], "chat.completion.chunk");
        assert_eq!(e["id"], "chatcmpl-tools");
        assert_eq!(e["system_fingerprint"], "fp_x402d");
        if let Some(u) = e.get("usage") {
            usage = Some(u.clone());
            continue;
        }
        let ch = &e["choices"][0];
        content.push_str(ch["delta"]["content"].as_str().unwrap_or(""));
        if let Some(tc) = ch["delta"]["tool_calls"].as_array() {
            assert_eq!(tc[0]["index"], 0);
            if tc[0].get("id").is_some() {
                id = tc[0]["id"].as_str().map(str::to_string);
                name = tc[0]["function"]["name"].as_str().map(str::to_string);
            }
            args.push_str(tc[0]["function"]["arguments"].as_str().unwrap());
        }
        if !ch["finish_reason"].is_null() {
            finish = Some(ch["finish_reason"].clone());
        }
    }
    assert_eq!(content, "Let me check. ".repeat(40));
    assert_eq!(
        (id.as_deref(), name.as_deref()),
        (Some("call_1"), Some("get_weather"))
    );
    assert_eq!(args, "{\"city\":\"Paris\",\"unit\":\"c\"}");
    assert_eq!(finish, Some(json!("tool_calls")));
    assert_eq!(usage.unwrap()["total_tokens"], 21);
    // Upstream got stream:false and no stream_options; paid once.
    let c = seller.counts();
    assert_eq!(c.verified, 1);
    let sent: Value = serde_json::from_slice(c.bodies.last().unwrap()).unwrap();
    assert_eq!(sent["stream"], false);
    assert!(sent.get("stream_options").is_none());
    // Non-streaming calls stay byte for byte.
    let r = chat(&d, "k").await;
    assert_eq!(&r.body[..], tool_completion().as_bytes());
}

#[tokio::test]
async fn slow_payment_streams_heartbeats_then_the_answer() {
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 3500,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = stream_call(&d, "k", json!({})).await;
    assert_eq!(r.status, 200);
    let (comments, data) = parse_sse(&r.body);
    assert!(comments.len() >= 2, "heartbeats every 2 s: {comments:?}");
    assert!(comments.iter().all(|c| c == "x402d waiting"));
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.find(": x402d waiting").unwrap() < text.find("data: ").unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let content: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "paid hello");
}

#[tokio::test]
async fn errors_after_the_stream_started_are_error_events() {
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 2500,
        after_pay: AfterPay::Fail500,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let r = stream_call(&d, "k", json!({})).await;
    assert_eq!(r.status, 200);
    let (_, data) = parse_sse(&r.body);
    let err: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(err["error"]["message"], "model crashed");
    assert_eq!(seller.counts().verified, 1);
}

#[tokio::test]
async fn errors_known_before_the_stream_are_plain_http() {
    let seller = Seller::start(SellerCfg::default()).await;
    let cfg = format!("{SEPOLIA}[apps.a]\napi_key = \"sk-a\"\ndaily = \"0.0005\"\n");
    let d = Daemon::start(&seller.url(), &cfg);
    let r = stream_call(&d, "sk-a", json!({})).await;
    assert_eq!(r.status, 402);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.json()["error"]["type"], "budget_exceeded");
    assert_eq!(seller.counts().payment_attempts, 0);
}

const TIERED: &str = r#"{"object":"list","data":[
 {"id":"openai/gpt-4o-mini","object":"model","created":1,"owned_by":"openai","tier":"budget"},
 {"id":"openai/gpt-4o","object":"model","created":2,"owned_by":"openai","tier":"pro"},
 {"id":"anthropic/claude-opus-4","object":"model","created":3,"owned_by":"anthropic","tier":"premium"}]}"#;

#[tokio::test]
async fn tiers_route_by_model_and_the_model_list_is_merged() {
    let seller = Seller::start(SellerCfg {
        models_body: Some(TIERED.into()),
        ..Default::default()
    })
    .await;
    let cfg = format!(
        "{SEPOLIA}[apps.cheap]\napi_key = \"sk-cheap\"\ntiers = [\"budget\", \"pro\"]\n\
         [apps.minis]\napi_key = \"sk-minis\"\nmodels = [\"*mini*\"]\n[tiers]\n\"gpt-4o\" = \"premium\"\n"
    );
    let d = Daemon::start(&seller.url(), &cfg);
    let list = request("GET", &d.url("/v1/models"), &[], "").await.json();
    let tiers: Vec<(String, String)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().into(),
                m["tier"].as_str().unwrap().into(),
            )
        })
        .collect();
    // `[tiers]` overrides the upstream (gpt-4o → premium).
    assert_eq!(
        tiers,
        vec![
            ("openai/gpt-4o-mini".into(), "budget".into()),
            ("openai/gpt-4o".into(), "premium".into()),
            ("anthropic/claude-opus-4".into(), "premium".into())
        ]
    );
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["object"], "model");
    // Apps see only what they may use.
    let minis = request(
        "GET",
        &d.url("/v1/models"),
        &[("authorization", "Bearer sk-minis")],
        "",
    )
    .await
    .json();
    assert_eq!(minis["data"].as_array().unwrap().len(), 1);
    let cheap = request(
        "GET",
        &d.url("/v1/models"),
        &[("authorization", "Bearer sk-cheap")],
        "",
    )
    .await
    .json();
    assert_eq!(cheap["data"].as_array().unwrap().len(), 1);

    let call = |model: &'static str, key: &'static str| {
        let url = d.url("/v1/chat/completions");
        async move {
            let body = json!({"model": model, "messages": []}).to_string();
            let auth = format!("Bearer {key}");
            request("POST", &url, &[("authorization", &auth)], body).await
        }
    };
    assert_eq!(call("claude-opus-4", "k").await.status, 200);
    assert_eq!(call("gpt-4o-mini", "k").await.status, 200);
    assert_eq!(call("unknown-model", "k").await.status, 200);
    let r = call("anthropic/claude-opus-4", "sk-cheap").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "model_not_allowed");
    let paths = seller.counts().paths;
    let chat_paths: Vec<_> = paths.iter().filter(|p| p.contains("chat")).collect();
    assert_eq!(
        chat_paths,
        vec![
            "/v1/premium/chat/completions",
            "/v1/premium/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_in_flight_and_after_completion_pay_once() {
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 800,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let url = d.url("/v1/chat/completions");
    let send = |retry: &'static str| {
        let url = url.clone();
        async move {
            request(
                "POST",
                &url,
                &[
                    ("authorization", "Bearer k"),
                    ("x-stainless-retry-count", retry),
                ],
                CHAT,
            )
            .await
        }
    };
    let first = tokio::spawn(send("0"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let retry = send("1").await;
    let first = first.await.unwrap();
    assert_eq!((first.status, retry.status), (200, 200));
    assert_eq!(first.body, retry.body);
    assert_eq!(
        seller.counts().verified,
        1,
        "the in-flight retry did not pay"
    );
    // After completion, within 60 s: still the first result.
    let again = send("2").await;
    assert_eq!(again.status, 200);
    assert_eq!(seller.counts().verified, 1);
    // The same question asked anew (no retry marker) is a new call.
    assert_eq!(send("0").await.status, 200);
    assert_eq!(seller.counts().verified, 2);
    // Idempotency-Key: same key → one payment, even without a retry count.
    let idem = |k: &'static str| {
        let url = url.clone();
        async move {
            request(
                "POST",
                &url,
                &[("authorization", "Bearer k"), ("idempotency-key", k)],
                CHAT,
            )
            .await
        }
    };
    assert_eq!(idem("abc").await.status, 200);
    assert_eq!(idem("abc").await.status, 200);
    assert_eq!(seller.counts().verified, 3);
    assert_eq!(idem("xyz").await.status, 200);
    assert_eq!(seller.counts().verified, 4);
}

#[tokio::test]
async fn sdk_style_retries_after_a_paid_500_do_not_pay_again() {
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::Fail500,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    // What an SDK that ignored x-should-retry would do: the same request, retry count 1 and 2.
    for n in ["0", "1", "2"] {
        let r = request(
            "POST",
            &d.url("/v1/chat/completions"),
            &[
                ("authorization", "Bearer k"),
                ("x-stainless-retry-count", n),
            ],
            CHAT,
        )
        .await;
        assert_eq!(r.status, 500);
        assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    }
    // x402d itself re-sent the one payment (same bytes) to recover the answer;
    // the SDK's retries added nothing.
    let c = seller.counts();
    assert_eq!(c.verified, 1);
    assert_eq!(c.distinct_payments(), 1);
    assert_eq!(c.payment_attempts, 2);
    assert_eq!(d.payments().len(), 1);
}

#[tokio::test]
async fn retries_after_an_unpaid_transient_error_really_retry() {
    let seller = Seller::start(SellerCfg {
        unpaid_status: 503,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let send = |retry: &'static str| {
        let url = d.url("/v1/chat/completions");
        async move {
            request(
                "POST",
                &url,
                &[
                    ("authorization", "Bearer k"),
                    ("x-stainless-retry-count", retry),
                ],
                CHAT,
            )
            .await
        }
    };
    assert_eq!(send("0").await.status, 503);
    seller.set(|c| c.unpaid_status = 402);
    // Nothing was signed for the first attempt, so the retry goes upstream again and pays.
    assert_eq!(send("1").await.status, 200);
    assert_eq!(seller.counts().requests, 3);
    assert_eq!(seller.counts().verified, 1);
}

#[tokio::test]
async fn a_new_identical_call_failing_unpaid_does_not_make_a_retry_pay_again() {
    let seller = Seller::start(SellerCfg::default()).await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let send = |retry: &'static str| {
        let url = d.url("/v1/chat/completions");
        async move {
            request(
                "POST",
                &url,
                &[
                    ("authorization", "Bearer k"),
                    ("x-stainless-retry-count", retry),
                ],
                CHAT,
            )
            .await
        }
    };
    // Call A pays.
    let a = send("0").await;
    assert_eq!(a.status, 200);
    assert_eq!(seller.counts().verified, 1);
    // Call B: the same request without a retry marker, a new call; it fails unpaid.
    seller.set(|c| c.unpaid_status = 500);
    assert_eq!(send("0").await.status, 500);
    seller.set(|c| c.unpaid_status = 402);
    // A retry of A gets A's paid answer: no second payment.
    let retry = send("1").await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.body, a.body);
    assert_eq!(seller.counts().verified, 1, "the retry of A paid again");
    assert_eq!(d.payments().len(), 1);
}
