// x402 v2 extensions through x402d against Coinbase's @x402/express seller: its premium route declares
// payment-identifier (declarePaymentIdentifierExtension(false), from @x402/extensions) and a second extension in its
// route config. One openai-python call on base_url .../v1/premium must: pay exactly once on chain (the seller's
// @x402/core validated the echo, or it would have answered 402 extension_echo_mismatch); carry, in the
// PAYMENT-SIGNATURE the seller got, both advertised extensions with every advertised field unchanged, plus an
// info.id of 16-128 [A-Za-z0-9_-]; and x402d's ledger must hold that id as the payment's payment_identifier.
// A second call gets a different id.
import { PRICES, snapshot } from "../lib/common.mjs";
import { b64json } from "../lib/common.mjs";
import { main, assert, note, canon, driver, hdr, tapRead, tapPaidSince, Problems, instance, verifyPaidOnce, paymentsWait, eqAddr } from "../lib/check.mjs";

main(async () => {
  const inst = instance("main");
  const price = PRICES.premium;
  const ids = [];
  for (const n of [1, 2]) {
    const s0 = await snapshot();
    const tap0 = tapRead(inst.tap).length;
    const message = `extensions #${n} ${Date.now()}`;
    const [rec] = await driver("py", { base_url: `${inst.url}/v1/premium`, model: "gpt-4o-mini", message });
    assert(rec.ok, `call failed: HTTP ${rec.http_status} ${rec.exc}: ${rec.message}`);
    const p = new Problems();
    const { paid, chainTx } = await verifyPaidOnce(p, { inst, s0, tap0, price, model: "gpt-4o-mini", cost: hdr(rec, "x-x402d-cost") });
    // What the seller advertised on the 402 x402d probed with, and what x402d echoed.
    const probe = tapRead(inst.tap).slice(tap0).find((r) => r.status === 402 && r.paymentRequired && !r.paymentSignature);
    const advertised = probe ? b64json(probe.paymentRequired).extensions : undefined;
    p.expect(advertised && advertised["payment-identifier"] && advertised["x-interop-note"],
      `the seller's 402 did not advertise both extensions: ${JSON.stringify(advertised)}`);
    const echoed = paid.at(-1)?.signature?.extensions;
    p.expect(echoed && Object.keys(echoed).length === 2, `x402d echoed extensions ${JSON.stringify(echoed)}, expected exactly the 2 advertised`);
    if (advertised && echoed) {
      p.expect(canon(echoed["x-interop-note"]) === canon(advertised["x-interop-note"]),
        `x-interop-note echoed as ${JSON.stringify(echoed["x-interop-note"])}, advertised ${JSON.stringify(advertised["x-interop-note"])}`);
      const { id, ...rest } = echoed["payment-identifier"]?.info ?? {};
      p.expect(canon(rest) === canon(advertised["payment-identifier"].info), `payment-identifier info ${JSON.stringify(echoed["payment-identifier"]?.info)} changed an advertised field`);
      p.expect(canon(echoed["payment-identifier"].schema) === canon(advertised["payment-identifier"].schema), "payment-identifier schema changed");
      p.expect(typeof id === "string" && /^[A-Za-z0-9_-]{16,128}$/.test(id), `payment id ${JSON.stringify(id)} is not 16-128 [A-Za-z0-9_-]`);
      ids.push(id);
      if (chainTx) await p.attempt(async () => {
        const ledger = await paymentsWait(inst.config, (a) => a.some((e) => eqAddr(e.tx, chainTx)));
        const e = ledger.find((x) => eqAddr(x.tx, chainTx));
        p.expect(e?.payment_identifier === id, `ledger: payment_identifier ${JSON.stringify(e?.payment_identifier)}, the seller got ${id}`);
      });
    }
    p.expect(tapPaidSince(tap0, inst.tap).length === 1, "the seller saw more than one paid request");
    p.done();
  }
  assert(ids.length === 2 && ids[0] !== ids[1], `two calls got the same payment id ${ids[0]}`);
  note(`both extensions echoed; payment ids ${ids.join(", ")}`);
});
