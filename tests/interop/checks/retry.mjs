// Retries never pay twice. Runs against the "retry" x402d instance, whose upstream is retry-seller.mjs (takes the
// payment header, counts it, then misbehaves; nothing is ever settled on chain).
//
//   retry.mjs sdk --driver py|node --mode 500|drop   real SDK, max_retries=2, other settings default:
//       the SDK raises; the seller saw exactly ONE payment header; the SDK sent at most one HTTP request to x402d, or
//       any retry it sent was answered without a new payment (x402d answers with x-should-retry: false); the ledger
//       has exactly one new payment for the call, `at_risk`.
//   retry.mjs sdk --driver py|node --mode slow       SDK timeout 2 s < seller delay 2.5 s, max_retries=2: the SDK
//       times out, retries (x-stainless-retry-count: 1), x402d joins the retry to the payment in flight: the call
//       succeeds with the exact content and the seller saw one payment and one 402 probe.
//   retry.mjs sdk --driver py|node --mode flaky      the seller's first answer is a 503 BEFORE any 402 (nothing signed,
//       cost 0): the SDK's retry must really go upstream again (it is safe: nothing was paid) and succeed, paying once.
//   retry.mjs sdk --driver py|node --mode slow --stream   x402d starts the SSE early (heartbeats) while paying; the
//       SDK ignores the comments and reassembles the exact content; one payment.
//   retry.mjs sdk --driver py|node --mode slow500 --stream   the seller answers 500 after the SSE went out (HTTP 200
//       already sent): the SDK raises its APIError on x402d's `data: {"error":...}` event; one payment, `at_risk`.
//   retry.mjs raw    plain fetch on the wire: a repeat with x-stainless-retry-count: 1 (or the same Idempotency-Key)
//       gets the first call's answer (same status, body, payment id) and no new payment or probe; the raw SSE of a
//       slow paid stream starts with ": x402d waiting" and ends with data: [DONE]; a late 500 is a data: {"error"} event.
import { parseArgs } from "node:util";
import { usageFor } from "../lib/seller-common.mjs";
import { main, fail, note, info, canon, driver, hdr, errorBody, payments, paymentsWait, Problems, instance, eqAddr } from "../lib/check.mjs";

const { values: o, positionals } = parseArgs({ allowPositionals: true, options: {
  driver: { type: "string", default: "py" }, mode: { type: "string", default: "500" }, stream: { type: "boolean", default: false } } });
const PAY_TO = process.env.RETRY_PAY_TO || "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65";

const inst = instance("retry");
async function sellerStats(tag) {
  const all = await (await fetch(`${inst.sellerUrl}/__stats`)).json();
  return all[tag] || { unpaid: 0, paid: 0, signatures: [], nonces: [], retryCounts: { unpaid: [], paid: [] } };
}
const show = (st) => ({ unpaid: st.unpaid, paid: st.paid, distinctSignatures: st.signatures.length, nonces: st.nonces, retryCounts: st.retryCounts });

/** New ledger entries since `before` (by id), waiting until `pred(fresh)` or 3 s. */
async function freshEntries(before, pred = (f) => f.length > 0) {
  const old = new Set(before.map((e) => e.id));
  const after = await paymentsWait(inst.config, (a) => pred(a.filter((e) => !old.has(e.id))));
  return after.filter((e) => !old.has(e.id));
}

/** Exactly one new ledger payment for `model`: amount 0.001, the retry seller's payTo, the nonce the seller saw. */
function expectOneEntry(p, fresh, { model, nonce, states }) {
  info("new ledger entries", fresh);
  p.expect(fresh.length === 1, `ledger: ${fresh.length} new payments (${fresh.map((e) => e.state).join(", ")}), expected exactly 1`);
  const e = fresh[0];
  if (!e) return;
  p.expect(states.includes(e.state), `ledger: payment state ${e.state}, expected ${states.join(" or ")}`);
  p.expect(e.model === model, `ledger: model ${e.model}, expected ${model}`);
  p.expect(e.amount_atomic === "1000", `ledger: amount_atomic ${e.amount_atomic}, expected 1000`);
  p.expect(eqAddr(e.pay_to, PAY_TO), `ledger: pay_to ${e.pay_to}, expected ${PAY_TO}`);
  p.expect(nonce && eqAddr(e.nonce, nonce), `ledger: nonce ${e.nonce}, the seller got ${nonce}`);
}

