/*-------------------------------------------------------------------------
 *
 * extension/rating.c
 *	  The money side of rating: round exact charges to cents with a carried
 *	  remainder, and the plausibility limit on consumption.  How a
 *	  consumption is cut and priced is the tariff engine's (tariff.c).
 *
 * Rounding.  A ledger entry holds whole cents.  Each charge posts the
 * whole cents of (exact amount + carry) rounded down and carries the
 * sub-cent rest to the meter's next charge, so the sum of everything
 * posted plus the current carry equals the sum of the exact amounts.  A
 * tenant never pays for a fraction of a cent not yet consumed, and is
 * never under-billed by more than one cent in total.
 *
 * Plausibility.  A reading whose consumption since the last rated one
 * exceeds the meter's limit per hour is quarantined as an impossible jump.
 * A meter with no limit set gets one derived from what it can physically
 * deliver: its register cannot advance faster than a direct-connected
 * meter of its kind measures at full load (100 kWh/h covers 3 x 230 V x
 * 145 A; a CT-operated meter's x/5 A secondary measures far less), and
 * the consumption is the register's advance times the multiplier.  So a
 * 150 kW shop behind a 200/5 CT (multiplier 40, limit 4,000 kWh/h) is
 * rated, and a register that leaps by orders of magnitude is not.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/rating.c
 *
 *-------------------------------------------------------------------------
 */
#include "rating.h"

#include <string.h>

#define NANO_PER_CENT INT64_C(10000000)
#define MICROS_PER_HOUR INT64_C(3600000000)

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

int64_t
rating_register_per_hour(const char *kind)
{
	if (strcmp(kind, "heat") == 0)
		return RATING_REGISTER_PER_HOUR_HEAT;
	if (strcmp(kind, "water") == 0)
		return RATING_REGISTER_PER_HOUR_WATER;
	return RATING_REGISTER_PER_HOUR_ELECTRICITY;
}

int64_t
rating_default_max_per_hour(const char *kind, int32_t multiplier)
{
	/* at most 10^6 x (2^31 - 1): no overflow */
	return rating_register_per_hour(kind) * (multiplier > 0 ? multiplier : 1);
}
