/*-------------------------------------------------------------------------
 *
 * extension/rating.h
 *	  Rounding charges to cents and the plausibility limit (rating.c).
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
