
-- =====================================================================
-- The tariff engine (sql/tariff.sql): holidays, validated definitions,
-- the transparency functions (rate, explain_charge, simulate_bill), re-
-- rating after a back-dated price, and the daily basic charge of two-
-- part tariffs.  Rating itself happens in C (extension/tariff*.c); every
-- function here reaches the same C core through prepay._rate().
-- =====================================================================

CREATE TABLE prepay.holiday (
    site_id integer NOT NULL REFERENCES prepay.site,
    day     date NOT NULL,
    kind    text NOT NULL DEFAULT 'holiday' CHECK (kind IN ('holiday', 'workday')),
    name    text,
    PRIMARY KEY (site_id, day)
);
COMMENT ON TABLE prepay.holiday IS 'A site''s calendar exceptions for time-of-use schedules: public holidays (priced by the schedule for "holiday", else as a weekend) and worked weekend days (working-day swaps, priced as weekdays).';
COMMENT ON COLUMN prepay.holiday.site_id IS 'Site whose calendar this is.';
COMMENT ON COLUMN prepay.holiday.day IS 'Local date in the site''s time zone.';
COMMENT ON COLUMN prepay.holiday.kind IS 'holiday: priced as a holiday; workday: a weekend day worked, priced as a weekday.';
COMMENT ON COLUMN prepay.holiday.name IS 'Name of the holiday or swap, for people.';
SELECT pg_catalog.pg_extension_config_dump('prepay.holiday', '');

-- ---------------------------------------------------------------------
-- definitions
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.tariff_check(p_definition jsonb) RETURNS void
LANGUAGE C STRICT STABLE SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'prepay_tariff_check';
COMMENT ON FUNCTION prepay.tariff_check(jsonb) IS
'Validate a tariff definition (docs/TARIFFS.md): returns nothing if it is valid, else raises PY015 with a message naming what is wrong.';

CREATE FUNCTION prepay._tariff_version_check() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.definition IS NOT NULL THEN
        PERFORM prepay.tariff_check(NEW.definition);
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION prepay._tariff_version_check() IS 'Internal: trigger that refuses an invalid tariff definition (PY015).';

CREATE TRIGGER tariff_version_check BEFORE INSERT OR UPDATE ON prepay.tariff_version
    FOR EACH ROW EXECUTE FUNCTION prepay._tariff_version_check();
COMMENT ON TRIGGER tariff_version_check ON prepay.tariff_version IS 'Validates every definition as it is written.';

-- ---------------------------------------------------------------------
-- transparency
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._rate(p_site_id integer, p_tariff_id bigint, p_from timestamptz, p_to timestamptz,
                             p_energy numeric, p_cycle_used numeric, p_cycle_start timestamptz,
                             p_registers numeric[])
RETURNS json LANGUAGE C STABLE SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'prepay_rate';
COMMENT ON FUNCTION prepay._rate(integer, bigint, timestamptz, timestamptz, numeric, numeric, timestamptz, numeric[]) IS
'Internal: rate energy over (from, to] with a tariff, given the billing cycle''s start (NULL: the cycle containing from) and its consumption so far, and optionally the {sharp, peak, flat, valley} register energies; returns the pieces in the format of prepay.ledger.pieces.  The rating trigger uses the same C core.';

CREATE FUNCTION prepay._rate_many(p_site_id integer, p_tariff_id bigint[], p_from timestamptz[], p_to timestamptz[],
                                  p_energy numeric[], p_cycle_used numeric[], p_cycle_start timestamptz[],
                                  p_registers numeric[])
RETURNS SETOF json LANGUAGE C STABLE SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'prepay_rate_many';
COMMENT ON FUNCTION prepay._rate_many(integer, bigint[], timestamptz[], timestamptz[], numeric[], numeric[], timestamptz[], numeric[]) IS
'Internal: prepay._rate() of a series of intervals of one site (the i-th elements of the arrays), in order, with the site''s tariffs loaded once.  A NULL cycle_used continues the billing cycle the previous interval left; p_registers is NULL or has one row {sharp, peak, flat, valley} per interval (a row with a NULL: none).';

