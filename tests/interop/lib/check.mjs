// Helpers for check scripts: failure reporting, SDK drivers, the seller tap, and x402d's ledger CLI.
// Protocol with run.sh: a check exits 0 on success; on failure it prints "REASON: <one line>" last and exits 1.
// "NOTE: <text>" lines are echoed by run.sh under the check's ok/FAIL line.
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { b64json, snapshot, authLogsSince, transfersSince, PAY_TO, NETWORK } from "./common.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, "..");

export class CheckFailure extends Error {}
export const fail = (msg) => { throw new CheckFailure(msg); };
export const assert = (cond, msg) => { if (!cond) fail(typeof msg === "function" ? msg() : msg); };
export const note = (msg) => console.log(`NOTE: ${msg}`);
/** Key-order-independent JSON (x402d re-serializes a body it rewrites, e.g. stream -> false, with sorted keys). */
export const canon = (v) => JSON.stringify(v, (_k, x) => (x && typeof x === "object" && !Array.isArray(x)
  ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, x[k]])) : x));
/** JSON.stringify that renders BigInt as a decimal string. */
export const js = (v) => JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x));
export const info = (label, obj) => console.log(`${label}: ${typeof obj === "string" ? obj : js(obj)}`);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const env = (k) => { const v = process.env[k]; if (!v) fail(`runner did not set ${k}`); return v; };

/** Run a check body; translate failures into the REASON protocol. */
export async function main(fn) {
  try {
    await fn();
    process.exit(0);
  } catch (e) {
    if (!(e instanceof CheckFailure)) console.log(e?.stack || String(e));
    console.log(`REASON: ${(e instanceof CheckFailure ? e.message : `unexpected error: ${e?.message || e}`).replace(/\s*\n\s*/g, " | ")}`);
    process.exit(1);
  }
}

function run(cmd, args, { timeout = 120_000 } = {}) {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout, maxBuffer: 64 << 20, env: process.env }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === "number" ? err.code : err.signal || String(err.code)) : 0, stdout, stderr }));
  });
}

/** Run an SDK driver ("py" | "node" | "langchain" | "responses") with the given options; returns the parsed per-call records. */
export async function driver(kind, opts) {
  const [cmd, script] = kind === "py" ? [env("PY"), path.join(ROOT, "drivers/openai_call.py")]
    : kind === "langchain" ? [env("PY"), path.join(ROOT, "drivers/langchain_call.py")]
    : kind === "responses" ? [env("PY"), path.join(ROOT, "drivers/responses_call.py")]
    : [process.execPath, path.join(ROOT, "drivers/openai_call.mjs")];
  const r = await run(cmd, [script, JSON.stringify(opts)]);
  const recs = r.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  if (r.code !== 0 || recs.length !== Number(opts.n || 1))
    fail(`${kind} driver exited ${r.code} with ${recs.length} result line(s): ${(r.stderr || r.stdout).trim().split("\n").slice(-3).join(" | ")}`);
  for (const rec of recs) info(`${kind} call ${rec.i}`, rec);
  return recs;
}

/** Lower-cased header lookup on a driver record. */
export const hdr = (rec, k) => {
  const h = rec.headers || {};
  for (const [kk, v] of Object.entries(h)) if (kk.toLowerCase() === k.toLowerCase()) return v;
  return undefined;
};

/** Full error JSON body of a failed driver record, best effort ({error:{...}} form). */
export function errorBody(rec) {
  if (rec.text) { try { return JSON.parse(rec.text); } catch { /* not JSON */ } }
  if (rec.body && typeof rec.body === "object") return rec.body.error ? rec.body : { error: rec.body };
  return null;
}

