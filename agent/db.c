/*-------------------------------------------------------------------------
 * agent/db.c
 *     The database connection as an explicit state machine:
 *
 *       DOWN --retry timer--> CONNECTING --PQconnectPoll OK--> READY
 *         ^                       |                              |
 *         +------- failure -------+------ connection lost -------+
 *
 *     CONNECTING re-arms EV_READ or EV_WRITE on PQsocket as PQconnectPoll
 *     asks.  READY keeps a persistent EV_READ on the socket: PQconsumeInput,
 *     then the results of the query in flight (PQisBusy / PQgetResult until
 *     NULL), then every notification (PQnotifies) after each consume.  Queries
 *     wait in a FIFO and are sent one at a time (PQsendQueryParams, PQflush
 *     with EV_WRITE until flushed).  On loss, the query in flight and the
 *     queued ones get a NULL result, and a timer reconnects with backoff
 *     (0.5 s doubling to 5 s); the caller (main.c) re-LISTENs and resyncs.
 *     on_state(0) reports a lost connection, and also the failure of the
 *     very first attempt (the database is unreachable at start), once.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "alloc.h"
#include "event_drop.h"
#include "log.h"

enum db_state { DB_DOWN, DB_CONNECTING, DB_READY };

struct query {
	char *sql;
	int nparams;
	char **params;
	db_result_fn fn;
	void *arg;
	struct query *next;
};

static struct {
	struct event_base *base;
	char *conninfo;
	enum db_state state;
	PGconn *conn;
	struct event *sock_ev, *write_ev, *retry_ev;
	int backoff_ms;
	struct query *head, *tail, *inflight;
	PGresult *result;
	db_state_fn on_state;
	db_notify_fn on_notify;
	void *arg;
	int ever_ready;       /* connected at least once */
	int told_unreachable; /* on_state(0) sent for a failed first attempt */
} db;

static void start_connect(void);
static void pump(void);

static void free_query(struct query *q)
{
	for (int i = 0; i < q->nparams; i++)
		free(q->params[i]);
	free(q->params);
	free(q->sql);
	free(q);
}

static void clear_sock_events(void)
{
	event_drop(&db.sock_ev);
	event_drop(&db.write_ev);
}

/* fail_queries: the connection is gone; every waiting query gets NULL */
static void fail_queries(void)
{
	struct query *q = db.inflight, *next;

	db.inflight = NULL;
	if (db.result)
		PQclear(db.result);
	db.result = NULL;
	if (q) {
		q->fn(NULL, q->arg);
		free_query(q);
	}
	while ((q = db.head)) {
		db.head = q->next;
		if (!db.head)
			db.tail = NULL;
		next = q->next;
		q->fn(NULL, q->arg);
		free_query(q);
		(void)next;
	}
}

/* lost: close, fail what waits, schedule a reconnect */
static void lost(const char *why)
{
	int was_ready = db.state == DB_READY;
	struct timeval tv = { db.backoff_ms / 1000, (db.backoff_ms % 1000) * 1000 };

	log_warning("database %s: %s; retrying in %d ms", was_ready ? "connection lost" : "unreachable", why,
	            db.backoff_ms);
	clear_sock_events();
	if (db.conn)
		PQfinish(db.conn);
	db.conn = NULL;
	db.state = DB_DOWN;
	fail_queries();
	db.backoff_ms = db.backoff_ms * 2 > 5000 ? 5000 : db.backoff_ms * 2;
	evtimer_add(db.retry_ev, &tv);
	if (was_ready || (!db.ever_ready && !db.told_unreachable)) {
		db.told_unreachable = 1;
		db.on_state(0, db.arg);
	}
}

static const char *conn_error(void)
{
	static char buf[512];
	char *nl;

	snprintf(buf, sizeof(buf), "%s", db.conn ? PQerrorMessage(db.conn) : "out of memory");
	while ((nl = strchr(buf, '\n')))
		*nl = ' ';
	return buf;
}