CREATE FUNCTION prepay._pieces(p_pieces json)
RETURNS TABLE (piece_from timestamptz, piece_to timestamptz, version_from timestamptz, period text,
               tier integer, energy numeric, unit_price numeric, amount numeric)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (p->>'from')::timestamptz, (p->>'to')::timestamptz, (p->>'version')::timestamptz, p->>'period',
           (p->>'tier')::integer, (p->>'energy')::numeric(15,3), (p->>'price')::numeric(12,6),
           (p->>'amount')::numeric(18,9)
      FROM pg_catalog.json_array_elements(p_pieces->'pieces') AS p
$$;
COMMENT ON FUNCTION prepay._pieces(json) IS 'Internal: the pieces of a pricing record (prepay.ledger.pieces) as rows.';

CREATE FUNCTION prepay.rate(p_site_id integer, p_tariff_id bigint, p_from timestamptz, p_to timestamptz,
                            p_energy numeric, p_cycle_used numeric DEFAULT 0)
RETURNS TABLE (piece_from timestamptz, piece_to timestamptz, version_from timestamptz, period text,
               tier integer, energy numeric, unit_price numeric, amount numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_site_id IS NULL OR p_tariff_id IS NULL OR p_from IS NULL OR p_to IS NULL OR p_energy IS NULL THEN
        PERFORM prepay._raise('22004', 'rate needs a site, a tariff, an interval and an energy', NULL, NULL);
    END IF;
    IF NOT pg_catalog.isfinite(p_from) OR NOT pg_catalog.isfinite(p_to) OR p_to > p_from + interval '10 years' THEN
        PERFORM prepay._raise('22023', 'rate needs a finite interval of at most 10 years',
            pg_catalog.format('The interval given was (%s, %s].', p_from, p_to),
            'Rate a longer consumption in parts.');
    END IF;
    RETURN QUERY
    SELECT * FROM prepay._pieces(prepay._rate(p_site_id, p_tariff_id, p_from, p_to, p_energy,
                                              coalesce(p_cycle_used, 0), NULL, NULL));
END $$;
COMMENT ON FUNCTION prepay.rate(integer, bigint, timestamptz, timestamptz, numeric, numeric) IS
'Rate a consumption (after the multiplier) spread uniformly over (from, to] with a tariff, given the consumption already counted in the billing cycle: one row per piece (period, tier, energy, unit price, exact amount).  The rating trigger prices readings with the same C core.  The interval must be finite and at most 10 years long (22023).';

CREATE FUNCTION prepay.explain_charge(p_site_id integer, p_entry_id bigint)
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
COMMENT ON FUNCTION prepay.explain_charge(integer, bigint) IS
'What is behind a consumption charge: the two readings (register values), the multiplier, the energy, and each priced piece (time span, tariff version, period, tier, energy, unit price, exact amount), with the whole cents charged.  PY006 unknown entry; PY016 not a consumption charge.';

CREATE FUNCTION prepay._register_energy(p_pieces json) RETURNS numeric[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_pieces->>'split' = 'registers' THEN
           ARRAY(SELECT coalesce(sum(p.energy) FILTER (WHERE p.period = r.name), 0)
                   FROM unnest(ARRAY['sharp', 'peak', 'flat', 'valley']) WITH ORDINALITY AS r(name, ord)
                   LEFT JOIN prepay._pieces(p_pieces) AS p ON true
                  GROUP BY r.ord ORDER BY r.ord)
           END
$$;
COMMENT ON FUNCTION prepay._register_energy(json) IS 'Internal: the {sharp, peak, flat, valley} energies of a charge priced by the meter''s registers; NULL for a uniform split.';

CREATE FUNCTION prepay.simulate_bill(p_site_id integer, p_account_id bigint, p_tariff_id bigint,
                                     p_from timestamptz, p_to timestamptz)
RETURNS TABLE (period text, tier integer, unit_price numeric, energy numeric, amount numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM prepay.account a WHERE a.site_id = p_site_id AND a.account_id = p_account_id) THEN
        PERFORM prepay._raise('PY001', 'unknown account',
            pg_catalog.format('Site %s has no account %s.', p_site_id, p_account_id), NULL);
    END IF;
    -- each meter's charges in time order; a meter's first charge starts a
    -- billing cycle at zero (cycle_used 0), the others continue it (NULL)
    RETURN QUERY
    WITH e AS (
        SELECT l.read_from, l.read_to, l.energy,
               CASE WHEN pg_catalog.lag(l.meter_id) OVER w IS DISTINCT FROM l.meter_id THEN 0 END AS cycle_used,
               coalesce(prepay._register_energy(l.pieces), '{NULL,NULL,NULL,NULL}') AS registers,
               pg_catalog.row_number() OVER w AS ord
          FROM prepay.ledger l
         WHERE l.site_id = p_site_id AND l.account_id = p_account_id AND l.kind = 'consumption'
           AND l.read_from >= p_from AND l.read_to <= p_to
        WINDOW w AS (ORDER BY l.meter_id, l.read_from)),
    a AS (
        SELECT pg_catalog.array_agg(p_tariff_id ORDER BY e.ord) AS tariffs,
               pg_catalog.array_agg(e.read_from ORDER BY e.ord) AS froms,
               pg_catalog.array_agg(e.read_to ORDER BY e.ord) AS tos,
               pg_catalog.array_agg(e.energy ORDER BY e.ord) AS energies,
               pg_catalog.array_agg(e.cycle_used ORDER BY e.ord) AS cycle_used,
               pg_catalog.array_agg(NULL::timestamptz ORDER BY e.ord) AS cycle_starts,
               pg_catalog.array_agg(e.registers ORDER BY e.ord) AS registers
          FROM e)
    SELECT p.period, p.tier, p.unit_price, sum(p.energy), sum(p.amount)
      FROM a, prepay._rate_many(p_site_id, a.tariffs, a.froms, a.tos, a.energies, a.cycle_used,
                                a.cycle_starts, a.registers) AS j,
           prepay._pieces(j) AS p
     GROUP BY p.period, p.tier, p.unit_price
     ORDER BY p.period, p.tier, p.unit_price;
END $$;
COMMENT ON FUNCTION prepay.simulate_bill(integer, bigint, bigint, timestamptz, timestamptz) IS
'What the account''s real consumption in [from, to] (its consumption charges lying wholly inside) would have cost under another tariff: energy and exact amount per period, tier and unit price.  Tier counting starts at zero at the first charge, so compare over whole billing cycles.';

-- ---------------------------------------------------------------------
-- re-rating
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._charged_exact(p_site_id integer, p_account_id bigint, p_entry prepay.ledger)
RETURNS numeric LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT p_entry.exact_charge + coalesce(sum((x->>'exact_delta')::numeric), 0)
      FROM prepay.ledger a, pg_catalog.json_array_elements(a.pieces->'rerate') AS x
     WHERE a.site_id = p_site_id AND a.account_id = p_account_id AND a.kind = 'adjustment'
       AND (x->>'entry_id')::bigint = p_entry.entry_id);
END $$;
COMMENT ON FUNCTION prepay._charged_exact(integer, bigint, prepay.ledger) IS
'Internal: the exact amount a consumption charge stands at now: its own exact charge plus every re-rating adjustment of it.';

CREATE FUNCTION prepay.rerate(p_site_id integer, p_account_id bigint, p_from timestamptz, p_to timestamptz)
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
COMMENT ON FUNCTION prepay.rerate(integer, bigint, timestamptz, timestamptz) IS
'After a back-dated tariff version: re-price every consumption charge of the account (every account when NULL) lying wholly in [from, to] with the tariff versions as they are now, and post one adjustment entry per account for the difference (never editing the ledger).  Returns per account the charges looked at, what they stand at (exact), what they should be (exact) and the adjustment posted (whole cents, negative = charged).  Re-running changes nothing: each adjustment records its exact difference per charge.';

-- ---------------------------------------------------------------------
-- two-part tariffs: the basic charge accrues daily
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.max_demand(p_site_id integer, p_account_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS numeric LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT coalesce(round(max(w.kw), 3), 0)
      FROM (SELECT sum(l.energy * extract(epoch FROM least(l.read_to, g + interval '15 minutes') - greatest(l.read_from, g))
                                / extract(epoch FROM l.read_to - l.read_from)) * 4 AS kw
              FROM prepay.ledger l
             CROSS JOIN LATERAL pg_catalog.generate_series(
                       pg_catalog.date_bin('15 minutes', greatest(l.read_from, p_from), p_from),
                       least(l.read_to, p_to) - interval '1 microsecond', interval '15 minutes') AS g
             WHERE l.site_id = p_site_id AND l.account_id = p_account_id AND l.kind = 'consumption'
               AND l.read_to > p_from AND l.read_from < p_to
             GROUP BY g) AS w);
END $$;
COMMENT ON FUNCTION prepay.max_demand(integer, bigint, timestamptz, timestamptz) IS
'An account''s maximum demand in kW over [from, to): the largest consumption in any 15-minute window (aligned on from), times 4, with each charge''s energy spread uniformly over its interval.';

CREATE FUNCTION prepay._pro_rata(p_full numeric, p_days integer, p_days_in_period integer)
RETURNS numeric LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (pg_catalog.div(p_full * p_days * 100, p_days_in_period) / 100)::numeric(14,2)
$$;
COMMENT ON FUNCTION prepay._pro_rata(numeric, integer, integer) IS 'Internal: full x days / days in period, rounded down to the cent (the tenant never pays a fraction of a cent more).';

CREATE FUNCTION prepay._basic_terms(p_account prepay.account, p_version_at timestamptz,
                                    p_month_start timestamptz, p_until timestamptz,
                                    OUT basic jsonb, OUT basis numeric, OUT monthly numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT v.definition->'basic' INTO basic FROM prepay.tariff_version v
     WHERE v.site_id = p_account.site_id AND v.tariff_id = p_account.tariff_id AND v.valid_from <= p_version_at
     ORDER BY v.valid_from DESC LIMIT 1;
    IF basic IS NULL THEN
        RETURN;
    END IF;
    basis := CASE WHEN basic->>'by' = 'capacity' THEN coalesce(p_account.capacity_kva, 0)
                  ELSE prepay.max_demand(p_account.site_id, p_account.account_id, p_month_start, p_until) END;
    monthly := basis * (basic->>'price')::numeric;
END $$;
COMMENT ON FUNCTION prepay._basic_terms(prepay.account, timestamptz, timestamptz, timestamptz) IS
'Internal: the two-part basic charge of an account''s tariff version in force at p_version_at (NULL when it has none), its basis (contracted kVA, or the maximum 15-minute demand over [p_month_start, p_until)) and the monthly amount.  The daily accrual and the month''s settlement both use it.';

CREATE FUNCTION prepay._basic_accrued(p_site_id integer, p_account_id bigint, p_month date)
RETURNS numeric LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT coalesce(-sum(l.amount), 0) FROM prepay.ledger l
     WHERE l.site_id = p_site_id AND l.account_id = p_account_id AND l.kind = 'basic_charge'
       AND l.channel = 'basic_charge' AND l.external_ref LIKE p_account_id || '/' || to_char(p_month, 'YYYY-MM') || '-%');
END $$;
COMMENT ON FUNCTION prepay._basic_accrued(integer, bigint, date) IS 'Internal: what the daily accruals of the month containing p_month have posted for an account.';

CREATE FUNCTION prepay.accrue_basic_charges(p_site_id integer, p_day date)
RETURNS TABLE (account_id bigint, basis numeric, monthly numeric, accrued numeric, posted numeric)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tz text;
    day_start timestamptz;
    day_end timestamptz;
    month_start timestamptz;
    days_in_month integer;
    ac prepay.account;
    terms record;
    ref text;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    SELECT s.time_zone INTO tz FROM prepay.site s WHERE s.site_id = p_site_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id), NULL);
    END IF;
    day_start := p_day::timestamp AT TIME ZONE tz;
    day_end := (p_day + 1)::timestamp AT TIME ZONE tz;
    month_start := date_trunc('month', p_day)::timestamp AT TIME ZONE tz;
    days_in_month := extract(day FROM date_trunc('month', p_day) + interval '1 month - 1 day');

    FOR ac IN SELECT * FROM prepay.account a
               WHERE a.site_id = p_site_id AND a.closed_at IS NULL AND a.opened_at < day_end
               ORDER BY a.account_id LOOP
        -- the version in force when the day starts; demand up to the day's end
        terms := prepay._basic_terms(ac, day_start, month_start, day_end);
        CONTINUE WHEN terms.basic IS NULL;
        account_id := ac.account_id;
        basis := terms.basis;
        monthly := terms.monthly;
        -- the days open so far this month: a tenant who moved in mid-month pays from that day
        accrued := prepay._pro_rata(monthly, p_day + 1 - greatest(date_trunc('month', p_day)::date,
                                                                 (ac.opened_at AT TIME ZONE tz)::date), days_in_month);
        ref := ac.account_id || '/' || to_char(p_day, 'YYYY-MM-DD');   -- the same whatever the DateStyle
        PERFORM prepay._lock_account(p_site_id, ac.account_id);
        IF EXISTS (SELECT 1 FROM prepay.ledger l WHERE l.site_id = p_site_id AND l.channel = 'basic_charge'
                                                   AND l.external_ref = ref) THEN
            posted := 0;
        ELSE
            -- never back: the month's settlement reconciles
            posted := greatest(accrued - prepay._basic_accrued(p_site_id, ac.account_id, p_day), 0);
            IF posted <> 0 THEN
                PERFORM prepay._post_entry(p_site_id, ac.account_id, 'basic_charge', -posted, 'basic_charge', ref,
                    pg_catalog.format('basic charge %s: %s x %s per month, day %s of %s', p_day, basis,
                                      terms.basic->>'price', extract(day FROM p_day), days_in_month),
                    NULL, posted, NULL);
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.accrue_basic_charges(integer, date) IS
'Post the day''s share of the basic charge of every open account on a two-part tariff: by capacity (account.capacity_kva x price per kVA per month) or by demand (the month''s maximum 15-minute demand up to the end of the day x price per kW per month).  Each day posts what brings the month''s total to floor(monthly x days open so far / days in month) in cents, so the month ends exactly at the monthly charge and a missed day is caught up; a day run late after a later one posts nothing (accruals never go back: prepay.settle_basic_charges reconciles the month).  Idempotent per account and day; a day with nothing to post posts nothing.  Returns the accounts that have a basic charge.  Schedule it daily after midnight for the day before (pg_cron).';

