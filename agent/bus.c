/*-------------------------------------------------------------------------
 * agent/bus.c
 *     Gateway worker threads and the inbox that carries their results to
 *     the loop thread.
 *
 *     A bus thread sleeps until its next sweep or until a command job
 *     arrives.  A sweep reads every meter of the gateway once; between two
 *     meters it runs waiting command jobs first, so a command waits at
 *     most for one meter's read.  A command writes the relay registers and
 *     reads the relay state back.  Every outcome is posted as a bus_event.
 *     Lost contact: BUS_LOST_AFTER consecutive failures of a meter (or
 *     sweeps in which no meter answered, for the gateway) post *_LOST; the
 *     first good read posts *_FOUND.
 *
 * Locking:
 *     bus->mu protects bus->stop and the job list (bus_submit, bus_stop on
 *     the loop thread; the bus thread takes jobs).  Everything else in a
 *     struct bus (its gateway copy, the modbus context, failure counts)
 *     belongs to the bus thread alone.
 *     inbox_mu protects the inbox list; bus threads append and call
 *     event_active (libevent is set up with evthread_use_pthreads), the
 *     loop thread takes the whole list in inbox_cb.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <modbus.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "alloc.h"
#include "event_drop.h"
#include "log.h"

#define BLOCK_MAX 125 /* registers per FC03 request */

struct bus {
	struct gateway *gw;
	int once;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;
	struct command_job *jobs;
	modbus_t *ctx;
	int connected;
	int last_errno;
	int *failures; /* consecutive failures per meter */
	int *lost;     /* per meter */
	int gw_failed_sweeps;
	int gw_lost;
};

static pthread_mutex_t inbox_mu = PTHREAD_MUTEX_INITIALIZER;
static struct bus_event *inbox_head, *inbox_tail;
static struct event *inbox_ev;
static bus_event_fn inbox_fn;
static void *inbox_arg;

/* ---------------------------------------------------------------------
 * the inbox
 * --------------------------------------------------------------------- */

static void inbox_cb(evutil_socket_t fd, short what, void *arg)
{
	struct bus_event *ev, *next;

	pthread_mutex_lock(&inbox_mu);
	ev = inbox_head;
	inbox_head = inbox_tail = NULL;
	pthread_mutex_unlock(&inbox_mu);
	for (; ev; ev = next) {
		next = ev->next;
		inbox_fn(ev, inbox_arg);
		free(ev);
	}
}

/* post: hand an event to the loop thread (any thread) */
static void post(struct bus_event *ev)
{
	ev->next = NULL;
	pthread_mutex_lock(&inbox_mu);
	if (inbox_tail)
		inbox_tail->next = ev;
	else
		inbox_head = ev;
	inbox_tail = ev;
	pthread_mutex_unlock(&inbox_mu);
	event_active(inbox_ev, EV_READ, 0);
}

int bus_setup(struct event_base *base, bus_event_fn fn, void *arg)
{
	inbox_fn = fn;
	inbox_arg = arg;
	inbox_ev = event_new(base, -1, 0, inbox_cb, NULL);
	return inbox_ev ? 0 : -1;
}

/* bus_teardown: deliver what is left in the inbox, free it (all buses stopped) */
void bus_teardown(void)
{
	inbox_cb(-1, 0, NULL);
	event_drop(&inbox_ev);
}

static struct bus_event *new_event(struct bus *b, enum bus_event_kind kind)
{
	struct bus_event *ev = xcalloc(1, sizeof(*ev));

	ev->kind = kind;
	ev->site_id = b->gw->site_id;
	ev->gateway_id = b->gw->gateway_id;
	return ev;
}

/* ---------------------------------------------------------------------
 * time
 * --------------------------------------------------------------------- */

static int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* utc_now: the read time as PostgreSQL timestamptz text */
static void utc_now(char *out, size_t size)
{
	struct timeval tv;
	struct tm tm;
	char date[24];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(out, size, "%s.%06ld+00", date, (long)tv.tv_usec);
}

/* ---------------------------------------------------------------------
 * modbus
 * --------------------------------------------------------------------- */

