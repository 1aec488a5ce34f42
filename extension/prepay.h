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

/*
 * The SQLSTATEs the C code raises, class PY (docs/API.md lists every one,
 * including those only the SQL functions raise).
 */
#define ERRCODE_PREPAY_UNKNOWN_TARIFF MAKE_SQLSTATE('P','Y','0','0','9')	/* rate.c */
#define ERRCODE_PREPAY_BAD_TARIFF MAKE_SQLSTATE('P','Y','0','1','5')	/* tariff_def.c */
#define ERRCODE_PREPAY_SITE_NOT_MAPPED MAKE_SQLSTATE('P','Y','1','2','0')	/* intake.c */
#define ERRCODE_PREPAY_CONFLICTING_READING MAKE_SQLSTATE('P','Y','1','2','1')	/* intake.c */

#define ENERGY_SCALE 3
#define PRICE_SCALE 6
#define MONEY_SCALE 2
#define EXACT_SCALE 9

/* fixed.c */
extern int64 fixed_from_numeric(Datum numeric, int scale);
extern Datum fixed_to_numeric(int64 value, int scale);
extern char *fixed_format(int64 value, int scale);

/* spi_util.c */
#include "executor/spi.h"
extern SPIPlanPtr spi_kept_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *types);
extern Datum spi_array(Datum *values, bool *nulls, int n, Oid element_type);

/* balance.c */
extern int	balance_alarm_level(int64 balance, int64 low_balance_threshold,
								int64 pretrip_threshold, int64 credit_limit);

#endif							/* PREPAY_H */
