// A local Solana chain for the interop suite: LiteSVM (npm `litesvm`, the real SVM runtime with the real SPL Token,
// Associated Token Account and Memo programs, in process) behind a Solana JSON-RPC endpoint on 127.0.0.1.
//
// Genesis: Circle's devnet USDC mint at its real address (6 decimals), the facilitator's fee payer with SOL, and an
// associated token account with USDC for each payer (the payers have no SOL: the facilitator pays the fees), plus the
// seller's payTo token account.
//
// Blocks: a new slot every SOLANA_SLOT_MS (default 400) with a fresh blockhash; block height = slot - HEIGHT_OFFSET (so
// a client that confuses slot and block height is caught); a blockhash is valid for 150 blocks
// (lastValidBlockHeight = height + 150), as on the real cluster. LiteSVM's own blockhash check is off and this server
// applies the real rule: a transaction whose blockhash is unknown or expired is refused in preflight, and silently
// dropped (never lands) with skipPreflight, like a real RPC node.
// Commitment: "finalized" (the default when a request names none) is 32 slots behind the tip, for slots, heights,
// blockhashes and transaction lookups (getSignaturesForAddress, getTransaction); account reads are at the tip.
//
// Methods: the ones @x402/svm's client and facilitator and x402d call (getLatestBlockhash, getBlockHeight, getSlot,
// getAccountInfo, getMultipleAccounts, getBalance, getTokenAccountBalance, getTokenAccountsByOwner,
// getMinimumBalanceForRentExemption, simulateTransaction, sendTransaction, getSignatureStatuses, getTransaction,
// getSignaturesForAddress, getHealth, getVersion, getGenesisHash, getEpochInfo, getFeeForMessage, isBlockhashValid,
// getRecentPrioritizationFees) plus test-only ones: x402dtest_warp [blocks] (advance now), x402dtest_pause /
// x402dtest_resume (stop / restart block production), x402dtest_calls [sinceIndex] (every call received, in order,
// with its User-Agent).
// Unknown methods answer JSON-RPC -32601 and are logged, so a new call by a client shows up in chain.log.
import http from "node:http";
import {
  address, getAddressDecoder, getAddressEncoder, getBase58Decoder, getBase58Encoder, getBase64Decoder, getBase64Encoder,
  getCompiledTransactionMessageDecoder, getTransactionDecoder, lamports,
} from "@solana/kit";
import { ATA_PROGRAM, DEVNET_GENESIS_HASH, MEMO_PROGRAM, TOKEN_PROGRAM, USDC_DECIMALS, USDC_MINT, ata, keys } from "./common.mjs";

const PORT = Number(process.env.SOLANA_RPC_PORT || 8899);
const SLOT_MS = Number(process.env.SOLANA_SLOT_MS || 400);
const HEIGHT_OFFSET = 1000n;
const VALID_BLOCKS = 150n;
const PAYER_USDC = 10_000_000n; // 10 USDC each
const LEGACY_MEMO = "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo";
const log = (...a) => console.log(new Date().toISOString(), ...a);
// A failure to start ends with one line saying why (run.sh shows the log's last lines in the FAIL reason).
const die = (what, e) => { console.log(e?.stack || String(e)); console.log(""); console.log(""); console.log(`solana chain: ${what}: ${e?.message || e}`); process.exit(1); };
process.on("uncaughtException", (e) => die("crashed", e));
let LiteSVM;
try { ({ LiteSVM } = await import("litesvm")); } catch (e) { die(`cannot load litesvm (its prebuilt native module for ${process.platform}-${process.arch})`, e); }

const b58 = { enc: getBase58Encoder(), dec: getBase58Decoder() };
const b64 = { enc: getBase64Encoder(), dec: getBase64Decoder() };
const addrEnc = getAddressEncoder(), addrDec = getAddressDecoder();
const txDecoder = getTransactionDecoder(), msgDecoder = getCompiledTransactionMessageDecoder();

