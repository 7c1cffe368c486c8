// Paid OpenAI-shaped upstream using the @x402/express v2 middleware (Coinbase's package, unmodified).
//   POST /v1/chat/completions          $0.001 on eip155:84532  (budget tier)
//   POST /v1/pro/chat/completions      $0.002                  (pro tier)
//   POST /v1/premium/chat/completions  $0.003                  (premium tier; declares two v2 extensions in its route
//                                      config: payment-identifier (Coinbase's declarePaymentIdentifierExtension) and
//                                      "x-interop-note", which @x402/core checks the client echoes unchanged)
//   GET  /v1/models                    free; each model with its "tier" (gpt-4o-mini budget, gpt-4o pro, claude-opus-4 premium)
// Like the real upstream it never streams: `stream: true` gets the same plain JSON completion. With `tools` the
// completion is a deterministic tool call (lib/seller-common.mjs).
// Every finished request is appended to $SELLER_TAP (JSONL) for the checks.
import express from "express";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { ExactEvmScheme } from "@x402/evm/exact/server";
import { HTTPFacilitatorClient } from "@x402/core/server";
import { FACILITATOR_URL, PAY_TO, NETWORK, PRICES } from "./lib/common.mjs";
import { declarePaymentIdentifierExtension } from "@x402/extensions/payment-identifier";
import { chatHandler, modelsHandler, tapMiddleware } from "./lib/seller-common.mjs";

const PORT = Number(process.env.SELLER_PORT || 4021);
const resourceServer = new x402ResourceServer(new HTTPFacilitatorClient({ url: FACILITATOR_URL })).register(NETWORK, new ExactEvmScheme());
const route = (p, description, extensions) => ({ accepts: { scheme: "exact", price: `$${p.usd}`, network: NETWORK, payTo: PAY_TO }, description, mimeType: "application/json",
  ...(extensions ? { extensions } : {}) });
// checks/extensions.mjs compares what x402d echoes with what the 402 advertised.
export const PREMIUM_EXTENSIONS = {
  "payment-identifier": declarePaymentIdentifierExtension(false),
  "x-interop-note": { info: { note: "echo me unchanged", n: 1.5, list: [3, 1, 2], nested: { "é": "ü" } }, schema: { type: "object" } },
};
const app = express();
app.use(tapMiddleware(process.env.SELLER_TAP));
app.use(express.json());
app.use(paymentMiddleware({
  [`POST ${PRICES.base.path}`]: route(PRICES.base, "Chat completion"),
  [`POST ${PRICES.pro.path}`]: route(PRICES.pro, "Pro chat completion"),
  [`POST ${PRICES.premium.path}`]: route(PRICES.premium, "Premium chat completion", PREMIUM_EXTENSIONS),
}, resourceServer));
app.post(PRICES.base.path, chatHandler("v2"));
app.post(PRICES.pro.path, chatHandler("v2-pro"));
app.post(PRICES.premium.path, chatHandler("v2-premium"));
app.get("/v1/models", modelsHandler);
app.listen(PORT, "127.0.0.1", () => console.log(`x402 v2 seller on http://127.0.0.1:${PORT} payTo ${PAY_TO} facilitator ${FACILITATOR_URL}`));
