#!/usr/bin/env bash
# Checks the Debian package scripts/deb built: metadata, conffiles, file list, the packaged units
# (ExecStart=/usr/bin/x402d, what `x402d install-service` would write for that path), the man page
# and completions, and the maintainer scripts (never enable or start the service).
#   tests/deb/check.sh [path/to/x402d_VERSION_ARCH.deb]    (default: the newest in target/debian/)
# Output: `ok`/`FAIL` per check, then `N passed, N failed`; exit 1 if any failed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -1)
ARCH=$(dpkg --print-architecture)
DEB=${1:-$ROOT/target/debian/x402d_${VERSION}_${ARCH}.deb}
pass=0
fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() {
	echo "FAIL $1"
	fail=$((fail + 1))
	if [ -n "${2:-}" ]; then sed 's/^/     | /' <<<"$2" | head -30; fi
}
verdict() { if [ "$1" -eq 0 ]; then ok "$2"; else bad "$2" "${3:-}"; fi; }
[ -f "$DEB" ] || {
	echo "FAIL no package at $DEB (run scripts/deb)"
	exit 2
}
X=$(mktemp -d /tmp/x402d-deb-check.XXXXXX)
trap 'rm -rf "$X"; echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]' EXIT
echo "# $DEB ($(du -h "$DEB" | cut -f1))"

# --- metadata -------------------------------------------------------------------------------------
info=$(dpkg-deb -I "$DEB")
f() { dpkg-deb -f "$DEB" "$1"; }
[ "$(f Package)" = x402d ] && [ "$(f Version)" = "$VERSION" ] && [ "$(f Architecture)" = "$ARCH" ]
verdict $? "control: Package x402d, Version $VERSION, Architecture $ARCH (file name x402d_${VERSION}_${ARCH}.deb)" "$info"
grep -q "libc6" <<<"$(f Depends)"
verdict $? "Depends from the binary's shared libraries: $(f Depends)" "$info"
dpkg-deb -e "$DEB" "$X/control"
conf=$(cat "$X/control/conffiles" 2>/dev/null)
[ "$conf" = /etc/x402d/config.toml ]
verdict $? "conffiles: exactly /etc/x402d/config.toml" "$conf"

