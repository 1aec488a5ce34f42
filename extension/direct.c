/*-------------------------------------------------------------------------
 *
 * extension/direct.c
 *	  Direct table access for the rating batch: look rows up by primary key
 *	  (or, for many keys, in one sequential scan), update them and
 *	  bulk-insert new ones from C, with the executor's own pieces (index
 *	  maintenance, constraints, column defaults, AFTER triggers and
 *	  transition tables), instead of SQL statements that take the batch as
 *	  arrays.  Per reading this saves the executor's per-row work on three
 *	  statements; see docs/BENCHMARKS.md.
 *
 * A direct write must do exactly what the SQL statement it replaces would
 * do, so a table is opened for direct access only when nothing of what the
 * statement would add applies (direct_open returns NULL and the caller
 * runs the SQL statement instead):
 *	  - the current user holds the table privileges (SELECT and UPDATE, or
 *	    INSERT) and USAGE on the schema, so the statement could not fail on
 *	    a permission check;
 *	  - no row-level security applies to the current user;
 *	  - it is a plain table without stored generated columns;
 *	  - inserts: no BEFORE or INSTEAD OF row triggers (AFTER row and
 *	    statement triggers, transition tables and foreign-key checks fire
 *	    as for INSERT, like COPY does);
 *	  - updates: no trigger that an UPDATE of the columns set would fire
 *	    (triggers limited to other columns, and foreign keys over other
 *	    columns, are not fired by it either).  Updates check NOT NULL on
 *	    the columns they set and the CHECK constraints that read them (see
 *	    open_update).
 *
 * Locking protocol: tables are opened with RowExclusiveLock, like the
 * statements.  Updates follow UPDATE's rules: the row version found with
 * the caller's snapshot is updated, waiting for a concurrent writer of the
 * same row; if that writer committed a new version, READ COMMITTED locks
 * and updates the newest version (as EvalPlanQual does), and REPEATABLE
 * READ and SERIALIZABLE fail with a serialization failure (40001).  The
 * caller keeps its snapshot registered until it closes the table, so the
 * row versions it looked up cannot be pruned away.  When the transaction
 * may have written the table by other means since (SQL, triggers), the
 * caller moves to a new snapshot and command with direct_refresh and
 * looks the rows up again, as a new statement would.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/direct.c
 *
 *-------------------------------------------------------------------------
 */
#include "direct.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/readfuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteManip.h"
#include "rewrite/rewriteHandler.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/syscache.h"

#include "site_key.h"

#define DIRECT_SCHEMA "prepay"
#define INSERT_BUFFER_ROWS 1000	/* rows per table_multi_insert, as COPY */

/*
 * direct_fetch_keys scans the table instead of probing its primary key
 * when the keys are at least 1/SCAN_PROBE_COST_RATIO of its rows: a probe
 * costs about as much as reading that many rows in a scan (measured: 1.3 us
 * against 0.2 us).  Tables never analyzed count at least this many rows a
 * page.
 */
#define SCAN_PROBE_COST_RATIO 6
#define SCAN_MIN_TUPLES_PER_PAGE 10

struct DirectTable
{
	Relation	rel;
	CmdType		operation;
	Snapshot	snapshot;
	CommandId	cid;
	EState	   *estate;
	ResultRelInfo *rri;
	bool		has_constraints;

	/* lookups by primary key */
	Relation	pkey;
	IndexScanDesc scan;
	ScanKeyData keys[2];
	TupleTableSlot *fetch_slot;

	/* updates */
	List	   *update_checks;	/* CHECKs an update could break (ExprState) */
	Bitmapset  *update_notnull; /* NOT NULL columns an update sets */
	TupleTableSlot *update_slot;
	TupleTableSlot *lock_slot;
	Datum	   *values;
	bool	   *nulls;

	/* inserts */
	ExprState **default_expr;	/* volatile defaults, evaluated per row */
	Datum	   *default_value;	/* the others, evaluated once */
	bool	   *default_null;
	TupleTableSlot **buffer;
	int			nbuffered;
	MemoryContext row_context;
	TransitionCaptureState *transition;
};

