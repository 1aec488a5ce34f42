/*-------------------------------------------------------------------------
 * sql/api.sql
 *     The tenant's and the payment service's API, shaped for a REST
 *     gateway (PostgREST exposes each function as POST /rpc/<name> with
 *     the parameter names as JSON keys): a tenant reads its balance,
 *     meters, recent charges with their pricing, bills, payments and
 *     forecast; a payment service (a cashier role) credits a provider's
 *     payment and refund idempotently by the provider's id and gets the
 *     new balance back in the same call.  Appended before security.sql
 *     into prepay--<version>.sql.  docs/INTEGRATION.md is the deployment
 *     (authenticator, claims, pooling) and the table of SQLSTATEs and HTTP
 *     statuses; docs/SECURITY.md the identity model.
 *
 * Vocabulary
 *     my accounts the accounts the role a request acts as may see as a
 *                 tenant: mapped to it in prepay.tenant_access, or named
 *                 by the verified claims its authenticator passed
 *                 (prepay._my_accounts()).  Every tenant function takes an
 *                 optional p_account_id that narrows them to one.
 *     provider    the payment provider; its name is the ledger's channel
 *                 and its transaction (or refund) id the external_ref, so
 *                 one id credits once (prepay.recharge's idempotency).
 *
 * Rows are JSON-friendly: enums as text, amounts as numeric (exact in
 * JSON), explanations and bill lines as jsonb arrays.
 *
 * Errors: 42501 not a tenant, or no such account of the caller's, or no
 * money capability at the site; 22023 a bad amount, limit or empty
 * provider id; PY001 unknown account, PY002 closed account, PY004 a
 * provider id already used for a different payment, PY005 a refund above
 * the refundable balance, PY203 claims an authenticator passed that name
 * no valid account.
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- the tenant: which accounts a request may read
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._authorize_tenant(p_account_id bigint)
RETURNS TABLE (site_id integer, account_id bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_catalog.pg_has_role(prepay._caller(), 'prepay_tenant', 'USAGE') THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied: %s is not a tenant', prepay._caller_name()),
            pg_catalog.format('Role %s does not have the privileges of prepay_tenant.', prepay._caller_name()),
            'The tenant API answers tenant roles (GRANT prepay_tenant TO the role the gateway switches to).');
    END IF;
    IF prepay._caller_is_superuser() THEN       -- superusers pass every check: any account
        RETURN QUERY SELECT a.site_id, a.account_id FROM prepay.account a
                      WHERE p_account_id IS NULL OR a.account_id = p_account_id
                      ORDER BY 1, 2;
    ELSE
        RETURN QUERY SELECT t.site_id, t.account_id FROM prepay._my_accounts() t
                      WHERE p_account_id IS NULL OR t.account_id = p_account_id
                      ORDER BY 1, 2;
    END IF;
    IF NOT FOUND THEN
        PERFORM prepay._raise('42501', CASE WHEN p_account_id IS NULL
                                            THEN pg_catalog.format('permission denied: %s has no account', prepay._caller_name())
                                            ELSE pg_catalog.format('permission denied for account %s', p_account_id) END,
            pg_catalog.format('Role %s is mapped to no such account (prepay.tenant_access) and the request carries no claims '
                              'its login may vouch for (prepay.api_authenticator).', prepay._caller_name()),
            'Map the tenant role to its account, or have the gateway''s authenticator pass the verified claims {"site_id", "account_id"}.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._authorize_tenant(bigint) IS
'Internal: the accounts (site_id, account_id) the calling tenant may read (prepay._my_accounts(): mapped, or named by verified claims; every account for a superuser), narrowed to p_account_id if given.  Raises 42501 if the caller is not a tenant or has no such account.  Every tenant function of sql/api.sql starts with it.';

CREATE FUNCTION prepay._api_limit(p_limit integer)
RETURNS integer LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
        PERFORM prepay._raise('22023', 'limit must be between 1 and 1000',
            pg_catalog.format('The limit given was %s.', coalesce(p_limit::text, 'NULL')),
            'Ask for at most 1000 rows at a time.');
    END IF;
    RETURN p_limit;
END $$;
COMMENT ON FUNCTION prepay._api_limit(integer) IS 'Internal: refuse a row limit outside 1 .. 1000 (22023).';

-- ---------------------------------------------------------------------
-- the tenant's reads
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.my_balance(p_account_id bigint DEFAULT NULL)
RETURNS TABLE (site_id integer, account_id bigint, account_code text, account_name text, mode text, currency text,
               balance numeric, credit_limit numeric, available numeric, allowance_left numeric, alarm_level smallint,
               closed boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT a.site_id, a.account_id, a.code, a.name, a.mode::text, s.currency::text,
           a.balance, a.credit_limit, a.balance + a.credit_limit, a.allowance_left, a.alarm_level,
           a.closed_at IS NOT NULL
      FROM prepay._authorize_tenant(p_account_id) t
      JOIN prepay.account a ON a.site_id = t.site_id AND a.account_id = t.account_id
      JOIN prepay.site s ON s.site_id = a.site_id
     ORDER BY a.site_id, a.account_id;
END $$;
COMMENT ON FUNCTION prepay.my_balance(bigint) IS
'Tenant API: the balance of each of the caller''s accounts (or of p_account_id): balance, credit limit, available (balance + credit limit), unspent allowance, alarm level (0 ok, 1 low, 2 pre-trip, 3 arrears), in the site''s currency.  42501 for a caller that is not a tenant or has no such account.';

CREATE FUNCTION prepay.my_meters(p_account_id bigint DEFAULT NULL)
RETURNS TABLE (site_id integer, account_id bigint, meter_id bigint, meter_code text, kind text, building text,
               floor text, room text, relay_state text, last_read_at timestamptz, last_energy numeric, lost boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT m.site_id, m.account_id, m.meter_id, m.code, m.kind::text, m.building, m.floor, m.room,
           m.relay_state::text, m.last_read_at, m.last_energy, m.lost_since IS NOT NULL
      FROM prepay._authorize_tenant(p_account_id) t
      JOIN prepay.meter m ON m.site_id = t.site_id AND m.account_id = t.account_id AND m.active
     ORDER BY m.site_id, m.account_id, m.meter_id;
END $$;
COMMENT ON FUNCTION prepay.my_meters(bigint) IS
'Tenant API: the active meters of the caller''s accounts (or of p_account_id): where they are, the relay state, the last reading (time and register) and whether contact is lost.  42501 as prepay.my_balance.';

CREATE FUNCTION prepay.my_charges(p_account_id bigint DEFAULT NULL, p_limit integer DEFAULT 20)
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
               CASE WHEN l.kind = 'consumption' AND (l.pieces IS NOT NULL OR l.pricing_id IS NOT NULL) THEN
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
COMMENT ON FUNCTION prepay.my_charges(bigint, integer) IS
'Tenant API: the p_limit (1 .. 1000, default 20) most recent charges and corrections of each of the caller''s accounts (everything but payments, refunds and bill payments), newest first; a consumption charge carries its explanation (prepay.explain_charge: the two register values, the multiplier and each priced piece with its period, tier, energy, unit price and exact amount) as a jsonb array.  42501 as prepay.my_balance; 22023 for a bad limit.';

CREATE FUNCTION prepay.my_payments(p_account_id bigint DEFAULT NULL, p_limit integer DEFAULT 20)
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
                                WHERE r.site_id = e.site_id AND r.site_id = t.site_id AND r.account_id = e.account_id
                                   AND r.entry_id = e.reverses_entry
                                  AND r.kind IN ('recharge', 'refund')))
                 ORDER BY e.entry_id DESC LIMIT p_limit) AS l
         ORDER BY l.entry_id DESC;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.my_payments(bigint, integer) IS
'Tenant API: the p_limit (1 .. 1000, default 20) most recent payments of each of the caller''s accounts, newest first: recharges, refunds, their reversals, the closing refund and bill payments, with the channel and its reference (the receipt or the provider''s transaction id).  42501 as prepay.my_balance; 22023 for a bad limit.';

CREATE FUNCTION prepay.my_bills(p_account_id bigint DEFAULT NULL, p_limit integer DEFAULT 12)
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
COMMENT ON FUNCTION prepay.my_bills(bigint, integer) IS
'Tenant API: the p_limit (1 .. 1000, default 12) latest issued or paid bills of each of the caller''s accounts (drafts stay with the back office), newest period first, with what is outstanding and the bill lines as a jsonb array.  42501 as prepay.my_balance; 22023 for a bad limit.';

CREATE FUNCTION prepay.my_forecast(p_account_id bigint DEFAULT NULL)
RETURNS TABLE (site_id integer, account_id bigint, balance numeric, available numeric, cost_per_day numeric,
               run_out_at timestamptz, days_left integer, status text, message text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT f.site_id, f.account_id, f.balance, f.available, f.recent_cost_per_day, f.run_out_at, d.days,
           f.status,
           CASE WHEN f.status <> 'forecast' THEN f.reason
                WHEN d.days < 1 THEN 'less than a day left'
                WHEN d.days = 1 THEN 'about 1 day left'
                ELSE pg_catalog.format('about %s days left', d.days) END
      FROM (SELECT DISTINCT t.site_id FROM prepay._authorize_tenant(p_account_id) t) AS ts
     CROSS JOIN LATERAL prepay.balance_forecast_at(ts.site_id, pg_catalog.now()) AS f
     CROSS JOIN LATERAL (SELECT greatest(pg_catalog.floor(EXTRACT(epoch FROM f.run_out_at - pg_catalog.now()) / 86400),
                                         0)::integer AS days) AS d
     WHERE (f.site_id, f.account_id) IN (SELECT t.site_id, t.account_id FROM prepay._authorize_tenant(p_account_id) t)
     ORDER BY f.site_id, f.account_id;
END $$;
COMMENT ON FUNCTION prepay.my_forecast(bigint) IS
'Tenant API: for each of the caller''s open accounts (or p_account_id) the balance forecast of prepay.balance_forecast_at as of now: recent cost per day, when the money runs out, the whole days left and a message ("about 3 days left", or the forecast''s reason when there is no forecast: postpaid, no recent consumption, in arrears, ...).  42501 as prepay.my_balance.';

-- ---------------------------------------------------------------------
-- the payment service: a provider's payments and refunds
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._api_payment(p_site_id integer, p_entry_id bigint, p_replayed boolean)
RETURNS TABLE (site_id integer, account_id bigint, entry_id bigint, kind text, amount numeric, balance numeric,
               currency text, posted_at timestamptz, replayed boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT l.site_id, l.account_id, l.entry_id, l.kind::text, l.amount, a.balance, s.currency::text, l.created_at,
           p_replayed
      FROM prepay.ledger l
      JOIN prepay.account a ON a.site_id = l.site_id AND a.account_id = l.account_id
      JOIN prepay.site s ON s.site_id = l.site_id
     WHERE l.site_id = p_site_id AND l.entry_id = p_entry_id;
END $$;
COMMENT ON FUNCTION prepay._api_payment(integer, bigint, boolean) IS
'Internal: the answer of prepay.credit_payment and prepay.refund_payment: the ledger entry, the account''s balance now, the currency and whether the call was a replay of an id already posted.';

CREATE FUNCTION prepay._api_post(p_site_id integer, p_account_id bigint, p_kind prepay.ledger_kind,
                                p_amount numeric, p_provider text, p_reference text, p_reason text)
RETURNS TABLE (site_id integer, account_id bigint, entry_id bigint, kind text, amount numeric, balance numeric,
               currency text, posted_at timestamptz, replayed boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    refund constant boolean := p_kind = 'refund';
    existing bigint;
    entry bigint;
BEGIN
    PERFORM prepay._check_amount(p_amount, CASE WHEN refund THEN 'refund' ELSE 'payment' END);
    PERFORM prepay._check_text(p_provider, 'provider');
    PERFORM prepay._check_text(p_reference, CASE WHEN refund THEN 'provider refund id' ELSE 'provider transaction id' END);
    -- under the account lock a second delivery of the same callback waits
    -- for the first and then finds its entry
    PERFORM prepay._lock_account(p_site_id, p_account_id);
    existing := prepay._payment_replay(p_site_id, p_account_id, p_kind, CASE WHEN refund THEN -p_amount ELSE p_amount END,
                                       p_provider, p_reference);
    IF existing IS NULL AND refund THEN
        entry := prepay.refund(p_site_id, p_account_id, p_amount, p_provider, p_reference, p_reason);
    ELSIF existing IS NULL THEN
        entry := prepay.recharge(p_site_id, p_account_id, p_amount, p_provider, p_reference);
    END IF;
    -- a statement of its own, so that its snapshot sees the new entry
    RETURN QUERY SELECT * FROM prepay._api_payment(p_site_id, coalesce(existing, entry), existing IS NOT NULL);
END $$;
COMMENT ON FUNCTION prepay._api_post(integer, bigint, prepay.ledger_kind, numeric, text, text, text) IS
'Internal: the posting of prepay.credit_payment (kind recharge) and prepay.refund_payment (kind refund), the caller authorized: check the input, lock the account, find the entry a previous delivery of the same provider reference posted or post it (prepay.recharge, prepay.refund), and answer with prepay._api_payment.';

CREATE FUNCTION prepay.credit_payment(p_site_id integer, p_account_id bigint, p_amount numeric,
                                      p_provider text, p_transaction_id text)
RETURNS TABLE (site_id integer, account_id bigint, entry_id bigint, kind text, amount numeric, balance numeric,
               currency text, posted_at timestamptz, replayed boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize(p_site_id, 'money');
    RETURN QUERY SELECT * FROM prepay._api_post(p_site_id, p_account_id, 'recharge', p_amount, p_provider,
                                                p_transaction_id, NULL);
END $$;
COMMENT ON FUNCTION prepay.credit_payment(integer, bigint, numeric, text, text) IS
'Payment service API: credit a provider''s payment to an account (prepay.recharge with the provider as channel and its transaction id as reference) and return the entry and the new balance in one row.  Idempotent: the same (provider, transaction id) credits once; a repeated or concurrent delivery returns the same entry with replayed = true; the same id for a different payment is refused (PY004).  Needs the money capability at the site (a cashier role): 42501.  PY001, PY002, 22023 as recharge.';

CREATE FUNCTION prepay.refund_payment(p_site_id integer, p_account_id bigint, p_amount numeric,
                                      p_provider text, p_refund_id text, p_reason text DEFAULT NULL)
RETURNS TABLE (site_id integer, account_id bigint, entry_id bigint, kind text, amount numeric, balance numeric,
               currency text, posted_at timestamptz, replayed boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize(p_site_id, 'money');
    RETURN QUERY SELECT * FROM prepay._api_post(p_site_id, p_account_id, 'refund', p_amount, p_provider,
                                                p_refund_id, p_reason);
END $$;
COMMENT ON FUNCTION prepay.refund_payment(integer, bigint, numeric, text, text, text) IS
'Payment service API: record a provider''s refund (money paid back out of the wallet: prepay.refund with the provider as channel and the provider''s refund id as reference) and return the entry and the new balance.  Idempotent per (provider, refund id) like credit_payment (replayed = true on a repeat); PY005 if it exceeds the balance less the unspent allowance, PY004 for an id used for a different payment; 42501 without the money capability at the site.';
