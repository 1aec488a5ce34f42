/*-------------------------------------------------------------------------
 *
 * extension/meter_state.c
 *	  The rating state of a batch's meters: loaded after the site locks,
 *	  saved after the charges are posted.
 *
 * A meter's rating state is its last rated reading (time, energy register
 * and TOU registers), the sub-cent carry, the billing cycle's consumption
 * and the relay state readings reported; the batch also needs the meter's
 * multiplier, plausibility limit, account and tariff.
 *
 * Meters and accounts are read and written directly (direct.c) when both
 * tables allow it, with one snapshot taken after the site locks (and a new
 * one when a meter to update was written by this transaction since, as
 * triggers on the ledger may do); else by SQL statements that take the
 * batch as arrays.
 * The rows, the locks and their order are the same either way: a direct
 * update takes the row lock its UPDATE would, at the same step (locking
 * protocol: reading.c).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/meter_state.c
 *
 *-------------------------------------------------------------------------
 */
#include "prepay.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "meter_state.h"
#include "rating.h"
#include "site_key.h"

/* The meter columns the rating state is written to. */
static const char *const meter_state_columns[] = {
	"last_read_at", "last_energy", "charge_carry", "relay_state", "relay_state_at",
	"cycle_start", "cycle_used", "last_sharp", "last_peak", "last_flat", "last_valley", NULL
};
static const char *const account_balance_columns[] = {"balance", NULL};

/* Column numbers of prepay.meter and prepay.account the direct path uses. */
typedef struct MeterColumns
{
	int			site_id;
	int			meter_id;
	int			active;
	int			multiplier;
	int			max_per_hour;
	int			kind;
	int			account_id;
	int			tariff_id;
	int			state[lengthof(meter_state_columns) - 1];	/* in that order */
	int			account_tariff_id;
	int			account_closed_at;
} MeterColumns;

enum
{
	S_LAST_READ_AT, S_LAST_ENERGY, S_CHARGE_CARRY, S_RELAY_STATE, S_RELAY_STATE_AT,
	S_CYCLE_START, S_CYCLE_USED, S_REGISTERS
};

static void batch_open_direct(Batch *batch);
static void batch_close_direct(Batch *batch);
static void batch_load_meters(Batch *batch);
static void batch_load_meters_direct(Batch *batch);
static void meter_columns(Batch *batch, MeterColumns *cols);
static void meter_read_row(Batch *batch, const MeterColumns *cols, BatchMeter *m, Datum *values,
						   bool *nulls);
static void batch_load_accounts_direct(Batch *batch, const MeterColumns *cols, int32 *sites,
									   int64 *ids, HeapTuple *rows);
static void meter_read_account(Batch *batch, const MeterColumns *cols, BatchMeter *m);
static const char *enum_label(Datum value, Oid *oids, const char **labels, int n);
static void meter_limit(BatchMeter *m, bool isnull, int64 max_per_hour, const char *kind);
static void batch_save_meters(Batch *batch);
static void batch_refresh_meters(Batch *batch);
static void batch_save_meters_direct(Batch *batch);
static bool meter_set_state(DirectTable *table, Datum *values, bool *nulls, void *arg);
static void set_numeric(DirectTable *t, Datum *values, bool *nulls, int attnum, int64 value,
						int scale);

/*
 * meter_state_load
 *		Look up the batch's meters: directly when prepay.meter and
 *		prepay.account both allow it, else by SQL.
 */
void
meter_state_load(Batch *batch)
{
	batch_open_direct(batch);
	if (batch->meter_table != NULL)
		batch_load_meters_direct(batch);
	else
		batch_load_meters(batch);
}

/*
 * meter_state_save
 *		Write back the moved meters' state the way it was loaded, then
 *		close the direct tables.
 */
void
meter_state_save(Batch *batch)
{
	if (batch->meter_table != NULL)
		batch_save_meters_direct(batch);
	else
		batch_save_meters(batch);
	batch_close_direct(batch);
}

