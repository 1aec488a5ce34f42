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
 * against the meter's last rated reading, the valid ones are priced (the
 * tariff core, tariff.c), and balance.c posts the charges.  Bad readings are marked
 * with a quarantine reason and raise an alarm; they never stop the batch.
 *
 * Locking protocol (shared with balance.c and the SQL API):
 *	  1. the site's rating lock: a transaction-level advisory lock on
 *	     (RATING_LOCK_CLASS, site_id), taken in ascending site order, so
 *	     batches of one site rate one after the other and each reads the
 *	     meter state the previous one committed (prepay._lock_site_rating
 *	     takes the same lock for the SQL functions that change meters);
 *	  2. account rows, by the balance UPDATE (balance.c);
 *	  3. meter rows, by the state UPDATE, then the site's posting-day
 *	     rollup row (rollup.c);
 *	  4. command rows, by the alarm ladder's relay commands.
 *	  Every path takes these in this order, so none deadlock.  A recharge
 *	  locks only its account (2) and then commands (4).  Under REPEATABLE
 *	  READ a batch that waited for the site lock meets a serialization
 *	  failure at its meter UPDATE rather than rating from a stale state.
 *
 * A batch runs in this order, as this file reads: collect the readings,
 * lock the sites, load the meters' state (meter_state.c) and the tariffs
 * (tariff_book.c), price each meter's readings (tariff.c, rating.c), post
 * the charges (balance.c), save the meters' state (meter_state.c) and the
 * day's energy (rollup.c), then the alarms: quarantined readings, register
 * splits that fell back, and the balance ladder's levels (balance.c).
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
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "common/int.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "parser/parse_relation.h"
#include "fmgr.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "balance.h"
#include "intake.h"
#include "meter_state.h"
#include "rating.h"
#include "rating_batch.h"
#include "rollup.h"
#include "site_key.h"
#include "tariff_book.h"

/* a reading more than this far ahead of the database clock is refused */
#define CLOCK_AHEAD_LIMIT_US (INT64CONST(10) * 60 * 1000000)

/*
 * and one before 2000-01-01 00:00 UTC (-infinity included): a meter or
 * agent clock that lost its time.  As the first reading of a meter it
 * would start the next interval decades back (or nowhere, at -infinity).
 */
#define CLOCK_BEHIND_LIMIT 0		/* TimestampTz of 2000-01-01 00:00 UTC */

/* labels of prepay.quarantine_reason, indexed by Quarantine */
static const char *const quarantine_label[] = {
	NULL, "unknown_meter", "meter_removed", "invalid_value", "clock_ahead", "clock_behind",
	"out_of_order", "counter_backwards", "impossible_jump", "no_price"
};

PG_FUNCTION_INFO_V1(prepay_reading_skip_duplicate);
PG_FUNCTION_INFO_V1(prepay_reading_rate_batch);

/* Where a reading's key and receipt delay are in a row of prepay.reading or of a partition. */
typedef struct ReadingColumns
{
	Oid			relid;			/* the relation these are of */
	AttrNumber	site_id;
	AttrNumber	meter_id;
	AttrNumber	read_at;
	AttrNumber	received_after;	/* InvalidAttrNumber on a 0.1 table */
} ReadingColumns;

static void check_trigger_protocol(FunctionCallInfo fcinfo, const char *name,
								   bool before, bool for_row);
static const ReadingColumns *reading_columns(Relation rel);
static HeapTuple stamp_receipt(Relation rel, HeapTuple tuple, const ReadingColumns *cols,
							   TimestampTz read_at);
static bool reading_exists(Relation rel, HeapTuple tuple, Datum site_id, Datum meter_id,
						   Datum read_at, char **conflict);
