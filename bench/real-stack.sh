#!/usr/bin/env bash
# Benchmark 5 (optional): a paid call on the REAL x402 stack, all on loopback:
#   anvil (chain 84532, TestUSDC) -> facilitator (@x402/core + @x402/evm) -> seller (@x402/express v2)
# reusing tests/interop's files as they are (never edited from here), then
#   A. openai-python (the real SDK) -> x402d (release binary) -> seller      [x402d pays]
#   B. @x402/fetch (Coinbase's client) -> seller directly                      [the JS client pays]
# N sequential paid calls each (BENCH_REAL_N, default 200) per run, BENCH_RUNS runs (default 3), A and B
# alternating per run; then A again at c=8 (BENCH_REAL_CONC: 8 openai-python processes, N calls in all).
# Per-call wall time is measured inside the driver (interpreter start-up excluded).
# Per paid call in A, from x402d's own counters over the measured window:
#   CPU      = delta of its utime + stime (/proc/<pid>/stat, clock ticks, exited threads included) / calls,
#              split into user and kernel;
#   context switches (/proc/<pid>/task/*/status voluntary + nonvoluntary of the live threads), bytes written to disk
#   (/proc/<pid>/io write_bytes), durable commits (x402d_ledger_commits_total{durable="true"} in GET /metrics)
#   and x402d's own time p50/p99 (x402d_paid_call_overhead_seconds: arrival to reply, minus upstream waits).
# Every paid call settles on the local chain (facilitator waits for the receipt, 50 ms polling),
# so both paths are dominated by the stack, not by the client.
#
# Needs tests/interop's installed deps: run `bash tests/interop/run.sh` once (npm ci + .venv), keyutils.
#   bash bench/real-stack.sh            # X402D_BIN defaults to target/release/x402d
# Prints RESULT|figure|target|measured|command lines for bench/run.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
IT=$ROOT/tests/interop
CMD="bash bench/real-stack.sh"

if [ "${X402D_BENCH_IN_SESSION:-}" != 1 ]; then
  command -v keyctl >/dev/null || { echo "keyctl missing (apt-get install -y keyutils)" >&2; exit 1; }
  X402D_BENCH_IN_SESSION=1 exec keyctl session - bash "$HERE/real-stack.sh" "$@"
fi

N=${BENCH_REAL_N:-200}
CONC=${BENCH_REAL_CONC:-8}
RUNS=${BENCH_RUNS:-3}
X402D_BIN=${X402D_BIN:-$ROOT/target/release/x402d}
PY=$IT/.venv/bin/python
ANVIL_BIN=$(ls "$IT"/node_modules/@foundry-rs/anvil-*/bin/anvil 2>/dev/null | head -1 || true)
missing=""
[ -x "$X402D_BIN" ] || missing="$missing x402d ($X402D_BIN: cargo build --release);"
[ -d "$IT/node_modules/@x402/fetch" ] || missing="$missing tests/interop/node_modules;"
[ -x "$PY" ] && "$PY" -c 'import openai' 2>/dev/null || missing="$missing tests/interop/.venv with openai;"
[ -x "${ANVIL_BIN:-/nonexistent}" ] || missing="$missing anvil (tests/interop/node_modules/@foundry-rs);"
[ -f "$IT/sol/TestUSDC.json" ] || missing="$missing tests/interop/sol/TestUSDC.json;"
if [ -n "$missing" ]; then
  echo "real-stack: not run, missing:$missing (run bash tests/interop/run.sh once to install)"
  echo "RESULT|real x402 stack (openai-python via x402d vs @x402/fetch)|—|not run: missing$missing|$CMD"
  exit 0
fi

echo "== real x402 stack: openai-python -> x402d vs @x402/fetch direct"
echo "machine: nproc=$(nproc); cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); kernel=$(uname -r); loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: $CMD  (BENCH_REAL_N=$N BENCH_RUNS=$RUNS X402D_BIN=$X402D_BIN)"
echo "node $(node --version), $("$PY" -c 'import sys,openai; print("python %d.%d.%d" % sys.version_info[:3], "openai", openai.__version__)')"

