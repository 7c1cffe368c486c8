"""One Messages call through x402d with the real Anthropic Python SDK (unmodified); prints one JSON line.

Options (JSON in argv[1]): base_url, api_key, model, message, stream, tools (offer get_weather), max_retries.
The line has: ok, sdk, http_status, id, model, stop_reason, text, tool_uses [{id, name, input}], usage,
events (stream event types in order, pings included), headers, exc, message.
"""
import json
import sys

import anthropic

TOOLS = [{"name": "get_weather", "description": "Current weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def message_fields(m):
    return {
        "id": m.id, "model": m.model, "stop_reason": m.stop_reason,
        "text": "".join(b.text for b in m.content if b.type == "text"),
        "tool_uses": [{"id": b.id, "name": b.name, "input": b.input} for b in m.content if b.type == "tool_use"],
        "usage": {"input_tokens": m.usage.input_tokens, "output_tokens": m.usage.output_tokens},
    }


def main():
    o = json.loads(sys.argv[1])
    client = anthropic.Anthropic(base_url=o["base_url"], api_key=o.get("api_key", "sk-anthropic"),
                                 max_retries=o.get("max_retries", 2), timeout=60)
    kw = {"model": o["model"], "max_tokens": 1024, "messages": [{"role": "user", "content": o["message"]}]}
    if o.get("tools"):
        kw["tools"] = TOOLS
    rec = {"i": 0, "sdk": "anthropic-python " + anthropic.__version__, "ok": False}
    try:
        if o.get("stream"):
            events = []
            with client.messages.stream(**kw) as s:
                rec["http_status"] = s.response.status_code
                rec["headers"] = dict(s.response.headers)
                for ev in s:
                    events.append(ev.type)
                final = s.get_final_message()
            rec["events"] = events
            rec.update(message_fields(final))
        else:
            raw = client.messages.with_raw_response.create(**kw)
            rec["http_status"] = raw.status_code
            rec["headers"] = dict(raw.headers)
            rec.update(message_fields(raw.parse()))
        rec["ok"] = True
    except anthropic.APIStatusError as e:
        rec.update(exc=type(e).__name__, http_status=e.status_code, message=str(e), headers=dict(e.response.headers))
    except Exception as e:  # noqa: BLE001 - the check reports whatever went wrong
        rec.update(exc=type(e).__name__, message=str(e))
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
