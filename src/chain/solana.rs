//! Reading Solana: a recent blockhash to pay with, and whether a payment landed.
//!
//! A Solana payment carries no nonce the chain keeps; it is found by its memo
//! (unique per payment) among the transactions of the payer's USDC token
//! account. Its transaction can land only while its blockhash is valid, i.e. at
//! a block height ≤ `lastValidBlockHeight` (recorded as the payment's
//! `valid_before`). So the resolver, with commitment `finalized` throughout:
//! - reads the finalized block height H **first**, then searches by memo;
//! - found (a successful `TransferChecked` of exactly the amount from the payer's
//!   token account to the payee's, with the memo): **settled**, with its signature;
//! - not found and H > `lastValidBlockHeight`: every block that could hold it is
//!   already finalized and was searched, so it never landed: **released**;
//! - anything else (not expired, an RPC error, a search that could not reach back
//!   to the payment's time, an RPC serving another cluster) stays counted.
//!
//! The payment flow's immediate check (a re-send refused, seconds after the
//! first send) searches at `confirmed` instead: a transfer found there is proof
//! of payment (the seller lost the answer), while a transfer that landed seconds
//! ago is not finalized yet. A miss there proves nothing and never releases;
//! only the resolver's finalized search past expiry does.

use super::{Resolved, Resolver, rpc_call};
use crate::ledger::{Ledger, Outcome, Payment, State};
use crate::metrics::Metrics;
use crate::upstream::Client;
use crate::x402::networks::{self, SvmNetwork};
use crate::x402::svm::{self, MEMO_PROGRAM, Pubkey, TOKEN_PROGRAM};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Signatures asked for per page, and the most pages searched per payment.
const PAGE: usize = 1000;
const MAX_PAGES: usize = 10;
/// The search reaches back this far before the payment was created (clock
/// differences between this host and the validators' block times).
const SEARCH_MARGIN_SECS: i64 = 600;

/// A blockhash to pay with and the last block height at which it is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blockhash {
    pub hash: [u8; 32],
    pub last_valid_block_height: u64,
}

fn u64_of(v: Option<&Value>, what: &str) -> Result<u64, String> {
    v.and_then(Value::as_u64)
        .ok_or_else(|| format!("RPC gave no valid {what}"))
}

/// `getLatestBlockhash` (commitment `confirmed`, as `@solana/kit` clients use).
pub async fn latest_blockhash(client: &Client, rpc: &str) -> Result<Blockhash, String> {
    let r = rpc_call(
        client,
        rpc,
        "getLatestBlockhash",
        json!([{"commitment": "confirmed"}]),
    )
    .await?;
    let v = r.get("value").unwrap_or(&r);
    let hash = v
        .get("blockhash")
        .and_then(Value::as_str)
        .and_then(Pubkey::parse)
        .ok_or("RPC gave no valid blockhash")?;
    Ok(Blockhash {
        hash: hash.0,
        last_valid_block_height: u64_of(v.get("lastValidBlockHeight"), "lastValidBlockHeight")?,
    })
}

/// `getBlockHeight` at commitment `finalized`.
pub async fn finalized_block_height(client: &Client, rpc: &str) -> Result<u64, String> {
    let r = rpc_call(
        client,
        rpc,
        "getBlockHeight",
        json!([{"commitment": "finalized"}]),
    )
    .await?;
    u64_of(Some(&r), "block height")
}

/// `getGenesisHash`.
pub async fn genesis_hash(client: &Client, rpc: &str) -> Result<String, String> {
    let r = rpc_call(client, rpc, "getGenesisHash", json!([])).await?;
    r.as_str()
        .map(str::to_string)
        .ok_or_else(|| "RPC gave no genesis hash".into())
}

/// Whether a genesis hash is the one a CAIP-2 id names (its first 32 characters).
pub fn is_cluster(net: &SvmNetwork, genesis: &str) -> bool {
    net.caip2
        .strip_prefix("solana:")
        .is_some_and(|p| genesis.starts_with(p))
}

