// Solana checks: the local chain (solana/chain.mjs, LiteSVM behind JSON-RPC), @x402/svm's facilitator and an
// @x402/express seller with SVM `accepts` (solana/seller.mjs); through x402d, driven by openai-python.
//   solana.mjs stack-402        unpaid calls get Coinbase's 402 with the SVM requirements (devnet USDC, feePayer)
//   solana.mjs stack            Coinbase's own client (@x402/fetch + @x402/svm) pays the seller directly: settled on chain
//   solana.mjs wallet           x402d wallet import --solana / wallet address --solana
//   solana.mjs paid [--stream]  one openai-python call through x402d "sol": exactly the price moved payer ATA -> payTo ATA
//                               in one TransferChecked with a memo, the seller's PAYMENT-RESPONSE is that signature, the
//                               ledger has it settled (payer base58, nonce = memo, tx = signature)
//   solana.mjs cap              x402d "solcap" ([apps.capped] daily 0.003): 3 calls pay, the 4th is budget_exceeded
//   solana.mjs doctor           `x402d doctor` on "sol": Solana wallet, RPC and the wallet's USDC token account with the
//                               balance the chain has
//   solana.mjs network-order    a seller offering both networks is paid on the first of x402d's payment.networks
//                               (x402d "sol": Solana first, on /v1/pro/ listing base-sepolia first; "solevm": base-sepolia
//                               first, on /v1/premium/ listing Solana first)
import { parseArgs } from "node:util";
import { wrapFetchWithPayment, decodePaymentResponseHeader } from "@x402/fetch";
import { x402Client } from "@x402/core/client";
import { ExactSvmScheme } from "@x402/svm/exact/client";
import { PAY_TO as EVM_PAY_TO, NETWORK as EVM_NETWORK, X402D_PAYER_KEY, snapshot as evmSnapshot, transfersSince as evmTransfersSince, b64json } from "../lib/common.mjs";
import { main, assert, fail, info, note, env, driver, hdr, tapRead, tapPaidSince, tapWaitPaid, paymentsWait, payments, usdToAtomic, Problems } from "../lib/check.mjs";
import { SOLANA_RPC_URL, SOL_NETWORK, SOL_PRICES, USDC_MINT, ata, keys, lamportsOf, solSnapshot, solTxsSince, usdcOf } from "../solana/common.mjs";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const { values: o, positionals } = parseArgs({ allowPositionals: true, options: { stream: { type: "boolean", default: false } } });
const SELLER = () => env("SOL_SELLER_URL");
const TAP = () => env("SOL_SELLER_TAP");
const inst = (name) => ({ name, url: env(`X402D_${name.toUpperCase()}_URL`), config: env(`X402D_${name.toUpperCase()}_CONFIG`), tap: TAP() });
const chatInit = (content, headers = {}) => ({ method: "POST", headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content }] }) });

/** The on-chain / seller / ledger cross-check of `n` Solana payments at `price` made after snapshot `s0` and tap
 *  index `tap0`: exactly n x price moved payer ATA -> payTo ATA in n successful transactions, each one TransferChecked
 *  of the USDC mint authorized by the payer with one memo, fee paid by the facilitator; the payer's SOL untouched; the
 *  seller's PAYMENT-RESPONSE txs are those signatures; with `config`, x402d's ledger has each settled. */