static Relation open_primary_key(Relation rel);
static void batch_collect(Batch *batch, TriggerData *trigdata);
static int	compare_readings(const void *a, const void *b);
static void batch_lock_sites(Batch *batch);
static void batch_load_tariffs(Batch *batch);
static void batch_rate_meter(Batch *batch, BatchMeter *meter, BatchReading *readings, int n);
static bool reading_validate(BatchMeter *meter, BatchReading *r, TimestampTz now);
static bool batch_charge(Batch *batch, BatchMeter *meter, BatchReading *r, int64 consumption);
static bool charge_is_one_piece(const TariffPieces *pieces, const TariffCycleState *before,
								const TariffCycleState *after, const BalanceCharge *c);
static int32 batch_pricing_id(Batch *batch, const BatchMeter *meter, const TariffVersion *version,
							  int period);
static const int64 *register_deltas(const TariffVersion *v, const BatchMeter *meter,
									const BatchReading *r, int64 *deltas);
static char *register_fallback_detail(const TariffVersion *v, const BatchMeter *meter,
									  const BatchReading *r, const TariffPieces *pieces,
									  int64 consumption);
static void batch_save_notes(Batch *batch);
static void quarantine(BatchReading *r, Quarantine reason, char *detail);

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
 * reading_columns
 *		The attribute numbers of rel's key columns and receipt delay, looked
 *		up by name (a partition's column order is its own) and kept for the
 *		last relation asked about: a statement's rows mostly go to one
 *		partition.
 */
static const ReadingColumns *
reading_columns(Relation rel)
{
	static ReadingColumns cols = {InvalidOid};

	if (cols.relid != RelationGetRelid(rel))
	{
		cols.site_id = attnameAttNum(rel, "site_id", false);
		cols.meter_id = attnameAttNum(rel, "meter_id", false);
		cols.read_at = attnameAttNum(rel, "read_at", false);
		cols.received_after = attnameAttNum(rel, "received_after_seconds", false);
		cols.relid = RelationGetRelid(rel);
	}
	return &cols;
}

/*
 * stamp_receipt
 *		The row with received_after_seconds set, unless its writer set it
 *		(or the table is still 0.1's, before ALTER EXTENSION UPDATE):
 *		whole seconds from read_at to the transaction's start (now(), as a
 *		column default would have it), held to the integer range.
 */
static HeapTuple
stamp_receipt(Relation rel, HeapTuple tuple, const ReadingColumns *cols, TimestampTz read_at)
{
	bool		isnull;
	int64		seconds;
	Datum		value;
	bool		value_isnull = false;
	int			column = cols->received_after;

	if (cols->received_after == InvalidAttrNumber)
		return tuple;			/* a 0.1 table: its received_at has a default */
	(void) heap_getattr(tuple, cols->received_after, RelationGetDescr(rel), &isnull);
	if (!isnull)
		return tuple;
	if (pg_sub_s64_overflow(GetCurrentTransactionStartTimestamp(), read_at, &seconds))
		seconds = read_at < 0 ? PG_INT64_MAX : PG_INT64_MIN;	/* +-infinity */
	seconds /= USECS_PER_SEC;
	value = Int32GetDatum((int32) Max(Min(seconds, PG_INT32_MAX), PG_INT32_MIN));
	return heap_modify_tuple_by_cols(tuple, RelationGetDescr(rel), 1, &column, &value, &value_isnull);
}

/*
 * reading_exists
 *		Whether a reading with this key is stored already, by a committed
 *		transaction or earlier in this one (including earlier rows of the
 *		same statement).  Probes the primary key index.  If so, *conflict
 *		is NULL when the stored reading has the registers of `tuple`, else
 *		the detail naming both values (intake_conflict).
 */
static bool
reading_exists(Relation rel, HeapTuple tuple, Datum site_id, Datum meter_id, Datum read_at,
			   char **conflict)
{
	Relation	index = open_primary_key(rel);
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
	*conflict = found ? intake_conflict(rel, tuple, slot) : NULL;
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	RelationClose(index);
	return found;
}

/*
 * open_primary_key
 *		The table's primary key index, for one probe (RelationClose it).
 *		The inserting statement holds RowExclusiveLock on every index of
 *		its table (ExecOpenIndices) until it ends, so the lock manager is
 *		not asked again for each row; without that lock (a caller that
 *		never opened the indexes) the index is locked as usual.
 */
static Relation
open_primary_key(Relation rel)
{
	Oid			oid = RelationGetPrimaryKeyIndex(rel);
	Relation	index;

	if (!OidIsValid(oid))
		elog(ERROR, "reading_skip_duplicate: %s has no primary key", RelationGetRelationName(rel));
	index = RelationIdGetRelation(oid);
	if (index == NULL)
		elog(ERROR, "reading_skip_duplicate: cannot open index %u", oid);
	if (!CheckRelationLockedByMe(index, RowExclusiveLock, true))
		LockRelationOid(oid, AccessShareLock);	/* kept to the end of the transaction */
	return index;
}

/*
 * prepay_reading_skip_duplicate
 *		BEFORE INSERT row trigger: return NULL (skip the row) when its
 *		writer may not write readings of its site (refused and recorded
 *		before anything of that site is read: intake.c), or when the same
 *		(site, meter, read_at) is already stored (recorded when its
 *		registers differ).  A duplicate committed concurrently by another
 *		session still meets the primary key.
 */
Datum
prepay_reading_skip_duplicate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	TupleDesc	desc;
	const ReadingColumns *cols;
	bool		null1,
				null2,
				null3;
	Datum		site_id,
				meter_id,
				read_at;
	char	   *conflict;

	check_trigger_protocol(fcinfo, "reading_skip_duplicate", true, true);
	tuple = trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	cols = reading_columns(trigdata->tg_relation);
	site_id = heap_getattr(tuple, cols->site_id, desc, &null1);
	meter_id = heap_getattr(tuple, cols->meter_id, desc, &null2);
	read_at = heap_getattr(tuple, cols->read_at, desc, &null3);
	if (!null1 && !intake_site_allowed(trigdata->tg_relation, DatumGetInt32(site_id)))
	{
		intake_refuse_foreign(trigdata->tg_relation, tuple);
		return PointerGetDatum(NULL);
	}
	if (!null1 && !null2 && !null3 &&
		reading_exists(trigdata->tg_relation, tuple, site_id, meter_id, read_at, &conflict))
	{
		if (conflict != NULL)
			intake_refuse_conflict(trigdata->tg_relation, tuple, conflict);
		return PointerGetDatum(NULL);
	}
	if (null3)
		return PointerGetDatum(tuple);	/* refused by NOT NULL next */
	return PointerGetDatum(stamp_receipt(trigdata->tg_relation, tuple, cols,
										 DatumGetTimestampTz(read_at)));
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
	intake_report();			/* the rows reading_skip_duplicate refused */

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
		meter_state_load(&batch);
		batch_load_tariffs(&batch);
		batch.charges = palloc(sizeof(BalanceCharge) * batch.nreadings);
		initStringInfo(&batch.json);
		batch.compact = balance_ledger_has_pricing();
		batch.rollup = rollup_create();

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

		posting = balance_post_charges(batch.charges, batch.ncharges, batch.account_table);
		meter_state_save(&batch);
		rollup_flush(batch.rollup);
		batch_save_notes(&batch);
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
	int64		capacity = Max(tuplestore_tuple_count(store), 1);
	const ReadingColumns *cols = reading_columns(trigdata->tg_relation);
	int			energy_att = attnameAttNum(trigdata->tg_relation, "energy", false);
	int			relay_att = attnameAttNum(trigdata->tg_relation, "relay_state", false);
	int			register_att[NREGISTERS];

	for (int k = 0; k < NREGISTERS; k++)
		register_att[k] = attnameAttNum(trigdata->tg_relation, tariff_register_name[k], false);
	batch->readings = palloc_extended(sizeof(BatchReading) * capacity, MCXT_ALLOC_HUGE);
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
		r->site_id = DatumGetInt32(slot_getattr(slot, cols->site_id, &isnull));
		r->meter_id = DatumGetInt64(slot_getattr(slot, cols->meter_id, &isnull));
		r->read_at = DatumGetTimestampTz(slot_getattr(slot, cols->read_at, &isnull));
		value = slot_getattr(slot, energy_att, &isnull);
		r->has_energy = !isnull;
		if (!isnull && numeric_is_nan(DatumGetNumeric(value)))
			r->not_a_number = "energy";
		else if (!isnull)
			r->energy = fixed_from_numeric(value, ENERGY_SCALE);
		for (int k = 0; k < NREGISTERS; k++)
		{
			value = slot_getattr(slot, register_att[k], &isnull);
			if (!isnull)
				r->register_mask |= 1 << k;
			if (!isnull && numeric_is_nan(DatumGetNumeric(value)))
				r->not_a_number = r->not_a_number ? r->not_a_number : tariff_register_name[k];
			else if (!isnull)
				r->registers[k] = fixed_from_numeric(value, ENERGY_SCALE);
		}
		value = slot_getattr(slot, relay_att, &isnull);
		if (!isnull)
			r->relay = meter_state_relay_label(batch, value);
	}
	ExecDropSingleTupleTableSlot(slot);
	if (batch->nreadings > 1)
		qsort(batch->readings, batch->nreadings, sizeof(BatchReading), compare_readings);
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
	int			c = site_key_compare(x->site_id, x->meter_id, y->site_id, y->meter_id);

	return c != 0 ? c : int64_compare(x->read_at, y->read_at);
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
 * batch_load_tariffs
 *		Compile the tariffs and calendars of every site in the batch.
 */