/// `getHealth` and `getVersion` (for `doctor`): the node's version.
pub async fn health(client: &Client, rpc: &str) -> Result<String, String> {
    let h = rpc_call(client, rpc, "getHealth", json!([])).await?;
    if h.as_str() != Some("ok") {
        return Err(format!("getHealth answered {h}"));
    }
    let v = rpc_call(client, rpc, "getVersion", json!([])).await?;
    Ok(v.get("solana-core")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string())
}

/// The balance of a token account in atomic units; `None` when the account
/// does not exist.
pub async fn token_balance(
    client: &Client,
    rpc: &str,
    account: &Pubkey,
) -> Result<Option<u64>, String> {
    let r = rpc_call(
        client,
        rpc,
        "getAccountInfo",
        json!([account.to_base58(), {"encoding": "base64", "commitment": "confirmed"}]),
    )
    .await?;
    if r.get("value").is_none_or(Value::is_null) {
        return Ok(None);
    }
    let b = rpc_call(
        client,
        rpc,
        "getTokenAccountBalance",
        json!([account.to_base58(), {"commitment": "confirmed"}]),
    )
    .await?;
    let amount = b
        .get("value")
        .and_then(|v| v.get("amount"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or("RPC gave no token amount")?;
    Ok(Some(amount))
}

/// What identifies one payment on chain.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub source: Pubkey,
    pub destination: Pubkey,
    pub mint: Pubkey,
    pub amount: u64,
    pub memo: String,
    /// Unix seconds the payment was made (the search stops well before it).
    pub since_s: i64,
}

impl Wanted {
    /// From a ledger record (`payer`, `nonce` = memo, `asset`, `pay_to`).
    pub fn of(p: &Payment) -> Option<Wanted> {
        let payer = Pubkey::parse(p.payer.as_deref()?)?;
        let mint = Pubkey::parse(&p.asset)?;
        let pay_to = Pubkey::parse(&p.pay_to)?;
        Some(Wanted {
            source: svm::associated_token_account(&payer, &mint)?,
            destination: svm::associated_token_account(&pay_to, &mint)?,
            mint,
            amount: p.amount,
            memo: p.nonce.clone()?,
            since_s: p.created_ms / 1000,
        })
    }
}

/// Whether a `getTransaction` result (encoding `json`) is the wanted payment,
/// succeeded.
pub fn is_payment(tx: &Value, w: &Wanted) -> bool {
    if !tx
        .get("meta")
        .and_then(|m| m.get("err"))
        .is_some_and(Value::is_null)
    {
        return false;
    }
    let msg = &tx["transaction"]["message"];
    let mut keys: Vec<Pubkey> = Vec::new();
    for list in [
        msg.get("accountKeys"),
        tx["meta"]
            .get("loadedAddresses")
            .and_then(|l| l.get("writable")),
        tx["meta"]
            .get("loadedAddresses")
            .and_then(|l| l.get("readonly")),
    ] {
        for k in list
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            match k.as_str().and_then(Pubkey::parse) {
                Some(p) => keys.push(p),
                None => return false,
            }
        }
    }
    let key = |i: &Value| i.as_u64().and_then(|i| keys.get(i as usize).copied());
    let (mut memo, mut transfer) = (false, false);
    for ix in msg
        .get("instructions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let Some(program) = ix.get("programIdIndex").and_then(key) else {
            continue;
        };
        let Some(data) = ix
            .get("data")
            .and_then(Value::as_str)
            .and_then(|d| bs58::decode(d).into_vec().ok())
        else {
            continue;
        };
        let accounts: Vec<Option<Pubkey>> = ix
            .get("accounts")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(key).collect())
            .unwrap_or_default();
        if program == MEMO_PROGRAM && data == w.memo.as_bytes() {
            memo = true;
        }
        if program == TOKEN_PROGRAM
            && data.len() == 10
            && data[0] == 12
            && data[1..9] == w.amount.to_le_bytes()
            && accounts.len() >= 3
            && accounts[0] == Some(w.source)
            && accounts[1] == Some(w.mint)
            && accounts[2] == Some(w.destination)
        {
            transfer = true;
        }
    }
    memo && transfer
}

