/*-------------------------------------------------------------------------
 * agent/command.h
 *     Relay commands: claim them from the database, hand each to its
 *     meter's bus thread, report done or failed.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_COMMAND_H
#define AGENT_COMMAND_H

#include <event2/event.h>
#include <stdint.h>

#include "bus.h"

typedef struct bus *(*command_find_bus_fn)(int site_id, int64_t gateway_id);

int command_setup(struct event_base *base, const char *agent_id, command_find_bus_fn find_bus);
void command_claim(int include_sent);
void command_forget(int site_id, int64_t gateway_id);
void command_result(const struct bus_event *ev);
void command_teardown(void);

#endif
