/*-------------------------------------------------------------------------
 *
 * extension/intake.c
 *	  What the duplicate trigger of prepay.reading refuses, and the bulk
 *	  intake for roles under row-level security.
 *
 * The BEFORE ROW trigger reading_skip_duplicate (reading.c) lets a row
 * into prepay.reading only when
 *	  1. its writer may write readings of its site: for a writer under row
 *	     security, the sites the table's INSERT policies allow it
 *	     (prepay._reading_sites(), asked once per statement).  A foreign
 *	     row is refused before anything about its site is read, so the
 *	     writer learns nothing of that site (neither from an error, nor
 *	     from the row count, nor from whether a reading with that key
 *	     exists there), and the good rows of the statement are stored and
 *	     rated;
 *	  2. no reading with its key is stored.  An identical duplicate (a
 *	     replay) is skipped silently; one with other register values is a
 *	     conflict, skipped too (the stored reading keeps its charge) but
 *	     recorded with both values and raised as an alarm.
 * Refused rows are written to prepay.reading_refused (and conflicts to
 * prepay.alarm) with the rights of the table's owner, since the writer has
 * none there; the statement's rating trigger then warns the writer with a
 * count (intake_report).
 *
 * COPY FROM is refused on a table with row security, so roles under it
 * (agents, administrators, operators) COPY into prepay.reading_intake, a
 * table without row security that they may only INSERT into.  Its AFTER
 * STATEMENT trigger (prepay_reading_intake_drain) inserts the statement's
 * rows, read from its transition table into one array per column, into
 * prepay.reading in one INSERT with the writer's own rights (the trigger
 * is SECURITY INVOKER: grants, row security and the rules above apply as
 * to a direct INSERT), then deletes them from the intake: it is empty
 * after every statement.  The rows are passed as parameters, not as the
 * transition table by name: on Citus the trigger fires on a shard of the
 * intake on a worker, where Citus plans the INSERT into the distributed
 * prepay.reading and runs it on the colocated shard, which cannot see a
 * named tuplestore of the trigger.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/intake.c
 *
 *-------------------------------------------------------------------------
 */
#include "intake.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "parser/parse_relation.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

/* the register columns a conflict compares, in prepay.reading */
static const char *const register_columns[] = {"energy", "sharp", "peak", "flat", "valley", NULL};

/* the columns of prepay.reading_intake the drain moves on, in this order */
static const char *const intake_columns[] = {
	"site_id", "meter_id", "read_at", "energy", "sharp", "peak", "flat", "valley", "power",
	"relay_state", NULL
};

#define INTAKE_NCOLUMNS 10

/* the columns of prepay.reading a refused row keeps, in this order */
static const char *const refused_columns[] = {
	"site_id", "meter_id", "read_at", "energy", "sharp", "peak", "flat", "valley", "power",
	"relay_state", NULL
};

/*
 * The writer's sites for the current statement: looked up at its first
 * row and kept while the transaction, command and user stay the same.
 */
static struct
{
	bool		valid;
	LocalTransactionId lxid;
	CommandId	cid;
	Oid			user;
	bool		filtered;		/* row security applies to the writer */
	int			nsites;
	int32	   *sites;			/* sorted, in TopMemoryContext */
} writer_sites;

/* Rows refused in the current (sub)transaction, not yet reported. */
static struct
{
	LocalTransactionId lxid;
	SubTransactionId subxid;
	int64		not_mapped;
	int64		conflicts;
} refused;

static void load_writer_sites(Relation rel);
static void record_refusal(Relation rel, HeapTuple tuple, const char *reason, const char *detail);
static char *register_text(Datum value, bool isnull);
static void delete_own_rows(Relation rel);
static void read_columns(Relation rel, Tuplestorestate *rows, Datum *arrays, Oid *types);

/*
 * intake_site_allowed
 *		Whether the current user may write readings of this site into rel
 *		(prepay.reading), as its INSERT policies would judge: always when
 *		row security does not apply to the user.
 */
