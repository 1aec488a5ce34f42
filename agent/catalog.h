/*-------------------------------------------------------------------------
 * agent/catalog.h
 *     What this agent polls, as loaded from the database by
 *     prepay.agent_catalog(agent_id): gateways, their active meters, and
 *     each meter's device profile.
 *
 * Locking: a catalog is built on the loop thread and never changed; each
 * bus thread receives its own deep copy of one gateway (catalog_copy_gateway).
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_CATALOG_H
#define AGENT_CATALOG_H

#include <libpq-fe.h>
#include <stdint.h>

#include "profile.h"

struct meter {
	int site_id;
	int64_t meter_id;
	int unit_id;
	int has_profile; /* 0: unknown profile, skipped */
	struct profile profile;
	int lost; /* lost_since set in the database */
};

struct gateway {
	int site_id;
	int64_t gateway_id;
	char name[128];
	char transport[16]; /* tcp, rtu, rtu_over_tcp */
	char host[256];
	int port;
	char serial_device[256];
	int baud;
	char parity;
	int data_bits, stop_bits;
	int64_t poll_interval_ms;
	int lost;
	int n_meters;
	struct meter *meters;
};

struct catalog {
	int n_gateways;
	struct gateway *gateways;
};

struct catalog *catalog_from_result(const PGresult *res);
void catalog_free(struct catalog *cat);
struct gateway *catalog_copy_gateway(const struct gateway *gw);
void catalog_free_gateway(struct gateway *gw);
int catalog_gateway_equal(const struct gateway *a, const struct gateway *b);

#endif
