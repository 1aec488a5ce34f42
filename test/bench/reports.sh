#!/usr/bin/env bash
# test/bench/reports.sh WORKDIR: the reports benchmark (a benchmark, not a
# test: it asserts nothing about time).
#
# Builds a month of 15-minute readings for METERS meters (default 10,000:
# two sites of 5,000 rooms, 30 days x 96 readings = 28.8M readings and as
# many consumption ledger entries priced with a 4-period time-of-use x
# 3-tier tariff) and times, in the same run:
#   - the monthly energy-and-cost report for every account (per account,
#     period and tier) from the rollups (prepay.energy_account_monthly);
#   - the same report computed from the raw data (every consumption entry
#     of the month and its pricing record, prepay.energy_from_ledger);
#   - the room status board of one 5,000-room site (prepay.room_status_at).
# The two reports are compared row by row.  The last line is
#   bench reports: rollup_ms=X raw_ms=Y ratio=R board_ms=Z
#
# How the data is made (rating 28.8M readings through the trigger would take
# most of an hour on the benchmark machine): TEMPLATES meters (default 50) get
# their month of readings through the real rating trigger, one INSERT per day,
# which writes their ledger entries and rollups.  Every other meter belongs
# to one of the template meters' consumption classes (meter i behaves like
# template i mod TEMPLATES): its readings are copied from its template with
# triggers off (session_replication_role = replica, as in a restore), and its
# ledger entries are copied from the template's entries (same amounts,
# pricing records and balance chain, on its own account and meter), one
# INSERT per day.  Copied entries bypass the rating batch that keeps the
# rollups, so prepay.rebuild_rollups then recomputes every site's rollups
# from the ledger (prepay.energy_from_ledger, the rule the rating batch
# applies in C).  The reports do not depend on how many distinct load
# shapes there are; they read as many rows as with 10,000 different ones.
#
# Run with `make bench` (all benchmarks) or `test/run.sh test/bench/reports.sh`;
# BENCH_REPORT_METERS, BENCH_REPORT_DAYS and BENCH_REPORT_TEMPLATES change the size.
set -euo pipefail
work=$1
meters=${BENCH_REPORT_METERS:-10000}
days=${BENCH_REPORT_DAYS:-30}
templates=${BENCH_REPORT_TEMPLATES:-50}
half=$((meters / 2))
cd "$work"
. test/lib/cluster.sh
cluster_start "$work/cluster" "shared_buffers = 2GB" "work_mem = 64MB" "max_wal_size = 16GB" \
	"checkpoint_timeout = 30min" "synchronous_commit = off" "fsync = off" "full_page_writes = off" || exit 1
trap cluster_stop EXIT
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
now_ns() { date +%s%N; }
say() { echo "$(date +%H:%M:%S) $*"; }

psql -d postgres -c "CREATE DATABASE bench"
say "setup: 2 sites x $half rooms, $templates template meters, $days days"
psql -d bench <<SQL
CREATE EXTENSION prepay;
SET timezone = 'Asia/Shanghai';
INSERT INTO prepay.site (name, time_zone) VALUES ('north', 'Asia/Shanghai'), ('south', 'Asia/Shanghai');
INSERT INTO prepay.tariff (site_id, tariff_id, name) VALUES (1, 1, 'tou x tiers'), (2, 2, 'tou x tiers');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition)
SELECT s, s, '2026-01-01 00:00+08', '{
  "periods": {"sharp": 1.2, "peak": 0.95, "flat": 0.65, "valley": 0.32},
  "schedules": [{"switches": [["00:00", "valley"], ["08:00", "peak"], ["11:00", "sharp"], ["13:00", "peak"],
                              ["18:00", "flat"], ["21:00", "peak"], ["23:00", "valley"]]}],
  "tiers": {"cycle": "monthly", "blocks": [{"upto": 200, "add": 0}, {"upto": 400, "add": 0.05}, {"add": 0.3}]}}'
  FROM generate_series(1, 2) s;
