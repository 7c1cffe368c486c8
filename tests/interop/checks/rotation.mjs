// wallet-rotation, on its own x402d instance "rot" (own state dir, keyring entry x402d-interop/wallet-rot), serving
// the whole time (one pid, never restarted or reloaded by hand):
//   1. no key: `status --json` says wallet null;
//   2. `wallet import` key A (anvil #4, stdin): status shows A; a paid call moves exactly $0.001 from A on chain
//      (one Transfer A -> payTo, none from B), the seller's PAYMENT-SIGNATURE is signed by A, the ledger says payer A;
//   3. `wallet import` key B without `--replace` is refused and changes nothing (status still A);
//   4. `wallet import --replace` key B (anvil #5): prints the old and the new address, status shows B at once, and the
//      very next paid call moves $0.001 from B (one Transfer B -> payTo, none from A; signed by B; ledger payer B);
//   5. `wallet remove --yes`: status wallet null; the next call gets 503 `wallet_not_configured`, x-should-retry false,
//      and nothing is paid: no Transfer/AuthorizationUsed by A or B, balances unchanged, the seller saw no payment
//      header, no new ledger entry.
import { spawn } from "node:child_process";
import { PRICES, snapshot, authLogsSince, transfersSince, balanceOf, ROT_KEY_A, ROT_KEY_B, ROT_PAYER_A, ROT_PAYER_B, PAY_TO }
  from "../lib/common.mjs";
import { main, fail, info, note, env, tapRead, tapPaidSince, verifyPaidOnce, payments, Problems, eqAddr, X402D_BIN, sleep }
  from "../lib/check.mjs";

/** `x402d --config CFG ARGS...` with `input` on stdin (a pipe, so not a terminal). */
function cli(config, args, input = "") {
  return new Promise((resolve) => {
    const child = spawn(X402D_BIN(), ["--config", config, ...args], { stdio: ["pipe", "pipe", "pipe"], env: process.env });
    let stdout = "", stderr = "";
    const t = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.stdout.on("data", (d) => { stdout += d; });
    child.stderr.on("data", (d) => { stderr += d; });
    child.on("error", (e) => { clearTimeout(t); resolve({ code: String(e), stdout, stderr }); });
    child.on("close", (code, signal) => { clearTimeout(t); resolve({ code: code ?? signal, stdout, stderr }); });
    child.stdin.end(input);
  });
}
const oneLine = (r) => `exit ${r.code}: ${(r.stderr || r.stdout).trim().replace(/\s*\n\s*/g, " | ").slice(0, 400)}`;

