// Run by run.sh AFTER it stopped the facilitator: a paid call through x402d must fail clearly (non-200, error
// body with a message), nothing may be settled in x402d's ledger for it, and no transfer may happen on chain.
import { snapshot, authLogsSince } from "../lib/common.mjs";
import { main, note, info, driver, hdr, errorBody, payments, Problems, instance, sleep } from "../lib/check.mjs";

main(async () => {
  const inst = instance("main");
  const p = new Problems();
  const before = await p.attempt(() => payments(inst.config));
  const s0 = await snapshot();
  const [rec] = await driver("py", { base_url: `${inst.url}/v1`, message: "facilitator is down" });
  await sleep(500); // let anything asynchronous land before we look at the chain / ledger
  const s1 = await snapshot();
  const logs = await authLogsSince(s0);
  const body = rec.ok ? null : errorBody(rec);
  note(`x402d answered HTTP ${rec.http_status} (${rec.exc ?? "ok"}), x-x402d-error=${hdr(rec, "x-x402d-error")}, body=${JSON.stringify(body ?? rec.content).slice(0, 300)}`);
  p.expect(!rec.ok && rec.http_status !== 200, `call succeeded (HTTP ${rec.http_status}) although the facilitator is down`);
  p.expect(rec.ok || typeof rec.http_status === "number", `no HTTP error, transport failure instead: ${rec.exc}: ${rec.message}`);
  p.expect(rec.ok || (body && (typeof body.error?.message === "string" || typeof body.error === "string")), `error body has no error message: ${rec.text ?? JSON.stringify(rec.body)}`);
  p.expect(logs.length === 0 && s1.payerBal === s0.payerBal && s1.payToBal === s0.payToBal, `money moved: ${logs.length} authorization(s), payer -${s0.payerBal - s1.payerBal}`);
  if (before) await p.attempt(async () => {
    const after = await payments(inst.config);
    const old = new Set(before.map((e) => e.id));
    const fresh = after.filter((e) => !old.has(e.id));
    info("new ledger entries", fresh);
    if (fresh.length) note(`ledger recorded: ${fresh.map((e) => `${e.state}${e.tx ? " tx " + e.tx : ""}`).join(", ")}`);
    p.expect(fresh.every((e) => e.state !== "settled" && e.tx == null), `ledger settled the failed call: ${JSON.stringify(fresh.find((e) => e.state === "settled" || e.tx))}`);
    const changed = after.filter((e) => old.has(e.id) && before.find((b) => b.id === e.id).state !== e.state);
    p.expect(changed.every((e) => e.state !== "settled"), "an older ledger entry flipped to settled");
  });
  p.done();
});
