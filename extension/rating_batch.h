/*-------------------------------------------------------------------------
 *
 * extension/rating_batch.h
 *	  The rating batch: a statement's readings, the meters they belong to,
 *	  and what rating them produces, shared by the rating trigger
 *	  (reading.c) and the meters' state I/O (meter_state.c).
 *
 * A batch lives in its own memory context for the length of one AFTER
 * INSERT statement trigger on prepay.reading.  Readings are sorted by
 * (site, meter, read_at) and meters by (site, meter), so the readings of
 * meters[m] are one run of readings[].
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/rating_batch.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PREPAY_RATING_BATCH_H
#define PREPAY_RATING_BATCH_H

#include "prepay.h"

#include "access/htup.h"
#include "lib/stringinfo.h"
#include "utils/snapshot.h"

#include "balance.h"
#include "direct.h"
#include "rollup.h"
#include "tariff_book.h"

#define NREGISTERS TARIFF_NREGISTERS

/* Why a reading was not rated (prepay.quarantine_reason; reading.c). */
typedef enum Quarantine
{
	Q_NONE = 0,
	Q_UNKNOWN_METER,
	Q_METER_REMOVED,
	Q_INVALID_VALUE,
	Q_CLOCK_AHEAD,
	Q_CLOCK_BEHIND,
	Q_OUT_OF_ORDER,
	Q_COUNTER_BACKWARDS,
	Q_IMPOSSIBLE_JUMP,
	Q_NO_PRICE
} Quarantine;

/* A reading of the statement, as read from the transition table. */
typedef struct BatchReading
{
	int32		site_id;
	int64		meter_id;
	TimestampTz read_at;
	bool		has_energy;
	int64		energy;			/* register, milli-units */
	const char *not_a_number;	/* the register that is NaN, or NULL */
	uint8		register_mask;	/* bit k: TOU register k reported */
	int64		registers[NREGISTERS];
	const char *relay;			/* reported relay state label, or NULL */
	Quarantine	reason;
	char	   *detail;
	char	   *fallback;		/* why its charge's register split fell back, or NULL */
} BatchReading;

/* A meter the batch names, with its rating state (meter_state.c). */
typedef struct BatchMeter
{
	int32		site_id;
	int64		meter_id;
	bool		found;
	bool		active;
	int32		multiplier;
	int64		max_per_hour;	/* milli-units per hour */
	const char *derived_from;	/* kind whose default max_per_hour is, or NULL if set */
	bool		billable;		/* attached to an open account */
	int64		account_id;
	int64		tariff_id;
	bool		has_state;
	TimestampTz last_read_at;
	int64		last_energy;
	int64		carry;			/* nano-currency */
	TariffCycleState cycle;		/* billing cycle and its consumption so far */
	uint8		register_mask;	/* TOU registers of the last rated reading (bit k) */
	int64		registers[NREGISTERS];
	const char *relay;			/* relay state known, or NULL */
	TimestampTz relay_at;		/* when it was learnt (DT_NOBEGIN: never) */
	bool		relay_changed;	/* a reading reported a new relay state */
	bool		changed;
	HeapTuple	row;			/* direct path: the meter row read */
	bool		has_account;	/* direct path: account_id is not NULL */
	bool		has_tariff;		/* direct path: the meter's own tariff_id */
	HeapTuple	account_row;	/* direct path: its account's row, or NULL */
} BatchMeter;

/*
 * A prepay.charge_pricing row the batch named: the tariff, multiplier,
 * version and period of its one-piece charges (reading.c).
 */
typedef struct BatchPricing
{
	int32		site_id;
	int64		tariff_id;
	int32		multiplier;
	int64		version_from;
	const char *period;			/* the tariff book's name of the period */
	int32		pricing_id;
} BatchPricing;

/* One statement's rating. */
typedef struct Batch
{
	TimestampTz now;			/* the database clock, read once */
	BatchReading *readings;
	int			nreadings;
	BatchMeter *meters;
	int			nmeters;
	TariffBook *book;			/* the sites' tariffs and calendars */
	TariffPieces pieces;		/* scratch for tariff_rate */
	StringInfoData json;		/* scratch for tariff_pieces_json */
	bool		compact;		/* the ledger has pricing_id (not 0.1) */
	BatchPricing *pricings;		/* charge_pricing rows named so far */
	int			npricings;
	int			maxpricings;
	BalanceCharge *charges;
	int			ncharges;
	Rollup	   *rollup;			/* the charges' energy by local day */
	int			nquarantined;
	int			nfallbacks;		/* charges whose register split fell back */
	DirectTable *meter_table;	/* direct path: both open, else both NULL */
	DirectTable *account_table;
	Snapshot	snapshot;		/* direct path: taken after the site locks */
	Oid			relay_oids[2];	/* relay_label's cache */
	const char *relay_labels[2];
	Oid			kind_oids[3];	/* the meter kinds' labels, cached alike */
	const char *kind_labels[3];
} Batch;

#endif							/* PREPAY_RATING_BATCH_H */
