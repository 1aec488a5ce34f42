/*-------------------------------------------------------------------------
 * test/sim/sim_history.c
 *	  The read log (--history FILE): one line per served energy read,
 *	  "<epoch_ms> <gateway> <unit> <energy_centikwh> <relay>", relay 1 when
 *	  closed (supplying) and 0 when tripped, flushed line by line so a test
 *	  can read it while the simulator runs.
 *
 * Locking: history_lock serialises the gateway threads' lines; it is taken
 * with no gateway lock held.  history_open and history_close run in the
 * main thread while no gateway thread runs.
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "sim.h"

static FILE *history_file;
static pthread_mutex_t history_lock = PTHREAD_MUTEX_INITIALIZER;

int history_open(const char *path)
{
	history_file = fopen(path, "a");
	return history_file ? 0 : -1;
}

/*
 * epoch_ms: wall-clock time in milliseconds since 1970.
 */
static int64_t epoch_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void history_write(int gateway, int unit, int64_t energy_ck, bool tripped)
{
	if (history_file == NULL)
		return;
	pthread_mutex_lock(&history_lock);
	fprintf(history_file, "%" PRId64 " %d %d %" PRId64 " %d\n", epoch_ms(), gateway, unit, energy_ck,
	        tripped ? 0 : 1);
	fflush(history_file);
	pthread_mutex_unlock(&history_lock);
}

void history_close(void)
{
	if (history_file)
		fclose(history_file);
	history_file = NULL;
}
