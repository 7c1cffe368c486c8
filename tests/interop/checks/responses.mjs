// The OpenAI Responses API (POST /v1/responses) through x402d with real, unmodified clients. x402d translates each
// Responses request into one chat completion, which the seller (chat only, never streaming) prices and answers;
// every upstream call must be paid exactly once on chain (lib/check.mjs verifyPaidN).
//   responses.mjs codex-answer  Codex CLI (npm @openai/codex, pinned) `codex exec` with wire_api = "responses":
//                               prints the seller's answer; its request offers Codex's tools (the hosted web_search
//                               left out by x402d), the prompt starts with NO_TOOLS so the seller answers text. 1 payment.
//   responses.mjs codex-tool    `codex exec "echo <marker>"`: the seller calls Codex's first tool (exec_command) with
//                               cmd = the prompt; Codex runs it and sends the output back; the seller's second turn
//                               (last message a tool result) answers "tool said: <output>", which Codex prints.
//                               2 upstream calls, 2 payments; the second carries the call and its output, paired.
//   responses.mjs python        openai-python client.responses.create (no stream) and .stream(): exact text, the
//                               event lifecycle, usage. 2 payments.
//   responses.mjs agents        OpenAI Agents SDK (openai-agents, default Responses mode): an Agent with a function
//                               tool, Runner.run and Runner.run_streamed; the SDK runs the tool on the model's call
//                               and gets the seller's final text. 2 upstream calls each, 4 payments.
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { PRICES, snapshot } from "../lib/common.mjs";
import { lastUserText, toolCallFor, toolResultText, usageFor, NO_TOOLS } from "../lib/seller-common.mjs";
import { main, assert, fail, note, info, env, canon, driver, tapRead, Problems, instance, verifyPaidN, ROOT } from "../lib/check.mjs";

const mode = process.argv[2];
const price = PRICES.base;

/** Runs `codex exec` offline against x402d with a throwaway HOME / CODEX_HOME; resolves {code, stdout, stderr}. */
function codex(inst, prompt) {
  const home = path.join(env("WORK"), `codex-home-${mode}`);
  const proj = path.join(env("WORK"), `codex-proj-${mode}`);
  fs.mkdirSync(path.join(home, ".codex"), { recursive: true });
  fs.mkdirSync(proj, { recursive: true });
  fs.writeFileSync(path.join(home, ".codex", "config.toml"), [
    'model = "gpt-4o-mini"', 'model_provider = "x402d"', "[model_providers.x402d]", 'name = "x402d"',
    `base_url = "${inst.url}/v1"`, 'env_key = "X402D_KEY"', 'wire_api = "responses"',
    "stream_max_retries = 0", "request_max_retries = 0", ""].join("\n"));
  const bin = path.join(ROOT, "node_modules", ".bin", "codex");
  if (!fs.existsSync(bin)) fail(`codex not installed at ${bin} (npm ci in tests/interop)`);
  return new Promise((resolve) => {
    const child = execFile(bin, ["exec", "--skip-git-repo-check", prompt], {
      cwd: proj, timeout: 90_000, maxBuffer: 16 << 20,
      env: { PATH: process.env.PATH, HOME: home, CODEX_HOME: path.join(home, ".codex"), X402D_KEY: "sk-codex", RUST_LOG: "warn" },
    }, (err, stdout, stderr) => resolve({ code: err ? (err.code ?? err.signal) : 0, stdout, stderr }));
    child.stdin.end();
  });
}

const toolNames = (body) => (body?.tools || []).map((t) => t?.function?.name);