/** Parse a USD decimal string into micro-USD (BigInt), or null. "0.001" -> 1000n. */
export function usdToAtomic(s) {
  if (s == null) return null;
  const m = /^\s*(\d+)(?:\.(\d{0,18}))?\s*$/.exec(String(s));
  if (!m) return null;
  const frac = (m[2] || "").padEnd(6, "0");
  if (/[1-9]/.test(frac.slice(6))) return null; // finer than 1e-6
  return BigInt(m[1]) * 1_000_000n + BigInt(frac.slice(0, 6));
}

// ---- seller tap (JSONL written by the seller for every finished request) ----
export function tapRead(file = env("SELLER_TAP")) {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
}
/** Paid exchanges (had a payment header) appended after index `from`, with decoded headers. */
export function tapPaidSince(from, file) {
  return tapRead(file).slice(from).filter((r) => r.paymentSignature || r.xPayment).map((r) => ({
    ...r,
    signature: r.paymentSignature ? b64json(r.paymentSignature) : b64json(r.xPayment),
    settle: r.paymentResponse ? b64json(r.paymentResponse) : r.xPaymentResponse ? b64json(r.xPaymentResponse) : null,
  }));
}
/** Wait until at least `n` paid exchanges have been recorded after index `from`. */
export async function tapWaitPaid(from, n, file, ms = 3000) {
  const t = Date.now();
  for (;;) {
    const got = tapPaidSince(from, file);
    if (got.length >= n || Date.now() - t > ms) return got;
    await sleep(50);
  }
}

// ---- x402d CLI ----
export const X402D_BIN = () => env("X402D_BIN");

/** `x402d --config CFG payments --json [...]` -> array; FAILS the check clearly if the command is missing/broken. */
export async function payments(config, extra = []) {
  const args = ["--config", config, "payments", "--json", "--limit", "1000", ...extra];
  const r = await run(X402D_BIN(), args, { timeout: 30_000 });
  const cmd = `x402d ${args.join(" ")}`;
  if (r.code !== 0) fail(`ledger: \`${cmd}\` exited ${r.code}: ${(r.stderr || r.stdout).trim().split("\n").slice(-2).join(" | ").slice(0, 300)}`);
  let arr;
  try { arr = JSON.parse(r.stdout); } catch { fail(`ledger: \`${cmd}\` did not print JSON: ${r.stdout.slice(0, 200)}`); }
  if (!Array.isArray(arr)) fail(`ledger: \`${cmd}\` printed ${typeof arr}, expected a JSON array`);
  for (const k of ["id", "time", "app", "model", "amount", "amount_atomic", "network", "pay_to", "nonce", "state", "tx"])
    for (const p of arr) if (!(k in p)) fail(`ledger: payment ${JSON.stringify(p).slice(0, 200)} lacks field "${k}"`);
  return arr;
}

/** Poll the ledger until `pred(entries)` is truthy (x402d may record settlement just after responding). */
export async function paymentsWait(config, pred, extra = [], ms = 3000) {
  const t = Date.now();
  for (;;) {
    const arr = await payments(config, extra);
    if (pred(arr) || Date.now() - t > ms) return arr;
    await sleep(100);
  }
}

export const eqAddr = (a, b) => typeof a === "string" && typeof b === "string" && a.toLowerCase() === b.toLowerCase();

/** Collects non-fatal assertion failures so one run reports every broken expectation at once. */
export class Problems {
  constructor() { this.list = []; }
  expect(cond, msg) { if (!cond) this.list.push(typeof msg === "function" ? msg() : msg); return !!cond; }
  async attempt(fn) {
    try { return await fn(); } catch (e) { if (e instanceof CheckFailure) this.list.push(e.message); else throw e; return undefined; }
  }
  done() {
    if (!this.list.length) return;
    const ledgerOnly = this.list.every((m) => m.startsWith("ledger:"));
    fail(this.list.join("; ") + (ledgerOnly ? " [all on-chain/seller/HTTP assertions passed]" : ""));
  }
}

