//! Hostile and malformed sellers, through the real binary: every bad 402 gets the
//! app a clear OpenAI-shaped error, no payment header ever reaches the seller, and
//! the daemon keeps serving. Then hostile request bodies from the app side.

mod common;
use base64::Engine as _;
use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

const SEPOLIA: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n";
/// Two allowed networks, so "right asset, wrong chain" reaches the asset check.
const TWO_NETS: &str = "[payment]\nnetworks = [\"eip155:84532\", \"eip155:8453\"]\n";

const BAD: (u16, &str) = (502, "invalid_payment_requirements");
const NOPE: (u16, &str) = (402, "no_acceptable_payment_option");
const CEILING: (u16, &str) = (402, "price_above_ceiling");

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A payable v2 requirement (base-sepolia USDC, $0.001).
fn req() -> Value {
    json!({"scheme": "exact", "network": "eip155:84532", "amount": "1000",
           "asset": USDC_BASE_SEPOLIA, "payTo": PAY_TO, "maxTimeoutSeconds": 300,
           "extra": {"name": "USDC", "version": "2"}})
}

fn req_with(k: &str, v: Value) -> Value {
    let mut r = req();
    r[k] = v;
    r
}

fn req_without(k: &str) -> Value {
    let mut r = req();
    r.as_object_mut().unwrap().remove(k);
    r
}

/// The same requirement in v1 form (base-sepolia, `maxAmountRequired`).
fn req_v1() -> Value {
    let mut r = req_without("amount");
    r["network"] = json!("base-sepolia");
    r["maxAmountRequired"] = json!("1000");
    r["resource"] = json!("http://127.0.0.1/v1/chat/completions");
    r
}

fn v2_doc(accepts: Value) -> Value {
    json!({"x402Version": 2, "error": "Payment required",
           "resource": {"url": "http://127.0.0.1/v1/chat/completions"}, "accepts": accepts})
}

fn header(doc: &Value) -> Option<String> {
    Some(b64(&doc.to_string()))
}

fn v1_body(c: &mut SellerCfg, body: impl Into<Vec<u8>>) {
    c.version = 1;
    c.network = "base-sepolia".into();
    c.raw_body = Some(body.into());
}

