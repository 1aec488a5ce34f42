/*-------------------------------------------------------------------------
 * agent/catalog.c
 *     Build the catalog from the rows of prepay.agent_catalog(): one row
 *     per (gateway, meter, register), ordered by gateway and meter, so
 *     consecutive rows are grouped into gateways, meters and profiles.
 *
 * Locking: loop thread only; results are immutable once built.
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "alloc.h"
#include "log.h"

/* result columns of prepay.agent_catalog() */
enum {
	C_SITE,
	C_GW,
	C_GWNAME,
	C_TRANSPORT,
	C_HOST,
	C_PORT,
	C_SERIAL,
	C_BAUD,
	C_PARITY,
	C_DATA,
	C_STOP,
	C_POLL_MS,
	C_GWLOST,
	C_METER,
	C_UNIT,
	C_KIND,
	C_PROFILE,
	C_METERLOST,
	C_RW_ADDR,
	C_TRIP,
	C_CLOSE,
	C_RR_ADDR,
	C_RR_COUNT,
	C_MASK,
	C_TRIPPED,
	C_CLOSED,
	C_MEANING,
	C_ADDRESS,
	C_TYPE,
	C_WORDS,
	C_SCALE,
	C_NCOLS
};

static const char *val(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

static int ival(const PGresult *res, int row, int col, int def)
{
	const char *v = val(res, row, col);

	return v ? atoi(v) : def;
}

static void copy_text(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src ? src : "");
}

/* fill_gateway: the gateway columns of one row */
static void fill_gateway(struct gateway *gw, const PGresult *res, int row)
{
	const char *parity = val(res, row, C_PARITY);

	memset(gw, 0, sizeof(*gw));
	gw->site_id = ival(res, row, C_SITE, 0);
	gw->gateway_id = atoll(val(res, row, C_GW));
	copy_text(gw->name, sizeof(gw->name), val(res, row, C_GWNAME));
	copy_text(gw->transport, sizeof(gw->transport), val(res, row, C_TRANSPORT));
	copy_text(gw->host, sizeof(gw->host), val(res, row, C_HOST));
	gw->port = ival(res, row, C_PORT, 502);
	copy_text(gw->serial_device, sizeof(gw->serial_device), val(res, row, C_SERIAL));
	gw->baud = ival(res, row, C_BAUD, 9600);
	gw->parity = parity ? parity[0] : 'N';
	gw->data_bits = ival(res, row, C_DATA, 8);
	gw->stop_bits = ival(res, row, C_STOP, 1);
	gw->poll_interval_ms = atoll(val(res, row, C_POLL_MS));
	gw->lost = val(res, row, C_GWLOST)[0] == 't';
}

/* fill_relay: the profile's relay columns of one row */
static void fill_relay(struct profile *p, const PGresult *res, int row)
{
	p->relay_write_address = ival(res, row, C_RW_ADDR, -1);
	p->relay_read_address = ival(res, row, C_RR_ADDR, -1);
	p->relay_read_count = ival(res, row, C_RR_COUNT, 1);
	p->relay_mask = val(res, row, C_MASK) ? (uint32_t)atoll(val(res, row, C_MASK)) : 0xFFFFFFFFu;
	p->tripped_value = val(res, row, C_TRIPPED) ? atoll(val(res, row, C_TRIPPED)) : -1;
	p->closed_value = val(res, row, C_CLOSED) ? atoll(val(res, row, C_CLOSED)) : -1;
	if (p->relay_write_address >= 0) {
		p->trip_n = val(res, row, C_TRIP)
		                    ? profile_parse_values(val(res, row, C_TRIP), p->trip, RELAY_MAX_VALUES)
		                    : -1;
		p->close_n = val(res, row, C_CLOSE)
		                     ? profile_parse_values(val(res, row, C_CLOSE), p->close, RELAY_MAX_VALUES)
		                     : -1;
		if (p->trip_n <= 0 || p->close_n <= 0)
			p->relay_write_address = -1;
	}
}

/* fill_register: the register columns of one row, if any */
static void fill_register(struct profile *p, const PGresult *res, int row)
{
	const char *meaning = val(res, row, C_MEANING);
	int m, t;

	if (!meaning || (m = profile_meaning(meaning)) < 0 || (t = profile_reg_type(val(res, row, C_TYPE))) < 0)
		return;
	p->regs[m].present = 1;
	p->regs[m].address = ival(res, row, C_ADDRESS, 0);
	p->regs[m].type = t;
	p->regs[m].low_first = strcmp(val(res, row, C_WORDS), "low_first") == 0;
	p->regs[m].scale = ival(res, row, C_SCALE, 0);
}

