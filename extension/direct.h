/*-------------------------------------------------------------------------
 *
 * extension/direct.h
 *	  Direct table access for the rating batch (direct.c).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/direct.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PREPAY_DIRECT_H
#define PREPAY_DIRECT_H

#include "prepay.h"

#include "access/htup.h"
#include "nodes/nodes.h"
#include "utils/snapshot.h"

/* An open table with the executor state its direct writes need. */
typedef struct DirectTable DirectTable;

/*
 * Called with the columns of the locked row version about to be replaced
 * (values and nulls, indexed by attribute number - 1; under READ
 * COMMITTED the newest version, see direct.c); overwrites the columns to
 * set.  Returns false when the row no longer matches (a concurrent update
 * changed its key): the row is then left alone, as an UPDATE would.
 */
typedef bool (*DirectModify) (DirectTable *table, Datum *values, bool *nulls, void *arg);

/* What direct_update did. */
typedef enum DirectUpdate
{
	DIRECT_UPDATED,				/* the row was updated */
	DIRECT_GONE,				/* deleted, or no longer matches: left alone */
	DIRECT_STALE				/* changed by this transaction since the
								 * snapshot: refresh and look it up again */
} DirectUpdate;

extern DirectTable *direct_open(const char *relname, CmdType operation,
								const char *const *set_columns, Snapshot snapshot);
extern void direct_close(DirectTable *table);
extern void direct_refresh(DirectTable *table, Snapshot snapshot);
extern int	direct_attnum(DirectTable *table, const char *column);
extern TupleDesc direct_desc(DirectTable *table);
extern Datum direct_getattr(HeapTuple tuple, DirectTable *table, int attnum, bool *isnull);
extern HeapTuple direct_fetch(DirectTable *table, Datum key1, Datum key2);
extern void direct_fetch_keys(DirectTable *table, int n, const int32 *sites, const int64 *ids,
							  HeapTuple *rows);
extern DirectUpdate direct_update(DirectTable *table, HeapTuple row, DirectModify modify, void *arg);
extern MemoryContext direct_row_context(DirectTable *table);
extern void direct_insert(DirectTable *table, const Datum *values, const bool *isset);
extern Datum direct_numeric(DirectTable *table, int attnum, int64 value, int scale);

#endif							/* PREPAY_DIRECT_H */
