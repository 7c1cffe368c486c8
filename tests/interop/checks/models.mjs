// GET /v1/models through x402d with both SDKs (models.list()): x402d answers from the seller's model list, one
// OpenAI list with each model's tier (gpt-4o-mini budget, gpt-4o pro, claude-opus-4 premium), costs 0, pays nothing.
import { snapshot, authLogsSince } from "../lib/common.mjs";
import { MODELS, MODEL_TIERS } from "../lib/seller-common.mjs";
import { main, assert, driver, hdr, usdToAtomic, tapRead, tapPaidSince, Problems, instance } from "../lib/check.mjs";

main(async () => {
  const inst = instance("main");
  const s0 = await snapshot();
  const tap0 = tapRead(inst.tap).length;
  const p = new Problems();
  for (const kind of ["py", "node"]) {
    const [rec] = await driver(kind, { base_url: `${inst.url}/v1`, op: "models" });
    assert(rec.ok, `${kind} models.list() failed: HTTP ${rec.http_status} ${rec.exc}: ${rec.message}`);
    p.expect(JSON.stringify([...rec.models].sort()) === JSON.stringify([...MODELS].sort()), `${kind}: models ${JSON.stringify(rec.models)}, expected ${JSON.stringify(MODELS)}`);
    for (const m of MODELS) p.expect(rec.tiers?.[m] === MODEL_TIERS[m], `${kind}: model ${m} has tier ${JSON.stringify(rec.tiers?.[m])}, expected "${MODEL_TIERS[m]}"`);
    const cost = hdr(rec, "x-x402d-cost");
    p.expect(usdToAtomic(cost) === 0n, `${kind}: x-x402d-cost ${JSON.stringify(cost)}, expected 0`);
  }
  p.expect((await authLogsSince(s0)).length === 0, "an authorization was used on chain for a free route");
  p.expect(tapPaidSince(tap0, inst.tap).length === 0, "x402d sent a payment for a free route");
  p.done();
});