-- ---------------------------------------------------------------------
-- re-rating readings quarantined under a plausibility limit that was too
-- low (docs/ARCHITECTURE.md, "Bad readings")
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.release_quarantined(p_site_id integer, p_meter_id bigint)
RETURNS TABLE (read_at timestamptz, energy numeric, outcome text, detail text, charged numeric)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m prepay.meter;
    released prepay.reading[];
    mark bigint;
    n_rated integer := 0;
    n_skipped integer := 0;
    total numeric := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._lock_site_rating(p_site_id);
    SELECT * INTO m FROM prepay.meter x WHERE x.site_id = p_site_id AND x.meter_id = p_meter_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY003', 'unknown meter',
            pg_catalog.format('Site %s has no meter %s.', p_site_id, p_meter_id), 'prepay.meter lists the meters.');
    END IF;
    IF NOT m.active THEN
        PERFORM prepay._raise('PY010', 'meter was removed',
            pg_catalog.format('Meter %s was removed at %s; its readings are no longer rated.', p_meter_id, m.removed_at),
            'Release the readings of the meter that replaced it.');
    END IF;
    SELECT pg_catalog.max(l.entry_id) INTO mark FROM prepay.ledger l
     WHERE l.site_id = p_site_id AND l.account_id = m.account_id;

    -- the impossible jumps after the meter's last rated reading are taken
    -- out and stored again in time order, as one statement: the rating
    -- trigger rates them as any batch, against the meter's state and limit
    -- as they are now (each is rated or quarantined again, never both)
    WITH gone AS (
        DELETE FROM prepay.reading r
         WHERE r.site_id = p_site_id AND r.meter_id = p_meter_id AND r.quarantine_reason = 'impossible_jump'
           AND (m.last_read_at IS NULL OR r.read_at > m.last_read_at)
        RETURNING r.*)
    SELECT pg_catalog.array_agg(g ORDER BY g.read_at) INTO released FROM gone g;
    INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley, power,
                                relay_state, received_after_seconds)
    SELECT u.site_id, u.meter_id, u.read_at, u.energy, u.sharp, u.peak, u.flat, u.valley, u.power,
           u.relay_state, u.received_after_seconds
      FROM pg_catalog.unnest(coalesce(released, '{}')) AS u ORDER BY u.read_at;

    -- what became of each, and the earlier impossible jumps left as they are
    FOR read_at, energy, outcome, detail, charged IN
        SELECT r.read_at, r.energy, coalesce(r.quarantine_reason::text, 'rated'), r.quarantine_detail, -l.amount
          FROM pg_catalog.unnest(coalesce(released, '{}')) AS u
          JOIN prepay.reading r ON r.site_id = u.site_id AND r.meter_id = u.meter_id AND r.read_at = u.read_at
          LEFT JOIN prepay.ledger l ON l.site_id = p_site_id AND l.account_id = m.account_id
                                   AND l.entry_id > coalesce(mark, 0) AND l.kind = 'consumption'
                                   AND l.meter_id = p_meter_id AND l.read_to = r.read_at
        UNION ALL
        SELECT r.read_at, r.energy, 'skipped',
               pg_catalog.format('at or before the meter''s last rated reading (%s), whose interval counts its consumption',
                                 m.last_read_at), NULL
          FROM prepay.reading r
         WHERE r.site_id = p_site_id AND r.meter_id = p_meter_id AND r.quarantine_reason = 'impossible_jump'
           AND r.read_at <= m.last_read_at
         ORDER BY 1
    LOOP
        n_rated := n_rated + (outcome = 'rated')::integer;
        n_skipped := n_skipped + (outcome = 'skipped')::integer;
        total := total + coalesce(charged, 0);
        RETURN NEXT;
    END LOOP;

    INSERT INTO prepay.audit (site_id, acting_role, application_name, action, object, object_key,
                              before_values, after_values)
    VALUES (p_site_id, prepay._caller_name(), pg_catalog.current_setting('application_name'), 'release_quarantined',
            'reading', pg_catalog.jsonb_build_object('site_id', p_site_id, 'meter_id', p_meter_id),
            pg_catalog.jsonb_build_object('max_per_hour', m.max_per_hour, 'multiplier', m.multiplier,
                                          'last_read_at', m.last_read_at, 'last_energy', m.last_energy),
            pg_catalog.jsonb_build_object(
                'released', coalesce(pg_catalog.array_length(released, 1), 0), 'rated', n_rated,
                'quarantined_again', coalesce(pg_catalog.array_length(released, 1), 0) - n_rated,
                'skipped', n_skipped, 'charged', total,
                'first_read_at', (released[1]).read_at,
                'last_read_at', (released[pg_catalog.array_length(released, 1)]).read_at));
END $$;
COMMENT ON FUNCTION prepay.release_quarantined(integer, bigint) IS
'Re-rate a meter''s readings quarantined as impossible_jump, after its plausibility limit (meter.max_per_hour) was raised: those after the meter''s last rated reading are stored again in time order through the rating trigger, so each is rated (and charged) or quarantined again with its new reason; readings quarantined for other reasons stay as they are, and impossible jumps at or before the last rated reading are skipped (a later reading''s interval counts their consumption).  Calling it again rates nothing twice.  One row per reading: its outcome (rated, skipped, or the quarantine reason), detail and the cents charged; the call is audited (action release_quarantined).  Needs the manage capability at the site; PY003 unknown meter, PY010 removed meter.';
