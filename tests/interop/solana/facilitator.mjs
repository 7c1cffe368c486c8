// Local x402 facilitator for Solana: the packages' own verify/settle code (@x402/core x402Facilitator + @x402/svm
// exact scheme, `registerExactSvmScheme`) with a fee-payer keypair funded with SOL on the local chain (solana/chain.mjs).
// It co-signs as fee payer and submits through the local JSON-RPC. Serves POST /verify, POST /settle, GET /supported.
import express from "express";
import { x402Facilitator } from "@x402/core/facilitator";
import { toFacilitatorSvmSigner } from "@x402/svm";
import { registerExactSvmScheme } from "@x402/svm/exact/facilitator";
import { SOLANA_RPC_URL, SOL_NETWORK, keys } from "./common.mjs";

const PORT = Number(process.env.SOL_FACILITATOR_PORT || 4032);
const signer = toFacilitatorSvmSigner(keys.feePayer.signer, { defaultRpcUrl: SOLANA_RPC_URL });
const log = (...a) => console.log(new Date().toISOString(), ...a);
const facilitator = new x402Facilitator()
  .onAfterVerify(async (c) => log("verify ->", JSON.stringify(c.result)))
  .onVerifyFailure(async (c) => log("verify FAILED", c.error?.message))
  .onAfterSettle(async (c) => log("settle ->", JSON.stringify(c.result)))
  .onSettleFailure(async (c) => log("settle FAILED", c.error?.message));
registerExactSvmScheme(facilitator, { signer, networks: SOL_NETWORK });

const app = express();
app.use(express.json({ limit: "1mb" }));
const handle = (fn) => async (req, res) => {
  try {
    const { paymentPayload, paymentRequirements } = req.body || {};
    if (!paymentPayload || !paymentRequirements) return res.status(400).json({ error: "Missing paymentPayload or paymentRequirements" });
    res.json(await fn(paymentPayload, paymentRequirements));
  } catch (e) {
    log("error", e);
    res.status(500).json({ error: e instanceof Error ? e.message : String(e) });
  }
};
app.post("/verify", handle((p, r) => facilitator.verify(p, r)));
app.post("/settle", handle((p, r) => facilitator.settle(p, r)));
app.get("/supported", (_req, res) => res.json(facilitator.getSupported()));
app.listen(PORT, "127.0.0.1", () => log(`solana facilitator on http://127.0.0.1:${PORT} fee payer ${keys.feePayer.address} rpc ${SOLANA_RPC_URL}`));
