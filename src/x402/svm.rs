//! The `exact` scheme on Solana (SVM), as pure functions: checking what the
//! seller asks for, and building the partially signed v0 transaction exactly as
//! `@x402/svm` 2.27's client does (golden vectors in `tests/vectors/svm_exact.json`):
//!
//! ```text
//! fee payer  = extra.feePayer (the facilitator: it pays the fee and signs last)
//! 0 ComputeBudget SetComputeUnitLimit(20000)
//! 1 ComputeBudget SetComputeUnitPrice(1 microlamport)
//! 2 Token TransferChecked(payer's USDC ATA → payTo's USDC ATA, amount, 6 decimals; authority = payer)
//! 3 Memo (extra.memo, else 16 random bytes as hex: every payment is unique)
//! ```
//!
//! The wallet signs the message; the fee payer's signature slot stays zeroed.
//! Nothing here does I/O: the blockhash and the memo's randomness come in.

use super::networks::SvmNetwork;
use super::parse::Requirement;
use super::select::parse_amount;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::cmp::Ordering;
use std::fmt;

/// A 32-byte Solana address (an ed25519 public key or a program-derived address).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pubkey(pub [u8; 32]);

impl Pubkey {
    /// Parses a base58 address of exactly 32 bytes.
    pub fn parse(s: &str) -> Option<Pubkey> {
        let mut out = [0u8; 32];
        match bs58::decode(s).onto(&mut out) {
            Ok(32) => Some(Pubkey(out)),
            _ => None,
        }
    }

    pub fn to_base58(&self) -> String {
        bs58::encode(self.0).into_string()
    }

    const fn from_str_const(bytes: [u8; 32]) -> Pubkey {
        Pubkey(bytes)
    }
}

impl fmt::Display for Pubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base58())
    }
}

impl fmt::Debug for Pubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pubkey({self})")
    }
}

/// `TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA`: the SPL Token program (USDC's).
pub const TOKEN_PROGRAM: Pubkey = Pubkey::from_str_const([
    6, 221, 246, 225, 215, 101, 161, 147, 217, 203, 225, 70, 206, 235, 121, 172, 28, 180, 133, 237,
    95, 91, 55, 145, 58, 140, 245, 133, 126, 255, 0, 169,
]);
/// `ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL`: the associated token account program.
pub const ATA_PROGRAM: Pubkey = Pubkey::from_str_const([
    140, 151, 37, 143, 78, 36, 137, 241, 187, 61, 16, 41, 20, 142, 13, 131, 11, 90, 19, 153, 218,
    255, 16, 132, 4, 142, 123, 216, 219, 233, 248, 89,
]);
/// `MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr`: the SPL Memo program (v2).
pub const MEMO_PROGRAM: Pubkey = Pubkey::from_str_const([
    5, 74, 83, 90, 153, 41, 33, 6, 77, 36, 232, 113, 96, 218, 56, 124, 124, 53, 181, 221, 188, 146,
    187, 129, 228, 31, 168, 64, 65, 5, 68, 141,
]);
/// `ComputeBudget111111111111111111111111111111`.
pub const COMPUTE_BUDGET_PROGRAM: Pubkey = Pubkey::from_str_const([
    3, 6, 70, 111, 229, 33, 23, 50, 255, 236, 173, 186, 114, 195, 155, 231, 188, 140, 229, 187,
    197, 247, 18, 107, 44, 67, 155, 58, 64, 0, 0, 0,
]);

/// What `@x402/svm`'s client sets (and its facilitator allows up to 5 lamports/CU).
pub const COMPUTE_UNIT_LIMIT: u32 = 20_000;
pub const COMPUTE_UNIT_PRICE_MICROLAMPORTS: u64 = 1;
/// The facilitator refuses a higher priority fee: 5 lamports per compute unit.
pub const MAX_COMPUTE_UNIT_PRICE_MICROLAMPORTS: u64 = 5_000_000;
/// `extra.memo` longer than this is refused (as the SDK does).
pub const MAX_MEMO_BYTES: usize = 256;
/// USDC's decimals on Solana (both clusters).
pub const USDC_DECIMALS: u8 = 6;

