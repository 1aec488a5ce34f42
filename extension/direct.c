/*-------------------------------------------------------------------------
 *
 * extension/direct.c
 *	  Direct table access for the rating batch: look rows up by primary key
 *	  (or, for many keys, in one sequential scan), update them and
 *	  bulk-insert new ones from C, instead of SQL statements that take the
 *	  batch as arrays.  Per reading this saves the executor's per-row work
 *	  on three statements; see docs/BENCHMARKS.md.
 *
 * The writes are PostgreSQL's own: an update is ExecSimpleRelationUpdate
 * (the routine logical replication's apply worker updates rows with:
 * constraints, index entries, AFTER ROW triggers and foreign keys, with
 * the columns set as the UPDATE's target list, so column-limited triggers
 * decide as for the statement) between the UPDATE's statement triggers;
 * an insert is COPY's: column defaults, constraints, table_multi_insert,
 * index entries, AFTER ROW and statement triggers and transition tables;
 * into a partitioned table, each row goes to the partition COPY's tuple
 * routing finds for it (ExecFindPartition: the partition whose bound takes
 * the row, or an error), with that partition's constraints, indexes and
 * AFTER ROW triggers, and the partitioned table's statement triggers.
 *
 * A table is opened for direct access only when that does all the SQL
 * statement would, and direct_open returns NULL (the caller runs the
 * statement instead) otherwise:
 *	  - Citus is installed in the database: a table may be distributed, and
 *	    on a worker prepay.<name> is an empty shell whose rows live in
 *	    shards only Citus's planner finds; the statements are planned by
 *	    Citus instead.  (One rule for the whole database: cheaper to check
 *	    than every table's distribution, and never wrong.);
 *	  - the table is not a plain heap table that is not a partition (a
 *	    partition checks its bound), or, for inserts, a partitioned table
 *	    whose rows' partition key is not a plain column with a
 *	    non-volatile default (the rows then go to the partition of that
 *	    default: the one partition the open checks) and whose partition for
 *	    that default is not a plain heap table with its parent's columns
 *	    and no row trigger of its own that the rules below refuse; or it
 *	    has rules, or stored generated columns;
 *	  - the current user lacks the table privileges (SELECT and UPDATE, or
 *	    INSERT) or USAGE on the schema, or row-level security applies;
 *	  - updates: a BEFORE or INSTEAD OF row trigger on UPDATE (the caller
 *	    reads the new row it built, not what a trigger made of it), or an
 *	    UPDATE transition table;
 *	  - inserts: a BEFORE or INSTEAD OF row trigger on INSERT; into a
 *	    partitioned table, also an INSERT transition table.
 *
 * Locking protocol: tables are opened with RowExclusiveLock, like the
 * statements.  An update first locks the row version found with the
 * caller's snapshot FOR NO KEY UPDATE, as the rating's SQL statements do
 * and with the rules of ExecLockRows: it waits for a concurrent writer of
 * the row; if that writer committed a new version, READ COMMITTED locks and
 * updates the newest version, and REPEATABLE READ and SERIALIZABLE fail
 * with a serialization failure (40001).  A row this transaction changed by
 * other means (SQL, triggers) since the snapshot is reported stale: the
 * caller moves to a new snapshot and command with direct_refresh and looks
 * it up again, as a new statement would.  The caller keeps its snapshot
 * registered until it closes the table, so the row versions it looked up
 * cannot be pruned away, and updates each row at most once per open.
 *
 * Tables are closed in the reverse order of opening: each open table is
 * a trigger query level (AfterTriggerBeginQuery); the AFTER triggers its
 * writes queue fire when the innermost table open then is closed.
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
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/execPartition.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/partcache.h"
#include "utils/rel.h"
#include "utils/rls.h"

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

	/* lookups by primary key */
	Relation	pkey;
	IndexScanDesc scan;
	ScanKeyData keys[2];
	TupleTableSlot *fetch_slot;

	/* updates */
	TupleTableSlot *lock_slot;	/* the locked version */
	TupleTableSlot *update_slot;	/* the new version */
	bool		updated;		/* the statement's BEFORE triggers fired */

	/* inserts */
	ModifyTableState *mtstate;	/* into a partitioned table: routing, as COPY */
	PartitionTupleRouting *proute;
	ResultRelInfo *leaf;		/* the partition of the last row */
	ResultRelInfo **buffer_leaf;	/* each buffered row's partition */
	ExprState **default_expr;	/* volatile defaults, evaluated per row */
	Datum	   *default_value;	/* the others, evaluated once */
	bool	   *default_null;
	TupleTableSlot **buffer;
	int			nbuffered;
	MemoryContext row_context;
	TransitionCaptureState *transition;
};

