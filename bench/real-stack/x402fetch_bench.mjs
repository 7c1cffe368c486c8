// Benchmark driver: N sequential paid chat calls straight to the seller with Coinbase's
// @x402/fetch client (no x402d). Prints one JSON line with per-call wall times (ms),
// measured in-process (node start-up excluded). Resolves packages through the
// node_modules symlink bench/real-stack.sh creates (-> tests/interop/node_modules).
//   node x402fetch_bench.mjs SELLER_URL N PAYER_KEY
import { wrapFetchWithPayment, decodePaymentResponseHeader } from "@x402/fetch";
import { x402Client } from "@x402/core/client";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";

const [url, n, key] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
const client = new x402Client().register("eip155:*", new ExactEvmScheme(privateKeyToAccount(key)));
const pay = wrapFetchWithPayment(fetch, client);
const ms = [];
let errors = 0;
for (let i = 0; i < n; i++) {
  const t0 = performance.now();
  try {
    const res = await pay(url + "/v1/chat/completions", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: `bench ${i}` }] }),
    });
    await res.json();
    const prh = res.headers.get("payment-response");
    const settled = res.status === 200 && prh && decodePaymentResponseHeader(prh)?.success;
    if (settled) ms.push(performance.now() - t0); else errors++;
  } catch (e) {
    if (errors === 0) console.error("first error:", e);
    errors++;
  }
}
console.log(JSON.stringify({ ms, errors }));
