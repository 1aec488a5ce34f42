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
#   bench storage: readings=N bytes_per_reading=B ledger_bytes_per_entry=L
# (the last: bytes on disk after VACUUM, every index included, of the
# reading and ledger tables, per rated reading and per ledger entry).
# Run with `make bench`; BENCH_METERS and BENCH_INTERVALS override the size.
#
# BENCH_TOU=0 loads the flat meters only (the time-of-use figures are then
# meaningless): the storage line of a flat tariff alone.
#
# BENCH_SITES=S (default 1) spreads the meters over S sites and loads each
# interval with S concurrent COPYs, one per site, on both sides: rating
# batches of one site run one at a time (the site's rating lock), those of
# different sites side by side.
#
# BENCH_RELAX (comma-separated) measures what giving up a promise would buy,
# for the decisions in docs/BENCHMARKS.md; the figures are then not the
# product's:
#   duplicate-probe  disable the BEFORE row trigger that skips duplicates
#                    (a duplicate reading would then fail its whole COPY)
#   (the ledger's index by account is its primary key now: not relaxable)
#
# BENCH_INTAKE=1 also loads, interval by interval, two more blocks of METERS
# flat meters as a non-superuser agent login (bench_agent: prepay_agent,
# mapped to every site, with pg_read_server_files to read the same files):
# one by COPY into prepay.reading_intake (the bulk path for roles under row
# security, which refuses their COPY into prepay.reading), one by the
# agent's own statement (agent/delivery.c: INSERT ... SELECT FROM unnest of
# array literals).  BENCH_INTAKE_BATCH=B (default: the whole interval)
# splits each into statements of B rows, as the agent's batches of 500.
# The machine-readable line is
#   bench intake: superuser_copy_per_s=N intake_copy_per_s=M agent_insert_per_s=K batch=B
# (the fold then also folds the two extra blocks' deltas, so the
# "rating+fold" line is not comparable with a run without BENCH_INTAKE).
#
# BENCH_MONTHS=1 partitions prepay.reading by month (pg_partman) before
# loading; by default every reading goes to its default partition.
#
# BENCH_REINDEX=1 rebuilds the indexes of the readings and the ledger
# (REINDEX TABLE, every partition) before the storage line: what a closed
# month, whose rows no longer change, costs once its keys are rebuilt
# (docs/OPERATIONS.md); the storage line is then not the live table's.
#
# BENCH_BARE_WRITES=1 also times, interval by interval, the bare writes the data
# model asks of a flat rated reading, done by SQL with no rating logic:
# after each rated COPY, the ledger rows it wrote are copied out and loaded
# again (binary COPY) into a copy of the ledger with its keys and checks,
# and the meters and accounts get new row versions by one UPDATE each.
# With the plain COPY of the readings, that is what PostgreSQL's own bulk
# paths take for the rows the model writes.  It is not a strict floor: the
# trigger's own writes cost less than these (docs/BENCHMARKS.md).
set -euo pipefail
work=$1
meters=${BENCH_METERS:-100000}
intervals=${BENCH_INTERVALS:-10}
sites=${BENCH_SITES:-1}
intake=${BENCH_INTAKE:-0}
intake_batch=${BENCH_INTAKE_BATCH:-$meters}
tou=${BENCH_TOU:-1}
blocks=2
[ "$intake" = 1 ] && blocks=4
if [ "$tou" = 0 ]; then
	[ "$intake" = 1 ] && { echo "rating.sh: BENCH_TOU=0 does not go with BENCH_INTAKE=1" >&2; exit 2; }
	blocks=1