/// How settled a block must be for a search to see it (Solana's commitment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commitment {
    /// Voted on by a supermajority: a transfer seen here is paid.
    Confirmed,
    /// Rooted: the only level at which a miss may count as "never landed".
    Finalized,
}

impl Commitment {
    fn as_str(self) -> &'static str {
        match self {
            Commitment::Confirmed => "confirmed",
            Commitment::Finalized => "finalized",
        }
    }
}

/// A payment's transaction on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub signature: String,
    /// The slot it landed in (when the RPC says).
    pub slot: Option<u64>,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "transaction {}", self.signature)?;
        match self.slot {
            Some(s) => write!(f, " at slot {s}"),
            None => Ok(()),
        }
    }
}

/// Searches the payer's token account for the payment at `commitment`; its
/// transaction when found. An error when the search could not reach back to the
/// payment's time: then nothing can be concluded.
pub async fn find_payment(
    client: &Client,
    rpc: &str,
    w: &Wanted,
    commitment: Commitment,
) -> Result<Option<Found>, String> {
    let mut before: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut opts = json!({"limit": PAGE, "commitment": commitment.as_str()});
        if let Some(b) = &before {
            opts["before"] = json!(b);
        }
        let page = rpc_call(
            client,
            rpc,
            "getSignaturesForAddress",
            json!([w.source.to_base58(), opts]),
        )
        .await?;
        let page = page
            .as_array()
            .ok_or("getSignaturesForAddress gave no list")?;
        for entry in page {
            let Some(sig) = entry.get("signature").and_then(Value::as_str) else {
                return Err("getSignaturesForAddress gave an entry without a signature".into());
            };
            if !entry.get("err").is_none_or(Value::is_null) {
                continue;
            }
            // The RPC's memo summary ("[len] text; …"): skip the fetch when it
            // plainly names another memo.
            if let Some(m) = entry.get("memo").and_then(Value::as_str)
                && !m.contains(&w.memo)
            {
                continue;
            }
            let tx = rpc_call(
                client,
                rpc,
                "getTransaction",
                json!([sig, {"encoding": "json", "commitment": commitment.as_str(), "maxSupportedTransactionVersion": 0}]),
            )
            .await?;
            if is_payment(&tx, w) {
                let slot = entry.get("slot").or_else(|| tx.get("slot"));
                return Ok(Some(Found {
                    signature: sig.to_string(),
                    slot: slot.and_then(Value::as_u64),
                }));
            }
        }
        let oldest = page
            .last()
            .and_then(|e| e.get("blockTime"))
            .and_then(Value::as_i64);
        if page.len() < PAGE || oldest.is_some_and(|t| t < w.since_s - SEARCH_MARGIN_SECS) {
            return Ok(None);
        }
        before = page
            .last()
            .and_then(|e| e.get("signature"))
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    Err(format!(
        "the payer's token account has more than {} transactions since the payment; not searched further",
        PAGE * MAX_PAGES
    ))
}

/// What the chain proves about one Solana payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Settled(String),
    Released,
    Open,
}

/// The verdict from a finalized height read **before** the search, and the search.
pub fn judge(found: Option<String>, height: u64, last_valid_block_height: u64) -> Verdict {
    match found {
        Some(sig) => Verdict::Settled(sig),
        None if height > last_valid_block_height => Verdict::Released,
        None => Verdict::Open,
    }
}

