-- sql/upgrade/0.1--0.2/62_citus_identity.sql: the tenant's reads on Citus (test/t/222_citus_identity_move.pl): my_charges, my_payments and my_bills read account by account, each statement filtered by the account's site (Citus pushes no LIMIT per account down otherwise).

CREATE OR REPLACE FUNCTION prepay.my_charges(p_account_id bigint DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS TABLE (site_id integer, account_id bigint, entry_id bigint, kind text, created_at timestamptz, amount numeric,
               balance_after numeric, meter_id bigint, read_from timestamptz, read_to timestamptz, energy numeric,
               explanation jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
BEGIN
    PERFORM prepay._api_limit(p_limit);
    -- account by account, each statement filtered by the account's site: on
    -- Citus one task on the site's shard (a LIMIT per account cannot be
    -- pushed down otherwise)
    FOR t IN SELECT x.site_id, x.account_id FROM prepay._authorize_tenant(p_account_id) x ORDER BY 1, 2 LOOP
        RETURN QUERY
        SELECT l.site_id, l.account_id, l.entry_id, l.kind::text, l.created_at, l.amount, l.balance_after,
               l.meter_id, l.read_from, l.read_to, l.energy,
               CASE WHEN l.kind = 'consumption' AND l.pieces IS NOT NULL THEN
                   (SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(x) - 'entry_id' - 'meter_id' - 'read_from' - 'read_to'
                                                ORDER BY x.piece_from, x.tier)
                      FROM prepay.explain_charge(l.site_id, l.entry_id) AS x) END
          FROM (SELECT e.* FROM prepay.ledger e
                 WHERE e.site_id = t.site_id AND e.account_id = t.account_id
                   AND e.kind NOT IN ('recharge', 'refund', 'closing_refund', 'bill_payment')
                 ORDER BY e.entry_id DESC LIMIT p_limit) AS l
         ORDER BY l.entry_id DESC;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION prepay.my_payments(p_account_id bigint DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS TABLE (site_id integer, account_id bigint, entry_id bigint, kind text, created_at timestamptz, amount numeric,
               balance_after numeric, channel text, reference text, reverses_entry bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
BEGIN
    PERFORM prepay._api_limit(p_limit);
    -- account by account, each statement filtered by the account's site: on
    -- Citus one task on the site's shard (a LIMIT per account cannot be
    -- pushed down otherwise)
    FOR t IN SELECT x.site_id, x.account_id FROM prepay._authorize_tenant(p_account_id) x ORDER BY 1, 2 LOOP
        RETURN QUERY
        SELECT l.site_id, l.account_id, l.entry_id, l.kind::text, l.created_at, l.amount, l.balance_after,
               l.channel, l.external_ref, l.reverses_entry
          FROM (SELECT e.* FROM prepay.ledger e
                 WHERE e.site_id = t.site_id AND e.account_id = t.account_id
                   AND (e.kind IN ('recharge', 'refund', 'closing_refund', 'bill_payment')
                        OR e.kind = 'reversal' AND EXISTS (
                               SELECT 1 FROM prepay.ledger r
                                WHERE r.site_id = e.site_id AND r.site_id = t.site_id AND r.entry_id = e.reverses_entry
                                  AND r.kind IN ('recharge', 'refund')))
                 ORDER BY e.entry_id DESC LIMIT p_limit) AS l
         ORDER BY l.entry_id DESC;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION prepay.my_bills(p_account_id bigint DEFAULT NULL, p_limit integer DEFAULT 12)
RETURNS TABLE (site_id integer, account_id bigint, bill_id bigint, period_start date, period_end date, state text,
               energy numeric, charges numeric, amount_due numeric, paid numeric, outstanding numeric, due_on date,
               issued_at timestamptz, lines jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
BEGIN
    PERFORM prepay._api_limit(p_limit);
    -- account by account, each statement filtered by the account's site: on
    -- Citus one task on the site's shard (a LIMIT per account cannot be
    -- pushed down otherwise)
    FOR t IN SELECT a.site_id, a.account_id FROM prepay._authorize_tenant(p_account_id) a ORDER BY 1, 2 LOOP
        RETURN QUERY
        SELECT b.site_id, b.account_id, b.bill_id, b.period_start, b.period_end, b.state, b.energy, b.charges,
               b.amount_due, b.paid, b.amount_due - b.paid, b.due_on, b.issued_at,
               (SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(bl) - 'site_id' - 'bill_id' ORDER BY bl.line_no)
                  FROM prepay.bill_line bl WHERE bl.site_id = b.site_id AND bl.site_id = t.site_id AND bl.bill_id = b.bill_id)
          FROM (SELECT x.* FROM prepay.bill x
                 WHERE x.site_id = t.site_id AND x.account_id = t.account_id AND x.state IN ('issued', 'paid')
                 ORDER BY x.period_start DESC LIMIT p_limit) AS b
         ORDER BY b.period_start DESC;
    END LOOP;
END $$;
