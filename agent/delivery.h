/*-------------------------------------------------------------------------
 * agent/delivery.h
 *     Readings to the database in batches, in arrival order, through the
 *     spool whenever the database cannot take them.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_DELIVERY_H
#define AGENT_DELIVERY_H

#include <event2/event.h>

#include "reading.h"

#define DELIVERY_BATCH 500

int delivery_setup(struct event_base *base);
void delivery_add(const struct reading *r);
void delivery_kick(void);
int delivery_idle(void);
int delivery_queued(void);
void delivery_teardown(void);

#endif