/// Why a Solana requirement or transaction is refused; nothing is signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvmError {
    #[error("{0}")]
    Requirement(String),
    #[error("the fee payer {0} appears in an instruction (it could move the wallet's funds)")]
    FeePayerInInstruction(String),
    #[error(
        "compute unit price {0} microlamports is above the ceiling of {MAX_COMPUTE_UNIT_PRICE_MICROLAMPORTS}"
    )]
    PriceAboveCeiling(u64),
    #[error("the transaction is too large ({0} bytes; Solana allows 1232)")]
    TooLarge(usize),
}

/// The checked terms of one Solana requirement: what gets signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub mint: Pubkey,
    pub pay_to: Pubkey,
    pub fee_payer: Pubkey,
    /// Atomic USDC units (6 decimals).
    pub amount: u64,
    /// The seller's `extra.memo`, when it set one.
    pub memo: Option<String>,
}

/// Checks a requirement on `net` and returns its terms. The price ceiling and
/// the network policy are the caller's (`select`); this is the scheme's part.
pub fn terms(r: &Requirement, net: &SvmNetwork) -> Result<Terms, SvmError> {
    let refuse = |s: String| Err(SvmError::Requirement(s));
    if r.asset != net.usdc_mint {
        return refuse(format!(
            "asset {:?} is not USDC on {} (expected {})",
            clip(&r.asset),
            net.caip2,
            net.usdc_mint
        ));
    }
    let Some(mint) = Pubkey::parse(&r.asset) else {
        return refuse("asset is not a Solana address".into());
    };
    let Some(pay_to) = Pubkey::parse(&r.pay_to) else {
        return refuse(format!(
            "payTo {:?} is not a Solana address",
            clip(&r.pay_to)
        ));
    };
    let extra = r.raw.get("extra");
    let fee_payer = match extra.and_then(|e| e.get("feePayer")) {
        Some(Value::String(s)) => match Pubkey::parse(s) {
            Some(p) => p,
            None => {
                return refuse(format!(
                    "extra.feePayer {:?} is not a Solana address",
                    clip(s)
                ));
            }
        },
        _ => return refuse("extra.feePayer is missing (the facilitator must pay the fee)".into()),
    };
    let memo = match extra.and_then(|e| e.get("memo")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if s.len() > MAX_MEMO_BYTES => {
            return refuse(format!(
                "extra.memo is {} bytes, more than {MAX_MEMO_BYTES}",
                s.len()
            ));
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return refuse("extra.memo is not a string".into()),
    };
    if let Some(v) = extra.and_then(|e| e.get("transactionVersions"))
        && !v.is_null()
    {
        let versions = v.as_array().map(Vec::as_slice).unwrap_or_default();
        let v0 = versions
            .iter()
            .any(|x| x.as_u64() == Some(0) || matches!(x.as_str(), Some("0" | "v0")));
        if !v0 {
            return refuse(format!(
                "extra.transactionVersions {} does not include 0 (x402d builds v0 transactions)",
                clip(&v.to_string())
            ));
        }
    }
    let amount = parse_amount(&r.amount).map_err(SvmError::Requirement)?;
    let Ok(amount) = u64::try_from(amount) else {
        return refuse(format!(
            "amount {} does not fit a token amount",
            clip(&r.amount)
        ));
    };
    if amount == 0 {
        return refuse("amount is zero".into());
    }
    Ok(Terms {
        mint,
        pay_to,
        fee_payer,
        amount,
        memo,
    })
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(48).collect();
    if s.chars().count() > 48 {
        out.push('…');
    }
    out
}

/// The memo text: the seller's, else 16 random bytes as lowercase hex.
pub fn memo_text(t: &Terms, random: [u8; 16]) -> String {
    t.memo.clone().unwrap_or_else(|| hex::encode(random))
}

/// Whether 32 bytes are a point on ed25519 (a key that could sign). A PDA must not be.
fn on_curve(b: &[u8; 32]) -> bool {
    curve25519_dalek::edwards::CompressedEdwardsY(*b)
        .decompress()
        .is_some()
}

/// `findProgramAddress`: the first bump from 255 down whose hash is off the curve.
pub fn find_program_address(seeds: &[&[u8]], program: &Pubkey) -> Option<(Pubkey, u8)> {
    for bump in (0..=255u8).rev() {
        let mut h = Sha256::new();
        for s in seeds {
            h.update(s);
        }
        h.update([bump]);
        h.update(program.0);
        h.update(b"ProgramDerivedAddress");
        let out: [u8; 32] = h.finalize().into();
        if !on_curve(&out) {
            return Some((Pubkey(out), bump));
        }
    }
    None
}

/// The associated token account of `owner` for `mint` (SPL Token program).
pub fn associated_token_account(owner: &Pubkey, mint: &Pubkey) -> Option<Pubkey> {
    find_program_address(&[&owner.0, &TOKEN_PROGRAM.0, &mint.0], &ATA_PROGRAM).map(|(a, _)| a)
}

/// One account an instruction uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub key: Pubkey,
    pub signer: bool,
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub program: Pubkey,
    pub accounts: Vec<Meta>,
    pub data: Vec<u8>,
}

