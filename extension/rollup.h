/*-------------------------------------------------------------------------
 *
 * extension/rollup.h
 *	  The energy rollups a rating batch keeps up to date (rollup.c).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/rollup.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PREPAY_ROLLUP_H
#define PREPAY_ROLLUP_H

#include "prepay.h"
#include "tariff.h"

typedef struct Rollup Rollup;

extern Rollup *rollup_create(void);

/*
 * Add one consumption entry: its posted cents (negative, a debit) and the
 * pieces it was priced in (their period names from `versions`), split over
 * the local days of `calendar`.
 */
extern void rollup_add_entry(Rollup *rollup, int32 site_id, int64 meter_id, int64 account_id,
							 int64 amount, const TariffPieces *pieces,
							 const TariffVersion *versions, const TariffCalendar *calendar);

/* Append the sums to energy_pending and add the entries to consumption_posting_day. */
extern void rollup_flush(Rollup *rollup);

#endif							/* PREPAY_ROLLUP_H */
