/*-------------------------------------------------------------------------
 * test/sim/sim_gateway.c
 *	  One simulated gateway: a Modbus-TCP port on 127.0.0.1 or a Modbus-RTU
 *	  serial line, served by its own thread, one request at a time (like
 *	  the RS-485 bus behind a real gateway).  libmodbus does the framing.
 *
 * A TCP gateway accepts several connections and polls them all, but serves
 * one request at a time.  An RTU line serves every unit id 1..M; libmodbus
 * 3.1.6 filters RTU requests on one slave id and then expects the other
 * slave's answer on the bus, so a request for another unit is served from
 * the frame libmodbus received and the receiving context is replaced by a
 * fresh one on the same descriptor (rtu_rearm).
 *
 * Faults: dead = accept and read, never answer nor parse; silent = parse,
 * never answer; exception = answer exception 04 to everything; corrupt =
 * answer with a wrong transaction id and protocol id (TCP) or a wrong CRC
 * (RTU); slow = answer after slow_ms; hostile = a seeded random choice of
 * valid and malformed replies per request (sim_hostile.c).  libmodbus cannot
 * produce a wrong frame, so corrupt frames alone are written by hand
 * (send_corrupt here, and the hostile generator's).
 *
 * Locking: the meters and the fault are read and changed under gw->lock,
 * held only while computing a reply (never during I/O or sleeps).  Each
 * thread owns its contexts, sockets and scratch mapping.
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <modbus.h>

#include "sim.h"

#define MAX_CLIENTS       32
#define POLL_MS           200
#define MAP_REGISTERS     0x1000 /* every mapped address is below this */
#define FC_READ_HOLDING   0x03
#define FC_WRITE_MULTIPLE 0x10

/* A decoded request and the reply computed for it. */
struct exchange {
	int unit;
	int fc;
	int addr;
	int qty;
	int exception; /* 0: normal reply */
	bool no_reply;
	bool energy_read;
	int64_t energy_ck;
	bool tripped;
	int hostile; /* kind of reply (HOSTILE_VALID unless hostile) */
	uint64_t hostile_seed;
	uint16_t regs[MODBUS_MAX_READ_REGISTERS];
};

/* What one gateway thread owns. */
struct worker {
	struct sim *sim;
	struct sim_gateway *gw;
	modbus_t *ctx;  /* TCP: shared by the clients; RTU: receives */
	modbus_t *line; /* RTU: owns the serial descriptor */
	modbus_mapping_t *map;
	int fd; /* TCP: listening socket; RTU: the line */
	int clients[MAX_CLIENTS];
	int n_clients;
};

static const char *const fault_names[] = {
	[FAULT_NONE] = "none",           [FAULT_DEAD] = "dead",       [FAULT_SILENT] = "silent",
	[FAULT_EXCEPTION] = "exception", [FAULT_CORRUPT] = "corrupt", [FAULT_SLOW] = "slow",
	[FAULT_HOSTILE] = "hostile",
};

const char *fault_name(enum sim_fault_mode mode)
{
	return fault_names[mode];
}

/*
 * parse_hostile: "SEED" or "SEED:FRAMES" (decimal) after "hostile=".
 */
static bool parse_hostile(const char *text, struct sim_fault *fault)
{
	char *end;

	if (*text < '0' || *text > '9')
		return false;
	errno = 0;
	fault->seed = strtoull(text, &end, 10);
	if (*end == ':') {
		text = end + 1;
		if (*text < '0' || *text > '9')
			return false;
		fault->frames = strtoull(text, &end, 10);
	}
	return errno == 0 && *end == '\0';
}

/*
 * fault_parse: "none", "dead", "silent", "exception", "corrupt", "slow=MS",
 * "hostile", "hostile=SEED", "hostile=SEED:FRAMES".
 */
bool fault_parse(const char *text, struct sim_fault *fault)
{
	char *end;

	*fault = (struct sim_fault){ FAULT_NONE, 0, 0, 0 };
	if (strcmp(text, "hostile") == 0 || strncmp(text, "hostile=", 8) == 0) {
		fault->mode = FAULT_HOSTILE;
		return text[7] == '\0' || parse_hostile(text + 8, fault);
	}
	if (strncmp(text, "slow=", 5) == 0) {
		long ms = strtol(text + 5, &end, 10);

		if (*end != '\0' || ms < 0 || ms > 600000)
			return false;
		*fault = (struct sim_fault){ FAULT_SLOW, (int)ms, 0, 0 };
		return true;
	}
	for (int mode = FAULT_NONE; mode < FAULT_SLOW; mode++)
		if (strcmp(text, fault_names[mode]) == 0) {
			fault->mode = mode;
			return true;
		}
	return false;
}

