/*-------------------------------------------------------------------------
 *
 * extension/tariff.c
 *	  The tariff engine's pure core: cut an interval wherever the price may
 *	  change and price every piece exactly.
 *
 * Cutting.  The interval (from, to] is walked in time order and cut at
 * every price-version change, every switch point of the day's time-of-use
 * schedule (which depends on the local day type and month), every local
 * midnight where the schedule changes, and every billing-cycle start, all
 * in the site's local time as the calendar reports it.  A segment's
 * energy is its uniform share of the interval: a segment (a, b] receives
 * floor(E * (b - from) / (to - from)) - floor(E * (a - from) / (to -
 * from)), so segments always add up to E exactly.  When the tariff splits
 * by the meter's own TOU registers, each period's register energy is
 * spread the same way and the time-of-use cuts are not needed.  Registers
 * that are missing, go back or do not add up to the total fall back to the
 * uniform split, and the pieces say why (TariffPieces.fallback), so that
 * the caller can make the fallback visible.
 *
 * Tiers.  Each segment's energy is then cut at the tier ceilings of the
 * cycle-to-date consumption (graduated: every unit is priced in the tier
 * it falls in), and the cycle-to-date consumption advances.  A new
 * billing cycle starts again from zero.
 *
 * Pricing.  A piece's exact amount is energy x price in nano-currency,
 * with no rounding; rounding to cents happens once per ledger entry
 * (rating.c).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/tariff.c
 *
 *-------------------------------------------------------------------------
 */
#include "tariff.h"

#include <stdlib.h>
#include <string.h>

#define MINUTES_PER_DAY 1440

/* What a segment of the interval is priced as. */
typedef struct Segment
{
	int64_t		from;
	int64_t		to;
	int			version;
	int			period;			/* -1: every period, by register */
} Segment;

static int64_t share_until(int64_t energy, int64_t from, int64_t to, int64_t at);
static const TariffSchedule *schedule_for(const TariffVersion *v, const TariffCalendar *cal,
										  int32_t day);
static int64_t next_cut(const TariffVersion *versions, int nversions, const TariffCalendar *cal,
						Segment *seg, TariffCycleState *cycle, int64_t to);
static bool price_segment(const TariffVersion *v, const Segment *seg, int period,
						  int64_t energy, TariffCycleState *cycle, TariffPieces *out);
static bool append_piece(TariffPieces *out, const TariffPiece *piece);
static TariffFallback register_fallback(const TariffVersion *v, const int64_t *registers,
										int64_t energy);

const char *const tariff_register_name[TARIFF_NREGISTERS] = {"sharp", "peak", "flat", "valley"};

/* What a fallback means, in words (NULL for none). */
const char *
tariff_fallback_text(TariffFallback fallback)
{
	switch (fallback)
	{
		case TARIFF_FALLBACK_NONE:
			break;
		case TARIFF_FALLBACK_MISSING:
			return "a register of the tariff's periods is missing";
		case TARIFF_FALLBACK_NEGATIVE:
			return "a register of the tariff's periods went back";
		case TARIFF_FALLBACK_SUM:
			return "the registers of the tariff's periods do not add up to the total";
	}
	return NULL;
}

/*
 * register_fallback
 *		Whether the register energies of a version that splits by registers
 *		can be used as measured: given, none negative, adding up to the
 *		energy charged.  TARIFF_FALLBACK_NONE if so, else why not.
 */
static TariffFallback
register_fallback(const TariffVersion *v, const int64_t *registers, int64_t energy)
{
	int64_t		sum = 0;

	if (registers == NULL)
		return TARIFF_FALLBACK_MISSING;
	for (int p = 0; p < v->nperiods; p++)
		if (registers[p] < 0)
			return TARIFF_FALLBACK_NEGATIVE;
	for (int p = 0; p < v->nperiods; p++)
		if (__builtin_add_overflow(sum, registers[p], &sum))
			return TARIFF_FALLBACK_SUM;
	return sum == energy ? TARIFF_FALLBACK_NONE : TARIFF_FALLBACK_SUM;
}

int
tariff_register_index(const char *period_name)
{
	for (int k = 0; k < TARIFF_NREGISTERS; k++)
		if (strcmp(tariff_register_name[k], period_name) == 0)
			return k;
	return -1;
}

int32_t
tariff_days_from_civil(int year, int month, int day)
{
	/* days from 1970-01-01 by the proleptic Gregorian calendar */
	int			y = year - (month <= 2);
	int			era = (y >= 0 ? y : y - 399) / 400;
	int			yoe = y - era * 400;
	int			doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
	int			doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + doe - 719468 - 10957;	/* shift to 2000-01-01 */
}