static bool direct_allowed(Relation rel, CmdType operation, Bitmapset *set_columns);
static bool triggers_allow(Relation rel, CmdType operation, Bitmapset *set_columns);
static bool constraint_touches(Oid conoid, Oid relid, Bitmapset *columns);
static bool when_false_for(Relation rel, Trigger *trigger, const char *column, const char *value);
static void open_lookup(DirectTable *t);
static void open_update(DirectTable *t, Bitmapset *set_columns);
static void open_insert(DirectTable *t);
static void flush_inserts(DirectTable *t);
static bool update_row(DirectTable *t, HeapTuple current, DirectModify modify, void *arg);
static HeapTuple lock_newest(DirectTable *t, ItemPointer tid, LockTupleMode lockmode);
static void check_update(DirectTable *t, TupleTableSlot *slot);
static void serialization_failure(const char *what);
static void scan_for_keys(DirectTable *t, int n, const int32 *sites, const int64 *ids,
						  HeapTuple *rows);

/*
 * direct_open
 *		Open prepay.<relname> for direct lookups and `operation` (CMD_UPDATE
 *		of set_columns, NULL-terminated, or CMD_INSERT), or return NULL when
 *		the SQL statement must be used instead (see the file header).
 */
DirectTable *
direct_open(const char *relname, CmdType operation, const char *const *set_columns,
			Snapshot snapshot)
{
	Oid			relid = get_relname_relid(relname, get_namespace_oid(DIRECT_SCHEMA, false));
	Relation	rel;
	Bitmapset  *columns = NULL;
	DirectTable *t;

	if (!OidIsValid(relid))
		return NULL;
	rel = table_open(relid, RowExclusiveLock);
	for (int i = 0; set_columns != NULL && set_columns[i] != NULL; i++)
	{
		AttrNumber	attnum = get_attnum(relid, set_columns[i]);

		if (attnum == InvalidAttrNumber)
			elog(ERROR, "prepay: %s has no column %s", relname, set_columns[i]);
		columns = bms_add_member(columns, attnum);
	}
	if (!direct_allowed(rel, operation, columns))
	{
		table_close(rel, NoLock);	/* the statement takes the same lock */
		return NULL;
	}

	t = palloc0(sizeof(DirectTable));
	t->rel = rel;
	t->operation = operation;
	t->snapshot = snapshot;
	t->cid = GetCurrentCommandId(true);
	t->estate = CreateExecutorState();
	t->estate->es_snapshot = snapshot;
	t->estate->es_output_cid = t->cid;
	t->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(t->rri, rel, 0, NULL, 0);
	t->estate->es_opened_result_relations = list_make1(t->rri);
	ExecOpenIndices(t->rri, false);
	t->has_constraints = rel->rd_att->constr != NULL;
	/* an insert-only table without a key (the rollup deltas) has no lookups */
	if (operation != CMD_INSERT || OidIsValid(RelationGetPrimaryKeyIndex(rel)))
		open_lookup(t);
	if (operation == CMD_UPDATE)
		open_update(t, columns);
	else
		open_insert(t);
	return t;
}

/*
 * direct_allowed
 *		Whether a direct write does all the statement would (file header).
 */