/// The four instructions of a payment, in the client's order.
pub fn instructions(
    payer: &Pubkey,
    t: &Terms,
    memo: &str,
    compute_unit_price: u64,
) -> Result<Vec<Instruction>, SvmError> {
    if compute_unit_price > MAX_COMPUTE_UNIT_PRICE_MICROLAMPORTS {
        return Err(SvmError::PriceAboveCeiling(compute_unit_price));
    }
    if memo.len() > MAX_MEMO_BYTES {
        return Err(SvmError::Requirement(format!(
            "memo is {} bytes, more than {MAX_MEMO_BYTES}",
            memo.len()
        )));
    }
    let ata = |owner: &Pubkey| {
        associated_token_account(owner, &t.mint)
            .ok_or_else(|| SvmError::Requirement("no token account address exists".into()))
    };
    let (source, destination) = (ata(payer)?, ata(&t.pay_to)?);
    let mut limit = vec![2u8];
    limit.extend_from_slice(&COMPUTE_UNIT_LIMIT.to_le_bytes());
    let mut price = vec![3u8];
    price.extend_from_slice(&compute_unit_price.to_le_bytes());
    let mut transfer = vec![12u8];
    transfer.extend_from_slice(&t.amount.to_le_bytes());
    transfer.push(USDC_DECIMALS);
    let m = |key, signer, writable| Meta {
        key,
        signer,
        writable,
    };
    let ixs = vec![
        Instruction {
            program: COMPUTE_BUDGET_PROGRAM,
            accounts: vec![],
            data: limit,
        },
        Instruction {
            program: COMPUTE_BUDGET_PROGRAM,
            accounts: vec![],
            data: price,
        },
        Instruction {
            program: TOKEN_PROGRAM,
            accounts: vec![
                m(source, false, true),
                m(t.mint, false, false),
                m(destination, false, true),
                m(*payer, true, false),
            ],
            data: transfer,
        },
        Instruction {
            program: MEMO_PROGRAM,
            accounts: vec![],
            data: memo.as_bytes().to_vec(),
        },
    ];
    // The fee payer signs the whole transaction for the facilitator: in any
    // instruction it could be made to move funds or sign for something else.
    let in_ix = ixs
        .iter()
        .any(|ix| ix.program == t.fee_payer || ix.accounts.iter().any(|a| a.key == t.fee_payer));
    if in_ix {
        return Err(SvmError::FeePayerInInstruction(t.fee_payer.to_base58()));
    }
    Ok(ixs)
}

