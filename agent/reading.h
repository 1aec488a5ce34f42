/*-------------------------------------------------------------------------
 * agent/reading.h
 *     One reading as the agent carries it from a bus thread through the
 *     delivery queue and the spool into prepay.reading: every value is
 *     already an exact decimal string (empty = NULL).
 *
 * Locking: plain data, owned by whoever holds the pointer.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_READING_H
#define AGENT_READING_H

#include <stdint.h>

#include "profile.h"

struct reading {
	int site_id;
	int64_t meter_id;
	char read_at[40]; /* "YYYY-MM-DD HH:MM:SS.uuuuuu+00" */
	char value[M_COUNT][VALUE_LEN];
	char relay[8]; /* closed, tripped or empty */
};

#endif
