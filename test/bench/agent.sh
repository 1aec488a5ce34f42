#!/usr/bin/env bash
# test/bench/agent.sh WORKDIR: the agent benchmark (a benchmark, not a test:
# it asserts nothing about time).
#
# GATEWAYS Modbus-TCP gateways of METERS_PER_GATEWAY ddsy1352 meters each in
# the simulator (test/sim/prepay-sim), the same gateways and meters in a
# throwaway database, and prepay-agent polling them all.  Measures:
#   sweep_s   first to last energy read of the agent's first sweep, from the
#             simulator's read history (every meter read once);
#   floor_s   the simulator's own service time: one client reading every
#             meter of one gateway sequentially (best of 5); a perfect agent
#             polling all gateways concurrently needs about this long;
#   restore   recharge-to-relay-closed latency, p50 and p99, over SAMPLES
#             tripped accounts recharged one at a time (relay seen closed in
#             the simulator);
#   rss_mb    the agent's peak resident memory (VmHWM) after the run.
# The last line is machine-readable:
#   bench agent: meters=N sweep_s=X floor_s=Y restore_p50_ms=A restore_p99_ms=B rss_mb=C
# BENCH_GATEWAYS, BENCH_METERS_PER_GATEWAY, BENCH_SAMPLES and BENCH_POLL_S
# override the size.  Run with `make bench`.
set -euo pipefail
work=$1
gateways=${BENCH_GATEWAYS:-100}
per_gw=${BENCH_METERS_PER_GATEWAY:-100}
samples=${BENCH_SAMPLES:-20}
poll_s=${BENCH_POLL_S:-30}
meters=$((gateways * per_gw))
[ "$samples" -gt "$per_gw" ] && samples=$per_gw
cd "$work"

agent=$work/agent/prepay-agent
if [ ! -x "$agent" ]; then
	echo "bench agent: skipped (agent/prepay-agent is not built on this branch)"
	exit 0
fi

. test/lib/cluster.sh
. test/lib/ports.sh
cluster_start "$work/cluster" "shared_buffers = 512MB" "synchronous_commit = off" \
	"max_wal_size = 4GB" || exit 1
. test/lib/background.sh
psql() { command psql -X -q -v ON_ERROR_STOP=1 -d bench "$@"; }
base=$(free_port "$gateways")
control=$(free_port 1)
metrics=$(free_port 1)
speedup=3600 # 1 kW for one real second = 1 kWh

# ---- the database: gateways and meters; the first SAMPLES accounts of
# gateway 0 start at zero (they trip on their first charge), the rest are rich
command psql -X -q -d postgres -c "CREATE DATABASE bench"
psql <<SQL
CREATE EXTENSION prepay;
INSERT INTO prepay.site (name, time_zone) VALUES ('bench', 'Asia/Shanghai');
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
INSERT INTO prepay.tariff_version VALUES (1, 1, '2026-01-01', 1.000);
INSERT INTO prepay.gateway (site_id, gateway_id, name, transport, host, port, agent_id, poll_interval)
SELECT 1, g + 1, 'gw' || g, 'tcp', '127.0.0.1', $base + g, 'bench', interval '$poll_s seconds'
  FROM generate_series(0, $gateways - 1) g;
INSERT INTO prepay.account (site_id, account_id, code, name, tariff_id, balance)
SELECT 1, i, 'A' || i, 'tenant ' || i, 1, 0 FROM generate_series(1, $meters) i;
INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id, channel, external_ref)
SELECT 1, i, 'recharge', 1000000, 1000000, (SELECT prepay._actor_id(1)), 'bench', 'open-' || i
  FROM generate_series($samples + 1, $meters) i;
UPDATE prepay.account SET balance = 1000000 WHERE account_id > $samples;
INSERT INTO prepay.meter (site_id, meter_id, code, account_id, gateway_id, unit_id, device_profile, max_per_hour)
SELECT 1, i, 'M' || i, i, (i - 1) / $per_gw + 1, (i - 1) % $per_gw + 1, 'ddsy1352', 1000000
  FROM generate_series(1, $meters) i;
SQL

