/*-------------------------------------------------------------------------
 * agent/delivery.c
 *     Readings flow: bus thread -> inbox -> memory queue -> one multi-row
 *     INSERT (unnest of arrays) per batch.  A reading leaves the memory
 *     queue only when its INSERT committed.  Whenever the database is
 *     unreachable, or the spool still holds older readings, the memory
 *     queue is appended to the spool instead (the rating trigger needs each
 *     meter's readings in time order), and the spool is replayed first,
 *     batch by batch, each batch forgotten only after its commit.
 *     Duplicates (a replay after a crash) are skipped by prepay.reading's
 *     BEFORE trigger, so "at least once" here is "exactly once" there.
 *     The INSERT is as fast as a COPY into prepay.reading_intake at this
 *     batch size (docs/AGENT.md, "Delivery loses nothing"), so it stays.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "db.h"
#include "delivery.h"
#include "event_drop.h"
#include "log.h"
#include "metrics.h"
#include "spool.h"

static const char insert_sql[] =
        "INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley, power, "
        "relay_state) "
        "SELECT * FROM ROWS FROM (pg_catalog.unnest($1::integer[]), pg_catalog.unnest($2::bigint[]), "
        "pg_catalog.unnest($3::timestamptz[]), pg_catalog.unnest($4::numeric[]), pg_catalog.unnest($5::numeric[]), "
        "pg_catalog.unnest($6::numeric[]), pg_catalog.unnest($7::numeric[]), pg_catalog.unnest($8::numeric[]), "
        "pg_catalog.unnest($9::numeric[]), pg_catalog.unnest($10::prepay.relay_state[]))";

static struct {
	struct reading *q; /* memory queue: q[head .. head+n) */
	int head, n, cap;
	int inflight;       /* readings of the batch in flight, 0 if none */
	int from_spool;     /* the batch in flight came from the spool */
	size_t spool_bytes; /* ... and spans these bytes of it */
	struct reading *batch;
	struct event *kick_ev, *retry_ev;
} dv;

static void kick_cb(evutil_socket_t fd, short what, void *arg);

int delivery_setup(struct event_base *base)
{
	dv.batch = xcalloc(DELIVERY_BATCH, sizeof(struct reading));
	dv.kick_ev = event_new(base, -1, 0, kick_cb, NULL);
	dv.retry_ev = evtimer_new(base, kick_cb, NULL);
	return 0;
}

/* delivery_add: queue a reading; delivery starts after the current callback */
void delivery_add(const struct reading *r)
{
	if (dv.head + dv.n == dv.cap) {
		if (dv.head > 0) {
			memmove(dv.q, dv.q + dv.head, dv.n * sizeof(*dv.q));
			dv.head = 0;
		} else {
			dv.cap = dv.cap ? 2 * dv.cap : 256;
			dv.q = xrealloc_array(dv.q, dv.cap, sizeof(*dv.q));
		}
	}
	dv.q[dv.head + dv.n++] = *r;
	metrics.readings_polled++;
	event_active(dv.kick_ev, EV_TIMEOUT, 0);
}

/* spool_memory: move the memory queue (nothing of it in flight) to the spool */
static void spool_memory(void)
{
	if (dv.n == 0 || dv.inflight)
		return;
	if (spool_append(dv.q + dv.head, dv.n) == 0)
		metrics.readings_spooled += dv.n;
	else
		metrics.readings_dropped += dv.n;
	dv.head = dv.n = 0;
}

/* array_literal: one column of the batch as a PostgreSQL array literal */
static char *array_literal(const struct reading *r, int n, int col)
{
	struct evbuffer *buf = evbuffer_new();
	char *out;
	size_t len;

	evbuffer_add(buf, "{", 1);
	for (int i = 0; i < n; i++) {
		const char *v = col < 2 ? "" : col == 2 ? r[i].read_at : col == 9 ? r[i].relay : r[i].value[col - 3];

		if (i > 0)
			evbuffer_add(buf, ",", 1);
		if (col == 0)
			evbuffer_add_printf(buf, "%d", r[i].site_id);
		else if (col == 1)
			evbuffer_add_printf(buf, "%lld", (long long)r[i].meter_id);
		else if (!v[0])
			evbuffer_add(buf, "NULL", 4);
		else
			evbuffer_add_printf(buf, "\"%s\"", v);
	}
	evbuffer_add(buf, "}", 1);
	len = evbuffer_get_length(buf);
	out = xmalloc(len + 1);
	evbuffer_remove(buf, out, len);
	out[len] = '\0';
	evbuffer_free(buf);
	return out;
}

static void insert_done(PGresult *res, void *arg);

/* send_batch: INSERT n readings; the result arrives in insert_done */
static void send_batch(const struct reading *r, int n)
{
	char *params[10];

	for (int c = 0; c < 10; c++)
		params[c] = array_literal(r, n, c);
	dv.inflight = n;
	if (db_query(insert_sql, 10, (const char *const *)params, insert_done, NULL) < 0)
		dv.inflight = 0;
	for (int c = 0; c < 10; c++)
		free(params[c]);
}

static void insert_done(PGresult *res, void *arg)
{
	int n = dv.inflight;

	dv.inflight = 0;
	if (!res)
		log_warning("delivery: connection lost with %d readings in flight: they stay queued", n);
	else if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		metrics.delivery_errors++;
		log_error("delivery: INSERT of %d readings failed (%s): %s; retrying in 1 s", n,
		          PQresultErrorField(res, PG_DIAG_SQLSTATE), PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
		{
			struct timeval tv = { 1, 0 };

			evtimer_add(dv.retry_ev, &tv);
		}
		return;
	} else {
		metrics.readings_delivered += n;
		if (dv.from_spool) {
			metrics.readings_replayed += n;
			spool_consume(dv.spool_bytes);
		} else {
			dv.head += n;
			dv.n -= n;
		}
		log_debug("delivery: %d readings committed%s", n, dv.from_spool ? " from the spool" : "");
	}
	delivery_kick();
}

/* delivery_kick: send the next batch if the connection is free */
void delivery_kick(void)
{
	int n;

	if (dv.inflight || evtimer_pending(dv.retry_ev, NULL))
		return;
	if (!db_connected() || spool_pending()) {
		spool_memory();
		if (!db_connected() || !spool_pending())
			return;
		n = spool_peek(dv.batch, DELIVERY_BATCH, &dv.spool_bytes);
		if (n == 0) {
			spool_consume(dv.spool_bytes);
			return;
		}
		dv.from_spool = 1;
		send_batch(dv.batch, n);
		return;
	}
	if (dv.n == 0)
		return;
	n = dv.n < DELIVERY_BATCH ? dv.n : DELIVERY_BATCH;
	dv.from_spool = 0;
	send_batch(dv.q + dv.head, n);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	delivery_kick();
}

/* delivery_idle: nothing waits in memory and nothing is in flight */
int delivery_idle(void)
{
	return dv.n == 0 && dv.inflight == 0;
}

int delivery_queued(void)
{
	return dv.n;
}

/* delivery_teardown: whatever is not known to be committed goes to the spool */
void delivery_teardown(void)
{
	dv.inflight = 0;
	spool_memory();
	event_drop(&dv.kick_ev);
	event_drop(&dv.retry_ev);
	free(dv.q);
	free(dv.batch);
	memset(&dv, 0, sizeof(dv));
}
