# test/lib/cluster.sh: start and stop a throwaway PostgreSQL cluster with a
# private socket directory and port.  Sourced by test/suite.sh and the
# benchmarks; must run as an unprivileged user.
#
#   cluster_start DIR [postgresql.conf lines...]   exports PGHOST PGPORT PGUSER
#   cluster_stop

cluster_bindir=$(pg_config --bindir)
export PATH="$cluster_bindir:$PATH"

cluster_start() {
	cluster_dir=$1
	shift
	local port=$((20000 + RANDOM % 20000))
	while pg_isready -q -h 127.0.0.1 -p "$port" 2>/dev/null || [ -e "/tmp/.s.PGSQL.$port" ]; do
		port=$((port + 1))
	done
	mkdir -p "$cluster_dir/sock"
	initdb -D "$cluster_dir/data" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 \
		>"$cluster_dir/initdb.log" 2>&1 || { cat "$cluster_dir/initdb.log"; return 1; }
	{
		echo "listen_addresses = ''"
		echo "port = $port"
		echo "unix_socket_directories = '$cluster_dir/sock'"
		echo "max_prepared_transactions = 10"
		echo "log_min_messages = warning"
		for line in "$@"; do echo "$line"; done
	} >>"$cluster_dir/data/postgresql.conf"
	pg_ctl -D "$cluster_dir/data" -l "$cluster_dir/server.log" -w start >/dev/null \
		|| { cat "$cluster_dir/server.log"; return 1; }
	export PGHOST="$cluster_dir/sock" PGPORT="$port" PGUSER=postgres
}

cluster_stop() {
	[ -n "${cluster_dir:-}" ] && pg_ctl -D "$cluster_dir/data" -m fast -w stop >/dev/null 2>&1 || true
}
