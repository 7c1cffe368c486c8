// The resolver against a real chain whose clock is behind the host's (issue 12, item 1).
// run.sh starts a second anvil with --timestamp two minutes in the past (--block-time 1, so its head follows
// its own clock) and an x402d ("resolve", resolve_every_secs = 1) whose [payment.rpc] is RESOLVE_RPC_URL: a
// JSON-RPC proxy this check serves in front of that anvil, counting and recording every call. This check also
// is the seller (RESOLVE_SELLER_PORT): it asks $0.001 with maxTimeoutSeconds 10, keeps the PAYMENT-SIGNATURE
// and answers 500, so x402d records the payment at_risk while the seller holds a valid authorization.
//   1. Local clock past validBefore, chain clock not: x402d must NOT release (a transfer can still be mined).
//      The seller then settles late (transferWithAuthorization on chain): x402d marks it settled.
//   2. A second at_risk payment, local clock past validBefore, then the chain's time is moved past it
//      (evm_increaseTime + evm_mine) with the nonce unused: released, and the chain indeed refuses the transfer.
//   Every authorizationState read names a block number, not "latest"; /metrics counts both outcomes.
import http from "node:http";
import { createPublicClient, createWalletClient, createTestClient, http as viemHttp, parseAbi } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { USDC, PAY_TO, FACILITATOR_KEY, X402D_PAYER, localChain, b64json } from "../lib/common.mjs";
import { main, assert, fail, info, note, payments, eqAddr, sleep, env } from "../lib/check.mjs";

const CHAIN_URL = env("PAST_RPC_URL");
const X402D_URL = env("X402D_RESOLVE_URL");
const CONFIG = env("X402D_RESOLVE_CONFIG");
const SELLER_PORT = Number(env("RESOLVE_SELLER_PORT"));
const PROXY_PORT = Number(env("RESOLVE_RPC_PORT"));
const AUTH_STATE = "0xe94a0102"; // authorizationState(address,bytes32)

const transport = viemHttp(CHAIN_URL);
const pub = createPublicClient({ chain: localChain, transport, pollingInterval: 50 });
const test = createTestClient({ mode: "anvil", chain: localChain, transport });
const relayer = createWalletClient({ account: privateKeyToAccount(FACILITATOR_KEY), chain: localChain, transport });
const abi = parseAbi([
  "function authorizationState(address authorizer, bytes32 nonce) view returns (bool)",
  "function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature)",
]);
const nowS = () => Math.floor(Date.now() / 1000);
const head = () => pub.getBlock({ blockTag: "latest" });

// ---- the JSON-RPC proxy x402d resolves through ----
const reads = []; // { tag, at } per authorizationState eth_call
const methods = {};
http.createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const body = Buffer.concat(chunks).toString("utf8");
  try {
    for (const m of [JSON.parse(body)].flat()) {
      methods[m.method] = (methods[m.method] || 0) + 1;
      if (m.method === "eth_call" && String(m.params?.[0]?.data).startsWith(AUTH_STATE)) reads.push({ tag: m.params[1], at: nowS() });
    }
  } catch { /* forwarded as is */ }
  const up = await fetch(CHAIN_URL, { method: "POST", headers: { "content-type": "application/json" }, body });
  res.writeHead(up.status, { "content-type": "application/json" });
  res.end(await up.text());
}).listen(PROXY_PORT, "127.0.0.1");

// ---- the seller: takes the payment, answers 500, keeps the authorization ----
const held = []; // decoded PAYMENT-SIGNATURE payloads
const ACCEPT = { scheme: "exact", network: "eip155:84532", amount: "1000", asset: USDC, payTo: PAY_TO, maxTimeoutSeconds: 10,
  extra: { name: "USDC", version: "2" } };
http.createServer(async (req, res) => {
  for await (const _ of req); // drain
  const json = (status, obj, headers = {}) => { res.writeHead(status, { "content-type": "application/json", ...headers }); res.end(JSON.stringify(obj)); };
  if (req.method === "GET" && req.url === "/v1/models") return json(200, { object: "list", data: [{ id: "gpt-4o-mini", object: "model", created: 0, owned_by: "late-seller" }] });
  const sig = req.headers["payment-signature"];
  if (!sig) return json(402, {}, { "payment-required": Buffer.from(JSON.stringify({ x402Version: 2, error: "Payment required",
    resource: { url: `http://127.0.0.1:${SELLER_PORT}/v1/chat/completions`, description: "late settler", mimeType: "application/json" }, accepts: [ACCEPT] })).toString("base64") });
  held.push(b64json(sig).payload);
  json(500, { error: { message: "took the payment, failed the call (will settle later)", type: "server_error", param: null, code: null } });
}).listen(SELLER_PORT, "127.0.0.1");