/*
 * batch_open_direct
 *		Open prepay.meter and prepay.account for direct access if both allow
 *		it (direct.c), with a snapshot taken now, after the site locks were
 *		granted (like the SQL path's statements; see batch_load_meters),
 *		that sees everything this transaction did so far.
 */
static void
batch_open_direct(Batch *batch)
{
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	batch->snapshot = RegisterSnapshot(GetActiveSnapshot());
	batch->account_table = direct_open("account", CMD_UPDATE, account_balance_columns,
									   batch->snapshot);
	batch->meter_table = direct_open("meter", CMD_UPDATE, meter_state_columns, batch->snapshot);
	if (batch->account_table == NULL || batch->meter_table == NULL)
		batch_close_direct(batch);
}

/*
 * batch_close_direct
 *		Close the direct tables, in the reverse order of opening (direct.c),
 *		and release the snapshot.
 */
static void
batch_close_direct(Batch *batch)
{
	if (batch->snapshot == NULL)
		return;
	if (batch->meter_table != NULL)
		direct_close(batch->meter_table);
	if (batch->account_table != NULL)
		direct_close(batch->account_table);
	batch->account_table = NULL;
	batch->meter_table = NULL;
	PopActiveSnapshot();
	UnregisterSnapshot(batch->snapshot);
	batch->snapshot = NULL;
}

/*
 * batch_load_meters_direct
 *		batch_load_meters by direct lookups of the meters and then of their
 *		accounts (direct_fetch_keys), keeping the rows for the updates.
 */
static void
batch_load_meters_direct(Batch *batch)
{
	MeterColumns cols;
	int32	   *sites = palloc(sizeof(int32) * batch->nreadings);
	int64	   *ids = palloc(sizeof(int64) * batch->nreadings);
	HeapTuple  *rows = palloc(sizeof(HeapTuple) * batch->nreadings);
	Datum	   *values;
	bool	   *nulls;
	int			n = 0;

	meter_columns(batch, &cols);
	for (int i = 0; i < batch->nreadings; i++)
	{
		BatchReading *r = &batch->readings[i];

		if (n > 0 && sites[n - 1] == r->site_id && ids[n - 1] == r->meter_id)
			continue;
		sites[n] = r->site_id;
		ids[n] = r->meter_id;
		n++;
	}
	direct_fetch_keys(batch->meter_table, n, sites, ids, rows);
	batch->meters = palloc0(sizeof(BatchMeter) * n);
	batch->nmeters = n;
	values = palloc(sizeof(Datum) * direct_desc(batch->meter_table)->natts);
	nulls = palloc(sizeof(bool) * direct_desc(batch->meter_table)->natts);
	for (int i = 0; i < n; i++)
	{
		BatchMeter *m = &batch->meters[i];

		m->site_id = sites[i];
		m->meter_id = ids[i];
		m->row = rows[i];
		if (m->row != NULL)
			meter_read_row(batch, &cols, m, values, nulls);
	}
	batch_load_accounts_direct(batch, &cols, sites, ids, rows);
}

/*
 * batch_load_accounts_direct
 *		The account of each meter found (billable if it exists and is open)
 *		and its tariff (the meter's own, else the account's), as
 *		batch_load_meters joins them.  The arrays are scratch space.
 */
static void
batch_load_accounts_direct(Batch *batch, const MeterColumns *cols, int32 *sites, int64 *ids,
						   HeapTuple *rows)
{
	int			n = 0;

	for (int i = 0; i < batch->nmeters; i++)
	{
		BatchMeter *m = &batch->meters[i];

		if (m->row == NULL || !m->has_account)
			continue;
		sites[n] = m->site_id;
		ids[n] = m->account_id;
		n++;
	}
	n = site_key_sort(sites, ids, n);
	direct_fetch_keys(batch->account_table, n, sites, ids, rows);
	for (int i = 0; i < batch->nmeters; i++)
	{
		BatchMeter *m = &batch->meters[i];
		int			k = m->row == NULL || !m->has_account ? -1 :
			site_key_find(sites, ids, n, m->site_id, m->account_id);

		if (k >= 0)
			m->account_row = rows[k];
		if (m->row != NULL)
			meter_read_account(batch, cols, m);
	}
}

