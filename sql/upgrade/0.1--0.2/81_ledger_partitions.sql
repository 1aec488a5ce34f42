-- sql/upgrade/0.1--0.2/81_ledger_partitions.sql: prepay.ledger partitioned by range of created_at (sql/prepay.sql), its rows kept, in their order, in the default partition, each naming who posted it by a prepay.actor row instead of the text created_by; the uniqueness of payment references and reversals kept by prepay.payment_reference and prepay.reversed_entry; UPDATE and DELETE refused on every partition; partition_by_month() and maintain_partitions() take the ledger too (sql/partition.sql, part 80).

-- ---------------------------------------------------------------------
-- prepay.ledger becomes a partitioned table: the 0.1 table's rows go to
-- its default partition in entry order, unchanged (the triggers are made
-- after the copy: nothing is audited, notified or recorded twice)
-- ---------------------------------------------------------------------
ALTER TABLE prepay.ledger RENAME TO ledger_0_1;
DO $$
DECLARE
    i record;
BEGIN
    FOR i IN
        SELECT c.relname FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
         WHERE x.indrelid = 'prepay.ledger_0_1'::pg_catalog.regclass
    LOOP
        EXECUTE pg_catalog.format('ALTER INDEX prepay.%I RENAME TO %I', i.relname,
                                  pg_catalog.regexp_replace(i.relname, '^ledger', 'ledger_0_1'));
    END LOOP;
    -- and its checks: the new table's take their names (unique in the schema)
    FOR i IN
        SELECT con.conname AS relname FROM pg_catalog.pg_constraint con
         WHERE con.conrelid = 'prepay.ledger_0_1'::pg_catalog.regclass AND con.contype = 'c'
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE prepay.ledger_0_1 RENAME CONSTRAINT %I TO %I', i.relname,
                                  pg_catalog.regexp_replace(i.relname, '^ledger', 'ledger_0_1'));
    END LOOP;
END $$;

-- who posted an entry: the 0.1 ledger's created_by texts become the rows
-- of prepay.actor, numbered per site in the order the logins first posted
-- (their rights and the function that adds rows: part 84)
--@ copy table prepay.actor
INSERT INTO prepay.actor (site_id, actor_id, login, first_posted_at)
SELECT f.site_id, pg_catalog.row_number() OVER (PARTITION BY f.site_id ORDER BY f.first_entry), f.created_by, f.first_posted_at
  FROM (SELECT l.site_id, l.created_by, pg_catalog.min(l.entry_id) AS first_entry, pg_catalog.min(l.created_at) AS first_posted_at
          FROM prepay.ledger_0_1 l GROUP BY l.site_id, l.created_by) AS f;
DO $$
DECLARE
    s record;
BEGIN
    SELECT a.site_id, pg_catalog.count(*) AS logins INTO s FROM prepay.actor a
     GROUP BY a.site_id HAVING pg_catalog.count(*) > 32767 ORDER BY 2 DESC LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'prepay upgrade: site % has % logins in its ledger, more than the 32767 a ledger entry can name',
            s.site_id, s.logins
            USING ERRCODE = 'PY026', HINT = 'Upgrade is not possible for this ledger: report it to the prepay maintainers.';
    END IF;
END $$;

--@ copy table prepay.ledger
COMMENT ON INDEX prepay.ledger_entry IS 'An entry by its id without its account (explain_charge, reverse, a bill''s entries): the ledger is append-only and its ids grow with the order rows are written, so each range of 8 pages holds a narrow range of ids, and a lookup reads one or two ranges.  The primary key (site_id, account_id, entry_id, created_at) is the account''s entries in order: statements and trails.';
COMMENT ON INDEX prepay.ledger_payment_ref IS 'The entries of a payment reference (reports, order lookups).  Not unique: a partitioned table cannot enforce a key without created_at; prepay.payment_reference keeps a reference used once per channel.';
COMMENT ON INDEX prepay.ledger_reversal IS 'The reversal of an entry.  Not unique: prepay.reversed_entry keeps an entry reversed at most once.';
COMMENT ON INDEX prepay.ledger_money IS 'Every money movement that is not a consumption charge (payments, refunds, reversals, fees, ...), by time: the finance reports and the order overview.  Consumption entries are not in it and cost it nothing.';
--@ copy table prepay.ledger_default
-- NaN refused in its numeric columns, as sql/integrity.sql gives every table
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT a.attname FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = 'prepay.ledger'::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND a.atttypid = 'pg_catalog.numeric'::pg_catalog.regtype
         ORDER BY a.attnum
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE prepay.ledger ADD CONSTRAINT %I CHECK (%I OPERATOR(pg_catalog.<>) ''NaN''::pg_catalog.numeric)',
                                  'ledger_' || c.attname || '_not_nan', c.attname);
        EXECUTE pg_catalog.format('COMMENT ON CONSTRAINT %I ON prepay.ledger IS %L', 'ledger_' || c.attname || '_not_nan',
                                  pg_catalog.format('%s is a number: NaN is refused (sql/integrity.sql).', c.attname));
    END LOOP;