static const char *err_kind(int e)
{
	if (e == ETIMEDOUT)
		return "timeout";
	if (e > MODBUS_ENOBASE && e <= EMBXGTAR)
		return "exception";
	if (e == EMBBADCRC || e == EMBBADDATA || e == EMBBADEXC || e == EMBMDATA || e == EMBBADSLAVE || e == EMBUNKEXC)
		return "corrupt";
	return "connection";
}

static void bus_drop(struct bus *b)
{
	if (b->connected)
		modbus_close(b->ctx);
	b->connected = 0;
}

/* bus_after_error: after a failed request, make sure the next one starts
 * from a clean line (a late reply must not be taken for the next one) */
static void bus_after_error(struct bus *b, int e)
{
	b->last_errno = e;
	if (strcmp(err_kind(e), "exception") == 0)
		return;
	if (strcmp(b->gw->transport, "rtu") == 0)
		modbus_flush(b->ctx);
	else
		bus_drop(b);
}

/* bus_timeouts: the whole reply must arrive within the response timeout: a
 * quarter of the poll interval within 0.2-2 s, plus, on a serial line, the
 * time the longest frame takes at its baud rate.  The byte timeout is off:
 * with one, libmodbus waits up to it for each further byte, so a device
 * trickling bytes just faster than that held the bus for the whole frame
 * (up to 260 bytes x 100 ms per request, sweeps and commands waiting) */
static void bus_timeouts(struct bus *b)
{
	int64_t ms = b->gw->poll_interval_ms / 4;

	ms = ms < 200 ? 200 : ms > 2000 ? 2000 : ms;
	if (strcmp(b->gw->transport, "tcp") != 0 && b->gw->baud > 0)
		ms += (int64_t)MODBUS_RTU_MAX_ADU_LENGTH * 11 * 1000 / b->gw->baud + 1;
	modbus_set_response_timeout(b->ctx, ms / 1000, (ms % 1000) * 1000);
	modbus_set_byte_timeout(b->ctx, 0, 0);
}

static modbus_t *bus_new_ctx(struct bus *b, char *err, size_t errsz)
{
	struct gateway *gw = b->gw;
	char port[16];

	if (strcmp(gw->transport, "tcp") == 0) {
		snprintf(port, sizeof(port), "%d", gw->port);
		return modbus_new_tcp_pi(gw->host, port);
	}
	if (strcmp(gw->transport, "rtu") == 0)
		return modbus_new_rtu(gw->serial_device, gw->baud, gw->parity, gw->data_bits, gw->stop_bits);
	snprintf(err, errsz, "transport %s is not supported by libmodbus %s", gw->transport, LIBMODBUS_VERSION_STRING);
	return NULL;
}

/* bus_open: a connected context, or -1 with err set */
static int bus_open(struct bus *b, char *err, size_t errsz)
{
	if (!b->ctx) {
		b->ctx = bus_new_ctx(b, err, errsz);
		if (!b->ctx) {
			if (!err[0])
				snprintf(err, errsz, "cannot create the modbus context: %s", strerror(errno));
			b->last_errno = EINVAL;
			return -1;
		}
		bus_timeouts(b);
	}
	if (b->connected)
		return 0;
	if (modbus_connect(b->ctx) == -1) {
		b->last_errno = errno;
		snprintf(err, errsz, "connect: %s", modbus_strerror(errno));
		return -1;
	}
	b->connected = 1;
	if (strcmp(b->gw->transport, "rtu") == 0 && modbus_rtu_set_serial_mode(b->ctx, MODBUS_RTU_RS485) == -1)
		log_debug("gateway=%s RS-485 mode not available (%s): using the line as it is", b->gw->name,
		          modbus_strerror(errno));
	return 0;
}

static int bus_read(struct bus *b, int addr, int count, uint16_t *dst, char *err, size_t errsz)
{
	if (modbus_read_registers(b->ctx, addr, count, dst) == count)
		return 0;
	snprintf(err, errsz, "read %04XH+%d: %s", addr, count, modbus_strerror(errno));
	bus_after_error(b, errno);
	return -1;
}

/* ---------------------------------------------------------------------
 * polling a meter
 * --------------------------------------------------------------------- */

/* read_values: read the profile's registers, merging adjacent ones into
 * one request, into raw[meaning][0..1] */
