//! Reading the chain: whether an EIP-3009 nonce was used (to resolve at-risk
//! payments) and USDC balances (for `doctor`). JSON-RPC over the same pooled
//! client as the upstream.
//!
//! Resolving is final (a released payment leaves the caps for good), so the
//! resolver believes only what one block proves, never the local clock:
//! - it reads the head block N (number, timestamp T), then `authorizationState`
//!   at block N, so both answers describe the same chain state;
//! - used at N: the money moved, **settled**;
//! - unused at N and T ≥ `validBefore`: no later block can carry the transfer
//!   (EIP-3009 requires `block.timestamp < validBefore` and block time never goes
//!   back), **released**; a host clock running ahead of the chain's releases nothing;
//! - everything else stays counted: a word other than exactly 0 or 1, an RPC
//!   error, an RPC on another chain (its `eth_chainId` is checked once per URL),
//!   and a head more than `max_rpc_lag_secs` behind wall time. A node stuck that
//!   far behind (dead, or on an abandoned fork) may still prove a settlement (a
//!   used nonce keeps counting the money), never an expiry.

pub mod solana;

use crate::ledger::{Ledger, Outcome, Payment, State};
use crate::metrics::Metrics;
use crate::upstream::Client;
use crate::x402::networks;
use alloy_primitives::{Address, B256, U256, keccak256};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

fn selector(sig: &str) -> [u8; 4] {
    let h = keccak256(sig.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

/// One JSON-RPC call; the `result` member (never null).
async fn rpc_call(
    client: &Client,
    rpc: &str,
    method: &str,
    params: Value,
) -> Result<Value, String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let req = Request::post(rpc)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad RPC URL: {e}"))?;
    let resp = tokio::time::timeout(Duration::from_secs(15), client.request(req))
        .await
        .map_err(|_| "RPC timed out".to_string())?
        .map_err(|e| format!("RPC unreachable: {e}"))?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| format!("RPC read: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("RPC answered {status}"));
    }
    let mut v: Value =
        serde_json::from_slice(&bytes).map_err(|_| "RPC reply is not JSON".to_string())?;
    if let Some(err) = v.get("error") {
        return Err(format!("RPC error to {method}: {err}"));
    }
    match v.get_mut("result").map(Value::take) {
        Some(Value::Null) | None => Err(format!("RPC reply to {method} has no result")),
        Some(r) => Ok(r),
    }
}

/// A JSON-RPC quantity (`"0x1a"`).
fn quantity(v: Option<&Value>, what: &str) -> Result<u64, String> {
    v.and_then(Value::as_str)
        .and_then(|s| s.strip_prefix("0x"))
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| format!("RPC gave no valid {what}"))
}

async fn eth_call(
    client: &Client,
    rpc: &str,
    to: Address,
    data: Vec<u8>,
    block: &str,
) -> Result<Vec<u8>, String> {
    let call = json!({"to": to.to_string(), "data": format!("0x{}", hex::encode(data))});
    let r = rpc_call(client, rpc, "eth_call", json!([call, block])).await?;
    let hexs = r.as_str().ok_or("eth_call result is not a string")?;
    hex::decode(hexs.trim_start_matches("0x")).map_err(|_| "eth_call result is not hex".into())
}

/// `eth_chainId`.
pub async fn chain_id(client: &Client, rpc: &str) -> Result<u64, String> {
    let r = rpc_call(client, rpc, "eth_chainId", json!([])).await?;
    quantity(Some(&r), "chain id")
}

/// The block a resolution is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub number: u64,
    /// Unix seconds (the chain's clock).
    pub timestamp: u64,
}

/// The node's latest block.
pub async fn head(client: &Client, rpc: &str) -> Result<Head, String> {
    let b = rpc_call(
        client,
        rpc,
        "eth_getBlockByNumber",
        json!(["latest", false]),
    )
    .await?;
    Ok(Head {
        number: quantity(b.get("number"), "block number")?,
        timestamp: quantity(b.get("timestamp"), "block timestamp")?,
    })
}

/// `authorizationState(authorizer, nonce)` on an EIP-3009 token at `block`:
/// true when used. Any answer but a 32-byte 0 or 1 is an error.
pub async fn authorization_used(
    client: &Client,
    rpc: &str,
    token: Address,
    authorizer: Address,
    nonce: B256,
    block: u64,
) -> Result<bool, String> {
    let mut data = selector("authorizationState(address,bytes32)").to_vec();
    data.extend_from_slice(B256::left_padding_from(authorizer.as_slice()).as_slice());
    data.extend_from_slice(nonce.as_slice());
    let out = eth_call(client, rpc, token, data, &format!("0x{block:x}")).await?;
    authorization_state(&out)
}

