/*-------------------------------------------------------------------------
 * agent/catalog_cache.c
 *     The last good catalog, kept in the spool directory as catalog.cache,
 *     so that an agent started while the database is unreachable polls and
 *     spools anyway.  The file holds the rows of prepay.agent_catalog() as
 *     they came from the database:
 *
 *       prepay-agent catalog cache 1      (format line)
 *       <agent id>
 *       <column names, tab-separated>
 *       <one line per row: fields tab-separated, COPY text escaping,
 *        \N for NULL>
 *
 *     Reading it rebuilds a PGresult (PQmakeEmptyPGresult,
 *     PQsetResultAttrs, PQsetvalue) for catalog_from_result, so the cache
 *     and the database share one parser and one shape check.  A cache
 *     written for another agent id, or in another format, is ignored.
 *     Written to catalog.cache.tmp, fsync, rename: a crash leaves the old
 *     cache or the new one, never a mix.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog_cache.h"
#include "log.h"

#define CACHE_FORMAT      "prepay-agent catalog cache 1"
#define CACHE_MAX_COLUMNS 64

/* COPY text escaping: special[i] is written as a backslash and escape[i] */
static const char special[] = "\\\t\n\r", escape[] = "\\tnr";

/* write_field: one value in COPY text escaping (NULL is \N) */
static void write_field(FILE *f, const char *v)
{
	if (!v) {
		fputs("\\N", f);
		return;
	}
	for (; *v; v++) {
		const char *s = strchr(special, *v);

		if (s) {
			fputc('\\', f);
			fputc(escape[s - special], f);
		} else
			fputc(*v, f);
	}
}

/* write_cache: the whole cache to f */
static void write_cache(FILE *f, const char *agent_id, const PGresult *res)
{
	int cols = PQnfields(res), rows = PQntuples(res);

	fprintf(f, "%s\n", CACHE_FORMAT);
	write_field(f, agent_id);
	fputc('\n', f);
	for (int c = 0; c < cols; c++) {
		if (c > 0)
			fputc('\t', f);
		write_field(f, PQfname(res, c));
	}
	fputc('\n', f);
	for (int r = 0; r < rows; r++) {
		for (int c = 0; c < cols; c++) {
			if (c > 0)
				fputc('\t', f);
			write_field(f, PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c));
		}
		fputc('\n', f);
	}
}

/* catalog_cache_save: see catalog_cache.h */
int catalog_cache_save(const char *dir, const char *agent_id, const PGresult *res)
{
	char path[600], tmp[600];
	FILE *f;
	int rc = 0;

	snprintf(path, sizeof(path), "%s/catalog.cache", dir);
	snprintf(tmp, sizeof(tmp), "%s/catalog.cache.tmp", dir);
	if (!(f = fopen(tmp, "w"))) {
		log_error("catalog cache: cannot write %s: %s", tmp, strerror(errno));
		return -1;
	}
	write_cache(f, agent_id, res);
	if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0)
		rc = -1;
	if (fclose(f) != 0 || rc < 0 || rename(tmp, path) != 0) {
		log_error("catalog cache: cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	log_debug("catalog cache: %d rows written to %s", PQntuples(res), path);
	return 0;
}

/* unescape: undo write_field in place; 1 if the field is NULL */
static int unescape(char *s)
{
	char *out = s;
	const char *e;

	if (strcmp(s, "\\N") == 0)
		return 1;
	for (; *s; s++) {
		if (*s != '\\' || !s[1]) {
			*out++ = *s;
			continue;
		}
		s++;
		e = strchr(escape, *s);
		*out++ = e ? special[e - escape] : *s;
	}
	*out = '\0';
	return 0;
}

/* split_line: cut a line (newline removed) at its tabs; the field count */
static int split_line(char *line, char **field, int max)
{
	int n = 0;

	line[strcspn(line, "\n")] = '\0';
	field[n++] = line;
	for (char *p = line; *p; p++)
		if (*p == '\t') {
			if (n == max)
				return -1;
			*p = '\0';
			field[n++] = p + 1;
		}
	return n;
}

/* read_columns: the column line as the result's (text) attributes */
static int read_columns(PGresult *res, char *line)
{
	char *name[CACHE_MAX_COLUMNS];
	PGresAttDesc att[CACHE_MAX_COLUMNS];
	int n = split_line(line, name, CACHE_MAX_COLUMNS);

	if (n <= 0)
		return -1;
	memset(att, 0, sizeof(att));
	for (int c = 0; c < n; c++) {
		unescape(name[c]);
		att[c].name = name[c];
		att[c].typid = 25; /* text: the catalog parser reads every value as text */
		att[c].typlen = -1;
		att[c].atttypmod = -1;
	}
	return PQsetResultAttrs(res, n, att) ? n : -1;
}

/* read_row: one row line appended to the result */
static int read_row(PGresult *res, char *line, int cols)
{
	char *field[CACHE_MAX_COLUMNS];
	int row = PQntuples(res);

	if (split_line(line, field, CACHE_MAX_COLUMNS) != cols)
		return -1;
	for (int c = 0; c < cols; c++) {
		int is_null = unescape(field[c]);

		if (!PQsetvalue(res, row, c, is_null ? NULL : field[c], is_null ? -1 : (int)strlen(field[c])))
			return -1;
	}
	return 0;
}

/* same_agent: whether the agent id line names agent_id */
static int same_agent(char *line, const char *agent_id)
{
	line[strcspn(line, "\n")] = '\0';
	return !unescape(line) && strcmp(line, agent_id) == 0;
}

/* read_cache: the rows of the cache in f, or NULL (reason logged) */
static PGresult *read_cache(FILE *f, const char *path, const char *agent_id)
{
	char *line = NULL;
	size_t cap = 0;
	int cols = -1;
	PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	const char *why = NULL;

	if (getline(&line, &cap, f) <= 0 || strcmp(line, CACHE_FORMAT "\n") != 0)
		why = "not a catalog cache of this version";
	else if (getline(&line, &cap, f) <= 0 || !same_agent(line, agent_id))
		why = "written for another agent id";
	else if (!res || getline(&line, &cap, f) <= 0 || (cols = read_columns(res, line)) < 0)
		why = "no column line";
	while (!why && getline(&line, &cap, f) > 0)
		if (read_row(res, line, cols) < 0)
			why = "a malformed row";
	free(line);
	if (!why)
		return res;
	log_warning("catalog cache: %s ignored: %s", path, why);
	PQclear(res);
	return NULL;
}

/* catalog_cache_load: see catalog_cache.h */
struct catalog *catalog_cache_load(const char *dir, const char *agent_id, time_t *saved_at)
{
	char path[600];
	struct stat st;
	FILE *f;
	PGresult *res;
	struct catalog *cat;

	snprintf(path, sizeof(path), "%s/catalog.cache", dir);
	if (!(f = fopen(path, "r"))) {
		if (errno != ENOENT)
			log_error("catalog cache: cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	*saved_at = fstat(fileno(f), &st) == 0 ? st.st_mtime : 0;
	res = read_cache(f, path, agent_id);
	fclose(f);
	if (!res)
		return NULL;
	cat = catalog_from_result(res);
	PQclear(res);
	return cat;
}