/* The column numbers batch_load_meters_direct reads and writes. */
static void
meter_columns(Batch *batch, MeterColumns *cols)
{
	DirectTable *meter = batch->meter_table;

	cols->site_id = direct_attnum(meter, "site_id");
	cols->meter_id = direct_attnum(meter, "meter_id");
	cols->active = direct_attnum(meter, "active");
	cols->multiplier = direct_attnum(meter, "multiplier");
	cols->max_per_hour = direct_attnum(meter, "max_per_hour");
	cols->kind = direct_attnum(meter, "kind");
	cols->account_id = direct_attnum(meter, "account_id");
	cols->tariff_id = direct_attnum(meter, "tariff_id");
	for (int k = 0; meter_state_columns[k] != NULL; k++)
		cols->state[k] = direct_attnum(meter, meter_state_columns[k]);
	cols->account_tariff_id = direct_attnum(batch->account_table, "tariff_id");
	cols->account_closed_at = direct_attnum(batch->account_table, "closed_at");
}

/*
 * meter_read_row
 *		The meter's rating state from its row, as batch_load_meters reads it
 *		(the row is deformed once into the scratch arrays).
 */
static void
meter_read_row(Batch *batch, const MeterColumns *cols, BatchMeter *m, Datum *values, bool *nulls)
{
	const int  *att = cols->state;

	heap_deform_tuple(m->row, direct_desc(batch->meter_table), values, nulls);
	m->found = true;
	m->active = DatumGetBool(values[cols->active - 1]);
	m->multiplier = DatumGetInt32(values[cols->multiplier - 1]);
	meter_limit(m, nulls[cols->max_per_hour - 1],
				nulls[cols->max_per_hour - 1] ? 0 : fixed_from_numeric(values[cols->max_per_hour - 1], ENERGY_SCALE),
				nulls[cols->max_per_hour - 1] ?
				enum_label(values[cols->kind - 1], batch->kind_oids, batch->kind_labels, 3) : NULL);
	m->has_state = !nulls[att[S_LAST_READ_AT] - 1];
	m->last_read_at = DatumGetTimestampTz(values[att[S_LAST_READ_AT] - 1]);
	if (!nulls[att[S_LAST_ENERGY] - 1])
		m->last_energy = fixed_from_numeric(values[att[S_LAST_ENERGY] - 1], ENERGY_SCALE);
	m->carry = fixed_from_numeric(values[att[S_CHARGE_CARRY] - 1], EXACT_SCALE);
	if (!nulls[att[S_RELAY_STATE] - 1])
		m->relay = meter_state_relay_label(batch, values[att[S_RELAY_STATE] - 1]);
	m->relay_at = nulls[att[S_RELAY_STATE_AT] - 1] ? DT_NOBEGIN :
		DatumGetTimestampTz(values[att[S_RELAY_STATE_AT] - 1]);
	m->cycle.start = nulls[att[S_CYCLE_START] - 1] ? INT64_MIN :
		DatumGetTimestampTz(values[att[S_CYCLE_START] - 1]);
	m->cycle.used = fixed_from_numeric(values[att[S_CYCLE_USED] - 1], ENERGY_SCALE);
	for (int k = 0; k < NREGISTERS; k++)
	{
		if (nulls[att[S_REGISTERS + k] - 1])
			continue;
		m->register_mask |= 1 << k;
		m->registers[k] = fixed_from_numeric(values[att[S_REGISTERS + k] - 1], ENERGY_SCALE);
	}
	m->account_id = DatumGetInt64(values[cols->account_id - 1]);
	m->has_account = !nulls[cols->account_id - 1];
	m->tariff_id = DatumGetInt64(values[cols->tariff_id - 1]);
	m->has_tariff = !nulls[cols->tariff_id - 1];
}

