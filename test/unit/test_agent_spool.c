/*-------------------------------------------------------------------------
 *
 * test/unit/test_agent_spool.c
 *	  Unit test of agent/spool.c and agent/spool_thin.c, without a
 *	  database: a spool with a small bound warns at 80 %, is thinned when
 *	  an append would pass the bound and never grows past it; thinning
 *	  keeps each meter's first and last reading and its time order, and
 *	  drops exactly what it counts; a spool partly replayed (spool.pos > 0)
 *	  is thinned from its first unconsumed reading and replays correctly;
 *	  a spool that cannot be thinned further refuses.  Run by test/suite.sh.
 *
 * Copyright (c) 2026, the prepay authors
 *
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool.h"
#include "check.h"

#define METERS 5
#define MAX_READINGS 4000

/* reading: meter m's i-th reading (energy i, so order is visible) */
static struct reading
reading(int m, int i)
{
	struct reading r;

	memset(&r, 0, sizeof(r));
	r.site_id = 1;
	r.meter_id = 100 + m;
	snprintf(r.read_at, sizeof(r.read_at), "2026-01-01 00:%02d:%02d.%06d+00", i / 3600 % 60, i / 60 % 60, i % 60);
	snprintf(r.value[M_ENERGY], VALUE_LEN, "%d.00", i);
	snprintf(r.relay, sizeof(r.relay), "closed");
	return r;
}

/* replayed: what a replay of the whole spool delivers, per meter, as
 * energy values in order; returns the number of readings */
static int
replay(int values[METERS][MAX_READINGS], int counts[METERS])
{
	struct reading batch[50];
	size_t		bytes;
	int			n,
				total = 0;

	memset(counts, 0, METERS * sizeof(int));
	while ((n = spool_peek(batch, 50, &bytes)) > 0)
	{
		for (int k = 0; k < n; k++)
		{
			int			m = (int) batch[k].meter_id - 100;

			values[m][counts[m]++] = atoi(batch[k].value[M_ENERGY]);
		}
		total += n;
		spool_consume(bytes);
	}
	return total;
}

/* A small spool: warning, thinning, the bound, what a replay delivers */
static void
test_bound_and_thinning(const char *dir)
{
	static int	values[METERS][MAX_READINGS];
	int			counts[METERS];
	struct spool_stats st;
	int			appended = 0,
				warned_before_thinning = 0,
				rounds = 300;

	CHECK(spool_open(dir, 16384) == 0);
	for (int i = 0; i < rounds; i++)
		for (int m = 0; m < METERS; m++)
		{
			struct reading r = reading(m, i);

			CHECK(spool_append(&r, 1) == 0);
			appended++;
			spool_stats(&st);
			CHECK(st.bytes <= st.max_bytes);
			if (st.warning && st.thinnings == 0)
				warned_before_thinning = 1;
		}
	spool_stats(&st);
	CHECK(warned_before_thinning);
	CHECK(st.warning);
	CHECK(st.thinnings >= 2);
	CHECK(replay(values, counts) == appended - (int) st.thinned);
	for (int m = 0; m < METERS; m++)
	{
		CHECK(counts[m] >= 2);
		CHECK(values[m][0] == 0);	/* the first reading kept */
		CHECK(values[m][counts[m] - 1] == rounds - 1);	/* and the last */
		for (int k = 1; k < counts[m]; k++)
			CHECK(values[m][k] > values[m][k - 1]);	/* in order, no duplicate */
	}
	spool_stats(&st);
	CHECK(st.bytes == 0);
	CHECK(!st.warning);			/* drained: the warning is over */
	spool_close();
}

/* A spool partly replayed, then thinned: the replay goes on from the
 * first reading not consumed, nothing consumed comes back */
static void
test_thin_after_partial_replay(const char *dir)
{
	static int	values[METERS][MAX_READINGS];
	int			counts[METERS];
	struct reading batch[7];
	size_t		bytes;
	struct spool_stats st;

	CHECK(spool_open(dir, 16384) == 0);
	for (int i = 0; i < 40; i++)
		for (int m = 0; m < METERS; m++)
		{
			struct reading r = reading(m, i);

			CHECK(spool_append(&r, 1) == 0);
		}
	CHECK(spool_peek(batch, 7, &bytes) == 7);	/* meters 0..4 at 0, 0..1 at 1 */
	CHECK(spool_consume(bytes) == 0);
	for (int i = 40; i < 200; i++)
		for (int m = 0; m < METERS; m++)
		{
			struct reading r = reading(m, i);

			CHECK(spool_append(&r, 1) == 0);
		}
	spool_stats(&st);
	CHECK(st.thinnings >= 1);
	replay(values, counts);
	for (int m = 0; m < METERS; m++)
	{
		CHECK(values[m][0] == (m < 2 ? 2 : 1));	/* first unconsumed reading kept */
		CHECK(values[m][counts[m] - 1] == 199);
		for (int k = 1; k < counts[m]; k++)
			CHECK(values[m][k] > values[m][k - 1]);
	}
	spool_close();
}

/* Two readings per meter and no room: nothing to thin, refused */
static void
test_refused_when_nothing_to_thin(const char *dir)
{
	struct reading r[40];
	struct spool_stats st;

	CHECK(spool_open(dir, 2048) == 0);
	for (int k = 0; k < 40; k++)
		r[k] = reading(k % METERS, k / METERS);
	CHECK(spool_append(r, 10) == 0);	/* two readings of each meter */
	CHECK(spool_append(r + 10, 30) == -1);
	spool_stats(&st);
	CHECK(st.bytes > 0 && st.bytes <= 2048);
	spool_close();
}

int
main(void)
{
	char		dir[] = "/tmp/prepay-spool-test.XXXXXX";
	char		cmd[64];

	if (!mkdtemp(dir))
		return 1;
	test_bound_and_thinning(dir);
	test_thin_after_partial_replay(dir);
	test_refused_when_nothing_to_thin(dir);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return check_report("test_agent_spool");
}