static void
batch_load_tariffs(Batch *batch)
{
	int32	   *sites = palloc(sizeof(int32) * batch->nreadings);
	int			n = 0;

	for (int i = 0; i < batch->nreadings; i++)
		if (n == 0 || sites[n - 1] != batch->readings[i].site_id)
			sites[n++] = batch->readings[i].site_id;
	batch->book = tariff_book_load(sites, n);
	batch->pieces.grow = tariff_book_grow;
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
		meter->register_mask = r->register_mask;
		memcpy(meter->registers, r->registers, sizeof(r->registers));
		meter->changed = true;
		/*
		 * A relay state read before the one already known (a command the
		 * agent confirmed after taking this reading) is stale: taking it
		 * would forget a trip, and a recharge would then close nothing.
		 */
		if (r->relay != NULL && (meter->relay == NULL || strcmp(meter->relay, r->relay) != 0) &&
			r->read_at > meter->relay_at)
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
	int64		consumption = 0;
	bool		overflow = meter->has_state &&
		pg_mul_s64_overflow(r->energy - meter->last_energy, meter->multiplier, &consumption);

	if (!meter->found)
		quarantine(r, Q_UNKNOWN_METER, psprintf("site %d has no meter " INT64_FORMAT, r->site_id, r->meter_id));
	else if (!meter->active)
		quarantine(r, Q_METER_REMOVED, psprintf("meter " INT64_FORMAT " was removed", r->meter_id));
	else if (r->not_a_number != NULL)
		quarantine(r, Q_INVALID_VALUE, psprintf("%s register is NaN", r->not_a_number));
	else if (!r->has_energy || r->energy < 0)
		quarantine(r, Q_INVALID_VALUE, psprintf("energy register is %s",
				   r->has_energy ? fixed_format(r->energy, ENERGY_SCALE) : "missing"));
	else if (r->read_at > now + CLOCK_AHEAD_LIMIT_US)
	{
		/* timestamptz_to_str returns a static buffer: copy the first */
		char	   *read_at = pstrdup(timestamptz_to_str(r->read_at));

		quarantine(r, Q_CLOCK_AHEAD, psprintf("read_at %s is ahead of the database clock %s",
				   read_at, timestamptz_to_str(now)));
	}
	else if (r->read_at < CLOCK_BEHIND_LIMIT)
		quarantine(r, Q_CLOCK_BEHIND, psprintf("read_at %s is before 2000-01-01 00:00 UTC",
				   timestamptz_to_str(r->read_at)));
	else if (meter->has_state && r->read_at <= meter->last_read_at)
		quarantine(r, Q_OUT_OF_ORDER, psprintf("meter was already rated up to %s",
				   timestamptz_to_str(meter->last_read_at)));
	else if (meter->has_state && r->energy < meter->last_energy)
		quarantine(r, Q_COUNTER_BACKWARDS, psprintf("register went back from %s to %s",
				   fixed_format(meter->last_energy, ENERGY_SCALE),
				   fixed_format(r->energy, ENERGY_SCALE)));
	else if (overflow)
		quarantine(r, Q_IMPOSSIBLE_JUMP, psprintf("%s x %d consumed since %s is out of range",
				   fixed_format(r->energy - meter->last_energy, ENERGY_SCALE), meter->multiplier,
				   timestamptz_to_str(meter->last_read_at)));
	else if (meter->has_state &&
			 rating_exceeds_rate(consumption, r->read_at - meter->last_read_at, meter->max_per_hour))
		quarantine(r, Q_IMPOSSIBLE_JUMP, psprintf("%s consumed since %s exceeds %s per hour%s",
				   fixed_format(consumption, ENERGY_SCALE),
				   timestamptz_to_str(meter->last_read_at),
				   fixed_format(meter->max_per_hour, ENERGY_SCALE),
				   meter->derived_from == NULL ? "" :
				   psprintf(" (max_per_hour not set: %s per hour for a%s %s meter x multiplier %d)",
							fixed_format(rating_register_per_hour(meter->derived_from), ENERGY_SCALE),
							strchr("aeiou", meter->derived_from[0]) ? "n" : "",
							meter->derived_from, meter->multiplier)));
	return r->reason == Q_NONE;
}

