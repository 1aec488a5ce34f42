/*-------------------------------------------------------------------------
 * agent/spool_thin.h
 *     Thinning a full spool: per meter, keep the first and the last reading
 *     and every other one in between (see spool_thin.c for why no energy
 *     is lost).
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_SPOOL_THIN_H
#define AGENT_SPOOL_THIN_H

#include <stdint.h>
#include <stdio.h>

struct thin_result {
	int64_t kept_bytes; /* bytes written to out */
	int64_t dropped;    /* readings dropped */
	int meters;         /* distinct meters seen */
};

/* spool_thin: copy the spool lines of in from offset from to out, thinned;
 * 0, or -1 on an I/O error (out is then incomplete) */
int spool_thin(FILE *in, int64_t from, FILE *out, struct thin_result *res);

#endif
