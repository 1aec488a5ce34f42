# test/lib/ports.sh: free loopback TCP ports for the simulator, the agent's
# metrics server and the simulator's control server.  Sourced by the demo
# and the agent benchmark (the TAP tests use PostgreSQL::Test::Cluster's
# get_free_port).
#
#   free_port COUNT   prints a port P such that P .. P+COUNT-1 are all free

free_port() {
	local p busy
	while :; do
		p=$((20000 + RANDOM % 30000))
		busy=0
		for i in $(seq 0 $(($1 - 1))); do
			(echo >/dev/tcp/127.0.0.1/$((p + i))) 2>/dev/null && { busy=1; break; }
		done
		[ $busy -eq 0 ] && { echo $p; return; }
	done
}
