/*-------------------------------------------------------------------------
 * test/sim/sim_hostile.c
 *	  The hostile fault: a gateway that answers each request with a seeded
 *	  pseudo-random choice among the right reply and the ways a broken
 *	  meter, gateway or line gets a reply wrong:
 *
 *	  valid       the right reply (built by the gateway through libmodbus);
 *	  corrupt     TCP: wrong transaction id, nonzero protocol id, wrong MBAP
 *	              length, random bytes, a garbled function code or byte
 *	              count; RTU: CRC inverted, a byte flipped, random bytes;
 *	  wrong_unit  the right registers under another unit id (libmodbus);
 *	  exception   exception 1..11 (libmodbus), or an undefined code;
 *	  partial     the first bytes of a reply, then silence;
 *	  endless     a reply that never ends: one byte every TRICKLE_MS (under
 *	              any sane byte timeout) after a header announcing 250
 *	              bytes, or random bytes as fast as the client takes them,
 *	              until the client closes (TCP) or ENDLESS_*_MS pass;
 *	  oversized   more registers than asked for, or a frame longer than
 *	              the largest Modbus frame;
 *	  none        no reply.
 *
 * Determinism: xorshift64* seeded from the fault's seed.  The kind of each
 * frame and a seed for its bytes are drawn under the gateway lock in the
 * order the requests are served, so one seed and one sequence of requests
 * give the same frames.  After `budget` frames the gateway answers
 * normally again (budget 0: hostile without end).
 *
 * Framing: libmodbus builds every frame a client may rightly accept (the
 * valid reply, exceptions 1..11, the wrong unit id, which libmodbus echoes
 * from a copy of the request).  The deliberately malformed frames are
 * built here, because libmodbus cannot produce them, and they carry random
 * register values, never the meter's: a client that took one for a reading
 * would store a value the meter never served.  The exception is the
 * corrupt "wrong MBAP length" frame: libmodbus (3.1.6) frames Modbus-TCP
 * replies by function code and ignores that field, so it carries the right
 * registers and counts as served (hostile_send returns true), like the
 * wrong unit id on TCP, which libmodbus does not check either.
 *
 * Locking: hostile_reset and hostile_pick run under the gateway lock;
 * hostile_send does I/O and is called without it.
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"

#define TRICKLE_MS     50    /* the agent's byte timeout was 100 ms */
#define TRICKLE_COUNT  250   /* announced bytes of a trickled reply */
#define ENDLESS_TCP_MS 30000 /* an endless reply gives up after this... */
#define ENDLESS_RTU_MS 3000  /* ...or this, on a line nobody can close */
#define TCP_MAX_ADU    260
#define RTU_MAX_ADU    256

static const char *const kind_names[HOSTILE_KINDS] = {
	[HOSTILE_VALID] = "valid",         [HOSTILE_CORRUPT] = "corrupt", [HOSTILE_WRONG_UNIT] = "wrong_unit",
	[HOSTILE_EXCEPTION] = "exception", [HOSTILE_PARTIAL] = "partial", [HOSTILE_ENDLESS] = "endless",
	[HOSTILE_OVERSIZED] = "oversized", [HOSTILE_NONE] = "none",
};

/*
 * How often each kind is drawn, out of 100.  The kinds a client can only
 * time out on (partial, endless, none) are kept rarer, so that a test gets
 * through thousands of frames in a minute.
 */
static const int kind_weights[HOSTILE_KINDS] = {
	[HOSTILE_VALID] = 36,  [HOSTILE_CORRUPT] = 16, [HOSTILE_WRONG_UNIT] = 10, [HOSTILE_EXCEPTION] = 14,
	[HOSTILE_PARTIAL] = 5, [HOSTILE_ENDLESS] = 5,  [HOSTILE_OVERSIZED] = 8,   [HOSTILE_NONE] = 6,
};

const char *hostile_kind_name(int kind)
{
	return kind_names[kind];
}

/*
 * next: xorshift64* (Marsaglia; Vigna's multiplier); *s is never 0.
 */
static uint64_t next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * UINT64_C(0x2545F4914F6CDD1D);
}

/*
 * below: a number in [0, n).
 */
static int below(uint64_t *s, int n)
{
	return (int)((next(s) >> 33) % (uint64_t)n);
}

/*
 * seeded: a nonzero state from any seed (one splitmix64 step).
 */