void
tariff_civil_from_days(int32_t days, int *year, int *month, int *day)
{
	int32_t		z = days + 10957 + 719468;
	int32_t		era = (z >= 0 ? z : z - 146096) / 146097;
	int32_t		doe = z - era * 146097;
	int32_t		yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int32_t		doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int32_t		mp = (5 * doy + 2) / 153;

	*day = doy - (153 * mp + 2) / 5 + 1;
	*month = mp < 10 ? mp + 3 : mp - 9;
	*year = yoe + era * 400 + (*month <= 2);
}

static bool
day_listed(const int32_t *days, int n, int32_t day)
{
	int			lo = 0;
	int			hi = n - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (days[mid] == day)
			return true;
		if (days[mid] < day)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return false;
}

int
tariff_day_type(const TariffCalendar *cal, int32_t day)
{
	/* 2000-01-01 was a Saturday: day 0 -> 5 with Monday = 0 */
	int			weekday = (int) (((day % 7) + 7 + 5) % 7);

	if (day_listed(cal->holidays, cal->nholidays, day))
		return TARIFF_HOLIDAY;
	if (weekday >= 5 && !day_listed(cal->workdays, cal->nworkdays, day))
		return TARIFF_WEEKEND;
	return TARIFF_WEEKDAY;
}

int
tariff_version_at(const TariffVersion *versions, int nversions, int64_t t)
{
	int			i = 0;

	while (i + 1 < nversions && versions[i + 1].valid_from <= t)
		i++;
	return i;
}

int32_t
tariff_cycle_start_day(const TariffVersion *v, int32_t day)
{
	int			y,
				m,
				d;

	tariff_civil_from_days(day, &y, &m, &d);
	if (v->cycle == TARIFF_CYCLE_MONTHLY)
	{
		if (d < v->cycle_start_day && --m == 0)
		{
			m = 12;
			y--;
		}
		return tariff_days_from_civil(y, m, v->cycle_start_day);
	}
	if (m < v->cycle_start_month || (m == v->cycle_start_month && d < v->cycle_start_day))
		y--;
	return tariff_days_from_civil(y, v->cycle_start_month, v->cycle_start_day);
}

/* First local day of the cycle after the one starting on `start`. */
static int32_t
next_cycle_start_day(const TariffVersion *v, int32_t start)
{
	int			y,
				m,
				d;

	tariff_civil_from_days(start, &y, &m, &d);
	if (v->cycle == TARIFF_CYCLE_MONTHLY && ++m == 13)
	{
		m = 1;
		y++;
	}
	else if (v->cycle == TARIFF_CYCLE_YEARLY)
		y++;
	return tariff_days_from_civil(y, m, d);
}

bool
tariff_rate(const TariffVersion *versions, int nversions, const TariffCalendar *cal,
			int64_t from, int64_t to, int64_t energy, const int64_t *registers,
			TariffCycleState *cycle, TariffPieces *out)
{
	const TariffVersion *last = &versions[tariff_version_at(versions, nversions, to)];
	bool		by_register = false;
	Segment		seg;

	out->fallback = TARIFF_FALLBACK_NONE;
	if (last->split == TARIFF_SPLIT_REGISTERS)
		out->fallback = register_fallback(last, registers, energy);
	by_register = last->split == TARIFF_SPLIT_REGISTERS && out->fallback == TARIFF_FALLBACK_NONE;
	out->by_register = by_register;

	seg.to = from;
	while (seg.to < to)
	{
		seg.from = seg.to;
		seg.period = by_register ? -1 : 0;
		seg.to = next_cut(versions, nversions, cal, &seg, cycle, to);
		if (!by_register)
		{
			int64_t		e = share_until(energy, from, to, seg.to) - share_until(energy, from, to, seg.from);

			if (!price_segment(&versions[seg.version], &seg, seg.period, e, cycle, out))
				return false;
			continue;
		}
		for (int p = 0; p < last->nperiods; p++)
		{
			int64_t		e = share_until(registers[p], from, to, seg.to) - share_until(registers[p], from, to, seg.from);
			int			period = p < versions[seg.version].nperiods ? p : 0;

			if (!price_segment(&versions[seg.version], &seg, period, e, cycle, out))
				return false;
		}
	}
	return true;
}

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
 * schedule_for
 *		The time-of-use schedule of a local day: the first schedule naming
 *		the day's month and type; a holiday no schedule names is priced as
 *		a weekend day.
 */