/*
 * quarantine
 *		Mark a reading as not rated, with a reason and a detail naming the
 *		values (callers format it with psprintf).
 */
static void
quarantine(BatchReading *r, Quarantine reason, char *detail)
{
	r->reason = reason;
	r->detail = detail;
}

/*
 * batch_charge
 *		Price one consumption with the meter's tariff and record the charge
 *		for balance.c to post.  A tariff without any version quarantines the
 *		reading instead (false): the meter's state does not move, so the
 *		first reading rated after a version is added charges the whole
 *		interval.
 */
static bool
batch_charge(Batch *batch, BatchMeter *meter, BatchReading *r, int64 consumption)
{
	int			nversions;
	const TariffVersion *versions = tariff_book_versions(batch->book, meter->site_id,
														 meter->tariff_id, &nversions);
	TariffCycleState before = meter->cycle;
	const TariffVersion *last;
	int64		deltas[TARIFF_MAX_PERIODS];
	const int64 *registers;
	BalanceCharge *c;
	int64		exact = 0;
	bool		ok;

	if (versions == NULL)
	{
		quarantine(r, Q_NO_PRICE, psprintf("tariff " INT64_FORMAT " has no price; add a row to prepay.tariff_version",
				   meter->tariff_id));
		return false;
	}
	last = &versions[tariff_version_at(versions, nversions, r->read_at)];
	registers = register_deltas(last, meter, r, deltas);
	batch->pieces.n = 0;
	ok = tariff_rate(versions, nversions, tariff_book_calendar(batch->book, meter->site_id),
					 meter->last_read_at, r->read_at, consumption, registers,
					 &meter->cycle, &batch->pieces);
	for (int i = 0; ok && i < batch->pieces.n; i++)
		ok = !pg_add_s64_overflow(exact, batch->pieces.items[i].exact, &exact);
	if (!ok)
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
	if (batch->pieces.fallback != TARIFF_FALLBACK_NONE)
	{
		r->fallback = register_fallback_detail(last, meter, r, &batch->pieces, consumption);
		batch->nfallbacks++;
	}
	c->pieces = NULL;
	c->pricing_id = 0;
	if (batch->compact && charge_is_one_piece(&batch->pieces, &before, &meter->cycle, c))
		c->pricing_id = batch_pricing_id(batch, meter, &versions[batch->pieces.items[0].version],
										 batch->pieces.items[0].period);
	else
	{
		resetStringInfo(&batch->json);
		tariff_pieces_json(&batch->json, meter->tariff_id, versions, &batch->pieces, meter->multiplier,
						   &before, &meter->cycle, r->fallback);
		c->pieces = cstring_to_text_with_len(batch->json.data, batch->json.len);
	}
	c->amount = -rating_round_with_carry(exact, &meter->carry);
	c->account_row = meter->account_row;
	rollup_add_entry(batch->rollup, meter->site_id, meter->meter_id, meter->account_id, c->amount,
					 &batch->pieces, versions, tariff_book_calendar(batch->book, meter->site_id));
	return true;
}