fi
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
-- site s has tariffs 2s - 1 (flat) and 2s (tou x tiers)
INSERT INTO prepay.site (site_id, name, time_zone) SELECT s, 'bench ' || s, 'Asia/Shanghai' FROM generate_series(1, $sites) s;
INSERT INTO prepay.tariff (site_id, tariff_id, name)
SELECT s, 2 * s - 1, 'flat' FROM generate_series(1, $sites) s UNION ALL
SELECT s, 2 * s, 'tou x tiers' FROM generate_series(1, $sites) s;
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price)
SELECT s, 2 * s - 1, '2026-01-01', 0.583 FROM generate_series(1, $sites) s;
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition)
SELECT s, 2 * s, '2026-01-01', '{
  "periods": {"sharp": 1.2, "peak": 0.95, "flat": 0.65, "valley": 0.32},
  "schedules": [{"switches": [["00:00", "valley"], ["00:40", "flat"], ["01:10", "peak"], ["01:50", "sharp"],
                              ["02:20", "peak"], ["04:00", "valley"], ["08:00", "peak"], ["11:00", "sharp"],
                              ["13:00", "peak"], ["18:00", "flat"], ["21:00", "peak"], ["23:00", "valley"]]}],
  "tiers": {"cycle": "monthly", "blocks": [{"upto": 0.5, "add": 0}, {"upto": 1, "add": 0.05}, {"add": 0.3}]}}'
  FROM generate_series(1, $sites) s;
-- meters 1..N on the flat tariff, N+1..2N on time-of-use x tiers (and,
-- with BENCH_INTAKE, 2N+1..3N and 3N+1..4N flat); each kind in S blocks of
-- consecutive ids, block s in site s
CREATE TEMP TABLE m AS
SELECT i, 1 + ((i - 1) % $meters) * $sites / $meters AS s, (i - 1) / $meters = 1 AS tou
  FROM generate_series(1, $blocks * $meters) i;
INSERT INTO prepay.account (site_id, account_id, code, name, tariff_id, balance)
SELECT s, i, 'A' || i, 'tenant ' || i, CASE WHEN tou THEN 2 * s ELSE 2 * s - 1 END, 0 FROM m;
INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id, channel, external_ref)
SELECT m.s, m.i, 'recharge', 100000, 100000, ac.actor_id, 'bench', 'open-' || m.i
  FROM m JOIN (SELECT s, prepay._actor_id(s) AS actor_id FROM generate_series(1, $sites) s) ac ON ac.s = m.s;
UPDATE prepay.account SET balance = 100000;
INSERT INTO prepay.meter (site_id, meter_id, code, account_id) SELECT s, i, 'M' || i, i FROM m;
-- baseline readings: the first reading of a meter is not charged
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) SELECT s, i, '2026-03-01 00:00+08', 1000 FROM m;
CREATE SCHEMA bench;
CREATE TABLE bench.reading_plain (LIKE prepay.reading INCLUDING ALL);
SQL
bare=${BENCH_BARE_WRITES:-0}
ledger_columns="site_id, account_id, kind, amount, balance_after, created_at, actor_id, meter_id, read_from, read_to, energy, exact_charge, pieces"
if [ "$bare" = 1 ]; then
	# the bare writes' tables: the same keys, checks, rows and storage
	# parameters (fill factors); pieces as text, because the trigger writes
	# the text it built without parsing it
	psql -d bench <<'SQL'
DO $$
DECLARE
    t text;
    options text[];
BEGIN
    FOREACH t IN ARRAY ARRAY['ledger', 'meter', 'account'] LOOP
        EXECUTE format('CREATE TABLE bench.%I (LIKE prepay.%I INCLUDING ALL)', 'bare_' || t, t);
        SELECT c.reloptions INTO options FROM pg_catalog.pg_class c WHERE c.oid = format('prepay.%I', t)::regclass;
        IF options IS NOT NULL THEN
            EXECUTE format('ALTER TABLE bench.%I SET (%s)', 'bare_' || t, array_to_string(options, ', '));
        END IF;
        EXECUTE format('INSERT INTO bench.%I SELECT * FROM prepay.%I', 'bare_' || t, t);
    END LOOP;
END $$;
ALTER TABLE bench.bare_ledger ALTER pieces TYPE text;
SQL
fi
if [ "$intake" = 1 ]; then
	psql -d bench <<SQL
CREATE ROLE bench_agent LOGIN IN ROLE prepay_agent, pg_read_server_files;
INSERT INTO prepay.agent_access (site_id, agent_id, grantee) SELECT s, 'bench', 'bench_agent' FROM generate_series(1, $sites) s;
SQL
fi
# one file per kind, interval and site: k.s.csv (flat) and tou-k.s.csv; with
# BENCH_INTAKE, intake-k.s.N.csv and insert-k.s.N.sql in statements of
# BENCH_INTAKE_BATCH rows (N = 1, 2, ...) and the scripts that load them
kinds="'', 'tou-'"
[ "$tou" = 0 ] && kinds="''"
[ "$intake" = 1 ] && kinds="'', 'tou-', 'intake-', 'insert-'"
for k in $(seq 1 "$intervals"); do
	for s in $(seq 1 "$sites"); do
		psql -d bench -At <<SQL
