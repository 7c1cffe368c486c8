// Dependency-free pieces shared by the v2 and v1 sellers: deterministic OpenAI-shaped handlers and a
// request/response tap (JSONL) so checks can see the exact PAYMENT-SIGNATURE / PAYMENT-RESPONSE exchanged.
import fs from "node:fs";

import crypto from "node:crypto";
import { claudeScripted } from "./claude-script.mjs";

// The seller's model list, with the tier that serves each model (like the real upstream's GET /v1/models).
export const MODEL_TIERS = { "gpt-4o-mini": "budget", "gpt-4o": "pro", "claude-opus-4": "premium", "interop-echo": "budget",
  "anthropic/claude-haiku-4.5": "budget" };
export const MODELS = Object.keys(MODEL_TIERS);

/** Text of the last user message (string content or array of text parts). */
export function lastUserText(body) {
  const msgs = Array.isArray(body?.messages) ? body.messages : [];
  const m = [...msgs].reverse().find((x) => x?.role === "user");
  if (!m) return "";
  if (typeof m.content === "string") return m.content;
  if (Array.isArray(m.content)) return m.content.map((p) => (typeof p === "string" ? p : p?.text || "")).join("");
  return "";
}

/** Text of the last message when it is a tool result (role "tool"): the model's second turn of a tool loop. */
export function toolResultText(body) {
  const msgs = Array.isArray(body?.messages) ? body.messages : [];
  const m = msgs.at(-1);
  if (m?.role !== "tool") return null;
  if (typeof m.content === "string") return m.content;
  return Array.isArray(m.content) ? m.content.map((p) => p?.text || "").join("") : "";
}

/** A last user message starting with this gets text even when the request offers tools (agents such as Codex CLI
 *  always offer tools). */
export const NO_TOOLS = "[no tools]";

/** The one tool the drivers offer with "tools": true (drivers/openai_call.py and langchain_call.py carry the same). */
export const TOOLS = [{ type: "function", function: {
  name: "get_weather", description: "Current weather for a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];

/** Deterministic usage for a completion with this content (checks recompute it). */
export const usageFor = (content) => ({ prompt_tokens: 5, completion_tokens: [...String(content ?? "")].length, total_tokens: 5 + [...String(content ?? "")].length });

/** Deterministic tool call for a request that has `tools`: the first tool, its first parameter (or "input") set to
 *  the last user message, id "call_" + sha256(name + message)[:24]. Checks recompute it from the request. */
export function toolCallFor(body) {
  if (toolResultText(body) !== null || lastUserText(body).startsWith(NO_TOOLS)) return null;
  const tools = Array.isArray(body?.tools) ? body.tools : [];
  const fn = tools.map((t) => t?.function).find((f) => f?.name);
  if (!fn) return null;
  const msg = lastUserText(body);
  const params = fn.parameters?.properties ? Object.keys(fn.parameters.properties) : [];
  const arg = (fn.parameters?.required || [])[0] || params[0] || "input";
  const id = "call_" + crypto.createHash("sha256").update(`${fn.name}\n${msg}`).digest("hex").slice(0, 24);
  return { id, type: "function", function: { name: fn.name, arguments: JSON.stringify({ [arg]: msg }) } };
}

/** Deterministic chat completion, always plain JSON like the real upstream (which has no streaming): `stream` and
 *  `stream_options` are ignored. Content is "echo: <last user message>"; with `tools` the message is a tool call
 *  (content null, finish_reason "tool_calls"), unless the last user message starts with NO_TOOLS; when the last
 *  message is a tool result the content is "tool said: <its text>" (the end of a tool loop). */
export function chatHandler(tag) {
  return (req, res) => {
    const model = req.body?.model || "interop-echo";
    const scripted = claudeScripted(req.body);
    if (scripted) {
      const { message, finish } = scripted;
      return res.json({ id: `chatcmpl-interop-${tag}-${Date.now()}`, object: "chat.completion", created: Math.floor(Date.now() / 1000), model,
        system_fingerprint: "fp_interop", choices: [{ index: 0, message, logprobs: null, finish_reason: finish }],
        usage: usageFor(message.content ?? message.tool_calls[0].function.arguments) });
    }
    const call = toolCallFor(req.body);
    const result = toolResultText(req.body);
    const content = call ? null : result !== null ? `tool said: ${result}` : `echo: ${lastUserText(req.body)}`;
    const message = call ? { role: "assistant", content: null, tool_calls: [call], refusal: null } : { role: "assistant", content, refusal: null };
    res.json({ id: `chatcmpl-interop-${tag}-${Date.now()}`, object: "chat.completion", created: Math.floor(Date.now() / 1000), model,
      system_fingerprint: "fp_interop", choices: [{ index: 0, message, logprobs: null, finish_reason: call ? "tool_calls" : "stop" }],
      usage: usageFor(call ? call.function.arguments : content) });
  };
}

export function modelsHandler(_req, res) {
  res.json({ object: "list", data: MODELS.map((id) => ({ id, object: "model", created: 1700000000, owned_by: "interop", tier: MODEL_TIERS[id] })) });
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
        auth: req.headers["authorization"] || null, retryCount: req.headers["x-stainless-retry-count"] ?? null,
        paymentSignature: req.headers["payment-signature"] || null, xPayment: req.headers["x-payment"] || null,
        status: res.statusCode, paymentRequired: h("payment-required"), paymentResponse: h("payment-response"),
        xPaymentResponse: h("x-payment-response"), contentType: h("content-type"),
      };
      if (file) fs.appendFileSync(file, JSON.stringify(rec) + "\n");
    });
    next();
  };
}
