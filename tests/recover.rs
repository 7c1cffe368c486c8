//! A paid answer lost after the payment left is recovered by re-sending the very
//! same payment (same bytes, same nonce: it can never pay twice), and x402 v2
//! extensions are echoed with a payment id. The seller is the in-process mock
//! (it really verifies signatures, and "settles" by marking the nonce used); the
//! chain is a mock JSON-RPC whose `authorizationState` reads the seller's used
//! nonces, like a token contract after settlement.

mod common;
use alloy_primitives::B256;
use common::*;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shaped like `@x402/extensions` 2.27 `declarePaymentIdentifierExtension(false)`,
/// plus a second extension with odd spacing and number spelling that must come
/// back byte for byte.
const EXTENSIONS: &str = r#"{"payment-identifier":{"info":{"required":false},"schema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"required":{"type":"boolean"},"id":{"type":"string","minLength":16,"maxLength":128,"pattern":"^[a-zA-Z0-9_-]+$"}},"required":["required"]}},"x-test-ext":{"info": {"z":1.50,"a":"\u00e9"}, "schema":{}}}"#;
const X_TEST_EXT: &str = r#"{"info": {"z":1.50,"a":"\u00e9"}, "schema":{}}"#;

/// A mock chain: `authorizationState` is 1 for nonces in `used`.
struct Chain {
    url: String,
    calls: Arc<Mutex<usize>>,
}

