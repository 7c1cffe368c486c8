// Stack self-test, no x402d involved: proves anvil + TestUSDC + facilitator + seller are a working x402 peer.
//   stack.mjs seller-402     unpaid calls get Coinbase's 402 with the advertised prices; /v1/models is free
//   stack.mjs direct-pay     @x402/fetch (Coinbase's client) pays the seller directly, settled on chain
//   stack.mjs direct-replay  replaying that client's PAYMENT-SIGNATURE is rejected (nonce already used)
import { wrapFetchWithPayment, decodePaymentResponseHeader } from "@x402/fetch";
import { x402Client } from "@x402/core/client";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";
import { SELLER_URL, STACK_PAYER_KEY, STACK_PAYER, PAY_TO, PRICES, USDC, NETWORK, pub, snapshot, authLogsSince, b64json } from "../lib/common.mjs";
import { main, assert, fail, info, eqAddr } from "../lib/check.mjs";

const chatInit = (payment) => ({ method: "POST", headers: { "content-type": "application/json", ...(payment || {}) },
  body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "stack self-test" }] }) });

async function seller402() {
  for (const [tier, p] of Object.entries(PRICES)) {
    const res = await fetch(SELLER_URL + p.path, chatInit());
    const pr = res.headers.get("payment-required");
    assert(res.status === 402 && pr, `${tier}: unpaid POST ${p.path} gave ${res.status}, payment-required ${pr ? "present" : "missing"}`);
    const req = b64json(pr);
    info(`${tier} PAYMENT-REQUIRED`, req);
    const acc = req.accepts?.[0];
    assert(req.x402Version === 2 && acc?.scheme === "exact" && acc.network === NETWORK && acc.amount === String(p.atomic)
      && eqAddr(acc.asset, USDC) && eqAddr(acc.payTo, PAY_TO), `${tier}: unexpected requirements ${JSON.stringify(acc)}`);
  }
  const m = await fetch(SELLER_URL + "/v1/models");
  const body = await m.json();
  assert(m.status === 200 && body.object === "list" && body.data?.length > 0, `GET /v1/models: ${m.status} ${JSON.stringify(body)}`);
}

let captured = null;
async function directPay() {
  const client = new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(STACK_PAYER_KEY)));
  const capFetch = async (input, init) => {
    const req = new Request(input, init);
    if (req.headers.has("payment-signature")) captured = { url: req.url, sig: req.headers.get("payment-signature"), body: init?.body };
    return fetch(req);
  };
  const s0 = await snapshot(STACK_PAYER, PAY_TO);
  const res = await wrapFetchWithPayment(capFetch, client)(SELLER_URL + PRICES.base.path, chatInit());
  const body = await res.json().catch(() => null);
  const prh = res.headers.get("payment-response");
  const settle = prh ? decodePaymentResponseHeader(prh) : null;
  info("response", { status: res.status, body, settle });
  assert(res.status === 200, `paid call returned ${res.status}`);
  assert(body?.choices?.[0]?.message?.content === "echo: stack self-test", `content ${JSON.stringify(body?.choices?.[0]?.message)}`);
  assert(settle?.success && settle.transaction, `PAYMENT-RESPONSE ${JSON.stringify(settle)}`);
  const receipt = await pub.getTransactionReceipt({ hash: settle.transaction });
  assert(receipt.status === "success", `settle tx ${settle.transaction} status ${receipt.status}`);
  const s1 = await snapshot(STACK_PAYER, PAY_TO);
  assert(s0.payerBal - s1.payerBal === PRICES.base.atomic && s1.payToBal - s0.payToBal === PRICES.base.atomic,
    `balance deltas payer -${s0.payerBal - s1.payerBal} payTo +${s1.payToBal - s0.payToBal}, expected ${PRICES.base.atomic}`);
  const logs = await authLogsSince(s0);
  assert(logs.length === 1 && logs[0].transactionHash === settle.transaction, `AuthorizationUsed logs ${logs.length}, tx ${logs[0]?.transactionHash}`);
  return captured;
}

async function directReplay() {
  const c = captured || (await directPay());
  assert(c, "no PAYMENT-SIGNATURE captured");
  const s0 = await snapshot(STACK_PAYER, PAY_TO);
  const res = await fetch(c.url, { method: "POST", headers: { "content-type": "application/json", "payment-signature": c.sig }, body: c.body });
  const pr = res.headers.get("payment-required");
  const err = pr ? b64json(pr).error : null;
  info("replay", { status: res.status, error: err });
  assert(res.status === 402, `replay got ${res.status}, expected 402`);
  assert(/nonce_already_used/.test(String(err)), `replay rejected for "${err}", expected ...nonce_already_used`);
  const s1 = await snapshot(STACK_PAYER, PAY_TO);
  assert(s1.payerBal === s0.payerBal, "replay moved money");
}

const parts = { "seller-402": seller402, "direct-pay": directPay, "direct-replay": directReplay };
main(async () => {
  const part = parts[process.argv[2]];
  if (!part) fail(`unknown part ${process.argv[2]}; one of ${Object.keys(parts).join(", ")}`);
  await part();
});