/*
 * charge_is_one_piece
 *		Whether a charge's pricing record would say nothing but its tariff,
 *		multiplier, version and period beside the entry's own columns: one
 *		piece over the whole interval at tier 1, split uniformly, outside
 *		any billing cycle, at a unit price that exact / energy gives back.
 *		Such a charge names a prepay.charge_pricing row instead
 *		(prepay._pricing_record rebuilds the record).
 */
static bool
charge_is_one_piece(const TariffPieces *pieces, const TariffCycleState *before,
					const TariffCycleState *after, const BalanceCharge *c)
{
	const TariffPiece *p = &pieces->items[0];
	int64		exact;

	return pieces->n == 1 && !pieces->by_register && pieces->fallback == TARIFF_FALLBACK_NONE &&
		before->start == INT64_MIN && after->start == INT64_MIN && p->tier == 0 &&
		p->from == c->read_from && p->to == c->read_to && p->energy == c->energy &&
		c->energy > 0 && p->exact == c->exact &&
		!pg_mul_s64_overflow(p->energy, p->price, &exact) && exact == c->exact;
}

/*
 * batch_pricing_id
 *		The prepay.charge_pricing row of a one-piece charge: from the rows
 *		the batch named already, else from prepay._charge_pricing_id (which
 *		adds it if new).
 */
