/*-------------------------------------------------------------------------
 * agent/notify.c
 *     The delivery role of prepay-agent (sql/notify.sql has the state
 *     machine):
 *
 *       prepay.agent_claim_deliveries  due deliveries, leased to this agent
 *                                      (on NOTIFY prepay_notification, on
 *                                      every (re)connect, every 2 s, and
 *                                      again while a claim comes back full)
 *       libcurl (notify_curl.c)        webhook: HTTPS POST of the JSON
 *                                      document, signed; sms: the provider
 *                                      request; email: SMTP
 *       prepay.agent_delivery_done     2xx / message accepted (collected for
 *                                      20 ms and reported in one statement)
 *       prepay.agent_delivery_failed   anything else: the database decides
 *                                      retry (backoff) or dead letter
 *
 *     Every request carries the idempotency key prepay-<site>-<id>-<channel>
 *     (header Idempotency-Key; for e-mail the Message-ID).  A webhook also
 *     carries X-Prepay-Timestamp (Unix seconds) and X-Prepay-Signature:
 *     sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed by the channel
 *     secret>.  An outcome that cannot be reported (database down, agent
 *     killed) leaves the delivery leased: it is claimed again when the lease
 *     runs out and sent again with the same key.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "db.h"
#include "event_drop.h"
#include "log.h"
#include "notify.h"
#include "notify_curl.h"

enum { CH_WEBHOOK, CH_EMAIL, CH_SMS, NCHANNELS };
static const char *const channel_names[NCHANNELS] = { "webhook", "email", "sms" };

#define LATENCY_BUCKETS 10
static const double latency_bounds[LATENCY_BUCKETS] = { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300 };

struct job {
	int site_id;
	long long notification_id;
	int channel;
	int attempt;
	char key[96];
	double created_epoch;
	char *body;
	size_t body_len, body_off;
	struct curl_slist *headers, *rcpt;
	char errbuf[CURL_ERROR_SIZE];
	char resp[200];
	size_t resp_len;
	struct job *next;
};

/* successes waiting to be reported together (one round trip for many) */
#define DONE_BATCH    64
#define DONE_FLUSH_MS 20
struct done_rec {
	int site_id;
	long long notification_id;
	int channel;
	int attempt;
	long status;
};

static struct {
	int enabled;
	char agent_id[128];
	struct event *timer, *flush_timer;
	struct done_rec done[DONE_BATCH];
	int n_done;
	int claiming, again, stopping;
	int inflight;
	struct job *jobs;
	uint64_t sent[NCHANNELS], failed[NCHANNELS], retried[NCHANNELS], dead[NCHANNELS];
	uint64_t latency_bucket[NCHANNELS][LATENCY_BUCKETS + 1];
	double latency_sum[NCHANNELS];
} nt;

static int channel_index(const char *name)
{
	for (int i = 0; i < NCHANNELS; i++)
		if (strcmp(name, channel_names[i]) == 0)
			return i;
	return -1;
}

static void free_job(struct job *j)
{
	struct job **p;

	for (p = &nt.jobs; *p; p = &(*p)->next)
		if (*p == j) {
			*p = j->next;
			break;
		}
	curl_slist_free_all(j->headers);
	curl_slist_free_all(j->rcpt);
	free(j->body);
	free(j);
}

static int in_flight(int site_id, long long id, int channel)
{
	for (struct job *j = nt.jobs; j; j = j->next)
		if (j->site_id == site_id && j->notification_id == id && j->channel == channel)
			return 1;
	return 0;
}

/* ---------------------------------------------------------------------
 * reporting outcomes
 * --------------------------------------------------------------------- */

static void observe_latency(int ch, double created_epoch)
{
	struct timespec now;
	double s;
	int i;

	clock_gettime(CLOCK_REALTIME, &now);
	s = now.tv_sec + now.tv_nsec / 1e9 - created_epoch;
	if (s < 0)
		s = 0;
	for (i = 0; i < LATENCY_BUCKETS && s > latency_bounds[i]; i++)
		;
	nt.latency_bucket[ch][i]++;
	nt.latency_sum[ch] += s;
}

