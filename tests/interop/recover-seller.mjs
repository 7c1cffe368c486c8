// An x402 v2 seller that loses the answer to the first paid request AFTER settling it, for the recovery checks.
// Payments are verified and settled through the real facilitator (@x402/core + @x402/evm on anvil). Per request
// model:
//   recover-id     declares payment-identifier (Coinbase's declarePaymentIdentifierExtension) and keeps the answer
//                  of every settled payment by its id: a payment whose id was already paid gets that answer again
//                  (200 + the original PAYMENT-RESPONSE), nothing verified or settled again.
//   recover-noid   no extension: a re-sent payment goes to the facilitator again, whose verify refuses the used
//                  nonce, and the seller answers 402 with that reason.
// Both: the FIRST paid request of a tag is settled, then its socket is destroyed without an answer.
// GET /v1/models is free. GET /__stats returns per tag (the last user message):
//   { unpaid, paid, signatures (distinct PAYMENT-SIGNATURE values), settled: [tx...], replayed, refused: [reason...] }
import http from "node:http";
import { declarePaymentIdentifierExtension } from "@x402/extensions/payment-identifier";
import { FACILITATOR_URL, PAY_TO, NETWORK, USDC } from "./lib/common.mjs";
import { lastUserText, usageFor } from "./lib/seller-common.mjs";

const PORT = Number(process.env.RECOVER_SELLER_PORT || 4051);
const ACCEPT = { scheme: "exact", network: NETWORK, amount: "1000", asset: USDC, payTo: PAY_TO, maxTimeoutSeconds: 300,
  extra: { name: "USDC", version: "2" } };
const stats = {};
const answers = new Map(); // payment id -> { body, paymentResponse }
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64");
const json = (res, status, obj, headers = {}) => {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(obj));
};
const facilitator = async (op, paymentPayload) => {
  const r = await fetch(`${FACILITATOR_URL}/${op}`, { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ x402Version: 2, paymentPayload, paymentRequirements: ACCEPT }) });
  return r.json();
};

http.createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const url = new URL(req.url, "http://x");
  if (req.method === "GET" && url.pathname === "/__stats") return json(res, 200, stats);
  if (req.method === "GET" && url.pathname === "/v1/models")
    return json(res, 200, { object: "list", data: ["recover-id", "recover-noid"].map((id) => ({ id, object: "model", created: 0, owned_by: "recover-seller" })) });
  if (req.method !== "POST" || url.pathname !== "/v1/chat/completions") return json(res, 404, { error: { message: "not found" } });
  let body = {};
  try { body = JSON.parse(Buffer.concat(chunks).toString("utf8")); } catch { /* tag "" */ }
  const tag = lastUserText(body);
  const withId = body.model === "recover-id";
  const s = (stats[tag] ??= { unpaid: 0, paid: 0, signatures: [], settled: [], replayed: 0, refused: [] });
  const sig = req.headers["payment-signature"];
  const required = { x402Version: 2, error: "Payment required",
    resource: { url: `http://127.0.0.1:${PORT}/v1/chat/completions`, description: "recovery probe", mimeType: "application/json" },
    accepts: [ACCEPT], ...(withId ? { extensions: { "payment-identifier": declarePaymentIdentifierExtension(false) } } : {}) };
  if (!sig) {
    s.unpaid++;
    return json(res, 402, {}, { "payment-required": b64(required) });
  }
  s.paid++;
  if (!s.signatures.includes(sig)) s.signatures.push(sig);
  let payload;
  try { payload = JSON.parse(Buffer.from(sig, "base64").toString("utf8")); } catch { return json(res, 400, { error: "bad payment header" }); }
  const id = payload.extensions?.["payment-identifier"]?.info?.id;
  if (withId && id && answers.has(id)) {
    s.replayed++;
    const a = answers.get(id);
    return json(res, 200, a.body, { "payment-response": a.paymentResponse });
  }
  const v = await facilitator("verify", payload);
  if (!v.isValid) {
    s.refused.push(v.invalidReason);
    return json(res, 402, { error: v.invalidReason, details: v.invalidMessage ?? null }, { "payment-required": b64({ ...required, error: v.invalidReason }) });
  }
  const st = await facilitator("settle", payload);
  if (!st.success) {
    s.refused.push(st.errorReason);
    return json(res, 402, {}, { "payment-response": b64(st) });
  }
  s.settled.push(st.transaction);
  const content = `echo: ${tag}`;
  const answer = { id: `chatcmpl-recover-${Date.now()}`, object: "chat.completion", created: Math.floor(Date.now() / 1000), model: body.model,
    choices: [{ index: 0, message: { role: "assistant", content, refusal: null }, logprobs: null, finish_reason: "stop" }], usage: usageFor(content) };
  const paymentResponse = b64(st);
  if (withId && id) answers.set(id, { body: answer, paymentResponse });
  // Settled, and the answer is lost on the way back (first paid request of this tag only).
  if (s.settled.length === 1) return req.socket.destroy();
  json(res, 200, answer, { "payment-response": paymentResponse });
}).listen(PORT, "127.0.0.1", () => console.log(`recover seller on http://127.0.0.1:${PORT} (payTo ${PAY_TO}, facilitator ${FACILITATOR_URL})`));