CREATE TEMP TABLE f AS
SELECT b.kind, CASE WHEN b.kind IN ('intake-', 'insert-')
                    THEN (row_number() OVER (PARTITION BY b.kind ORDER BY m.meter_id) - 1) / $intake_batch + 1
                    ELSE 1 END AS chunk,
       m.site_id, m.meter_id, timestamptz '2026-03-01 00:00+08' + interval '15 min' * $k AS read_at,
       1000 + $k * (0.05 + ((m.meter_id - 1) % $meters + 1) % 7 * 0.013) AS energy
  FROM prepay.meter m JOIN unnest(ARRAY[$kinds]) WITH ORDINALITY AS b (kind, block) ON (m.meter_id - 1) / $meters = b.block - 1
 WHERE m.site_id = $s;
DO \$\$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT DISTINCT kind, chunk FROM f WHERE kind IN ('', 'tou-', 'intake-') ORDER BY 1, 2 LOOP
        EXECUTE format('COPY (SELECT site_id, meter_id, read_at, energy FROM f WHERE kind = %L AND chunk = %s ORDER BY meter_id) TO %L (FORMAT csv)',
                       c.kind, c.chunk, '$data/' || c.kind || '$k.$s' || CASE WHEN c.kind = 'intake-' THEN '.' || c.chunk ELSE '' END || '.csv');
    END LOOP;
END \$\$;
COPY (SELECT format('COPY prepay.reading_intake (site_id, meter_id, read_at, energy) FROM %L (FORMAT csv);',
                    '$data/intake-$k.$s.' || chunk || '.csv')
        FROM f WHERE kind = 'intake-' GROUP BY chunk ORDER BY chunk) TO '$data/intake-$k.$s.sql';
COPY (SELECT format('INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley, power, relay_state) '
                    'SELECT * FROM ROWS FROM (pg_catalog.unnest(%L::integer[]), pg_catalog.unnest(%L::bigint[]), '
                    'pg_catalog.unnest(%L::timestamptz[]), pg_catalog.unnest(%L::numeric[]), pg_catalog.unnest(%L::numeric[]), '
                    'pg_catalog.unnest(%L::numeric[]), pg_catalog.unnest(%L::numeric[]), pg_catalog.unnest(%L::numeric[]), '
                    'pg_catalog.unnest(%L::numeric[]), pg_catalog.unnest(%L::prepay.relay_state[]));',
                    array_agg(site_id ORDER BY meter_id), array_agg(meter_id ORDER BY meter_id),
                    array_agg(read_at ORDER BY meter_id), array_agg(energy ORDER BY meter_id),
                    array_agg(NULL::numeric), array_agg(NULL::numeric), array_agg(NULL::numeric), array_agg(NULL::numeric),
                    array_agg(NULL::numeric), array_agg(NULL::text))
        FROM f WHERE kind = 'insert-' GROUP BY chunk ORDER BY chunk) TO '$data/insert-$k.$s.sql' (FORMAT text);
SQL
	done
done
relaxed=${BENCH_RELAX:-}
for relax in ${relaxed//,/ }; do
	case $relax in
	duplicate-probe) sql="ALTER TABLE prepay.reading DISABLE TRIGGER reading_skip_duplicate" ;;
	*) echo "rating.sh: unknown BENCH_RELAX item $relax" >&2; exit 2 ;;
	esac
	echo "relaxed (not the product): $sql"
	psql -d bench -c "$sql"
done
# BENCH_MONTHS=1: prepay.reading partitioned by month with pg_partman, as
# in production once prepay.partition_by_month() ran (docs/OPERATIONS.md);
# otherwise every reading goes to the default partition, as in a fresh
# install
if [ "${BENCH_MONTHS:-0}" = 1 ]; then
	psql -d bench -c "CREATE SCHEMA partman" -c "CREATE EXTENSION pg_partman SCHEMA partman" \
		-c "SELECT string_agg(partition_name::text, ' ' ORDER BY from_time) AS months FROM prepay.partition_by_month()"