async function sdk() {
  const model = `mode-${o.mode}`;
  const tag = `retry ${o.driver} ${o.mode}${o.stream ? " stream" : ""} #${Date.now()}`;
  const slow = o.mode === "slow" && !o.stream;
  const opts = { base_url: `${inst.url}/v1`, model, message: tag, max_retries: 2, stream: o.stream };
  if (slow) opts.timeout = 2;
  const p = new Problems();
  const before = await payments(inst.config);
  const [rec] = await driver(o.driver, opts);
  const st = await sellerStats(tag);
  info("seller stats", show(st));
  const sdkRetryCounts = (rec.requests || []).map((r) => r.retry_count);
  const summary = `SDK sent ${rec.requests?.length} request(s) to x402d (x-stainless-retry-count ${JSON.stringify(sdkRetryCounts)}); ` +
    `x402d forwarded retry counts ${JSON.stringify(st.retryCounts.unpaid)} (402 probes) / ${JSON.stringify(st.retryCounts.paid)} (paid); ` +
    `seller saw ${st.signatures.length} distinct payment header(s)`;
  note(summary);
  // One payment: x402d may re-send that very header (same bytes) to recover a lost answer, never a new one.
  p.expect(st.signatures.length === 1, `seller saw ${st.paid} paid requests with ${st.signatures.length} distinct payment headers, expected exactly 1 payment`);
  if (o.mode !== "500" && o.mode !== "drop" && o.mode !== "slow500")
    p.expect(st.paid === 1, `seller saw ${st.paid} paid requests, expected 1 (nothing was lost, nothing to re-send)`);

  if (o.mode === "slow" || o.mode === "flaky") {
    p.expect(rec.ok && rec.content === `echo: ${tag}`, `call failed or wrong content: ${rec.exc ?? ""} HTTP ${rec.http_status ?? ""} ${rec.message ?? JSON.stringify(rec.content)}`);
    if (o.mode === "flaky") {
      p.expect(rec.requests?.length >= 2, `the SDK sent ${rec.requests?.length} request(s), expected a retry after the 503`);
      p.expect(st.unpaid >= 2, `seller saw ${st.unpaid} unpaid request(s): the SDK's retry (x-stainless-retry-count ${JSON.stringify(sdkRetryCounts.slice(1))}) never reached it (x402d answered it with the cached unpaid 503 of the first attempt, so the retry could not get past a transient error)`);
    } else if (slow) {
      p.expect(rec.requests?.length >= 2, `the SDK sent ${rec.requests?.length} request(s): its 2 s timeout did not fire before the seller's 2.5 s answer, so no retry was exercised`);
      p.expect(st.unpaid === 1, `seller saw ${st.unpaid} unpaid probes: the SDK's retry was not joined to the payment in flight`);
    } else {
      p.expect(rec.requests?.length === 1, `the SDK sent ${rec.requests?.length} requests for one stream`);
      p.expect(/^text\/event-stream/.test(hdr(rec, "content-type") || ""), `content-type ${hdr(rec, "content-type")}, expected text/event-stream`);
    }
    const fresh = await freshEntries(before, (f) => f.length > 0 && f.every((e) => !["reserved", "signed"].includes(e.state)));
    expectOneEntry(p, fresh, { model, nonce: st.nonces[0], states: ["settled", "at_risk"] });
    if (fresh[0]) note(`a 200 without PAYMENT-RESPONSE is recorded as ${fresh[0].state}${fresh[0].tx ? "" : " (no tx)"}`);
    return p.done();
  }

  p.expect(!rec.ok, `the SDK returned a result although the seller ${o.mode === "drop" ? "dropped the connection" : "answered 500"}: ${JSON.stringify(rec.content)}`);
  const body = errorBody(rec);
  info("SDK error", { exc: rec.exc, http_status: rec.http_status, body, message: rec.message });
  p.expect((rec.requests?.length ?? 99) <= 1 || st.signatures.length === 1,
    `the SDK retried ${rec.requests?.length - 1} time(s) and a retry paid again (${st.signatures.length} distinct payment headers)`);
  if (!o.stream) {
    p.expect(hdr(rec, "x-should-retry") === "false", `x-should-retry ${JSON.stringify(hdr(rec, "x-should-retry"))} on the error, expected "false"`);
    if (o.mode === "500") {
      p.expect(rec.http_status === 500, `HTTP ${rec.http_status}, expected the seller's 500 relayed`);
      p.expect(hdr(rec, "x-x402d-payment-state") === "at_risk", `x-x402d-payment-state ${hdr(rec, "x-x402d-payment-state")}, expected at_risk`);
    } else {
      p.expect(typeof rec.http_status === "number" && rec.http_status >= 500, `HTTP ${rec.http_status}, expected a 5xx from x402d`);
      p.expect(typeof body?.error?.message === "string", `error body ${JSON.stringify(body)} has no error.message`);
      note(`dropped connection -> HTTP ${rec.http_status} ${hdr(rec, "x-x402d-error")}: ${body?.error?.message?.slice(0, 160)}`);
    }
  } else {
    // The error must come INSIDE the stream (HTTP 200, then a data: {"error"} event), not as an HTTP error up front.
    p.expect(rec.http_status === 200 && rec.exc === "APIError" && typeof body?.error?.message === "string",
      `stream ended with HTTP ${rec.http_status} ${rec.exc} (body ${JSON.stringify(body)?.slice(0, 160)}), expected HTTP 200 and then the SDK's APIError from x402d's data: {"error"} event`);
    note(`late error in the stream -> ${rec.exc}: ${String(rec.message).slice(0, 160)}`);
  }
  const fresh = await freshEntries(before, (f) => f.length > 0 && f.every((e) => e.state === "at_risk"));
  expectOneEntry(p, fresh, { model, nonce: st.nonces[0], states: ["at_risk"] });
  // Every send of the one payment (the first and x402d's re-sends of the same header) is in its ledger record.
  if (fresh[0]) p.expect(fresh[0].attempts === st.paid, `ledger: attempts ${fresh[0].attempts}, the seller saw ${st.paid} sends of the payment`);
  note(`x402d sent the one payment ${st.paid} time(s) (re-sends of the same header to recover the answer); last error: ${fresh[0]?.last_error?.slice(0, 120)}`);
  p.done();
}

