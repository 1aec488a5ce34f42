/*-------------------------------------------------------------------------
 * agent/spool_thin.c
 *     Thinning a full spool.  A reading carries cumulative registers
 *     (total and TOU energy), so dropping one between two others loses
 *     time resolution but no energy: the next reading kept still carries
 *     the total, and the database charges the whole interval (split at
 *     tariff boundaries) from it.  So when the spool is full, each meter
 *     keeps its first and its last spooled reading and every other one in
 *     between (its 1st, 3rd, 5th, ... and last); the others are dropped.
 *     Each pass halves a meter's resolution and keeps its time order;
 *     repeated passes degrade evenly.
 *
 *     Two streaming passes over the unconsumed part of the log: count the
 *     readings of each meter (site_id, meter_id: the first two fields of a
 *     line), then copy the lines kept.  Memory is one small entry per
 *     meter, whatever the size of the spool.  A line without a meter key is
 *     kept as it is (the replay reports it); a last line without its
 *     newline (a write cut short by a crash) is dropped and reported.
 *
 * Locking: loop thread only (called by spool.c).
 *-------------------------------------------------------------------------
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "alloc.h"
#include "log.h"
#include "spool_thin.h"

struct meter_count {
	int site_id;
	int64_t meter_id;
	int64_t count; /* readings of the meter in the spool */
	int64_t seen;  /* readings of it copied or dropped so far */
	int used;
};

struct meter_table {
	struct meter_count *slot;
	size_t cap, n; /* cap is a power of two */
};

static size_t hash_key(int site_id, int64_t meter_id)
{
	uint64_t h = (uint64_t)meter_id * UINT64_C(0x9E3779B97F4A7C15) ^ (uint64_t)(uint32_t)site_id;

	return (size_t)(h ^ (h >> 29));
}

static struct meter_count *table_find(struct meter_table *t, int site_id, int64_t meter_id);

/* table_grow: double the table (rehash every entry) */
static void table_grow(struct meter_table *t)
{
	struct meter_table bigger = { xcalloc(t->cap ? 2 * t->cap : 1024, sizeof(struct meter_count)),
		                      t->cap ? 2 * t->cap : 1024, 0 };

	for (size_t i = 0; i < t->cap; i++)
		if (t->slot[i].used)
			*table_find(&bigger, t->slot[i].site_id, t->slot[i].meter_id) = t->slot[i];
	free(t->slot);
	*t = bigger;
}

/* table_find: the entry of a meter, created empty (used) if absent */
static struct meter_count *table_find(struct meter_table *t, int site_id, int64_t meter_id)
{
	size_t i;

	if (2 * (t->n + 1) > t->cap)
		table_grow(t);
	for (i = hash_key(site_id, meter_id) & (t->cap - 1); t->slot[i].used; i = (i + 1) & (t->cap - 1))
		if (t->slot[i].site_id == site_id && t->slot[i].meter_id == meter_id)
			return &t->slot[i];
	t->slot[i] = (struct meter_count){ .site_id = site_id, .meter_id = meter_id, .used = 1 };
	t->n++;
	return &t->slot[i];
}

/* line_key: the meter of a spool line; 0 if the line has no meter key */
static int line_key(const char *line, int *site_id, int64_t *meter_id)
{
	char *end;

	*site_id = (int)strtol(line, &end, 10);
	if (end == line || *end != '\t')
		return 0;
	line = end + 1;
	*meter_id = strtoll(line, &end, 10);
	return end != line && *end == '\t';
}

/* each_line: call fn for every line from offset from on, with its length
 * (a last line cut short has no newline), until fn returns nonzero; -1 on
 * a read error */
static int each_line(FILE *in, int64_t from, int (*fn)(const char *line, ssize_t len, void *arg), void *arg)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;

	if (fseeko(in, from, SEEK_SET) != 0)
		return -1;
	while ((len = getline(&line, &cap, in)) > 0)
		if (fn(line, len, arg) != 0)
			break;
	free(line);
	return ferror(in) ? -1 : 0;
}

/* count_line: pass 1, one more reading for the meter of a whole line */
static int count_line(const char *line, ssize_t len, void *arg)
{
	int site_id;
	int64_t meter_id;

	if (line[len - 1] == '\n' && line_key(line, &site_id, &meter_id))
		table_find(arg, site_id, meter_id)->count++;
	return 0;
}

/* keep: whether a meter's idx-th reading (of count) survives this pass */
static int keep(int64_t idx, int64_t count)
{
	return idx % 2 == 0 || idx == count - 1;
}

struct copy_pass {
	FILE *out;
	struct meter_table *t;
	struct thin_result *res;
};

/* copy_line: pass 2, copy a line to out if it is kept; count what goes */
static int copy_line(const char *line, ssize_t len, void *arg)
{
	struct copy_pass *c = arg;
	int site_id;
	int64_t meter_id;

	if (line[len - 1] != '\n') {
		log_error("spool: dropping a last line cut short (%zd bytes, no newline)", len);
		return 0;
	}
	if (line_key(line, &site_id, &meter_id)) {
		struct meter_count *m = table_find(c->t, site_id, meter_id);

		if (!keep(m->seen++, m->count)) {
			c->res->dropped++;
			return 0;
		}
	}
	if (fwrite(line, 1, len, c->out) != (size_t)len)
		return 1;
	c->res->kept_bytes += len;
	return 0;
}

/* spool_thin: see spool_thin.h */
int spool_thin(FILE *in, int64_t from, FILE *out, struct thin_result *res)
{
	struct meter_table t = { NULL, 0, 0 };
	int rc;

	memset(res, 0, sizeof(*res));
	rc = each_line(in, from, count_line, &t);
	if (rc == 0) {
		struct copy_pass c = { out, &t, res };

		rc = each_line(in, from, copy_line, &c);
		if (ferror(out))
			rc = -1;
	}
	res->meters = (int)t.n;
	free(t.slot);
	return rc;
}
