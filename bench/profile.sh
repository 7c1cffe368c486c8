#!/usr/bin/env bash
# Instruction-count profile of x402d's hot paths with callgrind (stable under machine
# load, unlike wall-clock figures). x402d runs under valgrind (X402D_WRAP); the bench
# zeroes the counters after warm-up and dumps them after the measured window
# (callgrind_control -z / -d), so start-up is excluded.
#
#   bash bench/profile.sh            # paid calls at c=1 (20 s) + pass-through (10 s per case)
#   PROFILE_ONLY=paid bash bench/profile.sh
#   X402D_BIN=/path/to/other/x402d bash bench/profile.sh   # e.g. a prototype build
#
# Output: target/bench/profile/{paid,passthrough}.*.out (callgrind files) and a summary:
# instructions per call in x402d and the top inclusive functions. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
OUT=$TARGET/bench/profile
mkdir -p "$OUT"
ONLY=${PROFILE_ONLY:-"paid passthrough"}
export BENCH_CALLGRIND=1 BENCH_RUNS=1
cargo build --release --locked --quiet
export X402D_BIN=${X402D_BIN:-$TARGET/release/x402d}
echo "binary: $X402D_BIN"

top() { # FILE CALLS LABEL
  local f=$1 n=$2 total
  total=$(grep -m1 '^summary' "$f" | awk '{print $2}')
  echo "-- $3: $n calls, $((total / n)) instructions per call in x402d (user space), top inclusive:"
  { callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null | sed -n '/file:function/,$p' |
    grep -E 'x402d::|redb::transactions::WriteTransaction::commit_with |hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch |serde_json::de::from_slice |keccak256_impl|ecdsa::hazmat::SignPrimitive|tracing_subscriber::fmt::Subscriber|malloc.c:(malloc|free) ' |
    grep -v '{{closure}}::{{closure}}' |
    awk -v n="$n" '{ir=$1; gsub(",", "", ir); fn=$0; sub(/^.*%\) +/, "", fn); sub(/ \[.*/, "", fn); sub(/^\?\?\?:/, "", fn);
                    if (ir / n >= 1) printf "   %9d Ir/call  %s\n", ir / n, fn}' | head -"${PROFILE_TOP:-24}"; } || true
}

if [[ " $ONLY " == *" paid "* ]]; then
  rm -f "$OUT"/paid.*
  X402D_WRAP="valgrind --tool=callgrind --callgrind-out-file=$OUT/paid.%p.out" BENCH_CONC=1 BENCH_SECS=${PROFILE_SECS:-20} \
    cargo bench --locked --bench paid > "$OUT/paid.log" 2>&1
  calls=$(grep -m1 -oE '^run 0 c=1: [0-9]+ paid' "$OUT/paid.log" | awk '{print $4}')
  f=$(ls "$OUT"/paid.*.out.1 | head -1)
  top "$f" "$calls" "paid call (c=1, verifying seller, durable ledger)"
fi
if [[ " $ONLY " == *" passthrough "* ]]; then
  rm -f "$OUT"/passthrough.*
  X402D_WRAP="valgrind --tool=callgrind --callgrind-out-file=$OUT/passthrough.%p.out" BENCH_SECS=${PROFILE_SECS_PT:-10} \
    cargo bench --locked --bench passthrough > "$OUT/passthrough.log" 2>&1
  # Dumps in phase order: c=1 GET, c=1 POST, c=16 GET, c=16 POST.
  i=0
  for label in "c=1 GET /v1/models" "c=1 POST 2KB chat" "c=16 GET /v1/models" "c=16 POST 2KB chat"; do
    i=$((i + 1))
    f=$(ls "$OUT"/passthrough.*.out.$i 2>/dev/null | head -1) || true
    [ -n "$f" ] || continue
    calls=$(grep -E "^run 0 $label: " "$OUT/passthrough.log" | grep -oE '[0-9]+ pairs' | awk '{print $1}')
    top "$f" "$calls" "pass-through $label"
  done
fi
echo "callgrind files: $OUT (callgrind_annotate --inclusive=yes FILE)"
