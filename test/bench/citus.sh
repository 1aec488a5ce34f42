#!/usr/bin/env bash
# test/bench/citus.sh WORKDIR: the rating benchmark on Citus (a benchmark,
# not a test: it asserts nothing about time).
#
# The same load on a single node and on a Citus cluster of a coordinator
# and two workers (prepay.distribute()), all on this machine, one after the
# other in the same run: SITES sites of METERS / SITES flat-tariff meters,
# and INTERVALS 15-minute readings of every meter, each interval loaded as
# one INSERT per site, the sites' INSERTs side by side (through the
# coordinator on Citus, where each goes to its site's worker and is rated
# there).  Prints the rates; the machine-readable line is
#   bench citus: meters=N readings=R single_per_s=X citus_per_s=Y ratio=Y/X
# Skipped, saying so, where Citus is not installed.  BENCH_METERS,
# BENCH_SITES and BENCH_INTERVALS override the size.  Run with `make bench`
# (holding /tmp/prepay-heavy.lock where several checkouts share a machine).
set -euo pipefail
work=$1
meters=${BENCH_METERS:-4000}
sites=${BENCH_SITES:-8}
intervals=${BENCH_INTERVALS:-8}
per_site=$((meters / sites))
meters=$((per_site * sites))
cd "$work"

if [ ! -f "$(pg_config --pkglibdir)/citus.so" ]; then
	echo "bench citus: skipped (Citus is not installed)"
	exit 0
fi
. test/lib/ports.sh
bindir=$(pg_config --bindir)
export PATH="$bindir:$PATH"

# a node on loopback; the first argument says whether it loads Citus
nodes=()
node_start() {
	local name=$1 citus=$2 port
	port=$(free_port 1)
	initdb -D "$work/$name" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >"$work/$name.initdb.log" 2>&1
	{
		echo "listen_addresses = '127.0.0.1'"
		echo "port = $port"
		echo "unix_socket_directories = ''"
		echo "max_prepared_transactions = 20"
		echo "shared_buffers = 256MB"
		echo "synchronous_commit = off"
		echo "max_wal_size = 4GB"
		echo "log_min_messages = warning"
		if [ "$citus" = 1 ]; then echo "shared_preload_libraries = 'citus'"; fi
	} >>"$work/$name/postgresql.conf"
	pg_ctl -D "$work/$name" -l "$work/$name.log" -w start >/dev/null
	echo "$port"
}
stop_all() { for d in "${nodes[@]}"; do pg_ctl -D "$d" -m fast -w stop >/dev/null 2>&1 || true; done; }
trap stop_all EXIT

single=$(node_start single 0)
nodes+=("$work/single")
coord=$(node_start coordinator 1)
nodes+=("$work/coordinator")
w1=$(node_start worker1 1)
nodes+=("$work/worker1")
w2=$(node_start worker2 1)
nodes+=("$work/worker2")
sql() { local port=$1; shift; command psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"; }
for p in $coord $w1 $w2; do sql "$p" -c 'CREATE EXTENSION citus'; done
sql "$coord" <<SQL >/dev/null
SELECT citus_set_coordinator_host('127.0.0.1', $coord);
SELECT citus_add_node('127.0.0.1', $w1);
SELECT citus_add_node('127.0.0.1', $w2);
CREATE EXTENSION prepay;
SELECT count(*) FROM prepay.distribute();
SQL
sql "$single" -c 'CREATE EXTENSION prepay'

# the same sites, tariffs, accounts (rich), meters and baseline readings on both
setup="
INSERT INTO prepay.site (site_id, name, time_zone) SELECT s, 'bench ' || s, 'Asia/Shanghai' FROM generate_series(1, $sites) s;
INSERT INTO prepay.tariff (site_id, tariff_id, name) SELECT s, s, 'flat' FROM generate_series(1, $sites) s;
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) SELECT s, s, '2026-01-01', 0.583 FROM generate_series(1, $sites) s;
CREATE TEMP TABLE m AS SELECT i, 1 + (i - 1) / $per_site AS s FROM generate_series(1, $meters) i;
INSERT INTO prepay.account (site_id, account_id, code, name, tariff_id, balance)
SELECT s, i, 'A' || i, 'tenant ' || i, s, 100000 FROM m;
INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id, channel, external_ref)
SELECT m.s, m.i, 'recharge', 100000, 100000, ac.actor_id, 'bench', 'open-' || m.i
  FROM m JOIN (SELECT s, prepay._actor_id(s) AS actor_id FROM generate_series(1, $sites) s) ac ON ac.s = m.s;
INSERT INTO prepay.meter (site_id, meter_id, code, account_id) SELECT s, i, 'M' || i, i FROM m;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) SELECT s, i, '2026-03-01 00:00+08', 1000 FROM m;
"
sql "$single" -c "$setup"
sql "$coord" -c "$setup"

# INTERVALS intervals, each one INSERT per site, the sites side by side
load() {
	local port=$1 start end
	start=$(date +%s%N)
	for k in $(seq 1 "$intervals"); do
		for s in $(seq 1 "$sites"); do
			sql "$port" -c "INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
				SELECT $s, i, timestamptz '2026-03-01 00:00+08' + $k * interval '15 minutes', 1000 + $k * 0.25
				  FROM generate_series($(( (s - 1) * per_site + 1 )), $(( s * per_site ))) i" &
		done
		wait
	done
	end=$(date +%s%N)
	echo $(( end - start ))
}
t_single=$(load "$single")
t_citus=$(load "$coord")
readings=$((meters * intervals))
for p in $single $coord; do
	n=$(sql "$p" -c "SELECT count(*) FROM prepay.ledger WHERE kind = 'consumption'")
	[ "$n" = "$readings" ] || { echo "bench citus: FAILED: $n charges on port $p, expected $readings" >&2; exit 1; }
done
[ "$(sql "$coord" -c 'SELECT count(*) FROM prepay.check_ledger()')" = 0 ] || { echo "bench citus: FAILED: check_ledger() on Citus" >&2; exit 1; }
awk -v n="$meters" -v r="$readings" -v a="$t_single" -v b="$t_citus" 'BEGIN {
	printf "single node: %d readings rated in %.2f s; Citus (coordinator and 2 workers, same machine): %.2f s\n", r, a / 1e9, b / 1e9
	printf "bench citus: meters=%d readings=%d single_per_s=%d citus_per_s=%d ratio=%.3f\n", n, r, r / (a / 1e9), r / (b / 1e9), a / b
}'
