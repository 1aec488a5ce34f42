/*-------------------------------------------------------------------------
 *
 * extension/intake.h
 *	  What the duplicate trigger of prepay.reading refuses, and the bulk
 *	  intake (intake.c).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/intake.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PREPAY_INTAKE_H
#define PREPAY_INTAKE_H

#include "prepay.h"

#include "access/htup.h"
#include "executor/tuptable.h"
#include "utils/relcache.h"

extern bool intake_site_allowed(Relation rel, int32 site_id);
extern void intake_refuse_foreign(Relation rel, HeapTuple tuple);
extern char *intake_conflict(Relation rel, HeapTuple tuple, TupleTableSlot *stored);
extern void intake_refuse_conflict(Relation rel, HeapTuple tuple, const char *detail);
extern void intake_report(void);

#endif							/* PREPAY_INTAKE_H */
