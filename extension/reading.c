/*-------------------------------------------------------------------------
 *
 * extension/reading.c
 *	  The triggers on prepay.reading: skip duplicates, then rate each
 *	  statement's new readings in one batch.
 *
 * A statement (an INSERT or a COPY of any size) is rated as a whole by the
 * AFTER ... FOR EACH STATEMENT trigger, which reads the statement's
 * transition table: readings are sorted by (site, meter, read_at), every
 * meter involved is looked up and locked once, each reading is checked
 * against the meter's last rated reading, the valid ones are priced by the
 * rating core, and balance.c posts the charges.  Bad readings are marked
 * with a quarantine reason and raise an alarm; they never stop the batch.
 *
 * Locking protocol (shared with balance.c and the SQL API):
 *	  1. the site's rating lock: a transaction-level advisory lock on
 *	     (RATING_LOCK_CLASS, site_id), taken in ascending site order, so
 *	     batches of one site rate one after the other and each reads the
 *	     meter state the previous one committed (prepay._lock_site_rating
 *	     takes the same lock for the SQL functions that change meters);
 *	  2. account rows, by the balance UPDATE (balance.c);
 *	  3. meter rows, by the state UPDATE;
 *	  4. command rows, by the alarm ladder's relay commands.
 *	  Every path takes these in this order, so none deadlock.  A recharge
 *	  locks only its account (2) and then commands (4).  Under REPEATABLE
 *	  READ a batch that waited for the site lock meets a serialization
 *	  failure at its meter UPDATE rather than rating from a stale state.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/reading.c
 *
 *-------------------------------------------------------------------------
 */
#include "prepay.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "parser/parse_relation.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include "balance.h"
#include "rating.h"

/* a reading more than this far ahead of the database clock is refused */
#define CLOCK_AHEAD_LIMIT_US (INT64CONST(10) * 60 * 1000000)

typedef enum Quarantine
{
	Q_NONE = 0,
	Q_UNKNOWN_METER,
	Q_METER_REMOVED,
	Q_INVALID_VALUE,
	Q_CLOCK_AHEAD,
	Q_OUT_OF_ORDER,
	Q_COUNTER_BACKWARDS,
	Q_IMPOSSIBLE_JUMP,
	Q_NO_PRICE
} Quarantine;

/* labels of prepay.quarantine_reason, indexed by Quarantine */
static const char *const quarantine_label[] = {
	NULL, "unknown_meter", "meter_removed", "invalid_value", "clock_ahead",
	"out_of_order", "counter_backwards", "impossible_jump", "no_price"
};

typedef struct BatchReading
{
	int32		site_id;
	int64		meter_id;
	TimestampTz read_at;
	bool		has_energy;
	int64		energy;			/* register, milli-units */
	const char *relay;			/* reported relay state label, or NULL */
	Quarantine	reason;
	char	   *detail;
} BatchReading;

typedef struct BatchMeter
{
	int32		site_id;
	int64		meter_id;
	bool		found;
	bool		active;
	int32		multiplier;
	int64		max_per_hour;	/* milli-units per hour */
	bool		billable;		/* attached to an open account */
	int64		account_id;
	int64		tariff_id;
	bool		has_state;
	TimestampTz last_read_at;
	int64		last_energy;
	int64		carry;			/* nano-currency */
	const char *relay;			/* relay state known, or NULL */
	TimestampTz relay_at;
	bool		relay_changed;	/* a reading reported a new relay state */
	bool		changed;
} BatchMeter;

typedef struct PriceList
{
	int32		site_id;
	int64		tariff_id;
	int			first;			/* index into the batch's price array */
	int			count;
} PriceList;

typedef struct Batch
{
	TimestampTz now;			/* the database clock, read once */
	BatchReading *readings;
	int			nreadings;
	BatchMeter *meters;
	int			nmeters;
	RatingPrice *prices;
	PriceList  *price_lists;
	int			nprice_lists;
	RatingPiece *pieces;		/* scratch for rating_split, one per price row */
	BalanceCharge *charges;
	int			ncharges;
	int			nquarantined;
} Batch;

PG_FUNCTION_INFO_V1(prepay_reading_skip_duplicate);
PG_FUNCTION_INFO_V1(prepay_reading_rate_batch);

static void check_trigger_protocol(FunctionCallInfo fcinfo, const char *name,
								   bool before, bool for_row);