static void report_done_cb(PGresult *res, void *arg)
{
	if (res && PQresultStatus(res) != PGRES_TUPLES_OK)
		log_error("notify: delivery report refused (%s): %s", PQresultErrorField(res, PG_DIAG_SQLSTATE),
		          PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
}

static void report_failed_cb(PGresult *res, void *arg)
{
	int ch = (int)(intptr_t)arg;
	const char *outcome;

	if (!res)
		return;
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		report_done_cb(res, NULL);
		return;
	}
	outcome = PQgetvalue(res, 0, 0);
	if (strcmp(outcome, "retry") == 0)
		nt.retried[ch]++;
	else if (strcmp(outcome, "dead") == 0)
		nt.dead[ch]++;
}

/* flush_done: report the collected successes in one statement */
static void flush_done(void)
{
	size_t size = (size_t)nt.n_done * 24 + 8;
	char *arr[5];
	size_t len[5] = { 0 };
	const char *params[6] = { nt.agent_id };

	if (nt.n_done == 0)
		return;
	for (int a = 0; a < 5; a++) {
		arr[a] = xmalloc(size);
		arr[a][len[a]++] = '{';
	}
	for (int i = 0; i < nt.n_done; i++) {
		const struct done_rec *d = &nt.done[i];
		const char *sep = i ? "," : "";

		len[0] += snprintf(arr[0] + len[0], size - len[0], "%s%d", sep, d->site_id);
		len[1] += snprintf(arr[1] + len[1], size - len[1], "%s%lld", sep, d->notification_id);
		len[2] += snprintf(arr[2] + len[2], size - len[2], "%s%s", sep, channel_names[d->channel]);
		len[3] += snprintf(arr[3] + len[3], size - len[3], "%s%d", sep, d->attempt);
		if (d->status)
			len[4] += snprintf(arr[4] + len[4], size - len[4], "%s%ld", sep, d->status);
		else
			len[4] += snprintf(arr[4] + len[4], size - len[4], "%sNULL", sep);
	}
	for (int a = 0; a < 5; a++) {
		snprintf(arr[a] + len[a], size - len[a], "}");
		params[a + 1] = arr[a];
	}
	if (db_query("SELECT count(*) FROM (SELECT prepay.agent_delivery_done($1, u.s, u.n, u.c, u.a, u.st) "
	             "FROM ROWS FROM (pg_catalog.unnest($2::integer[]), pg_catalog.unnest($3::bigint[]), "
	             "pg_catalog.unnest($4::text[]), "
	             "pg_catalog.unnest($5::integer[]), pg_catalog.unnest($6::integer[])) "
	             "AS u (s, n, c, a, st)) x",
	             6, params, report_done_cb, NULL) < 0)
		log_warning("notify: %d deliveries not reported (database down): they are sent again when their lease "
		            "runs out",
		            nt.n_done);
	nt.n_done = 0;
	for (int a = 0; a < 5; a++)
		free(arr[a]);
}

static void flush_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	flush_done();
}

static void report(struct job *j, int ok, long status, const char *error)
{
	char site[16], id[24], attempt[16], st[24];
	const char *params[7] = {
		nt.agent_id, site, id, channel_names[j->channel], attempt, error, status ? st : NULL
	};

	if (ok) {
		nt.done[nt.n_done++] =
		        (struct done_rec){ j->site_id, j->notification_id, j->channel, j->attempt, status };
		if (nt.n_done == DONE_BATCH)
			flush_done();
		else if (!evtimer_pending(nt.flush_timer, NULL)) {
			struct timeval tv = { 0, DONE_FLUSH_MS * 1000 };

			evtimer_add(nt.flush_timer, &tv);
		}
		return;
	}
	snprintf(site, sizeof(site), "%d", j->site_id);
	snprintf(id, sizeof(id), "%lld", j->notification_id);
	snprintf(attempt, sizeof(attempt), "%d", j->attempt);
	snprintf(st, sizeof(st), "%ld", status);
	if (db_query("SELECT prepay.agent_delivery_failed($1, $2, $3, $4, $5, $6, $7)", 7, params, report_failed_cb,
	             (void *)(intptr_t)j->channel) < 0)
		log_warning("notify: %s outcome not reported (database down): it is sent again when its lease runs out",
		            j->key);
}

