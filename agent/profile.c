/*-------------------------------------------------------------------------
 * agent/profile.c
 *     Decoding register values by device profile.  An integer register
 *     value times 10^scale becomes a decimal string by moving the decimal
 *     point: energy never passes through floating point.  Only a "float"
 *     register (refused by the database for energy) uses a double.
 *
 * Locking: pure functions, thread-safe.
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profile.h"

static const char *const meaning_names[M_COUNT] = {
	"total_energy", "sharp", "peak", "flat", "valley", "power",
};

/* profile_meaning: index of a meaning the agent reads, or -1 */
int profile_meaning(const char *name)
{
	for (int i = 0; i < M_COUNT; i++)
		if (strcmp(name, meaning_names[i]) == 0)
			return i;
	return -1;
}

/* profile_reg_type: the register type called name, or -1 */
int profile_reg_type(const char *name)
{
	static const char *const names[] = { "u16", "i16", "u32", "i32", "float" };

	for (int i = 0; i < 5; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

/* profile_reg_count: registers a value of type t occupies */
int profile_reg_count(enum reg_type t)
{
	return (t == RT_U16 || t == RT_I16) ? 1 : 2;
}

/* profile_parse_values: parse a PostgreSQL integer[] literal "{1,0}";
 * returns the count or -1 if it does not fit or is malformed */
int profile_parse_values(const char *array, uint16_t *out, int max)
{
	const char *s = array;
	int n = 0;

	if (*s++ != '{')
		return -1;
	while (*s && *s != '}') {
		char *end;
		long v = strtol(s, &end, 10);

		if (end == s || v < 0 || v > 65535 || n >= max)
			return -1;
		out[n++] = (uint16_t)v;
		s = (*end == ',') ? end + 1 : end;
	}
	return n;
}

/* profile_format_scaled: value x 10^scale as an exact decimal string */
int profile_format_scaled(int64_t value, int scale, char *out, size_t outsz)
{
	char digits[32];
	uint64_t mag = value < 0 ? (uint64_t)(-(value + 1)) + 1 : (uint64_t)value;
	const char *sign = value < 0 ? "-" : "";
	static const char zeros[] = "0000000000";
	int len, n, frac = -scale;

	len = snprintf(digits, sizeof(digits), "%" PRIu64, mag);
	if (scale == 0)
		n = snprintf(out, outsz, "%s%s", sign, digits);
	else if (scale > 0)
		n = snprintf(out, outsz, "%s%s%.*s", sign, digits, scale, zeros);
	else if (len <= frac)
		n = snprintf(out, outsz, "%s0.%.*s%s", sign, frac - len, zeros, digits);
	else
		n = snprintf(out, outsz, "%s%.*s.%s", sign, len - frac, digits, digits + len - frac);
	return (n < 0 || (size_t)n >= outsz) ? -1 : 0;
}

/* raw32: combine two registers by word order */
static uint32_t raw32(const struct reg_def *r, const uint16_t *regs)
{
	return r->low_first ? ((uint32_t)regs[1] << 16 | regs[0]) : ((uint32_t)regs[0] << 16 | regs[1]);
}

/* profile_decode: the value of register r from its raw registers */
int profile_decode(const struct reg_def *r, const uint16_t *regs, char *out, size_t outsz)
{
	switch (r->type) {
	case RT_U16:
		return profile_format_scaled(regs[0], r->scale, out, outsz);
	case RT_I16:
		return profile_format_scaled((int16_t)regs[0], r->scale, out, outsz);
	case RT_U32:
		return profile_format_scaled(raw32(r, regs), r->scale, out, outsz);
	case RT_I32:
		return profile_format_scaled((int32_t)raw32(r, regs), r->scale, out, outsz);
	case RT_FLOAT: {
		uint32_t bits = raw32(r, regs);
		float f;

		memcpy(&f, &bits, sizeof(f));
		if (f != f)
			return -1;
		return snprintf(out, outsz, "%.3f", (double)f) >= (int)outsz ? -1 : 0;
	}
	}
	return -1;
}

/* profile_relay_state: "tripped", "closed" or NULL from read-back registers */
const char *profile_relay_state(const struct profile *p, const uint16_t *regs)
{
	uint32_t v = p->relay_read_count == 2 ? ((uint32_t)regs[0] << 16 | regs[1]) : regs[0];

	v &= p->relay_mask;
	if ((int64_t)v == p->tripped_value)
		return "tripped";
	if ((int64_t)v == p->closed_value)
		return "closed";
	return NULL;
}

/* reg_def_equal: the same register, or both absent */
static int reg_def_equal(const struct reg_def *a, const struct reg_def *b)
{
	if (a->present != b->present)
		return 0;
	return !a->present ||
	       (a->address == b->address && a->type == b->type && a->low_first == b->low_first && a->scale == b->scale);
}

/* values_equal: the first n values of two relay value lists (n < 0: none) */
static int values_equal(const uint16_t *a, const uint16_t *b, int n)
{
	for (int i = 0; i < n; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/* profile_equal: the same registers and relay behaviour, compared field by
 * field (never memcmp: padding and unused array slots hold anything) */
int profile_equal(const struct profile *a, const struct profile *b)
{
	if (strcmp(a->name, b->name) != 0)
		return 0;
	for (int m = 0; m < M_COUNT; m++)
		if (!reg_def_equal(&a->regs[m], &b->regs[m]))
			return 0;
	return a->relay_write_address == b->relay_write_address && a->trip_n == b->trip_n && a->close_n == b->close_n &&
	       values_equal(a->trip, b->trip, a->trip_n) && values_equal(a->close, b->close, a->close_n) &&
	       a->relay_read_address == b->relay_read_address && a->relay_read_count == b->relay_read_count &&
	       a->relay_mask == b->relay_mask && a->tripped_value == b->tripped_value &&
	       a->closed_value == b->closed_value;
}
