#!/usr/bin/env bash
# End-to-end test of scripts/sandbox, as a newcomer uses it: start it, wait for its "Ctrl-C stops
# everything." line, run the curl line it printed, expect a paid 200, then SIGINT it and expect every
# process it started (its process group) gone, its port closed and its directory deleted.
#   tests/sandbox/run.sh          (X402D_BIN: default target/debug/x402d)
# Output: `ok`/`FAIL` per check, then `N passed, N failed`.
set -uo pipefail
set -m # job control: the sandbox gets its own process group, and SIGINT is not ignored in it
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export X402D_BIN=${X402D_BIN:-$ROOT/target/debug/x402d}
pass=0
fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() {
	echo "FAIL $1"
	fail=$((fail + 1))
	if [ -n "${2:-}" ]; then sed 's/^/     | /' <<<"$2" | tail -30; fi
}
verdict() { if [ "$1" -eq 0 ]; then ok "$2"; else bad "$2" "${3:-}"; fi; }
OUT=$(mktemp /tmp/x402d-sandbox-test.XXXXXX)
PID=
PGID=
finish() {
	set +e
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
		kill -INT "$PID"
		sleep 5
	fi
	# Whatever is left in the sandbox's process group (after a failure) goes.
	[ -n "$PGID" ] && kill -KILL -- "-$PGID" 2>/dev/null
	rm -f "$OUT"
	echo "$pass passed, $fail failed"
	[ "$fail" -eq 0 ]
}
trap finish EXIT
[ -x "$X402D_BIN" ] || {
	bad "no x402d binary at $X402D_BIN (cargo build)"
	exit 1
}

# A free port for x402d: the sandbox's default, 8402, may be in use on this machine.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
X402D_SANDBOX_PORT=$PORT "$ROOT/scripts/sandbox" >"$OUT" 2>&1 </dev/null &
PID=$!
PGID=$PID # set -m: the job leads its own process group
for _ in $(seq 1800); do # npm ci on a cold cache can take minutes
	grep -q '^Ctrl-C stops everything' "$OUT" && break
	kill -0 "$PID" 2>/dev/null || break
	sleep 0.1
done
grep -q '^Ctrl-C stops everything' "$OUT"
verdict $? "scripts/sandbox is up and printed its instructions" "$(cat "$OUT")"
grep -q 'keyring_service = "x402d-sandbox"' "$OUT" && grep -q "listen = \"127.0.0.1:$PORT\"" "$OUT"
verdict $? "it printed the config (own keyring entry, listen 127.0.0.1:$PORT)" "$(cat "$OUT")"
addr=$(sed -n 's/^  wallet *\(0x[0-9a-fA-F]\{40\}\):.*/\1/p' "$OUT")
[ -n "$addr" ]
verdict $? "a fresh wallet ($addr), funded" "$(cat "$OUT")"

# The curl line, exactly as printed.
line=$(grep -m1 '^curl ' "$OUT")
resp=$(bash -c "$line" 2>&1 | tr -d '\r')
code=$(head -1 <<<"$resp" | awk '{print $2}')
hdr() { sed -n "1,/^$/s/^$1: *//Ip" <<<"$resp" | head -1; }
[ "$code" = 200 ] && [ -n "$(hdr x-x402d-cost)" ] && [ "$(hdr x-x402d-payment-state)" = settled ]
verdict $? "the printed curl: $code, x-x402d-cost $(hdr x-x402d-cost), payment-state '$(hdr x-x402d-payment-state)'" "$line
$resp"
pyline=$(grep -m1 'from openai import OpenAI' "$OUT")
py=${pyline%% *}
if [ -x "$py" ] || "$py" -c 'import openai' 2>/dev/null; then
	pr=$(bash -c "$pyline" 2>&1)
	grep -q '^0.001 ' <<<"$pr"
	verdict $? "the printed openai-python line: '$pr'" "$pr"
else
	echo "skip the openai-python line: no openai module for $py"
fi
pay=$(bash -c "$(grep -m1 ' payments$' "$OUT")" 2>&1)
grep -q settled <<<"$pay"
verdict $? "the printed 'x402d payments' lists the settled payment" "$pay"

# Ctrl-C: everything it started is gone.
pids=$(pgrep -g "$PGID" | tr '\n' ' ')
dir=$(sed -n 's/^Config (\(.*\)\/config.toml):$/\1/p' "$OUT")
kill -INT "$PID"
wait "$PID"
rc=$?
left=$(pgrep -g "$PGID" | tr '\n' ' ')
[ -z "$left" ] && [ "$rc" = 130 ]
verdict $? "SIGINT: it exited ($rc) and its processes ($pids) are gone" "left: $left
$(tail -5 "$OUT")"
PID=
! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && [ -n "$dir" ] && [ ! -e "$dir" ]
verdict $? "port $PORT closed, $dir deleted" "$(tail -3 "$OUT")"
grep -q '^# sandbox stopped: anvil facilitator seller x402d' "$OUT"
verdict $? "it said what it stopped: $(grep '^# sandbox stopped' "$OUT")"