static int read_values(struct bus *b, const struct profile *p, uint16_t raw[M_COUNT][2], char *err, size_t errsz)
{
	int order[M_COUNT], n = 0;

	for (int i = 0; i < M_COUNT; i++)
		if (p->regs[i].present)
			order[n++] = i;
	for (int i = 1; i < n; i++) /* by address (insertion sort) */
		for (int j = i; j > 0 && p->regs[order[j]].address < p->regs[order[j - 1]].address; j--) {
			int t = order[j];
			order[j] = order[j - 1];
			order[j - 1] = t;
		}
	for (int i = 0; i < n;) {
		uint16_t block[BLOCK_MAX];
		int start = p->regs[order[i]].address, end = i, len;

		len = profile_reg_count(p->regs[order[i]].type);
		while (end + 1 < n && p->regs[order[end + 1]].address == start + len &&
		       len + profile_reg_count(p->regs[order[end + 1]].type) <= BLOCK_MAX)
			len += profile_reg_count(p->regs[order[++end]].type);
		if (bus_read(b, start, len, block, err, errsz) < 0)
			return -1;
		for (; i <= end; i++)
			memcpy(raw[order[i]], block + (p->regs[order[i]].address - start),
			       profile_reg_count(p->regs[order[i]].type) * sizeof(uint16_t));
	}
	return 0;
}

/* read_relay: the relay state read back, "" when the profile cannot tell */
static int read_relay(struct bus *b, const struct profile *p, char *relay, char *err, size_t errsz)
{
	uint16_t regs[2];
	const char *state;

	relay[0] = '\0';
	if (p->relay_read_address < 0)
		return 0;
	if (bus_read(b, p->relay_read_address, p->relay_read_count, regs, err, errsz) < 0)
		return -1;
	state = profile_relay_state(p, regs);
	if (state)
		strcpy(relay, state);
	return 0;
}

/* poll_meter: one reading; -1 on a failed request, -2 if the gateway is unreachable */
static int poll_meter(struct bus *b, const struct meter *m, struct reading *rd, char *err, size_t errsz)
{
	uint16_t raw[M_COUNT][2];
	const struct profile *p = &m->profile;

	if (bus_open(b, err, errsz) < 0)
		return -2;
	modbus_set_slave(b->ctx, m->unit_id);
	rd->site_id = m->site_id;
	rd->meter_id = m->meter_id;
	utc_now(rd->read_at, sizeof(rd->read_at));
	if (read_values(b, p, raw, err, errsz) < 0 || read_relay(b, p, rd->relay, err, errsz) < 0)
		return -1;
	for (int i = 0; i < M_COUNT; i++)
		if (p->regs[i].present && profile_decode(&p->regs[i], raw[i], rd->value[i], VALUE_LEN) < 0) {
			snprintf(err, errsz, "register %04XH does not decode", p->regs[i].address);
			b->last_errno = EMBBADDATA;
			return -1;
		}
	if (!rd->value[M_ENERGY][0]) {
		snprintf(err, errsz, "profile %s has no total_energy register", p->name);
		b->last_errno = EINVAL;
		return -1;
	}
	return 0;
}

/* meter_result: post the reading or the failure, and lost/found marks */
static void meter_result(struct bus *b, int i, struct bus_event *ev, int rc, const char *err)
{
	const struct meter *m = &b->gw->meters[i];

	ev->meter_id = m->meter_id;
	if (rc == 0) {
		ev->kind = BE_READING;
		b->failures[i] = 0;
		post(ev);
		if (b->lost[i]) {
			struct bus_event *found = new_event(b, BE_METER_FOUND);

			b->lost[i] = 0;
			found->meter_id = m->meter_id;
			post(found);
		}
		return;
	}
	ev->kind = BE_READ_FAILED;
	ev->err_kind = rc == -2 ? "connection" : err_kind(b->last_errno);
	ev->failures = ++b->failures[i];
	snprintf(ev->error, sizeof(ev->error), "%s", err);
	if (b->failures[i] >= BUS_LOST_AFTER && !b->lost[i]) {
		struct bus_event *lost = new_event(b, BE_METER_LOST);

		b->lost[i] = 1;
		lost->meter_id = m->meter_id;
		lost->failures = b->failures[i];
		snprintf(lost->error, sizeof(lost->error), "%s", err);
		post(ev);
		post(lost);
		return;
	}
	post(ev);
}

