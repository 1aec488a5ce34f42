/*-------------------------------------------------------------------------
 *
 * test/unit/test_tariff.c
 *	  Unit test of the tariff engine's pure core (extension/tariff.c),
 *	  without a database: civil dates and day types, pieces that always
 *	  add up, cuts at price versions, switch points, midnight, tier
 *	  ceilings and cycle starts, the register split and its fallback, and
 *	  overflow.  The calendar is a fixed UTC offset (UTC+8); daylight
 *	  saving is tested through PostgreSQL's zones in test/sql.
 *	  Run by test/suite.sh.
 *
 * Copyright (c) 2026, the prepay authors
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tariff.h"
#include "check.h"

#define MINUTE INT64_C(60000000)
#define HOUR (60 * MINUTE)
#define DAY (24 * HOUR)
#define OFFSET (8 * HOUR)

static int64_t
fixed_local_to_utc(void *arg, int32_t day, int minute)
{
	return day * DAY + minute * MINUTE - OFFSET;
}

static void
fixed_utc_to_local(void *arg, int64_t t, int32_t *day, int *minute)
{
	int64_t		local = t + OFFSET;
	int64_t		d = local >= 0 ? local / DAY : -((-local + DAY - 1) / DAY);

	*day = (int32_t) d;
	*minute = (int) ((local - d * DAY) / MINUTE);
}

static const int32_t no_days[1] = {0};
static TariffCalendar calendar = {NULL, fixed_local_to_utc, fixed_utc_to_local, no_days, 0, no_days, 0};

/* The instant of a local date and time. */
static int64_t
local(int y, int m, int d, int hh, int mm)
{
	return fixed_local_to_utc(NULL, tariff_days_from_civil(y, m, d), hh * 60 + mm);
}

static void
flat(TariffVersion *v, int64_t valid_from, int64_t price)
{
	memset(v, 0, sizeof(*v));
	v->valid_from = valid_from;
	v->nperiods = 1;
	strcpy(v->period_name[0], "all");
	v->ntiers = 1;
	v->tier_upto[0] = TARIFF_NO_TIER_LIMIT;
	v->price[0][0] = price;
}

/* valley 00-08 and 22-24 at 0.4, peak 08-12 at 1.0, flat 12-22 at 0.7 */
static void
tou(TariffVersion *v)
{
	static const int16_t minutes[] = {0, 8 * 60, 12 * 60, 22 * 60};
	static const int8_t periods[] = {2, 0, 1, 2};

	memset(v, 0, sizeof(*v));
	v->nperiods = 3;
	strcpy(v->period_name[0], "peak");
	strcpy(v->period_name[1], "flat");
	strcpy(v->period_name[2], "valley");
	v->ntiers = 1;
	v->tier_upto[0] = TARIFF_NO_TIER_LIMIT;
	v->price[0][0] = 1000000;
	v->price[0][1] = 700000;
	v->price[0][2] = 400000;
	v->nschedules = 1;
	v->schedules[0].months = 0x1FFE;
	v->schedules[0].days = TARIFF_WEEKDAY | TARIFF_WEEKEND;
	v->schedules[0].nswitches = 4;
	memcpy(v->schedules[0].minute, minutes, sizeof(minutes));
	memcpy(v->schedules[0].period, periods, sizeof(periods));
}

static TariffPieces
pieces_new(void)
{
	TariffPieces p = {NULL, 0, 0, realloc, false, TARIFF_FALLBACK_NONE};

	return p;
}

static int64_t
total_exact(const TariffPieces *p)
{
	int64_t		sum = 0;

	for (int i = 0; i < p->n; i++)
		sum += p->items[i].exact;
	return sum;
}

/*
 * rate_one: energy from "from" to "to" under the one version v, with these
 * registers (or NULL), from a fresh billing cycle, into p emptied first.
 */
static bool
rate_one(const TariffVersion *v, int64_t from, int64_t to, int64_t energy, const int64_t *registers,
		 TariffPieces *p)
{
	TariffCycleState cycle = {INT64_MIN, 0};

	p->n = 0;
	return tariff_rate(v, 1, &calendar, from, to, energy, registers, &cycle, p);
}

static void
test_civil_dates(void)
{
	int			y,
				m,
				d;
	int32_t		holidays[] = {tariff_days_from_civil(2026, 10, 1)};
	int32_t		workdays[] = {tariff_days_from_civil(2026, 10, 10)};
	TariffCalendar cal = calendar;

	CHECK(tariff_days_from_civil(2000, 1, 1) == 0);
	CHECK(tariff_days_from_civil(2026, 3, 1) - tariff_days_from_civil(2026, 2, 28) == 1);
	CHECK(tariff_days_from_civil(2024, 3, 1) - tariff_days_from_civil(2024, 2, 28) == 2);
	for (int32_t day = -800000; day < 800000; day += 997)
	{
		tariff_civil_from_days(day, &y, &m, &d);
		CHECK(tariff_days_from_civil(y, m, d) == day);
	}
	cal.holidays = holidays;
	cal.nholidays = 1;
	cal.workdays = workdays;
	cal.nworkdays = 1;
	CHECK(tariff_day_type(&cal, 0) == TARIFF_WEEKEND); /* Saturday 2000-01-01 */
	CHECK(tariff_day_type(&cal, tariff_days_from_civil(2026, 11, 23)) == TARIFF_WEEKDAY);
	CHECK(tariff_day_type(&cal, holidays[0]) == TARIFF_HOLIDAY);
	CHECK(tariff_day_type(&cal, workdays[0]) == TARIFF_WEEKDAY);
	CHECK(tariff_day_type(&cal, workdays[0] + 1) == TARIFF_WEEKEND);
}