# --- file list ------------------------------------------------------------------------------------
list=$(dpkg-deb -c "$DEB")
want=(
	"-rwxr-xr-x ./usr/bin/x402d"
	"-rw-r--r-- ./lib/systemd/system/x402d.service"
	"-rw-r--r-- ./lib/systemd/system/x402d.socket"
	"-rw-r--r-- ./usr/lib/systemd/user/x402d.service"
	"-rw-r--r-- ./usr/lib/systemd/user/x402d.socket"
	"-rw-r--r-- ./etc/x402d/config.toml"
	"-rw-r--r-- ./usr/share/man/man1/x402d.1.gz"
	"-rw-r--r-- ./usr/share/bash-completion/completions/x402d"
	"-rw-r--r-- ./usr/share/zsh/vendor-completions/_x402d"
	"-rw-r--r-- ./usr/share/fish/vendor_completions.d/x402d.fish"
	"-rw-r--r-- ./usr/share/doc/x402d/copyright"
)
for w in "${want[@]}"; do
	mode=${w%% *}
	path=${w#* }
	awk -v m="$mode" -v p="$path" '$1 == m && $2 == "0/0" && $NF == p {found=1} END {exit !found}' <<<"$list"
	verdict $? "contains $path ($mode root:root)"
done
[ "$fail" -eq 0 ] || sed 's/^/     | /' <<<"$list"
! grep -q "/usr/local" <<<"$list"
verdict $? "nothing under /usr/local" "$list"

# --- contents -------------------------------------------------------------------------------------
dpkg-deb -x "$DEB" "$X/root"
R=$X/root
for u in lib/systemd/system/x402d.service usr/lib/systemd/user/x402d.service; do
	ex=$(grep '^Exec' "$R/$u")
	grep -qx "ExecStart=/usr/bin/x402d serve" <<<"$ex" && ! grep -q /usr/local "$R/$u"
	verdict $? "$u: ExecStart=/usr/bin/x402d serve, no /usr/local path" "$ex"
done
# The packaged units are what `x402d install-service` writes for a binary at /usr/bin/x402d.
for scope in system user; do
	[ $scope = system ] && u=lib/systemd/system/x402d.service || u=usr/lib/systemd/user/x402d.service
	tpl=$ROOT/systemd/x402d.service
	[ $scope = system ] && tpl=$ROOT/systemd/x402d-system.service
	sed 's#/usr/local/bin/x402d#/usr/bin/x402d#g' "$tpl" | cmp -s - "$R/$u"
	verdict $? "$u = systemd/$(basename "$tpl") with ExecStart=/usr/bin/x402d" "$(sed 's#/usr/local/bin/x402d#/usr/bin/x402d#g' "$tpl" | diff - "$R/$u")"
done
for u in lib/systemd/system/x402d.socket usr/lib/systemd/user/x402d.socket; do
	cmp -s "$ROOT/systemd/x402d.socket" "$R/$u"
	verdict $? "$u = systemd/x402d.socket"
done
BIN=$R/usr/bin/x402d
"$BIN" --version >/dev/null && [ "$("$BIN" --version)" = "x402d $VERSION" ]
verdict $? "usr/bin/x402d runs: $("$BIN" --version 2>&1)"
chk=$("$BIN" --config "$R/etc/x402d/config.toml" config check 2>&1)
grep -qx 'source = "systemd-credential"' <<<"$chk"
verdict $? "etc/x402d/config.toml is valid and reads the wallet from the systemd credential" "$chk"
n=$(grep -c '^#' "$R/etc/x402d/config.toml")
[ "$n" -ge 20 ]
verdict $? "etc/x402d/config.toml documents the defaults in comments ($n comment lines)"
man=$(zcat "$R/usr/share/man/man1/x402d.1.gz")
cmds=$("$BIN" --help | sed -n '/^Commands:/,/^$/p' | awk 'NR>1 && NF {print $1}' | grep -vx help)
missing=$(for c in $cmds; do grep -q "^\.SS \"x402d $c\"" <<<"$man" || echo "$c"; done)
[ -z "$missing" ] && [ -n "$cmds" ] && grep -q '^\.TH x402d 1' <<<"$man"
verdict $? "man page x402d.1.gz: .TH x402d 1 and a subsection per command ($(wc -w <<<"$cmds") commands)" "missing: $missing"
if command -v groff >/dev/null; then
	w=$(zcat "$R/usr/share/man/man1/x402d.1.gz" | groff -man -ww -z -Tutf8 2>&1)
	[ -z "$w" ]
	verdict $? "groff -man -ww: no warnings" "$w"
fi
if command -v man >/dev/null; then
	txt=$(MANWIDTH=80 man -l "$R/usr/share/man/man1/x402d.1.gz" 2>&1 | col -b)
	grep -q "x402d wallet import" <<<"$txt"
	verdict $? "'man -l' renders it" "$txt"
fi
reg=$(bash -c "source '$R/usr/share/bash-completion/completions/x402d' && complete -p x402d" 2>&1)
grep -q -- "-F _x402d x402d" <<<"$reg"
verdict $? "bash completion registers: $reg" "$reg"
grep -q '^#compdef x402d' "$R/usr/share/zsh/vendor-completions/_x402d" &&
	grep -q 'complete -c x402d' "$R/usr/share/fish/vendor_completions.d/x402d.fish"
verdict $? "zsh (#compdef x402d) and fish (complete -c x402d) completions"

# --- maintainer scripts ---------------------------------------------------------------------------
for s in postinst prerm postrm; do
	[ -x "$X/control/$s" ] && sh -n "$X/control/$s"
	verdict $? "$s: executable, valid sh"
done
# Commands only: heredoc bodies and echo lines (the hints printed to the admin) are left out.
en=$(for s in postinst prerm postrm; do
	sed -e '/<<-*.MSG/,/^[[:space:]]*MSG/d' -e '/^[[:space:]]*echo /d' "$X/control/$s" |
		grep -nE 'systemctl[^#]*\b(enable|start|restart|try-restart|reload-or-restart|unmask)\b|deb-systemd-invoke' |
		sed "s/^/$s:/"
done)
[ -z "$en" ]
verdict $? "maintainer scripts never enable or (re)start a unit" "$en"
grep -q 'systemctl daemon-reload' "$X/control/postinst" && grep -q '/run/systemd/system' "$X/control/postinst"
verdict $? "postinst: daemon-reload, only when systemd is running"
grep -q 'X402D_PURGE_LEDGER' "$X/control/postrm" && ! grep -qE 'rm -rf[^#]*/var/lib' \
	<(sed '/X402D_PURGE_LEDGER:-}" = yes/,/else/d' "$X/control/postrm")
verdict $? "postrm: the ledger is deleted only with X402D_PURGE_LEDGER=yes"
