// At-risk Solana payments resolved by memo once their blockhash expires.
// run.sh starts an x402d ("solres", resolve_every_secs = 1, payment.networks ["solana-devnet"]) whose upstream is
// this check: a seller that answers 402 with SVM requirements (feePayer = the facilitator's fee payer, whose key the
// check holds), keeps the partially signed transaction of the PAYMENT-SIGNATURE and answers 500, so x402d records
// the payment at_risk while the seller holds a transaction it can still co-sign and submit.
// The chain's block production is paused (x402dtest_pause) so nothing expires by itself; x402dtest_warp moves it.
//   1. landed at the last moment: the seller co-signs and submits the held transaction one block before
//      lastValidBlockHeight, then the tip moves 1 block past it while the finalized height (32 behind) has not: the
//      transfer is on chain but not finalized, so x402d must not release it (3+ resolver rounds); once finalized past
//      lastValidBlockHeight, x402d finds the transfer by its memo -> settled, with that signature.
//   2. not landed: while the blockhash is valid, 3+ resolver rounds later, still at_risk (the seller could submit);
//      after it expired (finalized too), released, and the chain refuses the held transaction (blockhash not found).
// The ledger's nonce is the transaction's memo and valid_before its lastValidBlockHeight.
import http from "node:http";
import { getBase64Encoder, getCompiledTransactionMessageDecoder, getTransactionDecoder } from "@solana/kit";
import { toFacilitatorSvmSigner } from "@x402/svm";
import { b64json } from "../lib/common.mjs";
import { main, assert, fail, info, note, payments, sleep, env } from "../lib/check.mjs";
import { SOLANA_RPC_URL, SOL_NETWORK, USDC_MINT, MEMO_PROGRAM, keys, rpc, solSnapshot, solTxsSince } from "../solana/common.mjs";

const X402D_URL = env("X402D_SOLRES_URL");
const CONFIG = env("X402D_SOLRES_CONFIG");
const SELLER_PORT = Number(env("SOL_RESOLVE_SELLER_PORT"));
const feePayer = toFacilitatorSvmSigner(keys.feePayer.signer, { defaultRpcUrl: SOLANA_RPC_URL });

// ---- the seller: takes the payment, answers 500, keeps the transaction ----
const held = []; // base64 partially signed transactions
const ACCEPT = { scheme: "exact", network: SOL_NETWORK, amount: "1000", asset: USDC_MINT, payTo: keys.payTo.address, maxTimeoutSeconds: 60,
  extra: { feePayer: keys.feePayer.address } };
http.createServer(async (req, res) => {
  for await (const _ of req); // drain
  const json = (status, obj, headers = {}) => { res.writeHead(status, { "content-type": "application/json", ...headers }); res.end(JSON.stringify(obj)); };
  if (req.method === "GET" && req.url === "/v1/models") return json(200, { object: "list", data: [{ id: "gpt-4o-mini", object: "model", created: 0, owned_by: "late-seller" }] });
  const sig = req.headers["payment-signature"];
  if (!sig) return json(402, {}, { "payment-required": Buffer.from(JSON.stringify({ x402Version: 2, error: "Payment required",
    resource: { url: `http://127.0.0.1:${SELLER_PORT}/v1/chat/completions`, description: "late settler", mimeType: "application/json" }, accepts: [ACCEPT] })).toString("base64") });
  held.push(b64json(sig).payload?.transaction);
  json(500, { error: { message: "took the payment, failed the call (may settle later)", type: "server_error", param: null, code: null } });
}).listen(SELLER_PORT, "127.0.0.1");

function decodeHeld(base64) {
  const tx = getTransactionDecoder().decode(getBase64Encoder().encode(base64));
  const msg = getCompiledTransactionMessageDecoder().decode(tx.messageBytes);
  const memoIx = msg.instructions.find((ix) => msg.staticAccounts[ix.programAddressIndex] === MEMO_PROGRAM);
  return { blockhash: msg.lifetimeToken, memo: memoIx ? Buffer.from(memoIx.data).toString("utf8") : null };
}

