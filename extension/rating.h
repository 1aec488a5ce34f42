/*-------------------------------------------------------------------------
 *
 * extension/rating.h
 *	  The pure rating core: price a consumption over an interval.
 *
 * Nothing here touches the database, so the core can be unit-tested on
 * its own (test/unit).  Units are those of prepay.h: energy in milli-units,
 * prices in micro-currency per unit, exact amounts in nano-currency, money
 * in cents, instants in microseconds (PostgreSQL's TimestampTz).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/rating.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PREPAY_RATING_H
#define PREPAY_RATING_H

#include <stdbool.h>
#include <stdint.h>

/* A price that applies from valid_from until the next version. */
typedef struct RatingPrice
{
	int64_t		valid_from;
	int64_t		price;			/* micro-currency per unit */
} RatingPrice;

/* One priced piece of an interval. */
typedef struct RatingPiece
{
	int64_t		from;
	int64_t		to;
	int64_t		energy;			/* milli-units */
	int64_t		price;			/* micro-currency per unit */
	int64_t		exact;			/* nano-currency: energy x price */
} RatingPiece;

/*
 * Split `energy` consumed uniformly over (from, to] at every price change
 * and price each piece.  `prices` are sorted by valid_from; the first one
 * also prices anything before its valid_from.  Writes at most nprices
 * pieces to `pieces` and returns how many, or -1 if an amount overflows.
 */
extern int	rating_split(const RatingPrice *prices, int nprices,
						 int64_t from, int64_t to, int64_t energy,
						 RatingPiece *pieces);

/*
 * Carry-forward rounding: post whole cents of exact + *carry (rounded
 * down), keep the sub-cent rest in *carry.  Returns the cents to post.
 */
extern int64_t rating_round_with_carry(int64_t exact, int64_t *carry);

/*
 * Whether `energy` over `elapsed_us` microseconds exceeds max_per_hour
 * (milli-units per hour).
 */
extern bool rating_exceeds_rate(int64_t energy, int64_t elapsed_us, int64_t max_per_hour);

#endif							/* PREPAY_RATING_H */
