/*-------------------------------------------------------------------------
 *
 * extension/balance.c
 *	  Wallets: post a batch of consumption charges to the ledger, move the
 *	  balances, and run the alarm ladder.
 *
 * Invariant: for every account, balance = sum(ledger.amount) and the last
 * entry's balance_after = balance, at every commit (prepay.check_ledger()).
 * Every path that moves a wallet inserts the ledger rows and updates the
 * balance in the same transaction, under the account's row lock.
 *
 * Alarm ladder (prepaid accounts only): 0 none, 1 low balance (balance <=
 * low threshold), 2 pre-trip (<= pre-trip threshold), 3 arrears (<= minus
 * the credit limit: with no credit limit a balance of exactly 0.00 is
 * arrears, the money has run out).  Closed accounts, and an account
 * close_account is closing, are off the ladder.  balance_alarm_level() is
 * the one implementation;
 * SQL reaches it as prepay.alarm_level().  A level change is handed to
 * prepay._alarm_level_changed(), which writes the notification and the
 * relay commands.
 *
 * Locking protocol: see reading.c.  The caller holds its sites' rating
 * locks; the balance UPDATE here takes the account row locks, waiting for
 * any recharge in flight on the same account and then adding to the
 * balance that recharge committed.
 *
 * Two ways to write, with the same result: directly (direct.c: the account
 * rows the meter lookup read are updated in place, ledger rows are
 * bulk-inserted), or, when a table cannot be written directly (a trigger,
 * row security or a missing privilege would make the statement do more),
 * one UPDATE and one INSERT taking the batch as arrays.  Either way the
 * accounts are moved in (site, account) order and the ledger rows are
 * inserted in (account, time) order, so entry ids follow each account's
 * balance_after chain.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/balance.c
 *
 *-------------------------------------------------------------------------
 */
#include "balance.h"
#include "site_key.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

struct BalanceAccount
{
	int32		site_id;
	int64		account_id;
	int64		balance;		/* cents, before the batch */
	int64		delta;			/* cents, sum of this batch's charges */
	int			level;
	bool		ladder;			/* prepaid and open: the ladder applies */
	int64		low_balance_threshold;
	int64		pretrip_threshold;
	int64		credit_limit;
};

/* Column numbers of prepay.account, looked up once per posting. */
typedef struct AccountColumns
{
	int			site_id;
	int			account_id;
	int			balance;
	int			alarm_level;
	int			mode;
	int			closed_at;
	int			low_balance_threshold;
	int			pretrip_threshold;
	int			credit_limit;
	Oid			prepaid;		/* the account_mode label 'prepaid' */
} AccountColumns;

PG_FUNCTION_INFO_V1(prepay_alarm_level);

static int	compare_charges(const void *a, const void *b);
static int	compare_accounts(const void *a, const void *b);
static int64 account_delta(const BalanceCharge *charges, int ncharges, int first, int *end);
static BalanceAccount *move_balances(BalanceCharge *charges, int ncharges, int *naccounts);
static BalanceAccount *move_balances_direct(BalanceCharge *charges, int ncharges,
											DirectTable *table, int *naccounts);
static bool add_to_balance(DirectTable *table, Datum *values, bool *nulls, void *arg);
static void read_account(const AccountColumns *cols, const Datum *values, const bool *nulls,
						 BalanceAccount *acc);
static void site_thresholds(int32 site_id, int64 *low_balance, int64 *pretrip);
static bool ledger_has_actor(void);
static void assign_actors(BalanceCharge *charges, int ncharges);
static void insert_ledger(BalanceCharge *charges, int ncharges);
static void insert_ledger_direct(BalanceCharge *charges, int ncharges, DirectTable *table);

/*
 * balance_alarm_level
 *		The alarm ladder, on amounts in cents.
 */
int
balance_alarm_level(int64 balance, int64 low_balance_threshold,
					int64 pretrip_threshold, int64 credit_limit)
{
	if (balance <= -credit_limit)
		return 3;
	if (balance <= pretrip_threshold)
		return 2;
	if (balance <= low_balance_threshold)
		return 1;
	return 0;
}

/*
 * prepay_alarm_level
 *		SQL: prepay.alarm_level(balance, low, pretrip, credit_limit).
 */
