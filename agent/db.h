/*-------------------------------------------------------------------------
 * agent/db.h
 *     The agent's one database connection: libpq's asynchronous API driven
 *     by libevent on PQsocket, a queue of parameterised queries run one at
 *     a time, LISTEN/NOTIFY, and reconnection with backoff.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_DB_H
#define AGENT_DB_H

#include <event2/event.h>
#include <libpq-fe.h>

/* res is NULL when the connection was lost before the result arrived;
 * the db module clears res after the callback returns */
typedef void (*db_result_fn)(PGresult *res, void *arg);
typedef void (*db_state_fn)(int connected, void *arg);
typedef void (*db_notify_fn)(const char *channel, const char *payload, void *arg);

int db_setup(struct event_base *base, const char *conninfo, db_state_fn on_state, db_notify_fn on_notify, void *arg);
int db_query(const char *sql, int nparams, const char *const *params, db_result_fn fn, void *arg);
int db_connected(void);
int db_pending(void);
void db_teardown(void);

#endif
