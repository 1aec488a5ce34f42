/*-------------------------------------------------------------------------
 *
 * test/unit/test_agent_catalog.c
 *	  Unit test of agent/catalog.c's gateway comparison, without a
 *	  database: two copies of the same gateway are equal whatever their
 *	  padding bytes, unused relay value slots and bytes past a string's
 *	  NUL hold (a reload that changes nothing must not restart the bus),
 *	  the lost flags do not count, and every configuration field does.
 *	  The catalog cache (agent/catalog_cache.c) gives back the catalog it
 *	  was given, values with tabs, newlines and backslashes included, and
 *	  ignores a cache written for another agent id.  Run by test/suite.sh.
 *
 * Copyright (c) 2026, the prepay authors
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "catalog_cache.h"
#include "check.h"

/* sample_gateway: the same gateway with two meters, built in memory first
 * filled with the byte fill (padding and unused bytes keep it) */
static struct gateway *
sample_gateway(unsigned char fill)
{
	struct gateway *gw = malloc(sizeof(*gw));

	memset(gw, fill, sizeof(*gw));
	gw->site_id = 1;
	gw->gateway_id = 7;
	strcpy(gw->name, "plaza-east");
	strcpy(gw->transport, "tcp");
	strcpy(gw->host, "10.0.0.21");
	gw->port = 502;
	strcpy(gw->serial_device, "");
	gw->baud = 9600;
	gw->parity = 'N';
	gw->data_bits = 8;
	gw->stop_bits = 1;
	gw->poll_interval_ms = 900000;
	gw->lost = 0;
	gw->n_meters = 2;
	gw->meters = malloc(2 * sizeof(struct meter));
	memset(gw->meters, fill, 2 * sizeof(struct meter));
	for (int i = 0; i < 2; i++)
	{
		struct meter *m = &gw->meters[i];
		struct profile *p = &m->profile;

		m->site_id = 1;
		m->meter_id = 100 + i;
		m->unit_id = 1 + i;
		m->has_profile = 1;
		m->lost = 0;
		strcpy(p->name, "ddsy1352");
		for (int r = 0; r < M_COUNT; r++)
			p->regs[r].present = 0;
		p->regs[M_ENERGY] = (struct reg_def) { .present = 1, .address = 0, .type = RT_U32, .scale = -2 };
		p->relay_write_address = 0x57;
		p->trip_n = p->close_n = 2;
		p->trip[0] = 1, p->trip[1] = 1;
		p->close[0] = 1, p->close[1] = 0;
		p->relay_read_address = 0x57;
		p->relay_read_count = 2;
		p->relay_mask = 0xFFFFFFFFu;
		p->tripped_value = 0x10001;
		p->closed_value = 0x10000;
	}
	return gw;
}

/* Same configuration, different garbage: equal; lost flags do not count */
static void
test_equal_despite_padding(void)
{
	struct gateway *a = sample_gateway(0x00);
	struct gateway *b = sample_gateway(0xA5);

	CHECK(memcmp(a, b, sizeof(*a)) != 0);	/* the old memcmp saw a change */
	CHECK(catalog_gateway_equal(a, b));
	CHECK(catalog_gateway_equal(b, a));
	b->lost = 1;
	b->meters[1].lost = 1;
	CHECK(catalog_gateway_equal(a, b));
	catalog_free_gateway(a);
	catalog_free_gateway(b);
}

/* A copy for a bus thread equals its original */
static void
test_copy_equal(void)
{
	struct gateway *a = sample_gateway(0x5A);
	struct gateway *copy = catalog_copy_gateway(a);

	CHECK(catalog_gateway_equal(a, copy));
	catalog_free_gateway(a);
	catalog_free_gateway(copy);
}

/* differs: the gateway after edit is not equal to an unedited one */
static int
differs(void (*edit) (struct gateway *gw))
{
	struct gateway *a = sample_gateway(0x00);
	struct gateway *b = sample_gateway(0xFF);
	int			result;

	edit(b);
	result = !catalog_gateway_equal(a, b) && !catalog_gateway_equal(b, a);
	catalog_free_gateway(a);
	catalog_free_gateway(b);
	return result;
}