INSERT INTO prepay.gateway (site_id, gateway_id, name, host)
SELECT s, (s - 1) * 100 + g, 'gw-' || g, '10.0.' || s || '.' || g FROM generate_series(1, 2) s, generate_series(1, 100) g;
UPDATE prepay.gateway SET lost_since = '2026-10-30 09:00+08' WHERE gateway_id IN (7, 107);
-- meters 1..N/2 at site 1, the rest at site 2; account i owns meter i
INSERT INTO prepay.account (site_id, account_id, code, name, tariff_id, opened_at)
SELECT CASE WHEN i <= $half THEN 1 ELSE 2 END, i, 'A' || i, 'tenant ' || i,
       CASE WHEN i <= $half THEN 1 ELSE 2 END, '2026-09-01 00:00+08'
  FROM generate_series(1, $meters) i;
INSERT INTO prepay.meter (site_id, meter_id, code, account_id, building, floor, room, gateway_id, unit_id)
SELECT CASE WHEN i <= $half THEN 1 ELSE 2 END, i, 'M' || i, i, 'B' || (i % 10), ((i / 10) % 20)::text, i::text,
       CASE WHEN i <= $half THEN 1 + i % 100 ELSE 101 + i % 100 END, 1 + (i / 100) % 247
  FROM generate_series(1, $meters) i;
UPDATE prepay.meter SET lost_since = '2026-10-29 22:00+08' WHERE meter_id % 97 = 0;
-- opening recharges (through the ledger trigger like any payment)
INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id, channel, external_ref, created_at)
SELECT a.site_id, a.account_id, 'recharge', 5000, 5000, ac.actor_id, 'bank', 'open-' || a.account_id, '2026-09-30 12:00+08'
  FROM prepay.account a JOIN (SELECT s.site_id, prepay._actor_id(s.site_id) AS actor_id FROM prepay.site s) ac ON ac.site_id = a.site_id
 ORDER BY a.account_id;
UPDATE prepay.account SET balance = 5000;

-- the template meters' consumption: one reading every 15 minutes, twice the load by day,
-- a class-dependent base and a deterministic wobble
CREATE SCHEMA bench;
CREATE TABLE bench.template_reading AS
SELECT c AS class, t AS read_at,
       1000 + sum(((5 + c % 9 + (k * 7 + c * 13) % 11)
                   * CASE WHEN extract(hour FROM t) BETWEEN 8 AND 21 THEN 2 ELSE 1 END)::numeric / 100)
                  OVER (PARTITION BY c ORDER BY k) AS energy
  FROM generate_series(0, $templates - 1) c,
       generate_series(1, 96 * $days) k,
       LATERAL (SELECT timestamptz '2026-10-01 00:00+08' + interval '15 minutes' * k AS t) x;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
SELECT 1, c + 1, '2026-10-01 00:00+08', 1000 FROM generate_series(0, $templates - 1) c;
SQL

say "rating the template meters through the rating trigger, one INSERT per day"
t0=$(now_ns)
for d in $(seq 0 $((days - 1))); do
	psql -d bench -c "INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
	                  SELECT 1, class + 1, read_at, energy FROM bench.template_reading
	                   WHERE read_at > timestamptz '2026-10-01 00:00+08' + interval '1 day' * $d
	                     AND read_at <= timestamptz '2026-10-01 00:00+08' + interval '1 day' * ($d + 1)"
done
t1=$(now_ns)
psql -d bench -At -c "SELECT 'template readings rated: ' || count(*) || ' in ' || round(($t1 - $t0) / 1e9, 1) || ' s'
                        FROM prepay.ledger WHERE kind = 'consumption'"