/** One call through x402d that ends at_risk; returns its ledger entry and the transaction the seller holds. */
async function atRiskCall(tag) {
  const r = await fetch(`${X402D_URL}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer sk-resolve" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: tag }] }) });
  const state = r.headers.get("x-x402d-payment-state");
  info(`${tag}: x402d answered`, { status: r.status, state, body: (await r.text()).slice(0, 200) });
  assert(r.status === 500 && state === "at_risk", `${tag}: x402d answered ${r.status} with payment state ${state}, expected 500 at_risk`);
  const tx = held.at(-1);
  assert(tx, `${tag}: the seller got no PAYMENT-SIGNATURE transaction`);
  const { blockhash, memo } = decodeHeld(tx);
  const entry = (await payments(CONFIG)).find((e) => e.nonce === memo);
  info(`${tag}: ledger`, entry ?? null);
  assert(entry?.state === "at_risk", `${tag}: ledger entry ${JSON.stringify(entry)}, expected at_risk with nonce = the memo ${memo}`);
  const valid = await rpc("isBlockhashValid", [blockhash, { commitment: "processed" }]);
  assert(valid.value, `${tag}: the transaction's blockhash ${blockhash} is not valid on the chain right after the call`);
  return { entry, tx, memo, blockhash };
}

async function waitState(id, want, ms = 30_000) {
  const t = Date.now();
  for (;;) {
    const e = (await payments(CONFIG)).find((x) => x.id === id);
    if (e?.state === want) return e;
    if (Date.now() - t > ms) fail(`payment ${id} is ${e?.state} after ${ms / 1000}s, expected ${want}`);
    await sleep(200);
  }
}
const callsSince = async (i) => rpc("x402dtest_calls", [i]);

const TIP = { commitment: "confirmed" };
/** Warp the tip to `height` (block height at "confirmed"). */
async function warpTo(height) {
  const h = await rpc("getBlockHeight", [TIP]);
  return height > h ? rpc("x402dtest_warp", [height - h]) : { blockHeight: h };
}
/** Warp the chain until even the finalized height is past `lastValidBlockHeight` (the ledger's valid_before). */
async function expire(tag, a) {
  await warpTo(a.entry.valid_before + 1 + 32);
  const fin = await rpc("getBlockHeight", [{ commitment: "finalized" }]);
  const valid = (await rpc("isBlockhashValid", [a.blockhash, TIP])).value;
  info(`${tag}: warped`, { finalizedHeight: fin, validBefore: a.entry.valid_before, blockhashValid: valid });
  assert(!valid && fin > a.entry.valid_before, `${tag}: the blockhash is still valid after the warp`);
}
/** Wait for 3+ resolver RPC calls by x402d from now on, then return the payment's ledger entry. */
async function afterResolverRounds(id) {
  const c0 = (await callsSince(0)).length;
  let rounds = [];
  for (const t = Date.now(); Date.now() - t < 20_000; await sleep(200)) {
    rounds = (await callsSince(c0)).filter((c) => ["getSignaturesForAddress", "getBlockHeight", "getSignatureStatuses", "isBlockhashValid", "getTransaction"].includes(c.method));
    if (rounds.length >= 3) break;
  }
  return { rounds, entry: (await payments(CONFIG)).find((x) => x.id === id) };
}

main(async () => {
  await rpc("x402dtest_pause");
  try {
    const lvbh = await Promise.all(["finalized", "confirmed"].map(async (c) => (await rpc("getLatestBlockhash", [{ commitment: c }])).value.lastValidBlockHeight));
    // 1. Landed at the last moment, not yet finalized when the tip passes lastValidBlockHeight.
    const s0 = await solSnapshot();
    const a = await atRiskCall("landed");
    assert(lvbh.includes(a.entry.valid_before), `landed: ledger valid_before ${a.entry.valid_before}, expected the blockhash's lastValidBlockHeight (finalized ${lvbh[0]} or confirmed ${lvbh[1]})`);
    await warpTo(a.entry.valid_before - 1);
    const signed = await feePayer.signTransaction(a.tx, keys.feePayer.address, SOL_NETWORK);
    const signature = await rpc("sendTransaction", [signed, { encoding: "base64" }]);
    const landed = await solTxsSince(s0);
    info("landed: seller submitted", { signature, atHeight: await rpc("getBlockHeight", [TIP]), txs: landed.map((t) => ({ signature: t.signature, memo: t.memo, err: t.err })) });
    assert(landed.length === 1 && landed[0].signature === signature && !landed[0].err, "landed: the seller's late submission did not land");
    await warpTo(a.entry.valid_before + 1);
    const fin = await rpc("getBlockHeight", [{ commitment: "finalized" }]);
    const mid = await afterResolverRounds(a.entry.id);
    info("landed: tip past lastValidBlockHeight, finalized not", { tip: a.entry.valid_before + 1, finalized: fin, resolverCalls: mid.rounds.length, state: mid.entry?.state, tx: mid.entry?.tx });
    assert(mid.entry?.state !== "released", `landed: x402d released a payment whose transfer is on chain (landed at height ${a.entry.valid_before - 1}, not yet finalized: finalized height ${fin})`);
    assert(mid.entry?.state === "settled" || mid.rounds.length >= 3, `landed: x402d made ${mid.rounds.length} resolver RPC calls in 20 s while the payment was at_risk`);
    await expire("landed", a);
    const ea = await waitState(a.entry.id, "settled");
    assert(ea.tx === signature, `landed: ledger tx ${ea.tx}, expected the landed signature ${signature}`);

    // 2. Not landed: never released while the blockhash is valid; released once it expired.
    const b = await atRiskCall("unsent");
    const { rounds, entry: bm } = await afterResolverRounds(b.entry.id);
    info("unsent: while the blockhash is valid", { resolverCalls: rounds.length, methods: [...new Set(rounds.map((c) => c.method))], state: bm?.state });
    assert(bm?.state === "at_risk", `unsent: x402d made it ${bm?.state} while its blockhash was still valid (the seller could still submit it)`);
    assert(rounds.length >= 3, `unsent: x402d made ${rounds.length} resolver RPC calls in 20 s while the payment was at_risk`);
    await expire("unsent", b);
    await waitState(b.entry.id, "released");
    let refused = "";
    try {
      await rpc("sendTransaction", [await feePayer.signTransaction(b.tx, keys.feePayer.address, SOL_NETWORK), { encoding: "base64" }]);
    } catch (e) { refused = e.message; }
    info("unsent: late submission of the released one", refused);
    assert(/Blockhash not found/i.test(refused), `unsent: the chain would still accept the released transaction: ${refused || "it was accepted"}`);
    const byUa = {};
    for (const c of await callsSince(0)) (byUa[c.ua || "-"] ??= new Set()).add(`${c.method}${c.params?.at(-1)?.commitment ? `(${c.params.at(-1).commitment})` : ""}`);
    note(`landed 1 block before expiry -> ${mid.entry?.state} while not finalized, settled by memo (${signature.slice(0, 12)}…); unsent: at_risk through ${rounds.length} resolver calls, released after expiry`);
    note(`RPC methods called on the chain, by User-Agent: ${Object.entries(byUa).map(([ua, m]) => `${ua}: ${[...m].join(" ")}`).join("; ")}`);
  } finally {
    await rpc("x402dtest_resume");
  }
});