Datum
prepay_alarm_level(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT16(balance_alarm_level(fixed_from_numeric(PG_GETARG_DATUM(0), MONEY_SCALE),
										fixed_from_numeric(PG_GETARG_DATUM(1), MONEY_SCALE),
										fixed_from_numeric(PG_GETARG_DATUM(2), MONEY_SCALE),
										fixed_from_numeric(PG_GETARG_DATUM(3), MONEY_SCALE)));
}

/*
 * balance_post_charges
 *		Post the charges: lock their accounts, chain balance_after in
 *		(account, time) order, insert the ledger rows, move the balances,
 *		and apply alarm level changes.  account_table is prepay.account
 *		opened for direct updates of balance (the charges carry the rows
 *		read), or NULL to use SQL.  Must run inside SPI.
 */
BalancePosting *
balance_post_charges(BalanceCharge *charges, int ncharges, DirectTable *account_table)
{
	DirectTable *ledger_table;
	BalancePosting *posting = palloc0(sizeof(BalancePosting));
	BalanceAccount *accounts;
	int			naccounts;
	int			a;

	if (ncharges == 0)
		return posting;
	qsort(charges, ncharges, sizeof(BalanceCharge), compare_charges);
	if (account_table != NULL)
		accounts = move_balances_direct(charges, ncharges, account_table, &naccounts);
	else
		accounts = move_balances(charges, ncharges, &naccounts);

	/* chain balance_after backwards from each account's new balance */
	a = naccounts - 1;
	for (int i = ncharges - 1; i >= 0; i--)
	{
		BalanceCharge *c = &charges[i];

		while (accounts[a].site_id != c->site_id || accounts[a].account_id != c->account_id)
			a--;
		c->balance_after = accounts[a].balance;
		accounts[a].balance -= c->amount;
	}
	/* accounts[].balance is now the balance before the batch */
	if (ledger_has_actor())
		assign_actors(charges, ncharges);
	ledger_table = direct_open("ledger", CMD_INSERT, NULL, GetActiveSnapshot());
	if (ledger_table != NULL)
	{
		insert_ledger_direct(charges, ncharges, ledger_table);
		direct_close(ledger_table);	/* fires the INSERT's AFTER triggers */
	}
	else
		insert_ledger(charges, ncharges);
	posting->accounts = accounts;
	posting->naccounts = naccounts;
	return posting;
}

/*
 * compare_charges
 *		qsort order of charges: site, account, read_to, meter.
 */
static int
compare_charges(const void *a, const void *b)
{
	const BalanceCharge *x = a;
	const BalanceCharge *y = b;
	int			c = site_key_compare(x->site_id, x->account_id, y->site_id, y->account_id);

	if (c != 0)
		return c;
	if (x->read_to != y->read_to)
		return x->read_to < y->read_to ? -1 : 1;
	if (x->meter_id != y->meter_id)
		return x->meter_id < y->meter_id ? -1 : 1;
	return 0;
}

/*
 * compare_accounts
 *		qsort order of accounts: site, account.
 */
static int
compare_accounts(const void *a, const void *b)
{
	const BalanceAccount *x = a;
	const BalanceAccount *y = b;

	return site_key_compare(x->site_id, x->account_id, y->site_id, y->account_id);
}

/*
 * account_delta
 *		The sum of the run of sorted charges of one account that starts at
 *		`first`; *end is the first charge of the next account.
 */
static int64
account_delta(const BalanceCharge *charges, int ncharges, int first, int *end)
{
	int64		delta = 0;
	int			i = first;

	do
	{
		if (pg_add_s64_overflow(delta, charges[i].amount, &delta))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("balance of account " INT64_FORMAT " is out of range",
							charges[i].account_id)));
		i++;
	} while (i < ncharges && charges[i].site_id == charges[first].site_id &&
			 charges[i].account_id == charges[first].account_id);
	*end = i;
	return delta;
}

/*
 * move_balances
 *		Move every account of the sorted charges by its batch total in one
 *		UPDATE (which takes the row locks, waiting for any recharge in
 *		flight) and read back the new balances, levels and thresholds.
 */
