// Place TestUSDC at the Base Sepolia USDC address and MiniMulticall3 at 0xcA11…CA11 on a local anvil
// (chain id 84532) with anvil_setCode, then mint 100 USDC to the stack payer, x402d's wallet
// and the two keys of the wallet-rotation check.
import fs from "node:fs";
import { createTestClient, createWalletClient, http, parseUnits } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { RPC_URL, USDC, MULTICALL3, FACILITATOR_KEY, STACK_PAYER, X402D_PAYER, ROT_PAYER_A, ROT_PAYER_B, localChain, tokenAbi, pub, balanceOf } from "./lib/common.mjs";

const art = JSON.parse(fs.readFileSync(new URL("./sol/TestUSDC.json", import.meta.url)));
const test = createTestClient({ mode: "anvil", chain: localChain, transport: http(RPC_URL) });
await test.setCode({ address: USDC, bytecode: art.TestUSDC.deployedBytecode });
await test.setCode({ address: MULTICALL3, bytecode: art.MiniMulticall3.deployedBytecode });
const wallet = createWalletClient({ account: privateKeyToAccount(FACILITATOR_KEY), chain: localChain, transport: http(RPC_URL) });
for (const to of [STACK_PAYER, X402D_PAYER, ROT_PAYER_A, ROT_PAYER_B]) {
  const hash = await wallet.writeContract({ address: USDC, abi: tokenAbi, functionName: "mint", args: [to, parseUnits("100", 6)] });
  await pub.waitForTransactionReceipt({ hash, pollingInterval: 50 });
}
const [name, version] = await Promise.all(["name", "version"].map((functionName) => pub.readContract({ address: USDC, abi: tokenAbi, functionName })));
if (name !== "USDC" || version !== "2") throw new Error(`token domain mismatch: ${name}/${version}`);
console.log(JSON.stringify({ chainId: await pub.getChainId(), token: USDC, name, version,
  stackPayer: STACK_PAYER, stackPayerBalance: String(await balanceOf(STACK_PAYER)),
  x402dPayer: X402D_PAYER, x402dPayerBalance: String(await balanceOf(X402D_PAYER)) }));
