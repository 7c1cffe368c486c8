//! Reading the chain: whether an EIP-3009 nonce was used (to resolve at-risk
//! payments) and USDC balances (for `doctor`). JSON-RPC `eth_call` over the
//! same pooled client as the upstream.

use crate::ledger::{Ledger, Outcome, Payment, State};
use crate::upstream::Client;
use crate::x402::networks;
use alloy_primitives::{Address, B256, U256, keccak256};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use serde_json::{Value, json};
use std::time::Duration;

fn selector(sig: &str) -> [u8; 4] {
    let h = keccak256(sig.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

async fn eth_call(
    client: &Client,
    rpc: &str,
    to: Address,
    data: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "eth_call",
        "params": [{"to": to.to_string(), "data": format!("0x{}", hex::encode(data))}, "latest"]
    })
    .to_string();
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
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|_| "RPC reply is not JSON".to_string())?;
    if let Some(err) = v.get("error") {
        return Err(format!("RPC error: {err}"));
    }
    let hexs = v
        .get("result")
        .and_then(Value::as_str)
        .ok_or("RPC reply has no result")?;
    hex::decode(hexs.trim_start_matches("0x")).map_err(|_| "RPC result is not hex".into())
}

/// `authorizationState(authorizer, nonce)` on an EIP-3009 token.
pub async fn authorization_used(
    client: &Client,
    rpc: &str,
    token: Address,
    authorizer: Address,
    nonce: B256,
) -> Result<bool, String> {
    let mut data = selector("authorizationState(address,bytes32)").to_vec();
    data.extend_from_slice(B256::left_padding_from(authorizer.as_slice()).as_slice());
    data.extend_from_slice(nonce.as_slice());
    let out = eth_call(client, rpc, token, data).await?;
    if out.len() != 32 {
        return Err("authorizationState returned an unexpected value".into());
    }
    Ok(out[31] == 1)
}

/// `balanceOf(owner)` in atomic units.
pub async fn balance_of(
    client: &Client,
    rpc: &str,
    token: Address,
    owner: Address,
) -> Result<U256, String> {
    let mut data = selector("balanceOf(address)").to_vec();
    data.extend_from_slice(B256::left_padding_from(owner.as_slice()).as_slice());
    let out = eth_call(client, rpc, token, data).await?;
    if out.len() != 32 {
        return Err("balanceOf returned an unexpected value".into());
    }
    Ok(U256::from_be_slice(&out))
}

/// What one resolution pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub settled: usize,
    pub released: usize,
    pub pending: usize,
    pub no_rpc: usize,
}

/// Resolves at-risk and rejected payments against the chain: a used nonce means
/// the money moved (settled); an unused nonce past `validBefore` can never move
/// (released). Anything unclear stays counted.
pub async fn resolve(
    client: &Client,
    ledger: &Ledger,
    rpc_for: impl Fn(&networks::Network) -> Option<String>,
) -> Resolved {
    let mut out = Resolved::default();
    let open = match ledger.unresolved().await {
        Ok(v) => v,
        Err(_) => return out,
    };
    for p in open {
        match resolve_one(client, ledger, &p, &rpc_for).await {
            Some(State::Settled) => out.settled += 1,
            Some(State::Released) => out.released += 1,
            Some(_) => out.pending += 1,
            None => out.no_rpc += 1,
        }
    }
    out
}

async fn resolve_one(
    client: &Client,
    ledger: &Ledger,
    p: &Payment,
    rpc_for: &impl Fn(&networks::Network) -> Option<String>,
) -> Option<State> {
    let net = networks::lookup(&p.network)?;
    let rpc = rpc_for(net)?;
    let (Some(payer), Some(nonce), Some(vb)) = (&p.payer, &p.nonce, p.valid_before) else {
        return Some(p.state);
    };
    let (Ok(payer), Ok(nonce)) = (payer.parse::<Address>(), nonce.parse::<B256>()) else {
        return Some(p.state);
    };
    let asset = p.asset.parse::<Address>().unwrap_or(net.usdc);
    // Read the clock before the chain: "unused" only proves expiry if checked after it.
    let now_s = (crate::now_ms() / 1000) as u64;
    match authorization_used(client, &rpc, asset, payer, nonce).await {
        Ok(true) => {
            let o = Outcome::Settled { tx: None };
            if ledger.finish(p.id, o, crate::now_ms()).await.is_ok() {
                tracing::info!(id = p.id, "payment confirmed on chain: settled");
                return Some(State::Settled);
            }
            Some(p.state)
        }
        Ok(false) if now_s > vb => {
            let o = Outcome::Released {
                reason: "expired unused (checked on chain)".into(),
            };
            if ledger.finish(p.id, o, crate::now_ms()).await.is_ok() {
                tracing::info!(id = p.id, "authorization expired unused: released");
                return Some(State::Released);
            }
            Some(p.state)
        }
        Ok(false) => Some(p.state),
        Err(e) => {
            tracing::warn!(id = p.id, network = net.caip2, error = %e, "cannot check the payment on chain; it stays counted");
            Some(p.state)
        }
    }
}
