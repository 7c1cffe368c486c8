// Per-app daily cap on the "cap" x402d instance: [apps.capped] api_key "sk-capped", daily "0.003", price 0.001.
// Calls 1-3 succeed; call 4 gets x402d's own 402 {"error":{"type":"budget_exceeded"}} with x-should-retry: false;
// exactly 3 transfers on chain.
import { PRICES, snapshot, authLogsSince, transfersSince } from "../lib/common.mjs";
import { main, assert, info, note, tapRead, tapPaidSince, payments, Problems, instance } from "../lib/check.mjs";

main(async () => {
  const inst = instance("cap");
  const price = PRICES.base;
  const s0 = await snapshot();
  const tap0 = tapRead(inst.tap).length;
  const results = [];
  for (let i = 1; i <= 4; i++) {
    const res = await fetch(`${inst.url}/v1/chat/completions`, { method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-capped" },
      body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: `capped call ${i}` }] }) });
    const text = await res.text();
    let body = null; try { body = JSON.parse(text); } catch { /* keep text */ }
    const r = { i, status: res.status, cost: res.headers.get("x-x402d-cost"), shouldRetry: res.headers.get("x-should-retry"),
      x402dError: res.headers.get("x-x402d-error"), body: body ?? text };
    info(`call ${i}`, r);
    results.push(r);
  }
  const leaked = tapRead(inst.tap).slice(tap0).filter((r) => /sk-capped/.test(r.auth || ""));
  if (leaked.length) note(`x402d forwarded the client's API key (Authorization: Bearer sk-capped) to the seller on ${leaked.length} request(s)`);
  const p = new Problems();
  for (const r of results.slice(0, 3))
    p.expect(r.status === 200 && r.body?.choices?.[0]?.message?.content === `echo: capped call ${r.i}`, `call ${r.i}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
  const r4 = results[3];
  p.expect(r4.status === 402, `call 4: HTTP ${r4.status}, expected 402`);
  p.expect(r4.body?.error?.type === "budget_exceeded", `call 4: error.type ${JSON.stringify(r4.body?.error?.type)}, expected "budget_exceeded" (body ${JSON.stringify(r4.body).slice(0, 200)})`);
  p.expect(typeof r4.body?.error?.message === "string", "call 4: error.message missing");
  p.expect(r4.shouldRetry === "false", `call 4: x-should-retry ${JSON.stringify(r4.shouldRetry)}, expected "false"`);
  const s1 = await snapshot();
  const logs = await authLogsSince(s0);
  const transfers = await transfersSince(s0);
  p.expect(logs.length === 3 && transfers.length === 3, `chain: ${logs.length} authorizations / ${transfers.length} transfers, expected exactly 3`);
  p.expect(s0.payerBal - s1.payerBal === 3n * price.atomic, `payer -${s0.payerBal - s1.payerBal}, expected -${3n * price.atomic}`);
  p.expect(tapPaidSince(tap0, inst.tap).length === 3, `seller saw ${tapPaidSince(tap0, inst.tap).length} paid requests, expected 3`);
  await p.attempt(async () => {
    const ledger = await payments(inst.config, ["--app", "capped"]);
    const settled = ledger.filter((e) => e.state === "settled");
    info("ledger --app capped", ledger.map((e) => ({ app: e.app, state: e.state, amount: e.amount, tx: e.tx })));
    p.expect(settled.length === 3, `ledger --app capped: ${settled.length} settled payments, expected 3`);
    p.expect(ledger.every((e) => e.app === "capped"), "ledger --app capped returned entries of other apps");
  });
  p.done();
});