async function verifySolPaid(p, { s0, tap0, price, n = 1, config, label = "" }) {
  const s1 = await solSnapshot(s0.payer, s0.payTo);
  const txs = await solTxsSince(s0);
  const moved = { payer: s0.payerBal - s1.payerBal, payTo: s1.payToBal - s0.payToBal };
  info(`chain${label}`, { moved, payerSol: [s0.payerSol, s1.payerSol], txs });
  const N = BigInt(n);
  p.expect(moved.payer === N * price.atomic && moved.payTo === N * price.atomic,
    `USDC deltas payer -${moved.payer} payTo +${moved.payTo}, expected exactly ${N * price.atomic} (${n} x ${price.atomic})`);
  p.expect(txs.length === n, `${txs.length} transactions on payTo's token account, expected ${n}`);
  for (const t of txs) {
    p.expect(!t.err, `tx ${t.signature} failed on chain: ${JSON.stringify(t.err)}`);
    p.expect(t.transfers.length === 1 && t.transfers[0].amount === price.atomic && t.transfers[0].mint === USDC_MINT
      && t.transfers[0].authority === s0.payer && t.transfers[0].source === s0.payerAta && t.transfers[0].destination === s0.payToAta,
    `tx ${t.signature}: transfers ${JSON.stringify(t.transfers, (_k, v) => (typeof v === "bigint" ? String(v) : v))}, expected one TransferChecked of ${price.atomic} ${USDC_MINT} ${s0.payerAta} -> ${s0.payToAta} by ${s0.payer}`);
    p.expect(t.memos.length === 1 && t.memo, `tx ${t.signature}: memos ${JSON.stringify(t.memos)}, expected exactly one`);
    p.expect(t.feePayer === keys.feePayer.address, `tx ${t.signature}: fee payer ${t.feePayer}, expected the facilitator's ${keys.feePayer.address}`);
  }
  p.expect(s1.payerSol === s0.payerSol, `payer's SOL changed ${s0.payerSol} -> ${s1.payerSol}: fees are the facilitator's`);
  const sigs = new Set(txs.map((t) => t.signature));
  const paid = await tapWaitPaid(tap0, n, TAP());
  info(`seller saw${label}`, paid.map((r) => ({ path: r.path, status: r.status, settle: r.settle })));
  p.expect(paid.length === n, `seller saw ${paid.length} paid requests, expected ${n}`);
  for (const r of paid) {
    p.expect(r.settle?.success && sigs.has(r.settle.transaction), `seller PAYMENT-RESPONSE ${JSON.stringify(r.settle)} is not one of the on-chain signatures`);
    p.expect(r.signature?.accepted?.network === SOL_NETWORK, `PAYMENT-SIGNATURE accepted network ${r.signature?.accepted?.network}, expected ${SOL_NETWORK}`);
  }
  if (config) await p.attempt(async () => {
    // Found by its nonce (the memo), then every field compared, the signature included.
    const ledger = await paymentsWait(config, (a) => txs.every((t) => a.some((e) => e.nonce === t.memos[0] && e.state === "settled" && e.tx === t.signature)));
    for (const t of txs) {
      const e = ledger.find((x) => x.nonce === t.memos[0]);
      info(`ledger entry${label}`, e ?? null);
      if (!e) { p.expect(false, `ledger: no payment with nonce = the memo ${t.memos[0]} in \`x402d payments --json\` (newest: ${JSON.stringify(ledger[0] ?? null)})`); continue; }
      p.expect(e.state === "settled", `ledger: state ${e.state}, expected settled`);
      p.expect(e.tx === t.signature, `ledger: tx ${JSON.stringify(e.tx)}, expected the on-chain signature ${t.signature} (the seller's PAYMENT-RESPONSE has it)`);
      p.expect(e.network === SOL_NETWORK, `ledger: network ${e.network}, expected ${SOL_NETWORK}`);
      p.expect(e.amount_atomic === String(price.atomic) && usdToAtomic(e.amount) === price.atomic, `ledger: amount ${e.amount}/${e.amount_atomic}, expected ${price.usd}`);
      p.expect(e.pay_to === s0.payTo, `ledger: pay_to ${e.pay_to}, expected ${s0.payTo}`);
      if ("payer" in e) p.expect(e.payer === s0.payer, `ledger: payer ${e.payer}, expected ${s0.payer}`);
    }
  });
  return { txs, paid };
}