/// Address order in `@solana/kit`'s compiled messages: `Intl.Collator("en",
/// {caseFirst: "lower"})` over base58, i.e. case-insensitive with digits before
/// letters, then lowercase before uppercase.
pub fn collate(a: &str, b: &str) -> Ordering {
    fn primary(c: u8) -> u16 {
        match c {
            b'0'..=b'9' => u16::from(c - b'0'),
            b'a'..=b'z' => 10 + u16::from(c - b'a'),
            b'A'..=b'Z' => 10 + u16::from(c - b'A'),
            _ => 100 + u16::from(c),
        }
    }
    let tertiary = |c: u8| c.is_ascii_uppercase();
    a.bytes()
        .map(primary)
        .cmp(b.bytes().map(primary))
        .then_with(|| a.bytes().map(tertiary).cmp(b.bytes().map(tertiary)))
}

/// `compact-u16`: 7 bits per byte, low first, high bit = more.
pub fn put_compact_u16(out: &mut Vec<u8>, mut n: u16) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A compiled v0 message, with where each signer's signature goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub bytes: Vec<u8>,
    /// The signers, in signature order (fee payer first).
    pub signers: Vec<Pubkey>,
}

/// Compiles a v0 message (no address lookup tables) as `@solana/kit` does.
pub fn compile(fee_payer: &Pubkey, ixs: &[Instruction], blockhash: &[u8; 32]) -> Message {
    struct Entry {
        key: Pubkey,
        b58: String,
        signer: bool,
        writable: bool,
    }
    let mut accounts: Vec<Entry> = vec![Entry {
        key: *fee_payer,
        b58: fee_payer.to_base58(),
        signer: true,
        writable: true,
    }];
    let mut upsert = |key: Pubkey, signer: bool, writable: bool| match accounts
        .iter_mut()
        .find(|e| e.key == key)
    {
        Some(e) => {
            e.signer |= signer;
            e.writable |= writable;
        }
        None => accounts.push(Entry {
            key,
            b58: key.to_base58(),
            signer,
            writable,
        }),
    };
    for ix in ixs {
        upsert(ix.program, false, false);
        for a in &ix.accounts {
            upsert(a.key, a.signer, a.writable);
        }
    }
    // Fee payer first; then signers, writable first; then the rest, writable first;
    // ties by the collator (a stable sort, like Array.prototype.sort).
    accounts[1..].sort_by(|l, r| {
        r.signer
            .cmp(&l.signer)
            .then(r.writable.cmp(&l.writable))
            .then_with(|| collate(&l.b58, &r.b58))
    });
    let signers: Vec<Pubkey> = accounts
        .iter()
        .filter(|e| e.signer)
        .map(|e| e.key)
        .collect();
    let readonly_signed = accounts.iter().filter(|e| e.signer && !e.writable).count();
    let readonly_unsigned = accounts.iter().filter(|e| !e.signer && !e.writable).count();
    let index = |k: &Pubkey| accounts.iter().position(|e| e.key == *k).unwrap_or(0) as u8;

    let mut b = vec![0x80]; // version 0
    b.push(signers.len() as u8);
    b.push(readonly_signed as u8);
    b.push(readonly_unsigned as u8);
    put_compact_u16(&mut b, accounts.len() as u16);
    for e in &accounts {
        b.extend_from_slice(&e.key.0);
    }
    b.extend_from_slice(blockhash);
    put_compact_u16(&mut b, ixs.len() as u16);
    for ix in ixs {
        b.push(index(&ix.program));
        put_compact_u16(&mut b, ix.accounts.len() as u16);
        for a in &ix.accounts {
            b.push(index(&a.key));
        }
        put_compact_u16(&mut b, ix.data.len() as u16);
        b.extend_from_slice(&ix.data);
    }
    put_compact_u16(&mut b, 0); // address table lookups
    Message { bytes: b, signers }
}

/// A partially signed payment transaction, ready for `payload.transaction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The wire transaction (signatures, then the message).
    pub wire: Vec<u8>,
    /// The memo it carries (how the payment is found on chain later).
    pub memo: String,
}

impl Signed {
    pub fn base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.wire)
    }
}

/// Solana's packet limit for a serialized transaction.
pub const MAX_TRANSACTION_BYTES: usize = 1232;