static bool reading_exists(Relation rel, Datum site_id, Datum meter_id, Datum read_at);
static void batch_collect(Batch *batch, TriggerData *trigdata);
static int	compare_readings(const void *a, const void *b);
static void batch_lock_sites(Batch *batch);
static void batch_load_meters(Batch *batch);
static void batch_load_prices(Batch *batch);
static const PriceList *batch_price_list(Batch *batch, int32 site_id, int64 tariff_id);
static void batch_rate_meter(Batch *batch, BatchMeter *meter, BatchReading *readings, int n);
static bool reading_validate(BatchMeter *meter, BatchReading *r, TimestampTz now);
static const char *relay_label(Datum value, Oid *oids, const char **labels);
static bool batch_charge(Batch *batch, BatchMeter *meter, BatchReading *r, int64 consumption);
static void batch_save_meters(Batch *batch);
static void batch_save_quarantine(Batch *batch);
static void quarantine(BatchReading *r, Quarantine reason, const char *fmt,...) pg_attribute_printf(3, 4);

/*
 * check_trigger_protocol
 *		Refuse to run unless called as the kind of trigger `name` is written
 *		for (after contrib/tcn).
 */
static void
check_trigger_protocol(FunctionCallInfo fcinfo, const char *name, bool before, bool for_row)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s: not called by trigger manager", name)));
	if (before ? !TRIGGER_FIRED_BEFORE(trigdata->tg_event) : !TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s: must be fired %s", name, before ? "BEFORE" : "AFTER")));
	if (for_row != (bool) TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s: must be fired for each %s", name, for_row ? "row" : "statement")));
	if (!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s: must be fired by INSERT", name)));
}

/*
 * reading_exists
 *		Whether a reading with this key is stored already, by a committed
 *		transaction or earlier in this one (including earlier rows of the
 *		same statement).  Probes the primary key index.
 */
static bool
reading_exists(Relation rel, Datum site_id, Datum meter_id, Datum read_at)
{
	Relation	index = index_open(RelationGetPrimaryKeyIndex(rel), AccessShareLock);
	ScanKeyData keys[3];
	IndexScanDesc scan;
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	bool		found;

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ, site_id);
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_INT8EQ, meter_id);
	ScanKeyInit(&keys[2], 3, BTEqualStrategyNumber, F_TIMESTAMPTZ_EQ, read_at);
	scan = index_beginscan(rel, index, SnapshotSelf, 3, 0);
	index_rescan(scan, keys, 3, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	return found;
}

/*
 * prepay_reading_skip_duplicate
 *		BEFORE INSERT row trigger: return NULL (skip the row) when the same
 *		(site, meter, read_at) is already stored.  A duplicate committed
 *		concurrently by another session still meets the primary key.
 */
Datum
prepay_reading_skip_duplicate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		null1,
				null2,
				null3;
	Datum		site_id,
				meter_id,
				read_at;

	check_trigger_protocol(fcinfo, "reading_skip_duplicate", true, true);
	tuple = trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	site_id = heap_getattr(tuple, 1, desc, &null1);
	meter_id = heap_getattr(tuple, 2, desc, &null2);
	read_at = heap_getattr(tuple, 3, desc, &null3);
	if (!null1 && !null2 && !null3 &&
		reading_exists(trigdata->tg_relation, site_id, meter_id, read_at))
		return PointerGetDatum(NULL);
	return PointerGetDatum(tuple);
}

/*
 * prepay_reading_rate_batch
 *		AFTER INSERT statement trigger: rate every reading of the statement.
 */
Datum
prepay_reading_rate_batch(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	MemoryContext batch_context;
	MemoryContext old;
	Batch		batch = {0};
	BalancePosting *posting;
	int			start = 0;

	check_trigger_protocol(fcinfo, "reading_rate_batch", false, false);
	if (trigdata->tg_newtable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("reading_rate_batch: needs REFERENCING NEW TABLE")));

	batch_context = AllocSetContextCreate(CurrentMemoryContext, "prepay rating batch",
										  ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(batch_context);

	batch.now = GetCurrentTimestamp();
	batch_collect(&batch, trigdata);
	if (batch.nreadings > 0)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "reading_rate_batch: SPI_connect failed");
		batch_lock_sites(&batch);
		batch_load_meters(&batch);
		batch_load_prices(&batch);
		batch.charges = palloc(sizeof(BalanceCharge) * batch.nreadings);

		for (int m = 0; m < batch.nmeters; m++)
		{
			int			end = start;

			while (end < batch.nreadings &&
				   batch.readings[end].site_id == batch.meters[m].site_id &&
				   batch.readings[end].meter_id == batch.meters[m].meter_id)
				end++;
			batch_rate_meter(&batch, &batch.meters[m], &batch.readings[start], end - start);
			start = end;
		}

		posting = balance_post_charges(batch.charges, batch.ncharges);
		batch_save_meters(&batch);
		batch_save_quarantine(&batch);
		balance_apply_levels(posting);
		SPI_finish();
	}

	MemoryContextSwitchTo(old);
	MemoryContextDelete(batch_context);
	return PointerGetDatum(NULL);
}

