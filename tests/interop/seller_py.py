"""x402 v2 seller built with the Python x402 package (PyPI x402 2.25.0, Flask middleware, unmodified), an
implementation independent of Coinbase's npm packages. POST /v1/chat/completions costs $0.001 on eip155:84532
through the local facilitator, and its route config declares two extensions: payment-identifier
(x402.extensions.payment_identifier.declare_payment_identifier_extension) and "x-interop-note".
GET /v1/models is free. Every request with a PAYMENT-SIGNATURE is appended to $SELLER_PY_TAP (JSONL).

usage: SELLER_PY_PORT=... FACILITATOR_URL=... PAY_TO=... SELLER_PY_TAP=... python seller_py.py
"""
import json
import os
import time

from flask import Flask, jsonify, request
from x402.extensions.payment_identifier import declare_payment_identifier_extension
from x402.http import FacilitatorConfig, HTTPFacilitatorClientSync
from x402.http.middleware.flask import payment_middleware
from x402.http.types import PaymentOption, RouteConfig
from x402.mechanisms.evm.exact.server import ExactEvmScheme
from x402.server import x402ResourceServerSync

PORT = int(os.environ.get("SELLER_PY_PORT", "4061"))
TAP = os.environ.get("SELLER_PY_TAP")
EXTENSIONS = {
    "payment-identifier": declare_payment_identifier_extension(False),
    "x-interop-note": {"info": {"note": "echo me unchanged", "n": 1.5, "list": [3, 1, 2]}, "schema": {"type": "object"}},
}

app = Flask(__name__)


@app.post("/v1/chat/completions")
def chat():
    body = request.get_json(silent=True) or {}
    msgs = [m for m in body.get("messages", []) if m.get("role") == "user"]
    text = msgs[-1].get("content", "") if msgs else ""
    content = f"echo: {text}"
    n = len(content)
    return jsonify({"id": f"chatcmpl-py-{int(time.time() * 1000)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "interop-echo"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                                 "logprobs": None, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}})


@app.get("/v1/models")
def models():
    return jsonify({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "x402-python"}]})


server = x402ResourceServerSync(HTTPFacilitatorClientSync(FacilitatorConfig(url=os.environ["FACILITATOR_URL"])))
server.register("eip155:84532", ExactEvmScheme())
routes = {
    "POST /v1/chat/completions": RouteConfig(
        accepts=PaymentOption(scheme="exact", pay_to=os.environ["PAY_TO"], price="$0.001", network="eip155:84532"),
        description="Chat completion (x402 Python seller)", mime_type="application/json", extensions=EXTENSIONS),
}
payment_middleware(app, routes, server)


def tapped(inner):
    """Outside the payment middleware, so the tap sees the PAYMENT-RESPONSE it adds."""
    def wsgi(environ, start_response):
        sig = environ.get("HTTP_PAYMENT_SIGNATURE")

        def record(status, headers, exc_info=None):
            if TAP and sig:
                h = {k.lower(): v for k, v in headers}
                with open(TAP, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO"),
                                        "status": int(status.split()[0]), "paymentSignature": sig,
                                        "paymentResponse": h.get("payment-response")}) + "\n")
            return start_response(status, headers, exc_info)
        return inner(environ, record)
    return wsgi


app.wsgi_app = tapped(app.wsgi_app)

if __name__ == "__main__":
    print(f"x402 python seller on http://127.0.0.1:{PORT}", flush=True)
    app.run(host="127.0.0.1", port=PORT, threaded=True)