END $$;
--@ copy table prepay.payment_reference
--@ copy table prepay.reversed_entry

INSERT INTO prepay.ledger_default (site_id, kind, entry_id, account_id, created_at, meter_id, read_from, read_to,
                                   reverses_entry, pricing_id, actor_id, amount, balance_after, energy, exact_charge,
                                   channel, external_ref, reason, pieces)
SELECT l.site_id, l.kind, l.entry_id, l.account_id, l.created_at, l.meter_id, l.read_from, l.read_to,
       l.reverses_entry, l.pricing_id, a.actor_id, l.amount, l.balance_after, l.energy, l.exact_charge,
       l.channel, l.external_ref, l.reason, l.pieces
  FROM prepay.ledger_0_1 l JOIN prepay.actor a ON a.site_id = l.site_id AND a.login = l.created_by
 ORDER BY l.entry_id;
-- what the 0.1 table's unique indexes held (they allowed no duplicate)
INSERT INTO prepay.payment_reference (site_id, account_id, entry_id, created_at, channel, external_ref)
SELECT site_id, account_id, entry_id, created_at, channel, external_ref
  FROM prepay.ledger WHERE external_ref IS NOT NULL ORDER BY entry_id;
INSERT INTO prepay.reversed_entry (site_id, reverses_entry, account_id, entry_id, created_at)
SELECT site_id, reverses_entry, account_id, entry_id, created_at
  FROM prepay.ledger WHERE reverses_entry IS NOT NULL ORDER BY entry_id;

-- every row is there, with the same values (the login its actor row
-- names), or the upgrade stops
DO $$
DECLARE
    digest constant text := 'SELECT pg_catalog.count(*), coalesce(pg_catalog.sum(pg_catalog.hashtextextended(pg_catalog.concat_ws(''|'', '
        'site_id, kind, entry_id, account_id, created_at, meter_id, read_from, read_to, reverses_entry, pricing_id, amount, '
        'balance_after, energy, exact_charge, created_by, channel, external_ref, reason, pieces), 0)::numeric), 0) FROM (%s) AS l';
    a record;
    b record;
BEGIN
    EXECUTE pg_catalog.format(digest, 'SELECT * FROM prepay.ledger_0_1') INTO a;
    EXECUTE pg_catalog.format(digest, 'SELECT l.*, ac.login AS created_by FROM prepay.ledger l '
                                      'LEFT JOIN prepay.actor ac ON ac.site_id = l.site_id AND ac.actor_id = l.actor_id') INTO b;
    IF a IS DISTINCT FROM b THEN
        RAISE EXCEPTION 'prepay upgrade: the ledger entries copied into the partitioned table do not match the 0.1 table';
    END IF;
END $$;

-- what names the ledger's row type or reads the table is made again on the
-- new table (the functions taking a ledger row, the views over it)
--@ copy function prepay._service_at
--@ copy function prepay._is_charge
--@ copy function prepay._charged_exact
DROP FUNCTION prepay._service_at(integer, prepay.ledger_0_1);
DROP FUNCTION prepay._is_charge(integer, prepay.ledger_0_1);
DROP FUNCTION prepay._charged_exact(integer, bigint, prepay.ledger_0_1);
--@ copy view prepay.finance_daily
--@ copy view prepay.order_overview
--@ copy view prepay.arrears

-- (the 0.1 table is dropped by part 98)

