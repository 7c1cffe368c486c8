//! API dialects: the wire formats apps speak to x402d. The upstream speaks only
//! chat completions, so every dialect is translated to one chat request *before*
//! the pipeline looks at model, tier, allow-lists, caps and coalescing (a new
//! route is never a way around a cap), and the one upstream outcome is
//! translated back per dialect.
//!
//! Adding a dialect takes three small hooks, all in this file:
//! 1. a `Dialect` variant and its path suffix in [`parse_path`];
//! 2. its arm in [`Front::parse`]: body → chat request (+ what the answer needs, in [`Back`]);
//! 3. its arms in [`Back`]: `answer` (non-streaming), `synthesize` (the stream of a
//!    finished 2xx answer) and `tail` (what ends a stream whose headers are already
//!    out: the stream, or the dialect's error event).
//!
//! Errors before the first byte are `ProxyError`s, rendered OpenAI-shaped, or
//! Anthropic-shaped on the Messages paths (`server::error_response`). Messages
//! also maps its model ids to the upstream's (`anthropic::map_model`, right after
//! `Front::parse`), sends upstream only the headers it needs
//! ([`upstream_headers`]) and keeps streams alive with `ping` events ([`Back::heartbeat`]).

use super::coalesce::Outcome;
use crate::error::ProxyError;
use crate::openai::models::Tier;
use crate::openai::responses::{self, Echo};
use crate::openai::sse;
use crate::pay::{Body, Upstream};
use bytes::Bytes;
use hyper::Response;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `…/chat/completions`: native, relayed as is.
    Chat,
    /// `…/responses`: the OpenAI Responses API (Codex CLI, the Agents SDK).
    Responses,
    /// `…/messages`: the Anthropic Messages API (Claude Code, the Anthropic SDKs);
    /// see `super::anthropic`.
    Messages,
}

/// The dialect and price tier a `POST` path asks for: `/v1/<api>`,
/// `/v1/pro/<api>` or `/v1/premium/<api>`. The plain `/v1` form is `Budget`,
/// which the pipeline may route on by model.
pub fn parse_path(path: &str) -> Option<(Dialect, Tier)> {
    if let Some((tier, super::anthropic::Endpoint::Messages)) = super::anthropic::parse_path(path) {
        return Some((Dialect::Messages, tier.unwrap_or(Tier::Budget)));
    }
    let (prefix, dialect) = if let Some(p) = path.strip_suffix("/chat/completions") {
        (p, Dialect::Chat)
    } else if let Some(p) = path.strip_suffix("/responses") {
        (p, Dialect::Responses)
    } else {
        return None;
    };
    let tier = match prefix {
        "/v1" => Tier::Budget,
        "/v1/pro" => Tier::Pro,
        "/v1/premium" => Tier::Premium,
        _ => return None,
    };
    Some((dialect, tier))
}

/// A request as the pipeline needs it, whatever the dialect.
pub struct Front {
    pub model: Option<String>,
    pub stream: bool,
    /// The chat completion request sent upstream (never streaming).
    pub upstream_body: Bytes,
    pub back: Back,
}

/// How to answer the app once the upstream outcome is known.
pub enum Back {
    Chat {
        include_usage: bool,
    },
    Responses(Box<Echo>),
    /// The model id the client asked for (a Message names it).
    Messages {
        model: String,
    },
}

/// The bits of a chat request the proxy looks at; everything else passes through.
#[derive(serde::Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

impl Front {
    pub fn parse(dialect: Dialect, body: Bytes) -> Result<Front, ProxyError> {
        match dialect {
            Dialect::Chat => {
                let req: ChatRequest = serde_json::from_slice(&body)
                    .map_err(|e| ProxyError::InvalidJson(e.to_string()))?;
                let stream = req.stream == Some(true);
                let (upstream_body, include_usage) = if stream {
                    sse::unstream_request(&body).map_err(ProxyError::InvalidJson)?
                } else {
                    (body, false)
                };
                Ok(Front {
                    model: req.model,
                    stream,
                    upstream_body,
                    back: Back::Chat { include_usage },
                })
            }
            Dialect::Responses => {
                let t = responses::request::translate(&body)?;
                Ok(Front {
                    model: t.model,
                    stream: t.stream,
                    upstream_body: Bytes::from(t.chat.to_string()),
                    back: Back::Responses(Box::new(t.echo)),
                })
            }
            Dialect::Messages => {
                let t = crate::anthropic::request::translate(&body)?;
                Ok(Front {
                    model: Some(t.model.clone()),
                    stream: t.stream,
                    upstream_body: Bytes::from(Value::Object(t.body).to_string()),
                    back: Back::Messages { model: t.model },
                })
            }
        }
    }
}

