-- prepay._rate_many: a series of intervals rated with one loaded book, the
-- same pricing records as prepay._rate one by one; a NULL cycle_used
-- continues the billing cycle the previous interval left.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql
INSERT INTO prepay.site (name) VALUES ('Series');
INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat'), (1, 'tiers');
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, price) VALUES
    (1, 1, '2026-01-01', 0.5), (1, 1, '2026-03-01 12:00+00', 0.6);
INSERT INTO prepay.tariff_version (site_id, tariff_id, valid_from, definition) VALUES (1, 2, '2026-01-01',
    '{"price": 0.5, "tiers": {"cycle": "monthly", "blocks": [{"upto": 10, "add": 0}, {"add": 0.25}]}}');
CREATE TEMP TABLE interval_in (ord int, tariff_id bigint, read_from timestamptz, read_to timestamptz,
                               energy numeric, cycle_used numeric, cycle_start timestamptz, registers numeric[]);
INSERT INTO interval_in VALUES
    (1, 1, '2026-03-01 00:00+00', '2026-03-02 00:00+00', 24, 0, NULL, NULL),
    (2, 2, '2026-03-30 00:00+00', '2026-04-02 00:00+00', 9, 3, '2026-03-01 00:00+00', NULL),
    (3, 2, '2026-04-02 00:00+00', '2026-04-03 00:00+00', 12, NULL, NULL, NULL),
    (4, 1, '2026-03-01 00:00+00', '2026-03-01 06:00+00', 2, 0, NULL, '{1, NULL, 1, NULL}');
-- independent intervals: the same records as _rate
SELECT i.ord, r.j::text = prepay._rate(1, i.tariff_id, i.read_from, i.read_to, i.energy,
                                       coalesce(i.cycle_used, 0), i.cycle_start, i.registers)::text AS same
  FROM prepay._rate_many(1, ARRAY(SELECT tariff_id FROM interval_in ORDER BY ord),
                         ARRAY(SELECT read_from FROM interval_in ORDER BY ord),
                         ARRAY(SELECT read_to FROM interval_in ORDER BY ord),
                         ARRAY(SELECT energy FROM interval_in ORDER BY ord),
                         ARRAY(SELECT coalesce(cycle_used, 0) FROM interval_in ORDER BY ord),
                         ARRAY(SELECT cycle_start FROM interval_in ORDER BY ord),
                         NULL) WITH ORDINALITY AS r(j, ord)
  JOIN interval_in i ON i.ord = r.ord ORDER BY i.ord;
-- the second interval continues the first one's cycle: the April cycle the
-- first opened (its last day, 3 kWh) plus 12 kWh crosses the 10 kWh tier
SELECT r.ord, r.j->>'cycle_start' AS cycle_start, r.j->>'cycle_used_before' AS used_before,
       r.j->>'cycle_used_after' AS used_after, p.tier, p.energy, p.amount
  FROM prepay._rate_many(1, '{2, 2}', '{2026-03-30 00:00+00, 2026-04-02 00:00+00}',
                         '{2026-04-02 00:00+00, 2026-04-03 00:00+00}', '{9, 12}', '{3, NULL}',
                         '{2026-03-01 00:00+00, NULL}', NULL) WITH ORDINALITY AS r(j, ord),
       prepay._pieces(r.j) AS p
 ORDER BY r.ord, p.piece_from, p.tier;
-- registers come as one row per interval (this flat tariff splits uniformly)
SELECT r.ord, r.j->>'split' AS split
  FROM prepay._rate_many(1, '{1, 1}', '{2026-03-01 00:00+00, 2026-03-01 06:00+00}',
                         '{2026-03-01 06:00+00, 2026-03-01 12:00+00}', '{2, 2}', '{0, 0}', '{NULL, NULL}',
                         '{{1, NULL, 1, NULL}, {NULL, NULL, NULL, NULL}}') WITH ORDINALITY AS r(j, ord);
-- nothing to rate; arrays of different lengths
SELECT count(*) FROM prepay._rate_many(1, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT regress.try($$SELECT count(*) FROM prepay._rate_many(1, '{1, 1}', '{2026-03-01 00:00+00}',
                         '{2026-03-01 06:00+00}', '{2}', '{0}', '{NULL}', NULL)$$);
SELECT regress.try($$SELECT count(*) FROM prepay._rate_many(1, '{1}', '{2026-03-01 00:00+00}',
                         '{2026-03-01 06:00+00}', '{2}', '{0}', '{NULL}', '{1, 2}')$$);
SELECT regress.try($$SELECT count(*) FROM prepay._rate_many(1, '{7}', '{2026-03-01 00:00+00}',
                         '{2026-03-01 06:00+00}', '{2}', '{0}', '{NULL}', NULL)$$);