static BalanceAccount *
move_balances(BalanceCharge *charges, int ncharges, int *naccounts)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr lock_plan = NULL;
	Datum	   *sites = palloc(sizeof(Datum) * ncharges);
	Datum	   *ids = palloc(sizeof(Datum) * ncharges);
	Datum	   *deltas = palloc(sizeof(Datum) * ncharges);
	int64		delta;
	Datum		args[3];
	BalanceAccount *accounts;
	int			n = 0;

	for (int i = 0, end; i < ncharges; i = end)
	{
		delta = account_delta(charges, ncharges, i, &end);
		sites[n] = Int32GetDatum(charges[i].site_id);
		ids[n] = Int64GetDatum(charges[i].account_id);
		deltas[n] = fixed_to_numeric(delta, MONEY_SCALE);
		n++;
	}

	/*
	 * Lock the wallets first, in (site, account) order: the UPDATE below
	 * locks rows in whatever order its join plan visits them (heap order
	 * under a hash join), which deadlocked against the periodic jobs and
	 * any other path that locks several accounts in account_id order
	 * (found by test/t/160_storm.pl).  LockRows runs above the Sort.
	 */
	spi_kept_plan(&lock_plan,
				  "SELECT FROM prepay.account a,"
				  "       ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS u(site_id, account_id)"
				  " WHERE a.site_id = u.site_id AND a.account_id = u.account_id AND a.site_id = ANY ($1)"
				  " ORDER BY a.site_id, a.account_id FOR NO KEY UPDATE OF a", 2,
				  (Oid[]) {INT4ARRAYOID, INT8ARRAYOID});
	args[0] = spi_array(sites, NULL, n, INT4OID);
	args[1] = spi_array(ids, NULL, n, INT8OID);
	if (SPI_execute_plan(lock_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "balance: locking the accounts failed");

	spi_kept_plan(&plan,
			"UPDATE prepay.account a SET balance = a.balance + u.delta"
			"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3))"
			"       AS u(site_id, account_id, delta), prepay.site s"
			" WHERE a.site_id = u.site_id AND a.account_id = u.account_id AND s.site_id = a.site_id"
			"   AND a.site_id = ANY ($1) AND s.site_id = ANY ($1)"
			" RETURNING a.site_id, a.account_id, (a.balance * 100)::int8, (u.delta * 100)::int8,"
			"       a.alarm_level, a.mode = 'prepaid' AND a.closed_at IS NULL,"
			"       (coalesce(a.low_balance_threshold, s.low_balance_threshold) * 100)::int8,"
			"       (coalesce(a.pretrip_threshold, s.pretrip_threshold) * 100)::int8,"
			"       (a.credit_limit * 100)::int8", 3,
					  (Oid[]) {INT4ARRAYOID, INT8ARRAYOID, NUMERICARRAYOID});
	args[0] = spi_array(sites, NULL, n, INT4OID);
	args[1] = spi_array(ids, NULL, n, INT8OID);
	args[2] = spi_array(deltas, NULL, n, NUMERICOID);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "balance: balance update failed");
	if ((int) SPI_processed != n)
		elog(ERROR, "balance: %d of %d accounts found", (int) SPI_processed, n);

	accounts = palloc0(sizeof(BalanceAccount) * n);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		BalanceAccount *acc = &accounts[i];
		bool		isnull;

		acc->site_id = DatumGetInt32(SPI_getbinval(tuple, desc, 1, &isnull));
		acc->account_id = DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull));
		acc->balance = DatumGetInt64(SPI_getbinval(tuple, desc, 3, &isnull));
		acc->delta = DatumGetInt64(SPI_getbinval(tuple, desc, 4, &isnull));
		acc->level = DatumGetInt16(SPI_getbinval(tuple, desc, 5, &isnull));
		acc->ladder = DatumGetBool(SPI_getbinval(tuple, desc, 6, &isnull));
		acc->low_balance_threshold = DatumGetInt64(SPI_getbinval(tuple, desc, 7, &isnull));
		acc->pretrip_threshold = DatumGetInt64(SPI_getbinval(tuple, desc, 8, &isnull));
		acc->credit_limit = DatumGetInt64(SPI_getbinval(tuple, desc, 9, &isnull));
	}
	qsort(accounts, n, sizeof(BalanceAccount), compare_accounts);
	*naccounts = n;
	return accounts;
}


