/*-------------------------------------------------------------------------
 *
 * extension/rate.c
 *	  The tariff engine's SQL entry points: prepay._rate() rates a given
 *	  consumption over a given interval with a given tariff, through the
 *	  same book and core as the rating trigger; prepay._rate_many() rates
 *	  a series of intervals of one site with one loaded book (prepay.rate()
 *	  is built on the first, prepay.simulate_bill() and prepay.rerate() in
 *	  sql/tariff.sql on the second).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/rate.c
 *
 *-------------------------------------------------------------------------
 */
#include "prepay.h"
#include "tariff_book.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"

PG_FUNCTION_INFO_V1(prepay_rate);
PG_FUNCTION_INFO_V1(prepay_rate_many);

static const TariffVersion *book_tariff(TariffBook *book, int32 site_id, int64 tariff_id,
										int *nversions);
static char *rate_interval(TariffBook *book, int32 site_id, int64 tariff_id, TimestampTz from,
						   TimestampTz to, int64 energy, TariffCycleState *cycle,
						   const Datum *registers, const bool *register_nulls, int nregisters);
static const int64 *registers_arg(const Datum *elems, const bool *nulls, const TariffVersion *v,
								  int64 *deltas);
static int	deconstruct(ArrayType *array, Oid type, int expected, Datum **elems, bool **nulls);

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
	TariffCycleState cycle;
	Datum	   *registers = NULL;
	bool	   *register_nulls = NULL;
	int			nregisters = 0;
	TariffBook *book;
	char	   *json;
	text	   *result;
	MemoryContext caller = CurrentMemoryContext;

	for (int i = 0; i < 6; i++)
		if (PG_ARGISNULL(i))
			PG_RETURN_NULL();
	site_id = PG_GETARG_INT32(0);
	cycle.used = fixed_from_numeric(PG_GETARG_DATUM(5), ENERGY_SCALE);
	cycle.start = PG_ARGISNULL(6) ? INT64_MIN : PG_GETARG_TIMESTAMPTZ(6);
	if (!PG_ARGISNULL(7))
		nregisters = deconstruct(PG_GETARG_ARRAYTYPE_P(7), NUMERICOID, -1, &registers, &register_nulls);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "_rate: SPI_connect failed");
	book = tariff_book_load(&site_id, 1);
	json = rate_interval(book, site_id, PG_GETARG_INT64(1), PG_GETARG_TIMESTAMPTZ(2),
						 PG_GETARG_TIMESTAMPTZ(3), fixed_from_numeric(PG_GETARG_DATUM(4), ENERGY_SCALE),
						 &cycle, registers, register_nulls, nregisters);
	/* the JSON lives in SPI's context, which SPI_finish frees: copy it out first */
	MemoryContextSwitchTo(caller);
	result = cstring_to_text(json);
	SPI_finish();
	PG_RETURN_TEXT_P(result);
}

/*
 * prepay_rate_many
 *		_rate_many(site_id int4, tariff_id int8[], from timestamptz[],
 *		           to timestamptz[], energy numeric[], cycle_used numeric[],
 *		           cycle_start timestamptz[], registers numeric[][])
 *		returns setof json: _rate() of each interval, in order, with the
 *		site's tariff book loaded once.  A NULL cycle_used continues the
 *		billing cycle the previous interval left (its cycle_start_after and
 *		cycle_used_after; 0 when it had none), else the interval starts
 *		from its own cycle_used and cycle_start.  registers has one row of
 *		(sharp, peak, flat, valley) per interval (a row with a NULL: none),
 *		or is NULL.  No rows when the site or an array is NULL.
 */
