/*-------------------------------------------------------------------------
 * sql/bill.sql
 *     Period bills and statements: a bill per account and period, payable
 *     for postpaid accounts and for fees settled by bill, a statement for
 *     everyone; drafting, issuing, paying, the arrears list.  The daily
 *     run of sql/billing.sql drafts and issues them.
 *
 * Exactly once, as in billing.sql: a bill is unique per (account,
 * period) and written under the account's row lock before anything is
 * posted; a ledger entry is on one bill (bill_entry).  The rules are in
 * docs/BILLING.md ("Bills").
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- bills and statements
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.bill_id_seq;
COMMENT ON SEQUENCE prepay.bill_id_seq IS 'Source of bill ids.';

CREATE TABLE prepay.bill (
    site_id         integer NOT NULL,
    bill_id         bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.bill_id_seq'),
    account_id      bigint NOT NULL,
    period_start    date NOT NULL,
    period_end      date NOT NULL,
    mode            prepay.account_mode NOT NULL,
    state           text NOT NULL DEFAULT 'draft' CHECK (state IN ('draft', 'confirmed', 'issued', 'paid')),
    wallet_balance  numeric(14,2) NOT NULL,
    energy          numeric(15,3) NOT NULL,
    charges         numeric(14,2) NOT NULL,
    amount_due      numeric(14,2) NOT NULL,
    paid            numeric(14,2) NOT NULL DEFAULT 0,
    drafted_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    confirmed_at    timestamptz,
    confirmed_by    text,
    issued_at       timestamptz,
    issued_by       text,
    due_on          date,
    PRIMARY KEY (site_id, bill_id),
    UNIQUE (site_id, account_id, period_start),
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account,
    CHECK (paid >= 0 AND paid <= greatest(amount_due, 0))
);
COMMENT ON TABLE prepay.bill IS 'An account''s bill for a period, one per account and period: drafted from the ledger and the periodic charges, confirmed by staff, then issued.  For a postpaid account it asks for the period''s charges; for a prepaid account it is a statement, payable only for fees and shares settled by bill.';
COMMENT ON COLUMN prepay.bill.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.bill.bill_id IS 'Bill id.';
COMMENT ON COLUMN prepay.bill.account_id IS 'Account billed.';
COMMENT ON COLUMN prepay.bill.period_start IS 'First local day billed.';
COMMENT ON COLUMN prepay.bill.period_end IS 'Day after the last local day billed.';
COMMENT ON COLUMN prepay.bill.mode IS 'The account''s mode when drafted.';
COMMENT ON COLUMN prepay.bill.state IS 'draft (redrafted on demand), confirmed (by staff), issued (payable), paid.';
COMMENT ON COLUMN prepay.bill.wallet_balance IS 'Wallet balance when the bill was drafted (for a prepaid statement; a postpaid account''s is minus what it owes).';
COMMENT ON COLUMN prepay.bill.energy IS 'Energy charged on the bill.';
COMMENT ON COLUMN prepay.bill.charges IS 'Sum of every line (what the period cost, allowances deducted).';
COMMENT ON COLUMN prepay.bill.amount_due IS 'Sum of the payable lines: everything for a postpaid account, the fees and shares settled by bill for a prepaid one.';
COMMENT ON COLUMN prepay.bill.paid IS 'How much of amount_due payments have settled.';
COMMENT ON COLUMN prepay.bill.drafted_at IS 'When it was (last) drafted.';
COMMENT ON COLUMN prepay.bill.confirmed_at IS 'When staff confirmed it.';
COMMENT ON COLUMN prepay.bill.confirmed_by IS 'Who confirmed it.';
COMMENT ON COLUMN prepay.bill.issued_at IS 'When it was issued.';
COMMENT ON COLUMN prepay.bill.issued_by IS 'Who issued it.';
COMMENT ON COLUMN prepay.bill.due_on IS 'Payment due date (issue day plus the site''s payment terms).';

CREATE TABLE prepay.bill_line (
    site_id     integer NOT NULL,
    bill_id     bigint NOT NULL,
    line_no     integer NOT NULL,
    kind        text NOT NULL,
    description text NOT NULL,
    quantity    numeric(15,3),
    unit_price  numeric(14,6),
    amount      numeric(14,2) NOT NULL,
    payable     boolean NOT NULL,
    PRIMARY KEY (site_id, bill_id, line_no),
    FOREIGN KEY (site_id, bill_id) REFERENCES prepay.bill ON DELETE CASCADE
);
COMMENT ON TABLE prepay.bill_line IS 'The lines of a bill: energy by TOU period and tier, rounding, basic charge, fees, common-area and loss shares, allowances, adjustments.';
COMMENT ON COLUMN prepay.bill_line.site_id IS 'Site.';
COMMENT ON COLUMN prepay.bill_line.bill_id IS 'Bill.';
COMMENT ON COLUMN prepay.bill_line.line_no IS 'Order of the line on the bill.';
COMMENT ON COLUMN prepay.bill_line.kind IS 'energy, rounding, basic_charge, fee, fee_credit, common_area, loss, allowance, allowance_expiry, adjustment or reversal.';
COMMENT ON COLUMN prepay.bill_line.description IS 'What the line is (TOU period and tier, fee or rule name).';
COMMENT ON COLUMN prepay.bill_line.quantity IS 'Energy (kWh or m3) for energy and share lines.';
COMMENT ON COLUMN prepay.bill_line.unit_price IS 'Price per unit for energy lines.';
COMMENT ON COLUMN prepay.bill_line.amount IS 'Amount; positive is owed by the tenant, negative is a credit.';
COMMENT ON COLUMN prepay.bill_line.payable IS 'Whether the line is asked for (part of amount_due) or shown for information (already paid from the prepaid wallet).';

CREATE TABLE prepay.bill_entry (
    site_id  integer NOT NULL,
    entry_id bigint NOT NULL,
    bill_id  bigint NOT NULL,
    PRIMARY KEY (site_id, entry_id),
    FOREIGN KEY (site_id, bill_id) REFERENCES prepay.bill ON DELETE CASCADE
);
CREATE INDEX bill_entry_bill ON prepay.bill_entry (site_id, bill_id);
COMMENT ON INDEX prepay.bill_entry_bill IS 'The ledger entries of a bill.';
COMMENT ON TABLE prepay.bill_entry IS 'Which bill each ledger charge is on: every charge is billed exactly once, on the first bill drafted after it.';
COMMENT ON COLUMN prepay.bill_entry.site_id IS 'Site.';
COMMENT ON COLUMN prepay.bill_entry.entry_id IS 'Ledger entry.';
COMMENT ON COLUMN prepay.bill_entry.bill_id IS 'Bill it is on.';

CREATE TABLE prepay.bill_payment (
    site_id  integer NOT NULL,
    entry_id bigint NOT NULL,
    bill_id  bigint NOT NULL,
    amount   numeric(14,2) NOT NULL CHECK (amount > 0),
    PRIMARY KEY (site_id, entry_id, bill_id),
    FOREIGN KEY (site_id, bill_id) REFERENCES prepay.bill
);
COMMENT ON TABLE prepay.bill_payment IS 'How a bill payment (ledger entry of kind bill_payment) was allocated to issued bills, oldest first.';
COMMENT ON COLUMN prepay.bill_payment.site_id IS 'Site.';
COMMENT ON COLUMN prepay.bill_payment.entry_id IS 'The bill_payment ledger entry.';
COMMENT ON COLUMN prepay.bill_payment.bill_id IS 'Bill settled.';
COMMENT ON COLUMN prepay.bill_payment.amount IS 'Part of the payment that went to this bill.';

CREATE FUNCTION prepay._service_at(p_site_id integer, p_entry prepay.ledger)
RETURNS timestamptz LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT CASE
        WHEN p_entry.kind = 'consumption' THEN p_entry.read_to
        WHEN p_entry.channel = 'basic_charge' THEN
            prepay._local_start(p_site_id, pg_catalog.split_part(p_entry.external_ref, '/', 2)::date)
        ELSE coalesce((SELECT prepay._local_start(p_site_id, c.period_start) FROM prepay.period_charge c
                        WHERE c.site_id = p_site_id AND c.entry_id = p_entry.entry_id), p_entry.created_at)
    END);
END $$;
COMMENT ON FUNCTION prepay._service_at(integer, prepay.ledger) IS
'Internal: the instant a charge is for, which decides its bill: a consumption''s reading time, a basic charge''s day, a periodic charge''s period start, else when it was posted.';

CREATE FUNCTION prepay._is_charge(p_site_id integer, p_entry prepay.ledger)
RETURNS boolean LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT p_entry.kind NOT IN ('recharge', 'refund', 'closing_refund', 'bill_payment', 'bill_charge')
       AND (p_entry.kind <> 'reversal'
            OR (SELECT r.kind FROM prepay.ledger r WHERE r.site_id = p_site_id AND r.account_id = p_entry.account_id
                                                  AND r.entry_id = p_entry.reverses_entry)
               NOT IN ('recharge', 'refund', 'bill_payment')));
END $$;
COMMENT ON FUNCTION prepay._is_charge(integer, prepay.ledger) IS 'Internal: whether a ledger entry is something billed (a charge, a credit against charges or its reversal) rather than a payment.';

CREATE FUNCTION prepay._rule_name(p_charge prepay.period_charge)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT CASE
        WHEN p_charge.source IN ('fee', 'fee_credit') THEN
            (SELECT it.name FROM prepay.charge_item it WHERE it.site_id = p_charge.site_id AND it.item_id = p_charge.rule_id)
        WHEN p_charge.source IN ('common_area', 'loss') THEN
            (SELECT r.name FROM prepay.apportion_rule r WHERE r.site_id = p_charge.site_id AND r.rule_id = p_charge.rule_id)
        WHEN p_charge.source IN ('allowance', 'allowance_expiry') THEN
            (SELECT r.name FROM prepay.allowance_rule r WHERE r.site_id = p_charge.site_id AND r.rule_id = p_charge.rule_id)
    END);
END $$;
COMMENT ON FUNCTION prepay._rule_name(prepay.period_charge) IS 'Internal: the name of the fee or rule a periodic charge comes from (NULL for basic settlements and move-out expiry).';

CREATE FUNCTION prepay._bill_lines(p_site_id integer, p_bill prepay.bill)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    WITH entries AS (
        SELECT l.*, prepay._pricing_record(l.pieces, c.tariff_id, c.multiplier, c.version_from, c.period,
                                           l.read_from, l.read_to, l.energy, l.exact_charge) AS pricing
          FROM prepay.bill_entry be
          JOIN prepay.ledger l ON l.site_id = be.site_id AND l.account_id = p_bill.account_id AND l.entry_id = be.entry_id
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
        SELECT e.kind::text AS kind, coalesce(prepay._rule_name(ROW(c.*)::prepay.period_charge), e.kind::text) AS description,
               NULL::numeric AS quantity, NULL::numeric AS unit_price, -sum(e.amount) AS amount
          FROM entries e
          LEFT JOIN prepay.period_charge c ON c.site_id = e.site_id AND c.entry_id = e.entry_id
         WHERE e.kind <> 'consumption'
         GROUP BY e.kind, coalesce(prepay._rule_name(ROW(c.*)::prepay.period_charge), e.kind::text)
    ), billed AS (           -- fees and shares settled by bill
        SELECT c.source AS kind,
               coalesce(prepay._rule_name(ROW(c.*)::prepay.period_charge), c.source) || pg_catalog.format(' %s..%s', c.period_start, c.period_end - 1) AS description,
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
      FROM lines;
END $$;
COMMENT ON FUNCTION prepay._bill_lines(integer, prepay.bill) IS 'Internal: write the lines of a bill from its ledger entries and its periodic charges settled by bill.';

CREATE FUNCTION prepay.draft_bill(p_site_id integer, p_account_id bigint, p_period_start date, p_period_end date)
RETURNS prepay.bill LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    b prepay.bill;
    t_to timestamptz := prepay._local_start(p_site_id, p_period_end);
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF p_period_start IS NULL OR p_period_end IS NULL OR p_period_end <= p_period_start
       OR NOT pg_catalog.isfinite(p_period_start) OR NOT pg_catalog.isfinite(p_period_end) THEN
        PERFORM prepay._raise('22023', 'a bill needs a period', pg_catalog.format('%s..%s', p_period_start, p_period_end),
                              'Pass the first day and the day after the last day.');
    END IF;
    a := prepay._lock_account(p_site_id, p_account_id, false);
    SELECT * INTO b FROM prepay.bill WHERE site_id = p_site_id AND account_id = p_account_id AND period_start = p_period_start;
    IF FOUND AND b.state <> 'draft' THEN
        RETURN b;                    -- confirmed bills are never redrafted
    END IF;
    IF FOUND THEN
        UPDATE prepay.period_charge SET bill_id = NULL WHERE site_id = p_site_id AND bill_id = b.bill_id;
        DELETE FROM prepay.bill WHERE site_id = p_site_id AND bill_id = b.bill_id;
    END IF;
    INSERT INTO prepay.bill (site_id, account_id, period_start, period_end, mode, wallet_balance,
                             energy, charges, amount_due)
    VALUES (p_site_id, p_account_id, p_period_start, p_period_end, a.mode, a.balance, 0, 0, 0)
    RETURNING * INTO b;
    INSERT INTO prepay.bill_entry (site_id, entry_id, bill_id)
    SELECT p_site_id, l.entry_id, b.bill_id FROM prepay.ledger l
     WHERE l.site_id = p_site_id AND l.account_id = p_account_id
       AND NOT EXISTS (SELECT 1 FROM prepay.bill_entry x WHERE x.site_id = p_site_id AND x.entry_id = l.entry_id)
       AND prepay._is_charge(p_site_id, ROW(l.*)::prepay.ledger)   -- a row value, not the shard's row type, on Citus
       AND CASE WHEN l.kind = 'consumption' THEN l.read_to <= t_to   -- consumption is over (read_from, read_to]
                ELSE prepay._service_at(p_site_id, ROW(l.*)::prepay.ledger) < t_to END;
    UPDATE prepay.period_charge SET bill_id = b.bill_id
     WHERE site_id = p_site_id AND account_id = p_account_id AND settle = 'bill' AND bill_id IS NULL
       AND period_start < p_period_end;
    PERFORM prepay._bill_lines(p_site_id, b);
    UPDATE prepay.bill SET
        energy = coalesce((SELECT sum(l.energy) FROM prepay.bill_entry be
                             JOIN prepay.ledger l ON l.site_id = be.site_id AND l.account_id = b.account_id
                                                 AND l.entry_id = be.entry_id
                            WHERE be.site_id = p_site_id AND be.bill_id = b.bill_id AND l.kind = 'consumption'), 0),
        charges = coalesce((SELECT sum(amount) FROM prepay.bill_line WHERE site_id = p_site_id AND bill_id = b.bill_id), 0),
        amount_due = coalesce((SELECT sum(amount) FROM prepay.bill_line
                                WHERE site_id = p_site_id AND bill_id = b.bill_id AND payable), 0)
     WHERE site_id = p_site_id AND bill_id = b.bill_id
    RETURNING * INTO b;
    RETURN b;
END $$;
COMMENT ON FUNCTION prepay.draft_bill(integer, bigint, date, date) IS
'Draft (or redraft, while still a draft) an account''s bill for [start, end): every ledger charge not yet billed whose service time is before the end (so a late charge lands on the next bill, never on two), and the fees and shares settled by bill.  A confirmed or issued bill is returned unchanged.  22023 for a missing, empty or infinite period.';

CREATE FUNCTION prepay.draft_bills(p_site_id integer, p_period_start date, p_period_end date DEFAULT NULL)
RETURNS SETOF prepay.bill LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    period_end date := coalesce(p_period_end, (p_period_start + interval '1 month')::date);
    a prepay.account;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF p_period_start IS NULL OR NOT pg_catalog.isfinite(p_period_start) OR NOT pg_catalog.isfinite(period_end) THEN
        PERFORM prepay._raise('22023', 'a bill needs a period', pg_catalog.format('%s..%s', p_period_start, period_end),
                              'Pass the first day and the day after the last day.');
    END IF;
    FOR a IN SELECT * FROM prepay.account ac
              WHERE ac.site_id = p_site_id
                AND prepay._days_open(p_site_id, ROW(ac.*)::prepay.account, p_period_start, period_end) > 0
              ORDER BY ac.account_id LOOP
        RETURN NEXT prepay.draft_bill(p_site_id, a.account_id, p_period_start, period_end);
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.draft_bills(integer, date, date) IS 'Draft the bill of every account open during [start, end) (end defaults to a month after start), postpaid and prepaid alike.';

CREATE FUNCTION prepay._bill_for_update(p_site_id integer, p_bill_id bigint)
RETURNS prepay.bill LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.bill;
BEGIN
    SELECT * INTO b FROM prepay.bill WHERE site_id = p_site_id AND bill_id = p_bill_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY021', 'unknown bill', pg_catalog.format('Site %s has no bill %s.', p_site_id, p_bill_id),
                              'prepay.bill lists the bills.');
    END IF;
    RETURN b;
END $$;
COMMENT ON FUNCTION prepay._bill_for_update(integer, bigint) IS 'Internal: lock a bill, PY021 if unknown.';

CREATE FUNCTION prepay._bill_to_move(p_site_id integer, p_bill_id bigint, p_from text, p_to text[],
                                    p_message text, p_hint text)
RETURNS prepay.bill LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.bill := prepay._bill_for_update(p_site_id, p_bill_id);
BEGIN
    IF b.state <> p_from AND NOT b.state = ANY (p_to) THEN
        PERFORM prepay._raise('PY022', p_message, pg_catalog.format('Bill %s is %s.', p_bill_id,
                                                                    CASE b.state WHEN 'draft' THEN 'a draft' ELSE b.state END),
                              p_hint);
    END IF;
    RETURN b;
END $$;
COMMENT ON FUNCTION prepay._bill_to_move(integer, bigint, text, text[], text, text) IS
'Internal: lock a bill that is to move from state p_from (PY021 if unknown) and return it; a bill already in one of the states p_to is returned as it is (moving twice is harmless), a bill in any other state is refused with PY022 and the message and hint given.';

CREATE FUNCTION prepay.confirm_bill(p_site_id integer, p_bill_id bigint)
RETURNS prepay.bill LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.bill;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    b := prepay._bill_to_move(p_site_id, p_bill_id, 'draft', '{confirmed}', 'only a draft bill can be confirmed', NULL);
    IF b.state = 'draft' THEN
        UPDATE prepay.bill SET state = 'confirmed', confirmed_at = pg_catalog.now(), confirmed_by = SESSION_USER
         WHERE site_id = p_site_id AND bill_id = p_bill_id RETURNING * INTO b;
    END IF;
    RETURN b;
END $$;
COMMENT ON FUNCTION prepay.confirm_bill(integer, bigint) IS 'Staff confirm a drafted bill (recording who and when); it is never redrafted after.  Confirming twice is harmless; PY022 for an issued bill.';

CREATE FUNCTION prepay.issue_bill(p_site_id integer, p_bill_id bigint)
RETURNS prepay.bill LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.bill;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    b := prepay._bill_to_move(p_site_id, p_bill_id, 'confirmed', '{issued,paid}',
                              'a bill must be confirmed before it is issued', 'Call prepay.confirm_bill first.');
    IF b.state = 'confirmed' THEN
        UPDATE prepay.bill
           SET state = CASE WHEN amount_due <= 0 THEN 'paid' ELSE 'issued' END,
               issued_at = pg_catalog.now(), issued_by = SESSION_USER,
               due_on = prepay._local_day(p_site_id, pg_catalog.now())
                        + (SELECT s.payment_terms_days FROM prepay.site s WHERE s.site_id = p_site_id)
         WHERE site_id = p_site_id AND bill_id = p_bill_id RETURNING * INTO b;
    END IF;
    RETURN b;
END $$;
COMMENT ON FUNCTION prepay.issue_bill(integer, bigint) IS 'Issue a confirmed bill: it becomes payable, due after the site''s payment terms; a bill with nothing due is paid at once.  Issuing twice is harmless; PY022 for a draft.';

CREATE FUNCTION prepay.pay_bills(p_site_id integer, p_account_id bigint, p_amount numeric,
                                 p_channel text, p_external_ref text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    entry bigint;
    outstanding numeric;
    b prepay.bill;
    left_to_allocate numeric := p_amount;
    part numeric;
    actor smallint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'money');
    PERFORM prepay._check_amount(p_amount, 'bill payment');
    PERFORM prepay._check_reference(p_channel, 'channel');
    PERFORM prepay._check_reference(p_external_ref, 'external reference');
    a := prepay._lock_account(p_site_id, p_account_id, false);
    entry := prepay._payment_replay(p_site_id, p_account_id, 'bill_payment', p_amount, p_channel, p_external_ref);
    IF entry IS NOT NULL THEN
        RETURN entry;
    END IF;
    SELECT coalesce(sum(amount_due - paid), 0) INTO outstanding FROM prepay.bill
     WHERE site_id = p_site_id AND account_id = p_account_id AND state = 'issued';
    IF p_amount > outstanding THEN
        PERFORM prepay._raise('PY023', 'payment exceeds the bills outstanding',
            pg_catalog.format('Account %s owes %s on issued bills; %s was paid.', p_account_id, outstanding, p_amount),
            'Pay at most what the issued bills ask for; put any extra on the wallet with prepay.recharge.');
    END IF;
    IF a.mode = 'postpaid' THEN
        -- the charges are in the wallet already: the payment brings it back up
        entry := prepay._post_entry(p_site_id, p_account_id, 'bill_payment', p_amount, p_channel, p_external_ref);
    ELSE
        -- fees billed to a prepaid account: the money comes in and settles them, the wallet does not move
        actor := prepay._actor_id(p_site_id);
        INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id, channel, external_ref, reason)
        VALUES (p_site_id, p_account_id, 'bill_payment', p_amount, a.balance + p_amount, actor, p_channel, p_external_ref,
                'bill payment')
        RETURNING entry_id INTO entry;
        INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id, reason, reverses_entry)
        VALUES (p_site_id, p_account_id, 'bill_charge', -p_amount, a.balance, actor,
                pg_catalog.format('billed charges settled by entry %s', entry), NULL);
    END IF;
    FOR b IN SELECT * FROM prepay.bill
              WHERE site_id = p_site_id AND account_id = p_account_id AND state = 'issued'
              ORDER BY period_start, bill_id FOR UPDATE LOOP
        EXIT WHEN left_to_allocate = 0;
        part := least(left_to_allocate, b.amount_due - b.paid);
        INSERT INTO prepay.bill_payment (site_id, entry_id, bill_id, amount) VALUES (p_site_id, entry, b.bill_id, part);
        UPDATE prepay.bill SET paid = paid + part,
                               state = CASE WHEN paid + part = amount_due THEN 'paid' ELSE 'issued' END
         WHERE site_id = p_site_id AND bill_id = b.bill_id;
        left_to_allocate := left_to_allocate - part;
    END LOOP;
    RETURN entry;
END $$;
COMMENT ON FUNCTION prepay.pay_bills(integer, bigint, numeric, text, text) IS
'Pay an account''s issued bills, oldest first, and return the bill_payment ledger entry.  A postpaid account''s wallet goes up by the payment; a prepaid account''s bill-settled fees are recorded as paid in and charged (bill_payment and bill_charge entries), its wallet unchanged.  Idempotent per (channel, external_ref); PY023 beyond what is outstanding.';

CREATE VIEW prepay.bill_arrears AS
SELECT b.site_id, b.account_id, a.code AS account_code, a.name AS account_name, a.phone, a.email,
       b.bill_id, b.period_start, b.period_end, b.due_on, b.amount_due, b.paid,
       b.amount_due - b.paid AS outstanding,
       greatest(s.today - b.due_on, 0) AS days_overdue,
       CASE WHEN s.today <= b.due_on THEN 'not due'
            WHEN s.today - b.due_on <= 30 THEN '1-30'
            WHEN s.today - b.due_on <= 60 THEN '31-60'
            WHEN s.today - b.due_on <= 90 THEN '61-90'
            ELSE 'over 90' END AS ageing
  FROM prepay.bill b
  JOIN prepay.account a ON a.site_id = b.site_id AND a.account_id = b.account_id
  -- one call per bill, not five (a function in FROM is called once per
  -- row; Citus refuses a sub-SELECT without FROM here); the function, not
  -- a join, reads prepay.site, which a tenant may not read
  CROSS JOIN LATERAL prepay._local_day(b.site_id, pg_catalog.now()) AS s(today)
 WHERE b.state = 'issued';
COMMENT ON VIEW prepay.bill_arrears IS 'Issued bills not fully paid, with their age: the arrears list (postpaid accounts, and fees billed to prepaid ones).';
COMMENT ON COLUMN prepay.bill_arrears.site_id IS 'Site.';
COMMENT ON COLUMN prepay.bill_arrears.account_id IS 'Account.';
COMMENT ON COLUMN prepay.bill_arrears.account_code IS 'Account code.';
COMMENT ON COLUMN prepay.bill_arrears.account_name IS 'Tenant name.';
COMMENT ON COLUMN prepay.bill_arrears.phone IS 'Contact phone.';
COMMENT ON COLUMN prepay.bill_arrears.email IS 'Contact e-mail.';
COMMENT ON COLUMN prepay.bill_arrears.bill_id IS 'Bill.';
COMMENT ON COLUMN prepay.bill_arrears.period_start IS 'First day billed.';
COMMENT ON COLUMN prepay.bill_arrears.period_end IS 'Day after the last day billed.';
COMMENT ON COLUMN prepay.bill_arrears.due_on IS 'Due date.';
COMMENT ON COLUMN prepay.bill_arrears.amount_due IS 'Amount the bill asks for.';
COMMENT ON COLUMN prepay.bill_arrears.paid IS 'Paid so far.';
COMMENT ON COLUMN prepay.bill_arrears.outstanding IS 'Still owed.';
COMMENT ON COLUMN prepay.bill_arrears.days_overdue IS 'Days past the due date (site local), 0 when not yet due.';
COMMENT ON COLUMN prepay.bill_arrears.ageing IS 'Ageing bucket: not due, 1-30, 31-60, 61-90, over 90 days overdue.';

-- pg_dump: bills are user data
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['bill', 'bill_line', 'bill_entry', 'bill_payment', 'bill_id_seq'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(('prepay.' || t)::regclass, '');
    END LOOP;
END $$;
