#!/usr/bin/env bash
# test/demo/demo.sh WORKDIR: the prepay demo (`make demo`).
#
# A private PostgreSQL cluster with prepay, a sample shopping plaza seeded
# through the SQL API (site, tariff, accounts, meters on gateways,
# recharges), the meter simulator with a few hundred meters whose energy
# runs DEMO_SPEEDUP times faster than real time, and prepay-agent polling
# them.  Every two seconds the terminal shows balances falling, alarms
# rising and relays tripping; once the first meter is cut the script
# recharges its account and shows the relay closed again.  pg_cron runs
# prepay's periodic jobs (prepay.schedule_jobs(): billing run, batch
# runner, rollup fold, cut reminders every minute).  The agent also
# delivers the notifications (balance ladder, payment received, supply
# restored) as signed webhooks and SMS requests to a local receiver
# (test/notify_receiver.py), whose log the screen shows.  Runs until
# Ctrl-C, or for DEMO_SECONDS seconds; stops everything on the way out.
set -euo pipefail
work=$1
seconds=${DEMO_SECONDS:-0}
gateways=${DEMO_GATEWAYS:-4}
per_gw=${DEMO_METERS_PER_GATEWAY:-60}
speedup=${DEMO_SPEEDUP:-3600} # 1 kW for one real second = 1 kWh
meters=$((gateways * per_gw))
cd "$work"

agent=$work/agent/prepay-agent
if [ ! -x "$agent" ]; then
	echo "demo: agent/prepay-agent is not built yet on this branch; the demo needs it" >&2
	exit 2
fi

. test/lib/cluster.sh
. test/lib/ports.sh
# pg_cron for the periodic jobs; the cluster listens on its socket only, so
# pg_cron runs its jobs in background workers
cluster_start "$work/cluster" "synchronous_commit = off" "shared_preload_libraries = 'pg_cron'" \
	"cron.database_name = 'demo'" "cron.use_background_workers = on" "max_worker_processes = 16" || exit 1
pids=()
stop_all() {
	trap - EXIT INT TERM
	echo
	echo "demo: stopping the agent, the simulator and PostgreSQL"
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	cluster_stop
	if [ -s "$work/agent.log" ]; then
		echo "demo: last lines of the agent's log ($work/agent.log):"
		tail -n 5 "$work/agent.log"
	fi
}
trap stop_all EXIT
trap 'exit 0' INT TERM
psql() { command psql -X -q -v ON_ERROR_STOP=1 -d demo "$@"; }
base=$(free_port "$gateways")
control=$(free_port 1)
metrics=$(free_port 1)
receiver=$(free_port 1)
sim() { curl -sf "127.0.0.1:$control/$1"; }

echo "== seeding Riverside Plaza: $meters shops on $gateways gateways"
command psql -X -q -d postgres -c "CREATE DATABASE demo"
psql <<SQL
CREATE EXTENSION prepay;
INSERT INTO prepay.site (name, time_zone) VALUES ('Riverside Plaza', 'Asia/Shanghai');
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'shops');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES (1, 1, '2026-01-01', 1.000);
INSERT INTO prepay.gateway (site_id, name, transport, host, port, agent_id, poll_interval)
SELECT 1, 'floor-' || g, 'tcp', '127.0.0.1', $base + g, 'demo', '2 seconds'
  FROM generate_series(0, $gateways - 1) g;
-- shops: one account and one meter each; gateway g serves unit ids 1..$per_gw
SELECT prepay.open_account(1, 'S' || lpad(i::text, 3, '0'), 'Shop ' || i, 1)
  FROM generate_series(1, $meters) i;
INSERT INTO prepay.meter (site_id, code, building, floor, room, gateway_id, unit_id, device_profile, max_per_hour)
SELECT 1, 'DDSY-' || lpad(i::text, 4, '0'), 'A', ((i - 1) / $per_gw)::text, i::text,
       (i - 1) / $per_gw + 1, (i - 1) % $per_gw + 1, 'ddsy1352', 1000000
  FROM generate_series(1, $meters) i;
SELECT prepay.attach_meter(1, i, i, 100.00) FROM generate_series(1, $meters) i;
-- shop 1 pays least: it is the first to be cut
SELECT prepay.recharge(1, i, CASE WHEN i = 1 THEN 12 ELSE 25 + (i * 37) % 200 END, 'cash', 'open-' || i)
  FROM generate_series(1, $meters) i;
-- the periodic jobs, with the reminders every minute (energy runs fast here)
CREATE EXTENSION pg_cron;
SELECT jobname, schedule FROM prepay.schedule_jobs('{"prepay-cut-reminders": "* * * * *"}');
-- notifications: shop 1 reads Chinese; webhooks and SMS go to the local receiver
UPDATE prepay.account SET phone = '+86139' || lpad(account_id::text, 8, '0');
INSERT INTO prepay.notify_site (site_id, language) VALUES (1, 'en');
INSERT INTO prepay.account_language (site_id, account_id, language) VALUES (1, 1, 'zh');
INSERT INTO prepay.notify_channel (site_id, channel, url, backoff_base, max_per_minute)
VALUES (1, 'webhook', 'http://127.0.0.1:$receiver/hook', '1 second', 10000);
INSERT INTO prepay.notify_channel (site_id, channel, url, method, headers, body, backoff_base, max_per_minute)
VALUES (1, 'sms', 'http://127.0.0.1:$receiver/sms', 'POST', '{"Content-Type: application/json"}',
        '{"to": {phone_json}, "text": {text_json}}', '1 second', 10000);