say "copying the readings of the other meters (triggers off)"
t0=$(now_ns)
psql -d bench <<SQL
SET session_replication_role = replica;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, received_after_seconds)
SELECT m.site_id, m.meter_id, t.read_at, t.energy, 0
  FROM prepay.meter m JOIN bench.template_reading t ON t.class = (m.meter_id - 1) % $templates
 WHERE m.meter_id > $templates;
INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, received_after_seconds)
SELECT m.site_id, m.meter_id, '2026-10-01 00:00+08', 1000, 0
  FROM prepay.meter m WHERE m.meter_id > $templates;
SQL
t1=$(now_ns)
psql -d bench -At -c "SELECT 'readings: ' || count(*) || ' (' || pg_size_pretty(pg_total_relation_size('prepay.reading'))
                        || '), copied in ' || round(($t1 - $t0) / 1e9, 1) || ' s' FROM prepay.reading"

say "copying the ledger entries of the other meters, one INSERT per day"
t0=$(now_ns)
for d in $(seq 0 $((days - 1))); do
	psql -d bench -c "INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, created_at, actor_id,
	                                            meter_id, read_from, read_to, energy, exact_charge, pieces, pricing_id)
	                  SELECT m.site_id, m.account_id, 'consumption', t.amount, t.balance_after, t.created_at, ac.actor_id,
	                         m.meter_id, t.read_from, t.read_to, t.energy, t.exact_charge, t.pieces, t.pricing_id
	                    FROM prepay.ledger t
	                    JOIN prepay.meter m ON (m.meter_id - 1) % $templates = t.meter_id - 1 AND m.meter_id > $templates
	                    JOIN prepay.actor ac ON ac.site_id = m.site_id AND ac.login = SESSION_USER
	                   WHERE t.site_id = 1 AND t.kind = 'consumption' AND t.meter_id <= $templates
	                     AND t.read_to > timestamptz '2026-10-01 00:00+08' + interval '1 day' * $d
	                     AND t.read_to <= timestamptz '2026-10-01 00:00+08' + interval '1 day' * ($d + 1)
	                   ORDER BY m.meter_id, t.entry_id"
done
t1=$(now_ns)
psql -d bench <<SQL
UPDATE prepay.account a SET balance = t.balance, alarm_level = t.alarm_level
  FROM prepay.meter m, prepay.account t
 WHERE m.site_id = a.site_id AND m.account_id = a.account_id AND m.meter_id > $templates
   AND t.site_id = 1 AND t.account_id = (m.meter_id - 1) % $templates + 1;
UPDATE prepay.meter m SET last_read_at = t.last_read_at, last_energy = t.last_energy, cycle_start = t.cycle_start,
       cycle_used = t.cycle_used, charge_carry = t.charge_carry, relay_state = 'closed', relay_state_at = t.last_read_at
  FROM prepay.meter t
 WHERE m.meter_id > $templates AND t.site_id = 1 AND t.meter_id = (m.meter_id - 1) % $templates + 1;
SQL
say "rebuilding the rollups from the ledger"
t2=$(now_ns)
psql -d bench -c "SELECT s.site_id, r.* FROM prepay.site s, prepay.rebuild_rollups(s.site_id) r"
t3=$(now_ns)
psql -d bench -c "VACUUM ANALYZE" -c "CHECKPOINT"
psql -d bench -At <<SQL
SELECT 'ledger: ' || count(*) || ' consumption entries (' || pg_size_pretty(pg_total_relation_size('prepay.ledger'))
       || '), copied in ' || round(($t1 - $t0) / 1e9, 1) || ' s, rolled up by rebuild_rollups in '
       || round(($t3 - $t2) / 1e9, 1) || ' s'
  FROM prepay.ledger WHERE kind = 'consumption';
SELECT 'rollups: energy_day ' || (SELECT count(*) FROM prepay.energy_day) || ' rows, energy_month '
       || (SELECT count(*) FROM prepay.energy_month) || ' rows';
SELECT 'ledger check problems (sample of 200 accounts): ' || count(*)
  FROM prepay.check_ledger() WHERE account_id % ($meters / 200) = 0;