fi
psql -d bench -c "VACUUM ANALYZE" -c "CHECKPOINT"

now_ns() { date +%s%N; }
# copy_sites TABLE FILE_PREFIX: the files PREFIX.1.csv .. PREFIX.S.csv into
# TABLE, one COPY per site, all at once
copy_sites() {
	local pids=() s
	for s in $(seq 1 "$sites"); do
		psql -d bench -c "COPY $1 (site_id, meter_id, read_at, energy) FROM '$2.$s.csv' (FORMAT csv)" &
		pids+=($!)
	done
	for s in "${pids[@]}"; do wait "$s"; done
}
# agent_sites PREFIX: the scripts PREFIX.1.sql .. PREFIX.S.sql as bench_agent,
# one session per site, all at once
agent_sites() {
	local pids=() s
	for s in $(seq 1 "$sites"); do
		psql -U bench_agent -d bench -f "$1.$s.sql" &
		pids+=($!)
	done
	for s in "${pids[@]}"; do wait "$s"; done
}
# bare_writes K: the bare writes of interval K's flat readings by SQL (see
# BENCH_BARE_WRITES above); adds to ledger_ns and update_ns
bare_writes() {
	local at="timestamptz '2026-03-01 00:00+08' + interval '15 min' * $1" t0 t1 t2
	psql -d bench -c "COPY (SELECT $ledger_columns FROM prepay.ledger
	                         WHERE kind = 'consumption' AND read_to = $at AND meter_id <= $meters)
	                  TO '$data/ledger-$1.bin' (FORMAT binary)"
	t0=$(now_ns)
	psql -d bench -c "COPY bench.bare_ledger ($ledger_columns) FROM '$data/ledger-$1.bin' (FORMAT binary)"
	t1=$(now_ns)
	psql -d bench -c "UPDATE bench.bare_meter SET last_read_at = $at, last_energy = last_energy + 0.05,
	                         charge_carry = 0.000000001 WHERE meter_id <= $meters" \
		-c "UPDATE bench.bare_account SET balance = balance - 0.03 WHERE account_id <= $meters"
	t2=$(now_ns)
	ledger_ns=$((ledger_ns + t1 - t0))
	update_ns=$((update_ns + t2 - t1))
}
plain_ns=0
rated_ns=0
tou_ns=0
ledger_ns=0
update_ns=0
intake_ns=0
insert_ns=0
for k in $(seq 1 "$intervals"); do
	t0=$(now_ns)
	copy_sites bench.reading_plain "$data/$k"
	t1=$(now_ns)
	copy_sites prepay.reading "$data/$k"
	t2=$(now_ns)
	[ "$tou" = 0 ] || copy_sites prepay.reading "$data/tou-$k"
	t3=$(now_ns)
	plain_ns=$((plain_ns + t1 - t0))
	rated_ns=$((rated_ns + t2 - t1))
	tou_ns=$((tou_ns + t3 - t2))
	if [ "$intake" = 1 ]; then
		agent_sites "$data/intake-$k"
		t4=$(now_ns)
		agent_sites "$data/insert-$k"
		t5=$(now_ns)
		intake_ns=$((intake_ns + t4 - t3))
		insert_ns=$((insert_ns + t5 - t4))
	fi
	if [ "$bare" = 1 ]; then bare_writes "$k"; fi
done

# the rollup deltas the batches appended are folded later (pg_cron, every
# minute in production): time that deferred work too, once for the run
pending=$(psql -d bench -At -c "SELECT count(*) FROM prepay.energy_pending")
t0=$(now_ns)
psql -d bench -c "SELECT prepay.fold_rollups()" >/dev/null
fold_ns=$(($(now_ns) - t0))

rows=$((meters * intervals))
psql -d bench -At <<SQL
WITH from_ledger AS (
    SELECT f.* FROM generate_series(1, $sites) s, prepay.energy_from_ledger(s, '2026-01-01', '2027-01-01') f
     WHERE f.meter_id % 1000 = 7)