/* fill_meter: a new meter from the first row of its group */
static void fill_meter(struct meter *m, const PGresult *res, int row)
{
	memset(m, 0, sizeof(*m));
	m->site_id = ival(res, row, C_SITE, 0);
	m->meter_id = atoll(val(res, row, C_METER));
	m->unit_id = ival(res, row, C_UNIT, 1);
	m->lost = val(res, row, C_METERLOST)[0] == 't';
	m->has_profile = val(res, row, C_RW_ADDR) || val(res, row, C_MEANING) || val(res, row, C_RR_ADDR);
	copy_text(m->profile.name, sizeof(m->profile.name), val(res, row, C_PROFILE));
	if (m->has_profile)
		fill_relay(&m->profile, res, row);
	else
		log_warning("gateway=%s meter=%lld profile \"%s\" is unknown: meter skipped", val(res, row, C_GWNAME),
		            (long long)m->meter_id, m->profile.name);
}

/* catalog_from_result: see catalog.h; NULL if the result has the wrong shape */
struct catalog *catalog_from_result(const PGresult *res)
{
	int rows = PQntuples(res);
	struct catalog *cat;
	struct gateway *gw = NULL;
	struct meter *m = NULL;
	int gw_cap = 0, m_cap = 0;

	if (PQnfields(res) != C_NCOLS) {
		log_error("catalog: prepay.agent_catalog returned %d columns, expected %d", PQnfields(res), C_NCOLS);
		return NULL;
	}
	cat = xcalloc(1, sizeof(*cat));
	for (int r = 0; r < rows; r++) {
		int64_t gid = atoll(val(res, r, C_GW));
		int site = ival(res, r, C_SITE, 0);

		if (!gw || gw->gateway_id != gid || gw->site_id != site) {
			if (cat->n_gateways == gw_cap) {
				gw_cap = gw_cap ? 2 * gw_cap : 8;
				cat->gateways = xrealloc_array(cat->gateways, gw_cap, sizeof(struct gateway));
			}
			gw = &cat->gateways[cat->n_gateways++];
			fill_gateway(gw, res, r);
			m = NULL;
			m_cap = 0;
		}
		if (!val(res, r, C_METER))
			continue;
		if (!m || m->meter_id != atoll(val(res, r, C_METER))) {
			if (gw->n_meters == m_cap) {
				m_cap = m_cap ? 2 * m_cap : 8;
				gw->meters = xrealloc_array(gw->meters, m_cap, sizeof(struct meter));
			}
			m = &gw->meters[gw->n_meters++];
			fill_meter(m, res, r);
		}
		if (m->has_profile)
			fill_register(&m->profile, res, r);
	}
	return cat;
}

void catalog_free_gateway(struct gateway *gw)
{
	if (!gw)
		return;
	free(gw->meters);
	free(gw);
}

void catalog_free(struct catalog *cat)
{
	if (!cat)
		return;
	for (int i = 0; i < cat->n_gateways; i++)
		free(cat->gateways[i].meters);
	free(cat->gateways);
	free(cat);
}

/* catalog_copy_gateway: a deep copy a bus thread can own */
struct gateway *catalog_copy_gateway(const struct gateway *gw)
{
	struct gateway *copy = xmalloc(sizeof(*copy));

	*copy = *gw;
	copy->meters = xcalloc(gw->n_meters ? gw->n_meters : 1, sizeof(struct meter));
	if (gw->n_meters) /* a gateway without meters yet has meters == NULL */
		memcpy(copy->meters, gw->meters, gw->n_meters * sizeof(struct meter));
	return copy;
}

/* meter_equal: same meter, unit and profile (the lost flag aside) */
static int meter_equal(const struct meter *a, const struct meter *b)
{
	return a->site_id == b->site_id && a->meter_id == b->meter_id && a->unit_id == b->unit_id &&
	       a->has_profile == b->has_profile && profile_equal(&a->profile, &b->profile);
}

/* connection_equal: same gateway, reached the same way, on the same schedule */
static int connection_equal(const struct gateway *a, const struct gateway *b)
{
	return a->site_id == b->site_id && a->gateway_id == b->gateway_id && strcmp(a->name, b->name) == 0 &&
	       strcmp(a->transport, b->transport) == 0 && strcmp(a->host, b->host) == 0 && a->port == b->port &&
	       strcmp(a->serial_device, b->serial_device) == 0 && a->baud == b->baud && a->parity == b->parity &&
	       a->data_bits == b->data_bits && a->stop_bits == b->stop_bits &&
	       a->poll_interval_ms == b->poll_interval_ms;
}

/* catalog_gateway_equal: same connection, schedule, meters and profiles
 * (lost flags aside: they change while the gateway runs).  Field by field:
 * the structs have padding, and bytes past a string's NUL mean nothing */
int catalog_gateway_equal(const struct gateway *a, const struct gateway *b)
{
	if (!connection_equal(a, b) || a->n_meters != b->n_meters)
		return 0;
	for (int i = 0; i < a->n_meters; i++)
		if (!meter_equal(&a->meters[i], &b->meters[i]))
			return 0;
	return 1;
}
