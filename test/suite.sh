#!/usr/bin/env bash
# test/suite.sh WORKDIR: run pg_regress, the isolation specs and the TAP
# tests against a throwaway cluster, print the diffs of any failure, stop
# the cluster.  Runs as an unprivileged user; test/run.sh arranges that.
#
# While developing, a subset runs faster (all three default to everything):
#   PREPAY_REGRESS="03_rating 14_security"  the pg_regress tests to run
#   PREPAY_ISOLATION="same_reference"       the isolation specs ("" for none)
#   PREPAY_TAP="test/t/100_agent_e2e.pl"    the TAP tests ("" for none)
#   PREPAY_UNIT=0                           skip the C unit tests
# e.g. PREPAY_TAP= PREPAY_ISOLATION= PREPAY_REGRESS="00_install 05_ladder" make test
set -uo pipefail
work=$1
cd "$work"
. test/lib/cluster.sh
cluster_start "$work/cluster" "fsync = off" || exit 1
trap cluster_stop EXIT
status=0

subset=()
[ -n "${PREPAY_REGRESS+x}" ] && subset+=("REGRESS=$PREPAY_REGRESS")
[ -n "${PREPAY_ISOLATION+x}" ] && subset+=("ISOLATION=$PREPAY_ISOLATION")
tap_tests=${PREPAY_TAP-$(ls test/t/*.pl 2>/dev/null)}

if [ "${PREPAY_UNIT:-1}" != 0 ]; then
echo "== layout of the agent and the simulator (.clang-format)"
clang-format --dry-run -Werror agent/*.c agent/*.h test/sim/*.c test/sim/*.h || status=1

echo "== unit tests of the pure cores"
for unit in rating tariff; do
	cc -Wall -Wextra -Werror -Wno-unused-parameter -O1 -fsanitize=address,undefined -Iextension -o "$work/test_$unit" \
		"test/unit/test_$unit.c" "extension/$unit.c" && "$work/test_$unit" || status=1
done
cc -Wall -Wextra -Werror -Wno-unused-parameter -O1 -fsanitize=address,undefined -Iagent $(pkg-config --cflags libpq) \
	-o "$work/test_agent_catalog" test/unit/test_agent_catalog.c agent/catalog.c agent/catalog_cache.c agent/profile.c agent/alloc.c \
		agent/log.c -lpq &&
	"$work/test_agent_catalog" || status=1
cc -Wall -Wextra -Werror -Wno-unused-parameter -O1 -fsanitize=address,undefined -Iagent \
	-o "$work/test_agent_spool" test/unit/test_agent_spool.c agent/spool.c agent/spool_thin.c agent/alloc.c agent/log.c &&
	"$work/test_agent_spool" 2>"$work/test_agent_spool.log" || { status=1; cat "$work/test_agent_spool.log"; }
fi

echo "== pg_regress and isolation specs"
if ! make -s installcheck "${subset[@]}"; then
	status=1
	for f in regression.diffs output_iso/regression.diffs; do
		[ -s "$f" ] && { echo "---- $f"; cat "$f"; }
	done
fi

if [ -n "$tap_tests" ]; then
	echo "== TAP tests"
	pgxs=$(dirname "$(pg_config --pgxs)")/..
	if ! PERL5LIB="$pgxs/test/perl" PG_REGRESS="$pgxs/test/regress/pg_regress" \
		TESTDIR="$work" prove -v $tap_tests >"$work/tap.log" 2>&1; then
		status=1
		cat "$work/tap.log"
		tail -n 50 "$work"/tmp_check/log/*.log 2>/dev/null
	else
		grep -E '^(test/t/|All tests|Result)' "$work/tap.log"
	fi
fi

exit $status
