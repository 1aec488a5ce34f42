/*-------------------------------------------------------------------------
 * agent/spool.h
 *     The durable on-disk spool: readings the database could not take yet,
 *     in arrival order, replayed when it returns.  Survives a restart.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_SPOOL_H
#define AGENT_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "reading.h"

#define SPOOL_MAX_BYTES (256 * 1024 * 1024)
#define SPOOL_WARN_PERCENT 80

int spool_open(const char *dir, int64_t max_bytes);
void spool_close(void);
int spool_append(const struct reading *r, int n);
int spool_peek(struct reading *out, int max, size_t *bytes);
int spool_consume(size_t bytes);
int64_t spool_bytes(void);
int spool_pending(void);

#endif