static bool
direct_allowed(Relation rel, CmdType operation, Bitmapset *set_columns)
{
	Oid			relid = RelationGetRelid(rel);
	AclMode		needed = operation == CMD_UPDATE ? ACL_SELECT | ACL_UPDATE : ACL_INSERT;

	if (rel->rd_rel->relkind != RELKIND_RELATION)
		return false;
	if (rel->rd_att->constr != NULL && rel->rd_att->constr->has_generated_stored)
		return false;
	if (pg_namespace_aclcheck(RelationGetNamespace(rel), GetUserId(), ACL_USAGE) != ACLCHECK_OK ||
		pg_class_aclcheck(relid, GetUserId(), needed) != ACLCHECK_OK)
		return false;
	if (check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
		return false;
	return triggers_allow(rel, operation, set_columns);
}

/*
 * triggers_allow
 *		Inserts: no BEFORE or INSTEAD OF row trigger.  Updates: no trigger
 *		an UPDATE of set_columns would fire.
 */
static bool
triggers_allow(Relation rel, CmdType operation, Bitmapset *set_columns)
{
	TriggerDesc *trigdesc = rel->trigdesc;

	for (int i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
	{
		Trigger    *trigger = &trigdesc->triggers[i];

		if (operation == CMD_INSERT)
		{
			if (TRIGGER_FOR_INSERT(trigger->tgtype) && TRIGGER_FOR_ROW(trigger->tgtype) &&
				!TRIGGER_FOR_AFTER(trigger->tgtype))
				return false;
			continue;
		}
		if (!TRIGGER_FOR_UPDATE(trigger->tgtype))
			continue;
		if (trigger->tgisinternal && OidIsValid(trigger->tgconstraint))
		{
			if (constraint_touches(trigger->tgconstraint, RelationGetRelid(rel), set_columns))
				return false;
			continue;
		}
		if (trigger->tgnattr == 0)
			return false;
		for (int k = 0; k < trigger->tgnattr; k++)
			if (bms_is_member(trigger->tgattr[k], set_columns))
				return false;
	}
	return true;
}

/*
 * constraint_touches
 *		Whether the constraint's columns on this relation (its key, or the
 *		referenced key of a foreign key pointing here) include any of
 *		`columns`: then its triggers could fire on the update.
 */
static bool
constraint_touches(Oid conoid, Oid relid, Bitmapset *columns)
{
	HeapTuple	tuple = SearchSysCache1(CONSTROID, ObjectIdGetDatum(conoid));
	Form_pg_constraint con;
	Datum	   *keys;
	int			nkeys;
	Datum		datum;
	bool		isnull;
	bool		touches = false;

	if (!HeapTupleIsValid(tuple))
		return true;
	con = (Form_pg_constraint) GETSTRUCT(tuple);
	datum = SysCacheGetAttr(CONSTROID, tuple,
							con->conrelid == relid ? Anum_pg_constraint_conkey : Anum_pg_constraint_confkey,
							&isnull);
	if (isnull)
		touches = true;
	else
	{
		deconstruct_array(DatumGetArrayTypeP(datum), INT2OID, sizeof(int16), true, TYPALIGN_SHORT,
						  &keys, NULL, &nkeys);
		for (int k = 0; k < nkeys; k++)
			touches = touches || bms_is_member(DatumGetInt16(keys[k]), columns);
	}
	ReleaseSysCache(tuple);
	return touches;
}

/*
 * open_lookup
 *		Prepare the primary key probe: one index scan, rescanned per key.
 */
static void
open_lookup(DirectTable *t)
{
	Oid			pkey = RelationGetPrimaryKeyIndex(t->rel);

	if (!OidIsValid(pkey))
		elog(ERROR, "prepay: %s has no primary key", RelationGetRelationName(t->rel));
	t->pkey = index_open(pkey, AccessShareLock);
	if (IndexRelationGetNumberOfKeyAttributes(t->pkey) < 2)
		return;
	for (int k = 0; k < 2; k++)
	{
		Oid			type = t->pkey->rd_opcintype[k];
		Oid			op = get_opfamily_member(t->pkey->rd_opfamily[k], type, type,
											 BTEqualStrategyNumber);

		ScanKeyInit(&t->keys[k], k + 1, BTEqualStrategyNumber, get_opcode(op), (Datum) 0);
	}
	t->scan = index_beginscan(t->rel, t->pkey, t->snapshot, 2, 0);
	t->fetch_slot = table_slot_create(t->rel, NULL);
}

/*
 * open_update
 *		Slots and column arrays for updates, and the constraints an update
 *		of set_columns has to check: NOT NULL on the columns it sets, and
 *		the CHECK constraints that read any of them (or the whole row), or
 *		were never validated.  A validated CHECK on other columns only
 *		holds for the new version as it held for the old one (CHECK
 *		expressions are immutable), so skipping it changes nothing;
 *		check_update raises the UPDATE's own error when one fails.
 */
static void
open_update(DirectTable *t, Bitmapset *set_columns)
{
	TupleDesc	desc = RelationGetDescr(t->rel);
	TupleConstr *constr = desc->constr;
	Bitmapset  *shifted = NULL;
	int			attnum = -1;
	MemoryContext old = MemoryContextSwitchTo(t->estate->es_query_cxt);

	t->update_slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
	t->lock_slot = table_slot_create(t->rel, NULL);
	t->values = palloc(sizeof(Datum) * desc->natts);
	t->nulls = palloc(sizeof(bool) * desc->natts);
	while ((attnum = bms_next_member(set_columns, attnum)) >= 0)
	{
		if (TupleDescAttr(desc, attnum - 1)->attnotnull)
			t->update_notnull = bms_add_member(t->update_notnull, attnum);
		shifted = bms_add_member(shifted, attnum - FirstLowInvalidHeapAttributeNumber);
	}
	for (int i = 0; constr != NULL && i < constr->num_check; i++)
	{
		Expr	   *expr = stringToNode(constr->check[i].ccbin);
		Bitmapset  *reads = NULL;

		pull_varattnos((Node *) expr, 1, &reads);
		if (!constr->check[i].ccvalid || bms_overlap(reads, shifted) ||
			bms_is_member(InvalidAttrNumber - FirstLowInvalidHeapAttributeNumber, reads))
			t->update_checks = lappend(t->update_checks, ExecPrepareExpr(expr, t->estate));
	}
	MemoryContextSwitchTo(old);
}

/*
 * check_update
 *		The constraints open_update chose, on a new row version; if one
 *		fails, ExecConstraints raises the error the UPDATE would.
 */
static void
check_update(DirectTable *t, TupleTableSlot *slot)
{
	ExprContext *econtext = GetPerTupleExprContext(t->estate);
	bool		ok = true;
	int			attnum = -1;
	ListCell   *lc;

	slot_getallattrs(slot);
	while ((attnum = bms_next_member(t->update_notnull, attnum)) >= 0)
		ok = ok && !slot->tts_isnull[attnum - 1];
	econtext->ecxt_scantuple = slot;
	foreach(lc, t->update_checks)
		ok = ok && ExecCheck((ExprState *) lfirst(lc), econtext);
	if (!ok)
		ExecConstraints(t->rri, slot, t->estate);
}

/*
 * open_insert
 *		Start an INSERT as COPY does: the statement's BEFORE triggers and
 *		transition tables, every column default (volatile ones are
 *		evaluated per row, like nextval; the others once), the buffer.
 */
static void
open_insert(DirectTable *t)
{
	TupleDesc	desc = RelationGetDescr(t->rel);

	AfterTriggerBeginQuery();
	t->transition = MakeTransitionCaptureState(t->rel->trigdesc, RelationGetRelid(t->rel),
											   CMD_INSERT);
	ExecBSInsertTriggers(t->estate, t->rri);

	t->default_expr = palloc0(sizeof(ExprState *) * desc->natts);
	t->default_value = palloc0(sizeof(Datum) * desc->natts);
	t->default_null = palloc(sizeof(bool) * desc->natts);
	for (int i = 0; i < desc->natts; i++)
	{
		Expr	   *expr = NULL;

		t->default_null[i] = true;
		if (!TupleDescAttr(desc, i)->attisdropped)
			expr = (Expr *) build_column_default(t->rel, i + 1);
		if (expr == NULL)
			continue;
		expr = expression_planner(expr);
		if (contain_volatile_functions((Node *) expr))
			t->default_expr[i] = ExecInitExpr(expr, NULL);
		else
			t->default_value[i] = ExecEvalExprSwitchContext(ExecInitExpr(expr, NULL),
															GetPerTupleExprContext(t->estate),
															&t->default_null[i]);
	}
	t->row_context = AllocSetContextCreate(CurrentMemoryContext, "prepay direct insert rows",
										   ALLOCSET_DEFAULT_SIZES);
	t->buffer = palloc(sizeof(TupleTableSlot *) * INSERT_BUFFER_ROWS);
	for (int i = 0; i < INSERT_BUFFER_ROWS; i++)
		t->buffer[i] = table_slot_create(t->rel, NULL);
}

/*
 * direct_close
 *		Finish: flush buffered inserts and fire the statement's AFTER
 *		triggers, release the scan, indexes and executor state.  The table
 *		lock is kept to the end of the transaction.
 */
void
direct_close(DirectTable *t)
{
	if (t->operation == CMD_INSERT)
	{
		flush_inserts(t);
		ExecASInsertTriggers(t->estate, t->rri, t->transition);
		AfterTriggerEndQuery(t->estate);
		for (int i = 0; i < INSERT_BUFFER_ROWS; i++)
			ExecDropSingleTupleTableSlot(t->buffer[i]);
		MemoryContextDelete(t->row_context);
	}
	else
	{
		ExecDropSingleTupleTableSlot(t->update_slot);
		ExecDropSingleTupleTableSlot(t->lock_slot);
	}
	if (t->scan != NULL)
	{
		index_endscan(t->scan);
		ExecDropSingleTupleTableSlot(t->fetch_slot);
	}
	if (t->pkey != NULL)
		index_close(t->pkey, AccessShareLock);
	ExecResetTupleTable(t->estate->es_tupleTable, false);	/* trigger slots */
	ExecCloseResultRelations(t->estate);	/* indexes, relations triggers opened */
	FreeExecutorState(t->estate);
	table_close(t->rel, NoLock);
	pfree(t);
}

/*
 * direct_refresh
 *		Go on with a new snapshot and a new command id, as a new statement
 *		would, after this transaction may have written the table by other
 *		means (SQL, triggers): later fetches see those writes and updates
 *		apply to the versions they made.
 */
void
direct_refresh(DirectTable *t, Snapshot snapshot)
{
	t->snapshot = snapshot;
	t->estate->es_snapshot = snapshot;
	t->cid = GetCurrentCommandId(true);
	t->estate->es_output_cid = t->cid;
	if (t->scan != NULL)
	{
		index_endscan(t->scan);
		t->scan = index_beginscan(t->rel, t->pkey, snapshot, 2, 0);
	}
}

/*
 * direct_insert_fires_triggers
 *		Whether inserting rows into prepay.<relname> whose `column` is
 *		`value` (in its text form) may fire one of its triggers, enabled or
 *		not.  A row trigger is ruled out only when its WHEN clause reads
 *		that column of NEW alone, calls no volatile function and is false
 *		for that value (the audit trigger on the ledger, WHEN (NEW.kind <>
 *		'consumption'), for the rating batch's entries); every other INSERT
 *		trigger may fire.
 */
bool
direct_insert_fires_triggers(const char *relname, const char *column, const char *value)
{
	Oid			relid = get_relname_relid(relname, get_namespace_oid(DIRECT_SCHEMA, false));
	Relation	rel;
	bool		fires = false;

	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, AccessShareLock);
	for (int i = 0; rel->trigdesc != NULL && i < rel->trigdesc->numtriggers && !fires; i++)
	{
		Trigger    *trigger = &rel->trigdesc->triggers[i];

		if ((trigger->tgtype & TRIGGER_TYPE_INSERT) != 0)
			fires = !when_false_for(rel, trigger, column, value);
	}
	table_close(rel, AccessShareLock);
	return fires;
}

/*
 * when_false_for
 *		Whether the trigger is a row trigger whose WHEN clause reads only
 *		NEW.<column> and is false when it is `value` (evaluated as
 *		TriggerEnabled does, with the other columns NULL: they are not read).
 */
static bool
when_false_for(Relation rel, Trigger *trigger, const char *column, const char *value)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(rel), column);
	TupleDesc	desc = RelationGetDescr(rel);
	Node	   *qual;
	Bitmapset  *new_columns = NULL;
	Bitmapset  *old_columns = NULL;
	EState	   *estate;
	ExprContext *econtext;
	TupleTableSlot *slot;
	Oid			input;
	Oid			ioparam;
	bool		result;

	if (!TRIGGER_FOR_ROW(trigger->tgtype) || trigger->tgqual == NULL || attnum == InvalidAttrNumber)
		return false;
	qual = stringToNode(trigger->tgqual);
	if (contain_volatile_functions(qual))
		return false;
	pull_varattnos(qual, PRS2_NEW_VARNO, &new_columns);
	pull_varattnos(qual, PRS2_OLD_VARNO, &old_columns);
	if (old_columns != NULL ||
		!bms_equal(new_columns, bms_make_singleton(attnum - FirstLowInvalidHeapAttributeNumber)))
		return false;

	ChangeVarNodes(qual, PRS2_NEW_VARNO, OUTER_VAR, 0);
	estate = CreateExecutorState();
	econtext = GetPerTupleExprContext(estate);
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);
	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, sizeof(bool) * desc->natts);
	getTypeInputInfo(TupleDescAttr(desc, attnum - 1)->atttypid, &input, &ioparam);
	slot->tts_values[attnum - 1] = OidInputFunctionCall(input, (char *) value, ioparam, -1);
	slot->tts_isnull[attnum - 1] = false;
	ExecStoreVirtualTuple(slot);
	econtext->ecxt_outertuple = slot;
	result = ExecQual(ExecPrepareQual(make_ands_implicit((Expr *) qual), estate), econtext);
	ExecDropSingleTupleTableSlot(slot);
	FreeExecutorState(estate);
	return !result;
}