-- ---------------------------------------------------------------------
-- triggers: append-only (the table, each partition, the key tables), the
-- unique keys, the money audit and the payment notification
-- ---------------------------------------------------------------------
--@ copy function prepay.ledger_refuse_change
--@ copy function prepay._ledger_unique_keys
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON prepay.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION prepay.ledger_refuse_change();
CREATE TRIGGER ledger_append_only_rows BEFORE UPDATE OR DELETE ON prepay.ledger
    FOR EACH ROW EXECUTE FUNCTION prepay.ledger_refuse_change();
CREATE TRIGGER payment_reference_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON prepay.payment_reference
    FOR EACH STATEMENT EXECUTE FUNCTION prepay.ledger_refuse_change();
CREATE TRIGGER reversed_entry_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON prepay.reversed_entry
    FOR EACH STATEMENT EXECUTE FUNCTION prepay.ledger_refuse_change();
CREATE TRIGGER ledger_unique_keys AFTER INSERT ON prepay.ledger
    FOR EACH ROW WHEN (NEW.external_ref IS NOT NULL OR NEW.reverses_entry IS NOT NULL)
    EXECUTE FUNCTION prepay._ledger_unique_keys();
CREATE TRIGGER notify_payment AFTER INSERT ON prepay.ledger
    FOR EACH ROW WHEN (NEW.kind = 'recharge') EXECUTE FUNCTION prepay._notify_payment();
CREATE TRIGGER audit_money AFTER INSERT ON prepay.ledger
    FOR EACH ROW WHEN (NEW.kind <> 'consumption') EXECUTE FUNCTION prepay._audit_money();
--@ copy trigger ledger_append_only ON prepay.ledger
--@ copy trigger ledger_append_only_rows ON prepay.ledger
--@ copy trigger payment_reference_append_only ON prepay.payment_reference
--@ copy trigger reversed_entry_append_only ON prepay.reversed_entry
--@ copy trigger ledger_unique_keys ON prepay.ledger
--@ copy trigger notify_payment ON prepay.ledger
--@ copy trigger audit_money ON prepay.ledger

-- the lookups of a payment reference and of a reversal go through the key tables
--@ copy function prepay._payment_replay
--@ copy function prepay.reverse

-- ---------------------------------------------------------------------
-- rights and row security as sql/security.sql gives them (a partition has
-- none of its own: it is reached through its table)
-- ---------------------------------------------------------------------
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ledger', 'payment_reference', 'reversed_entry'] LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON TABLE prepay.%I FROM PUBLIC', t);
        EXECUTE pg_catalog.format('GRANT SELECT ON TABLE prepay.%I TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant', t);
        EXECUTE pg_catalog.format('ALTER TABLE prepay.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('ALTER TABLE prepay.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE pg_catalog.format('CREATE POLICY site_staff ON prepay.%I TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader '
                                  'USING (site_id = ANY ((SELECT prepay._my_sites())::integer[])) '
                                  'WITH CHECK (site_id = ANY ((SELECT prepay._my_sites())::integer[]))', t);
        EXECUTE pg_catalog.format('COMMENT ON POLICY site_staff ON prepay.%I IS %L', t,
            'Administrators, operators, cashiers and readers see and change only the rows of the sites they are mapped to (prepay.site_access); their grants decide which changes.');
        EXECUTE pg_catalog.format('CREATE POLICY account_tenant ON prepay.%I FOR SELECT TO prepay_tenant '
                                  'USING ((site_id, account_id) IN (SELECT t.site_id, t.account_id FROM prepay._my_accounts() t))', t);
        EXECUTE pg_catalog.format('COMMENT ON POLICY account_tenant ON prepay.%I IS %L', t,
            'Tenants see only the rows of the accounts mapped to them (prepay.tenant_access).');
        PERFORM pg_catalog.pg_extension_config_dump(('prepay.' || t)::pg_catalog.regclass, '');
    END LOOP;
END $$;
SELECT pg_catalog.pg_extension_config_dump('prepay.ledger_default', '');

-- ---------------------------------------------------------------------
-- sql/partition.sql: the ledger's partitions (part 80 made the functions
-- that partition both tables)
-- ---------------------------------------------------------------------
--@ copy view prepay.ledger_partitions
SELECT prepay._comment_partitions_view('prepay.ledger_partitions', 'created_at', 'entries');