static int32
batch_pricing_id(Batch *batch, const BatchMeter *meter, const TariffVersion *version, int period)
{
	static SPIPlanPtr plan = NULL;
	const char *name = version->period_name[period];
	BatchPricing *bp;
	Datum		args[5];
	bool		isnull;

	for (int i = batch->npricings - 1; i >= 0; i--)
	{
		bp = &batch->pricings[i];
		if (bp->site_id == meter->site_id && bp->tariff_id == meter->tariff_id &&
			bp->multiplier == meter->multiplier && bp->version_from == version->valid_from &&
			strcmp(bp->period, name) == 0)
			return bp->pricing_id;
	}
	spi_kept_plan(&plan, "SELECT prepay._charge_pricing_id($1, $2, $3, $4, $5)", 5,
				  (Oid[]) {INT4OID, INT8OID, INT4OID, TIMESTAMPTZOID, TEXTOID});
	args[0] = Int32GetDatum(meter->site_id);
	args[1] = Int64GetDatum(meter->tariff_id);
	args[2] = Int32GetDatum(meter->multiplier);
	args[3] = TimestampTzGetDatum(version->valid_from);
	args[4] = CStringGetTextDatum(name);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "reading_rate_batch: charge pricing query failed");
	if (batch->npricings == batch->maxpricings)
	{
		batch->maxpricings = Max(16, 2 * batch->maxpricings);
		batch->pricings = batch->pricings == NULL
			? palloc(sizeof(BatchPricing) * batch->maxpricings)
			: repalloc(batch->pricings, sizeof(BatchPricing) * batch->maxpricings);
	}
	bp = &batch->pricings[batch->npricings++];
	bp->site_id = meter->site_id;
	bp->tariff_id = meter->tariff_id;
	bp->multiplier = meter->multiplier;
	bp->version_from = version->valid_from;
	bp->period = name;
	bp->pricing_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		elog(ERROR, "reading_rate_batch: no charge pricing row");
	return bp->pricing_id;
}