async fn chain(used: Arc<Mutex<HashSet<B256>>>) -> Chain {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(Mutex::new(0usize));
    let c2 = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let (used, calls) = (used.clone(), c2.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (used, calls) = (used.clone(), calls.clone());
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap();
                            *calls.lock().unwrap() += 1;
                            let now = SystemTime::now()
                                .duration_since(UNIX_EPOCH)
                                .unwrap()
                                .as_secs();
                            let result = match v["method"].as_str().unwrap() {
                                "eth_chainId" => json!("0x14a34"),
                                "eth_getBlockByNumber" => {
                                    json!({"number": "0x77", "timestamp": format!("0x{now:x}")})
                                }
                                "eth_call" => {
                                    let data = v["params"][0]["data"].as_str().unwrap();
                                    let nonce: B256 =
                                        format!("0x{}", &data[data.len() - 64..]).parse().unwrap();
                                    let used = used.lock().unwrap().contains(&nonce);
                                    json!(format!("0x{:064x}", used as u8))
                                }
                                m => panic!("unexpected RPC {m}"),
                            };
                            let out = json!({"jsonrpc": "2.0", "id": v["id"], "result": result});
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::from(out.to_string()),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Chain { url, calls }
}

fn cfg(rpc: &str, extra: &str) -> String {
    format!(
        "[payment]\nnetworks = [\"eip155:84532\"]\nresolve_every_secs = 3600\n{extra}\n[payment.rpc]\n\"eip155:84532\" = \"{rpc}\"\n"
    )
}

async fn metrics(d: &Daemon) -> String {
    let m = request("GET", &d.url("/metrics"), &[], "").await;
    String::from_utf8_lossy(&m.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_replayed_by_payment_id_and_paid_once() {
    let seller = Seller::start(SellerCfg {
        extensions: Some(EXTENSIONS.into()),
        drop_first_paid: true,
        replay_by_id: true,
        ..Default::default()
    })
    .await;
    let rpc = chain(seller.used_nonces()).await;
    let d = Daemon::start(&seller.url(), &cfg(&rpc.url, ""));
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.body,
        COMPLETION.as_bytes(),
        "the paid answer, byte for byte"
    );
    assert_eq!(
        r.header("x-x402d-payment-state").as_deref(),
        Some("settled")
    );

    let c = seller.counts();
    assert_eq!(c.verified, 1, "settled once");
    assert_eq!(c.payment_attempts, 2, "sent, then re-sent once");
    assert_eq!(c.distinct_payments(), 1, "the re-send is the same bytes");
    assert_eq!(c.replayed, 1);

    // Both extensions echoed; ours only adds info.id.
    let header = &c.payment_headers[0];
    let text = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, header).unwrap(),
    )
    .unwrap();
    assert!(
        text.contains(&format!("\"x-test-ext\":{X_TEST_EXT}")),
        "{text}"
    );
    let doc = payment_doc(header);
    let pid = payment_id_of(header).unwrap();
    assert!(pid.len() >= 16 && pid.len() <= 128, "{pid}");
    assert_eq!(
        doc["extensions"]["payment-identifier"]["info"]["required"],
        false
    );
    assert_eq!(
        doc["extensions"]["payment-identifier"]["schema"],
        serde_json::from_str::<Value>(EXTENSIONS).unwrap()["payment-identifier"]["schema"]
    );

    let p = &d.payments()[0];
    assert_eq!(p["state"], "settled");
    assert_eq!(p["attempts"], 2);
    assert_eq!(p["payment_identifier"], pid.as_str());
    assert!(p["last_error"].as_str().is_some(), "{p}");
    assert_eq!(*rpc.calls.lock().unwrap(), 0, "no chain check needed");
    let m = metrics(&d).await;
    assert!(
        m.contains("x402d_payment_resends_total{app=\"default\",result=\"answer\"} 1"),
        "{m}"
    );

    // A new call gets a new id; `payments` shows it.
    seller.set(|c| c.drop_first_paid = false);
    assert_eq!(chat(&d, "k").await.status, 200);
    let ps = d.payments();
    assert_ne!(ps[0]["payment_identifier"], ps[1]["payment_identifier"]);
    assert_eq!(ps[0]["attempts"], 1);
    let table = d.cli(&["payments"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("PAYMENT-ID") && table.contains(&pid),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_payment_identifier_a_used_nonce_on_chain_means_paid_once_and_answer_lost() {
    let seller = Seller::start(SellerCfg {
        drop_first_paid: true,
        ..Default::default()
    })
    .await;
    let rpc = chain(seller.used_nonces()).await;
    let d = Daemon::start(&seller.url(), &cfg(&rpc.url, ""));
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    let e = r.json();
    assert_eq!(e["error"]["code"], "paid_answer_lost");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("paid $0.001")
            && msg.contains("lost the answer")
            && msg.contains("will not pay again"),
        "{msg}"
    );

    let c = seller.counts();
    assert_eq!(c.verified, 1, "settled once");
    assert_eq!(c.payment_attempts, 2);
    assert_eq!(c.distinct_payments(), 1, "never a new signature");
    assert!(
        c.invalid[0].contains("nonce_already_used"),
        "{:?}",
        c.invalid
    );
    let p = &d.payments()[0];
    assert_eq!(p["state"], "settled");
    assert_eq!(p["tx"], Value::Null, "tx unknown");
    assert_eq!(p["attempts"], 2);
    assert_eq!(p["payment_identifier"], Value::Null);
    let last = p["last_error"].as_str().unwrap();
    assert!(
        last.contains("block 119") && last.contains("lost the answer"),
        "{last}"
    );
    let m = metrics(&d).await;
    assert!(
        m.contains("x402d_payment_resends_total{app=\"default\",result=\"answer_lost\"} 1"),
        "{m}"
    );
    assert!(m.contains("state=\"settled\"} 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_re_send_with_the_nonce_unused_on_chain_stays_at_risk() {
    let seller = Seller::start(SellerCfg {
        drop_first_paid: true,
        ..Default::default()
    })
    .await;
    // A chain that has not seen the transfer (yet).
    let rpc = chain(Arc::new(Mutex::new(HashSet::new()))).await;
    let d = Daemon::start(&seller.url(), &cfg(&rpc.url, "recover_attempts = 2"));
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "payment_outcome_unknown");
    let c = seller.counts();
    assert_eq!(
        c.payment_attempts, 3,
        "bounded: the first send + 2 re-sends"
    );
    assert_eq!(c.distinct_payments(), 1);
    assert_eq!(c.verified, 1);
    let p = &d.payments()[0];
    assert_eq!(p["state"], "at_risk");
    assert_eq!(p["attempts"], 3);
    assert!(
        p["last_error"]
            .as_str()
            .unwrap()
            .contains("unused on chain"),
        "{p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_off_leaves_the_payment_at_risk_after_one_send() {
    let seller = Seller::start(SellerCfg {
        drop_first_paid: true,
        replay_by_id: true,
        extensions: Some(EXTENSIONS.into()),
        ..Default::default()
    })
    .await;
    let rpc = chain(seller.used_nonces()).await;
    let d = Daemon::start(&seller.url(), &cfg(&rpc.url, "recover_attempts = 0"));
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "payment_outcome_unknown");
    assert_eq!(seller.counts().payment_attempts, 1);
    let p = &d.payments()[0];
    assert_eq!(p["state"], "at_risk");
    assert_eq!(p["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_retries_join_the_recovering_call() {
    let seller = Seller::start(SellerCfg {
        extensions: Some(EXTENSIONS.into()),
        drop_first_paid: true,
        replay_by_id: true,
        ..Default::default()
    })
    .await;
    let rpc = chain(seller.used_nonces()).await;
    let d = Daemon::start(&seller.url(), &cfg(&rpc.url, ""));
    let call = |n: &'static str| {
        let url = d.url("/v1/chat/completions");
        async move {
            request(
                "POST",
                &url,
                &[
                    ("authorization", "Bearer k"),
                    ("x-stainless-retry-count", n),
                ],
                CHAT,
            )
            .await
        }
    };
    let (a, b) = tokio::join!(call("0"), async {
        // The retry arrives while the first call is in flight or just after it:
        // either way it is the same logical call.
        while seller.counts().payment_attempts == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        call("1").await
    });
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.body, b.body);
    let c = seller.counts();
    assert_eq!(c.verified, 1);
    assert_eq!(c.distinct_payments(), 1);
    assert_eq!(d.payments().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_payment_id_that_cannot_be_given_is_refused_before_signing() {
    let seller = Seller::start(SellerCfg {
        extensions: Some(r#"{"payment-identifier":{"required":true}}"#.into()),
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), "[payment]\nnetworks = [\"eip155:84532\"]\n");
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 502);
    let e = r.json();
    assert_eq!(e["error"]["code"], "invalid_payment_requirements");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("No payment was made"),
        "{e}"
    );
    assert_eq!(seller.counts().payment_attempts, 0);
    assert!(d.payments().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_failures_are_at_risk_never_not_settled() {
    // 2xx, but PAYMENT-RESPONSE says success: false.
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::SettleFailed200,
        ..Default::default()
    })
    .await;
    let rpc = chain(seller.used_nonces()).await;
    let d = Daemon::start(&seller.url(), &cfg(&rpc.url, ""));
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-x402d-payment-state").as_deref(),
        Some("at_risk")
    );
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    let p = &d.payments()[0];
    assert_eq!(p["state"], "at_risk");
    assert!(
        p["note"].as_str().unwrap().contains("settle_timeout"),
        "{p}"
    );

    // 402 whose PAYMENT-RESPONSE says the settlement failed: the seller did not
    // simply refuse; the transaction may be on chain.
    seller.set(|c| c.after_pay = AfterPay::SettleFailed402);
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 502);
    let e = r.json();
    assert_eq!(e["error"]["code"], "payment_settlement_failed");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("unexpected_settle_error") && msg.contains("may still be on chain"),
        "{msg}"
    );
    assert!(!msg.contains("not settled"), "{msg}");
    assert_eq!(d.payments()[0]["state"], "at_risk");
    assert_eq!(seller.counts().payment_attempts, 2, "neither is re-sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_sends_stop_within_twice_the_upstream_timeout() {
    // The seller takes the payment and never answers; a re-send is refused
    // (nonce used) while the chain has not seen the transfer: worth re-trying,
    // but only until the exchange has taken twice the upstream timeout.
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 600_000,
        ..Default::default()
    })
    .await;
    let rpc = chain(Arc::new(Mutex::new(HashSet::new()))).await;
    let d = Daemon::start(
        &seller.url(),
        &format!(
            "upstream_timeout_secs = 2\n{}",
            cfg(&rpc.url, "recover_attempts = 10")
        ),
    );
    let r = chat(&d, "k").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "payment_outcome_unknown");
    let c = seller.counts();
    assert!(
        (2..11).contains(&c.payment_attempts),
        "{} sends: bounded by the deadline, not by recover_attempts",
        c.payment_attempts
    );
    assert_eq!(c.distinct_payments(), 1);
    let p = &d.payments()[0];
    assert_eq!(p["state"], "at_risk");
    assert_eq!(p["attempts"], c.payment_attempts);
}
