"""Drive LangChain's ChatOpenAI (PyPI langchain-openai, unmodified, default settings otherwise) against x402d.

usage: langchain_call.py '<json>'   with keys base_url, api_key (default "sk-interop"), model (default "gpt-4o-mini"),
  message (may contain "{op}"), ops: list of "invoke" (ChatOpenAI(streaming=True).invoke), "stream" (.stream),
  "tools" (.bind_tools([get_weather]).invoke), run in order in one process (LangChain takes seconds to import).
Prints one JSON line per op: {"i", "op", "message", "ok", "sdk", "content", "chunks", "tool_calls": [{"id", "name", "args"}]}
                          or {"i", "op", "message", "ok": false, "exc", "message", "http_status", "body"}.
"""
import json
import sys
import time


def get_weather(city: str) -> str:
    """Current weather for a city"""
    return f"sunny in {city}"


def main() -> None:
    a = json.loads(sys.argv[1])
    try:
        import langchain_core
        from importlib.metadata import version
        from langchain_openai import ChatOpenAI

        sdk = f"langchain-openai {version('langchain-openai')} (langchain-core {langchain_core.__version__}, openai {version('openai')})"
        llm = ChatOpenAI(base_url=a["base_url"], api_key=a.get("api_key", "sk-interop"), model=a.get("model", "gpt-4o-mini"), streaming=True)
    except Exception as e:  # noqa: BLE001
        for i, op in enumerate(a["ops"]):
            print(json.dumps({"i": i, "op": op, "ok": False, "exc": type(e).__name__, "message": f"import/setup: {e}"[:500]}), flush=True)
        return
    for i, op in enumerate(a["ops"]):
        message = a["message"].replace("{op}", op)
        rec: dict = {"i": i, "op": op, "sdk": sdk, "prompt": message}
        t0 = time.time()
        try:
            if op == "invoke":
                msg = llm.invoke(message)
                rec.update(ok=True, content=msg.content)
            elif op == "stream":
                parts, n = [], 0
                for ch in llm.stream(message):
                    n += 1
                    parts.append(ch.content if isinstance(ch.content, str) else json.dumps(ch.content))
                rec.update(ok=True, content="".join(parts), chunks=n)
            elif op == "tools":
                msg = llm.bind_tools([get_weather]).invoke(message)
                rec.update(ok=True, content=msg.content,
                           tool_calls=[{"id": t["id"], "name": t["name"], "args": t["args"]} for t in msg.tool_calls],
                           invalid_tool_calls=[dict(t) for t in getattr(msg, "invalid_tool_calls", [])])
            else:
                raise ValueError(f"unknown op {op}")
        except Exception as e:  # noqa: BLE001 - report any failure as data
            rec.update(ok=False, exc=type(e).__name__, message=str(e)[:500], http_status=getattr(e, "status_code", None),
                       body=getattr(e, "body", None))
        rec["secs"] = round(time.time() - t0, 3)
        print(json.dumps(rec, default=str), flush=True)


if __name__ == "__main__":
    main()
