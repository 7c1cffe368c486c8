// N (default 20) sequential paid calls through x402d (openai-node in one process): exactly N settlements on chain.
import { PRICES, snapshot, authLogsSince, transfersSince } from "../lib/common.mjs";
import { main, assert, info, driver, tapRead, tapWaitPaid, paymentsWait, eqAddr, Problems, instance } from "../lib/check.mjs";

const N = Number(process.argv[2] || 20);
main(async () => {
  const inst = instance("main");
  const price = PRICES.base;
  const tag = `seq${Date.now()}`;
  const s0 = await snapshot();
  const tap0 = tapRead(inst.tap).length;
  const t0 = Date.now();
  const recs = await driver("node", { base_url: `${inst.url}/v1`, message: `${tag} call {i}`, n: N });
  info("elapsed", `${N} calls in ${(Date.now() - t0) / 1000}s`);
  const bad = recs.filter((r) => !r.ok || r.content !== `echo: ${tag} call ${r.i}`);
  assert(bad.length === 0, `${bad.length}/${N} calls failed or had wrong content, first: ${JSON.stringify(bad[0])?.slice(0, 300)}`);
  const s1 = await snapshot();
  const logs = await authLogsSince(s0);
  const transfers = await transfersSince(s0);
  const p = new Problems();
  p.expect(logs.length === N, `${logs.length} AuthorizationUsed logs, expected exactly ${N}`);
  p.expect(transfers.length === N && transfers.every((t) => t.args.value === price.atomic), `${transfers.length} transfers payer->payTo (values ${[...new Set(transfers.map((t) => t.args.value))]}), expected ${N} x ${price.atomic}`);
  p.expect(s0.payerBal - s1.payerBal === BigInt(N) * price.atomic, `payer -${s0.payerBal - s1.payerBal}, expected -${BigInt(N) * price.atomic}`);
  p.expect(s1.payToBal - s0.payToBal === BigInt(N) * price.atomic, `payTo +${s1.payToBal - s0.payToBal}, expected +${BigInt(N) * price.atomic}`);
  const paid = await tapWaitPaid(tap0, N, inst.tap);
  p.expect(paid.length === N, `seller saw ${paid.length} paid requests, expected ${N}`);
  const chainTxs = new Set(logs.map((l) => l.transactionHash));
  p.expect(chainTxs.size === logs.length, "duplicate settlement transactions on chain");
  p.expect(paid.every((r) => chainTxs.has(r.settle?.transaction)), "a seller PAYMENT-RESPONSE tx is not among the on-chain AuthorizationUsed txs");
  await p.attempt(async () => {
    const ledger = await paymentsWait(inst.config, (a) => [...chainTxs].every((tx) => a.some((e) => eqAddr(e.tx, tx) && e.state === "settled")));
    const missing = [...chainTxs].filter((tx) => !ledger.some((e) => eqAddr(e.tx, tx) && e.state === "settled"));
    p.expect(missing.length === 0, `ledger: ${missing.length}/${chainTxs.size} on-chain settlements have no settled ledger entry (e.g. ${missing[0]})`);
  });
  p.done();
});
