#!/bin/bash
# Static checks of the systemd units in systemd/ (no running systemd needed; about 1 s).
#
#   tests/systemd/static.sh            # uses target/{release,debug}/x402d if built, else a stub
#   X402D_BIN=/path/to/x402d tests/systemd/static.sh
#   X402D_SECURITY_THRESHOLD=15 ...    # max `systemd-analyze security` exposure, in tenths (default 15 = 1.5)
#
# What it checks:
#   - `systemd-analyze verify` of every unit, as installed (system: x402d-system.service -> x402d.service,
#     user: x402d.service, both with x402d.socket): rc 0 AND empty stderr (unknown keys and bad values only warn).
#     ExecStart must exist, so the units are verified from a temp copy whose ExecStart points at the binary.
#   - `systemd-analyze security --offline=true --threshold=N` of the system unit (prints the exposure).
#   - the units agree with the code: literal ExecStart=/usr/local/bin/x402d (install-service replaces it),
#     the credential name, the socket address and the `serve` subcommand.
# Needs: bash, systemd-analyze (Debian: package systemd), coreutils, sed, grep.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
UNITS=$ROOT/systemd
THRESHOLD=${X402D_SECURITY_THRESHOLD:-15}
pass=0
fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); [ -n "${2:-}" ] && sed 's/^/     | /' <<<"$2"; }

if ! command -v systemd-analyze >/dev/null; then
	echo "FAIL systemd-analyze not found (Debian/Ubuntu: apt-get install systemd)"
	exit 1
fi
echo "# $(systemd-analyze --version | head -1)"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# The binary ExecStart points at: the newest build, else a stub (verify only checks that it is executable).
BIN=${X402D_BIN:-}
if [ -z "$BIN" ]; then
	BIN=$(ls -t "$ROOT/target/release/x402d" "$ROOT/target/debug/x402d" 2>/dev/null | head -1)
fi
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
	BIN=$TMP/bin/x402d
	mkdir -p "$TMP/bin"
	printf '#!/bin/sh\nexit 0\n' >"$BIN"
	chmod +x "$BIN"
	echo "# no built x402d: ExecStart points at a stub"
