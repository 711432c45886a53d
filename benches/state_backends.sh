#!/usr/bin/env bash
# The state's cost, SQLite against PostgreSQL: `run --once` of the four emulators (EVENTS per
# vendor over 3 days) into a stdout sink (to /dev/null), each round from a fresh state, the two
# backends alternated on one emulator and one PostgreSQL (Debian's, started here on loopback with
# its default durability: fsync and synchronous_commit on).
#
#   bash benches/state_backends.sh [BIN] [ROUNDS] [EVENTS]    # BIN default target/release/auditship
#
# Prints wall time, the agent's user+sys CPU and peak RSS per run (the database server's own CPU
# is not counted). Needs PostgreSQL's binaries (tests/install-deps.sh installs them).
set -euo pipefail
BIN=$(realpath "${1:-target/release/auditship}"); ROUNDS=${2:-3}; EVENTS=${3:-25000}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
W=$(mktemp -d); chmod 777 "$W"; cd "$W"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SIM=$(free_port); PG=$(free_port)
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
"$BIN" simulate --listen "127.0.0.1:$SIM" --events "$EVENTS" --span 3d > sim.out 2> sim.err & SIMPID=$!
as_pg "$PGBIN/initdb -D $W/pgdata -U postgres --auth=trust --no-sync > /dev/null"
as_pg "$PGBIN/pg_ctl -D $W/pgdata -o '-p $PG -c listen_addresses=127.0.0.1 -c unix_socket_directories=' -l $W/pg.log -w start > /dev/null"
trap 'as_pg "$PGBIN/pg_ctl -D $W/pgdata -m immediate stop" > /dev/null; kill $SIMPID; rm -rf "$W"' EXIT
until grep -q '^\[\[sinks\]\]' sim.out 2> /dev/null; do sleep 0.2; done
src=$(sed -n '/^\[\[sources\]\]/,$p' sim.out | sed '/^\[\[sinks\]\]/,$d')
for r in $(seq 1 "$ROUNDS"); do
  for b in sqlite postgres; do
    rm -f s.db*
    if [ $b = postgres ]; then
      as_pg "$PGBIN/psql -q -h 127.0.0.1 -p $PG -U postgres -c 'CREATE DATABASE r$r' postgres"
      st="state_url = \"postgres://postgres@127.0.0.1:$PG/r$r?sslmode=disable\""
    else st='state_path = "s.db"'; fi
    printf '[agent]\n%s\n%s\n[[sinks]]\nname = "out"\nkind = "stdout"\n' "$st" "$src" > c.toml
    /usr/bin/time -o t.txt -f "%e %U %S %M" "$BIN" run --once --config c.toml > out.ndjson 2> err.log
    read -r wall user sys rss < t.txt
    n=$(wc -l < out.ndjson)
    python3 -c "import sys; w,u,s,m,n=map(float,sys.argv[2:]); print(f'{sys.argv[1]:9} {int(n)} events {w:.2f} s wall {n/w:,.0f} ev/s  cpu {(u+s)*1e6/n:.1f} us/event  rss {m/1024:.1f} MB')" "$b" "$wall" "$user" "$sys" "$rss" "$n"
  done
done