/* notice_receiver: a WARNING (readings refused, PY120 and PY121) is logged as one */
static void notice_receiver(void *arg, const PGresult *res)
{
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (severity && strcmp(severity, "WARNING") == 0)
		log_warning("database warning %s: %s", sqlstate ? sqlstate : "",
		            PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
	else
		log_info("database notice: %s", PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
}

static void drain_notifies(void)
{
	PGnotify *n;

	while ((n = PQnotifies(db.conn))) {
		db.on_notify(n->relname, n->extra, db.arg);
		PQfreemem(n);
	}
}

/* collect: take the results of the query in flight; 1 when it is complete */
static int collect(void)
{
	while (db.inflight && !PQisBusy(db.conn)) {
		PGresult *res = PQgetResult(db.conn);

		if (res) {
			if (db.result)
				PQclear(db.result);
			db.result = res;
			continue;
		}
		{
			struct query *q = db.inflight;
			PGresult *r = db.result;

			db.inflight = NULL;
			db.result = NULL;
			q->fn(r, q->arg);
			PQclear(r);
			free_query(q);
		}
		return 1;
	}
	return 0;
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	if (!PQconsumeInput(db.conn) || PQstatus(db.conn) != CONNECTION_OK) {
		lost(conn_error());
		return;
	}
	drain_notifies();
	if (collect()) {
		if (db.state == DB_READY)
			pump();
	}
	if (db.state == DB_READY)
		drain_notifies();
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
	int rc = PQflush(db.conn);

	if (rc < 0)
		lost(conn_error());
	else if (rc > 0)
		event_add(db.write_ev, NULL);
}

/* pump: send the next query if none is in flight */
static void pump(void)
{
	struct query *q;
	int rc;

	if (db.state != DB_READY || db.inflight || !db.head)
		return;
	q = db.head;
	db.head = q->next;
	if (!db.head)
		db.tail = NULL;
	db.inflight = q;
	if (!PQsendQueryParams(db.conn, q->sql, q->nparams, NULL, (const char *const *)q->params, NULL, NULL, 0)) {
		lost(conn_error());
		return;
	}
	rc = PQflush(db.conn);
	if (rc < 0)
		lost(conn_error());
	else if (rc > 0)
		event_add(db.write_ev, NULL);
}

static void ready(void)
{
	db.state = DB_READY;
	db.ever_ready = 1;
	db.backoff_ms = 500;
	PQsetnonblocking(db.conn, 1);
	PQsetNoticeReceiver(db.conn, notice_receiver, NULL);
	clear_sock_events();
	db.sock_ev = event_new(db.base, PQsocket(db.conn), EV_READ | EV_PERSIST, read_cb, NULL);
	db.write_ev = event_new(db.base, PQsocket(db.conn), EV_WRITE, write_cb, NULL);
	event_add(db.sock_ev, NULL);
	log_info("database connected: server %d, backend pid %d", PQserverVersion(db.conn), PQbackendPID(db.conn));
	db.on_state(1, db.arg);
	pump();
}

static void connect_cb(evutil_socket_t fd, short what, void *arg)
{
	switch (PQconnectPoll(db.conn)) {
	case PGRES_POLLING_OK:
		ready();
		return;
	case PGRES_POLLING_FAILED:
		lost(conn_error());
		return;
	case PGRES_POLLING_READING:
		clear_sock_events();
		db.sock_ev = event_new(db.base, PQsocket(db.conn), EV_READ, connect_cb, NULL);
		break;
	default:
		clear_sock_events();
		db.sock_ev = event_new(db.base, PQsocket(db.conn), EV_WRITE, connect_cb, NULL);
		break;
	}
	event_add(db.sock_ev, NULL);
}

static void start_connect(void)
{
	db.conn = PQconnectStart(db.conninfo);
	if (!db.conn || PQstatus(db.conn) == CONNECTION_BAD) {
		lost(conn_error());
		return;
	}
	db.state = DB_CONNECTING;
	clear_sock_events();
	db.sock_ev = event_new(db.base, PQsocket(db.conn), EV_WRITE, connect_cb, NULL);
	event_add(db.sock_ev, NULL);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	start_connect();
}

/* db_setup: start connecting; callbacks run on the loop thread */
int db_setup(struct event_base *base, const char *conninfo, db_state_fn on_state, db_notify_fn on_notify, void *arg)
{
	db.base = base;
	db.conninfo = xstrdup(conninfo);
	db.on_state = on_state;
	db.on_notify = on_notify;
	db.arg = arg;
	db.backoff_ms = 500;
	db.retry_ev = evtimer_new(base, retry_cb, NULL);
	start_connect();
	return 0;
}

/* db_query: queue a query; -1 (and fn is never called) when not connected */
int db_query(const char *sql, int nparams, const char *const *params, db_result_fn fn, void *arg)
{
	struct query *q;

	if (db.state != DB_READY)
		return -1;
	q = xcalloc(1, sizeof(*q));
	q->sql = xstrdup(sql);
	q->nparams = nparams;
	q->params = xcalloc(nparams + 1, sizeof(char *));
	for (int i = 0; i < nparams; i++)
		q->params[i] = params[i] ? xstrdup(params[i]) : NULL;
	q->fn = fn;
	q->arg = arg;
	if (db.tail)
		db.tail->next = q;
	else
		db.head = q;
	db.tail = q;
	pump();
	return 0;
}

int db_connected(void)
{
	return db.state == DB_READY;
}

int db_pending(void)
{
	return db.inflight != NULL || db.head != NULL;
}

/* db_teardown: close; waiting queries get NULL */
void db_teardown(void)
{
	clear_sock_events();
	event_drop(&db.retry_ev);
	if (db.conn)
		PQfinish(db.conn);
	db.conn = NULL;
	db.state = DB_DOWN;
	fail_queries();
	free(db.conninfo);
	db.conninfo = NULL;
}
