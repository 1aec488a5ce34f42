/*-------------------------------------------------------------------------
 *
 * extension/rollup.c
 *	  The energy rollups (prepay.energy_day, energy_month and
 *	  consumption_posting_day), kept up to date by the rating batch that
 *	  posts the consumption entries, in the same transaction.
 *
 * The rating path pays only for an append: the batch adds each consumption
 * entry as it is priced, from the pieces it was priced in (no pricing
 * record is parsed back), sums them per (meter, local day, account, period,
 * tier), and appends the sums to prepay.energy_pending, a
 * table with no index, by bulk insertion (direct.c, as COPY does) or, when
 * the table cannot be written directly, one INSERT.  prepay.fold_rollups
 * later moves the deltas into energy_day_folded and energy_month_folded;
 * the views energy_day and energy_month add the two, so readers see every
 * committed batch.  The posting-day rollup has one row per site and day,
 * so it is upserted at once, one statement per site and batch.
 *
 * How an entry is split is the rule of prepay._entry_parts
 * (sql/reports.sql), which prepay.energy_from_ledger and
 * prepay.rebuild_rollups use; test/sql/13_reports.sql checks that the two
 * agree:
 *
 *	  - each piece goes to the local day(s) of its interval (from, to]: a
 *		piece within one day is added whole (its energy and exact amount);
 *		a piece across local midnights is split uniformly, the part up to
 *		instant t getting floor(E x (t - from) / (to - from)) Wh, and each
 *		part costing its energy x the piece's price;
 *	  - the entry's posted cents (and a count of 1) go to the first
 *		piece's first day, period and tier.
 *
 * Consumption entries are posted only by the rating batch (balance.c), so
 * the rollups equal what the ledger explains; rows loaded into the ledger
 * by other means (a restore with triggers disabled, a benchmark) are
 * rolled up by prepay.rebuild_rollups.
 *
 * Locking: the caller holds the rating lock of every site it adds;
 * prepay.fold_rollups takes the same lock, so it never folds a batch half
 * way.  The posting-day upsert takes its row's lock after the meter rows
 * and before any relay command (the protocol in reading.c).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/rollup.c
 *
 *-------------------------------------------------------------------------
 */
#include "rollup.h"
#include "direct.h"
#include "site_key.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/hsearch.h"
#include "utils/snapmgr.h"

/* A row of energy_pending. */
typedef struct EnergyKey
{
	int32		site_id;
	int32		day;			/* days since 2000-01-01 */
	int64		meter_id;
	int64		account_id;
	int32		tier;			/* 1-based, as stored */
	const char *period;			/* a tariff version's period name */
} EnergyKey;

typedef struct EnergySums
{
	EnergyKey	key;
	int64		energy;			/* milli-units */
	int64		cost;			/* nano-currency */
	int64		charged;		/* cents */
	int64		charges;
} EnergySums;

/*
 * A site's row of consumption_posting_day: every entry of a batch is posted
 * on the same local day (the transaction's start, as ledger.created_at)
 * by the same user (the session user), so the site is the whole key.
 */
typedef struct PostingSums
{
	int32		site_id;
	const TariffCalendar *calendar; /* the site's, for its local day */
	int64		entries;
	int64		amount;			/* cents */
} PostingSums;

/*
 * The sums, grouped by meter: the batch rates its meters one after the
 * other, so the sums of the meter being rated are the last ones, from
 * `group` on, and a new part is looked for among them only, newest first
 * (readings come in time order, so a part usually adds to one of the last
 * sums), and among the last SUMS_SEARCHED of them at most, so a batch of
 * one meter over many days stays linear.  A part whose key lies further
 * back, or a meter added again later (a new group), gets a row of its
 * own: the fold and the views sum the rows whatever their number.
 */
#define SUMS_SEARCHED 64

struct Rollup
{
	EnergySums *sums;
	int			nsums;
	int			capacity;
	int			group;			/* first sum of the current meter */
	HTAB	   *postings;
};

static HTAB *sums_table(const char *name, Size keysize, Size entrysize);
static void start_group(Rollup *rollup, int32 site_id, int64 meter_id);
static bool same_key(const EnergyKey *x, const EnergyKey *y);
static void add_part(Rollup *rollup, const EnergyKey *key, int64 energy, int64 cost,
					 int64 charged, int64 charges);
