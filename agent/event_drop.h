/*-------------------------------------------------------------------------
 * agent/event_drop.h
 *     event_drop: free a libevent event, if there is one, and forget it
 *     (the teardowns call it for every event they own).
 *
 * Locking: loop thread only, as every event of the agent.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_EVENT_DROP_H
#define AGENT_EVENT_DROP_H

#include <event2/event.h>

static inline void event_drop(struct event **ev)
{
	if (*ev)
		event_free(*ev);
	*ev = NULL;
}

#endif