static int	column_number(Relation rel, const char *column);
static bool direct_allowed(Relation rel, CmdType operation);
static bool triggers_allow(Relation rel, CmdType operation);
static void open_executor(DirectTable *t, Bitmapset *set_columns);
static void open_lookup(DirectTable *t);
static bool open_insert(DirectTable *t);
static ResultRelInfo *route(DirectTable *t, TupleTableSlot *slot);
static bool leaf_allowed(DirectTable *t, ResultRelInfo *leaf);
static void flush_inserts(DirectTable *t);
static DirectUpdate lock_row(DirectTable *t, ItemPointer tid);
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
	Oid			relid;
	Relation	rel;
	Bitmapset  *columns = NULL;
	DirectTable *t;

	if (OidIsValid(get_extension_oid("citus", true)))
		return NULL;
	relid = get_relname_relid(relname, get_namespace_oid(DIRECT_SCHEMA, false));
	if (!OidIsValid(relid))
		return NULL;
	rel = table_open(relid, RowExclusiveLock);
	if (!direct_allowed(rel, operation))
	{
		table_close(rel, NoLock);	/* the statement takes the same lock */
		return NULL;
	}
	for (int i = 0; set_columns != NULL && set_columns[i] != NULL; i++)
		columns = bms_add_member(columns, column_number(rel, set_columns[i]) -
								 FirstLowInvalidHeapAttributeNumber);

	t = palloc0(sizeof(DirectTable));
	t->rel = rel;
	t->operation = operation;
	t->snapshot = snapshot;
	t->cid = GetCurrentCommandId(true);
	open_executor(t, columns);
	/*
	 * an insert-only table without a key (the rollup deltas) has no lookups,
	 * nor has a partitioned table (its key is its partitions' indexes)
	 */
	if (operation != CMD_INSERT ||
		(OidIsValid(RelationGetPrimaryKeyIndex(rel)) &&
		 rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE))
		open_lookup(t);
	if (operation == CMD_UPDATE)
	{
		t->lock_slot = table_slot_create(rel, &t->estate->es_tupleTable);
		t->update_slot = ExecInitExtraTupleSlot(t->estate, RelationGetDescr(rel), &TTSOpsVirtual);
	}
	else if (!open_insert(t))
	{
		/* no statement trigger fired, no row written: the statement instead */
		AfterTriggerEndQuery(t->estate);
		if (t->proute != NULL)
			ExecCleanupTupleRouting(t->mtstate, t->proute);
		ExecResetTupleTable(t->estate->es_tupleTable, false);
		ExecCloseResultRelations(t->estate);
		FreeExecutorState(t->estate);
		table_close(rel, NoLock);
		pfree(t);
		return NULL;
	}
	return t;
}

/*
 * direct_allowed
 *		Whether a direct write does all the statement would (file header).
 */
static bool
direct_allowed(Relation rel, CmdType operation)
{
	Oid			relid = RelationGetRelid(rel);
	AclMode		needed = operation == CMD_UPDATE ? ACL_SELECT | ACL_UPDATE : ACL_INSERT;

	if (!(rel->rd_rel->relkind == RELKIND_RELATION ||
		  (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE && operation == CMD_INSERT)) ||
		rel->rd_rel->relispartition || rel->rd_rules != NULL)
		return false;
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE && rel->trigdesc != NULL &&
		rel->trigdesc->trig_insert_new_table)
		return false;
	if (rel->rd_att->constr != NULL && rel->rd_att->constr->has_generated_stored)
		return false;
	if (pg_namespace_aclcheck(RelationGetNamespace(rel), GetUserId(), ACL_USAGE) != ACLCHECK_OK ||
		pg_class_aclcheck(relid, GetUserId(), needed) != ACLCHECK_OK)
		return false;
	if (check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
		return false;
	return triggers_allow(rel, operation);
}

