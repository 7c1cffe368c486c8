"""Benchmark driver: N sequential paid chat calls (distinct per process, so concurrent
drivers never look like retries of each other) with the real openai-python SDK
through x402d. Prints one JSON line: per-call wall times (ms), measured in-process
around client.chat.completions.create (interpreter start-up excluded).

usage: openai_bench.py BASE_URL N
"""
import json
import os
import sys
import time

from openai import OpenAI


def main() -> None:
    base_url, n = sys.argv[1], int(sys.argv[2])
    client = OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, timeout=60)
    ms, errors = [], 0
    for i in range(n):
        t0 = time.perf_counter()
        try:
            r = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"bench {os.getpid()} {i}"}])
            r.parse()
            ok = r.status_code == 200 and r.headers.get("x-x402d-payment-state") == "settled"
        except Exception as e:  # noqa: BLE001 - counted, printed once
            ok = False
            if errors == 0:
                print(f"first error: {e!r}", file=sys.stderr)
        dt = (time.perf_counter() - t0) * 1e3
        if ok:
            ms.append(dt)
        else:
            errors += 1
    print(json.dumps({"ms": ms, "errors": errors}))


if __name__ == "__main__":
    main()