SELECT 'rollups equal the ledger: ' || (NOT EXISTS (
    (SELECT * FROM prepay.energy_day WHERE meter_id % 1000 = 7 EXCEPT SELECT * FROM from_ledger)
    UNION ALL
    (SELECT * FROM from_ledger EXCEPT SELECT * FROM prepay.energy_day WHERE meter_id % 1000 = 7)))::text
    || ' (a sample of meters)';
SELECT 'ledger entries: ' || count(*) FILTER (WHERE kind = 'consumption') FROM prepay.ledger;
SELECT 'tou x tier pieces: ' || count(*) || ' in ' || count(DISTINCT l.entry_id) || ' entries, '
       || count(*) FILTER (WHERE p.tier > 1) || ' above tier 1'
  FROM prepay.ledger l LEFT JOIN prepay.charge_pricing c ON c.site_id = l.site_id AND c.pricing_id = l.pricing_id,
       prepay._pieces(prepay._pricing_record(l.pieces, c.tariff_id, c.multiplier, c.version_from, c.period, l.read_from, l.read_to, l.energy, l.exact_charge)) p
 WHERE l.kind = 'consumption' AND l.meter_id > $meters;
SELECT 'quarantined readings: ' || count(*) FROM prepay.reading WHERE quarantine_reason IS NOT NULL;
SELECT 'ledger check problems: ' || count(*) FROM prepay.check_ledger();
SQL
if [ "$intake" = 1 ]; then
	psql -d bench -At -c "SELECT 'intake: consumption entries ' || count(*) FILTER (WHERE meter_id BETWEEN 2 * $meters + 1 AND 3 * $meters)
	                             || ' (intake COPY), ' || count(*) FILTER (WHERE meter_id > 3 * $meters) || ' (agent INSERT), '
	                             || count(*) FILTER (WHERE meter_id <= $meters) || ' (superuser COPY); rows left in the intake: '
	                             || (SELECT count(*) FROM prepay.reading_intake)
	                        FROM prepay.ledger WHERE kind = 'consumption'"
fi
if [ "$bare" = 1 ]; then
	psql -d bench -At -c "SELECT 'bare writes, ledger rows loaded: ' || count(*) || ' (the flat readings: ' || $rows || ')'
	                        FROM bench.bare_ledger WHERE kind = 'consumption'" \
		-c "SELECT 'bare writes, storage parameters: ' || string_agg(c.relname || coalesce(' ' || c.reloptions::text, ''), ', ' ORDER BY c.relname)
		      FROM pg_catalog.pg_class c WHERE c.oid IN ('bench.bare_meter'::regclass, 'bench.bare_account'::regclass)"
fi
# what a rated reading costs on disk, after VACUUM: heap, TOAST and every
# index of the tables a rated reading writes a row to (a partitioned table
# with all its partitions), over the rated readings (the consumption
# entries); the baseline readings and the opening recharges (with their
# payment references) are counted in, about 1 % at 96 intervals
storage_tables="'prepay.reading', 'prepay.ledger', 'prepay.charge_pricing', 'prepay.actor', 'prepay.payment_reference', 'prepay.reversed_entry'"
psql -d bench -c "VACUUM prepay.reading, prepay.ledger"
if [ "${BENCH_REINDEX:-0}" = 1 ]; then
	echo "indexes rebuilt (a closed month's figure, not the live table's)"
	psql -d bench -c "REINDEX TABLE prepay.reading" -c "REINDEX TABLE prepay.ledger"
fi
psql -d bench -At <<SQL
CREATE TEMP VIEW t AS
    SELECT c.oid::regclass AS name, sum(pg_catalog.pg_relation_size(p.relid)) AS heap,
           sum(pg_catalog.pg_total_relation_size(p.relid) - pg_catalog.pg_relation_size(p.relid)
               - pg_catalog.pg_indexes_size(p.relid)) AS toast, sum(pg_catalog.pg_indexes_size(p.relid)) AS indexes
      FROM pg_catalog.pg_class c
     CROSS JOIN LATERAL (SELECT x.relid FROM pg_catalog.pg_partition_tree(c.oid) x UNION SELECT c.oid) p
     WHERE c.oid::regclass::text IN ($storage_tables)
     GROUP BY c.oid;
