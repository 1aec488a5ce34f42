/*-------------------------------------------------------------------------
 *
 * extension/tariff_book.c
 *	  The tariff book of a rating batch: every version of every tariff of
 *	  the batch's sites, compiled once, and each site's calendar (its time
 *	  zone and holidays) for the pure core.  Also writes the record of a
 *	  charge's pieces that the ledger keeps for prepay.explain_charge.
 *
 * Loading runs inside the caller's SPI connection and takes no locks of
 * its own: the rating trigger holds the site's rating lock, so no batch
 * of the same site runs at the same time.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/tariff_book.c
 *
 *-------------------------------------------------------------------------
 */
#include "prepay.h"
#include "tariff_book.h"
#include "tariff_def.h"

#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "pgtime.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/json.h"
#include "miscadmin.h"
#include "utils/datetime.h"

#define CLOCK_CACHE_SIZE 64

/*
 * One site's local time: its zone, a small cache of local -> UTC, and the
 * last local day seen by utc_to_local when that day had no offset change
 * (then a minute of the day is a plain division).
 */
typedef struct SiteClock
{
	pg_tz	   *zone;
	int64		key[CLOCK_CACHE_SIZE];	/* day * 1440 + minute, or -1 */
	int64		value[CLOCK_CACHE_SIZE];
	int32		day;			/* the cached plain day */
	TimestampTz day_start;		/* its local midnight; day_end = +24 h */
	TimestampTz day_end;
} SiteClock;

typedef struct BookSite
{
	int32		site_id;
	TariffCalendar calendar;
	SiteClock	clock;
} BookSite;

typedef struct BookTariff
{
	int32		site_id;
	int64		tariff_id;
	int			first;			/* index into versions */
	int			count;
} BookTariff;

struct TariffBook
{
	BookSite   *sites;
	int			nsites;
	TariffVersion *versions;
	BookTariff *tariffs;
	int			ntariffs;
};

static void book_query(SPIPlanPtr *plan, const char *sql, Datum sites, const char *what);
static Datum book_column(uint64 row, int col);
static void book_load_versions(TariffBook *book, Datum sites);
static void book_load_sites(TariffBook *book, Datum sites);
static void book_load_holidays(TariffBook *book, Datum sites);
static int64 clock_local_to_utc(void *arg, int32_t day, int minute);
static void format_iso(StringInfo buf, TimestampTz t);
static void clock_utc_to_local(void *arg, int64_t t, int32_t *day, int *minute);

TariffBook *
tariff_book_load(const int32 *site_ids, int nsites)
{
	TariffBook *book = palloc0(sizeof(TariffBook));
	Datum	   *elems = palloc(sizeof(Datum) * nsites);
	Datum		sites;

	for (int i = 0; i < nsites; i++)
		elems[i] = Int32GetDatum(site_ids[i]);
	sites = spi_array(elems, NULL, nsites, INT4OID);
	book_load_sites(book, sites);
	book_load_holidays(book, sites);
	book_load_versions(book, sites);
	return book;
}

void *
tariff_book_grow(void *old, size_t size)
{
	return old == NULL ? palloc(size) : repalloc(old, size);
}

/*
 * book_query
 *		Run one of the book's queries, whose one parameter is the array of
 *		the batch's sites; its rows are left in SPI_tuptable.
 */