/* What add_to_balance adds to which account. */
typedef struct AccountMove
{
	const AccountColumns *cols;
	BalanceAccount *acc;		/* site_id, account_id, delta; filled in */
	int64		site_low_balance;	/* the site's thresholds, cents */
	int64		site_pretrip;
} AccountMove;

static void account_columns(DirectTable *table, AccountColumns *cols);

/*
 * move_balances_direct
 *		move_balances on the account rows the meter lookup read: each is
 *		updated in place (direct_update waits for a recharge in flight and
 *		adds to the balance it committed), in (site, account) order.
 */
static BalanceAccount *
move_balances_direct(BalanceCharge *charges, int ncharges, DirectTable *table, int *naccounts)
{
	BalanceAccount *accounts = palloc0(sizeof(BalanceAccount) * ncharges);
	AccountColumns cols;
	int32		site_id = 0;
	int64		low_balance = 0;
	int64		pretrip = 0;
	int			n = 0;

	account_columns(table, &cols);
	for (int i = 0, end; i < ncharges; i = end)
	{
		BalanceCharge *c = &charges[i];
		BalanceAccount *acc = &accounts[n++];
		AccountMove move = {&cols, acc, 0, 0};
		HeapTuple	row = c->account_row;

		if (n == 1 || c->site_id != site_id)
		{
			site_id = c->site_id;
			site_thresholds(site_id, &low_balance, &pretrip);
		}
		acc->site_id = c->site_id;
		acc->account_id = c->account_id;
		acc->delta = account_delta(charges, ncharges, i, &end);
		move.site_low_balance = low_balance;
		move.site_pretrip = pretrip;
		if (row == NULL)
			row = direct_fetch(table, Int32GetDatum(c->site_id), Int64GetDatum(c->account_id));
		if (row == NULL || direct_update(table, row, add_to_balance, &move) != DIRECT_UPDATED)
			elog(ERROR, "balance: account " INT64_FORMAT " of site %d not found",
				 c->account_id, c->site_id);
	}
	*naccounts = n;
	return accounts;
}

/* The column numbers move_balances_direct reads and writes. */
static void
account_columns(DirectTable *table, AccountColumns *cols)
{
	cols->site_id = direct_attnum(table, "site_id");
	cols->account_id = direct_attnum(table, "account_id");
	cols->balance = direct_attnum(table, "balance");
	cols->alarm_level = direct_attnum(table, "alarm_level");
	cols->mode = direct_attnum(table, "mode");
	cols->closed_at = direct_attnum(table, "closed_at");
	cols->low_balance_threshold = direct_attnum(table, "low_balance_threshold");
	cols->pretrip_threshold = direct_attnum(table, "pretrip_threshold");
	cols->credit_limit = direct_attnum(table, "credit_limit");
	cols->prepaid = DatumGetObjectId(DirectFunctionCall2(enum_in, CStringGetDatum("prepaid"),
														 ObjectIdGetDatum(TupleDescAttr(direct_desc(table), cols->mode - 1)->atttypid)));
}

/*
 * add_to_balance
 *		DirectModify for move_balances_direct: balance = balance + delta on
 *		the version being replaced, if it is still the account; reads what
 *		the ladder needs from the new version.
 */
static bool
add_to_balance(DirectTable *table, Datum *values, bool *nulls, void *arg)
{
	AccountMove *move = arg;
	const AccountColumns *cols = move->cols;
	BalanceAccount *acc = move->acc;
	int64		cents;

	if (DatumGetInt32(values[cols->site_id - 1]) != acc->site_id ||
		DatumGetInt64(values[cols->account_id - 1]) != acc->account_id)
		return false;
	cents = fixed_from_numeric(values[cols->balance - 1], MONEY_SCALE);
	if (pg_add_s64_overflow(cents, acc->delta, &cents))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("balance of account " INT64_FORMAT " is out of range", acc->account_id)));
	values[cols->balance - 1] = direct_numeric(table, cols->balance, cents, MONEY_SCALE);
	acc->low_balance_threshold = move->site_low_balance;
	acc->pretrip_threshold = move->site_pretrip;
	read_account(cols, values, nulls, acc);
	return true;
}

/*
 * read_account
 *		What the ladder needs from an account row: the balance, the level,
 *		whether the ladder applies (prepaid and open), and the account's own
 *		thresholds where set (acc holds the site's).
 */
