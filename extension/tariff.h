/*-------------------------------------------------------------------------
 *
 * extension/tariff.h
 *	  The tariff engine's pure core: a compiled tariff, a site calendar, and
 *	  the exact split of a consumption into priced pieces (tariff.c).
 *
 * Nothing here touches the database, so the core is unit-tested on its
 * own (test/unit/test_tariff.c).  Units are those of prepay.h: energy in
 * milli-units, prices in micro-currency per unit, exact amounts in
 * nano-currency, instants in microseconds since 2000-01-01 UTC
 * (PostgreSQL's TimestampTz), local days as days since 2000-01-01
 * (PostgreSQL's DateADT).  Definitions are parsed and validated into
 * these structs by tariff_def.c.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/tariff.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PREPAY_TARIFF_H
#define PREPAY_TARIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TARIFF_MAX_PERIODS 12
#define TARIFF_MAX_TIERS 8
#define TARIFF_MAX_SCHEDULES 16
#define TARIFF_MAX_SWITCHES 48
#define TARIFF_NAME_LEN 32
#define TARIFF_NO_TIER_LIMIT INT64_MAX

/* Day types a schedule applies to (bit flags). */
#define TARIFF_WEEKDAY 0x01
#define TARIFF_WEEKEND 0x02
#define TARIFF_HOLIDAY 0x04

typedef enum TariffCycle
{
	TARIFF_CYCLE_NONE = 0,		/* no tiers: nothing accumulates */
	TARIFF_CYCLE_MONTHLY,
	TARIFF_CYCLE_YEARLY
} TariffCycle;

typedef enum TariffSplit
{
	TARIFF_SPLIT_UNIFORM = 0,	/* spread over time, cut at switch points */
	TARIFF_SPLIT_REGISTERS		/* the meter's own TOU registers */
} TariffSplit;

typedef enum TariffBasic
{
	TARIFF_BASIC_NONE = 0,
	TARIFF_BASIC_CAPACITY,		/* per kVA of contracted capacity per month */
	TARIFF_BASIC_DEMAND			/* per kW of the month's maximum demand */
} TariffBasic;

/* A day's switch points: from minute[i] (local) period[i] applies. */
typedef struct TariffSchedule
{
	uint16_t	months;			/* bit m (1..12) set: applies in month m */
	uint8_t		days;			/* TARIFF_WEEKDAY | ... */
	int			nswitches;
	int16_t		minute[TARIFF_MAX_SWITCHES];	/* minute[0] == 0, rising */
	int8_t		period[TARIFF_MAX_SWITCHES];
} TariffSchedule;

/* One version of a tariff, in force from valid_from to the next one. */
typedef struct TariffVersion
{
	int64_t		valid_from;
	int			nperiods;
	char		period_name[TARIFF_MAX_PERIODS][TARIFF_NAME_LEN];
	int			nschedules;		/* 0: period 0 all day, every day */
	TariffSchedule schedules[TARIFF_MAX_SCHEDULES];
	int			ntiers;			/* at least 1 */
	int64_t		tier_upto[TARIFF_MAX_TIERS];	/* cycle-to-date ceiling */
	int64_t		price[TARIFF_MAX_TIERS][TARIFF_MAX_PERIODS];
	TariffCycle cycle;
	int			cycle_start_day;	/* 1..28 */
	int			cycle_start_month;	/* 1..12, yearly cycles */
	TariffSplit split;
	TariffBasic basic;
	int64_t		basic_price;	/* micro-currency per kVA or kW per month */
} TariffVersion;

/* A site's local time and holiday calendar. */
typedef struct TariffCalendar
{
	void	   *arg;
	/* instant of local midnight of `day` plus `minute` (may pass 1440) */
	int64_t		(*local_to_utc) (void *arg, int32_t day, int minute);
	/* local day and minute of day of instant t */
	void		(*utc_to_local) (void *arg, int64_t t, int32_t *day, int *minute);
	const int32_t *holidays;	/* sorted local days priced as holidays */
	int			nholidays;
	const int32_t *workdays;	/* sorted weekend days worked (swaps) */
	int			nworkdays;
} TariffCalendar;

/* Cycle-to-date consumption, carried from one charge to the next. */
typedef struct TariffCycleState
{
	int64_t		start;			/* instant the cycle began; INT64_MIN: none */
	int64_t		used;			/* milli-units consumed in it so far */
} TariffCycleState;

/* One priced piece. */
typedef struct TariffPiece
{
	int64_t		from;
	int64_t		to;
	int			version;		/* index into the versions passed in */
	int			period;
	int			tier;			/* 0-based */
	int64_t		energy;
	int64_t		price;
	int64_t		exact;
} TariffPiece;

/*
 * Why a charge whose version splits by registers was split uniformly: the
 * register split's fallback, which the pricing record and an alarm show.
 */
typedef enum TariffFallback
{
	TARIFF_FALLBACK_NONE = 0,	/* split as the version says */
	TARIFF_FALLBACK_MISSING,	/* a register of one of its periods is missing */
	TARIFF_FALLBACK_NEGATIVE,	/* a register of one of its periods went back */
	TARIFF_FALLBACK_SUM			/* its periods' registers do not add up to the total */
} TariffFallback;

/* A growable array of pieces; `grow` reallocates (realloc or repalloc). */
typedef struct TariffPieces
{
	TariffPiece *items;
	int			n;
	int			cap;
	void	   *(*grow) (void *old, size_t size);
	bool		by_register;	/* set by tariff_rate: registers were used */
	TariffFallback fallback;	/* set by tariff_rate: why they were not */
} TariffPieces;

/*
 * Price `energy` consumed over (from, to] under `versions` (sorted by
 * valid_from; the first also prices anything before its valid_from).
 * `registers`, when not NULL, holds the energy per period of the version
 * in force at `to` as the meter's TOU registers measured it (used only
 * when that version splits by registers and they add up to `energy`).
 * When that version splits by registers and they are missing (NULL),
 * negative or do not add up, the split falls back to uniform and
 * out->fallback says why.  Appends the pieces to `out` and advances
 * `cycle`.  Returns false if an amount overflows 64 bits.
 */
extern bool tariff_rate(const TariffVersion *versions, int nversions,
						const TariffCalendar *calendar,
						int64_t from, int64_t to, int64_t energy,
						const int64_t *registers,
						TariffCycleState *cycle, TariffPieces *out);

/* The meter's TOU registers, in the order of prepay.reading's columns. */
#define TARIFF_NREGISTERS 4
extern const char *const tariff_register_name[TARIFF_NREGISTERS];

/* What a fallback means, in words, for the pricing record. */
extern const char *tariff_fallback_text(TariffFallback fallback);

/* Index into tariff_register_name of a period named after a register, or -1. */
extern int	tariff_register_index(const char *period_name);

/* Index of the version in force at t. */
extern int	tariff_version_at(const TariffVersion *versions, int nversions, int64_t t);

/* Day type (TARIFF_WEEKDAY, _WEEKEND or _HOLIDAY) of a local day. */
extern int	tariff_day_type(const TariffCalendar *calendar, int32_t day);

/* Civil date helpers on days since 2000-01-01. */
extern int32_t tariff_days_from_civil(int year, int month, int day);
extern void tariff_civil_from_days(int32_t days, int *year, int *month, int *day);

/* First local day of the billing cycle that contains `day`. */
extern int32_t tariff_cycle_start_day(const TariffVersion *v, int32_t day);

#endif							/* PREPAY_TARIFF_H */
