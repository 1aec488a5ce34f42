#!/usr/bin/env bash
# test/bench/notify.sh WORKDIR: the notification delivery benchmark (a
# benchmark, not a test: it asserts nothing about time).
#
# A throwaway database with one site, ACCOUNTS accounts and a webhook
# channel to the local receiver (test/notify_receiver.py, which verifies
# every signature and logs every request), and prepay-agent delivering.
# Measures:
#   throughput  MESSAGES notifications written before the agent starts,
#               divided by the time from the agent's start to the last one
#               delivered (the claim, the signed POST, the report; the
#               receiver, a Python thread per request, is part of it);
#   latency     created-to-delivered (both on the database's clock) of
#               RATE notifications a second written one per transaction for
#               SECONDS seconds while the agent runs idle: p50 and p99.
# The last line is machine-readable:
#   bench notify: messages=N throughput_per_s=X latency_p50_ms=A latency_p99_ms=B
# BENCH_MESSAGES, BENCH_RATE, BENCH_SECONDS override the size.  Run with
# `make bench`.
set -euo pipefail
work=$1
messages=${BENCH_MESSAGES:-2000}
rate=${BENCH_RATE:-20}
seconds=${BENCH_SECONDS:-10}
accounts=100
cd "$work"

agent=$work/agent/prepay-agent
if [ ! -x "$agent" ] || [ ! -x /usr/bin/python3 ]; then
	echo "bench notify: skipped (agent/prepay-agent or /usr/bin/python3 missing)"
	exit 0
fi

. test/lib/cluster.sh
. test/lib/ports.sh
cluster_start "$work/cluster" "synchronous_commit = off" || exit 1
. test/lib/background.sh
psql() { command psql -X -q -v ON_ERROR_STOP=1 -d bench "$@"; }
receiver=$(free_port 1)
metrics=$(free_port 1)

command psql -X -q -d postgres -c "CREATE DATABASE bench"
psql <<SQL
CREATE EXTENSION prepay;
INSERT INTO prepay.site (name) VALUES ('bench');
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-01-01', 1.000);
SELECT prepay.open_account(1, 'A' || i, 'Tenant ' || i, 1) FROM generate_series(1, $accounts) i;
INSERT INTO prepay.notify_channel (site_id, channel, url, max_per_minute, lease)
VALUES (1, 'webhook', 'http://127.0.0.1:$receiver/hook', 1000000, '60 seconds');
INSERT INTO prepay.notify_secret (site_id, channel, secret) VALUES (1, 'webhook', 'bench-secret');
INSERT INTO prepay.notification (site_id, account_id, kind, balance, message)
SELECT 1, i % $accounts + 1, 'bench', 10.00, 'message ' || i FROM generate_series(1, $messages) i;
SQL

/usr/bin/python3 test/notify_receiver.py --port "$receiver" --secret bench-secret --log "$work/receiver.log" \
	>"$work/receiver.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/receiver.out" 2>/dev/null && break; sleep 0.1; done

# ---- throughput: drain the backlog
t0=$(now_ms)
"$agent" --conninfo "host=$PGHOST port=$PGPORT dbname=bench user=postgres" --agent-id bench \
	--spool-dir "$work/spool" --metrics "127.0.0.1:$metrics" --log-level warning --notifications deliver \
	>"$work/agent.log" 2>&1 &
pids+=($!)
while [ "$(psql -At -c "SELECT count(*) FROM prepay.notification_delivery WHERE delivered_at IS NULL")" != 0 ]; do
	sleep 0.05
done
t1=$(now_ms)
throughput=$(awk -v n="$messages" -v ms=$((t1 - t0)) 'BEGIN { printf "%.0f", n * 1000 / ms }')
echo "throughput: $messages webhooks delivered in $((t1 - t0)) ms"

# ---- latency: a steady trickle, one notification per transaction
mark=$(psql -At -c "SELECT max(notification_id) FROM prepay.notification")
total=$((rate * seconds))
for i in $(seq "$total"); do
	# written and announced as the extension's own producers do
	echo "WITH n AS (INSERT INTO prepay.notification (site_id, account_id, kind, balance, message) VALUES (1, $((i % accounts + 1)), 'bench', 10.00, 'latency $i') RETURNING site_id, notification_id) SELECT pg_notify('prepay_notification', site_id || '/' || notification_id) FROM n;"
	echo "SELECT pg_sleep($(awk -v r="$rate" 'BEGIN { printf "%.4f", 1 / r }'));"
done | psql >/dev/null
while [ "$(psql -At -c "SELECT count(*) FROM prepay.notification_delivery WHERE delivered_at IS NULL")" != 0 ]; do
	sleep 0.05
done
read -r p50 p99 < <(psql -At -F ' ' -c "
	SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)), round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))
	  FROM (SELECT extract(epoch FROM latency) * 1000 AS ms FROM prepay.notification_delivery_status
	         WHERE notification_id > $mark) l")
bad=$(/usr/bin/python3 -c '
import json, sys
done = [e for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "done"]
print(sum(1 for e in done if e["sig"] != "ok" or e["dup"]), len(done))' "$work/receiver.log")
echo "latency: $total webhooks at $rate/s: p50 ${p50} ms, p99 ${p99} ms; receiver: bad signatures or duplicates, requests: $bad"
echo "bench notify: messages=$messages throughput_per_s=$throughput latency_p50_ms=$p50 latency_p99_ms=$p99"
