// Drive the real `openai` npm SDK (6.49.0) against x402d. Same interface and output as openai_call.py
// (stream, include_usage, tools, max_retries, timeout; "requests" = every HTTP request the SDK sent for a call,
// seen through the SDK's `fetch` option).
import OpenAI from "openai";
import { VERSION } from "openai/version";
import { TOOLS } from "../lib/seller-common.mjs";

const a = JSON.parse(process.argv[2]);
let sent = [];
const countingFetch = (url, init) => {
  const h = new Headers(init?.headers);
  sent.push({ retry_count: h.get("x-stainless-retry-count"), idempotency_key: h.get("idempotency-key") });
  return fetch(url, init);
};
const client = new OpenAI({ baseURL: a.base_url, apiKey: a.api_key || "sk-interop", maxRetries: Number(a.max_retries || 0),
  timeout: (a.timeout || 60) * 1000, fetch: countingFetch });
const hdrs = (h) => (h ? Object.fromEntries(h.entries ? h.entries() : Object.entries(h)) : {});
const pickUsage = (u) => (u ? { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.total_tokens } : null);
for (let i = 0; i < Number(a.n || 1); i++) {
  const rec = { i, sdk: `openai-node ${VERSION}` };
  sent = [];
  const t0 = Date.now();
  try {
    if ((a.op || "chat") === "models") {
      const { data, response } = await client.models.list().withResponse();
      rec.ok = true; rec.http_status = response.status; rec.headers = hdrs(response.headers);
      rec.models = data.data.map((m) => m.id); rec.tiers = Object.fromEntries(data.data.map((m) => [m.id, m.tier ?? null]));
    } else {
      const kw = { model: a.model || "gpt-4o-mini", messages: [{ role: "user", content: String(a.message).replaceAll("{i}", String(i)) }] };
      if (a.tools) kw.tools = TOOLS;
      if (a.stream) {
        if (a.include_usage) kw.stream_options = { include_usage: true };
        const { data: stream, response } = await client.chat.completions.create({ ...kw, stream: true }).withResponse();
        rec.http_status = response.status; rec.headers = hdrs(response.headers);
        let content = "", chunks = 0, finish = null, usage = null, usageChunks = 0;
        const calls = new Map(), roles = [];
        for await (const ch of stream) {
          chunks++;
          if (ch.usage) { usageChunks++; usage = pickUsage(ch.usage); }
          for (const c of ch.choices || []) {
            if (c.delta?.role) roles.push(c.delta.role);
            content += c.delta?.content || "";
            for (const tc of c.delta?.tool_calls || []) {
              const cur = calls.get(tc.index) || { index: tc.index, id: null, type: null, name: "", arguments: "" };
              cur.id = tc.id || cur.id; cur.type = tc.type || cur.type;
              cur.name += tc.function?.name || ""; cur.arguments += tc.function?.arguments || "";
              calls.set(tc.index, cur);
            }
            finish = c.finish_reason || finish;
          }
        }
        Object.assign(rec, { ok: true, content, chunks, finish_reason: finish, usage, usage_chunks: usageChunks, roles,
          tool_calls: [...calls.values()].sort((x, y) => x.index - y.index) });
      } else {
        const { data, response } = await client.chat.completions.create(kw).withResponse();
        const msg = data.choices[0].message;
        Object.assign(rec, { ok: true, http_status: response.status, headers: hdrs(response.headers), content: msg.content,
          finish_reason: data.choices[0].finish_reason, usage: pickUsage(data.usage),
          tool_calls: (msg.tool_calls || []).map((t, k) => ({ index: k, id: t.id, type: t.type, name: t.function.name, arguments: t.function.arguments })) });
      }
    }
  } catch (e) {
    // A mid-stream error event has no status of its own: keep the stream's HTTP status.
    Object.assign(rec, { ok: false, exc: e?.constructor?.name, http_status: e?.status ?? rec.http_status ?? null, message: String(e?.message).slice(0, 500),
      body: e?.error ?? null, headers: rec.headers && !e?.headers ? rec.headers : hdrs(e?.headers) });
  }
  rec.requests = sent;
  rec.secs = (Date.now() - t0) / 1000;
  console.log(JSON.stringify(rec));
}
