// Drive the real `openai` npm SDK (6.49.0) against x402d. Same interface and output as openai_call.py.
import OpenAI from "openai";
import { VERSION } from "openai/version";

const a = JSON.parse(process.argv[2]);
const client = new OpenAI({ baseURL: a.base_url, apiKey: a.api_key || "sk-interop", maxRetries: 0, timeout: (a.timeout || 60) * 1000 });
const hdrs = (h) => (h ? Object.fromEntries(h.entries ? h.entries() : Object.entries(h)) : {});
for (let i = 0; i < Number(a.n || 1); i++) {
  const rec = { i, sdk: `openai-node ${VERSION}` };
  const t0 = Date.now();
  try {
    if ((a.op || "chat") === "models") {
      const { data, response } = await client.models.list().withResponse();
      rec.ok = true; rec.http_status = response.status; rec.headers = hdrs(response.headers); rec.models = data.data.map((m) => m.id);
    } else {
      const kw = { model: a.model || "gpt-4o-mini", messages: [{ role: "user", content: String(a.message).replaceAll("{i}", String(i)) }] };
      if (a.stream) {
        const { data: stream, response } = await client.chat.completions.create({ ...kw, stream: true }).withResponse();
        rec.http_status = response.status; rec.headers = hdrs(response.headers);
        let content = "", chunks = 0, finish = null;
        for await (const ch of stream) {
          chunks++;
          for (const c of ch.choices || []) { content += c.delta?.content || ""; finish = c.finish_reason || finish; }
        }
        Object.assign(rec, { ok: true, content, chunks, finish_reason: finish });
      } else {
        const { data, response } = await client.chat.completions.create(kw).withResponse();
        Object.assign(rec, { ok: true, http_status: response.status, headers: hdrs(response.headers), content: data.choices[0].message.content });
      }
    }
  } catch (e) {
    Object.assign(rec, { ok: false, exc: e?.constructor?.name, http_status: e?.status ?? null, message: String(e?.message).slice(0, 500),
      body: e?.error ?? null, headers: hdrs(e?.headers) });
  }
  rec.secs = (Date.now() - t0) / 1000;
  console.log(JSON.stringify(rec));
}
