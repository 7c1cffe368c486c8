// Shared constants and helpers for the Solana half of the interop suite (all loopback, all env-driven).
// Keys are derived from fixed seeds (sha256 of a label): public test keys for a local chain only, never anywhere else.
import crypto from "node:crypto";
import {
  address, createKeyPairSignerFromPrivateKeyBytes, getAddressEncoder, getBase58Decoder, getProgramDerivedAddress,
} from "@solana/kit";

export const SOLANA_RPC_URL = process.env.SOLANA_RPC_URL || "http://127.0.0.1:8899";
export const SOL_FACILITATOR_URL = process.env.SOL_FACILITATOR_URL || "http://127.0.0.1:4032";
export const SOL_SELLER_URL = process.env.SOL_SELLER_URL || "http://127.0.0.1:4031";

// CAIP-2 id of Solana devnet (its genesis hash, truncated) and the full genesis hash getGenesisHash answers.
export const SOL_NETWORK = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1";
export const DEVNET_GENESIS_HASH = "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG";
// Circle's devnet USDC mint: the local chain creates it at this exact address (6 decimals), so @x402/svm's default
// asset for solana devnet ("$0.001" pricing) works unchanged.
export const USDC_MINT = address("4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU");
export const USDC_DECIMALS = 6;
export const TOKEN_PROGRAM = address("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA");
export const ATA_PROGRAM = address("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL");
export const MEMO_PROGRAM = address("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");
export const COMPUTE_BUDGET_PROGRAM = address("ComputeBudget111111111111111111111111111111");

// Prices of the Solana seller's routes (USD and atomic USDC).
export const SOL_PRICES = {
  base: { usd: "0.001", atomic: 1000n, path: "/v1/chat/completions" },
  // The dual routes use x402d's tier paths (it serves /v1/, /v1/pro/ and /v1/premium/ only).
  dual: { usd: "0.002", atomic: 2000n, path: "/v1/pro/chat/completions" }, // accepts: [base-sepolia, solana devnet]
  dualSol: { usd: "0.003", atomic: 3000n, path: "/v1/premium/chat/completions" }, // accepts: [solana devnet, base-sepolia]
};

const seed = (label) => crypto.createHash("sha256").update(`x402d-interop solana ${label}`).digest();
/** A test keypair: { signer (kit KeyPairSigner), address, secret (64 bytes: seed || public key, base58 like the
 *  Solana CLI's `solana-keygen` output), json (the CLI's JSON array) }. */
export async function testKey(label) {
  const s = seed(label);
  const signer = await createKeyPairSignerFromPrivateKeyBytes(new Uint8Array(s), true);
  const full = new Uint8Array([...s, ...getAddressEncoder().encode(signer.address)]);
  return { signer, address: signer.address, secret: getBase58Decoder().decode(full), json: JSON.stringify([...full]) };
}
// Roles: the facilitator's fee payer (the only account that needs SOL), the Coinbase client of `solana-stack`, the
// seller's payTo, x402d's Solana wallet. The payers hold USDC and no SOL at all: fees are the facilitator's.
export const KEYS = { feePayer: "fee-payer", stackPayer: "stack-payer", payTo: "pay-to", x402d: "x402d-wallet" };
export const keys = Object.fromEntries(await Promise.all(Object.entries(KEYS).map(async ([k, l]) => [k, await testKey(l)])));

export async function ata(owner, mint = USDC_MINT) {
  const enc = getAddressEncoder();
  const [pda] = await getProgramDerivedAddress({ programAddress: ATA_PROGRAM, seeds: [enc.encode(owner), enc.encode(TOKEN_PROGRAM), enc.encode(mint)] });
  return pda;
}

let rpcId = 0;
/** One JSON-RPC call to the local chain; throws on a JSON-RPC error. */
export async function rpc(method, params = [], url = SOLANA_RPC_URL) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: ++rpcId, method, params }) });
  const body = await res.json();
  if (body.error) throw new Error(`${method}: ${body.error.message}`);
  return body.result;
}

/** USDC balance (atomic, BigInt) of `owner`'s associated token account; 0n when it does not exist. */
export async function usdcOf(owner) {
  const info = await rpc("getAccountInfo", [await ata(owner), { encoding: "jsonParsed" }]);
  return info.value ? BigInt(info.value.data.parsed.info.tokenAmount.amount) : 0n;
}
/** Lamports of `addr` (BigInt). */
export const lamportsOf = async (addr) => BigInt((await rpc("getBalance", [addr])).value);

/** Chain state to compute exact per-check deltas: USDC of payer and payTo, the payer's SOL, and the newest
 *  signature on payTo's token account (transfers after it are "since" this snapshot). */
export async function solSnapshot(payer = keys.x402d.address, payTo = keys.payTo.address) {
  const payToAta = await ata(payTo);
  const [payerBal, payToBal, payerSol, newest] = await Promise.all([usdcOf(payer), usdcOf(payTo), lamportsOf(payer),
    rpc("getSignaturesForAddress", [payToAta, { limit: 1, commitment: "confirmed" }])]);
  return { payer, payTo, payerAta: await ata(payer), payToAta, payerBal, payToBal, payerSol, newest: newest[0]?.signature ?? null };
}

/** Transactions touching payTo's token account after snapshot `s0`, oldest first, each with its TransferChecked
 *  instructions (from `jsonParsed` getTransaction) and memo: { signature, err, memo, feePayer, transfers:
 *  [{ source, destination, authority, mint, amount (BigInt) }] }. */
export async function solTxsSince(s0) {
  const sigs = await rpc("getSignaturesForAddress", [s0.payToAta, { commitment: "confirmed", ...(s0.newest ? { until: s0.newest } : {}) }]);
  const out = [];
  for (const s of sigs.reverse()) {
    const tx = await rpc("getTransaction", [s.signature, { encoding: "jsonParsed", maxSupportedTransactionVersion: 0, commitment: "confirmed" }]);
    const ixs = tx.transaction.message.instructions;
    out.push({ signature: s.signature, err: s.err, memo: s.memo, feePayer: tx.transaction.message.accountKeys[0].pubkey,
      transfers: ixs.filter((i) => i.program === "spl-token" && i.parsed?.type === "transferChecked")
        .map((i) => ({ ...i.parsed.info, amount: BigInt(i.parsed.info.tokenAmount.amount) })),
      memos: ixs.filter((i) => i.program === "spl-memo").map((i) => i.parsed) });
  }
  return out;
}
