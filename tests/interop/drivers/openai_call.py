"""Drive the real `openai` Python SDK (PyPI openai==3.54.0) against x402d. One JSON line per call on stdout.

usage: openai_call.py '<json>'   with keys
  base_url, api_key (default "sk-interop"), model (default "gpt-4o-mini"),
  message (may contain "{i}"), n (default 1), op ("chat" | "models"),
  stream (bool), include_usage (bool: stream_options={"include_usage": True}), tools (bool: offer TOOLS),
  max_retries (default 0), timeout (s, default 60)
Each line: {"i", "ok", "http_status", "headers", "content", "tool_calls", "finish_reason", "usage", "requests", ...}
        or {"i", "ok": false, "exc", "http_status", "body", "text", "headers", "requests"}
"requests" lists every HTTP request the SDK sent for that call (its x-stainless-retry-count and Idempotency-Key),
seen through an httpx event hook, so retries are counted on the client side.
"""
import json
import sys
import time

import openai
from openai import OpenAI

# The one tool offered with "tools": true (the seller answers with a deterministic call to the first tool).
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def main() -> None:
    a = json.loads(sys.argv[1])
    sent: list[dict] = []

    def on_request(req) -> None:
        sent.append({"retry_count": req.headers.get("x-stainless-retry-count"), "idempotency_key": req.headers.get("idempotency-key")})

    client = OpenAI(base_url=a["base_url"], api_key=a.get("api_key", "sk-interop"), max_retries=int(a.get("max_retries", 0)),
                    timeout=a.get("timeout", 60), http_client=openai.DefaultHttpxClient(event_hooks={"request": [on_request]}))
    for i in range(int(a.get("n", 1))):
        rec: dict = {"i": i, "sdk": f"openai-python {openai.__version__}"}
        sent.clear()
        t0 = time.time()
        try:
            if a.get("op", "chat") == "models":
                raw = client.models.with_raw_response.list()
                data = raw.parse().data
                rec.update(ok=True, http_status=raw.status_code, headers=dict(raw.headers), models=[m.id for m in data],
                           tiers={m.id: (m.model_extra or {}).get("tier") for m in data})
            else:
                kw = dict(model=a.get("model", "gpt-4o-mini"), messages=[{"role": "user", "content": a["message"].replace("{i}", str(i))}])
                if a.get("tools"):
                    kw["tools"] = TOOLS
                if a.get("stream"):
                    if a.get("include_usage"):
                        kw["stream_options"] = {"include_usage": True}
                    raw = client.chat.completions.with_raw_response.create(stream=True, **kw)
                    rec.update(http_status=raw.status_code, headers=dict(raw.headers))
                    parts, nchunks, finish, usage, usage_chunks, calls, roles = [], 0, None, None, 0, {}, []
                    for ch in raw.parse():
                        nchunks += 1
                        if ch.usage is not None:
                            usage_chunks += 1
                            usage = ch.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"})
                        for c in ch.choices:
                            if c.delta.role:
                                roles.append(c.delta.role)
                            parts.append(c.delta.content or "")
                            for tc in c.delta.tool_calls or []:
                                cur = calls.setdefault(tc.index, {"index": tc.index, "id": None, "type": None, "name": "", "arguments": ""})
                                cur["id"] = tc.id or cur["id"]
                                cur["type"] = tc.type or cur["type"]
                                if tc.function:
                                    cur["name"] += tc.function.name or ""
                                    cur["arguments"] += tc.function.arguments or ""
                            finish = c.finish_reason or finish
                    rec.update(ok=True, content="".join(parts), chunks=nchunks, finish_reason=finish, usage=usage,
                               usage_chunks=usage_chunks, roles=roles, tool_calls=[calls[k] for k in sorted(calls)])
                else:
                    raw = client.chat.completions.with_raw_response.create(**kw)
                    comp = raw.parse()
                    msg = comp.choices[0].message
                    rec.update(ok=True, http_status=raw.status_code, headers=dict(raw.headers), content=msg.content,
                               finish_reason=comp.choices[0].finish_reason,
                               usage=comp.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) if comp.usage else None,
                               tool_calls=[{"index": k, "id": t.id, "type": t.type, "name": t.function.name, "arguments": t.function.arguments}
                                           for k, t in enumerate(msg.tool_calls or [])])
        except openai.APIStatusError as e:
            try:
                text = e.response.text
            except Exception as te:  # noqa: BLE001 - body may be unreadable for a stream
                text = f"<unreadable: {te}>"
            rec.update(ok=False, exc=type(e).__name__, http_status=e.status_code, message=str(e)[:500],
                       body=e.body, text=text[:2000], headers=dict(e.response.headers))
        except Exception as e:  # noqa: BLE001 - report any SDK/transport failure (incl. an error event mid-stream) as data
            rec.update(ok=False, exc=type(e).__name__, message=str(e)[:500], body=getattr(e, "body", None))
        rec["requests"] = list(sent)
        rec["secs"] = round(time.time() - t0, 3)
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