impl Back {
    /// The answer to a non-streaming call. Upstream errors, and 2xx bodies that
    /// are not a completion, are relayed as they came.
    pub fn answer(&self, u: &Upstream) -> Response<Body> {
        match self {
            Back::Chat { .. } => u.clone().into_response(),
            Back::Responses(echo) => {
                if !u.status.is_success() {
                    return u.clone().into_response();
                }
                match responses::answer::from_completion(&u.body, echo) {
                    Ok(r) => {
                        let mut out = u.clone();
                        out.body = Bytes::from(r.to_string());
                        out.headers
                            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        out.into_response()
                    }
                    Err(msg) => {
                        tracing::warn!(
                            "upstream 2xx is not a chat completion ({msg}); relayed as is"
                        );
                        u.clone().into_response()
                    }
                }
            }
            Back::Messages { model } => super::anthropic::answer(u, model),
        }
    }

    /// What keeps a stream alive while paying.
    pub fn heartbeat(&self) -> &'static [u8] {
        match self {
            Back::Messages { .. } => crate::anthropic::answer::PING,
            _ => sse::HEARTBEAT,
        }
    }

    /// The whole event stream for a finished 2xx answer; `Err` when it is not a completion.
    pub fn synthesize(&self, u: &Upstream) -> Result<Bytes, String> {
        match self {
            Back::Chat { include_usage } => super::synthesize(u, *include_usage),
            Back::Responses(echo) => {
                let r = responses::answer::from_completion(&u.body, echo)?;
                Ok(responses::stream::to_sse(&responses::stream::events(&r)))
            }
            Back::Messages { model } => super::anthropic::synthesize(u, model),
        }
    }

    /// What ends a stream whose headers are already out (after heartbeats).
    pub fn tail(&self, o: &Outcome) -> Bytes {
        match self {
            Back::Chat { include_usage } => super::stream_tail(o, *include_usage),
            Back::Responses(echo) => responses_tail(echo, o),
            Back::Messages { model } => super::anthropic::tail(o, model),
        }
    }
}

/// The request headers that go upstream with the call (`pay` drops the app's
/// key and hop-by-hop headers from whatever it is given).
pub fn upstream_headers(dialect: Dialect, headers: hyper::HeaderMap) -> hyper::HeaderMap {
    match dialect {
        Dialect::Messages => super::anthropic::upstream_headers(&headers),
        Dialect::Responses => with_codex_retry_marker(headers),
        Dialect::Chat => headers,
    }
}

/// Codex CLI retries a failed turn on its own ("Reconnecting... n/5") without
/// marking the retry, but names its session (`session-id`, with `originator:
/// codex_*`). The same request body again within one Codex session is a retry
/// (each new turn carries a longer history), so it gets the session as its
/// idempotency key (`start_call` reads it; `pay` never forwards it): a retry
/// joins the call that already moved money instead of paying again. An app's
/// own `Idempotency-Key` wins.
fn with_codex_retry_marker(mut headers: hyper::HeaderMap) -> hyper::HeaderMap {
    if headers.contains_key("idempotency-key") {
        return headers;
    }
    let is_codex = headers
        .get("originator")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.starts_with("codex"));
    let session = headers
        .get("session-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty());
    if let (true, Some(session)) = (is_codex, session)
        && let Ok(v) = hyper::header::HeaderValue::from_str(&format!("codex-session:{session}"))
    {
        headers.insert("idempotency-key", v);
    }
    headers
}

/// The Responses stream, or one `response.failed` event carrying the error.
fn responses_tail(echo: &Echo, o: &Outcome) -> Bytes {
    let error = match o.as_ref() {
        Ok(u) if u.status.is_success() => match responses::answer::from_completion(&u.body, echo) {
            Ok(r) => return responses::stream::to_sse(&responses::stream::events(&r)),
            Err(msg) => json!({"message": msg, "code": "invalid_completion"}),
        },
        Ok(u) => {
            // The upstream's own error object when it has one.
            let v: Value = serde_json::from_slice(&u.body).unwrap_or_default();
            match v.get("error") {
                Some(e) if e.is_object() => e.clone(),
                _ => {
                    json!({"message": format!("upstream answered {}", u.status), "code": "upstream_error"})
                }
            }
        }
        Err(e) => crate::openai::error::body(e)["error"].clone(),
    };
    let failed = responses::answer::failed(&error, crate::now_ms() / 1000, echo);
    responses::stream::to_sse(&responses::stream::failed(&failed))
}

