/*-------------------------------------------------------------------------
 * test/sim/sim_control.c
 *	  The HTTP control server (libevent evhttp), run by the main thread:
 *
 *	  GET  /healthz                          "ok"
 *	  GET  /meters[?gateway=G]               one line per meter:
 *	       gateway unit energy_centikwh relay(closed|tripped) trips closes reads
 *	  GET  /hostile                          JSON: the hostile generator of
 *	       every hostile gateway (seed, budget, frames, done, served per kind)
 *	  POST /fault?gateway=G&mode=none|dead|silent|exception|corrupt|slow&ms=N
 *	  POST /fault?gateway=G&mode=hostile[&seed=S][&frames=N]
 *	  POST /load?gateway=G&unit=U&w=W
 *	  POST /relay?gateway=G&unit=U&state=closed|tripped   (not counted as a command)
 *
 * Answers are plain text; a bad request gets 400 and one line saying why.
 *
 * Locking: each handler takes one gateway lock at a time, around the
 * meters it reads or changes.
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "sim.h"

static struct evhttp *control_http;

/*
 * reply_text: send a plain-text answer.
 */
static void reply_text(struct evhttp_request *req, int code, const char *reason, struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; charset=utf-8");
	evhttp_send_reply(req, code, reason, body);
}

static void reply_line(struct evhttp_request *req, int code, const char *reason, const char *line)
{
	struct evbuffer *body = evbuffer_new();

	evbuffer_add_printf(body, "%s\n", line);
	reply_text(req, code, reason, body);
	evbuffer_free(body);
}

static void bad_request(struct evhttp_request *req, const char *why)
{
	reply_line(req, HTTP_BADREQUEST, "Bad Request", why);
}

/*
 * query_int: integer parameter `name` within [lo, hi]; false if missing or bad.
 */
static bool query_int(struct evkeyvalq *q, const char *name, long lo, long hi, long *out)
{
	const char *text = evhttp_find_header(q, name);
	char *end;

	if (text == NULL || *text == '\0')
		return false;
	*out = strtol(text, &end, 10);
	return *end == '\0' && *out >= lo && *out <= hi;
}

/*
 * parse_query: the request's query parameters into q (freed by the caller
 * with evhttp_clear_headers).
 */
static void parse_query(struct evhttp_request *req, struct evkeyvalq *q)
{
	const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));

	evhttp_parse_query_str(query ? query : "", q);
}

/*
 * find_meter: the gateway (locked on success) and meter named by the
 * request's gateway= and unit= parameters.
 */
static struct sim_meter *find_meter(struct sim *sim, struct evkeyvalq *q, struct sim_gateway **gw)
{
	long g, u;

	if (!query_int(q, "gateway", 0, sim->n_gateways - 1, &g) ||
	    !query_int(q, "unit", 1, sim->config.meters_per_gateway, &u))
		return NULL;
	*gw = &sim->gateways[g];
	pthread_mutex_lock(&(*gw)->lock);
	return &(*gw)->meters[u - 1];
}

static void print_gateway(struct evbuffer *body, struct sim_gateway *gw)
{
	int64_t now = sim_now_ms();

	pthread_mutex_lock(&gw->lock);
	for (int u = 1; u <= gw->n_meters; u++) {
		struct sim_meter *m = &gw->meters[u - 1];

		meter_advance(m, now);
		evbuffer_add_printf(body, "%d %d %" PRId64 " %s %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", gw->index, u,
		                    m->energy_ck, m->tripped ? "tripped" : "closed", m->trips, m->closes, m->reads);
	}
	pthread_mutex_unlock(&gw->lock);
}

