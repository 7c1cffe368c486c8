//! At-risk and rejected payments are resolved on chain, on one block the node
//! names: a nonce used at that block becomes settled; an unused one becomes
//! released only once that block's timestamp reached `validBefore` (the local
//! clock proves nothing), and only from a node on the right chain whose head is
//! not far behind wall time. Anything else stays counted (fail closed). The chain
//! is a mock JSON-RPC on loopback answering `eth_chainId`, `eth_getBlockByNumber`
//! and `eth_call` to `authorizationState(address,bytes32)` like an EIP-3009 token.

mod common;
use common::*;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The head block number the mock always reports.
const HEAD: u64 = 0x1234;

struct ChainState {
    chain_id: u64,
    /// Seconds the head block's timestamp is behind wall time.
    lag: i64,
    /// A head frozen at this timestamp (a stuck node), instead of wall time − lag.
    frozen_at: Option<u64>,
    used: HashSet<String>,
    /// Answer this word to `authorizationState` instead of 0/1.
    word: Option<u8>,
    /// Block tag of every `eth_call`.
    tags: Vec<String>,
    /// Requests per JSON-RPC method.
    calls: HashMap<String, usize>,
}

#[derive(Clone)]
struct Rpc {
    url: String,
    s: Arc<Mutex<ChainState>>,
}

