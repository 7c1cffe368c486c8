//! Paying on Solana with the real binary: a mock seller offering an SVM `exact`
//! option, a mock Solana JSON-RPC on 127.0.0.1, the Solana wallet commands, and
//! at-risk payments resolved by memo once their blockhash expired.

mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use ed25519_dalek::{SigningKey, Verifier};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use x402d::x402::svm::{self, Pubkey};

const DEVNET: &str = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1";
const DEVNET_USDC: &str = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU";
const FEE_PAYER: &str = "CKPKJWNdJEqa81x7CkZ14BVPiY6y16Sxs7owznqtWYp5";
const PAY_TO_SOL: &str = "2wKupLR9q6wXYppw8Gr2NvWxKBUqm4PPJKkQfoxHDBg4";
const LAST_VALID: u64 = 1_000;

fn key() -> SigningKey {
    SigningKey::from_bytes(&std::array::from_fn(|i| i as u8 + 1))
}
fn payer() -> Pubkey {
    Pubkey(key().verifying_key().to_bytes())
}
/// The Solana CLI keypair file form of the test key.
fn keypair_json() -> String {
    serde_json::to_string(&key().to_keypair_bytes().to_vec()).unwrap()
}
fn blockhash() -> String {
    bs58::encode([42u8; 32]).into_string()
}

/// What the mock chain and seller saw.
#[derive(Default)]
struct World {
    /// Finalized block height the RPC reports.
    height: u64,
    /// Transactions "on chain": (signature, wire).
    landed: Vec<(String, Vec<u8>)>,
    /// RPC methods called, in order.
    rpc_calls: Vec<String>,
    /// Paid requests the seller received: the decoded transactions.
    paid: Vec<Vec<u8>>,
    /// The seller's answer to a paid request: 200 (and the tx lands) or 500.
    fail_paid: bool,
    /// Whether a paid request that fails still lands on chain.
    land_on_failure: bool,
    /// The first paid request's connection is dropped without an answer (after
    /// it landed, with `land_on_failure`); re-sends are refused with a 402.
    drop_first_paid: bool,
    /// Landed signatures seen at `confirmed` but not yet at `finalized`.
    unfinalized: Vec<String>,
    /// EVM payment headers the seller received (decoded).
    evm_paid: Vec<Value>,
    offer: Value,
    /// Every option of the 402 (default: just `offer`).
    accepts: Option<Value>,
}

type Shared = Arc<Mutex<World>>;

