/*-------------------------------------------------------------------------
 * agent/alloc.h
 *     Memory allocation that never returns NULL: on out-of-memory the
 *     agent logs what it asked for and exits with status 71 (EX_OSERR).
 *
 * Why exit rather than carry on: a reading the agent holds in memory is
 * already in its spool file or in the database, so nothing is lost; a
 * process that cannot allocate can neither poll nor deliver, and systemd
 * (Restart=on-failure, agent/prepay-agent.service) starts a clean one
 * that replays the spool.  Every allocation of the agent goes through
 * these wrappers, so no caller needs a NULL check of its own.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_ALLOC_H
#define AGENT_ALLOC_H

#include <stddef.h>

#define ALLOC_EXIT_STATUS 71 /* EX_OSERR of <sysexits.h> */

void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc_array(void *ptr, size_t count, size_t size);
char *xstrdup(const char *s);

#endif
