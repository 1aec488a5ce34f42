/*-------------------------------------------------------------------------
 * test/sim/sim_meter.c
 *	  The energy model of a simulated meter: exact integer energy that grows
 *	  with the meter's load while its relay is closed.
 *
 * Energy is kept as whole centi-kWh (the 0.01 kWh unit of the registers)
 * plus a remainder in milli-watt-seconds (mJ, 0 <= rest < 36,000,000), so no
 * energy is ever lost to rounding and no floating point is involved.  A
 * meter is advanced lazily, whenever it is touched: the energy of the
 * elapsed time (load_w x elapsed ms x speedup, in mJ) is added at once.
 *
 * Each advance puts its whole centi-kWh into one time-of-use register,
 * chosen by the local wall-clock hour of the advance (tou_of_hour), so the
 * four TOU registers always add up to the total.
 *
 * Locking: every function here works on one meter and expects the caller to
 * hold that meter's gateway lock.  sim_speedup is written once, before any
 * thread starts.
 *-------------------------------------------------------------------------
 */
#include <time.h>

#include "sim.h"

int64_t sim_speedup = 1;

/*
 * sim_now_ms: monotonic clock in milliseconds.
 */
int64_t sim_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * tou_of_hour: the fixed time-of-use schedule (local hour -> register).
 *	 valley 23:00-07:00, flat 07-08, 11-17 and 21-23,
 *	 peak 08-11 and 17-19, sharp 19-21.
 */
enum sim_tou tou_of_hour(int hour)
{
	if (hour >= 23 || hour < 7)
		return TOU_VALLEY;
	if (hour >= 19 && hour < 21)
		return TOU_SHARP;
	if ((hour >= 8 && hour < 11) || (hour >= 17 && hour < 19))
		return TOU_PEAK;
	return TOU_FLAT;
}

/*
 * local_hour: the local wall-clock hour, for the TOU schedule.
 */
static int local_hour(void)
{
	time_t now = time(NULL);
	struct tm tm;

	localtime_r(&now, &tm);
	return tm.tm_hour;
}

/*
 * meter_init: a closed meter at initial_ck centi-kWh.  The starting energy is
 * split 10% sharp, 30% peak, 30% valley and the rest flat.
 */
void meter_init(struct sim_meter *m, int64_t initial_ck, int32_t load_w)
{
	*m = (struct sim_meter){ 0 };
	m->energy_ck = initial_ck;
	m->tou_ck[TOU_SHARP] = initial_ck / 10;
	m->tou_ck[TOU_PEAK] = initial_ck * 3 / 10;
	m->tou_ck[TOU_VALLEY] = initial_ck * 3 / 10;
	m->tou_ck[TOU_FLAT] = initial_ck - m->tou_ck[TOU_SHARP] - m->tou_ck[TOU_PEAK] - m->tou_ck[TOU_VALLEY];
	m->load_w = load_w;
	m->last_ms = sim_now_ms();
}

/*
 * meter_advance: add the energy used since the last advance.  Nothing is
 * used while the relay is tripped.  128-bit intermediate: load x ms x
 * speedup may exceed 64 bits after a long idle time.
 */
void meter_advance(struct sim_meter *m, int64_t now_ms)
{
	int64_t elapsed = now_ms - m->last_ms;
	__int128 mws;
	int64_t whole;

	if (elapsed <= 0)
		return;
	m->last_ms = now_ms;
	if (m->tripped || m->load_w <= 0)
		return;
	mws = (__int128)m->load_w * elapsed * sim_speedup + m->rest_mws;
	whole = (int64_t)(mws / SIM_MWS_PER_CENTIKWH);
	m->rest_mws = (int64_t)(mws % SIM_MWS_PER_CENTIKWH);
	if (whole == 0)
		return;
	m->energy_ck += whole;
	m->tou_ck[tou_of_hour(local_hour())] += whole;
}

/*
 * meter_set_relay: trip or close, accounting the energy used up to now
 * under the old state first.
 */
void meter_set_relay(struct sim_meter *m, bool tripped)
{
	meter_advance(m, sim_now_ms());
	m->tripped = tripped;
}

/*
 * meter_set_load: change the load from now on.
 */
void meter_set_load(struct sim_meter *m, int32_t load_w)
{
	meter_advance(m, sim_now_ms());
	m->load_w = load_w;
}

/*
 * meter_power_w: the active power drawn now, 0 while tripped.
 */
int32_t meter_power_w(const struct sim_meter *m)
{
	return m->tripped ? 0 : m->load_w;
}

/*
 * meter_current_centiamps: current at a fixed 220.0 V and unit power factor.
 */
uint32_t meter_current_centiamps(const struct sim_meter *m)
{
	return (uint32_t)((int64_t)meter_power_w(m) * 100 / 220);
}