else
	echo "# ExecStart -> $BIN"
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
case $BIN in *[[:space:]\\\'\"\$%]*)
	cp "$BIN" "$TMP/x402d-bin" && BIN=$TMP/x402d-bin ;;
esac

# Installed layout, ExecStart rewritten to the binary.
mkdir -p "$TMP/system" "$TMP/user" "$TMP/run"
install_unit() { # src dst
	sed "s|/usr/local/bin/x402d|$BIN|g" "$1" >"$2"
}
install_unit "$UNITS/x402d-system.service" "$TMP/system/x402d.service"
install_unit "$UNITS/x402d.socket" "$TMP/system/x402d.socket"
install_unit "$UNITS/x402d.service" "$TMP/user/x402d.service"
install_unit "$UNITS/x402d.socket" "$TMP/user/x402d.socket"

verify() { # label, extra args..., unit file
	local label=$1
	shift
	local out rc
	out=$(cd "$TMP" && XDG_RUNTIME_DIR=$TMP/run SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no "$@" 2>&1 >/dev/null)
	rc=$?
	if [ $rc -eq 0 ] && [ -z "$out" ]; then ok "$label"; else bad "$label (rc=$rc)" "$out"; fi
}
# Negative control: a unit with an unknown key must be caught (stderr non-empty), else this test is blind.
sed 's/^\[Service\]$/[Service]\nFrobnicate=yes/' "$TMP/system/x402d.service" >"$TMP/run/broken.service"
if out=$(cd "$TMP" && systemd-analyze verify --man=no "$TMP/run/broken.service" 2>&1 >/dev/null) && [ -n "$out" ]; then
	ok "verify catches an unknown key (negative control)"
else
	bad "verify did not report an unknown key: the verify checks below prove nothing" "$out"
fi
verify "verify system x402d.service (systemd/x402d-system.service)" "$TMP/system/x402d.service"
verify "verify system x402d.socket (+ x402d.service)" "$TMP/system/x402d.socket" "$TMP/system/x402d.service"
verify "verify --user x402d.service (systemd/x402d.service)" --user "$TMP/user/x402d.service"
verify "verify --user x402d.socket (+ x402d.service)" --user "$TMP/user/x402d.socket" "$TMP/user/x402d.service"

# Exposure score (offline scoring == what the live manager reports).
score() { # unit file [--user] -> prints "N.N"
	systemd-analyze security --offline=true --no-pager "$@" 2>/dev/null |
		sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' | tail -1
}
out=$(systemd-analyze security --offline=true --threshold="$THRESHOLD" --no-pager "$TMP/system/x402d.service" 2>&1)
rc=$?
s=$(score "$TMP/system/x402d.service")
if [ $rc -eq 0 ] && [ -n "$s" ]; then
	ok "security system unit: exposure $s (threshold $(awk -v t="$THRESHOLD" 'BEGIN{printf "%.1f", t/10}'))"
else
	bad "security system unit: exposure ${s:-?} above threshold $THRESHOLD/10 (rc=$rc)" "$(grep '✗' <<<"$out")"
fi
us=$(XDG_RUNTIME_DIR=$TMP/run score --user "$TMP/user/x402d.service")
echo "#    user unit exposure (informational; offline scoring assumes root): ${us:-?}"

# The units agree with the code.
for f in x402d.service x402d-system.service; do
	if grep -qx 'ExecStart=/usr/local/bin/x402d serve' "$UNITS/$f"; then
		ok "$f: ExecStart=/usr/local/bin/x402d serve (the path install-service replaces)"
	else
		bad "$f: no literal 'ExecStart=/usr/local/bin/x402d serve'"
	fi
done
# The user unit must not need a user namespace: with PrivateUsers= (explicit, or implied by these
# options on systemd >= 253) the service gets its own empty persistent keyring and misses the wallet,
# and Ubuntu >= 23.10 restricts unprivileged user namespaces. No StateDirectory= either (252: ~/.config).
ns=$(grep -E '^(PrivateUsers|ProtectSystem|ProtectHome|PrivateTmp|PrivateDevices|PrivateNetwork|PrivateIPC|PrivateMounts|ProtectKernel[A-Za-z]*|ProtectControlGroups|ProtectClock|ProtectHostname|ProtectProc|ProcSubset|ReadWritePaths|ReadOnlyPaths|InaccessiblePaths|ExecPaths|NoExecPaths|TemporaryFileSystem|BindPaths|BindReadOnlyPaths|RootDirectory|RootImage|StateDirectory|CapabilityBoundingSet)=' "$UNITS/x402d.service")
if [ -z "$ns" ]; then
	ok "user unit needs no user namespace (keyring wallet stays reachable)"
else
	bad "user unit has options that need PrivateUsers= or break the CLI paths" "$ns"
fi
cred=$(sed -n 's/.*CREDENTIAL_NAME: &str = "\([^"]*\)".*/\1/p' "$ROOT/src/wallet/mod.rs")
if [ -n "$cred" ] && grep -q "^LoadCredentialEncrypted=$cred:/etc/credstore.encrypted/$cred\$" "$UNITS/x402d-system.service"; then
	ok "system unit loads credential '$cred' (wallet::CREDENTIAL_NAME)"
else
	bad "system unit credential name does not match wallet::CREDENTIAL_NAME ('$cred')"
fi
listen=$(sed -n 's/.*DEFAULT_LISTEN: &str = "\([^"]*\)".*/\1/p' "$ROOT/src/config.rs")
if [ -n "$listen" ] && grep -qx "ListenStream=$listen" "$UNITS/x402d.socket"; then
	ok "x402d.socket listens on $listen (config::DEFAULT_LISTEN)"
else
	bad "x402d.socket ListenStream does not match config::DEFAULT_LISTEN ('$listen')"
fi
if "$BIN" --help 2>/dev/null | grep -q '^  serve ' || [ "$BIN" = "$TMP/bin/x402d" ]; then
	ok "'x402d serve' subcommand exists"
else
	bad "'$BIN --help' lists no 'serve' subcommand"
fi

# The binary embeds the units (install-service): a stale build would install old units.
if [ "$BIN" != "$TMP/bin/x402d" ] && "$BIN" install-service --help >/dev/null 2>&1; then
	for scope in user system; do
		src=$UNITS/x402d.service
		[ $scope = system ] && src=$UNITS/x402d-system.service
		if diff <(HOME=$TMP XDG_CONFIG_HOME= "$BIN" install-service --$scope --dry-run 2>&1 | sed '1d;$d') \
			<(sed "s|/usr/local/bin/x402d|$BIN|g" "$src") >"$TMP/diff" 2>&1; then
			ok "'x402d install-service --$scope --dry-run' prints $(basename "$src") (binary is up to date)"
		else
			bad "'x402d install-service --$scope --dry-run' differs from $(basename "$src"): rebuild x402d" "$(head -20 "$TMP/diff")"
		fi
	done
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