/* The number of a column of the table. */
int
direct_attnum(DirectTable *t, const char *column)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(t->rel), column);

	if (attnum == InvalidAttrNumber)
		elog(ERROR, "prepay: %s has no column %s", RelationGetRelationName(t->rel), column);
	return attnum;
}

/* The table's tuple descriptor. */
TupleDesc
direct_desc(DirectTable *t)
{
	return RelationGetDescr(t->rel);
}

/* A column of a row fetched from the table. */
Datum
direct_getattr(HeapTuple tuple, DirectTable *t, int attnum, bool *isnull)
{
	return heap_getattr(tuple, attnum, RelationGetDescr(t->rel), isnull);
}

/*
 * direct_fetch
 *		The row with this two-column primary key visible to the snapshot, as
 *		a copy in the current memory context (t_self is its TID), or NULL.
 */
HeapTuple
direct_fetch(DirectTable *t, Datum key1, Datum key2)
{
	HeapTuple	tuple = NULL;

	Assert(t->scan != NULL);
	t->keys[0].sk_argument = key1;
	t->keys[1].sk_argument = key2;
	index_rescan(t->scan, t->keys, 2, NULL, 0);
	if (index_getnext_slot(t->scan, ForwardScanDirection, t->fetch_slot))
	{
		tuple = ExecCopySlotHeapTuple(t->fetch_slot);
		tuple->t_self = t->fetch_slot->tts_tid;
		ExecClearTuple(t->fetch_slot);
	}
	return tuple;
}