WORK=$(mktemp -d /tmp/x402d-realstack.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
  rm -f "$HERE/real-stack/node_modules"
}
trap cleanup EXIT
start() { local name=$1; shift; "$@" >"$WORK/$name.log" 2>&1 & PIDS+=($!); eval "PID_$name=$!"; }
wait_http() { for _ in $(seq 1 200); do curl -s -o /dev/null --max-time 2 "$1" && return 0; sleep 0.1; done; echo "timeout: $1" >&2; return 1; }

ln -sfn "$IT/node_modules" "$HERE/real-stack/node_modules"
read -r RPC_PORT FAC_PORT SELLER_PORT X_PORT < <(cd "$IT" && node lib/free-ports.mjs 4)
export RPC_URL="http://127.0.0.1:$RPC_PORT" FACILITATOR_PORT=$FAC_PORT FACILITATOR_URL="http://127.0.0.1:$FAC_PORT"
export SELLER_PORT SELLER_URL="http://127.0.0.1:$SELLER_PORT" SELLER_TAP="$WORK/seller.tap.jsonl" WORK

cd "$IT"
start anvil "$ANVIL_BIN" --host 127.0.0.1 --port "$RPC_PORT" --chain-id 84532 --silent
wait_http "$RPC_URL"
node chain-setup.mjs >"$WORK/chain-setup.log" 2>&1 || { tail "$WORK/chain-setup.log"; exit 1; }
start facilitator node facilitator.mjs
wait_http "$FACILITATOR_URL/supported"
start seller node seller.mjs
wait_http "$SELLER_URL/v1/models"
PAYER_KEY=$(node --input-type=module -e 'import {X402D_PAYER_KEY} from "./lib/common.mjs"; console.log(X402D_PAYER_KEY)')
STACK_KEY=$(node --input-type=module -e 'import {STACK_PAYER_KEY} from "./lib/common.mjs"; console.log(STACK_PAYER_KEY)')
cd "$ROOT"

mkdir -p "$WORK/x402d/state"
cat >"$WORK/x402d/config.toml" <<TOML
listen = "127.0.0.1:$X_PORT"
upstream = "$SELLER_URL"
state_dir = "$WORK/x402d/state"

[wallet]
keyring_service = "x402d-bench-realstack"

[payment]
networks = ["eip155:84532"]

[payment.rpc]
"eip155:84532" = "$RPC_URL"