impl Resolver {
    /// Whether an RPC serves `net`'s cluster (its genesis hash, once per URL).
    /// Mainnet refuses any other cluster; devnet only warns (a local test
    /// validator has its own genesis, and devnet USDC has no value).
    async fn svm_cluster_ok(&self, client: &Client, rpc: &str, net: &SvmNetwork) -> bool {
        let key = (format!("{rpc}#{}", net.caip2), 0);
        if self.verified.lock().is_ok_and(|v| v.contains(&key)) {
            return true;
        }
        match genesis_hash(client, rpc).await {
            Ok(g) if is_cluster(net, &g) || net.v1_name != "solana" => {
                if !is_cluster(net, &g) {
                    tracing::warn!(
                        network = net.caip2,
                        "the [payment.rpc] URL for {} serves another cluster (genesis {g}); used anyway for devnet",
                        net.v1_name
                    );
                }
                if let Ok(mut v) = self.verified.lock() {
                    v.insert(key);
                }
                true
            }
            Ok(g) => {
                let first = self
                    .refused
                    .lock()
                    .is_ok_and(|mut r| r.insert((format!("{rpc}#{g}"), 0)));
                if first {
                    tracing::error!(
                        network = net.caip2,
                        "the [payment.rpc] URL for {} serves another cluster (genesis {g}): it is not used, and payments on it stay counted until it is fixed",
                        net.caip2
                    );
                }
                false
            }
            Err(e) => {
                tracing::warn!(network = net.caip2, error = %e, "cannot check the Solana RPC's cluster; payments stay counted");
                false
            }
        }
    }

    /// Whether a Solana payment landed, searched at `confirmed` (the payment
    /// flow asks when a re-send is refused, seconds after the first send):
    /// `(found, finalized height)`. Only "found" is final; a miss releases nothing.
    pub async fn check_paid_svm(
        &self,
        client: &Client,
        rpc: &str,
        net: &SvmNetwork,
        w: &Wanted,
    ) -> Result<(Option<Found>, u64), String> {
        if !self.svm_cluster_ok(client, rpc, net).await {
            return Err(format!("no usable RPC for {} (see the log)", net.caip2));
        }
        let height = finalized_block_height(client, rpc).await?;
        let found = find_payment(client, rpc, w, Commitment::Confirmed).await?;
        Ok((found, height))
    }