/*
 * meter_read_account
 *		Billable and tariff of a meter from its account row (NULL when it
 *		has no account or the account does not exist).
 */
static void
meter_read_account(Batch *batch, const MeterColumns *cols, BatchMeter *m)
{
	DirectTable *t = batch->account_table;
	bool		isnull;

	if (m->account_row == NULL)
		return;
	(void) direct_getattr(m->account_row, t, cols->account_closed_at, &m->billable);
	if (!m->has_tariff)
	{
		m->tariff_id = DatumGetInt64(direct_getattr(m->account_row, t, cols->account_tariff_id, &isnull));
		m->billable = m->billable && !isnull;
	}
}

/*
 * meter_limit
 *		The meter's plausibility limit: its max_per_hour, or when that is
 *		NULL the limit derived from its kind and multiplier (rating.c).
 */
static void
meter_limit(BatchMeter *m, bool isnull, int64 max_per_hour, const char *kind)
{
	m->max_per_hour = isnull ? rating_default_max_per_hour(kind, m->multiplier) : max_per_hour;
	m->derived_from = isnull ? kind : NULL;
}

/*
 * batch_load_meters
 *		Look up every meter the batch names, with its rating state and its
 *		account's tariff (the site lock protects the state).  Meters that do
 *		not exist are kept with found = false.  Runs with read_only = false
 *		so that SPI takes a new snapshot after the site lock was granted: the
 *		statement's own snapshot predates the wait and would miss the state
 *		a concurrent batch committed (isolation spec concurrent_batches).
 */
static void
batch_load_meters(Batch *batch)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *sites = palloc(sizeof(Datum) * batch->nreadings);
	Datum	   *meters = palloc(sizeof(Datum) * batch->nreadings);
	Datum		args[2];
	int			n = 0;

	for (int i = 0; i < batch->nreadings; i++)
	{
		BatchReading *r = &batch->readings[i];

		if (n > 0 && DatumGetInt32(sites[n - 1]) == r->site_id &&
			DatumGetInt64(meters[n - 1]) == r->meter_id)
			continue;
		sites[n] = Int32GetDatum(r->site_id);
		meters[n] = Int64GetDatum(r->meter_id);
		n++;
	}

	spi_kept_plan(&plan,
			"SELECT u.ord, m.active, m.multiplier,"
			"       (m.max_per_hour * 1000)::int8,"
			"       m.account_id, a.closed_at IS NULL AND a.account_id IS NOT NULL,"
			"       coalesce(m.tariff_id, a.tariff_id),"
			"       m.last_read_at, (m.last_energy * 1000)::int8,"
			"       (m.charge_carry * 1000000000)::int8, m.relay_state::text,"
			"       m.cycle_start, (m.cycle_used * 1000)::int8,"
			"       (m.last_sharp * 1000)::int8, (m.last_peak * 1000)::int8,"
			"       (m.last_flat * 1000)::int8, (m.last_valley * 1000)::int8, m.kind::text,"
			"       m.relay_state_at"
			"  FROM ROWS FROM (pg_catalog.unnest($1::int4[]), pg_catalog.unnest($2::int8[]))"
			"       WITH ORDINALITY AS u(site_id, meter_id, ord)"
			"  JOIN prepay.meter m ON m.site_id = u.site_id AND m.meter_id = u.meter_id"
			"  LEFT JOIN prepay.account a"
			"    ON a.site_id = m.site_id AND a.account_id = m.account_id AND a.site_id = ANY ($1)"
			" WHERE m.site_id = ANY ($1)", 2,
					  (Oid[]) {INT4ARRAYOID, INT8ARRAYOID});
	args[0] = spi_array(sites, NULL, n, INT4OID);
	args[1] = spi_array(meters, NULL, n, INT8OID);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading_rate_batch: meter query failed");

	batch->meters = palloc0(sizeof(BatchMeter) * n);
	batch->nmeters = n;
	for (int i = 0; i < n; i++)
	{
		batch->meters[i].site_id = DatumGetInt32(sites[i]);
		batch->meters[i].meter_id = DatumGetInt64(meters[i]);
	}
	for (uint64 row = 0; row < SPI_processed; row++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[row];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		BatchMeter *m = &batch->meters[DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull)) - 1];

		m->found = true;
		m->active = DatumGetBool(SPI_getbinval(tuple, desc, 2, &isnull));
		m->multiplier = DatumGetInt32(SPI_getbinval(tuple, desc, 3, &isnull));
		m->max_per_hour = DatumGetInt64(SPI_getbinval(tuple, desc, 4, &isnull));
		meter_limit(m, isnull, m->max_per_hour, isnull ? SPI_getvalue(tuple, desc, 18) : NULL);
		m->account_id = DatumGetInt64(SPI_getbinval(tuple, desc, 5, &isnull));
		m->billable = !isnull && DatumGetBool(SPI_getbinval(tuple, desc, 6, &isnull));
		m->tariff_id = DatumGetInt64(SPI_getbinval(tuple, desc, 7, &isnull));
		m->billable = m->billable && !isnull;
		m->last_read_at = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 8, &isnull));
		m->has_state = !isnull;
		m->last_energy = DatumGetInt64(SPI_getbinval(tuple, desc, 9, &isnull));
		m->carry = DatumGetInt64(SPI_getbinval(tuple, desc, 10, &isnull));
		m->relay = SPI_getvalue(tuple, desc, 11);
		m->relay_at = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 19, &isnull));
		if (isnull)
			m->relay_at = DT_NOBEGIN;
		m->cycle.start = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 12, &isnull));
		if (isnull)
			m->cycle.start = INT64_MIN;
		m->cycle.used = DatumGetInt64(SPI_getbinval(tuple, desc, 13, &isnull));
		for (int k = 0; k < NREGISTERS; k++)
		{
			m->registers[k] = DatumGetInt64(SPI_getbinval(tuple, desc, 14 + k, &isnull));
			if (!isnull)
				m->register_mask |= 1 << k;
		}
	}
}

