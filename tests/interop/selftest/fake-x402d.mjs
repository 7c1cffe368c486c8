// A deliberately small stand-in for x402d that follows the CLI/HTTP contract the interop checks code against.
// It exists ONLY to self-test the suite (prove the checks pass on a conforming implementation and that their
// assertions are wired correctly):   X402D_BIN=tests/interop/selftest/fake-x402d bash tests/interop/run.sh
// It is not x402d and proves nothing about x402d. Wallet key in the kernel session keyring via keyctl(1).
// Knobs to exercise the checks' failure paths: FAKE_X402D_NO_STREAM=1 (OpenAI-shaped 400 for stream requests),
// FAKE_X402D_NO_LEDGER=1 (no `payments` command).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { Readable } from "node:stream";
import { x402Client, x402HTTPClient } from "@x402/core/client";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { ExactEvmSchemeV1 } from "@x402/evm/exact/v1/client";
import { privateKeyToAccount } from "viem/accounts";

const USAGE = `fake-x402d (interop self-test stand-in)
usage: fake-x402d --config FILE <command>
commands: serve | wallet import | wallet address | wallet remove --yes | payments --json [--app NAME] [--limit N]`;
const V1_NAMES = { "base-sepolia": "eip155:84532", base: "eip155:8453" };

// ---- minimal TOML subset: [a.b] tables, key = "str" | ["a", "b"], quoted keys ----
function parseToml(text) {
  const root = {}; let cur = root;
  for (let line of text.split("\n")) {
    line = line.replace(/\s+#.*$/, "").trim();
    if (!line || line.startsWith("#")) continue;
    let m = /^\[([^\]]+)\]$/.exec(line);
    if (m) { cur = root; for (const k of m[1].split(".").map((s) => s.trim().replace(/^"|"$/g, ""))) cur = cur[k] ??= {}; continue; }
    m = /^("([^"]+)"|[A-Za-z0-9_-]+)\s*=\s*(.+)$/.exec(line);
    if (!m) throw new Error(`config: cannot parse line: ${line}`);
    cur[m[2] ?? m[1]] = JSON.parse(m[3]);
  }
  return root;
}

const argv = process.argv.slice(2);
if (!argv.length || argv.includes("--help") || argv.includes("-h")) { console.log(USAGE); process.exit(0); }
const ci = argv.indexOf("--config");
if (ci < 0) { console.error("--config FILE is required"); process.exit(2); }
const cfg = parseToml(fs.readFileSync(argv[ci + 1], "utf8"));
const rest = argv.filter((_, i) => i !== ci && i !== ci + 1);
const keyDesc = `x402d:${cfg.wallet?.keyring_service}:${cfg.wallet?.keyring_user}`;
const ledgerFile = path.join(cfg.state_dir, "fake-ledger.json");
const readLedger = () => (fs.existsSync(ledgerFile) ? JSON.parse(fs.readFileSync(ledgerFile, "utf8")) : []);

function loadKey() {
  const id = execFileSync("keyctl", ["search", "@s", "user", keyDesc], { encoding: "utf8" }).trim();
  return execFileSync("keyctl", ["pipe", id], { encoding: "utf8" }).trim();
}

