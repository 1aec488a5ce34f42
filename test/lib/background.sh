# test/lib/background.sh: the programs a script starts in the background
# (simulator, agent, receiver) stopped when it exits.  Sourced after
# test/lib/cluster.sh by the benchmarks that run programs beside the cluster.
#
#   pids+=($!)          after starting a program: stop it at exit
#   now_ms              the time in milliseconds
# At exit every program in pids gets SIGTERM and is waited for, then the
# cluster stops.

pids=()

background_stop() {
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	cluster_stop
}
trap background_stop EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