Datum
prepay_rate_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			types[7] = {InvalidOid, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, NUMERICOID,
	NUMERICOID, TIMESTAMPTZOID};
	Datum	   *elems[7];
	bool	   *nulls[7];
	Datum	   *registers = NULL;
	bool	   *register_nulls = NULL;
	int32		site_id;
	int			n;
	TariffBook *book;
	TariffCycleState cycle = {INT64_MIN, 0};

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);	/* SETOF json: one column */
	for (int i = 0; i < 7; i++)
		if (PG_ARGISNULL(i))
			return (Datum) 0;	/* no rows */
	site_id = PG_GETARG_INT32(0);
	n = ArrayGetNItems(ARR_NDIM(PG_GETARG_ARRAYTYPE_P(1)), ARR_DIMS(PG_GETARG_ARRAYTYPE_P(1)));
	for (int i = 1; i < 7; i++)
		deconstruct(PG_GETARG_ARRAYTYPE_P(i), types[i], n, &elems[i], &nulls[i]);
	if (!PG_ARGISNULL(7))
		deconstruct(PG_GETARG_ARRAYTYPE_P(7), NUMERICOID, n * TARIFF_NREGISTERS,
					&registers, &register_nulls);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "_rate_many: SPI_connect failed");
	book = tariff_book_load(&site_id, 1);
	for (int i = 0; i < n; i++)
	{
		Datum		json;
		bool		isnull = false;

		for (int k = 1; k < 5; k++)
			if (nulls[k][i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("interval %d has no tariff, start, end or energy", i + 1)));
		if (!nulls[5][i])
		{
			cycle.used = fixed_from_numeric(elems[5][i], ENERGY_SCALE);
			cycle.start = nulls[6][i] ? INT64_MIN : DatumGetTimestampTz(elems[6][i]);
		}
		else if (cycle.start == INT64_MIN)
			cycle.used = 0;		/* the previous interval recorded no cycle */
		json = CStringGetTextDatum(rate_interval(book, site_id, DatumGetInt64(elems[1][i]),
												 DatumGetTimestampTz(elems[2][i]),
												 DatumGetTimestampTz(elems[3][i]),
												 fixed_from_numeric(elems[4][i], ENERGY_SCALE), &cycle,
												 registers ? &registers[i * TARIFF_NREGISTERS] : NULL,
												 registers ? &register_nulls[i * TARIFF_NREGISTERS] : NULL,
												 TARIFF_NREGISTERS));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &json, &isnull);
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * rate_interval
 *		The pricing record (JSON) of `energy` over (from, to] with the
 *		tariff, starting from the billing cycle state *cycle, which is left
 *		as the charge leaves it.  registers: nregisters values that must be
 *		the (sharp, peak, flat, valley) energies, or NULL.
 */
static char *
rate_interval(TariffBook *book, int32 site_id, int64 tariff_id, TimestampTz from, TimestampTz to,
			  int64 energy, TariffCycleState *cycle, const Datum *registers, const bool *register_nulls,
			  int nregisters)
{
	TariffCycleState before = *cycle;
	TariffPieces pieces = {.grow = tariff_book_grow};
	int64		deltas[TARIFF_MAX_PERIODS];
	const int64 *split = NULL;
	const TariffVersion *versions;
	int			nversions;
	StringInfoData json;

	if (from >= to)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the interval must end after it starts")));
	if (energy < 0 || cycle->used < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("energy and cycle-to-date consumption must not be negative")));
	versions = book_tariff(book, site_id, tariff_id, &nversions);
	if (registers != NULL && nregisters != TARIFF_NREGISTERS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("registers must be {sharp, peak, flat, valley}")));
	if (registers != NULL)
		split = registers_arg(registers, register_nulls,
							  &versions[tariff_version_at(versions, nversions, to)], deltas);
	if (!tariff_rate(versions, nversions, tariff_book_calendar(book, site_id), from, to, energy,
					 split, cycle, &pieces))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("charge is out of range")));
	if (before.start == INT64_MIN && pieces.n > 0 && cycle->start != INT64_MIN)
		before.start = cycle->start;	/* the cycle `from` lies in */
	initStringInfo(&json);
	tariff_pieces_json(&json, tariff_id, versions, &pieces, 1, &before, cycle, NULL);
	return json.data;
}

/* The tariff's versions in the book, or PY009 if it has none. */
static const TariffVersion *
book_tariff(TariffBook *book, int32 site_id, int64 tariff_id, int *nversions)
{
	const TariffVersion *versions = tariff_book_versions(book, site_id, tariff_id, nversions);

	if (versions == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PREPAY_UNKNOWN_TARIFF),
				 errmsg("tariff " INT64_FORMAT " of site %d has no version", tariff_id, site_id),
				 errhint("Add a row to prepay.tariff_version.")));
	return versions;
}

/*
 * deconstruct
 *		The elements of an array of a built-in type, which must number
 *		`expected` unless that is -1; returns how many.
 */
static int
deconstruct(ArrayType *array, Oid type, int expected, Datum **elems, bool **nulls)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			n;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	deconstruct_array(array, type, typlen, typbyval, typalign, elems, nulls, &n);
	if (expected >= 0 && n != expected)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("_rate_many: every array needs one element per interval, and registers four")));
	return n;
}

/*
 * registers_arg
 *		The (sharp, peak, flat, valley) energies in the version's period
 *		order, or NULL if the version does not name its periods after them
 *		or one of them is NULL.
 */
static const int64 *
registers_arg(const Datum *elems, const bool *nulls, const TariffVersion *v, int64 *deltas)
{
	for (int p = 0; p < v->nperiods; p++)
	{
		int			k = tariff_register_index(v->period_name[p]);

		if (k < 0 || nulls[k])
			return NULL;
		deltas[p] = fixed_from_numeric(elems[k], ENERGY_SCALE);
	}
	return deltas;
}
