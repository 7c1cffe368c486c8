//! The Anthropic Messages front door through the real server: translation both
//! ways, the event stream, caps, tier routing, allow-lists, retry coalescing,
//! heartbeats and Anthropic-shaped errors. Claude Code and the SDKs themselves
//! run in the interop suite (tests/interop).

mod common;
use common::*;
use serde_json::{Value, json};

const SEPOLIA: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n";

const MODELS: &str = r#"{"object":"list","data":[
  {"id":"anthropic/claude-haiku-4.5","tier":"budget"},
  {"id":"anthropic/claude-sonnet-4.5","tier":"pro"},
  {"id":"anthropic/claude-opus-4.1","tier":"premium"},
  {"id":"gpt-4o-mini","tier":"budget"}]}"#;

const TOOL_COMPLETION: &str = r#"{"id":"chatcmpl-tool","object":"chat.completion","created":1,"model":"anthropic/claude-haiku-4.5",
  "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":null,
  "tool_calls":[{"id":"call_1","type":"function","function":{"name":"Bash","arguments":"{\"command\":\"ls\"}"}}]}}],
  "usage":{"prompt_tokens":30,"completion_tokens":9,"total_tokens":39}}"#;

async fn seller() -> Seller {
    Seller::start(SellerCfg {
        models_body: Some(MODELS.into()),
        ..Default::default()
    })
    .await
}

fn config(extra: &str) -> String {
    format!(
        "{SEPOLIA}[apps.claude]\napi_key = \"sk-claude\"\n\
         [apps.capped]\napi_key = \"sk-capped\"\ndaily = \"0.001\"\n\
         [apps.picky]\napi_key = \"sk-picky\"\nmodels = [\"gpt-4o-mini\"]\n\
         [models]\n\"claude-opus-5-5\" = \"anthropic/claude-opus-4.1\"\n{extra}"
    )
}

fn msg(model: &str, stream: bool) -> String {
    json!({"model": model, "max_tokens": 1024, "stream": stream,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "adaptive"}, "metadata": {"user_id": "u1"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    .to_string()
}

async fn post(d: &Daemon, path: &str, headers: &[(&str, &str)], body: String) -> Reply {
    let mut h = vec![
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
    ];
    h.extend_from_slice(headers);
    request("POST", &d.url(path), &h, body).await
}

fn assert_anthropic_error(r: &Reply, status: u16, kind: &str) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
}

/// SSE events as (name, data).
fn events(body: &[u8]) -> Vec<(String, Value)> {
    std::str::from_utf8(body)
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            (name, data)
        })
        .collect()
}

#[tokio::test]
async fn messages_answer_is_paid_once_and_translated() {
    let s = seller().await;
    let d = Daemon::start(&s.url(), &config(""));
    let r = post(
        &d,
        "/v1/messages?beta=true",
        &[("x-api-key", "sk-claude"), ("x-stainless-retry-count", "0")],
        msg("claude-haiku-4-5-20251001", false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-haiku-4-5-20251001");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "paid hello"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 3);
    assert_eq!(v["usage"]["output_tokens"], 2);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(r.header("x-x402d-cost").as_deref(), Some("0.001"));
    let c = s.counts();
    assert_eq!((c.verified, c.payment_attempts), (1, 1));
    assert_eq!(c.paths.last().unwrap(), "/v1/chat/completions");
    let sent: Value = serde_json::from_slice(c.bodies.last().unwrap()).unwrap();
    assert_eq!(sent["model"], "anthropic/claude-haiku-4.5");
    assert_eq!(sent["stream"], false);
    assert_eq!(sent["max_tokens"], 1024);
    assert_eq!(sent["user"], "u1");
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    assert!(sent.get("thinking").is_none());
    assert_eq!(d.payments().len(), 1);
    assert_eq!(d.payments()[0]["app"], "claude");
}

#[tokio::test]
async fn bearer_key_and_alias_and_tier_routing() {
    let s = seller().await;
    let d = Daemon::start(&s.url(), &config(""));
    // `[models]` alias → a premium model: paid at the premium route.
    let r = post(
        &d,
        "/v1/messages",
        &[("authorization", "Bearer sk-claude")],
        msg("claude-opus-5-5", false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["model"], "claude-opus-5-5");
    let c = s.counts();
    assert_eq!(c.paths.last().unwrap(), "/v1/premium/chat/completions");
    let sent: Value = serde_json::from_slice(c.bodies.last().unwrap()).unwrap();
    assert_eq!(sent["model"], "anthropic/claude-opus-4.1");
    // An upstream id passes as it is.
    let r = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-claude")],
        msg("anthropic/claude-sonnet-4.5", false),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.counts().paths.last().unwrap(), "/v1/pro/chat/completions");
    assert_eq!(s.counts().verified, 2);
}

#[tokio::test]
async fn stream_event_shape_with_tool_use() {
    let s = Seller::start(SellerCfg {
        models_body: Some(MODELS.into()),
        completion: Some(TOOL_COMPLETION.into()),
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&s.url(), &config(""));
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 100, "stream": true,
        "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object",
            "properties": {"command": {"type": "string"}}, "required": ["command"]}},
            {"type": "web_search_20250305", "name": "web_search"}],
        "messages": [{"role": "user", "content": "list files"}]})
    .to_string();
    let r = post(&d, "/v1/messages", &[("x-api-key", "sk-claude")], body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let ev = events(&r.body);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| **n != "ping")
            .copied()
            .collect::<Vec<_>>(),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (n, data) in &ev {
        assert_eq!(data["type"], n.as_str());
    }
    let start = &ev
        .iter()
        .find(|(n, _)| n == "content_block_start")
        .unwrap()
        .1;
    assert_eq!(
        start["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "Bash", "input": {}})
    );
    let delta = &ev
        .iter()
        .find(|(n, _)| n == "content_block_delta")
        .unwrap()
        .1;
    assert_eq!(delta["delta"]["type"], "input_json_delta");
    assert_eq!(delta["delta"]["partial_json"], "{\"command\":\"ls\"}");
    let md = &ev.iter().find(|(n, _)| n == "message_delta").unwrap().1;
    assert_eq!(md["delta"]["stop_reason"], "tool_use");
    assert_eq!(md["usage"]["output_tokens"], 9);
    let sent: Value = serde_json::from_slice(s.counts().bodies.last().unwrap()).unwrap();
    assert_eq!(sent["stream"], false);
    assert_eq!(
        sent["tools"].as_array().unwrap().len(),
        1,
        "server tool left out"
    );
    assert_eq!(sent["tools"][0]["function"]["name"], "Bash");
    assert_eq!(s.counts().verified, 1);
}

