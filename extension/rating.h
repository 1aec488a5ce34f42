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

/*
 * The plausibility limit of a meter that has none set (meter.max_per_hour
 * NULL), derived from what it can physically deliver: the most its own
 * register can advance in an hour, for its kind, times its multiplier
 * (milli-units per hour).  See docs/ARCHITECTURE.md, "Bad readings".
 */
#define RATING_REGISTER_PER_HOUR_ELECTRICITY INT64_C(100000)	/* 100 kWh/h */
#define RATING_REGISTER_PER_HOUR_WATER INT64_C(100000)		/* 100 m3/h */
#define RATING_REGISTER_PER_HOUR_HEAT INT64_C(1000000)		/* 1,000 kWh/h */

/* The register's limit for a meter kind (prepay.meter_kind label). */
extern int64_t rating_register_per_hour(const char *kind);

/* The derived limit: rating_register_per_hour(kind) x multiplier. */
extern int64_t rating_default_max_per_hour(const char *kind, int32_t multiplier);

#endif							/* PREPAY_RATING_H */