static const TariffSchedule *
schedule_for(const TariffVersion *v, const TariffCalendar *cal, int32_t day)
{
	int			y,
				m,
				d;
	int			type = tariff_day_type(cal, day);

	tariff_civil_from_days(day, &y, &m, &d);
	for (int pass = 0; pass < 2; pass++)
	{
		for (int i = 0; i < v->nschedules; i++)
			if ((v->schedules[i].months & (1u << m)) && (v->schedules[i].days & type))
				return &v->schedules[i];
		if (type != TARIFF_HOLIDAY)
			break;
		type = TARIFF_WEEKEND;
	}
	return &v->schedules[0];	/* unreachable for a validated tariff */
}

/*
 * next_cut
 *		Fill in the version and period of the segment starting at
 *		seg->from and return where it ends: the next version change, switch
 *		point, local midnight or cycle start, or `to`.  Starts a new cycle
 *		in *cycle when seg->from lies in a later one.
 */
static int64_t
next_cut(const TariffVersion *versions, int nversions, const TariffCalendar *cal,
		 Segment *seg, TariffCycleState *cycle, int64_t to)
{
	int			vi = tariff_version_at(versions, nversions, seg->from);
	const TariffVersion *v = &versions[vi];
	int64_t		end = to;
	int32_t		day = 0;
	int			minute = 0;

	seg->version = vi;
	if (vi + 1 < nversions && versions[vi + 1].valid_from < end)
		end = versions[vi + 1].valid_from;
	if (v->nschedules > 0 || v->cycle != TARIFF_CYCLE_NONE)
		cal->utc_to_local(cal->arg, seg->from, &day, &minute);

	if (v->nschedules > 0 && seg->period >= 0)
	{
		const TariffSchedule *s = schedule_for(v, cal, day);
		int			i = 0;
		int64_t		boundary;

		while (i + 1 < s->nswitches && s->minute[i + 1] <= minute)
			i++;
		seg->period = s->period[i];
		boundary = cal->local_to_utc(cal->arg, day,
									 i + 1 < s->nswitches ? s->minute[i + 1] : MINUTES_PER_DAY);
		if (boundary <= seg->from)	/* a switch point lost in a DST change */
			boundary = cal->local_to_utc(cal->arg, day, MINUTES_PER_DAY);
		if (boundary > seg->from && boundary < end)
			end = boundary;
	}
	if (v->cycle != TARIFF_CYCLE_NONE)
	{
		int32_t		first = tariff_cycle_start_day(v, day);
		int64_t		start = cal->local_to_utc(cal->arg, first, 0);
		int64_t		next = cal->local_to_utc(cal->arg, next_cycle_start_day(v, first), 0);

		if (cycle->start == INT64_MIN)
			cycle->start = start;
		else if (cycle->start != start)
		{
			cycle->start = start;
			cycle->used = 0;
		}
		if (next > seg->from && next < end)
			end = next;
	}
	return end;
}

/*
 * price_segment
 *		Cut a segment's energy at the tier ceilings and append the priced
 *		pieces.
 */
static bool
price_segment(const TariffVersion *v, const Segment *seg, int period, int64_t energy,
			  TariffCycleState *cycle, TariffPieces *out)
{
	int			tier = 0;

	while (energy > 0)
	{
		TariffPiece piece;
		int64_t		used = v->cycle != TARIFF_CYCLE_NONE ? cycle->used : 0;
		__int128	exact;

		while (tier + 1 < v->ntiers && used >= v->tier_upto[tier])
			tier++;
		piece.from = seg->from;
		piece.to = seg->to;
		piece.version = seg->version;
		piece.period = period;
		piece.tier = tier;
		piece.energy = tier + 1 < v->ntiers && v->tier_upto[tier] - used < energy
			? v->tier_upto[tier] - used : energy;
		piece.price = v->price[tier][period];
		exact = (__int128) piece.energy * piece.price;
		if (exact > INT64_MAX)
			return false;
		piece.exact = (int64_t) exact;
		if (!append_piece(out, &piece))
			return false;
		if (v->cycle != TARIFF_CYCLE_NONE)
			cycle->used += piece.energy;
		energy -= piece.energy;
	}
	return true;
}

static bool
append_piece(TariffPieces *out, const TariffPiece *piece)
{
	if (out->n == out->cap)
	{
		int			cap = out->cap > 0 ? out->cap * 2 : 8;
		TariffPiece *items = out->grow(out->items, sizeof(TariffPiece) * (size_t) cap);

		if (items == NULL)
			return false;
		out->items = items;
		out->cap = cap;
	}
	out->items[out->n++] = *piece;
	return true;
}