/*
 * batch_save_meters
 *		Write back the rating state (last reading and its TOU registers,
 *		carry, billing cycle, reported relay state) of every meter whose
 *		state moved.
 */
#define SAVE_COLUMNS 13
static void
batch_save_meters(Batch *batch)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[SAVE_COLUMNS] = {
		INT4OID, INT8OID, TIMESTAMPTZOID, NUMERICOID, NUMERICOID, TEXTOID, TIMESTAMPTZOID,
		TIMESTAMPTZOID, NUMERICOID, NUMERICOID, NUMERICOID, NUMERICOID, NUMERICOID
	};
	Datum	   *cols[SAVE_COLUMNS];
	bool	   *nulls[SAVE_COLUMNS];
	Datum		args[SAVE_COLUMNS];
	int			n = 0;

	for (int c = 0; c < SAVE_COLUMNS; c++)
	{
		cols[c] = palloc(sizeof(Datum) * batch->nmeters);
		nulls[c] = palloc0(sizeof(bool) * batch->nmeters);
	}
	for (int i = 0; i < batch->nmeters; i++)
	{
		BatchMeter *m = &batch->meters[i];

		if (!m->changed)
			continue;
		cols[0][n] = Int32GetDatum(m->site_id);
		cols[1][n] = Int64GetDatum(m->meter_id);
		cols[2][n] = TimestampTzGetDatum(m->last_read_at);
		cols[3][n] = fixed_to_numeric(m->last_energy, ENERGY_SCALE);
		cols[4][n] = fixed_to_numeric(m->carry, EXACT_SCALE);
		cols[5][n] = m->relay_changed ? CStringGetTextDatum(m->relay) : (Datum) 0;
		nulls[5][n] = !m->relay_changed;
		cols[6][n] = TimestampTzGetDatum(m->relay_at);
		cols[7][n] = TimestampTzGetDatum(m->cycle.start);
		nulls[7][n] = m->cycle.start == INT64_MIN;
		cols[8][n] = fixed_to_numeric(m->cycle.used, ENERGY_SCALE);
		for (int k = 0; k < NREGISTERS; k++)
		{
			nulls[9 + k][n] = (m->register_mask & (1 << k)) == 0;
			cols[9 + k][n] = nulls[9 + k][n] ? (Datum) 0 : fixed_to_numeric(m->registers[k], ENERGY_SCALE);
		}
		n++;
	}
	if (n == 0)
		return;

	if (plan == NULL)
	{
		Oid			array_types[SAVE_COLUMNS];

		for (int c = 0; c < SAVE_COLUMNS; c++)
			array_types[c] = get_array_type(types[c]);
		spi_kept_plan(&plan,
				"UPDATE prepay.meter m"
				"   SET last_read_at = u.read_at, last_energy = u.energy, charge_carry = u.carry,"
				"       relay_state = coalesce(prepay._relay_state(u.relay), m.relay_state),"
				"       relay_state_at = CASE WHEN u.relay IS NULL THEN m.relay_state_at ELSE u.relay_at END,"
				"       cycle_start = u.cycle_start, cycle_used = u.cycle_used,"
				"       last_sharp = u.sharp, last_peak = u.peak, last_flat = u.flat, last_valley = u.valley"
				"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
				"                  pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6),"
				"                  pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9),"
				"                  pg_catalog.unnest($10), pg_catalog.unnest($11), pg_catalog.unnest($12),"
				"                  pg_catalog.unnest($13))"
				"       AS u(site_id, meter_id, read_at, energy, carry, relay, relay_at,"
				"            cycle_start, cycle_used, sharp, peak, flat, valley)"
				" WHERE m.site_id = u.site_id AND m.meter_id = u.meter_id AND m.site_id = ANY ($1)",
				SAVE_COLUMNS, array_types);
	}
	for (int c = 0; c < SAVE_COLUMNS; c++)
		args[c] = spi_array(cols[c], nulls[c], n, types[c]);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "reading_rate_batch: meter update failed");
}