/** One call through x402d that ends at_risk; returns its ledger entry and the authorization the seller holds. */
async function atRiskCall(tag) {
  const r = await fetch(`${X402D_URL}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer sk-resolve" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: tag }] }) });
  const state = r.headers.get("x-x402d-payment-state");
  info(`${tag}: x402d answered`, { status: r.status, state, body: (await r.text()).slice(0, 200) });
  assert(r.status === 500 && state === "at_risk", `${tag}: x402d answered ${r.status} with payment state ${state}, expected 500 at_risk`);
  const auth = held.at(-1)?.authorization;
  assert(auth, `${tag}: the seller got no PAYMENT-SIGNATURE`);
  const entry = (await payments(CONFIG)).find((e) => eqAddr(e.nonce, auth.nonce));
  assert(entry?.state === "at_risk", `${tag}: ledger entry ${JSON.stringify(entry)}, expected at_risk with nonce ${auth.nonce}`);
  assert(Number(auth.validBefore) === entry.valid_before, `${tag}: ledger validBefore ${entry.valid_before} != signed ${auth.validBefore}`);
  return { entry, auth, signature: held.at(-1).signature };
}

async function waitState(id, want, ms = 30_000) {
  const t = Date.now();
  for (;;) {
    const e = (await payments(CONFIG)).find((x) => x.id === id);
    if (e?.state === want) return e;
    if (Date.now() - t > ms) fail(`payment ${id} is ${e?.state} after ${ms / 1000}s, expected ${want} (rpc calls: ${JSON.stringify(methods)})`);
    await sleep(200);
  }
}

/** Waits until the local clock is past validBefore, then for 3 more authorizationState reads; the payment must
 *  still be at_risk, with the chain's head still before validBefore. */
async function notReleasedOnLocalClock(tag, entry) {
  const vb = entry.valid_before;
  while (nowS() <= vb + 1) await sleep(200);
  // A resolver with nothing left to resolve stops reading: then the state check below says why.
  const n0 = reads.length;
  for (const t = Date.now(); reads.length < n0 + 3 && Date.now() - t < 20_000;) await sleep(100);
  const h = await head();
  info(`${tag}: after validBefore by the local clock`, { validBefore: vb, local: nowS(), chainHead: Number(h.timestamp), reads: reads.length - n0 });
  assert(Number(h.timestamp) < vb, `${tag}: the chain's clock already passed validBefore (head ${h.timestamp} >= ${vb}); the test chain is not behind`);
  const e = (await payments(CONFIG)).find((x) => x.id === entry.id);
  assert(e.state === "at_risk", `${tag}: x402d made it ${e.state} when only the local clock had passed validBefore (chain time ${h.timestamp} < ${vb}): the seller can still settle it`);
  assert(reads.length >= n0 + 3, `${tag}: x402d made ${reads.length - n0} authorizationState reads in 20 s after validBefore (rpc calls: ${JSON.stringify(methods)})`);
}

const metricLine = (state) => `x402d_payments_total{app="default",network="eip155:84532",state="${state}"} 1`;

main(async () => {
  const h0 = await head();
  const behind = nowS() - Number(h0.timestamp);
  info("chain clock", { head: Number(h0.number), chainTime: Number(h0.timestamp), hostTime: nowS(), behind });
  assert(behind >= 60, "the test chain's clock is not behind the host's (anvil --timestamp)");

  // 1. Late settlement.
  const a = await atRiskCall("late-settle");
  await notReleasedOnLocalClock("late-settle", a.entry);
  const hash = await relayer.writeContract({ address: USDC, abi, functionName: "transferWithAuthorization",
    args: [a.auth.from, a.auth.to, BigInt(a.auth.value), BigInt(a.auth.validAfter), BigInt(a.auth.validBefore), a.auth.nonce, a.signature] });
  const rc = await pub.waitForTransactionReceipt({ hash, pollingInterval: 50 });
  info("seller settled late", { tx: hash, block: Number(rc.blockNumber), status: rc.status });
  assert(rc.status === "success", `the late transferWithAuthorization failed: ${rc.status}`);
  await waitState(a.entry.id, "settled");

  // 2. Expired unused, by the chain's clock.
  const b = await atRiskCall("expire");
  await notReleasedOnLocalClock("expire", b.entry);
  const lag = b.entry.valid_before - Number((await head()).timestamp) + 2;
  await test.increaseTime({ seconds: lag });
  await test.mine({ blocks: 1 });
  const h2 = await head();
  info("chain clock moved", { by: lag, chainTime: Number(h2.timestamp), validBefore: b.entry.valid_before });
  assert(Number(h2.timestamp) >= b.entry.valid_before, "evm_increaseTime did not move the chain past validBefore");
  await waitState(b.entry.id, "released");
  assert(!(await pub.readContract({ address: USDC, abi, functionName: "authorizationState", args: [X402D_PAYER, b.auth.nonce] })), "the released nonce is used on chain");
  let refused = "";
  try {
    await pub.simulateContract({ account: relayer.account, address: USDC, abi, functionName: "transferWithAuthorization",
      args: [b.auth.from, b.auth.to, BigInt(b.auth.value), BigInt(b.auth.validAfter), BigInt(b.auth.validBefore), b.auth.nonce, b.signature] });
  } catch (e) { refused = e.shortMessage || e.message; }
  info("late settle of the released one", refused);
  assert(/expired/.test(refused), `the chain would still accept the released authorization: ${refused || "simulation succeeded"}`);

  // Block tags and metrics.
  const tags = [...new Set(reads.map((r) => r.tag))];
  info("authorizationState block tags", { reads: reads.length, distinct: tags.length, sample: tags.slice(0, 5), methods });
  assert(reads.length > 0 && reads.every((r) => /^0x[0-9a-f]+$/.test(String(r.tag))), `authorizationState read at ${JSON.stringify(tags.filter((t) => !/^0x[0-9a-f]+$/.test(String(t))))}, expected block numbers`);
  assert(methods.eth_chainId === 1, `eth_chainId asked ${methods.eth_chainId} times, expected once per RPC URL`);
  const m = await (await fetch(`${X402D_URL}/metrics`)).text();
  for (const s of ["settled", "released"]) assert(m.includes(metricLine(s)), `/metrics lacks ${metricLine(s)}`);
  note(`chain ${behind}s behind the host: not released on the local clock; settled late on chain -> settled; chain time past validBefore -> released (${reads.length} reads, all at block numbers)`);
});
