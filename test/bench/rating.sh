#!/usr/bin/env bash
# test/bench/rating.sh WORKDIR: the rating benchmark (a benchmark, not a
# test: it asserts nothing about time).
#
# Loads METERS meters x INTERVALS 15-minute readings by COPY, one COPY per
# interval, into prepay.reading (rated by the trigger: consumption, flat
# price, ledger entry, wallet, alarm ladder) and, in the same run and
# interleaved batch by batch, the same files into an identical table with
# no triggers, and the readings of another METERS meters whose tariff is
# 4-period time-of-use x 3 tiers (12 switch points a day, four of them
# inside the benchmark's window, tier ceilings the meters cross).  Then
# folds the rollup deltas the batches appended (prepay.fold_rollups, which
# pg_cron runs every minute in production) and times that too.  Prints
# the rates; the machine-readable lines are
#   bench rating: rated_per_s=N copy_per_s=M ratio=R
#   bench tariff: flat_per_s=N tou_tier_per_s=M ratio=R
# Run with `make bench`; BENCH_METERS and BENCH_INTERVALS override the size.
set -euo pipefail
work=$1
meters=${BENCH_METERS:-100000}
intervals=${BENCH_INTERVALS:-10}
cd "$work"
. test/lib/cluster.sh
cluster_start "$work/cluster" "shared_buffers = 1GB" "max_wal_size = 8GB" \
	"checkpoint_timeout = 30min" "synchronous_commit = off" || exit 1
trap cluster_stop EXIT
data="$work/bench-data"
mkdir -p "$data"
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }

psql -d postgres -c "CREATE DATABASE bench"
psql -d bench <<SQL
CREATE EXTENSION prepay;
INSERT INTO prepay.site (name, time_zone) VALUES ('bench', 'Asia/Shanghai');
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), (1, 'tou x tiers');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-01-01', 0.583);
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 2, '2026-01-01', '{
  "periods": {"sharp": 1.2, "peak": 0.95, "flat": 0.65, "valley": 0.32},
  "schedules": [{"switches": [["00:00", "valley"], ["00:40", "flat"], ["01:10", "peak"], ["01:50", "sharp"],
                              ["02:20", "peak"], ["04:00", "valley"], ["08:00", "peak"], ["11:00", "sharp"],
                              ["13:00", "peak"], ["18:00", "flat"], ["21:00", "peak"], ["23:00", "valley"]]}],
  "tiers": {"cycle": "monthly", "blocks": [{"upto": 0.5, "add": 0}, {"upto": 1, "add": 0.05}, {"add": 0.3}]}}');
-- meters 1..N on the flat tariff, N+1..2N on time-of-use x tiers
INSERT INTO prepay.account (site_id, account_id, code, name, tariff_id, balance)
SELECT 1, i, 'A' || i, 'tenant ' || i, CASE WHEN i <= $meters THEN 1 ELSE 2 END, 0
  FROM generate_series(1, 2 * $meters) i;
INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, channel, external_ref)
SELECT 1, i, 'recharge', 100000, 100000, 'bench', 'open-' || i FROM generate_series(1, 2 * $meters) i;
UPDATE prepay.account SET balance = 100000;
INSERT INTO prepay.meter (site_id, meter_id, code, account_id)
SELECT 1, i, 'M' || i, i FROM generate_series(1, 2 * $meters) i;
-- baseline readings: the first reading of a meter is not charged
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
SELECT 1, i, '2026-03-01 00:00+08', 1000 FROM generate_series(1, 2 * $meters) i;
CREATE SCHEMA bench;
CREATE TABLE bench.reading_plain (LIKE prepay.reading INCLUDING ALL);
SQL
for k in $(seq 1 "$intervals"); do
	psql -d bench -c "COPY (SELECT 1, i, timestamptz '2026-03-01 00:00+08' + interval '15 min' * $k,
	                              1000 + $k * (0.05 + (i % 7) * 0.013)
	                         FROM generate_series(1, $meters) i)
	                  TO '$data/$k.csv' (FORMAT csv)"
	psql -d bench -c "COPY (SELECT 1, $meters + i, timestamptz '2026-03-01 00:00+08' + interval '15 min' * $k,
	                              1000 + $k * (0.05 + (i % 7) * 0.013)
	                         FROM generate_series(1, $meters) i)
	                  TO '$data/tou-$k.csv' (FORMAT csv)"
