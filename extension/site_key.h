/*-------------------------------------------------------------------------
 *
 * extension/site_key.h
 *	  Keys of the form (site_id, id): their order, and sorted arrays of
 *	  them (site_key.c).
 *
 * Every table's key starts with site_id; the rating batch and its helpers
 * (reading.c, meter_state.c, direct.c, balance.c, rollup.c) sort and look
 * up meters and accounts by (site_id, id), ascending, in this one order.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/site_key.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PREPAY_SITE_KEY_H
#define PREPAY_SITE_KEY_H

#include "prepay.h"

/*
 * The order of two integers a and b (an id, a time, a day): negative, zero
 * or positive, as qsort comparators return.  Inline, as
 * site_key_compare: the comparators break ties on a key with it.
 */
static inline int
int64_compare(int64 a, int64 b)
{
	return (a > b) - (a < b);
}

/*
 * The order of two keys (site_a, id_a) and (site_b, id_b): negative, zero
 * or positive, as qsort comparators return.  Inline: the comparators of
 * the batch's sorts call it for every comparison.
 */
static inline int
site_key_compare(int32 site_a, int64 id_a, int32 site_b, int64 id_b)
{
	if (site_a != site_b)
		return site_a < site_b ? -1 : 1;
	return int64_compare(id_a, id_b);
}

/* Sort the n keys (sites[i], ids[i]) and drop repeats; returns how many are left. */
extern int	site_key_sort(int32 *sites, int64 *ids, int n);

/* The index of (site_id, id) among n sorted keys, or -1. */
extern int	site_key_find(const int32 *sites, const int64 *ids, int n, int32 site_id, int64 id);

#endif							/* PREPAY_SITE_KEY_H */
