/*-------------------------------------------------------------------------
 * agent/metrics.c
 *     Prometheus text exposition of the agent's counters: readings polled,
 *     delivered, spooled, replayed, dropped; the spool's size, bound,
 *     warning flag and thinning; read failures per gateway and
 *     kind (timeout, exception, corrupt, connection); the last sweep
 *     duration per gateway; relay command latency as a histogram, retries,
 *     commands failed for good and the commands failing now.
 *     /healthz answers 200 while the loop runs, with the database state.
 *
 * Locking: loop thread only (evhttp runs its callbacks on the loop).
 *-------------------------------------------------------------------------
 */
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "db.h"
#include "delivery.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "spool.h"

struct metrics metrics;

static const char *const kinds[] = { "timeout", "exception", "corrupt", "connection", "protocol" };
#define NKINDS 5

static const double latency_bounds[METRICS_LATENCY_BUCKETS] = { 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10 };

struct gw_metrics {
	int site_id;
	int64_t gateway_id;
	char name[128];
	uint64_t reads_ok, failures[NKINDS], sweeps;
	double last_sweep_seconds;
	struct gw_metrics *next;
};

static struct gw_metrics *gateways;
static struct evhttp *http;

static struct gw_metrics *gw(int site_id, int64_t gateway_id)
{
	struct gw_metrics *g;

	for (g = gateways; g; g = g->next)
		if (g->site_id == site_id && g->gateway_id == gateway_id)
			return g;
	g = xcalloc(1, sizeof(*g));
	g->site_id = site_id;
	g->gateway_id = gateway_id;
	snprintf(g->name, sizeof(g->name), "%lld", (long long)gateway_id);
	g->next = gateways;
	gateways = g;
	return g;
}

void metrics_gateway_name(int site_id, int64_t gateway_id, const char *name)
{
	snprintf(gw(site_id, gateway_id)->name, sizeof(gw(site_id, gateway_id)->name), "%s", name);
}

/* metrics_read: one meter read, good (err_kind NULL) or failed */
void metrics_read(int site_id, int64_t gateway_id, const char *err_kind)
{
	struct gw_metrics *g = gw(site_id, gateway_id);

	if (!err_kind) {
		g->reads_ok++;
		return;
	}
	for (int i = 0; i < NKINDS; i++)
		if (strcmp(err_kind, kinds[i]) == 0)
			g->failures[i]++;
}

void metrics_sweep(int site_id, int64_t gateway_id, int64_t duration_us)
{
	struct gw_metrics *g = gw(site_id, gateway_id);

	g->sweeps++;
	g->last_sweep_seconds = duration_us / 1e6;
}

/* metrics_command: a finished relay command and its claim-to-result latency */
void metrics_command(int64_t latency_us, int ok)
{
	double s = latency_us / 1e6;
	int i;

	if (ok)
		metrics.commands_done++;
	else
		metrics.commands_failed++;
	for (i = 0; i < METRICS_LATENCY_BUCKETS && s > latency_bounds[i]; i++)
		;
	metrics.command_latency_bucket[i]++;
	metrics.command_latency_sum += s;
}

static void counter(struct evbuffer *b, const char *name, const char *help, uint64_t v)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
	                    (unsigned long long)v);
}

static void gateway_metrics(struct evbuffer *b)
{
	struct gw_metrics *g;

	evbuffer_add_printf(b, "# HELP prepay_agent_reads_total Meter reads that succeeded, per gateway.\n"
	                       "# TYPE prepay_agent_reads_total counter\n");
	for (g = gateways; g; g = g->next)
		evbuffer_add_printf(b, "prepay_agent_reads_total{site=\"%d\",gateway=\"%s\"} %llu\n", g->site_id,
		                    g->name, (unsigned long long)g->reads_ok);
	evbuffer_add_printf(b, "# HELP prepay_agent_read_failures_total Failed meter reads, per gateway and kind.\n"
	                       "# TYPE prepay_agent_read_failures_total counter\n");
	for (g = gateways; g; g = g->next)
		for (int i = 0; i < NKINDS; i++)
			evbuffer_add_printf(
			        b, "prepay_agent_read_failures_total{site=\"%d\",gateway=\"%s\",kind=\"%s\"} %llu\n",
			        g->site_id, g->name, kinds[i], (unsigned long long)g->failures[i]);
	evbuffer_add_printf(b, "# HELP prepay_agent_sweep_seconds Duration of the last sweep of a gateway.\n"
	                       "# TYPE prepay_agent_sweep_seconds gauge\n");
	for (g = gateways; g; g = g->next)
		evbuffer_add_printf(b, "prepay_agent_sweep_seconds{site=\"%d\",gateway=\"%s\"} %.6f\n", g->site_id,
		                    g->name, g->last_sweep_seconds);
	evbuffer_add_printf(b, "# HELP prepay_agent_sweeps_total Sweeps completed, per gateway.\n"
	                       "# TYPE prepay_agent_sweeps_total counter\n");
	for (g = gateways; g; g = g->next)
		evbuffer_add_printf(b, "prepay_agent_sweeps_total{site=\"%d\",gateway=\"%s\"} %llu\n", g->site_id,
		                    g->name, (unsigned long long)g->sweeps);
}