// ---- chain state ----
const svm = new LiteSVM().withBlockhashCheck(false).withTransactionHistory(0n);
let slot = HEIGHT_OFFSET + 100n;
const height = () => slot - HEIGHT_OFFSET;
const blockhashes = new Map(); // blockhash -> { slot, lastValid }
const slotHashes = new Map(); // slot -> blockhash
// Commitment: "finalized" (the RPC's default when a request names none) trails the tip by 32 slots, "confirmed" and
// "processed" are the tip. It applies to slots, heights, blockhashes and transaction lookups; account reads are always
// at the tip (a simplification: transfers here are final at once).
const FINALITY = 32n;
const at = (cfg) => (typeof cfg === "object" && cfg && (cfg.commitment === "confirmed" || cfg.commitment === "processed") ? slot : slot - FINALITY);
const heightAt = (cfg) => at(cfg) - HEIGHT_OFFSET;
const txs = new Map(); // signature (base58) -> record
const byAddress = new Map(); // address -> [signature] (oldest first)
const calls = []; // every RPC call received: { i, t, method, params }
let paused = false;

function newBlock() {
  slot += 1n;
  svm.warpToSlot(slot);
  const clock = svm.getClock();
  clock.unixTimestamp = BigInt(Math.floor(Date.now() / 1000));
  svm.setClock(clock);
  svm.expireBlockhash();
  blockhashes.set(svm.latestBlockhash(), { slot, lastValid: height() + VALID_BLOCKS });
  slotHashes.set(slot, svm.latestBlockhash());
  for (const [h, v] of blockhashes) if (v.lastValid + 300n < height()) { blockhashes.delete(h); slotHashes.delete(v.slot); }
}
const blockhashValid = (h, cfg = { commitment: "processed" }) => { const v = blockhashes.get(h); return !!v && v.slot <= at(cfg) && v.lastValid >= heightAt(cfg); };

// ---- genesis ----
const rent = (len) => svm.minimumBalanceForRentExemption(BigInt(len));
const u64le = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return b; };
const setAccount = (addr, data, owner, lamportsValue) =>
  svm.setAccount({ address: addr, data: new Uint8Array(data), executable: false, lamports: lamports(lamportsValue), programAddress: owner, space: BigInt(data.length) });
function mintData(supply) { // spl-token Mint: COption<authority>, supply, decimals, is_initialized, COption<freeze>
  return Buffer.concat([u64le(0).subarray(0, 4), Buffer.alloc(32), u64le(supply), Buffer.from([USDC_DECIMALS, 1]), Buffer.alloc(4), Buffer.alloc(32)]);
}
function tokenAccountData(mint, owner, amount) { // spl-token Account, 165 bytes, state Initialized
  return Buffer.concat([addrEnc.encode(mint), addrEnc.encode(owner), u64le(amount), Buffer.alloc(36), Buffer.from([1]), Buffer.alloc(12), u64le(0), Buffer.alloc(36)]);
}
async function setUsdc(owner, amount) {
  setAccount(await ata(owner), tokenAccountData(USDC_MINT, owner, amount), TOKEN_PROGRAM, rent(165));
}
async function genesis() {
  const payers = [keys.stackPayer.address, keys.x402d.address];
  setAccount(USDC_MINT, mintData(PAYER_USDC * BigInt(payers.length)), TOKEN_PROGRAM, rent(82));
  svm.airdrop(keys.feePayer.address, lamports(100_000_000_000n)); // 100 SOL
  for (const p of payers) await setUsdc(p, PAYER_USDC);
  await setUsdc(keys.payTo.address, 0n);
  for (let i = 0n; i <= FINALITY; i++) newBlock(); // so "finalized" has a block and a blockhash from the start
}