/*
 * batch_collect
 *		Read the statement's new readings from the transition table into
 *		an array sorted by (site, meter, read_at).
 */
static void
batch_collect(Batch *batch, TriggerData *trigdata)
{
	Tuplestorestate *store = trigdata->tg_newtable;
	TupleDesc	desc = RelationGetDescr(trigdata->tg_relation);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	int			capacity = 1024;
	int			energy_att = attnameAttNum(trigdata->tg_relation, "energy", false);
	int			relay_att = attnameAttNum(trigdata->tg_relation, "relay_state", false);
	Oid			relay_oids[2] = {InvalidOid, InvalidOid};
	const char *relay_labels[2] = {NULL, NULL};

	batch->readings = palloc(sizeof(BatchReading) * capacity);
	tuplestore_rescan(store);
	while (tuplestore_gettupleslot(store, true, false, slot))
	{
		BatchReading *r;
		bool		isnull;
		Datum		value;

		if (batch->nreadings == capacity)
		{
			capacity *= 2;
			batch->readings = repalloc_huge(batch->readings, sizeof(BatchReading) * capacity);
		}
		r = &batch->readings[batch->nreadings++];
		memset(r, 0, sizeof(*r));
		r->site_id = DatumGetInt32(slot_getattr(slot, 1, &isnull));
		r->meter_id = DatumGetInt64(slot_getattr(slot, 2, &isnull));
		r->read_at = DatumGetTimestampTz(slot_getattr(slot, 3, &isnull));
		value = slot_getattr(slot, energy_att, &isnull);
		r->has_energy = !isnull;
		if (!isnull)
			r->energy = fixed_from_numeric(value, ENERGY_SCALE);
		value = slot_getattr(slot, relay_att, &isnull);
		if (!isnull)
			r->relay = relay_label(value, relay_oids, relay_labels);
	}
	ExecDropSingleTupleTableSlot(slot);
	if (batch->nreadings > 1)
		qsort(batch->readings, batch->nreadings, sizeof(BatchReading), compare_readings);
}

/*
 * relay_label
 *		The label of a prepay.relay_state value.  The type has two labels, so
 *		the two slots remember both and the catalog is read twice per batch
 *		at most, not once per reading.
 */
static const char *
relay_label(Datum value, Oid *oids, const char **labels)
{
	Oid			oid = DatumGetObjectId(value);

	for (int i = 0; i < 2; i++)
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

/*
 * compare_readings
 *		qsort order of readings: site, meter, read_at.
 */
static int
compare_readings(const void *a, const void *b)
{
	const BatchReading *x = a;
	const BatchReading *y = b;

	if (x->site_id != y->site_id)
		return x->site_id < y->site_id ? -1 : 1;
	if (x->meter_id != y->meter_id)
		return x->meter_id < y->meter_id ? -1 : 1;
	if (x->read_at != y->read_at)
		return x->read_at < y->read_at ? -1 : 1;
	return 0;
}

/*
 * batch_lock_sites
 *		Take the rating lock of every site in the batch, in ascending order.
 */
static void
batch_lock_sites(Batch *batch)
{
	static SPIPlanPtr plan = NULL;

	spi_kept_plan(&plan, "SELECT prepay._lock_site_rating($1)", 1,
					  (Oid[]) {INT4OID});
	for (int i = 0; i < batch->nreadings; i++)
	{
		Datum		args[1];

		if (i > 0 && batch->readings[i - 1].site_id == batch->readings[i].site_id)
			continue;
		args[0] = Int32GetDatum(batch->readings[i].site_id);
		if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "reading_rate_batch: site lock failed");
	}
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
			"       (m.charge_carry * 1000000000)::int8, m.relay_state::text"
			"  FROM ROWS FROM (pg_catalog.unnest($1::int4[]), pg_catalog.unnest($2::int8[]))"
			"       WITH ORDINALITY AS u(site_id, meter_id, ord)"
			"  JOIN prepay.meter m ON m.site_id = u.site_id AND m.meter_id = u.meter_id"
			"  LEFT JOIN prepay.account a"
			"    ON a.site_id = m.site_id AND a.account_id = m.account_id", 2,
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
		m->account_id = DatumGetInt64(SPI_getbinval(tuple, desc, 5, &isnull));
		m->billable = !isnull && DatumGetBool(SPI_getbinval(tuple, desc, 6, &isnull));
		m->tariff_id = DatumGetInt64(SPI_getbinval(tuple, desc, 7, &isnull));
		m->billable = m->billable && !isnull;
		m->last_read_at = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 8, &isnull));
		m->has_state = !isnull;
		m->last_energy = DatumGetInt64(SPI_getbinval(tuple, desc, 9, &isnull));
		m->carry = DatumGetInt64(SPI_getbinval(tuple, desc, 10, &isnull));
		m->relay = SPI_getvalue(tuple, desc, 11);
	}
}