/** Per-instance settings exported by run.sh (instance: "main" | "cap" | "v1" | "retry" | "pyseller"). */
export function instance(name = "main") {
  const up = name.toUpperCase();
  return {
    name,
    url: env(`X402D_${up}_URL`),
    config: env(`X402D_${up}_CONFIG`),
    tap: name === "v1" ? env("SELLER_V1_TAP") : name === "retry" ? null : name === "pyseller" ? env("SELLER_PY_TAP") : env("SELLER_TAP"),
    sellerUrl: name === "v1" ? env("SELLER_V1_URL") : name === "retry" ? env("RETRY_SELLER_URL") : name === "pyseller" ? env("SELLER_PY_URL") : env("SELLER_URL"),
  };
}

/** The on-chain / seller / ledger cross-check of ONE paid call made after snapshot `s0` and tap index `tap0`:
 *  exactly `price.atomic` moved payer -> payTo in one AuthorizationUsed + one Transfer; the seller saw exactly one
 *  paid request, on `price.path`, whose PAYMENT-RESPONSE tx is that on-chain tx; x402d's ledger has it `settled`
 *  with the same tx, nonce, amount, network, pay_to and `model`. `cost`: the x-x402d-cost header (undefined: not
 *  checked). Failures go into `p` (a Problems); returns { paid, chainTx, moved }. */
export async function verifyPaidOnce(p, { inst, s0, tap0, price, model, cost, label = "" }) {
  const s1 = await snapshot(s0.payer, s0.payTo);
  const logs = await authLogsSince(s0);
  const transfers = await transfersSince(s0);
  const moved = { payer: s0.payerBal - s1.payerBal, payTo: s1.payToBal - s0.payToBal };
  info(`chain${label}`, { moved, authorizationUsed: logs.map((l) => ({ tx: l.transactionHash, nonce: l.args.nonce })) });
  p.expect(moved.payer === price.atomic && moved.payTo === price.atomic,
    `balance deltas payer -${moved.payer} payTo +${moved.payTo}, expected exactly ${price.atomic} ($${price.usd} on ${price.path})`);
  p.expect(logs.length === 1, `${logs.length} AuthorizationUsed logs by ${s0.payer}, expected 1`);
  p.expect(transfers.length === 1 && transfers[0].args.value === price.atomic, `transfers payer->payTo: [${transfers.map((t) => t.args.value)}], expected [${price.atomic}]`);
  const chainTx = logs.at(-1)?.transactionHash;
  const chainNonce = logs.at(-1)?.args.nonce;

  const paid = await tapWaitPaid(tap0, 1, inst.tap);
  info(`seller saw${label}`, paid.map((r) => ({ path: r.path, status: r.status, retryCount: r.retryCount, settle: r.settle })));
  p.expect(paid.length === 1, `seller saw ${paid.length} paid requests, expected 1`);
  const settle = paid.at(-1)?.settle;
  p.expect(settle?.success && settle.transaction, `seller PAYMENT-RESPONSE ${JSON.stringify(settle)}`);
  p.expect(settle?.transaction && settle.transaction === chainTx, `seller PAYMENT-RESPONSE tx ${settle?.transaction} != on-chain AuthorizationUsed tx ${chainTx}`);
  p.expect(paid.at(-1)?.path === price.path, `seller paid path ${paid.at(-1)?.path}, expected ${price.path}`);
  if (cost !== undefined) p.expect(usdToAtomic(cost) === price.atomic, `x-x402d-cost ${JSON.stringify(cost)}, expected ${price.usd}`);

  if (chainTx) await p.attempt(async () => {
    const ledger = await paymentsWait(inst.config, (a) => a.some((e) => eqAddr(e.tx, chainTx) && e.state === "settled"));
    const e = ledger.find((x) => eqAddr(x.tx, chainTx));
    info(`ledger entry${label}`, e ?? null);
    if (!e) fail(`ledger: no payment with tx ${chainTx} in \`x402d payments --json\` (newest: ${JSON.stringify(ledger[0] ?? null)})`);
    p.expect(e.state === "settled", `ledger state ${e.state}, expected settled`);
    p.expect(e.amount_atomic === String(price.atomic) && usdToAtomic(e.amount) === price.atomic, `ledger amount ${e.amount}/${e.amount_atomic}, expected ${price.usd}/${price.atomic}`);
    p.expect(e.network === NETWORK, `ledger network ${e.network}, expected ${NETWORK}`);
    p.expect(eqAddr(e.pay_to, PAY_TO), `ledger pay_to ${e.pay_to}, expected ${PAY_TO}`);
    p.expect(eqAddr(e.nonce, chainNonce), `ledger nonce ${e.nonce} != on-chain nonce ${chainNonce}`);
    p.expect(e.route === undefined || e.route === price.path, `ledger route ${e.route}, expected ${price.path}`);
    if (model !== undefined) p.expect(e.model === model, `ledger model ${JSON.stringify(e.model)}, expected ${JSON.stringify(model)}`);
  });
  return { paid, chainTx, moved };
}