struct Case {
    name: &'static str,
    setup: fn(&mut SellerCfg),
    expect: (u16, &'static str),
    /// Substrings the error message must contain (it names the problem).
    msg: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    macro_rules! case {
        ($name:literal, $expect:expr, [$($m:literal),*], $setup:expr) => {
            Case { name: $name, setup: $setup, expect: $expect, msg: &[$($m),*] }
        };
    }
    vec![
        // --- the PAYMENT-REQUIRED header itself ---
        case!("bad base64 header", BAD, ["not valid base64"], |c| {
            c.raw_header = Some("%%%not*base64!!".into())
        }),
        case!(
            "header with non-ASCII bytes",
            BAD,
            ["not valid base64"],
            |c| { c.raw_header = Some(format!("é{}", b64(&v2_doc(json!([req()])).to_string()))) }
        ),
        case!("base64 of invalid JSON", BAD, ["not valid JSON"], |c| {
            c.raw_header = Some(b64("{\"x402Version\":2,\"accepts\":[{"))
        }),
        case!("base64 of a JSON array", BAD, ["not an object"], |c| {
            c.raw_header = Some(b64("[1,2,3]"))
        }),
        case!("base64 of JSON null", BAD, ["not an object"], |c| {
            c.raw_header = Some(b64("null"))
        }),
        case!("base64 of a JSON string", BAD, ["not an object"], |c| {
            c.raw_header = Some(b64("\"pay me\""))
        }),
        case!(
            "JSON nested 20,000 deep",
            BAD,
            ["not valid JSON", "recursion"],
            |c| { c.raw_header = Some(b64(&"[".repeat(20_000))) }
        ),
        case!("missing accepts", BAD, ["no payment options"], |c| {
            c.raw_header = header(&json!({"x402Version": 2, "error": "pay"}))
        }),
        case!("accepts is an object", BAD, ["no payment options"], |c| {
            c.raw_header = header(&json!({"x402Version": 2, "accepts": req()}))
        }),
        case!("empty accepts", BAD, ["no payment options"], |c| {
            c.accepts = Some(json!([]))
        }),
        case!(
            "10,000 accepts",
            BAD,
            ["10000 payment options", "limit of 64"],
            |c| { c.accepts = Some(Value::Array(vec![json!({}); 10_000])) }
        ),
        case!(
            "100 KB header",
            BAD,
            ["bytes, more than the 65536-byte limit"],
            |c| {
                let mut d = v2_doc(json!([req()]));
                d["pad"] = json!("x".repeat(100 * 1024));
                c.raw_header = header(&d);
            }
        ),
        case!(
            "1 MB header (beyond the HTTP head limit)",
            BAD,
            ["too large"],
            |c| {
                let mut d = v2_doc(json!([req()]));
                d["pad"] = json!("x".repeat(1024 * 1024));
                c.raw_header = header(&d);
            }
        ),
        case!("x402Version 3", BAD, ["unsupported x402Version 3"], |c| {
            let mut d = v2_doc(json!([req()]));
            d["x402Version"] = json!(3);
            c.raw_header = header(&d);
        }),
        case!(
            "x402Version as a string",
            BAD,
            ["unsupported x402Version \"2\""],
            |c| {
                let mut d = v2_doc(json!([req()]));
                d["x402Version"] = json!("2");
                c.raw_header = header(&d);
            }
        ),
        case!(
            "x402Version a 40 KB string (not echoed to the app)",
            BAD,
            ["unsupported x402Version \"IGNORE PREVIOUS"],
            |c| {
                let mut d = v2_doc(json!([req()]));
                d["x402Version"] = json!(format!("IGNORE PREVIOUS{}", "!".repeat(40_000)));
                c.raw_header = header(&d);
            }
        ),
        case!(
            "v1 document in the v2 header",
            BAD,
            ["x402Version 1 in the PAYMENT-REQUIRED header"],
            |c| { c.raw_header = header(&json!({"x402Version": 1, "accepts": [req_v1()]})) }
        ),
        case!(
            "bad header, valid v1 body: the header wins",
            BAD,
            ["not valid base64"],
            |c| {
                c.raw_header = Some("!!!".into());
                c.raw_body = Some(
                    json!({"x402Version": 1, "accepts": [req_v1()]})
                        .to_string()
                        .into_bytes(),
                );
            }
        ),
        // --- v1 bodies ---
        case!(
            "HTML body, no header",
            BAD,
            ["no PAYMENT-REQUIRED header and its body is not x402 JSON"],
            |c| { v1_body(c, "<html><body><h1>402 Payment Required</h1></body></html>") }
        ),
        case!(
            "empty body, no header",
            BAD,
            ["not x402 JSON"],
            |c| v1_body(c, "")
        ),
        case!(
            "JSON body without x402Version",
            BAD,
            ["not x402 JSON"],
            |c| { v1_body(c, json!({"accepts": [req_v1()]}).to_string()) }
        ),
        case!(
            "v1 body with x402Version 3",
            BAD,
            ["unsupported x402Version 3"],
            |c| {
                v1_body(
                    c,
                    json!({"x402Version": 3, "accepts": [req_v1()]}).to_string(),
                )
            }
        ),
        case!(
            "v2-only amount field in a v1 body",
            NOPE,
            ["`maxAmountRequired` is missing"],
            |c| {
                let mut r = req_v1();
                r.as_object_mut().unwrap().remove("maxAmountRequired");
                r["amount"] = json!("1");
                v1_body(c, json!({"x402Version": 1, "accepts": [r]}).to_string())
            }
        ),
        case!(
            "10,000 accepts in a v1 body",
            BAD,
            ["10000 payment options"],
            |c| {
                let accepts = vec!["{}"; 10_000].join(",");
                v1_body(c, format!("{{\"x402Version\":1,\"accepts\":[{accepts}]}}"))
            }
        ),
        case!("v1 body over 64 KiB", BAD, ["402 body"], |c| {
            let pad = "x".repeat(100 * 1024);
            v1_body(
                c,
                format!("{{\"x402Version\":1,\"accepts\":[],\"pad\":\"{pad}\"}}"),
            )
        }),
        // --- the amount ---
        case!(
            "amount with 79 digits",
            NOPE,
            ["more than 78 digits"],
            |c| { c.amount = "1".repeat(79) }
        ),
        case!("amount 2^256", NOPE, ["overflows uint256"], |c| {
            c.amount =
                "115792089237316195423570985008687907853269984665640564039457584007913129639936"
                    .into()
        }),
        case!(
            "amount 2^64 (beyond u64)",
            CEILING,
            ["18446744073709551616", "ceiling $0.05"],
            |c| { c.amount = "18446744073709551616".into() }
        ),
        case!(
            "negative amount",
            NOPE,
            ["\"-1000\" is not a plain decimal integer"],
            |c| { c.amount = "-1000".into() }
        ),
        case!(
            "hex amount 0x10",
            NOPE,
            ["\"0x10\" is not a plain decimal integer"],
            |c| { c.amount = "0x10".into() }
        ),
        case!("empty amount", NOPE, ["amount is empty"], |c| c.amount =
            String::new()),
        case!(
            "amount with a leading space",
            NOPE,
            ["\" 1000\" is not a plain decimal integer"],
            |c| { c.amount = " 1000".into() }
        ),
        case!(
            "amount with a trailing newline",
            NOPE,
            ["is not a plain decimal integer"],
            |c| { c.amount = "1000\n".into() }
        ),
        case!(
            "amount with a leading +",
            NOPE,
            ["\"+1000\" is not a plain decimal integer"],
            |c| { c.amount = "+1000".into() }
        ),
        case!(
            "amount with leading zeros",
            NOPE,
            ["\"01000\" has leading zeros"],
            |c| { c.amount = "01000".into() }
        ),
        case!(
            "decimal amount 1.5",
            NOPE,
            ["\"1.5\" is not a plain decimal integer"],
            |c| { c.amount = "1.5".into() }
        ),
        case!(
            "exponent amount 1e3",
            NOPE,
            ["\"1e3\" is not a plain decimal integer"],
            |c| { c.amount = "1e3".into() }
        ),
        case!(
            "full-width digit amount",
            NOPE,
            ["is not a plain decimal integer"],
            |c| { c.amount = "\u{ff11}\u{ff10}\u{ff10}\u{ff10}".into() }
        ),
        case!("amount zero", NOPE, ["amount is zero"], |c| c.amount =
            "0".into()),
        case!(
            "amount as a JSON number",
            NOPE,
            ["`amount` is not a string"],
            |c| { c.accepts = Some(json!([req_with("amount", json!(1000))])) }
        ),
        case!(
            "v2 amount \"\" beside maxAmountRequired \"1\"",
            NOPE,
            ["amount is empty"],
            |c| {
                let mut r = req_with("amount", json!(""));
                r["maxAmountRequired"] = json!("1");
                c.accepts = Some(json!([r]));
            }
        ),
        case!(
            "v2 with only maxAmountRequired",
            NOPE,
            ["`amount` is missing"],
            |c| {
                let mut r = req_without("amount");
                r["maxAmountRequired"] = json!("1");
                c.accepts = Some(json!([r]));
            }
        ),
        case!(
            "duplicate amount keys, the last over the ceiling",
            CEILING,
            ["ceiling"],
            |c| {
                // serde_json (like JSON.parse) keeps the last key; that is the one checked and signed.
                let doc = v2_doc(json!([req()])).to_string().replace(
                    "\"amount\":\"1000\"",
                    "\"amount\":\"1\",\"amount\":\"600000\"",
                );
                assert!(doc.contains("600000"));
                c.raw_header = Some(b64(&doc));
            }
        ),
        case!(
            "price above the per-call ceiling",
            CEILING,
            ["$0.6", "ceiling $0.05"],
            |c| { c.amount = "600000".into() }
        ),
        case!(
            "cheap but unpayable first, payable but over the ceiling second",
            NOPE,
            [
                "is not USDC on eip155:84532",
                "above the per-call ceiling $0.05"
            ],
            |c| {
                c.accepts = Some(json!([
                    req_with("asset", json!(USDC_BASE)).tap_amount("1"),
                    req().tap_amount("600000"),
                ]))
            }
        ),
        // --- asset, network, token domain ---
        case!(
            "wrong asset on the right chain",
            NOPE,
            ["is not USDC on eip155:84532"],
            |c| { c.asset = USDC_BASE.into() }
        ),
        case!(
            "right asset address on the wrong chain",
            NOPE,
            ["is not USDC on eip155:8453"],
            |c| {
                c.network = "eip155:8453".into();
                c.extra = json!({"name": "USD Coin", "version": "2"});
            }
        ),
        case!(
            "asset not an address",
            NOPE,
            ["asset \"usdc\" is not an address"],
            |c| { c.asset = "usdc".into() }
        ),
        case!(
            "unknown chain eip155:1",
            NOPE,
            ["network \"eip155:1\" is unknown"],
            |c| { c.network = "eip155:1".into() }
        ),
        case!(
            "known chain not in payment.networks",
            NOPE,
            ["not in payment.networks"],
            |c| {
                c.network = "eip155:137".into();
                c.asset = "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359".into();
                c.extra = json!({"name": "USD Coin", "version": "2"});
            }
        ),
        case!(
            "extra.name \"USD Coin\" on base-sepolia",
            NOPE,
            ["\"USD Coin\"", "does not match USDC on eip155:84532"],
            |c| { c.extra = json!({"name": "USD Coin", "version": "2"}) }
        ),
        case!(
            "extra.version mismatch",
            NOPE,
            ["does not match USDC"],
            |c| { c.extra = json!({"name": "USDC", "version": "1"}) }
        ),
        case!(
            "extra missing",
            NOPE,
            ["None/None does not match USDC"],
            |c| { c.accepts = Some(json!([req_without("extra")])) }
        ),
        case!("extra is a string", NOPE, ["does not match USDC"], |c| c
            .extra =
            json!("USDC")),
        // --- recipient, scheme, timeout, option shape ---
        case!(
            "payTo the zero address",
            NOPE,
            ["payTo is the zero address"],
            |c| { c.pay_to = "0x0000000000000000000000000000000000000000".into() }
        ),
        case!(
            "payTo not an address",
            NOPE,
            ["payTo \"alice.eth\" is not an address"],
            |c| { c.accepts = Some(json!([req_with("payTo", json!("alice.eth"))])) }
        ),
        case!(
            "payTo too short",
            NOPE,
            ["payTo \"0x1234\" is not an address"],
            |c| { c.accepts = Some(json!([req_with("payTo", json!("0x1234"))])) }
        ),
        case!(
            "scheme upto",
            NOPE,
            ["scheme \"upto\" is not supported"],
            |c| { c.accepts = Some(json!([req_with("scheme", json!("upto"))])) }
        ),
        case!(
            "maxTimeoutSeconds 0",
            NOPE,
            ["maxTimeoutSeconds is 0"],
            |c| { c.max_timeout = 0 }
        ),
        case!(
            "maxTimeoutSeconds negative",
            NOPE,
            ["`maxTimeoutSeconds` is not a non-negative integer"],
            |c| { c.accepts = Some(json!([req_with("maxTimeoutSeconds", json!(-1))])) }
        ),
        case!(
            "maxTimeoutSeconds as a string",
            NOPE,
            ["`maxTimeoutSeconds` is not a number"],
            |c| { c.accepts = Some(json!([req_with("maxTimeoutSeconds", json!("300"))])) }
        ),
        case!(
            "option not an object",
            NOPE,
            ["option is not a JSON object"],
            |c| { c.accepts = Some(json!([42])) }
        ),
        case!(
            "every option bad, each named",
            NOPE,
            [
                "option 1: unreadable",
                "scheme \"upto\"",
                "payTo is the zero address"
            ],
            |c| {
                c.accepts = Some(json!([
                    "nope",
                    req_with("scheme", json!("upto")),
                    req_with("payTo", json!("0x0000000000000000000000000000000000000000")),
                ]))
            }
        ),
    ]
}

trait TapAmount {
    fn tap_amount(self, a: &str) -> Self;
}
impl TapAmount for Value {
    fn tap_amount(mut self, a: &str) -> Self {
        self["amount"] = json!(a);
        self
    }
}

/// Checks the reply is x402d's own OpenAI-shaped refusal; returns what is wrong, if anything.
fn check_refusal(r: &Reply, status: u16, code: &str, msg: &[&str]) -> Vec<String> {
    let mut bad = Vec::new();
    let text = String::from_utf8_lossy(&r.body);
    if r.status != status {
        bad.push(format!("status {} (want {status})", r.status));
    }
    if r.header("x-x402d-error").as_deref() != Some(code) {
        bad.push(format!("x-x402d-error {:?}", r.header("x-x402d-error")));
    }
    let retry = if code == "upstream_unreachable" {
        "true"
    } else {
        "false"
    };
    if r.header("x-should-retry").as_deref() != Some(retry) {
        bad.push(format!("x-should-retry {:?}", r.header("x-should-retry")));
    }
    if r.body.len() > 4096 {
        bad.push(format!("error body is {} bytes", r.body.len()));
    }
    let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
        bad.push(format!("body is not JSON: {text}"));
        return bad;
    };
    let e = &v["error"];
    let keys: Vec<&String> = e
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    if keys.len() != 4 || !e["type"].is_string() || !e["param"].is_null() {
        bad.push(format!("not OpenAI-shaped: {v}"));
    }
    if e["code"] != code {
        bad.push(format!("error.code {}", e["code"]));
    }
    let m = e["message"].as_str().unwrap_or("");
    for want in msg {
        if !m.contains(want) {
            bad.push(format!("message lacks {want:?}: {m}"));
        }
    }
    if !m.contains("No payment was made.") {
        bad.push(format!("message does not say no payment was made: {m}"));
    }
    bad
}