/*
 * triggers_allow
 *		No row trigger that would change the row before it is written, and
 *		for updates no transition table (ExecSimpleRelationUpdate captures
 *		none); every other trigger fires as for the statement.
 */
static bool
triggers_allow(Relation rel, CmdType operation)
{
	TriggerDesc *d = rel->trigdesc;

	if (d == NULL)
		return true;
	if (operation == CMD_INSERT)
		return !d->trig_insert_before_row && !d->trig_insert_instead_row;
	return !d->trig_update_before_row && !d->trig_update_instead_row &&
		!d->trig_update_old_table && !d->trig_update_new_table;
}

/*
 * open_executor
 *		The executor state of a one-table statement, as logical replication's
 *		apply worker builds it: a range table whose entry names the columns
 *		an update sets (for column-limited triggers), the result relation
 *		with its indexes, and a trigger query level for AFTER triggers.
 */
static void
open_executor(DirectTable *t, Bitmapset *set_columns)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	t->estate = CreateExecutorState();
	t->estate->es_snapshot = t->snapshot;
	t->estate->es_output_cid = t->cid;
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(t->rel);
	rte->relkind = t->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	rte->updatedCols = set_columns;
	ExecInitRangeTable(t->estate, list_make1(rte));
	t->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(t->rri, t->rel, 1, NULL, 0);
	t->estate->es_opened_result_relations = list_make1(t->rri);
	/* a partitioned table's rows go to its partitions' indexes */
	if (t->rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ExecOpenIndices(t->rri, false);
	AfterTriggerBeginQuery();
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
 * open_insert
 *		Start an INSERT as COPY does: every column default (volatile ones
 *		are evaluated per row, like nextval; the others once), for a
 *		partitioned table its tuple routing and the partition the defaults
 *		go to, the statement's BEFORE triggers and transition tables, the
 *		buffer.  false, and no trigger fired, when a partitioned table's
 *		rows cannot be written directly (file header).
 */
static bool
open_insert(DirectTable *t)
{
	TupleDesc	desc = RelationGetDescr(t->rel);
	Relation	buffer_rel = t->rel;

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

	if (t->rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
	{
		PartitionKey key = RelationGetPartitionKey(t->rel);
		TupleTableSlot *probe;

		/* the partition key: plain columns with a default evaluated once */
		for (int k = 0; k < key->partnatts; k++)
		{
			AttrNumber	a = key->partattrs[k];

			if (a <= 0 || t->default_expr[a - 1] != NULL || t->default_null[a - 1])
				return false;
		}
		t->mtstate = makeNode(ModifyTableState);
		t->mtstate->ps.plan = NULL;
		t->mtstate->ps.state = t->estate;
		t->mtstate->operation = CMD_INSERT;
		t->mtstate->mt_nrels = 1;
		t->mtstate->resultRelInfo = t->rri;
		t->mtstate->rootResultRelInfo = t->rri;
		t->proute = ExecSetupPartitionTupleRouting(t->estate, t->rel);
		/* route a row of the defaults (volatile ones left NULL: no nextval) */
		probe = ExecInitExtraTupleSlot(t->estate, desc, &TTSOpsVirtual);
		for (int i = 0; i < desc->natts; i++)
		{
			probe->tts_values[i] = t->default_expr[i] != NULL ? (Datum) 0 : t->default_value[i];
			probe->tts_isnull[i] = t->default_expr[i] != NULL ? true : t->default_null[i];
		}
		ExecStoreVirtualTuple(probe);
		t->leaf = route(t, probe);
		if (!leaf_allowed(t, t->leaf))
			return false;
		buffer_rel = t->leaf->ri_RelationDesc;
	}

	t->transition = MakeTransitionCaptureState(t->rel->trigdesc, RelationGetRelid(t->rel),
											   CMD_INSERT);
	ExecBSInsertTriggers(t->estate, t->rri);

	t->row_context = AllocSetContextCreate(CurrentMemoryContext, "prepay direct insert rows",
										   ALLOCSET_DEFAULT_SIZES);
	t->buffer = palloc(sizeof(TupleTableSlot *) * INSERT_BUFFER_ROWS);
	t->buffer_leaf = palloc(sizeof(ResultRelInfo *) * INSERT_BUFFER_ROWS);
	for (int i = 0; i < INSERT_BUFFER_ROWS; i++)
		t->buffer[i] = table_slot_create(buffer_rel, NULL);
	return true;
}

/*
 * route
 *		The partition of a partitioned table that takes the row in slot,
 *		found by COPY's tuple routing (ExecFindPartition: the partition
 *		bounds, the default partition, or an error when none takes it).
 */
static ResultRelInfo *
route(DirectTable *t, TupleTableSlot *slot)
{
	return ExecFindPartition(t->mtstate, t->rri, t->proute, slot, t->estate);
}

/*
 * leaf_allowed
 *		Whether rows routed to this partition can be written directly: a
 *		plain heap table with its parent's columns (no tuple conversion),
 *		no rules, and no row trigger of its own the file header refuses.
 */
static bool
leaf_allowed(DirectTable *t, ResultRelInfo *leaf)
{
	Relation	rel = leaf->ri_RelationDesc;

	return rel->rd_rel->relkind == RELKIND_RELATION && rel->rd_rules == NULL &&
		leaf->ri_RootToPartitionMap == NULL &&
		!(rel->rd_att->constr != NULL && rel->rd_att->constr->has_generated_stored) &&
		triggers_allow(rel, CMD_INSERT);
}

/*
 * direct_close
 *		Finish: flush buffered inserts, fire the statement's AFTER triggers
 *		(and those the rows queued), release the scan, indexes and executor
 *		state.  The table lock is kept to the end of the transaction.
 */
void
direct_close(DirectTable *t)
{
	if (t->operation == CMD_INSERT)
	{
		flush_inserts(t);
		ExecASInsertTriggers(t->estate, t->rri, t->transition);
		for (int i = 0; i < INSERT_BUFFER_ROWS; i++)
			ExecDropSingleTupleTableSlot(t->buffer[i]);
		MemoryContextDelete(t->row_context);
	}
	else if (t->updated)
		ExecASUpdateTriggers(t->estate, t->rri, NULL);
	AfterTriggerEndQuery(t->estate);
	if (t->proute != NULL)
		ExecCleanupTupleRouting(t->mtstate, t->proute);	/* the partitions */
	if (t->scan != NULL)
	{
		index_endscan(t->scan);
		ExecDropSingleTupleTableSlot(t->fetch_slot);
	}
	if (t->pkey != NULL)
		index_close(t->pkey, AccessShareLock);
	ExecResetTupleTable(t->estate->es_tupleTable, false);	/* trigger and update slots */
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

/* The number of a column of the table. */
int
direct_attnum(DirectTable *t, const char *column)
{
	return column_number(t->rel, column);
}

/* The number of a column of rel, which must exist. */
static int
column_number(Relation rel, const char *column)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(rel), column);

	if (attnum == InvalidAttrNumber)
		elog(ERROR, "prepay: %s has no column %s", RelationGetRelationName(rel), column);
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
 *		sets, locking it first (file header).  DIRECT_GONE when the row was
 *		deleted or no longer matches; DIRECT_STALE when this transaction
 *		changed it since the snapshot (nothing was written: refresh, look
 *		it up again and retry).
 */
DirectUpdate
direct_update(DirectTable *t, HeapTuple row, DirectModify modify, void *arg)
{
	TupleTableSlot *locked = t->lock_slot;
	TupleTableSlot *updated = t->update_slot;
	int			natts = RelationGetDescr(t->rel)->natts;
	MemoryContext old;
	DirectUpdate result;

	/* new versions are built in the per-row context, reset per update */
	ResetPerTupleExprContext(t->estate);
	old = MemoryContextSwitchTo(GetPerTupleMemoryContext(t->estate));
	result = lock_row(t, &row->t_self);
	if (result == DIRECT_UPDATED)
	{
		slot_getallattrs(locked);
		ExecClearTuple(updated);
		memcpy(updated->tts_values, locked->tts_values, sizeof(Datum) * natts);
		memcpy(updated->tts_isnull, locked->tts_isnull, sizeof(bool) * natts);
		if (modify(t, updated->tts_values, updated->tts_isnull, arg))
		{
			if (!t->updated)
				ExecBSUpdateTriggers(t->estate, t->rri);
			t->updated = true;
			ExecStoreVirtualTuple(updated);
			/* no BEFORE row triggers (triggers_allow): no EPQ state needed */
			ExecSimpleRelationUpdate(t->rri, t->estate, NULL, locked, updated);
		}
		else
			result = DIRECT_GONE;
	}
	ExecClearTuple(updated);
	ExecClearTuple(locked);
	MemoryContextSwitchTo(old);
	return result;
}

/*
 * lock_row
 *		Lock the row version at tid FOR NO KEY UPDATE into lock_slot, with
 *		ExecLockRows' rules: READ COMMITTED follows a concurrent update to
 *		the newest version; the other levels fail on it.
 */
static DirectUpdate
lock_row(DirectTable *t, ItemPointer tid)
{
	ItemPointerData target = *tid;
	TM_FailureData tmfd;
	TM_Result	result;

	result = table_tuple_lock(t->rel, &target, t->snapshot, t->lock_slot, t->cid,
							  LockTupleNoKeyExclusive, LockWaitBlock,
							  IsolationUsesXactSnapshot() ? 0 : TUPLE_LOCK_FLAG_FIND_LAST_VERSION,
							  &tmfd);
	switch (result)
	{
		case TM_Ok:
			return DIRECT_UPDATED;
		case TM_SelfModified:
			return DIRECT_STALE;
		case TM_Updated:
			if (IsolationUsesXactSnapshot())
				serialization_failure("update");
			break;
		case TM_Deleted:
			if (IsolationUsesXactSnapshot())
				serialization_failure("delete");
			return DIRECT_GONE;
		default:
			break;
	}
	elog(ERROR, "prepay: unexpected table_tuple_lock status %u", result);
	return DIRECT_GONE;			/* keep the compiler quiet */
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
	if (t->proute != NULL)
	{
		/* the row's partition, its constraints */
		ResultRelInfo *leaf = route(t, slot);

		if (leaf != t->leaf && !leaf_allowed(t, leaf))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("prepay: partition %s of %s cannot be written directly",
							RelationGetRelationName(leaf->ri_RelationDesc),
							RelationGetRelationName(t->rel))));
		t->leaf = leaf;
		t->buffer_leaf[t->nbuffered] = leaf;
		if (desc->constr != NULL)
			ExecConstraints(leaf, slot, t->estate);
	}
	else if (desc->constr != NULL)
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
	/* each run of rows bound for one table (a partition, when routed) */
	for (int first = 0, end; first < t->nbuffered; first = end)
	{
		ResultRelInfo *rri = t->proute != NULL ? t->buffer_leaf[first] : t->rri;

		for (end = first + 1; end < t->nbuffered; end++)
			if (t->proute != NULL && t->buffer_leaf[end] != rri)
				break;
		table_multi_insert(rri->ri_RelationDesc, t->buffer + first, end - first, t->cid, 0, NULL);
		for (int i = first; i < end; i++)
		{
			List	   *recheck = NIL;

			if (rri->ri_NumIndices > 0)
				recheck = ExecInsertIndexTuples(rri, t->buffer[i], t->estate, false, false,
												NULL, NIL);
			ExecARInsertTriggers(t->estate, rri, t->buffer[i], recheck, t->transition);
			list_free(recheck);
			ExecClearTuple(t->buffer[i]);
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(t->row_context);
	ResetPerTupleExprContext(t->estate);
	t->nbuffered = 0;
}

/*
 * direct_numeric
 *		A fixed-point value as a NUMERIC datum for a column, with the
 *		column's typmod applied by numeric(), as the cast an INSERT or
 *		UPDATE adds would (precision checked, scale adjusted).
 */
Datum
direct_numeric(DirectTable *t, int attnum, int64 value, int scale)
{
	int32		typmod = TupleDescAttr(RelationGetDescr(t->rel), attnum - 1)->atttypmod;

	return DirectFunctionCall2(numeric, fixed_to_numeric(value, scale), Int32GetDatum(typmod));
}
