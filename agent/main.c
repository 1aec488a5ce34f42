/*-------------------------------------------------------------------------
 * agent/main.c
 *     prepay-agent: options and start-up, the catalog life cycle (load on
 *     connect, on NOTIFY prepay_config and on SIGHUP; start, keep or stop
 *     one bus thread per gateway; cache the last good catalog and start
 *     from it when the database is unreachable at start), the dispatch of
 *     bus events, signals and the clean shutdown (stop the buses, flush,
 *     spool the rest).
 *
 *     Start-up order: config, logging, libevent with pthreads, signals,
 *     spool, metrics, delivery, commands, database.  The loop thread owns
 *     every module but the bus threads.
 *
 * Locking: loop thread only; the bus threads talk to it through bus.c's
 * inbox.
 *-------------------------------------------------------------------------
 */
#include <event2/event.h>
#include <event2/thread.h>
#include <modbus.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "bus.h"
#include "catalog.h"
#include "catalog_cache.h"
#include "command.h"
#include "config.h"
#include "db.h"
#include "delivery.h"
#include "event_drop.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "spool.h"

#define SHUTDOWN_FLUSH_SECONDS 3

static struct {
	struct config cfg;
	struct event_base *base;
	struct bus **buses;
	int n_buses;
	int catalog_loaded, catalog_loading, catalog_again;
	int cache_tried; /* the cached catalog was looked for */
	int once_sweeps;
	int stopping;
	int exit_code;
	struct event *sig_term, *sig_int, *sig_hup, *flush_timer, *once_timer;
	int64_t flush_deadline_ticks;
} ag;

static void begin_shutdown(const char *why);

/* ---------------------------------------------------------------------
 * buses and the catalog
 * --------------------------------------------------------------------- */

static struct bus *find_bus(int site_id, int64_t gateway_id)
{
	for (int i = 0; i < ag.n_buses; i++) {
		const struct gateway *g = bus_gateway(ag.buses[i]);

		if (g->site_id == site_id && g->gateway_id == gateway_id)
			return ag.buses[i];
	}
	return NULL;
}

static void stop_bus(struct bus *b)
{
	const struct gateway *g = bus_gateway(b);

	log_info("gateway=%s stopping its bus thread", g->name);
	command_forget(g->site_id, g->gateway_id);
	bus_stop(b);
}

static void stop_all_buses(void)
{
	for (int i = 0; i < ag.n_buses; i++)
		stop_bus(ag.buses[i]);
	free(ag.buses);
	ag.buses = NULL;
	ag.n_buses = 0;
}

/* apply_catalog: keep the buses whose gateway did not change, stop the
 * others, start the new ones; source names where the catalog came from */
static void apply_catalog(struct catalog *cat, const char *source)
{
	struct bus **next = xcalloc(cat->n_gateways + 1, sizeof(*next));
	int n = 0, kept, started = 0;

	for (int i = 0; i < ag.n_buses; i++) {
		const struct gateway *old = bus_gateway(ag.buses[i]);
		int keep = 0;

		for (int j = 0; j < cat->n_gateways && !keep; j++)
			keep = catalog_gateway_equal(old, &cat->gateways[j]);
		if (keep)
			next[n++] = ag.buses[i];
		else
			stop_bus(ag.buses[i]);
	}
	kept = n;
	for (int j = 0; j < cat->n_gateways; j++) {
		struct gateway *g = &cat->gateways[j];
		struct bus *b;
		int running = 0;

		for (int i = 0; i < n && !running; i++)
			running = bus_gateway(next[i])->site_id == g->site_id &&
			          bus_gateway(next[i])->gateway_id == g->gateway_id;
		if (running)
			continue;
		metrics_gateway_name(g->site_id, g->gateway_id, g->name);
		b = bus_start(catalog_copy_gateway(g), ag.cfg.once);
		if (b)
			next[n++] = b;
		started += b != NULL;
	}
	log_info("catalog: %d gateways for agent %s from the %s: %d buses kept, %d started, %d stopped",
	         cat->n_gateways, ag.cfg.agent_id, source, kept, started, ag.n_buses - kept);
	free(ag.buses);
	ag.buses = next;
	ag.n_buses = n;
}