/// The daemon is alive and still serving after whatever it was just sent.
async fn still_serving(d: &mut Daemon) -> Result<(), String> {
    if let Ok(Some(st)) = d.child.try_wait() {
        return Err(format!("x402d exited: {st}"));
    }
    let r = request("GET", &d.url("/v1/models"), &[], "").await;
    if r.status != 200 {
        return Err(format!("GET /v1/models answered {}", r.status));
    }
    Ok(())
}

#[tokio::test]
async fn hostile_402s_are_refused_and_nothing_is_signed() {
    let seller = Seller::start(SellerCfg::default()).await;
    let mut d = Daemon::start(&seller.url(), TWO_NETS);
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        seller.set(|c| {
            *c = SellerCfg::default();
            (case.setup)(c);
        });
        *seller.counts.lock().unwrap() = Counts::default();
        let r = chat(&d, "sk-hostile").await;
        let mut bad = check_refusal(&r, case.expect.0, case.expect.1, case.msg);
        // Shown with --nocapture: what the app actually reads for each case.
        eprintln!(
            "[{}] {} {}",
            case.name,
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        let c = seller.counts();
        if c.payment_attempts != 0 || c.requests != 1 {
            bad.push(format!(
                "seller saw {} requests, {} with a payment header",
                c.requests, c.payment_attempts
            ));
        }
        if let Err(e) = still_serving(&mut d).await {
            bad.push(e);
        }
        if !bad.is_empty() {
            failures.push(format!("[{}] {}", case.name, bad.join("; ")));
        }
    }
    let log = d.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        d.payments().is_empty(),
        "a refusal reserved or signed something"
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Peak resident memory of the daemon (the harness execs x402d under keyctl).
fn peak_rss_kib(d: &Daemon) -> u64 {
    let pid = d.child.id();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "x402d", "keyctl execs the daemon in place");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_100_mb_v1_body_is_not_read() {
    let seller = Seller::start(SellerCfg {
        version: 1,
        network: "base-sepolia".into(),
        huge_body_mb: 100,
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let t = Instant::now();
    let r = chat(&d, "k").await;
    let took = t.elapsed();
    let bad = check_refusal(&r, 502, "invalid_payment_requirements", &["402 body"]);
    assert!(bad.is_empty(), "{bad:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = seller.counts();
    assert_eq!((c.requests, c.payment_attempts), (1, 0));
    // x402d stops at 64 KiB and drops the connection; the seller only got to fill
    // the socket buffers, nowhere near the 100 MiB it meant to send.
    assert!(
        c.streamed_bytes < 16 * 1024 * 1024,
        "seller streamed {} bytes",
        c.streamed_bytes
    );
    let peak = peak_rss_kib(&d);
    assert!(peak < 64 * 1024, "x402d peak RSS {peak} KiB");
    eprintln!(
        "100 MiB body: refused in {took:?}, seller wrote {} bytes, x402d peak RSS {peak} KiB",
        c.streamed_bytes
    );
    still_serving(&mut d).await.unwrap();
}

#[tokio::test]
async fn a_100_mb_body_beside_a_v2_header_is_not_read_either() {
    // The requirements are in the header; the body is irrelevant and must not be buffered.
    let seller = Seller::start(SellerCfg {
        amount: "600000".into(),
        huge_body_mb: 100,
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "k").await;
    let bad = check_refusal(&r, 402, "price_above_ceiling", &["ceiling $0.05"]);
    assert!(bad.is_empty(), "{bad:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = seller.counts();
    assert_eq!(c.payment_attempts, 0);
    assert!(c.streamed_bytes < 16 * 1024 * 1024, "{}", c.streamed_bytes);
    assert!(peak_rss_kib(&d) < 64 * 1024);
    still_serving(&mut d).await.unwrap();
}

#[tokio::test]
async fn a_402_body_that_stalls_times_out() {
    // upstream_timeout_secs = 10 in the harness config.
    let seller = Seller::start(SellerCfg {
        version: 1,
        network: "base-sepolia".into(),
        stall_body: true,
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let t = Instant::now();
    let r = chat(&d, "k").await;
    let took = t.elapsed();
    let bad = check_refusal(&r, 502, "invalid_payment_requirements", &["timed out"]);
    assert!(bad.is_empty(), "{bad:?}");
    assert!(took < Duration::from_secs(25), "took {took:?}");
    assert_eq!(seller.counts().payment_attempts, 0);
    still_serving(&mut d).await.unwrap();
}

#[tokio::test]
async fn a_402_to_the_paid_retry_is_payment_rejected() {
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::Reject,
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 402);
    assert_eq!(
        r.header("x-x402d-error").as_deref(),
        Some("payment_rejected")
    );
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    let e = r.json();
    assert_eq!(e["error"]["code"], "payment_rejected");
    assert!(e["error"]["param"].is_null());
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("rejected the payment") && msg.contains("insufficient_funds"),
        "{msg}"
    );
    let c = seller.counts();
    assert_eq!(
        (c.requests, c.payment_attempts),
        (2, 1),
        "signed exactly once, never retried"
    );
    let ps = d.payments();
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0]["state"], "rejected");
    still_serving(&mut d).await.unwrap();
}

#[tokio::test]
async fn a_redirect_on_the_unpaid_request_is_relayed_and_never_paid() {
    let seller = Seller::start(SellerCfg {
        unpaid_status: 302,
        unpaid_headers: vec![(
            "location".into(),
            "http://evil.example/v1/chat/completions".into(),
        )],
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 302, "relayed as is");
    assert_eq!(
        r.header("location").as_deref(),
        Some("http://evil.example/v1/chat/completions")
    );
    assert_eq!(r.header("x-x402d-cost").as_deref(), Some("0"));
    assert!(r.header("x-x402d-error").is_none());
    let c = seller.counts();
    assert_eq!(
        (c.requests, c.payment_attempts),
        (1, 0),
        "not followed, not paid"
    );
    assert!(d.payments().is_empty());
    still_serving(&mut d).await.unwrap();
}

#[tokio::test]
async fn a_redirect_answering_the_paid_retry_is_at_risk() {
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::Redirect("http://evil.example/collect".into()),
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").as_deref(),
        Some("http://evil.example/collect")
    );
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    assert_eq!(
        r.header("x-x402d-payment-state").as_deref(),
        Some("at_risk")
    );
    assert_eq!(r.header("x-x402d-cost").as_deref(), Some("0.001"));
    let c = seller.counts();
    assert_eq!(
        (c.requests, c.payment_attempts, c.verified),
        (2, 1, 1),
        "paid once, redirect not followed"
    );
    let ps = d.payments();
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0]["state"], "at_risk");
    still_serving(&mut d).await.unwrap();
}

// ---------------------------------------------------------------------------
// Hostile request bodies from the app side.

/// A request body of `n` chunks with no declared length (sent chunked).
struct Chunked {
    chunks: Vec<Bytes>,
}

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        if self.chunks.is_empty() {
            return Poll::Ready(None);
        }
        let c = self.chunks.remove(0);
        Poll::Ready(Some(Ok(hyper::body::Frame::data(c))))
    }
}

