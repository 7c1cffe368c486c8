// At-risk Solana payments resolved by memo once their blockhash expires.
// run.sh starts an x402d ("solres", resolve_every_secs = 1, payment.networks ["solana-devnet"]) whose upstream is
// this check: a seller that answers 402 with SVM requirements (feePayer = the facilitator's fee payer, whose key the
// check holds), keeps the partially signed transaction of the PAYMENT-SIGNATURE and answers 500, so x402d records
// the payment at_risk while the seller holds a transaction it can still co-sign and submit.
// The chain's block production is paused (x402dtest_pause) so nothing expires by itself.
//   1. landed: the seller co-signs and submits the held transaction; after the blockhash expires (x402dtest_warp
//      past lastValidBlockHeight) x402d finds the transfer by its memo -> settled, with that signature.
//   2. not landed: while the blockhash is valid, 3+ resolver rounds later, still at_risk (the seller could submit);
//      after it expires, released, and the chain indeed refuses the held transaction (blockhash not found).
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
  const valid = await rpc("isBlockhashValid", [blockhash]);
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

/** Warp the chain past `lastValidBlockHeight` (the ledger's valid_before) and check the blockhash is gone. */
async function expire(tag, a) {
  const h = await rpc("getBlockHeight");
  const w = await rpc("x402dtest_warp", [Math.max(1, a.entry.valid_before - h + 1)]);
  const valid = (await rpc("isBlockhashValid", [a.blockhash])).value;
  info(`${tag}: warped`, { from: h, to: w.blockHeight, validBefore: a.entry.valid_before, blockhashValid: valid });
  assert(!valid && w.blockHeight > a.entry.valid_before, `${tag}: the blockhash is still valid after the warp`);
}

main(async () => {
  await rpc("x402dtest_pause");
  try {
    const lvbh = (await rpc("getLatestBlockhash")).value.lastValidBlockHeight;
    // 1. Landed: the seller submits the held transaction itself, late.
    const s0 = await solSnapshot();
    const a = await atRiskCall("landed");
    assert(a.entry.valid_before >= lvbh && a.entry.valid_before <= lvbh + 2,
      `landed: ledger valid_before ${a.entry.valid_before}, expected the blockhash's lastValidBlockHeight (~${lvbh})`);
    const signed = await feePayer.signTransaction(a.tx, keys.feePayer.address, SOL_NETWORK);
    const signature = await rpc("sendTransaction", [signed, { encoding: "base64" }]);
    const landed = await solTxsSince(s0);
    info("landed: seller submitted", { signature, txs: landed.map((t) => ({ signature: t.signature, memo: t.memo, err: t.err })) });
    assert(landed.length === 1 && landed[0].signature === signature && !landed[0].err, "landed: the seller's late submission did not land");
    await expire("landed", a);
    const ea = await waitState(a.entry.id, "settled");
    assert(ea.tx === signature, `landed: ledger tx ${ea.tx}, expected the landed signature ${signature}`);

    // 2. Not landed: never released while the blockhash is valid; released once it expired.
    const b = await atRiskCall("unsent");
    const c0 = (await callsSince(0)).length;
    let rounds = [];
    for (const t = Date.now(); Date.now() - t < 20_000; await sleep(200)) {
      rounds = (await callsSince(c0)).filter((c) => c.method === "getSignaturesForAddress" || c.method === "getBlockHeight"
        || c.method === "getSignatureStatuses" || c.method === "isBlockhashValid" || c.method === "getTransaction");
      if (rounds.length >= 3) break;
    }
    const mid = (await payments(CONFIG)).find((x) => x.id === b.entry.id);
    info("unsent: while the blockhash is valid", { resolverCalls: rounds.length, methods: [...new Set(rounds.map((c) => c.method))], state: mid?.state });
    assert(mid?.state === "at_risk", `unsent: x402d made it ${mid?.state} while its blockhash was still valid (the seller could still submit it)`);
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
    for (const c of await callsSince(0)) (byUa[c.ua || "-"] ??= new Set()).add(c.method);
    note(`landed late -> settled by memo (${signature.slice(0, 12)}…); unsent: at_risk through ${rounds.length} resolver calls, released after expiry`);
    note(`RPC methods called on the chain, by User-Agent: ${Object.entries(byUa).map(([ua, m]) => `${ua}: ${[...m].join(" ")}`).join("; ")}`);
  } finally {
    await rpc("x402dtest_resume");
  }
});
