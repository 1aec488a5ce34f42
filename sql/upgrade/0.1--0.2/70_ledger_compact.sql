-- sql/upgrade/0.1--0.2/70_ledger_compact.sql: a one-piece consumption charge names a shared pricing row (prepay.charge_pricing) instead of carrying its pricing record as JSON, the existing entries converted; the ledger's key is its index by account, an entry by id alone found through a BRIN index.

-- ---------------------------------------------------------------------
-- the pricing of one-piece charges, kept once
-- ---------------------------------------------------------------------
-- A fresh install orders the ledger's columns so that a row has no
-- alignment padding; here pricing_id comes last (ALTER TABLE appends).

--@ copy table prepay.charge_pricing

--@ copy function prepay._is_my_tenant_site

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
--@ copy function prepay._charge_pricing_id

-- no table read: a caller joins charge_pricing on (site_id, pricing_id),
-- which Citus runs on the site's shards
--@ copy function prepay._pricing_record

-- their rights: 99_rights.sql

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

--@ copy function prepay.explain_charge

--@ copy function prepay.rerate

--@ copy function prepay.energy_from_ledger

--@ copy function prepay._bill_lines

--@ copy function prepay.my_charges

--@ copy function prepay._audit_money

-- ---------------------------------------------------------------------
-- one b-tree on the ledger: the key is the account's entries in order
-- (site_id, account_id, entry_id), an entry by its id alone is found
-- through the BRIN index ledger_entry; where the account is known, the
-- lookups name it
-- ---------------------------------------------------------------------

ALTER TABLE prepay.ledger DROP CONSTRAINT ledger_pkey;
DROP INDEX prepay.ledger_account;
ALTER TABLE prepay.ledger ADD PRIMARY KEY (site_id, account_id, entry_id);
CREATE INDEX ledger_entry ON prepay.ledger USING brin (site_id, entry_id) WITH (pages_per_range = 8, autosummarize = on);
COMMENT ON INDEX prepay.ledger_entry IS 'An entry by its id without its account (explain_charge, reverse, a bill''s entries): the ledger is append-only and its ids grow with the order rows are written, so each range of 8 pages holds a narrow range of ids, and a lookup reads one or two ranges.  The primary key (site_id, account_id, entry_id) is the account''s entries in order: statements and trails.';
COMMENT ON COLUMN prepay.ledger.entry_id IS 'Entry id, unique in the site (always drawn from ledger_entry_id_seq: no role inserts ledger rows itself, and the key (site_id, account_id, entry_id) does not check it); increasing with time.';

--@ copy function prepay.my_payments
--@ copy function prepay._is_charge
--@ copy function prepay.draft_bill
--@ copy function prepay.allowance_left
-- (and prepay.order_overview, which joins the reversed entry by its
-- account: part 81, where the view is made again on the new ledger)