/*
 * batch_refresh_meters
 *		This transaction wrote a moved meter since the snapshot (triggers on
 *		the ledger may): read the meters again with a new snapshot, as the
 *		SQL path's UPDATE statement does, so their updates apply to what
 *		the triggers left.  A meter gone meanwhile is not updated, as the
 *		UPDATE would not find it.
 */
static void
batch_refresh_meters(Batch *batch)
{
	int32	   *sites = palloc(sizeof(int32) * batch->nmeters);
	int64	   *ids = palloc(sizeof(int64) * batch->nmeters);
	HeapTuple  *rows = palloc(sizeof(HeapTuple) * batch->nmeters);

	CommandCounterIncrement();
	PopActiveSnapshot();
	UnregisterSnapshot(batch->snapshot);
	PushActiveSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	batch->snapshot = RegisterSnapshot(GetActiveSnapshot());
	direct_refresh(batch->meter_table, batch->snapshot);
	direct_refresh(batch->account_table, batch->snapshot);
	for (int i = 0; i < batch->nmeters; i++)
	{
		sites[i] = batch->meters[i].site_id;
		ids[i] = batch->meters[i].meter_id;
	}
	direct_fetch_keys(batch->meter_table, batch->nmeters, sites, ids, rows);
	for (int i = 0; i < batch->nmeters; i++)
	{
		BatchMeter *m = &batch->meters[i];

		if (m->changed && rows[i] == NULL)
			m->changed = false;
		m->row = rows[i];
	}
}

/*
 * batch_save_meters_direct
 *		batch_save_meters by updating each moved meter's row in place.  A
 *		meter deleted meanwhile is left alone, as the UPDATE would; one this
 *		transaction wrote since the snapshot is read again first.
 */