/* Uneven cuts always add up to the energy, whatever the boundaries. */
static void
test_pieces_add_up(void)
{
	TariffVersion v[5];
	int64_t		starts[] = {0, 7, 13, 29, 31};

	for (int i = 0; i < 5; i++)
		flat(&v[i], starts[i], i + 1);
	for (int64_t energy = 0; energy < 2000; energy += 7)
	{
		TariffPieces p = pieces_new();
		TariffCycleState cycle = {INT64_MIN, 0};
		int64_t		sum = 0;

		CHECK(tariff_rate(v, 5, &calendar, 1, 37, energy, NULL, &cycle, &p));
		for (int i = 0; i < p.n; i++)
			sum += p.items[i].energy;
		CHECK(sum == energy);
		CHECK(p.n <= 5);	/* a piece with no energy is left out */
		free(p.items);
	}
}

/* Before the first version the first price applies; versions cut. */
static void
test_versions(void)
{
	TariffVersion v[2];
	TariffPieces p = pieces_new();
	TariffCycleState cycle = {INT64_MIN, 0};

	flat(&v[0], 10 * HOUR, 600000);
	flat(&v[1], 16 * HOUR, 800000);
	CHECK(tariff_rate(v, 2, &calendar, 0, 24 * HOUR, 24000, NULL, &cycle, &p));
	CHECK(p.n == 2);
	CHECK(p.items[0].energy == 16000 && p.items[0].price == 600000);
	CHECK(p.items[1].energy == 8000 && p.items[1].price == 800000);
	CHECK(total_exact(&p) == INT64_C(16000) * 600000 + INT64_C(8000) * 800000);
	free(p.items);
}

/* 21:00-09:00 local, 12 kWh: flat 1, valley 2 + 8 (cut at midnight), peak 1 */
static void
test_time_of_use(void)
{
	TariffVersion v;
	TariffPieces p = pieces_new();

	tou(&v);
	CHECK(rate_one(&v, local(2026, 3, 2, 21, 0), local(2026, 3, 3, 9, 0), 12000, NULL, &p));
	CHECK(p.n == 4);
	CHECK(p.items[0].period == 1 && p.items[0].energy == 1000);
	CHECK(p.items[1].period == 2 && p.items[1].energy == 2000);
	CHECK(p.items[2].period == 2 && p.items[2].energy == 8000);
	CHECK(p.items[2].from == local(2026, 3, 3, 0, 0));
	CHECK(p.items[3].period == 0 && p.items[3].energy == 1000);
	CHECK(total_exact(&p) == INT64_C(5700000000));
	free(p.items);
}

/* Tiers: 190 used of a 100/200 ladder; the next cycle starts again at 0. */
static void
test_tiers_and_cycle(void)
{
	TariffVersion v;
	TariffPieces p = pieces_new();
	TariffCycleState cycle = {INT64_MIN, 190000};

	flat(&v, 0, 0);
	v.ntiers = 3;
	v.tier_upto[0] = 100000;
	v.tier_upto[1] = 200000;
	v.tier_upto[2] = TARIFF_NO_TIER_LIMIT;
	v.price[0][0] = 500000;
	v.price[1][0] = 600000;
	v.price[2][0] = 800000;
	v.cycle = TARIFF_CYCLE_MONTHLY;
	v.cycle_start_day = 1;
	CHECK(tariff_rate(&v, 1, &calendar, local(2026, 1, 31, 12, 0), local(2026, 2, 1, 12, 0),
					  24000, NULL, &cycle, &p));
	CHECK(p.n == 3);
	CHECK(p.items[0].tier == 1 && p.items[0].energy == 10000);
	CHECK(p.items[1].tier == 2 && p.items[1].energy == 2000);
	CHECK(p.items[2].tier == 0 && p.items[2].energy == 12000);
	CHECK(total_exact(&p) == INT64_C(13600000000));
	CHECK(cycle.start == local(2026, 2, 1, 0, 0) && cycle.used == 12000);
	CHECK(tariff_cycle_start_day(&v, tariff_days_from_civil(2026, 1, 5)) == tariff_days_from_civil(2026, 1, 1));
	v.cycle = TARIFF_CYCLE_YEARLY;
	v.cycle_start_month = 3;
	CHECK(tariff_cycle_start_day(&v, tariff_days_from_civil(2026, 2, 5)) == tariff_days_from_civil(2025, 3, 1));
	free(p.items);
}