/*
 * direct_fetch_keys
 *		direct_fetch for n keys (site_id, id), sorted and distinct: rows[i]
 *		is the row of key i or NULL.  When the keys are a large part of the
 *		table, one sequential scan with the same snapshot is much cheaper
 *		than a probe per key and finds the same rows.
 */
void
direct_fetch_keys(DirectTable *t, int n, const int32 *sites, const int64 *ids, HeapTuple *rows)
{
	BlockNumber nblocks = RelationGetNumberOfBlocks(t->rel);
	double		ntuples = Max(t->rel->rd_rel->reltuples, (double) nblocks * SCAN_MIN_TUPLES_PER_PAGE);

	if ((double) n * SCAN_PROBE_COST_RATIO < ntuples)
	{
		for (int i = 0; i < n; i++)
			rows[i] = direct_fetch(t, Int32GetDatum(sites[i]), Int64GetDatum(ids[i]));
		return;
	}
	memset(rows, 0, sizeof(HeapTuple) * n);
	scan_for_keys(t, n, sites, ids, rows);
}

/*
 * scan_for_keys
 *		The sequential scan of direct_fetch_keys: each visible row whose key
 *		is among the sorted keys is copied to its place.
 */
static void
scan_for_keys(DirectTable *t, int n, const int32 *sites, const int64 *ids, HeapTuple *rows)
{
	TableScanDesc scan = table_beginscan(t->rel, t->snapshot, 0, NULL);
	TupleTableSlot *slot = t->fetch_slot;
	AttrNumber	site_att = t->pkey->rd_index->indkey.values[0];
	AttrNumber	id_att = t->pkey->rd_index->indkey.values[1];

	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		int32		site = DatumGetInt32(slot_getattr(slot, site_att, &isnull));
		int64		id = DatumGetInt64(slot_getattr(slot, id_att, &isnull));
		int			k = site_key_find(sites, ids, n, site, id);

		if (k >= 0)
		{
			rows[k] = ExecCopySlotHeapTuple(slot);
			rows[k]->t_self = slot->tts_tid;
		}
	}
	ExecClearTuple(slot);
	table_endscan(scan);
}

