// Paid OpenAI-shaped upstream on Solana, with @x402/express v2 (Coinbase's package, unmodified) and @x402/svm's
// server scheme; the EVM side of the dual routes settles through the EVM facilitator on anvil.
//   POST /v1/chat/completions           $0.001 on solana devnet (USDC 4zMMC9…), payTo = keys.payTo
//   POST /v1/pro/chat/completions       $0.002, accepts [base-sepolia (eip155:84532), solana devnet]
//   POST /v1/premium/chat/completions   $0.003, accepts [solana devnet, base-sepolia]
//   GET  /v1/models                     free
// Every finished request is appended to $SELLER_TAP (JSONL) for the checks.
import express from "express";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { ExactEvmScheme } from "@x402/evm/exact/server";
import { ExactSvmScheme } from "@x402/svm/exact/server";
import { HTTPFacilitatorClient } from "@x402/core/server";
import { FACILITATOR_URL, PAY_TO as EVM_PAY_TO, NETWORK as EVM_NETWORK } from "../lib/common.mjs";
import { chatHandler, modelsHandler, tapMiddleware } from "../lib/seller-common.mjs";
import { SOL_FACILITATOR_URL, SOL_NETWORK, SOL_PRICES, keys } from "./common.mjs";

const PORT = Number(process.env.SOL_SELLER_PORT || 4031);
// Two facilitators: @x402/core asks each for /supported and routes every (scheme, network) to the one that has it.
const resourceServer = new x402ResourceServer([new HTTPFacilitatorClient({ url: SOL_FACILITATOR_URL }), new HTTPFacilitatorClient({ url: FACILITATOR_URL })])
  .register(SOL_NETWORK, new ExactSvmScheme())
  .register(EVM_NETWORK, new ExactEvmScheme());
const sol = (p) => ({ scheme: "exact", price: `$${p.usd}`, network: SOL_NETWORK, payTo: keys.payTo.address });
const evm = (p) => ({ scheme: "exact", price: `$${p.usd}`, network: EVM_NETWORK, payTo: EVM_PAY_TO });
const route = (accepts, description) => ({ accepts, description, mimeType: "application/json" });
const app = express();
app.use(tapMiddleware(process.env.SELLER_TAP));
app.use(express.json());
app.use(paymentMiddleware({
  [`POST ${SOL_PRICES.base.path}`]: route(sol(SOL_PRICES.base), "Chat completion (Solana)"),
  [`POST ${SOL_PRICES.dual.path}`]: route([evm(SOL_PRICES.dual), sol(SOL_PRICES.dual)], "Chat completion (Base Sepolia or Solana)"),
  [`POST ${SOL_PRICES.dualSol.path}`]: route([sol(SOL_PRICES.dualSol), evm(SOL_PRICES.dualSol)], "Chat completion (Solana or Base Sepolia)"),
}, resourceServer));
app.post(SOL_PRICES.base.path, chatHandler("sol"));
app.post(SOL_PRICES.dual.path, chatHandler("dual"));
app.post(SOL_PRICES.dualSol.path, chatHandler("dual-sol"));
app.get("/v1/models", modelsHandler);
app.listen(PORT, "127.0.0.1", () => console.log(`x402 v2 solana seller on http://127.0.0.1:${PORT} payTo ${keys.payTo.address} (evm ${EVM_PAY_TO}) facilitators ${SOL_FACILITATOR_URL} ${FACILITATOR_URL}`));