/* error_text: what went wrong, on one line */
static void error_text(struct job *j, CURLcode result, long status, char *buf, size_t size)
{
	if (result != CURLE_OK)
		snprintf(buf, size, "%s", j->errbuf[0] ? j->errbuf : curl_easy_strerror(result));
	else
		snprintf(buf, size, "HTTP %ld: %.*s", status, (int)j->resp_len, j->resp);
	for (char *c = buf; *c; c++)
		if (iscntrl((unsigned char)*c))
			*c = ' ';
}

static void transfer_done(CURL *easy, CURLcode result, long status, void *arg)
{
	struct job *j = arg;
	char error[512];
	int ok = result == CURLE_OK && (j->channel == CH_EMAIL || (status >= 200 && status <= 299));

	nt.inflight--;
	if (nt.stopping || result == CURLE_ABORTED_BY_CALLBACK) {
		free_job(j);
		return;
	}
	if (ok) {
		nt.sent[j->channel]++;
		observe_latency(j->channel, j->created_epoch);
		log_info("notify: %s attempt %d delivered (%ld)", j->key, j->attempt, status);
		report(j, 1, status, NULL);
	} else {
		error_text(j, result, status, error, sizeof(error));
		nt.failed[j->channel]++;
		/* an SMTP reply code is a status only when it refuses (4xx, 5xx) */
		if (result != CURLE_OK && !(j->channel == CH_EMAIL && status >= 400))
			status = 0;
		log_warning("notify: %s attempt %d failed: %s", j->key, j->attempt, error);
		report(j, 0, status, error);
	}
	free_job(j);
	if (nt.again && nt.inflight <= NOTIFY_MAX_INFLIGHT / 2)
		notify_kick(); /* refill in batches, not one claim per answer */
}

/* ---------------------------------------------------------------------
 * building the requests
 * --------------------------------------------------------------------- */

static size_t write_cb(char *data, size_t size, size_t n, void *arg)
{
	struct job *j = arg;
	size_t len = size * n, room = sizeof(j->resp) - j->resp_len;

	memcpy(j->resp + j->resp_len, data, len < room ? len : room);
	j->resp_len += len < room ? len : room;
	return len;
}

static size_t read_cb(char *buf, size_t size, size_t n, void *arg)
{
	struct job *j = arg;
	size_t len = j->body_len - j->body_off;

	if (len > size * n)
		len = size * n;
	memcpy(buf, j->body + j->body_off, len);
	j->body_off += len;
	return len;
}

static struct curl_slist *add_header(struct curl_slist *list, const char *fmt, const char *value)
{
	char line[1024];

	snprintf(line, sizeof(line), fmt, value);
	return curl_slist_append(list, line);
}

/* sign: X-Prepay-Signature over "<timestamp>.<body>" */
static void sign(struct job *j, const char *secret)
{
	char ts[24], hex[2 * EVP_MAX_MD_SIZE + 8];
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	size_t msg_len;
	char *msg;

	snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
	msg_len = strlen(ts) + 1 + j->body_len;
	msg = xmalloc(msg_len + 1);
	snprintf(msg, msg_len + 1, "%s.%s", ts, j->body);
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, msg_len, mac, &mac_len);
	free(msg);
	strcpy(hex, "sha256=");
	for (unsigned int i = 0; i < mac_len; i++)
		snprintf(hex + 7 + 2 * i, 3, "%02x", mac[i]);
	j->headers = add_header(j->headers, "X-Prepay-Timestamp: %s", ts);
	j->headers = add_header(j->headers, "X-Prepay-Signature: %s", hex);
}

static void http_request(CURL *e, struct job *j, const char *method, const char *headers, const char *secret)
{
	const char *line = headers;

	while (line && *line) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char buf[1024];

		if (len > 0 && len < sizeof(buf)) {
			memcpy(buf, line, len);
			buf[len] = '\0';
			j->headers = curl_slist_append(j->headers, buf);
		}
		line = end ? end + 1 : NULL;
	}
	j->headers = add_header(j->headers, "Idempotency-Key: %s", j->key);
	j->headers = curl_slist_append(j->headers, "Expect:");
	if (j->channel == CH_WEBHOOK && secret && *secret)
		sign(j, secret);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, j->headers);
	if (strcmp(method, "GET") == 0)
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	else {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)j->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, j->body);
		if (strcmp(method, "POST") != 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	}
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
}