static void get_meters(struct evhttp_request *req, struct sim *sim, struct evkeyvalq *q)
{
	struct evbuffer *body = evbuffer_new();
	long only;
	bool one = evhttp_find_header(q, "gateway") != NULL;

	if (one && !query_int(q, "gateway", 0, sim->n_gateways - 1, &only)) {
		evbuffer_free(body);
		bad_request(req, "gateway out of range");
		return;
	}
	for (int g = 0; g < sim->n_gateways; g++)
		if (!one || g == only)
			print_gateway(body, &sim->gateways[g]);
	reply_text(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
}

/*
 * get_hostile: the hostile generators as JSON, one object per gateway whose
 * fault is hostile; done once the frame budget is spent.
 */
static void get_hostile(struct evhttp_request *req, struct sim *sim)
{
	struct evbuffer *body = evbuffer_new();
	const char *sep = "";

	evbuffer_add_printf(body, "{\"gateways\": [");
	for (int g = 0; g < sim->n_gateways; g++) {
		struct sim_gateway *gw = &sim->gateways[g];
		struct sim_hostile h;
		bool hostile;

		pthread_mutex_lock(&gw->lock);
		hostile = gw->fault.mode == FAULT_HOSTILE;
		h = gw->hostile;
		pthread_mutex_unlock(&gw->lock);
		if (!hostile)
			continue;
		evbuffer_add_printf(body,
		                    "%s\n  {\"gateway\": %d, \"seed\": %" PRIu64 ", \"budget\": %" PRIu64
		                    ", \"frames\": %" PRIu64 ", \"done\": %s, \"served\": {",
		                    sep, g, h.seed, h.budget, h.frames,
		                    h.budget > 0 && h.frames >= h.budget ? "true" : "false");
		for (int k = 0; k < HOSTILE_KINDS; k++)
			evbuffer_add_printf(body, "%s\"%s\": %" PRIu64, k ? ", " : "", hostile_kind_name(k),
			                    h.served[k]);
		evbuffer_add_printf(body, "}}");
		sep = ",";
	}
	evbuffer_add_printf(body, "%s]}\n", *sep ? "\n" : "");
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	evhttp_send_reply(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
}

static void post_fault(struct evhttp_request *req, struct sim *sim, struct evkeyvalq *q)
{
	const char *mode = evhttp_find_header(q, "mode");
	const char *ms = evhttp_find_header(q, "ms");
	char spec[64];
	struct sim_fault fault;
	long g;

	if (!query_int(q, "gateway", 0, sim->n_gateways - 1, &g) || mode == NULL) {
		bad_request(req, "need gateway=G (in range) and mode=");
		return;
	}
	if (strcmp(mode, "slow") == 0)
		snprintf(spec, sizeof(spec), "slow=%s", ms ? ms : "");
	else if (strcmp(mode, "hostile") == 0) {
		const char *seed = evhttp_find_header(q, "seed");
		const char *frames = evhttp_find_header(q, "frames");

		snprintf(spec, sizeof(spec), "hostile=%s%s%s", seed ? seed : "0", frames ? ":" : "",
		         frames ? frames : "");
	} else
		snprintf(spec, sizeof(spec), "%s", mode);
	if (!fault_parse(spec, &fault)) {
		bad_request(req, "mode must be none, dead, silent, exception, corrupt, slow (with ms=N) "
		                 "or hostile (with seed=S and frames=N, both optional)");
		return;
	}
	pthread_mutex_lock(&sim->gateways[g].lock);
	sim->gateways[g].fault = fault;
	hostile_reset(&sim->gateways[g].hostile, fault.seed, fault.frames);
	pthread_mutex_unlock(&sim->gateways[g].lock);
	reply_line(req, HTTP_OK, "OK", "ok");
}

static void post_load(struct evhttp_request *req, struct sim *sim, struct evkeyvalq *q)
{
	struct sim_gateway *gw;
	struct sim_meter *m;
	long w;

	if (!query_int(q, "w", 0, 10000000, &w)) {
		bad_request(req, "need w=WATTS (0..10000000)");
		return;
	}
	if ((m = find_meter(sim, q, &gw)) == NULL) {
		bad_request(req, "need gateway=G and unit=U in range");
		return;
	}
	meter_set_load(m, (int32_t)w);
	pthread_mutex_unlock(&gw->lock);
	reply_line(req, HTTP_OK, "OK", "ok");
}

static void post_relay(struct evhttp_request *req, struct sim *sim, struct evkeyvalq *q)
{
	const char *state = evhttp_find_header(q, "state");
	struct sim_gateway *gw;
	struct sim_meter *m;
	bool trip;

	if (state == NULL || (strcmp(state, "closed") != 0 && strcmp(state, "tripped") != 0)) {
		bad_request(req, "need state=closed|tripped");
		return;
	}
	trip = strcmp(state, "tripped") == 0;
	if ((m = find_meter(sim, q, &gw)) == NULL) {
		bad_request(req, "need gateway=G and unit=U in range");
		return;
	}
	meter_set_relay(m, trip);
	/* as if written through the profile's relay registers */
	m->relay_regs[0] = 1;
	m->relay_regs[1] = trip;
	if (strcmp(sim->config.profile->name, "adf400l") == 0)
		m->relay_regs[0] = trip ? 0x0100 : 0x0001;
	pthread_mutex_unlock(&gw->lock);
	reply_line(req, HTTP_OK, "OK", "ok");
}

/*
 * route: dispatch on method and path.
 */
static void route(struct evhttp_request *req, void *arg)
{
	struct sim *sim = arg;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	bool post = evhttp_request_get_command(req) == EVHTTP_REQ_POST;
	struct evkeyvalq q;

	parse_query(req, &q);
	if (path == NULL)
		bad_request(req, "no path");
	else if (strcmp(path, "/healthz") == 0)
		reply_line(req, HTTP_OK, "OK", "ok");
	else if (strcmp(path, "/meters") == 0)
		get_meters(req, sim, &q);
	else if (strcmp(path, "/hostile") == 0)
		get_hostile(req, sim);
	else if (!post && (strcmp(path, "/fault") == 0 || strcmp(path, "/load") == 0 || strcmp(path, "/relay") == 0))
		reply_line(req, 405, "Method Not Allowed", "use POST");
	else if (strcmp(path, "/fault") == 0)
		post_fault(req, sim, &q);
	else if (strcmp(path, "/load") == 0)
		post_load(req, sim, &q);
	else if (strcmp(path, "/relay") == 0)
		post_relay(req, sim, &q);
	else
		reply_line(req, HTTP_NOTFOUND, "Not Found", "unknown path");
	evhttp_clear_headers(&q);
}

/*
 * control_start: listen on "127.0.0.1:PORT".
 */
int control_start(struct sim *sim, struct event_base *base, const char *listen)
{
	char host[256];
	const char *colon = strrchr(listen, ':');
	long port;
	char *end;

	if (colon == NULL || colon == listen || (size_t)(colon - listen) >= sizeof(host))
		return -1;
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || port < 1 || port > 65535)
		return -1;
	control_http = evhttp_new(base);
	if (control_http == NULL)
		return -1;
	evhttp_set_allowed_methods(control_http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	evhttp_set_gencb(control_http, route, sim);
	return evhttp_bind_socket(control_http, host, (uint16_t)port);
}

void control_stop(void)
{
	if (control_http)
		evhttp_free(control_http);
	control_http = NULL;
}
