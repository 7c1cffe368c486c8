// Recovering a paid answer lost after settlement (recover-seller.mjs, verify + settle through the real facilitator):
// openai-python with max_retries=0 through x402d "recover".
//   --mode id    the seller declares payment-identifier and replays by id: x402d re-sends the very same
//                PAYMENT-SIGNATURE and the app gets 200 with the answer; exactly one transfer on chain; the seller saw
//                one distinct payment header (twice); the ledger has it settled with 2 sends and the payment id.
//   --mode noid  no payment-identifier: the re-send gets 402 (nonce used); x402d asks the chain, finds the
//                authorization used and tells the app it was charged once and the answer was lost (502
//                paid_answer_lost, x-should-retry false); exactly one transfer; ledger settled (tx unknown), 2 sends.
import { parseArgs } from "node:util";
import { snapshot, authLogsSince, transfersSince, X402D_PAYER, PAY_TO } from "../lib/common.mjs";
import { main, assert, note, info, env, driver, hdr, errorBody, Problems, payments, paymentsWait } from "../lib/check.mjs";

const { values: o } = parseArgs({ options: { mode: { type: "string", default: "id" } } });

main(async () => {
  const url = env("X402D_RECOVER_URL"), config = env("X402D_RECOVER_CONFIG"), seller = env("RECOVER_SELLER_URL");
  const tag = `recover ${o.mode} #${Date.now()}`;
  const before = (await payments(config)).map((e) => e.id);
  const s0 = await snapshot(X402D_PAYER, PAY_TO);
  const [rec] = await driver("py", { base_url: `${url}/v1`, model: `recover-${o.mode}`, message: tag, max_retries: 0 });
  const st = (await (await fetch(`${seller}/__stats`)).json())[tag] ?? {};
  info("seller stats", { ...st, signatures: st.signatures?.length });
  const p = new Problems();
  const logs = await authLogsSince(s0);
  const transfers = await transfersSince(s0);
  p.expect(logs.length === 1 && transfers.length === 1 && transfers[0].args.value === 1000n,
    `on chain: ${logs.length} AuthorizationUsed, transfers [${transfers.map((t) => t.args.value)}], expected exactly one of 1000`);
  p.expect(st.signatures?.length === 1, `seller saw ${st.signatures?.length} distinct payment headers, expected 1 (the same one re-sent)`);
  p.expect(st.paid === 2, `seller saw ${st.paid} paid requests, expected 2 (the send whose answer was lost, and one re-send)`);
  p.expect(st.settled?.length === 1, `seller settled ${st.settled?.length} times`);
  const fresh = (await paymentsWait(config, (a) => a.some((e) => !before.includes(e.id) && e.state !== "signed")))
    .filter((e) => !before.includes(e.id));
  info("ledger", fresh);
  p.expect(fresh.length === 1, `ledger: ${fresh.length} new payments, expected 1`);
  const e = fresh[0] ?? {};
  p.expect(e.state === "settled", `ledger: state ${e.state}, expected settled`);
  p.expect(e.attempts === 2, `ledger: attempts ${e.attempts}, expected 2`);
  p.expect(logs[0] && e.nonce?.toLowerCase() === logs[0].args.nonce.toLowerCase(), `ledger: nonce ${e.nonce}, on chain ${logs[0]?.args.nonce}`);
  if (o.mode === "id") {
    assert(rec.ok, `call failed: HTTP ${rec.http_status} ${rec.exc}: ${rec.message}`);
    p.expect(rec.content === `echo: ${tag}`, `content ${JSON.stringify(rec.content)}`);
    p.expect(hdr(rec, "x-x402d-payment-state") === "settled", `payment state header ${hdr(rec, "x-x402d-payment-state")}`);
    p.expect(st.replayed === 1, `seller replayed ${st.replayed} answers by payment id, expected 1`);
    const pid = JSON.parse(Buffer.from(st.signatures?.[0] ?? "", "base64").toString("utf8") || "{}").extensions?.["payment-identifier"]?.info?.id;
    p.expect(pid && e.payment_identifier === pid, `ledger: payment_identifier ${e.payment_identifier}, the seller got ${pid}`);
    p.expect(logs[0] && e.tx?.toLowerCase() === logs[0].transactionHash.toLowerCase(), `ledger: tx ${e.tx}, on chain ${logs[0]?.transactionHash}`);
    note(`lost answer recovered by payment id ${pid}: 2 sends of one signature, one transfer`);
  } else {
    p.expect(!rec.ok && rec.http_status === 502, `HTTP ${rec.http_status} ok=${rec.ok}, expected 502`);
    const body = errorBody(rec);
    p.expect(body?.error?.code === "paid_answer_lost", `error code ${body?.error?.code}, expected paid_answer_lost`);
    p.expect(/paid \$0\.001/.test(body?.error?.message ?? "") && /lost the answer/.test(body?.error?.message ?? ""),
      `error message ${JSON.stringify(body?.error?.message)} does not say it paid once and the answer was lost`);
    p.expect(hdr(rec, "x-should-retry") === "false", `x-should-retry ${hdr(rec, "x-should-retry")}`);
    p.expect(st.refused?.length === 1, `seller refused ${st.refused?.length} re-sends (${st.refused}), expected 1`);
    p.expect(e.tx === null, `ledger: tx ${e.tx}, expected null (unknown: the seller's answer was lost)`);
    note(`re-send refused (${st.refused?.[0]}); app told: ${String(body?.error?.message).slice(0, 160)}`);
  }
  p.done();
});