bool
intake_site_allowed(Relation rel, int32 site_id)
{
	int			lo = 0,
				hi;

	if (!writer_sites.valid || writer_sites.lxid != MyProc->lxid ||
		writer_sites.cid != GetCurrentCommandId(false) || writer_sites.user != GetUserId())
		load_writer_sites(rel);
	if (!writer_sites.filtered)
		return true;
	hi = writer_sites.nsites;
	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (writer_sites.sites[mid] < site_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < writer_sites.nsites && writer_sites.sites[lo] == site_id;
}

/*
 * load_writer_sites
 *		Ask prepay._reading_sites() for the current user's sites, if row
 *		security applies to it on rel.
 */
static void
load_writer_sites(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);

	/*
	 * The trigger fires on the partition a row goes to; the policies are
	 * those of the partitioned table, prepay.reading (a partition has none)
	 */
	if (rel->rd_rel->relispartition)
		relid = llast_oid(get_partition_ancestors(relid));
	writer_sites.valid = false;
	writer_sites.filtered = check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED;
	writer_sites.nsites = 0;
	if (writer_sites.filtered)
	{
		bool		isnull;
		Datum		value;
		ArrayType  *array;
		Datum	   *elems = NULL;
		int			n = 0;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "reading_skip_duplicate: SPI_connect failed");
		if (SPI_execute("SELECT prepay._reading_sites()", true, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "reading_skip_duplicate: prepay._reading_sites() failed");
		value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		array = isnull ? NULL : DatumGetArrayTypeP(value);
		if (array != NULL && (ARR_HASNULL(array) || ARR_ELEMTYPE(array) != INT4OID))
			elog(ERROR, "reading_skip_duplicate: prepay._reading_sites() must return integer[] without NULLs");
		if (array != NULL)
			deconstruct_array(array, INT4OID, sizeof(int32), true, TYPALIGN_INT, &elems, NULL, &n);
		if (writer_sites.sites != NULL)
			pfree(writer_sites.sites);
		writer_sites.sites = MemoryContextAlloc(TopMemoryContext, sizeof(int32) * Max(n, 1));
		for (int i = 0; i < n; i++)
			writer_sites.sites[i] = DatumGetInt32(elems[i]);
		writer_sites.nsites = n;
		SPI_finish();
	}
	writer_sites.lxid = MyProc->lxid;
	writer_sites.cid = GetCurrentCommandId(false);
	writer_sites.user = GetUserId();
	writer_sites.valid = true;
}

/*
 * intake_refuse_foreign
 *		Record a row of a site its writer may not write.  Nothing of that
 *		site is read: the record is written under the site the row names.
 */
void
intake_refuse_foreign(Relation rel, HeapTuple tuple)
{
	record_refusal(rel, tuple, "site_not_mapped",
				   psprintf("role %s may not write readings of this site",
							GetUserNameFromId(GetUserId(), false)));
}

/*
 * intake_conflict
 *		Compare a new reading with the stored reading of the same key (in
 *		slot): NULL when every register is the same (a replay), else the
 *		detail naming both values of each register that differs.
 */
char *
intake_conflict(Relation rel, HeapTuple tuple, TupleTableSlot *stored)
{
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData stored_text;
	StringInfoData new_text;
	bool		differs = false;

	initStringInfo(&stored_text);
	initStringInfo(&new_text);
	for (int k = 0; register_columns[k] != NULL; k++)
	{
		int			att = attnameAttNum(rel, register_columns[k], false);
		bool		null_new,
					null_stored;
		Datum		v_new = heap_getattr(tuple, att, desc, &null_new);
		Datum		v_stored = slot_getattr(stored, att, &null_stored);

		if (null_new && null_stored)
			continue;
		if (!null_new && !null_stored &&
			DatumGetInt32(DirectFunctionCall2(numeric_cmp, v_new, v_stored)) == 0)
			continue;
		appendStringInfo(&stored_text, "%s%s %s", differs ? ", " : "", register_columns[k],
						 register_text(v_stored, null_stored));
		appendStringInfo(&new_text, "%s%s %s", differs ? ", " : "", register_columns[k],
						 register_text(v_new, null_new));
		differs = true;
	}
	if (!differs)
		return NULL;
	return psprintf("stored with %s; this reading has %s", stored_text.data, new_text.data);
}

/* A register value as text for a detail ("missing" for NULL). */
static char *
register_text(Datum value, bool isnull)
{
	return isnull ? "missing" : DatumGetCString(DirectFunctionCall1(numeric_out, value));
}

/*
 * intake_refuse_conflict
 *		Record a conflicting duplicate and raise a conflicting_reading
 *		alarm for its meter (one active per meter).
 */
void
intake_refuse_conflict(Relation rel, HeapTuple tuple, const char *detail)
{
	record_refusal(rel, tuple, "conflicting_duplicate", detail);
}

/*
 * record_refusal
 *		Write the refused row to prepay.reading_refused (and, for a
 *		conflict, the alarm) as rel's owner, with a pinned search_path:
 *		the writer may neither read nor write those tables.  Count it for
 *		intake_report.
 */