// ---- decoding ----
function decodeWire(base64) {
  const tx = txDecoder.decode(b64.enc.encode(base64));
  const msg = msgDecoder.decode(tx.messageBytes);
  const sigs = Object.values(tx.signatures);
  const signature = sigs[0] ? b58.dec.decode(sigs[0]) : null;
  return { tx, msg, signature };
}
function accountMeta(msg) { // per static account: { pubkey, signer, writable }
  const h = msg.header, n = msg.staticAccounts.length;
  return msg.staticAccounts.map((pubkey, i) => {
    const signer = i < h.numSignerAccounts;
    const writable = signer ? i < h.numSignerAccounts - h.numReadonlySignerAccounts : i < n - h.numReadonlyNonSignerAccounts;
    return { pubkey, signer, writable };
  });
}
function memosOf(msg) {
  return (msg.instructions || []).map((ix) => ({ p: msg.staticAccounts[ix.programAddressIndex], d: ix.data || new Uint8Array() }))
    .filter((x) => x.p === MEMO_PROGRAM || x.p === LEGACY_MEMO)
    .map((x) => `[${x.d.length}] ${Buffer.from(x.d).toString("utf8")}`);
}
function tokenBalances(msg) { // token accounts among the static accounts, as RPC pre/postTokenBalances
  const out = [];
  msg.staticAccounts.forEach((a, accountIndex) => {
    const acc = svm.getAccount(a);
    if (!acc.exists || acc.programAddress !== TOKEN_PROGRAM || acc.data.length !== 165) return;
    const d = Buffer.from(acc.data);
    const mint = addrDec.decode(d.subarray(0, 32)), owner = addrDec.decode(d.subarray(32, 64));
    out.push({ accountIndex, mint, owner, programId: TOKEN_PROGRAM, uiTokenAmount: uiAmount(d.readBigUInt64LE(64), decimalsOf(mint)) });
  });
  return out;
}
function decimalsOf(mint) {
  const acc = svm.getAccount(mint);
  return acc.exists && acc.data.length >= 45 ? acc.data[44] : 0;
}
function uiAmount(amount, decimals) {
  const s = amount.toString().padStart(decimals + 1, "0");
  const ui = decimals ? `${s.slice(0, -decimals)}.${s.slice(-decimals)}`.replace(/\.?0+$/, "") : s;
  return { amount: amount.toString(), decimals, uiAmount: Number(ui), uiAmountString: ui };
}

// LiteSVM error objects -> the RPC's JSON TransactionError shape.
const TX_ERRORS = "AccountInUse,AccountLoadedTwice,AccountNotFound,ProgramAccountNotFound,InsufficientFundsForFee,InvalidAccountForFee,AlreadyProcessed,BlockhashNotFound,CallChainTooDeep,MissingSignatureForFee,InvalidAccountIndex,SignatureFailure,InvalidProgramForExecution,SanitizeFailure,ClusterMaintenance,AccountBorrowOutstanding,WouldExceedMaxBlockCostLimit,UnsupportedVersion,InvalidWritableAccount,WouldExceedMaxAccountCostLimit,WouldExceedAccountDataBlockLimit,TooManyAccountLocks,AddressLookupTableNotFound,InvalidAddressLookupTableOwner,InvalidAddressLookupTableData,InvalidAddressLookupTableIndex,InvalidRentPayingAccount,WouldExceedMaxVoteCostLimit,WouldExceedAccountDataTotalLimit,MaxLoadedAccountsDataSizeExceeded,ResanitizationNeeded,InvalidLoadedAccountsDataSizeLimit,UnbalancedTransaction,ProgramCacheHitMaxLimit,CommitCancelled".split(",");
const IX_ERRORS = "GenericError,InvalidArgument,InvalidInstructionData,InvalidAccountData,AccountDataTooSmall,InsufficientFunds,IncorrectProgramId,MissingRequiredSignature,AccountAlreadyInitialized,UninitializedAccount,UnbalancedInstruction,ModifiedProgramId,ExternalAccountLamportSpend,ExternalAccountDataModified,ReadonlyLamportChange,ReadonlyDataModified,DuplicateAccountIndex,ExecutableModified,RentEpochModified,NotEnoughAccountKeys,AccountDataSizeChanged,AccountNotExecutable,AccountBorrowFailed,AccountBorrowOutstanding,DuplicateAccountOutOfSync,InvalidError,ExecutableDataModified,ExecutableLamportChange,ExecutableAccountNotRentExempt,UnsupportedProgramId,CallDepth,MissingAccount,ReentrancyNotAllowed,MaxSeedLengthExceeded,InvalidSeeds,InvalidRealloc,ComputationalBudgetExceeded,PrivilegeEscalation,ProgramEnvironmentSetupFailure,ProgramFailedToComplete,ProgramFailedToCompile,Immutable,IncorrectAuthority,AccountNotRentExempt,InvalidAccountOwner,ArithmeticOverflow,UnsupportedSysvar,IllegalOwner,MaxAccountsDataAllocationsExceeded,MaxAccountsExceeded,MaxInstructionTraceLengthExceeded,BuiltinProgramsMustConsumeComputeUnits,BorshIoError".split(",");
function txError(e) {
  if (typeof e === "number") return TX_ERRORS[e] ?? `TransactionError${e}`;
  if (e && typeof e.err === "function") {
    const ie = e.err();
    const inner = typeof ie === "number" ? IX_ERRORS[ie] ?? `InstructionError${ie}` : ie?.code !== undefined ? { Custom: ie.code } : { BorshIoError: ie?.msg ?? String(ie) };
    return { InstructionError: [e.index, inner] };
  }
  if (e?.accountIndex !== undefined) return { [String(e.constructor?.name || "").replace(/^TransactionError/, "") || "TransactionError"]: { account_index: e.accountIndex } };
  if (e?.index !== undefined) return { DuplicateInstruction: e.index };
  return String(e);
}
const isFailed = (r) => typeof r?.err === "function";
function innerInstructionsJson(meta) {
  return meta.innerInstructions().map((list, index) => ({ index, instructions: list.map((ii) => {
    const ci = ii.instruction();
    return { programIdIndex: ci.programIdIndex(), accounts: [...ci.accounts()], data: b58.dec.decode(ci.data()), stackHeight: ii.stackHeight() };
  }) })).filter((x) => x.instructions.length);
}

