/*-------------------------------------------------------------------------
 * agent/notify_curl.h
 *     libcurl's multi-socket interface driven by the agent's libevent
 *     loop: transfers run concurrently on the loop thread, and each calls
 *     back once when it ends.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_NOTIFY_CURL_H
#define AGENT_NOTIFY_CURL_H

#include <curl/curl.h>
#include <event2/event.h>

/* a transfer ended: result is CURLE_OK or the transport error, status the
 * HTTP status or last SMTP reply code (0 if none); the easy handle is
 * cleaned up after the callback returns */
typedef void (*ncurl_done_fn)(CURL *easy, CURLcode result, long status, void *arg);

int ncurl_setup(struct event_base *base);
int ncurl_start(CURL *easy, ncurl_done_fn fn, void *arg);
int ncurl_running(void);
void ncurl_teardown(void);

#endif