static void mail_request(CURL *e, struct job *j, const char *tls, const char *user, const char *password,
                         const char *from, const char *to)
{
	char addr[512];

	snprintf(addr, sizeof(addr), "<%s>", from);
	curl_easy_setopt(e, CURLOPT_MAIL_FROM, addr);
	snprintf(addr, sizeof(addr), "<%s>", to);
	j->rcpt = curl_slist_append(NULL, addr);
	curl_easy_setopt(e, CURLOPT_MAIL_RCPT, j->rcpt);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	curl_easy_setopt(e, CURLOPT_USE_SSL, strcmp(tls, "none") == 0 ? (long)CURLUSESSL_NONE : (long)CURLUSESSL_ALL);
	if (user && *user) {
		curl_easy_setopt(e, CURLOPT_USERNAME, user);
		curl_easy_setopt(e, CURLOPT_PASSWORD, password ? password : "");
	}
	curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
	curl_easy_setopt(e, CURLOPT_READDATA, j);
	curl_easy_setopt(e, CURLOPT_INFILESIZE, (long)j->body_len);
}

/* trust: the channel's own certificate authorities (PEM), if it has them,
 * instead of the system's trust store; verification is never turned off */
static void trust(CURL *e, const char *ca_pem)
{
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (ca_pem && *ca_pem) {
		struct curl_blob blob = { (void *)ca_pem, strlen(ca_pem), CURL_BLOB_COPY };

		curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &blob);
		curl_easy_setopt(e, CURLOPT_CAPATH, NULL); /* only these, not /etc/ssl/certs too */
	}
}

/* start: one claimed row (columns of prepay.agent_claim_deliveries; a
 * database before ca_certificate has 15) */
static void start(PGresult *res, int row)
{
	const char *v[16];
	struct job *j;
	CURL *e;
	int ch;

	for (int c = 0; c < 16; c++)
		v[c] = c >= PQnfields(res) || PQgetisnull(res, row, c) ? NULL : PQgetvalue(res, row, c);
	ch = channel_index(v[2]);
	if (ch < 0 || in_flight(atoi(v[0]), atoll(v[1]), ch))
		return;
	j = xcalloc(1, sizeof(*j));
	j->site_id = atoi(v[0]);
	j->notification_id = atoll(v[1]);
	j->channel = ch;
	j->attempt = atoi(v[3]);
	snprintf(j->key, sizeof(j->key), "%s", v[4]);
	j->created_epoch = strtod(v[5], NULL);
	j->body = xstrdup(v[9] ? v[9] : "");
	j->body_len = strlen(j->body);
	j->next = nt.jobs;
	nt.jobs = j;
	e = curl_easy_init();
	curl_easy_setopt(e, CURLOPT_URL, v[6]);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, atol(v[14]));
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf);
	trust(e, v[15]);
	if (ch == CH_EMAIL)
		mail_request(e, j, v[7], v[11], v[10], v[12], v[13] ? v[13] : "");
	else
		http_request(e, j, v[7], v[8], v[10]);
	if (ncurl_start(e, transfer_done, j) < 0) {
		log_error("notify: %s cannot be started", j->key);
		curl_easy_cleanup(e);
		free_job(j);
		return;
	}
	nt.inflight++;
	log_debug("notify: %s attempt %d sending", j->key, j->attempt);
}

/* ---------------------------------------------------------------------
 * the claim loop
 * --------------------------------------------------------------------- */

static void claimed(PGresult *res, void *arg)
{
	int limit = (int)(intptr_t)arg;

	nt.claiming = 0;
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK) {
		for (int i = 0; i < PQntuples(res) && !nt.stopping; i++)
			start(res, i);
		if (PQntuples(res) >= limit)
			nt.again = 1; /* a full batch: there may be more */
	} else if (res)
		log_error("notify: claim failed (%s): %s", PQresultErrorField(res, PG_DIAG_SQLSTATE),
		          PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
	if (nt.again && nt.inflight <= NOTIFY_MAX_INFLIGHT / 2)
		notify_kick();
}

