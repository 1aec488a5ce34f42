/*-------------------------------------------------------------------------
 *
 * test/unit/test_rating.c
 *	  Unit test of extension/rating.c, without a database: the
 *	  carry-forward rounding keeps posted + carry = exact, the plausibility
 *	  limit is exact at its boundary, and the limit derived for a meter
 *	  without one lets a 150 kW shop behind a 200/5 CT through.  Run by
 *	  test/suite.sh.
 *
 * Copyright (c) 2026, the prepay authors
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "rating.h"
#include "check.h"

#define HOUR INT64_C(3600000000)

/* Carry-forward rounding: posted + carry == exact, carry in [0, 1 cent) */
static void
test_carry(void)
{
	int64_t		carry = 0;
	int64_t		posted = 0;
	int64_t		exact = 0;

	for (int i = 0; i < 1000; i++)
	{
		int64_t		amount = INT64_C(8800000) + i * INT64_C(1234567);

		posted += rating_round_with_carry(amount, &carry) * INT64_C(10000000);
		exact += amount;
		CHECK(carry >= 0 && carry < INT64_C(10000000));
	}
	CHECK(posted + carry == exact);
	carry = INT64_C(6000000);
	CHECK(rating_round_with_carry(INT64_C(8800000), &carry) == 1);	/* 0.0148 -> 0.01 */
	CHECK(carry == INT64_C(4800000));
	carry = 0;
	CHECK(rating_round_with_carry(-INT64_C(15000000), &carry) == -2);	/* rounds down */
	CHECK(carry == INT64_C(5000000));
}

/* 100 kWh per hour is allowed, 100.001 is not */
static void
test_rate_limit(void)
{
	CHECK(!rating_exceeds_rate(100000, HOUR, 100000));
	CHECK(rating_exceeds_rate(100001, HOUR, 100000));
	CHECK(!rating_exceeds_rate(200000, 2 * HOUR, 100000));
}

/*
 * The derived limit: per kind, times the multiplier.  A 150 kW shop behind
 * a 200/5 CT (multiplier 40) at full load for an hour, and a 200/5 CT at
 * its full 3 x 230 V x 200 A (138 kW), pass; a register leaping 1,000 kWh
 * in an hour on a direct meter does not (issue 17, item 6).
 */
static void
test_default_limit(void)
{
	int64_t		ct = rating_default_max_per_hour("electricity", 40);

	CHECK(ct == INT64_C(4000000));
	CHECK(!rating_exceeds_rate(INT64_C(150000), HOUR, ct));
	CHECK(!rating_exceeds_rate(INT64_C(138000), HOUR, ct));
	CHECK(!rating_exceeds_rate(INT64_C(150000) / 4, HOUR / 4, ct));
	CHECK(rating_exceeds_rate(INT64_C(1000000), HOUR, rating_default_max_per_hour("electricity", 1)));
	CHECK(rating_default_max_per_hour("electricity", 1) == INT64_C(100000));	/* as before */
	CHECK(rating_default_max_per_hour("water", 1) == INT64_C(100000));
	CHECK(rating_default_max_per_hour("heat", 2) == INT64_C(2000000));
	CHECK(rating_default_max_per_hour("electricity", INT32_MAX) == INT64_C(100000) * INT32_MAX);
}

int
main(void)
{
	test_carry();
	test_rate_limit();
	test_default_limit();
	return check_report("test_rating");
}