static void add_posting(Rollup *rollup, int32 site_id, const TariffCalendar *calendar, int64 amount);
static int64 split_energy(int64 energy, int64 from, int64 to, int64 at);
static void sort_groups(Rollup *rollup);
static int	compare_energy_keys(const void *a, const void *b);
static void flush_days(Rollup *rollup);
static void insert_days_direct(const EnergySums *rows, int n, DirectTable *table);
static void insert_days(const EnergySums *rows, int n);
static void flush_postings(HTAB *table);
static void overflow(void);

Rollup *
rollup_create(void)
{
	Rollup	   *rollup = palloc0(sizeof(Rollup));

	rollup->capacity = 1024;
	rollup->sums = palloc(sizeof(EnergySums) * rollup->capacity);
	rollup->postings = sums_table("prepay posting sums", sizeof(int32), sizeof(PostingSums));
	return rollup;
}

static HTAB *
sums_table(const char *name, Size keysize, Size entrysize)
{
	HASHCTL		ctl = {.keysize = keysize, .entrysize = entrysize, .hcxt = CurrentMemoryContext};

	return hash_create(name, 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

void
rollup_add_entry(Rollup *rollup, int32 site_id, int64 meter_id, int64 account_id,
				 int64 amount, const TariffPieces *pieces,
				 const TariffVersion *versions, const TariffCalendar *calendar)
{
	start_group(rollup, site_id, meter_id);
	for (int i = 0; i < pieces->n; i++)
	{
		const TariffPiece *p = &pieces->items[i];
		EnergyKey	key;
		int32		first_day;
		int32		last_day;
		int			minute;

		key.site_id = site_id;
		key.meter_id = meter_id;
		key.account_id = account_id;
		key.tier = p->tier + 1;
		key.period = versions[p->version].period_name[p->period];
		calendar->utc_to_local(calendar->arg, p->from, &first_day, &minute);
		calendar->utc_to_local(calendar->arg, p->to - 1, &last_day, &minute);

		for (int32 day = first_day; day <= last_day; day++)
		{
			bool		first = (i == 0 && day == first_day);
			int64		energy = p->energy;
			int64		cost = p->exact;

			if (first_day != last_day)
			{
				int64		start = Max(p->from, calendar->local_to_utc(calendar->arg, day, 0));
				int64		end = Min(p->to, calendar->local_to_utc(calendar->arg, day + 1, 0));

				energy = split_energy(p->energy, p->from, p->to, end) -
					split_energy(p->energy, p->from, p->to, start);
				if (pg_mul_s64_overflow(energy, p->price, &cost))
					overflow();
			}
			key.day = day;
			add_part(rollup, &key, energy, cost, first ? -amount : 0, first ? 1 : 0);
		}
	}
	add_posting(rollup, site_id, calendar, amount);
}

/*
 * split_energy
 *		The part of `energy` consumed uniformly over (from, to] that falls
 *		before instant `at`: floor(energy x (at - from) / (to - from)).
 */
static int64
split_energy(int64 energy, int64 from, int64 to, int64 at)
{
	return (int64) (((int128) energy * (at - from)) / (to - from));
}

/* Start a new group unless the meter's sums are the last ones already. */
static void
start_group(Rollup *rollup, int32 site_id, int64 meter_id)
{
	if (rollup->group < rollup->nsums &&
		rollup->sums[rollup->group].key.site_id == site_id &&
		rollup->sums[rollup->group].key.meter_id == meter_id)
		return;
	rollup->group = rollup->nsums;
}

static bool
same_key(const EnergyKey *x, const EnergyKey *y)
{
	return x->day == y->day && x->tier == y->tier && x->account_id == y->account_id &&
		x->meter_id == y->meter_id && x->site_id == y->site_id &&
		(x->period == y->period || strcmp(x->period, y->period) == 0);
}

static void
add_part(Rollup *rollup, const EnergyKey *key, int64 energy, int64 cost, int64 charged, int64 charges)
{
	EnergySums *sums = NULL;
	int			oldest = Max(rollup->group, rollup->nsums - SUMS_SEARCHED);

	for (int i = rollup->nsums - 1; i >= oldest && sums == NULL; i--)
		if (same_key(&rollup->sums[i].key, key))
			sums = &rollup->sums[i];
	if (sums == NULL)
	{
		if (rollup->nsums == rollup->capacity)
		{
			rollup->capacity *= 2;
			rollup->sums = repalloc_huge(rollup->sums, sizeof(EnergySums) * rollup->capacity);
		}
		sums = &rollup->sums[rollup->nsums++];
		sums->key = *key;
		sums->energy = sums->cost = sums->charged = sums->charges = 0;
	}
	if (pg_add_s64_overflow(sums->energy, energy, &sums->energy) ||
		pg_add_s64_overflow(sums->cost, cost, &sums->cost) ||
		pg_add_s64_overflow(sums->charged, charged, &sums->charged))
		overflow();
	sums->charges += charges;
}

static void
add_posting(Rollup *rollup, int32 site_id, const TariffCalendar *calendar, int64 amount)
{
	bool		found;
	PostingSums *sums = hash_search(rollup->postings, &site_id, HASH_ENTER, &found);

	if (!found)
	{
		sums->calendar = calendar;
		sums->entries = sums->amount = 0;
	}
	sums->entries++;
	if (pg_add_s64_overflow(sums->amount, amount, &sums->amount))
		overflow();
}

static void
overflow(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
			 errmsg("energy rollup is out of range")));
}