/*
 * direct_update
 *		Update `row` (as direct_fetch returned it) with the columns modify()
 *		sets, with UPDATE's concurrency rules (file header), constraints and
 *		index entries.  Returns false when the row was deleted or no longer
 *		matches, else true.
 */
bool
direct_update(DirectTable *t, HeapTuple row, DirectModify modify, void *arg)
{
	MemoryContext old;
	bool		done;

	/* new versions are built in the per-row context, reset per update */
	ResetPerTupleExprContext(t->estate);
	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(t->estate));
	done = update_row(t, row, modify, arg);
	MemoryContextSwitchTo(old);
	return done;
}

/* direct_update's loop, in the per-row memory context. */
static bool
update_row(DirectTable *t, HeapTuple current, DirectModify modify, void *arg)
{
	TupleDesc	desc = RelationGetDescr(t->rel);

	for (;;)
	{
		TM_FailureData tmfd;
		LockTupleMode lockmode;
		bool		update_indexes;
		TM_Result	result;

		heap_deform_tuple(current, desc, t->values, t->nulls);
		if (!modify(t, t->values, t->nulls, arg))
			return false;
		ExecStoreHeapTuple(heap_form_tuple(desc, t->values, t->nulls), t->update_slot, false);
		if (t->has_constraints)
			check_update(t, t->update_slot);
		result = table_tuple_update(t->rel, &current->t_self, t->update_slot, t->cid, t->snapshot,
									InvalidSnapshot, true, &tmfd, &lockmode, &update_indexes);
		if (result == TM_Ok)
		{
			if (update_indexes && t->rri->ri_NumIndices > 0)
				ExecInsertIndexTuples(t->rri, t->update_slot, t->estate, true, false, NULL, NIL);
			ExecClearTuple(t->update_slot);
			return true;
		}
		ExecClearTuple(t->update_slot);
		if (result == TM_Deleted)
		{
			if (IsolationUsesXactSnapshot())
				serialization_failure("delete");
			return false;
		}
		if (result != TM_Updated)
			elog(ERROR, "prepay: unexpected table_tuple_update status %u", result);
		if (IsolationUsesXactSnapshot())
			serialization_failure("update");
		current = lock_newest(t, &current->t_self, lockmode);
		if (current == NULL)
			return false;
	}
}