CREATE TEMP TABLE n AS SELECT count(*) AS rated FROM prepay.ledger WHERE kind = 'consumption';
SELECT 'storage, ' || t.name || ' per rated reading: heap ' || round(t.heap::numeric / n.rated, 1)
       || ', toast ' || round(t.toast::numeric / n.rated, 1) || ', indexes ' || round(t.indexes::numeric / n.rated, 1)
       || ' (' || (SELECT string_agg(i.indexrelid::regclass || ' '
                                     || round((SELECT sum(pg_catalog.pg_relation_size(x.relid))
                                                 FROM (SELECT y.relid FROM pg_catalog.pg_partition_tree(i.indexrelid) y UNION SELECT i.indexrelid) x)
                                              / n.rated, 1), ', ' ORDER BY i.indexrelid::regclass::text)
                     FROM pg_catalog.pg_index i WHERE i.indrelid = t.name) || ')'
  FROM t, n ORDER BY t.name::text;
SELECT 'bench storage: readings=' || n.rated
       || ' bytes_per_reading=' || round(sum(t.heap + t.toast + t.indexes) / n.rated)
       || ' ledger_bytes_per_entry=' || round((SELECT sum(pg_catalog.pg_total_relation_size(p.relid))
                                                 FROM (SELECT x.relid FROM pg_catalog.pg_partition_tree('prepay.ledger') x
                                                       UNION SELECT 'prepay.ledger'::regclass) p)
                                               / (SELECT count(*) FROM prepay.ledger))
  FROM t, n GROUP BY n.rated;
SQL
awk -v rows="$rows" -v p="$plain_ns" -v r="$rated_ns" -v t="$tou_ns" -v m="$meters" -v k="$intervals" \
	-v f="$fold_ns" -v d="$pending" -v sites="$sites" -v bare="$bare" -v l="$ledger_ns" -v u="$update_ns" \
	-v intake="$intake" -v i="$intake_ns" -v n="$insert_ns" -v batch="$intake_batch" 'BEGIN {
	printf "readings: %d meters x %d intervals = %d rows per kind, one COPY per interval", m, k, rows
	printf (sites > 1 ? " and site, %d sites at once\n" : "\n"), sites
	printf "plain COPY (no triggers): %.2f s\n", p / 1e9
	printf "rated COPY, flat tariff: %.2f s\n", r / 1e9
	printf "rated COPY, 4-period TOU x 3 tiers: %.2f s\n", t / 1e9
	printf "fold of the rollup deltas of both (deferred, once): %d rows in %.2f s\n", d, f / 1e9
	if (bare == 1) {
		printf "bare writes, the same ledger rows by binary COPY: %.2f s\n", l / 1e9
		printf "bare writes, meter and account row versions by UPDATE: %.2f s\n", u / 1e9
		printf "bench bare writes: reading_and_ledger_per_s=%d ratio=%.3f with_updates_per_s=%d ratio=%.3f\n",
			rows / ((p + l) / 1e9), p / (p + l), rows / ((p + l + u) / 1e9), p / (p + l + u)
	}
	if (intake == 1) {
		printf "intake COPY as bench_agent (prepay.reading_intake, %d rows a statement): %.2f s\n", batch, i / 1e9
		printf "agent INSERT as bench_agent (unnest of arrays, %d rows a statement): %.2f s\n", batch, n / 1e9
		printf "bench intake: superuser_copy_per_s=%d intake_copy_per_s=%d agent_insert_per_s=%d batch=%d\n",
			rows / (r / 1e9), rows / (i / 1e9), rows / (n / 1e9), batch
	}
	printf "bench rating+fold: flat and TOU readings with their fold, per s=%d\n", 2 * rows / ((r + t + f) / 1e9)
	printf "bench rating: rated_per_s=%d copy_per_s=%d ratio=%.3f\n", rows / (r / 1e9), rows / (p / 1e9), p / r
	printf "bench tariff: flat_per_s=%d tou_tier_per_s=%d ratio=%.3f\n", rows / (r / 1e9), (t > 0 ? rows / (t / 1e9) : 0), (t > 0 ? r / t : 0)
}'