done
psql -d bench -c "VACUUM ANALYZE" -c "CHECKPOINT"

now_ns() { date +%s%N; }
plain_ns=0
rated_ns=0
tou_ns=0
for k in $(seq 1 "$intervals"); do
	t0=$(now_ns)
	psql -d bench -c "COPY bench.reading_plain (site_id, meter_id, read_at, energy) FROM '$data/$k.csv' (FORMAT csv)"
	t1=$(now_ns)
	psql -d bench -c "COPY prepay.reading (site_id, meter_id, read_at, energy) FROM '$data/$k.csv' (FORMAT csv)"
	t2=$(now_ns)
	psql -d bench -c "COPY prepay.reading (site_id, meter_id, read_at, energy) FROM '$data/tou-$k.csv' (FORMAT csv)"
	t3=$(now_ns)
	plain_ns=$((plain_ns + t1 - t0))
	rated_ns=$((rated_ns + t2 - t1))
	tou_ns=$((tou_ns + t3 - t2))
done

# the rollup deltas the batches appended are folded later (pg_cron, every
# minute in production): time that deferred work too, once for the run
pending=$(psql -d bench -At -c "SELECT count(*) FROM prepay.energy_pending")
t0=$(now_ns)
psql -d bench -c "SELECT prepay.fold_rollups()" >/dev/null
fold_ns=$(($(now_ns) - t0))

rows=$((meters * intervals))
psql -d bench -At <<SQL
SELECT 'rollups equal the ledger: ' || (NOT EXISTS (
    (SELECT * FROM prepay.energy_day WHERE meter_id % 1000 = 7
     EXCEPT SELECT * FROM prepay.energy_from_ledger(1, '2026-01-01', '2027-01-01') WHERE meter_id % 1000 = 7)
    UNION ALL
    (SELECT * FROM prepay.energy_from_ledger(1, '2026-01-01', '2027-01-01') WHERE meter_id % 1000 = 7
     EXCEPT SELECT * FROM prepay.energy_day WHERE meter_id % 1000 = 7)))::text || ' (a sample of meters)';
SELECT 'ledger entries: ' || count(*) FILTER (WHERE kind = 'consumption') FROM prepay.ledger;
SELECT 'tou x tier pieces: ' || count(*) || ' in ' || count(DISTINCT l.entry_id) || ' entries, '
       || count(*) FILTER (WHERE p.tier > 1) || ' above tier 1'
  FROM prepay.ledger l, prepay._pieces(l.pieces) p WHERE l.kind = 'consumption' AND l.meter_id > $meters;
SELECT 'quarantined readings: ' || count(*) FROM prepay.reading WHERE quarantine_reason IS NOT NULL;
SELECT 'ledger check problems: ' || count(*) FROM prepay.check_ledger();
SQL
awk -v rows="$rows" -v p="$plain_ns" -v r="$rated_ns" -v t="$tou_ns" -v m="$meters" -v k="$intervals" \
	-v f="$fold_ns" -v d="$pending" 'BEGIN {
	printf "readings: %d meters x %d intervals = %d rows per kind, one COPY per interval\n", m, k, rows
	printf "plain COPY (no triggers): %.2f s\n", p / 1e9
	printf "rated COPY, flat tariff: %.2f s\n", r / 1e9
	printf "rated COPY, 4-period TOU x 3 tiers: %.2f s\n", t / 1e9
	printf "fold of the rollup deltas of both (deferred, once): %d rows in %.2f s\n", d, f / 1e9
	printf "bench rating+fold: flat and TOU readings with their fold, per s=%d\n", 2 * rows / ((r + t + f) / 1e9)
	printf "bench rating: rated_per_s=%d copy_per_s=%d ratio=%.3f\n", rows / (r / 1e9), rows / (p / 1e9), p / r
	printf "bench tariff: flat_per_s=%d tou_tier_per_s=%d ratio=%.3f\n", rows / (r / 1e9), rows / (t / 1e9), r / t
}'
