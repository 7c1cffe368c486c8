#!/usr/bin/env bash
# A/B of two x402d binaries on the paid-call bench, interleaved (A B A B ...) so both see
# the same machine load. Prints per-run figures and the median per binary.
#
#   bash bench/ab.sh /path/to/x402d-before /path/to/x402d-after
#   AB_ROUNDS=5 BENCH_CONC=16 BENCH_SECS=3 bash bench/ab.sh A B
#   AB_BENCH=passthrough bash bench/ab.sh A B     # any bench that honours X402D_BIN
#
# The bench harness itself is built from this tree (cargo bench); only the daemon differs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# = 2 ] || { echo "usage: bash bench/ab.sh BIN_A BIN_B" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2")
ROUNDS=${AB_ROUNDS:-3}
BENCHN=${AB_BENCH:-paid}
export BENCH_RUNS=1 BENCH_SECS=${BENCH_SECS:-3} BENCH_CONC=${BENCH_CONC:-1,16,64}
OUT=${CARGO_TARGET_DIR:-target}/bench/ab
mkdir -p "$OUT"; : > "$OUT/rows.psv"
echo "A = $A"; echo "B = $B"
echo "bench $BENCHN, $ROUNDS rounds, BENCH_SECS=$BENCH_SECS BENCH_CONC=$BENCH_CONC; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --locked --no-run --bench "$BENCHN" 2>&1 | tail -n 1
for r in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    bin=$A; [ $side = B ] && bin=$B
    X402D_BIN=$bin cargo bench --locked --bench "$BENCHN" > "$OUT/$side.$r.log" 2>&1 || { echo "run $side $r failed: $OUT/$side.$r.log"; exit 1; }
    grep '^RESULT|' "$OUT/$side.$r.log" | cut -d'|' -f2,4 | while IFS='|' read -r fig val; do
      # First number of the measured column.
      printf '%s|%s|%s|%s\n' "$side" "$r" "$fig" "$(echo "$val" | grep -oE '^[+-]?[0-9.]+' | head -1)" >> "$OUT/rows.psv"
    done
    echo "round $r $side done"
  done
done
echo
echo "| figure | A (median of $ROUNDS) | B (median of $ROUNDS) | B/A |"
echo "|---|---|---|---|"
cut -d'|' -f3 "$OUT/rows.psv" | awk '!seen[$0]++' | while read -r fig; do
  med() { grep -F "|$fig|" "$OUT/rows.psv" | awk -F'|' -v s="$1" '$1==s {print $4}' | sort -g |
          awk '{v[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
  a=$(med A); b=$(med B)
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a+0 != 0) printf "%.2f", b/a; else print "-" }')
  echo "| $fig | $a | $b | $ratio |"
done