static uint64_t seeded(uint64_t seed)
{
	uint64_t z = seed + UINT64_C(0x9E3779B97F4A7C15);

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	z ^= z >> 31;
	return z ? z : 1;
}

/*
 * hostile_reset: start the generator again (under the gateway lock).
 */
void hostile_reset(struct sim_hostile *h, uint64_t seed, uint64_t budget)
{
	*h = (struct sim_hostile){ .rng = seeded(seed), .seed = seed, .budget = budget };
}

/*
 * hostile_pick: the kind of the next frame and a seed for its bytes (under
 * the gateway lock); HOSTILE_VALID without counting once the budget is spent.
 */
int hostile_pick(struct sim_hostile *h, uint64_t *frame_seed)
{
	int roll, kind = 0;

	if (h->budget > 0 && h->frames >= h->budget)
		return HOSTILE_VALID;
	roll = below(&h->rng, 100);
	while (roll >= kind_weights[kind])
		roll -= kind_weights[kind++];
	*frame_seed = seeded(next(&h->rng));
	h->frames++;
	h->served[kind]++;
	return kind;
}

/* ---- writing bytes ---- */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * put: write n bytes (a socket or a line); false when the peer is gone.
 */
static bool put(const struct hostile_reply *r, const uint8_t *buf, size_t n, int flags)
{
	ssize_t sent = r->tcp ? send(r->fd, buf, n, MSG_NOSIGNAL | flags) : write(r->fd, buf, n);

	return sent >= 0 || errno == EAGAIN || errno == EINTR;
}

/*
 * peer_gone: wait up to ms for the TCP client to close (false on a line).
 */