/*
 * batch_load_prices
 *		Load every tariff version of the sites in the batch, sorted by
 *		(site, tariff, valid_from), and index them per tariff.
 */
static void
batch_load_prices(Batch *batch)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *sites = palloc(sizeof(Datum) * batch->nmeters);
	Datum		args[1];
	int			n = 0;

	for (int i = 0; i < batch->nmeters; i++)
		if (n == 0 || DatumGetInt32(sites[n - 1]) != batch->meters[i].site_id)
			sites[n++] = Int32GetDatum(batch->meters[i].site_id);

	spi_kept_plan(&plan,
			"SELECT site_id, tariff_id, valid_from, (price * 1000000)::int8"
			"  FROM prepay.tariff_version"
			" WHERE site_id = ANY ($1)"
			" ORDER BY site_id, tariff_id, valid_from", 1,
					  (Oid[]) {INT4ARRAYOID});
	args[0] = spi_array(sites, NULL, n, INT4OID);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading_rate_batch: price query failed");

	batch->prices = palloc(sizeof(RatingPrice) * (SPI_processed + 1));
	batch->pieces = palloc(sizeof(RatingPiece) * (SPI_processed + 1));
	batch->price_lists = palloc(sizeof(PriceList) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int32		site_id = DatumGetInt32(SPI_getbinval(tuple, desc, 1, &isnull));
		int64		tariff_id = DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull));
		PriceList  *list = batch->nprice_lists > 0 ? &batch->price_lists[batch->nprice_lists - 1] : NULL;

		if (list == NULL || list->site_id != site_id || list->tariff_id != tariff_id)
		{
			list = &batch->price_lists[batch->nprice_lists++];
			list->site_id = site_id;
			list->tariff_id = tariff_id;
			list->first = i;
			list->count = 0;
		}
		list->count++;
		batch->prices[i].valid_from = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 3, &isnull));
		batch->prices[i].price = DatumGetInt64(SPI_getbinval(tuple, desc, 4, &isnull));
	}
}

/*
 * batch_price_list
 *		The price versions of a tariff, or NULL if it has none.
 */