#[tokio::test]
async fn slow_payment_streams_ping_heartbeats() {
    let s = Seller::start(SellerCfg {
        models_body: Some(MODELS.into()),
        paid_delay_ms: 2500,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&s.url(), &config(""));
    let r = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-claude")],
        msg("claude-haiku-4-5", true),
    )
    .await;
    assert_eq!(r.status, 200);
    let ev = events(&r.body);
    assert_eq!(ev[0].0, "ping", "heartbeat before the message");
    assert_eq!(ev[0].1, json!({"type": "ping"}));
    assert!(
        !String::from_utf8_lossy(&r.body).contains(": x402d"),
        "no SSE comments"
    );
    let text: String = ev
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "paid hello");
    assert_eq!(ev.last().unwrap().0, "message_stop");
    assert_eq!(s.counts().verified, 1);
}

#[tokio::test]
async fn sdk_retry_is_coalesced_not_paid_again() {
    let s = seller().await;
    let d = Daemon::start(&s.url(), &config(""));
    let body = msg("claude-haiku-4-5", false);
    let a = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-claude"), ("x-stainless-retry-count", "0")],
        body.clone(),
    )
    .await;
    let b = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-claude"), ("x-stainless-retry-count", "1")],
        body.clone(),
    )
    .await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.json()["id"], b.json()["id"]);
    assert_eq!(s.counts().verified, 1, "the retry reused the first answer");
    assert_eq!(s.counts().requests, 2, "one 402 probe + one paid request");
    // Without a retry marker the same question is a new call.
    let c = post(&d, "/v1/messages", &[("x-api-key", "sk-claude")], body).await;
    assert_eq!(c.status, 200);
    assert_eq!(s.counts().verified, 2);
}

/// Claude Code retries on its own, always with `x-stainless-retry-count: 0`; the
/// same request again in the same session must not pay twice.
#[tokio::test]
async fn claude_code_session_retry_is_coalesced() {
    let s = seller().await;
    let d = Daemon::start(&s.url(), &config(""));
    let body = msg("claude-haiku-4-5", true);
    let h = [
        ("x-api-key", "sk-claude"),
        ("x-stainless-retry-count", "0"),
        (
            "x-claude-code-session-id",
            "7de7fda3-b80e-44ca-9868-294174ebb531",
        ),
    ];
    let a = post(&d, "/v1/messages?beta=true", &h, body.clone()).await;
    let b = post(&d, "/v1/messages?beta=true", &h, body.clone()).await;
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.body, b.body, "the retry got the first answer");
    assert_eq!(s.counts().verified, 1);
    // Another session asking the same is a new call.
    let other = [
        ("x-api-key", "sk-claude"),
        ("x-claude-code-session-id", "another-session"),
    ];
    let c = post(&d, "/v1/messages?beta=true", &other, body.clone()).await;
    assert_eq!(c.status, 200);
    assert_eq!(s.counts().verified, 2);
    // The next turn (a longer history) in the first session is a new call too.
    let next = json!({"model": "claude-haiku-4-5", "max_tokens": 1024, "stream": true, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "paid hello"},
        {"role": "user", "content": "again"}]});
    let n = post(&d, "/v1/messages?beta=true", &h, next.to_string()).await;
    assert_eq!(n.status, 200);
    assert_eq!(s.counts().verified, 3);
}