static void load_catalog(void);

static void catalog_loaded(PGresult *res, void *arg)
{
	struct catalog *cat;

	ag.catalog_loading = 0;
	if (!res)
		return;
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		log_error("catalog: prepay.agent_catalog failed (%s): %s", PQresultErrorField(res, PG_DIAG_SQLSTATE),
		          PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
		return;
	}
	cat = catalog_from_result(res);
	if (!cat)
		return;
	metrics.catalog_loads++;
	catalog_cache_save(ag.cfg.spool_dir, ag.cfg.agent_id, res);
	if (!ag.stopping && !(ag.cfg.once && ag.catalog_loaded)) {
		apply_catalog(cat, "database");
		ag.catalog_loaded = 1;
		if (ag.cfg.once && ag.n_buses == 0)
			begin_shutdown("--once: nothing to poll");
	}
	catalog_free(cat);
	if (ag.catalog_again) {
		ag.catalog_again = 0;
		load_catalog();
	}
}

static void load_catalog(void)
{
	const char *params[1] = { ag.cfg.agent_id };

	if (ag.catalog_loading) {
		ag.catalog_again = 1;
		return;
	}
	if (db_query("SELECT * FROM prepay.agent_catalog($1)", 1, params, catalog_loaded, NULL) == 0)
		ag.catalog_loading = 1;
}

/* start_from_cache: the database is unreachable at start; poll what the
 * last good catalog says (readings go to the spool) until it answers */
static void start_from_cache(void)
{
	time_t saved_at;
	struct catalog *cat;
	char when[32];

	ag.cache_tried = 1;
	cat = catalog_cache_load(ag.cfg.spool_dir, ag.cfg.agent_id, &saved_at);
	if (!cat) {
		log_warning("catalog: the database is unreachable at start and %s/catalog.cache has no catalog for "
		            "agent %s: "
		            "nothing to poll until the database answers",
		            ag.cfg.spool_dir, ag.cfg.agent_id);
		return;
	}
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&saved_at));
	log_warning("catalog: the database is unreachable at start: polling from the catalog cached at %s "
	            "until it answers",
	            when);
	apply_catalog(cat, "cache");
	catalog_free(cat);
}

/* ---------------------------------------------------------------------
 * database events
 * --------------------------------------------------------------------- */

