// LangChain's ChatOpenAI (langchain-openai, unmodified; base_url=x402d/v1, model gpt-4o-mini, streaming=True, other
// settings default) through x402d. One Python process runs, in order (LangChain takes seconds to import):
//   invoke   .invoke(): LangChain streams under the hood; the reassembled content is exact
//   stream   .stream(): the chunks concatenate to the exact content
//   tools    .bind_tools([get_weather]).invoke(): the tool call (id, name, parsed args) is exactly the seller's,
//            streamed by x402d's synthesis and reassembled by LangChain
// Each op is paid exactly once: 3 x $0.001 on chain in 3 AuthorizationUsed/Transfer logs; per op, exactly one paid
// request at the seller (matched by its message) whose PAYMENT-RESPONSE tx is one of those on-chain txs and whose
// ledger entry is settled with that tx; x402d sent the seller stream=false without stream_options.
import { PRICES, snapshot, authLogsSince, transfersSince } from "../lib/common.mjs";
import { lastUserText, toolCallFor } from "../lib/seller-common.mjs";
import { main, assert, note, info, driver, tapRead, tapWaitPaid, paymentsWait, eqAddr, usdToAtomic, Problems, instance } from "../lib/check.mjs";

const OPS = ["invoke", "stream", "tools"];
main(async () => {
  const inst = instance("main");
  const price = PRICES.base;
  const t = Date.now();
  const message = `interop langchain {op} #${t} | ` + "ünïcode ✓ ".repeat(30);
  const s0 = await snapshot();
  const tap0 = tapRead(inst.tap).length;
  const recs = await driver("langchain", { base_url: `${inst.url}/v1`, message, ops: OPS, n: OPS.length });
  const p = new Problems();
  const s1 = await snapshot();
  const logs = await authLogsSince(s0);
  const transfers = await transfersSince(s0);
  const n = BigInt(OPS.length);
  p.expect(s0.payerBal - s1.payerBal === n * price.atomic && s1.payToBal - s0.payToBal === n * price.atomic,
    `balance deltas payer -${s0.payerBal - s1.payerBal} payTo +${s1.payToBal - s0.payToBal}, expected exactly ${n * price.atomic} (${n} x ${price.atomic})`);
  p.expect(logs.length === OPS.length && transfers.length === OPS.length && transfers.every((x) => x.args.value === price.atomic),
    `${logs.length} AuthorizationUsed / ${transfers.length} transfers, expected ${OPS.length} of ${price.atomic}`);
  const chainTxs = new Set(logs.map((l) => l.transactionHash));
  const paid = await tapWaitPaid(tap0, OPS.length, inst.tap);
  const ledger = await paymentsWait(inst.config, (a) => [...chainTxs].every((tx) => a.some((e) => eqAddr(e.tx, tx) && e.state === "settled")));

  for (const rec of recs) {
    const op = rec.op;
    const prompt = message.replace("{op}", op);
    if (!p.expect(rec.ok, `${op}: ${rec.sdk ?? "langchain"} failed: ${rec.exc}: ${rec.message}${rec.http_status ? ` (HTTP ${rec.http_status})` : ""}`)) continue;
    const mine = paid.filter((r) => lastUserText(r.body) === prompt);
    info(`${op} seller saw`, mine.map((r) => ({ path: r.path, status: r.status, body: { stream: r.body?.stream, stream_options: r.body?.stream_options }, settle: r.settle })));
    p.expect(mine.length === 1, `${op}: seller saw ${mine.length} paid requests, expected 1`);
    const up = mine[0]?.body;
    const tx = mine[0]?.settle?.transaction;
    p.expect(tx && chainTxs.has(tx), `${op}: seller PAYMENT-RESPONSE tx ${tx} is not among the on-chain AuthorizationUsed txs`);
    const e = ledger.find((x) => eqAddr(x.tx, tx));
    p.expect(e && e.state === "settled" && usdToAtomic(e.amount) === price.atomic && e.model === "gpt-4o-mini",
      `${op}: ledger entry for tx ${tx}: ${JSON.stringify(e ?? null)}`);
    p.expect(up?.stream === false && !("stream_options" in (up || {})),
      `${op}: x402d sent stream=${JSON.stringify(up?.stream)} stream_options=${JSON.stringify(up?.stream_options)} upstream, expected stream=false, none`);
    if (op === "tools") {
      const want = up ? toolCallFor(up) : null;
      const got = rec.tool_calls || [];
      p.expect(want, `tools: the seller saw no tools in the request: ${JSON.stringify(up)?.slice(0, 200)}`);
      if (want) p.expect(got.length === 1 && got[0].id === want.id && got[0].name === want.function.name && JSON.stringify(got[0].args) === want.function.arguments,
        `tools: tool_calls ${JSON.stringify(got).slice(0, 300)}, expected [{id:${want.id}, name:${want.function.name}, args:${want.function.arguments.slice(0, 100)}}] (invalid_tool_calls ${JSON.stringify(rec.invalid_tool_calls)})`);
      p.expect(!rec.content, `tools: content ${JSON.stringify(rec.content)} next to the tool call`);
    } else {
      p.expect(rec.content === `echo: ${prompt}`, `${op}: content ${JSON.stringify(rec.content)?.slice(0, 120)}, expected "echo: ${prompt.slice(0, 60)}..."`);
      if (op === "stream") p.expect(rec.chunks >= 2, `stream: .stream() yielded ${rec.chunks} chunk(s)`);
    }
  }
  assert(recs[0]?.sdk, "no LangChain version reported");
  note(`${recs[0].sdk}: ${recs.map((r) => `${r.op} ${r.ok ? "ok" : "FAILED"} ${r.secs}s`).join(", ")}; ${logs.length} payment(s) on chain`);
  p.done();
});