/// Builds and partially signs the payment: `sign` is called once, on the
/// message, with the wallet's key; the fee payer's slot stays zeroed.
pub fn build(
    payer: &Pubkey,
    sign: impl FnOnce(&[u8]) -> [u8; 64],
    t: &Terms,
    blockhash: &[u8; 32],
    memo: String,
) -> Result<Signed, SvmError> {
    let ixs = instructions(payer, t, &memo, COMPUTE_UNIT_PRICE_MICROLAMPORTS)?;
    let msg = compile(&t.fee_payer, &ixs, blockhash);
    let size = 1 + 64 * msg.signers.len() + msg.bytes.len();
    if size > MAX_TRANSACTION_BYTES {
        return Err(SvmError::TooLarge(size));
    }
    let signature = sign(&msg.bytes);
    let mut wire = Vec::with_capacity(size);
    put_compact_u16(&mut wire, msg.signers.len() as u16);
    for s in &msg.signers {
        if s == payer {
            wire.extend_from_slice(&signature);
        } else {
            wire.extend_from_slice(&[0u8; 64]);
        }
    }
    wire.extend_from_slice(&msg.bytes);
    Ok(Signed { wire, memo })
}

/// A decoded wire transaction (what a facilitator sees), for checks and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub signatures: Vec<[u8; 64]>,
    /// The signed message bytes.
    pub message: Vec<u8>,
    pub version: Option<u8>,
    /// numRequiredSignatures, numReadonlySigned, numReadonlyUnsigned.
    pub header: [u8; 3],
    pub accounts: Vec<Pubkey>,
    pub blockhash: [u8; 32],
    pub instructions: Vec<Instruction>,
    pub lookups: usize,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn compact(&mut self) -> Result<usize, String> {
        let mut n = 0usize;
        for i in 0..3 {
            let b = self.u8()?;
            n |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("bad compact-u16".into())
    }
    fn key(&mut self) -> Result<Pubkey, String> {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.take(32)?);
        Ok(Pubkey(k))
    }
}

