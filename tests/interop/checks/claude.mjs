// The Anthropic Messages front door with real, unmodified Anthropic clients, paid on chain through Coinbase's seller.
//   claude.mjs code-answer   real Claude Code (`claude -p`, offline, throwaway HOME): prints the seller's answer
//   claude.mjs code-tool     Claude Code runs a Bash tool call the seller asked for and sends the tool_result back;
//                            the seller's second answer (from the tool result) is printed
//   claude.mjs sdk [--stream] the Anthropic Python SDK with a tool: the tool_use block reassembles exactly
// Claude Code asks for `claude-haiku-4-5-20251001` (ANTHROPIC_MODEL); x402d maps it to the seller's
// `anthropic/claude-haiku-4.5` (budget, $0.001). Every upstream call is paid exactly once: on chain, in the seller's
// tap and in x402d's ledger, with the same count; the seller got `stream: false` and the mapped model.
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { PRICES, snapshot, authLogsSince, transfersSince } from "../lib/common.mjs";
import { TOOLS, toolCallFor } from "../lib/seller-common.mjs";
import { main, assert, fail, note, info, canon, env, hdr, tapRead, tapWaitPaid, paymentsWait, eqAddr, Problems, instance, ROOT }
  from "../lib/check.mjs";

const { values: o, positionals } = parseArgs({ allowPositionals: true, options: { stream: { type: "boolean", default: false } } });
const mode = positionals[0];
const ASKED = "claude-haiku-4-5-20251001";
const UPSTREAM = "anthropic/claude-haiku-4.5";
const price = PRICES.base;

function claude(inst, prompt, extra) {
  const home = path.join(env("WORK"), `claude-home-${mode}`);
  const cwd = path.join(home, "project");
  fs.mkdirSync(cwd, { recursive: true });
  const bin = path.join(ROOT, "node_modules/.bin/claude");
  assert(fs.existsSync(bin), `Claude Code not installed at ${bin} (npm ci in tests/interop)`);
  const e = { PATH: process.env.PATH, HOME: home, CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1", DISABLE_AUTOUPDATER: "1",
    ANTHROPIC_BASE_URL: inst.url, ANTHROPIC_API_KEY: "sk-claude-code", ANTHROPIC_MODEL: ASKED };
  return new Promise((resolve) => execFile(bin, ["-p", prompt, ...extra], { cwd, env: e, timeout: 90_000 },
    (err, stdout, stderr) => resolve({ code: err ? err.code ?? err.signal : 0, stdout, stderr })));
}

/** `n` upstream calls since s0/tap0, each paid exactly once: n transfers of the budget price, n paid seller
 *  requests on the budget path with the mapped model and stream:false, n settled ledger entries with those txs. */
async function verifyPaidEach(p, { inst, s0, tap0, n }) {
  const paid = await tapWaitPaid(tap0, n, inst.tap);
  const logs = await authLogsSince(s0);
  const transfers = await transfersSince(s0);
  info("seller saw", paid.map((r) => ({ path: r.path, status: r.status, model: r.body?.model, stream: r.body?.stream, settle: r.settle?.transaction })));
  p.expect(paid.length === n, `seller saw ${paid.length} paid requests, expected ${n}`);
  p.expect(logs.length === n, `${logs.length} AuthorizationUsed logs, expected ${n}`);
  p.expect(transfers.length === n && transfers.every((t) => t.args.value === price.atomic),
    `transfers [${transfers.map((t) => t.args.value)}], expected ${n} x ${price.atomic}`);
  for (const r of paid) {
    p.expect(r.path === price.path, `paid path ${r.path}, expected ${price.path}`);
    p.expect(r.body?.model === UPSTREAM && r.body?.stream === false, `x402d sent model ${r.body?.model} stream ${r.body?.stream}, expected ${UPSTREAM} / false`);
    p.expect(r.settle?.success && logs.some((l) => l.transactionHash === r.settle.transaction), `seller settlement ${JSON.stringify(r.settle)} not on chain`);
  }
  const bodies = new Set(paid.map((r) => canon(r.body)));
  p.expect(bodies.size === paid.length, "two paid requests carried the same body (one logical call paid twice?)");
  await p.attempt(async () => {
    const txs = paid.map((r) => r.settle?.transaction).filter(Boolean);
    const ledger = await paymentsWait(inst.config, (a) => txs.every((tx) => a.some((e) => eqAddr(e.tx, tx) && e.state === "settled")));
    for (const tx of txs) {
      const e = ledger.find((x) => eqAddr(x.tx, tx));
      p.expect(e?.state === "settled" && e.model === UPSTREAM && e.app === "claude", `ledger entry for ${tx}: ${JSON.stringify(e ?? null)}`);
    }
  });
  return paid;
}