/*
 * lock_newest
 *		READ COMMITTED after a concurrent update: lock the newest version of
 *		the row (waiting for its writer) and return a copy, as EvalPlanQual
 *		does; NULL if it was deleted.
 */
static HeapTuple
lock_newest(DirectTable *t, ItemPointer tid, LockTupleMode lockmode)
{
	ItemPointerData newest = *tid;
	TM_FailureData tmfd;
	TM_Result	result;
	HeapTuple	tuple;

	result = table_tuple_lock(t->rel, &newest, t->snapshot, t->lock_slot, t->cid, lockmode,
							  LockWaitBlock, TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
	if (result == TM_Deleted)
		return NULL;
	if (result != TM_Ok)
		elog(ERROR, "prepay: unexpected table_tuple_lock status %u", result);
	tuple = ExecCopySlotHeapTuple(t->lock_slot);
	tuple->t_self = t->lock_slot->tts_tid;
	ExecClearTuple(t->lock_slot);
	return tuple;
}

/* UPDATE's error when a concurrent transaction changed the row first. */
static void
serialization_failure(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("could not serialize access due to concurrent %s", what)));
}

/*
 * direct_row_context
 *		Where to build the by-reference values of the next inserted row:
 *		reset once its buffer is written.
 */
MemoryContext
direct_row_context(DirectTable *t)
{
	return t->row_context;
}

