/*-------------------------------------------------------------------------
 *
 * extension/fixed.c
 *	  Conversions between NUMERIC and prepay's int64 fixed-point units.
 *
 * A value v at scale s is the integer v * 10^s (see prepay.h for the
 * scales).  Converting a NUMERIC with more decimals than the scale rounds
 * half away from zero, as numeric's own cast to bigint does; table columns
 * carry typmods that never have more decimals than the scale they are read
 * at, so in the rating path the conversion is exact.  Values that do not
 * fit in int64 raise 22003 (numeric_value_out_of_range).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/fixed.c
 *
 *-------------------------------------------------------------------------
 */
#include "prepay.h"

#include "lib/stringinfo.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#define MAX_SCALE 18

static Numeric power_of_ten[MAX_SCALE + 1];

/*
 * power_of_ten_numeric
 *		10^scale as a NUMERIC, built once per backend.
 */
static Numeric
power_of_ten_numeric(int scale)
{
	Assert(scale >= 0 && scale <= MAX_SCALE);
	if (power_of_ten[scale] == NULL)
	{
		int64		p = 1;
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		for (int i = 0; i < scale; i++)
			p *= 10;
		power_of_ten[scale] = int64_to_numeric(p);
		MemoryContextSwitchTo(old);
	}
	return power_of_ten[scale];
}

/*
 * fixed_from_numeric
 *		The NUMERIC datum as an integer count of 10^-scale units.
 */
int64
fixed_from_numeric(Datum numeric, int scale)
{
	bool		have_error = false;
	Numeric		scaled;

	scaled = numeric_mul_opt_error(DatumGetNumeric(numeric),
								   power_of_ten_numeric(scale), &have_error);
	if (have_error)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("value out of range for prepay arithmetic")));
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(scaled)));
}

/*
 * fixed_to_numeric
 *		An integer count of 10^-scale units as a NUMERIC datum of that scale.
 */
Datum
fixed_to_numeric(int64 value, int scale)
{
	return NumericGetDatum(int64_div_fast_to_numeric(value, scale));
}

/*
 * fixed_format
 *		The value as decimal text with exactly `scale` decimals, for messages.
 */
char *
fixed_format(int64 value, int scale)
{
	return DatumGetCString(DirectFunctionCall1(numeric_out, fixed_to_numeric(value, scale)));
}
