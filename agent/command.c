/*-------------------------------------------------------------------------
 * agent/command.c
 *     The agent's side of the command state machine (see sql/agent.sql):
 *
 *       prepay.agent_claim_commands  queued -> sent (on NOTIFY
 *                                    prepay_command, every second, and on
 *                                    each (re)connect, when it also takes
 *                                    back its own sent commands)
 *       bus thread                   write relay registers, read back
 *       prepay.agent_command_done    sent -> done, meter.relay_state
 *       prepay.agent_command_failed  sent -> queued after a backoff
 *                                    (2^attempts s, at most 60 s) while the
 *                                    account's state still calls for it
 *                                    (never abandoned: a command_failing
 *                                    alarm from the 5th attempt), or failed
 *                                    when superseded, no longer called for
 *                                    or impossible
 *       prepay.agent_commands_failing  every 5 s: the failing gauge
 *
 *     A retry waiting for its backoff becomes due at once when contact with
 *     its meter or gateway returns (the database sends NOTIFY
 *     prepay_command from agent_meter_found / agent_gateway_found) and
 *     when the agent (re)connects (claim with sent = true).
 *
 *     Commands handed to a bus thread are remembered until their result,
 *     so a re-claim never runs one twice at the same time.  Each meter's
 *     commands run on its gateway's thread, one after the other.  A result
 *     that cannot be reported (database down) is left as sent and claimed
 *     again on reconnect: relay commands are idempotent.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "command.h"
#include "alloc.h"
#include "db.h"
#include "event_drop.h"
#include "log.h"
#include "metrics.h"

struct inflight {
	int site_id;
	int64_t command_id;
	int64_t gateway_id;
	int attempts;
	int64_t t0_us;
	struct inflight *next;
};

static struct {
	char agent_id[128];
	command_find_bus_fn find_bus;
	struct event *timer;
	int claiming, again, reclaim;
	int ticks, counting;
	struct inflight *inflight;
} cm;

static int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct inflight **find_inflight(int site_id, int64_t command_id)
{
	struct inflight **p;

	for (p = &cm.inflight; *p; p = &(*p)->next)
		if ((*p)->site_id == site_id && (*p)->command_id == command_id)
			return p;
	return NULL;
}

static void report_done(PGresult *res, void *arg)
{
	if (res && PQresultStatus(res) != PGRES_TUPLES_OK)
		log_error("command: report refused (%s): %s", PQresultErrorField(res, PG_DIAG_SQLSTATE),
		          PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
}

/* failed_reported: the database queued the command again (a retry) or
 * failed it for good (superseded, no longer called for, or impossible) */
static void failed_reported(PGresult *res, void *arg)
{
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		report_done(res, arg);
		return;
	}
	if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "queued") == 0)
		metrics.command_retries++;
	else
		metrics.commands_abandoned++;
}

static void report_failed(int site_id, int64_t command_id, int attempts, const char *error)
{
	char site[16], id[24], retry[32];
	const char *params[4] = { site, id, error, retry };
	int delay = attempts >= 6 ? 60 : 1 << attempts;

	snprintf(site, sizeof(site), "%d", site_id);
	snprintf(id, sizeof(id), "%lld", (long long)command_id);
	snprintf(retry, sizeof(retry), "%d seconds", delay);
	if (db_query("SELECT prepay.agent_command_failed($1, $2, $3, $4::interval)", 4, params, failed_reported, NULL) <
	    0)
		log_warning("site=%d command=%lld result not reported (database down): it will be claimed again",
		            site_id, (long long)command_id);
}

/* dispatch: hand one claimed command to its bus thread */
static void dispatch(PGresult *res, int row)
{
	int site_id = atoi(PQgetvalue(res, row, 0));
	int64_t command_id = atoll(PQgetvalue(res, row, 1));
	int64_t gateway_id = atoll(PQgetvalue(res, row, 3));
	struct bus *b = cm.find_bus(site_id, gateway_id);
	struct command_job *job;
	struct inflight *f;

	if (find_inflight(site_id, command_id))
		return;
	if (!b) {
		log_warning("site=%d command=%lld gateway=%lld is not running", site_id, (long long)command_id,
		            (long long)gateway_id);
		report_failed(site_id, command_id, atoi(PQgetvalue(res, row, 5)), "gateway not running in the agent");
		return;
	}
	job = xcalloc(1, sizeof(*job));
	job->site_id = site_id;
	job->command_id = command_id;
	job->meter_id = atoll(PQgetvalue(res, row, 2));
	job->trip = strcmp(PQgetvalue(res, row, 4), "trip") == 0;
	f = xcalloc(1, sizeof(*f));
	f->site_id = site_id;
	f->command_id = command_id;
	f->gateway_id = gateway_id;
	f->attempts = atoi(PQgetvalue(res, row, 5));
	f->t0_us = mono_us();
	f->next = cm.inflight;
	cm.inflight = f;
	log_info("site=%d command=%lld meter=%lld action=%s attempt=%d sent to its bus", site_id, (long long)command_id,
	         (long long)job->meter_id, job->trip ? "trip" : "close", f->attempts);
	bus_submit(b, job);
}

