#!/usr/bin/env bash
# test/run.sh [SCRIPT [ARGS...]]: run SCRIPT (default test/suite.sh, every
# test) from a scratch copy of the built tree, as an unprivileged user,
# against a private PostgreSQL installation.  Called by `make test`,
# `make bench` and `make demo`.
#
# The private installation is a copy of the system's PostgreSQL 15 with
# the extension installed into it (make install DESTDIR=...), and the
# install scripts of the earlier releases (make install-releases).  PostgreSQL
# finds its share and lib directories relative to its own binaries, so the
# copy is self-contained: tests never touch the system installation, need
# no sudo, and several checkouts can run their tests at the same time.
#
# PostgreSQL refuses to run as root, so when invoked as root the script
# runs as the "postgres" account from a copy it owns.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
script=${1:-test/suite.sh}
[ $# -gt 0 ] && shift

work=$(mktemp -d /tmp/prepay-run.XXXXXX)
pgbin=$(pg_config --bindir)
pgshare=$(pg_config --sharedir)
mkdir -p "$work/pg$(dirname "$pgbin")" "$work/pg$(dirname "$pgshare")"
cp -a "$(dirname "$pgbin")/." "$work/pg$(dirname "$pgbin")/"
cp -a "$pgshare" "$work/pg$(dirname "$pgshare")/"
# only this tree's prepay: not the scripts of a build installed on the system
rm -f "$work/pg$pgshare/extension/prepay"[.-]*
make -C "$top" -s install DESTDIR="$work/pg" >/dev/null
# the earlier releases' install scripts, built from their commits here, in
# the checkout (the scratch copy has no .git), for test/t/200_upgrade.pl;
# without them that test fails, the others run
make -C "$top" -s install-releases DESTDIR="$work/pg" >/dev/null ||
	echo "prepay: WARNING: earlier releases not installed (above): test/t/200_upgrade.pl will fail" >&2
for d in agent; do [ -d "$top/$d" ] && cp -a "$top/$d" "$work/"; done
cp -a "$top/Makefile" "$top/.clang-format" "$top/prepay.control" "$top/sql" "$top/extension" "$top/test" "$work/"
if [ "$(id -u)" -eq 0 ]; then
	chown -R postgres: "$work"
	runner=(runuser -u postgres --)
else
	runner=()
fi

status=0
PATH="$work/pg$pgbin:$PATH" "${runner[@]}" "$work/$script" "$work" "$@" || status=$?
if [ $status -eq 0 ]; then
	rm -rf "$work"
	echo "prepay: $script passed"
else
	echo "prepay: $script FAILED (work directory kept: $work)" >&2
fi
exit $status
