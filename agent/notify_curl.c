/*-------------------------------------------------------------------------
 * agent/notify_curl.c
 *     libcurl's multi-socket interface on the libevent loop.  curl tells us
 *     which sockets to watch (CURLMOPT_SOCKETFUNCTION: one event per socket,
 *     re-assigned with event_assign when curl changes what it waits for)
 *     and when to wake it (CURLMOPT_TIMERFUNCTION: one timer); both call
 *     curl_multi_socket_action, and finished transfers are collected with
 *     curl_multi_info_read.  No thread, no blocking call.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#include <event2/event_struct.h>
#include <stdlib.h>

#include "alloc.h"
#include "log.h"
#include "notify_curl.h"

struct sock_watch {
	struct event ev;
	int added;
};

struct transfer {
	CURL *easy;
	ncurl_done_fn fn;
	void *arg;
	struct transfer *prev, *next;
};

static struct {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	int running; /* curl's count of running transfers */
	int active;  /* transfers added and not yet called back */
	struct transfer *list;
} nc;

static void unlink_transfer(struct transfer *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		nc.list = t->next;
	if (t->next)
		t->next->prev = t->prev;
	nc.active--;
}

static void collect(void)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(nc.multi, &left))) {
		CURL *easy = msg->easy_handle;
		CURLcode result = msg->data.result;
		struct transfer *t = NULL;
		long status = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
		curl_multi_remove_handle(nc.multi, easy);
		if (t) {
			unlink_transfer(t);
			t->fn(easy, result, status, t->arg);
			free(t);
		}
		curl_easy_cleanup(easy);
	}
}

static void socket_event_cb(evutil_socket_t fd, short what, void *arg)
{
	int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);

	curl_multi_socket_action(nc.multi, fd, action, &nc.running);
	collect();
	if (nc.running <= 0 && evtimer_pending(nc.timer, NULL))
		evtimer_del(nc.timer);
}

static void timer_event_cb(evutil_socket_t fd, short what, void *arg)
{
	curl_multi_socket_action(nc.multi, CURL_SOCKET_TIMEOUT, 0, &nc.running);
	collect();
}

/* curl: watch (or stop watching) a socket */
static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct sock_watch *w = socketp;
	short kind;

	if (what == CURL_POLL_REMOVE) {
		if (w) {
			if (w->added)
				event_del(&w->ev);
			free(w);
			curl_multi_assign(nc.multi, s, NULL);
		}
		return 0;
	}
	if (!w) {
		w = xcalloc(1, sizeof(*w));
		curl_multi_assign(nc.multi, s, w);
	} else if (w->added) {
		event_del(&w->ev);
	}
	kind = ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST;
	event_assign(&w->ev, nc.base, s, kind, socket_event_cb, NULL);
	event_add(&w->ev, NULL);
	w->added = 1;
	return 0;
}

/* curl: wake me in timeout_ms (-1: no timer) */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

	if (timeout_ms < 0)
		evtimer_del(nc.timer);
	else
		evtimer_add(nc.timer, &tv);
	return 0;
}

int ncurl_setup(struct event_base *base)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error("notify: cannot initialise libcurl");
		return -1;
	}
	nc.base = base;
	nc.multi = curl_multi_init();
	nc.timer = evtimer_new(base, timer_event_cb, NULL);
	curl_multi_setopt(nc.multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(nc.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	return 0;
}

/* ncurl_start: run a prepared easy handle; fn is called once when it ends */
int ncurl_start(CURL *easy, ncurl_done_fn fn, void *arg)
{
	struct transfer *t = xcalloc(1, sizeof(*t));

	t->easy = easy;
	t->fn = fn;
	t->arg = arg;
	curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
	if (curl_multi_add_handle(nc.multi, easy) != CURLM_OK) {
		free(t);
		return -1;
	}
	t->next = nc.list;
	if (nc.list)
		nc.list->prev = t;
	nc.list = t;
	nc.active++;
	return 0;
}

int ncurl_running(void)
{
	return nc.active;
}

/* ncurl_teardown: abandon the transfers still running; their callbacks get
 * CURLE_ABORTED_BY_CALLBACK (the deliveries stay leased and are claimed
 * again when the lease runs out) */
void ncurl_teardown(void)
{
	struct transfer *t;

	if (!nc.multi)
		return;
	while ((t = nc.list)) {
		CURL *easy = t->easy;

		unlink_transfer(t);
		curl_multi_remove_handle(nc.multi, easy);
		t->fn(easy, CURLE_ABORTED_BY_CALLBACK, 0, t->arg);
		free(t);
		curl_easy_cleanup(easy);
	}
	curl_multi_cleanup(nc.multi);
	nc.multi = NULL;
	event_free(nc.timer);
	nc.timer = NULL;
	curl_global_cleanup();
}