static void claimed(PGresult *res, void *arg)
{
	cm.claiming = 0;
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
		for (int i = 0; i < PQntuples(res); i++)
			dispatch(res, i);
	else if (res)
		log_error("command: claim failed (%s): %s", PQresultErrorField(res, PG_DIAG_SQLSTATE),
		          PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
	if (cm.again) {
		cm.again = 0;
		command_claim(0);
	}
}

/* command_claim: take due commands (and, after a connect, our sent ones) */
void command_claim(int include_sent)
{
	const char *params[2] = { cm.agent_id, include_sent ? "true" : "false" };

	if (cm.claiming) {
		cm.again = 1;
		return;
	}
	if (db_query("SELECT * FROM prepay.agent_claim_commands($1, $2)", 2, params, claimed, NULL) == 0)
		cm.claiming = 1;
}

/* command_result: a bus thread finished a command */
void command_result(const struct bus_event *ev)
{
	struct inflight **p = find_inflight(ev->site_id, ev->command_id), *f;
	int64_t latency = 0;
	int attempts = 1;

	if (p) {
		f = *p;
		latency = mono_us() - f->t0_us;
		attempts = f->attempts;
		*p = f->next;
		free(f);
	}
	metrics_command(latency, ev->ok);
	if (ev->ok) {
		char site[16], id[24];
		const char *params[3] = { site, id, ev->relay };

		log_info("site=%d command=%lld meter=%lld done: relay %s, %lld ms", ev->site_id,
		         (long long)ev->command_id, (long long)ev->meter_id, ev->relay, (long long)(latency / 1000));
		snprintf(site, sizeof(site), "%d", ev->site_id);
		snprintf(id, sizeof(id), "%lld", (long long)ev->command_id);
		if (db_query("SELECT prepay.agent_command_done($1, $2, $3)", 3, params, report_done, NULL) < 0)
			log_warning(
			        "site=%d command=%lld result not reported (database down): it will be claimed again",
			        ev->site_id, (long long)ev->command_id);
		return;
	}
	log_warning("site=%d command=%lld meter=%lld failed: %s", ev->site_id, (long long)ev->command_id,
	            (long long)ev->meter_id, ev->error);
	report_failed(ev->site_id, ev->command_id, attempts, ev->error);
}

/* command_forget: a bus was stopped with its jobs; their commands stay sent
 * in the database and are claimed again after the next connect */
void command_forget(int site_id, int64_t gateway_id)
{
	struct inflight **p = &cm.inflight, *f;

	while ((f = *p))
		if (f->site_id == site_id && f->gateway_id == gateway_id) {
			*p = f->next;
			free(f);
		} else
			p = &f->next;
	cm.reclaim = 1;
}

static void counted(PGresult *res, void *arg)
{
	cm.counting = 0;
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		metrics.commands_failing = atoll(PQgetvalue(res, 0, 0));
	else
		report_done(res, arg);
}

/* count_failing: refresh the gauge of commands whose last attempt failed */
static void count_failing(void)
{
	const char *params[1] = { cm.agent_id };

	if (!cm.counting && db_query("SELECT prepay.agent_commands_failing($1)", 1, params, counted, NULL) == 0)
		cm.counting = 1;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	if (db_connected()) {
		command_claim(cm.reclaim);
		cm.reclaim = 0;
		if (++cm.ticks % 5 == 0)
			count_failing();
	}
}

int command_setup(struct event_base *base, const char *agent_id, command_find_bus_fn find_bus)
{
	snprintf(cm.agent_id, sizeof(cm.agent_id), "%s", agent_id);
	cm.find_bus = find_bus;
	cm.timer = event_new(base, -1, EV_PERSIST, timer_cb, NULL);
	return event_add(cm.timer, &(struct timeval){ 1, 0 });
}

void command_teardown(void)
{
	struct inflight *f, *next;

	event_drop(&cm.timer);
	for (f = cm.inflight; f; f = next) {
		next = f->next;
		free(f);
	}
	cm.inflight = NULL;
}
