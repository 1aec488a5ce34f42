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
 * The rating path converts several NUMERICs per reading, so the common
 * case (a finite value with no more decimals than the scale, short enough
 * for 64 bits) is decoded straight from NUMERIC's stored form, which is
 * fixed for a major version because it is the on-disk format: a 16-bit
 * header (sign, display scale, weight), then base-10000 digits, most
 * significant first (src/backend/utils/adt/numeric.c).  Anything else
 * takes the general path through numeric arithmetic.
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

/* the parts of numeric.c's stored form the fast path reads */
#define NUMERIC_FORM_SIGN_MASK		0xC000
#define NUMERIC_FORM_NEG			0x4000
#define NUMERIC_FORM_SHORT			0x8000
#define NUMERIC_FORM_SPECIAL		0xC000
#define NUMERIC_FORM_SHORT_SIGN		0x2000
#define NUMERIC_FORM_SHORT_WSIGN	0x0040
#define NUMERIC_FORM_SHORT_WMASK	0x003F
#define NUMERIC_FORM_BASE			10000
#define NUMERIC_FORM_BASE_DIGITS	4
#define FAST_MAX_DIGITS				6	/* 10000^6 > 2^63 x 10^4: no overflow in int128 */

/*
 * decode_numeric
 *		Try to read a NUMERIC datum as value x 10^scale straight from its
 *		stored form.  False when the general path must decide (special
 *		values, toasted or compressed datums, more decimals than the
 *		scale, values too long for the fast path).
 */
static bool
decode_numeric(Datum numeric, int scale, int64 *result)
{
	struct varlena *v = (struct varlena *) DatumGetPointer(numeric);
	const char *data;
	int			len;
	uint16		header;
	int			weight;
	bool		negative;
	int			ndigits;
	int			exponent;
	__int128	acc = 0;

	if (VARATT_IS_EXTENDED(v) && !VARATT_IS_SHORT(v))
		return false;
	data = VARDATA_ANY(v);
	len = VARSIZE_ANY_EXHDR(v);
	memcpy(&header, data, sizeof(uint16));
	if ((header & NUMERIC_FORM_SIGN_MASK) == NUMERIC_FORM_SPECIAL)
		return false;
	if ((header & NUMERIC_FORM_SIGN_MASK) == NUMERIC_FORM_SHORT)
	{
		negative = (header & NUMERIC_FORM_SHORT_SIGN) != 0;
		weight = (header & NUMERIC_FORM_SHORT_WMASK) |
			((header & NUMERIC_FORM_SHORT_WSIGN) ? ~NUMERIC_FORM_SHORT_WMASK : 0);
		data += sizeof(uint16);
		len -= sizeof(uint16);
	}
	else
	{
		int16		long_weight;

		negative = (header & NUMERIC_FORM_SIGN_MASK) == NUMERIC_FORM_NEG;
		memcpy(&long_weight, data + sizeof(uint16), sizeof(int16));
		weight = long_weight;
		data += sizeof(uint16) + sizeof(int16);
		len -= sizeof(uint16) + sizeof(int16);
	}
	ndigits = len / (int) sizeof(int16);
	if (ndigits == 0)
	{
		*result = 0;
		return true;
	}
	if (ndigits > FAST_MAX_DIGITS)
		return false;
	for (int i = 0; i < ndigits; i++)
	{
		int16		digit;

		memcpy(&digit, data + i * sizeof(int16), sizeof(int16));
		acc = acc * NUMERIC_FORM_BASE + digit;
	}
	/* acc is the value x 10000^(ndigits - 1 - weight); rescale to 10^scale */
	exponent = scale - NUMERIC_FORM_BASE_DIGITS * (ndigits - 1 - weight);
	for (; exponent > 0; exponent--)
	{
		acc *= 10;
		if (acc > PG_INT64_MAX)
			return false;
	}
	for (; exponent < 0; exponent++)
	{
		if (acc % 10 != 0)
			return false;		/* more decimals than the scale: round */
		acc /= 10;
	}
	if (acc > PG_INT64_MAX)
		return false;
	*result = negative ? -(int64) acc : (int64) acc;
	return true;
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
	int64		fast;

	if (decode_numeric(numeric, scale, &fast))
		return fast;
	if (numeric_is_nan(DatumGetNumeric(numeric)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("NaN is not a value prepay can compute with"),
				 errhint("Pass a finite number.")));
	if (numeric_is_inf(DatumGetNumeric(numeric)))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("value out of range for prepay arithmetic"),
				 errdetail("The value is infinite."),
				 errhint("Pass a finite number.")));

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
