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
 * the credit limit).  balance_alarm_level() is the one implementation;
 * SQL reaches it as prepay.alarm_level().  A level change is handed to
 * prepay._alarm_level_changed(), which writes the notification and the
 * relay commands.
 *
 * Locking protocol: see reading.c.  The caller holds its sites' rating
 * locks; the balance UPDATE here takes the account row locks, waiting for
 * any recharge in flight on the same account and then adding to the
 * balance that recharge committed.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/balance.c
 *
 *-------------------------------------------------------------------------
 */
#include "balance.h"

#include "catalog/pg_type.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

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

PG_FUNCTION_INFO_V1(prepay_alarm_level);

static int	compare_charges(const void *a, const void *b);
static int	compare_accounts(const void *a, const void *b);
static BalanceAccount *move_balances(BalanceCharge *charges, int ncharges, int *naccounts);
static void insert_ledger(BalanceCharge *charges, int ncharges);

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
 *		and apply alarm level changes.  Must run inside SPI.
 */
BalancePosting *
balance_post_charges(BalanceCharge *charges, int ncharges)
{
	BalancePosting *posting = palloc0(sizeof(BalancePosting));
	BalanceAccount *accounts;
	int			naccounts;
	int			a;

	if (ncharges == 0)
		return posting;
	qsort(charges, ncharges, sizeof(BalanceCharge), compare_charges);
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

	if (x->site_id != y->site_id)
		return x->site_id < y->site_id ? -1 : 1;
	if (x->account_id != y->account_id)
		return x->account_id < y->account_id ? -1 : 1;
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

	if (x->site_id != y->site_id)
		return x->site_id < y->site_id ? -1 : 1;
	if (x->account_id != y->account_id)
		return x->account_id < y->account_id ? -1 : 1;
	return 0;
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
	int64		delta = 0;
	Datum		args[3];
	BalanceAccount *accounts;
	int			n = 0;

	for (int i = 0; i < ncharges; i++)
	{
		if (pg_add_s64_overflow(delta, charges[i].amount, &delta))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("balance of account " INT64_FORMAT " is out of range",
							charges[i].account_id)));
		if (i + 1 < ncharges && charges[i + 1].site_id == charges[i].site_id &&
			charges[i + 1].account_id == charges[i].account_id)
			continue;
		sites[n] = Int32GetDatum(charges[i].site_id);
		ids[n] = Int64GetDatum(charges[i].account_id);
		deltas[n] = fixed_to_numeric(delta, MONEY_SCALE);
		n++;
		delta = 0;
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
				  " WHERE a.site_id = u.site_id AND a.account_id = u.account_id"
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

/*
 * insert_ledger
 *		Insert one consumption entry per charge, in (account, time) order so
 *		that entry ids follow each account's balance_after chain.
 */
static void
insert_ledger(BalanceCharge *charges, int ncharges)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *cols[10];
	Datum		args[10];

	for (int c = 0; c < 10; c++)
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
		cols[9][i] = CStringGetTextDatum(c->pieces);
	}

	spi_kept_plan(&plan,
			"INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after,"
			"                           meter_id, read_from, read_to, energy, exact_charge, pieces)"
			"SELECT u.site_id, u.account_id, 'consumption', u.amount, u.balance_after,"
			"       u.meter_id, u.read_from, u.read_to, u.energy, u.exact_charge, u.pieces::pg_catalog.json"
			"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9), pg_catalog.unnest($10))"
			"       AS u(site_id, account_id, amount, balance_after, meter_id,"
			"            read_from, read_to, energy, exact_charge, pieces)", 10,
					  (Oid[]) {INT4ARRAYOID, INT8ARRAYOID, NUMERICARRAYOID, NUMERICARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, NUMERICARRAYOID, NUMERICARRAYOID, TEXTARRAYOID});
	args[0] = spi_array(cols[0], NULL, ncharges, INT4OID);
	args[1] = spi_array(cols[1], NULL, ncharges, INT8OID);
	args[2] = spi_array(cols[2], NULL, ncharges, NUMERICOID);
	args[3] = spi_array(cols[3], NULL, ncharges, NUMERICOID);
	args[4] = spi_array(cols[4], NULL, ncharges, INT8OID);
	args[5] = spi_array(cols[5], NULL, ncharges, TIMESTAMPTZOID);
	args[6] = spi_array(cols[6], NULL, ncharges, TIMESTAMPTZOID);
	args[7] = spi_array(cols[7], NULL, ncharges, NUMERICOID);
	args[8] = spi_array(cols[8], NULL, ncharges, NUMERICOID);
	args[9] = spi_array(cols[9], NULL, ncharges, TEXTOID);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "balance: ledger insert failed");
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