/*
 * decode: unit, function, address and quantity of a received request.
 */
static void decode(modbus_t *ctx, const uint8_t *req, struct exchange *x)
{
	int hl = modbus_get_header_length(ctx);

	*x = (struct exchange){ 0 };
	x->unit = req[hl - 1];
	x->fc = req[hl];
	x->addr = (req[hl + 1] << 8) | req[hl + 2];
	x->qty = (req[hl + 3] << 8) | req[hl + 4];
}

/*
 * serve_read: FC03 from one meter.
 */
static void serve_read(const struct sim_profile *p, struct sim_meter *m, struct exchange *x)
{
	if (x->qty < 1 || x->qty > MODBUS_MAX_READ_REGISTERS) {
		x->exception = EXC_ILLEGAL_VALUE;
		return;
	}
	x->exception = profile_read(p, m, x->addr, x->qty, x->regs);
	if (x->exception == 0 && x->addr <= p->energy_addr && p->energy_addr < x->addr + x->qty) {
		m->reads++;
		x->energy_read = true;
		x->energy_ck = m->energy_ck;
		x->tripped = m->tripped;
	}
}

/*
 * serve_write: FC16 to one meter.
 */
static void serve_write(const struct sim_profile *p, struct sim_meter *m, const uint8_t *pdu, struct exchange *x)
{
	uint16_t values[MODBUS_MAX_WRITE_REGISTERS];

	if (x->qty < 1 || x->qty > MODBUS_MAX_WRITE_REGISTERS || pdu[5] != 2 * x->qty) {
		x->exception = EXC_ILLEGAL_VALUE;
		return;
	}
	for (int i = 0; i < x->qty; i++)
		values[i] = (uint16_t)((pdu[6 + 2 * i] << 8) | pdu[7 + 2 * i]);
	x->exception = p->write(m, x->addr, x->qty, values);
}

/*
 * serve: compute the reply to one request under the gateway lock.
 */
static void serve(struct worker *w, const uint8_t *req, struct exchange *x, struct sim_fault *fault)
{
	struct sim_gateway *gw = w->gw;
	const uint8_t *pdu = req + modbus_get_header_length(w->ctx);

	decode(w->ctx, req, x);
	pthread_mutex_lock(&gw->lock);
	*fault = gw->fault;
	if (fault->mode == FAULT_HOSTILE && x->unit != 0)
		x->hostile = hostile_pick(&gw->hostile, &x->hostile_seed);
	if (fault->mode == FAULT_SILENT || x->unit == 0)
		x->no_reply = true;
	else if (fault->mode == FAULT_EXCEPTION)
		x->exception = EXC_SERVER_FAILURE;
	else if (x->unit > gw->n_meters) {
		/* nobody on the bus answers; a TCP gateway says so */
		x->exception = EXC_GATEWAY_TARGET;
		x->no_reply = gw->transport == TRANSPORT_RTU;
	} else {
		struct sim_meter *m = &gw->meters[x->unit - 1];

		meter_advance(m, sim_now_ms());
		if (x->fc == FC_READ_HOLDING)
			serve_read(w->sim->config.profile, m, x);
		else if (x->fc == FC_WRITE_MULTIPLE)
			serve_write(w->sim->config.profile, m, pdu, x);
		else
			x->exception = EXC_ILLEGAL_FUNCTION;
	}
	pthread_mutex_unlock(&gw->lock);
}

/*
 * sim_crc16: the Modbus RTU CRC (polynomial 0xA001, reflected), for the
 * frames the simulator corrupts on purpose (here and in sim_hostile.c).
 */
uint16_t sim_crc16(const uint8_t *buf, int len)
{
	uint16_t crc = 0xFFFF;

	for (int i = 0; i < len; i++) {
		crc ^= buf[i];
		for (int bit = 0; bit < 8; bit++)
			crc = (crc & 1) ? (crc >> 1) ^ 0xA001 : crc >> 1;
	}
	return crc;
}

/*
 * reply_pdu: the PDU of the reply to x (function code onwards).
 */