INSERT INTO prepay.notify_secret (site_id, channel, secret) VALUES (1, 'webhook', 'demo-secret');
SQL

echo "== starting the simulator ($meters meters, energy x$speedup) and the agent"
test/sim/prepay-sim --tcp-gateways "$gateways" --base-port "$base" --meters-per-gateway "$per_gw" \
	--speedup "$speedup" --initial-kwh 100.00 --control "127.0.0.1:$control" >"$work/sim.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do sim healthz >/dev/null && break; sleep 0.1; done
/usr/bin/python3 test/notify_receiver.py --port "$receiver" --secret demo-secret --log "$work/receiver.log" \
	>"$work/receiver.out" 2>&1 &
pids+=($!)
"$agent" --conninfo "host=$PGHOST port=$PGPORT dbname=demo user=postgres" --agent-id demo \
	--spool-dir "$work/spool" --metrics "127.0.0.1:$metrics" --log-level info --notifications deliver \
	>"$work/agent.log" 2>&1 &
agent_pid=$!
pids+=($agent_pid)

connect="psql -h $PGHOST -p $PGPORT -U postgres demo"
start=$(date +%s)
story="waiting for shop 1 (the smallest recharge) to run out of money"
restored_at=0

show() {
	local tripped
	tripped=$(sim meters | awk '$4 == "tripped"' | wc -l)
	[ -t 1 ] && printf '\033[H\033[2J'
	echo "prepay demo: Riverside Plaza, $meters shops, energy x$speedup, $(($(date +%s) - start)) s   (Ctrl-C stops)"
	echo "PostgreSQL on the unix socket $PGHOST (port $PGPORT): $connect"
	echo
	psql -At -F ' ' <<SQL
SELECT format('readings %s   ledger entries %s   relays tripped in the simulator: $tripped',
              (SELECT count(*) FROM prepay.reading), (SELECT count(*) FROM prepay.ledger));
SELECT format('alarm levels: none %s, low %s, pre-trip %s, arrears %s',
              count(*) FILTER (WHERE alarm_level = 0), count(*) FILTER (WHERE alarm_level = 1),
              count(*) FILTER (WHERE alarm_level = 2), count(*) FILTER (WHERE alarm_level = 3))
  FROM prepay.account;
SELECT 'commands: ' || coalesce(string_agg(action || ' ' || state || ' ' || n, ', '), 'none')
  FROM (SELECT action, state, count(*) n FROM prepay.command GROUP BY 1, 2 ORDER BY 1, 2) c;
SELECT format('cut reminders sent %s   pg_cron jobs: %s', (SELECT count(*) FROM prepay.cut_reminder),
              string_agg(jobname || ' ' || coalesce(last_status, 'waiting'), ', ' ORDER BY jobname))
  FROM prepay.scheduled_jobs();
SQL
	echo
	echo "lowest balances:"
	psql -c "SELECT a.code AS shop, a.balance, a.alarm_level AS level, m.relay_state AS relay, m.last_energy AS kwh
	           FROM prepay.account a JOIN prepay.meter m USING (site_id, account_id)
	          ORDER BY a.balance, a.code LIMIT 8"
	echo "shop S001: $story"
	echo
	psql -At -F ' ' <<SQL
SELECT format('notifications: %s written, deliveries: %s', (SELECT count(*) FROM prepay.notification),
              coalesce((SELECT string_agg(channel || ' ' || state || ' ' || n, ', ')
                          FROM (SELECT channel, state, count(*) n FROM prepay.notification_delivery_status
                                 GROUP BY 1, 2 ORDER BY 1, 2) d), 'none'));
SQL
	echo "the webhook receiver's log ($work/receiver.log), shop S001's last messages:"
	[ -s "$work/receiver.log" ] && /usr/bin/python3 -c '
import json, sys
done = [e for e in map(json.loads, open(sys.argv[1])) if e.get("event") == "done"
        and e["path"] == "/hook" and json.loads(e["body"])["account"] == "S001"]
for e in done[-4:]:
    print("  %s  signature %s%s  %s" % (e["key"], e["sig"], "  DUPLICATE" if e["dup"] else "",
                                       json.loads(e["body"])["message"]))' "$work/receiver.log" || true
}

# shop_relay: the simulator's relay of shop 1 (gateway 0, unit 1)
shop_relay() { sim "meters?gateway=0" | awk '$2 == 1 { print $4 }'; }

while :; do
	if ! kill -0 $agent_pid 2>/dev/null; then
		echo "demo: the agent stopped" >&2
		exit 1
	fi
	if [ $restored_at -eq 0 ] && [ "$(shop_relay)" = tripped ]; then
		story="CUT (relay tripped in the simulator); recharging 100.00 now"
		show
		psql -c "SELECT prepay.recharge(1, 1, 100.00, 'wechat', 'DEMO-RESTORE-1')" >/dev/null
		restored_at=$(date +%s)
	elif [ $restored_at -gt 0 ] && [ "$(shop_relay)" = closed ] && [[ $story != RESTORED* ]]; then
		story="RESTORED: recharged 100.00, relay closed again in the simulator"
	fi
	show
	if [ "$seconds" -gt 0 ] && [ $(($(date +%s) - start)) -ge "$seconds" ]; then
		break
	fi
	sleep 2
done
echo
echo "connect while it runs with: $connect"
