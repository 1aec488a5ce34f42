/*-------------------------------------------------------------------------
 *
 * extension/site_key.c
 *	  Sorted arrays of (site_id, id) keys: sort with repeats dropped, and
 *	  binary search.
 *
 * The keys are kept as two parallel arrays, sites[] and ids[], the shape
 * direct_fetch_keys (direct.c) takes them in; the order is
 * site_key_compare's (site_key.h).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/site_key.c
 *
 *-------------------------------------------------------------------------
 */
#include "prepay.h"

#include "site_key.h"

/* A (site, id) pair, for sorting keys. */
typedef struct Key
{
	int32		site_id;
	int64		id;
} Key;

static int	compare_keys(const void *a, const void *b);

static int
compare_keys(const void *a, const void *b)
{
	const Key  *x = a;
	const Key  *y = b;

	return site_key_compare(x->site_id, x->id, y->site_id, y->id);
}

/*
 * site_key_sort
 *		Sort the n keys (sites[i], ids[i]) and drop repeats; returns how
 *		many are left.
 */
int
site_key_sort(int32 *sites, int64 *ids, int n)
{
	Key		   *keys = palloc(sizeof(Key) * Max(n, 1));
	int			m = 0;

	for (int i = 0; i < n; i++)
	{
		keys[i].site_id = sites[i];
		keys[i].id = ids[i];
	}
	qsort(keys, n, sizeof(Key), compare_keys);
	for (int i = 0; i < n; i++)
	{
		if (m > 0 && compare_keys(&keys[i], &keys[m - 1]) == 0)
			continue;
		sites[m] = keys[i].site_id;
		ids[m] = keys[i].id;
		m++;
	}
	pfree(keys);
	return m;
}

/* The index of a key among n sorted keys, or -1. */
int
site_key_find(const int32 *sites, const int64 *ids, int n, int32 site_id, int64 id)
{
	int			lo = 0,
				hi = n;

	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (sites[mid] < site_id || (sites[mid] == site_id && ids[mid] < id))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && sites[lo] == site_id && ids[lo] == id ? lo : -1;
}
