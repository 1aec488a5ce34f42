#!/usr/bin/env bash
# test/install-deps.sh: install the Debian packages prepay builds and tests
# with, when they are missing.  Runs apt-get as root directly, or through
# sudo for an ordinary user.  Does nothing when everything is present.
set -euo pipefail

packages=(
	make gcc
	clang-format             # the agent's and the simulator's layout, checked by test/suite.sh
	postgresql-15            # the server the tests run
	postgresql-server-dev-15 # PGXS, pg_regress, isolation tester, TAP modules
	libpq-dev
	pkg-config
	libmodbus-dev            # the agent's and the simulator's Modbus
	libevent-dev             # the agent's loop, timers, signals, HTTP
	socat                    # pseudo-terminal pairs for the RTU tests
	curl                     # the demo and the agent benchmark talk to HTTP endpoints
	perl libipc-run-perl     # prove and PostgreSQL::Test::Cluster (TAP tests)
	postgresql-15-cron       # pg_cron: schedules the daily billing run and the batch runner
	postgresql-15-partman    # pg_partman: creates the monthly partitions of prepay.reading ahead of time
	openssl                  # test TLS certificates: the SCRAM/TLS role test, notification delivery over TLS (test/t/140, 191)
	libcurl4-openssl-dev     # the agent's notification delivery: HTTP(S) and SMTP (agent/notify*.c)
	libssl-dev               # the agent's webhook signatures (HMAC-SHA256)
	python3 python3-aiosmtpd # the notification tests' webhook receiver and SMTP sinks, plain and TLS (test/t/190, 191)
	pgbouncer                # transaction pooling in front of the identity test (test/t/210_pooled_identity.pl)
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