#[tokio::test]
async fn caps_allow_lists_and_errors_are_anthropic_shaped() {
    let s = seller().await;
    let d = Daemon::start(
        &s.url(),
        &config("").replace(SEPOLIA, &format!("reject_unknown_apps = true\n{SEPOLIA}")),
    );
    // Daily cap $0.001: the first call pays, the second is refused before signing.
    let one = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-capped")],
        msg("claude-haiku-4-5", false),
    )
    .await;
    assert_eq!(one.status, 200);
    let two = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-capped")],
        msg("claude-haiku-4-5", true),
    )
    .await;
    assert_anthropic_error(&two, 402, "billing_error");
    assert_eq!(
        two.header("x-x402d-error").as_deref(),
        Some("app_daily_cap_exceeded")
    );
    assert_eq!(s.counts().payment_attempts, 1);

    // Unknown key.
    let r = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-nope")],
        msg("claude-haiku-4-5", false),
    )
    .await;
    assert_anthropic_error(&r, 401, "authentication_error");
    // The allow-list applies to the upstream model the id maps to.
    let r = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-picky")],
        msg("claude-haiku-4-5", false),
    )
    .await;
    assert_anthropic_error(&r, 403, "permission_error");
    // A Claude id that maps to nothing: 404 with close matches, nothing paid.
    let r = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-claude")],
        msg("claude-sonnet-9-9", false),
    )
    .await;
    assert_anthropic_error(&r, 404, "not_found_error");
    let m = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        m.contains("anthropic/claude-sonnet-4.5") && m.contains("[models]"),
        "{m}"
    );
    // Content x402d cannot carry.
    let doc = json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}]}]});
    let r = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-claude")],
        doc.to_string(),
    )
    .await;
    assert_anthropic_error(&r, 400, "invalid_request_error");
    let r = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-claude")],
        "{not json".into(),
    )
    .await;
    assert_anthropic_error(&r, 400, "invalid_request_error");
    assert_eq!(s.counts().payment_attempts, 1, "no refusal paid anything");
}

#[tokio::test]
async fn paid_then_failed_is_never_retryable() {
    let s = Seller::start(SellerCfg {
        models_body: Some(MODELS.into()),
        after_pay: AfterPay::Fail500,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&s.url(), &config(""));
    let r = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-claude")],
        msg("claude-haiku-4-5", false),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "api_error");
    assert_eq!(
        r.header("x-x402d-payment-state").as_deref(),
        Some("at_risk")
    );
    // One signature (x402d may re-send that same one to recover the answer).
    let mut nonces = s.counts().nonces;
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 1);
}

#[tokio::test]
async fn count_tokens_is_an_estimate_never_paid() {
    let s = seller().await;
    let d = Daemon::start(&s.url(), &config(""));
    let r = post(
        &d,
        "/v1/messages/count_tokens?beta=true",
        &[("x-api-key", "sk-claude")],
        msg("claude-haiku-4-5", false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(r.header("x-x402d-cost").as_deref(), Some("0"));
    assert_eq!(s.counts().requests, 0, "nothing reached the seller");
    assert!(d.payments().is_empty());
}

#[tokio::test]
async fn late_failure_after_pings_is_an_error_event() {
    let s = Seller::start(SellerCfg {
        models_body: Some(MODELS.into()),
        paid_delay_ms: 2500,
        after_pay: AfterPay::Fail500,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&s.url(), &config(""));
    let r = post(
        &d,
        "/v1/messages",
        &[("x-api-key", "sk-claude")],
        msg("claude-haiku-4-5", true),
    )
    .await;
    assert_eq!(r.status, 200, "the stream had started");
    let ev = events(&r.body);
    assert_eq!(ev[0].0, "ping");
    let (name, data) = ev.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(ev.iter().all(|(n, _)| n == "ping" || n == "error"));
    // One signature (x402d may re-send that same one to recover the answer).
    let mut nonces = s.counts().nonces;
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 1);
}

#[tokio::test]
async fn tier_paths_force_the_tier() {
    let s = seller().await;
    let d = Daemon::start(&s.url(), &config(""));
    // ANTHROPIC_BASE_URL=http://127.0.0.1:PORT/v1/premium → /v1/premium/v1/messages.
    for (path, paid) in [
        ("/v1/premium/v1/messages", "/v1/premium/chat/completions"),
        ("/v1/pro/messages", "/v1/pro/chat/completions"),
    ] {
        let r = post(
            &d,
            path,
            &[("x-api-key", "sk-claude")],
            msg("claude-haiku-4-5", false),
        )
        .await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(s.counts().paths.last().unwrap(), paid);
    }
    // A wrong method on a Messages path is answered in Anthropic's shape.
    let r = request(
        "GET",
        &d.url("/v1/messages"),
        &[("x-api-key", "sk-claude")],
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "not_found_error");
}