    /// One pass over every unresolved Solana payment (see the module notes).
    pub async fn resolve_solana(
        &self,
        client: &Client,
        ledger: &Ledger,
        metrics: &Metrics,
        rpc_for: impl Fn(&SvmNetwork) -> Option<String>,
    ) -> Resolved {
        let mut out = Resolved::default();
        let Ok(open) = ledger.unresolved().await else {
            return out;
        };
        let mut heights: HashMap<String, Option<u64>> = HashMap::new();
        for p in open {
            let Some(net) = networks::lookup_svm(&p.network) else {
                continue;
            };
            let Some(rpc) = rpc_for(net) else {
                out.no_rpc += 1;
                continue;
            };
            if !heights.contains_key(&rpc) {
                let h = if self.svm_cluster_ok(client, &rpc, net).await {
                    match finalized_block_height(client, &rpc).await {
                        Ok(h) => Some(h),
                        Err(e) => {
                            tracing::warn!(network = net.caip2, error = %e, "cannot read the finalized block height; payments stay counted");
                            None
                        }
                    }
                } else {
                    None
                };
                heights.insert(rpc.clone(), h);
            }
            let Some(Some(height)) = heights.get(&rpc).copied() else {
                out.pending += 1;
                continue;
            };
            let (Some(w), Some(last_valid)) = (Wanted::of(&p), p.valid_before) else {
                out.pending += 1;
                continue;
            };
            let found = match find_payment(client, &rpc, &w, Commitment::Finalized).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(id = p.id, network = net.caip2, error = %e, "cannot search for the payment on chain; it stays counted");
                    out.pending += 1;
                    continue;
                }
            };
            let at = found.as_ref().map(ToString::to_string);
            let outcome = match judge(found.map(|f| f.signature), height, last_valid) {
                Verdict::Settled(sig) => Outcome::Settled { tx: Some(sig) },
                Verdict::Released => Outcome::Released {
                    reason: format!(
                        "expired unused: the blockhash expired (finalized block height {height} > lastValidBlockHeight {last_valid}) without the memo on chain"
                    ),
                },
                Verdict::Open => {
                    out.pending += 1;
                    continue;
                }
            };
            let state = match outcome {
                Outcome::Settled { .. } => State::Settled,
                _ => State::Released,
            };
            if let Err(e) = ledger.finish(p.id, outcome, crate::now_ms()).await {
                tracing::error!(id = p.id, error = %e, "could not record the payment's outcome on chain; it stays counted");
                out.pending += 1;
                continue;
            }
            metrics.payment(&p.app, &p.network, state, p.amount);
            if state == State::Settled {
                tracing::info!(
                    id = p.id,
                    height,
                    found = at.as_deref().unwrap_or("-"),
                    "Solana payment found on chain by its memo: settled"
                );
                out.settled += 1;
            } else {
                tracing::info!(
                    id = p.id,
                    height,
                    "Solana payment's blockhash expired with no transfer on chain: released"
                );
                out.released += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_released_before_the_blockhash_expired() {
        assert_eq!(judge(Some("s".into()), 5, 10), Verdict::Settled("s".into()));
        assert_eq!(
            judge(Some("s".into()), 50, 10),
            Verdict::Settled("s".into())
        );
        assert_eq!(judge(None, 9, 10), Verdict::Open);
        assert_eq!(
            judge(None, 10, 10),
            Verdict::Open,
            "still valid at its last height"
        );
        assert_eq!(judge(None, 11, 10), Verdict::Released);
    }

    /// A JSON-RPC on 127.0.0.1 answering from a function of (method, params).
    async fn mock_rpc(
        answer: impl Fn(&str, &Value) -> Value + Send + Sync + 'static,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (answer, c2) = (std::sync::Arc::new(answer), calls.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (answer, calls) = (answer.clone(), c2.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (answer, calls) = (answer.clone(), calls.clone());
                            async move {
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let r: Value = serde_json::from_slice(&body).unwrap();
                                let m = r["method"].as_str().unwrap().to_string();
                                calls.lock().unwrap().push(m.clone());
                                let reply = json!({"jsonrpc":"2.0","id":r["id"],"result":answer(&m, &r["params"])});
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(
                                        reply.to_string(),
                                    )),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (url, calls)
    }

    fn wanted() -> Wanted {
        Wanted {
            source: Pubkey([1; 32]),
            destination: Pubkey([2; 32]),
            mint: Pubkey([3; 32]),
            amount: 10_000,
            memo: "00ff".repeat(8),
            since_s: 1_000_000,
        }
    }

    /// `getTransaction` JSON of a payment to `w` with `memo`.
    fn tx(w: &Wanted, memo: &str, amount: u64, err: Value) -> Value {
        let mut data = vec![12u8];
        data.extend_from_slice(&amount.to_le_bytes());
        data.push(6);
        json!({"meta":{"err":err},"transaction":{"message":{
            "accountKeys":[Pubkey([9;32]).to_base58(), Pubkey([8;32]).to_base58(), w.source.to_base58(),
                w.destination.to_base58(), w.mint.to_base58(), TOKEN_PROGRAM.to_base58(), MEMO_PROGRAM.to_base58()],
            "instructions":[
                {"programIdIndex":5,"accounts":[2,4,3,1],"data":bs58::encode(&data).into_string()},
                {"programIdIndex":6,"accounts":[],"data":bs58::encode(memo.as_bytes()).into_string()}]}}})
    }

    #[test]
    fn only_the_exact_successful_transfer_with_the_memo_counts() {
        let w = wanted();
        assert!(is_payment(&tx(&w, &w.memo, 10_000, Value::Null), &w));
        assert!(!is_payment(&tx(&w, "other", 10_000, Value::Null), &w));
        assert!(!is_payment(&tx(&w, &w.memo, 9_999, Value::Null), &w));
        assert!(!is_payment(
            &tx(&w, &w.memo, 10_000, json!({"InstructionError":[0,"x"]})),
            &w
        ));
        let mut other_dest = wanted();
        other_dest.destination = Pubkey([5; 32]);
        assert!(!is_payment(
            &tx(&w, &w.memo, 10_000, Value::Null),
            &other_dest
        ));
    }

    #[tokio::test]
    async fn the_search_pages_back_and_never_concludes_past_its_reach() {
        let w = wanted();
        let client = crate::upstream::client().unwrap();
        let sig = |i: usize| bs58::encode([i as u8; 64]).into_string();
        // Page 1: 1000 unrelated recent transfers (memo summaries name other memos,
        // so they are not fetched); page 2 holds ours.
        let (w2, sig2) = (w.clone(), sig);
        let (url, calls) = mock_rpc(move |m, p| match m {
            "getSignaturesForAddress" if p[1].get("before").is_none() => json!((0..PAGE)
                .map(|i| json!({"signature": sig2(i % 200 + 1), "err": null, "memo": "[4] nope", "blockTime": 2_000_000}))
                .collect::<Vec<_>>()),
            "getSignaturesForAddress" => json!([
                {"signature": sig2(250), "err": {"x":1}, "memo": null, "blockTime": 1_999_000},
                {"signature": sig2(251), "err": null, "memo": null, "blockTime": 1_999_000}]),
            "getTransaction" if p[0] == json!(sig2(251)) => tx(&w2, &w2.memo, w2.amount, Value::Null),
            _ => Value::Null,
        })
        .await;
        assert_eq!(
            find_payment(&client, &url, &w, Commitment::Finalized).await,
            Ok(Some(Found {
                signature: sig(251),
                slot: None
            }))
        );
        let c = calls.lock().unwrap().clone();
        assert_eq!(
            c.iter().filter(|m| *m == "getSignaturesForAddress").count(),
            2
        );
        assert_eq!(
            c.iter().filter(|m| *m == "getTransaction").count(),
            1,
            "{c:?}"
        );

        // Always full pages of recent transactions: after MAX_PAGES it gives up
        // (an error: the payment stays counted), never "not found".
        let (url, _) = mock_rpc(move |m, _| match m {
            "getSignaturesForAddress" => json!((0..PAGE)
                .map(|i| json!({"signature": sig(i % 200 + 1), "err": null, "memo": "[4] nope", "blockTime": 2_000_000}))
                .collect::<Vec<_>>()),
            _ => Value::Null,
        })
        .await;
        assert!(
            find_payment(&client, &url, &w, Commitment::Finalized)
                .await
                .is_err()
        );

        // A short page that reaches back past the payment: not found.
        let (url, _) = mock_rpc(|m, _| match m {
            "getSignaturesForAddress" => json!([]),
            "getBlockHeight" => json!(1001),
            "getGenesisHash" => json!("EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"),
            _ => Value::Null,
        })
        .await;
        assert_eq!(
            find_payment(&client, &url, &w, Commitment::Finalized).await,
            Ok(None)
        );
        let r = Resolver::default();
        let dev = networks::lookup_svm("solana-devnet").unwrap();
        assert_eq!(
            r.check_paid_svm(&client, &url, dev, &w).await,
            Ok((None, 1001))
        );
        // Mainnet refuses an RPC on another cluster.
        let main = networks::lookup_svm("solana").unwrap();
        assert!(r.check_paid_svm(&client, &url, main, &w).await.is_err());
    }

    #[test]
    fn clusters_by_genesis() {
        let main = networks::lookup_svm("solana").unwrap();
        let dev = networks::lookup_svm("solana-devnet").unwrap();
        assert!(is_cluster(
            main,
            "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"
        ));
        assert!(!is_cluster(
            main,
            "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"
        ));
        assert!(is_cluster(
            dev,
            "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"
        ));
    }
}
