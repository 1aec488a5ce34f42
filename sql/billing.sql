/*-------------------------------------------------------------------------
 * sql/billing.sql
 *     Periodic billing: fees (rent, property fee, ...), common-area and
 *     line-loss apportionment, the month's two-part basic charge
 *     settlement, allowances, and the daily run, which also drafts and
 *     issues the period bills of sql/bill.sql.
 *
 * Exactly once.  Every periodic posting is a row of prepay.period_charge
 * keyed by (site, source, rule, account, period start) and inserted before
 * anything is posted, under the account's row lock: running a job twice,
 * or from two sessions at once, posts each charge once.  Apportionments
 * and bills have the same kind of key (rule, period) and (account,
 * period).  Jobs visit accounts in account_id order, as the rating
 * trigger does, so concurrent jobs never deadlock on account locks.
 *
 * The rules (pro-rating, rounding, what a period is, how consumption over
 * a period is measured) are in docs/BILLING.md.
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- periods and days
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._period(p_kind text, p_day date, OUT period_start date, OUT period_end date)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_kind NOT IN ('month', 'quarter', 'year') OR p_day IS NULL THEN
        PERFORM prepay._raise('22023', pg_catalog.format('unknown period %L', p_kind), NULL,
                              'A period is month, quarter or year.');
    END IF;
    period_start := pg_catalog.date_trunc(p_kind, p_day)::date;
    period_end := (period_start + ('1 ' || p_kind)::interval)::date;
END $$;
COMMENT ON FUNCTION prepay._period(text, date) IS 'Internal: the calendar month, quarter or year containing a day, as [period_start, period_end).';

CREATE FUNCTION prepay._local_day(p_site_id integer, p_at timestamptz)
RETURNS date LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT (p_at AT TIME ZONE s.time_zone)::date FROM prepay.site s WHERE s.site_id = p_site_id);
END $$;
COMMENT ON FUNCTION prepay._local_day(integer, timestamptz) IS 'Internal: the site''s local date of an instant.';

CREATE FUNCTION prepay._local_start(p_site_id integer, p_day date)
RETURNS timestamptz LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT p_day::timestamp AT TIME ZONE s.time_zone FROM prepay.site s WHERE s.site_id = p_site_id);
END $$;
COMMENT ON FUNCTION prepay._local_start(integer, date) IS 'Internal: the instant a local date of the site begins (local midnight).';

CREATE FUNCTION prepay._days_open(p_site_id integer, p_account prepay.account, p_from date, p_to date)
RETURNS integer LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT greatest(0, least(p_to, coalesce(prepay._local_day(p_site_id, p_account.closed_at), p_to))
                       - greatest(p_from, prepay._local_day(p_site_id, p_account.opened_at)))
$$;
COMMENT ON FUNCTION prepay._days_open(integer, prepay.account, date, date) IS
'Internal: how many days of [from, to) the account is open: the move-in day counts, the move-out day does not.  An open account counts as open to the end.';

-- ---------------------------------------------------------------------
-- account groups
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.account_group_id_seq;
COMMENT ON SEQUENCE prepay.account_group_id_seq IS 'Source of account group ids.';

CREATE TABLE prepay.account_group (
    site_id   integer NOT NULL REFERENCES prepay.site,
    group_id  bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.account_group_id_seq'),
    name      text NOT NULL,
    PRIMARY KEY (site_id, group_id),
    UNIQUE (site_id, name)
);
COMMENT ON TABLE prepay.account_group IS 'A named set of accounts that a fee, an apportionment or an allowance applies to (a floor, the shops sharing a corridor, the students of a dormitory).';
COMMENT ON COLUMN prepay.account_group.site_id IS 'Site of the group.';
COMMENT ON COLUMN prepay.account_group.group_id IS 'Group id.';
COMMENT ON COLUMN prepay.account_group.name IS 'Unique name within the site.';

CREATE TABLE prepay.account_group_member (
    site_id    integer NOT NULL,
    group_id   bigint NOT NULL,
    account_id bigint NOT NULL,
    ratio      numeric(12,6) NOT NULL DEFAULT 1 CHECK (ratio >= 0),
    PRIMARY KEY (site_id, group_id, account_id),
    FOREIGN KEY (site_id, group_id) REFERENCES prepay.account_group ON DELETE CASCADE,
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account
);
COMMENT ON TABLE prepay.account_group_member IS 'The accounts of a group.';
COMMENT ON COLUMN prepay.account_group_member.site_id IS 'Site of the group.';
COMMENT ON COLUMN prepay.account_group_member.group_id IS 'Group.';
COMMENT ON COLUMN prepay.account_group_member.account_id IS 'Member account.';
COMMENT ON COLUMN prepay.account_group_member.ratio IS 'The member''s share weight for apportionment by custom ratios (ignored by the other methods).';

CREATE FUNCTION prepay._members(p_site_id integer, p_group_id bigint)
RETURNS SETOF prepay.account LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT a.* FROM prepay.account a
     WHERE a.site_id = p_site_id
       AND (p_group_id IS NULL
            OR EXISTS (SELECT 1 FROM prepay.account_group_member g
                        WHERE g.site_id = p_site_id AND g.group_id = p_group_id AND g.account_id = a.account_id))
     ORDER BY a.account_id;
END $$;
COMMENT ON FUNCTION prepay._members(integer, bigint) IS 'Internal: the accounts of a group, or every account of the site when the group is NULL, in account_id order (the lock order).';

-- ---------------------------------------------------------------------
-- periodic postings: the exactly-once record
-- ---------------------------------------------------------------------

CREATE TABLE prepay.period_charge (
    site_id      integer NOT NULL,
    source       text NOT NULL CHECK (source IN ('fee', 'fee_credit', 'common_area', 'loss', 'allowance',
                                                 'allowance_expiry', 'basic_settlement')),
    rule_id      bigint NOT NULL,
    account_id   bigint NOT NULL,
    period_start date NOT NULL,
    period_end   date NOT NULL,
    amount       numeric(14,2) NOT NULL,
    settle       text NOT NULL CHECK (settle IN ('deduct', 'bill', 'none')),
    entry_id     bigint,
    bill_id      bigint,
    inputs       jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (site_id, source, rule_id, account_id, period_start),
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account,
    CHECK (period_start < period_end),
    CHECK (entry_id IS NULL OR settle = 'deduct')
);
CREATE INDEX period_charge_account ON prepay.period_charge (site_id, account_id, period_start);
COMMENT ON INDEX prepay.period_charge_account IS 'An account''s periodic charges: statements and bills.';
CREATE UNIQUE INDEX period_charge_entry ON prepay.period_charge (site_id, entry_id) WHERE entry_id IS NOT NULL;
COMMENT ON INDEX prepay.period_charge_entry IS 'The periodic charge a ledger entry posted (one at most): how a bill finds a charge''s period and name.';
COMMENT ON TABLE prepay.period_charge IS 'Every periodic charge or credit, exactly once per (source, rule, account, period): fees, their move-out credits, common-area and loss shares, allowances and their expiry, basic charge settlements.  inputs holds what the amount was computed from, so anyone can reproduce it.';
COMMENT ON COLUMN prepay.period_charge.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.period_charge.source IS 'What produced it: fee, fee_credit, common_area, loss, allowance, allowance_expiry or basic_settlement.';
COMMENT ON COLUMN prepay.period_charge.rule_id IS 'The charge item, apportionment rule or allowance rule (0 for basic settlements and allowance expiry at move-out).';
COMMENT ON COLUMN prepay.period_charge.account_id IS 'Account charged or credited.';
COMMENT ON COLUMN prepay.period_charge.period_start IS 'First local day of the period (the due date of a one-off fee).';
COMMENT ON COLUMN prepay.period_charge.period_end IS 'Day after the period''s last local day.';
COMMENT ON COLUMN prepay.period_charge.amount IS 'Signed like the ledger: negative charges the tenant, positive credits.';
COMMENT ON COLUMN prepay.period_charge.settle IS 'deduct: posted to the wallet (entry_id); bill: due on the period bill; none: not charged (the share of an account closed before the apportionment ran).';
COMMENT ON COLUMN prepay.period_charge.entry_id IS 'The ledger entry that posted it (deduct; NULL when the amount is zero).';
COMMENT ON COLUMN prepay.period_charge.bill_id IS 'The bill it is a payable line of (settle = bill).';
COMMENT ON COLUMN prepay.period_charge.inputs IS 'The figures the amount was computed from (price, basis, days, shares, ...).';
COMMENT ON COLUMN prepay.period_charge.created_at IS 'When it was charged.';

CREATE FUNCTION prepay._ledger_kind(p_source text)
RETURNS prepay.ledger_kind LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE p_source WHEN 'basic_settlement' THEN 'basic_charge' ELSE p_source END::prepay.ledger_kind
$$;
COMMENT ON FUNCTION prepay._ledger_kind(text) IS 'Internal: the ledger kind a periodic charge is posted as.';

CREATE FUNCTION prepay._charge(p_site_id integer, p_source text, p_rule_id bigint, p_account_id bigint,
                               p_period_start date, p_period_end date, p_amount numeric, p_settle text,
                               p_inputs jsonb, p_reason text)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    settle text := p_settle;
    entry bigint;
    pot numeric;
BEGIN
    a := prepay._lock_account(p_site_id, p_account_id, false);
    IF a.closed_at IS NOT NULL AND p_source NOT IN ('fee_credit', 'allowance_expiry') THEN
        -- a closed account is charged nothing more; only close_account's own
        -- settlement (fee credits, the allowance forfeited) is posted to it
        settle := 'none';
    ELSIF a.mode = 'postpaid' AND settle = 'bill' THEN
        settle := 'deduct';          -- a postpaid wallet is the running account: its bill asks for it
    END IF;
    INSERT INTO prepay.period_charge (site_id, source, rule_id, account_id, period_start, period_end,
                                      amount, settle, inputs)
    VALUES (p_site_id, p_source, p_rule_id, p_account_id, p_period_start, p_period_end, p_amount, settle, p_inputs)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;                -- already charged for this period
    END IF;
    IF settle <> 'deduct' OR p_amount = 0 THEN
        RETURN true;
    END IF;
    IF p_source IN ('allowance', 'allowance_expiry') THEN
        pot := prepay.allowance_left(p_site_id, p_account_id);
    END IF;
    entry := prepay._post_entry(p_site_id, p_account_id, prepay._ledger_kind(p_source), p_amount,
                                NULL, NULL, p_reason, NULL, NULL, NULL);
    UPDATE prepay.period_charge SET entry_id = entry
     WHERE site_id = p_site_id AND source = p_source AND rule_id = p_rule_id
       AND account_id = p_account_id AND period_start = p_period_start;
    IF p_source IN ('allowance', 'allowance_expiry') THEN
        SELECT * INTO a FROM prepay.account WHERE site_id = p_site_id AND account_id = p_account_id;
        UPDATE prepay.account
           SET allowance_left = CASE WHEN p_source = 'allowance' THEN least(pot + p_amount, greatest(a.balance, 0))
                                     ELSE greatest(pot + p_amount, 0) END,
               allowance_as_of = entry
         WHERE site_id = p_site_id AND account_id = p_account_id;
    END IF;
    RETURN true;
END $$;
COMMENT ON FUNCTION prepay._charge(integer, text, bigint, bigint, date, date, numeric, text, jsonb, text) IS
'Internal: record a periodic charge once per (source, rule, account, period) and post it to the wallet when it is deducted.  Postpaid accounts always have it posted (their bill asks for the wallet''s charges); closed accounts never (settle none), except for the settlement close_account makes as it closes them (fee_credit, allowance_expiry).  Returns false when it was already charged.';

-- ---------------------------------------------------------------------
-- allowances
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.allowance_left(p_site_id integer, p_account_id bigint)
RETURNS numeric LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT greatest(0.00, a.allowance_left + coalesce(
               (SELECT sum(l.amount) FROM prepay.ledger l
                 WHERE l.site_id = a.site_id AND l.account_id = a.account_id
                   AND l.entry_id > a.allowance_as_of AND l.amount < 0
                   AND (l.kind IN ('consumption', 'basic_charge', 'adjustment', 'fee', 'common_area', 'loss',
                                   'allowance_expiry')
                        OR (l.kind = 'reversal'
                            AND EXISTS (SELECT 1 FROM prepay.ledger r
                                         WHERE r.site_id = l.site_id AND r.account_id = l.account_id AND r.entry_id = l.reverses_entry
                                           AND r.kind = 'allowance')))), 0))
      FROM prepay.account a
     WHERE a.site_id = p_site_id AND a.account_id = p_account_id);
END $$;
COMMENT ON FUNCTION prepay.allowance_left(integer, bigint) IS
'Unspent allowance in an account''s wallet: the allowance counted at allowance_as_of, less every charge posted since (charges spend allowance before paid money).  Refunds, payments and bill settlements do not spend it.  Entries of an account get their ids under the account lock, so "posted since" is exact.';

CREATE SEQUENCE prepay.allowance_rule_id_seq;
COMMENT ON SEQUENCE prepay.allowance_rule_id_seq IS 'Source of allowance rule ids.';

CREATE TABLE prepay.allowance_rule (
    site_id     integer NOT NULL REFERENCES prepay.site,
    rule_id     bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.allowance_rule_id_seq'),
    name        text NOT NULL,
    amount      numeric(14,2) NOT NULL CHECK (amount > 0),
    period      text NOT NULL DEFAULT 'month' CHECK (period IN ('month', 'quarter', 'year')),
    group_id    bigint,
    expires     boolean NOT NULL DEFAULT true,
    active_from date NOT NULL,
    active_to   date,
    PRIMARY KEY (site_id, rule_id),
    UNIQUE (site_id, name),
    FOREIGN KEY (site_id, group_id) REFERENCES prepay.account_group,
    CHECK (active_to IS NULL OR active_to >= active_from)
);
COMMENT ON TABLE prepay.allowance_rule IS 'A periodic free credit (student subsidy, basic free amount) for the accounts of a group: credited to the wallet as an allowance entry at the start of each period, spent before paid money, never refunded, and optionally expiring at the end of its period.';
COMMENT ON COLUMN prepay.allowance_rule.site_id IS 'Site of the rule.';
COMMENT ON COLUMN prepay.allowance_rule.rule_id IS 'Rule id.';
COMMENT ON COLUMN prepay.allowance_rule.name IS 'Unique name within the site; shown on statements.';
COMMENT ON COLUMN prepay.allowance_rule.amount IS 'Amount credited per full period (pro-rated for a tenant who moves in during the period).';
COMMENT ON COLUMN prepay.allowance_rule.period IS 'month, quarter or year.';
COMMENT ON COLUMN prepay.allowance_rule.group_id IS 'Accounts that receive it; NULL for every account of the site.';
COMMENT ON COLUMN prepay.allowance_rule.expires IS 'Whether what is left of a period''s allowance expires when the period ends.';
COMMENT ON COLUMN prepay.allowance_rule.active_from IS 'First day the rule credits.';
COMMENT ON COLUMN prepay.allowance_rule.active_to IS 'Last day the rule credits; NULL while in force.';

CREATE FUNCTION prepay.grant_allowances(p_site_id integer, p_day date)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r prepay.allowance_rule;
    p record;
    n integer := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    FOR r IN SELECT * FROM prepay.allowance_rule
              WHERE site_id = p_site_id AND active_from <= p_day AND (active_to IS NULL OR p_day <= active_to)
              ORDER BY rule_id LOOP
        p := prepay._period(r.period, p_day);
        n := n + prepay._charge_members(p_site_id, p_day, p.period_start, p.period_end, r, NULL);
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.grant_allowances(integer, date) IS
'Credit every allowance due on a local day: for each rule in force, each open member account gets the allowance of the period containing the day once (pro-rated by the days it is open in the period).  Idempotent per (rule, account, period).  Returns how many were credited.';

CREATE FUNCTION prepay.expire_allowances(p_site_id integer, p_day date)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g prepay.period_charge;
    later numeric;
    expiring numeric;
    n integer := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    FOR g IN SELECT c.* FROM prepay.period_charge c
               JOIN prepay.allowance_rule r ON r.site_id = c.site_id AND r.rule_id = c.rule_id
               JOIN prepay.account a ON a.site_id = c.site_id AND a.account_id = c.account_id
              WHERE c.site_id = p_site_id AND c.source = 'allowance' AND r.expires
                AND c.period_end <= p_day AND a.closed_at IS NULL AND c.entry_id IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM prepay.period_charge x
                                 WHERE x.site_id = c.site_id AND x.source = 'allowance_expiry'
                                   AND x.rule_id = c.rule_id AND x.account_id = c.account_id
                                   AND x.period_start = c.period_start)
              ORDER BY c.account_id, c.period_start, c.rule_id LOOP
        PERFORM prepay._lock_account(p_site_id, g.account_id);
        -- spending takes the oldest allowance first: later grants are still whole
        SELECT coalesce(sum(c.amount), 0) INTO later FROM prepay.period_charge c
         WHERE c.site_id = p_site_id AND c.account_id = g.account_id AND c.source = 'allowance'
           AND c.period_start > g.period_start;
        expiring := least(g.amount, greatest(0, prepay.allowance_left(p_site_id, g.account_id) - later));
        IF prepay._charge(p_site_id, 'allowance_expiry', g.rule_id, g.account_id, g.period_start, g.period_end,
                          -expiring, 'deduct',
                          pg_catalog.jsonb_build_object('granted', g.amount, 'left', expiring),
                          pg_catalog.format('allowance of %s..%s expired', g.period_start, g.period_end - 1)) THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.expire_allowances(integer, date) IS
'Expire what is left of every expiring allowance whose period ended on or before a local day: posts an allowance_expiry entry of the unspent part (possibly zero, recorded all the same).  Allowance is spent oldest first.  Idempotent per (rule, account, period).';

-- ---------------------------------------------------------------------
-- fees
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.charge_item_id_seq;
COMMENT ON SEQUENCE prepay.charge_item_id_seq IS 'Source of charge item ids.';

CREATE TABLE prepay.charge_item (
    site_id     integer NOT NULL REFERENCES prepay.site,
    item_id     bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.charge_item_id_seq'),
    name        text NOT NULL,
    basis       text NOT NULL DEFAULT 'fixed' CHECK (basis IN ('fixed', 'per_m2')),
    price       numeric(14,6) NOT NULL CHECK (price >= 0),
    recurrence  text NOT NULL DEFAULT 'monthly' CHECK (recurrence IN ('once', 'monthly', 'quarterly', 'yearly')),
    charge_day  smallint NOT NULL DEFAULT 1 CHECK (charge_day BETWEEN 1 AND 28),
    due_on      date,
    settle      text NOT NULL DEFAULT 'bill' CHECK (settle IN ('deduct', 'bill')),
    group_id    bigint,
    active_from date NOT NULL,
    active_to   date,
    PRIMARY KEY (site_id, item_id),
    UNIQUE (site_id, name),
    FOREIGN KEY (site_id, group_id) REFERENCES prepay.account_group,
    CHECK ((recurrence = 'once') = (due_on IS NOT NULL)),
    CHECK (active_to IS NULL OR active_to >= active_from)
);
COMMENT ON TABLE prepay.charge_item IS 'A fee: rent, property fee, service fee or any named charge; a fixed amount or a price per m2 of the account''s floor area; one-off or periodic; deducted from the wallet (part of the alarm ladder and the trip, only where the site allows: site.fees_may_cut) or settled by bill.';
COMMENT ON COLUMN prepay.charge_item.site_id IS 'Site of the item.';
COMMENT ON COLUMN prepay.charge_item.item_id IS 'Item id.';
COMMENT ON COLUMN prepay.charge_item.name IS 'Unique name within the site; shown on statements and bills.';
COMMENT ON COLUMN prepay.charge_item.basis IS 'fixed: price is the amount per period; per_m2: price per m2 of account.floor_area per period.';
COMMENT ON COLUMN prepay.charge_item.price IS 'Amount (fixed, in cents precision) or price per m2 per full period.';
COMMENT ON COLUMN prepay.charge_item.recurrence IS 'once (on due_on), monthly, quarterly or yearly (calendar periods, site local time).';
COMMENT ON COLUMN prepay.charge_item.charge_day IS 'Day of the period (of its first month) from which a periodic fee is charged, in advance, for the whole period.';
COMMENT ON COLUMN prepay.charge_item.due_on IS 'The day a one-off fee is charged.';
COMMENT ON COLUMN prepay.charge_item.settle IS 'deduct from the wallet, or bill: a payable line of the period bill.';
COMMENT ON COLUMN prepay.charge_item.group_id IS 'Accounts charged; NULL for every account of the site.';
COMMENT ON COLUMN prepay.charge_item.active_from IS 'First day the item is charged.';
COMMENT ON COLUMN prepay.charge_item.active_to IS 'Last day the item is charged; NULL while in force.';

CREATE FUNCTION prepay._charge_item_check() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.settle = 'deduct' AND NOT (SELECT s.fees_may_cut FROM prepay.site s WHERE s.site_id = NEW.site_id) THEN
        PERFORM prepay._raise('PY020', 'this site does not deduct fees from wallets',
            pg_catalog.format('Charge item %L would be deducted, and site %s does not allow fees to cut supply.',
                              NEW.name, NEW.site_id),
            'Settle the fee by bill (settle = ''bill''), or set prepay.site.fees_may_cut = true.');
    END IF;
    IF NEW.basis = 'fixed' AND NEW.price <> pg_catalog.round(NEW.price, 2) THEN
        PERFORM prepay._raise('PY020', 'a fixed fee is an amount in cents',
            pg_catalog.format('Charge item %L has price %s.', NEW.name, NEW.price), 'Use at most two decimals.');
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION prepay._charge_item_check() IS 'Internal: refuse (PY020) a deducted fee at a site that does not let fees cut supply, and a fixed fee with fractions of a cent.';
CREATE TRIGGER charge_item_check BEFORE INSERT OR UPDATE ON prepay.charge_item
    FOR EACH ROW EXECUTE FUNCTION prepay._charge_item_check();
COMMENT ON TRIGGER charge_item_check ON prepay.charge_item IS
'Refuses a deducted fee at a site whose fees may not cut supply, and a fixed fee with fractions of a cent (prepay._charge_item_check, PY020).';

CREATE FUNCTION prepay._fee_period(p_item prepay.charge_item, p_day date, OUT period_start date, OUT period_end date)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_item.recurrence = 'once' THEN
        period_start := p_item.due_on;
        period_end := p_item.due_on + 1;
    ELSE
        SELECT * INTO period_start, period_end
          FROM prepay._period(CASE p_item.recurrence WHEN 'monthly' THEN 'month' WHEN 'quarterly' THEN 'quarter'
                                                     ELSE 'year' END, p_day);
    END IF;
END $$;
COMMENT ON FUNCTION prepay._fee_period(prepay.charge_item, date) IS 'Internal: the period of a fee that a day falls in (a one-off fee''s period is its due day).';

CREATE FUNCTION prepay._fee_amount(p_site_id integer, p_item prepay.charge_item, p_account prepay.account,
                                   p_period_start date, p_period_end date, p_until date,
                                   OUT amount numeric, OUT inputs jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    basis numeric := CASE p_item.basis WHEN 'fixed' THEN 1 ELSE coalesce(p_account.floor_area, 0) END;
    full_amount numeric := p_item.price * basis;
    days integer := p_period_end - p_period_start;
BEGIN
    IF p_item.recurrence <> 'once' THEN
        days := greatest(0, least(p_until, p_period_end)
                            - greatest(p_period_start, prepay._local_day(p_site_id, p_account.opened_at)));
    END IF;
    amount := prepay._pro_rata(full_amount, days, p_period_end - p_period_start);
    inputs := pg_catalog.jsonb_build_object('basis', p_item.basis, 'price', p_item.price,
                                            'floor_area', p_account.floor_area, 'days', days,
                                            'days_in_period', p_period_end - p_period_start);
END $$;
COMMENT ON FUNCTION prepay._fee_amount(integer, prepay.charge_item, prepay.account, date, date, date) IS
'Internal: a fee for the days from the later of the period start and the move-in day up to p_until (exclusive), pro-rated and rounded down to the cent, with its inputs.';

CREATE FUNCTION prepay._charge_members(p_site_id integer, p_day date, p_period_start date, p_period_end date,
                                       p_rule prepay.allowance_rule, p_item prepay.charge_item)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fee constant boolean := p_item.item_id IS NOT NULL;
    days_in_period constant integer := p_period_end - p_period_start;
    a prepay.account;
    days integer;
    amount numeric;
    inputs jsonb;
    n integer := 0;
BEGIN
    FOR a IN SELECT * FROM prepay._members(p_site_id, CASE WHEN fee THEN p_item.group_id ELSE p_rule.group_id END) m
              WHERE m.closed_at IS NULL AND prepay._local_day(p_site_id, m.opened_at) <= p_day LOOP
        IF fee THEN
            SELECT -x.amount, x.inputs INTO amount, inputs
              FROM prepay._fee_amount(p_site_id, p_item, a, p_period_start, p_period_end, p_period_end) x;
        ELSE
            days := prepay._days_open(p_site_id, a, p_period_start, p_period_end);
            amount := prepay._pro_rata(p_rule.amount, days, days_in_period);
            inputs := pg_catalog.jsonb_build_object('amount', p_rule.amount, 'days', days, 'days_in_period', days_in_period);
        END IF;
        IF prepay._charge(p_site_id, CASE WHEN fee THEN 'fee' ELSE 'allowance' END,
                          CASE WHEN fee THEN p_item.item_id ELSE p_rule.rule_id END, a.account_id,
                          p_period_start, p_period_end, amount, CASE WHEN fee THEN p_item.settle ELSE 'deduct' END,
                          inputs, pg_catalog.format('%s %s..%s', CASE WHEN fee THEN p_item.name ELSE p_rule.name END,
                                                      p_period_start, p_period_end - 1)) THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay._charge_members(integer, date, date, date, prepay.allowance_rule, prepay.charge_item) IS
'Internal: the member loop of prepay.grant_allowances and prepay.charge_fees: every open member account (moved in by p_day) of the rule''s or item''s group gets, once per period (prepay._charge), the allowance of p_rule (pro-rated by the days it is open in the period) or the fee of p_item (prepay._fee_amount; the other one is NULL).  Returns how many were charged.';

CREATE FUNCTION prepay.charge_fees(p_site_id integer, p_day date)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    it prepay.charge_item;
    p record;
    n integer := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    FOR it IN SELECT * FROM prepay.charge_item
               WHERE site_id = p_site_id AND active_from <= p_day AND (active_to IS NULL OR p_day <= active_to)
               ORDER BY item_id LOOP
        p := prepay._fee_period(it, p_day);
        CONTINUE WHEN p_day < p.period_start + (CASE WHEN it.recurrence = 'once' THEN 0 ELSE it.charge_day - 1 END);
        n := n + prepay._charge_members(p_site_id, p_day, p.period_start, p.period_end, NULL, it);
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.charge_fees(integer, date) IS
'Charge every fee due on a local day: a periodic fee from its charge day on, in advance for the whole period (pro-rated from the move-in day for a tenant who moves in during the period: the daily run charges them on the next run); a one-off fee from its due day on.  Idempotent per (item, account, period).  Returns how many were charged.';

CREATE FUNCTION prepay._settle_at_close(p_site_id integer, p_account_id bigint, p_moved_out_on date)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    today date := p_moved_out_on;
    c record;
    f record;
    pot numeric;
BEGIN
    -- caller holds the account lock
    SELECT * INTO a FROM prepay.account WHERE site_id = p_site_id AND account_id = p_account_id;
    FOR c IN SELECT pc.*, (it::prepay.charge_item) AS item
               FROM prepay.period_charge pc
               JOIN prepay.charge_item it ON it.site_id = pc.site_id AND it.item_id = pc.rule_id
              WHERE pc.site_id = p_site_id AND pc.account_id = p_account_id AND pc.source = 'fee'
                AND pc.period_end > today AND it.recurrence <> 'once' AND pc.amount < 0
              ORDER BY pc.rule_id, pc.period_start LOOP
        f := prepay._fee_amount(p_site_id, c.item, a, c.period_start, c.period_end, today);
        IF -c.amount - f.amount > 0 THEN
            PERFORM prepay._charge(p_site_id, 'fee_credit', c.rule_id, p_account_id, c.period_start, c.period_end,
                                   -c.amount - f.amount, c.settle,
                                   f.inputs || pg_catalog.jsonb_build_object('charged', -c.amount, 'moved_out', today),
                                   pg_catalog.format('%s: %s days not used', (c.item).name,
                                                     c.period_end - greatest(today, c.period_start)));
        END IF;
    END LOOP;
    pot := prepay.allowance_left(p_site_id, p_account_id);
    IF pot > 0 THEN
        PERFORM prepay._charge(p_site_id, 'allowance_expiry', 0, p_account_id, today, today + 1, -pot, 'deduct',
                               pg_catalog.jsonb_build_object('left', pot, 'moved_out', today),
                               'allowance forfeited at move-out');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._settle_at_close(integer, bigint, date) IS
'Internal, for close_account: credit the days from the move-out day to the end of each period a fee was charged in advance for (fee_credit), and expire the unspent allowance (it is never refunded).';

-- ---------------------------------------------------------------------
-- consumption over a period
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.meter_register_at(p_site_id integer, p_meter_id bigint, p_at timestamptz)
RETURNS numeric LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT r.energy * m.multiplier
      FROM prepay.reading r
      JOIN prepay.meter m ON m.site_id = r.site_id AND m.meter_id = r.meter_id
     WHERE r.site_id = p_site_id AND r.meter_id = p_meter_id AND r.read_at <= p_at
       AND r.quarantine_reason IS NULL AND r.energy IS NOT NULL
     ORDER BY r.read_at DESC LIMIT 1);
END $$;
COMMENT ON FUNCTION prepay.meter_register_at(integer, bigint, timestamptz) IS
'A meter''s register at an instant, times its multiplier: that of its last accepted reading at or before the instant; NULL when it has none.';

CREATE FUNCTION prepay.meter_consumption(p_site_id integer, p_meter_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS numeric LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at_from numeric := prepay.meter_register_at(p_site_id, p_meter_id, p_from);
    at_to numeric := prepay.meter_register_at(p_site_id, p_meter_id, p_to);
BEGIN
    IF at_from IS NULL OR at_to IS NULL THEN
        PERFORM prepay._raise('PY024', 'meter has no reading at a period boundary',
            pg_catalog.format('Meter %s of site %s has no accepted reading at or before %s.', p_meter_id, p_site_id,
                              CASE WHEN at_from IS NULL THEN p_from ELSE p_to END),
            'Record the register at the boundary (prepay.record_master_reading for a hand-read meter).');
    END IF;
    RETURN at_to - at_from;
END $$;
COMMENT ON FUNCTION prepay.meter_consumption(integer, bigint, timestamptz, timestamptz) IS
'A meter''s consumption over [from, to]: its register at to less its register at from (prepay.meter_register_at), after the multiplier.  PY024 when a boundary has no reading.';

CREATE FUNCTION prepay.account_consumption(p_site_id integer, p_account_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS numeric LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT coalesce(sum(l.energy), 0) FROM prepay.ledger l
     WHERE l.site_id = p_site_id AND l.account_id = p_account_id AND l.kind = 'consumption'
       AND l.read_to > p_from AND l.read_to <= p_to);
END $$;
COMMENT ON FUNCTION prepay.account_consumption(integer, bigint, timestamptz, timestamptz) IS
'Energy charged to an account for readings taken in (from, to], after multipliers: the same measure as prepay.meter_consumption, over every meter the account had.';

CREATE FUNCTION prepay.record_master_reading(p_site_id integer, p_meter_id bigint, p_at timestamptz, p_energy numeric)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m prepay.meter;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    SELECT * INTO m FROM prepay.meter WHERE site_id = p_site_id AND meter_id = p_meter_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY003', 'unknown meter',
            pg_catalog.format('Site %s has no meter %s.', p_site_id, p_meter_id), 'prepay.meter lists the meters.');
    END IF;
    IF m.account_id IS NOT NULL THEN
        PERFORM prepay._raise('PY024', 'a master meter belongs to no account',
            pg_catalog.format('Meter %s is attached to account %s.', p_meter_id, m.account_id),
            'Record master readings on the utility-side or common-area meter, which no tenant pays directly.');
    END IF;
    IF p_at IS NULL OR p_energy IS NULL THEN
        PERFORM prepay._raise('22004', 'a master reading needs a time and a register value', NULL, NULL);
    END IF;
    PERFORM prepay._record_reading(p_site_id, p_meter_id, p_at, p_energy, 'master');
END $$;
COMMENT ON FUNCTION prepay.record_master_reading(integer, bigint, timestamptz, numeric) IS
'Record a register value read by hand on a master meter (utility-side or common-area; a meter with no account): checked like any reading (PY011 with the reason when refused).  Record one at each period boundary.';

-- ---------------------------------------------------------------------
-- apportionment: common area and line loss
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.apportion_rule_id_seq;
COMMENT ON SEQUENCE prepay.apportion_rule_id_seq IS 'Source of apportionment rule ids.';

CREATE TABLE prepay.apportion_rule (
    site_id           integer NOT NULL REFERENCES prepay.site,
    rule_id           bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.apportion_rule_id_seq'),
    name              text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('common_area', 'loss')),
    method            text NOT NULL CHECK (method IN ('consumption', 'area', 'equal', 'ratio')),
    group_id          bigint NOT NULL,
    master_meters     bigint[] NOT NULL CHECK (pg_catalog.cardinality(master_meters) > 0),
    downstream_meters bigint[] NOT NULL DEFAULT '{}',
    price             numeric(12,6) NOT NULL CHECK (price >= 0),
    period            text NOT NULL DEFAULT 'month' CHECK (period IN ('month', 'quarter', 'year')),
    settle            text NOT NULL DEFAULT 'bill' CHECK (settle IN ('deduct', 'bill')),
    active_from       date NOT NULL,
    active_to         date,
    PRIMARY KEY (site_id, rule_id),
    UNIQUE (site_id, name),
    FOREIGN KEY (site_id, group_id) REFERENCES prepay.account_group
);
COMMENT ON TABLE prepay.apportion_rule IS 'How a shared energy is split among a group of accounts each period: common-area energy (the consumption of master_meters) or line and transformer loss (the utility-side master_meters less the group''s own consumption and downstream_meters), priced at price per unit and shared by consumption, floor area, equally or by custom ratios.';
COMMENT ON COLUMN prepay.apportion_rule.site_id IS 'Site of the rule.';
COMMENT ON COLUMN prepay.apportion_rule.rule_id IS 'Rule id.';
COMMENT ON COLUMN prepay.apportion_rule.name IS 'Unique name within the site; shown on statements and bills.';
COMMENT ON COLUMN prepay.apportion_rule.kind IS 'common_area or loss.';
COMMENT ON COLUMN prepay.apportion_rule.method IS 'consumption (each member''s energy in the period), area (floor area x days open), equal (days open) or ratio (account_group_member.ratio x days open).';
COMMENT ON COLUMN prepay.apportion_rule.group_id IS 'The accounts sharing it.';
COMMENT ON COLUMN prepay.apportion_rule.master_meters IS 'Meters (with no account) whose consumption is shared (common area) or that measure the supply (loss).';
COMMENT ON COLUMN prepay.apportion_rule.downstream_meters IS 'For loss: meters with no account fed by the supply besides the members'' own (common-area meters).';
COMMENT ON COLUMN prepay.apportion_rule.price IS 'Price per kWh or m3 of the shared energy.';
COMMENT ON COLUMN prepay.apportion_rule.period IS 'month, quarter or year.';
COMMENT ON COLUMN prepay.apportion_rule.settle IS 'deduct from the wallets, or bill.';
COMMENT ON COLUMN prepay.apportion_rule.active_from IS 'The daily run apportions the periods that start on or after this day (record the master meters'' readings from then on).';
COMMENT ON COLUMN prepay.apportion_rule.active_to IS 'The daily run apportions the periods that start on or before this day; NULL while in force.';

CREATE TABLE prepay.apportionment (
    site_id           integer NOT NULL,
    rule_id           bigint NOT NULL,
    period_start      date NOT NULL,
    period_end        date NOT NULL,
    kind              text NOT NULL,
    method            text NOT NULL,
    master_energy     numeric(15,3) NOT NULL,
    downstream_energy numeric(15,3),
    shared_energy     numeric(15,3) NOT NULL,
    loss_pct          numeric(9,3),
    price             numeric(12,6) NOT NULL,
    total_amount      numeric(14,2) NOT NULL,
    allocated         numeric(14,2) NOT NULL,
    unallocated       numeric(14,2) NOT NULL,
    total_weight      numeric NOT NULL,
    note              text,
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (site_id, rule_id, period_start),
    FOREIGN KEY (site_id, rule_id) REFERENCES prepay.apportion_rule
);
COMMENT ON TABLE prepay.apportionment IS 'One row per rule and period, written once: the figures an apportionment was computed from and its result.  The shares are the period_charge rows with the same source, rule and period.';
COMMENT ON COLUMN prepay.apportionment.site_id IS 'Site.';
COMMENT ON COLUMN prepay.apportionment.rule_id IS 'Apportionment rule.';
COMMENT ON COLUMN prepay.apportionment.period_start IS 'First local day of the period.';
COMMENT ON COLUMN prepay.apportionment.period_end IS 'Day after the period''s last local day.';
COMMENT ON COLUMN prepay.apportionment.kind IS 'common_area or loss (copied from the rule).';
COMMENT ON COLUMN prepay.apportionment.method IS 'How it was shared (copied from the rule).';
COMMENT ON COLUMN prepay.apportionment.master_energy IS 'Consumption of the master meters over the period.';
COMMENT ON COLUMN prepay.apportionment.downstream_energy IS 'For loss: the members'' consumption plus the downstream meters''.';
COMMENT ON COLUMN prepay.apportionment.shared_energy IS 'Energy shared: the master energy (common area) or the loss; zero when the loss is negative.';
COMMENT ON COLUMN prepay.apportionment.loss_pct IS 'For loss: loss in percent of the master energy (negative when the tenants'' meters add up to more than the master).';
COMMENT ON COLUMN prepay.apportionment.price IS 'Price per unit used.';
COMMENT ON COLUMN prepay.apportionment.total_amount IS 'shared_energy x price, rounded down to the cent.';
COMMENT ON COLUMN prepay.apportionment.allocated IS 'Sum of the shares charged.';
COMMENT ON COLUMN prepay.apportionment.unallocated IS 'What nobody was charged: shares of accounts closed before the run, or all of it when there was nothing to share on.';
COMMENT ON COLUMN prepay.apportionment.total_weight IS 'Sum of the members'' weights (kWh, m2 x days, days or ratio x days).';
COMMENT ON COLUMN prepay.apportionment.note IS 'Why nothing or not everything was charged, if so.';
COMMENT ON COLUMN prepay.apportionment.created_at IS 'When it ran.';

CREATE VIEW prepay.loss_period AS
SELECT site_id, rule_id, period_start, period_end, master_energy, downstream_energy,
       master_energy - downstream_energy AS loss_energy, loss_pct
  FROM prepay.apportionment
 WHERE kind = 'loss';
COMMENT ON VIEW prepay.loss_period IS 'Line and transformer loss per rule and period.';
COMMENT ON COLUMN prepay.loss_period.site_id IS 'Site.';
COMMENT ON COLUMN prepay.loss_period.rule_id IS 'Loss rule.';
COMMENT ON COLUMN prepay.loss_period.period_start IS 'First local day of the period.';
COMMENT ON COLUMN prepay.loss_period.period_end IS 'Day after the period''s last local day.';
COMMENT ON COLUMN prepay.loss_period.master_energy IS 'Energy the utility-side master meters measured.';
COMMENT ON COLUMN prepay.loss_period.downstream_energy IS 'Energy the tenants'' and downstream meters measured.';
COMMENT ON COLUMN prepay.loss_period.loss_energy IS 'master_energy - downstream_energy (negative is a sign of a metering fault).';
COMMENT ON COLUMN prepay.loss_period.loss_pct IS 'Loss in percent of the master energy.';

CREATE FUNCTION prepay._allocate(p_total numeric, p_weights numeric[], p_keys bigint[])
RETURNS TABLE (key bigint, amount numeric) LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH w AS (
        SELECT k, wt, p_total * 100 * wt / sum(wt) OVER () AS exact_cents
          FROM unnest(p_keys, p_weights) AS u(k, wt)
    ), f AS (
        SELECT k, floor(exact_cents) AS base,
               row_number() OVER (ORDER BY exact_cents - floor(exact_cents) DESC, k) AS rank,
               p_total * 100 - sum(floor(exact_cents)) OVER () AS spare
          FROM w
    )
    SELECT k, ((base + CASE WHEN rank <= spare THEN 1 ELSE 0 END) / 100)::numeric(14,2) FROM f ORDER BY k
$$;
COMMENT ON FUNCTION prepay._allocate(numeric, numeric[], bigint[]) IS
'Internal: split an amount in cents by weights, largest remainder first: each key gets its share rounded down to the cent, and the cents left over go one each to the largest remainders (ties to the smaller key), so the shares add up to the amount exactly.';

CREATE FUNCTION prepay._alarm(p_site_id integer, p_kind text, p_meter_id bigint, p_detail text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO prepay.alarm (site_id, kind, meter_id, detail)
    VALUES (p_site_id, p_kind, p_meter_id, p_detail)
    ON CONFLICT DO NOTHING;
END $$;
COMMENT ON FUNCTION prepay._alarm(integer, text, bigint, text) IS 'Internal: raise an alarm on a meter unless the same kind is already active there.';

CREATE FUNCTION prepay.apportion(p_site_id integer, p_rule_id bigint, p_period_start date)
RETURNS prepay.apportionment LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r prepay.apportion_rule;
    s prepay.site;
    p record;
    h prepay.apportionment;
    t_from timestamptz;
    t_to timestamptz;
    members prepay.account[];
    ratio numeric;
    keys bigint[];
    weights numeric[];
    energies numeric[];
    a prepay.account;
    i integer;
    share record;
    member_energy numeric := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    SELECT * INTO r FROM prepay.apportion_rule WHERE site_id = p_site_id AND rule_id = p_rule_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY021', 'unknown apportionment rule',
            pg_catalog.format('Site %s has no apportionment rule %s.', p_site_id, p_rule_id),
            'prepay.apportion_rule lists the rules.');
    END IF;
    SELECT * INTO s FROM prepay.site WHERE site_id = p_site_id;
    p := prepay._period(r.period, p_period_start);
    IF p.period_start <> p_period_start THEN
        PERFORM prepay._raise('PY025', 'not the first day of a period',
            pg_catalog.format('Rule %s is apportioned per %s; %s is not the first day of one.', r.name, r.period, p_period_start),
            pg_catalog.format('Pass %s.', p.period_start));
    END IF;
    IF p.period_end > prepay._local_day(p_site_id, pg_catalog.now()) THEN
        PERFORM prepay._raise('PY025', 'the period is not over',
            pg_catalog.format('The %s from %s ends on %s (local time).', r.period, p.period_start, p.period_end - 1),
            'Apportion a period once it has ended, when every reading of it is in.');
    END IF;
    SELECT * INTO h FROM prepay.apportionment
     WHERE site_id = p_site_id AND rule_id = p_rule_id AND period_start = p_period_start;
    IF FOUND THEN
        RETURN h;
    END IF;

    t_from := prepay._local_start(p_site_id, p.period_start);
    t_to := prepay._local_start(p_site_id, p.period_end);
    h.site_id := p_site_id; h.rule_id := p_rule_id; h.period_start := p.period_start; h.period_end := p.period_end;
    h.kind := r.kind; h.method := r.method; h.price := r.price;
    SELECT coalesce(sum(prepay.meter_consumption(p_site_id, m, t_from, t_to)), 0) INTO h.master_energy
      FROM unnest(r.master_meters) AS m;

    SELECT array_agg(m ORDER BY m.account_id) INTO members
      FROM prepay._members(p_site_id, r.group_id) m
     WHERE prepay._days_open(p_site_id, m, p.period_start, p.period_end) > 0
        OR prepay.account_consumption(p_site_id, m.account_id, t_from, t_to) > 0;
    members := coalesce(members, '{}');
    FOREACH a IN ARRAY members LOOP
        keys := keys || a.account_id;
        energies := energies || prepay.account_consumption(p_site_id, a.account_id, t_from, t_to);
        member_energy := member_energy + energies[pg_catalog.cardinality(energies)];
        -- the member's ratio read on its own (on Citus a statement reading a
        -- table is sent to the site's shard, where a row value cannot go)
        ratio := NULL;
        IF r.method NOT IN ('consumption', 'area', 'equal') THEN
            SELECT g.ratio INTO ratio FROM prepay.account_group_member g
             WHERE g.site_id = p_site_id AND g.group_id = r.group_id AND g.account_id = a.account_id;
        END IF;
        weights := weights || CASE r.method
            WHEN 'consumption' THEN energies[pg_catalog.cardinality(energies)]
            WHEN 'area' THEN coalesce(a.floor_area, 0) * prepay._days_open(p_site_id, a, p.period_start, p.period_end)
            WHEN 'equal' THEN prepay._days_open(p_site_id, a, p.period_start, p.period_end)::numeric
            ELSE coalesce(ratio, 0) * prepay._days_open(p_site_id, a, p.period_start, p.period_end) END;
    END LOOP;

    IF r.kind = 'common_area' THEN
        h.shared_energy := h.master_energy;
    ELSE
        SELECT member_energy + coalesce(sum(prepay.meter_consumption(p_site_id, m, t_from, t_to)), 0)
          INTO h.downstream_energy FROM unnest(r.downstream_meters) AS m;
        h.shared_energy := greatest(h.master_energy - h.downstream_energy, 0);
        IF h.master_energy > 0 THEN
            h.loss_pct := round((h.master_energy - h.downstream_energy) * 100 / h.master_energy, 3);
        END IF;
        IF h.master_energy < h.downstream_energy THEN
            h.note := 'negative loss: the meters below the master add up to more than it; nothing charged';
            PERFORM prepay._alarm(p_site_id, 'negative_loss', r.master_meters[1],
                pg_catalog.format('%s %s..%s: master %s, meters below it %s', r.name, p.period_start,
                                  p.period_end - 1, h.master_energy, h.downstream_energy));
        ELSIF h.loss_pct > s.loss_alarm_pct THEN
            PERFORM prepay._alarm(p_site_id, 'high_loss', r.master_meters[1],
                pg_catalog.format('%s %s..%s: loss %s%% above the site''s %s%%', r.name, p.period_start,
                                  p.period_end - 1, h.loss_pct, s.loss_alarm_pct));
        END IF;
    END IF;

    h.total_amount := (pg_catalog.div(h.shared_energy * r.price * 100, 1) / 100)::numeric(14,2);
    h.total_weight := coalesce((SELECT sum(w) FROM unnest(weights) AS w), 0);
    h.created_at := pg_catalog.now();
    h.allocated := 0;
    h.unallocated := h.total_amount;
    IF h.total_amount > 0 AND h.total_weight = 0 THEN
        h.note := 'no member has anything to share on (no consumption, area, days or ratio); nothing charged';
    END IF;
    INSERT INTO prepay.apportionment VALUES (h.*) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN                -- a concurrent run got there first
        SELECT * INTO h FROM prepay.apportionment
         WHERE site_id = p_site_id AND rule_id = p_rule_id AND period_start = p_period_start;
        RETURN h;
    END IF;

    IF h.total_amount > 0 AND h.total_weight > 0 THEN
        FOR share IN SELECT * FROM prepay._allocate(h.total_amount, weights, keys) LOOP
            i := pg_catalog.array_position(keys, share.key);
            PERFORM prepay._charge(p_site_id, r.kind, r.rule_id, share.key, p.period_start, p.period_end,
                                   -share.amount, r.settle,
                                   pg_catalog.jsonb_build_object('method', r.method, 'weight', weights[i],
                                       'total_weight', h.total_weight, 'energy', energies[i],
                                       'shared_energy', h.shared_energy, 'price', r.price,
                                       'total_amount', h.total_amount),
                                   pg_catalog.format('%s %s..%s', r.name, p.period_start, p.period_end - 1));
        END LOOP;
    END IF;
    SELECT coalesce(-sum(c.amount) FILTER (WHERE c.settle <> 'none'), 0) INTO h.allocated
      FROM prepay.period_charge c
     WHERE c.site_id = p_site_id AND c.source = r.kind AND c.rule_id = r.rule_id AND c.period_start = p.period_start;
    h.unallocated := h.total_amount - h.allocated;
    IF h.unallocated > 0 AND h.note IS NULL THEN
        h.note := 'shares of accounts closed before the run are not charged';
    END IF;
    UPDATE prepay.apportionment SET allocated = h.allocated, unallocated = h.unallocated, note = h.note
     WHERE site_id = p_site_id AND rule_id = p_rule_id AND period_start = p_period_start;
    RETURN h;
END $$;
COMMENT ON FUNCTION prepay.apportion(integer, bigint, date) IS
'Apportion a rule''s shared energy for the period starting on a day, once: measures the master meters (and for loss the members and downstream meters), raises negative_loss or high_loss alarms, prices the shared energy, splits it by the rule''s method to the cent (largest remainder) and charges each member (period_charge, deducted or billed).  A second call returns the stored result.  PY025 for a period not over or a day that does not start one; PY024 when a master meter has no reading at a boundary.';

-- ---------------------------------------------------------------------
-- two-part tariffs: the month's settlement
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.settle_basic_charges(p_site_id integer, p_month date)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    month_start date := pg_catalog.date_trunc('month', p_month)::date;
    month_end date := (pg_catalog.date_trunc('month', p_month) + interval '1 month')::date;
    t_to timestamptz;
    ac prepay.account;
    terms record;
    days integer;
    target numeric;
    accrued numeric;
    settled boolean;
    n integer := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF month_end > prepay._local_day(p_site_id, pg_catalog.now()) THEN
        PERFORM prepay._raise('PY025', 'the month is not over',
            pg_catalog.format('%s ends on %s (local time).', month_start, month_end - 1),
            'Settle a month once it has ended.');
    END IF;
    t_to := prepay._local_start(p_site_id, month_end);
    FOR ac IN SELECT * FROM prepay.account a
               WHERE a.site_id = p_site_id AND a.closed_at IS NULL ORDER BY a.account_id LOOP
        -- the version in force on the month's last instant; the whole month's demand
        terms := prepay._basic_terms(ac, t_to - interval '1 microsecond',
                                     prepay._local_start(p_site_id, month_start), t_to);
        CONTINUE WHEN terms.basic IS NULL;
        days := prepay._days_open(p_site_id, ac, month_start, month_end);
        CONTINUE WHEN days = 0;
        target := prepay._pro_rata(terms.monthly, days, month_end - month_start);
        accrued := prepay._basic_accrued(p_site_id, ac.account_id, month_start);
        settled := prepay._charge(p_site_id, 'basic_settlement', 0, ac.account_id, month_start, month_end,
                          accrued - target, 'deduct',
                          pg_catalog.jsonb_build_object('by', terms.basic->>'by', 'basis', terms.basis,
                              'price', terms.basic->>'price', 'monthly', terms.monthly, 'days', days,
                              'days_in_month', month_end - month_start, 'target', target, 'accrued', accrued),
                          pg_catalog.format('basic charge %s: %s x %s per month for %s of %s days, %s accrued',
                                            to_char(month_start, 'YYYY-MM'), terms.basis, terms.basic->>'price', days,
                                            month_end - month_start, accrued));
        -- count postings, not settlement rows: a month whose accruals were
        -- complete records its zero settlement but posts nothing
        IF settled AND accrued <> target THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.settle_basic_charges(integer, date) IS
'Settle the month of every open account on a two-part tariff once the month is over: the monthly basic charge (capacity, or the month''s maximum demand, times the price) pro-rated by the days the account was open, less what the daily accruals posted; the difference (usually zero, a catch-up for missed days or a credit) is posted once per account and month, and a zero difference is recorded in period_charge all the same.  Returns how many ledger entries it posted: 0 when the accruals were complete, or when the month was settled already.';

-- ---------------------------------------------------------------------
-- the daily run
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.run_periodic(p_site_id integer, p_day date)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done jsonb := '{}';
    previous_month date := (pg_catalog.date_trunc('month', p_day) - interval '1 month')::date;
    r prepay.apportion_rule;
    p record;
    n integer;
    failed jsonb := '[]';
    problem text;
    problem_detail text;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF NOT EXISTS (SELECT 1 FROM prepay.site WHERE site_id = p_site_id) THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id), NULL);
    END IF;
    -- the period that just ended first: its accruals, settlement and shares
    SELECT count(*) INTO n FROM prepay.accrue_basic_charges(p_site_id, p_day - 1) x WHERE x.posted <> 0;
    done := done || pg_catalog.jsonb_build_object('basic_charges_accrued', n);
    IF p_day = pg_catalog.date_trunc('month', p_day)::date THEN
        done := done || pg_catalog.jsonb_build_object('basic_charges_settled',
                                                      prepay.settle_basic_charges(p_site_id, previous_month));
        n := 0;
        FOR r IN SELECT * FROM prepay.apportion_rule WHERE site_id = p_site_id ORDER BY rule_id LOOP
            p := prepay._period(r.period, p_day - 1);
            CONTINUE WHEN p.period_end <> p_day OR p.period_start < r.active_from
                          OR p.period_start > coalesce(r.active_to, p.period_start);
            BEGIN
                PERFORM prepay.apportion(p_site_id, r.rule_id, p.period_start);
                n := n + 1;
            EXCEPTION WHEN sqlstate 'PY024' THEN
                -- one rule without its master readings must not stop the others
                GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT, problem_detail = PG_EXCEPTION_DETAIL;
                failed := failed || pg_catalog.jsonb_build_object('rule', r.rule_id, 'error', problem || ': ' || problem_detail);
                PERFORM prepay._alarm(p_site_id, 'apportionment_failed', r.master_meters[1],
                                      pg_catalog.format('%s %s: %s: %s', r.name, p.period_start, problem, problem_detail));
            END;
        END LOOP;
        done := done || pg_catalog.jsonb_build_object('apportionments', n);
        IF failed <> '[]' THEN
            done := done || pg_catalog.jsonb_build_object('apportionments_failed', failed);
        END IF;
    END IF;
    -- then the allowances: what is left of the old period expires before the new one is credited
    done := done || pg_catalog.jsonb_build_object('allowances_expired', prepay.expire_allowances(p_site_id, p_day));
    done := done || pg_catalog.jsonb_build_object('allowances_granted', prepay.grant_allowances(p_site_id, p_day));
    done := done || pg_catalog.jsonb_build_object('fees_charged', prepay.charge_fees(p_site_id, p_day));
    IF p_day = pg_catalog.date_trunc('month', p_day)::date THEN
        SELECT count(*) INTO n FROM prepay.draft_bills(p_site_id, previous_month, p_day);
        done := done || pg_catalog.jsonb_build_object('bills_drafted', n);
    END IF;
    n := prepay.send_overdue_notices(p_site_id, p_day);
    IF n > 0 THEN
        done := done || pg_catalog.jsonb_build_object('overdue_notices', n);
    END IF;
    RETURN done;
END $$;
COMMENT ON FUNCTION prepay.run_periodic(integer, date) IS
'The site''s daily billing run for a local day, in order: accrue the previous day''s basic charges; on the first day of a month settle the previous month''s basic charges and apportion every rule in force whose period just ended (a rule whose master readings are missing raises an apportionment_failed alarm and is listed; the others go on; run it again once the readings are in) ; then expire the allowances of periods ended, credit the period''s allowances, charge the fees due, and on the first day of a month draft the previous month''s bills; last, tell the tenants of issued bills overdue on that day (prepay.send_overdue_notices; listed as overdue_notices when it wrote any).  The period that ended is charged before its allowance expires, and spends it first.  Every step is idempotent, so running it twice, late, or from two sessions at once charges once.  Returns what it did.';

CREATE FUNCTION prepay.run_periodic_all()
RETURNS TABLE (site_id integer, local_day date, done jsonb) LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s prepay.site;
BEGIN
    FOR s IN SELECT * FROM prepay.site ORDER BY site.site_id LOOP
        site_id := s.site_id;
        local_day := prepay._local_day(s.site_id, pg_catalog.now());
        done := prepay.run_periodic(s.site_id, local_day);
        RETURN NEXT;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.run_periodic_all() IS
'prepay.run_periodic for every site on its own local today: what pg_cron runs, e.g. SELECT cron.schedule(''prepay-daily'', ''10 * * * *'', ''SELECT * FROM prepay.run_periodic_all()''); hourly is fine since every step is idempotent (docs/BILLING.md).';

-- ---------------------------------------------------------------------
-- pg_dump: user data
-- ---------------------------------------------------------------------

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['account_group', 'account_group_member', 'period_charge', 'allowance_rule',
                             'charge_item', 'apportion_rule', 'apportionment', 'account_group_id_seq',
                             'allowance_rule_id_seq', 'charge_item_id_seq', 'apportion_rule_id_seq'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(('prepay.' || t)::regclass, '');
    END LOOP;
END $$;