# ---- the simulator and its service-time floor
test/sim/prepay-sim --tcp-gateways "$gateways" --base-port "$base" --meters-per-gateway "$per_gw" \
	--speedup $speedup --control "127.0.0.1:$control" --history "$work/history" >"$work/sim.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "127.0.0.1:$control/healthz" >/dev/null && break; sleep 0.1; done
cc -std=gnu11 -O2 -o "$work/sim_probe" test/sim/probe/sim_probe.c $(pkg-config --cflags --libs libmodbus)
floor_s=$("$work/sim_probe" sweep 127.0.0.1 "$base" "$per_gw" 5 | sed 's/sweep_s=//')
: >"$work/history"

# ---- the agent: its first sweep
"$agent" --conninfo "host=$PGHOST port=$PGPORT dbname=bench user=postgres" --agent-id bench \
	--spool-dir "$work/spool" --metrics "127.0.0.1:$metrics" --log-level error >"$work/agent.log" 2>&1 &
agent_pid=$!
pids+=($agent_pid)
deadline=$(($(date +%s) + 600))
while [ "$(wc -l <"$work/history")" -lt "$meters" ]; do
	[ "$(date +%s)" -gt $deadline ] && { echo "first sweep did not finish; agent log:"; tail -20 "$work/agent.log"; exit 1; }
	kill -0 $agent_pid 2>/dev/null || { echo "agent exited; log:"; tail -20 "$work/agent.log"; exit 1; }
	sleep 0.2
done
sweep_s=$(head -n "$meters" "$work/history" | awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%.3f", (b - a) / 1000 }')
distinct=$(head -n "$meters" "$work/history" | awk '{ print $2, $3 }' | sort -u | wc -l)
echo "first sweep: $meters meters on $gateways gateways in ${sweep_s} s ($distinct distinct meters read)"

# ---- recharge-to-relay-closed: wait for the sample accounts to trip
relay_of() { curl -sf "127.0.0.1:$control/meters?gateway=0" | awk -v u="$1" '$2 == u { print $4 }'; }
deadline=$(($(date +%s) + 3 * poll_s + 60))
for u in $(seq 1 "$samples"); do
	until [ "$(relay_of "$u")" = tripped ]; do
		[ "$(date +%s)" -gt $deadline ] && { echo "meter $u was never tripped; agent log:"; tail -20 "$work/agent.log"; exit 1; }
		sleep 0.2
	done
done
latencies=()
for u in $(seq 1 "$samples"); do
	t0=$(now_ms)
	psql -c "SELECT prepay.recharge(1, $u, 1000, 'bench', 'restore-$u')" >/dev/null
	until [ "$(relay_of "$u")" = closed ]; do
		[ $(($(now_ms) - t0)) -gt 60000 ] && { echo "meter $u was not restored in 60 s"; exit 1; }
	done
	latencies+=($(($(now_ms) - t0)))
done
read -r p50 p99 < <(printf '%s\n' "${latencies[@]}" | sort -n | awk '{ v[NR] = $1 }
	END { i50 = int((NR * 50 + 99) / 100); i99 = int((NR * 99 + 99) / 100); print v[i50], v[i99] }')
rss_mb=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' /proc/$agent_pid/status)
psql -At <<SQL
SELECT 'readings stored: ' || count(*) || ', quarantined: ' || count(*) FILTER (WHERE quarantine_reason IS NOT NULL) FROM prepay.reading;
SELECT 'commands: ' || string_agg(action || '/' || state || ' ' || n, ', ') FROM (SELECT action, state, count(*) n FROM prepay.command GROUP BY 1, 2 ORDER BY 1, 2) c;
SQL
echo "simulator service floor (one gateway, $per_gw sequential reads): ${floor_s} s"
echo "recharge to relay closed over $samples accounts: p50 ${p50} ms, p99 ${p99} ms"
echo "agent peak RSS: ${rss_mb} MB"
echo "bench agent: meters=$meters sweep_s=$sweep_s floor_s=$floor_s restore_p50_ms=$p50 restore_p99_ms=$p99 rss_mb=$rss_mb"
