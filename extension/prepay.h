/*-------------------------------------------------------------------------
 *
 * extension/prepay.h
 *	  Definitions shared by the modules of the prepay extension: our own
 *	  SQLSTATEs and the fixed-point scales money and energy are computed in.
 *
 * Money and energy are never floating point.  At the SQL surface they are
 * NUMERIC; inside C they are int64 counts of a fixed unit:
 *
 *	  energy	milli-units (Wh, litres)			ENERGY_SCALE 3
 *	  price		micro-currency per unit				PRICE_SCALE 6
 *	  money		cents								MONEY_SCALE 2
 *	  exact		nano-currency (energy x price)		EXACT_SCALE 9
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/prepay.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PREPAY_H
#define PREPAY_H

#include "postgres.h"
#include "utils/timestamp.h"

#define ENERGY_SCALE 3
#define PRICE_SCALE 6
#define MONEY_SCALE 2
#define EXACT_SCALE 9
#define EXACT_PER_CENT INT64CONST(10000000)	/* 10^(EXACT_SCALE - MONEY_SCALE) */

/*
 * prepay's own SQLSTATEs, class PY.  The SQL functions raise the same codes
 * by their text value; docs/API.md lists them.
 */
#define ERRCODE_PREPAY_UNKNOWN_ACCOUNT		MAKE_SQLSTATE('P','Y','0','0','1')
#define ERRCODE_PREPAY_ACCOUNT_CLOSED		MAKE_SQLSTATE('P','Y','0','0','2')
#define ERRCODE_PREPAY_UNKNOWN_METER		MAKE_SQLSTATE('P','Y','0','0','3')
#define ERRCODE_PREPAY_PAYMENT_CONFLICT		MAKE_SQLSTATE('P','Y','0','0','4')
#define ERRCODE_PREPAY_LEDGER_APPEND_ONLY	MAKE_SQLSTATE('P','Y','0','1','3')

/* fixed.c */
extern int64 fixed_from_numeric(Datum numeric, int scale);
extern Datum fixed_to_numeric(int64 value, int scale);
extern char *fixed_format(int64 value, int scale);

/* balance.c */
extern int	balance_alarm_level(int64 balance, int64 low_balance_threshold,
								int64 pretrip_threshold, int64 credit_limit);

#endif							/* PREPAY_H */