async function stack402() {
  const p = new Problems();
  const res = await fetch(SELLER() + SOL_PRICES.base.path, chatInit("stack 402"));
  const pr = res.headers.get("payment-required");
  assert(res.status === 402 && pr, `unpaid POST ${SOL_PRICES.base.path}: ${res.status}, payment-required ${pr ? "present" : "missing"}`);
  const req = b64json(pr);
  info("PAYMENT-REQUIRED", req);
  const acc = req.accepts?.[0];
  p.expect(req.x402Version === 2 && req.accepts.length === 1 && acc?.scheme === "exact" && acc.network === SOL_NETWORK, `requirements ${JSON.stringify(req.accepts)}`);
  p.expect(acc?.asset === USDC_MINT && acc.amount === String(SOL_PRICES.base.atomic) && acc.payTo === keys.payTo.address,
    `asset/amount/payTo ${acc?.asset} ${acc?.amount} ${acc?.payTo}, expected ${USDC_MINT} ${SOL_PRICES.base.atomic} ${keys.payTo.address}`);
  p.expect(acc?.extra?.feePayer === keys.feePayer.address, `extra.feePayer ${acc?.extra?.feePayer}, expected ${keys.feePayer.address}`);
  const dual = b64json((await fetch(SELLER() + SOL_PRICES.dual.path, chatInit("stack 402"))).headers.get("payment-required") || "e30=");
  info("dual PAYMENT-REQUIRED", dual);
  p.expect(JSON.stringify(dual.accepts?.map((a) => a.network)) === JSON.stringify([EVM_NETWORK, SOL_NETWORK]), `dual route networks ${JSON.stringify(dual.accepts?.map((a) => a.network))}`);
  const dualSol = b64json((await fetch(SELLER() + SOL_PRICES.dualSol.path, chatInit("stack 402"))).headers.get("payment-required") || "e30=");
  p.expect(JSON.stringify(dualSol.accepts?.map((a) => a.network)) === JSON.stringify([SOL_NETWORK, EVM_NETWORK]), `dual-sol route networks ${JSON.stringify(dualSol.accepts?.map((a) => a.network))}`);
  p.done();
}

async function stack() {
  const payer = keys.stackPayer;
  const client = new x402Client().register("solana:*", new ExactSvmScheme(payer.signer, { rpcUrl: SOLANA_RPC_URL }));
  const s0 = await solSnapshot(payer.address);
  const fee0 = await lamportsOf(keys.feePayer.address);
  const tap0 = tapRead(TAP()).length;
  const res = await wrapFetchWithPayment(fetch, client)(SELLER() + SOL_PRICES.base.path, chatInit("solana stack self-test"));
  const body = await res.json().catch(() => null);
  const prh = res.headers.get("payment-response");
  const settle = prh ? decodePaymentResponseHeader(prh) : null;
  info("response", { status: res.status, body, settle });
  assert(res.status === 200, `paid call returned ${res.status}: ${JSON.stringify(body)}`);
  const p = new Problems();
  p.expect(body?.choices?.[0]?.message?.content === "echo: solana stack self-test", `content ${JSON.stringify(body?.choices?.[0]?.message)}`);
  p.expect(settle?.success && settle.transaction, `PAYMENT-RESPONSE ${JSON.stringify(settle)}`);
  const { txs } = await verifySolPaid(p, { s0, tap0, price: SOL_PRICES.base });
  const fee1 = await lamportsOf(keys.feePayer.address);
  p.expect(fee1 < fee0, `facilitator's SOL ${fee0} -> ${fee1}: it should have paid the fee`);
  note(`Coinbase's @x402/svm client paid ${SOL_PRICES.base.atomic} atomic USDC in ${txs[0]?.signature} (memo ${txs[0]?.memo}); facilitator fee ${fee0 - fee1} lamports`);
  p.done();
}

async function paid() {
  const x = inst("sol");
  const s0 = await solSnapshot();
  const tap0 = tapRead(TAP()).length;
  let message = `interop solana ${o.stream ? "stream " : ""}#${Date.now()}`;
  if (o.stream) message += " | " + "héllo wörld ✓ 🚀 ".repeat(20);
  const [rec] = await driver("py", { base_url: `${x.url}/v1`, model: "gpt-4o-mini", message, stream: o.stream });
  assert(rec.ok, `${rec.sdk} call failed: HTTP ${rec.http_status} ${rec.exc}: ${rec.message || JSON.stringify(rec.body)?.slice(0, 300)}`);
  const p = new Problems();
  p.expect(rec.content === `echo: ${message}`, `content ${JSON.stringify(rec.content)?.slice(0, 120)}, expected the seller's echo`);
  if (o.stream) p.expect(/^text\/event-stream/.test(hdr(rec, "content-type") || ""), `content-type ${hdr(rec, "content-type")}, expected text/event-stream`);
  const cost = hdr(rec, "x-x402d-cost");
  p.expect(usdToAtomic(cost) === SOL_PRICES.base.atomic, `x-x402d-cost ${JSON.stringify(cost)}, expected ${SOL_PRICES.base.usd}`);
  const { txs, paid: sellerPaid } = await verifySolPaid(p, { s0, tap0, price: SOL_PRICES.base, config: x.config });
  if (o.stream) p.expect(sellerPaid.at(-1)?.body?.stream === false, `x402d sent stream=${JSON.stringify(sellerPaid.at(-1)?.body?.stream)} upstream, expected false`);
  note(`paid ${SOL_PRICES.base.atomic} atomic USDC on ${SOL_NETWORK}: ${txs[0]?.signature} memo ${txs[0]?.memo}`);
  p.done();
}