main(async () => {
  const inst = instance("main");
  const t = Date.now();
  const s0 = await snapshot();
  const tap0 = tapRead(inst.tap).length;
  const p = new Problems();

  if (mode === "codex-answer" || mode === "codex-tool") {
    const marker = `x402d-codex-${t}`;
    const prompt = mode === "codex-answer" ? `${NO_TOOLS} interop codex ${marker}` : `echo ${marker}`;
    const r = await codex(inst, prompt);
    info("codex stdout", r.stdout);
    info("codex stderr (tail)", r.stderr.split("\n").slice(-15).join("\n"));
    assert(r.code === 0, `codex exec exited ${r.code}: ${r.stderr.trim().split("\n").slice(-3).join(" | ")}`);
    const n = mode === "codex-answer" ? 1 : 2;
    const paid = await verifyPaidN(p, { inst, s0, tap0, price, n });
    const first = paid[0]?.body;
    p.expect(first && lastUserText(first) === prompt, `the seller's first paid request's last user message is ${JSON.stringify(first && lastUserText(first))}, expected the prompt`);
    p.expect(toolNames(first).includes("exec_command") && !toolNames(first).some((x) => /web_search/.test(x)),
      `tools sent upstream ${JSON.stringify(toolNames(first))}: expected Codex's function tools (exec_command) without the hosted web_search`);
    p.expect(first?.stream === false && !("input" in (first || {})) && !("reasoning" in (first || {})),
      `upstream body is not a plain chat request: stream=${first?.stream} keys ${Object.keys(first || {})}`);
    if (mode === "codex-answer") {
      p.expect(r.stdout.trim() === `echo: ${prompt}`, `codex printed ${JSON.stringify(r.stdout.trim()).slice(0, 200)}, expected ${JSON.stringify(`echo: ${prompt}`)}`);
    } else {
      const call = toolCallFor(first);
      const second = paid[1]?.body;
      const msgs = second?.messages || [];
      const asst = msgs.at(-2);
      p.expect(call?.function?.name === "exec_command", `the seller's first answer is ${JSON.stringify(call)}, expected an exec_command call`);
      p.expect(asst?.role === "assistant" && asst.tool_calls?.length === 1 && asst.tool_calls[0].id === call?.id
        && asst.tool_calls[0].function.name === "exec_command" && canon(JSON.parse(asst.tool_calls[0].function.arguments)) === canon(JSON.parse(call.function.arguments)),
        `second request: the assistant turn ${JSON.stringify(asst).slice(0, 300)} is not the seller's call ${JSON.stringify(call)}`);
      const out = second ? toolResultText(second) : null;
      p.expect(msgs.at(-1)?.tool_call_id === call?.id && out?.includes(marker),
        `second request: last message ${JSON.stringify(msgs.at(-1)).slice(0, 300)} is not the tool output (with ${marker}) for ${call?.id}`);
      p.expect(r.stdout.includes("tool said:") && r.stdout.includes(marker), `codex printed ${JSON.stringify(r.stdout).slice(0, 300)}, expected the seller's "tool said: ..." with ${marker}`);
      p.expect(/exec[\s\S]*echo x402d-codex/.test(r.stderr), "codex's log does not show the exec_command it ran");
    }
    note(`codex ${mode.slice(6)}: ${n} upstream call(s), ${n} payment(s); codex printed ${JSON.stringify(r.stdout.trim().split("\n")[0]).slice(0, 80)}`);
  } else if (mode === "python" || mode === "agents") {
    const ops = mode === "python" ? ["create", "stream"] : ["agent", "agent-stream"];
    const message = `interop responses {op} #${t} | ` + "héllo wörld ✓ 🚀 ".repeat(20);
    const recs = await driver("responses", { base_url: `${inst.url}/v1`, message, ops, n: ops.length });
    const paid = await verifyPaidN(p, { inst, s0, tap0, price, n: mode === "python" ? 2 : 4 });
    for (const rec of recs) {
      const msg = message.replace("{op}", rec.op);
      if (!p.expect(rec.ok, `${rec.op}: ${rec.sdk} failed: ${rec.exc}: ${rec.message}${rec.http_status ? ` (HTTP ${rec.http_status})` : ""}`)) continue;
      const mine = paid.filter((r) => (r.body?.messages || []).some((m) => m.role === "user" && lastUserText({ messages: [m] }) === msg));
      if (mode === "python") {
        const want = `echo: ${msg}`;
        const u = usageFor(want);
        p.expect(rec.output_text === want, `${rec.op}: output_text ${JSON.stringify(rec.output_text).slice(0, 120)}, expected ${JSON.stringify(want).slice(0, 120)}`);
        p.expect(rec.status === "completed" && /^resp_/.test(rec.id), `${rec.op}: status ${rec.status} id ${rec.id}`);
        p.expect(rec.usage?.input_tokens === u.prompt_tokens && rec.usage?.output_tokens === u.completion_tokens && rec.usage?.total_tokens === u.total_tokens,
          `${rec.op}: usage ${JSON.stringify(rec.usage)}, expected the seller's ${JSON.stringify(u)}`);
        p.expect(mine.length === 1, `${rec.op}: seller saw ${mine.length} paid requests with this message, expected 1`);
        p.expect(mine[0]?.body?.stream === false, `${rec.op}: x402d sent stream=${mine[0]?.body?.stream} upstream`);
        if (rec.op === "create") {
          p.expect(mine[0]?.body?.messages?.[0]?.role === "system" && mine[0]?.body?.messages?.[0]?.content === "Answer briefly.",
            `create: instructions not sent as the system message: ${JSON.stringify(mine[0]?.body?.messages?.[0])}`);
        } else {
          const want = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
            "response.output_text.delta", "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"];
          const dedup = rec.events.filter((e, i) => e !== rec.events[i - 1]);
          p.expect(canon(dedup) === canon(want), `stream: events ${JSON.stringify(dedup)}, expected ${JSON.stringify(want)}`);
          p.expect(rec.text === `echo: ${msg}`, `stream: deltas joined ${JSON.stringify(rec.text).slice(0, 120)}`);
          p.expect(rec.events.filter((e) => e === "response.output_text.delta").length > 1, "stream: the text came in one delta (expected several for a long message)");
        }
      } else {
        const want = `tool said: sunny in ${msg}`;
        p.expect(rec.final_output === want, `${rec.op}: final_output ${JSON.stringify(rec.final_output).slice(0, 160)}, expected ${JSON.stringify(want).slice(0, 160)}`);
        p.expect(canon(rec.tool_ran) === canon([msg]), `${rec.op}: the SDK ran get_weather with ${JSON.stringify(rec.tool_ran)}, expected once with the message`);
        p.expect(mine.length === 2, `${rec.op}: seller saw ${mine.length} paid requests for this agent run, expected 2 (the call, then the tool result)`);
        const call = mine[0] ? toolCallFor(mine[0].body) : null;
        const fc = rec.responses?.[0]?.output?.find((o) => o.type === "function_call");
        p.expect(call && fc && fc.call_id === call.id && fc.name === "get_weather" && fc.arguments === call.function.arguments,
          `${rec.op}: the SDK's function_call ${JSON.stringify(fc)} is not the seller's call ${JSON.stringify(call)}`);
        const second = mine[1]?.body;
        p.expect(second && second.messages.at(-1)?.role === "tool" && second.messages.at(-1)?.tool_call_id === call?.id && toolResultText(second) === `sunny in ${msg}`,
          `${rec.op}: second request's last message ${JSON.stringify(second?.messages?.at(-1))?.slice(0, 200)}, expected the tool output for ${call?.id}`);
        if (rec.op === "agent-stream") p.expect(rec.events?.filter((e) => e === "response.completed").length === 2, `agent-stream: events ${JSON.stringify(rec.events)}`);
      }
    }
    note(`${recs.map((r) => `${r.op} ${r.ok ? "ok" : "FAILED"} ${r.secs}s`).join(", ")} (${recs.find((r) => r.sdk)?.sdk})`);
  } else {
    fail(`unknown mode ${mode}`);
  }
  p.done();
});