fn authorization_state(out: &[u8]) -> Result<bool, String> {
    match out {
        [zeros @ .., last] if out.len() == 32 && zeros.iter().all(|b| *b == 0) && *last <= 1 => {
            Ok(*last == 1)
        }
        _ => Err(format!(
            "authorizationState answered 0x{}, not 0 or 1",
            hex::encode(out)
        )),
    }
}

/// `balanceOf(owner)` in atomic units, at the latest block.
pub async fn balance_of(
    client: &Client,
    rpc: &str,
    token: Address,
    owner: Address,
) -> Result<U256, String> {
    let mut data = selector("balanceOf(address)").to_vec();
    data.extend_from_slice(B256::left_padding_from(owner.as_slice()).as_slice());
    let out = eth_call(client, rpc, token, data, "latest").await?;
    if out.len() != 32 {
        return Err("balanceOf returned an unexpected value".into());
    }
    Ok(U256::from_be_slice(&out))
}

/// What the chain proves about one authorization at one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Settled,
    Released,
    /// Unused, and block time has not reached `validBefore`: a transfer can still land.
    Open,
    /// Unused and past `validBefore` by this head, but the head is too far behind wall time to trust.
    Stale,
}

fn judge(used: bool, head: Head, valid_before: u64, now_s: u64, max_lag_secs: u64) -> Verdict {
    if used {
        Verdict::Settled
    } else if head.timestamp < valid_before {
        Verdict::Open
    } else if now_s.saturating_sub(head.timestamp) > max_lag_secs {
        Verdict::Stale
    } else {
        Verdict::Released
    }
}

/// What one resolution pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub settled: usize,
    pub released: usize,
    pub pending: usize,
    pub no_rpc: usize,
}

/// Resolves at-risk and rejected payments against the chain (see the module
/// notes). Lives as long as the daemon: it remembers which RPC URLs proved to
/// serve the right chain.
#[derive(Default)]
pub struct Resolver {
    /// (RPC URL, chain id) pairs whose `eth_chainId` matched.
    verified: Mutex<HashSet<(String, u64)>>,
    /// (RPC URL, wrong chain id) pairs already logged, so the error is said once.
    refused: Mutex<HashSet<(String, u64)>>,
}