void
rollup_flush(Rollup *rollup)
{
	flush_days(rollup);
	flush_postings(rollup->postings);
}

/* The columns of energy_pending, in the order insert_days* fill them. */
static const char *const pending_columns[] = {
	"site_id", "meter_id", "day", "account_id", "period", "tier", "energy", "cost", "charged", "charges"
};
#define NPENDING_COLUMNS lengthof(pending_columns)

/*
 * flush_days
 *		Append the batch's sums to energy_pending, a meter's rows together
 *		and in key order: directly (direct.c, bulk insertion as COPY does)
 *		when the table allows it, else by one INSERT taking the sums as
 *		arrays.
 */
static void
flush_days(Rollup *rollup)
{
	DirectTable *pending;

	if (rollup->nsums == 0)
		return;
	sort_groups(rollup);
	pending = direct_open("energy_pending", CMD_INSERT, NULL, GetActiveSnapshot());
	if (pending != NULL)
	{
		insert_days_direct(rollup->sums, rollup->nsums, pending);
		direct_close(pending);
	}
	else
		insert_days(rollup->sums, rollup->nsums);
}

static void
insert_days_direct(const EnergySums *rows, int n, DirectTable *table)
{
	int			natts = direct_desc(table)->natts;
	Datum	   *values = palloc0(sizeof(Datum) * natts);
	bool	   *isset = palloc0(sizeof(bool) * natts);
	int			att[NPENDING_COLUMNS];

	for (int k = 0; k < (int) NPENDING_COLUMNS; k++)
	{
		att[k] = direct_attnum(table, pending_columns[k]) - 1;
		isset[att[k]] = true;
	}
	for (int i = 0; i < n; i++)
	{
		const EnergySums *s = &rows[i];
		MemoryContext old = MemoryContextSwitchTo(direct_row_context(table));

		values[att[0]] = Int32GetDatum(s->key.site_id);
		values[att[1]] = Int64GetDatum(s->key.meter_id);
		values[att[2]] = DateADTGetDatum(s->key.day);
		values[att[3]] = Int64GetDatum(s->key.account_id);
		values[att[4]] = CStringGetTextDatum(s->key.period);
		values[att[5]] = Int32GetDatum(s->key.tier);
		values[att[6]] = direct_numeric(table, att[6] + 1, s->energy, ENERGY_SCALE);
		values[att[7]] = direct_numeric(table, att[7] + 1, s->cost, EXACT_SCALE);
		values[att[8]] = direct_numeric(table, att[8] + 1, s->charged, MONEY_SCALE);
		values[att[9]] = Int32GetDatum((int32) s->charges);
		MemoryContextSwitchTo(old);
		direct_insert(table, values, isset);
	}
}