static int reply_pdu(const struct exchange *x, uint8_t *pdu)
{
	int n = 0;

	if (x->exception) {
		pdu[n++] = (uint8_t)(x->fc | 0x80);
		pdu[n++] = (uint8_t)x->exception;
		return n;
	}
	pdu[n++] = (uint8_t)x->fc;
	if (x->fc == FC_READ_HOLDING) {
		pdu[n++] = (uint8_t)(2 * x->qty);
		for (int i = 0; i < x->qty; i++) {
			pdu[n++] = (uint8_t)(x->regs[i] >> 8);
			pdu[n++] = (uint8_t)x->regs[i];
		}
		return n;
	}
	pdu[n++] = (uint8_t)(x->addr >> 8);
	pdu[n++] = (uint8_t)x->addr;
	pdu[n++] = (uint8_t)(x->qty >> 8);
	pdu[n++] = (uint8_t)x->qty;
	return n;
}

/*
 * send_corrupt: a reply that no client may accept.  TCP: transaction id off
 * by one and protocol id 0xFFFF; RTU: the CRC inverted.
 */
static void send_corrupt(struct worker *w, int fd, const uint8_t *req, const struct exchange *x)
{
	uint8_t frame[8 + MODBUS_MAX_PDU_LENGTH];
	int n;
	ssize_t sent;

	if (w->gw->transport == TRANSPORT_TCP) {
		int tid = ((req[0] << 8) | req[1]) + 1;
		int len = reply_pdu(x, frame + 7);

		frame[0] = (uint8_t)(tid >> 8);
		frame[1] = (uint8_t)tid;
		frame[2] = frame[3] = 0xFF;
		frame[4] = (uint8_t)((len + 1) >> 8);
		frame[5] = (uint8_t)(len + 1);
		frame[6] = (uint8_t)x->unit;
		n = 7 + len;
	} else {
		uint16_t crc;

		frame[0] = (uint8_t)x->unit;
		n = 1 + reply_pdu(x, frame + 1);
		crc = (uint16_t)~sim_crc16(frame, n);
		frame[n++] = (uint8_t)crc;
		frame[n++] = (uint8_t)(crc >> 8);
	}
	sent = send(fd, frame, (size_t)n, MSG_NOSIGNAL);
	if (sent < 0 && errno == ENOTSOCK)
		sent = write(fd, frame, (size_t)n);
	(void)sent;
}

/*
 * pause_ms: sleep for a slow gateway, waking early when the simulator stops.
 */
static void pause_ms(struct worker *w, int ms)
{
	while (ms > 0 && !w->sim->stopping) {
		int step = ms < 50 ? ms : 50;
		struct timespec ts = { 0, (long)step * 1000000L };

		nanosleep(&ts, NULL);
		ms -= step;
	}
}

/*
 * send_hostile: a hostile reply other than the valid one; true when it
 * carried the meter's right registers.
 */
static bool send_hostile(struct worker *w, int fd, const uint8_t *req, int len, const struct exchange *x)
{
	struct hostile_reply r = {
		.ctx = w->ctx,
		.map = w->map,
		.fd = fd,
		.tcp = w->gw->transport == TRANSPORT_TCP,
		.req = req,
		.req_len = len,
		.unit = x->unit,
		.fc = x->fc,
		.addr = x->addr,
		.qty = x->qty,
		.exception = x->exception,
		.regs = x->fc == FC_READ_HOLDING && x->exception == 0 ? x->regs : NULL,
		.stopping = &w->sim->stopping,
	};

	return hostile_send(x->hostile, x->hostile_seed, &r);
}

/*
 * send_reply: answer through libmodbus (or corruptly, on purpose); true
 * when the answer carried the meter's right registers.
 */
static bool send_reply(struct worker *w, int fd, const uint8_t *req, int len, const struct exchange *x,
                       const struct sim_fault *fault)
{
	if (x->hostile != HOSTILE_VALID)
		return send_hostile(w, fd, req, len, x);
	if (x->no_reply)
		return false;
	if (fault->mode == FAULT_SLOW)
		pause_ms(w, fault->slow_ms);
	if (fault->mode == FAULT_CORRUPT) {
		send_corrupt(w, fd, req, x);
		return false;
	}
	if (x->exception) {
		modbus_reply_exception(w->ctx, req, (unsigned int)x->exception);
		return false;
	}
	if (x->fc == FC_READ_HOLDING)
		memcpy(&w->map->tab_registers[x->addr], x->regs, sizeof(uint16_t) * (size_t)x->qty);
	modbus_reply(w->ctx, req, len, w->map);
	return true;
}

/*
 * handle: serve one received request, answer it, log an energy read that
 * was served (a hostile frame with random registers is not).
 */