impl Resolver {
    /// One pass over every unresolved payment. Each RPC URL is asked for its
    /// head once per pass, and every payment on it is judged at that block.
    pub async fn resolve(
        &self,
        client: &Client,
        ledger: &Ledger,
        metrics: &Metrics,
        rpc_for: impl Fn(&networks::Network) -> Option<String>,
        max_rpc_lag_secs: u64,
    ) -> Resolved {
        let mut out = Resolved::default();
        let open = match ledger.unresolved().await {
            Ok(v) => v,
            Err(_) => return out,
        };
        let mut heads: HashMap<String, Option<Head>> = HashMap::new();
        for p in open {
            // Solana payments are resolved by `resolve_solana` (chain/solana.rs).
            if networks::lookup_svm(&p.network).is_some() {
                continue;
            }
            let Some((net, rpc)) =
                networks::lookup(&p.network).and_then(|n| Some((n, rpc_for(n)?)))
            else {
                out.no_rpc += 1;
                continue;
            };
            if !heads.contains_key(&rpc) {
                let h = self.trusted_head(client, &rpc, net).await;
                heads.insert(rpc.clone(), h);
            }
            let Some(Some(head)) = heads.get(&rpc).copied() else {
                out.pending += 1;
                continue;
            };
            let verdict = resolve_one(client, &rpc, net, &p, head, max_rpc_lag_secs).await;
            let outcome = match verdict {
                Some(Verdict::Settled) => Outcome::Settled { tx: None },
                Some(Verdict::Released) => Outcome::Released {
                    reason: format!("expired unused (checked on chain at block {})", head.number),
                },
                _ => {
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
            match state {
                State::Settled => {
                    tracing::info!(
                        id = p.id,
                        block = head.number,
                        "payment confirmed on chain: settled"
                    );
                    out.settled += 1;
                }
                _ => {
                    tracing::info!(
                        id = p.id,
                        block = head.number,
                        "authorization expired unused on chain: released"
                    );
                    out.released += 1;
                }
            }
        }
        out
    }

    /// Whether one authorization is used, judged at the head of a node that
    /// proved to serve `net`'s chain (the checks of a resolution pass). The payment
    /// flow asks when a re-sent payment is refused: used means the first send
    /// settled. Only "used" is final here; "unused" proves nothing yet.
    pub async fn check_used(
        &self,
        client: &Client,
        rpc: &str,
        net: &networks::Network,
        token: Address,
        authorizer: Address,
        nonce: B256,
    ) -> Result<(bool, Head), String> {
        let head = self
            .trusted_head(client, rpc, net)
            .await
            .ok_or_else(|| format!("no usable RPC for {} (see the log)", net.caip2))?;
        let used = authorization_used(client, rpc, token, authorizer, nonce, head.number).await?;
        Ok((used, head))
    }

    /// The head of an RPC that serves `net`'s chain; None (logged) otherwise.
    /// The URL itself is never logged: it may carry an API key.
    async fn trusted_head(
        &self,
        client: &Client,
        rpc: &str,
        net: &networks::Network,
    ) -> Option<Head> {
        let key = (rpc.to_string(), net.chain_id);
        let known = self.verified.lock().is_ok_and(|v| v.contains(&key));
        if !known {
            match chain_id(client, rpc).await {
                Ok(id) if id == net.chain_id => {
                    if let Ok(mut v) = self.verified.lock() {
                        v.insert(key);
                    }
                }
                Ok(id) => {
                    let first = self
                        .refused
                        .lock()
                        .is_ok_and(|mut r| r.insert((rpc.to_string(), id)));
                    if first {
                        tracing::error!(
                            network = net.caip2,
                            "the [payment.rpc] URL for {} serves chain id {id}, not {}: it is not used, and payments on {} stay counted against caps until it is fixed",
                            net.caip2,
                            net.chain_id,
                            net.caip2
                        );
                    }
                    return None;
                }
                Err(e) => {
                    tracing::warn!(network = net.caip2, error = %e, "cannot check the RPC's chain id; payments stay counted");
                    return None;
                }
            }
        }
        match head(client, rpc).await {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(network = net.caip2, error = %e, "cannot read the chain head; payments stay counted");
                None
            }
        }
    }
}

async fn resolve_one(
    client: &Client,
    rpc: &str,
    net: &networks::Network,
    p: &Payment,
    head: Head,
    max_rpc_lag_secs: u64,
) -> Option<Verdict> {
    let (Some(payer), Some(nonce), Some(vb)) = (&p.payer, &p.nonce, p.valid_before) else {
        return None;
    };
    let (Ok(payer), Ok(nonce)) = (payer.parse::<Address>(), nonce.parse::<B256>()) else {
        return None;
    };
    let asset = p.asset.parse::<Address>().unwrap_or(net.usdc);
    let used = match authorization_used(client, rpc, asset, payer, nonce, head.number).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(id = p.id, network = net.caip2, error = %e, "cannot check the payment on chain; it stays counted");
            return None;
        }
    };
    let now_s = (crate::now_ms() / 1000).max(0) as u64;
    let verdict = judge(used, head, vb, now_s, max_rpc_lag_secs);
    if verdict == Verdict::Stale {
        tracing::warn!(
            id = p.id,
            network = net.caip2,
            block = head.number,
            lag_secs = now_s.saturating_sub(head.timestamp),
            "the RPC's head is more than payment.max_rpc_lag_secs ({max_rpc_lag_secs}) behind wall time: it cannot prove the authorization expired; the payment stays counted"
        );
    }
    Some(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(last: u8) -> Vec<u8> {
        let mut w = vec![0u8; 32];
        w[31] = last;
        w
    }

    #[test]
    fn authorization_state_is_exactly_0_or_1() {
        assert_eq!(authorization_state(&word(0)), Ok(false));
        assert_eq!(authorization_state(&word(1)), Ok(true));
        assert!(authorization_state(&word(2)).is_err());
        let mut high = word(1);
        high[0] = 1;
        assert!(authorization_state(&high).is_err());
        assert!(authorization_state(&[1]).is_err());
        assert!(authorization_state(&[]).is_err());
        assert!(authorization_state(&[0u8; 64]).is_err());
    }

    #[test]
    fn only_block_time_past_valid_before_on_a_fresh_head_releases() {
        let h = |timestamp| Head {
            number: 7,
            timestamp,
        };
        let (vb, lag) = (1_000, 300);
        // Used: settled, however old the head.
        assert_eq!(judge(true, h(10), vb, 5_000, lag), Verdict::Settled);
        // Local clock long past validBefore, block time not: a transfer can still land.
        assert_eq!(judge(false, h(999), vb, 5_000, lag), Verdict::Open);
        assert_eq!(judge(false, h(999), vb, 999, lag), Verdict::Open);
        // Block time reached validBefore on a fresh head.
        assert_eq!(judge(false, h(1_000), vb, 1_000, lag), Verdict::Released);
        assert_eq!(judge(false, h(1_000), vb, 1_300, lag), Verdict::Released);
        // ... on a head stuck further behind wall time than the allowed lag.
        assert_eq!(judge(false, h(1_000), vb, 1_301, lag), Verdict::Stale);
        // A head ahead of the local clock is judged on its own time.
        assert_eq!(judge(false, h(1_100), vb, 900, lag), Verdict::Released);
    }
}