static bool peer_gone(const struct hostile_reply *r, int ms, short events)
{
	struct pollfd pfd = { .fd = r->fd, .events = events | (r->tcp ? POLLRDHUP : 0) };

	if (poll(&pfd, 1, ms) <= 0)
		return false;
	return r->tcp && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* ---- frames ---- */

/*
 * wrap: a PDU into a frame for unit: TCP with the request's transaction id,
 * protocol 0 and the right length; RTU with a right CRC.  The frame's length.
 */
static int wrap(const struct hostile_reply *r, int unit, const uint8_t *pdu, int len, uint8_t *frame)
{
	if (r->tcp) {
		frame[0] = r->req[0];
		frame[1] = r->req[1];
		frame[2] = frame[3] = 0;
		frame[4] = (uint8_t)((len + 1) >> 8);
		frame[5] = (uint8_t)(len + 1);
		frame[6] = (uint8_t)unit;
		memcpy(frame + 7, pdu, (size_t)len);
		return 7 + len;
	} else {
		uint16_t crc;

		frame[0] = (uint8_t)unit;
		memcpy(frame + 1, pdu, (size_t)len);
		crc = sim_crc16(frame, len + 1);
		frame[len + 1] = (uint8_t)crc;
		frame[len + 2] = (uint8_t)(crc >> 8);
		return len + 3;
	}
}

static void random_bytes(uint64_t *s, uint8_t *buf, int n)
{
	for (int i = 0; i < n; i++)
		buf[i] = (uint8_t)(next(s) >> 56);
}

/*
 * random_pdu: a reply shaped like the right one with random values: FC03
 * random registers, FC16 an echo with a wrong quantity, else an exception.
 */
static int random_pdu(const struct hostile_reply *r, uint64_t *s, uint8_t *pdu)
{
	int qty;

	if (r->exception || (r->fc != 0x03 && r->fc != 0x10)) {
		pdu[0] = (uint8_t)(r->fc | 0x80);
		pdu[1] = (uint8_t)(1 + below(s, 11));
		return 2;
	}
	pdu[0] = (uint8_t)r->fc;
	if (r->fc == 0x03) {
		pdu[1] = (uint8_t)(2 * r->qty);
		random_bytes(s, pdu + 2, 2 * r->qty);
		return 2 + 2 * r->qty;
	}
	qty = r->qty ^ (1 + below(s, 0xFFFE));
	pdu[1] = (uint8_t)(r->addr >> 8);
	pdu[2] = (uint8_t)r->addr;
	pdu[3] = (uint8_t)(qty >> 8);
	pdu[4] = (uint8_t)qty;
	return 5;
}

/*
 * right_pdu: the right FC03 reply's PDU (only when regs are known).
 */
static int right_pdu(const struct hostile_reply *r, uint8_t *pdu)
{
	pdu[0] = 0x03;
	pdu[1] = (uint8_t)(2 * r->qty);
	for (int i = 0; i < r->qty; i++) {
		pdu[2 + 2 * i] = (uint8_t)(r->regs[i] >> 8);
		pdu[3 + 2 * i] = (uint8_t)r->regs[i];
	}
	return 2 + 2 * r->qty;
}

static bool has_right_regs(const struct hostile_reply *r)
{
	return r->fc == 0x03 && r->exception == 0 && r->regs != NULL;
}

/*
 * send_corrupt: a frame no client may accept (or, for the wrong MBAP
 * length, one libmodbus accepts with the right registers: true).
 */
static bool send_corrupt(const struct hostile_reply *r, uint64_t *s)
{
	uint8_t pdu[MODBUS_MAX_PDU_LENGTH + 8], frame[2 * TCP_MAX_ADU];
	int len = random_pdu(r, s, pdu), n = wrap(r, r->unit, pdu, len, frame), variant = below(s, r->tcp ? 5 : 3);
	bool right = false;

	if (r->tcp && variant == 0) {
		uint16_t tid = (uint16_t)(((r->req[0] << 8) | r->req[1]) + 1 + below(s, 0xFFFE));

		frame[0] = (uint8_t)(tid >> 8);
		frame[1] = (uint8_t)tid;
	} else if (r->tcp && variant == 1) {
		uint16_t proto = (uint16_t)(1 + below(s, 0xFFFF));

		frame[2] = (uint8_t)(proto >> 8);
		frame[3] = (uint8_t)proto;
	} else if (r->tcp && variant == 2 && has_right_regs(r)) {
		uint16_t mbap;

		n = wrap(r, r->unit, pdu, right_pdu(r, pdu), frame);
		mbap = (uint16_t)(((frame[4] << 8) | frame[5]) + 1 + below(s, 0xFFFE));
		frame[4] = (uint8_t)(mbap >> 8);
		frame[5] = (uint8_t)mbap;
		right = true;
	} else if (variant == (r->tcp ? 3 : 2) || (r->tcp && variant == 2)) {
		/* random bytes; on TCP never the request's transaction id */
		n = 1 + below(s, TCP_MAX_ADU + 40);
		random_bytes(s, frame, n);
		if (r->tcp && n >= 2 && frame[0] == r->req[0] && frame[1] == r->req[1])
			frame[1] ^= 0x01;
	} else if (r->tcp) {
		/* a garbled function code (never an exception's) or byte count */
		if (len > 1 && below(s, 2))
			frame[8] ^= (uint8_t)(1 + below(s, 255));
		else
			frame[7] = (uint8_t)((frame[7] ^ (1 << below(s, 7))) & 0x7F);
	} else if (variant == 0) {
		frame[n - 2] ^= 0xFF;
		frame[n - 1] ^= 0xFF;
	} else
		frame[1 + below(s, n - 3)] ^= (uint8_t)(1 << below(s, 8));
	put(r, frame, (size_t)n, 0);
	return right;
}

/*
 * send_wrong_unit: the right reply under another unit id, through
 * libmodbus (it echoes the unit id of the request it answers).
 */
static bool send_wrong_unit(const struct hostile_reply *r, uint64_t *s)
{
	uint8_t req[MODBUS_TCP_MAX_ADU_LENGTH];
	int hl = modbus_get_header_length(r->ctx);

	memcpy(req, r->req, (size_t)r->req_len);
	req[hl - 1] = (uint8_t)((r->unit + below(s, 246)) % 247 + 1);
	if (r->exception) {
		modbus_reply_exception(r->ctx, req, (unsigned int)r->exception);
		return false;
	}
	if (has_right_regs(r))
		memcpy(&r->map->tab_registers[r->addr], r->regs, sizeof(uint16_t) * (size_t)r->qty);
	modbus_reply(r->ctx, req, r->req_len, r->map);
	return has_right_regs(r);
}

/*
 * send_exception: a defined exception through libmodbus, or (one in five)
 * an undefined code, which libmodbus cannot send.
 */
static bool send_exception(const struct hostile_reply *r, uint64_t *s)
{
	uint8_t pdu[2], frame[16];
	int code;

	if (below(s, 5) > 0) {
		modbus_reply_exception(r->ctx, r->req, (unsigned int)(1 + below(s, 11)));
		return false;
	}
	code = below(s, 245);
	pdu[0] = (uint8_t)(r->fc | 0x80);
	pdu[1] = (uint8_t)(code == 0 ? 0 : code + 11);
	put(r, frame, (size_t)wrap(r, r->unit, pdu, 2, frame), 0);
	return false;
}

/*
 * send_partial: the first bytes of a reply, then nothing.
 */
static bool send_partial(const struct hostile_reply *r, uint64_t *s)
{
	uint8_t pdu[MODBUS_MAX_PDU_LENGTH + 8], frame[TCP_MAX_ADU + 8];
	int n = wrap(r, r->unit, pdu, random_pdu(r, s, pdu), frame);

	put(r, frame, (size_t)(1 + below(s, n - 1)), 0);
	return false;
}

/*
 * send_endless: a trickle announcing TRICKLE_COUNT bytes and then sending
 * one byte every TRICKLE_MS without end, or a flood of random bytes; until
 * the client closes, the simulator stops or the time limit passes.
 */
static bool send_endless(const struct hostile_reply *r, uint64_t *s)
{
	uint8_t pdu[2] = { 0x03, TRICKLE_COUNT }, buf[512];
	int64_t until = mono_ms() + (r->tcp ? ENDLESS_TCP_MS : ENDLESS_RTU_MS);
	bool trickle = below(s, 2);

	if (trickle) {
		int n = wrap(r, r->unit, pdu, 2, buf);

		if (r->tcp)
			buf[5] = TRICKLE_COUNT + 3; /* the MBAP length agrees */
		else
			n -= 2; /* no CRC yet */
		if (!put(r, buf, (size_t)n, 0))
			return false;
		while (!*r->stopping && mono_ms() < until && !peer_gone(r, TRICKLE_MS, 0)) {
			random_bytes(s, buf, 1);
			if (!put(r, buf, 1, 0))
				break;
		}
	} else {
		random_bytes(s, buf, sizeof(buf));
		if (r->tcp && buf[0] == r->req[0] && buf[1] == r->req[1])
			buf[1] ^= 0x01;
		while (!*r->stopping && mono_ms() < until && put(r, buf, sizeof(buf), MSG_DONTWAIT)) {
			if (peer_gone(r, 5, POLLOUT))
				break;
			random_bytes(s, buf, sizeof(buf));
		}
	}
	if (!r->tcp)
		modbus_flush(r->ctx);
	return false;
}

/*
 * send_oversized: more registers than asked for (within the largest frame,
 * or beyond it).
 */
static bool send_oversized(const struct hostile_reply *r, uint64_t *s)
{
	uint8_t pdu[MODBUS_MAX_PDU_LENGTH + 300], frame[TCP_MAX_ADU + 300];
	int asked = r->fc == 0x03 ? 2 * r->qty : 0, count;

	if (asked < 250 && below(s, 2))
		count = asked + 1 + below(s, 250 - asked); /* at most 250 + the header */
	else
		count = 255; /* beyond the largest frame, and then some */
	pdu[0] = 0x03;
	pdu[1] = (uint8_t)count;
	random_bytes(s, pdu + 2, count + (count == 255 ? 40 : 0));
	put(r, frame, (size_t)wrap(r, r->unit, pdu, 2 + count + (count == 255 ? 40 : 0), frame), 0);
	return false;
}

/* the frame of each kind but valid and none: true when it carries the right registers */
static bool (*const senders[HOSTILE_KINDS])(const struct hostile_reply *r, uint64_t *s) = {
	[HOSTILE_CORRUPT] = send_corrupt, [HOSTILE_WRONG_UNIT] = send_wrong_unit, [HOSTILE_EXCEPTION] = send_exception,
	[HOSTILE_PARTIAL] = send_partial, [HOSTILE_ENDLESS] = send_endless,       [HOSTILE_OVERSIZED] = send_oversized,
};

/*
 * hostile_send: answer one request with a frame of this kind (not valid:
 * the gateway sends valid replies itself).  True when the frame carries
 * the meter's right registers, so that the read counts as served.
 */
bool hostile_send(int kind, uint64_t frame_seed, const struct hostile_reply *r)
{
	uint64_t s = frame_seed;

	return kind >= 0 && kind < HOSTILE_KINDS && senders[kind] && senders[kind](r, &s);
}