static void
read_account(const AccountColumns *cols, const Datum *values, const bool *nulls, BalanceAccount *acc)
{
	acc->balance = fixed_from_numeric(values[cols->balance - 1], MONEY_SCALE);
	acc->level = DatumGetInt16(values[cols->alarm_level - 1]);
	acc->ladder = nulls[cols->closed_at - 1] &&
		DatumGetObjectId(values[cols->mode - 1]) == cols->prepaid;
	if (!nulls[cols->low_balance_threshold - 1])
		acc->low_balance_threshold = fixed_from_numeric(values[cols->low_balance_threshold - 1], MONEY_SCALE);
	if (!nulls[cols->pretrip_threshold - 1])
		acc->pretrip_threshold = fixed_from_numeric(values[cols->pretrip_threshold - 1], MONEY_SCALE);
	acc->credit_limit = fixed_from_numeric(values[cols->credit_limit - 1], MONEY_SCALE);
}

/*
 * site_thresholds
 *		The site's default low-balance and pre-trip thresholds, in cents.
 */
static void
site_thresholds(int32 site_id, int64 *low_balance, int64 *pretrip)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {Int32GetDatum(site_id)};
	bool		isnull;

	spi_kept_plan(&plan,
			"SELECT (low_balance_threshold * 100)::int8, (pretrip_threshold * 100)::int8"
			"  FROM prepay.site WHERE site_id = $1", 1, (Oid[]) {INT4OID});
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "balance: site query failed");
	if (SPI_processed != 1)
		elog(ERROR, "balance: site %d not found", site_id);
	*low_balance = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*pretrip = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
}

/*
 * balance_ledger_has_pricing
 *		Whether prepay.ledger has pricing_id (0.2): until ALTER EXTENSION
 *		UPDATE has run, this library serves a 0.1 schema, whose charges
 *		all carry their pricing record in pieces.
 */
bool
balance_ledger_has_pricing(void)
{
	Oid			ledger = get_relname_relid("ledger", get_namespace_oid("prepay", false));

	return OidIsValid(ledger) && get_attnum(ledger, "pricing_id") != InvalidAttrNumber;
}

/*
 * ledger_has_actor
 *		Whether prepay.ledger names its poster by actor_id (0.2) rather than
 *		by the text created_by its default fills in (0.1, until ALTER
 *		EXTENSION UPDATE has run).  A 0.2 ledger has pricing_id too.
 */
static bool
ledger_has_actor(void)
{
	Oid			ledger = get_relname_relid("ledger", get_namespace_oid("prepay", false));

	return OidIsValid(ledger) && get_attnum(ledger, "actor_id") != InvalidAttrNumber;
}

/*
 * assign_actors
 *		Set every charge's actor_id: the poster's (session_user's)
 *		prepay.actor id at the charge's site, from prepay._actor_id (which
 *		adds the row if new), once per site of the batch.  The charges are
 *		sorted by site.
 */
