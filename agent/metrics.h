/*-------------------------------------------------------------------------
 * agent/metrics.h
 *     Counters of the agent, served as Prometheus text on /metrics, and
 *     /healthz, by libevent's evhttp.
 *
 * Locking: loop thread only: bus threads never touch metrics; their
 * events are counted when the loop thread handles them.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_METRICS_H
#define AGENT_METRICS_H

#include <event2/event.h>
#include <stdint.h>

#define METRICS_LATENCY_BUCKETS 8

struct metrics {
	uint64_t readings_polled, readings_delivered, readings_spooled, readings_replayed, readings_dropped;
	uint64_t delivery_errors;
	uint64_t commands_done, commands_failed;
	uint64_t command_retries, commands_abandoned;
	int64_t commands_failing;
	uint64_t command_latency_bucket[METRICS_LATENCY_BUCKETS + 1];
	double command_latency_sum;
	uint64_t catalog_loads;
};

extern struct metrics metrics;

int metrics_setup(struct event_base *base, const char *listen);
void metrics_teardown(void);
void metrics_read(int site_id, int64_t gateway_id, const char *err_kind);
void metrics_sweep(int site_id, int64_t gateway_id, int64_t duration_us);
void metrics_command(int64_t latency_us, int ok);
void metrics_gateway_name(int site_id, int64_t gateway_id, const char *name);

#endif
