/*-------------------------------------------------------------------------
 * agent/log.h
 *     Log lines for journald: "<N>level=... msg" on stderr, one write per
 *     line, so lines from the bus threads never interleave.
 *
 * Locking: none needed; every call formats into a local buffer and writes
 * it with a single fputs on the (internally locked) stderr stream.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_LOG_H
#define AGENT_LOG_H

enum log_level { LOG_ERR = 3, LOG_WARNING = 4, LOG_INFO = 6, LOG_DEBUG = 7 };

int log_parse_level(const char *name);
const char *log_level_name(int level);
void log_set_level(int level);
int log_enabled(int level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                                                 \
	do {                                                                                                           \
		if (log_enabled(LOG_DEBUG))                                                                            \
			log_msg(LOG_DEBUG, __VA_ARGS__);                                                               \
	} while (0)

#endif
