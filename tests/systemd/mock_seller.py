#!/usr/bin/env python3
"""Tiny x402 v2 seller for tests/systemd/real.sh (Python 3 stdlib only).

  mock_seller.py PORT [EXPECT_FROM]

POST /v1/chat/completions (or any POST under /v1/):
  no PAYMENT-SIGNATURE header -> 402, requirements as base64 JSON in PAYMENT-REQUIRED
    (x402Version 2, exact, eip155:84532, Base Sepolia USDC, amount 1000 = $0.001)
  PAYMENT-SIGNATURE present  -> 200 with an OpenAI chat completion and a PAYMENT-RESPONSE
    header, if the payment names the requirement and (when EXPECT_FROM is given) that payer;
    else 402 with the reason in `error`.
GET /v1/models -> a one-model list.  GET /healthz -> 200 "ok".
Nothing is verified on chain and the signature is not checked: this only tests the plumbing.
Every paid request is appended, one JSON line each, to $MOCK_LOG (default /run/mock-seller.log).
"""
import base64
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 4021
EXPECT_FROM = (sys.argv[2] if len(sys.argv) > 2 else "").lower()
LOG = os.environ.get("MOCK_LOG", "/run/mock-seller.log")

REQUIREMENT = {
    "scheme": "exact",
    "network": "eip155:84532",
    "amount": "1000",
    "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
    "payTo": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "maxTimeoutSeconds": 300,
    "extra": {"name": "USDC", "version": "2"},
}


def b64(obj):
    return base64.b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode()


class Seller(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("mock-seller: " + (fmt % args) + "\n")

    def send(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def required(self, error):
        resource = {
            "url": "http://%s%s" % (self.headers.get("host", "127.0.0.1"), self.path),
            "description": "Chat completion",
            "mimeType": "application/json",
        }
        doc = {"x402Version": 2, "error": error, "resource": resource, "accepts": [REQUIREMENT]}
        self.send(402, {}, [("PAYMENT-REQUIRED", b64(doc))])

    def do_GET(self):
        if self.path == "/healthz":
            return self.send(200, "ok")
        if self.path.startswith("/v1/models"):
            return self.send(200, {"object": "list", "data": [
                {"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]})
        self.send(404, {"error": {"message": "not found"}})

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            req = {}
        sig = self.headers.get("PAYMENT-SIGNATURE")
        if not sig:
            return self.required("Payment required")
        try:
            pay = json.loads(base64.b64decode(sig))
            auth = pay["payload"]["authorization"]
            assert pay.get("x402Version") == 2, "x402Version"
            assert pay["payload"]["signature"].startswith("0x"), "signature"
            acc = pay.get("accepted") or {}
            for k in ("scheme", "network", "amount", "asset", "payTo"):
                assert acc.get(k) == REQUIREMENT[k], "accepted." + k
            assert auth["value"] == REQUIREMENT["amount"], "value"
            assert auth["to"].lower() == REQUIREMENT["payTo"].lower(), "to"
            if EXPECT_FROM:
                assert auth["from"].lower() == EXPECT_FROM, "payer %s" % auth["from"]
        except Exception as e:  # noqa: BLE001 - any malformed payment is a refusal
            return self.required("invalid payment: %s" % e)
        with open(LOG, "a") as f:
            f.write(json.dumps({"from": auth["from"], "value": auth["value"], "nonce": auth["nonce"]}) + "\n")
        tx = "0x" + os.urandom(32).hex()
        settle = {"success": True, "transaction": tx, "network": REQUIREMENT["network"], "payer": auth["from"]}
        completion = {
            "id": "chatcmpl-mock", "object": "chat.completion", "created": int(time.time()),
            "model": req.get("model", "mock-model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "paid hello"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }
        self.send(200, completion, [("PAYMENT-RESPONSE", b64(settle))])


if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", PORT), Seller)
    sys.stderr.write("mock-seller: listening on 127.0.0.1:%d\n" % PORT)
    sys.stderr.flush()
    srv.serve_forever()