async function cap() {
  const x = inst("solcap");
  const s0 = await solSnapshot();
  const tap0 = tapRead(TAP()).length;
  // One openai-python process, 4 sequential calls (messages "solana capped call 0".."3").
  const results = await driver("py", { base_url: `${x.url}/v1`, api_key: "sk-capped", model: "gpt-4o-mini", message: "solana capped call {i}", n: 4 });
  const p = new Problems();
  for (const [i, r] of results.slice(0, 3).entries())
    p.expect(r.ok && r.content === `echo: solana capped call ${i}`, `call ${i + 1}: HTTP ${r.http_status} ${r.exc || ""} ${JSON.stringify(r.body ?? r.content).slice(0, 200)}`);
  const r4 = results[3];
  const err4 = r4.body?.error ?? r4.body;
  p.expect(!r4.ok && r4.http_status === 402, `call 4: HTTP ${r4.http_status}, expected 402`);
  p.expect(err4?.type === "budget_exceeded" || err4?.code === "budget_exceeded", `call 4: error ${JSON.stringify(err4).slice(0, 200)}, expected budget_exceeded`);
  await verifySolPaid(p, { s0, tap0, price: SOL_PRICES.base, n: 3, config: x.config });
  await p.attempt(async () => {
    const ledger = await payments(x.config, ["--app", "capped"]);
    p.expect(ledger.filter((e) => e.state === "settled").length === 3, `ledger --app capped: ${ledger.filter((e) => e.state === "settled").length} settled, expected 3`);
  });
  p.done();
}

async function networkOrder() {
  const p = new Problems();
  // x402d "sol": networks ["solana-devnet", "base-sepolia"]; the route lists base-sepolia first -> must pay on Solana.
  for (const [instName, price, want] of [["sol", SOL_PRICES.dual, "solana"], ["solevm", SOL_PRICES.dualSol, "evm"]]) {
    const x = inst(instName);
    const s0 = await solSnapshot();
    const e0 = await evmSnapshot();
    const tap0 = tapRead(TAP()).length;
    const message = `network order ${instName} #${Date.now()}`;
    const [rec] = await driver("py", { base_url: `${x.url}${price.path.replace(/\/chat\/completions$/, "")}`, model: "gpt-4o-mini", message });
    if (!p.expect(rec.ok && rec.content === `echo: ${message}`, `${instName} on ${price.path}: HTTP ${rec.http_status} ${rec.exc || ""} ${JSON.stringify(rec.body ?? rec.content).slice(0, 200)}`)) continue;
    const evmTransfers = await evmTransfersSince(e0);
    const e1 = await evmSnapshot();
    if (want === "solana") {
      await verifySolPaid(p, { s0, tap0, price, config: x.config, label: ` (${instName})` });
      p.expect(evmTransfers.length === 0 && e1.payerBal === e0.payerBal, `${instName}: ${evmTransfers.length} EVM transfers, expected none (Solana is first in payment.networks)`);
    } else {
      const txs = await solTxsSince(s0);
      p.expect(txs.length === 0, `${instName}: ${txs.length} Solana transactions, expected none (base-sepolia is first in payment.networks)`);
      p.expect(evmTransfers.length === 1 && evmTransfers[0].args.value === price.atomic && e0.payerBal - e1.payerBal === price.atomic,
        `${instName}: EVM transfers [${evmTransfers.map((t) => t.args.value)}] payer -${e0.payerBal - e1.payerBal}, expected one of ${price.atomic}`);
      const sp = tapPaidSince(tap0, TAP());
      p.expect(sp.length === 1 && sp[0].signature?.accepted?.network === EVM_NETWORK && sp[0].settle?.success,
        `${instName}: seller saw ${JSON.stringify(sp.map((r) => ({ network: r.signature?.accepted?.network, settle: r.settle })))}, expected one settled ${EVM_NETWORK} payment`);
      await p.attempt(async () => {
        const tx = evmTransfers[0]?.transactionHash;
        const ledger = await paymentsWait(x.config, (a) => a.some((e) => e.tx?.toLowerCase() === tx?.toLowerCase() && e.state === "settled"));
        const e = ledger.find((l) => l.tx?.toLowerCase() === tx?.toLowerCase());
        p.expect(e?.state === "settled" && e.network === EVM_NETWORK && e.pay_to?.toLowerCase() === EVM_PAY_TO.toLowerCase(), `${instName}: ledger entry ${JSON.stringify(e ?? null)}`);
      });
    }
  }
  p.done();
}

