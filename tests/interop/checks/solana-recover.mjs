// A Solana payment whose answer is lost after settlement (like recover-seller.mjs' recover-noid, on Solana).
// The check is the seller behind x402d "solres" (SOL_RESOLVE_SELLER_PORT; it runs before solana-resolve-memo, which
// serves the same port): it verifies and settles through the real @x402/svm facilitator, then destroys the socket of
// the first paid request without answering. x402d re-sends the very same transaction; the seller verifies and settles
// it again through the facilitator, which refuses it (the transaction is already on chain), and the seller answers
// 402 with that. x402d then searches the payer's token account for the memo at commitment `confirmed` (the
// transfer landed seconds ago and is not finalized yet). Required: exactly one transfer on chain, x402d signed once
// (one distinct PAYMENT-SIGNATURE), the app gets `502 paid_answer_lost` (like recover-nonce-used on EVM) naming the
// transaction, and the ledger is `settled` at once, right after the call, with the on-chain signature as `tx`.
import http from "node:http";
import { b64json } from "../lib/common.mjs";
import { main, fail, info, note, payments, env, driver, errorBody, Problems } from "../lib/check.mjs";
import { SOL_NETWORK, USDC_MINT, SOL_FACILITATOR_URL, keys, solSnapshot, solTxsSince } from "../solana/common.mjs";

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
  const signature = txs[0]?.signature;
  p.expect(rec.http_status === 502 && err?.code === "paid_answer_lost",
    `the app got ${rec.http_status} ${err?.code}, expected 502 paid_answer_lost (the memo is on chain at confirmed right after the call)`);
  p.expect((err?.message || "").includes(`memo found in transaction ${signature}`), `the error does not name the transaction ${signature}: ${err?.message}`);
  const memo = txs[0]?.memos[0];
  const e = (await payments(CONFIG)).find((x) => x.nonce === memo);
  info("ledger right after the call", e ?? null);
  if (!e) fail(`ledger: no payment with nonce = the memo ${memo}`);
  p.expect(e.state === "settled" && e.tx === signature, `ledger right after the call ${JSON.stringify(e)}, expected settled with tx ${signature}`);
  p.expect(/memo found in transaction/.test(e.last_error || "") && !/authorization/.test(e.last_error || ""),
    `ledger last_error not in Solana words: ${e.last_error}`);
  p.expect(e.attempts === seen.paid, `ledger attempts ${e.attempts}, the seller saw ${seen.paid} sends`);
  note(`answer lost after settlement: the app got ${rec.http_status} ${err?.code ?? err?.type ?? ""}; the seller saw ${seen.paid} sends of one transaction (re-send refused: ${seen.refused.join(", ") || "-"}); ledger ${e.state} at once, tx ${e.tx === signature ? "= the on-chain signature" : e.tx}`);
  p.done();
});