/* notify_kick: claim what is due, as far as there is room in flight */
void notify_kick(void)
{
	char limit_text[16];
	const char *params[2] = { nt.agent_id, limit_text };
	int limit = NOTIFY_MAX_INFLIGHT - nt.inflight;

	if (!nt.enabled || nt.stopping || !db_connected())
		return;
	if (nt.claiming || limit <= 0) {
		nt.again = 1;
		return;
	}
	nt.again = 0;
	snprintf(limit_text, sizeof(limit_text), "%d", limit);
	if (db_query("SELECT * FROM prepay.agent_claim_deliveries($1, $2)", 2, params, claimed,
	             (void *)(intptr_t)limit) == 0)
		nt.claiming = 1;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	notify_kick();
}

int notify_setup(struct event_base *base, const char *agent_id, int enabled)
{
	nt.enabled = enabled;
	snprintf(nt.agent_id, sizeof(nt.agent_id), "%s", agent_id);
	if (!enabled)
		return 0;
	if (ncurl_setup(base) < 0)
		return -1;
	nt.timer = event_new(base, -1, EV_PERSIST, timer_cb, NULL);
	nt.flush_timer = evtimer_new(base, flush_timer_cb, NULL);
	log_info("notify: delivering notifications as agent %s (libcurl %s)", agent_id,
	         curl_version_info(CURLVERSION_NOW)->version);
	return event_add(nt.timer, &(struct timeval){ NOTIFY_SWEEP_SECONDS, 0 });
}

int notify_enabled(void)
{
	return nt.enabled;
}

int notify_idle(void)
{
	return nt.inflight == 0 && nt.n_done == 0;
}

static void family(struct evbuffer *b, const char *name, const char *help, const uint64_t *v)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
	for (int c = 0; c < NCHANNELS; c++)
		evbuffer_add_printf(b, "%s{channel=\"%s\"} %llu\n", name, channel_names[c], (unsigned long long)v[c]);
}

/* notify_metrics: the delivery counters and the latency histogram */
void notify_metrics(struct evbuffer *b)
{
	if (!nt.enabled)
		return;
	family(b, "prepay_agent_notifications_sent_total",
	       "Notifications delivered (2xx, or the SMTP server took them).", nt.sent);
	family(b, "prepay_agent_notifications_failed_total", "Delivery attempts that failed.", nt.failed);
	family(b, "prepay_agent_notifications_retried_total", "Failed attempts the database scheduled again (backoff).",
	       nt.retried);
	family(b, "prepay_agent_notifications_dead_total",
	       "Deliveries given up (dead letter, alarm notification_dead).", nt.dead);
	evbuffer_add_printf(
	        b,
	        "# HELP prepay_agent_notifications_in_flight Deliveries being sent now.\n"
	        "# TYPE prepay_agent_notifications_in_flight gauge\nprepay_agent_notifications_in_flight %d\n",
	        nt.inflight);
	evbuffer_add_printf(b, "# HELP prepay_agent_notification_latency_seconds Notification written to delivered.\n"
	                       "# TYPE prepay_agent_notification_latency_seconds histogram\n");
	for (int c = 0; c < NCHANNELS; c++) {
		uint64_t cum = 0;

		for (int i = 0; i <= LATENCY_BUCKETS; i++) {
			cum += nt.latency_bucket[c][i];
			if (i < LATENCY_BUCKETS)
				evbuffer_add_printf(b,
				                    "prepay_agent_notification_latency_seconds_bucket{channel=\"%s\","
				                    "le=\"%g\"} %llu\n",
				                    channel_names[c], latency_bounds[i], (unsigned long long)cum);
		}
		evbuffer_add_printf(
		        b,
		        "prepay_agent_notification_latency_seconds_bucket{channel=\"%s\",le=\"+Inf\"} %llu\n"
		        "prepay_agent_notification_latency_seconds_sum{channel=\"%s\"} %.6f\n"
		        "prepay_agent_notification_latency_seconds_count{channel=\"%s\"} %llu\n",
		        channel_names[c], (unsigned long long)cum, channel_names[c], nt.latency_sum[c],
		        channel_names[c], (unsigned long long)cum);
	}
}

void notify_teardown(void)
{
	if (!nt.enabled)
		return;
	nt.stopping = 1;
	ncurl_teardown();
	while (nt.jobs)
		free_job(nt.jobs);
	event_drop(&nt.timer);
	event_drop(&nt.flush_timer);
}
