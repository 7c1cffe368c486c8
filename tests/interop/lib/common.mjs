// Shared constants and chain helpers for the x402d interop suite (all loopback, all env-driven).
import { createPublicClient, defineChain, http, parseAbi, parseAbiItem } from "viem";
import { privateKeyToAccount } from "viem/accounts";

export const RPC_URL = process.env.RPC_URL || "http://127.0.0.1:8545";
export const FACILITATOR_URL = process.env.FACILITATOR_URL || "http://127.0.0.1:4022";
export const SELLER_URL = process.env.SELLER_URL || "http://127.0.0.1:4021";

// Base Sepolia USDC address: TestUSDC's runtime code is placed here with anvil_setCode, so @x402/evm's
// built-in default asset for eip155:84532 (and "$0.001" pricing) works unchanged.
export const USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
export const MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11";
export const NETWORK = "eip155:84532";

// anvil's public dev keys (mnemonic "test test ... junk"); loopback only, never use anywhere else.
//   #0 facilitator (pays gas for settle), #1 payer of the direct stack self-test,
//   #2 payTo (seller), #3 x402d's wallet (imported into the kernel keyring by run.sh),
//   #4 / #5 the "rot" instance's first and second key (checks/rotation.mjs imports, replaces and removes them).
export const FACILITATOR_KEY = process.env.FACILITATOR_KEY || "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
export const STACK_PAYER_KEY = process.env.STACK_PAYER_KEY || "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
export const PAY_TO = process.env.PAY_TO || "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
export const X402D_PAYER_KEY = process.env.X402D_PAYER_KEY || "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";
export const X402D_PAYER = privateKeyToAccount(X402D_PAYER_KEY).address;
export const STACK_PAYER = privateKeyToAccount(STACK_PAYER_KEY).address;
export const ROT_KEY_A = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a";
export const ROT_KEY_B = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba";
export const ROT_PAYER_A = privateKeyToAccount(ROT_KEY_A).address;
export const ROT_PAYER_B = privateKeyToAccount(ROT_KEY_B).address;

// Seller prices (USD and atomic USDC, 6 decimals), one per tier (the seller lists each model's tier in GET /v1/models).
export const PRICES = {
  base: { usd: "0.001", atomic: 1000n, path: "/v1/chat/completions" },
  pro: { usd: "0.002", atomic: 2000n, path: "/v1/pro/chat/completions" },
  premium: { usd: "0.003", atomic: 3000n, path: "/v1/premium/chat/completions" },
};

export const localChain = defineChain({
  id: 84532, name: "Base Sepolia (local anvil)", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
  rpcUrls: { default: { http: [RPC_URL] } },
});

export const tokenAbi = parseAbi([
  "function balanceOf(address) view returns (uint256)",
  "function mint(address to, uint256 v)",
  "function name() view returns (string)",
  "function version() view returns (string)",
  "function authorizationState(address authorizer, bytes32 nonce) view returns (bool)",
]);
export const AuthorizationUsed = parseAbiItem("event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)");
export const Transfer = parseAbiItem("event Transfer(address indexed from, address indexed to, uint256 value)");

export const pub = createPublicClient({ chain: localChain, transport: http(RPC_URL), pollingInterval: 50 });

export const balanceOf = (a) => pub.readContract({ address: USDC, abi: tokenAbi, functionName: "balanceOf", args: [a] });
export const authorizationState = (a, nonce) =>
  pub.readContract({ address: USDC, abi: tokenAbi, functionName: "authorizationState", args: [a, nonce] });

/** Chain state used to compute exact per-check deltas. */
export async function snapshot(payer = X402D_PAYER, payTo = PAY_TO) {
  const [block, payerBal, payToBal] = await Promise.all([pub.getBlockNumber(), balanceOf(payer), balanceOf(payTo)]);
  return { block, payer, payTo, payerBal, payToBal };
}

/** AuthorizationUsed logs by `authorizer` after snapshot `s0` (exclusive), oldest first. */
export async function authLogsSince(s0, authorizer = s0.payer) {
  const head = await pub.getBlockNumber();
  if (head <= s0.block) return []; // anvil rejects fromBlock > head
  return pub.getLogs({ address: USDC, event: AuthorizationUsed, args: { authorizer }, fromBlock: s0.block + 1n, toBlock: head });
}

/** Transfer logs from -> to after snapshot `s0` (exclusive), oldest first. */
export async function transfersSince(s0, from = s0.payer, to = s0.payTo) {
  const head = await pub.getBlockNumber();
  if (head <= s0.block) return [];
  return pub.getLogs({ address: USDC, event: Transfer, args: { from, to }, fromBlock: s0.block + 1n, toBlock: head });
}

export const b64json = (s) => JSON.parse(Buffer.from(s, "base64").toString("utf8"));