[apps.bench]
api_key = "sk-bench"
daily = "1000"
TOML
printf '%s\n' "$PAYER_KEY" | "$X402D_BIN" --config "$WORK/x402d/config.toml" wallet import >/dev/null
start x402d "$X402D_BIN" --config "$WORK/x402d/config.toml" serve
for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$X_PORT") 2>/dev/null && break; sleep 0.05; done
XPID=$PID_x402d
# x402d CPU time in ns, from /proc/<pid>/stat utime + stime: the whole process, threads that
# already exited included (blocking-pool threads come and go, so a sum over task/*/schedstat
# can go backwards). Clock ticks (usually 10 ms): ~1 % resolution over 200 calls of ~2 ms.
HZ=$(getconf CLK_TCK)
cpu() { awk -v hz="$HZ" '{printf "%d", ($14 + $15) * 1e9 / hz}' /proc/"$XPID"/stat; }
ticks() { awk '{print $14, $15}' /proc/"$XPID"/stat; }   # utime stime (clock ticks)
ctxsw() { cat /proc/"$XPID"/task/*/status | awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {printf "%d", s}'; }
wbytes() { awk '/^write_bytes:/ {print $2}' /proc/"$XPID"/io; }
scrape() { curl -s --max-time 60 "http://127.0.0.1:$X_PORT/metrics" >"$1" || : >"$1"; }

# Warm-up (connections, JIT, the facilitator's first settle).
"$PY" "$HERE/real-stack/openai_bench.py" "http://127.0.0.1:$X_PORT/v1" 2 >/dev/null
(cd "$HERE/real-stack" && node x402fetch_bench.mjs "$SELLER_URL" 2 "$STACK_KEY" >/dev/null)

stats() { # JSON lines on stdin (one per driver process) -> "n p50 p95 max mean errors"
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const js=(s.match(/\{[^{}]*\}/g)||[]).map(l=>JSON.parse(l));
  const a=js.flatMap(j=>j.ms).sort((x,y)=>x-y);const errors=js.reduce((e,j)=>e+j.errors,0);
  const p=q=>a.length?a[Math.min(a.length-1,Math.ceil(q*a.length)-1)]:NaN;
  const mean=a.reduce((x,y)=>x+y,0)/Math.max(1,a.length);
  console.log([a.length,p(.5),p(.95),a[a.length-1],mean,errors].map(v=>typeof v==="number"?+v.toFixed(1):v).join(" "))})'
}
# Runs the x402d side with C driver processes for N calls in all, measuring x402d's counters
# around it. Prints "n p50 p95 max mean errors cpu_us user_us sys_us ctx bytes commits own50 own99".
measure_x402d() {
  local c=$1 per=$(( (N + $1 - 1) / $1 )) i
  scrape "$WORK/m0"
  local c0 t0 x0 w0 c1 t1 x1 w1 a
  c0=$(cpu); t0=$(ticks); x0=$(ctxsw); w0=$(wbytes)
  a=$(for i in $(seq 1 "$c"); do "$PY" "$HERE/real-stack/openai_bench.py" "http://127.0.0.1:$X_PORT/v1" "$per" & done; wait)
  c1=$(cpu); t1=$(ticks); x1=$(ctxsw); w1=$(wbytes)
  scrape "$WORK/m1"
  a=$(printf '%s\n' "$a" | stats)
  local an; an=$(echo "$a" | awk '{print $1}')
  local extra; extra=$(python3 "$HERE/real-stack/metrics_delta.py" "$WORK/m0" "$WORK/m1" "$an")
  read -r u0 s0 <<<"$t0"; read -r u1 s1 <<<"$t1"
  awk -v a="$a" -v an="$an" -v c0="$c0" -v c1="$c1" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) \
      -v dx=$((x1 - x0)) -v dw=$((w1 - w0)) -v extra="$extra" 'BEGIN {
    n = an > 0 ? an : 1; cpu = (c1 - c0) / 1000 / n; tot = du + ds;
    us = tot > 0 ? cpu * du / tot : 0; sy = tot > 0 ? cpu * ds / tot : 0;
    printf "%s %.0f %.0f %.0f %.1f %.0f %s\n", a, cpu, us, sy, dx / n, dw / n, extra }'
}
# Optional profile of the sequential runs: BENCH_PERF_OUT=/tmp/x.data records x402d with
# `perf record -g` (and prints `perf stat` counters) while they run.
PERF_PIDS=()
if [ -n "${BENCH_PERF_OUT:-}" ] && command -v perf >/dev/null; then
  perf record -F 2999 -g -p "$XPID" -o "$BENCH_PERF_OUT" >"$WORK/perf-record.log" 2>&1 & PERF_PIDS+=($!)
  perf stat -e task-clock,context-switches,cpu-migrations,page-faults -p "$XPID" >"$WORK/perf-stat.log" 2>&1 & PERF_PIDS+=($!)
  sleep 0.5
fi
A50=(); B50=(); CPU=(); USR=(); SYS=(); CTX=(); WB=(); COM=(); O50=(); O99=()
for r in $(seq 1 "$RUNS"); do
  read -r an a50 a95 amax amean aerr cpu_us usr_us sys_us ctx wb com o50 o99 <<<"$(measure_x402d 1)"
  b=$(cd "$HERE/real-stack" && node x402fetch_bench.mjs "$SELLER_URL" "$N" "$STACK_KEY" | stats)
  read -r bn b50 b95 bmax bmean berr <<<"$b"
  echo "run $r: openai-python via x402d: $an ok/$aerr err, p50 $a50 ms, p95 $a95 ms, max $amax ms; x402d per paid call: CPU $cpu_us µs (user $usr_us, kernel $sys_us), $ctx context switches, $wb bytes written, $com durable commits, own time p50 $o50 µs / p99 $o99 µs"
  echo "run $r: @x402/fetch direct:     $bn ok/$berr err, p50 $b50 ms, p95 $b95 ms, max $bmax ms"
  A50+=("$a50"); B50+=("$b50"); CPU+=("$cpu_us"); USR+=("$usr_us"); SYS+=("$sys_us"); CTX+=("$ctx"); WB+=("$wb"); COM+=("$com"); O50+=("$o50"); O99+=("$o99")
done
if [ ${#PERF_PIDS[@]} -gt 0 ]; then
  kill -INT "${PERF_PIDS[@]}" 2>/dev/null || true
  wait "${PERF_PIDS[@]}" 2>/dev/null || true
  echo "perf stat of x402d over the sequential runs (A and B alternating, so idle time included):"
  cat "$WORK/perf-stat.log"; echo "perf record: $BENCH_PERF_OUT ($(tail -1 "$WORK/perf-record.log"))"
fi
C50=(); CCPU=(); CUSR=(); CSYS=(); CCTX=(); CO50=(); CO99=()
for r in $(seq 1 "$RUNS"); do
  read -r an a50 a95 amax amean aerr cpu_us usr_us sys_us ctx wb com o50 o99 <<<"$(measure_x402d "$CONC")"
  echo "run $r c=$CONC: openai-python via x402d ($CONC processes): $an ok/$aerr err, p50 $a50 ms, p95 $a95 ms; x402d per paid call: CPU $cpu_us µs (user $usr_us, kernel $sys_us), $ctx context switches, $wb bytes written, $com durable commits, own time p50 $o50 µs / p99 $o99 µs"
  C50+=("$a50"); CCPU+=("$cpu_us"); CUSR+=("$usr_us"); CSYS+=("$sys_us"); CCTX+=("$ctx"); CO50+=("$o50"); CO99+=("$o99")
done
mmm() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%s (min %s, max %s; n=%d)", m, v[1], v[NR], NR}'; }
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%s", m}'; }
echo "summary: per-run figures over $RUNS runs of $N calls (sequential) and $N calls at c=$CONC"
echo "RESULT|real stack: paid call p50, openai-python → x402d → @x402/express seller (settled on anvil)|—|$(mmm "${A50[@]}") ms|$CMD"
echo "RESULT|real stack: paid call p50, @x402/fetch → seller directly|—|$(mmm "${B50[@]}") ms|$CMD"
echo "RESULT|real stack: x402d CPU per paid call, sequential (user / kernel)|≤ 500 µs|$(mmm "${CPU[@]}") µs ($(med "${USR[@]}") / $(med "${SYS[@]}") µs)|$CMD"
echo "RESULT|real stack: x402d CPU per paid call, c=$CONC (user / kernel)|≤ 400 µs|$(mmm "${CCPU[@]}") µs ($(med "${CUSR[@]}") / $(med "${CSYS[@]}") µs)|$CMD"
echo "RESULT|real stack: x402d's own time per paid call, excluding upstream waits, sequential p50 / p99 (x402d_paid_call_overhead_seconds)|≤ 350 / ≤ 1,000 µs|$(med "${O50[@]}") / $(med "${O99[@]}") µs (c=$CONC: $(med "${CO50[@]}") / $(med "${CO99[@]}") µs)|$CMD"
echo "RESULT|real stack: bytes written to disk per paid call (/proc/pid/io write_bytes)|≤ 8 KB|$(mmm "${WB[@]}") B|$CMD"
echo "RESULT|real stack: durable commits per paid call (x402d_ledger_commits_total{durable=\"true\"})|1|$(mmm "${COM[@]}")|$CMD"
echo "RESULT|real stack: context switches per paid call, sequential / c=$CONC|—|$(med "${CTX[@]}") / $(med "${CCTX[@]}") (min..max $(mmm "${CTX[@]}"))|$CMD"
"$X402D_BIN" --config "$WORK/x402d/config.toml" wallet remove --yes >/dev/null 2>&1 || true
