#!/usr/bin/env bash
# test/run.sh: install the built extension and run every test against a
# throwaway PostgreSQL cluster.  Called by `make test` after the build.
#
# PostgreSQL refuses to run as root, so when invoked as root the suite runs
# as the unprivileged "postgres" account from a copy of the tree it owns;
# an ordinary user runs it as themselves and installs with sudo.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" make -C "$top" -s install

work=$(mktemp -d /tmp/prepay-test.XXXXXX)
cp -a "$top/Makefile" "$top/prepay.control" "$top/sql" "$top/test" "$work/"
if [ "$(id -u)" -eq 0 ]; then
	chown -R postgres: "$work"
	runner=(runuser -u postgres --)
else
	runner=()
fi

status=0
"${runner[@]}" "$work/test/suite.sh" "$work" || status=$?
if [ $status -eq 0 ]; then
	rm -rf "$work"
	echo "prepay: all tests passed"
else
	echo "prepay: tests FAILED (work directory kept: $work)" >&2
fi
exit $status
