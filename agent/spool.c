/*-------------------------------------------------------------------------
 * agent/spool.c
 *     The spool is two files in the spool directory:
 *       spool.log  readings, one tab-separated line each, appended with
 *                  write + fsync before spool_append returns;
 *       spool.pos  the byte offset of the first reading not yet committed
 *                  to the database, replaced atomically (write, fsync,
 *                  rename) after each committed replay batch.
 *     A crash between a commit and the spool.pos update replays a batch
 *     twice, which prepay.reading skips (duplicates are no-ops).  When
 *     everything is consumed both files are emptied.
 *
 *     The log is bounded (SPOOL_MAX_BYTES).  Crossing SPOOL_WARN_PERCENT
 *     logs a warning and raises the warning flag, which stays up until the
 *     spool has drained (so no scrape of /metrics misses it).  An append
 *     that would pass the bound first thins the spool (spool_thin.c: per
 *     meter, the first, the last and every other reading in between are
 *     kept; registers are cumulative, so no energy is lost), as many
 *     passes as it takes.  Only when a pass drops nothing (two readings per
 *     meter left) or an I/O error stops it are the new readings refused.
 *     Thinning rewrites the unconsumed part of the log to spool.log.tmp
 *     (fsync), writes spool.pos = 0, then renames the copy over the log:
 *     a crash before the rename replays the old log from its start, whose
 *     consumed part the database skips as duplicates.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"
#include "spool.h"
#include "spool_thin.h"

static struct {
	char dir[512], log_path[600], pos_path[600], tmp_path[600], thin_path[600];
	int fd;
	int64_t size, pos, max;
	int warned; /* crossed SPOOL_WARN_PERCENT since last empty */
	uint64_t thinned, thinnings;
} sp = { .fd = -1 };

static void check_warning(void);

static int mkdir_p(const char *dir)
{
	char path[512];

	snprintf(path, sizeof(path), "%s", dir);
	for (char *p = path + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			mkdir(path, 0700);
			*p = '/';
		}
	return (mkdir(path, 0700) == 0 || errno == EEXIST) ? 0 : -1;
}

static int64_t read_pos(void)
{
	FILE *f = fopen(sp.pos_path, "r");
	long long pos = 0;

	if (!f)
		return 0;
	if (fscanf(f, "%lld", &pos) != 1)
		pos = 0;
	fclose(f);
	return pos;
}