static void handle(struct worker *w, int fd, const uint8_t *req, int len)
{
	struct exchange x;
	struct sim_fault fault;

	serve(w, req, &x, &fault);
	if (send_reply(w, fd, req, len, &x, &fault) && x.energy_read)
		history_write(w->gw->index, x.unit, x.energy_ck, x.tripped);
}

/*
 * current_fault_is_dead: a dead gateway reads and drops whatever arrives.
 */
static bool current_fault_is_dead(struct sim_gateway *gw)
{
	bool dead;

	pthread_mutex_lock(&gw->lock);
	dead = gw->fault.mode == FAULT_DEAD;
	pthread_mutex_unlock(&gw->lock);
	return dead;
}

/*
 * drain: read and drop what is waiting on fd; false at end of file.
 */
static bool drain(int fd)
{
	uint8_t buf[512];
	ssize_t n = read(fd, buf, sizeof(buf));

	return n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR));
}

/*
 * configure: timeouts of a serving context: wait at most POLL_MS for a
 * request to start (the thread checks for shutdown in between), 500 ms
 * between its bytes.
 */
static void configure(modbus_t *ctx)
{
	modbus_set_indication_timeout(ctx, 0, POLL_MS * 1000);
	modbus_set_byte_timeout(ctx, 0, 500000);
	modbus_set_error_recovery(ctx, MODBUS_ERROR_RECOVERY_PROTOCOL);
}

/* ---- TCP ---- */

static void tcp_drop_client(struct worker *w, int i)
{
	close(w->clients[i]);
	w->clients[i] = w->clients[--w->n_clients];
}