/** The on-chain / seller / ledger cross-check of `n` paid calls made after snapshot `s0` and tap index `tap0`, all at
 *  `price`: exactly n x price.atomic moved in n AuthorizationUsed + n Transfer logs; the seller saw exactly n paid
 *  requests, each on `price.path` with a PAYMENT-RESPONSE tx among those on-chain txs (all distinct); x402d's ledger
 *  has each `settled` with that tx. Failures go into `p`; returns the seller's paid records (oldest first). */
export async function verifyPaidN(p, { inst, s0, tap0, price, n, label = "" }) {
  const s1 = await snapshot(s0.payer, s0.payTo);
  const logs = await authLogsSince(s0);
  const transfers = await transfersSince(s0);
  const N = BigInt(n);
  const moved = { payer: s0.payerBal - s1.payerBal, payTo: s1.payToBal - s0.payToBal };
  info(`chain${label}`, { moved, authorizationUsed: logs.map((l) => ({ tx: l.transactionHash, nonce: l.args.nonce })) });
  p.expect(moved.payer === N * price.atomic && moved.payTo === N * price.atomic,
    `balance deltas payer -${moved.payer} payTo +${moved.payTo}, expected exactly ${N * price.atomic} (${n} x ${price.atomic})`);
  p.expect(logs.length === n && transfers.length === n && transfers.every((t) => t.args.value === price.atomic),
    `${logs.length} AuthorizationUsed / ${transfers.length} transfers, expected ${n} of ${price.atomic}`);
  const chainTxs = new Set(logs.map((l) => l.transactionHash));
  const paid = await tapWaitPaid(tap0, n, inst.tap);
  info(`seller saw${label}`, paid.map((r) => ({ path: r.path, status: r.status, settle: r.settle })));
  p.expect(paid.length === n, `seller saw ${paid.length} paid requests, expected ${n}`);
  const txs = paid.map((r) => r.settle?.transaction);
  p.expect(txs.every((tx) => tx && chainTxs.has(tx)) && new Set(txs).size === txs.length,
    `seller PAYMENT-RESPONSE txs ${JSON.stringify(txs)} are not ${n} distinct on-chain AuthorizationUsed txs`);
  p.expect(paid.every((r) => r.path === price.path), `seller paid paths ${JSON.stringify(paid.map((r) => r.path))}, expected ${price.path}`);
  await p.attempt(async () => {
    const ledger = await paymentsWait(inst.config, (a) => txs.every((tx) => a.some((e) => eqAddr(e.tx, tx) && e.state === "settled")));
    for (const tx of txs) {
      const e = ledger.find((x) => eqAddr(x.tx, tx));
      p.expect(e && e.state === "settled" && usdToAtomic(e.amount) === price.atomic, `ledger: entry for tx ${tx}: ${JSON.stringify(e ?? null)}`);
    }
  });
  return paid;
}