async function wallet() {
  const cfg = env("X402D_SOL_CONFIG"), bin = env("X402D_BIN");
  const k = keys.x402d;
  const run = (args, input) => execFileSync(bin, ["--config", cfg, ...args], { input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] });
  let out;
  // The EVM key (anvil #3, the "main" instance's payer) for the dual routes' EVM side, then the Solana key.
  // From here on keyring-clean (run.sh) checks that wallet-sol is emptied at the end.
  fs.writeFileSync(path.join(path.dirname(cfg), ".wallet-imported"), "");
  try { run(["wallet", "import"], `${X402D_PAYER_KEY}\n`); } catch (e) { fail(`wallet import (EVM key) failed: ${(e.stderr || e.message).trim().slice(0, 300)}`); }
  try { out = run(["wallet", "import", "--solana"], `${k.secret}\n`); } catch (e) { fail(`wallet import --solana failed: ${(e.stderr || e.message).trim().slice(0, 300)}`); }
  info("import", out.trim());
  assert(!out.includes(k.secret), "wallet import --solana printed the secret key");
  let addr;
  try { addr = run(["wallet", "address", "--solana"]).trim(); } catch (e) { fail(`wallet address --solana failed: ${(e.stderr || e.message).trim().slice(0, 300)}`); }
  info("address", addr);
  assert(addr === k.address, `wallet address --solana printed ${JSON.stringify(addr)}, expected ${k.address}`);
}

async function doctor() {
  const cfg = env("X402D_SOL_CONFIG");
  let out;
  try { out = execFileSync(env("X402D_BIN"), ["--config", cfg, "doctor"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }); }
  catch (e) { out = `${e.stdout || ""}${e.stderr || ""}`; } // non-zero when e.g. the service is not installed: the lines below decide
  info("doctor", out);
  const line = (re) => out.split("\n").find((l) => re.test(l));
  const p = new Problems();
  const w = line(/^\S+\s+solana wallet/), r = line(/^\S+\s+solana rpc/), u = line(/^\S+\s+solana usdc/);
  p.expect(w?.startsWith("ok") && w.includes(keys.x402d.address), `doctor's Solana wallet line ${JSON.stringify(w)}, expected ok with ${keys.x402d.address}`);
  p.expect(r?.startsWith("ok") && r.includes(SOL_NETWORK), `doctor's Solana RPC line ${JSON.stringify(r)}, expected ok for ${SOL_NETWORK}`);
  const bal = await usdcOf(keys.x402d.address);
  const shown = Number(/balance \$([0-9.]+)/.exec(u || "")?.[1]);
  p.expect(u?.startsWith("ok") && u.includes(await ata(keys.x402d.address)) && Math.round(shown * 1e6) === Number(bal),
    `doctor's Solana USDC line ${JSON.stringify(u)}, expected ok with the token account ${await ata(keys.x402d.address)} and balance $${Number(bal) / 1e6}`);
  const bad = out.split("\n").filter((l) => /^FAIL/.test(l));
  p.expect(bad.length === 0, `doctor FAIL lines: ${JSON.stringify(bad)}`);
  p.done();
}

const parts = { "stack-402": stack402, stack, paid, cap, "network-order": networkOrder, wallet, doctor };
main(async () => {
  const part = parts[positionals[0]];
  if (!part) fail(`unknown part ${positionals[0]}; one of ${Object.keys(parts).join(", ")}`);
  await part();
});