async function post(body, headers = {}) {
  const res = await fetch(`${inst.url}/v1/chat/completions`, { method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer sk-interop", ...headers }, body: JSON.stringify(body) });
  const text = await res.text();
  const r = { status: res.status, text, paymentId: res.headers.get("x-x402d-payment-id"), shouldRetry: res.headers.get("x-should-retry"),
    contentType: res.headers.get("content-type"), error: res.headers.get("x-x402d-error") };
  return r;
}

async function raw() {
  const p = new Problems();
  const t = Date.now();
  // 1. x-stainless-retry-count: 1 on an identical request -> the first call's answer, no new payment.
  const tag1 = `raw retry-count #${t}`;
  const b1 = { model: "mode-500", messages: [{ role: "user", content: tag1 }] };
  const a1 = await post(b1, { "x-stainless-retry-count": "0" });
  const a2 = await post(b1, { "x-stainless-retry-count": "1" });
  const st1 = await sellerStats(tag1);
  info("retry-count", { first: a1, retry: a2, seller: show(st1) });
  p.expect(a1.status === 500 && a1.shouldRetry === "false", `first call: HTTP ${a1.status} x-should-retry ${a1.shouldRetry}, expected 500 / false`);
  p.expect(a2.status === a1.status && a2.text === a1.text && a2.paymentId === a1.paymentId,
    `retry (x-stainless-retry-count: 1) got HTTP ${a2.status} payment ${a2.paymentId}, expected the first call's ${a1.status} / payment ${a1.paymentId} and body`);
  p.expect(st1.signatures.length === 1 && st1.unpaid === 1, `seller: ${st1.signatures.length} payment headers / ${st1.unpaid} probes after a marked retry, expected 1 / 1`);
  // Without a marker, an identical request is a new call (documented): reported only.
  await post(b1);
  const st1b = await sellerStats(tag1);
  note(`identical request without a retry marker: seller now has ${st1b.signatures.length} payment header(s) (x402d documents it as a new call)`);

  // 2. Same Idempotency-Key (no retry count) on a dropped connection -> the same error, no new payment.
  const tag2 = `raw idempotency #${t}`;
  const b2 = { model: "mode-drop", messages: [{ role: "user", content: tag2 }] };
  const key = `interop-${t}`;
  const c1 = await post(b2, { "idempotency-key": key });
  const c2 = await post(b2, { "idempotency-key": key });
  const st2 = await sellerStats(tag2);
  info("idempotency-key", { first: c1, repeat: c2, seller: show(st2) });
  p.expect(c1.status >= 500 && c1.shouldRetry === "false", `dropped connection: HTTP ${c1.status} x-should-retry ${c1.shouldRetry}, expected 5xx / false`);
  p.expect(c2.status === c1.status && c2.text === c1.text, `same Idempotency-Key got HTTP ${c2.status} ${c2.text.slice(0, 100)}, expected the first answer`);
  p.expect(st2.signatures.length === 1, `seller: ${st2.signatures.length} payment headers for one Idempotency-Key, expected 1`);

  // 3. Raw SSE of a slow paid call: heartbeat comment(s) first, then the synthesized chunks, then [DONE].
  const tag3 = `raw sse slow #${t}`;
  const s = await post({ model: "mode-slow", stream: true, stream_options: { include_usage: true }, messages: [{ role: "user", content: tag3 }] });
  const events = s.text.split("\n\n").filter(Boolean);
  info("slow SSE", { status: s.status, contentType: s.contentType, events: events.map((e) => e.slice(0, 120)) });
  p.expect(s.status === 200 && /^text\/event-stream/.test(s.contentType || ""), `slow stream: HTTP ${s.status} ${s.contentType}`);
  p.expect(events[0] === ": x402d waiting", `slow stream starts with ${JSON.stringify(events[0])}, expected the ": x402d waiting" heartbeat`);
  p.expect(events.at(-1) === "data: [DONE]", `slow stream ends with ${JSON.stringify(events.at(-1))}`);
  const datas = events.filter((e) => e.startsWith("data: {")).map((e) => JSON.parse(e.slice(6)));
  const text = datas.flatMap((d) => d.choices || []).map((c) => c.delta?.content || "").join("");
  p.expect(text === `echo: ${tag3}`, `slow stream content ${JSON.stringify(text)}`);
  p.expect(datas.every((d) => d.object === "chat.completion.chunk"), "slow stream: a data event is not a chat.completion.chunk");
  const usage = datas.filter((d) => d.usage);
  p.expect(usage.length === 1 && canon(usage[0].usage) === canon(usageFor(`echo: ${tag3}`)) && usage[0].choices.length === 0,
    `slow stream usage chunks ${JSON.stringify(usage)}`);
  p.expect((await sellerStats(tag3)).signatures.length === 1, "slow stream: not exactly one payment");

  // 4. A 500 after the SSE headers went out: an error event, then nothing else paid.
  const tag4 = `raw sse late error #${t}`;
  const e = await post({ model: "mode-slow500", stream: true, messages: [{ role: "user", content: tag4 }] });
  const ev4 = e.text.split("\n\n").filter(Boolean);
  info("late-error SSE", { status: e.status, events: ev4 });
  p.expect(e.status === 200 && ev4[0] === ": x402d waiting", `late error: HTTP ${e.status}, first event ${JSON.stringify(ev4[0])}`);
  const errEv = ev4.filter((x) => x.startsWith("data: {")).map((x) => JSON.parse(x.slice(6)));
  p.expect(errEv.length === 1 && typeof errEv[0].error?.message === "string", `late error: data events ${JSON.stringify(errEv)}, expected one {"error":{"message",...}}`);
  p.expect((await sellerStats(tag4)).signatures.length === 1, "late error: not exactly one payment");
  if (ev4.at(-1) !== "data: [DONE]") note(`late upstream error: the stream ends with the error event, no "data: [DONE]" after it (x402d's own errors get one)`);
  p.done();
}

main(async () => {
  if (positionals[0] === "sdk") return sdk();
  if (positionals[0] === "raw") return raw();
  fail(`usage: retry.mjs sdk|raw ... (got ${positionals.join(" ")})`);
});
