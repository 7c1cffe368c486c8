// One chat completion through x402d with a real OpenAI SDK, asserting the on-chain effect, the seller's
// PAYMENT-RESPONSE and x402d's ledger all agree.
//   chat.mjs --driver py|node [--tier base|premium] [--stream] [--instance main|v1]
// --stream: with EXPECT_STREAM=1 the SSE stream must work (exact content, paid once). Without it, a working
// stream (then paid exactly once) or a clean OpenAI-shaped error with no payment are both accepted and reported.
import { parseArgs } from "node:util";
import { PRICES, PAY_TO, NETWORK, X402D_PAYER, snapshot, authLogsSince, transfersSince } from "../lib/common.mjs";
import { main, assert, fail, note, info, js, driver, hdr, errorBody, usdToAtomic, tapRead, tapWaitPaid, tapPaidSince,
  paymentsWait, eqAddr, Problems, instance } from "../lib/check.mjs";

const { values: o } = parseArgs({ options: {
  driver: { type: "string", default: "py" }, tier: { type: "string", default: "base" },
  stream: { type: "boolean", default: false }, instance: { type: "string", default: "main" } } });

main(async () => {
  const inst = instance(o.instance);
  const price = PRICES[o.tier] || fail(`unknown tier ${o.tier}`);
  const baseURL = `${inst.url}${o.tier === "premium" ? "/v1/premium" : "/v1"}`;
  const message = `interop ${o.driver} ${o.tier}${o.stream ? " stream" : ""} #${Date.now()}`;
  const expected = `echo: ${message}`;
  const expectStream = process.env.EXPECT_STREAM === "1";

  const s0 = await snapshot();
  const tap0 = tapRead(inst.tap).length;
  const [rec] = await driver(o.driver, { base_url: baseURL, message, stream: o.stream });
  const s1 = await snapshot();
  const logs = await authLogsSince(s0);
  const transfers = await transfersSince(s0);
  const moved = { payer: s0.payerBal - s1.payerBal, payTo: s1.payToBal - s0.payToBal };
  info("chain", { moved, authorizationUsed: logs.map((l) => ({ tx: l.transactionHash, nonce: l.args.nonce })) });

  if (o.stream && !rec.ok && !expectStream) {
    // Accepted alternative: a clean OpenAI-shaped error, and no money moved.
    const body = errorBody(rec);
    note(`stream not supported by x402d yet: HTTP ${rec.http_status} ${rec.exc}, x-x402d-error=${hdr(rec, "x-x402d-error")}, body=${JSON.stringify(body)}`);
    assert(typeof rec.http_status === "number" && rec.http_status >= 400, `stream failed without an HTTP error: ${rec.exc}: ${rec.message}`);
    assert(typeof body?.error?.message === "string" && typeof body?.error?.type === "string",
      `stream error body is not OpenAI-shaped {"error":{"message","type",...}}: ${JSON.stringify(body)}`);
    assert(moved.payer === 0n && moved.payTo === 0n && logs.length === 0, `stream error but money moved: ${js(moved)} / ${logs.length} authorization(s)`);
    assert(tapPaidSince(tap0, inst.tap).length === 0, "stream error but x402d sent a payment to the seller");
    return;
  }
  assert(rec.ok, `${rec.sdk} call failed: HTTP ${rec.http_status} ${rec.exc}: ${rec.message}`);
  assert(rec.content === expected, `content ${JSON.stringify(rec.content)}, expected ${JSON.stringify(expected)}`);
  if (o.stream) note(`stream worked: ${rec.chunks} chunks, finish_reason=${rec.finish_reason}, content reconstructed exactly`);

  const p = new Problems();
  p.expect(moved.payer === price.atomic && moved.payTo === price.atomic,
    `balance deltas payer -${moved.payer} payTo +${moved.payTo}, expected exactly ${price.atomic} (${o.tier} $${price.usd})`);
  p.expect(logs.length === 1, `${logs.length} AuthorizationUsed logs by ${X402D_PAYER}, expected 1`);
  p.expect(transfers.length === 1 && transfers[0].args.value === price.atomic, `transfers payer->payTo: ${transfers.map((t) => t.args.value)}`);
  const chainTx = logs.at(-1)?.transactionHash;
  const chainNonce = logs.at(-1)?.args.nonce;

  const paid = await tapWaitPaid(tap0, 1, inst.tap);
  info("seller saw", paid.map((r) => ({ path: r.path, status: r.status, settle: r.settle })));
  p.expect(paid.length === 1, `seller saw ${paid.length} paid requests, expected 1`);
  const settle = paid.at(-1)?.settle;
  p.expect(settle?.success && settle.transaction, `seller PAYMENT-RESPONSE ${JSON.stringify(settle)}`);
  p.expect(settle?.transaction && settle.transaction === chainTx, `seller PAYMENT-RESPONSE tx ${settle?.transaction} != on-chain AuthorizationUsed tx ${chainTx}`);
  p.expect(paid.at(-1)?.path === price.path, `seller paid path ${paid.at(-1)?.path}, expected ${price.path}`);

  const cost = hdr(rec, "x-x402d-cost");
  p.expect(usdToAtomic(cost) === price.atomic, `x-x402d-cost ${JSON.stringify(cost)}, expected ${price.usd}`);

  if (chainTx) await p.attempt(async () => {
    const ledger = await paymentsWait(inst.config, (a) => a.some((e) => eqAddr(e.tx, chainTx) && e.state === "settled"));
    const e = ledger.find((x) => eqAddr(x.tx, chainTx));
    info("ledger entry", e ?? null);
    if (!e) fail(`ledger: no payment with tx ${chainTx} in \`x402d payments --json\` (newest: ${JSON.stringify(ledger[0] ?? null)})`);
    p.expect(e.state === "settled", `ledger state ${e.state}, expected settled`);
    p.expect(e.amount_atomic === String(price.atomic) && usdToAtomic(e.amount) === price.atomic, `ledger amount ${e.amount}/${e.amount_atomic}, expected ${price.usd}/${price.atomic}`);
    p.expect(e.network === NETWORK, `ledger network ${e.network}, expected ${NETWORK}`);
    p.expect(eqAddr(e.pay_to, PAY_TO), `ledger pay_to ${e.pay_to}, expected ${PAY_TO}`);
    p.expect(eqAddr(e.nonce, chainNonce), `ledger nonce ${e.nonce} != on-chain nonce ${chainNonce}`);
    p.expect(e.model === "gpt-4o-mini", `ledger model ${JSON.stringify(e.model)}, expected "gpt-4o-mini"`);
  });
  p.done();
});
