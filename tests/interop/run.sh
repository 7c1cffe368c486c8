#!/usr/bin/env bash
# Offline x402 interop suite for x402d. Everything runs on 127.0.0.1; nothing reaches the internet at run time.
#
#   anvil (chain id 84532) -> TestUSDC (EIP-3009) at the Base Sepolia USDC address + MiniMulticall3
#   -> facilitator (@x402/core + @x402/evm) -> seller (@x402/express v2, OpenAI-shaped, priced)
#   -> x402d (the real binary, wallet in the kernel keyring) <- real OpenAI SDKs (Python + Node) and LangChain
#   retry-seller.mjs (takes the payment, then 500 / drops / is slow) <- a second x402d ("retry") <- the SDKs
#   recover-seller.mjs (settles through the facilitator, then loses the answer) <- x402d "recover" <- openai-python
#   a second anvil whose clock is 2 min behind the host's <- x402d "resolve" <- checks/resolve.mjs (seller + RPC proxy)
#   x402d "rot" (its own keyring entry) <- checks/rotation.mjs: wallet import / import --replace / remove while serving
#   Solana: solana/chain.mjs (LiteSVM behind JSON-RPC, devnet USDC at its real address) -> solana/facilitator.mjs
#   (@x402/svm) -> solana/seller.mjs (@x402/express, SVM accepts; dual routes also settle on anvil through the EVM
#   facilitator) <- x402d "sol", "solcap", "solevm" (keyring entry wallet-sol) <- openai-python (checks/solana.mjs);
#   x402d "solres" <- checks/solana-recover.mjs and checks/solana-resolve.mjs (each the seller itself)
#
# Usage:  bash tests/interop/run.sh
# Env:    X402D_BIN      x402d binary (default <repo>/target/debug/x402d; built with `cargo build` if missing)
#         RUN_V1=1       also run the legacy x402 v1 seller (x402-express 1.2.0; installs v1/, ~680 MB)
#         CHECK_TIMEOUT  seconds per check (default 120);  VERBOSE=1 prints a failing check's log tail
# Output: "ok   <name>" / "FAIL <name>: <reason>" per check, then "N passed, N failed". Logs: tests/interop/.work/
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

# ---- run with a throwaway keyring (x402d keeps the wallet key in the kernel keyring) ----
# A fresh session keyring alone is not enough: x402d's keyutils store also links the key into the uid's
# *persistent* keyring, which outlives the session and is shared with the user's own sessions. A new user
# namespace has its own persistent keyring, which dies with the run. Where unprivileged user namespaces are
# off, the run falls back to a session keyring and removes the test wallet on exit (see keyring-clean).
if [ "${X402D_INTEROP_IN_SESSION:-}" != 1 ]; then
  if ! command -v keyctl >/dev/null 2>&1; then
    echo "FAIL setup: keyctl not found; install keyutils (e.g. apt-get install -y keyutils)"
    echo "0 passed, 1 failed"
    exit 1
  fi
  export X402D_INTEROP_IN_SESSION=1
  if command -v unshare >/dev/null 2>&1 && unshare --user --map-current-user true 2>/dev/null; then
    X402D_INTEROP_KEYRING=userns exec unshare --user --map-current-user keyctl session - bash "$HERE/run.sh" "$@"
  fi
  X402D_INTEROP_KEYRING=session exec keyctl session - bash "$HERE/run.sh" "$@"
fi

cd "$HERE" || exit 1
T_START=$(date +%s)
PASS=0; FAIL=0; PIDS=(); declare -A PIDOF=()
WORK="$HERE/.work"
rm -rf "$WORK"; mkdir -p "$WORK/logs" "$WORK/checks"
export WORK

