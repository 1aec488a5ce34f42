/*-------------------------------------------------------------------------
 *
 * extension/tariff_book.h
 *	  The tariff book of a rating batch: every version of the tariffs of
 *	  some sites, compiled, with each site's calendar; and the ledger's
 *	  record of how a charge was priced (tariff_book.c).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/tariff_book.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PREPAY_TARIFF_BOOK_H
#define PREPAY_TARIFF_BOOK_H

#include "prepay.h"
#include "tariff.h"
#include "lib/stringinfo.h"

/* every version of the tariffs of some sites, compiled */
typedef struct TariffBook TariffBook;

extern TariffBook *tariff_book_load(const int32 *site_ids, int nsites);
extern const TariffVersion *tariff_book_versions(TariffBook *book, int32 site_id,
												 int64 tariff_id, int *nversions);
extern const TariffCalendar *tariff_book_calendar(TariffBook *book, int32 site_id);
extern void *tariff_book_grow(void *old, size_t size);

/*
 * The ledger's record of how a charge was priced, appended to buf;
 * `fallback` explains a register split's fallback (NULL: the core's words
 * for pieces->fallback)
 */
extern void tariff_pieces_json(StringInfo buf, int64 tariff_id, const TariffVersion *versions,
							   const TariffPieces *pieces, int32 multiplier,
							   const TariffCycleState *before, const TariffCycleState *after,
							   const char *fallback);

#endif							/* PREPAY_TARIFF_BOOK_H */