SQL

say "timing"
psql -d bench -At <<SQL
SET timezone = 'Asia/Shanghai';
CREATE FUNCTION bench.ms(prep text, q text, runs integer) RETURNS numeric LANGUAGE plpgsql AS \$\$
DECLARE
    best numeric;
    t0 timestamptz;
    ms numeric;
BEGIN
    FOR i IN 1 .. runs LOOP
        IF prep IS NOT NULL THEN
            EXECUTE prep;
        END IF;
        t0 := clock_timestamp();
        EXECUTE q;
        ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
        best := least(best, ms);
    END LOOP;
    RETURN round(best, 1);
END \$\$;
CREATE TABLE bench.figures (what text PRIMARY KEY, ms numeric);
-- the monthly energy-and-cost report of every account, from the rollups
CREATE TEMP TABLE rollup_report AS SELECT * FROM prepay.energy_account_monthly WITH NO DATA;
CREATE TEMP TABLE raw_report AS SELECT * FROM prepay.energy_account_monthly WITH NO DATA;
INSERT INTO bench.figures SELECT 'rollup', bench.ms('TRUNCATE rollup_report', \$q\$
    INSERT INTO rollup_report SELECT * FROM prepay.energy_account_monthly WHERE month = '2026-10-01'\$q\$, 5);
-- the same report from the raw data
INSERT INTO bench.figures SELECT 'raw', bench.ms('TRUNCATE raw_report', \$q\$
    INSERT INTO raw_report
    SELECT e.site_id, '2026-10-01'::date, e.account_id, a.code, a.name, e.period, e.tier,
           sum(e.energy), sum(e.cost), sum(e.charged), sum(e.charges)
      FROM prepay.site s
     CROSS JOIN LATERAL prepay.energy_from_ledger(s.site_id, '2026-10-01', '2026-11-01') AS e
      JOIN prepay.account a ON a.site_id = e.site_id AND a.account_id = e.account_id
     GROUP BY e.site_id, e.account_id, a.code, a.name, e.period, e.tier\$q\$, 1);
-- the room status board of a 5,000-room site, at noon on the last day of data
INSERT INTO bench.figures SELECT 'board', bench.ms(NULL, \$q\$
    SELECT count(*), sum(today_energy), sum(today_cost), sum(balance), count(*) FILTER (WHERE online),
            max(alarm_colour), max(last_read_at)
       FROM prepay.room_status_at(1, '2026-10-30 12:00+08')\$q\$, 5);
INSERT INTO bench.figures SELECT 'board view', bench.ms(NULL, \$q\$
    SELECT count(*), sum(today_energy), sum(balance), max(alarm_colour) FROM prepay.room_status WHERE site_id = 1\$q\$, 5);
SELECT 'report rows: ' || (SELECT count(*) FROM rollup_report) || ' from the rollups, '
       || (SELECT count(*) FROM raw_report) || ' from the raw data, '
       || (SELECT count(*) FROM ((TABLE rollup_report EXCEPT TABLE raw_report)
                                 UNION ALL (TABLE raw_report EXCEPT TABLE rollup_report)) d) || ' differ';
SELECT 'board rows: ' || count(*) || ', online ' || count(*) FILTER (WHERE online) || ', today '
       || sum(today_energy) || ' kWh'
  FROM prepay.room_status_at(1, '2026-10-30 12:00+08');
SELECT what || ': ' || ms || ' ms' FROM bench.figures ORDER BY what;
SELECT pg_catalog.format('bench reports: rollup_ms=%s raw_ms=%s ratio=%s board_ms=%s',
                         r.ms, w.ms, round(w.ms / greatest(r.ms, 0.1)), b.ms)
  FROM bench.figures r, bench.figures w, bench.figures b
 WHERE r.what = 'rollup' AND w.what = 'raw' AND b.what = 'board';
SQL