// ---- transactions ----
function simulate(base64, cfg = {}) {
  const { tx, msg } = decodeWire(base64);
  const ctx = { slot: Number(slot) };
  if (!cfg.replaceRecentBlockhash && !blockhashValid(msg.lifetimeToken)) {
    return { context: ctx, value: { err: "BlockhashNotFound", logs: [], accounts: null, unitsConsumed: 0, returnData: null } };
  }
  const sigverify = cfg.sigVerify === true;
  svm.withSigverify(sigverify);
  let r;
  try { r = svm.simulateTransaction(tx); } finally { svm.withSigverify(true); }
  const meta = isFailed(r) ? r.meta() : r.meta();
  const value = { err: isFailed(r) ? txError(r.err()) : null, logs: meta.logs(), accounts: null, unitsConsumed: Number(meta.computeUnitsConsumed()), returnData: null };
  if (cfg.innerInstructions) value.innerInstructions = innerInstructionsJson(meta);
  if (cfg.replaceRecentBlockhash) value.replacementBlockhash = { blockhash: svm.latestBlockhash(), lastValidBlockHeight: Number(height() + VALID_BLOCKS) };
  return { context: ctx, value };
}

function send(base64, cfg = {}) {
  const { tx, msg, signature } = decodeWire(base64);
  if (!signature) throw rpcError(-32602, "invalid transaction: no signature");
  if (txs.has(signature)) {
    if (!cfg.skipPreflight) throw rpcError(-32002, "Transaction simulation failed: This transaction has already been processed", { err: "AlreadyProcessed", logs: [] });
    return signature;
  }
  if (!blockhashValid(msg.lifetimeToken)) {
    if (!cfg.skipPreflight) throw rpcError(-32002, "Transaction simulation failed: Blockhash not found", { err: "BlockhashNotFound", logs: [], accounts: null, unitsConsumed: 0 });
    log(`dropped ${signature}: blockhash ${msg.lifetimeToken} unknown or expired (height ${height()})`);
    return signature; // like a real node: accepted, never lands
  }
  if (!cfg.skipPreflight) {
    const sim = simulate(base64, { sigVerify: true });
    if (sim.value.err) throw rpcError(-32002, `Transaction simulation failed: ${JSON.stringify(sim.value.err)}`, sim.value);
  }
  const metaAccounts = accountMeta(msg);
  const preBalances = msg.staticAccounts.map((a) => Number(svm.getBalance(a) ?? 0n));
  const preTokenBalances = tokenBalances(msg);
  const r = svm.sendTransaction(tx);
  const meta = isFailed(r) ? r.meta() : r;
  const err = isFailed(r) ? txError(r.err()) : null;
  if (err === "SignatureFailure" || err === "SanitizeFailure" || err === "AccountNotFound" || err === "InsufficientFundsForFee") {
    // Rejected before execution: a real leader would not include it in a block.
    log(`rejected ${signature}: ${JSON.stringify(err)}`);
    if (!cfg.skipPreflight) throw rpcError(-32002, `Transaction simulation failed: ${err}`, { err, logs: meta.logs() });
    return signature;
  }
  const rec = {
    signature, slot, blockTime: Math.floor(Date.now() / 1000), wire: base64, msg, metaAccounts, err,
    fee: 5000 * msg.header.numSignerAccounts,
    preBalances, postBalances: msg.staticAccounts.map((a) => Number(svm.getBalance(a) ?? 0n)),
    preTokenBalances, postTokenBalances: tokenBalances(msg),
    logs: meta.logs(), unitsConsumed: Number(meta.computeUnitsConsumed()), innerInstructions: innerInstructionsJson(meta),
    memo: memosOf(msg).join("; ") || null,
  };
  txs.set(signature, rec);
  for (const a of msg.staticAccounts) { if (!byAddress.has(a)) byAddress.set(a, []); byAddress.get(a).push(signature); }
  log(`tx ${signature} slot ${slot} ${err ? "FAILED " + JSON.stringify(err) : "ok"} memo ${rec.memo}`);
  return signature;
}

