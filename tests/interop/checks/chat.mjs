// One chat completion through x402d with a real OpenAI SDK, asserting the on-chain effect, the seller's
// PAYMENT-RESPONSE and x402d's ledger all agree (lib/check.mjs verifyPaidOnce).
//   chat.mjs --driver py|node [--base v1|premium] [--model M] [--stream [--usage]] [--tools] [--instance main|v1]
// The price expected on chain follows the tier: base_url .../v1/premium -> premium; base_url .../v1 -> the tier the
// seller's GET /v1/models lists for the model (x402d's tier routing; gpt-4o-mini budget, gpt-4o pro, claude-opus-4 premium).
// --stream: the seller never streams (like the real upstream), so the SSE the SDK parses is x402d's synthesis. It
// must reassemble exactly: content (a long message with multi-byte characters, so it spans several content deltas),
// one "assistant" role delta, finish_reason; with --tools the tool call's id, type, name and arguments; with
// --usage exactly one usage chunk with the seller's usage, without it none. x402d must have sent the seller
// `stream: false` without `stream_options`. Paid exactly once.
import { parseArgs } from "node:util";
import { PRICES, snapshot } from "../lib/common.mjs";
import { MODEL_TIERS, TOOLS, toolCallFor, usageFor } from "../lib/seller-common.mjs";
import { main, assert, fail, note, canon, driver, hdr, tapRead, tapPaidSince, Problems, instance, verifyPaidOnce } from "../lib/check.mjs";

const { values: o } = parseArgs({ options: {
  driver: { type: "string", default: "py" }, base: { type: "string", default: "v1" }, model: { type: "string", default: "gpt-4o-mini" },
  stream: { type: "boolean", default: false }, usage: { type: "boolean", default: false }, tools: { type: "boolean", default: false },
  instance: { type: "string", default: "main" } } });

const TIER_PRICE = { budget: "base", pro: "pro", premium: "premium" };

main(async () => {
  const inst = instance(o.instance);
  const tier = o.base === "premium" ? "premium" : MODEL_TIERS[o.model] || "budget";
  const price = PRICES[TIER_PRICE[tier]] || fail(`unknown tier ${tier}`);
  const baseURL = `${inst.url}${o.base === "premium" ? "/v1/premium" : "/v1"}`;
  let message = `interop ${o.driver} ${o.model}${o.stream ? " stream" : ""}${o.tools ? " tools" : ""} #${Date.now()}`;
  if (o.stream) message += " | " + "héllo wörld ✓ 🚀 ".repeat(40); // > 3 x 256 bytes, multi-byte chars across piece boundaries
  const messages = [{ role: "user", content: message }];
  const expectedCall = o.tools ? toolCallFor({ tools: TOOLS, messages }) : null;
  const expectedContent = o.tools ? (o.stream ? "" : null) : `echo: ${message}`;
  const expectedUsage = usageFor(o.tools ? expectedCall.function.arguments : expectedContent);

  const s0 = await snapshot();
  const tap0 = tapRead(inst.tap).length;
  const [rec] = await driver(o.driver, { base_url: baseURL, model: o.model, message, stream: o.stream, include_usage: o.usage, tools: o.tools });
  assert(rec.ok, `${rec.sdk} call failed: HTTP ${rec.http_status} ${rec.exc}: ${rec.message}`);

  const p = new Problems();
  p.expect(rec.content === expectedContent, `content ${JSON.stringify(rec.content)?.slice(0, 120)}..., expected ${JSON.stringify(expectedContent)?.slice(0, 120)}... (lengths ${rec.content?.length} / ${expectedContent?.length})`);
  p.expect(rec.finish_reason === (o.tools ? "tool_calls" : "stop"), `finish_reason ${rec.finish_reason}, expected ${o.tools ? "tool_calls" : "stop"}`);
  if (o.tools) {
    const got = rec.tool_calls || [];
    const want = { index: 0, id: expectedCall.id, type: "function", name: expectedCall.function.name, arguments: expectedCall.function.arguments };
    p.expect(got.length === 1 && canon(got[0]) === canon(want),
      `tool_calls ${JSON.stringify(got).slice(0, 300)}, expected [${JSON.stringify(want).slice(0, 300)}]`);
  } else p.expect((rec.tool_calls || []).length === 0, `unexpected tool_calls ${JSON.stringify(rec.tool_calls)}`);
  if (o.stream) {
    p.expect(/^text\/event-stream/.test(hdr(rec, "content-type") || ""), `content-type ${hdr(rec, "content-type")}, expected text/event-stream`);
    p.expect(JSON.stringify(rec.roles) === '["assistant"]', `role deltas ${JSON.stringify(rec.roles)}, expected exactly one "assistant"`);
    if (o.usage) p.expect(rec.usage_chunks === 1 && canon(rec.usage) === canon(expectedUsage),
      `usage chunks ${rec.usage_chunks} usage ${JSON.stringify(rec.usage)}, expected 1 chunk with ${JSON.stringify(expectedUsage)}`);
    else p.expect(rec.usage_chunks === 0, `${rec.usage_chunks} usage chunk(s) without stream_options.include_usage`);
    note(`stream: ${rec.chunks} chunks, ${o.tools ? `tool call ${rec.tool_calls?.[0]?.id} ${rec.tool_calls?.[0]?.name} with ${rec.tool_calls?.[0]?.arguments?.length}-char arguments` : `${rec.content?.length}/${expectedContent.length} chars`}, ${rec.usage_chunks} usage chunk(s)`);
  } else if (!o.tools) {
    p.expect(canon(rec.usage) === canon(expectedUsage), `usage ${JSON.stringify(rec.usage)}, expected ${JSON.stringify(expectedUsage)}`);
  }

  const { paid, moved } = await verifyPaidOnce(p, { inst, s0, tap0, price, model: o.model, cost: hdr(rec, "x-x402d-cost") });
  const up = paid.at(-1)?.body;
  if (up) {
    p.expect(up.model === o.model, `x402d sent model ${JSON.stringify(up.model)} upstream, expected ${JSON.stringify(o.model)}`);
    if (o.stream) p.expect(up.stream === false && !("stream_options" in up),
      `x402d sent stream=${JSON.stringify(up.stream)} stream_options=${JSON.stringify(up.stream_options)} upstream, expected stream=false and no stream_options`);
    if (o.tools) p.expect(canon(up.tools) === canon(TOOLS), `x402d forwarded tools ${JSON.stringify(up.tools)}, expected the driver's TOOLS unchanged`);
  }
  if (tier !== "budget" && o.base === "v1") note(`model ${o.model} (${tier}) on base_url .../v1: x402d paid ${paid.at(-1)?.path}, ${moved.payer} atomic USDC moved on chain (expected ${price.atomic})`);
  // All unpaid (402) probes x402d made for this call went to the same tier path.
  const probes = tapRead(inst.tap).slice(tap0).filter((r) => r.method === "POST" && !r.paymentSignature && !r.xPayment);
  p.expect(probes.every((r) => r.path === price.path), `unpaid probes went to ${[...new Set(probes.map((r) => r.path))]}, expected ${price.path}`);
  p.expect(tapPaidSince(tap0, inst.tap).length === 1, `seller saw ${tapPaidSince(tap0, inst.tap).length} paid requests in total`);
  p.done();
});