static const PriceList *
batch_price_list(Batch *batch, int32 site_id, int64 tariff_id)
{
	int			lo = 0;
	int			hi = batch->nprice_lists - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		PriceList  *p = &batch->price_lists[mid];

		if (p->site_id == site_id && p->tariff_id == tariff_id)
			return p;
		if (p->site_id < site_id || (p->site_id == site_id && p->tariff_id < tariff_id))
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

/*
 * batch_rate_meter
 *		Walk one meter's readings in time order: quarantine the bad ones,
 *		charge the consumption since the previous rated reading for the
 *		good ones, and advance the meter's state.
 */
static void
batch_rate_meter(Batch *batch, BatchMeter *meter, BatchReading *readings, int n)
{
	for (int i = 0; i < n; i++)
	{
		BatchReading *r = &readings[i];

		if (!reading_validate(meter, r, batch->now))
		{
			batch->nquarantined++;
			continue;
		}
		if (meter->has_state)
		{
			int64		consumption = (r->energy - meter->last_energy) * meter->multiplier;

			if (meter->billable && consumption > 0 &&
				!batch_charge(batch, meter, r, consumption))
			{
				batch->nquarantined++;
				continue;
			}
		}
		meter->has_state = true;
		meter->last_read_at = r->read_at;
		meter->last_energy = r->energy;
		meter->changed = true;
		if (r->relay != NULL && (meter->relay == NULL || strcmp(meter->relay, r->relay) != 0))
		{
			meter->relay = r->relay;
			meter->relay_at = r->read_at;
			meter->relay_changed = true;
		}
	}
}

/*
 * reading_validate
 *		Whether the reading can be rated against the meter's state; if not,
 *		mark it with its quarantine reason and a detail naming the values.
 */
static bool
reading_validate(BatchMeter *meter, BatchReading *r, TimestampTz now)
{
	if (!meter->found)
		quarantine(r, Q_UNKNOWN_METER, "site %d has no meter " INT64_FORMAT, r->site_id, r->meter_id);
	else if (!meter->active)
		quarantine(r, Q_METER_REMOVED, "meter " INT64_FORMAT " was removed", r->meter_id);
	else if (!r->has_energy || r->energy < 0)
		quarantine(r, Q_INVALID_VALUE, "energy register is %s",
				   r->has_energy ? fixed_format(r->energy, ENERGY_SCALE) : "missing");
	else if (r->read_at > now + CLOCK_AHEAD_LIMIT_US)
		quarantine(r, Q_CLOCK_AHEAD, "read_at %s is ahead of the database clock %s",
				   timestamptz_to_str(r->read_at), timestamptz_to_str(now));
	else if (meter->has_state && r->read_at <= meter->last_read_at)
		quarantine(r, Q_OUT_OF_ORDER, "meter was already rated up to %s",
				   timestamptz_to_str(meter->last_read_at));
	else if (meter->has_state && r->energy < meter->last_energy)
		quarantine(r, Q_COUNTER_BACKWARDS, "register went back from %s to %s",
				   fixed_format(meter->last_energy, ENERGY_SCALE),
				   fixed_format(r->energy, ENERGY_SCALE));
	else if (meter->has_state &&
			 rating_exceeds_rate((r->energy - meter->last_energy) * meter->multiplier,
								 r->read_at - meter->last_read_at, meter->max_per_hour))
		quarantine(r, Q_IMPOSSIBLE_JUMP, "%s consumed since %s exceeds %s per hour",
				   fixed_format((r->energy - meter->last_energy) * meter->multiplier, ENERGY_SCALE),
				   timestamptz_to_str(meter->last_read_at),
				   fixed_format(meter->max_per_hour, ENERGY_SCALE));
	return r->reason == Q_NONE;
}

/*
 * quarantine
 *		Mark a reading as not rated, with a reason and a formatted detail.
 */
static void
quarantine(BatchReading *r, Quarantine reason, const char *fmt,...)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	r->reason = reason;
	r->detail = buf.data;
}

/*
 * batch_charge
 *		Price one consumption with the meter's tariff and record the charge
 *		for balance.c to post.  A tariff without any price quarantines the
 *		reading instead (false): the meter's state does not move, so the
 *		first reading rated after a price is added charges the whole
 *		interval.
 */
static bool
batch_charge(Batch *batch, BatchMeter *meter, BatchReading *r, int64 consumption)
{
	const PriceList *list = batch_price_list(batch, meter->site_id, meter->tariff_id);
	BalanceCharge *c;
	int			npieces;
	int64		exact = 0;

	if (list == NULL)
	{
		quarantine(r, Q_NO_PRICE, "tariff " INT64_FORMAT " has no price; add a row to prepay.tariff_version",
				   meter->tariff_id);
		return false;
	}
	npieces = rating_split(&batch->prices[list->first], list->count,
						   meter->last_read_at, r->read_at, consumption, batch->pieces);
	for (int i = 0; i < npieces; i++)
		if (pg_add_s64_overflow(exact, batch->pieces[i].exact, &exact))
			npieces = -1;
	if (npieces < 0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("charge for meter " INT64_FORMAT " is out of range", meter->meter_id)));

	c = &batch->charges[batch->ncharges++];
	c->site_id = meter->site_id;
	c->account_id = meter->account_id;
	c->meter_id = meter->meter_id;
	c->read_from = meter->last_read_at;
	c->read_to = r->read_at;
	c->energy = consumption;
	c->exact = exact;
	c->amount = -rating_round_with_carry(exact, &meter->carry);
	return true;
}

/*
 * batch_save_meters
 *		Write back the rating state (last reading, carry, reported relay
 *		state) of every meter whose state moved.
 */