async fn serve<F, Fut>(f: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send,
{
    serve_or_drop(move |req| {
        let f = f.clone();
        async move { Some(f(req).await) }
    })
    .await
}

/// Like `serve`; `None` drops the connection without an answer.
async fn serve_or_drop<F, Fut>(f: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<Response<Full<Bytes>>>> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let f = f.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let f = f.clone();
                    async move { f(req).await.ok_or(std::io::Error::other("answer lost")) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn offer(amount: &str) -> Value {
    json!({"scheme":"exact","network":DEVNET,"amount":amount,"asset":DEVNET_USDC,
           "payTo":PAY_TO_SOL,"maxTimeoutSeconds":60,"extra":{"feePayer":FEE_PAYER}})
}

/// A transaction signature for a wire transaction (its fee payer would sign
/// first; here a hash stands in).
fn sig_of(wire: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha512::digest(wire);
    bs58::encode(h).into_string()
}

async fn seller(w: Shared) -> SocketAddr {
    serve_or_drop(move |req: Request<Incoming>| {
        let w = w.clone();
        async move {
            let pay = req
                .headers()
                .get("payment-signature")
                .map(|v| v.as_bytes().to_vec());
            let _ = req.into_body().collect().await;
            let required = |error: &str| {
                let w = w.lock().unwrap();
                let accepts = w.accepts.clone().unwrap_or_else(|| json!([w.offer]));
                let pr = json!({"x402Version":2,"error":error,
                    "resource":{"url":"http://seller/v1/chat/completions"},"accepts":accepts});
                let h = base64::engine::general_purpose::STANDARD.encode(pr.to_string());
                Some(
                    Response::builder()
                        .status(402)
                        .header("payment-required", h)
                        .body(Full::new(Bytes::from_static(b"{}")))
                        .unwrap(),
                )
            };
            let Some(pay) = pay else {
                return required("payment required");
            };
            let doc: Value = serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD
                    .decode(&pay)
                    .unwrap(),
            )
            .unwrap();
            if doc["payload"].get("authorization").is_some() {
                w.lock().unwrap().evm_paid.push(doc);
                let settle = json!({"success":true,"transaction":format!("0x{}", "ab".repeat(32)),
                    "network":"eip155:84532"});
                return Some(
                    Response::builder()
                        .status(200)
                        .header("content-type", "application/json")
                        .header(
                            "payment-response",
                            base64::engine::general_purpose::STANDARD.encode(settle.to_string()),
                        )
                        .body(Full::new(Bytes::from_static(COMPLETION.as_bytes())))
                        .unwrap(),
                );
            }
            let tx = base64::engine::general_purpose::STANDARD
                .decode(doc["payload"]["transaction"].as_str().unwrap())
                .unwrap();
            let refused = {
                let mut world = w.lock().unwrap();
                world.paid.push(tx.clone());
                if world.drop_first_paid && world.paid.len() == 1 {
                    if world.land_on_failure {
                        let sig = sig_of(&tx);
                        world.unfinalized.push(sig.clone());
                        world.landed.push((sig, tx));
                    }
                    return None;
                }
                world.drop_first_paid
            };
            if refused {
                // A re-send: the facilitator refuses it (already settled, or not).
                return required("duplicate_settlement");
            }
            let mut world = w.lock().unwrap();
            if world.fail_paid {
                if world.land_on_failure {
                    world.landed.push((sig_of(&tx), tx));
                }
                return Some(
                    Response::builder()
                        .status(500)
                        .body(Full::new(Bytes::from_static(b"{\"error\":\"boom\"}")))
                        .unwrap(),
                );
            }
            let sig = sig_of(&tx);
            world.landed.push((sig.clone(), tx));
            let settle = json!({"success":true,"transaction":sig,"network":DEVNET,
                "payer": payer().to_base58()});
            Some(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .header(
                        "payment-response",
                        base64::engine::general_purpose::STANDARD.encode(settle.to_string()),
                    )
                    .body(Full::new(Bytes::from_static(COMPLETION.as_bytes())))
                    .unwrap(),
            )
        }
    })
    .await
}

/// `getTransaction` (encoding json) for a wire transaction.
fn tx_json(wire: &[u8]) -> Value {
    let d = svm::decode(wire).unwrap();
    let index = |k: &Pubkey| d.accounts.iter().position(|a| a == k).unwrap();
    let ixs: Vec<Value> = d
        .instructions
        .iter()
        .map(|ix| {
            json!({"programIdIndex": index(&ix.program),
                   "accounts": ix.accounts.iter().map(|a| index(&a.key)).collect::<Vec<_>>(),
                   "data": bs58::encode(&ix.data).into_string()})
        })
        .collect();
    json!({"slot": 7, "blockTime": 1, "meta": {"err": null, "loadedAddresses": {"writable": [], "readonly": []}},
           "transaction": {"signatures": [], "message": {
               "accountKeys": d.accounts.iter().map(|a| a.to_base58()).collect::<Vec<_>>(),
               "instructions": ixs}}})
}

async fn rpc(w: Shared) -> SocketAddr {
    serve(move |req: Request<Incoming>| {
        let w = w.clone();
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let r: Value = serde_json::from_slice(&body).unwrap();
            let method = r["method"].as_str().unwrap_or("").to_string();
            let mut world = w.lock().unwrap();
            world.rpc_calls.push(method.clone());
            // What this commitment sees (the RPC's default is finalized).
            let finalized = !matches!(
                r["params"][1]["commitment"].as_str(),
                Some("confirmed" | "processed")
            );
            let seen = |s: &String| !finalized || !world.unfinalized.contains(s);
            let result = match method.as_str() {
                "getLatestBlockhash" => json!({"context":{"slot":1},
                    "value":{"blockhash": blockhash(), "lastValidBlockHeight": LAST_VALID}}),
                "getGenesisHash" => json!("EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"),
                "getBlockHeight" => json!(world.height),
                "getHealth" => json!("ok"),
                "getVersion" => json!({"solana-core": "2.2.0-mock"}),
                "getSignaturesForAddress" => {
                    let addr = Pubkey::parse(r["params"][0].as_str().unwrap()).unwrap();
                    let list: Vec<Value> = world
                        .landed
                        .iter()
                        .rev()
                        .filter(|(s, wire)| {
                            let d = svm::decode(wire).unwrap();
                            d.instructions[2].accounts[0].key == addr && seen(s)
                        })
                        .map(|(s, _)| json!({"signature": s, "slot": 7, "err": null, "memo": null,
                                             "blockTime": 1, "confirmationStatus": "finalized"}))
                        .collect();
                    json!(list)
                }
                "getTransaction" => {
                    let s = r["params"][0].as_str().unwrap();
                    match world.landed.iter().find(|(x, _)| x == s && seen(x)) {
                        Some((_, wire)) => tx_json(wire),
                        None => Value::Null,
                    }
                }
                "getAccountInfo" => json!({"context":{"slot":1},"value":{"data":["","base64"],
                    "executable":false,"lamports":2039280,"owner":"TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA","rentEpoch":0,"space":165}}),
                "getTokenAccountBalance" => json!({"context":{"slot":1},
                    "value":{"amount":"5000000","decimals":6,"uiAmountString":"5"}}),
                _ => Value::Null,
            };
            let reply = json!({"jsonrpc":"2.0","id":r["id"],"result":result});
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(reply.to_string())))
                .unwrap()
        }
    })
    .await
}

