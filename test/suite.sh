#!/usr/bin/env bash
# test/suite.sh WORKDIR: start a private cluster (own socket directory and
# port, trust auth on the socket only), run pg_regress, the isolation specs
# and the TAP tests against it, print the diffs of any failure, stop the
# cluster.  Must run as an unprivileged user; test/run.sh arranges that.
set -uo pipefail
work=$1
cd "$work"
bindir=$(pg_config --bindir)
export PATH="$bindir:$PATH"

data="$work/data"
sock="$work/sock"
mkdir -p "$sock"
port=$((20000 + RANDOM % 20000))
while "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null; do port=$((port + 1)); done

initdb -D "$data" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >"$work/initdb.log" 2>&1 \
	|| { cat "$work/initdb.log"; exit 1; }
cat >>"$data/postgresql.conf" <<CONF
listen_addresses = ''
port = $port
unix_socket_directories = '$sock'
fsync = off
max_prepared_transactions = 10
log_min_messages = warning
CONF
pg_ctl -D "$data" -l "$work/server.log" -w start >/dev/null || { cat "$work/server.log"; exit 1; }
stop_cluster() { pg_ctl -D "$data" -m fast -w stop >/dev/null 2>&1 || true; }
trap stop_cluster EXIT

export PGHOST="$sock" PGPORT="$port" PGUSER=postgres
status=0

echo "== pg_regress and isolation specs"
if ! make -s installcheck; then
	status=1
	for f in regression.diffs output_iso/regression.diffs; do
		[ -s "$f" ] && { echo "---- $f"; cat "$f"; }
	done
fi

if ls test/t/*.pl >/dev/null 2>&1; then
	echo "== TAP tests"
	pgxs=$(dirname "$(pg_config --pgxs)")/..
	if ! PERL5LIB="$pgxs/test/perl" PG_REGRESS="$pgxs/test/regress/pg_regress" \
		TESTDIR="$work" prove -v test/t/ >"$work/tap.log" 2>&1; then
		status=1
		cat "$work/tap.log"
		cat "$work"/tmp_check/log/*.log 2>/dev/null | tail -50
	else
		grep -E '^(test/t/|All tests|Result)' "$work/tap.log"
	fi
fi

exit $status