impl Rpc {
    fn set(&self, f: impl FnOnce(&mut ChainState)) {
        f(&mut self.s.lock().unwrap())
    }
    fn calls(&self, method: &str) -> usize {
        *self.s.lock().unwrap().calls.get(method).unwrap_or(&0)
    }
    fn total(&self) -> usize {
        self.s.lock().unwrap().calls.values().sum()
    }
    /// Waits until the daemon sent `n` more requests of any kind (resolver passes).
    /// Not an assertion: a resolver with nothing left to resolve stops asking, and
    /// the state check that follows says why.
    fn passes(&self, n: usize) {
        let start = self.total();
        wait_until(Duration::from_secs(10), || self.total() >= start + n);
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn answer(s: &mut ChainState, v: &Value) -> Value {
    let method = v["method"].as_str().unwrap_or("").to_string();
    *s.calls.entry(method.clone()).or_default() += 1;
    match method.as_str() {
        "eth_chainId" => json!(format!("0x{:x}", s.chain_id)),
        "eth_getBlockByNumber" => {
            assert_eq!(v["params"], json!(["latest", false]));
            let ts = s
                .frozen_at
                .unwrap_or_else(|| (now_s() as i64 - s.lag) as u64);
            json!({"number": format!("0x{HEAD:x}"), "timestamp": format!("0x{ts:x}"),
                   "hash": format!("0x{:064x}", HEAD)})
        }
        "eth_call" => {
            let data = v["params"][0]["data"].as_str().unwrap().to_string();
            // selector (4 bytes) + address word + nonce word
            assert!(
                data.starts_with("0xe94a0102"),
                "authorizationState selector: {data}"
            );
            s.tags
                .push(v["params"][1].as_str().unwrap_or("?").to_string());
            let nonce = format!("0x{}", &data[2 + 8 + 64..]);
            let word = s.word.unwrap_or(s.used.contains(&nonce) as u8);
            json!(format!("0x{word:064x}"))
        }
        _ => Value::Null,
    }
}

async fn rpc() -> Rpc {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let s = Arc::new(Mutex::new(ChainState {
        chain_id: 84532,
        lag: 0,
        frozen_at: None,
        used: HashSet::new(),
        word: None,
        tags: Vec::new(),
        calls: HashMap::new(),
    }));
    let s2 = s.clone();
    tokio::spawn(async move {
        loop {
            let (sock, _) = l.accept().await.unwrap();
            let s3 = s2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let s = s3.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap();
                            let result = answer(&mut s.lock().unwrap(), &v);
                            let out = if result.is_null() {
                                json!({"jsonrpc": "2.0", "id": v["id"],
                                       "error": {"code": -32601, "message": "method not found"}})
                            } else {
                                json!({"jsonrpc": "2.0", "id": v["id"], "result": result})
                            };
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::from(out.to_string()),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    Rpc { url, s }
}

fn cfg(rpc: &str, extra: &str) -> String {
    format!(
        "[payment]\nnetworks = [\"eip155:84532\"]\nresolve_every_secs = 1\n{extra}\n[payment.rpc]\n\"eip155:84532\" = \"{rpc}\"\n"
    )
}

fn state_of(d: &Daemon) -> String {
    d.payments()[0]["state"].as_str().unwrap().to_string()
}

/// Waits until the local clock is past the newest payment's `validBefore`.
fn local_clock_past_valid_before(d: &Daemon) {
    let vb = d.payments()[0]["valid_before"].as_u64().unwrap();
    assert!(wait_until(Duration::from_secs(15), || now_s() > vb + 1));
}

async fn metrics(d: &Daemon) -> String {
    let m = request("GET", &d.url("/metrics"), &[], "").await;
    assert_eq!(m.status, 200);
    String::from_utf8_lossy(&m.body).into_owned()
}

fn outcome_metric(state: &str) -> String {
    format!("x402d_payments_total{{app=\"default\",network=\"eip155:84532\",state=\"{state}\"}} 1")
}

/// A seller that takes the payment and answers 500, with a 3 s validity (short,
/// yet long enough that a loaded machine still gets the payment to the seller in time).
async fn at_risk_seller() -> Seller {
    Seller::start(SellerCfg {
        after_pay: AfterPay::Fail500,
        max_timeout: 3,
        ..Default::default()
    })
    .await
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
    chain.passes(6);
    assert_eq!(state_of(&d), "at_risk");
    // The seller did settle it after all.
    let nonce = d.payments()[0]["nonce"].as_str().unwrap().to_string();
    chain.set(|s| {
        s.used.insert(nonce);
    });
    assert!(wait_until(Duration::from_secs(5), || state_of(&d) == "settled"));
    // Every read named the block whose head it had just read, never "latest".
    let tags = chain.s.lock().unwrap().tags.clone();
    assert!(
        !tags.is_empty() && tags.iter().all(|t| *t == format!("0x{HEAD:x}")),
        "{tags:?}"
    );
    // The chain id is asked once per RPC URL, not per pass.
    assert_eq!(chain.calls("eth_chainId"), 1);
    // An outcome resolved on chain counts in the payment metrics like one seen on the wire.
    let m = metrics(&d).await;
    assert!(m.contains(&outcome_metric("settled")), "{m}");
    assert!(
        m.contains("x402d_paid_atomic_units_total{app=\"default\"} 1000"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_expired_unused_is_released_and_frees_the_budget() {
    let chain = rpc().await;
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::Reject,
        max_timeout: 4,
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
    assert!(wait_until(Duration::from_secs(20), || state_of(&d) == "released"));
    assert_eq!(chat(&d, "k").await.status, 200);
    let m = metrics(&d).await;
    assert!(m.contains(&outcome_metric("released")), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_clock_past_valid_before_releases_nothing_until_the_chain_time_is() {
    let chain = rpc().await;
    // The chain's clock is two minutes behind the host's (well within max_rpc_lag_secs):
    // a transfer can still be mined while the host thinks the authorization expired.
    chain.set(|s| s.lag = 120);
    let seller = at_risk_seller().await;
    let d = Daemon::start(&seller.url(), &cfg(&chain.url, ""));
    assert_eq!(chat(&d, "k").await.status, 500);
    local_clock_past_valid_before(&d);
    chain.passes(6);
    assert_eq!(state_of(&d), "at_risk");
    // The chain's time reaches validBefore with the nonce unused: now it can never move.
    chain.set(|s| s.lag = 0);
    assert!(wait_until(Duration::from_secs(20), || state_of(&d) == "released"));
    let m = metrics(&d).await;
    assert!(m.contains(&outcome_metric("released")), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_state_other_than_0_or_1_is_an_error_and_stays_counted() {
    let chain = rpc().await;
    chain.set(|s| s.word = Some(2));
    let seller = at_risk_seller().await;
    let d = Daemon::start(&seller.url(), &cfg(&chain.url, ""));
    assert_eq!(chat(&d, "k").await.status, 500);
    local_clock_past_valid_before(&d);
    chain.passes(6);
    assert_eq!(state_of(&d), "at_risk");
    assert!(d.log().contains("not 0 or 1"), "{}", d.log());
    chain.set(|s| s.word = None);
    assert!(wait_until(Duration::from_secs(20), || state_of(&d) == "released"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_on_another_chain_is_refused() {
    let chain = rpc().await;
    // A Base mainnet URL configured for Base Sepolia.
    chain.set(|s| s.chain_id = 8453);
    let seller = at_risk_seller().await;
    let d = Daemon::start(&seller.url(), &cfg(&chain.url, ""));
    assert_eq!(chat(&d, "k").await.status, 500);
    local_clock_past_valid_before(&d);
    chain.passes(3);
    assert_eq!(state_of(&d), "at_risk");
    assert_eq!(
        chain.calls("eth_call"),
        0,
        "nothing is read from a wrong chain"
    );
    let log = d.log();
    assert!(
        log.contains("chain id 8453") && log.contains("eip155:84532"),
        "{log}"
    );
    assert!(
        !log.contains(&chain.url),
        "the RPC URL may hold an API key: {log}"
    );
    // Fixed behind the same URL: it is checked again and trusted.
    chain.set(|s| s.chain_id = 84532);
    assert!(wait_until(Duration::from_secs(20), || state_of(&d) == "released"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stuck_far_behind_wall_time_cannot_release_but_can_prove_settlement() {
    let chain = rpc().await;
    // Head frozen long ago: not even past validBefore yet.
    chain.set(|s| s.frozen_at = Some(now_s() - 10_000));
    let seller = at_risk_seller().await;
    let d = Daemon::start(&seller.url(), &cfg(&chain.url, "max_rpc_lag_secs = 2"));
    assert_eq!(chat(&d, "k").await.status, 500);
    assert_eq!(chat(&d, "k").await.status, 500);
    let ps = d.payments();
    assert_eq!(ps.len(), 2);
    let vb = ps
        .iter()
        .map(|p| p["valid_before"].as_u64().unwrap())
        .max()
        .unwrap();
    // The node's head says validBefore passed, but that head is older than
    // max_rpc_lag_secs by wall time: a stuck node (maybe on an abandoned fork) proves no expiry.
    assert!(wait_until(Duration::from_secs(10), || now_s() > vb + 3));
    chain.set(|s| s.frozen_at = Some(vb));
    chain.passes(6);
    assert!(d.payments().iter().all(|p| p["state"] == "at_risk"));
    assert!(d.log().contains("behind wall time"), "{}", d.log());
    // A nonce used at that block still proves the money moved.
    let settled = ps[0]["nonce"].as_str().unwrap().to_string();
    chain.set(|s| {
        s.used.insert(settled.clone());
    });
    assert!(wait_until(Duration::from_secs(8), || d
        .payments()
        .iter()
        .any(|p| p["state"] == "settled")));
    let states = |d: &Daemon| -> Vec<(String, String)> {
        d.payments()
            .iter()
            .map(|p| {
                (
                    p["nonce"].as_str().unwrap().to_string(),
                    p["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    for (nonce, state) in states(&d) {
        let want = if nonce == settled {
            "settled"
        } else {
            "at_risk"
        };
        assert_eq!(state, want);
    }
    // The node catches up: the other one expired unused.
    chain.set(|s| s.frozen_at = None);
    assert!(wait_until(Duration::from_secs(8), || states(&d)
        .iter()
        .all(|(_, s)| s != "at_risk")));
    for (nonce, state) in states(&d) {
        let want = if nonce == settled {
            "settled"
        } else {
            "released"
        };
        assert_eq!(state, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_rpc_at_risk_stays_counted_and_says_so() {
    let seller = Seller::start(SellerCfg {
        after_pay: AfterPay::Fail500,
        max_timeout: 3,
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
