/*-------------------------------------------------------------------------
 *
 * extension/prepay.c
 *	  Module entry of the prepay extension.
 *
 * The extension's work is split by domain concept, one file each:
 *
 *	  prepay.c		this module entry
 *	  fixed.c		NUMERIC <-> int64 fixed-point units (prepay.h's scales)
 *	  spi_util.c	kept SPI plans and array arguments for batch statements
 *	  reading.c		the triggers on prepay.reading: skip duplicates, rate
 *					each statement's readings as one batch
 *	  intake.c		what the duplicate trigger refuses, and the bulk intake
 *					for roles under row-level security
 *	  meter_state.c	load and save the rating state of a batch's meters
 *	  site_key.c	the (site_id, id) key order; sorted arrays of keys
 *	  direct.c		direct table access for the rating batch
 *	  tariff.c		the tariff engine's pure core: cut an interval where the
 *					price may change, price each piece exactly
 *	  tariff_def.c	tariff definitions: validate and compile the JSONB
 *	  tariff_book.c	a batch's compiled tariffs and site calendars, and the
 *					ledger's record of how a charge was priced
 *	  rate.c		the tariff engine's SQL entry points (prepay._rate...)
 *	  rating.c		rounding charges to cents with a carry, and the
 *					plausibility limit on consumption
 *	  balance.c		wallets: post charges to the ledger, move balances,
 *					run the alarm ladder
 *	  rollup.c		the energy rollups the rating batch keeps up to date
 *	  security.c	who is calling, for the authorization helpers
 *
 * The SQL side (schema, C bindings, public API) is the files in sql/,
 * which the Makefile concatenates into the install script, prepay.sql
 * first.
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