/// Decodes a wire transaction (legacy or v0); the roles of accounts come from
/// the header, as a validator reads them.
pub fn decode(wire: &[u8]) -> Result<Decoded, String> {
    let mut r = Reader(wire);
    let n = r.compact()?;
    let mut signatures = Vec::with_capacity(n.min(16));
    for _ in 0..n {
        let mut s = [0u8; 64];
        s.copy_from_slice(r.take(64)?);
        signatures.push(s);
    }
    let message = r.0.to_vec();
    let first = r.u8()?;
    let (version, h0) = if first & 0x80 != 0 {
        (Some(first & 0x7f), r.u8()?)
    } else {
        (None, first)
    };
    let header = [h0, r.u8()?, r.u8()?];
    let count = r.compact()?;
    let mut accounts = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        accounts.push(r.key()?);
    }
    let mut blockhash = [0u8; 32];
    blockhash.copy_from_slice(r.take(32)?);
    let (signed, ro_signed, ro_unsigned) = (
        usize::from(header[0]),
        usize::from(header[1]),
        usize::from(header[2]),
    );
    let role = |i: usize| -> (bool, bool) {
        let signer = i < signed;
        let writable = if signer {
            i < signed.saturating_sub(ro_signed)
        } else {
            i < count.saturating_sub(ro_unsigned)
        };
        (signer, writable)
    };
    let key = |i: u8| -> Result<Pubkey, String> {
        accounts
            .get(usize::from(i))
            .copied()
            .ok_or_else(|| format!("account index {i} out of range"))
    };
    let nix = r.compact()?;
    let mut instructions = Vec::with_capacity(nix.min(16));
    for _ in 0..nix {
        let program = key(r.u8()?)?;
        let na = r.compact()?;
        let mut metas = Vec::with_capacity(na.min(16));
        for _ in 0..na {
            let i = r.u8()?;
            let (signer, writable) = role(usize::from(i));
            metas.push(Meta {
                key: key(i)?,
                signer,
                writable,
            });
        }
        let nd = r.compact()?;
        instructions.push(Instruction {
            program,
            accounts: metas,
            data: r.take(nd)?.to_vec(),
        });
    }
    let lookups = if version.is_some() { r.compact()? } else { 0 };
    if lookups == 0 && !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(Decoded {
        signatures,
        message,
        version,
        header,
        accounts,
        blockhash,
        instructions,
        lookups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::networks::lookup_svm;
    use crate::x402::parse::parse_402;
    use ed25519_dalek::{Signer, SigningKey, Verifier};
    use serde_json::json;

    const VECTORS: &str = include_str!("../../tests/vectors/svm_exact.json");

    fn b58(s: &str) -> Pubkey {
        Pubkey::parse(s).unwrap()
    }

    #[test]
    fn program_ids_match_their_names() {
        assert_eq!(
            TOKEN_PROGRAM.to_string(),
            "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
        );
        assert_eq!(
            ATA_PROGRAM.to_string(),
            "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"
        );
        assert_eq!(
            MEMO_PROGRAM.to_string(),
            "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
        );
        assert_eq!(
            COMPUTE_BUDGET_PROGRAM.to_string(),
            "ComputeBudget111111111111111111111111111111"
        );
    }

    #[test]
    fn compact_u16() {
        for (n, want) in [
            (0u16, vec![0u8]),
            (0x7f, vec![0x7f]),
            (0x80, vec![0x80, 0x01]),
            (0x3fff, vec![0xff, 0x7f]),
            (0x4000, vec![0x80, 0x80, 0x01]),
            (0xffff, vec![0xff, 0xff, 0x03]),
        ] {
            let mut out = Vec::new();
            put_compact_u16(&mut out, n);
            assert_eq!(out, want, "{n}");
            assert_eq!(Reader(&out).compact().unwrap(), usize::from(n));
        }
    }

    #[test]
    fn program_derived_addresses_are_the_first_off_curve_bump() {
        // End to end the derivation is pinned by the golden vectors; here the rule.
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        let owner = b58(v["cases"][0]["payer"].as_str().unwrap());
        let mint = b58("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v");
        let (pda, bump) =
            find_program_address(&[&owner.0, &TOKEN_PROGRAM.0, &mint.0], &ATA_PROGRAM).unwrap();
        assert!(!on_curve(&pda.0));
        for higher in u16::from(bump) + 1..=255 {
            let mut h = Sha256::new();
            h.update(owner.0);
            h.update(TOKEN_PROGRAM.0);
            h.update(mint.0);
            h.update([higher as u8]);
            h.update(ATA_PROGRAM.0);
            h.update(b"ProgramDerivedAddress");
            let out: [u8; 32] = h.finalize().into();
            assert!(on_curve(&out), "bump {higher} was off curve too");
        }
        assert!(on_curve(&owner.0), "a real key is on the curve");
        assert_eq!(associated_token_account(&owner, &mint), Some(pda));
    }

    #[test]
    fn collator_matches_solana_kit() {
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        let want: Vec<String> = v["collatorSorted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        let mut got = want.clone();
        got.reverse();
        got.sort_by(|a, b| collate(a, b));
        assert_eq!(got, want);
    }

    fn requirement(c: &Value) -> (Requirement, &'static SvmNetwork, u8) {
        let version = c["version"].as_u64().unwrap() as u8;
        let mut extra = json!({"feePayer": c["feePayer"]});
        if !c["memo"].is_null() {
            extra["memo"] = c["memo"].clone();
        }
        let amount_key = if version == 2 {
            "amount"
        } else {
            "maxAmountRequired"
        };
        let mut offer = json!({"scheme":"exact","network":c["network"],"asset":c["asset"],
            "payTo":c["payTo"],"maxTimeoutSeconds":60,"extra":extra});
        offer[amount_key] = c["amount"].clone();
        if version == 1 {
            offer["resource"] = json!("http://x/y");
        }
        let doc = json!({"x402Version": version, "accepts": [offer]}).to_string();
        let pr = parse_402(None, doc.as_bytes()).unwrap();
        let r = pr.accepts[0].clone().unwrap();
        let net = lookup_svm(&r.network).unwrap();
        (r, net, version)
    }

    fn key_of(c: &Value) -> SigningKey {
        let seed: [u8; 32] = hex::decode(c["seedHex"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        SigningKey::from_bytes(&seed)
    }

    #[test]
    fn golden_vectors_from_x402_svm_byte_for_byte() {
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        let blockhash: [u8; 32] = bs58::decode(v["blockhash"].as_str().unwrap())
            .into_vec()
            .unwrap()
            .try_into()
            .unwrap();
        for c in v["cases"].as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            let (r, net, _) = requirement(c);
            let t = terms(&r, net).unwrap();
            let key = key_of(c);
            let payer = Pubkey(key.verifying_key().to_bytes());
            assert_eq!(payer.to_string(), c["payer"].as_str().unwrap(), "{name}");
            let random: [u8; 16] = match c["randomBytesHex"].as_str() {
                Some(h) => hex::decode(h).unwrap().try_into().unwrap(),
                None => [0; 16],
            };
            let memo = memo_text(&t, random);
            let signed = build(&payer, |m| key.sign(m).to_bytes(), &t, &blockhash, memo).unwrap();
            let want = c["payload"]["payload"]["transaction"].as_str().unwrap();
            assert_eq!(signed.base64(), want, "{name}");
        }
    }

    #[test]
    fn the_transaction_holds_exactly_the_four_instructions() {
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        let c = &v["cases"][1];
        let (r, net, _) = requirement(c);
        let t = terms(&r, net).unwrap();
        let key = key_of(c);
        let payer = Pubkey(key.verifying_key().to_bytes());
        let bh = [9u8; 32];
        let s = build(
            &payer,
            |m| key.sign(m).to_bytes(),
            &t,
            &bh,
            memo_text(&t, [0xab; 16]),
        )
        .unwrap();
        let d = decode(&s.wire).unwrap();
        assert_eq!(d.version, Some(0));
        assert_eq!(d.lookups, 0);
        assert_eq!(d.blockhash, bh);
        // Two signers: the fee payer (slot zero, unsigned) and the wallet.
        assert_eq!(d.header, [2, 1, 4]);
        assert_eq!(d.accounts[0], t.fee_payer);
        assert_eq!(
            d.signatures[0], [0u8; 64],
            "the fee payer's slot stays empty"
        );
        assert_eq!(d.accounts[1], payer);
        let sig = ed25519_dalek::Signature::from_bytes(&d.signatures[1]);
        key.verifying_key().verify(&d.message, &sig).unwrap();
        let ix = &d.instructions;
        assert_eq!(ix.len(), 4);
        assert_eq!(ix[0].program, COMPUTE_BUDGET_PROGRAM);
        assert_eq!(ix[0].data, [2, 0x20, 0x4e, 0, 0]);
        assert_eq!(ix[1].program, COMPUTE_BUDGET_PROGRAM);
        assert_eq!(ix[1].data, [3, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ix[2].program, TOKEN_PROGRAM);
        let mut data = vec![12];
        data.extend_from_slice(&t.amount.to_le_bytes());
        data.push(6);
        assert_eq!(ix[2].data, data);
        let keys: Vec<_> = ix[2]
            .accounts
            .iter()
            .map(|a| (a.key, a.signer, a.writable))
            .collect();
        assert_eq!(
            keys,
            vec![
                (
                    associated_token_account(&payer, &t.mint).unwrap(),
                    false,
                    true
                ),
                (t.mint, false, false),
                (
                    associated_token_account(&t.pay_to, &t.mint).unwrap(),
                    false,
                    true
                ),
                (payer, true, false),
            ]
        );
        assert_eq!(ix[3].program, MEMO_PROGRAM);
        assert!(ix[3].accounts.is_empty());
        assert_eq!(ix[3].data, hex::encode([0xab; 16]).as_bytes());
        for i in ix {
            assert!(i.program != t.fee_payer && i.accounts.iter().all(|a| a.key != t.fee_payer));
        }
    }

    #[test]
    fn memo_rules() {
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        let (r, net, _) = requirement(&v["cases"][0]);
        let t = terms(&r, net).unwrap();
        assert_eq!(
            memo_text(&t, [1; 16]),
            "order-42 ✓",
            "the seller's memo wins"
        );
        let (r, net, _) = requirement(&v["cases"][1]);
        let t = terms(&r, net).unwrap();
        assert_eq!(t.memo, None);
        let m = memo_text(&t, [0x0f; 16]);
        assert_eq!(m, "0f".repeat(16));
        assert_ne!(memo_text(&t, [1; 16]), memo_text(&t, [2; 16]));
        // Too long is refused before anything is built.
        let mut r2 = r.clone();
        r2.raw["extra"]["memo"] = json!("x".repeat(257));
        assert!(
            terms(&r2, net)
                .unwrap_err()
                .to_string()
                .contains("257 bytes")
        );
        r2.raw["extra"]["memo"] = json!("x".repeat(256));
        assert_eq!(terms(&r2, net).unwrap().memo.unwrap().len(), 256);
        r2.raw["extra"]["memo"] = json!(5);
        assert!(terms(&r2, net).is_err());
    }

    #[test]
    fn refusals() {
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        let c = &v["cases"][1];
        let (r, net, _) = requirement(c);
        let key = key_of(c);
        let payer = Pubkey(key.verifying_key().to_bytes());
        let err = |r: &Requirement| terms(r, net).unwrap_err().to_string();
        // Another mint (mainnet USDC offered on devnet, or any other token).
        let mut o = r.clone();
        o.asset = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v".into();
        assert!(err(&o).contains("not USDC"), "{}", err(&o));
        o.asset = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB".into();
        assert!(err(&o).contains("not USDC"));
        // No fee payer, or not an address.
        let mut o = r.clone();
        o.raw["extra"].as_object_mut().unwrap().remove("feePayer");
        assert!(err(&o).contains("feePayer is missing"));
        o.raw["extra"]["feePayer"] = json!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");
        assert!(err(&o).contains("not a Solana address"));
        let mut o = r.clone();
        o.pay_to = "me".into();
        assert!(err(&o).contains("payTo"));
        let mut o = r.clone();
        o.amount = "0".into();
        assert!(err(&o).contains("zero"));
        o.amount = "18446744073709551616".into();
        assert!(err(&o).contains("does not fit"));
        let mut o = r.clone();
        o.raw["extra"]["transactionVersions"] = json!(["legacy"]);
        assert!(err(&o).contains("transactionVersions"));
        o.raw["extra"]["transactionVersions"] = json!(["legacy", 0]);
        assert!(terms(&o, net).is_ok());
        // The fee payer is the wallet itself (it would sign the transfer), or the mint.
        let t = terms(&r, net).unwrap();
        let mut bad = t.clone();
        bad.fee_payer = payer;
        let signed = std::cell::Cell::new(false);
        let e = build(
            &payer,
            |_| {
                signed.set(true);
                [0; 64]
            },
            &bad,
            &[1; 32],
            "m".into(),
        )
        .unwrap_err();
        assert!(matches!(e, SvmError::FeePayerInInstruction(_)), "{e}");
        bad.fee_payer = t.mint;
        assert!(matches!(
            build(
                &payer,
                |_| {
                    signed.set(true);
                    [0; 64]
                },
                &bad,
                &[1; 32],
                "m".into()
            ),
            Err(SvmError::FeePayerInInstruction(_))
        ));
        bad.fee_payer = MEMO_PROGRAM;
        assert!(
            build(
                &payer,
                |_| {
                    signed.set(true);
                    [0; 64]
                },
                &bad,
                &[1; 32],
                "m".into()
            )
            .is_err()
        );
        assert!(!signed.get(), "nothing was signed");
        // A priority fee above the facilitator's ceiling is never built.
        assert_eq!(
            instructions(&payer, &t, "m", MAX_COMPUTE_UNIT_PRICE_MICROLAMPORTS + 1),
            Err(SvmError::PriceAboveCeiling(
                MAX_COMPUTE_UNIT_PRICE_MICROLAMPORTS + 1
            ))
        );
        assert!(instructions(&payer, &t, "m", MAX_COMPUTE_UNIT_PRICE_MICROLAMPORTS).is_ok());
    }
}