static void
insert_days(const EnergySums *rows, int n)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[NPENDING_COLUMNS] = {INT4ARRAYOID, INT8ARRAYOID, DATEARRAYOID, INT8ARRAYOID,
		TEXTARRAYOID, INT4ARRAYOID, NUMERICARRAYOID, NUMERICARRAYOID, NUMERICARRAYOID, INT4ARRAYOID};
	static const Oid elements[NPENDING_COLUMNS] = {INT4OID, INT8OID, DATEOID, INT8OID, TEXTOID,
		INT4OID, NUMERICOID, NUMERICOID, NUMERICOID, INT4OID};
	Datum	   *cols[NPENDING_COLUMNS];
	Datum		args[NPENDING_COLUMNS];

	for (int c = 0; c < (int) NPENDING_COLUMNS; c++)
		cols[c] = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		const EnergySums *s = &rows[i];

		cols[0][i] = Int32GetDatum(s->key.site_id);
		cols[1][i] = Int64GetDatum(s->key.meter_id);
		cols[2][i] = DateADTGetDatum(s->key.day);
		cols[3][i] = Int64GetDatum(s->key.account_id);
		cols[4][i] = CStringGetTextDatum(s->key.period);
		cols[5][i] = Int32GetDatum(s->key.tier);
		cols[6][i] = fixed_to_numeric(s->energy, ENERGY_SCALE);
		cols[7][i] = fixed_to_numeric(s->cost, EXACT_SCALE);
		cols[8][i] = fixed_to_numeric(s->charged, MONEY_SCALE);
		cols[9][i] = Int32GetDatum((int32) s->charges);
	}
	for (int c = 0; c < (int) NPENDING_COLUMNS; c++)
		args[c] = spi_array(cols[c], NULL, n, elements[c]);
	spi_kept_plan(&plan,
				  "INSERT INTO prepay.energy_pending (site_id, meter_id, day, account_id, period, tier,"
				  "                                   energy, cost, charged, charges)"
				  "SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
				  "                         pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6),"
				  "                         pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9),"
				  "                         pg_catalog.unnest($10))",
				  NPENDING_COLUMNS, (Oid *) types);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "rollup: energy_pending insert failed");
}

static void
flush_postings(HTAB *table)
{
	static SPIPlanPtr plan = NULL;
	HASH_SEQ_STATUS scan;
	PostingSums *s;
	Datum		args[5];

	spi_kept_plan(&plan,
				  "INSERT INTO prepay.consumption_posting_day AS r (site_id, day, created_by, entries, amount)"
				  "VALUES ($1, $2, SESSION_USER, $3, $4)"
				  "    ON CONFLICT (site_id, day, created_by) DO UPDATE"
				  "   SET entries = r.entries + excluded.entries, amount = r.amount + excluded.amount",
				  4, (Oid[]) {INT4OID, DATEOID, INT8OID, NUMERICOID});
	hash_seq_init(&scan, table);
	while ((s = hash_seq_search(&scan)) != NULL)
	{
		int32		day;
		int			minute;

		s->calendar->utc_to_local(s->calendar->arg, GetCurrentTransactionStartTimestamp(), &day, &minute);
		args[0] = Int32GetDatum(s->site_id);
		args[1] = DateADTGetDatum(day);
		args[2] = Int64GetDatum(s->entries);
		args[3] = fixed_to_numeric(s->amount, MONEY_SCALE);
		if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "rollup: posting upsert failed");
	}
}

/* Sort each meter's group of sums in key order. */
static void
sort_groups(Rollup *rollup)
{
	int			start = 0;

	while (start < rollup->nsums)
	{
		int			end = start + 1;

		while (end < rollup->nsums &&
			   rollup->sums[end].key.site_id == rollup->sums[start].key.site_id &&
			   rollup->sums[end].key.meter_id == rollup->sums[start].key.meter_id)
			end++;
		if (end - start > 1)
			qsort(&rollup->sums[start], end - start, sizeof(EnergySums), compare_energy_keys);
		start = end;
	}
}

/* energy_day's key order: site, meter, day, account, period, tier. */
static int
compare_energy_keys(const void *a, const void *b)
{
	const EnergyKey *x = &((const EnergySums *) a)->key;
	const EnergyKey *y = &((const EnergySums *) b)->key;
	int			c = site_key_compare(x->site_id, x->meter_id, y->site_id, y->meter_id);

	if (c == 0)
		c = int64_compare(x->day, y->day);
	if (c == 0)
		c = int64_compare(x->account_id, y->account_id);
	if (c == 0)
		c = strcmp(x->period, y->period);
	if (c == 0)
		c = int64_compare(x->tier, y->tier);
	return c;
}