/* gateway_result: lost when no meter answered BUS_LOST_AFTER sweeps in a row */
static void gateway_result(struct bus *b, int ok, int tried, const char *err)
{
	struct bus_event *ev;

	if (ok > 0) {
		b->gw_failed_sweeps = 0;
		if (b->gw_lost) {
			b->gw_lost = 0;
			post(new_event(b, BE_GATEWAY_FOUND));
		}
		return;
	}
	if (tried == 0 || ++b->gw_failed_sweeps < BUS_LOST_AFTER || b->gw_lost)
		return;
	b->gw_lost = 1;
	ev = new_event(b, BE_GATEWAY_LOST);
	snprintf(ev->error, sizeof(ev->error), "%s", err);
	post(ev);
}

static int stopping(struct bus *b)
{
	int stop;

	pthread_mutex_lock(&b->mu);
	stop = b->stop;
	pthread_mutex_unlock(&b->mu);
	return stop;
}

static void run_jobs(struct bus *b);

/* sweep: read every meter once */
static void sweep(struct bus *b)
{
	int64_t t0 = mono_us();
	int ok = 0, tried = 0, unreachable = 0;
	char err[256] = "";
	struct bus_event *done;

	for (int i = 0; i < b->gw->n_meters && !stopping(b); i++) {
		struct bus_event *ev;
		int rc = -2;

		run_jobs(b);
		if (!b->gw->meters[i].has_profile)
			continue;
		ev = new_event(b, BE_READING);
		tried++;
		if (!unreachable) {
			err[0] = '\0';
			rc = poll_meter(b, &b->gw->meters[i], &ev->reading, err, sizeof(err));
		}
		unreachable = unreachable || rc == -2;
		ok += rc == 0;
		meter_result(b, i, ev, rc, err);
	}
	gateway_result(b, ok, tried, err);
	done = new_event(b, BE_SWEEP_DONE);
	done->ok = ok;
	done->failures = tried - ok;
	done->duration_us = mono_us() - t0;
	post(done);
}

/* ---------------------------------------------------------------------
 * commands
 * --------------------------------------------------------------------- */

static const struct meter *find_meter(struct bus *b, int64_t meter_id)
{
	for (int i = 0; i < b->gw->n_meters; i++)
		if (b->gw->meters[i].meter_id == meter_id && b->gw->meters[i].has_profile)
			return &b->gw->meters[i];
	return NULL;
}

/* relay_command: write the relay registers, read the state back (a few
 * tries: a relay takes a moment to move) */
static int relay_command(struct bus *b, const struct meter *m, int trip, char *relay, char *err, size_t errsz)
{
	const struct profile *p = &m->profile;
	const char *want = trip ? "tripped" : "closed";

	if (p->relay_write_address < 0) {
		snprintf(err, errsz, "profile %s has no remote relay", p->name);
		return -1;
	}
	if (bus_open(b, err, errsz) < 0)
		return -1;
	modbus_set_slave(b->ctx, m->unit_id);
	if (modbus_write_registers(b->ctx, p->relay_write_address, trip ? p->trip_n : p->close_n,
	                           trip ? p->trip : p->close) == -1) {
		snprintf(err, errsz, "write %04XH: %s", p->relay_write_address, modbus_strerror(errno));
		bus_after_error(b, errno);
		return -1;
	}
	for (int attempt = 0; attempt < 3; attempt++) {
		if (attempt > 0)
			usleep(200000);
		if (read_relay(b, p, relay, err, errsz) < 0)
			continue;
		if (p->relay_read_address < 0 || strcmp(relay, want) == 0)
			return 0;
		snprintf(err, errsz, "relay reads %s after %s", relay[0] ? relay : "an unknown state",
		         trip ? "trip" : "close");
	}
	return -1;
}

static void run_command(struct bus *b, struct command_job *job)
{
	struct bus_event *ev = new_event(b, BE_COMMAND_DONE);
	const struct meter *m = find_meter(b, job->meter_id);
	int64_t t0 = mono_us();

	ev->meter_id = job->meter_id;
	ev->command_id = job->command_id;
	ev->site_id = job->site_id;
	if (!m)
		snprintf(ev->error, sizeof(ev->error), "meter %lld is not polled on gateway %s",
		         (long long)job->meter_id, b->gw->name);
	else
		ev->ok = relay_command(b, m, job->trip, ev->relay, ev->error, sizeof(ev->error)) == 0;
	if (!ev->ok && m)
		ev->err_kind = err_kind(b->last_errno);
	ev->duration_us = mono_us() - t0;
	post(ev);
}

