/*-------------------------------------------------------------------------
 *
 * extension/meter_state.h
 *	  Loading and saving the rating state of a batch's meters
 *	  (meter_state.c).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/meter_state.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PREPAY_METER_STATE_H
#define PREPAY_METER_STATE_H

#include "rating_batch.h"

/*
 * Look up every meter the batch's readings name, with its rating state,
 * its account and tariff, after the site locks; leaves the direct tables
 * (batch->meter_table, batch->account_table) open, or both NULL.
 */
extern void meter_state_load(Batch *batch);

/* Write back the state of every meter that moved; closes the direct tables. */
extern void meter_state_save(Batch *batch);

/* The label of a prepay.relay_state value, the catalog read at most twice a batch. */
extern const char *meter_state_relay_label(Batch *batch, Datum value);

#endif							/* PREPAY_METER_STATE_H */
