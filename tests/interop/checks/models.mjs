// GET /v1/models through x402d (openai-python models.list()): free route, passes through, costs 0, no payment.
import { snapshot, authLogsSince } from "../lib/common.mjs";
import { MODELS } from "../lib/seller-common.mjs";
import { main, assert, driver, hdr, usdToAtomic, tapRead, tapPaidSince, Problems, instance } from "../lib/check.mjs";

main(async () => {
  const inst = instance("main");
  const s0 = await snapshot();
  const tap0 = tapRead(inst.tap).length;
  const [rec] = await driver("py", { base_url: `${inst.url}/v1`, op: "models" });
  assert(rec.ok, `models.list() failed: HTTP ${rec.http_status} ${rec.exc}: ${rec.message}`);
  const p = new Problems();
  p.expect(JSON.stringify(rec.models) === JSON.stringify(MODELS), `models ${JSON.stringify(rec.models)}, expected ${JSON.stringify(MODELS)}`);
  const cost = hdr(rec, "x-x402d-cost");
  p.expect(usdToAtomic(cost) === 0n, `x-x402d-cost ${JSON.stringify(cost)}, expected 0`);
  p.expect((await authLogsSince(s0)).length === 0, "an authorization was used on chain for a free route");
  p.expect(tapPaidSince(tap0, inst.tap).length === 0, "x402d sent a payment for a free route");
  p.done();
});