static void run_jobs(struct bus *b)
{
	struct command_job *job, *next;

	pthread_mutex_lock(&b->mu);
	job = b->jobs;
	b->jobs = NULL;
	pthread_mutex_unlock(&b->mu);
	for (; job; job = next) {
		next = job->next;
		run_command(b, job);
		free(job);
	}
}

/* ---------------------------------------------------------------------
 * the thread
 * --------------------------------------------------------------------- */

/* wait_until: sleep until deadline (monotonic us), a job or stop; 1 if stopping */
static int wait_until(struct bus *b, int64_t deadline)
{
	struct timespec ts = { .tv_sec = deadline / 1000000, .tv_nsec = (deadline % 1000000) * 1000 };
	int stop;

	pthread_mutex_lock(&b->mu);
	while (!b->stop && !b->jobs && mono_us() < deadline)
		pthread_cond_timedwait(&b->cv, &b->mu, &ts);
	stop = b->stop;
	pthread_mutex_unlock(&b->mu);
	return stop;
}

static void *bus_main(void *arg)
{
	struct bus *b = arg;
	int64_t next = mono_us(), interval = b->gw->poll_interval_ms * 1000;

	log_info("gateway=%s transport=%s meters=%d poll_interval_ms=%lld bus thread started", b->gw->name,
	         b->gw->transport, b->gw->n_meters, (long long)b->gw->poll_interval_ms);
	while (!wait_until(b, next)) {
		int64_t now;

		run_jobs(b);
		now = mono_us();
		if (now < next)
			continue;
		sweep(b);
		if (b->once)
			break;
		next += interval;
		now = mono_us();
		if (next < now)
			next = now;
	}
	run_jobs(b);
	bus_drop(b);
	if (b->ctx)
		modbus_free(b->ctx);
	b->ctx = NULL;
	return NULL;
}

/* bus_start: start a thread for gw (ownership passes to the bus) */
struct bus *bus_start(struct gateway *gw, int once)
{
	struct bus *b = xcalloc(1, sizeof(*b));
	pthread_condattr_t attr;

	b->gw = gw;
	b->once = once;
	b->gw_lost = gw->lost;
	b->failures = xcalloc(gw->n_meters + 1, sizeof(int));
	b->lost = xcalloc(gw->n_meters + 1, sizeof(int));
	for (int i = 0; i < gw->n_meters; i++)
		b->lost[i] = gw->meters[i].lost;
	pthread_mutex_init(&b->mu, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&b->cv, &attr);
	pthread_condattr_destroy(&attr);
	if (pthread_create(&b->thread, NULL, bus_main, b) != 0) {
		log_error("gateway=%s cannot start its thread: %s", gw->name, strerror(errno));
		b->thread = 0;
		bus_stop(b);
		return NULL;
	}
	return b;
}

/* bus_stop: stop and join the thread (it finishes the request under way,
 * bounded by the response timeout), free the bus; jobs not run are dropped
 * and come back from the database as sent commands */
void bus_stop(struct bus *b)
{
	struct command_job *job, *next;

	pthread_mutex_lock(&b->mu);
	b->stop = 1;
	pthread_cond_signal(&b->cv);
	pthread_mutex_unlock(&b->mu);
	if (b->thread)
		pthread_join(b->thread, NULL);
	for (job = b->jobs; job; job = next) {
		next = job->next;
		free(job);
	}
	pthread_mutex_destroy(&b->mu);
	pthread_cond_destroy(&b->cv);
	catalog_free_gateway(b->gw);
	free(b->failures);
	free(b->lost);
	free(b);
}

const struct gateway *bus_gateway(const struct bus *b)
{
	return b->gw;
}

/* bus_submit: queue a command job for the bus thread (loop thread) */
void bus_submit(struct bus *b, struct command_job *job)
{
	struct command_job **tail;

	job->next = NULL;
	pthread_mutex_lock(&b->mu);
	for (tail = &b->jobs; *tail; tail = &(*tail)->next)
		;
	*tail = job;
	pthread_cond_signal(&b->cv);
	pthread_mutex_unlock(&b->mu);
}