static void edit_host(struct gateway *gw) { strcpy(gw->host, "10.0.0.22"); }
static void edit_port(struct gateway *gw) { gw->port = 503; }
static void edit_name(struct gateway *gw) { strcpy(gw->name, "plaza-west"); }
static void edit_parity(struct gateway *gw) { gw->parity = 'E'; }
static void edit_interval(struct gateway *gw) { gw->poll_interval_ms = 60000; }
static void edit_meters(struct gateway *gw) { gw->n_meters = 1; }
static void edit_unit(struct gateway *gw) { gw->meters[1].unit_id = 9; }
static void edit_meter_id(struct gateway *gw) { gw->meters[0].meter_id = 99; }
static void edit_scale(struct gateway *gw) { gw->meters[0].profile.regs[M_ENERGY].scale = -1; }
static void edit_register(struct gateway *gw) { gw->meters[0].profile.regs[M_POWER].present = 1; }
static void edit_trip(struct gateway *gw) { gw->meters[1].profile.trip[1] = 2; }
static void edit_profile(struct gateway *gw) { strcpy(gw->meters[0].profile.name, "adf400l"); }
static void edit_unused_slot(struct gateway *gw) { gw->meters[0].profile.trip[5] = 42; }

/* Every configuration field counts; unused relay value slots do not */
static void
test_fields_count(void)
{
	static const struct
	{
		const char *field;
		void		(*edit) (struct gateway *gw);
	}			counted[] = {
		{"host", edit_host}, {"port", edit_port}, {"name", edit_name},
		{"parity", edit_parity}, {"poll interval", edit_interval},
		{"number of meters", edit_meters}, {"unit id", edit_unit},
		{"meter id", edit_meter_id}, {"register scale", edit_scale},
		{"register presence", edit_register}, {"trip value", edit_trip},
		{"profile name", edit_profile},
	};

	for (size_t i = 0; i < sizeof(counted) / sizeof(counted[0]); i++)
	{
		if (!differs(counted[i].edit))
		{
			failures++;
			fprintf(stderr, "%s:%d: failed: a different %s leaves the gateway equal\n",
					__FILE__, __LINE__, counted[i].field);
		}
	}
	CHECK(!differs(edit_unused_slot));
}

/* catalog_rows: a result shaped like prepay.agent_catalog(): one gateway
 * with an awkward name, two meters with one register each */
static PGresult *
catalog_rows(void)
{
	static const char *const row[] = {
		"1", "3", "east\tside \\ 1\nnew", "tcp", "127.0.0.1", "1502", NULL, NULL, NULL, NULL, NULL,
		"1000", "f", "5", "1", "electricity", "ddsy1352", "f", "87", "{1,1}", "{1,0}", "87", "2", NULL,
		"65537", "65536", "total_energy", "0", "u32", "high_first", "-2",
	};
	PGresult   *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	PGresAttDesc att[31];
	int			ncols = (int) (sizeof(row) / sizeof(row[0]));

	memset(att, 0, sizeof(att));
	for (int c = 0; c < ncols; c++)
	{
		att[c].name = (char *) "col";
		att[c].typid = 25;
		att[c].typlen = -1;
	}
	PQsetResultAttrs(res, ncols, att);
	for (int r = 0; r < 2; r++)
		for (int c = 0; c < ncols; c++)
		{
			const char *v = (c == 13) ? (r == 0 ? "5" : "6") : (c == 14) ? (r == 0 ? "1" : "2") : row[c];

			PQsetvalue(res, r, c, (char *) v, v ? (int) strlen(v) : -1);
		}
	return res;
}

/* The cache gives back the catalog it was given, for its agent only */
static void
test_cache_round_trip(void)
{
	char		dir[] = "/tmp/prepay-cache-test.XXXXXX";
	PGresult   *res = catalog_rows();
	struct catalog *direct = catalog_from_result(res);
	struct catalog *cached;
	time_t		saved_at = 0;

	CHECK(mkdtemp(dir) != NULL);
	CHECK(direct && direct->n_gateways == 1 && direct->gateways[0].n_meters == 2);
	CHECK(catalog_cache_save(dir, "plaza\t1", res) == 0);
	cached = catalog_cache_load(dir, "plaza\t1", &saved_at);
	CHECK(cached && cached->n_gateways == 1);
	if (direct && cached && cached->n_gateways == 1)
	{
		CHECK(catalog_gateway_equal(&direct->gateways[0], &cached->gateways[0]));
		CHECK(strcmp(cached->gateways[0].name, "east\tside \\ 1\nnew") == 0);
		CHECK(cached->gateways[0].meters[1].unit_id == 2);
	}
	CHECK(saved_at > 0);
	CHECK(catalog_cache_load(dir, "plaza", &saved_at) == NULL);	/* another agent */
	catalog_free(direct);
	catalog_free(cached);
	PQclear(res);
	{
		char		path[64];

		snprintf(path, sizeof(path), "%s/catalog.cache", dir);
		unlink(path);
		rmdir(dir);
	}
}

int
main(void)
{
	test_equal_despite_padding();
	test_copy_equal();
	test_fields_count();
	test_cache_round_trip();
	return check_report("test_agent_catalog");
}