static void tcp_accept(struct worker *w)
{
	int fd = accept4(w->fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	if (w->n_clients == MAX_CLIENTS) {
		close(fd);
		return;
	}
	w->clients[w->n_clients++] = fd;
}

/*
 * tcp_skip_rest: drop the bytes of a request libmodbus did not consume (an
 * unknown function code's data), using the MBAP length, so the next request
 * starts at a frame boundary.
 */
static void tcp_skip_rest(int fd, const uint8_t *req, int got)
{
	int rest = 6 + ((req[4] << 8) | req[5]) - got;
	uint8_t buf[MODBUS_TCP_MAX_ADU_LENGTH];

	if (rest > 0 && rest <= (int)sizeof(buf))
		(void)!recv(fd, buf, (size_t)rest, MSG_DONTWAIT);
}

/*
 * tcp_serve_client: one request from client i; false when it must go.
 */
static bool tcp_serve_client(struct worker *w, int i)
{
	uint8_t req[MODBUS_TCP_MAX_ADU_LENGTH];
	int fd = w->clients[i];
	int rc;

	if (current_fault_is_dead(w->gw))
		return drain(fd);
	modbus_set_socket(w->ctx, fd);
	rc = modbus_receive(w->ctx, req);
	if (rc < 0)
		return errno == ETIMEDOUT;
	if (rc == 0)
		return true;
	tcp_skip_rest(fd, req, rc);
	handle(w, fd, req, rc);
	return true;
}

static void tcp_loop(struct worker *w)
{
	struct pollfd pfd[MAX_CLIENTS + 1];

	while (!w->sim->stopping) {
		int n = w->n_clients;

		pfd[0] = (struct pollfd){ .fd = w->fd, .events = POLLIN };
		for (int i = 0; i < n; i++)
			pfd[i + 1] = (struct pollfd){ .fd = w->clients[i], .events = POLLIN };
		if (poll(pfd, (nfds_t)n + 1, POLL_MS) <= 0)
			continue;
		/* backwards, so that dropping client i moves an already polled one */
		for (int i = n - 1; i >= 0; i--)
			if (pfd[i + 1].revents && !tcp_serve_client(w, i))
				tcp_drop_client(w, i);
		if (pfd[0].revents & POLLIN)
			tcp_accept(w);
	}
}

/* ---- RTU ---- */

/*
 * rtu_context: a context for the line with this slave id, on the line's
 * descriptor (not opened again).
 */
static modbus_t *rtu_context(struct worker *w, int slave)
{
	const struct sim_config *c = &w->sim->config;
	modbus_t *ctx = modbus_new_rtu(w->gw->device, c->baud, c->parity, c->data_bits, c->stop_bits);

	if (ctx == NULL)
		return NULL;
	modbus_set_slave(ctx, slave);
	modbus_set_socket(ctx, w->fd);
	configure(ctx);
	return ctx;
}

/*
 * rtu_rearm: after serving a request libmodbus filtered as "for another
 * slave", replace the receiving context: the old one now waits for that
 * slave's answer, which never comes on a simulated bus.
 */
static void rtu_rearm(struct worker *w, int unit)
{
	modbus_t *fresh = rtu_context(w, unit);

	if (fresh == NULL)
		return;
	modbus_free(w->ctx);
	w->ctx = fresh;
}

/*
 * rtu_frame_length: length of an FC03/FC16 request frame from its bytes.
 */
static int rtu_frame_length(const uint8_t *req)
{
	if (req[1] == FC_WRITE_MULTIPLE)
		return 9 + req[6];
	return 8;
}

static void rtu_serve(struct worker *w)
{
	uint8_t req[MODBUS_RTU_MAX_ADU_LENGTH];
	int rc;

	if (current_fault_is_dead(w->gw)) {
		drain(w->fd);
		return;
	}
	rc = modbus_receive(w->ctx, req);
	if (rc > 0)
		handle(w, w->fd, req, rc);
	else if (rc == 0) {
		handle(w, w->fd, req, rtu_frame_length(req));
		rtu_rearm(w, req[0]);
	} else if (errno != ETIMEDOUT)
		modbus_flush(w->ctx);
}

static void rtu_loop(struct worker *w)
{
	while (!w->sim->stopping) {
		struct pollfd pfd = { .fd = w->fd, .events = POLLIN };

		if (poll(&pfd, 1, POLL_MS) > 0)
			rtu_serve(w);
	}
}

/* ---- the thread ---- */

static void *gateway_main(void *arg)
{
	struct worker *w = arg;

	if (w->gw->transport == TRANSPORT_TCP)
		tcp_loop(w);
	else
		rtu_loop(w);
	while (w->n_clients > 0)
		tcp_drop_client(w, 0);
	modbus_mapping_free(w->map);
	modbus_free(w->ctx);
	if (w->line) {
		modbus_close(w->line);
		modbus_free(w->line);
	} else
		close(w->fd);
	free(w);
	return NULL;
}

/*
 * open_tcp: listen on 127.0.0.1:port (libmodbus sets SO_REUSEADDR).
 */
static int open_tcp(struct worker *w)
{
	w->ctx = modbus_new_tcp("127.0.0.1", w->gw->port);
	if (w->ctx == NULL)
		return -1;
	configure(w->ctx);
	w->fd = modbus_tcp_listen(w->ctx, 64);
	return w->fd < 0 ? -1 : 0;
}

/*
 * open_rtu: open the serial line once; contexts share its descriptor.
 */
static int open_rtu(struct worker *w)
{
	const struct sim_config *c = &w->sim->config;

	w->line = modbus_new_rtu(w->gw->device, c->baud, c->parity, c->data_bits, c->stop_bits);
	if (w->line == NULL || modbus_connect(w->line) < 0)
		return -1;
	w->fd = modbus_get_socket(w->line);
	w->ctx = rtu_context(w, 1);
	return w->ctx == NULL ? -1 : 0;
}

/*
 * gateway_start: open the port or line (so errors show at start-up and
 * clients may connect as soon as it returns), then start the thread.
 */
int gateway_start(struct sim *sim, struct sim_gateway *gw)
{
	struct worker *w = calloc(1, sizeof(*w));
	int rc;

	if (w == NULL)
		return -1;
	w->sim = sim;
	w->gw = gw;
	w->map = modbus_mapping_new(0, 0, MAP_REGISTERS, 0);
	rc = w->map ? (gw->transport == TRANSPORT_TCP ? open_tcp(w) : open_rtu(w)) : -1;
	if (rc == 0 && pthread_create(&gw->thread, NULL, gateway_main, w) == 0) {
		gw->started = true;
		return 0;
	}
	if (gw->transport == TRANSPORT_TCP)
		fprintf(stderr, "prepay-sim: gateway %d on 127.0.0.1:%d: %s\n", gw->index, gw->port,
		        modbus_strerror(errno));
	else
		fprintf(stderr, "prepay-sim: gateway %d on %s: %s\n", gw->index, gw->device, modbus_strerror(errno));
	if (w->map)
		modbus_mapping_free(w->map);
	if (w->ctx)
		modbus_free(w->ctx);
	if (w->line)
		modbus_free(w->line);
	else if (w->fd > 0)
		close(w->fd);
	free(w);
	return -1;
}

/*
 * gateway_join: wait for the thread (after sim->stopping was set).
 */
void gateway_join(struct sim_gateway *gw)
{
	if (gw->started)
		pthread_join(gw->thread, NULL);
	gw->started = false;
}
