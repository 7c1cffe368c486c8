// Dependency-free pieces shared by the v2 and v1 sellers: deterministic OpenAI-shaped handlers and a
// request/response tap (JSONL) so checks can see the exact PAYMENT-SIGNATURE / PAYMENT-RESPONSE exchanged.
import fs from "node:fs";

export const MODELS = ["gpt-4o-mini", "gpt-4o", "interop-echo"];

/** Text of the last user message (string content or array of text parts). */
export function lastUserText(body) {
  const msgs = Array.isArray(body?.messages) ? body.messages : [];
  const m = [...msgs].reverse().find((x) => x?.role === "user");
  if (!m) return "";
  if (typeof m.content === "string") return m.content;
  if (Array.isArray(m.content)) return m.content.map((p) => (typeof p === "string" ? p : p?.text || "")).join("");
  return "";
}

/** Deterministic chat completion: content is "echo: <last user message>"; `stream: true` gives SSE chunks. */
export function chatHandler(tag) {
  return (req, res) => {
    const model = req.body?.model || "interop-echo";
    const content = `echo: ${lastUserText(req.body)}`;
    const id = `chatcmpl-interop-${tag}-${Date.now()}`;
    const created = Math.floor(Date.now() / 1000);
    const usage = { prompt_tokens: 5, completion_tokens: content.length, total_tokens: 5 + content.length };
    if (req.body?.stream) {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      const chunk = (delta, finish_reason = null, extra = {}) =>
        res.write(`data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model, choices: [{ index: 0, delta, finish_reason }], ...extra })}\n\n`);
      // Split into several pieces (word boundaries, keeping spaces) so reassembly is actually exercised.
      const pieces = content.match(/\S+\s*|\s+/g) || [""];
      pieces.forEach((p, i) => chunk(i === 0 ? { role: "assistant", content: p } : { content: p }));
      chunk({}, "stop");
      if (req.body?.stream_options?.include_usage)
        res.write(`data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model, choices: [], usage })}\n\n`);
      res.write("data: [DONE]\n\n");
      return res.end();
    }
    res.json({ id, object: "chat.completion", created, model,
      choices: [{ index: 0, message: { role: "assistant", content }, logprobs: null, finish_reason: "stop" }], usage });
  };
}

export function modelsHandler(_req, res) {
  res.json({ object: "list", data: MODELS.map((id) => ({ id, object: "model", created: 1700000000, owned_by: "interop" })) });
}

/** Appends one JSON line per finished request to `file` (request payment headers, response status/headers). */
export function tapMiddleware(file) {
  return (req, res, next) => {
    const t0 = Date.now();
    res.on("finish", () => {
      const h = (k) => res.getHeader(k) ?? null;
      const rec = {
        t: new Date(t0).toISOString(), ms: Date.now() - t0, method: req.method, path: req.originalUrl,
        body: req.body && typeof req.body === "object" && Object.keys(req.body).length ? req.body : null,
        auth: req.headers["authorization"] || null,
        paymentSignature: req.headers["payment-signature"] || null, xPayment: req.headers["x-payment"] || null,
        status: res.statusCode, paymentRequired: h("payment-required"), paymentResponse: h("payment-response"),
        xPaymentResponse: h("x-payment-response"), contentType: h("content-type"),
      };
      if (file) fs.appendFileSync(file, JSON.stringify(rec) + "\n");
    });
    next();
  };
}
