// Team mode on the real stack: three x402d instances ("team1".."team3") share one PostgreSQL ledger and one
// wallet; [apps.capped] daily "0.007" at 0.001 a call. 30 concurrent calls spread over the three: exactly 7
// answered, 23 refused with x402d's own 402 (budget_exceeded), exactly 7 authorizations and transfers on chain,
// and every instance's ledger shows the same 7 settled payments.
import { PRICES, snapshot, authLogsSince, transfersSince } from "../lib/common.mjs";
import { main, info, payments, paymentsWait, Problems, instance } from "../lib/check.mjs";

main(async () => {
  const team = ["team1", "team2", "team3"].map((n) => instance(n));
  const price = PRICES.base;
  const s0 = await snapshot();
  const calls = Array.from({ length: 30 }, async (_, i) => {
    const inst = team[i % 3];
    const res = await fetch(`${inst.url}/v1/chat/completions`, { method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-capped" },
      body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: `team call ${i}` }] }) });
    const text = await res.text();
    let body = null; try { body = JSON.parse(text); } catch { /* keep text */ }
    return { i, via: inst.name, status: res.status, type: body?.error?.type, code: body?.error?.code };
  });
  const results = await Promise.all(calls);
  const ok = results.filter((r) => r.status === 200);
  const refused = results.filter((r) => r.status === 402 && r.type === "budget_exceeded");
  info("results", { ok: ok.map((r) => r.via), refused: refused.length, other: results.filter((r) => r.status !== 200 && r.status !== 402) });
  const p = new Problems();
  p.expect(ok.length === 7, `${ok.length} calls answered, expected exactly 7 (shared daily cap)`);
  p.expect(refused.length === 23, `${refused.length} refused with budget_exceeded, expected 23`);
  const s1 = await snapshot();
  const logs = await authLogsSince(s0);
  const transfers = await transfersSince(s0);
  p.expect(logs.length === 7 && transfers.length === 7, `chain: ${logs.length} authorizations / ${transfers.length} transfers, expected exactly 7`);
  p.expect(s0.payerBal - s1.payerBal === 7n * price.atomic, `payer -${s0.payerBal - s1.payerBal}, expected -${7n * price.atomic}`);
  await p.attempt(async () => {
    for (const inst of team) {
      const ledger = await paymentsWait(inst.config, (a) => a.filter((e) => e.state === "settled").length >= 7, ["--app", "capped"]);
      const settled = ledger.filter((e) => e.state === "settled");
      p.expect(ledger.length === 7 && settled.length === 7, `${inst.name}: ledger has ${ledger.length} payments (${settled.length} settled), expected the shared 7`);
    }
    const ids = new Set((await payments(team[0].config)).map((e) => e.nonce));
    p.expect(ids.size === 7, `${ids.size} distinct nonces, expected 7`);
  });
  p.done();
});