async fn post_chunked(url: &str, chunks: Vec<Bytes>) -> Reply {
    use http_body_util::BodyExt;
    let uri: hyper::Uri = url.parse().unwrap();
    let host = uri.authority().unwrap().to_string();
    let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri(uri.path())
        .header("host", host)
        .header("authorization", "Bearer k")
        .header("content-type", "application/json")
        .body(Chunked { chunks })
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// `CHAT` padded with trailing whitespace (still valid JSON) to exactly `len` bytes.
fn padded_chat(len: usize) -> Vec<u8> {
    let mut b = CHAT.as_bytes().to_vec();
    b.resize(len, b' ');
    b
}

#[tokio::test]
async fn hostile_request_bodies() {
    const MAX: usize = 8 * 1024 * 1024;
    let seller = Seller::start(SellerCfg::default()).await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let url = d.url("/v1/chat/completions");
    let auth = [("authorization", "Bearer k")];

    // Not JSON, or not a chat request: 400 invalid_json, nothing sent upstream.
    for body in ["{not json", "", "null", "{\"model\":5}", "[\"model\""] {
        let r = request("POST", &url, &auth, body).await;
        assert_eq!(r.status, 400, "{body:?}");
        assert_eq!(
            r.header("x-x402d-error").as_deref(),
            Some("invalid_json"),
            "{body:?}"
        );
        let e = r.json();
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not valid JSON"),
            "{e}"
        );
    }
    assert_eq!(seller.counts().requests, 0);

    // The content type is not what decides: a JSON body labelled text/plain (or
    // unlabelled) is a normal paid call, relayed byte for byte.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut h = vec![("authorization", "Bearer k")];
        if let Some(ct) = ct {
            h.push(("content-type", ct));
        }
        let r = request("POST", &url, &h, CHAT).await;
        assert_eq!(
            r.status,
            200,
            "{ct:?}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(&r.body[..], COMPLETION.as_bytes());
    }
    assert_eq!(seller.counts().verified, 3);

    // Exactly 8 MiB is accepted (and forwarded whole on both legs).
    let r = request("POST", &url, &auth, padded_chat(MAX)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let c = seller.counts();
    assert_eq!(c.verified, 4);
    assert!(c.bodies.iter().rev().take(2).all(|b| b.len() == MAX));

    // One byte more: 413, with a Content-Length and chunked alike; nothing upstream.
    let before = seller.counts().requests;
    let r = request("POST", &url, &auth, padded_chat(MAX + 1)).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    assert_eq!(
        r.header("x-x402d-error").as_deref(),
        Some("request_too_large")
    );
    let body = Bytes::from(padded_chat(MAX + 1));
    let chunks: Vec<Bytes> = (0..body.len())
        .step_by(64 * 1024)
        .map(|i| body.slice(i..(i + 64 * 1024).min(body.len())))
        .collect();
    let r = post_chunked(&url, chunks).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    let r = post_chunked(
        &url,
        vec![Bytes::from(vec![b' '; 1024 * 1024]); 12]
            .into_iter()
            .chain([Bytes::from_static(CHAT.as_bytes())])
            .collect(),
    )
    .await;
    assert_eq!(r.status, 413, "12 MiB chunked");
    assert_eq!(
        seller.counts().requests,
        before,
        "nothing reached the seller"
    );

    // A chunked body within the limit is an ordinary call.
    let r = post_chunked(
        &url,
        CHAT.as_bytes()
            .chunks(7)
            .map(Bytes::copy_from_slice)
            .collect(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        seller.counts().bodies.last().map(|b| b.to_vec()),
        Some(CHAT.as_bytes().to_vec())
    );
    still_serving(&mut d).await.unwrap();
    assert!(!d.log().contains("panicked"));
}

// ---------------------------------------------------------------------------
// Items found by the outside review (issue 12).

#[tokio::test]
async fn a_stalled_body_beside_a_v2_header_does_not_delay_the_payment() {
    // The requirements are in the header: x402d must not wait for the body (here
    // it never ends) for the upstream timeout before paying.
    let seller = Seller::start(SellerCfg {
        stall_body: true,
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(
        &seller.url(),
        &format!("upstream_timeout_secs = 60\n{SEPOLIA}"),
    );
    let t = Instant::now();
    let r = chat(&d, "k").await;
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("x-x402d-payment-state").as_deref(),
        Some("settled")
    );
    // Far from the 60 s timeout the old code waited for.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let c = seller.counts();
    assert_eq!((c.payment_attempts, c.verified), (1, 1));
    still_serving(&mut d).await.unwrap();
}

// Multi-threaded: the seller must answer `doctor` while the test blocks on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_ten_minutes_off_refuses_to_sign() {
    let seller = Seller::start(SellerCfg {
        date_offset_secs: 600,
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-x402d-error").as_deref(), Some("clock_skew"));
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("behind the upstream's") && msg.contains("NTP"),
        "{msg}"
    );
    assert!(msg.contains("No payment was made"), "{msg}");
    // The other direction too.
    seller.set(|c| c.date_offset_secs = -600);
    let r = chat(&d, "k").await;
    assert_eq!(r.header("x-x402d-error").as_deref(), Some("clock_skew"));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("ahead of the upstream's"), "{msg}");
    assert_eq!(seller.counts().payment_attempts, 0, "nothing signed");
    assert!(d.payments().is_empty(), "nothing reserved");
    // `status --json` shows the last estimate.
    let out = d.cli(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let skew = v["clock_skew_seconds"].as_i64().unwrap();
    assert!((-610..=-590).contains(&skew), "{v}");
    assert!(d.log().contains("refusing to sign"), "{}", d.log());
    let out = d.cli(&["doctor"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("FAIL clock") && s.contains("s ahead of the upstream's"),
        "{s}"
    );
    assert!(s.contains("set-ntp true"), "{s}");
    // With the clock right again, it pays.
    seller.set(|c| c.date_offset_secs = 0);
    assert_eq!(chat(&d, "k").await.status, 200);
    still_serving(&mut d).await.unwrap();
}

#[tokio::test]
async fn an_upstream_cannot_forge_the_proxy_headers() {
    let forged = || {
        vec![
            ("x-x402d-cost".to_string(), "0".to_string()),
            ("x-x402d-payment-state".to_string(), "settled".to_string()),
            ("x-x402d-payment-id".to_string(), "999".to_string()),
            ("x-x402d-error".to_string(), "budget_exceeded".to_string()),
            ("x-should-retry".to_string(), "true".to_string()),
        ]
    };
    // Unpaid 500: only x402d's own cost header, no forged state or retry hint.
    let seller = Seller::start(SellerCfg {
        unpaid_status: 500,
        unpaid_headers: forged(),
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.headers.get_all("x-x402d-cost").iter().collect::<Vec<_>>(),
        ["0"]
    );
    for h in [
        "x-x402d-payment-state",
        "x-x402d-payment-id",
        "x-x402d-error",
        "x-should-retry",
    ] {
        assert!(r.header(h).is_none(), "{h} relayed: {:?}", r.headers);
    }

    // Paid, then 500 (at risk): x402d's values, never the seller's.
    seller.set(|c| {
        c.unpaid_status = 402;
        c.after_pay = AfterPay::Fail500;
        c.paid_headers = forged();
    });
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 500);
    let all = |k: &str| {
        r.headers
            .get_all(k)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("x-x402d-cost"), ["0.001"]);
    assert_eq!(all("x-x402d-payment-state"), ["at_risk"]);
    assert_eq!(all("x-should-retry"), ["false"]);
    assert!(r.header("x-x402d-error").is_none());
    let id = all("x-x402d-payment-id");
    assert_eq!(id.len(), 1);
    assert_ne!(id[0], "999");

    // Paid and settled (200): no forged retry hint or error either.
    seller.set(|c| c.after_pay = AfterPay::Ok);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-x402d-payment-state").as_deref(),
        Some("settled")
    );
    assert_eq!(r.header("x-x402d-cost").as_deref(), Some("0.001"));
    assert!(r.header("x-should-retry").is_none(), "{:?}", r.headers);
    assert!(r.header("x-x402d-error").is_none());
    still_serving(&mut d).await.unwrap();
}

#[tokio::test]
async fn a_validity_longer_than_policy_is_signed_for_the_policy() {
    let seller = Seller::start(SellerCfg {
        max_timeout: 1_000_000_000,
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let ps = d.payments();
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0]["state"], "settled");
    let vb = ps[0]["valid_before"].as_u64().unwrap();
    // payment.max_timeout_seconds defaults to 3600.
    assert!(
        vb >= before + 3600 && vb <= before + 3600 + 60,
        "{vb} vs {before}"
    );
    still_serving(&mut d).await.unwrap();
}

// Multi-threaded: `wait_until` blocks one worker while the seller runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_model_list_whose_client_hangs_up_leaves_no_signed_record() {
    // `/v1/models` may pay on the connection's own task: a hang-up mid-payment
    // cancels the flow. Whatever runs it, the record must not stay `signed`.
    use tokio::io::AsyncWriteExt;
    let seller = Seller::start(SellerCfg {
        free_models: false,
        paid_delay_ms: 2000,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), SEPOLIA);
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let head = format!(
        "GET /v1/models HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer k\r\n\r\n",
        d.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    assert!(wait_until(Duration::from_secs(10), || seller
        .counts()
        .payment_attempts
        == 1));
    drop(s);
    assert!(
        wait_until(Duration::from_secs(20), || d
            .payments()
            .first()
            .is_some_and(|p| p["state"] != "signed")),
        "{:?}",
        d.payments()
    );
    let ps = d.payments();
    assert_eq!(ps.len(), 1);
    assert!(
        ps[0]["state"] == "at_risk" || ps[0]["state"] == "settled",
        "{ps:?}"
    );
}
