/*-------------------------------------------------------------------------
 *
 * extension/balance.h
 *	  Posting consumption charges to wallets (balance.c).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/balance.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PREPAY_BALANCE_H
#define PREPAY_BALANCE_H

#include "prepay.h"
#include "direct.h"

/* One consumption charge, as the rating trigger hands it to balance.c. */
typedef struct BalanceCharge
{
	int32		site_id;
	int64		account_id;
	int64		meter_id;
	TimestampTz read_from;
	TimestampTz read_to;
	int64		energy;			/* milli-units, after the multiplier */
	int64		exact;			/* nano-currency */
	text	   *pieces;			/* json: how it was priced (tariff_book.c),
								 * or NULL when pricing_id says it */
	int32		pricing_id;		/* prepay.charge_pricing of a one-piece
								 * charge, or 0 */
	int64		amount;			/* cents, negative: a debit */
	int64		balance_after;	/* cents, filled in by balance.c */
	int16		actor_id;		/* prepay.actor of the poster at the site,
								 * filled in by balance.c (0.2 ledger) */
	HeapTuple	account_row;	/* direct path: the account row the meter
								 * lookup read (direct_fetch), else NULL */
} BalanceCharge;


/* The accounts a posting moved, for the alarm ladder. */
typedef struct BalanceAccount BalanceAccount;
typedef struct BalancePosting
{
	BalanceAccount *accounts;
	int			naccounts;
} BalancePosting;

extern BalancePosting *balance_post_charges(BalanceCharge *charges, int ncharges,
											 DirectTable *accounts);
extern void balance_apply_levels(BalancePosting *posting);
extern bool balance_ledger_has_pricing(void);

#endif							/* PREPAY_BALANCE_H */