function rpcError(code, message, data) { const e = new Error(message); e.rpc = { code, message, ...(data ? { data } : {}) }; return e; }

// ---- account encodings ----
function parsedAccount(a, acc) {
  if (acc.programAddress === TOKEN_PROGRAM && acc.data.length === 165) {
    const d = Buffer.from(acc.data); const mint = addrDec.decode(d.subarray(0, 32));
    return { program: "spl-token", parsed: { type: "account", info: { isNative: false, mint, owner: addrDec.decode(d.subarray(32, 64)),
      state: "initialized", tokenAmount: uiAmount(d.readBigUInt64LE(64), decimalsOf(mint)) } }, space: 165 };
  }
  if (acc.programAddress === TOKEN_PROGRAM && acc.data.length === 82) {
    const d = Buffer.from(acc.data);
    return { program: "spl-token", parsed: { type: "mint", info: { decimals: d[44], freezeAuthority: null, isInitialized: true, mintAuthority: null,
      supply: d.readBigUInt64LE(36).toString() } }, space: 82 };
  }
  return null;
}
function accountJson(a, encoding = "base64") {
  const acc = svm.getAccount(address(a));
  if (!acc.exists) return null;
  let data;
  if (encoding === "jsonParsed") data = parsedAccount(a, acc) ?? [b64.dec.decode(acc.data), "base64"];
  else if (encoding === "base58") data = [b58.dec.decode(acc.data), "base58"];
  else data = [b64.dec.decode(acc.data), "base64"];
  return { data, executable: acc.executable, lamports: Number(acc.lamports), owner: acc.programAddress, rentEpoch: 0, space: acc.data.length };
}

// ---- getTransaction encodings ----
const PARSED_PROGRAMS = { [MEMO_PROGRAM]: "spl-memo", [TOKEN_PROGRAM]: "spl-token", [ATA_PROGRAM]: "spl-associated-token-account" };
function instructionJson(msg, ix, parsed) {
  const programId = msg.staticAccounts[ix.programAddressIndex];
  const accounts = [...(ix.accountIndices || [])];
  const data = ix.data || new Uint8Array();
  if (!parsed) return { programIdIndex: ix.programAddressIndex, accounts, data: b58.dec.decode(data), stackHeight: null };
  if (programId === MEMO_PROGRAM || programId === LEGACY_MEMO) return { program: "spl-memo", programId, parsed: Buffer.from(data).toString("utf8"), stackHeight: null };
  if (programId === TOKEN_PROGRAM && data[0] === 12 && data.length >= 10) { // TransferChecked
    const [source, mint, destination, authority] = accounts.map((i) => msg.staticAccounts[i]);
    return { program: "spl-token", programId, parsed: { type: "transferChecked", info: { source, mint, destination, authority,
      tokenAmount: uiAmount(Buffer.from(data).readBigUInt64LE(1), data[9]) } }, stackHeight: null };
  }
  return { programId, accounts: accounts.map((i) => msg.staticAccounts[i]), data: b58.dec.decode(data), stackHeight: null };
}
function transactionJson(rec, encoding = "json") {
  const meta = {
    err: rec.err, status: rec.err ? { Err: rec.err } : { Ok: null }, fee: rec.fee, preBalances: rec.preBalances, postBalances: rec.postBalances,
    preTokenBalances: rec.preTokenBalances, postTokenBalances: rec.postTokenBalances, logMessages: rec.logs, innerInstructions: rec.innerInstructions,
    loadedAddresses: { writable: [], readonly: [] }, rewards: [], computeUnitsConsumed: rec.unitsConsumed,
  };
  const version = rec.msg.version === "legacy" ? "legacy" : 0;
  let transaction;
  if (encoding === "base64") transaction = [rec.wire, "base64"];
  else if (encoding === "base58") transaction = [b58.dec.decode(b64.enc.encode(rec.wire)), "base58"];
  else {
    const { tx, msg } = decodeWire(rec.wire);
    const parsed = encoding === "jsonParsed";
    transaction = {
      signatures: Object.values(tx.signatures).map((s) => (s ? b58.dec.decode(s) : "1111111111111111111111111111111111111111111111111111111111111111")),
      message: {
        accountKeys: parsed ? rec.metaAccounts.map((m) => ({ ...m, source: "transaction" })) : msg.staticAccounts,
        ...(parsed ? {} : { header: { numRequiredSignatures: msg.header.numSignerAccounts, numReadonlySignedAccounts: msg.header.numReadonlySignerAccounts,
          numReadonlyUnsignedAccounts: msg.header.numReadonlyNonSignerAccounts } }),
        recentBlockhash: msg.lifetimeToken,
        instructions: msg.instructions.map((ix) => instructionJson(msg, ix, parsed)),
        ...(version === 0 ? { addressTableLookups: [] } : {}),
      },
    };
  }
  return { slot: Number(rec.slot), blockTime: rec.blockTime, version, transaction, meta };
}

