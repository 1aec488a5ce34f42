/*-------------------------------------------------------------------------
 * agent/bus.h
 *     One worker thread per gateway ("bus"): libmodbus calls block, so each
 *     gateway's requests run strictly one after the other on its own
 *     thread, and a dead or slow gateway never delays another.  Results
 *     travel to the libevent loop thread as bus events.
 *
 * Locking: see bus.c.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_BUS_H
#define AGENT_BUS_H

#include <event2/event.h>
#include <stdint.h>

#include "catalog.h"
#include "reading.h"

#define BUS_LOST_AFTER 3 /* consecutive failures before "lost" */

enum bus_event_kind {
	BE_READING,
	BE_READ_FAILED,
	BE_METER_LOST,
	BE_METER_FOUND,
	BE_GATEWAY_LOST,
	BE_GATEWAY_FOUND,
	BE_SWEEP_DONE,
	BE_COMMAND_DONE,
};

struct bus_event {
	enum bus_event_kind kind;
	int site_id;
	int64_t gateway_id;
	int64_t meter_id;
	int64_t command_id;
	int ok;
	int failures;
	const char *err_kind; /* timeout, exception, corrupt, connection, protocol */
	char error[256];
	char relay[8];
	int64_t duration_us;
	struct reading reading;
	struct bus_event *next;
};

struct command_job {
	int site_id;
	int64_t command_id;
	int64_t meter_id;
	int trip; /* 1 trip, 0 close */
	struct command_job *next;
};

struct bus;
typedef void (*bus_event_fn)(struct bus_event *ev, void *arg);

int bus_setup(struct event_base *base, bus_event_fn fn, void *arg);
void bus_teardown(void);
struct bus *bus_start(struct gateway *gw, int once);
void bus_stop(struct bus *b);
const struct gateway *bus_gateway(const struct bus *b);
void bus_submit(struct bus *b, struct command_job *job);

#endif
