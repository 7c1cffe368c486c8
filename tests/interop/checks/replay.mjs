// replay.mjs seller   Replaying a PAYMENT-SIGNATURE that x402d sent (captured by the seller tap) directly to the
//                     seller is rejected with 402 ...nonce_already_used, and no money moves.
// replay.mjs ledger   Every nonce in `x402d payments --json` is unique, and every settled one is used on chain.
import { X402D_PAYER, snapshot, authorizationState, b64json } from "../lib/common.mjs";
import { main, assert, fail, info, tapPaidSince, payments, eqAddr, Problems, instance } from "../lib/check.mjs";

async function seller() {
  const inst = instance("main");
  const mine = tapPaidSince(0, inst.tap).filter((r) => r.status === 200 && r.paymentSignature && eqAddr(r.signature?.payload?.authorization?.from, X402D_PAYER));
  assert(mine.length > 0, "no successful PAYMENT-SIGNATURE from x402d recorded by the seller (did the paid checks run?)");
  const last = mine.at(-1);
  info("replaying", { path: last.path, authorization: last.signature.payload.authorization });
  const s0 = await snapshot();
  const res = await fetch(inst.sellerUrl + last.path, { method: "POST", headers: { "content-type": "application/json", "payment-signature": last.paymentSignature },
    body: JSON.stringify(last.body || {}) });
  const pr = res.headers.get("payment-required");
  const err = pr ? b64json(pr).error : null;
  info("replay response", { status: res.status, error: err, body: await res.text() });
  const s1 = await snapshot();
  assert(res.status === 402, `replay got HTTP ${res.status}, expected 402`);
  assert(/nonce_already_used/.test(String(err)), `replay rejected with "${err}", expected ...nonce_already_used`);
  assert(s1.payerBal === s0.payerBal && s1.payToBal === s0.payToBal, "replay moved money");
}

async function ledger() {
  const inst = instance("main");
  const all = await payments(inst.config);
  info("ledger size", all.length);
  assert(all.length > 0, "ledger is empty after the paid checks");
  const p = new Problems();
  const seen = new Map();
  for (const e of all) {
    if (e.nonce == null) continue;
    const k = String(e.nonce).toLowerCase();
    p.expect(/^0x[0-9a-f]{64}$/.test(k), `payment ${e.id}: nonce ${e.nonce} is not 32-byte 0x hex`);
    p.expect(!seen.has(k), () => `nonce ${e.nonce} used by payments ${seen.get(k)} and ${e.id}`);
    seen.set(k, e.id);
  }
  const settled = all.filter((e) => e.state === "settled");
  p.expect(settled.length > 0, "no settled payments in the ledger");
  for (const e of settled) {
    p.expect(/^0x[0-9a-fA-F]{64}$/.test(String(e.tx)), `settled payment ${e.id} has tx ${e.tx}`);
    if (/^0x[0-9a-fA-F]{64}$/.test(String(e.nonce)))
      p.expect(await authorizationState(X402D_PAYER, e.nonce), `settled payment ${e.id}: nonce ${e.nonce} not used on chain`);
  }
  const txs = settled.map((e) => String(e.tx).toLowerCase());
  p.expect(new Set(txs).size === txs.length, "two settled payments share one tx hash");
  info("checked", { entries: all.length, nonces: seen.size, settled: settled.length });
  p.done();
}

main(async () => {
  const parts = { seller, ledger };
  await (parts[process.argv[2]] || (() => fail(`unknown part ${process.argv[2]}`)))();
});
