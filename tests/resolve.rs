//! At-risk and rejected payments are resolved on chain: a used nonce becomes
//! settled, an unused one past validBefore is released; without an RPC they
//! stay counted (fail closed). The chain is a mock JSON-RPC on loopback that
//! answers `authorizationState(address,bytes32)` like an EIP-3009 token.

mod common;
use common::*;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Rpc {
    url: String,
    used: Arc<Mutex<HashSet<String>>>,
    calls: Arc<Mutex<usize>>,
}

async fn rpc() -> Rpc {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let used: Arc<Mutex<HashSet<String>>> = Arc::default();
    let calls: Arc<Mutex<usize>> = Arc::default();
    let (u2, c2) = (used.clone(), calls.clone());
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let (u3, c3) = (u2.clone(), c2.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (u, c) = (u3.clone(), c3.clone());
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap();
                            *c.lock().unwrap() += 1;
                            let data = v["params"][0]["data"].as_str().unwrap().to_string();
                            // selector (4 bytes) + address word + nonce word
                            assert!(
                                data.starts_with("0xe94a0102"),
                                "authorizationState selector: {data}"
                            );
                            let nonce = format!("0x{}", &data[2 + 8 + 64..]);
                            let used = u.lock().unwrap().contains(&nonce);
                            let result = format!("0x{:064x}", used as u8);
                            let out = json!({"jsonrpc": "2.0", "id": v["id"], "result": result})
                                .to_string();
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::from(out),
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
    Rpc { url, used, calls }
}

fn cfg(rpc: &str, extra: &str) -> String {
    format!(
        "[payment]\nnetworks = [\"eip155:84532\"]\nresolve_every_secs = 1\n[payment.rpc]\n\"eip155:84532\" = \"{rpc}\"\n{extra}"
    )
}

fn state_of(d: &Daemon) -> String {
    d.payments()[0]["state"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_risk_becomes_settled_when_the_chain_shows_the_nonce_used() {
    let chain = rpc().await;
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::Fail500,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(&seller.url(), &cfg(&chain.url, ""));
    assert_eq!(chat(&d, "k").await.status, 500);
    assert_eq!(state_of(&d), "at_risk");
    // Not used yet, not expired: stays at risk across resolver passes.
    let calls = chain.calls.clone();
    assert!(wait_until(Duration::from_secs(5), || *calls
        .lock()
        .unwrap()
        >= 2));
    assert_eq!(state_of(&d), "at_risk");
    // The seller did settle it after all.
    let nonce = d.payments()[0]["nonce"].as_str().unwrap().to_string();
    chain.used.lock().unwrap().insert(nonce);
    assert!(wait_until(Duration::from_secs(5), || state_of(&d) == "settled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_expired_unused_is_released_and_frees_the_budget() {
    let chain = rpc().await;
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::Reject,
        max_timeout: 2,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(
        &seller.url(),
        &cfg(&chain.url, "[apps.default]\ndaily = \"0.001\"\n"),
    );
    assert_eq!(chat(&d, "k").await.status, 402);
    assert_eq!(state_of(&d), "rejected");
    // Still counted: the cap is full until the authorization provably expired unused.
    seller.set(|c| c.after_pay = AfterPay::Ok);
    let r = chat(&d, "k").await;
    assert_eq!(r.json()["error"]["code"], "app_daily_cap_exceeded");
    assert!(wait_until(Duration::from_secs(8), || state_of(&d) == "released"));
    assert_eq!(chat(&d, "k").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_rpc_at_risk_stays_counted_and_says_so() {
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::Fail500,
        max_timeout: 1,
        ..Default::default()
    })
    .await;
    let d = Daemon::start(
        &seller.url(),
        &cfg("", "[apps.default]\ndaily = \"0.001\"\n"),
    );
    assert_eq!(chat(&d, "k").await.status, 500);
    assert!(wait_until(Duration::from_secs(5), || d
        .log()
        .contains("stay counted against caps")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state_of(&d), "at_risk");
    seller.set(|c| c.after_pay = AfterPay::Ok);
    assert_eq!(
        chat(&d, "k").await.json()["error"]["code"],
        "app_daily_cap_exceeded"
    );
}