/*
 * register_deltas
 *		For a tariff that splits by the meter's TOU registers: the energy
 *		each of its periods consumed since the last rated reading, times
 *		the multiplier, in the version's period order.  Only the registers
 *		of the tariff's own periods are needed (a peak/valley tariff on a
 *		meter without sharp and flat registers splits by its peak and
 *		valley).  NULL when the tariff splits uniformly or one of those
 *		registers is missing in this reading or the last rated one.  A
 *		difference beyond 64 bits is INT64_MAX, which cannot add up.
 */
static const int64 *
register_deltas(const TariffVersion *v, const BatchMeter *meter, const BatchReading *r, int64 *deltas)
{
	if (v->split != TARIFF_SPLIT_REGISTERS)
		return NULL;
	for (int p = 0; p < v->nperiods; p++)
	{
		int			k = tariff_register_index(v->period_name[p]);

		if (k < 0 || !(r->register_mask & meter->register_mask & (1 << k)))
			return NULL;
		if (pg_mul_s64_overflow(r->registers[k] - meter->registers[k], meter->multiplier, &deltas[p]))
			deltas[p] = PG_INT64_MAX;
	}
	return deltas;
}

/*
 * register_fallback_detail
 *		Why the charge of reading r, whose tariff version v splits by
 *		registers, was split uniformly: which register was missing (in
 *		this reading or the last rated one), went back, or how far the
 *		registers' sum is from the total.  Kept in the pricing record
 *		("split_fallback") and the split_fallback alarm.
 */
static char *
register_fallback_detail(const TariffVersion *v, const BatchMeter *meter, const BatchReading *r,
						 const TariffPieces *pieces, int64 consumption)
{
	StringInfoData names;
	int64		sum = 0;

	initStringInfo(&names);
	for (int p = 0; p < v->nperiods; p++)
	{
		int			k = tariff_register_index(v->period_name[p]);
		int64		delta = 0;

		if (k < 0)
			return psprintf("period %s is not a register", v->period_name[p]);
		if (!(meter->register_mask & (1 << k)))
			return psprintf("the last rated reading (%s) has no %s register",
							timestamptz_to_str(meter->last_read_at), tariff_register_name[k]);
		if (!(r->register_mask & (1 << k)))
			return psprintf("this reading has no %s register", tariff_register_name[k]);
		if (pieces->fallback == TARIFF_FALLBACK_NEGATIVE && r->registers[k] < meter->registers[k])
			return psprintf("the %s register went back from %s to %s", tariff_register_name[k],
							fixed_format(meter->registers[k], ENERGY_SCALE),
							fixed_format(r->registers[k], ENERGY_SCALE));
		if (pg_mul_s64_overflow(r->registers[k] - meter->registers[k], meter->multiplier, &delta) ||
			pg_add_s64_overflow(sum, delta, &sum))
			return pstrdup("the registers' advance is out of range");
		appendStringInfo(&names, "%s%s", p > 0 ? " + " : "", tariff_register_name[k]);
	}
	return psprintf("%s advanced %s, the total register %s (after the multiplier)", names.data,
					fixed_format(sum, ENERGY_SCALE), fixed_format(consumption, ENERGY_SCALE));
}

/*
 * A note the batch saves on some of its readings: column c of reading r's
 * note, or NULL for a reading without one (whatever c).
 */
typedef const char *(*ReadingNote) (const BatchReading *r, int c);

/*
 * save_reading_notes
 *		Save a note on each of the nnoted readings of the batch that have
 *		one, with the kept plan sql: its arguments are $1 site_id, $2
 *		meter_id and $3 read_at of those readings, then a text array per
 *		column of the note (ntext of them, at most two).  what names the
 *		step in the error of a failed plan.
 */