static int write_pos(void)
{
	char buf[32];
	int fd = open(sp.tmp_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int len = snprintf(buf, sizeof(buf), "%" PRId64 "\n", sp.pos);

	if (fd < 0 || write(fd, buf, len) != len || fsync(fd) != 0) {
		log_error("spool: cannot write %s: %s", sp.tmp_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return rename(sp.tmp_path, sp.pos_path);
}

/* spool_open: open or create the spool in dir */
int spool_open(const char *dir, int64_t max_bytes)
{
	struct stat st;

	if (mkdir_p(dir) < 0) {
		log_error("spool: cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	snprintf(sp.log_path, sizeof(sp.log_path), "%s/spool.log", dir);
	snprintf(sp.pos_path, sizeof(sp.pos_path), "%s/spool.pos", dir);
	snprintf(sp.tmp_path, sizeof(sp.tmp_path), "%s/spool.pos.tmp", dir);
	snprintf(sp.thin_path, sizeof(sp.thin_path), "%s/spool.log.tmp", dir);
	snprintf(sp.dir, sizeof(sp.dir), "%s", dir);
	sp.fd = open(sp.log_path, O_RDWR | O_CREAT | O_APPEND, 0600);
	if (sp.fd < 0 || fstat(sp.fd, &st) < 0) {
		log_error("spool: cannot open %s: %s", sp.log_path, strerror(errno));
		return -1;
	}
	sp.size = st.st_size;
	sp.pos = read_pos();
	if (sp.pos > sp.size)
		sp.pos = sp.size;
	sp.max = max_bytes;
	if (spool_pending())
		log_warning("spool: %" PRId64 " bytes of readings from an earlier run wait for the database",
		            sp.size - sp.pos);
	check_warning();
	return 0;
}

void spool_close(void)
{
	if (sp.fd >= 0)
		close(sp.fd);
	sp.fd = -1;
}

static int format_line(const struct reading *r, char *buf, size_t size)
{
	return snprintf(buf, size, "%d\t%" PRId64 "\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r->site_id, r->meter_id,
	                r->read_at, r->value[M_ENERGY], r->value[M_SHARP], r->value[M_PEAK], r->value[M_FLAT],
	                r->value[M_VALLEY], r->value[M_POWER], r->relay);
}

/* check_warning: log once, and raise the flag, when the log passes the
 * warning level; the flag stays until the spool drains */
static void check_warning(void)
{
	if (sp.warned || sp.size * 100 < sp.max * SPOOL_WARN_PERCENT)
		return;
	log_warning("spool: %" PRId64 " of %" PRId64 " bytes used (over %d%%) while the database cannot take readings: "
	            "when full, the spool will be thinned (intermediate readings dropped, last registers kept)",
	            sp.size, sp.max, SPOOL_WARN_PERCENT);
	sp.warned = 1;
}

/* fsync_dir: make a rename in the spool directory durable */
static void fsync_dir(void)
{
	int fd = open(sp.dir, O_RDONLY | O_DIRECTORY);

	if (fd < 0 || fsync(fd) != 0)
		log_error("spool: cannot fsync %s: %s", sp.dir, strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* write_thinned: thin the unconsumed log into spool.log.tmp, durably */
static int write_thinned(struct thin_result *res)
{
	FILE *in = fopen(sp.log_path, "r"), *out = fopen(sp.thin_path, "w");
	int rc = (in && out) ? spool_thin(in, sp.pos, out, res) : -1;

	if (rc == 0 && (fflush(out) != 0 || fsync(fileno(out)) != 0))
		rc = -1;
	if (rc < 0)
		log_error("spool: cannot thin %s into %s: %s", sp.log_path, sp.thin_path, strerror(errno));
	if (in)
		fclose(in);
	if (out)
		fclose(out);
	return rc;
}

/* replace_log: the thinned copy becomes the log, read from its start */
static int replace_log(const struct thin_result *res)
{
	int fd;

	if (sp.pos != 0) {
		sp.pos = 0; /* first: a crash before the rename replays duplicates, never skips */
		if (write_pos() != 0)
			return -1;
	}
	if (rename(sp.thin_path, sp.log_path) != 0 || (fd = open(sp.log_path, O_RDWR | O_APPEND, 0600)) < 0) {
		log_error("spool: cannot replace %s by %s: %s", sp.log_path, sp.thin_path, strerror(errno));
		return -1;
	}
	fsync_dir();
	close(sp.fd);
	sp.fd = fd;
	sp.size = res->kept_bytes;
	return 0;
}

/* thin: one thinning pass; the number of readings dropped, -1 on error */
static int64_t thin(void)
{
	struct thin_result res;
	int64_t before = sp.size - sp.pos;

	if (write_thinned(&res) < 0) {
		unlink(sp.thin_path);
		return -1;
	}
	if (res.dropped == 0) {
		unlink(sp.thin_path);
		return 0;
	}
	if (replace_log(&res) < 0)
		return -1;
	sp.thinned += res.dropped;
	sp.thinnings++;
	log_warning("spool: full (bound %" PRId64 " bytes): thinned %" PRId64 " intermediate readings of %d meters, "
	            "%" PRId64 " -> %" PRId64 " bytes; each meter's first and last reading kept, no energy lost",
	            sp.max, res.dropped, res.meters, before, sp.size);
	return res.dropped;
}

/* make_room: thin until len more bytes fit; -1 if they cannot */
static int make_room(int64_t len)
{
	while (sp.size + len > sp.max)
		if (thin() <= 0)
			return -1;
	return 0;
}

/* spool_append: durably append n readings, thinning the spool first if
 * they would pass the bound; -1 if refused or on an I/O error */
int spool_append(const struct reading *r, int n)
{
	size_t cap = (size_t)n * 400 + 1, len = 0;
	char *buf = xmalloc(cap);

	for (int i = 0; i < n; i++)
		len += format_line(&r[i], buf + len, cap - len);
	if (make_room((int64_t)len) < 0) {
		log_error("spool: full (%" PRId64 " of %" PRId64
		          " bytes) and cannot be thinned further: %d readings refused",
		          sp.size, sp.max, n);
		free(buf);
		return -1;
	}
	if (write(sp.fd, buf, len) != (ssize_t)len || fsync(sp.fd) != 0) {
		log_error("spool: cannot write %s: %s", sp.log_path, strerror(errno));
		free(buf);
		return -1;
	}
	free(buf);
	sp.size += len;
	check_warning();
	return 0;
}

/* parse_line: one spool line (NUL-terminated, without the newline) */
static int parse_line(char *line, struct reading *r)
{
	char *field[10];
	int n = 0;

	memset(r, 0, sizeof(*r));
	field[n++] = line;
	for (char *p = line; *p && n < 10; p++)
		if (*p == '\t') {
			*p = '\0';
			field[n++] = p + 1;
		}
	if (n != 10)
		return -1;
	r->site_id = atoi(field[0]);
	r->meter_id = atoll(field[1]);
	snprintf(r->read_at, sizeof(r->read_at), "%s", field[2]);
	for (int i = 0; i < M_COUNT; i++)
		snprintf(r->value[i], VALUE_LEN, "%s", field[3 + i]);
	snprintf(r->relay, sizeof(r->relay), "%s", field[9]);
	return 0;
}

/* spool_peek: up to max readings from the oldest on, and the bytes they span */
int spool_peek(struct reading *out, int max, size_t *bytes)
{
	size_t cap = (size_t)max * 400, got;
	char *buf = xmalloc(cap + 1), *p, *nl;
	ssize_t rd = pread(sp.fd, buf, cap, sp.pos);
	int n = 0;

	*bytes = 0;
	if (rd <= 0) {
		free(buf);
		return 0;
	}
	got = rd;
	buf[got] = '\0';
	for (p = buf; n < max && (nl = memchr(p, '\n', got - (p - buf))); p = nl + 1) {
		*nl = '\0';
		if (parse_line(p, &out[n]) == 0)
			n++;
		else
			log_error("spool: skipping a malformed line at offset %" PRId64, sp.pos + (int64_t)(p - buf));
		*bytes = nl + 1 - buf;
	}
	free(buf);
	return n;
}

/* spool_consume: the first bytes were committed; forget them durably */
int spool_consume(size_t bytes)
{
	sp.pos += bytes;
	if (sp.pos >= sp.size) {
		if (ftruncate(sp.fd, 0) != 0 || fsync(sp.fd) != 0)
			log_error("spool: cannot truncate %s: %s", sp.log_path, strerror(errno));
		else
			sp.size = sp.pos = 0;
		sp.warned = 0;
	}
	return write_pos();
}

int64_t spool_bytes(void)
{
	return sp.size - sp.pos;
}

/* spool_stats: the spool's figures for /metrics */
void spool_stats(struct spool_stats *out)
{
	out->bytes = sp.size - sp.pos;
	out->max_bytes = sp.max;
	out->warning = sp.warned;
	out->thinned = sp.thinned;
	out->thinnings = sp.thinnings;
}

int spool_pending(void)
{
	return sp.size > sp.pos;
}