const [cmd, sub] = rest;
if (cmd === "wallet" && sub === "import") {
  const key = fs.readFileSync(0, "utf8").trim();
  if (!/^0x[0-9a-fA-F]{64}$/.test(key)) { console.error("expected a 0x-hex private key on stdin"); process.exit(1); }
  execFileSync("keyctl", ["padd", "user", keyDesc, "@s"], { input: key, stdio: ["pipe", "ignore", "inherit"] });
  console.log(`imported ${privateKeyToAccount(key).address}`);
} else if (cmd === "wallet" && sub === "address") {
  let key;
  try { key = loadKey(); } catch { console.error(`no wallet key in the keyring entry (${keyDesc})`); process.exit(1); }
  console.log(privateKeyToAccount(key).address);
} else if (cmd === "wallet" && sub === "remove") {
  try {
    const id = execFileSync("keyctl", ["search", "@s", "user", keyDesc], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    execFileSync("keyctl", ["invalidate", id]);
    console.error(`removed the wallet key (${keyDesc})`);
  } catch { console.error(`no wallet key in the keyring entry (${keyDesc})`); }
} else if (cmd === "payments" && process.env.FAKE_X402D_NO_LEDGER === "1") {
  console.error("error: unrecognized subcommand 'payments'"); process.exit(2);
} else if (cmd === "payments") {
  const opt = (n) => { const i = rest.indexOf(n); return i >= 0 ? rest[i + 1] : undefined; };
  let list = readLedger().reverse();
  if (opt("--app")) list = list.filter((e) => e.app === opt("--app"));
  console.log(JSON.stringify(list.slice(0, Number(opt("--limit") || 50)), null, 2));
} else if (cmd === "serve") {
  serve();
} else { console.error(USAGE); process.exit(2); }

function serve() {
  fs.mkdirSync(cfg.state_dir, { recursive: true });
  const account = privateKeyToAccount(loadKey());
  const client = new x402Client().register("eip155:*", new ExactEvmScheme(account));
  for (const n of Object.keys(V1_NAMES)) client.registerV1(n, new ExactEvmSchemeV1(account));
  const httpClient = new x402HTTPClient(client);
  const ledger = readLedger();
  const save = () => { fs.writeFileSync(ledgerFile + ".tmp", JSON.stringify(ledger)); fs.renameSync(ledgerFile + ".tmp", ledgerFile); };
  const micro = (usd) => { const [i, f = ""] = String(usd).split("."); return BigInt(i) * 1_000_000n + BigInt((f + "000000").slice(0, 6)); };
  const usd = (atomic) => { const a = BigInt(atomic); return `${a / 1_000_000n}.${String(a % 1_000_000n).padStart(6, "0")}`.replace(/0+$/, "").replace(/\.$/, ".0"); };
  const apps = cfg.apps || {};
  const allowed = new Set(cfg.payment?.networks || []);

  const oaiError = (res, status, code, message, extra = {}) => {
    res.writeHead(status, { "content-type": "application/json", "x-x402d-error": code, ...extra });
    res.end(JSON.stringify({ error: { message, type: code, param: null, code } }));
  };

  http.createServer(async (req, res) => {
    const chunks = []; for await (const c of req) chunks.push(c);
    const body = chunks.length ? Buffer.concat(chunks) : undefined;
    const auth = (req.headers.authorization || "").replace(/^Bearer\s+/i, "");
    const appName = Object.entries(apps).find(([, a]) => a.api_key === auth)?.[0] || "default";
    const app = apps[appName] || {};
    let model = null; try { model = JSON.parse(body?.toString() || "{}").model ?? null; } catch { /* not JSON */ }
    if (process.env.FAKE_X402D_NO_STREAM === "1" && /"stream"\s*:\s*true/.test(body?.toString() || ""))
      return oaiError(res, 400, "stream_unsupported", "streaming is not supported", { "x-should-retry": "false" });
    const headers = {};
    for (const [k, v] of Object.entries(req.headers)) if (!["host", "connection", "content-length", "authorization"].includes(k)) headers[k] = v;
    const url = cfg.upstream + req.url;
    const send = (up, cost) => {
      const h = { "x-x402d-cost": cost };
      up.headers.forEach((v, k) => { if (!["content-length", "transfer-encoding", "connection", "content-encoding"].includes(k)) h[k] = v; });
      res.writeHead(up.status, h);
      if (up.body) Readable.fromWeb(up.body).pipe(res); else res.end();
    };
    let up;
    try { up = await fetch(url, { method: req.method, headers, body }); } catch (e) { return oaiError(res, 502, "upstream_unreachable", `upstream: ${e.message}`); }
    if (up.status !== 402) return send(up, "0");
    let pr;
    try {
      const text = await up.text(); let j; try { j = JSON.parse(text); } catch { /* v2 body {} */ }
      pr = httpClient.getPaymentRequiredResponse((n) => up.headers.get(n), j);
    } catch (e) { return oaiError(res, 502, "bad_payment_required", e.message); }
    const accept = pr.accepts.find((a) => allowed.has(V1_NAMES[a.network] || a.network));
    if (!accept) return oaiError(res, 402, "no_acceptable_network", "no offer on an allowed network", { "x-should-retry": "false" });
    const atomic = BigInt(accept.amount ?? accept.maxAmountRequired);
    for (const [lim, what] of [[cfg.payment?.max_per_call, "max_per_call"], [app.max_per_call, `apps.${appName}.max_per_call`]])
      if (lim != null && atomic > micro(lim)) return oaiError(res, 402, "budget_exceeded", `price $${usd(atomic)} exceeds ${what} $${lim}`, { "x-should-retry": "false" });
    if (app.daily != null) {
      const day = new Date().toISOString().slice(0, 10);
      const spent = ledger.filter((e) => e.app === appName && e.time.startsWith(day) && ["reserved", "signed", "settled", "at_risk"].includes(e.state))
        .reduce((s, e) => s + BigInt(e.amount_atomic), 0n);
      if (spent + atomic > micro(app.daily)) return oaiError(res, 402, "budget_exceeded", `daily budget $${app.daily} of app ${appName} exhausted`, { "x-should-retry": "false" });
    }
    const entry = { id: String(ledger.length + 1), time: new Date().toISOString(), app: appName, model, amount: usd(atomic), amount_atomic: String(atomic),
      network: V1_NAMES[accept.network] || accept.network, pay_to: accept.payTo, nonce: null, state: "reserved", tx: null };
    ledger.push(entry); save();
    let paid;
    try {
      const payload = await client.createPaymentPayload({ ...pr, accepts: [accept] });
      entry.nonce = payload.payload?.authorization?.nonce ?? null; entry.state = "signed"; save();
      paid = await fetch(url, { method: req.method, headers: { ...headers, ...httpClient.encodePaymentSignatureHeader(payload) }, body });
    } catch (e) { entry.state = "at_risk"; save(); return oaiError(res, 502, "payment_failed", e.message); }
    let settle = null; try { settle = httpClient.getPaymentSettleResponse((n) => paid.headers.get(n)); } catch { /* none */ }
    if (paid.ok && settle?.success) { entry.state = "settled"; entry.tx = settle.transaction; save(); return send(paid, entry.amount); }
    entry.state = paid.status === 402 ? "rejected" : "at_risk"; save();
    oaiError(res, 502, "payment_rejected", `seller answered HTTP ${paid.status} to the paid request: ${(await paid.text()).slice(0, 200)}`, { "x-should-retry": "false" });
  }).listen(Number(cfg.listen.split(":").pop()), cfg.listen.split(":")[0], () => console.log(`fake-x402d on ${cfg.listen} -> ${cfg.upstream} as ${account.address}`));
}
