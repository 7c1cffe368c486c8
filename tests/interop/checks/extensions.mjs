// x402 v2 extensions through x402d against Coinbase's @x402/express seller: its premium route declares
// payment-identifier (declarePaymentIdentifierExtension(false), from @x402/extensions) and a second extension in its
// route config. One openai-python call on base_url .../v1/premium must: pay exactly once on chain (the seller's
// @x402/core validated the echo, or it would have answered 402 extension_echo_mismatch); carry, in the
// PAYMENT-SIGNATURE the seller got, both advertised extensions with every advertised field unchanged, plus an
// info.id of 16-128 [A-Za-z0-9_-]; and x402d's ledger must hold that id as the payment's payment_identifier.
// A second call gets a different id.
//   --instance pyseller: the same against the x402 Python seller (seller_py.py: PyPI x402 2.25.0 Flask middleware,
//   route config declaring the same two extensions on POST /v1/chat/completions, $0.001).
import { parseArgs } from "node:util";
import { PRICES, snapshot } from "../lib/common.mjs";
import { b64json } from "../lib/common.mjs";
import { main, assert, note, canon, driver, hdr, tapRead, tapPaidSince, Problems, instance, verifyPaidOnce, paymentsWait, eqAddr } from "../lib/check.mjs";

const { values: o } = parseArgs({ options: { instance: { type: "string", default: "main" } } });

main(async () => {
  const inst = instance(o.instance);
  const py = o.instance === "pyseller";
  const price = py ? PRICES.base : PRICES.premium;
  // What the seller advertises (an unpaid request straight to it, as x402d's probe sees it).
  const probe = await fetch(`${inst.sellerUrl}${price.path}`, { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "probe" }] }) });
  assert(probe.status === 402 && probe.headers.get("payment-required"), `the seller answered ${probe.status} to an unpaid request`);
  const advertised = b64json(probe.headers.get("payment-required")).extensions;
  const ids = [];
  for (const n of [1, 2]) {
    const s0 = await snapshot();
    const tap0 = tapRead(inst.tap).length;
    const message = `extensions #${n} ${Date.now()}`;
    const [rec] = await driver("py", { base_url: `${inst.url}${py ? "/v1" : "/v1/premium"}`, model: "gpt-4o-mini", message });
    assert(rec.ok, `call failed: HTTP ${rec.http_status} ${rec.exc}: ${rec.message}`);
    const p = new Problems();
    const { paid, chainTx } = await verifyPaidOnce(p, { inst, s0, tap0, price, model: "gpt-4o-mini", cost: hdr(rec, "x-x402d-cost") });
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