static void
book_query(SPIPlanPtr *plan, const char *sql, Datum sites, const char *what)
{
	Datum		args[1] = {sites};

	spi_kept_plan(plan, sql, 1, (Oid[]) {INT4ARRAYOID});
	if (SPI_execute_plan(*plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "tariff book: %s query failed", what);
}

/*
 * book_column
 *		Column `col` of row `row` of the last query's rows (the columns
 *		read this way are never NULL).
 */
static Datum
book_column(uint64 row, int col)
{
	bool		isnull;

	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
}

/*
 * book_load_versions
 *		Compile every version of the sites' tariffs, sorted by (site,
 *		tariff, valid_from), and index them per tariff.  A version written
 *		with a plain price is the flat definition {"price": p}.
 */
static void
book_load_versions(TariffBook *book, Datum sites)
{
	static SPIPlanPtr plan = NULL;

	book_query(&plan,
			   "SELECT site_id, tariff_id, valid_from,"
			   "       coalesce(definition, pg_catalog.jsonb_build_object('price', price))"
			   "  FROM prepay.tariff_version"
			   " WHERE site_id = ANY ($1)"
			   " ORDER BY site_id, tariff_id, valid_from",
			   sites, "version");

	book->versions = palloc(sizeof(TariffVersion) * (SPI_processed + 1));
	book->tariffs = palloc(sizeof(BookTariff) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		int32		site_id = DatumGetInt32(book_column(i, 1));
		int64		tariff_id = DatumGetInt64(book_column(i, 2));
		BookTariff *t = book->ntariffs > 0 ? &book->tariffs[book->ntariffs - 1] : NULL;

		if (t == NULL || t->site_id != site_id || t->tariff_id != tariff_id)
		{
			t = &book->tariffs[book->ntariffs++];
			t->site_id = site_id;
			t->tariff_id = tariff_id;
			t->first = i;
			t->count = 0;
		}
		tariff_compile(DatumGetJsonbP(book_column(i, 4)), &book->versions[i]);
		book->versions[i].valid_from = DatumGetTimestampTz(book_column(i, 3));
		t->count++;
	}
}

static void
book_load_sites(TariffBook *book, Datum sites)
{
	static SPIPlanPtr plan = NULL;

	book_query(&plan,
			   "SELECT site_id, time_zone FROM prepay.site WHERE site_id = ANY ($1) ORDER BY site_id",
			   sites, "site");

	book->sites = palloc0(sizeof(BookSite) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		BookSite   *s = &book->sites[book->nsites++];
		char	   *zone = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

		s->site_id = DatumGetInt32(book_column(i, 1));
		s->clock.zone = pg_tzset(zone);
		if (s->clock.zone == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("site %d has an unknown time zone \"%s\"", s->site_id, zone)));
		memset(s->clock.key, -1, sizeof(s->clock.key));
		s->clock.day_start = s->clock.day_end = 0;
		s->calendar.arg = &s->clock;
		s->calendar.local_to_utc = clock_local_to_utc;
		s->calendar.utc_to_local = clock_utc_to_local;
	}
}

/*
 * book_load_holidays
 *		Each site's holidays and worked weekend days, as sorted day numbers.
 */
static void
book_load_holidays(TariffBook *book, Datum sites)
{
	static SPIPlanPtr plan = NULL;

	book_query(&plan,
			   "SELECT site_id, (day - date '2000-01-01')::int4, kind = 'holiday'"
			   "  FROM prepay.holiday WHERE site_id = ANY ($1) ORDER BY site_id, day",
			   sites, "holiday");

	for (int s = 0; s < book->nsites; s++)
	{
		book->sites[s].calendar.holidays = palloc(sizeof(int32) * (SPI_processed + 1));
		book->sites[s].calendar.workdays = palloc(sizeof(int32) * (SPI_processed + 1));
	}
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		int32		site_id = DatumGetInt32(book_column(i, 1));
		int32		day = DatumGetInt32(book_column(i, 2));
		bool		holiday = DatumGetBool(book_column(i, 3));
		TariffCalendar *cal = (TariffCalendar *) tariff_book_calendar(book, site_id);

		if (cal == NULL)
			continue;
		if (holiday)
			((int32 *) cal->holidays)[cal->nholidays++] = day;
		else
			((int32 *) cal->workdays)[cal->nworkdays++] = day;
	}
}

const TariffVersion *
tariff_book_versions(TariffBook *book, int32 site_id, int64 tariff_id, int *nversions)
{
	int			lo = 0;
	int			hi = book->ntariffs - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		BookTariff *t = &book->tariffs[mid];

		if (t->site_id == site_id && t->tariff_id == tariff_id)
		{
			*nversions = t->count;
			return &book->versions[t->first];
		}
		if (t->site_id < site_id || (t->site_id == site_id && t->tariff_id < tariff_id))
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	*nversions = 0;
	return NULL;
}

const TariffCalendar *
tariff_book_calendar(TariffBook *book, int32 site_id)
{
	for (int i = 0; i < book->nsites; i++)
		if (book->sites[i].site_id == site_id)
			return &book->sites[i].calendar;
	return NULL;
}

/*
 * clock_local_to_utc
 *		The instant of local `day` 00:00 plus `minute`, resolved in the
 *		site's zone the way PostgreSQL resolves a timestamp without time
 *		zone (a time skipped by a DST change counts as the standard time
 *		before it; a repeated one as its first occurrence).
 */
