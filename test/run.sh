#!/usr/bin/env bash
# test/run.sh [SCRIPT [ARGS...]]: install the built extension, then run
# SCRIPT (default test/suite.sh, every test) from a scratch copy of the
# tree, as an unprivileged user.  Called by `make test` and `make bench`.
#
# PostgreSQL refuses to run as root, so when invoked as root the script
# runs as the "postgres" account from a copy it owns; an ordinary user runs
# it as themselves and installs with sudo.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
script=${1:-test/suite.sh}
[ $# -gt 0 ] && shift

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" make -C "$top" -s install

work=$(mktemp -d /tmp/prepay-run.XXXXXX)
cp -a "$top/Makefile" "$top/prepay.control" "$top/sql" "$top/extension" "$top/test" "$work/"
if [ "$(id -u)" -eq 0 ]; then
	chown -R postgres: "$work"
	runner=(runuser -u postgres --)
else
	runner=()
fi

status=0
"${runner[@]}" "$work/$script" "$work" "$@" || status=$?
if [ $status -eq 0 ]; then
	rm -rf "$work"
	echo "prepay: $script passed"
else
	echo "prepay: $script FAILED (work directory kept: $work)" >&2
fi
exit $status
