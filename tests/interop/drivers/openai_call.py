"""Drive the real `openai` Python SDK (PyPI openai==3.54.0) against x402d. One JSON line per call on stdout.

usage: openai_call.py '<json>'   with keys
  base_url, api_key (default "sk-interop"), model (default "gpt-4o-mini"),
  message (may contain "{i}"), n (default 1), stream (bool), op ("chat" | "models")
Each line: {"i", "ok", "http_status", "headers", "content"} or {"i", "ok": false, "exc", "http_status", "body", "text", "headers"}
"""
import json
import sys
import time

import openai
from openai import OpenAI


def main() -> None:
    a = json.loads(sys.argv[1])
    client = OpenAI(base_url=a["base_url"], api_key=a.get("api_key", "sk-interop"), max_retries=0, timeout=a.get("timeout", 60))
    for i in range(int(a.get("n", 1))):
        rec: dict = {"i": i, "sdk": f"openai-python {openai.__version__}"}
        t0 = time.time()
        try:
            if a.get("op", "chat") == "models":
                raw = client.models.with_raw_response.list()
                rec.update(ok=True, http_status=raw.status_code, headers=dict(raw.headers), models=[m.id for m in raw.parse().data])
            else:
                kw = dict(model=a.get("model", "gpt-4o-mini"), messages=[{"role": "user", "content": a["message"].replace("{i}", str(i))}])
                if a.get("stream"):
                    raw = client.chat.completions.with_raw_response.create(stream=True, **kw)
                    rec.update(http_status=raw.status_code, headers=dict(raw.headers))
                    parts, nchunks, finish = [], 0, None
                    for ch in raw.parse():
                        nchunks += 1
                        for c in ch.choices:
                            parts.append(c.delta.content or "")
                            finish = c.finish_reason or finish
                    rec.update(ok=True, content="".join(parts), chunks=nchunks, finish_reason=finish)
                else:
                    raw = client.chat.completions.with_raw_response.create(**kw)
                    comp = raw.parse()
                    rec.update(ok=True, http_status=raw.status_code, headers=dict(raw.headers), content=comp.choices[0].message.content)
        except openai.APIStatusError as e:
            try:
                text = e.response.text
            except Exception as te:  # noqa: BLE001 - body may be unreadable for a stream
                text = f"<unreadable: {te}>"
            rec.update(ok=False, exc=type(e).__name__, http_status=e.status_code, message=str(e)[:500],
                       body=e.body, text=text[:2000], headers=dict(e.response.headers))
        except Exception as e:  # noqa: BLE001 - report any SDK/transport failure as data
            rec.update(ok=False, exc=type(e).__name__, message=str(e)[:500])
        rec["secs"] = round(time.time() - t0, 3)
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
