#!/usr/bin/env bash
# A throwaway PostgreSQL for the team-mode tests: loopback only, trust auth,
# its socket and data in DIR. Works as root (initdb refuses root: the server
# then runs as `nobody`).
#   pg.sh start DIR PORT   initdb DIR/data (first time) and start on 127.0.0.1:PORT
#   pg.sh stop DIR         fast shutdown
#   pg.sh bin              exits 0 when the PostgreSQL binaries are installed
# Env: PG_PASSWORD (password auth for user postgres instead of trust), PG_FSYNC (off by default).
set -euo pipefail
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
cmd=${1:?usage: pg.sh start DIR PORT | stop DIR | bin}
if [ "$cmd" = bin ]; then [ -n "$BIN" ] && [ -x "$BIN/initdb" ]; exit $?; fi
[ -n "$BIN" ] || { echo "pg.sh: no /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2; exit 2; }
DIR=${2:?DIR}
# As root: in a user namespace where we are uid 1000 (works inside the interop suite's
# own user namespace too), else as `nobody` (the data dir chowned to it).
USERNS=0
if [ "$(id -u)" = 0 ] && unshare --user --map-user=1000 --map-group=1000 true 2>/dev/null; then USERNS=1; fi
as_pg() {
	if [ "$(id -u)" != 0 ]; then "$@"
	elif [ $USERNS = 1 ]; then unshare --user --map-user=1000 --map-group=1000 -- "$@"
	else setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; fi
}
own() { if [ "$(id -u)" = 0 ] && [ $USERNS = 0 ]; then chown nobody:nogroup "$@"; fi; }
case "$cmd" in
start)
	PORT=${3:?PORT}
	mkdir -p "$DIR"
	own "$DIR"
	if [ ! -f "$DIR/data/PG_VERSION" ]; then
		auth=(-A trust)
		if [ -n "${PG_PASSWORD:-}" ]; then # password auth (scram) for user postgres
			printf '%s\n' "$PG_PASSWORD" >"$DIR/pw"; own "$DIR/pw"
			auth=(-A scram-sha-256 --pwfile "$DIR/pw")
		fi
		as_pg "$BIN/initdb" -D "$DIR/data" -U postgres "${auth[@]}" --no-sync -E UTF8 --locale=C >"$DIR/initdb.log" 2>&1 \
			|| { cat "$DIR/initdb.log" >&2; exit 1; }
		rm -f "$DIR/pw"
	fi
	as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 \
		-o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=${PG_FSYNC:-off} -c max_connections=200" start >/dev/null \
		|| { cat "$DIR/server.log" >&2; exit 1; }
	;;
stop)
	as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
	;;
*) echo "pg.sh: unknown command $cmd" >&2; exit 2 ;;
esac