static void latency_metrics(struct evbuffer *b)
{
	uint64_t cum = 0;

	evbuffer_add_printf(b, "# HELP prepay_agent_command_seconds Relay command latency, claim to read-back.\n"
	                       "# TYPE prepay_agent_command_seconds histogram\n");
	for (int i = 0; i < METRICS_LATENCY_BUCKETS; i++) {
		cum += metrics.command_latency_bucket[i];
		evbuffer_add_printf(b, "prepay_agent_command_seconds_bucket{le=\"%g\"} %llu\n", latency_bounds[i],
		                    (unsigned long long)cum);
	}
	cum += metrics.command_latency_bucket[METRICS_LATENCY_BUCKETS];
	evbuffer_add_printf(b, "prepay_agent_command_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
	evbuffer_add_printf(b, "prepay_agent_command_seconds_sum %.6f\nprepay_agent_command_seconds_count %llu\n",
	                    metrics.command_latency_sum, (unsigned long long)cum);
}

static void gauge(struct evbuffer *b, const char *name, const char *help, long long v)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", name, help, name, name, v);
}

static void spool_metrics(struct evbuffer *b)
{
	struct spool_stats st;

	spool_stats(&st);
	gauge(b, "prepay_agent_spool_bytes", "Bytes waiting in the spool.", st.bytes);
	gauge(b, "prepay_agent_spool_max_bytes", "The spool's bound; a full spool is thinned.", st.max_bytes);
	gauge(b, "prepay_agent_spool_warning",
	      "1 from the moment the spool passed 80% of its bound until it has drained.", st.warning);
	counter(b, "prepay_agent_spool_dropped_total",
	        "Intermediate readings dropped by thinning a full spool (registers are cumulative: no energy lost).",
	        st.thinned);
	counter(b, "prepay_agent_spool_thinnings_total", "Thinning passes over a full spool.", st.thinnings);
}

/* the readings' way from the meters to the database */
static void reading_metrics(struct evbuffer *b)
{
	counter(b, "prepay_agent_readings_polled_total", "Readings taken from meters.", metrics.readings_polled);
	counter(b, "prepay_agent_readings_delivered_total", "Readings committed to the database.",
	        metrics.readings_delivered);
	counter(b, "prepay_agent_readings_spooled_total", "Readings written to the spool.", metrics.readings_spooled);
	counter(b, "prepay_agent_readings_replayed_total", "Spooled readings committed.", metrics.readings_replayed);
	counter(b, "prepay_agent_readings_dropped_total",
	        "Readings lost: the spool could not take them (full after thinning, or an I/O error).",
	        metrics.readings_dropped);
	counter(b, "prepay_agent_delivery_errors_total", "Reading batches the database refused.",
	        metrics.delivery_errors);
}

/* the relay commands' outcomes (their latency is latency_metrics') */
static void command_metrics(struct evbuffer *b)
{
	counter(b, "prepay_agent_commands_done_total", "Relay commands done.", metrics.commands_done);
	counter(b, "prepay_agent_commands_failed_total", "Relay command attempts failed.", metrics.commands_failed);
	counter(b, "prepay_agent_command_retries_total",
	        "Failed relay command attempts queued again by the database (the command is still called for).",
	        metrics.command_retries);
	counter(b, "prepay_agent_commands_abandoned_total",
	        "Failed relay commands the database ended: superseded, no longer called for, or impossible.",
	        metrics.commands_abandoned);
	gauge(b, "prepay_agent_commands_failing",
	      "Commands of this agent's meters whose last attempt failed and that are still to be done (every 5 s).",
	      metrics.commands_failing);
}

static void metrics_cb(struct evhttp_request *req, void *arg)
{
	struct evbuffer *b = evbuffer_new();

	reading_metrics(b);
	command_metrics(b);
	counter(b, "prepay_agent_catalog_loads_total", "Catalog loads.", metrics.catalog_loads);
	spool_metrics(b);
	gauge(b, "prepay_agent_queue_readings", "Readings waiting in memory.", delivery_queued());
	gauge(b, "prepay_agent_db_connected", "1 when connected to the database.", db_connected());
	gateway_metrics(b);
	latency_metrics(b);
	notify_metrics(b);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; version=0.0.4");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void healthz_cb(struct evhttp_request *req, void *arg)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add_printf(b, "ok db=%s spool_bytes=%lld\n", db_connected() ? "connected" : "disconnected",
	                    (long long)spool_bytes());
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

/* metrics_setup: serve /metrics and /healthz on ADDR:PORT ("off" or "" = none) */
int metrics_setup(struct event_base *base, const char *listen)
{
	char addr[128];
	char *colon;

	if (!listen[0] || strcmp(listen, "off") == 0)
		return 0;
	snprintf(addr, sizeof(addr), "%s", listen);
	colon = strrchr(addr, ':');
	*colon = '\0';
	http = evhttp_new(base);
	evhttp_set_cb(http, "/metrics", metrics_cb, NULL);
	evhttp_set_cb(http, "/healthz", healthz_cb, NULL);
	if (evhttp_bind_socket(http, addr, (uint16_t)atoi(colon + 1)) != 0) {
		log_error("metrics: cannot listen on %s", listen);
		return -1;
	}
	log_info("metrics: listening on http://%s/metrics", listen);
	return 0;
}

void metrics_teardown(void)
{
	struct gw_metrics *g, *next;

	if (http)
		evhttp_free(http);
	http = NULL;
	for (g = gateways; g; g = next) {
		next = g->next;
		free(g);
	}
	gateways = NULL;
}
