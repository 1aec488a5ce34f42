/*-------------------------------------------------------------------------
 * agent/catalog_cache.h
 *     The last good catalog, cached in the spool directory for a start
 *     while the database is unreachable.
 *
 * Locking: loop thread only.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_CATALOG_CACHE_H
#define AGENT_CATALOG_CACHE_H

#include <libpq-fe.h>
#include <time.h>

#include "catalog.h"

/* catalog_cache_save: keep the rows of prepay.agent_catalog() in
 * dir/catalog.cache, durably; 0 or -1 (logged) */
int catalog_cache_save(const char *dir, const char *agent_id, const PGresult *res);

/* catalog_cache_load: the cached catalog of agent_id and when it was
 * saved; NULL if there is none or it is unusable (logged) */
struct catalog *catalog_cache_load(const char *dir, const char *agent_id, time_t *saved_at);

#endif
