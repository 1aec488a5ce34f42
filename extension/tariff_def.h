/*-------------------------------------------------------------------------
 *
 * extension/tariff_def.h
 *	  Tariff definitions: validate and compile a definition (tariff_def.c).
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/tariff_def.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PREPAY_TARIFF_DEF_H
#define PREPAY_TARIFF_DEF_H

#include "prepay.h"
#include "tariff.h"
#include "utils/jsonb.h"

/* tariff_def.c: validate a definition (PY015) and compile it */
extern void tariff_compile(Jsonb *definition, TariffVersion *v);

#endif							/* PREPAY_TARIFF_DEF_H */
