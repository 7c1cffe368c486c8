// Golden vectors for x402d's Solana `exact` client (src/x402/svm.rs), made by
// @x402/svm's own client code. Regenerate (needs network once for npm):
//   mkdir /tmp/g && cd /tmp/g && npm init -y && npm i @x402/svm@2.27.0 @solana/kit@5.5.1
//   node /path/to/tests/vectors/gen_svm.mjs > /path/to/tests/vectors/svm_exact.json
// A loopback RPC answers getAccountInfo (the USDC mint) and getLatestBlockhash;
// crypto.getRandomValues is fixed so the random-memo case is reproducible.
import http from "node:http";
import { createRequire } from "node:module";
const require = createRequire(process.cwd() + "/");
const { ExactSvmScheme } = require("@x402/svm/exact/client");
const { ExactSvmSchemeV1 } = require("@x402/svm/v1");
const kit = require("@solana/kit");

const TOKEN = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
const BLOCKHASH = kit.getBase58Decoder().decode(new Uint8Array(32).map((_, i) => 200 - i));
const LAST_VALID = 123456789;

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    const r = JSON.parse(body);
    let result;
    if (r.method === "getAccountInfo") {
      const data = Buffer.alloc(82);
      data[44] = 6; // decimals
      data[45] = 1; // initialized
      result = { context: { slot: 1 }, value: { data: [data.toString("base64"), "base64"], executable: false,
        lamports: 1461600, owner: TOKEN, rentEpoch: 0, space: 82 } };
    } else if (r.method === "getLatestBlockhash") {
      result = { context: { slot: 1 }, value: { blockhash: BLOCKHASH, lastValidBlockHeight: LAST_VALID } };
    } else {
      result = null;
    }
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ jsonrpc: "2.0", id: r.id, result }));
  });
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const rpcUrl = `http://127.0.0.1:${server.address().port}`;

let fill = 0;
globalThis.crypto.getRandomValues = (a) => { for (let i = 0; i < a.length; i++) a[i] = (fill + i * 17) & 255; return a; };

const seeds = [new Uint8Array(32).map((_, i) => i + 1), new Uint8Array(32).map((_, i) => 255 - i * 3)];
const cases = [
  { name: "mainnet_memo", seed: 0, version: 2, network: "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
    asset: "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", amount: "10000",
    payTo: "2wKupLR9q6wXYppw8Gr2NvWxKBUqm4PPJKkQfoxHDBg4", feePayer: "CKPKJWNdJEqa81x7CkZ14BVPiY6y16Sxs7owznqtWYp5",
    memo: "order-42 ✓", fill: 0 },
  { name: "devnet_random_memo", seed: 1, version: 2, network: "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
    asset: "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", amount: "1",
    payTo: "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM", feePayer: "EwWqGE4ZFKLofuestmU4LDdK7XM1N4ALgdZccwYugwGd",
    memo: null, fill: 7 },
  { name: "v1_devnet_random_memo", seed: 0, version: 1, network: "solana-devnet",
    asset: "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", amount: "250000",
    payTo: "EwWqGE4ZFKLofuestmU4LDdK7XM1N4ALgdZccwYugwGd", feePayer: "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
    memo: null, fill: 99 },
];
// A payee whose token account sorts differently by the collator than by bytes
// (so the vectors pin the collator, not just the comparator test).
const { findAssociatedTokenPda } = require("@solana-program/token");
const collator = kit.getAddressComparator();
const byBytes = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
const payer0 = (await kit.createKeyPairSignerFromPrivateKeyBytes(seeds[0])).address;
const devUsdc = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU";
const [srcAta] = await findAssociatedTokenPda({ mint: devUsdc, owner: payer0, tokenProgram: TOKEN });
for (let i = 1; ; i++) {
  const cand = kit.getBase58Decoder().decode(new Uint8Array(32).map((_, j) => (i * 37 + j * 11) & 255));
  const [dst] = await findAssociatedTokenPda({ mint: devUsdc, owner: cand, tokenProgram: TOKEN });
  if (Math.sign(collator(srcAta, dst)) !== Math.sign(byBytes(srcAta, dst))) {
    cases.push({ name: "collation_order", seed: 0, version: 2, network: "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
      asset: devUsdc, amount: "777", payTo: cand, feePayer: "CKPKJWNdJEqa81x7CkZ14BVPiY6y16Sxs7owznqtWYp5",
      memo: "m", fill: 0 });
    break;
  }
}
const out = { blockhash: BLOCKHASH, lastValidBlockHeight: LAST_VALID, cases: [] };
for (const c of cases) {
  const signer = await kit.createKeyPairSignerFromPrivateKeyBytes(seeds[c.seed]);
  fill = c.fill;
  const extra = { feePayer: c.feePayer };
  if (c.memo) extra.memo = c.memo;
  const req = { scheme: "exact", network: c.network, asset: c.asset, payTo: c.payTo, maxTimeoutSeconds: 60, extra };
  let payload;
  if (c.version === 2) {
    payload = await new ExactSvmScheme(signer, { rpcUrl }).createPaymentPayload(2, { ...req, amount: c.amount });
  } else {
    payload = await new ExactSvmSchemeV1(signer, { rpcUrl }).createPaymentPayload(1, { ...req, maxAmountRequired: c.amount, resource: "http://x/y", description: "", mimeType: "" });
  }
  out.cases.push({ ...c, seedHex: Buffer.from(seeds[c.seed]).toString("hex"), payer: signer.address,
    randomBytesHex: c.memo ? null : Buffer.from(globalThis.crypto.getRandomValues(new Uint8Array(16))).toString("hex"),
    payload });
}
// Account order in a compiled message follows Intl.Collator("en", caseFirst lower);
// a sample to check x402d's comparator against.
const sample = [];
for (let i = 0; i < 64; i++) {
  const b = new Uint8Array(32).map((_, j) => (i * 31 + j * 7 + ((i * j) % 13)) & 255);
  sample.push(kit.getBase58Decoder().decode(b));
}
sample.push("11111111111111111111111111111111", "ComputeBudget111111111111111111111111111111", TOKEN,
  "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", "memoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", "MEmoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", "Memo");
out.collatorSorted = [...sample].sort(kit.getAddressComparator());
console.log(JSON.stringify(out, null, 1));
server.close();
