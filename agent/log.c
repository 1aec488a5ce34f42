/*-------------------------------------------------------------------------
 * agent/log.c
 *     Leveled logging to stderr with a syslog priority prefix ("<6>") that
 *     journald understands, followed by "level=info" and the message with
 *     its key=value context (gateway=, meter=, command=).
 *
 * Locking: the level is set once at start-up (before threads exist) and
 * only read afterwards; each line is a single fputs.
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "log.h"

static int current_level = LOG_INFO;

static const struct {
	const char *name;
	int level;
} level_names[] = {
	{ "error", LOG_ERR },
	{ "warning", LOG_WARNING },
	{ "info", LOG_INFO },
	{ "debug", LOG_DEBUG },
};

/* log_parse_level: the level called name, or -1 */
int log_parse_level(const char *name)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcasecmp(name, level_names[i].name) == 0)
			return level_names[i].level;
	return -1;
}

/* log_level_name: the name of a level */
const char *log_level_name(int level)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (level_names[i].level == level)
			return level_names[i].name;
	return "info";
}

void log_set_level(int level)
{
	current_level = level;
}

int log_enabled(int level)
{
	return level <= current_level;
}

/* log_msg: write one line if level is enabled */
void log_msg(int level, const char *fmt, ...)
{
	char line[2048];
	int n;
	va_list ap;

	if (!log_enabled(level))
		return;
	n = snprintf(line, sizeof(line), "<%d>level=%s ", level, log_level_name(level));
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	strcat(line, "\n");
	fputs(line, stderr);
}
