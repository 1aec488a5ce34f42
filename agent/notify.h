/*-------------------------------------------------------------------------
 * agent/notify.h
 *     The delivery role: the notification outbox (prepay.notification, see
 *     sql/notify.sql) delivered by webhook, e-mail and SMS through libcurl.
 *     Enabled per agent (config key notifications = deliver).
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_NOTIFY_H
#define AGENT_NOTIFY_H

#include <event2/buffer.h>
#include <event2/event.h>

/* how many deliveries run at the same time, and how often the outbox is
 * swept for retries that came due (besides NOTIFY and every reconnect) */
#define NOTIFY_MAX_INFLIGHT  32
#define NOTIFY_SWEEP_SECONDS 2

int notify_setup(struct event_base *base, const char *agent_id, int enabled);
int notify_enabled(void);
void notify_kick(void);
int notify_idle(void);
void notify_metrics(struct evbuffer *b);
void notify_teardown(void);

#endif