#[cfg(test)]
mod tests {

    #[test]
    fn codex_sessions_mark_retries_and_nothing_else_does() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = hyper::HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, hyper::header::HeaderValue::from_static(v));
            }
            m
        };
        let key = |m: hyper::HeaderMap| {
            upstream_headers(Dialect::Responses, m)
                .get("idempotency-key")
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            key(h(&[("originator", "codex_exec"), ("session-id", "s1")])).as_deref(),
            Some("codex-session:s1")
        );
        // Not Codex, or no session: no marker.
        assert_eq!(key(h(&[("session-id", "s1")])), None);
        assert_eq!(key(h(&[("originator", "codex_exec")])), None);
        // The app's own key wins.
        assert_eq!(
            key(h(&[
                ("originator", "codex_exec"),
                ("session-id", "s1"),
                ("idempotency-key", "mine")
            ]))
            .as_deref(),
            Some("mine")
        );
        // Chat calls are untouched.
        let chat = upstream_headers(
            Dialect::Chat,
            h(&[("originator", "codex_exec"), ("session-id", "s1")]),
        );
        assert!(chat.get("idempotency-key").is_none());
    }

    use super::*;
    use crate::pay::Paid;
    use hyper::StatusCode;
    use std::sync::Arc;

    fn upstream(status: u16, body: &str) -> Upstream {
        let mut headers = hyper::HeaderMap::new();
        headers.insert(crate::pay::HDR_COST, HeaderValue::from_static("0.001"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Upstream {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from(body.to_string()),
            paid: Paid::Settled,
        }
    }

    const COMPLETION: &str = r#"{"id":"c","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

    fn responses_back(stream: bool) -> Front {
        let body = json!({"model": "m", "input": "x", "stream": stream}).to_string();
        Front::parse(Dialect::Responses, Bytes::from(body)).unwrap()
    }

    fn events(b: &Bytes) -> Vec<Value> {
        String::from_utf8(b.to_vec())
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.split_once("\ndata: ").unwrap().1).unwrap())
            .collect()
    }

    #[test]
    fn fronts() {
        let f = responses_back(true);
        assert!(f.stream);
        assert_eq!(f.model.as_deref(), Some("m"));
        let up: Value = serde_json::from_slice(&f.upstream_body).unwrap();
        assert_eq!(up["stream"], false);
        assert_eq!(up["messages"][0]["content"], "x");
        let c = Front::parse(
            Dialect::Chat,
            Bytes::from_static(
                br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
            ),
        )
        .unwrap();
        assert!(c.stream);
        assert!(matches!(
            c.back,
            Back::Chat {
                include_usage: true
            }
        ));
        assert!(matches!(
            Front::parse(Dialect::Chat, Bytes::from_static(b"nope")),
            Err(ProxyError::InvalidJson(_))
        ));
    }

    #[tokio::test]
    async fn responses_answers_keep_the_cost_headers() {
        use http_body_util::BodyExt;
        let back = responses_back(false).back;
        let r = back.answer(&upstream(200, COMPLETION));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[crate::pay::HDR_COST], "0.001");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "response");
        assert_eq!(v["output"][0]["content"][0]["text"], "hi");
        // Upstream errors and 2xx bodies that are not completions go through as they came.
        let err = r#"{"error":{"message":"bad","type":"x","param":null,"code":"y"}}"#;
        let r = back.answer(&upstream(400, err));
        assert_eq!(r.status(), 400);
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), err);
        let r = back.answer(&upstream(200, "plain"));
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "plain");
    }

    #[test]
    fn responses_stream_tail_for_every_outcome() {
        let back = responses_back(true).back;
        let ok: Outcome = Arc::new(Ok(upstream(200, COMPLETION)));
        let ev = events(&back.tail(&ok));
        assert_eq!(ev.first().unwrap()["type"], "response.created");
        assert_eq!(ev.last().unwrap()["type"], "response.completed");
        assert_eq!(
            back.synthesize(ok.as_ref().as_ref().unwrap()).unwrap(),
            back.tail(&ok)
        );

        let failed = |o: Outcome| {
            let ev = events(&back.tail(&o));
            assert_eq!(ev.len(), 1);
            assert_eq!(ev[0]["type"], "response.failed");
            assert_eq!(ev[0]["response"]["status"], "failed");
            ev[0]["response"]["error"].clone()
        };
        let e = failed(Arc::new(Ok(upstream(
            500,
            r#"{"error":{"message":"model crashed","code":"boom"}}"#,
        ))));
        assert_eq!(e, json!({"code": "boom", "message": "model crashed"}));
        let e = failed(Arc::new(Ok(upstream(502, "gateway"))));
        assert_eq!(e["message"], "upstream answered 502 Bad Gateway");
        let e = failed(Arc::new(Ok(upstream(200, "not a completion"))));
        assert_eq!(e["code"], "invalid_completion");
        let e = failed(Arc::new(Err(ProxyError::PaymentOutcomeUnknown {
            reason: "reset".into(),
            amount: "0.001".into(),
        })));
        assert_eq!(e["code"], "payment_outcome_unknown");
        assert!(e["message"].as_str().unwrap().contains("Do not retry"));
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("/v1/chat/completions"),
            Some((Dialect::Chat, Tier::Budget))
        );
        assert_eq!(
            parse_path("/v1/pro/chat/completions"),
            Some((Dialect::Chat, Tier::Pro))
        );
        assert_eq!(
            parse_path("/v1/responses"),
            Some((Dialect::Responses, Tier::Budget))
        );
        assert_eq!(
            parse_path("/v1/premium/responses"),
            Some((Dialect::Responses, Tier::Premium))
        );
        assert_eq!(
            parse_path("/v1/messages"),
            Some((Dialect::Messages, Tier::Budget))
        );
        assert_eq!(
            parse_path("/v1/premium/v1/messages"),
            Some((Dialect::Messages, Tier::Premium))
        );
        assert_eq!(parse_path("/v1/messages/count_tokens"), None);
        assert_eq!(parse_path("/v1/other/responses"), None);
        assert_eq!(parse_path("/v2/responses"), None);
        assert_eq!(parse_path("/v1/responses/resp_1"), None);
        assert_eq!(parse_path("/v1/models"), None);
    }

    #[tokio::test]
    async fn messages_back() {
        use http_body_util::BodyExt;
        let f = Front::parse(
            Dialect::Messages,
            Bytes::from(
                json!({"model": "claude-haiku-4-5", "max_tokens": 5, "stream": true,
                "messages": [{"role": "user", "content": "x"}]})
                .to_string(),
            ),
        )
        .unwrap();
        assert!(f.stream);
        assert_eq!(f.model.as_deref(), Some("claude-haiku-4-5"));
        assert_eq!(f.back.heartbeat(), crate::anthropic::answer::PING);
        let r = f.back.answer(&upstream(200, COMPLETION));
        assert_eq!(r.headers()[crate::pay::HDR_COST], "0.001");
        let v: Value =
            serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["model"], "claude-haiku-4-5");
        // An upstream error keeps its status, in Anthropic's shape.
        let r = f
            .back
            .answer(&upstream(429, r#"{"error":{"message":"slow down"}}"#));
        assert_eq!(r.status(), 429);
        let v: Value =
            serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );
        // A 2xx that is not a completion may have been paid: never retry.
        let r = f.back.answer(&upstream(200, "not json"));
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()["x-should-retry"], "false");
        // After the stream started: the events, or one `error` event.
        let ok = f.back.tail(&Arc::new(Ok(upstream(200, COMPLETION))));
        assert!(ok.starts_with(b"event: message_start\n"));
        let late = f
            .back
            .tail(&Arc::new(Err(ProxyError::PaymentOutcomeUnknown {
                reason: "reset".into(),
                amount: "0.001".into(),
            })));
        assert!(late.starts_with(b"event: error\n"));
        assert_eq!(
            upstream_headers(Dialect::Messages, {
                let mut h = hyper::HeaderMap::new();
                h.insert("x-api-key", HeaderValue::from_static("sk-app"));
                h
            })
            .get("x-api-key"),
            None
        );
    }
}