main(async () => {
  const inst = { name: "rot", url: env("X402D_ROT_URL"), config: env("X402D_ROT_CONFIG"), tap: env("SELLER_TAP") };
  const price = PRICES.base;
  const A = ROT_PAYER_A, B = ROT_PAYER_B;
  const p = new Problems();

  const status = async (label) => {
    const r = await cli(inst.config, ["status", "--json"]);
    let v = null;
    try { v = JSON.parse(r.stdout); } catch { /* below */ }
    if (r.code !== 0 || !v?.running) fail(`${label}: \`x402d status --json\` ${oneLine(r)}`);
    info(`status ${label}`, { pid: v.pid, wallet: v.wallet, wallet_store: v.wallet_store });
    return v;
  };
  const call = async (i) => {
    const res = await fetch(`${inst.url}/v1/chat/completions`, { method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-rot" },
      body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: `rotation call ${i}` }] }) });
    const text = await res.text();
    let body = null; try { body = JSON.parse(text); } catch { /* keep text */ }
    const r = { i, status: res.status, cost: res.headers.get("x-x402d-cost"), shouldRetry: res.headers.get("x-should-retry"),
      x402dError: res.headers.get("x-x402d-error"), body: body ?? text };
    info(`call ${i}`, r);
    return r;
  };
  /** One paid call that must come from `from` and not from `other`: chain, seller tap and ledger agree. */
  const paidCallFrom = async (i, from, other, label) => {
    const s0 = await snapshot(from, PAY_TO);
    const otherBal0 = await balanceOf(other);
    const tap0 = tapRead(inst.tap).length;
    const r = await call(i);
    p.expect(r.status === 200 && r.body?.choices?.[0]?.message?.content === `echo: rotation call ${i}`,
      `call ${i} (${label}): HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
    const { paid, chainTx } = await verifyPaidOnce(p, { inst, s0, tap0, price, cost: r.cost, label: ` (${label})` });
    const fromOther = await transfersSince(s0, other, PAY_TO);
    const authOther = await authLogsSince(s0, other);
    p.expect(fromOther.length === 0 && authOther.length === 0,
      `call ${i} (${label}): ${fromOther.length} transfer(s) / ${authOther.length} authorization(s) by the other key ${other}`);
    p.expect((await balanceOf(other)) === otherBal0, `call ${i} (${label}): the other key ${other}'s balance changed`);
    const signer = paid.at(-1)?.signature?.payload?.authorization?.from;
    p.expect(eqAddr(signer, from), `call ${i} (${label}): the seller's PAYMENT-SIGNATURE authorization.from is ${signer}, expected ${from}`);
    if (chainTx) await p.attempt(async () => {
      const e = (await payments(inst.config)).find((x) => eqAddr(x.tx, chainTx));
      p.expect(e && eqAddr(e.payer, from), `call ${i} (${label}): ledger payer ${e?.payer}, expected ${from}`);
    });
    return chainTx;
  };

  // 1. A fresh instance: no key in its keyring entry.
  const st0 = await status("before import");
  if (st0.wallet != null) fail(`x402d-rot has a wallet (${st0.wallet}) before the check imported one: its keyring entry is not its own`);
  const pid = st0.pid;

  // 2. Key A while serving; the next call pays from A.
  const impA = await cli(inst.config, ["wallet", "import"], `${ROT_KEY_A}\n`);
  info("wallet import A", impA);
  if (impA.code !== 0 || !eqAddr(impA.stdout.trim(), A)) fail(`\`wallet import\` of key A: ${oneLine(impA)} (stdout ${JSON.stringify(impA.stdout.trim())}, expected ${A})`);
  const st1 = await status("after import A");
  if (!eqAddr(st1.wallet, A)) fail(`status --json wallet ${st1.wallet} after importing A, expected ${A}`);
  const tx1 = await paidCallFrom(1, A, B, "key A");

  // 3. A second import without --replace is refused and changes nothing.
  const refused = await cli(inst.config, ["wallet", "import"], `${ROT_KEY_B}\n`);
  info("wallet import B without --replace", refused);
  p.expect(refused.code !== 0 && /--replace/.test(refused.stderr + refused.stdout),
    `\`wallet import\` of B over A without --replace: ${oneLine(refused)}, expected a refusal that names --replace`);
  const st2 = await status("after the refused import");
  p.expect(eqAddr(st2.wallet, A), `status --json wallet ${st2.wallet} after the refused import, expected still ${A}`);

  // 4. --replace with key B; the very next call pays from B.
  const impB = await cli(inst.config, ["wallet", "import", "--replace"], `${ROT_KEY_B}\n`);
  info("wallet import --replace B", impB);
  if (impB.code !== 0 || !eqAddr(impB.stdout.trim(), B)) fail(`\`wallet import --replace\` of key B: ${oneLine(impB)} (stdout ${JSON.stringify(impB.stdout.trim())}, expected ${B})`);
  p.expect(impB.stderr.toLowerCase().includes(`old ${A}`.toLowerCase()) && impB.stderr.toLowerCase().includes(`new ${B}`.toLowerCase()),
    `\`wallet import --replace\` did not print the old (${A}) and the new (${B}) address: ${JSON.stringify(impB.stderr.trim())}`);
  const st3 = await status("after import --replace B");
  if (!eqAddr(st3.wallet, B)) fail(`status --json wallet ${st3.wallet} right after \`wallet import --replace\`, expected ${B}`);
  const tx2 = await paidCallFrom(2, B, A, "key B");
  p.expect(!tx1 || !tx2 || tx1 !== tx2, "payments 1 and 2 have the same tx");

  // 5. Remove: the next call is a 503 wallet_not_configured and nothing is paid.
  const rm = await cli(inst.config, ["wallet", "remove", "--yes"]);
  info("wallet remove --yes", rm);
  if (rm.code !== 0) fail(`\`wallet remove --yes\`: ${oneLine(rm)}`);
  const st4 = await status("after remove");
  p.expect(st4.wallet == null, `status --json wallet ${st4.wallet} after \`wallet remove --yes\`, expected null`);
  const sA = await snapshot(A, PAY_TO);
  const balB = await balanceOf(B);
  const tap2 = tapRead(inst.tap).length;
  const ledger0 = await p.attempt(() => payments(inst.config));
  const r3 = await call(3);
  await sleep(500); // let anything asynchronous land before looking at the chain, the seller and the ledger
  p.expect(r3.status === 503, `call 3 after remove: HTTP ${r3.status}, expected 503`);
  p.expect(r3.body?.error?.code === "wallet_not_configured",
    `call 3 after remove: error.code ${JSON.stringify(r3.body?.error?.code)}, expected "wallet_not_configured" (body ${JSON.stringify(r3.body).slice(0, 300)})`);
  p.expect(r3.shouldRetry === "false", `call 3 after remove: x-should-retry ${JSON.stringify(r3.shouldRetry)}, expected "false"`);
  const sA1 = await snapshot(A, PAY_TO);
  const moved = { A: (await authLogsSince(sA, A)).length + (await transfersSince(sA, A, PAY_TO)).length,
    B: (await authLogsSince(sA, B)).length + (await transfersSince(sA, B, PAY_TO)).length };
  info("chain after call 3", { moved, balA: sA1.payerBal, balB: await balanceOf(B), payTo: sA1.payToBal });
  p.expect(moved.A === 0 && moved.B === 0, `call 3 after remove moved money: ${moved.A} log(s) by A, ${moved.B} by B`);
  p.expect(sA1.payerBal === sA.payerBal && (await balanceOf(B)) === balB && sA1.payToBal === sA.payToBal,
    "call 3 after remove: a balance changed (A, B or payTo)");
  const paid3 = tapPaidSince(tap2, inst.tap);
  p.expect(paid3.length === 0, `call 3 after remove: the seller saw ${paid3.length} request(s) with a payment header`);
  if (ledger0) await p.attempt(async () => {
    const after = await payments(inst.config);
    p.expect(after.length === ledger0.length, `call 3 after remove: the ledger grew from ${ledger0.length} to ${after.length} entries`);
  });
  const st5 = await status("at the end");
  p.expect(st5.pid === pid, `x402d-rot's pid changed from ${pid} to ${st5.pid}: it was restarted`);
  p.done();
  note(`one x402d (pid ${pid}): call 1 paid by ${A} (tx ${tx1}), \`wallet import --replace\`, call 2 paid by ${B} (tx ${tx2}), \`wallet remove --yes\`, call 3 → 503 ${r3.body?.error?.code}, nothing paid`);
});
