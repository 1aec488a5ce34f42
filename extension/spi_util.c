/*-------------------------------------------------------------------------
 *
 * extension/spi_util.c
 *	  The two things every batch statement of the rating trigger needs:
 *	  a plan prepared once per backend, and arrays of column values to pass
 *	  it (statements take whole batches as arrays, never one row at a time).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/spi_util.c
 *
 *-------------------------------------------------------------------------
 */
#include "prepay.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"

/*
 * spi_kept_plan
 *		The plan cached in *cache, prepared and kept on first use.  Kept
 *		plans are revalidated by the plan cache after DDL, so they survive
 *		DROP and CREATE EXTENSION in the same backend.
 */
SPIPlanPtr
spi_kept_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *types)
{
	if (*cache == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "prepay: cannot prepare \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		*cache = plan;
	}
	return *cache;
}

/*
 * spi_array
 *		A one-dimensional array datum of n values of a built-in type
 *		(int2, int4, date, int8, timestamptz, numeric or text); nulls may be
 *		NULL.
 */
Datum
spi_array(Datum *values, bool *nulls, int n, Oid element_type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			lbound = 1;

	switch (element_type)
	{
		case INT2OID:
			typlen = 2;
			typbyval = true;
			typalign = TYPALIGN_SHORT;
			break;
		case INT4OID:
		case DATEOID:
			typlen = 4;
			typbyval = true;
			typalign = TYPALIGN_INT;
			break;
		case INT8OID:
		case TIMESTAMPTZOID:
			typlen = 8;
			typbyval = FLOAT8PASSBYVAL;
			typalign = TYPALIGN_DOUBLE;
			break;
		case NUMERICOID:
		case TEXTOID:
			typlen = -1;
			typbyval = false;
			typalign = TYPALIGN_INT;
			break;
		default:
			elog(ERROR, "spi_array: unsupported element type %u", element_type);
	}
	return PointerGetDatum(construct_md_array(values, nulls, 1, &n, &lbound,
											  element_type, typlen, typbyval, typalign));
}