static void
record_refusal(Relation rel, HeapTuple tuple, const char *reason, const char *detail)
{
	static SPIPlanPtr plan = NULL;
	TupleDesc	desc = RelationGetDescr(rel);
	Datum		args[13];
	char		nulls[13];
	Oid			types[13] = {INT4OID, INT8OID, TIMESTAMPTZOID, NUMERICOID, NUMERICOID, NUMERICOID,
		NUMERICOID, NUMERICOID, NUMERICOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Oid			save_user;
	int			save_sec;
	int			save_nestlevel;
	bool		conflict = strcmp(reason, "conflicting_duplicate") == 0;

	for (int k = 0; refused_columns[k] != NULL; k++)
	{
		bool		isnull;
		Datum		value = heap_getattr(tuple, attnameAttNum(rel, refused_columns[k], false), desc, &isnull);

		if (!isnull && k == 9)	/* the relay state as its label */
			value = CStringGetTextDatum(DatumGetCString(DirectFunctionCall1(enum_out, value)));
		args[k] = value;
		nulls[k] = isnull ? 'n' : ' ';
	}
	args[10] = CStringGetTextDatum(reason);
	args[11] = CStringGetTextDatum(detail);
	args[12] = CStringGetTextDatum(GetUserNameFromId(GetUserId(), false));
	nulls[10] = nulls[11] = nulls[12] = ' ';

	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(rel->rd_rel->relowner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "reading_skip_duplicate: SPI_connect failed");
	spi_kept_plan(&plan,
			"WITH r AS ("
			"  INSERT INTO prepay.reading_refused (site_id, meter_id, read_at, energy, sharp, peak, flat,"
			"                                      valley, power, relay_state, reason, detail, acting_role)"
			"  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::prepay.relay_state, $11, $12, $13)"
			"  RETURNING site_id, meter_id, read_at, reason, detail)"
			"INSERT INTO prepay.alarm (site_id, kind, meter_id, detail)"
			"SELECT r.site_id, 'conflicting_reading', r.meter_id,"
			"       pg_catalog.format('reading at %s not stored: %s', r.read_at, r.detail)"
			"  FROM r WHERE r.reason OPERATOR(pg_catalog.=) 'conflicting_duplicate'"
			"    ON CONFLICT DO NOTHING", 13, types);
	if (SPI_execute_plan(plan, args, nulls, false, 0) < 0)
		elog(ERROR, "reading_skip_duplicate: recording a refused reading failed");
	SPI_finish();
	AtEOXact_GUC(true, save_nestlevel);
	SetUserIdAndSecContext(save_user, save_sec);

	if (refused.lxid != MyProc->lxid || refused.subxid != GetCurrentSubTransactionId())
	{
		refused.lxid = MyProc->lxid;
		refused.subxid = GetCurrentSubTransactionId();
		refused.not_mapped = refused.conflicts = 0;
	}
	if (conflict)
		refused.conflicts++;
	else
		refused.not_mapped++;
}

/*
 * warn_refused
 *		One WARNING for the n rows of a statement refused for one reason:
 *		"n reading(s) <what>", with the reason's SQLSTATE, detail and hint.
 */
static void
warn_refused(int64 n, int sqlstate, const char *what, const char *detail, const char *hint)
{
	if (n > 0)
		ereport(WARNING,
				(errcode(sqlstate),
				 errmsg("%lld reading%s %s", (long long) n, n == 1 ? "" : "s", what),
				 errdetail("%s", detail),
				 errhint("%s", hint)));
}

/*
 * intake_report
 *		Warn the writer of the rows its statement had refused (called by
 *		the statement's rating trigger), and forget them.  Counts left by
 *		a statement that failed belong to another (sub)transaction and
 *		are dropped.
 */
void
intake_report(void)
{
	if (refused.lxid != MyProc->lxid || refused.subxid != GetCurrentSubTransactionId())
		refused.not_mapped = refused.conflicts = 0;
	warn_refused(refused.not_mapped, ERRCODE_PREPAY_SITE_NOT_MAPPED,
				 "refused: not of a site this role may write readings of",
				 "They were not stored or rated; the other rows of the statement were.  "
				 "Each is recorded in prepay.reading_refused for the staff of the site it names.",
				 "Check the site_id the writer sends.  An administrator maps logins to sites in "
				 "prepay.site_access or prepay.agent_access.");
	warn_refused(refused.conflicts, ERRCODE_PREPAY_CONFLICTING_READING,
				 "not stored: a reading of the same meter and time is stored with other register values",
				 "The stored reading keeps its charge.  Both values are recorded in "
				 "prepay.reading_refused, and the meter has a conflicting_reading alarm.",
				 "Check the meter's configuration and the feed: a misconfigured meter or a tampered "
				 "feed sends two values for one instant.  An identical resend is skipped silently.");
	refused.not_mapped = refused.conflicts = 0;
}

PG_FUNCTION_INFO_V1(prepay_reading_intake_drain);

/*
 * prepay_reading_intake_drain
 *		AFTER INSERT statement trigger on prepay.reading_intake: insert the
 *		statement's rows into prepay.reading with the writer's rights, in
 *		the order they came, in one statement, then delete them from the
 *		intake.
 */
Datum
prepay_reading_intake_drain(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Datum		arrays[INTAKE_NCOLUMNS];
	Oid			types[INTAKE_NCOLUMNS];

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		trigdata->tg_newtable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("reading_intake_drain: must be fired AFTER INSERT FOR EACH STATEMENT with REFERENCING NEW TABLE AS intake_rows")));
	if (tuplestore_tuple_count(trigdata->tg_newtable) == 0)
		return PointerGetDatum(NULL);

	read_columns(trigdata->tg_relation, trigdata->tg_newtable, arrays, types);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "reading_intake_drain: SPI_connect failed");
	/* ROWS FROM of several unnests: row i holds element i of each array */
	if (SPI_execute_with_args("INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat,"
							  "                            valley, power, relay_state)"
							  "SELECT u.site_id, u.meter_id, u.read_at, u.energy, u.sharp, u.peak, u.flat, u.valley,"
							  "       u.power, u.relay_state"
							  "  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3),"
							  "                  pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6),"
							  "                  pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9),"
							  "                  pg_catalog.unnest($10))"
							  "       AS u (site_id, meter_id, read_at, energy, sharp, peak, flat, valley, power,"
							  "             relay_state)",
							  INTAKE_NCOLUMNS, types, arrays, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "reading_intake_drain: insert into prepay.reading failed");
	SPI_finish();
	delete_own_rows(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

/*
 * read_columns
 *		The rows of the transition table, in their order, as one array per
 *		column of intake_columns (arrays), and the arrays' types (types).
 *		A read pointer of its own, as a scan of the table by name would.
 */
static void
read_columns(Relation rel, Tuplestorestate *rows, Datum *arrays, Oid *types)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	ArrayBuildState *build[INTAKE_NCOLUMNS];
	AttrNumber	attnums[INTAKE_NCOLUMNS];
	Oid			elemtypes[INTAKE_NCOLUMNS];
	int			reader;

	for (int k = 0; k < INTAKE_NCOLUMNS; k++)
	{
		attnums[k] = attnameAttNum(rel, intake_columns[k], false);
		if (attnums[k] <= 0)
			elog(ERROR, "reading_intake_drain: prepay.reading_intake has no column %s", intake_columns[k]);
		elemtypes[k] = TupleDescAttr(desc, attnums[k] - 1)->atttypid;
		types[k] = get_array_type(elemtypes[k]);
		if (!OidIsValid(types[k]))
			elog(ERROR, "reading_intake_drain: no array type for column %s", intake_columns[k]);
		build[k] = initArrayResult(elemtypes[k], CurrentMemoryContext, false);
	}
	reader = tuplestore_alloc_read_pointer(rows, EXEC_FLAG_REWIND);
	tuplestore_select_read_pointer(rows, reader);
	tuplestore_rescan(rows);
	while (tuplestore_gettupleslot(rows, true, false, slot))
	{
		for (int k = 0; k < INTAKE_NCOLUMNS; k++)
		{
			bool		isnull;
			Datum		value = slot_getattr(slot, attnums[k], &isnull);

			accumArrayResult(build[k], value, isnull, elemtypes[k], CurrentMemoryContext);
		}
	}
	ExecDropSingleTupleTableSlot(slot);
	for (int k = 0; k < INTAKE_NCOLUMNS; k++)
		arrays[k] = makeArrayResult(build[k], CurrentMemoryContext);
}

/*
 * delete_own_rows
 *		Delete every row of the intake this transaction inserted and has
 *		not deleted: this statement's (earlier statements deleted theirs).
 *		The rows of other transactions are not visible to SnapshotSelf
 *		until they commit, and they delete them before.
 */
static void
delete_own_rows(Relation rel)
{
	TableScanDesc scan;
	HeapTuple	tuple;

	CommandCounterIncrement();	/* the rows were inserted by an earlier command */
	scan = table_beginscan(rel, SnapshotSelf, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		if (TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetRawXmin(tuple->t_data)))
			simple_heap_delete(rel, &tuple->t_self);
	}
	table_endscan(scan);
}