static void
batch_save_meters(Batch *batch)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *cols[7];
	bool	   *relay_nulls = palloc(sizeof(bool) * batch->nmeters);
	Datum		args[7];
	char		nulls[7] = "       ";
	int			n = 0;

	for (int c = 0; c < 7; c++)
		cols[c] = palloc(sizeof(Datum) * batch->nmeters);
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
		relay_nulls[n] = !m->relay_changed;
		cols[6][n] = TimestampTzGetDatum(m->relay_at);
		n++;
	}
	if (n == 0)
		return;

	spi_kept_plan(&plan,
			"UPDATE prepay.meter m"
			"   SET last_read_at = u.read_at, last_energy = u.energy, charge_carry = u.carry,"
			"       relay_state = coalesce(u.relay::prepay.relay_state, m.relay_state),"
			"       relay_state_at = CASE WHEN u.relay IS NULL THEN m.relay_state_at ELSE u.relay_at END"
			"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7))"
			"       AS u(site_id, meter_id, read_at, energy, carry, relay, relay_at)"
			" WHERE m.site_id = u.site_id AND m.meter_id = u.meter_id", 7,
					  (Oid[]) {INT4ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, NUMERICARRAYOID, NUMERICARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID});
	args[0] = spi_array(cols[0], NULL, n, INT4OID);
	args[1] = spi_array(cols[1], NULL, n, INT8OID);
	args[2] = spi_array(cols[2], NULL, n, TIMESTAMPTZOID);
	args[3] = spi_array(cols[3], NULL, n, NUMERICOID);
	args[4] = spi_array(cols[4], NULL, n, NUMERICOID);
	args[5] = spi_array(cols[5], relay_nulls, n, TEXTOID);
	args[6] = spi_array(cols[6], NULL, n, TIMESTAMPTZOID);
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "reading_rate_batch: meter update failed");
}

/*
 * batch_save_quarantine
 *		Store the reason on every quarantined reading and raise one active
 *		bad_reading alarm per meter.
 */
static void
batch_save_quarantine(Batch *batch)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *cols[5];
	Datum		args[5];
	int			n = 0;

	if (batch->nquarantined == 0)
		return;
	for (int c = 0; c < 5; c++)
		cols[c] = palloc(sizeof(Datum) * batch->nquarantined);
	for (int i = 0; i < batch->nreadings; i++)
	{
		BatchReading *r = &batch->readings[i];

		if (r->reason == Q_NONE)
			continue;
		cols[0][n] = Int32GetDatum(r->site_id);
		cols[1][n] = Int64GetDatum(r->meter_id);
		cols[2][n] = TimestampTzGetDatum(r->read_at);
		cols[3][n] = CStringGetTextDatum(quarantine_label[r->reason]);
		cols[4][n] = CStringGetTextDatum(r->detail);
		n++;
	}

	spi_kept_plan(&plan,
			"WITH q AS ("
			"  UPDATE prepay.reading r"
			"     SET quarantine_reason = u.reason::prepay.quarantine_reason,"
			"         quarantine_detail = u.detail"
			"    FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5))"
			"         AS u(site_id, meter_id, read_at, reason, detail)"
			"   WHERE r.site_id = u.site_id AND r.meter_id = u.meter_id AND r.read_at = u.read_at"
			"  RETURNING r.site_id, r.meter_id, r.read_at, u.reason, u.detail)"
			"INSERT INTO prepay.alarm (site_id, kind, meter_id, detail)"
			"SELECT DISTINCT ON (site_id, meter_id) site_id, 'bad_reading', meter_id,"
			"       pg_catalog.format('reading at %s quarantined (%s): %s', read_at, reason, detail)"
			"  FROM q ORDER BY site_id, meter_id, read_at"
			"    ON CONFLICT DO NOTHING", 5,
					  (Oid[]) {INT4ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, TEXTARRAYOID});
	args[0] = spi_array(cols[0], NULL, n, INT4OID);
	args[1] = spi_array(cols[1], NULL, n, INT8OID);
	args[2] = spi_array(cols[2], NULL, n, TIMESTAMPTZOID);
	args[3] = spi_array(cols[3], NULL, n, TEXTOID);
	args[4] = spi_array(cols[4], NULL, n, TEXTOID);
	if (SPI_execute_plan(plan, args, NULL, false, 0) < 0)
		elog(ERROR, "reading_rate_batch: quarantine failed");
}
