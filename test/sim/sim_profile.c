/*-------------------------------------------------------------------------
 * test/sim/sim_profile.c
 *	  The register maps a simulated meter answers with: ddsy1352 (Acrel
 *	  DDSY1352 single-phase prepaid meter) and adf400l (one single-phase user
 *	  of an Acrel ADF400L multi-user meter).  See shared REGISTER-MAPS.md and
 *	  docs/SIMULATOR.md.  Registers are 16-bit, U32 values high word first.
 *
 * A profile maps one register address to its value (read) and applies a
 * write of consecutive registers (FC16), returning 0 or a Modbus exception
 * code.  Unmapped addresses give exception 02, a bad value 03.
 *
 * Locking: the caller holds the meter's gateway lock and has advanced the
 * meter to now.
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "sim.h"

/* ddsy1352 */
#define DDSY_ENERGY   0x0000 /* U32 x5: total, sharp, peak, flat, valley */
#define DDSY_PASSWORD 0x000A
#define DDSY_VOLTAGE  0x000B
#define DDSY_CURRENT  0x000C
#define DDSY_POWER    0x000D
#define DDSY_RESERVED 0x000E /* not in the manual; reads 0 so 0000-0010 is one block */
#define DDSY_APPARENT 0x000F
#define DDSY_PF       0x0010
#define DDSY_RELAY    0x0057 /* {enable, state} */

/* adf400l, single-phase user area */
#define ADF_VOLTAGE     0x0300
#define ADF_CURRENT     0x0301
#define ADF_POWER       0x0302
#define ADF_REACTIVE    0x0303
#define ADF_PF          0x0304
#define ADF_FREQUENCY   0x0305
#define ADF_ENERGY      0x0306 /* U32 */
#define ADF_REACTIVE_E  0x0308 /* U32 */
#define ADF_TOU         0x0400 /* U32 x4: tip, peak, flat, valley */
#define ADF_RELAY       0x0801 /* forced-control word */
#define ADF_RELAY_TRIP  0x0100
#define ADF_RELAY_CLOSE 0x0001

/*
 * u32_word: word `which` (0 = high, 1 = low) of a U32 register pair; the
 * registers wrap like a real meter's at 2^32 centi-kWh.
 */
static uint16_t u32_word(int64_t value, int which)
{
	uint32_t v = (uint32_t)value;

	return which == 0 ? (uint16_t)(v >> 16) : (uint16_t)(v & 0xFFFF);
}

/*
 * i16_power: power in 0.001 kW (= W) as an INT16 register, saturated.
 */
static uint16_t i16_power(const struct sim_meter *m)
{
	int32_t w = meter_power_w(m);

	return (uint16_t)(int16_t)(w > INT16_MAX ? INT16_MAX : w);
}

/*
 * ddsy_energy_register: total or one TOU register, by its pair index 0..4.
 */
static int64_t ddsy_energy_register(const struct sim_meter *m, int pair)
{
	return pair == 0 ? m->energy_ck : m->tou_ck[pair - 1];
}

static bool ddsy_read(struct sim_meter *m, int addr, uint16_t *value)
{
	if (addr >= DDSY_ENERGY && addr < DDSY_PASSWORD) {
		*value = u32_word(ddsy_energy_register(m, addr / 2), addr % 2);
		return true;
	}
	switch (addr) {
	case DDSY_PASSWORD:
		*value = m->password;
		return true;
	case DDSY_VOLTAGE:
		*value = 2200;
		return true;
	case DDSY_CURRENT:
		*value = (uint16_t)meter_current_centiamps(m);
		return true;
	case DDSY_POWER:
	case DDSY_APPARENT:
		*value = i16_power(m);
		return true;
	case DDSY_RESERVED:
		*value = 0;
		return true;
	case DDSY_PF:
		*value = 1000;
		return true;
	case DDSY_RELAY:
	case DDSY_RELAY + 1:
		*value = m->relay_regs[addr - DDSY_RELAY];
		return true;
	}
	return false;
}

/*
 * ddsy_write_relay: {1,1} trips, {1,0} forces closed, {0,x} hands the relay
 * back to the meter's own logic, which the simulator treats as closed.
 */