static void
batch_save_meters_direct(Batch *batch)
{
	MeterColumns cols;

	meter_columns(batch, &cols);
	for (int i = 0; i < batch->nmeters; i++)
	{
		BatchMeter *m = &batch->meters[i];
		void	   *arg[2] = {&cols, m};

		if (m->changed &&
			direct_update(batch->meter_table, m->row, meter_set_state, arg) == DIRECT_STALE)
		{
			batch_refresh_meters(batch);
			i--;				/* again, on the row read now */
		}
	}
}

/*
 * meter_set_state
 *		DirectModify for batch_save_meters_direct: the columns of the
 *		meter's rating state, on the version being replaced if it is still
 *		the meter.  The relay state is only set when a reading reported a
 *		new one.
 */
static bool
meter_set_state(DirectTable *t, Datum *values, bool *nulls, void *arg)
{
	const MeterColumns *cols = ((void **) arg)[0];
	const BatchMeter *m = ((void **) arg)[1];
	const int  *att = cols->state;

	if (DatumGetInt32(values[cols->site_id - 1]) != m->site_id ||
		DatumGetInt64(values[cols->meter_id - 1]) != m->meter_id)
		return false;
	values[att[S_LAST_READ_AT] - 1] = TimestampTzGetDatum(m->last_read_at);
	nulls[att[S_LAST_READ_AT] - 1] = false;
	set_numeric(t, values, nulls, att[S_LAST_ENERGY], m->last_energy, ENERGY_SCALE);
	set_numeric(t, values, nulls, att[S_CHARGE_CARRY], m->carry, EXACT_SCALE);
	if (m->relay_changed)
	{
		values[att[S_RELAY_STATE] - 1] =
			DirectFunctionCall2(enum_in, CStringGetDatum(m->relay),
								ObjectIdGetDatum(TupleDescAttr(direct_desc(t), att[S_RELAY_STATE] - 1)->atttypid));
		nulls[att[S_RELAY_STATE] - 1] = false;
		values[att[S_RELAY_STATE_AT] - 1] = TimestampTzGetDatum(m->relay_at);
		nulls[att[S_RELAY_STATE_AT] - 1] = false;
	}
	values[att[S_CYCLE_START] - 1] = TimestampTzGetDatum(m->cycle.start);
	nulls[att[S_CYCLE_START] - 1] = m->cycle.start == INT64_MIN;
	set_numeric(t, values, nulls, att[S_CYCLE_USED], m->cycle.used, ENERGY_SCALE);
	for (int k = 0; k < NREGISTERS; k++)
	{
		if (m->register_mask & (1 << k))
			set_numeric(t, values, nulls, att[S_REGISTERS + k], m->registers[k], ENERGY_SCALE);
		else
			nulls[att[S_REGISTERS + k] - 1] = true;
	}
	return true;
}

/* Set a NUMERIC column of a row being built to a fixed-point value. */
static void
set_numeric(DirectTable *t, Datum *values, bool *nulls, int attnum, int64 value, int scale)
{
	values[attnum - 1] = direct_numeric(t, attnum, value, scale);
	nulls[attnum - 1] = false;
}

/*
 * meter_state_relay_label
 *		The label of a prepay.relay_state value.  The type has two labels, so
 *		the two slots remember both and the catalog is read twice per batch
 *		at most, not once per reading.
 */
const char *
meter_state_relay_label(Batch *batch, Datum value)
{
	return enum_label(value, batch->relay_oids, batch->relay_labels, 2);
}

/*
 * enum_label
 *		The label of an enum value, remembering the first n labels seen in
 *		the n slots (meter_state_relay_label, and the meter kinds for
 *		meter_limit).
 */
static const char *
enum_label(Datum value, Oid *oids, const char **labels, int n)
{
	Oid			oid = DatumGetObjectId(value);

	for (int i = 0; i < n; i++)
	{
		if (oids[i] == oid)
			return labels[i];
		if (oids[i] == InvalidOid)
		{
			oids[i] = oid;
			labels[i] = DatumGetCString(DirectFunctionCall1(enum_out, value));
			return labels[i];
		}
	}
	return DatumGetCString(DirectFunctionCall1(enum_out, value));
}