// ---- RPC methods ----
const ctx = (cfg) => ({ slot: Number(at(cfg)), apiVersion: "2.2.0" });
const tip = () => ({ slot: Number(slot), apiVersion: "2.2.0" });
const visible = (r, cfg) => r && r.slot <= at(cfg); // a transaction seen at this commitment
const methods = {
  getHealth: () => "ok",
  getVersion: () => ({ "solana-core": "2.2.0", "feature-set": 0 }),
  getGenesisHash: () => DEVNET_GENESIS_HASH,
  getSlot: ([cfg] = []) => Number(at(cfg)),
  getBlockHeight: ([cfg] = []) => Number(heightAt(cfg)),
  getEpochInfo: ([cfg] = []) => ({ absoluteSlot: Number(at(cfg)), blockHeight: Number(heightAt(cfg)), epoch: 0, slotIndex: Number(at(cfg)), slotsInEpoch: 432000, transactionCount: txs.size }),
  getLatestBlockhash: ([cfg] = []) => {
    const h = slotHashes.get(at(cfg));
    return { context: ctx(cfg), value: { blockhash: h, lastValidBlockHeight: Number(blockhashes.get(h).lastValid) } };
  },
  isBlockhashValid: ([h, cfg]) => ({ context: ctx(cfg), value: blockhashValid(h, cfg) }),
  getFeeForMessage: ([m]) => {
    const msg = msgDecoder.decode(b64.enc.encode(m));
    return { context: tip(), value: blockhashValid(msg.lifetimeToken) ? 5000 * msg.header.numSignerAccounts : null };
  },
  getRecentPrioritizationFees: () => [],
  getMinimumBalanceForRentExemption: ([len]) => Number(rent(len)),
  getBalance: ([a]) => ({ context: tip(), value: Number(svm.getBalance(address(a)) ?? 0n) }),
  getAccountInfo: ([a, cfg]) => ({ context: tip(), value: accountJson(a, cfg?.encoding) }),
  getMultipleAccounts: ([list, cfg]) => ({ context: tip(), value: list.map((a) => accountJson(a, cfg?.encoding)) }),
  getTokenAccountBalance: ([a]) => {
    const acc = svm.getAccount(address(a));
    if (!acc.exists || acc.programAddress !== TOKEN_PROGRAM || acc.data.length !== 165) throw rpcError(-32602, "Invalid param: not a Token account");
    const d = Buffer.from(acc.data);
    return { context: tip(), value: uiAmount(d.readBigUInt64LE(64), decimalsOf(addrDec.decode(d.subarray(0, 32)))) };
  },
  getTokenAccountsByOwner: async ([owner, filter, cfg]) => {
    const mint = filter?.mint;
    if (!mint) return { context: tip(), value: [] };
    const pubkey = await ata(address(owner), address(mint));
    const account = accountJson(pubkey, cfg?.encoding);
    return { context: tip(), value: account ? [{ pubkey, account }] : [] };
  },
  simulateTransaction: ([tx, cfg]) => simulate(tx, cfg || {}),
  sendTransaction: ([tx, cfg]) => send(tx, cfg || {}),
  getSignatureStatuses: ([sigs]) => ({ context: tip(), value: sigs.map((s) => {
    const r = txs.get(s);
    if (!r) return null;
    const confirmations = Number(slot - r.slot);
    return { slot: Number(r.slot), confirmations: confirmations >= 32 ? null : confirmations, err: r.err, status: r.err ? { Err: r.err } : { Ok: null },
      confirmationStatus: confirmations >= 32 ? "finalized" : "confirmed" };
  }) }),
  getTransaction: ([s, cfg]) => {
    const r = txs.get(s);
    const encoding = typeof cfg === "string" ? cfg : cfg?.encoding || "json";
    return visible(r, cfg) ? transactionJson(r, encoding) : null;
  },
  getSignaturesForAddress: ([a, cfg = {}]) => {
    let list = [...(byAddress.get(a) || [])].filter((s) => visible(txs.get(s), cfg)).reverse(); // newest first
    if (cfg.before) { const i = list.indexOf(cfg.before); list = i < 0 ? [] : list.slice(i + 1); }
    if (cfg.until) { const i = list.indexOf(cfg.until); if (i >= 0) list = list.slice(0, i); }
    return list.slice(0, Math.min(cfg.limit || 1000, 1000)).map((s) => {
      const r = txs.get(s);
      return { signature: s, slot: Number(r.slot), err: r.err, memo: r.memo, blockTime: r.blockTime,
        confirmationStatus: slot - r.slot >= 32n ? "finalized" : "confirmed" };
    });
  },
  // test-only
  x402dtest_warp: ([n = 1]) => { for (let i = 0; i < n; i++) newBlock(); return { slot: Number(slot), blockHeight: Number(height()) }; },
  x402dtest_pause: () => { paused = true; return true; },
  x402dtest_resume: () => { paused = false; return true; },
  x402dtest_calls: ([since = 0]) => calls.slice(since),
};