static void
save_reading_notes(Batch *batch, int nnoted, ReadingNote note, int ntext,
				   SPIPlanPtr *plan, const char *sql, const char *what)
{
	Datum	   *cols[3 + 2];
	Datum		args[3 + 2];
	int			n = 0;

	Assert(ntext <= 2);
	if (nnoted == 0)
		return;
	for (int c = 0; c < 3 + ntext; c++)
		cols[c] = palloc(sizeof(Datum) * nnoted);
	for (int i = 0; i < batch->nreadings; i++)
	{
		BatchReading *r = &batch->readings[i];

		if (note(r, 0) == NULL)
			continue;
		cols[0][n] = Int32GetDatum(r->site_id);
		cols[1][n] = Int64GetDatum(r->meter_id);
		cols[2][n] = TimestampTzGetDatum(r->read_at);
		for (int c = 0; c < ntext; c++)
			cols[3 + c][n] = CStringGetTextDatum(note(r, c));
		n++;
	}
	spi_kept_plan(plan, sql, 3 + ntext,
				  (Oid[]) {INT4ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, TEXTARRAYOID});
	args[0] = spi_array(cols[0], NULL, n, INT4OID);
	args[1] = spi_array(cols[1], NULL, n, INT8OID);
	args[2] = spi_array(cols[2], NULL, n, TIMESTAMPTZOID);
	for (int c = 0; c < ntext; c++)
		args[3 + c] = spi_array(cols[3 + c], NULL, n, TEXTOID);
	if (SPI_execute_plan(*plan, args, NULL, false, 0) < 0)
		elog(ERROR, "reading_rate_batch: %s failed", what);
}

/* A quarantined reading's note: its reason's label, and the detail. */
static const char *
quarantine_note(const BatchReading *r, int c)
{
	if (r->reason == Q_NONE)
		return NULL;
	return c == 0 ? quarantine_label[r->reason] : r->detail;
}

/* A reading's split fallback note: why its charge was split uniformly. */
static const char *
fallback_note(const BatchReading *r, int c)
{
	return r->fallback;
}

/*
 * batch_save_notes
 *		Save the notes of the batch's readings: the reason on every
 *		quarantined reading, with one active bad_reading alarm per meter;
 *		and one active split_fallback alarm per meter whose charge was split
 *		uniformly although its tariff splits by registers, naming the first
 *		such reading of the batch and why (the pricing record of every such
 *		charge says so too, "split_fallback").
 */
static void
batch_save_notes(Batch *batch)
{
	static SPIPlanPtr quarantine_plan = NULL;
	static SPIPlanPtr fallback_plan = NULL;

	save_reading_notes(batch, batch->nquarantined, quarantine_note, 2, &quarantine_plan,
			"WITH q AS ("
			"  UPDATE prepay.reading r"
			"     SET quarantine_reason = u.reason,"
			"         quarantine_detail = u.detail"
			"    FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
			"                    pg_catalog.unnest($4::prepay.quarantine_reason[]), pg_catalog.unnest($5))"
			"         AS u(site_id, meter_id, read_at, reason, detail)"
			"   WHERE r.site_id = u.site_id AND r.meter_id = u.meter_id AND r.read_at = u.read_at"
			"     AND r.site_id = ANY ($1)"
			"  RETURNING r.site_id, r.meter_id, r.read_at, u.reason, u.detail)"
			"INSERT INTO prepay.alarm (site_id, kind, meter_id, detail)"
			"SELECT DISTINCT ON (site_id, meter_id) site_id, 'bad_reading', meter_id,"
			"       pg_catalog.format('reading at %s quarantined (%s): %s', read_at, reason, detail)"
			"  FROM q ORDER BY site_id, meter_id, read_at"
			"    ON CONFLICT DO NOTHING", "quarantine");
	save_reading_notes(batch, batch->nfallbacks, fallback_note, 1, &fallback_plan,
			"INSERT INTO prepay.alarm (site_id, kind, meter_id, detail)"
			"SELECT DISTINCT ON (u.site_id, u.meter_id) u.site_id, 'split_fallback', u.meter_id,"
			"       pg_catalog.format('charge up to the reading at %s split uniformly, not by the meter''s registers: %s',"
			"                         u.read_at, u.detail)"
			"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4))"
			"       AS u(site_id, meter_id, read_at, detail)"
			" ORDER BY u.site_id, u.meter_id, u.read_at"
			"    ON CONFLICT DO NOTHING", "split fallback alarm");
}
