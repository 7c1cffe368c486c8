//! The seller's side of a payment check, shared by the test harness's mock
//! seller and the benchmark seller: decode the payment header, recover the
//! EIP-712 signer, and check recipient, amount, validity window and nonce reuse.
//! Written independently of x402d's own signing code on purpose.

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{Eip712Domain, SolStruct, sol};
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

sol! {
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// What the seller asked for.
pub struct Expect<'a> {
    pub version: u8,
    /// `payTo` exactly as offered (v2 payments must echo it in `accepted`).
    pub pay_to_text: &'a str,
    pub pay_to: Address,
    pub amount: U256,
    pub max_timeout: u64,
    pub domain: &'a Eip712Domain,
    /// Nonces already accepted (a reused one is refused).
    pub used: &'a Mutex<HashSet<B256>>,
}

/// Verifies a payment header; returns the nonce and the paid value.
pub fn verify_payment(header: &[u8], e: &Expect<'_>) -> Result<(B256, U256), String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(header)
        .map_err(|_| "payment header is not base64")?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| "payment header is not JSON")?;
    if v["x402Version"] != json!(e.version) {
        return Err(format!("wrong x402Version {}", v["x402Version"]));
    }
    if e.version == 2 && v["accepted"]["payTo"] != json!(e.pay_to_text) {
        return Err("accepted does not echo the requirement".into());
    }
    let a = &v["payload"]["authorization"];
    let s = |k: &str| a[k].as_str().ok_or(format!("missing {k}"));
    let from: Address = s("from")?.parse().map_err(|_| "bad from")?;
    let to: Address = s("to")?.parse().map_err(|_| "bad to")?;
    let value: U256 = s("value")?.parse().map_err(|_| "bad value")?;
    let valid_after: u64 = s("validAfter")?.parse().map_err(|_| "bad validAfter")?;
    let valid_before: u64 = s("validBefore")?.parse().map_err(|_| "bad validBefore")?;
    let nonce: B256 = s("nonce")?.parse().map_err(|_| "bad nonce")?;
    let sig_hex = v["payload"]["signature"]
        .as_str()
        .ok_or("missing signature")?;
    let sig_bytes =
        hex::decode(sig_hex.trim_start_matches("0x")).map_err(|_| "bad signature hex")?;
    let sig =
        alloy_primitives::Signature::try_from(sig_bytes.as_slice()).map_err(|_| "bad signature")?;
    let msg = TransferWithAuthorization {
        from,
        to,
        value,
        validAfter: U256::from(valid_after),
        validBefore: U256::from(valid_before),
        nonce,
    };
    let hash = msg.eip712_signing_hash(e.domain);
    let signer = sig
        .recover_address_from_prehash(&hash)
        .map_err(|_| "signature does not recover")?;
    if signer != from {
        return Err(format!("signer {signer} is not from {from}"));
    }
    if to != e.pay_to {
        return Err("wrong payTo".into());
    }
    if value != e.amount {
        return Err(format!("wrong amount {value}"));
    }
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "clock before 1970")?
        .as_secs();
    if valid_after > t {
        return Err("not yet valid".into());
    }
    if valid_before <= t || valid_before > t + e.max_timeout + 5 {
        return Err(format!("validBefore {valid_before} out of range (now {t})"));
    }
    if !e.used.lock().unwrap().insert(nonce) {
        return Err("invalid_exact_evm_nonce_already_used".into());
    }
    Ok((nonce, value))
}
