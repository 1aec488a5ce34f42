/*-------------------------------------------------------------------------
 *
 * extension/prepay.c
 *	  Module entry of the prepay extension.
 *
 * The extension's work is split by domain concept: fixed.c (NUMERIC and
 * fixed-point units), rating.c (the pure pricing core), reading.c (the
 * triggers that rate readings), balance.c (wallets and the alarm ladder),
 * security.c (who is calling, for the authorization helpers).
 * The public API in SQL is sql/prepay.sql.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/prepay.c
 *
 *-------------------------------------------------------------------------
 */
#include "prepay.h"

#include "fmgr.h"

PG_MODULE_MAGIC;