/*
 * direct_insert
 *		Insert a row: values[i] where isset[i], the column default
 *		elsewhere.  By-reference values must stay valid until the buffer
 *		is written: build them in direct_row_context.
 *		Constraints are checked now; rows are written in buffers.
 */
void
direct_insert(DirectTable *t, const Datum *values, const bool *isset)
{
	TupleDesc	desc = RelationGetDescr(t->rel);
	TupleTableSlot *slot = t->buffer[t->nbuffered];
	MemoryContext old = MemoryContextSwitchTo(t->row_context);

	ExecClearTuple(slot);
	for (int i = 0; i < desc->natts; i++)
	{
		if (isset[i])
		{
			slot->tts_values[i] = values[i];
			slot->tts_isnull[i] = false;
		}
		else if (t->default_expr[i] != NULL)
			slot->tts_values[i] = ExecEvalExpr(t->default_expr[i],
											   GetPerTupleExprContext(t->estate),
											   &slot->tts_isnull[i]);
		else
		{
			slot->tts_values[i] = t->default_value[i];
			slot->tts_isnull[i] = t->default_null[i];
		}
	}
	ExecStoreVirtualTuple(slot);
	if (t->has_constraints)
		ExecConstraints(t->rri, slot, t->estate);
	MemoryContextSwitchTo(old);
	if (++t->nbuffered == INSERT_BUFFER_ROWS)
		flush_inserts(t);
}

/*
 * flush_inserts
 *		Write the buffered rows, their index entries, and queue their AFTER
 *		row triggers and transition table rows, as COPY does.
 */
static void
flush_inserts(DirectTable *t)
{
	MemoryContext old;

	if (t->nbuffered == 0)
		return;
	old = MemoryContextSwitchTo(t->row_context);
	table_multi_insert(t->rel, t->buffer, t->nbuffered, t->cid, 0, NULL);
	for (int i = 0; i < t->nbuffered; i++)
	{
		List	   *recheck = NIL;

		if (t->rri->ri_NumIndices > 0)
			recheck = ExecInsertIndexTuples(t->rri, t->buffer[i], t->estate, false, false,
											NULL, NIL);
		ExecARInsertTriggers(t->estate, t->rri, t->buffer[i], recheck, t->transition);
		list_free(recheck);
		ExecClearTuple(t->buffer[i]);
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(t->row_context);
	ResetPerTupleExprContext(t->estate);
	t->nbuffered = 0;
}

/*
 * direct_numeric
 *		A fixed-point value as a NUMERIC datum for a column, with the
 *		column's typmod applied (precision checked, scale adjusted) as an
 *		INSERT or UPDATE would.  When the column has the value's scale and
 *		the value has fewer digits than its precision, the typmod changes
 *		nothing; else numeric() applies it (and raises its own error).
 */
Datum
direct_numeric(DirectTable *t, int attnum, int64 value, int scale)
{
	int32		typmod = TupleDescAttr(RelationGetDescr(t->rel), attnum - 1)->atttypmod;
	Datum		result = fixed_to_numeric(value, scale);
	int			precision;
	uint64		limit = 1;

	if (typmod < (int32) VARHDRSZ)
		return result;
	/* the common case: the column's scale, and the value fits */
	precision = ((typmod - VARHDRSZ) >> 16) & 0xffff;
	if (((((typmod - VARHDRSZ) & 0x7ff) ^ 1024) - 1024) == scale && precision <= 18)
	{
		for (int i = 0; i < precision; i++)
			limit *= 10;
		if ((value < 0 ? -(uint64) value : (uint64) value) < limit)
			return result;
	}
	return DirectFunctionCall2(numeric, result, Int32GetDatum(typmod));
}