static int64
clock_local_to_utc(void *arg, int32_t day, int minute)
{
	SiteClock  *clock = arg;
	int64		key;
	int			slot;
	struct pg_tm tm = {0};
	int			tz;
	TimestampTz result;

	day += minute / 1440;
	minute %= 1440;
	key = (int64) day * 1440 + minute;
	slot = (int) (((uint64) key) % CLOCK_CACHE_SIZE);
	if (clock->key[slot] == key)
		return clock->value[slot];

	j2date(day + POSTGRES_EPOCH_JDATE, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	tm.tm_hour = minute / 60;
	tm.tm_min = minute % 60;
	tz = DetermineTimeZoneOffset(&tm, clock->zone);
	if (tm2timestamp(&tm, 0, &tz, &result) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range while rating")));
	clock->key[slot] = key;
	clock->value[slot] = result;
	return result;
}

static void
clock_utc_to_local(void *arg, int64_t t, int32_t *day, int *minute)
{
	SiteClock  *clock = arg;
	struct pg_tm tm;
	fsec_t		fsec;
	int			tz;
	TimestampTz start;

	if (t >= clock->day_start && t < clock->day_end)
	{
		*day = clock->day;
		*minute = (int) ((t - clock->day_start) / USECS_PER_MINUTE);
		return;
	}
	if (timestamp2tm(t, &tz, &tm, &fsec, NULL, clock->zone) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range while rating")));
	*day = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - POSTGRES_EPOCH_JDATE;
	*minute = tm.tm_hour * 60 + tm.tm_min;

	start = clock_local_to_utc(clock, *day, 0);
	if (clock_local_to_utc(clock, *day, 1440) - start == USECS_PER_DAY)
	{
		clock->day = *day;
		clock->day_start = start;
		clock->day_end = start + USECS_PER_DAY;
	}
}

/*
 * append_digits
 *		A non-negative integer in decimal, zero-padded to `width` digits, as
 *		printf's %0*lld writes it (written directly: the pricing record is
 *		formatted for every charge, and printf was a tenth of rating).
 */
static void
append_digits(StringInfo buf, uint64 value, int width)
{
	char		digits[24];
	int			n = 0;

	do
	{
		digits[sizeof(digits) - 1 - n++] = '0' + value % 10;
		value /= 10;
	} while (value != 0);
	while (n < width && n < (int) sizeof(digits))
		digits[sizeof(digits) - 1 - n++] = '0';
	appendBinaryStringInfo(buf, digits + sizeof(digits) - n, n);
}

/* A signed integer in decimal, as %lld. */
static void
append_int(StringInfo buf, int64 value)
{
	if (value < 0)
		appendStringInfoChar(buf, '-');
	append_digits(buf, value < 0 ? -(uint64) value : (uint64) value, 0);
}

/*
 * append_iso
 *		An instant as ISO 8601 in UTC, stable whatever the session's
 *		settings.  This runs for every priced piece, and the pieces of a
 *		batch share few instants (its readings' times, the versions'
 *		valid_from), so the last few are kept formatted.
 */
#define ISO_CACHE_SIZE 4
#define ISO_MAX_LEN 40
static void
append_iso(StringInfo buf, TimestampTz t)
{
	static TimestampTz cached_at[ISO_CACHE_SIZE];
	static char cached_text[ISO_CACHE_SIZE][ISO_MAX_LEN];
	static int	cached_len[ISO_CACHE_SIZE];
	static int	next = 0;
	int			start = buf->len;

	for (int i = 0; i < ISO_CACHE_SIZE; i++)
		if (cached_len[i] > 0 && cached_at[i] == t)
		{
			appendBinaryStringInfo(buf, cached_text[i], cached_len[i]);
			return;
		}
	format_iso(buf, t);
	if (buf->len - start < ISO_MAX_LEN)
	{
		cached_at[next] = t;
		cached_len[next] = buf->len - start;
		memcpy(cached_text[next], buf->data + start, buf->len - start);
		next = (next + 1) % ISO_CACHE_SIZE;
	}
}

/* append_iso without the cache. */
static void
format_iso(StringInfo buf, TimestampTz t)
{
	int64		days = t / USECS_PER_DAY;
	int64		rest = t % USECS_PER_DAY;
	int			y,
				m,
				d;

	if (rest < 0)
	{
		rest += USECS_PER_DAY;
		days--;
	}
	j2date((int) days + POSTGRES_EPOCH_JDATE, &y, &m, &d);
	if (y < 0)
		appendStringInfo(buf, "%04d", y);
	else
		append_digits(buf, y, 4);
	appendStringInfoChar(buf, '-');
	append_digits(buf, m, 2);
	appendStringInfoChar(buf, '-');
	append_digits(buf, d, 2);
	appendStringInfoChar(buf, 'T');
	append_digits(buf, rest / USECS_PER_HOUR, 2);
	appendStringInfoChar(buf, ':');
	append_digits(buf, rest / USECS_PER_MINUTE % 60, 2);
	appendStringInfoChar(buf, ':');
	append_digits(buf, rest / USECS_PER_SEC % 60, 2);
	if (rest % USECS_PER_SEC != 0)
	{
		appendStringInfoChar(buf, '.');
		append_digits(buf, rest % USECS_PER_SEC, 6);
	}
	appendStringInfoString(buf, "+00:00");
}

/* A fixed-point value as a JSON number with exactly `scale` decimals. */
static void
append_fixed(StringInfo buf, int64 value, int scale)
{
	uint64		magnitude = value < 0 ? -(uint64) value : (uint64) value;
	uint64		unit = 1;

	for (int i = 0; i < scale; i++)
		unit *= 10;
	if (value < 0)
		appendStringInfoChar(buf, '-');
	append_digits(buf, magnitude / unit, 0);
	appendStringInfoChar(buf, '.');
	append_digits(buf, magnitude % unit, scale);
}

/*
 * tariff_pieces_json
 *		How a charge was priced, as the JSON kept in prepay.ledger.pieces:
 *		the multiplier, how the interval was split (and, when a tariff that
 *		splits by registers fell back to the uniform split, why:
 *		"split_fallback"), the billing cycle and its consumption before the
 *		charge, and one object per piece.  Appended to buf, which a batch
 *		reuses for every charge.
 */
void
tariff_pieces_json(StringInfo buf, int64 tariff_id, const TariffVersion *versions,
				   const TariffPieces *pieces, int32 multiplier, const TariffCycleState *before,
				   const TariffCycleState *after, const char *fallback)
{
	appendStringInfoString(buf, "{\"tariff_id\": ");
	append_int(buf, tariff_id);
	appendStringInfoString(buf, ", \"multiplier\": ");
	append_int(buf, multiplier);
	appendStringInfoString(buf, pieces->by_register ? ", \"split\": \"registers\"" : ", \"split\": \"uniform\"");
	if (pieces->fallback != TARIFF_FALLBACK_NONE)
	{
		appendStringInfoString(buf, ", \"split_fallback\": ");
		escape_json(buf, fallback != NULL ? fallback : tariff_fallback_text(pieces->fallback));
	}
	if (before->start != INT64_MIN)
	{
		appendStringInfoString(buf, ", \"cycle_start\": \"");
		append_iso(buf, before->start);
		appendStringInfoString(buf, "\", \"cycle_used_before\": ");
		append_fixed(buf, before->used, ENERGY_SCALE);
	}
	if (after->start != INT64_MIN)
	{
		appendStringInfoString(buf, ", \"cycle_start_after\": \"");
		append_iso(buf, after->start);
		appendStringInfoString(buf, "\", \"cycle_used_after\": ");
		append_fixed(buf, after->used, ENERGY_SCALE);
	}
	appendStringInfoString(buf, ", \"pieces\": [");
	for (int i = 0; i < pieces->n; i++)
	{
		const TariffPiece *p = &pieces->items[i];
		const TariffVersion *v = &versions[p->version];

		appendStringInfoString(buf, i > 0 ? ", {\"from\": \"" : "{\"from\": \"");
		append_iso(buf, p->from);
		appendStringInfoString(buf, "\", \"to\": \"");
		append_iso(buf, p->to);
		appendStringInfoString(buf, "\", \"version\": \"");
		append_iso(buf, v->valid_from);
		appendStringInfoString(buf, "\", \"period\": \"");
		appendStringInfoString(buf, v->period_name[p->period]);
		appendStringInfoString(buf, "\", \"tier\": ");
		append_int(buf, p->tier + 1);
		appendStringInfoString(buf, ", \"energy\": ");
		append_fixed(buf, p->energy, ENERGY_SCALE);
		appendStringInfoString(buf, ", \"price\": ");
		append_fixed(buf, p->price, PRICE_SCALE);
		appendStringInfoString(buf, ", \"amount\": ");
		append_fixed(buf, p->exact, EXACT_SCALE);
		appendStringInfoChar(buf, '}');
	}
	appendStringInfoString(buf, "]}");
}