struct Setup {
    world: Shared,
    d: Daemon,
}

impl Drop for Setup {
    fn drop(&mut self) {
        // The Solana entry is ours to clean (Daemon's Drop removes the EVM one).
        let _ = self.d.cli(&["wallet", "remove", "--solana", "--yes"]);
    }
}

async fn setup(amount: &str, payment_extra: &str, extra: &str) -> Setup {
    setup_on(
        "\"solana-devnet\", \"base-sepolia\"",
        false,
        amount,
        payment_extra,
        extra,
    )
    .await
}

/// `setup` with `payment.networks` (TOML list items), and the EVM key too.
async fn setup_on(
    networks: &str,
    evm_key: bool,
    amount: &str,
    payment_extra: &str,
    extra: &str,
) -> Setup {
    let world: Shared = Arc::new(Mutex::new(World {
        height: 10,
        offer: offer(amount),
        ..World::default()
    }));
    let s = seller(world.clone()).await;
    let r = rpc(world.clone()).await;
    let cfg = format!(
        "{extra}\n[payment]\nnetworks = [{networks}]\n{payment_extra}\n[payment.rpc]\n\"solana-devnet\" = \"http://{r}\"\n"
    );
    let d = Daemon::start_with(&format!("http://{s}"), &cfg, evm_key);
    let file = d.dir.0.join("id.json");
    std::fs::write(&file, keypair_json()).unwrap();
    let out = d.cli(&[
        "wallet",
        "import",
        "--solana",
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        payer().to_base58()
    );
    Setup { world, d }
}

/// Checks one transaction as a facilitator would.
fn check_tx(wire: &[u8], amount: u64) -> String {
    let d = svm::decode(wire).unwrap();
    assert_eq!(d.version, Some(0));
    assert_eq!(d.blockhash, [42u8; 32]);
    assert_eq!(d.accounts[0].to_base58(), FEE_PAYER);
    assert_eq!(d.signatures.len(), 2);
    assert_eq!(d.signatures[0], [0u8; 64], "the fee payer's slot is empty");
    assert_eq!(d.accounts[1], payer());
    key()
        .verifying_key()
        .verify(
            &d.message,
            &ed25519_dalek::Signature::from_bytes(&d.signatures[1]),
        )
        .expect("payer-signed");
    let ix = &d.instructions;
    assert_eq!(ix.len(), 4);
    assert_eq!(ix[2].program, svm::TOKEN_PROGRAM);
    assert_eq!(ix[2].data[1..9], amount.to_le_bytes());
    let mint = Pubkey::parse(DEVNET_USDC).unwrap();
    let dest = svm::associated_token_account(&Pubkey::parse(PAY_TO_SOL).unwrap(), &mint).unwrap();
    assert_eq!(ix[2].accounts[2].key, dest);
    assert_eq!(ix[3].program, svm::MEMO_PROGRAM);
    let memo = String::from_utf8(ix[3].data.clone()).unwrap();
    assert_eq!(memo.len(), 32);
    assert!(memo.bytes().all(|b| b.is_ascii_hexdigit()));
    for i in ix {
        assert!(i.accounts.iter().all(|a| a.key.to_base58() != FEE_PAYER));
    }
    memo
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paid_call_sends_one_payer_signed_transaction_and_records_it() {
    let s = setup("10000", "", "").await;
    let r = chat(&s.d, "sk-test").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-x402d-cost").as_deref(), Some("0.01"));
    let (paid, blockhash_calls) = {
        let w = s.world.lock().unwrap();
        let n = w
            .rpc_calls
            .iter()
            .filter(|m| *m == "getLatestBlockhash")
            .count();
        (w.paid.clone(), n)
    };
    assert_eq!(paid.len(), 1, "sent once");
    assert_eq!(blockhash_calls, 1);
    let memo = check_tx(&paid[0], 10_000);
    let p = s.d.payments();
    assert_eq!(p.len(), 1, "{p:?}");
    let p = &p[0];
    assert_eq!(p["state"], "settled", "{p}");
    assert_eq!(p["network"], DEVNET);
    assert_eq!(p["asset"], DEVNET_USDC);
    assert_eq!(p["pay_to"], PAY_TO_SOL);
    assert_eq!(p["amount"], "0.01");
    assert_eq!(p["payer"], payer().to_base58());
    assert_eq!(p["nonce"], memo.as_str(), "the memo is the payment's nonce");
    assert_eq!(p["valid_before"], LAST_VALID, "lastValidBlockHeight");
    assert_eq!(p["tx"], sig_of(&paid[0]).as_str());

    // A second call is a second payment with its own memo.
    let r = chat(&s.d, "sk-test").await;
    assert_eq!(r.status, 200);
    let paid = s.world.lock().unwrap().paid.clone();
    assert_eq!(paid.len(), 2);
    assert_ne!(check_tx(&paid[1], 10_000), memo);
}

#[tokio::test(flavor = "multi_thread")]
async fn caps_refuse_before_anything_is_signed() {
    // Over the per-call ceiling: refused before the blockhash is even fetched.
    let s = setup("10000", "max_per_call = \"0.005\"", "").await;
    let r = chat(&s.d, "sk-test").await;
    assert_eq!(r.status, 402, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "price_above_ceiling");
    {
        let w = s.world.lock().unwrap();
        assert!(w.paid.is_empty());
        assert!(!w.rpc_calls.iter().any(|m| m == "getLatestBlockhash"));
    }
    assert!(s.d.payments().is_empty());
    drop(s);

    // Over the daily cap (in USD, across networks): nothing signed or sent.
    let s = setup("10000", "", "[limits]\ndaily = \"0.015\"").await;
    assert_eq!(chat(&s.d, "sk-test").await.status, 200);
    let r = chat(&s.d, "sk-test").await;
    assert_eq!(r.status, 402, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["type"], "budget_exceeded");
    assert_eq!(
        s.world.lock().unwrap().paid.len(),
        1,
        "the second was never sent"
    );
    assert_eq!(s.d.payments().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_offers_are_refused_with_nothing_signed() {
    // The fee payer is the wallet itself: it would sign the transfer.
    let s = setup("10000", "", "").await;
    s.world.lock().unwrap().offer["extra"]["feePayer"] = json!(payer().to_base58());
    let r = chat(&s.d, "sk-test").await;
    assert_eq!(r.status, 402, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("fee payer"), "{msg}");
    // Another mint.
    s.world.lock().unwrap().offer = {
        let mut o = offer("10000");
        o["asset"] = json!("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v");
        o
    };
    let r = chat(&s.d, "sk-test").await;
    assert_eq!(r.json()["error"]["code"], "no_acceptable_payment_option");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not USDC")
    );
    // An unknown network.
    s.world.lock().unwrap().offer = {
        let mut o = offer("10000");
        o["network"] = json!("solana:4uhcVJyU9pJkvQyS88uRDiswHXSCkY3z");
        o
    };
    let r = chat(&s.d, "sk-test").await;
    assert_eq!(r.json()["error"]["code"], "no_acceptable_payment_option");
    assert!(s.world.lock().unwrap().paid.is_empty());
    assert!(s.d.payments().is_empty());
}

fn state_of(d: &Daemon) -> String {
    d.payments()[0]["state"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn at_risk_is_released_only_after_the_blockhash_expired() {
    let s = setup("10000", "recover_attempts = 0\nresolve_every_secs = 1", "").await;
    s.world.lock().unwrap().fail_paid = true;
    let r = chat(&s.d, "sk-test").await;
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(state_of(&s.d), "at_risk");
    // Several resolver passes at a height within the blockhash's validity.
    let passes = |w: &Shared| {
        w.lock()
            .unwrap()
            .rpc_calls
            .iter()
            .filter(|m| *m == "getBlockHeight")
            .count()
    };
    assert!(wait_until(Duration::from_secs(30), || passes(&s.world) >= 3));
    assert_eq!(state_of(&s.d), "at_risk", "never released before expiry");
    s.world.lock().unwrap().height = LAST_VALID;
    let n = passes(&s.world);
    assert!(wait_until(Duration::from_secs(30), || passes(&s.world) >= n + 2));
    assert_eq!(
        state_of(&s.d),
        "at_risk",
        "still valid at lastValidBlockHeight"
    );
    s.world.lock().unwrap().height = LAST_VALID + 1;
    assert!(
        wait_until(Duration::from_secs(30), || state_of(&s.d) == "released"),
        "{}",
        s.d.log()
    );
    let calls = s.world.lock().unwrap().rpc_calls.clone();
    assert!(calls.iter().any(|m| m == "getSignaturesForAddress"));
    let note = s.d.payments()[0]["note"].as_str().unwrap().to_string();
    assert!(
        note.contains("blockhash expired") && note.contains("without the memo"),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn at_risk_is_settled_when_its_memo_is_on_chain() {
    let s = setup("10000", "recover_attempts = 0\nresolve_every_secs = 1", "").await;
    {
        let mut w = s.world.lock().unwrap();
        w.fail_paid = true;
        w.land_on_failure = true;
    }
    let r = chat(&s.d, "sk-test").await;
    assert_eq!(r.status, 500);
    let wire = s.world.lock().unwrap().paid[0].clone();
    assert!(
        wait_until(Duration::from_secs(30), || state_of(&s.d) == "settled"),
        "{}",
        s.d.log()
    );
    let p = &s.d.payments()[0];
    assert_eq!(p["tx"], sig_of(&wire).as_str(), "{p}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_found_by_memo_at_confirmed_is_paid_answer_lost_with_its_signature() {
    // The first paid request lands on chain (confirmed, not yet finalized) and
    // its answer is lost; the re-send of the same transaction is refused.
    let s = setup("10000", "", "").await;
    {
        let mut w = s.world.lock().unwrap();
        w.drop_first_paid = true;
        w.land_on_failure = true;
    }
    let r = chat(&s.d, "sk-test").await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-should-retry").as_deref(), Some("false"));
    let e = r.json();
    assert_eq!(e["error"]["code"], "paid_answer_lost", "{e}");
    let paid = s.world.lock().unwrap().paid.clone();
    assert_eq!(paid.len(), 2, "sent, then re-sent");
    assert_eq!(paid[0], paid[1], "a re-send is the very same transaction");
    let sig = sig_of(&paid[0]);
    let found = format!("memo found in transaction {sig} at slot 7");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("paid $0.01") && msg.contains(&found) && !msg.contains("block"),
        "{msg}"
    );

    let p = &s.d.payments()[0];
    assert_eq!(p["state"], "settled", "{p}");
    assert_eq!(p["tx"], sig.as_str(), "the signature the memo search found");
    assert_eq!(p["attempts"], 2);
    let last = p["last_error"].as_str().unwrap();
    assert!(
        last.contains(&found)
            && last.contains("lost the answer")
            && !last.contains("authorization"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_not_on_chain_stays_at_risk_in_solana_words() {
    // Nothing landed: the confirmed search misses, and a miss releases nothing.
    let s = setup("10000", "", "").await;
    s.world.lock().unwrap().drop_first_paid = true;
    let r = chat(&s.d, "sk-test").await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "payment_outcome_unknown");
    let p = &s.d.payments()[0];
    assert_eq!(p["state"], "at_risk", "{p}");
    assert_eq!(p["tx"], Value::Null);
    let last = p["last_error"].as_str().unwrap();
    assert!(
        last.contains("no transfer with its memo on chain yet") && !last.contains("authorization"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_seller_offering_evm_and_solana_is_paid_on_the_first_configured_network() {
    let evm = json!({"scheme":"exact","network":"eip155:84532","amount":"10000","asset":USDC_BASE_SEPOLIA,
        "payTo":PAY_TO,"maxTimeoutSeconds":60,"extra":{"name":"USDC","version":"2"}});
    for (networks, want) in [
        ("\"solana-devnet\", \"base-sepolia\"", DEVNET),
        ("\"base-sepolia\", \"solana-devnet\"", "eip155:84532"),
    ] {
        let s = setup_on(networks, true, "10000", "", "").await;
        // Both orders of the seller's own list, so only the config decides.
        for accepts in [json!([evm, offer("10000")]), json!([offer("10000"), evm])] {
            s.world.lock().unwrap().accepts = Some(accepts.clone());
            let r = chat(&s.d, "sk-test").await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let (svm_paid, evm_paid) = {
                let w = s.world.lock().unwrap();
                (w.paid.len(), w.evm_paid.clone())
            };
            let p = s.d.payments();
            let newest = p.iter().max_by_key(|p| p["id"].as_u64().unwrap()).unwrap();
            assert_eq!(
                newest["network"], want,
                "networks = [{networks}], accepts {accepts}"
            );
            assert_eq!(newest["state"], "settled");
            if want == DEVNET {
                assert!(evm_paid.is_empty(), "never paid on EVM");
                assert_eq!(newest["payer"], payer().to_base58());
            } else {
                assert_eq!(svm_paid, 0, "never paid on Solana");
                assert_eq!(evm_paid.last().unwrap()["accepted"]["network"], want);
            }
        }
        let (svm_paid, evm_paid) = {
            let w = s.world.lock().unwrap();
            (w.paid.len(), w.evm_paid.len())
        };
        assert_eq!(svm_paid + evm_paid, 2, "one payment per call");
    }
}

fn run_cli(d: &Daemon, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut a = vec!["--config", d.config.to_str().unwrap()];
    a.extend_from_slice(args);
    let mut c = x402d(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn solana_wallet_commands() {
    let s = setup("10000", "", "").await;
    let d = &s.d;
    let me = payer().to_base58();
    // `address --solana` prints exactly the base58 address.
    let (ok, out, _) = run_cli(d, &["wallet", "address", "--solana"], "");
    assert!(ok);
    assert_eq!(out, format!("{me}\n"));
    // Without an EVM key, `address` shows the Solana line; with one, both.
    let (ok, out, _) = run_cli(d, &["wallet", "address"], "");
    assert!(ok);
    assert_eq!(out, format!("{me}\n"));
    let (ok, _, err) = run_cli(d, &["wallet", "import"], PAYER_KEY);
    assert!(ok, "{err}");
    let (ok, out, _) = run_cli(d, &["wallet", "address"], "");
    assert!(ok);
    assert_eq!(out, format!("{PAYER}\n{me}\n"));
    // Another key is not replaced without --replace; base58 on stdin works.
    let other = SigningKey::from_bytes(&[9u8; 32]);
    let other_b58 = bs58::encode(other.to_keypair_bytes()).into_string();
    let other_addr = bs58::encode(other.verifying_key().to_bytes()).into_string();
    let (ok, _, err) = run_cli(d, &["wallet", "import", "--solana"], &other_b58);
    assert!(!ok);
    assert!(err.contains("--replace") && err.contains(&me), "{err}");
    assert!(!err.contains(&other_b58));
    let (ok, out, err) = run_cli(
        d,
        &["wallet", "import", "--solana", "--replace"],
        &other_b58,
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), other_addr);
    assert!(err.contains("read back"), "{err}");
    // The same key as a CLI JSON array on stdin is "already stored".
    let json = serde_json::to_string(&other.to_keypair_bytes().to_vec()).unwrap();
    let (ok, _, err) = run_cli(d, &["wallet", "import", "--solana"], &json);
    assert!(ok && err.contains("already stored"), "{err}");
    // A bad key never reaches the store, and is not echoed.
    let (ok, _, err) = run_cli(
        d,
        &["wallet", "import", "--solana", "--replace"],
        "notakey123",
    );
    assert!(!ok && !err.contains("notakey123"), "{err}");
    // Remove: needs --yes; leaves the EVM key.
    let (ok, _, _) = run_cli(d, &["wallet", "remove", "--solana"], "");
    assert!(!ok);
    let (ok, _, _) = run_cli(d, &["wallet", "remove", "--solana", "--yes"], "");
    assert!(ok);
    let (ok, _, err) = run_cli(d, &["wallet", "address", "--solana"], "");
    assert!(!ok && err.contains("wallet import --solana"), "{err}");
    let (ok, out, _) = run_cli(d, &["wallet", "address"], "");
    assert!(ok);
    assert_eq!(out, format!("{PAYER}\n"));
    // A Solana payment now gets 503 with the command to run; nothing sent.
    let r = chat(d, "sk-test").await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "wallet_not_configured");
    assert!(s.world.lock().unwrap().paid.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_checks_the_solana_rpc_token_account_and_balance() {
    let s = setup("10000", "", "").await;
    let out = s.d.cli(&["doctor"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&payer().to_base58()), "{text}");
    assert!(text.contains("healthy, solana-core 2.2.0-mock"), "{text}");
    let ata = svm::associated_token_account(&payer(), &Pubkey::parse(DEVNET_USDC).unwrap())
        .unwrap()
        .to_base58();
    assert!(
        text.contains(&format!("USDC token account {ata}, balance $5")),
        "{text}"
    );
    assert!(text.contains("x402d would pay it"), "{text}");
    let calls = s.world.lock().unwrap().rpc_calls.clone();
    assert!(calls.iter().any(|m| m == "getHealth"), "{calls:?}");
    // `status` names the Solana key the daemon pays with.
    let out = s.d.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("  solana:     {}", payer().to_base58())),
        "{text}"
    );
}

#[test]
fn config_check_shows_the_solana_networks_in_order() {
    let dir = TempDir::new("sol-cfg");
    let config = dir.0.join("c.toml");
    std::fs::write(
        &config,
        "[payment]\nnetworks = [\"base\", \"solana-devnet\", \"solana\"]\n\
         [payment.rpc]\n\"solana-devnet\" = \"http://127.0.0.1:8899/secret-path\"\n",
    )
    .unwrap();
    let out = x402d(&["--config", config.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("# pays on"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        line,
        "# pays on, most preferred first: eip155:8453 (base, rpc https://mainnet.base.org), \
         solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1 (solana-devnet, rpc http://127.0.0.1:8899), \
         solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp (solana, rpc https://api.mainnet-beta.solana.com)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wallet_new_solana_backs_up_and_never_replaces_silently() {
    let s = setup("10000", "", "").await;
    let d = &s.d;
    let me = payer().to_base58();
    let (ok, _, err) = run_cli(d, &["wallet", "new", "--solana", "--no-backup"], "");
    assert!(
        !ok && err.contains(&me) && err.contains("--replace"),
        "{err}"
    );
    let backup = d.dir.0.join("sol-backup.json");
    let b = backup.to_str().unwrap();
    let (ok, out, err) = run_cli(
        d,
        &["wallet", "new", "--solana", "--replace", "--backup", b],
        "",
    );
    assert!(ok, "{err}");
    let new = out.trim().to_string();
    assert_ne!(new, me);
    assert!(err.contains(&format!("old {me}")), "{err}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let arr: Vec<u8> = serde_json::from_str(&std::fs::read_to_string(&backup).unwrap()).unwrap();
    assert_eq!(arr.len(), 64);
    assert_eq!(bs58::encode(&arr[32..]).into_string(), new);
    let (ok, out, _) = run_cli(d, &["wallet", "address", "--solana"], "");
    assert!(ok);
    assert_eq!(out.trim(), new);
    // The backup restores the same key.
    let (ok, _, err) = run_cli(d, &["wallet", "import", "--solana", "--file", b], "");
    assert!(ok && err.contains("already stored"), "{err}");
    // An existing backup file is never overwritten.
    let (ok, _, err) = run_cli(
        d,
        &["wallet", "new", "--solana", "--replace", "--backup", b],
        "",
    );
    assert!(!ok && err.contains("nothing is overwritten"), "{err}");
    let (_, out, _) = run_cli(d, &["wallet", "address", "--solana"], "");
    assert_eq!(out.trim(), new, "the key did not change");
}
