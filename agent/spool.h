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

/* The bound of the spool log.  Not a setting (the local configuration
 * holds only five keys); the Makefile's test build
 * agent/prepay-agent-small-spool overrides it with -DSPOOL_MAX_BYTES so the
 * bound can be reached in a test (test/t/111_agent_spool_bound.pl). */
#ifndef SPOOL_MAX_BYTES
#define SPOOL_MAX_BYTES (256 * 1024 * 1024)
#endif
#define SPOOL_WARN_PERCENT 80

struct spool_stats {
	int64_t bytes;      /* waiting to be replayed */
	int64_t max_bytes;  /* the bound */
	int warning;        /* passed SPOOL_WARN_PERCENT since it was last empty */
	uint64_t thinned;   /* readings dropped by thinning */
	uint64_t thinnings; /* thinning passes */
};

int spool_open(const char *dir, int64_t max_bytes);
void spool_close(void);
int spool_append(const struct reading *r, int n);
int spool_peek(struct reading *out, int max, size_t *bytes);
int spool_consume(size_t bytes);
int64_t spool_bytes(void);
int spool_pending(void);
void spool_stats(struct spool_stats *out);

#endif
