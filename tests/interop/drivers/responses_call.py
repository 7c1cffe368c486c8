"""Drive the OpenAI Responses API through x402d with real, unmodified clients. One JSON line per op on stdout.

usage: responses_call.py '<json>'   with keys
  base_url, api_key (default "sk-interop"), model (default "gpt-4o-mini"), message (may contain "{op}"),
  ops: list of
    "create"        openai-python client.responses.create(...) (no stream): output_text, output items, usage
    "stream"        client.responses.create(..., stream=True): every event type in order, the text deltas joined,
                    the response.completed response
    "agent"         OpenAI Agents SDK (openai-agents; default Responses mode) Runner.run_sync on an Agent with one
                    function tool get_weather(city): the SDK runs the tool on the model's call and sends the
                    result back; final_output, the tool calls it ran, the raw responses
    "agent-stream"  the same agent with Runner.run_streamed (Responses event streams)
Each line: {"op", "ok", "sdk", ...} or {"op", "ok": false, "exc", "message", "http_status", "body"}.
"""
import asyncio
import json
import sys
import time

import openai
from openai import AsyncOpenAI, OpenAI


def main() -> None:
    a = json.loads(sys.argv[1])
    model = a.get("model", "gpt-4o-mini")
    key = a.get("api_key", "sk-interop")
    client = OpenAI(base_url=a["base_url"], api_key=key, max_retries=0, timeout=a.get("timeout", 60))
    for op in a["ops"]:
        msg = a["message"].replace("{op}", op)
        rec: dict = {"op": op, "sdk": f"openai-python {openai.__version__}"}
        t0 = time.time()
        try:
            if op == "create":
                raw = client.responses.with_raw_response.create(model=model, input=msg, instructions="Answer briefly.")
                r = raw.parse()
                rec.update(ok=True, http_status=raw.status_code, headers=dict(raw.headers), id=r.id, status=r.status,
                           output_text=r.output_text, output=[o.model_dump() for o in r.output],
                           usage=r.usage.model_dump() if r.usage else None)
            elif op == "stream":
                kinds, deltas, done = [], [], None
                with client.responses.stream(model=model, input=[{"role": "user", "content": [{"type": "input_text", "text": msg}]}]) as s:
                    for ev in s:
                        kinds.append(ev.type)
                        if ev.type == "response.output_text.delta":
                            deltas.append(ev.delta)
                    done = s.get_final_response()
                rec.update(ok=True, events=kinds, text="".join(deltas), id=done.id, status=done.status,
                           output_text=done.output_text, usage=done.usage.model_dump() if done.usage else None)
            elif op in ("agent", "agent-stream"):
                rec.update(asyncio.run(agent(a["base_url"], key, model, msg, op == "agent-stream")))
                rec["ok"] = True
            else:
                raise ValueError(f"unknown op {op}")
        except openai.APIStatusError as e:
            rec.update(ok=False, exc=type(e).__name__, http_status=e.status_code, message=str(e)[:500], body=e.body)
        except Exception as e:  # noqa: BLE001 - report any client failure as data
            rec.update(ok=False, exc=type(e).__name__, message=str(e)[:500])
        rec["secs"] = round(time.time() - t0, 3)
        print(json.dumps(rec, default=str), flush=True)


async def agent(base_url: str, key: str, model: str, msg: str, stream: bool) -> dict:
    from importlib.metadata import version

    from agents import Agent, Runner, function_tool, set_default_openai_api, set_default_openai_client, set_tracing_disabled

    set_tracing_disabled(True)  # no trace export to api.openai.com (offline)
    set_default_openai_client(AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0), use_for_tracing=False)
    set_default_openai_api("responses")
    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        ran.append(city)
        return f"sunny in {city}"

    ag = Agent(name="weather", instructions="Use the tool.", model=model, tools=[get_weather])
    if stream:
        result = Runner.run_streamed(ag, msg)
        kinds = []
        async for ev in result.stream_events():
            if ev.type == "raw_response_event":
                kinds.append(ev.data.type)
    else:
        result = await Runner.run(ag, msg)
        kinds = None
    return {"sdk": f"openai-agents {version('openai-agents')}", "final_output": result.final_output, "tool_ran": ran,
            "responses": [{"id": r.response_id, "output": [o.model_dump() for o in r.output]} for r in result.raw_responses],
            "events": kinds}


if __name__ == "__main__":
    main()
