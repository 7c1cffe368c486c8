// Optional legacy seller: x402-express 1.2.0 (x402 v1: requirements in the 402 body, X-PAYMENT / X-PAYMENT-RESPONSE),
// network "base-sepolia", same facilitator. POST /v1/chat/completions $0.001, GET /v1/models free.
import express from "express";
import { paymentMiddleware } from "x402-express";
import { chatHandler, modelsHandler, tapMiddleware } from "../lib/seller-common.mjs";

const PORT = Number(process.env.SELLER_V1_PORT || 4031);
const FACILITATOR_URL = process.env.FACILITATOR_URL || "http://127.0.0.1:4022";
const PAY_TO = process.env.PAY_TO || "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
const app = express();
app.use(tapMiddleware(process.env.SELLER_TAP));
app.use(express.json());
app.use(paymentMiddleware(PAY_TO, {
  "POST /v1/chat/completions": { price: "$0.001", network: "base-sepolia", config: { description: "Chat completion (v1)", mimeType: "application/json" } },
}, { url: FACILITATOR_URL }));
app.post("/v1/chat/completions", chatHandler("v1"));
app.get("/v1/models", modelsHandler);
app.listen(PORT, "127.0.0.1", () => console.log(`x402 v1 seller on http://127.0.0.1:${PORT} payTo ${PAY_TO} facilitator ${FACILITATOR_URL}`));
