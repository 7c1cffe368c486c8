// Local x402 facilitator: the packages' own verify/settle code (@x402/core x402Facilitator + @x402/evm exact
// scheme) settling on the local anvil chain. Serves POST /verify, POST /settle, GET /supported.
import express from "express";
import { x402Facilitator } from "@x402/core/facilitator";
import { toFacilitatorEvmSigner } from "@x402/evm";
import { registerExactEvmScheme } from "@x402/evm/exact/facilitator";
import { createWalletClient, http, publicActions } from "viem";
import { privateKeyToAccount, nonceManager } from "viem/accounts";
import { RPC_URL, FACILITATOR_KEY, NETWORK, localChain } from "./lib/common.mjs";

const PORT = Number(process.env.FACILITATOR_PORT || 4022);
// nonceManager: concurrent settles from the one key must not collide on the tx nonce. 50 ms receipt polling.
const account = privateKeyToAccount(FACILITATOR_KEY, { nonceManager });
const viemClient = createWalletClient({ account, chain: localChain, transport: http(RPC_URL), pollingInterval: 50 }).extend(publicActions);
const signer = toFacilitatorEvmSigner({
  address: account.address,
  getCode: (a) => viemClient.getCode(a),
  readContract: (a) => viemClient.readContract({ ...a, args: a.args || [] }),
  verifyTypedData: (a) => viemClient.verifyTypedData(a),
  writeContract: (a) => viemClient.writeContract({ ...a, args: a.args || [] }),
  sendTransaction: (a) => viemClient.sendTransaction(a),
  waitForTransactionReceipt: (a) => viemClient.waitForTransactionReceipt({ pollingInterval: 50, ...a }),
});
const log = (...a) => console.log(new Date().toISOString(), ...a);
const facilitator = new x402Facilitator()
  .onAfterVerify(async (c) => log("verify ->", JSON.stringify(c.result)))
  .onVerifyFailure(async (c) => log("verify FAILED", c.error?.message))
  .onAfterSettle(async (c) => log("settle ->", JSON.stringify(c.result)))
  .onSettleFailure(async (c) => log("settle FAILED", c.error?.message));
// Registers v2 "eip155:84532" and (inside the helper) the v1 names such as "base-sepolia".
registerExactEvmScheme(facilitator, { signer, networks: NETWORK });

const app = express();
app.use(express.json());
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
app.listen(PORT, "127.0.0.1", () => log(`facilitator on http://127.0.0.1:${PORT} signer ${account.address} rpc ${RPC_URL}`));