/*
 * rate_hour: 10 kWh from 01:00 to 02:00 local on 3 March 2026 (valley),
 * with these registers, into p emptied first.
 */
static bool
rate_hour(const TariffVersion *v, const int64_t *registers, TariffPieces *p)
{
	return rate_one(v, local(2026, 3, 3, 1, 0), local(2026, 3, 3, 2, 0), 10000, registers, p);
}

/* Registers that add up are used as measured; others fall back to uniform. */
static void
test_registers(void)
{
	TariffVersion v;
	TariffPieces p = pieces_new();
	int64_t		good[3] = {3000, 5000, 2000};
	int64_t		bad[3] = {3000, 5000, 1000};
	int64_t		back[3] = {3000, 8000, -1000};
	int64_t		huge[3] = {INT64_MAX, INT64_MAX, 10000};

	tou(&v);
	v.split = TARIFF_SPLIT_REGISTERS;
	CHECK(rate_hour(&v, good, &p));
	CHECK(p.by_register && p.n == 3 && p.fallback == TARIFF_FALLBACK_NONE);
	CHECK(total_exact(&p) == INT64_C(3000) * 1000000 + INT64_C(5000) * 700000 + INT64_C(2000) * 400000);
	CHECK(rate_hour(&v, bad, &p));
	CHECK(!p.by_register && p.n == 1 && p.items[0].period == 2);
	CHECK(p.fallback == TARIFF_FALLBACK_SUM && tariff_fallback_text(p.fallback) != NULL);
	/* no registers: uniform, and the fallback says so */
	CHECK(rate_hour(&v, NULL, &p));
	CHECK(!p.by_register && p.fallback == TARIFF_FALLBACK_MISSING);
	/* a register that went back: uniform, even if the sum matches */
	CHECK(rate_hour(&v, back, &p));
	CHECK(!p.by_register && p.fallback == TARIFF_FALLBACK_NEGATIVE);
	/* registers beyond 64 bits do not add up (no overflow) */
	CHECK(rate_hour(&v, huge, &p));
	CHECK(!p.by_register && p.fallback == TARIFF_FALLBACK_SUM);
	/* a tariff that splits uniformly has no fallback, registers or not */
	v.split = TARIFF_SPLIT_UNIFORM;
	CHECK(rate_hour(&v, NULL, &p));
	CHECK(!p.by_register && p.fallback == TARIFF_FALLBACK_NONE && tariff_fallback_text(p.fallback) == NULL);
	free(p.items);
}

/*
 * Only the tariff's own periods' registers are needed: peak and valley
 * (issue 17, item 5: 2,000 kWh peak + 1,000 valley at 0.617 / 0.307 is
 * 1,541.00, although the clock says half and half, 1,386.00).
 */
static void
test_registers_two_periods(void)
{
	TariffVersion v;
	TariffPieces p = pieces_new();
	int64_t		measured[2] = {INT64_C(2000000), INT64_C(1000000)};

	memset(&v, 0, sizeof(v));
	v.nperiods = 2;
	strcpy(v.period_name[0], "peak");
	strcpy(v.period_name[1], "valley");
	v.price[0][0] = 617000;
	v.price[0][1] = 307000;
	v.ntiers = 1;
	v.nschedules = 1;
	v.schedules[0].months = 0x1ffe;
	v.schedules[0].days = TARIFF_WEEKDAY | TARIFF_WEEKEND | TARIFF_HOLIDAY;
	v.schedules[0].nswitches = 3;
	v.schedules[0].minute[0] = 0;
	v.schedules[0].period[0] = 1;
	v.schedules[0].minute[1] = 8 * 60;
	v.schedules[0].period[1] = 0;
	v.schedules[0].minute[2] = 20 * 60;
	v.schedules[0].period[2] = 1;
	v.split = TARIFF_SPLIT_REGISTERS;
	CHECK(rate_one(&v, local(2026, 3, 3, 0, 0), local(2026, 3, 4, 0, 0), INT64_C(3000000), measured, &p));
	CHECK(p.by_register && p.fallback == TARIFF_FALLBACK_NONE);
	CHECK(total_exact(&p) == INT64_C(1541000000000));
	CHECK(rate_one(&v, local(2026, 3, 3, 0, 0), local(2026, 3, 4, 0, 0), INT64_C(3000000), NULL, &p));
	CHECK(!p.by_register && p.fallback == TARIFF_FALLBACK_MISSING);
	CHECK(total_exact(&p) == INT64_C(1386000000000));
	free(p.items);
}

/* An amount that does not fit is reported, not wrapped. */
static void
test_overflow(void)
{
	TariffVersion v;
	TariffPieces p = pieces_new();

	flat(&v, 0, INT64_C(9000000000000));
	CHECK(!rate_one(&v, 0, HOUR, INT64_C(9000000000), NULL, &p));
	free(p.items);
}

int
main(void)
{
	test_civil_dates();
	test_pieces_add_up();
	test_versions();
	test_time_of_use();
	test_tiers_and_cycle();
	test_registers();
	test_registers_two_periods();
	test_overflow();
	return check_report("test_tariff");
}
