#!/usr/bin/env bash
# A throwaway PostgreSQL for the team-mode tests: loopback only, trust auth,
# its socket and data in DIR. Works as root (initdb refuses root: the server
# then runs as `nobody`).
#   pg.sh start DIR PORT   initdb DIR/data (first time) and start on 127.0.0.1:PORT
#   pg.sh stop DIR         fast shutdown
#   pg.sh bin              exits 0 when the PostgreSQL binaries are installed
# Env: PG_PASSWORD (password auth for user postgres instead of trust), PG_FSYNC (off by default),
# PG_TLS=1 (ssl=on with a throwaway CA in DIR/ca.pem; needs openssl).
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
	tls=""
	if [ -n "${PG_TLS:-}" ]; then # TLS with a throwaway CA (DIR/ca.pem) for 127.0.0.1 / localhost
		if [ ! -f "$DIR/server.pem" ]; then
			openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=x402d-test-ca -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
			openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$DIR/server.key" -out "$DIR/server.csr" 2>/dev/null
			printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$DIR/san.ext"
			openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial -days 2 \
				-extfile "$DIR/san.ext" -out "$DIR/server.pem" 2>/dev/null
			chmod 600 "$DIR/server.key"; own "$DIR/server.key" "$DIR/server.pem"
		fi
		tls="-c ssl=on -c ssl_cert_file=$DIR/server.pem -c ssl_key_file=$DIR/server.key"
	fi
	as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 \
		-o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=${PG_FSYNC:-off} -c max_connections=200 $tls" start >/dev/null \
		|| { cat "$DIR/server.log" >&2; exit 1; }
	;;
stop)
	as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
	;;
*) echo "pg.sh: unknown command $cmd" >&2; exit 2 ;;
esac
