// A small misbehaving x402 v2 seller for the retry checks (node:http only, no facilitator, nothing settles on chain).
// It verifies nothing: it answers an unpaid POST /v1/chat/completions with a 402 whose requirements x402d accepts,
// and on a paid one (PAYMENT-SIGNATURE present) it COUNTS the payment header and then misbehaves according to the
// request's model:
//   mode-500       answers 500 (an OpenAI-shaped server error) right away
//   mode-drop      destroys the socket without answering
//   mode-slow      waits SLOW_MS (2500), then answers 200 with a completion "echo: <last user message>"
//   mode-slow500   waits SLOW_MS, then answers 500
//   mode-flaky     the FIRST unpaid request of a tag gets 503 (before any 402: nothing was signed), later ones the
//                  usual 402, and the paid one 200 (a transient upstream error that a retry should get past)
// GET /v1/models is free. GET /__stats returns, per tag (the last user message), every request seen:
//   { unpaid, paid, signatures (distinct PAYMENT-SIGNATURE values), nonces, retryCounts: {unpaid: [...], paid: [...]} }
// (x-stainless-retry-count as forwarded by x402d, null when absent).
import http from "node:http";
import { lastUserText, usageFor } from "./lib/seller-common.mjs";

const PORT = Number(process.env.RETRY_SELLER_PORT || 4041);
const SLOW_MS = Number(process.env.RETRY_SELLER_SLOW_MS || 2500);
const PAY_TO = process.env.RETRY_PAY_TO || "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"; // anvil #4 (never settled to)
const ACCEPT = { scheme: "exact", network: "eip155:84532", amount: "1000", asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
  payTo: PAY_TO, maxTimeoutSeconds: 300, extra: { name: "USDC", version: "2" } };
const stats = {};
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const json = (res, status, obj, headers = {}) => {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(obj));
};

http.createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const url = new URL(req.url, "http://x");
  if (req.method === "GET" && url.pathname === "/__stats") return json(res, 200, stats);
  if (req.method === "GET" && url.pathname === "/v1/models")
    return json(res, 200, { object: "list", data: ["mode-500", "mode-drop", "mode-slow", "mode-slow500", "mode-flaky"].map((id) => ({ id, object: "model", created: 0, owned_by: "retry-seller" })) });
  if (req.method !== "POST" || url.pathname !== "/v1/chat/completions") return json(res, 404, { error: { message: "not found", type: "invalid_request_error" } });
  let body = {};
  try { body = JSON.parse(Buffer.concat(chunks).toString("utf8")); } catch { /* tag "" */ }
  const tag = lastUserText(body);
  const s = (stats[tag] ??= { unpaid: 0, paid: 0, signatures: [], nonces: [], retryCounts: { unpaid: [], paid: [] } });
  const retryCount = req.headers["x-stainless-retry-count"] ?? null;
  const sig = req.headers["payment-signature"];
  if (!sig) {
    s.unpaid++; s.retryCounts.unpaid.push(retryCount);
    if (body.model === "mode-flaky" && s.unpaid === 1)
      return json(res, 503, { error: { message: "overloaded, try again", type: "server_error", param: null, code: null } });
    return json(res, 402, {}, { "payment-required": b64({ x402Version: 2, error: "Payment required",
      resource: { url: `http://127.0.0.1:${PORT}/v1/chat/completions`, description: "retry probe", mimeType: "application/json" }, accepts: [ACCEPT] }) });
  }
  s.paid++; s.retryCounts.paid.push(retryCount);
  if (!s.signatures.includes(sig)) s.signatures.push(sig);
  try { s.nonces.push(JSON.parse(Buffer.from(sig, "base64").toString("utf8")).payload.authorization.nonce); } catch { s.nonces.push(null); }
  const mode = String(body.model || "");
  if (mode === "mode-drop") return req.socket.destroy();
  if (mode === "mode-slow" || mode === "mode-slow500") await sleep(SLOW_MS);
  if (mode === "mode-500" || mode === "mode-slow500")
    return json(res, 500, { error: { message: "the server had an error after taking the payment", type: "server_error", param: null, code: null } });
  const content = `echo: ${tag}`;
  json(res, 200, { id: `chatcmpl-retry-${Date.now()}`, object: "chat.completion", created: Math.floor(Date.now() / 1000), model: mode,
    choices: [{ index: 0, message: { role: "assistant", content, refusal: null }, logprobs: null, finish_reason: "stop" }], usage: usageFor(content) });
}).listen(PORT, "127.0.0.1", () => console.log(`retry seller on http://127.0.0.1:${PORT} (payTo ${PAY_TO}, slow ${SLOW_MS} ms)`));
