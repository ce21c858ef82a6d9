#!/usr/bin/env bash
# Services the test suite needs, for CI and for anyone who wants the full suite locally:
#   source .ci/services.sh    (from the repository root)
# Installs Debian's postgresql and chromium when missing (needs root / apt), starts a
# throwaway PostgreSQL cluster on 127.0.0.1 (a free port, a random password, data in a
# temporary folder) and exports what the tests read:
#   BENCH_TEST_POSTGRES_URL  postgresql://bench:<password>@127.0.0.1:<port>/bench
#   BENCH_CHROMIUM           the Chromium binary
#   BENCH_REQUIRE_SERVICES=1 tests that need a service fail instead of skipping
# With BENCH_WITH_SLURM=1 it also installs Debian's slurm-wlm and munge when missing (the
# one-node Slurm test starts its own daemons) and exports BENCH_REQUIRE_SLURM=1.
# The cluster is stopped and its folder removed when the shell that sourced this exits.

_bench_pkgs=()
command -v chromium >/dev/null 2>&1 || _bench_pkgs+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || _bench_pkgs+=(postgresql)
if [ -n "${BENCH_WITH_SLURM:-}" ]; then
  [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] || _bench_pkgs+=(slurm-wlm)
  [ -x /usr/sbin/munged ] || _bench_pkgs+=(munge)
  export BENCH_REQUIRE_SLURM=1
fi
if [ ${#_bench_pkgs[@]} -gt 0 ]; then
  echo "installing ${_bench_pkgs[*]} from Debian..." >&2
  if [ "$(id -u)" = 0 ]; then _sudo=(); else _sudo=(sudo); fi
  "${_sudo[@]}" apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive "${_sudo[@]}" apt-get install -y -q --no-install-recommends "${_bench_pkgs[@]}" >/dev/null
fi

export BENCH_CHROMIUM=${BENCH_CHROMIUM:-$(command -v chromium)}

_bench_pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
_bench_pgdir=$(mktemp -d /tmp/bench-pg.XXXXXX)
_bench_pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
_bench_pgpass=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
printf '%s\n' "$_bench_pgpass" > "$_bench_pgdir/pw"
if [ "$(id -u)" = 0 ]; then _bench_as=(runuser -u postgres --); chown -R postgres "$_bench_pgdir"; else _bench_as=(); fi
"${_bench_as[@]}" "$_bench_pgbin/initdb" -D "$_bench_pgdir/data" -U bench -A scram-sha-256 --pwfile="$_bench_pgdir/pw" >/dev/null
rm -f "$_bench_pgdir/pw"
"${_bench_as[@]}" "$_bench_pgbin/pg_ctl" -D "$_bench_pgdir/data" -l "$_bench_pgdir/log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=$_bench_pgport -c unix_socket_directories=$_bench_pgdir -c max_connections=200" start >/dev/null
PGPASSWORD=$_bench_pgpass "$_bench_pgbin/createdb" -h 127.0.0.1 -p "$_bench_pgport" -U bench bench
export BENCH_TEST_POSTGRES_URL="postgresql://bench:${_bench_pgpass}@127.0.0.1:${_bench_pgport}/bench"
export BENCH_REQUIRE_SERVICES=1

_bench_stop_services() {
  "${_bench_as[@]}" "$_bench_pgbin/pg_ctl" -D "$_bench_pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$_bench_pgdir"
}
trap _bench_stop_services EXIT
echo "services: PostgreSQL on 127.0.0.1:$_bench_pgport, Chromium at $BENCH_CHROMIUM" >&2