static void ignore_result(PGresult *res, void *arg)
{
	if (res && PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		log_error("database: %s failed (%s): %s", (const char *)arg, PQresultErrorField(res, PG_DIAG_SQLSTATE),
		          PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
}

static void on_db_state(int connected, void *arg)
{
	if (connected) {
		db_query("LISTEN prepay_command", 0, NULL, ignore_result, "LISTEN");
		db_query("LISTEN prepay_config", 0, NULL, ignore_result, "LISTEN");
		if (notify_enabled())
			db_query("LISTEN prepay_notification", 0, NULL, ignore_result, "LISTEN");
		load_catalog();
		notify_kick();
		if (!ag.cfg.once)
			command_claim(1);
	} else {
		ag.catalog_loading = 0;
		if (!ag.catalog_loaded && !ag.cache_tried && !ag.cfg.once && !ag.stopping)
			start_from_cache();
	}
	delivery_kick();
}

static void on_notify(const char *channel, const char *payload, void *arg)
{
	log_debug("notify channel=%s payload=%s", channel, payload);
	if (strcmp(channel, "prepay_command") == 0 && !ag.cfg.once && !ag.stopping)
		command_claim(0);
	else if (strcmp(channel, "prepay_config") == 0 && !ag.stopping)
		load_catalog();
	else if (strcmp(channel, "prepay_notification") == 0 && !ag.stopping)
		notify_kick();
}

/* mark: call one of the lost-contact functions of sql/agent.sql */
static void mark(const char *sql, const struct bus_event *ev, int64_t id, int with_error)
{
	char site[16], idtext[24], failures[16];
	const char *params[4] = { site, idtext, failures, ev->error };

	snprintf(site, sizeof(site), "%d", ev->site_id);
	snprintf(idtext, sizeof(idtext), "%lld", (long long)id);
	snprintf(failures, sizeof(failures), "%d", ev->failures);
	if (with_error == 2)
		params[2] = ev->error;
	if (db_query(sql, with_error ? (with_error == 2 ? 3 : 4) : 2, params, ignore_result, "lost-contact mark") < 0)
		log_warning("site=%d id=%lld lost-contact mark not recorded: database down", ev->site_id,
		            (long long)id);
}

/* ---------------------------------------------------------------------
 * bus events
 * --------------------------------------------------------------------- */

/* answers_again: a meter or gateway (what, id) lost before answers again */
static void answers_again(const struct bus_event *ev, const char *what, int64_t id, const char *sql)
{
	log_info("site=%d %s=%lld answers again", ev->site_id, what, (long long)id);
	mark(sql, ev, id, 0);
}

static void on_sweep_done(const struct bus_event *ev)
{
	metrics_sweep(ev->site_id, ev->gateway_id, ev->duration_us);
	log_debug("site=%d gateway=%lld sweep: %d ok, %d failed, %lld ms", ev->site_id, (long long)ev->gateway_id,
	          ev->ok, ev->failures, (long long)(ev->duration_us / 1000));
	if (ag.cfg.once && ++ag.once_sweeps == ag.n_buses)
		begin_shutdown("--once: every gateway swept");
}

static void on_bus_event(struct bus_event *ev, void *arg)
{
	switch (ev->kind) {
	case BE_READING:
		metrics_read(ev->site_id, ev->gateway_id, NULL);
		delivery_add(&ev->reading);
		break;
	case BE_READ_FAILED:
		metrics_read(ev->site_id, ev->gateway_id, ev->err_kind);
		log_warning("site=%d gateway=%lld meter=%lld kind=%s failures=%d read failed: %s", ev->site_id,
		            (long long)ev->gateway_id, (long long)ev->meter_id, ev->err_kind, ev->failures, ev->error);
		break;
	case BE_METER_LOST:
		log_warning("site=%d meter=%lld lost after %d failures", ev->site_id, (long long)ev->meter_id,
		            ev->failures);
		mark("SELECT prepay.agent_meter_lost($1, $2, $3, $4)", ev, ev->meter_id, 1);
		break;
	case BE_GATEWAY_LOST:
		log_warning("site=%d gateway=%lld lost: %s", ev->site_id, (long long)ev->gateway_id, ev->error);
		mark("SELECT prepay.agent_gateway_lost($1, $2, $3)", ev, ev->gateway_id, 2);
		break;
	case BE_METER_FOUND:
		answers_again(ev, "meter", ev->meter_id, "SELECT prepay.agent_meter_found($1, $2)");
		break;
	case BE_GATEWAY_FOUND:
		answers_again(ev, "gateway", ev->gateway_id, "SELECT prepay.agent_gateway_found($1, $2)");
		break;
	case BE_SWEEP_DONE:
		on_sweep_done(ev);
		break;
	case BE_COMMAND_DONE:
		command_result(ev);
		break;
	}
}

/* ---------------------------------------------------------------------
 * signals and shutdown
 * --------------------------------------------------------------------- */

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	if ((delivery_idle() && notify_idle() && !db_pending()) || !db_connected() || --ag.flush_deadline_ticks <= 0)
		event_base_loopbreak(ag.base);
}

/* begin_shutdown: stop polling, then give delivery a few seconds to flush */
static void begin_shutdown(const char *why)
{
	if (ag.stopping) {
		log_warning("second stop request: exiting now");
		event_base_loopbreak(ag.base);
		return;
	}
	ag.stopping = 1;
	log_info("shutting down: %s", why);
	stop_all_buses();
	ag.flush_deadline_ticks = SHUTDOWN_FLUSH_SECONDS * 10;
	ag.flush_timer = event_new(ag.base, -1, EV_PERSIST, flush_cb, NULL);
	event_add(ag.flush_timer, &(struct timeval){ 0, 100000 });
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	if (sig == SIGHUP) {
		log_info("SIGHUP: reloading the catalog");
		if (db_connected())
			load_catalog();
		return;
	}
	begin_shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void once_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	if (!ag.catalog_loaded) {
		log_error("--once: no catalog from the database within 30 s");
		ag.exit_code = 1;
		begin_shutdown("--once timed out");
	}
}

static int setup_signals(void)
{
	signal(SIGPIPE, SIG_IGN);
	ag.sig_term = evsignal_new(ag.base, SIGTERM, signal_cb, NULL);
	ag.sig_int = evsignal_new(ag.base, SIGINT, signal_cb, NULL);
	ag.sig_hup = evsignal_new(ag.base, SIGHUP, signal_cb, NULL);
	return (evsignal_add(ag.sig_term, NULL) || evsignal_add(ag.sig_int, NULL) || evsignal_add(ag.sig_hup, NULL))
	               ? -1
	               : 0;
}

static void teardown(void)
{
	stop_all_buses();
	bus_teardown();      /* the last events: readings into the queue */
	delivery_teardown(); /* what was not committed goes to the spool */
	command_teardown();
	notify_teardown(); /* unfinished deliveries stay leased */
	db_teardown();
	metrics_teardown();
	spool_close();
	event_drop(&ag.flush_timer);
	event_drop(&ag.once_timer);
	event_free(ag.sig_term);
	event_free(ag.sig_int);
	event_free(ag.sig_hup);
	event_base_free(ag.base);
	libevent_global_shutdown();
}

/* ---------------------------------------------------------------------
 * main
 * --------------------------------------------------------------------- */

static int setup(void)
{
	if (evthread_use_pthreads() != 0 || !(ag.base = event_base_new())) {
		log_error("cannot initialise libevent");
		return -1;
	}
	if (setup_signals() < 0 || bus_setup(ag.base, on_bus_event, NULL) < 0)
		return -1;
	if (spool_open(ag.cfg.spool_dir, SPOOL_MAX_BYTES) < 0)
		return -1;
	if (metrics_setup(ag.base, ag.cfg.metrics) < 0 || delivery_setup(ag.base) < 0)
		return -1;
	if (command_setup(ag.base, ag.cfg.agent_id, find_bus) < 0)
		return -1;
	if (notify_setup(ag.base, ag.cfg.agent_id, strcmp(ag.cfg.notifications, "deliver") == 0 && !ag.cfg.once) < 0)
		return -1;
	if (ag.cfg.once) {
		ag.once_timer = evtimer_new(ag.base, once_timeout_cb, NULL);
		{
			struct timeval tv = { 30, 0 };

			evtimer_add(ag.once_timer, &tv);
		}
	}
	return db_setup(ag.base, ag.cfg.conninfo, on_db_state, on_notify, NULL);
}

int main(int argc, char **argv)
{
	int rc = config_load(&ag.cfg, argc, argv);

	if (rc != 0)
		return rc > 0 ? 0 : 1;
	if (config_validate(&ag.cfg) < 0)
		return 1;
	if (ag.cfg.check_only) {
		config_print(&ag.cfg);
		return 0;
	}
	log_set_level(log_parse_level(ag.cfg.log_level));
	log_info("prepay-agent starting: agent_id=%s libevent=%s libmodbus=%s libpq=%d", ag.cfg.agent_id,
	         event_get_version(), LIBMODBUS_VERSION_STRING, PQlibVersion());
	if (setup() < 0) {
		log_error("start-up failed");
		return 1;
	}
	event_base_dispatch(ag.base);
	teardown();
	log_info("prepay-agent stopped");
	return ag.exit_code;
}