async function handle(req, ua) {
  const { id = null, method, params = [] } = req || {};
  if (!method?.startsWith("x402dtest_")) calls.push({ i: calls.length, t: Date.now(), ua, method, params });
  const fn = methods[method];
  if (!fn) { log(`unknown method ${method} ${JSON.stringify(params)}`); return { jsonrpc: "2.0", id, error: { code: -32601, message: `Method not found: ${method}` } }; }
  try {
    return { jsonrpc: "2.0", id, result: await fn(params) };
  } catch (e) {
    if (!e.rpc) log(`error in ${method}:`, e);
    return { jsonrpc: "2.0", id, error: e.rpc || { code: -32603, message: `Internal error: ${e.message}` } };
  }
}
const replacer = (_k, v) => (typeof v === "bigint" ? Number(v) : v);

try { await genesis(); } catch (e) { die("genesis failed", e); }
const timer = setInterval(() => { if (!paused) newBlock(); }, SLOT_MS);
http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", async () => {
    let out;
    try {
      const parsed = JSON.parse(body);
      const ua = req.headers["user-agent"] || null;
      out = Array.isArray(parsed) ? await Promise.all(parsed.map((r) => handle(r, ua))) : await handle(parsed, ua);
    } catch {
      out = { jsonrpc: "2.0", id: null, error: { code: -32700, message: "Parse error" } };
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(out, replacer));
  });
}).on("error", (e) => die(`cannot listen on 127.0.0.1:${PORT}`, e)).listen(PORT, "127.0.0.1", () => log(`solana chain (litesvm) on http://127.0.0.1:${PORT}: slot ${slot} height ${height()} slot every ${SLOT_MS} ms; `
  + `USDC ${USDC_MINT}; fee payer ${keys.feePayer.address}; payers ${keys.stackPayer.address} ${keys.x402d.address}; payTo ${keys.payTo.address}`));
process.on("SIGTERM", () => { clearInterval(timer); process.exit(0); });
