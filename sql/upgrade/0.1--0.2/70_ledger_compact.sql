-- sql/upgrade/0.1--0.2/70_ledger_compact.sql: a one-piece consumption charge names a shared pricing row (prepay.charge_pricing) instead of carrying its pricing record as JSON; the existing entries are converted.

-- ---------------------------------------------------------------------
-- the pricing of one-piece charges, kept once
-- ---------------------------------------------------------------------
-- A fresh install orders the ledger's columns so that a row has no
-- alignment padding; here pricing_id comes last (ALTER TABLE appends).

CREATE TABLE prepay.charge_pricing (
    site_id       integer NOT NULL,
    pricing_id    integer NOT NULL,
    tariff_id     bigint NOT NULL,
    multiplier    integer NOT NULL,
    version_from  timestamptz NOT NULL,
    period        text NOT NULL,
    PRIMARY KEY (site_id, pricing_id),
    UNIQUE (site_id, tariff_id, multiplier, version_from, period)
);
COMMENT ON TABLE prepay.charge_pricing IS 'What the pricing records of the one-piece charges have in common, kept once: a consumption charge priced as one piece at tier 1 (a flat price, or a time-of-use period covering the whole interval, with no tiers) names its row by ledger.pricing_id instead of carrying its pricing record.  Rows are added by the rating trigger when first needed (prepay._charge_pricing_id), never changed.';
COMMENT ON COLUMN prepay.charge_pricing.site_id IS 'Site of the charges.';
COMMENT ON COLUMN prepay.charge_pricing.pricing_id IS 'Id the ledger entries name: 1, 2, ... per site, drawn under the site''s rating lock.';
COMMENT ON COLUMN prepay.charge_pricing.tariff_id IS 'Tariff the charges were priced with.';
COMMENT ON COLUMN prepay.charge_pricing.multiplier IS 'Meter multiplier at rating time.';
COMMENT ON COLUMN prepay.charge_pricing.version_from IS 'valid_from of the tariff version that priced them.';
COMMENT ON COLUMN prepay.charge_pricing.period IS 'Period of that version the whole interval fell in.';

CREATE FUNCTION prepay._is_my_tenant_site(p_site_id integer) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM prepay._my_accounts() t WHERE t.site_id = p_site_id)
$$;
COMMENT ON FUNCTION prepay._is_my_tenant_site(integer) IS 'Internal: whether the caller is a tenant of an account of this site (prepay._my_accounts()); the charge_pricing_tenant policy, row by row without a sub-SELECT (as Citus needs).';

REVOKE ALL ON TABLE prepay.charge_pricing FROM PUBLIC;
GRANT SELECT ON TABLE prepay.charge_pricing TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant;
ALTER TABLE prepay.charge_pricing ENABLE ROW LEVEL SECURITY;
ALTER TABLE prepay.charge_pricing FORCE ROW LEVEL SECURITY;
CREATE POLICY site_staff ON prepay.charge_pricing TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader
    USING (site_id = ANY ((SELECT prepay._my_sites())::integer[]))
    WITH CHECK (site_id = ANY ((SELECT prepay._my_sites())::integer[]));
COMMENT ON POLICY site_staff ON prepay.charge_pricing IS 'Administrators, operators, cashiers and readers see and change only the rows of the sites they are mapped to (prepay.site_access); their grants decide which changes.';
CREATE POLICY charge_pricing_tenant ON prepay.charge_pricing FOR SELECT TO prepay_tenant USING (
    prepay._is_my_tenant_site(site_id));
COMMENT ON POLICY charge_pricing_tenant ON prepay.charge_pricing IS 'Tenants see the pricing of the one-piece charges of their sites, which explains their own charges (prepay.explain_charge).';

SELECT pg_catalog.pg_extension_config_dump('prepay.charge_pricing', '');

ALTER TABLE prepay.ledger ADD COLUMN pricing_id integer;
ALTER TABLE prepay.ledger ADD CONSTRAINT ledger_pricing_check
    CHECK (pricing_id IS NULL OR (kind = 'consumption' AND pieces IS NULL));