log() { echo "# $*"; }
CHECK_PID=""
# remove_wallet: delete the test wallets from the keyring (every instance uses the same entry, except "rot", which
# has its own for wallet-rotation, and the Solana instances, which share wallet-sol: an EVM and a Solana key).
# Harmless when absent.
remove_wallet() {
  [ -x "${X402D_BIN:-}" ] || return 0
  local cfg
  for cfg in "${X402D_MAIN_CONFIG:-}" "${X402D_ROT_CONFIG:-}" "${X402D_SOL_CONFIG:-}"; do
    [ -f "$cfg" ] && "$X402D_BIN" --config "$cfg" wallet remove --yes >/dev/null 2>&1
  done
  [ -f "${X402D_SOL_CONFIG:-}" ] && "$X402D_BIN" --config "$X402D_SOL_CONFIG" wallet remove --solana --yes >/dev/null 2>&1
  return 0
}
cleanup() {
  local p
  [ -n "$CHECK_PID" ] && PIDS+=("$CHECK_PID")
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for _ in $(seq 1 30); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  remove_wallet
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# keyring_clean: once the wallet was imported, remove it and prove it is gone (counted as a check).
keyring_clean() {
  [ -x "${X402D_BIN:-}" ] && [ -f "${X402D_MAIN_CONFIG:-}" ] || return 0
  remove_wallet
  local out cfg problem=""
  # wallet-sol only once solana-wallet tried an import (a binary without Solana support refuses that config).
  local sol_cfg=""
  [ -f "$WORK/x402d-sol/.wallet-imported" ] && sol_cfg=$X402D_SOL_CONFIG
  for cfg in "$X402D_MAIN_CONFIG" "${X402D_ROT_CONFIG:-}" "$sol_cfg"; do
    [ -f "$cfg" ] || continue
    if out=$("$X402D_BIN" --config "$cfg" wallet address 2>&1); then
      problem="$problem the test wallet of $(basename "$(dirname "$cfg")") is still in the keyring after \`wallet remove\`: $out;"
    elif ! grep -q "no wallet key" <<<"$out"; then
      problem="$problem cannot tell whether the test wallet of $(basename "$(dirname "$cfg")") is gone: $out;"
    fi
  done
  if [ -n "$sol_cfg" ] && out=$("$X402D_BIN" --config "$sol_cfg" wallet address --solana 2>&1); then
    problem="$problem the Solana test wallet (wallet-sol) is still in the keyring after \`wallet remove --solana\`: $out;"
  fi
  if [ -n "$problem" ]; then
    problem=${problem# }; failed keyring-clean "${problem%;}"
  else
    echo "ok   keyring-clean"; PASS=$((PASS + 1))
    echo "     note: keyring: $X402D_INTEROP_KEYRING ($([ "$X402D_INTEROP_KEYRING" = userns ] && echo "private persistent keyring in a user namespace" || echo "session keyring; no user namespace, so the key was in your persistent keyring during the run"))"
  fi
}

finish() {
  keyring_clean
  [ -f "$WORK/timings.tsv" ] && log "slowest checks: $(sort -t$'\t' -k2 -rn "$WORK/timings.tsv" | head -5 | tr '\t\n' ' ,')"
  log "logs in $WORK ($(( $(date +%s) - T_START ))s)"
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" = 0 ]; exit $?
}
failed() { echo "FAIL $1: $2"; FAIL=$((FAIL + 1)); }

# start NAME CMD...: run in the background, log to $WORK/logs/NAME.log, remember the PID (killed on exit).
start() {
  local name=$1; shift
  "$@" >"$WORK/logs/$name.log" 2>&1 &
  PIDOF[$name]=$!; PIDS+=($!)
}
# stop NAME: kill exactly that PID and wait for it.
stop() {
  local pid=${PIDOF[$1]:-}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  unset "PIDOF[$1]"
}
alive() { kill -0 "${PIDOF[$1]:-0}" 2>/dev/null; }
wait_http() { # URL NAME [tries]: wait until URL answers any HTTP status
  for _ in $(seq 1 "${3:-150}"); do
    curl -s -o /dev/null --max-time 2 "$1" && return 0
    alive "$2" || { echo "$2 exited: $(tail -3 "$WORK/logs/$2.log" | tr '\n' ' ')"; return 1; }
    sleep 0.1
  done
  echo "timeout waiting for $1"; return 1
}
wait_tcp() { # PORT NAME [tries]
  for _ in $(seq 1 "${3:-300}"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    alive "$2" || { echo "$2 exited: $(tail -3 "$WORK/logs/$2.log" | tr '\n' ' ')"; return 1; }
    sleep 0.1
  done
  echo "timeout waiting for 127.0.0.1:$1"; return 1
}

# check NAME CMD...: run a check script; it prints "REASON: ..." last on failure, "NOTE: ..." for remarks.
check() {
  local name=$1; shift
  local out="$WORK/checks/$name.log" rc reason t0=$(date +%s%N)
  # In the background + wait, so a signal to the runner interrupts the wait and the EXIT trap kills the check too.
  timeout -k 5 "${CHECK_TIMEOUT:-120}" "$@" >"$out" 2>&1 </dev/null &
  CHECK_PID=$!; wait "$CHECK_PID"; rc=$?; CHECK_PID=""
  printf '%s\t%d.%02d\n' "$name" $(( ($(date +%s%N) - t0) / 1000000000 )) $(( ($(date +%s%N) - t0) / 10000000 % 100 )) >>"$WORK/timings.tsv"
  if [ $rc = 0 ]; then
    echo "ok   $name"; PASS=$((PASS + 1))
  else
    reason=$(grep '^REASON: ' "$out" | tail -1 | cut -c9-)
    [ $rc = 124 ] && reason="timed out after ${CHECK_TIMEOUT:-120}s"
    [ -n "$reason" ] || reason="exit $rc: $(grep -v '^\s*$' "$out" | tail -1)"
    failed "$name" "$reason"
    [ "${VERBOSE:-0}" = 1 ] && tail -25 "$out" | sed 's/^/     | /'
  fi
  grep '^NOTE: ' "$out" | cut -c7- | sed 's/^/     note: /'
  return $rc
}

# ---- dependencies (installed only when missing) ----
for tool in node npm python3 curl timeout; do
  command -v $tool >/dev/null 2>&1 || { failed setup "$tool not found (need Node 20+, Python 3.11+, curl, coreutils)"; finish; }
done
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || { failed setup "Node $(node --version) is too old: need Node 20+"; finish; }
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { failed setup "$(python3 --version) is too old: need Python 3.11+ (openai 3.54 uses httpx2)"; finish; }
# Pinned npm/pip dependencies, installed once per lock-file content outside the clone (lib/deps.sh).
. lib/deps.sh
if [ ! -f "$(readlink node_modules 2>/dev/null)/../.complete" ]; then log "npm ci (tests/interop, cached in $X402D_CI_CACHE)"; fi
interop_node_deps "$WORK/logs/npm-ci.log" || { failed setup "npm ci failed (see $WORK/logs/npm-ci.log)"; finish; }
interop_py_deps "$WORK/logs/venv.log" || { failed setup "venv/pip failed (see $WORK/logs/venv.log)"; finish; }
export PY="$HERE/.venv/bin/python"
interop_py_deps "$WORK/logs/venv-seller-py.log" requirements-seller-py.txt .venv-seller-py ||
  { failed setup "venv/pip for the Python seller failed (see $WORK/logs/venv-seller-py.log)"; finish; }
if [ "${RUN_V1:-0}" = 1 ] && { [ ! -f v1/node_modules/.package-lock.json ] || [ v1/package-lock.json -nt v1/node_modules/.package-lock.json ]; }; then
  log "npm ci (tests/interop/v1, slow)"
  (cd v1 && npm ci --no-audit --no-fund --loglevel=error) >"$WORK/logs/npm-ci-v1.log" 2>&1 || { failed setup "npm ci in v1/ failed"; finish; }
fi
if [ ! -f sol/TestUSDC.json ] || [ sol/TestUSDC.sol -nt sol/TestUSDC.json ] || [ sol/compile.cjs -nt sol/TestUSDC.json ]; then
  node sol/compile.cjs >"$WORK/logs/solc.log" 2>&1 || { failed setup "solc compile failed: $(tail -3 "$WORK/logs/solc.log")"; finish; }
fi
ANVIL_BIN=$(ls node_modules/@foundry-rs/anvil-*/bin/anvil 2>/dev/null | head -1)
[ -x "$ANVIL_BIN" ] || { failed setup "anvil binary not found under node_modules/@foundry-rs/anvil-*/bin"; finish; }

# ---- x402d binary ----
X402D_BIN=${X402D_BIN:-$REPO/target/debug/x402d}
case "$X402D_BIN" in /*) ;; *) X402D_BIN="$REPO/$X402D_BIN" ;; esac
export X402D_BIN
X402D_PROBLEM=""
if [ ! -x "$X402D_BIN" ] && [ "$X402D_BIN" = "$REPO/target/debug/x402d" ]; then
  log "building x402d (cargo build)"
  (cd "$REPO" && cargo build --bin x402d) >"$WORK/logs/cargo-build.log" 2>&1 || X402D_PROBLEM="cargo build failed (see $WORK/logs/cargo-build.log)"
fi
if [ -z "$X402D_PROBLEM" ]; then
  if [ ! -x "$X402D_BIN" ]; then X402D_PROBLEM="x402d binary not found at $X402D_BIN"
  elif ! "$X402D_BIN" --help 2>&1 | grep -qw serve; then X402D_PROBLEM="\`x402d --help\` lists no 'serve' command (binary not implemented yet?)"
  fi
fi

# ---- ports and URLs ----
read -r RPC_PORT FAC_PORT SELLER_PORT SELLER_V1_PORT X_MAIN_PORT X_CAP_PORT X_V1_PORT RETRY_SELLER_PORT X_RETRY_PORT \
  PAST_RPC_PORT X_RESOLVE_PORT RESOLVE_SELLER_PORT RESOLVE_RPC_PORT RECOVER_SELLER_PORT X_RECOVER_PORT \
  SELLER_PY_PORT X_PYSELLER_PORT X_ROT_PORT SOL_RPC_PORT SOL_FAC_PORT SOL_SELLER_PORT X_SOL_PORT X_SOLCAP_PORT X_SOLEVM_PORT \
  X_SOLRES_PORT SOL_RESOLVE_SELLER_PORT < <(node lib/free-ports.mjs 26)
export RPC_URL="http://127.0.0.1:$RPC_PORT" FACILITATOR_PORT=$FAC_PORT FACILITATOR_URL="http://127.0.0.1:$FAC_PORT"
export SELLER_PORT SELLER_URL="http://127.0.0.1:$SELLER_PORT" SELLER_TAP="$WORK/seller-v2.tap.jsonl"
export SELLER_V1_PORT SELLER_V1_URL="http://127.0.0.1:$SELLER_V1_PORT" SELLER_V1_TAP="$WORK/seller-v1.tap.jsonl"
export X402D_MAIN_URL="http://127.0.0.1:$X_MAIN_PORT" X402D_MAIN_CONFIG="$WORK/x402d-main/config.toml"
export X402D_CAP_URL="http://127.0.0.1:$X_CAP_PORT" X402D_CAP_CONFIG="$WORK/x402d-cap/config.toml"
export X402D_V1_URL="http://127.0.0.1:$X_V1_PORT" X402D_V1_CONFIG="$WORK/x402d-v1/config.toml"
export RETRY_SELLER_PORT RETRY_SELLER_URL="http://127.0.0.1:$RETRY_SELLER_PORT"
export X402D_RETRY_URL="http://127.0.0.1:$X_RETRY_PORT" X402D_RETRY_CONFIG="$WORK/x402d-retry/config.toml"
export RECOVER_SELLER_PORT RECOVER_SELLER_URL="http://127.0.0.1:$RECOVER_SELLER_PORT"
export X402D_RECOVER_URL="http://127.0.0.1:$X_RECOVER_PORT" X402D_RECOVER_CONFIG="$WORK/x402d-recover/config.toml"
export SELLER_PY_PORT SELLER_PY_URL="http://127.0.0.1:$SELLER_PY_PORT" SELLER_PY_TAP="$WORK/seller-py.tap.jsonl"
export X402D_PYSELLER_URL="http://127.0.0.1:$X_PYSELLER_PORT" X402D_PYSELLER_CONFIG="$WORK/x402d-pyseller/config.toml"
# wallet-rotation: its own x402d in front of the main seller, with its own keyring entry (x402d-interop/wallet-rot).
export X402D_ROT_URL="http://127.0.0.1:$X_ROT_PORT" X402D_ROT_CONFIG="$WORK/x402d-rot/config.toml"
# The resolver check: its own anvil (clock in the past), its own x402d; the check serves the seller and an RPC proxy.
export PAST_RPC_URL="http://127.0.0.1:$PAST_RPC_PORT" RESOLVE_SELLER_PORT RESOLVE_RPC_PORT
export X402D_RESOLVE_URL="http://127.0.0.1:$X_RESOLVE_PORT" X402D_RESOLVE_CONFIG="$WORK/x402d-resolve/config.toml"
# Solana: the local chain, its facilitator and seller; three x402d instances sharing the keyring entry wallet-sol.
export SOLANA_RPC_PORT=$SOL_RPC_PORT SOLANA_RPC_URL="http://127.0.0.1:$SOL_RPC_PORT"
export SOL_FACILITATOR_PORT=$SOL_FAC_PORT SOL_FACILITATOR_URL="http://127.0.0.1:$SOL_FAC_PORT"
export SOL_SELLER_PORT SOL_SELLER_URL="http://127.0.0.1:$SOL_SELLER_PORT" SOL_SELLER_TAP="$WORK/seller-sol.tap.jsonl"
export X402D_SOL_URL="http://127.0.0.1:$X_SOL_PORT" X402D_SOL_CONFIG="$WORK/x402d-sol/config.toml"
export X402D_SOLCAP_URL="http://127.0.0.1:$X_SOLCAP_PORT" X402D_SOLCAP_CONFIG="$WORK/x402d-solcap/config.toml"
export X402D_SOLEVM_URL="http://127.0.0.1:$X_SOLEVM_PORT" X402D_SOLEVM_CONFIG="$WORK/x402d-solevm/config.toml"
# solana-recover-memo, solana-resolve-memo: x402d "solres" in front of the check itself (a seller that loses the answer /
# holds the payment and answers 500), one after the other on the same port.
export X402D_SOLRES_URL="http://127.0.0.1:$X_SOLRES_PORT" X402D_SOLRES_CONFIG="$WORK/x402d-solres/config.toml" SOL_RESOLVE_SELLER_PORT
log "node $(node --version), $($PY -c 'import sys; from importlib.metadata import version as v; print("python %d.%d.%d" % sys.version_info[:3], "openai", v("openai"), "langchain-openai", v("langchain-openai"), "openai-agents", v("openai-agents"))'), x402d $X402D_BIN"

# ---- stack: anvil -> chain setup -> facilitator -> seller(s) ----
start anvil "$ANVIL_BIN" --host 127.0.0.1 --port "$RPC_PORT" --chain-id 84532 --silent
STACK_ERR=$(wait_http "$RPC_URL" anvil) || { failed stack-up "anvil: $STACK_ERR"; finish; }
node chain-setup.mjs >"$WORK/logs/chain-setup.log" 2>&1 || { failed stack-up "chain-setup: $(tail -2 "$WORK/logs/chain-setup.log" | tr '\n' ' ')"; finish; }
# A chain whose clock runs 2 minutes behind the host's (--block-time 1: its head follows its own clock).
start anvil-past "$ANVIL_BIN" --host 127.0.0.1 --port "$PAST_RPC_PORT" --chain-id 84532 --silent --block-time 1 --timestamp $(( $(date +%s) - 120 ))
STACK_ERR=$(wait_http "$PAST_RPC_URL" anvil-past) || { failed stack-up "anvil-past: $STACK_ERR"; finish; }
RPC_URL=$PAST_RPC_URL node chain-setup.mjs >"$WORK/logs/chain-setup-past.log" 2>&1 || { failed stack-up "chain-setup (past): $(tail -2 "$WORK/logs/chain-setup-past.log" | tr '\n' ' ')"; finish; }
start facilitator node facilitator.mjs
# The seller must start only after the facilitator answers: @x402/express fetches /supported at startup.
STACK_ERR=$(wait_http "$FACILITATOR_URL/supported" facilitator) || { failed stack-up "facilitator: $STACK_ERR"; finish; }
start seller node seller.mjs
STACK_ERR=$(wait_http "$SELLER_URL/v1/models" seller) || { failed stack-up "seller: $STACK_ERR"; finish; }
start retry-seller node retry-seller.mjs
STACK_ERR=$(wait_http "$RETRY_SELLER_URL/v1/models" retry-seller) || { failed stack-up "retry-seller: $STACK_ERR"; finish; }
start recover-seller node recover-seller.mjs
STACK_ERR=$(wait_http "$RECOVER_SELLER_URL/v1/models" recover-seller) || { failed stack-up "recover-seller: $STACK_ERR"; finish; }
PAY_TO=$(node --input-type=module -e 'import {PAY_TO} from "./lib/common.mjs"; console.log(PAY_TO)') start seller-py .venv-seller-py/bin/python seller_py.py
STACK_ERR=$(wait_http "$SELLER_PY_URL/v1/models" seller-py 300) || { failed stack-up "seller-py: $STACK_ERR"; finish; }
if [ "${RUN_V1:-0}" = 1 ]; then
  SELLER_TAP="$SELLER_V1_TAP" start seller-v1 node v1/seller-v1.mjs
  STACK_ERR=$(wait_http "$SELLER_V1_URL/v1/models" seller-v1) || { failed stack-up "seller-v1: $STACK_ERR"; finish; }
fi
log "stack up in $(( $(date +%s) - T_START ))s: anvil :$RPC_PORT facilitator :$FAC_PORT seller :$SELLER_PORT"
# The Solana stack. If it cannot start, every solana-* check FAILS with the reason (the EVM checks still run).
SOL_PROBLEM=""
sol_stack_up() {
  local t0=$(date +%s) e
  start solana-chain node solana/chain.mjs
  e=$(wait_http "$SOLANA_RPC_URL" solana-chain 300) || { SOL_PROBLEM="solana chain: $e"; return 1; }
  start solana-facilitator node solana/facilitator.mjs
  e=$(wait_http "$SOL_FACILITATOR_URL/supported" solana-facilitator) || { SOL_PROBLEM="solana facilitator: $e"; return 1; }
  SELLER_TAP="$SOL_SELLER_TAP" start solana-seller node solana/seller.mjs
  e=$(wait_http "$SOL_SELLER_URL/v1/models" solana-seller) || { SOL_PROBLEM="solana seller: $e"; return 1; }
  log "solana stack up in $(( $(date +%s) - t0 ))s: chain :$SOL_RPC_PORT facilitator :$SOL_FAC_PORT seller :$SOL_SELLER_PORT"
}
sol_stack_up
if [ -n "$SOL_PROBLEM" ]; then
  for c in solana-stack-402 solana-stack; do failed "$c" "not run: the Solana stack did not start: $SOL_PROBLEM"; done
else
  check solana-stack-402 node checks/solana.mjs stack-402
  check solana-stack      node checks/solana.mjs stack
fi

check stack-seller-402 node checks/stack.mjs seller-402
check stack-direct-pay node checks/stack.mjs direct-pay
check stack-direct-replay node checks/stack.mjs direct-replay

# ---- x402d ----
X402D_CHECKS=(x402d-wallet x402d-up models-free openai-python-paid openai-node-paid openai-python-premium
  tier-routing-premium tier-routing-pro stream-openai-python stream-openai-node stream-tools-python stream-tools-node
  langchain-chatopenai codex-answer codex-tool-turn responses-openai-python agents-sdk-tool sequential-20 replay-rejected ledger-nonces-unique capped-app-budget
  claude-code-answer claude-code-tool anthropic-python anthropic-python-stream
  extensions-echo python-seller-extensions recover-by-payment-id recover-nonce-used
  retry-500-python retry-500-node retry-drop-python retry-drop-node retry-timeout-python retry-timeout-node
  retry-transient-python retry-transient-node
  stream-heartbeat-python stream-heartbeat-node stream-late-error-python stream-late-error-node retry-coalesce-raw
  wallet-rotation)
[ "${RUN_V1:-0}" = 1 ] && X402D_CHECKS+=(v1-seller-paid)
SOL_X402D_CHECKS=(solana-wallet solana-x402d-up solana-paid solana-stream solana-cap solana-network-order solana-doctor solana-recover-memo solana-resolve-memo)
X402D_CHECKS+=("${SOL_X402D_CHECKS[@]}" resolve-on-chain facilitator-down)
if [ -n "$X402D_PROBLEM" ]; then
  for c in "${X402D_CHECKS[@]}"; do failed "$c" "not run: $X402D_PROBLEM"; done
  finish
fi

write_config() { # NAME PORT UPSTREAM [extra toml] [extra [payment] keys] [RPC URL]; env KEYRING_USER (default "wallet")
  mkdir -p "$WORK/x402d-$1/state"
  cat >"$WORK/x402d-$1/config.toml" <<EOF
listen = "127.0.0.1:$2"
upstream = "$3"
state_dir = "$WORK/x402d-$1/state"

[wallet]
keyring_service = "x402d-interop"
keyring_user = "${KEYRING_USER:-wallet}"

[payment]
networks = ["eip155:84532"]
max_per_call = "0.50"
${5:-}

[payment.rpc]
"eip155:84532" = "${6:-$RPC_URL}"
${4:-}
EOF
}
write_config main "$X_MAIN_PORT" "$SELLER_URL" '
[apps.claude]
api_key = "sk-claude-code"'
write_config cap "$X_CAP_PORT" "$SELLER_URL" '
[apps.capped]
api_key = "sk-capped"
max_per_call = "0.01"
daily = "0.003"'
write_config v1 "$X_V1_PORT" "$SELLER_V1_URL"
write_config retry "$X_RETRY_PORT" "$RETRY_SELLER_URL"
write_config recover "$X_RECOVER_PORT" "$RECOVER_SELLER_URL"
write_config pyseller "$X_PYSELLER_PORT" "$SELLER_PY_URL"
KEYRING_USER=wallet-rot write_config rot "$X_ROT_PORT" "$SELLER_URL"
write_config resolve "$X_RESOLVE_PORT" "http://127.0.0.1:$RESOLVE_SELLER_PORT" "" "resolve_every_secs = 1" "http://127.0.0.1:$RESOLVE_RPC_PORT"
write_sol_config() { # NAME PORT NETWORKS [extra toml] [UPSTREAM]: an instance in front of the Solana seller, keyring entry wallet-sol
  mkdir -p "$WORK/x402d-$1/state"
  cat >"$WORK/x402d-$1/config.toml" <<EOF
listen = "127.0.0.1:$2"
upstream = "${5:-$SOL_SELLER_URL}"
state_dir = "$WORK/x402d-$1/state"

[wallet]
keyring_service = "x402d-interop"
keyring_user = "wallet-sol"

[payment]
networks = $3
max_per_call = "0.50"
resolve_every_secs = 1

[payment.rpc]
"solana-devnet" = "$SOLANA_RPC_URL"
"eip155:84532" = "$RPC_URL"
${4:-}
EOF
}
write_sol_config sol "$X_SOL_PORT" '["solana-devnet", "base-sepolia"]'
write_sol_config solcap "$X_SOLCAP_PORT" '["solana-devnet", "base-sepolia"]' '
[apps.capped]
api_key = "sk-capped"
max_per_call = "0.01"
daily = "0.003"'
write_sol_config solevm "$X_SOLEVM_PORT" '["base-sepolia", "solana-devnet"]'
write_sol_config solres "$X_SOLRES_PORT" '["solana-devnet"]' "" "http://127.0.0.1:$SOL_RESOLVE_SELLER_PORT"

# Wallet: import anvil dev key #3 via stdin (non-TTY) and read the address back.
PAYER_KEY=$(node --input-type=module -e 'import {X402D_PAYER_KEY} from "./lib/common.mjs"; console.log(X402D_PAYER_KEY)')
PAYER_ADDR=$(node --input-type=module -e 'import {X402D_PAYER} from "./lib/common.mjs"; console.log(X402D_PAYER)')
wallet_check() {
  local out addr
  out=$(printf '%s\n' "$PAYER_KEY" | "$X402D_BIN" --config "$X402D_MAIN_CONFIG" wallet import 2>&1) || echo "NOTE: wallet import exited non-zero: $out"
  addr=$("$X402D_BIN" --config "$X402D_MAIN_CONFIG" wallet address 2>&1) || { echo "REASON: wallet address failed: $addr"; return 1; }
  echo "import: $out"; echo "address: $addr"
  echo "$addr" | grep -qi "$PAYER_ADDR" || { echo "REASON: wallet address printed '$addr', expected $PAYER_ADDR"; return 1; }
}
export -f wallet_check; export PAYER_KEY PAYER_ADDR
check x402d-wallet bash -c wallet_check

start x402d-main "$X402D_BIN" --config "$X402D_MAIN_CONFIG" serve
start x402d-cap "$X402D_BIN" --config "$X402D_CAP_CONFIG" serve
start x402d-retry "$X402D_BIN" --config "$X402D_RETRY_CONFIG" serve
start x402d-recover "$X402D_BIN" --config "$X402D_RECOVER_CONFIG" serve
start x402d-pyseller "$X402D_BIN" --config "$X402D_PYSELLER_CONFIG" serve
start x402d-resolve "$X402D_BIN" --config "$X402D_RESOLVE_CONFIG" serve
start x402d-rot "$X402D_BIN" --config "$X402D_ROT_CONFIG" serve # no key yet: wallet-rotation imports one while it serves
[ "${RUN_V1:-0}" = 1 ] && start x402d-v1 "$X402D_BIN" --config "$X402D_V1_CONFIG" serve
X_ERR=""
for inst in main cap retry resolve recover pyseller rot $([ "${RUN_V1:-0}" = 1 ] && echo v1); do
  port_var="X_${inst^^}_PORT"
  e=$(wait_tcp "${!port_var}" "x402d-$inst") || X_ERR="$X_ERR x402d-$inst: $e;"
done
if [ -n "$X_ERR" ]; then
  failed x402d-up "$X_ERR"
  for c in "${X402D_CHECKS[@]:2}"; do failed "$c" "not run: x402d did not start"; done
  finish
fi
echo "ok   x402d-up"; PASS=$((PASS + 1))

# Retry group: its own x402d ("retry") and retry-seller.mjs, nothing settles on chain, so it runs in the background
# beside the main checks (mostly waiting on the seller's 2.5 s delays); its lines are printed after them.
retry_group() {
  PASS=0; FAIL=0; CHECK_PID=""
  trap '[ -n "$CHECK_PID" ] && kill "$CHECK_PID" 2>/dev/null' EXIT
  trap 'exit 130' INT TERM
  check retry-500-python      node checks/retry.mjs sdk --driver py --mode 500
  check retry-500-node        node checks/retry.mjs sdk --driver node --mode 500
  check retry-drop-python     node checks/retry.mjs sdk --driver py --mode drop
  check retry-drop-node       node checks/retry.mjs sdk --driver node --mode drop
  check retry-timeout-python  node checks/retry.mjs sdk --driver py --mode slow
  check retry-timeout-node    node checks/retry.mjs sdk --driver node --mode slow
  check retry-transient-python node checks/retry.mjs sdk --driver py --mode flaky
  check retry-transient-node  node checks/retry.mjs sdk --driver node --mode flaky
  check stream-heartbeat-python node checks/retry.mjs sdk --driver py --mode slow --stream
  check stream-heartbeat-node node checks/retry.mjs sdk --driver node --mode slow --stream
  check stream-late-error-python node checks/retry.mjs sdk --driver py --mode slow500 --stream
  check stream-late-error-node node checks/retry.mjs sdk --driver node --mode slow500 --stream
  check retry-coalesce-raw    node checks/retry.mjs raw
  echo "$PASS $FAIL" >"$WORK/retry-group.counts"
}
retry_group >"$WORK/retry-group.out" 2>&1 </dev/null &
RETRY_GROUP_PID=$!; PIDS+=("$RETRY_GROUP_PID")

check models-free           node checks/models.mjs
check openai-python-paid    node checks/chat.mjs --driver py
check openai-node-paid      node checks/chat.mjs --driver node
check openai-python-premium node checks/chat.mjs --driver py --base premium
check tier-routing-premium  node checks/chat.mjs --driver py --model claude-opus-4
check tier-routing-pro      node checks/chat.mjs --driver node --model gpt-4o
check stream-openai-python  node checks/chat.mjs --driver py --stream
check stream-openai-node    node checks/chat.mjs --driver node --stream --usage
check stream-tools-python   node checks/chat.mjs --driver py --stream --tools --usage
check stream-tools-node     node checks/chat.mjs --driver node --stream --tools
check langchain-chatopenai  node checks/langchain.mjs
check codex-answer          node checks/responses.mjs codex-answer
check codex-tool-turn       node checks/responses.mjs codex-tool
check responses-openai-python node checks/responses.mjs python
check agents-sdk-tool       node checks/responses.mjs agents
check sequential-20         node checks/sequential.mjs 20
check replay-rejected       node checks/replay.mjs seller
check ledger-nonces-unique  node checks/replay.mjs ledger
check capped-app-budget     node checks/capped.mjs
check claude-code-answer    node checks/claude.mjs code-answer
check claude-code-tool      node checks/claude.mjs code-tool
check anthropic-python      node checks/claude.mjs sdk
check anthropic-python-stream node checks/claude.mjs sdk --stream
check extensions-echo       node checks/extensions.mjs
check python-seller-extensions node checks/extensions.mjs --instance pyseller
check recover-by-payment-id node checks/recover.mjs --mode id
check recover-nonce-used    node checks/recover.mjs --mode noid
# Solana through x402d: "sol" (payment.networks solana-devnet first), "solcap" ([apps.capped]) and "solevm"
# (base-sepolia first), in front of solana/seller.mjs; one keyring entry (wallet-sol) with the EVM key #3 and the
# Solana key. After the main checks: the dual routes' EVM side pays from the same EVM payer as "main".
sol_x402d_checks() {
  local c inst e err=""
  if [ -n "$SOL_PROBLEM" ]; then
    for c in "${SOL_X402D_CHECKS[@]}"; do failed "$c" "not run: the Solana stack did not start: $SOL_PROBLEM"; done
    return
  fi
  check solana-wallet node checks/solana.mjs wallet
  for inst in sol solcap solevm solres; do start "x402d-$inst" "$X402D_BIN" --config "$WORK/x402d-$inst/config.toml" serve; done
  for inst in sol solcap solevm solres; do
    port_var="X_${inst^^}_PORT"
    e=$(wait_tcp "${!port_var}" "x402d-$inst") || err="$err x402d-$inst: $e;"
  done
  if [ -n "$err" ]; then
    failed solana-x402d-up "$err"
    for c in "${SOL_X402D_CHECKS[@]:2}"; do failed "$c" "not run: x402d (Solana instances) did not start"; done
    return
  fi
  echo "ok   solana-x402d-up"; PASS=$((PASS + 1))
  check solana-paid          node checks/solana.mjs paid
  check solana-stream        node checks/solana.mjs paid --stream
  check solana-cap           node checks/solana.mjs cap
  check solana-network-order node checks/solana.mjs network-order
  check solana-doctor        node checks/solana.mjs doctor
  check solana-recover-memo  node checks/solana-recover.mjs
  check solana-resolve-memo  node checks/solana-resolve.mjs
}
sol_x402d_checks
# The retry group's lines (it ran beside the checks above).
wait "$RETRY_GROUP_PID" 2>/dev/null
cat "$WORK/retry-group.out"
if read -r rp rf <"$WORK/retry-group.counts" 2>/dev/null; then PASS=$((PASS + rp)); FAIL=$((FAIL + rf))
else failed retry-group "the retry group did not finish (see $WORK/retry-group.out)"; fi
# After the retry group: nothing else runs beside it (the retry seller's payTo is anvil #4, the rotation's key A).
check wallet-rotation       node checks/rotation.mjs
[ "${RUN_V1:-0}" = 1 ] && check v1-seller-paid node checks/chat.mjs --driver py --instance v1
check resolve-on-chain      node checks/resolve.mjs
# Team mode: three x402d on one throwaway PostgreSQL (tests/team/pg.sh) share a daily cap of 7 calls.
if bash "$REPO/tests/team/pg.sh" bin; then
  read -r PG_PORT X_TEAM1_PORT X_TEAM2_PORT X_TEAM3_PORT < <(node lib/free-ports.mjs 4)
  PG_DIR=$(mktemp -d /tmp/x402d-interop-pg.XXXXXX)
  if PG_ERR=$(bash "$REPO/tests/team/pg.sh" start "$PG_DIR" "$PG_PORT" 2>&1); then
    T_ERR=""
    for i in 1 2 3; do
      port_var="X_TEAM${i}_PORT"
      write_config "team$i" "${!port_var}" "$SELLER_URL" "
[apps.capped]
api_key = \"sk-capped\"
max_per_call = \"0.01\"
daily = \"0.007\"

[ledger]
backend = \"postgres\"
url = \"postgres://postgres@127.0.0.1:$PG_PORT/postgres\""
      export "X402D_TEAM${i}_URL=http://127.0.0.1:${!port_var}" "X402D_TEAM${i}_CONFIG=$WORK/x402d-team$i/config.toml"
      start "x402d-team$i" "$X402D_BIN" --config "$WORK/x402d-team$i/config.toml" serve
    done
    for i in 1 2 3; do port_var="X_TEAM${i}_PORT"; e=$(wait_tcp "${!port_var}" "x402d-team$i") || T_ERR="$T_ERR $e;"; done
    if [ -z "$T_ERR" ]; then check team-shared-cap node checks/team.mjs; else failed team-shared-cap "x402d did not start:$T_ERR"; fi
    for i in 1 2 3; do stop "x402d-team$i"; done
  else
    failed team-shared-cap "PostgreSQL did not start: $PG_ERR"
  fi
  bash "$REPO/tests/team/pg.sh" stop "$PG_DIR"; rm -rf "$PG_DIR"
elif [ -n "${CI:-}" ]; then failed team-shared-cap "PostgreSQL is not installed (apt-get install postgresql)"
else echo "skip team-shared-cap (PostgreSQL not installed)"; fi
# Last: stop the facilitator, then a paid call must fail cleanly without settling anything.
stop facilitator
check facilitator-down      node checks/facilitator-down.mjs
finish
