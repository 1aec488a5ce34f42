/*-------------------------------------------------------------------------
 *
 * extension/rating.c
 *	  The pure rating core: split a consumption at price changes, price the
 *	  pieces exactly, and round to cents with a carried remainder.
 *
 * Splitting.  Energy consumed between two readings is taken to be spread
 * uniformly over the interval.  A piece (a, b] of the interval (from, to]
 * receives floor(E * (b - from) / (to - from)) - floor(E * (a - from) /
 * (to - from)) milli-units, so the pieces always add up to E exactly and
 * the result does not depend on how many pieces there are.
 *
 * Pricing.  A piece's exact amount is energy x price in nano-currency
 * (milli-units x micro-currency): no rounding at all.
 *
 * Rounding.  A ledger entry holds whole cents.  Each charge posts the
 * whole cents of (exact amount + carry) rounded down and carries the
 * sub-cent rest to the meter's next charge, so the sum of everything
 * posted plus the current carry equals the sum of the exact amounts.  A
 * tenant never pays for a fraction of a cent not yet consumed, and is
 * never under-billed by more than one cent in total.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/rating.c
 *
 *-------------------------------------------------------------------------
 */
#include "rating.h"

#define NANO_PER_CENT INT64_C(10000000)
#define MICROS_PER_HOUR INT64_C(3600000000)

/*
 * share_until
 *		Energy consumed in (from, at] when `energy` is spread uniformly
 *		over (from, to].
 */
static int64_t
share_until(int64_t energy, int64_t from, int64_t to, int64_t at)
{
	if (at >= to)
		return energy;
	if (at <= from)
		return 0;
	return (int64_t) ((__int128) energy * (at - from) / (to - from));
}

/*
 * price_at
 *		Index of the price version in force at instant t (the first one
 *		for instants before any version).
 */
static int
price_at(const RatingPrice *prices, int nprices, int64_t t)
{
	int			i = 0;

	while (i + 1 < nprices && prices[i + 1].valid_from <= t)
		i++;
	return i;
}

int
rating_split(const RatingPrice *prices, int nprices,
			 int64_t from, int64_t to, int64_t energy, RatingPiece *pieces)
{
	int			n = 0;
	int			v = price_at(prices, nprices, from);
	int64_t		start = from;

	while (start < to)
	{
		int64_t		end = (v + 1 < nprices && prices[v + 1].valid_from < to)
			? prices[v + 1].valid_from : to;
		RatingPiece *p = &pieces[n++];
		__int128	exact;

		p->from = start;
		p->to = end;
		p->energy = share_until(energy, from, to, end) - share_until(energy, from, to, start);
		p->price = prices[v].price;
		exact = (__int128) p->energy * p->price;
		if (exact > INT64_MAX || exact < INT64_MIN)
			return -1;
		p->exact = (int64_t) exact;
		start = end;
		v++;
	}
	return n;
}

int64_t
rating_round_with_carry(int64_t exact, int64_t *carry)
{
	int64_t		total = exact + *carry;
	int64_t		cents = total / NANO_PER_CENT;

	if (total % NANO_PER_CENT < 0)
		cents--;				/* round down, also for negative totals */
	*carry = total - cents * NANO_PER_CENT;
	return cents;
}

bool
rating_exceeds_rate(int64_t energy, int64_t elapsed_us, int64_t max_per_hour)
{
	return (__int128) energy * MICROS_PER_HOUR > (__int128) max_per_hour * elapsed_us;
}