static void
assign_actors(BalanceCharge *charges, int ncharges)
{
	static SPIPlanPtr plan = NULL;
	int16		actor_id = 0;

	spi_kept_plan(&plan, "SELECT prepay._actor_id($1)", 1, (Oid[]) {INT4OID});
	for (int i = 0; i < ncharges; i++)
	{
		if (i == 0 || charges[i].site_id != charges[i - 1].site_id)
		{
			Datum		arg = Int32GetDatum(charges[i].site_id);
			bool		isnull;

			if (SPI_execute_plan(plan, &arg, NULL, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
				elog(ERROR, "balance: actor query failed");
			actor_id = DatumGetInt16(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			if (isnull)
				elog(ERROR, "balance: no actor row");
		}
		charges[i].actor_id = actor_id;
	}
}

/*
 * insert_ledger
 *		Insert one consumption entry per charge, in (account, time) order so
 *		that entry ids follow each account's balance_after chain.
 */
static void
insert_ledger(BalanceCharge *charges, int ncharges)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr plan_01 = NULL;	/* a 0.1 ledger: no pricing_id, no
										 * actor_id (created_by's default) */
	bool		v02 = ledger_has_actor();
	Datum	   *cols[12];
	Datum		args[12];
	bool	   *no_pieces = palloc(sizeof(bool) * ncharges);
	bool	   *no_pricing = palloc(sizeof(bool) * ncharges);

	for (int c = 0; c < 12; c++)
		cols[c] = palloc(sizeof(Datum) * ncharges);
	for (int i = 0; i < ncharges; i++)
	{
		BalanceCharge *c = &charges[i];

		cols[0][i] = Int32GetDatum(c->site_id);
		cols[1][i] = Int64GetDatum(c->account_id);
		cols[2][i] = fixed_to_numeric(c->amount, MONEY_SCALE);
		cols[3][i] = fixed_to_numeric(c->balance_after, MONEY_SCALE);
		cols[4][i] = Int64GetDatum(c->meter_id);
		cols[5][i] = TimestampTzGetDatum(c->read_from);
		cols[6][i] = TimestampTzGetDatum(c->read_to);
		cols[7][i] = fixed_to_numeric(c->energy, ENERGY_SCALE);
		cols[8][i] = fixed_to_numeric(c->exact, EXACT_SCALE);
		cols[9][i] = PointerGetDatum(c->pieces);
		no_pieces[i] = c->pieces == NULL;
		cols[10][i] = Int32GetDatum(c->pricing_id);
		no_pricing[i] = c->pricing_id == 0;
		cols[11][i] = Int16GetDatum(c->actor_id);
	}

	if (!v02)
		spi_kept_plan(&plan_01,
			"INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after,"
			"                           meter_id, read_from, read_to, energy, exact_charge, pieces)"
			"SELECT u.site_id, u.account_id, 'consumption', u.amount, u.balance_after,"
			"       u.meter_id, u.read_from, u.read_to, u.energy, u.exact_charge, u.pieces::pg_catalog.json"
			"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9), pg_catalog.unnest($10))"
			"       AS u(site_id, account_id, amount, balance_after, meter_id,"
			"            read_from, read_to, energy, exact_charge, pieces)", 10,
					  (Oid[]) {INT4ARRAYOID, INT8ARRAYOID, NUMERICARRAYOID, NUMERICARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, NUMERICARRAYOID, NUMERICARRAYOID, TEXTARRAYOID});
	else
		spi_kept_plan(&plan,
			"INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after,"
			"                           meter_id, read_from, read_to, energy, exact_charge, pieces, pricing_id,"
			"                           actor_id)"
			"SELECT u.site_id, u.account_id, 'consumption', u.amount, u.balance_after,"
			"       u.meter_id, u.read_from, u.read_to, u.energy, u.exact_charge, u.pieces::pg_catalog.json,"
			"       u.pricing_id, u.actor_id"
			"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9), pg_catalog.unnest($10), pg_catalog.unnest($11), pg_catalog.unnest($12))"
			"       AS u(site_id, account_id, amount, balance_after, meter_id,"
			"            read_from, read_to, energy, exact_charge, pieces, pricing_id, actor_id)", 12,
					  (Oid[]) {INT4ARRAYOID, INT8ARRAYOID, NUMERICARRAYOID, NUMERICARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, NUMERICARRAYOID, NUMERICARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT2ARRAYOID});
	args[0] = spi_array(cols[0], NULL, ncharges, INT4OID);
	args[1] = spi_array(cols[1], NULL, ncharges, INT8OID);
	args[2] = spi_array(cols[2], NULL, ncharges, NUMERICOID);
	args[3] = spi_array(cols[3], NULL, ncharges, NUMERICOID);
	args[4] = spi_array(cols[4], NULL, ncharges, INT8OID);
	args[5] = spi_array(cols[5], NULL, ncharges, TIMESTAMPTZOID);
	args[6] = spi_array(cols[6], NULL, ncharges, TIMESTAMPTZOID);
	args[7] = spi_array(cols[7], NULL, ncharges, NUMERICOID);
	args[8] = spi_array(cols[8], NULL, ncharges, NUMERICOID);
	args[9] = spi_array(cols[9], no_pieces, ncharges, TEXTOID);
	args[10] = spi_array(cols[10], no_pricing, ncharges, INT4OID);
	args[11] = spi_array(cols[11], NULL, ncharges, INT2OID);
	if (SPI_execute_plan(v02 ? plan : plan_01, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "balance: ledger insert failed");
}

/* The ledger columns a consumption entry sets, in this order. */
static const char *const ledger_columns[] = {
	"site_id", "account_id", "kind", "amount", "balance_after", "meter_id",
	"read_from", "read_to", "energy", "exact_charge", "pieces", "pricing_id",
	"actor_id"
};
#define NLEDGER_COLUMNS lengthof(ledger_columns)

/*
 * insert_ledger_direct
 *		insert_ledger by direct bulk insertion; the other columns take their
 *		defaults (entry_id from its sequence, created_at; a 0.1 ledger's
 *		created_by), and so do pieces or pricing_id (NULL), whichever the
 *		charge has not.
 */
static void
insert_ledger_direct(BalanceCharge *charges, int ncharges, DirectTable *table)
{
	int			natts = direct_desc(table)->natts;
	Datum	   *values = palloc0(sizeof(Datum) * natts);
	bool	   *isset = palloc0(sizeof(bool) * natts);
	int			att[NLEDGER_COLUMNS];
	int			ncolumns = ledger_has_actor() ? NLEDGER_COLUMNS
		: NLEDGER_COLUMNS - (balance_ledger_has_pricing() ? 1 : 2);
	Datum		consumption;

	for (int k = 0; k < ncolumns; k++)
	{
		att[k] = direct_attnum(table, ledger_columns[k]) - 1;
		isset[att[k]] = true;
	}
	consumption = DirectFunctionCall2(enum_in, CStringGetDatum("consumption"),
									  ObjectIdGetDatum(TupleDescAttr(direct_desc(table), att[2])->atttypid));
	for (int i = 0; i < ncharges; i++)
	{
		BalanceCharge *c = &charges[i];
		MemoryContext old = MemoryContextSwitchTo(direct_row_context(table));

		values[att[0]] = Int32GetDatum(c->site_id);
		values[att[1]] = Int64GetDatum(c->account_id);
		values[att[2]] = consumption;
		values[att[3]] = direct_numeric(table, att[3] + 1, c->amount, MONEY_SCALE);
		values[att[4]] = direct_numeric(table, att[4] + 1, c->balance_after, MONEY_SCALE);
		values[att[5]] = Int64GetDatum(c->meter_id);
		values[att[6]] = TimestampTzGetDatum(c->read_from);
		values[att[7]] = TimestampTzGetDatum(c->read_to);
		values[att[8]] = direct_numeric(table, att[8] + 1, c->energy, ENERGY_SCALE);
		values[att[9]] = direct_numeric(table, att[9] + 1, c->exact, EXACT_SCALE);
		values[att[10]] = PointerGetDatum(c->pieces);	/* json is text */
		isset[att[10]] = c->pieces != NULL;
		if (ncolumns > 11)		/* pricing_id: a 0.2 ledger */
		{
			values[att[11]] = Int32GetDatum(c->pricing_id);
			isset[att[11]] = c->pricing_id != 0;
		}
		if (ncolumns > 12)		/* actor_id: a 0.2 ledger */
			values[att[12]] = Int16GetDatum(c->actor_id);
		MemoryContextSwitchTo(old);
		direct_insert(table, values, isset);
	}
}

/*
 * balance_apply_levels
 *		Second half of posting, run after the meters are written (commands
 *		are locked after meters): run the alarm ladder on every account the
 *		posting moved and hand each level change to
 *		prepay._alarm_level_changed().
 */
void
balance_apply_levels(BalancePosting *posting)
{
	static SPIPlanPtr plan = NULL;

	for (int i = 0; i < posting->naccounts; i++)
	{
		BalanceAccount *acc = &posting->accounts[i];
		int			level;
		Datum		args[4];

		if (!acc->ladder)
			continue;
		level = balance_alarm_level(acc->balance + acc->delta, acc->low_balance_threshold,
									acc->pretrip_threshold, acc->credit_limit);
		if (level == acc->level)
			continue;
		spi_kept_plan(&plan, "SELECT prepay._alarm_level_changed($1, $2, $3, $4)", 4,
						  (Oid[]) {INT4OID, INT8OID, INT2OID, INT2OID});
		args[0] = Int32GetDatum(acc->site_id);
		args[1] = Int64GetDatum(acc->account_id);
		args[2] = Int16GetDatum(acc->level);
		args[3] = Int16GetDatum(level);
		if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "balance: level change failed");
	}
}
