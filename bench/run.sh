#!/usr/bin/env bash
# The x402d benchmark suite, one entry point. Builds the RELEASE binary, runs every
# benchmark (figures printed, never asserted) and ends with one Markdown table:
# figure | target | measured | command.
#
#   bash bench/run.sh                    # everything (~15 min on 2 cores after the build)
#   BENCH_RUNS=5 BENCH_SECS=5 bash bench/run.sh
#   BENCH_ONLY="paid ledger" bash bench/run.sh
#   BENCH_SCALE_SIZES=20000 bash bench/run.sh  # scale bench without the 1,000,000-payment ledger
#                                        # (generated once, then cached under target/bench-cache/)
#   BENCH_COLD_BUILD=1 bash bench/run.sh # also time a cold `cargo build --release` (minutes)
#   BENCH_REAL_STACK=0 bash bench/run.sh # skip bench/real-stack.sh (runs by default when
#                                        # tests/interop's npm/venv deps are installed)
#
# Needs: Rust (rust-toolchain.toml), keyutils (`keyctl`), binutils (`strip`).
# Logs: target/bench/<name>.log (or $CARGO_TARGET_DIR/bench). Machine load matters (2 shared cores here):
# every figure is reported as median with min..max over BENCH_RUNS (default 3) runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/bench
mkdir -p "$OUT"
: "${BENCH_RUNS:=3}" "${BENCH_SECS:=3}"
export BENCH_RUNS BENCH_SECS
ONLY=${BENCH_ONLY:-"passthrough paid ledger footprint scale"}
RESULTS=$OUT/results.psv      # rows from the benches, in run order
BUILD_ROWS=$OUT/build.psv     # binary size and build time (printed after the benches)
: > "$RESULTS"; : > "$BUILD_ROWS"
row() { printf '%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" >> "$BUILD_ROWS"; }

disk() { # file system and block device under the target dir (where the benches' ledgers live)
  local src fs dev rot
  read -r src fs < <(findmnt -n -o SOURCE,FSTYPE --target "$TARGET" 2>/dev/null || echo "? ?")
  dev=$(basename "$src" 2>/dev/null | sed 's/[0-9]*$//')
  rot=$(cat "/sys/block/$dev/queue/rotational" 2>/dev/null || echo "?")
  printf '%s on %s (queue/rotational=%s)' "$fs" "$src" "$rot"
}
machine() {
  printf 'nproc=%s; cpu=%s; kernel=%s; disk=%s; loadavg=%s' "$(nproc)" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    "$(uname -r)" "$(disk)" "$(cut -d' ' -f1-3 /proc/loadavg)"
}
echo "== x402d benchmark suite"
echo "machine: $(machine)"
echo "rustc:   $(rustc --version)"
echo "git:     $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
echo "runs:    BENCH_RUNS=$BENCH_RUNS BENCH_SECS=$BENCH_SECS"

command -v keyctl >/dev/null || { echo "keyctl missing: apt-get install -y keyutils" >&2; exit 1; }

# 4. Cold build time: from bench/cold-build.txt, or measured now in a scratch target dir.
if [ "${BENCH_COLD_BUILD:-0}" = 1 ]; then
  scratch=$(mktemp -d /tmp/x402d-coldbuild.XXXXXX)
  echo "== cold build: CARGO_TARGET_DIR=$scratch cargo build --release --locked (minutes on 2 cores)"
  t0=$(date +%s.%N)
  CARGO_TARGET_DIR=$scratch cargo build --release --locked --quiet
  t1=$(date +%s.%N)
  secs=$(echo "$t1 - $t0" | bc)
  rm -rf "$scratch"
  printf 'cold `cargo build --release --locked` (empty target dir, deps already downloaded): %.0f s wall\nmeasured %s on: %s\n' \
    "$secs" "$(date -u +%FT%TZ)" "$(machine)" > "$OUT/cold-build.txt"
  cat "$OUT/cold-build.txt"
  row "cold release build (empty target dir)" "—" "$(printf '%.0f s (measured now, 1 run)' "$secs")" "BENCH_COLD_BUILD=1 bash bench/run.sh"
elif [ -f bench/cold-build.txt ]; then
  echo "== cold build (recorded): $(head -1 bench/cold-build.txt)"
  row "cold release build (empty target dir)" "—" "$(grep -m1 -o '[0-9.]* s wall' bench/cold-build.txt) (recorded in bench/cold-build.txt, 1 run)" "cargo build --release --locked (empty CARGO_TARGET_DIR)"
else
  row "cold release build (empty target dir)" "—" "not measured (set BENCH_COLD_BUILD=1)" "BENCH_COLD_BUILD=1 bash bench/run.sh"
fi

echo "== build: cargo build --release --locked"
t0=$(date +%s.%N)
cargo build --release --locked
t1=$(date +%s.%N)
printf 'release build (warm/incremental): %.1f s\n' "$(echo "$t1 - $t0" | bc)"
BIN=$TARGET/release/x402d
export X402D_BIN=$BIN

# 4. Binary size.
tmpbin=$(mktemp /tmp/x402d-strip.XXXXXX)
cp "$BIN" "$tmpbin"; strip "$tmpbin"
full=$(stat -c %s "$BIN"); stripped=$(stat -c %s "$tmpbin"); rm -f "$tmpbin"
mib() { echo "scale=2; $1 / 1048576" | bc; }
echo "binary: $BIN $full bytes ($(mib "$full") MiB); stripped $stripped bytes ($(mib "$stripped") MiB)"
row "release binary size, stripped (unstripped)" "—" "$(mib "$stripped") MiB ($(mib "$full") MiB)" "cargo build --release && cp target/release/x402d /tmp/b && strip /tmp/b && stat -c %s /tmp/b"

echo "== cargo bench --no-run (bench profile = release)"
cargo bench --locked --no-run $(for b in $ONLY; do printf -- '--bench %s ' "$b"; done) 2>&1 | tail -n 3

for b in $ONLY; do
  echo
  echo "== cargo bench --bench $b   (log: target/bench/$b.log)"
  if cargo bench --locked --bench "$b" 2>&1 | tee "$OUT/$b.log"; then :; else
    echo "!! bench $b failed (see $OUT/$b.log)"
    printf '%s|%s|%s|%s\n' "bench $b" "—" "FAILED (see target/bench/$b.log)" "cargo bench --bench $b" >> "$RESULTS"
  fi
  grep '^RESULT|' "$OUT/$b.log" | cut -d'|' -f2- >> "$RESULTS" || true
done

# 5. Real stack: runs when tests/interop's deps are installed (BENCH_REAL_STACK=0 skips it).
if [ "${BENCH_REAL_STACK:-auto}" != 0 ] && { [ "${BENCH_REAL_STACK:-auto}" = 1 ] || [ -x tests/interop/.venv/bin/python ]; }; then
  echo; echo "== bench/real-stack.sh"
  if bash bench/real-stack.sh 2>&1 | tee "$OUT/real-stack.log"; then :; else echo "!! real-stack failed"; fi
  grep '^RESULT|' "$OUT/real-stack.log" | cut -d'|' -f2- >> "$RESULTS" || true
else
  printf '%s|%s|%s|%s\n' "real x402 stack (openai-python via x402d vs @x402/fetch)" "—" \
    "not run (tests/interop deps missing or BENCH_REAL_STACK=0; see bench/real-stack.sh)" "bash bench/real-stack.sh" >> "$RESULTS"
fi

echo
echo "## Results"
echo
echo "Machine: $(machine). Median over runs with (min, max); latencies in µs. Loopback only; the"
echo "load generator and mock upstreams share the same cores as x402d, so throughput is whole-system;"
echo "\"other processes\" is the share of all CPUs used by unrelated work during the measurement."
echo
echo "| figure | target | measured | command |"
echo "|---|---|---|---|"
while IFS='|' read -r fig target measured cmd; do
  printf '| %s | %s | %s | `%s` |\n' "$fig" "$target" "$measured" "$cmd"
done < <(cat "$RESULTS" "$BUILD_ROWS")
