/*-------------------------------------------------------------------------
 * agent/profile.h
 *     Device profiles as the agent uses them: where each value lives, how
 *     to decode it exactly, how to move the relay and read it back.
 *
 * Locking: a profile is plain data copied into each meter; the functions
 * are pure and may run on any thread.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_PROFILE_H
#define AGENT_PROFILE_H

#include <stddef.h>
#include <stdint.h>

enum meaning { M_ENERGY, M_SHARP, M_PEAK, M_FLAT, M_VALLEY, M_POWER, M_COUNT };
enum reg_type { RT_U16, RT_I16, RT_U32, RT_I32, RT_FLOAT };

#define RELAY_MAX_VALUES 8
#define VALUE_LEN        32

struct reg_def {
	int present;
	int address;
	enum reg_type type;
	int low_first; /* word order of 32-bit values */
	int scale;     /* value = integer x 10^scale */
};

struct profile {
	char name[64];
	struct reg_def regs[M_COUNT];
	int relay_write_address; /* -1: no remote relay */
	int trip_n, close_n;
	uint16_t trip[RELAY_MAX_VALUES], close[RELAY_MAX_VALUES];
	int relay_read_address; /* -1: relay state cannot be read */
	int relay_read_count;
	uint32_t relay_mask;
	int64_t tripped_value, closed_value;
};

int profile_meaning(const char *name);
int profile_reg_type(const char *name);
int profile_reg_count(enum reg_type t);
int profile_parse_values(const char *array, uint16_t *out, int max);
int profile_format_scaled(int64_t value, int scale, char *out, size_t outsz);
int profile_decode(const struct reg_def *r, const uint16_t *regs, char *out, size_t outsz);
const char *profile_relay_state(const struct profile *p, const uint16_t *regs);
int profile_equal(const struct profile *a, const struct profile *b);

#endif