main(async () => {
  const inst = instance("main");
  const s0 = await snapshot();
  const tap0 = tapRead(inst.tap).length;
  const p = new Problems();
  if (mode === "code-answer") {
    const r = await claude(inst, "Reply with exactly: hello", ["--max-turns", "1"]);
    info("claude", r);
    assert(r.code === 0, `claude -p exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(-300)}`);
    p.expect(r.stdout.trim() === "echo: Reply with exactly: hello", `claude printed ${JSON.stringify(r.stdout.trim().slice(0, 200))}, expected "echo: Reply with exactly: hello"`);
    const paid = await verifyPaidEach(p, { inst, s0, tap0, n: 1 });
    const up = paid.at(-1)?.body;
    if (up) {
      p.expect(up.messages?.[0]?.role === "system" && up.tools?.some((t) => t.function?.name === "Bash"),
        "the upstream request lacks the system prompt or Claude Code's tools");
      note(`Claude Code -> x402d -> seller: ${up.tools?.length} tools, ${up.messages?.length} messages, max_tokens ${up.max_tokens}`);
    }
  } else if (mode === "code-tool") {
    const word = `interop-${Date.now()}`;
    const r = await claude(inst, `RUN: echo ${word}`, ["--max-turns", "3", "--allowedTools", "Bash"]);
    info("claude", r);
    assert(r.code === 0, `claude -p exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(-300)}`);
    p.expect(r.stdout.trim() === `tool said: ${word}`, `claude printed ${JSON.stringify(r.stdout.trim().slice(0, 200))}, expected "tool said: ${word}" (Bash ran and its result went back)`);
    const paid = await verifyPaidEach(p, { inst, s0, tap0, n: 2 });
    const second = paid[1]?.body?.messages || [];
    const call = paid[1] && second.find((m) => m.role === "assistant" && m.tool_calls)?.tool_calls?.[0];
    const result = second.at(-1);
    p.expect(call?.function?.name === "Bash" && JSON.parse(call.function.arguments).command === `echo ${word}`, `second request's assistant tool call ${JSON.stringify(call)}`);
    p.expect(result?.role === "tool" && result.tool_call_id === call?.id && String(result.content).startsWith(word),
      `second request ends with ${JSON.stringify(result).slice(0, 200)}, expected the Bash tool result for ${call?.id}`);
  } else if (mode === "sdk") {
    const message = `interop anthropic sdk${o.stream ? " stream" : ""} #${Date.now()}`;
    const want = toolCallFor({ tools: TOOLS, messages: [{ role: "user", content: message }] });
    const out = await new Promise((resolve) => execFile(env("PY"), [path.join(ROOT, "drivers/anthropic_call.py"),
      JSON.stringify({ base_url: inst.url, api_key: "sk-claude-code", model: "claude-haiku-4-5", message, stream: o.stream, tools: true })],
      { timeout: 60_000 }, (err, stdout, stderr) => resolve({ err, stdout, stderr })));
    const line = out.stdout.split("\n").find((l) => l.startsWith("{"));
    assert(line, `driver printed nothing: ${(out.stderr || "").trim().slice(-300)}`);
    const rec = JSON.parse(line);
    info("anthropic sdk", rec);
    assert(rec.ok, `${rec.sdk} failed: HTTP ${rec.http_status} ${rec.exc}: ${rec.message}`);
    p.expect(rec.stop_reason === "tool_use", `stop_reason ${rec.stop_reason}, expected tool_use`);
    p.expect(rec.model === "claude-haiku-4-5", `model ${rec.model}, expected the id asked for`);
    const tu = rec.tool_uses || [];
    p.expect(tu.length === 1 && tu[0].id === want.id && tu[0].name === "get_weather" && canon(tu[0].input) === canon(JSON.parse(want.function.arguments)),
      `tool_use ${JSON.stringify(tu)}, expected ${want.id} get_weather ${want.function.arguments}`);
    if (o.stream) {
      p.expect(/^text\/event-stream/.test(hdr(rec, "content-type") || ""), `content-type ${hdr(rec, "content-type")}`);
      p.expect(rec.events?.[0] === "message_start" && rec.events.at(-1) === "message_stop" && rec.events.includes("input_json"),
        `events ${JSON.stringify(rec.events)}`);
    }
    const paid = await verifyPaidEach(p, { inst, s0, tap0, n: 1 });
    const up = paid.at(-1)?.body;
    if (up) p.expect(canon(up.tools) === canon(TOOLS), `x402d sent tools ${JSON.stringify(up.tools)}, expected ${JSON.stringify(TOOLS)}`);
  } else fail(`unknown mode ${mode}`);
  p.done();
});
