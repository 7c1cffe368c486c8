// A Solana payment whose answer is lost after settlement (like recover-seller.mjs' recover-noid, on Solana).
// The check is the seller behind x402d "solres" (SOL_RESOLVE_SELLER_PORT; it runs before solana-resolve-memo, which
// serves the same port): it verifies and settles through the real @x402/svm facilitator, then destroys the socket of
// the first paid request without answering. x402d re-sends the very same transaction; the seller verifies and settles
// it again through the facilitator, which refuses it (the transaction is already on chain), and the seller answers
// 402 with that. The money-safe outcome: exactly one transfer on chain, x402d signed once (one distinct
// PAYMENT-SIGNATURE), the app is not told it was not charged, and the ledger ends `settled` with the on-chain
// signature or tx unknown, like recover-nonce-used on EVM (found by memo: at once, or by the resolver once the
// blockhash expired; never released or rejected).
import http from "node:http";
import { b64json } from "../lib/common.mjs";
import { main, assert, fail, info, note, payments, sleep, env, driver, errorBody, Problems } from "../lib/check.mjs";
import { SOL_NETWORK, USDC_MINT, SOL_FACILITATOR_URL, keys, rpc, solSnapshot, solTxsSince } from "../solana/common.mjs";

const X402D_URL = env("X402D_SOLRES_URL");
const CONFIG = env("X402D_SOLRES_CONFIG");
const SELLER_PORT = Number(env("SOL_RESOLVE_SELLER_PORT"));
const ACCEPT = { scheme: "exact", network: SOL_NETWORK, amount: "1000", asset: USDC_MINT, payTo: keys.payTo.address, maxTimeoutSeconds: 60,
  extra: { feePayer: keys.feePayer.address } };
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64");
const facilitator = async (op, paymentPayload) => {
  const r = await fetch(`${SOL_FACILITATOR_URL}/${op}`, { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ x402Version: 2, paymentPayload, paymentRequirements: ACCEPT }) });
  return r.json();
};

const seen = { unpaid: 0, paid: 0, signatures: new Set(), settled: [], refused: [] };
http.createServer(async (req, res) => {
  for await (const _ of req); // drain
  const json = (status, obj, headers = {}) => { res.writeHead(status, { "content-type": "application/json", ...headers }); res.end(JSON.stringify(obj)); };
  if (req.method === "GET" && req.url === "/v1/models") return json(200, { object: "list", data: [{ id: "gpt-4o-mini", object: "model", created: 0, owned_by: "recover-seller" }] });
  const required = { x402Version: 2, error: "Payment required",
    resource: { url: `http://127.0.0.1:${SELLER_PORT}/v1/chat/completions`, description: "solana recovery probe", mimeType: "application/json" }, accepts: [ACCEPT] };
  const sig = req.headers["payment-signature"];
  if (!sig) { seen.unpaid++; return json(402, {}, { "payment-required": b64(required) }); }
  seen.paid++;
  seen.signatures.add(sig);
  const payload = b64json(sig);
  const v = await facilitator("verify", payload);
  if (!v.isValid) {
    seen.refused.push(`verify: ${v.invalidReason}`);
    return json(402, { error: v.invalidReason }, { "payment-required": b64({ ...required, error: v.invalidReason }) });
  }
  const st = await facilitator("settle", payload);
  if (!st.success) {
    seen.refused.push(`settle: ${st.errorReason}`);
    return json(402, {}, { "payment-response": b64(st) });
  }
  seen.settled.push(st.transaction);
  if (seen.settled.length === 1) return req.socket.destroy(); // settled, and the answer is lost on the way back
  json(200, { id: "chatcmpl-solana-recover", object: "chat.completion", created: 0, model: "gpt-4o-mini",
    choices: [{ index: 0, message: { role: "assistant", content: "second settlement?!", refusal: null }, finish_reason: "stop" }] },
  { "payment-response": b64(st) });
}).listen(SELLER_PORT, "127.0.0.1");

main(async () => {
  const tag = `solana recover #${Date.now()}`;
  const s0 = await solSnapshot();
  const [rec] = await driver("py", { base_url: `${X402D_URL}/v1`, model: "gpt-4o-mini", message: tag, max_retries: 0 });
  const err = errorBody(rec)?.error;
  info("seller saw", { ...seen, signatures: seen.signatures.size });
  const txs = await solTxsSince(s0);
  const p = new Problems();
  p.expect(txs.length === 1 && !txs[0].err && txs[0].transfers[0]?.amount === 1000n,
    `on chain: ${txs.length} transactions to payTo (${JSON.stringify(txs.map((t) => t.signature))}), expected exactly one transfer of 1000`);
  p.expect(seen.signatures.size === 1, `seller saw ${seen.signatures.size} distinct payment headers, expected 1 (x402d signs once; a re-send is the same bytes)`);
  p.expect(seen.settled.length === 1, `the seller's facilitator settled ${seen.settled.length} times, expected once`);
  p.expect(!rec.ok, `the app got ${rec.http_status} with content ${JSON.stringify(rec.content)} although the seller never answered`);
  p.expect(!/not (been )?charged|nothing (was )?paid/i.test(err?.message || ""), `x402d told the app it was not charged: ${err?.message}`);
  info("app got", { status: rec.http_status, error: err, state: rec.headers?.["x-x402d-payment-state"] });
  const memo = txs[0]?.memos[0];
  let e = (await payments(CONFIG)).find((x) => x.nonce === memo);
  info("ledger right after the call", e ?? null);
  if (!e) fail(`ledger: no payment with nonce = the memo ${memo}`);
  const first = e.state;
  p.expect(["settled", "at_risk"].includes(first), `ledger state ${first} right after the call, expected settled (found by memo) or at_risk (to be resolved)`);
  if (first === "at_risk") { // the resolver decides it once the blockhash expired
    const h = await rpc("getBlockHeight", [{ commitment: "finalized" }]);
    await rpc("x402dtest_warp", [Math.max(1, e.valid_before - h + 1)]); // finalized past lastValidBlockHeight
    for (const t = Date.now(); Date.now() - t < 30_000 && e?.state === "at_risk"; await sleep(200)) e = (await payments(CONFIG)).find((x) => x.id === e.id);
  }
  // Like recover-nonce-used on EVM, "settled, tx unknown" is money-safe; any other tx is wrong.
  p.expect(e?.state === "settled" && (e.tx === null || e.tx === txs[0]?.signature), `ledger ${JSON.stringify(e)}, expected settled with tx ${txs[0]?.signature} (or unknown)`);
  if (e?.state === "settled" && e.tx === null)
    note(`ledger: settled with tx unknown, although the memo search (getSignaturesForAddress) found its signature ${txs[0]?.signature}`);
  p.expect(e?.attempts === seen.paid, `ledger attempts ${e?.attempts}, the seller saw ${seen.paid} sends`);
  note(`answer lost after settlement: the app got ${rec.http_status} ${err?.code ?? err?.type ?? ""}; the seller saw ${seen.paid} sends of one transaction (re-send refused: ${seen.refused.join(", ") || "-"}); ledger ${first}${first === "at_risk" ? " -> settled by the resolver after expiry" : " at once"}, ${e?.tx ? "with the on-chain signature" : "tx unknown"}`);
  p.done();
});