COMMENT ON COLUMN prepay.ledger.pieces IS 'For a consumption charge not described by pricing_id, how it was priced: multiplier, split, billing cycle and the priced pieces (period, tier, energy, price, exact amount); for a re-rating adjustment, the exact difference per charge.  Read a charge''s with prepay._pricing_record or prepay.explain_charge.';
COMMENT ON COLUMN prepay.ledger.pricing_id IS 'For a consumption charge priced as one piece at tier 1, split uniformly, outside any billing cycle: its tariff, multiplier, version and period (prepay.charge_pricing), instead of the pricing record in pieces; the piece is the whole interval, energy and exact charge, at the unit price exact_charge / energy.';

-- PL/pgSQL, statement by statement, each filtered on the site: Citus plans
-- each as a single-shard statement (it does not plan a SQL-language
-- function's statements with parameters over distributed tables)
CREATE FUNCTION prepay._charge_pricing_id(p_site_id integer, p_tariff_id bigint, p_multiplier integer,
                                          p_version_from timestamptz, p_period text)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id integer;
BEGIN
    SELECT c.pricing_id INTO id FROM prepay.charge_pricing c
     WHERE c.site_id = p_site_id AND c.tariff_id = p_tariff_id AND c.multiplier = p_multiplier
       AND c.version_from = p_version_from AND c.period = p_period;
    IF NOT FOUND THEN
        -- the caller holds the site's rating lock: no one else adds a row of this site
        SELECT coalesce(max(c.pricing_id), 0) + 1 INTO id FROM prepay.charge_pricing c WHERE c.site_id = p_site_id;
        INSERT INTO prepay.charge_pricing (site_id, pricing_id, tariff_id, multiplier, version_from, period)
        VALUES (p_site_id, id, p_tariff_id, p_multiplier, p_version_from, p_period);
    END IF;
    RETURN id;
END $$;
COMMENT ON FUNCTION prepay._charge_pricing_id(integer, bigint, integer, timestamptz, text) IS
'Internal: the prepay.charge_pricing row of a one-piece charge, added if new (the next id of the site).  The rating trigger calls it, under the site''s rating lock, once per batch and distinct pricing.';

-- no table read: a caller joins charge_pricing on (site_id, pricing_id),
-- which Citus runs on the site's shards
CREATE FUNCTION prepay._pricing_record(p_pieces json, p_tariff_id bigint, p_multiplier integer,
                                       p_version_from timestamptz, p_period text, p_read_from timestamptz,
                                       p_read_to timestamptz, p_energy numeric, p_exact_charge numeric)
RETURNS json LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_tariff_id IS NULL THEN p_pieces ELSE
           pg_catalog.json_build_object(
               'tariff_id', p_tariff_id, 'multiplier', p_multiplier, 'split', 'uniform',
               'pieces', pg_catalog.json_build_array(pg_catalog.json_build_object(
                   'from', p_read_from, 'to', p_read_to, 'version', p_version_from,
                   'period', p_period, 'tier', 1, 'energy', p_energy,
                   'price', round(p_exact_charge / p_energy, 6),
                   'amount', p_exact_charge))) END
$$;
COMMENT ON FUNCTION prepay._pricing_record(json, bigint, integer, timestamptz, text, timestamptz, timestamptz, numeric, numeric) IS
'Internal: the pricing record of a ledger entry l, in the format the rating trigger writes to ledger.pieces (multiplier, split, billing cycle, priced pieces), from l.pieces, the columns of its charge_pricing row c (LEFT JOIN prepay.charge_pricing c ON c.site_id = l.site_id AND c.pricing_id = l.pricing_id) and l.read_from, l.read_to, l.energy, l.exact_charge: pieces itself, or for a one-piece charge the record c and its own interval, energy and exact charge describe.  NULL for entries without one.';

REVOKE ALL ON FUNCTION prepay._charge_pricing_id(integer, bigint, integer, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION prepay._pricing_record(json, bigint, integer, timestamptz, text, timestamptz, timestamptz, numeric, numeric) FROM PUBLIC;
REVOKE ALL ON FUNCTION prepay._is_my_tenant_site(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._charge_pricing_id(integer, bigint, integer, timestamptz, text)
    TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
GRANT EXECUTE ON FUNCTION prepay._pricing_record(json, bigint, integer, timestamptz, text, timestamptz, timestamptz, numeric, numeric)
    TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
GRANT EXECUTE ON FUNCTION prepay._is_my_tenant_site(integer)
    TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;

-- ---------------------------------------------------------------------
-- the existing one-piece charges name their pricing row
-- ---------------------------------------------------------------------
-- A charge is converted only when its pricing record is exactly what
-- prepay._pricing_record rebuilds: these keys and no other, one piece over
-- the whole interval at tier 1, split uniformly, its energy and exact
-- amount those of the entry, at a unit price exact / energy gives back.

DO $$
DECLARE
    one_piece constant text := $q$
        SELECT l.site_id, l.entry_id, (l.pieces->>'tariff_id')::bigint AS tariff_id,
               (l.pieces->>'multiplier')::integer AS multiplier, (p.j->>'version')::timestamptz AS version_from,
               p.j->>'period' AS period
          FROM prepay.ledger l
         CROSS JOIN LATERAL (SELECT l.pieces->'pieces'->0 AS j) AS p
         WHERE l.kind = 'consumption' AND l.pieces IS NOT NULL AND l.energy > 0
           AND pg_catalog.json_typeof(l.pieces->'pieces') = 'array'
           AND pg_catalog.json_array_length(l.pieces->'pieces') = 1
           AND ARRAY(SELECT k FROM pg_catalog.json_object_keys(l.pieces) AS k ORDER BY k)
               = '{multiplier,pieces,split,tariff_id}'
           AND ARRAY(SELECT k FROM pg_catalog.json_object_keys(p.j) AS k ORDER BY k)
               = '{amount,energy,from,period,price,tier,to,version}'
           AND l.pieces->>'split' = 'uniform' AND (p.j->>'tier')::integer = 1
           AND (p.j->>'from')::timestamptz = l.read_from AND (p.j->>'to')::timestamptz = l.read_to
           AND (p.j->>'energy')::numeric = l.energy AND (p.j->>'amount')::numeric = l.exact_charge
           AND (p.j->>'price')::numeric * l.energy = l.exact_charge
           AND round(l.exact_charge / l.energy, 6) = (p.j->>'price')::numeric
           AND p.j->>'period' IS NOT NULL AND p.j->>'version' IS NOT NULL
           AND l.pieces->>'tariff_id' IS NOT NULL AND l.pieces->>'multiplier' IS NOT NULL$q$;
BEGIN
    EXECUTE pg_catalog.format(
        'INSERT INTO prepay.charge_pricing (site_id, pricing_id, tariff_id, multiplier, version_from, period)
         SELECT d.site_id, pg_catalog.row_number() OVER (PARTITION BY d.site_id ORDER BY d.tariff_id, d.multiplier, d.version_from, d.period),
                d.tariff_id, d.multiplier, d.version_from, d.period
           FROM (SELECT DISTINCT o.site_id, o.tariff_id, o.multiplier, o.version_from, o.period FROM (%s) AS o) AS d', one_piece);
    ALTER TABLE prepay.ledger DISABLE TRIGGER ledger_append_only;
    EXECUTE pg_catalog.format(
        'UPDATE prepay.ledger l SET pricing_id = c.pricing_id, pieces = NULL
           FROM (%s) AS o
           JOIN prepay.charge_pricing c ON c.site_id = o.site_id AND c.tariff_id = o.tariff_id
                                       AND c.multiplier = o.multiplier AND c.version_from = o.version_from
                                       AND c.period = o.period
          WHERE l.site_id = o.site_id AND l.entry_id = o.entry_id', one_piece);
    ALTER TABLE prepay.ledger ENABLE TRIGGER ledger_append_only;
END $$;

-- ---------------------------------------------------------------------
-- what reads a charge's pricing record reads it through _pricing_record;
-- the money audit leaves pricing_id out as it does pieces.  The same
-- text as in tariff.sql, reports.sql, bill.sql, api.sql and security.sql.
-- ---------------------------------------------------------------------

CREATE OR REPLACE FUNCTION prepay.explain_charge(p_site_id integer, p_entry_id bigint)
RETURNS TABLE (entry_id bigint, meter_id bigint, read_from timestamptz, register_from numeric,
               read_to timestamptz, register_to numeric, multiplier integer, energy numeric,
               piece_from timestamptz, piece_to timestamptz, version_from timestamptz, period text,
               tier integer, piece_energy numeric, unit_price numeric, amount numeric, charged numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e prepay.ledger;
    c prepay.charge_pricing;
    pricing json;
BEGIN
    SELECT * INTO e FROM prepay.ledger l WHERE l.site_id = p_site_id AND l.entry_id = p_entry_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY006', 'unknown ledger entry',
            pg_catalog.format('Site %s has no ledger entry %s.', p_site_id, p_entry_id), NULL);
    END IF;
    IF e.pricing_id IS NOT NULL THEN
        SELECT * INTO c FROM prepay.charge_pricing cp WHERE cp.site_id = e.site_id AND cp.pricing_id = e.pricing_id;
    END IF;
    pricing := prepay._pricing_record(e.pieces, c.tariff_id, c.multiplier, c.version_from, c.period,
                                      e.read_from, e.read_to, e.energy, e.exact_charge);
    IF e.kind <> 'consumption' OR pricing IS NULL THEN
        PERFORM prepay._raise('PY016', 'not a consumption charge',
            pg_catalog.format('Ledger entry %s is a %s entry.', p_entry_id, e.kind),
            'Only consumption charges are priced from readings.');
    END IF;
    RETURN QUERY
    SELECT e.entry_id, e.meter_id,
           e.read_from, (SELECT r.energy FROM prepay.reading r
                          WHERE r.site_id = e.site_id AND r.meter_id = e.meter_id AND r.read_at = e.read_from),
           e.read_to, (SELECT r.energy FROM prepay.reading r
                        WHERE r.site_id = e.site_id AND r.meter_id = e.meter_id AND r.read_at = e.read_to),
           (pricing->>'multiplier')::integer, e.energy,
           p.piece_from, p.piece_to, p.version_from, p.period, p.tier, p.energy, p.unit_price, p.amount,
           -e.amount
      FROM prepay._pieces(pricing) AS p;
END $$;

CREATE OR REPLACE FUNCTION prepay.rerate(p_site_id integer, p_account_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (account_id bigint, charges integer, charged numeric, repriced numeric,
               adjustment numeric, entry_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acc bigint;
    deltas json[];
    total numeric;
    n integer;
    sum_was numeric;
    sum_now numeric;
    posted bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._lock_site_rating(p_site_id);
    FOR acc IN
        SELECT a.account_id FROM prepay.account a
         WHERE a.site_id = p_site_id AND (p_account_id IS NULL OR a.account_id = p_account_id)
         ORDER BY a.account_id
    LOOP
        PERFORM prepay._lock_account(p_site_id, acc);
        posted := NULL;
        -- every charge re-priced in one call (_rate_many: the tariffs are
        -- loaded once), next to what it stands at now: its exact charge
        -- plus every re-rating adjustment of it (as _charged_exact)
        WITH e AS (
            SELECT l.entry_id, l.exact_charge, l.read_from, l.read_to, l.energy,
                   (r.j->>'tariff_id')::bigint AS tariff_id,
                   coalesce((r.j->>'cycle_used_before')::numeric, 0) AS cycle_used,
                   (r.j->>'cycle_start')::timestamptz AS cycle_start,
                   coalesce(prepay._register_energy(r.j), '{NULL,NULL,NULL,NULL}') AS registers,
                   pg_catalog.row_number() OVER (ORDER BY l.entry_id) AS ord
              FROM prepay.ledger l
              LEFT JOIN prepay.charge_pricing c ON c.site_id = l.site_id AND c.pricing_id = l.pricing_id
             CROSS JOIN LATERAL (SELECT prepay._pricing_record(l.pieces, c.tariff_id, c.multiplier, c.version_from, c.period,
                                                               l.read_from, l.read_to, l.energy, l.exact_charge) AS j) AS r
             WHERE l.site_id = p_site_id AND l.account_id = acc AND l.kind = 'consumption'
               AND l.read_from >= p_from AND l.read_to <= p_to AND r.j IS NOT NULL),
        adjusted AS (
            SELECT (x->>'entry_id')::bigint AS entry_id, sum((x->>'exact_delta')::numeric) AS delta
              FROM prepay.ledger a, pg_catalog.json_array_elements(a.pieces->'rerate') AS x
             WHERE a.site_id = p_site_id AND a.account_id = acc AND a.kind = 'adjustment'
             GROUP BY 1),
        arrays AS (
            SELECT pg_catalog.array_agg(e.tariff_id ORDER BY e.ord) AS tariffs,
                   pg_catalog.array_agg(e.read_from ORDER BY e.ord) AS froms,
                   pg_catalog.array_agg(e.read_to ORDER BY e.ord) AS tos,
                   pg_catalog.array_agg(e.energy ORDER BY e.ord) AS energies,
                   pg_catalog.array_agg(e.cycle_used ORDER BY e.ord) AS cycle_used,
                   pg_catalog.array_agg(e.cycle_start ORDER BY e.ord) AS cycle_starts,
                   pg_catalog.array_agg(e.registers ORDER BY e.ord) AS registers
              FROM e),
        priced AS (
            SELECT r.ord, (SELECT sum(p.amount) FROM prepay._pieces(r.j) AS p) AS amount
              FROM arrays, prepay._rate_many(p_site_id, arrays.tariffs, arrays.froms, arrays.tos,
                                             arrays.energies, arrays.cycle_used, arrays.cycle_starts,
                                             arrays.registers) WITH ORDINALITY AS r(j, ord)),
        x AS (
            SELECT e.entry_id, e.exact_charge + coalesce(d.delta, 0) AS was,
                   coalesce(pr.amount, 0) AS now_exact
              FROM e JOIN priced pr ON pr.ord = e.ord
              LEFT JOIN adjusted d ON d.entry_id = e.entry_id)
        SELECT count(*), coalesce(sum(x.was), 0), coalesce(sum(x.now_exact), 0),
               coalesce(sum(x.now_exact - x.was) FILTER (WHERE x.now_exact <> x.was), 0),
               coalesce(pg_catalog.array_agg(pg_catalog.json_build_object('entry_id', x.entry_id,
                                                                          'exact_delta', x.now_exact - x.was)
                                             ORDER BY x.entry_id) FILTER (WHERE x.now_exact <> x.was), '{}')
          INTO n, sum_was, sum_now, total, deltas
          FROM x;
        IF round(total, 2) <> 0 THEN
            posted := prepay._post_entry(p_site_id, acc, 'adjustment', -round(total, 2), NULL, NULL,
                pg_catalog.format('re-rated consumption from %s to %s', p_from, p_to), NULL,
                total, pg_catalog.json_build_object('rerate', pg_catalog.array_to_json(deltas)));
        END IF;
        IF n > 0 THEN
            account_id := acc; charges := n; charged := sum_was; repriced := sum_now;
            adjustment := CASE WHEN posted IS NULL THEN 0 ELSE -round(total, 2) END;
            entry_id := posted;
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION prepay.energy_from_ledger(p_site_id integer, p_from date, p_to date)
RETURNS TABLE (site_id integer, meter_id bigint, day date, account_id bigint, period text, tier integer,
               energy numeric, cost numeric, charged numeric, charges bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    -- x is prepay._entry_parts(l.amount, prepay._pricing_record(l.pieces, c.tariff_id, ..., l.exact_charge),
    -- s.time_zone) written out:
    -- a call per entry would cost a search_path save and restore and no
    -- inlining (keep the two the same)
    SELECT l.site_id, l.meter_id, x.day, l.account_id, x.period, x.tier,
           sum(x.energy), sum(x.cost), sum(x.charged), sum(x.charges)
      FROM prepay.site s
      JOIN prepay.ledger l ON l.site_id = s.site_id
      LEFT JOIN prepay.charge_pricing c ON c.site_id = l.site_id AND c.pricing_id = l.pricing_id
     CROSS JOIN LATERAL (
        SELECT q.day, q.period, q.tier,
               CASE WHEN q.first_day = q.last_day THEN q.energy ELSE q.part END AS energy,
               CASE WHEN q.first_day = q.last_day THEN q.amount ELSE q.part * q.price END AS cost,
               CASE WHEN q.n = 1 AND q.day = q.first_day THEN -l.amount ELSE 0 END AS charged,
               CASE WHEN q.n = 1 AND q.day = q.first_day THEN 1 ELSE 0 END AS charges
          FROM (SELECT r.*,
                       CASE WHEN r.first_day <> r.last_day THEN
                           (pg_catalog.div(r.energy * 1000
                                * EXTRACT(epoch FROM least(r."to", (r.day + 1)::timestamp AT TIME ZONE s.time_zone) - r."from") * 1000000,
                                EXTRACT(epoch FROM r."to" - r."from") * 1000000)
                            - pg_catalog.div(r.energy * 1000
                                * EXTRACT(epoch FROM greatest(r."from", r.day::timestamp AT TIME ZONE s.time_zone) - r."from") * 1000000,
                                EXTRACT(epoch FROM r."to" - r."from") * 1000000)) / 1000 END AS part
                  FROM (SELECT p.*, d.first_day, d.last_day,
                               pg_catalog.generate_series(d.first_day::timestamp, d.last_day::timestamp,
                                                          interval '1 day')::date AS day
                          FROM ROWS FROM (pg_catalog.json_to_recordset(prepay._pricing_record(l.pieces, c.tariff_id, c.multiplier, c.version_from, c.period,
                                                                                 l.read_from, l.read_to, l.energy, l.exact_charge)->'pieces')
                                          AS ("from" timestamptz, "to" timestamptz, period text, tier integer,
                                              energy numeric, price numeric, amount numeric)) WITH ORDINALITY
                                   AS p("from", "to", period, tier, energy, price, amount, n)
                         CROSS JOIN LATERAL (SELECT (p."from" AT TIME ZONE s.time_zone)::date AS first_day,
                                                    ((p."to" OPERATOR(pg_catalog.-) interval '1 microsecond')
                                                     AT TIME ZONE s.time_zone)::date AS last_day) AS d) AS r) AS q
     ) AS x
     WHERE s.site_id = p_site_id AND l.kind = 'consumption'
       AND l.read_to > p_from::timestamp AT TIME ZONE s.time_zone
       AND l.read_from < p_to::timestamp AT TIME ZONE s.time_zone
       AND x.day >= p_from AND x.day < p_to
     GROUP BY l.site_id, l.meter_id, x.day, l.account_id, x.period, x.tier
$$;

CREATE OR REPLACE FUNCTION prepay._bill_lines(p_site_id integer, p_bill prepay.bill)
RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH entries AS (
        SELECT l.*, prepay._pricing_record(l.pieces, c.tariff_id, c.multiplier, c.version_from, c.period,
                                           l.read_from, l.read_to, l.energy, l.exact_charge) AS pricing
          FROM prepay.bill_entry be
          JOIN prepay.ledger l ON l.site_id = be.site_id AND l.entry_id = be.entry_id
          LEFT JOIN prepay.charge_pricing c ON c.site_id = l.site_id AND c.pricing_id = l.pricing_id
         WHERE be.site_id = p_site_id AND be.bill_id = p_bill.bill_id
    ), energy AS (           -- by TOU period, tier and price, from the pricing records
        SELECT 'energy' AS kind,
               'energy' || coalesce(' ' || nullif(x.period, 'all'), '') || coalesce(' tier ' || nullif(x.tier, 1), '') AS description,
               sum(x.energy) AS quantity, x.unit_price, round(sum(x.amount), 2) AS amount
          FROM entries e CROSS JOIN LATERAL prepay._pieces(e.pricing) AS x
         WHERE e.kind = 'consumption'
         GROUP BY x.period, x.tier, x.unit_price
    ), rounding AS (         -- the ledger charged the cents carried between readings
        SELECT 'rounding' AS kind, 'rounding to the cent (carried between readings)' AS description,
               NULL::numeric AS quantity, NULL::numeric AS unit_price,
               (SELECT -sum(e.amount) FROM entries e WHERE e.kind = 'consumption')
               - (SELECT coalesce(sum(amount), 0) FROM energy) AS amount
    ), other AS (            -- every other charge, by kind and rule
        SELECT e.kind::text AS kind, coalesce(prepay._rule_name(c), e.kind::text) AS description,
               NULL::numeric AS quantity, NULL::numeric AS unit_price, -sum(e.amount) AS amount
          FROM entries e
          LEFT JOIN prepay.period_charge c ON c.site_id = e.site_id AND c.entry_id = e.entry_id
         WHERE e.kind <> 'consumption'
         GROUP BY e.kind, coalesce(prepay._rule_name(c), e.kind::text)
    ), billed AS (           -- fees and shares settled by bill
        SELECT c.source AS kind,
               coalesce(prepay._rule_name(c), c.source) || pg_catalog.format(' %s..%s', c.period_start, c.period_end - 1) AS description,
               NULL::numeric AS quantity, NULL::numeric AS unit_price, -c.amount AS amount
          FROM prepay.period_charge c
         WHERE c.site_id = p_site_id AND c.bill_id = p_bill.bill_id
    ), lines AS (
        SELECT *, p_bill.mode = 'postpaid' AS payable FROM energy
        UNION ALL SELECT *, p_bill.mode = 'postpaid' FROM rounding WHERE amount <> 0
        UNION ALL SELECT *, p_bill.mode = 'postpaid' FROM other
        UNION ALL SELECT *, true FROM billed
    )
    INSERT INTO prepay.bill_line (site_id, bill_id, line_no, kind, description, quantity, unit_price, amount, payable)
    SELECT p_site_id, p_bill.bill_id,
           row_number() OVER (ORDER BY payable, array_position(ARRAY['energy', 'rounding', 'basic_charge', 'fee',
               'fee_credit', 'common_area', 'loss', 'adjustment', 'reversal', 'allowance', 'allowance_expiry'], kind),
               description),
           kind, description, quantity, unit_price, amount, payable
      FROM lines
$$;

CREATE OR REPLACE FUNCTION prepay.my_charges(p_account_id bigint DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS TABLE (site_id integer, account_id bigint, entry_id bigint, kind text, created_at timestamptz, amount numeric,
               balance_after numeric, meter_id bigint, read_from timestamptz, read_to timestamptz, energy numeric,
               explanation jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._api_limit(p_limit);
    RETURN QUERY
    SELECT l.site_id, l.account_id, l.entry_id, l.kind::text, l.created_at, l.amount, l.balance_after,
           l.meter_id, l.read_from, l.read_to, l.energy,
           CASE WHEN l.kind = 'consumption' AND (l.pieces IS NOT NULL OR l.pricing_id IS NOT NULL) THEN
               (SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(x) - 'entry_id' - 'meter_id' - 'read_from' - 'read_to'
                                            ORDER BY x.piece_from, x.tier)
                  FROM prepay.explain_charge(l.site_id, l.entry_id) AS x) END
      FROM prepay._authorize_tenant(p_account_id) t
     CROSS JOIN LATERAL (SELECT e.* FROM prepay.ledger e
                          WHERE e.site_id = t.site_id AND e.account_id = t.account_id
                            AND e.kind NOT IN ('recharge', 'refund', 'closing_refund', 'bill_payment')
                          ORDER BY e.entry_id DESC LIMIT p_limit) AS l
     ORDER BY l.site_id, l.account_id, l.entry_id DESC;
END $$;

CREATE OR REPLACE FUNCTION prepay._audit_money() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO prepay.audit (site_id, acting_role, application_name, action, object, object_key,
                              before_values, after_values)
    VALUES (NEW.site_id, prepay._caller_name(), pg_catalog.current_setting('application_name'), NEW.kind::text,
            'ledger', pg_catalog.jsonb_build_object('site_id', NEW.site_id, 'entry_id', NEW.entry_id),
            pg_catalog.jsonb_build_object('account_id', NEW.account_id, 'balance', NEW.balance_after - NEW.amount),
            (pg_catalog.to_jsonb(NEW) - 'pieces' - 'pricing_id' - 'balance_after')
                || pg_catalog.jsonb_build_object('balance', NEW.balance_after));
    RETURN NULL;
END $$;

