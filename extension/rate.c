/*-------------------------------------------------------------------------
 *
 * extension/rate.c
 *	  The tariff engine's SQL entry point, prepay._rate(): rate a given
 *	  consumption over a given interval with a given tariff, through the
 *	  same book and core as the rating trigger.  prepay.rate(),
 *	  prepay.simulate_bill() and prepay.rerate() (sql/tariff.sql) are
 *	  built on it.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/rate.c
 *
 *-------------------------------------------------------------------------
 */
#include "prepay.h"
#include "tariff_def.h"

#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"

#define ERRCODE_PREPAY_UNKNOWN_TARIFF MAKE_SQLSTATE('P','Y','0','0','9')

PG_FUNCTION_INFO_V1(prepay_rate);

static const int64 *registers_arg(ArrayType *array, const TariffVersion *v, int64 *deltas);

/*
 * prepay_rate
 *		_rate(site_id int4, tariff_id int8, from timestamptz, to timestamptz,
 *		      energy numeric, cycle_used numeric, cycle_start timestamptz,
 *		      registers numeric[])
 *		returns json: the pieces, in the format of prepay.ledger.pieces.
 *		cycle_start (NULL: the cycle `from` lies in) and registers (sharp,
 *		peak, flat, valley energy) may be NULL.
 */
Datum
prepay_rate(PG_FUNCTION_ARGS)
{
	int32		site_id;
	int64		tariff_id;
	TimestampTz from;
	TimestampTz to;
	int64		energy;
	TariffCycleState cycle;
	TariffCycleState before;
	TariffPieces pieces = {.grow = tariff_book_grow};
	int64		deltas[TARIFF_MAX_PERIODS];
	const int64 *registers = NULL;
	TariffBook *book;
	const TariffVersion *versions;
	int			nversions;
	char	   *json;

	for (int i = 0; i < 6; i++)
		if (PG_ARGISNULL(i))
			PG_RETURN_NULL();
	site_id = PG_GETARG_INT32(0);
	tariff_id = PG_GETARG_INT64(1);
	from = PG_GETARG_TIMESTAMPTZ(2);
	to = PG_GETARG_TIMESTAMPTZ(3);
	energy = fixed_from_numeric(PG_GETARG_DATUM(4), ENERGY_SCALE);
	cycle.used = fixed_from_numeric(PG_GETARG_DATUM(5), ENERGY_SCALE);
	cycle.start = PG_ARGISNULL(6) ? INT64_MIN : PG_GETARG_TIMESTAMPTZ(6);
	if (from >= to)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the interval must end after it starts")));
	if (energy < 0 || cycle.used < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("energy and cycle-to-date consumption must not be negative")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "_rate: SPI_connect failed");
	book = tariff_book_load(&site_id, 1);
	versions = tariff_book_versions(book, site_id, tariff_id, &nversions);
	if (versions == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PREPAY_UNKNOWN_TARIFF),
				 errmsg("tariff " INT64_FORMAT " of site %d has no version", tariff_id, site_id),
				 errhint("Add a row to prepay.tariff_version.")));
	if (!PG_ARGISNULL(7))
		registers = registers_arg(PG_GETARG_ARRAYTYPE_P(7),
								  &versions[tariff_version_at(versions, nversions, to)], deltas);

	before = cycle;
	if (!tariff_rate(versions, nversions, tariff_book_calendar(book, site_id), from, to, energy,
					 registers, &cycle, &pieces))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("charge is out of range")));
	if (before.start == INT64_MIN && pieces.n > 0 && cycle.start != INT64_MIN)
		before.start = cycle.start;	/* the cycle `from` lies in */
	json = tariff_pieces_json(tariff_id, versions, &pieces, 1, &before, &cycle);
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(json));
}

/*
 * registers_arg
 *		The (sharp, peak, flat, valley) energies in the version's period
 *		order, or NULL if the version does not name its periods after them.
 */
static const int64 *
registers_arg(ArrayType *array, const TariffVersion *v, int64 *deltas)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(NUMERICOID, &typlen, &typbyval, &typalign);
	deconstruct_array(array, NUMERICOID, typlen, typbyval, typalign, &elems, &nulls, &n);
	if (n != TARIFF_NREGISTERS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("registers must be {sharp, peak, flat, valley}")));
	for (int p = 0; p < v->nperiods; p++)
	{
		int			k = tariff_register_index(v->period_name[p]);

		if (k < 0 || nulls[k])
			return NULL;
		deltas[p] = fixed_from_numeric(elems[k], ENERGY_SCALE);
	}
	return deltas;
}
