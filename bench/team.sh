#!/usr/bin/env bash
# Team mode's cost (benches/team.rs): starts a throwaway PostgreSQL (fsync on, like
# redb's durable commits) on loopback, runs the bench against it and against redb,
# prints paid calls/s and reservation latency p50/p99 for both.
#   bash bench/team.sh            (env: BENCH_SECS=3 BENCH_TASKS=16 BENCH_DAEMONS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/team/pg.sh bin || { echo "bench/team.sh needs PostgreSQL (apt-get install postgresql)"; exit 2; }
DIR=$(mktemp -d /tmp/x402d-bench-pg.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'bash tests/team/pg.sh stop "$DIR"; rm -rf "$DIR"' EXIT
PG_FSYNC=on bash tests/team/pg.sh start "$DIR" "$PORT"
X402D_BENCH_PG_URL="postgres://postgres@127.0.0.1:$PORT/postgres" cargo bench --bench team
