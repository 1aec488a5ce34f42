/*-------------------------------------------------------------------------
 *
 * test/unit/test_rating.c
 *	  Unit test of the pure rating core (extension/rating.c), without a
 *	  database: pieces add up, prices apply at the right instants, the
 *	  carry-forward rounding keeps posted + carry = exact, the plausibility
 *	  limit is exact at its boundary.  Run by test/suite.sh.
 *
 * Copyright (c) 2026, the prepay authors
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "rating.h"

#define HOUR INT64_C(3600000000)

static int	failures = 0;

#define CHECK(cond) \
	do { if (!(cond)) { failures++; fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)

/* One price, the whole interval: 10.010 kWh x 0.6 = 6.006 */
static void
test_single_price(void)
{
	RatingPrice prices[] = {{0, 600000}};
	RatingPiece pieces[1];
	int			n = rating_split(prices, 1, 0, 6 * HOUR, 10010, pieces);

	CHECK(n == 1);
	CHECK(pieces[0].energy == 10010);
	CHECK(pieces[0].exact == INT64_C(6006000000));
}

/* A price change mid-interval: 12 kWh over 12 h, 0.6 then 0.8 at 6 h */
static void
test_price_change(void)
{
	RatingPrice prices[] = {{-HOUR, 600000}, {6 * HOUR, 800000}, {100 * HOUR, 1000000}};
	RatingPiece pieces[3];
	int			n = rating_split(prices, 3, 0, 12 * HOUR, 12000, pieces);

	CHECK(n == 2);
	CHECK(pieces[0].energy == 6000 && pieces[0].price == 600000);
	CHECK(pieces[1].energy == 6000 && pieces[1].price == 800000);
	CHECK(pieces[0].exact + pieces[1].exact == INT64_C(8400000000));
	CHECK(pieces[0].to == 6 * HOUR && pieces[1].from == 6 * HOUR);
}

/* Uneven splits always add up to the energy, whatever the boundaries */
static void
test_pieces_add_up(void)
{
	RatingPrice prices[] = {{0, 1}, {7, 2}, {13, 3}, {29, 4}, {31, 5}};
	RatingPiece pieces[5];

	for (int64_t energy = 0; energy < 2000; energy += 7)
	{
		int			n = rating_split(prices, 5, 1, 37, energy, pieces);
		int64_t		sum = 0;

		for (int i = 0; i < n; i++)
			sum += pieces[i].energy;
		CHECK(n == 5);
		CHECK(sum == energy);
	}
}

/* Before the first version the first price applies */
static void
test_before_first_version(void)
{
	RatingPrice prices[] = {{10 * HOUR, 500000}};
	RatingPiece pieces[1];

	CHECK(rating_split(prices, 1, 0, HOUR, 2000, pieces) == 1);
	CHECK(pieces[0].exact == INT64_C(1000000000));
}

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

/* An amount that does not fit is reported, not wrapped */
static void
test_overflow(void)
{
	RatingPrice prices[] = {{0, INT64_C(9000000000000)}};
	RatingPiece pieces[1];

	CHECK(rating_split(prices, 1, 0, HOUR, INT64_C(9000000000), pieces) == -1);
}

int
main(void)
{
	test_single_price();
	test_price_change();
	test_pieces_add_up();
	test_before_first_version();
	test_carry();
	test_rate_limit();
	test_overflow();
	printf("test_rating: %s\n", failures == 0 ? "all checks passed" : "FAILED");
	return failures == 0 ? 0 : 1;
}