static int ddsy_write_relay(struct sim_meter *m, const uint16_t *values)
{
	bool trip;

	if (values[0] > 1 || values[1] > 1)
		return EXC_ILLEGAL_VALUE;
	trip = values[0] == 1 && values[1] == 1;
	meter_set_relay(m, trip);
	if (trip)
		m->trips++;
	else
		m->closes++;
	m->relay_regs[0] = values[0];
	m->relay_regs[1] = values[1];
	return 0;
}

static int ddsy_write(struct sim_meter *m, int addr, int qty, const uint16_t *values)
{
	if (addr == DDSY_RELAY && qty == 2)
		return ddsy_write_relay(m, values);
	if (addr == DDSY_PASSWORD && qty == 1) {
		if (values[0] > 9999)
			return EXC_ILLEGAL_VALUE;
		m->password = values[0];
		return 0;
	}
	return EXC_ILLEGAL_ADDRESS;
}

/*
 * adf_read_measure: the single-phase measurement block 0300H-0309H.
 */
static bool adf_read_measure(struct sim_meter *m, int addr, uint16_t *value)
{
	switch (addr) {
	case ADF_VOLTAGE:
		*value = 2200;
		return true;
	case ADF_CURRENT:
		*value = (uint16_t)meter_current_centiamps(m);
		return true;
	case ADF_POWER:
		*value = i16_power(m);
		return true;
	case ADF_REACTIVE:
	case ADF_REACTIVE_E:
	case ADF_REACTIVE_E + 1:
		*value = 0;
		return true;
	case ADF_PF:
		*value = 1000;
		return true;
	case ADF_FREQUENCY:
		*value = 5000;
		return true;
	case ADF_ENERGY:
	case ADF_ENERGY + 1:
		*value = u32_word(m->energy_ck, addr - ADF_ENERGY);
		return true;
	}
	return false;
}

static bool adf_read(struct sim_meter *m, int addr, uint16_t *value)
{
	if (addr >= ADF_TOU && addr < ADF_TOU + 2 * TOU_COUNT) {
		*value = u32_word(m->tou_ck[(addr - ADF_TOU) / 2], (addr - ADF_TOU) % 2);
		return true;
	}
	if (addr == ADF_RELAY) {
		*value = m->tripped ? ADF_RELAY_TRIP : ADF_RELAY_CLOSE;
		return true;
	}
	return adf_read_measure(m, addr, value);
}

/*
 * adf_write: only the forced-control word is writable: 0x0100 opens (trips),
 * 0x0001 closes.  The byte meaning is unverified on hardware.
 */
static int adf_write(struct sim_meter *m, int addr, int qty, const uint16_t *values)
{
	if (addr != ADF_RELAY || qty != 1)
		return EXC_ILLEGAL_ADDRESS;
	if (values[0] == ADF_RELAY_TRIP) {
		meter_set_relay(m, true);
		m->trips++;
	} else if (values[0] == ADF_RELAY_CLOSE) {
		meter_set_relay(m, false);
		m->closes++;
	} else
		return EXC_ILLEGAL_VALUE;
	m->relay_regs[0] = values[0];
	return 0;
}

static const struct sim_profile profiles[] = {
	{ "ddsy1352", ddsy_read, ddsy_write, DDSY_ENERGY },
	{ "adf400l", adf_read, adf_write, ADF_ENERGY },
};

/*
 * profile_find: the profile of that name, or NULL.
 */
const struct sim_profile *profile_find(const char *name)
{
	for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
		if (strcmp(profiles[i].name, name) == 0)
			return &profiles[i];
	return NULL;
}

/*
 * profile_read: qty registers from addr into out; 0, or exception 02 when any
 * of them is unmapped.
 */
int profile_read(const struct sim_profile *p, struct sim_meter *m, int addr, int qty, uint16_t *out)
{
	for (int i = 0; i < qty; i++)
		if (!p->read(m, addr + i, &out[i]))
			return EXC_ILLEGAL_ADDRESS;
	return 0;
}
