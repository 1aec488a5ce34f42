/*-------------------------------------------------------------------------
 * sql/reports.sql
 *     Monitoring and reports: the energy rollups kept as readings are
 *     rated, the room status board, energy reports with their time-of-use
 *     breakdown, finance reports and the order overview, the per-account
 *     trail, lost contact, alarms, arrears, the balance forecast with the
 *     reminder before a predicted cut, and suspicious consumption.
 *     Appended after billing.sql and batch.sql into prepay--<version>.sql.
 *     See docs/REPORTS.md.
 *
 * Vocabulary
 *     rollup      a table of sums kept up to date by a trigger, so that a
 *                 report reads a few rows per meter instead of every
 *                 reading: energy_day and energy_month (energy and exact
 *                 cost per meter, account, local day or month, time-of-use
 *                 period and tier) and consumption_posting_day (consumption
 *                 money posted per local day and database user).
 *     part        the share of one priced piece (prepay._pricing_record) that falls
 *                 in one local day; a piece that crosses a local midnight
 *                 (flat tariffs are not cut at midnights) is split
 *                 uniformly, like the tariff engine splits an interval.
 *     cost        exact amounts (9 decimals) as priced; charged is the
 *                 whole cents posted (see the rounding rule).
 *     local       in the site's time zone (prepay.site.time_zone).
 *
 * Locking: the rollups are written only for consumption entries, and those
 * are written only under the site's rating lock (prepay._lock_site_rating),
 * so rollup rows add no lock waits and no deadlocks: they are taken after
 * the account rows and before the meter rows, by one batch of a site at a
 * time.  Money movements other than consumption are not rolled up (a hot
 * summary row would serialise payments); finance reports read them from
 * the ledger through the partial index ledger_money.
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- settings
-- ---------------------------------------------------------------------

ALTER TABLE prepay.site
    ADD COLUMN cut_reminder_lead interval NOT NULL DEFAULT '30 minutes'
        CHECK (cut_reminder_lead >= '0' AND cut_reminder_lead <= '7 days'),
    ADD COLUMN forecast_window interval NOT NULL DEFAULT '7 days'
        CHECK (forecast_window >= '1 day' AND forecast_window <= '90 days');
COMMENT ON COLUMN prepay.site.cut_reminder_lead IS 'How long before a predicted cut prepay.send_cut_reminders writes the final reminder (default 30 minutes).';
COMMENT ON COLUMN prepay.site.forecast_window IS 'How much recent consumption (whole local days before today, plus today) the balance forecast averages (default 7 days).';

-- ---------------------------------------------------------------------
-- rollups
-- ---------------------------------------------------------------------

CREATE TABLE prepay.energy_day_folded (
    site_id    integer NOT NULL,
    meter_id   bigint NOT NULL,
    day        date NOT NULL,
    account_id bigint NOT NULL,
    period     text NOT NULL,
    tier       integer NOT NULL,
    energy     numeric(15,3) NOT NULL,
    cost       numeric(18,9) NOT NULL,
    charged    numeric(14,2) NOT NULL,
    charges    integer NOT NULL,
    PRIMARY KEY (site_id, meter_id, day, account_id, period, tier)
) WITH (fillfactor = 50);
CREATE INDEX energy_day_folded_account ON prepay.energy_day_folded (site_id, account_id, day);
CREATE INDEX energy_day_folded_day ON prepay.energy_day_folded (site_id, day);
COMMENT ON INDEX prepay.energy_day_folded_account IS 'An account''s days: trails, forecasts, per-account reports.';
COMMENT ON INDEX prepay.energy_day_folded_day IS 'A site''s day: daily reports, suspicious-consumption windows.';
COMMENT ON TABLE prepay.energy_day_folded IS 'Rollup store: consumption charged per meter, account, local day, time-of-use period and tier, as far as prepay.fold_rollups has folded prepay.energy_pending into it.  Read prepay.energy_day, which adds what is not folded yet.';
COMMENT ON COLUMN prepay.energy_day_folded.site_id IS 'Site of the meter.';
COMMENT ON COLUMN prepay.energy_day_folded.meter_id IS 'Meter.';
COMMENT ON COLUMN prepay.energy_day_folded.day IS 'Local date (site time zone) the energy was consumed on.';
COMMENT ON COLUMN prepay.energy_day_folded.account_id IS 'Account charged.';
COMMENT ON COLUMN prepay.energy_day_folded.period IS 'Time-of-use period (or register) the energy was priced in; "all" for a single-price tariff.';
COMMENT ON COLUMN prepay.energy_day_folded.tier IS 'Tier (1 = first block) the energy was priced in.';
COMMENT ON COLUMN prepay.energy_day_folded.energy IS 'Energy (kWh or m3, after the multiplier).';
COMMENT ON COLUMN prepay.energy_day_folded.cost IS 'Exact price of that energy (9 decimals, before rounding to cents).';
COMMENT ON COLUMN prepay.energy_day_folded.charged IS 'Whole cents posted by the consumption entries whose interval starts on this day, counted on the period and tier of their first piece.';
COMMENT ON COLUMN prepay.energy_day_folded.charges IS 'Consumption entries whose interval starts on this day, counted like charged.';

CREATE TABLE prepay.energy_month_folded (
    site_id    integer NOT NULL,
    meter_id   bigint NOT NULL,
    month      date NOT NULL CHECK (pg_catalog.date_part('day', month) = 1),
    account_id bigint NOT NULL,
    period     text NOT NULL,
    tier       integer NOT NULL,
    energy     numeric(15,3) NOT NULL,
    cost       numeric(18,9) NOT NULL,
    charged    numeric(14,2) NOT NULL,
    charges    integer NOT NULL,
    PRIMARY KEY (site_id, meter_id, month, account_id, period, tier)
) WITH (fillfactor = 50);
CREATE INDEX energy_month_folded_month ON prepay.energy_month_folded (site_id, month);
COMMENT ON INDEX prepay.energy_month_folded_month IS 'A site''s month: monthly, yearly and year-over-year reports.';
COMMENT ON TABLE prepay.energy_month_folded IS 'Rollup store: energy_day_folded summed per local calendar month, folded at the same time.  Read prepay.energy_month.';
COMMENT ON COLUMN prepay.energy_month_folded.site_id IS 'Site of the meter.';
COMMENT ON COLUMN prepay.energy_month_folded.meter_id IS 'Meter.';
COMMENT ON COLUMN prepay.energy_month_folded.month IS 'First day of the local calendar month.';
COMMENT ON COLUMN prepay.energy_month_folded.account_id IS 'Account charged.';
COMMENT ON COLUMN prepay.energy_month_folded.period IS 'Time-of-use period (or register); "all" for a single-price tariff.';
COMMENT ON COLUMN prepay.energy_month_folded.tier IS 'Tier (1 = first block).';
COMMENT ON COLUMN prepay.energy_month_folded.energy IS 'Energy (kWh or m3, after the multiplier).';
COMMENT ON COLUMN prepay.energy_month_folded.cost IS 'Exact price of that energy (9 decimals).';
COMMENT ON COLUMN prepay.energy_month_folded.charged IS 'Whole cents posted by the consumption entries whose interval starts in this month (on their first piece''s period and tier).';
COMMENT ON COLUMN prepay.energy_month_folded.charges IS 'Consumption entries whose interval starts in this month.';

CREATE TABLE prepay.energy_pending (
    site_id    integer NOT NULL,
    meter_id   bigint NOT NULL,
    day        date NOT NULL,
    account_id bigint NOT NULL,
    period     text NOT NULL,
    tier       integer NOT NULL,
    energy     numeric(15,3) NOT NULL,
    cost       numeric(18,9) NOT NULL,
    charged    numeric(14,2) NOT NULL,
    charges    integer NOT NULL
);
COMMENT ON TABLE prepay.energy_pending IS 'Rollup deltas not folded yet: each rating batch appends one row per meter, account, local day, period and tier it charged (extension/rollup.c), in the transaction that posts the entries; prepay.fold_rollups moves them into energy_day_folded and energy_month_folded.  No index and no key: appending is all the rating path pays.  Read prepay.energy_day.';
COMMENT ON COLUMN prepay.energy_pending.site_id IS 'Site of the meter.';
COMMENT ON COLUMN prepay.energy_pending.meter_id IS 'Meter.';
COMMENT ON COLUMN prepay.energy_pending.day IS 'Local date (site time zone) the energy was consumed on.';
COMMENT ON COLUMN prepay.energy_pending.account_id IS 'Account charged.';
COMMENT ON COLUMN prepay.energy_pending.period IS 'Time-of-use period (or register); "all" for a single-price tariff.';
COMMENT ON COLUMN prepay.energy_pending.tier IS 'Tier (1 = first block).';
COMMENT ON COLUMN prepay.energy_pending.energy IS 'Energy (kWh or m3, after the multiplier) one batch added.';
COMMENT ON COLUMN prepay.energy_pending.cost IS 'Exact price of that energy (9 decimals).';
COMMENT ON COLUMN prepay.energy_pending.charged IS 'Whole cents of the batch''s entries counted here (see energy_day_folded.charged).';
COMMENT ON COLUMN prepay.energy_pending.charges IS 'The batch''s entries counted here.';

CREATE VIEW prepay.energy_day AS
SELECT e.site_id, e.meter_id, e.day, e.account_id, e.period, e.tier,
       sum(e.energy)::numeric(15,3) AS energy, sum(e.cost)::numeric(18,9) AS cost,
       sum(e.charged)::numeric(14,2) AS charged, sum(e.charges)::integer AS charges
  FROM (SELECT f.site_id, f.meter_id, f.day, f.account_id, f.period, f.tier, f.energy, f.cost, f.charged, f.charges
          FROM prepay.energy_day_folded f
        UNION ALL
        SELECT p.site_id, p.meter_id, p.day, p.account_id, p.period, p.tier, p.energy, p.cost, p.charged, p.charges
          FROM prepay.energy_pending p) AS e
 GROUP BY e.site_id, e.meter_id, e.day, e.account_id, e.period, e.tier;
COMMENT ON VIEW prepay.energy_day IS 'Rollup: consumption charged per meter, account, local day, time-of-use period and tier, up to the last committed rating batch (the folded store plus the deltas not folded yet).  Equals what prepay.energy_from_ledger computes from the ledger; prepay.rebuild_rollups recomputes it.';

CREATE VIEW prepay.energy_month AS
SELECT e.site_id, e.meter_id, e.month, e.account_id, e.period, e.tier,
       sum(e.energy)::numeric(15,3) AS energy, sum(e.cost)::numeric(18,9) AS cost,
       sum(e.charged)::numeric(14,2) AS charged, sum(e.charges)::integer AS charges
  FROM (SELECT f.site_id, f.meter_id, f.month, f.account_id, f.period, f.tier, f.energy, f.cost, f.charged, f.charges
          FROM prepay.energy_month_folded f
        UNION ALL
        SELECT p.site_id, p.meter_id, pg_catalog.date_trunc('month', p.day)::date, p.account_id, p.period, p.tier,
               p.energy, p.cost, p.charged, p.charges
          FROM prepay.energy_pending p) AS e
 GROUP BY e.site_id, e.meter_id, e.month, e.account_id, e.period, e.tier;
COMMENT ON VIEW prepay.energy_month IS 'Rollup: energy_day summed per local calendar month, up to the last committed rating batch.';

-- the views' columns mean what the folded tables' columns mean
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT v.view, a.attname, pg_catalog.col_description(a.attrelid, a.attnum) AS description
          FROM (VALUES ('prepay.energy_day'::pg_catalog.regclass, 'prepay.energy_day_folded'::pg_catalog.regclass),
                       ('prepay.energy_month', 'prepay.energy_month_folded')) AS v (view, store)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = v.store AND a.attnum > 0 AND NOT a.attisdropped
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON COLUMN %s.%I IS %L', c.view, c.attname, c.description);
    END LOOP;
END $$;

CREATE TABLE prepay.consumption_posting_day (
    site_id    integer NOT NULL,
    day        date NOT NULL,
    created_by text NOT NULL,
    entries    bigint NOT NULL,
    amount     numeric(16,2) NOT NULL,
    PRIMARY KEY (site_id, day, created_by)
);
COMMENT ON TABLE prepay.consumption_posting_day IS 'Rollup: consumption entries posted per local day of posting (ledger.created_at) and database user, for the finance reports (the energy rollups count the day the energy was used instead).';
COMMENT ON COLUMN prepay.consumption_posting_day.site_id IS 'Site.';
COMMENT ON COLUMN prepay.consumption_posting_day.day IS 'Local date the entries were posted on.';
COMMENT ON COLUMN prepay.consumption_posting_day.created_by IS 'Database user whose rating transaction posted them (the agent''s user for readings).';
COMMENT ON COLUMN prepay.consumption_posting_day.entries IS 'Number of consumption entries.';
COMMENT ON COLUMN prepay.consumption_posting_day.amount IS 'Sum of their amounts (negative: debits).';

CREATE INDEX ledger_money ON prepay.ledger (site_id, created_at) WHERE kind <> 'consumption';
COMMENT ON INDEX prepay.ledger_money IS 'Every money movement that is not a consumption charge (payments, refunds, reversals, fees, ...), by time: the finance reports and the order overview.  Consumption entries are not in it and cost it nothing.';

-- ---------------------------------------------------------------------
-- how a consumption entry is rolled up
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._local_day(p_at timestamptz, p_tz text)
RETURNS date LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ((p_at OPERATOR(pg_catalog.-) interval '1 microsecond') AT TIME ZONE p_tz)::date
$$;
COMMENT ON FUNCTION prepay._local_day(timestamptz, text) IS 'Internal: the local date an interval ending at p_at belongs to ((a, b] ends on the day of b minus one microsecond, so an interval ending at midnight belongs to the day before).';

CREATE FUNCTION prepay._entry_parts(p_amount numeric, p_pieces json, p_tz text)
RETURNS TABLE (day date, period text, tier integer, energy numeric, cost numeric, charged numeric, charges integer)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT q.day, q.period, q.tier,
           CASE WHEN q.first_day = q.last_day THEN q.energy ELSE q.part END,
           CASE WHEN q.first_day = q.last_day THEN q.amount ELSE q.part * q.price END,
           CASE WHEN q.n = 1 AND q.day = q.first_day THEN -p_amount ELSE 0 END,
           CASE WHEN q.n = 1 AND q.day = q.first_day THEN 1 ELSE 0 END
      FROM (SELECT r.*,
                   -- a piece across local midnights is split uniformly in Wh
                   CASE WHEN r.first_day <> r.last_day THEN
                       -- in whole Wh and microseconds: div() is exact where / rounds
                       (pg_catalog.div(r.energy * 1000
                            * EXTRACT(epoch FROM least(r."to", (r.day + 1)::timestamp AT TIME ZONE p_tz) - r."from") * 1000000,
                            EXTRACT(epoch FROM r."to" - r."from") * 1000000)
                        - pg_catalog.div(r.energy * 1000
                            * EXTRACT(epoch FROM greatest(r."from", r.day::timestamp AT TIME ZONE p_tz) - r."from") * 1000000,
                            EXTRACT(epoch FROM r."to" - r."from") * 1000000)) / 1000 END AS part
              FROM (SELECT p.*, d.first_day, d.last_day,
                           pg_catalog.generate_series(d.first_day::timestamp, d.last_day::timestamp,
                                                      interval '1 day')::date AS day
                      FROM ROWS FROM (pg_catalog.json_to_recordset(p_pieces->'pieces')
                                      AS ("from" timestamptz, "to" timestamptz, period text, tier integer,
                                          energy numeric, price numeric, amount numeric)) WITH ORDINALITY
                               AS p("from", "to", period, tier, energy, price, amount, n)
                     CROSS JOIN LATERAL (SELECT (p."from" AT TIME ZONE p_tz)::date AS first_day,
                                                -- prepay._local_day(p."to", p_tz), written out
                                                ((p."to" OPERATOR(pg_catalog.-) interval '1 microsecond')
                                                 AT TIME ZONE p_tz)::date AS last_day) AS d) AS r) AS q
$$;
COMMENT ON FUNCTION prepay._entry_parts(numeric, json, text) IS
'Internal: how one consumption entry is rolled up: each priced piece of its pricing record on the local day it lies in (a piece crossing local midnights is split uniformly: the part up to instant t gets floor(E x (t - from) / (to - from)) Wh, so the parts add up to the piece and each part costs its energy x the piece''s price), and the entry''s posted cents (and a count of 1) on its first piece''s first day, period and tier.  prepay.energy_from_ledger (and so prepay.rebuild_rollups) writes the same query out per entry, because a function with a pinned search_path is not inlined; the rating batch applies the same rule in C (extension/rollup.c).';

CREATE FUNCTION prepay.energy_from_ledger(p_site_id integer, p_from date, p_to date)
RETURNS TABLE (site_id integer, meter_id bigint, day date, account_id bigint, period text, tier integer,
               energy numeric, cost numeric, charged numeric, charges bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
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
     GROUP BY l.site_id, l.meter_id, x.day, l.account_id, x.period, x.tier;
END $$;
COMMENT ON FUNCTION prepay.energy_from_ledger(integer, date, date) IS
'The rows of prepay.energy_day for local days [from, to), computed from the ledger''s consumption entries and their pricing records instead of the rollup: the reference the rollups are tested against, and the "raw" side of the reports benchmark.';

CREATE FUNCTION prepay.rebuild_rollups(p_site_id integer)
RETURNS TABLE (days bigint, months bigint, posting_days bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM prepay.site s WHERE s.site_id = p_site_id) THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id),
                              'prepay.site lists the sites.');
    END IF;
    PERFORM prepay._lock_site_rating(p_site_id);
    DELETE FROM prepay.energy_pending r WHERE r.site_id = p_site_id;
    DELETE FROM prepay.energy_day_folded r WHERE r.site_id = p_site_id;
    DELETE FROM prepay.energy_month_folded r WHERE r.site_id = p_site_id;
    DELETE FROM prepay.consumption_posting_day r WHERE r.site_id = p_site_id;
    INSERT INTO prepay.energy_day_folded
    SELECT * FROM prepay.energy_from_ledger(p_site_id, '-infinity', 'infinity');
    GET DIAGNOSTICS days = ROW_COUNT;
    INSERT INTO prepay.energy_month_folded
    SELECT r.site_id, r.meter_id, pg_catalog.date_trunc('month', r.day)::date, r.account_id, r.period, r.tier,
           sum(r.energy), sum(r.cost), sum(r.charged), sum(r.charges)
      FROM prepay.energy_day_folded r WHERE r.site_id = p_site_id
     GROUP BY 1, 2, 3, 4, 5, 6;
    GET DIAGNOSTICS months = ROW_COUNT;
    INSERT INTO prepay.consumption_posting_day
    -- an entry without its actor row (prepay.check_ledger reports it) is
    -- counted under its id
    SELECT l.site_id, (l.created_at AT TIME ZONE s.time_zone)::date, coalesce(ac.login, 'actor ' || l.actor_id),
           count(*), sum(l.amount)
      FROM prepay.ledger l JOIN prepay.site s ON s.site_id = l.site_id
      LEFT JOIN prepay.actor ac ON ac.site_id = l.site_id AND ac.actor_id = l.actor_id
     WHERE l.site_id = p_site_id AND l.kind = 'consumption'
     GROUP BY 1, 2, 3;
    GET DIAGNOSTICS posting_days = ROW_COUNT;
    RETURN NEXT;
END $$;
COMMENT ON FUNCTION prepay.rebuild_rollups(integer) IS
'Recompute a site''s rollups from its ledger (after loading ledger rows with triggers disabled, or to prove them): returns the rows written.  Takes the site''s rating lock.  PY007 unknown site.';

CREATE FUNCTION prepay.fold_rollups(p_site_id integer DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer;
    moved_rows bigint;
    total bigint := 0;
BEGIN
    IF p_site_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM prepay.site x WHERE x.site_id = p_site_id) THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id),
                              'prepay.site lists the sites.');
    END IF;
    FOR s IN SELECT x.site_id FROM prepay.site x WHERE p_site_id IS NULL OR x.site_id = p_site_id
              ORDER BY x.site_id LOOP
        PERFORM prepay._authorize(s, 'manage');
        -- no rating batch of the site is in flight past this point, so
        -- every delta committed so far is seen and none arrives meanwhile
        PERFORM prepay._lock_site_rating(s);
        WITH moved AS (
            DELETE FROM prepay.energy_pending p WHERE p.site_id = s RETURNING p.*
        ), days AS (
            INSERT INTO prepay.energy_day_folded AS r (site_id, meter_id, day, account_id, period, tier,
                                                       energy, cost, charged, charges)
            SELECT m.site_id, m.meter_id, m.day, m.account_id, m.period, m.tier,
                   sum(m.energy), sum(m.cost), sum(m.charged), sum(m.charges)
              FROM moved m
             GROUP BY m.site_id, m.meter_id, m.day, m.account_id, m.period, m.tier
            ON CONFLICT (site_id, meter_id, day, account_id, period, tier) DO UPDATE
               SET energy = r.energy + excluded.energy, cost = r.cost + excluded.cost,
                   charged = r.charged + excluded.charged, charges = r.charges + excluded.charges
        ), months AS (
            INSERT INTO prepay.energy_month_folded AS r (site_id, meter_id, month, account_id, period, tier,
                                                         energy, cost, charged, charges)
            SELECT m.site_id, m.meter_id, pg_catalog.date_trunc('month', m.day)::date, m.account_id, m.period, m.tier,
                   sum(m.energy), sum(m.cost), sum(m.charged), sum(m.charges)
              FROM moved m
             GROUP BY 1, 2, 3, 4, 5, 6
            ON CONFLICT (site_id, meter_id, month, account_id, period, tier) DO UPDATE
               SET energy = r.energy + excluded.energy, cost = r.cost + excluded.cost,
                   charged = r.charged + excluded.charged, charges = r.charges + excluded.charges
        )
        SELECT count(*) INTO moved_rows FROM moved;
        total := total + moved_rows;
    END LOOP;
    RETURN total;
END $$;
COMMENT ON FUNCTION prepay.fold_rollups(integer) IS
'Fold the rollup deltas of a site (NULL: every site) into energy_day_folded and energy_month_folded; returns the delta rows folded.  prepay.energy_day and energy_month read the same before and after: folding only keeps the deltas few, so that those views stay fast.  Takes each site''s rating lock for the length of the transaction (rating of the site waits).  Schedule it every minute with pg_cron: SELECT cron.schedule(''prepay-fold'', ''* * * * *'', ''SELECT prepay.fold_rollups()'').  Needs the manage capability at each site; PY007 unknown site.';

-- ---------------------------------------------------------------------
-- the room status board
-- ---------------------------------------------------------------------

-- The board is written twice, keep the two the same: in the view (a view
-- is parsed once, needs no search_path and is planned inside the caller's
-- query, so a filter on site_id reaches the meter scan) and as the text
-- room_status_at plans for each call with its actual site and instant (a
-- SQL function with a pinned search_path is neither inlined nor planned
-- for its arguments: it got a generic plan scanning energy_pending once per
-- meter).
CREATE VIEW prepay.room_status AS
SELECT s.site_id, m.building, m.floor, m.room, m.meter_id, m.code AS meter_code, a.account_id, a.code AS account_code,
       a.name AS account_name, a.balance::numeric AS balance, a.alarm_level,
       CASE a.alarm_level WHEN 0 THEN 'green' WHEN 1 THEN 'yellow' WHEN 2 THEN 'orange' WHEN 3 THEN 'red' END AS alarm_colour,
       m.relay_state, m.relay_state_at, m.protect OR coalesce(a.protect, false) AS protected,
       m.lost_since IS NULL AND g.lost_since IS NULL AS online, least(m.lost_since, g.lost_since) AS lost_since,
       (pg_catalog.now() AT TIME ZONE s.time_zone)::date AS today,
       CASE WHEN a.account_id IS NOT NULL THEN coalesce(t.energy, 0) END AS today_energy,
       CASE WHEN a.account_id IS NOT NULL THEN coalesce(t.cost, 0) END AS today_cost,
       CASE WHEN a.account_id IS NOT NULL THEN coalesce(t.charged, 0) END AS today_charged,
       m.last_read_at
  FROM prepay.site s
  JOIN prepay.meter m ON m.site_id = s.site_id AND m.active
  LEFT JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id
  LEFT JOIN prepay.gateway g ON g.site_id = m.site_id AND g.gateway_id = m.gateway_id
  -- today's rollup rows of the site (energy_day's two parts, read directly
  -- so that the site and its local day reach the index) summed per meter
  -- and account in one pass, not an aggregate per meter (energy_pending
  -- has no index)
  LEFT JOIN (SELECT e.site_id, e.meter_id, e.account_id,
                    sum(e.energy) AS energy, sum(e.cost) AS cost, sum(e.charged) AS charged
               FROM (SELECT f.site_id, f.meter_id, f.day, f.account_id, f.energy, f.cost, f.charged
                       FROM prepay.energy_day_folded f
                     UNION ALL
                     SELECT p.site_id, p.meter_id, p.day, p.account_id, p.energy, p.cost, p.charged
                       FROM prepay.energy_pending p) AS e
               JOIN prepay.site x ON x.site_id = e.site_id AND e.day = (pg_catalog.now() AT TIME ZONE x.time_zone)::date
              GROUP BY e.site_id, e.meter_id, e.account_id) AS t
         ON t.site_id = m.site_id AND t.meter_id = m.meter_id AND t.account_id = m.account_id;
COMMENT ON VIEW prepay.room_status IS 'Room status board: one row per active meter (room) with its account, balance, alarm colour, relay, online state and today''s usage.  Filter by site_id.';
COMMENT ON COLUMN prepay.room_status.site_id IS 'Site.';
COMMENT ON COLUMN prepay.room_status.building IS 'Building of the room.';
COMMENT ON COLUMN prepay.room_status.floor IS 'Floor of the room.';
COMMENT ON COLUMN prepay.room_status.room IS 'Room or shop number.';
COMMENT ON COLUMN prepay.room_status.meter_id IS 'Meter of the room.';
COMMENT ON COLUMN prepay.room_status.meter_code IS 'Meter number.';
COMMENT ON COLUMN prepay.room_status.account_id IS 'Account the meter is attached to; NULL for a vacant room.';
COMMENT ON COLUMN prepay.room_status.account_code IS 'Account number.';
COMMENT ON COLUMN prepay.room_status.account_name IS 'Tenant name.';
COMMENT ON COLUMN prepay.room_status.balance IS 'Wallet balance of the account.';
COMMENT ON COLUMN prepay.room_status.alarm_level IS 'Alarm level: 0 none, 1 low balance, 2 pre-trip, 3 arrears.';
COMMENT ON COLUMN prepay.room_status.alarm_colour IS 'The alarm level as a colour: green, yellow, orange, red.';
COMMENT ON COLUMN prepay.room_status.relay_state IS 'Last known relay state (closed or tripped); NULL if never known.';
COMMENT ON COLUMN prepay.room_status.relay_state_at IS 'When the relay state was learnt.';
COMMENT ON COLUMN prepay.room_status.protected IS 'Keep-power on the meter or the account: never tripped.';
COMMENT ON COLUMN prepay.room_status.online IS 'true unless the meter or its gateway is marked lost.';
COMMENT ON COLUMN prepay.room_status.lost_since IS 'Since when the meter (or its gateway, whichever is earlier) has not answered; NULL when online.';
COMMENT ON COLUMN prepay.room_status.today IS 'The site''s local date the today_* columns count.';
COMMENT ON COLUMN prepay.room_status.today_energy IS 'Energy charged to the account on this meter today (local day), kWh or m3.';
COMMENT ON COLUMN prepay.room_status.today_cost IS 'Exact cost of today''s energy.';
COMMENT ON COLUMN prepay.room_status.today_charged IS 'Whole cents posted for this meter by charges whose interval starts today.';
COMMENT ON COLUMN prepay.room_status.last_read_at IS 'Time of the meter''s last rated reading.';

CREATE FUNCTION prepay.room_status_at(p_site_id integer, p_at timestamptz)
RETURNS TABLE (site_id integer, building text, floor text, room text, meter_id bigint, meter_code text,
               account_id bigint, account_code text, account_name text, balance numeric, alarm_level smallint,
               alarm_colour text, relay_state prepay.relay_state, relay_state_at timestamptz, protected boolean,
               online boolean, lost_since timestamptz, today date, today_energy numeric, today_cost numeric,
               today_charged numeric, last_read_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    -- the view prepay.room_status at $2 instead of now(), for site $1
    RETURN QUERY EXECUTE $q$
    SELECT s.site_id, m.building, m.floor, m.room, m.meter_id, m.code, a.account_id, a.code, a.name, a.balance,
           a.alarm_level,
           CASE a.alarm_level WHEN 0 THEN 'green' WHEN 1 THEN 'yellow' WHEN 2 THEN 'orange' WHEN 3 THEN 'red' END,
           m.relay_state, m.relay_state_at, m.protect OR coalesce(a.protect, false),
           m.lost_since IS NULL AND g.lost_since IS NULL, least(m.lost_since, g.lost_since),
           ($2 AT TIME ZONE s.time_zone)::date,
           CASE WHEN a.account_id IS NOT NULL THEN coalesce(t.energy, 0) END,
           CASE WHEN a.account_id IS NOT NULL THEN coalesce(t.cost, 0) END,
           CASE WHEN a.account_id IS NOT NULL THEN coalesce(t.charged, 0) END,
           m.last_read_at
      FROM prepay.site s
      JOIN prepay.meter m ON m.site_id = s.site_id AND m.active
      LEFT JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id
      LEFT JOIN prepay.gateway g ON g.site_id = m.site_id AND g.gateway_id = m.gateway_id
      LEFT JOIN (SELECT e.site_id, e.meter_id, e.account_id,
                        sum(e.energy) AS energy, sum(e.cost) AS cost, sum(e.charged) AS charged
                   FROM (SELECT f.site_id, f.meter_id, f.day, f.account_id, f.energy, f.cost, f.charged
                           FROM prepay.energy_day_folded f
                         UNION ALL
                         SELECT p.site_id, p.meter_id, p.day, p.account_id, p.energy, p.cost, p.charged
                           FROM prepay.energy_pending p) AS e
                   JOIN prepay.site x ON x.site_id = e.site_id AND e.day = ($2 AT TIME ZONE x.time_zone)::date
                  GROUP BY e.site_id, e.meter_id, e.account_id) AS t
             ON t.site_id = m.site_id AND t.meter_id = m.meter_id AND t.account_id = m.account_id
     WHERE s.site_id = $1$q$ USING p_site_id, p_at;
END $f$;
COMMENT ON FUNCTION prepay.room_status_at(integer, timestamptz) IS
'The room status board of a site as seen at p_at (its local day is "today"): one row per active meter; prepay.room_status is the same at now() for every site.  Planned for each call with its arguments.';

-- ---------------------------------------------------------------------
-- energy reports
-- ---------------------------------------------------------------------

-- One base view, energy_rollup, joins the rollups to their meters and
-- accounts at both grains; the six report views pick a grain and group.
-- The joins are LEFT JOINs on primary keys, so a view that does not read a
-- meter's or an account's columns does not join it (PostgreSQL removes the
-- join), and a filter on grain leaves the other grain's rollup unread.
CREATE VIEW prepay.energy_rollup AS
SELECT r.site_id, r.grain, r.starts, r.meter_id, m.code AS meter_code, m.building, m.floor, m.room,
       r.account_id, a.code AS account_code, a.name AS account_name, r.period, r.tier,
       r.energy, r.cost, r.charged, r.charges
  FROM (SELECT d.site_id, 'day'::text AS grain, d.day AS starts, d.meter_id, d.account_id, d.period, d.tier,
               d.energy, d.cost, d.charged, d.charges
          FROM prepay.energy_day d
        UNION ALL
        SELECT mo.site_id, 'month'::text, mo.month, mo.meter_id, mo.account_id, mo.period, mo.tier,
               mo.energy, mo.cost, mo.charged, mo.charges
          FROM prepay.energy_month mo) AS r
  LEFT JOIN prepay.meter m ON m.site_id = r.site_id AND m.meter_id = r.meter_id
  LEFT JOIN prepay.account a ON a.site_id = r.site_id AND a.account_id = r.account_id;
COMMENT ON VIEW prepay.energy_rollup IS 'Base of the energy report views: the rollups energy_day (grain ''day'') and energy_month (grain ''month'', starts = the first of the local month) with their meters'' and accounts'' codes and places.';

CREATE VIEW prepay.energy_meter_daily AS
SELECT r.site_id, r.starts AS day, r.meter_id, r.meter_code, r.building, r.floor, r.room,
       r.account_id, r.account_code, r.period, r.tier, r.energy, r.cost, r.charged, r.charges
  FROM prepay.energy_rollup r
 WHERE r.grain = 'day';
COMMENT ON VIEW prepay.energy_meter_daily IS 'Energy and cost per meter, account, local day, time-of-use period and tier (rollup energy_day).';

CREATE VIEW prepay.energy_meter_monthly AS
SELECT r.site_id, r.starts AS month, r.meter_id, r.meter_code, r.building, r.floor, r.room,
       r.account_id, r.account_code, r.period, r.tier, r.energy, r.cost, r.charged, r.charges
  FROM prepay.energy_rollup r
 WHERE r.grain = 'month';
COMMENT ON VIEW prepay.energy_meter_monthly IS 'Energy and cost per meter, account, local month, time-of-use period and tier (rollup energy_month).';

CREATE VIEW prepay.energy_meter_yearly AS
SELECT r.site_id, pg_catalog.date_part('year', r.starts)::integer AS year, r.meter_id, r.meter_code,
       r.building, r.floor, r.room, r.account_id, r.account_code, r.period, r.tier,
       sum(r.energy) AS energy, sum(r.cost) AS cost, sum(r.charged) AS charged, sum(r.charges) AS charges
  FROM prepay.energy_rollup r
 WHERE r.grain = 'month'
 GROUP BY r.site_id, 2, r.meter_id, r.meter_code, r.building, r.floor, r.room, r.account_id, r.account_code,
          r.period, r.tier;
COMMENT ON VIEW prepay.energy_meter_yearly IS 'Energy and cost per meter, account, local calendar year, time-of-use period and tier (from energy_month).';

CREATE VIEW prepay.energy_account_daily AS
SELECT r.site_id, r.starts AS day, r.account_id, r.account_code, r.account_name, r.period, r.tier,
       sum(r.energy) AS energy, sum(r.cost) AS cost, sum(r.charged) AS charged, sum(r.charges) AS charges
  FROM prepay.energy_rollup r
 WHERE r.grain = 'day'
 GROUP BY r.site_id, r.starts, r.account_id, r.account_code, r.account_name, r.period, r.tier;
COMMENT ON VIEW prepay.energy_account_daily IS 'Energy and cost per account (all its meters), local day, time-of-use period and tier.';

CREATE VIEW prepay.energy_account_monthly AS
SELECT r.site_id, r.starts AS month, r.account_id, r.account_code, r.account_name, r.period, r.tier,
       sum(r.energy) AS energy, sum(r.cost) AS cost, sum(r.charged) AS charged, sum(r.charges) AS charges
  FROM prepay.energy_rollup r
 WHERE r.grain = 'month'
 GROUP BY r.site_id, r.starts, r.account_id, r.account_code, r.account_name, r.period, r.tier;
COMMENT ON VIEW prepay.energy_account_monthly IS 'Energy and cost per account (all its meters), local month, time-of-use period and tier: the monthly energy-and-cost report.';

CREATE VIEW prepay.energy_account_yearly AS
SELECT r.site_id, pg_catalog.date_part('year', r.starts)::integer AS year, r.account_id, r.account_code,
       r.account_name, r.period, r.tier,
       sum(r.energy) AS energy, sum(r.cost) AS cost, sum(r.charged) AS charged, sum(r.charges) AS charges
  FROM prepay.energy_rollup r
 WHERE r.grain = 'month'
 GROUP BY r.site_id, 2, r.account_id, r.account_code, r.account_name, r.period, r.tier;
COMMENT ON VIEW prepay.energy_account_yearly IS 'Energy and cost per account, local calendar year, time-of-use period and tier.';

CREATE VIEW prepay.energy_yoy_account AS
WITH m AS (
    SELECT e.site_id, e.account_id, e.month, sum(e.energy) AS energy, sum(e.cost) AS cost
      FROM prepay.energy_month e
     GROUP BY e.site_id, e.account_id, e.month
)
SELECT cur.site_id, cur.month, cur.account_id, a.code AS account_code, a.name AS account_name,
       cur.energy, cur.cost, prev.energy AS energy_year_before, prev.cost AS cost_year_before,
       round((cur.energy - prev.energy) * 100 / NULLIF(prev.energy, 0), 1) AS energy_change_pct
  FROM m cur
  JOIN prepay.account a ON a.site_id = cur.site_id AND a.account_id = cur.account_id
  LEFT JOIN m prev ON prev.site_id = cur.site_id AND prev.account_id = cur.account_id
                  AND prev.month = (cur.month - interval '1 year')::date;
COMMENT ON VIEW prepay.energy_yoy_account IS 'Year-over-year comparison per account and local month: this month''s energy and cost against the same month a year before.';

CREATE VIEW prepay.energy_yoy_site AS
WITH m AS (
    SELECT e.site_id, e.month, sum(e.energy) AS energy, sum(e.cost) AS cost, count(DISTINCT e.account_id) AS accounts
      FROM prepay.energy_month e
     GROUP BY e.site_id, e.month
)
SELECT cur.site_id, cur.month, cur.accounts, cur.energy, cur.cost, prev.accounts AS accounts_year_before,
       prev.energy AS energy_year_before, prev.cost AS cost_year_before,
       round((cur.energy - prev.energy) * 100 / NULLIF(prev.energy, 0), 1) AS energy_change_pct
  FROM m cur
  LEFT JOIN m prev ON prev.site_id = cur.site_id AND prev.month = (cur.month - interval '1 year')::date;
COMMENT ON VIEW prepay.energy_yoy_site IS 'Year-over-year comparison per site and local month: the site''s charged energy and cost against the same month a year before.';

-- ---------------------------------------------------------------------
-- finance
-- ---------------------------------------------------------------------

CREATE VIEW prepay.finance_daily AS
SELECT l.site_id, (l.created_at AT TIME ZONE s.time_zone)::date AS day, l.kind, l.channel, ac.login AS operator,
       count(*) AS entries,
       coalesce(sum(l.amount) FILTER (WHERE l.amount > 0), 0) AS money_in,
       coalesce(-sum(l.amount) FILTER (WHERE l.amount < 0), 0) AS money_out,
       sum(l.amount) AS net
  FROM prepay.ledger l
  JOIN prepay.site s ON s.site_id = l.site_id
  LEFT JOIN prepay.actor ac ON ac.site_id = l.site_id AND ac.actor_id = l.actor_id
 WHERE l.kind <> 'consumption'
 GROUP BY l.site_id, 2, l.kind, l.channel, ac.login
UNION ALL
SELECT c.site_id, c.day, 'consumption'::prepay.ledger_kind, NULL, c.created_by, c.entries,
       0, -c.amount, c.amount
  FROM prepay.consumption_posting_day c;
COMMENT ON VIEW prepay.finance_daily IS 'Money movements per site, local day of posting, ledger kind, channel and operator: recharges, refunds, reversals, fees, consumption and every other kind (grouped generically by kind).';

CREATE VIEW prepay.finance_monthly AS
SELECT f.site_id, pg_catalog.date_trunc('month', f.day)::date AS month, f.kind, f.channel, f.operator,
       sum(f.entries) AS entries, sum(f.money_in) AS money_in, sum(f.money_out) AS money_out, sum(f.net) AS net
  FROM prepay.finance_daily f
 GROUP BY f.site_id, 2, f.kind, f.channel, f.operator;
COMMENT ON VIEW prepay.finance_monthly IS 'Money movements per site, local month, ledger kind, channel and operator.';

CREATE VIEW prepay.finance_yearly AS
SELECT f.site_id, pg_catalog.date_part('year', f.day)::integer AS year, f.kind, f.channel, f.operator,
       sum(f.entries) AS entries, sum(f.money_in) AS money_in, sum(f.money_out) AS money_out, sum(f.net) AS net
  FROM prepay.finance_daily f
 GROUP BY f.site_id, 2, f.kind, f.channel, f.operator;
COMMENT ON VIEW prepay.finance_yearly IS 'Money movements per site, local calendar year, ledger kind, channel and operator.';

CREATE VIEW prepay.order_overview AS
SELECT l.site_id, l.entry_id, l.created_at, (l.created_at AT TIME ZONE s.time_zone)::date AS day, l.kind,
       l.account_id, a.code AS account_code, a.name AS account_name, l.amount, l.balance_after,
       l.channel, l.external_ref, ac.login AS operator, l.reason, l.reverses_entry,
       r.kind AS reversed_kind, rv.entry_id AS reversed_by
  FROM prepay.ledger l
  JOIN prepay.site s ON s.site_id = l.site_id
  LEFT JOIN prepay.actor ac ON ac.site_id = l.site_id AND ac.actor_id = l.actor_id
  LEFT JOIN prepay.account a ON a.site_id = l.site_id AND a.account_id = l.account_id
  LEFT JOIN prepay.ledger r ON r.site_id = l.site_id AND r.account_id = l.account_id AND r.entry_id = l.reverses_entry
  LEFT JOIN prepay.ledger rv ON rv.site_id = l.site_id AND rv.reverses_entry = l.entry_id
 WHERE l.kind <> 'consumption';
COMMENT ON VIEW prepay.order_overview IS 'Every money movement other than a consumption charge (recharges, refunds, reversals, closing refunds, fees, allowances, bills, adjustments, ...) with who posted it; consumption charges are summed by finance_daily and listed per account by prepay.account_trail.';

-- ---------------------------------------------------------------------
-- the energy and money trail of an account
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.account_trail(p_site_id integer, p_account_id bigint, p_from timestamptz, p_to timestamptz,
                                     p_consumption_by_day boolean DEFAULT false)
RETURNS TABLE (line bigint, at timestamptz, kind text, entry_id bigint, amount numeric, balance numeric,
               energy numeric, meter_id bigint, read_from timestamptz, read_to timestamptz, channel text,
               external_ref text, operator text, reason text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tz text;
    opening numeric;
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_from >= p_to THEN
        PERFORM prepay._raise('22023', 'the trail needs a period with from before to',
            pg_catalog.format('from %s, to %s', p_from, p_to), 'Pass two instants, the earlier first.');
    END IF;
    SELECT s.time_zone INTO tz FROM prepay.account a JOIN prepay.site s ON s.site_id = a.site_id
     WHERE a.site_id = p_site_id AND a.account_id = p_account_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY001', 'unknown account',
            pg_catalog.format('Site %s has no account %s.', p_site_id, p_account_id),
            'Check the site and account ids; prepay.account lists the accounts.');
    END IF;
    SELECT coalesce(sum(l.amount), 0) INTO opening FROM prepay.ledger l
     WHERE l.site_id = p_site_id AND l.account_id = p_account_id AND l.created_at < p_from;
    RETURN QUERY
    WITH moves AS (
        SELECT min(l.entry_id) AS first_entry, max(l.created_at) AS at, l.kind::text AS kind,
               CASE WHEN count(*) = 1 THEN min(l.entry_id) END AS entry_id, sum(l.amount) AS amount,
               sum(l.energy) AS energy,
               CASE WHEN count(DISTINCT l.meter_id) = 1 THEN min(l.meter_id) END AS meter_id,
               min(l.read_from) AS read_from, max(l.read_to) AS read_to, min(l.channel) AS channel,
               min(l.external_ref) AS external_ref, min(ac.login) AS operator,
               CASE WHEN count(*) = 1 THEN min(l.reason) ELSE pg_catalog.format('%s charges', count(*)) END AS reason
          FROM prepay.ledger l
          LEFT JOIN prepay.actor ac ON ac.site_id = l.site_id AND ac.actor_id = l.actor_id
         WHERE l.site_id = p_site_id AND l.account_id = p_account_id
           AND l.created_at >= p_from AND l.created_at < p_to
         GROUP BY CASE WHEN p_consumption_by_day AND l.kind = 'consumption'
                       THEN -((l.created_at AT TIME ZONE tz)::date - date '2000-01-01')
                       ELSE l.entry_id END,
                  l.kind
    ), ordered AS (
        SELECT m.*, opening + sum(m.amount) OVER (ORDER BY m.first_entry) AS running,
               pg_catalog.row_number() OVER (ORDER BY m.first_entry) AS n
          FROM moves m
    )
    SELECT 0::bigint, p_from, 'opening'::text, NULL::bigint, NULL::numeric, opening, NULL::numeric, NULL::bigint,
           NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::text, NULL::text, NULL::text
    UNION ALL
    SELECT o.n, o.at, o.kind, o.entry_id, o.amount, o.running, o.energy, o.meter_id, o.read_from, o.read_to,
           o.channel, o.external_ref, o.operator, o.reason
      FROM ordered o
    UNION ALL
    SELECT (SELECT count(*) FROM moves) + 1, p_to, 'closing', NULL, (SELECT sum(m.amount) FROM moves m),
           opening + coalesce((SELECT sum(m.amount) FROM moves m), 0),
           (SELECT sum(m.energy) FROM moves m), NULL, NULL, NULL, NULL, NULL, NULL, NULL
     ORDER BY 1;
END $$;
COMMENT ON FUNCTION prepay.account_trail(integer, bigint, timestamptz, timestamptz, boolean) IS
'The energy and money trail of an account for [from, to) by posting time: an opening line (the balance before from), every ledger entry in entry order with the running balance and, for consumption, energy, meter and interval (with p_consumption_by_day, one line per local day of posting for consumption charges), and a closing line (the net movement, the balance at to and the energy).  PY001 unknown account; 22023 empty period.';

-- ---------------------------------------------------------------------
-- lost contact, alarms, arrears
-- ---------------------------------------------------------------------

CREATE VIEW prepay.lost_meters AS
SELECT m.site_id, m.meter_id, m.code AS meter_code, m.building, m.floor, m.room, m.gateway_id,
       g.name AS gateway_name, m.account_id, a.code AS account_code, a.name AS account_name,
       CASE WHEN g.lost_since IS NOT NULL THEN 'gateway' ELSE 'meter' END AS cause,
       least(m.lost_since, g.lost_since) AS lost_since,
       pg_catalog.now() - least(m.lost_since, g.lost_since) AS lost_for, m.last_read_at
  FROM prepay.meter m
  LEFT JOIN prepay.gateway g ON g.site_id = m.site_id AND g.gateway_id = m.gateway_id
  LEFT JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id
 WHERE m.active AND (m.lost_since IS NOT NULL OR g.lost_since IS NOT NULL);
COMMENT ON VIEW prepay.lost_meters IS 'Active meters out of contact: marked lost themselves or behind a lost gateway (the agent marks both).';

CREATE VIEW prepay.lost_gateways AS
SELECT g.site_id, g.gateway_id, g.name AS gateway_name, g.transport, coalesce(g.host, g.serial_device) AS address,
       g.agent_id, g.lost_since, pg_catalog.now() - g.lost_since AS lost_for,
       (SELECT count(*) FROM prepay.meter m WHERE m.site_id = g.site_id AND m.gateway_id = g.gateway_id AND m.active) AS meters,
       (SELECT max(m.last_read_at) FROM prepay.meter m WHERE m.site_id = g.site_id AND m.gateway_id = g.gateway_id) AS last_read_at
  FROM prepay.gateway g
 WHERE g.lost_since IS NOT NULL;
COMMENT ON VIEW prepay.lost_gateways IS 'Gateways out of contact, with the number of meters they cut off.';

CREATE VIEW prepay.alarm_history AS
SELECT al.site_id, al.alarm_id, al.kind, al.raised_at, (al.raised_at AT TIME ZONE s.time_zone)::date AS day,
       al.cleared_at, al.cleared_at IS NULL AS active, coalesce(al.cleared_at, pg_catalog.now()) - al.raised_at AS duration,
       al.account_id, a.code AS account_code, a.name AS account_name,
       al.meter_id, m.code AS meter_code, m.building, m.floor, m.room, al.detail
  FROM prepay.alarm al
  JOIN prepay.site s ON s.site_id = al.site_id
  LEFT JOIN prepay.account a ON a.site_id = al.site_id AND a.account_id = al.account_id
  LEFT JOIN prepay.meter m ON m.site_id = al.site_id AND m.meter_id = al.meter_id;
COMMENT ON VIEW prepay.alarm_history IS 'Every alarm, active and cleared (balance ladder, bad readings, lost meters and gateways), with where and whose.';

CREATE VIEW prepay.active_alarms AS
SELECT h.site_id, h.alarm_id, h.kind, h.raised_at, h.duration AS age, h.account_id, h.account_code, h.account_name,
       h.meter_id, h.meter_code, h.building, h.floor, h.room, h.detail
  FROM prepay.alarm_history h
 WHERE h.active;
COMMENT ON VIEW prepay.active_alarms IS 'Alarms still active (not cleared).';

CREATE VIEW prepay.arrears AS
SELECT a.site_id, a.account_id, a.code AS account_code, a.name AS account_name, a.mode, a.balance,
       -a.balance AS owed, a.credit_limit, a.alarm_level, a.protect,
       (SELECT min(l.created_at) FROM prepay.ledger l
         WHERE l.site_id = a.site_id AND l.account_id = a.account_id
           AND l.entry_id > coalesce((SELECT max(z.entry_id) FROM prepay.ledger z
                                       WHERE z.site_id = a.site_id AND z.account_id = a.account_id
                                         AND z.balance_after >= 0), 0)) AS arrears_since,
       p.created_at AS last_payment_at, p.amount AS last_payment,
       (SELECT count(*) FROM prepay.meter m WHERE m.site_id = a.site_id AND m.account_id = a.account_id
           AND m.active AND m.relay_state = 'tripped') AS meters_tripped,
       a.phone, a.email
  FROM prepay.account a
  LEFT JOIN LATERAL (SELECT l.created_at, l.amount FROM prepay.ledger l
                      WHERE l.site_id = a.site_id AND l.account_id = a.account_id AND l.kind = 'recharge'
                      ORDER BY l.entry_id DESC LIMIT 1) AS p ON true
 WHERE a.balance < 0;
COMMENT ON VIEW prepay.arrears IS 'Accounts owing money (balance below zero), prepaid and postpaid, with since when, the last payment and how many meters are tripped.';

-- ---------------------------------------------------------------------
-- balance forecast, cuts ahead and the reminder before a cut
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.balance_forecast_at(p_site_id integer, p_at timestamptz, p_within interval DEFAULT NULL)
RETURNS TABLE (site_id integer, account_id bigint, account_code text, account_name text, mode prepay.account_mode,
               balance numeric, credit_limit numeric, available numeric, protect boolean, meters bigint,
               meters_to_cut bigint, recent_energy_per_day numeric, recent_cost_per_day numeric,
               last_read_at timestamptz, run_out_at timestamptz, method text, cut_at timestamptz, status text,
               reason text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    -- planned for each call with the actual site, instant and horizon ($1, $2, $3):
    -- a SQL function with a pinned search_path would get a generic plan
    RETURN QUERY EXECUTE $q$
    WITH s AS (
        SELECT st.site_id, st.time_zone, st.currency,
               (($2 AT TIME ZONE st.time_zone)::date
                - pg_catalog.floor(EXTRACT(epoch FROM st.forecast_window) / 86400)::integer) AS first_day,
               ($2 AT TIME ZONE st.time_zone)::date AS today
          FROM prepay.site st WHERE st.site_id = $1
    ), mt AS (
        -- each active meter of an open account: its recent consumption rate
        SELECT a.account_id, m.meter_id, coalesce(m.tariff_id, a.tariff_id) AS tariff_id, m.last_read_at,
               m.cycle_used, m.cycle_start, NOT m.protect AS cuttable, m.relay_state,
               r.energy, r.cost,
               EXTRACT(epoch FROM m.last_read_at
                   - greatest(r.first_day::timestamp AT TIME ZONE s.time_zone, a.opened_at)) / 3600 AS hours
          FROM s
          JOIN prepay.account a ON a.site_id = s.site_id AND a.closed_at IS NULL
          JOIN prepay.meter m ON m.site_id = a.site_id AND m.account_id = a.account_id AND m.active
          -- the window's rollup rows (energy_day's two parts, read directly so that the
          -- site and the window reach the index) summed per meter and account in one pass,
          -- not an aggregate per meter (energy_pending has no index: each was a scan, and
          -- the estimate of those scans switched JIT compilation on)
          LEFT JOIN (SELECT e.meter_id, e.account_id, sum(e.energy) AS energy, sum(e.cost) AS cost,
                            min(e.day) AS first_day
                       FROM s JOIN (SELECT f.site_id, f.meter_id, f.day, f.account_id, f.energy, f.cost
                                      FROM prepay.energy_day_folded f
                                    UNION ALL
                                    SELECT p.site_id, p.meter_id, p.day, p.account_id, p.energy, p.cost
                                      FROM prepay.energy_pending p) AS e
                         ON e.site_id = s.site_id AND e.day >= s.first_day AND e.day <= s.today
                      GROUP BY e.meter_id, e.account_id) AS r ON r.meter_id = m.meter_id AND r.account_id = a.account_id
    ), ac AS (
        SELECT a.account_id, a.code, a.name, a.mode, a.balance, a.credit_limit, a.balance + a.credit_limit AS available,
               a.protect, a.opened_at,
               count(mt.meter_id) AS meters, count(mt.meter_id) FILTER (WHERE mt.cuttable) AS meters_to_cut,
               count(mt.meter_id) FILTER (WHERE mt.cuttable AND mt.relay_state = 'tripped') AS meters_cut,
               -- a rate needs a minute (the agent's usual poll interval) of consumption: over
               -- milliseconds (a back-dated attach with back-filled readings) it is noise
               sum(mt.energy * 24 / mt.hours) FILTER (WHERE mt.hours >= 1.0 / 60) AS energy_per_day,
               sum(mt.cost * 24 / mt.hours) FILTER (WHERE mt.hours >= 1.0 / 60) AS cost_per_day,
               coalesce(bool_or(mt.energy > 0 AND mt.hours < 1.0 / 60), false) AS short_history,
               -- 48 hours at that rate must stay far inside the tariff engine's range (about 9.2e9
               -- per charge), else the account keeps the recent-average estimate
               coalesce(bool_or(mt.hours >= 1.0 / 60 AND (mt.cost * 48 / mt.hours > 1e8
                                                     OR mt.energy * 48 / mt.hours >= 1e12)), false) AS beyond_pricing,
               max(mt.last_read_at) AS last_read_at,
               (SELECT min(c.not_before) FROM prepay.command c
                 WHERE c.site_id = a.site_id AND c.account_id = a.account_id AND c.action = 'trip'
                   AND c.state = 'queued') AS trip_queued_for
          FROM s
          JOIN prepay.account a ON a.site_id = s.site_id AND a.closed_at IS NULL
          LEFT JOIN mt ON mt.account_id = a.account_id
         GROUP BY a.site_id, a.account_id
    ), todo AS (
        -- accounts worth pricing ahead: money left, consumption, and (with p_within, $3) a rough runway
        -- at most four times p_within, so that a price peak cannot hide a cut
        SELECT ac.* FROM ac
         WHERE ac.mode = 'prepaid' AND ac.available > 0 AND ac.cost_per_day > 0 AND NOT ac.beyond_pricing
           AND ($3 IS NULL
                OR ac.available / ac.cost_per_day * 86400 <= 4 * EXTRACT(epoch FROM $3))
    ), pieces AS (
        -- the next 48 hours of each meter at its recent rate, priced with its tariff as it stands
        SELECT mt.account_id, p.piece_from, p.piece_to, p.amount
          FROM todo JOIN mt ON mt.account_id = todo.account_id
         CROSS JOIN LATERAL prepay._pieces(prepay._rate($1, mt.tariff_id, mt.last_read_at,
                                                        mt.last_read_at + interval '48 hours',
                                                        round(mt.energy * 48 / mt.hours, 3),
                                                        mt.cycle_used, mt.cycle_start, NULL)) AS p
         WHERE mt.hours >= 1.0 / 60 AND mt.energy > 0
    ), walk AS (
        SELECT pc.account_id, pc.piece_from, pc.piece_to, pc.amount,
               sum(pc.amount) OVER (PARTITION BY pc.account_id ORDER BY pc.piece_to, pc.piece_from
                                    ROWS UNBOUNDED PRECEDING) AS spent
          FROM pieces pc
    ), priced AS (
        SELECT todo.account_id,
               (SELECT pg_catalog.date_trunc('second', w.piece_from + (w.piece_to - w.piece_from)
                           * ((todo.available - (w.spent - w.amount)) / w.amount)::double precision)
                  FROM walk w WHERE w.account_id = todo.account_id AND w.spent >= todo.available AND w.amount > 0
                 ORDER BY w.spent LIMIT 1) AS crossing,
               (SELECT sum(w.amount) FROM walk w WHERE w.account_id = todo.account_id) AS cost_48h
          FROM todo
    ), ahead AS (
        -- beyond 48 hours: days of money left at the 48-hour cost, else at the recent average
        SELECT ac.*, pr.crossing,
               CASE WHEN pr.crossing IS NOT NULL THEN NULL
                    WHEN pr.cost_48h > 0 THEN ac.available / pr.cost_48h * 2
                    WHEN ac.mode = 'prepaid' AND ac.available > 0 AND ac.cost_per_day > 0
                         THEN ac.available / ac.cost_per_day
               END AS days_left,
               CASE WHEN pr.crossing IS NOT NULL THEN 'tariff, 48 hours ahead'
                    WHEN pr.cost_48h > 0 THEN 'tariff, 48 hours extrapolated'
                    WHEN ac.mode = 'prepaid' AND ac.available > 0 AND ac.cost_per_day > 0 THEN 'recent average cost'
               END AS method
          FROM ac LEFT JOIN priced pr ON pr.account_id = ac.account_id
    ), f AS (
        -- no forecast rather than an error: a rate over less than a minute, or money for
        -- more than 100 years (a time that far ahead is out of the timestamp's range)
        SELECT ah.*,
               CASE WHEN ah.crossing IS NOT NULL THEN ah.crossing
                    WHEN ah.days_left <= 36500 THEN pg_catalog.date_trunc('second', ah.last_read_at
                         + interval '1 day' * ah.days_left::double precision)
               END AS run_out_at,
               CASE WHEN ah.days_left > 36500 THEN 'money for more than 100 years at the recent rate'
                    WHEN ah.crossing IS NULL AND ah.days_left IS NULL AND ah.short_history
                         THEN 'less than a minute of consumption since the account opened'
               END AS no_forecast
          FROM ahead ah
    ), st AS (
        SELECT f.*,
               CASE WHEN f.mode = 'postpaid' THEN 'postpaid'
                    WHEN f.meters = 0 THEN 'no meter'
                    WHEN f.available <= 0 AND f.trip_queued_for IS NOT NULL THEN 'trip queued'
                    WHEN f.protect OR f.meters_to_cut = 0 THEN 'protected'
                    WHEN f.available <= 0 AND f.meters_cut = f.meters_to_cut THEN 'cut'
                    WHEN f.available <= 0 THEN 'in arrears'
                    WHEN f.no_forecast IS NOT NULL THEN 'no forecast'
                    WHEN f.run_out_at IS NULL THEN 'no recent consumption'
                    ELSE 'forecast' END AS status
          FROM f
    )
    SELECT $1, st.account_id, st.code, st.name, st.mode, st.balance, st.credit_limit, st.available,
           st.protect, st.meters, st.meters_to_cut, round(st.energy_per_day, 3), round(st.cost_per_day, 2),
           st.last_read_at, st.run_out_at, CASE WHEN st.run_out_at IS NOT NULL THEN st.method END,
           CASE st.status WHEN 'trip queued' THEN st.trip_queued_for
                          WHEN 'forecast' THEN prepay.cut_allowed_at($1, st.run_out_at) END,
           st.status,
           CASE st.status
               WHEN 'postpaid' THEN 'postpaid accounts are billed, never cut'
               WHEN 'no meter' THEN 'no active meter attached'
               WHEN 'trip queued' THEN pg_catalog.format('in arrears (%s %s); the trip is queued for %s',
                                                         st.balance, s.currency,
                                                         pg_catalog.to_char(st.trip_queued_for AT TIME ZONE s.time_zone, 'YYYY-MM-DD HH24:MI'))
               WHEN 'protected' THEN CASE WHEN st.available <= 0
                   THEN pg_catalog.format('in arrears (%s %s) but on keep-power: never cut', st.balance, s.currency)
                   ELSE pg_catalog.format('on keep-power: never cut%s', CASE WHEN st.run_out_at IS NOT NULL THEN
                        pg_catalog.format('; reaches arrears about %s',
                                          pg_catalog.to_char(st.run_out_at AT TIME ZONE s.time_zone, 'YYYY-MM-DD HH24:MI')) ELSE '' END) END
               WHEN 'cut' THEN pg_catalog.format('in arrears (%s %s); supply is cut', st.balance, s.currency)
               WHEN 'in arrears' THEN pg_catalog.format('in arrears (%s %s); the trip is under way', st.balance, s.currency)
               WHEN 'no recent consumption' THEN 'no consumption in the forecast window'
               WHEN 'no forecast' THEN pg_catalog.format('no forecast: %s', st.no_forecast)
               ELSE pg_catalog.format('%s %s left (balance %s + credit %s) at %s per day: arrears about %s (%s)%s',
                        st.available, s.currency, st.balance, st.credit_limit, round(st.cost_per_day, 2),
                        pg_catalog.to_char(st.run_out_at AT TIME ZONE s.time_zone, 'YYYY-MM-DD HH24:MI'), st.method,
                        CASE WHEN prepay.cut_allowed_at($1, st.run_out_at) > st.run_out_at
                             THEN pg_catalog.format('; a no-cut window defers the cut to %s',
                                  pg_catalog.to_char(prepay.cut_allowed_at($1, st.run_out_at) AT TIME ZONE s.time_zone,
                                                     'YYYY-MM-DD HH24:MI'))
                             ELSE '' END)
           END
      FROM st CROSS JOIN s$q$ USING p_site_id, p_at, p_within;
END $f$;
COMMENT ON FUNCTION prepay.balance_forecast_at(integer, timestamptz, interval) IS
'Balance forecast of every open account of a site as seen at p_at: the recent consumption rate of each active meter (energy_day over the site''s forecast_window, from the first day with consumption in it, up to its last reading), the next 48 hours at that rate priced with the meter''s tariff as it stands (time of use, tiers, scheduled price changes), and the instant the available money (balance + credit limit) runs out (beyond 48 hours extrapolated), then the predicted cut: after any no-cut window, never for keep-power, the queued trip''s time for an account already in arrears.  With p_within only accounts whose rough runway is within 4 x p_within are priced (the others get the recent-average estimate).  A meter''s rate needs a minute of consumption since the account opened; an account without a usable rate (or with money for more than 100 years) gets status no forecast and NULL run_out_at and cut_at, never an error, so one degenerate account cannot break the forecast of the others.';

CREATE VIEW prepay.balance_forecast AS
SELECT f.* FROM (SELECT s.site_id FROM prepay.site s OFFSET 0) s   -- the sites first: on Citus the function then runs on the coordinator
 CROSS JOIN LATERAL prepay.balance_forecast_at(s.site_id, pg_catalog.now()) AS f;
COMMENT ON VIEW prepay.balance_forecast IS 'Balance forecast of every open account now: expected run-out time from recent consumption and the active tariff, and the predicted cut.';

CREATE FUNCTION prepay.cut_forecast(p_site_id integer, p_horizon interval DEFAULT '24 hours',
                                    p_at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (site_id integer, account_id bigint, account_code text, account_name text, balance numeric,
               available numeric, run_out_at timestamptz, cut_at timestamptz, will_be_cut boolean,
               meters_to_cut bigint, status text, why text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT f.site_id, f.account_id, f.account_code, f.account_name, f.balance, f.available, f.run_out_at, f.cut_at,
           f.cut_at IS NOT NULL, f.meters_to_cut, f.status, f.reason
      FROM prepay.balance_forecast_at(p_site_id, p_at, p_horizon) AS f
     WHERE f.cut_at <= p_at + p_horizon
        OR (f.status = 'protected' AND f.run_out_at <= p_at + p_horizon)
     ORDER BY coalesce(f.cut_at, f.run_out_at), f.account_id
$$;
COMMENT ON FUNCTION prepay.cut_forecast(integer, interval, timestamptz) IS
'Who will be cut within p_horizon (default the next 24 hours) and why: accounts whose predicted cut (after no-cut windows) or queued trip falls in the horizon, plus keep-power accounts that reach arrears in it (will_be_cut false).';

CREATE VIEW prepay.cuts_next_24h AS
SELECT c.* FROM (SELECT s.site_id FROM prepay.site s OFFSET 0) s   -- the sites first: on Citus the function then runs on the coordinator
 CROSS JOIN LATERAL prepay.cut_forecast(s.site_id) AS c;
COMMENT ON VIEW prepay.cuts_next_24h IS 'Who will be cut in the next 24 hours and why, every site.';

CREATE SEQUENCE prepay.cut_reminder_id_seq;
COMMENT ON SEQUENCE prepay.cut_reminder_id_seq IS 'Source of cut reminder ids.';
CREATE TABLE prepay.cut_reminder (
    site_id          integer NOT NULL,
    reminder_id      bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.cut_reminder_id_seq'),
    account_id       bigint NOT NULL,
    funded_by_entry  bigint NOT NULL,
    predicted_cut    timestamptz NOT NULL,
    notification_id  bigint NOT NULL,
    sent_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (site_id, reminder_id),
    UNIQUE (site_id, account_id, funded_by_entry),
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account
);
COMMENT ON TABLE prepay.cut_reminder IS 'Final reminders sent before a predicted cut: at most one per account and predicted cut, where a predicted cut is identified by the account''s last credit (a new payment starts a new one).';
COMMENT ON COLUMN prepay.cut_reminder.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.cut_reminder.reminder_id IS 'Reminder id.';
COMMENT ON COLUMN prepay.cut_reminder.account_id IS 'Account reminded.';
COMMENT ON COLUMN prepay.cut_reminder.funded_by_entry IS 'The account''s last ledger entry with a positive amount when the reminder was sent (0 if none): the money the predicted cut ends.';
COMMENT ON COLUMN prepay.cut_reminder.predicted_cut IS 'The cut predicted when the reminder was sent.';
COMMENT ON COLUMN prepay.cut_reminder.notification_id IS 'The notification written (prepay.notification, kind cut_reminder).';
COMMENT ON COLUMN prepay.cut_reminder.sent_at IS 'When the reminder was written.';

CREATE FUNCTION prepay.send_cut_reminders(p_site_id integer DEFAULT NULL, p_at timestamptz DEFAULT pg_catalog.now())
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    sites integer[];
    leads interval[];
    accounts bigint[];
    cuts timestamptz[];
    funded bigint;
    reminder bigint;
    note bigint;
    n integer := 0;
BEGIN
    -- site by site and account by account, each statement about one site:
    -- on Citus each goes to the site's shard
    SELECT pg_catalog.array_agg(s.site_id ORDER BY s.site_id), pg_catalog.array_agg(s.cut_reminder_lead ORDER BY s.site_id)
      INTO sites, leads
      FROM prepay.site s WHERE p_site_id IS NULL OR s.site_id = p_site_id;
    FOR i IN 1 .. coalesce(cardinality(sites), 0) LOOP
        SELECT pg_catalog.array_agg(c.account_id ORDER BY c.account_id), pg_catalog.array_agg(c.cut_at ORDER BY c.account_id)
          INTO accounts, cuts
          FROM prepay.cut_forecast(sites[i], leads[i], p_at) AS c
         WHERE c.will_be_cut;
        FOR j IN 1 .. coalesce(cardinality(accounts), 0) LOOP
            -- once per account and the payment that funds it
            funded := coalesce((SELECT l.entry_id FROM prepay.ledger l
                                 WHERE l.site_id = sites[i] AND l.account_id = accounts[j] AND l.amount > 0
                                 ORDER BY l.entry_id DESC LIMIT 1), 0);
            reminder := NULL;
            INSERT INTO prepay.cut_reminder (site_id, account_id, funded_by_entry, predicted_cut, notification_id, sent_at)
            VALUES (sites[i], accounts[j], funded, cuts[j], 0, p_at)
            ON CONFLICT (site_id, account_id, funded_by_entry) DO NOTHING
            RETURNING reminder_id INTO reminder;
            CONTINUE WHEN reminder IS NULL;
            INSERT INTO prepay.notification (site_id, account_id, kind, alarm_level, balance, phone, email,
                                             message, created_at)
            SELECT a.site_id, a.account_id, 'cut_reminder', a.alarm_level, a.balance, a.phone, a.email,
                   pg_catalog.format('Account %s: supply will be cut at about %s (balance %s %s). Please recharge now.',
                                     a.code, pg_catalog.to_char(cuts[j] AT TIME ZONE s.time_zone, 'YYYY-MM-DD HH24:MI'),
                                     a.balance, s.currency),
                   p_at
              FROM prepay.account a JOIN prepay.site s ON s.site_id = a.site_id
             WHERE a.site_id = sites[i] AND s.site_id = sites[i] AND a.account_id = accounts[j]
            RETURNING notification_id INTO note;
            UPDATE prepay.cut_reminder SET notification_id = note WHERE site_id = sites[i] AND reminder_id = reminder;
            PERFORM prepay._announce('prepay_notification', sites[i] || '/' || note);
            n := n + 1;
        END LOOP;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.send_cut_reminders(integer, timestamptz) IS
'The final reminder before a cut: for every account of the site (every site when NULL) whose predicted cut (prepay.cut_forecast) falls within the site''s cut_reminder_lead (default 30 minutes), write one notification of kind cut_reminder (NOTIFY prepay_notification), once per account and predicted cut (prepay.cut_reminder).  Returns how many were written.  Idempotent: schedule it every few minutes (pg_cron: SELECT prepay.send_cut_reminders()).';

-- ---------------------------------------------------------------------
-- suspicious consumption
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.multiplier_change_id_seq;
COMMENT ON SEQUENCE prepay.multiplier_change_id_seq IS 'Source of multiplier change ids.';
CREATE TABLE prepay.multiplier_change (
    site_id        integer NOT NULL,
    change_id      bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.multiplier_change_id_seq'),
    meter_id       bigint NOT NULL,
    old_multiplier integer NOT NULL,
    new_multiplier integer NOT NULL,
    changed_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    changed_by     text NOT NULL DEFAULT SESSION_USER,
    PRIMARY KEY (site_id, change_id),
    FOREIGN KEY (site_id, meter_id) REFERENCES prepay.meter
);
CREATE INDEX multiplier_change_meter ON prepay.multiplier_change (site_id, meter_id, changed_at);
COMMENT ON INDEX prepay.multiplier_change_meter IS 'A meter''s multiplier history.';
COMMENT ON TABLE prepay.multiplier_change IS 'Every change of a meter''s multiplier (CT x PT ratio), with who made it: written by the trigger meter_multiplier_change.  A lowered multiplier under-bills every later reading.';
COMMENT ON COLUMN prepay.multiplier_change.site_id IS 'Site of the meter.';
COMMENT ON COLUMN prepay.multiplier_change.change_id IS 'Change id.';
COMMENT ON COLUMN prepay.multiplier_change.meter_id IS 'Meter changed.';
COMMENT ON COLUMN prepay.multiplier_change.old_multiplier IS 'Multiplier before.';
COMMENT ON COLUMN prepay.multiplier_change.new_multiplier IS 'Multiplier after.';
COMMENT ON COLUMN prepay.multiplier_change.changed_at IS 'When (transaction time).';
COMMENT ON COLUMN prepay.multiplier_change.changed_by IS 'Database user who changed it.';

CREATE FUNCTION prepay._log_multiplier_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO prepay.multiplier_change (site_id, meter_id, old_multiplier, new_multiplier)
    VALUES (NEW.site_id, NEW.meter_id, OLD.multiplier, NEW.multiplier);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._log_multiplier_change() IS 'Internal: AFTER UPDATE row trigger on prepay.meter recording a multiplier change in prepay.multiplier_change.';
CREATE TRIGGER meter_multiplier_change AFTER UPDATE OF multiplier ON prepay.meter
    FOR EACH ROW WHEN (OLD.multiplier IS DISTINCT FROM NEW.multiplier)
    EXECUTE FUNCTION prepay._log_multiplier_change();
COMMENT ON TRIGGER meter_multiplier_change ON prepay.meter IS 'Logs multiplier changes (the rating trigger never updates the multiplier, so it never fires for readings).';

CREATE FUNCTION prepay.loss_jumps(p_site_id integer, p_min_points numeric DEFAULT 5)
RETURNS TABLE (site_id integer, rule_id bigint, period_start date, loss_pct numeric, previous_pct numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT x.site_id, x.rule_id, x.period_start, x.loss_pct, x.previous_pct
      FROM (SELECT l.site_id, l.rule_id, l.period_start, l.loss_pct,
                   pg_catalog.lag(l.loss_pct) OVER (PARTITION BY l.rule_id ORDER BY l.period_start) AS previous_pct
              FROM prepay.loss_period l WHERE l.site_id = p_site_id) AS x
     WHERE x.loss_pct - x.previous_pct >= p_min_points
     ORDER BY x.period_start, x.rule_id;
END $$;
COMMENT ON FUNCTION prepay.loss_jumps(integer, numeric) IS
'Loss periods of a site whose line-loss percentage rose by at least p_min_points percentage points (default 5) over the previous period of the same loss rule (prepay.loss_period, kept by periodic billing); empty when loss accounting is not installed.';

CREATE FUNCTION prepay.suspicious_consumption_at(p_site_id integer, p_at timestamptz, p_days integer DEFAULT 7,
                                                 p_drop numeric DEFAULT 0.3)
RETURNS TABLE (site_id integer, kind text, account_id bigint, account_code text, meter_id bigint, meter_code text,
               building text, floor text, room text, since timestamptz, recent numeric, usual numeric, detail text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    tz text;
    today date;
BEGIN
    -- the site's time zone and day read first, and every table filtered by
    -- p_site_id itself: on Citus each statement is one task on the site's shard
    SELECT st.time_zone, (p_at AT TIME ZONE st.time_zone)::date INTO tz, today
      FROM prepay.site st WHERE st.site_id = p_site_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH w AS (
        -- per attached meter: energy in the last p_days whole local days, and in the 4 x p_days before
        SELECT m.meter_id, m.code, m.building, m.floor, m.room, m.last_read_at, a.account_id, a.code AS account_code,
               a.opened_at,
               coalesce(sum(e.energy) FILTER (WHERE e.day >= today - p_days), 0) AS recent,
               coalesce(sum(e.energy) FILTER (WHERE e.day < today - p_days), 0) AS before,
               max(e.day) AS last_day
          FROM prepay.account a
          JOIN prepay.meter m ON m.site_id = a.site_id AND m.account_id = a.account_id AND m.active
          LEFT JOIN prepay.energy_day e ON e.site_id = m.site_id AND e.meter_id = m.meter_id
                                       AND e.account_id = a.account_id AND e.site_id = p_site_id
                                       AND e.day >= today - 5 * p_days AND e.day < today
         WHERE a.site_id = p_site_id AND m.site_id = p_site_id AND a.closed_at IS NULL
         GROUP BY m.site_id, m.meter_id, a.site_id, a.account_id
    )
    SELECT p_site_id, 'zero_use', w.account_id, w.account_code, w.meter_id, w.code, w.building, w.floor, w.room,
           coalesce((w.last_day + 1)::timestamp, (today - p_days)::timestamp) AT TIME ZONE tz,
           0::numeric, round(w.before / (4 * p_days), 3),
           pg_catalog.format('no consumption charged in the last %s days although the account is open and the meter reports', p_days)
      FROM w
     WHERE w.recent = 0 AND w.last_read_at >= p_at - interval '1 day'
       AND w.opened_at <= (today - p_days)::timestamp AT TIME ZONE tz
    UNION ALL
    SELECT p_site_id, 'sudden_drop', w.account_id, w.account_code, w.meter_id, w.code, w.building, w.floor, w.room,
           (today - p_days)::timestamp AT TIME ZONE tz,
           round(w.recent / p_days, 3), round(w.before / (4 * p_days), 3),
           pg_catalog.format('%s per day in the last %s days against %s per day in the %s days before (below %s%%)',
                             round(w.recent / p_days, 3), p_days, round(w.before / (4 * p_days), 3), 4 * p_days,
                             round(p_drop * 100))
      FROM w
     WHERE w.recent > 0 AND w.before / (4 * p_days) >= 1 AND w.recent / p_days < p_drop * w.before / (4 * p_days)
    UNION ALL
    SELECT p_site_id, 'reverse_energy', m.account_id, a.code, m.meter_id, m.code, m.building, m.floor, m.room,
           q.first_at, q.readings, NULL::numeric,
           pg_catalog.format('%s readings with the register going backwards since %s; last: %s',
                             q.readings, pg_catalog.to_char(q.first_at AT TIME ZONE tz, 'YYYY-MM-DD HH24:MI'), q.last_detail)
      FROM (SELECT r.meter_id, count(*)::numeric AS readings, min(r.read_at) AS first_at,
                   (array_agg(r.quarantine_detail ORDER BY r.read_at DESC))[1] AS last_detail
              FROM prepay.reading r
             WHERE r.site_id = p_site_id AND r.quarantine_reason = 'counter_backwards'
               AND r.read_at > p_at - 5 * p_days * interval '1 day' AND r.read_at <= p_at
             GROUP BY r.meter_id) AS q
      JOIN prepay.meter m ON m.site_id = p_site_id AND m.meter_id = q.meter_id
      LEFT JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id AND a.site_id = p_site_id
    UNION ALL
    SELECT p_site_id, 'multiplier_changed', m.account_id, a.code, m.meter_id, m.code, m.building, m.floor, m.room,
           c.changed_at, c.new_multiplier, c.old_multiplier,
           pg_catalog.format('multiplier changed from %s to %s by %s', c.old_multiplier, c.new_multiplier, c.changed_by)
      FROM prepay.multiplier_change c
      JOIN prepay.meter m ON m.site_id = c.site_id AND m.meter_id = c.meter_id AND m.site_id = p_site_id
      LEFT JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id AND a.site_id = p_site_id
     WHERE c.site_id = p_site_id AND c.changed_at > p_at - 5 * p_days * interval '1 day' AND c.changed_at <= p_at;
    RETURN QUERY
    SELECT p_site_id, 'loss_jump', NULL::bigint, NULL::text, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text,
           j.period_start::timestamp AT TIME ZONE tz, j.loss_pct, j.previous_pct,
           pg_catalog.format('line loss of rule %s rose from %s%% to %s%%', j.rule_id, j.previous_pct, j.loss_pct)
      FROM prepay.loss_jumps(p_site_id) AS j
     WHERE j.period_start <= today;
END $$;
COMMENT ON FUNCTION prepay.suspicious_consumption_at(integer, timestamptz, integer, numeric) IS
'Suspicious consumption of a site as seen at p_at: zero_use (an open account whose meter reports but charged nothing in the last p_days whole days), sudden_drop (its last p_days average below p_drop x the average of the 4 x p_days before, from at least 1 unit a day), reverse_energy (readings quarantined as counter_backwards in the last 5 x p_days days), multiplier_changed (in the last 5 x p_days days) and loss_jump (prepay.loss_jumps).  recent and usual are per-day energies (readings, new multiplier, loss % for the other kinds; see docs/REPORTS.md).';

CREATE VIEW prepay.suspicious_consumption AS
SELECT x.* FROM (SELECT s.site_id FROM prepay.site s OFFSET 0) s   -- the sites first: on Citus the function then runs on the coordinator
 CROSS JOIN LATERAL prepay.suspicious_consumption_at(s.site_id, pg_catalog.now()) AS x;
COMMENT ON VIEW prepay.suspicious_consumption IS 'Suspicious consumption now, every site: zero use while occupied, sudden drops, reverse energy, multiplier changes, line-loss jumps.';

-- ---------------------------------------------------------------------
-- column comments of the report views
-- ---------------------------------------------------------------------

-- One meaning per column name, with per-view exceptions; installing fails
-- if a view column is left without a comment.
CREATE FUNCTION prepay._comment_report_columns() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    c record;
BEGIN
    FOR c IN
        WITH dictionary (view_name, column_name, comment) AS (VALUES
        ('*', 'site_id', 'Site.'),
        ('*', 'account_id', 'Account.'),
        ('*', 'account_code', 'Account number.'),
        ('*', 'account_name', 'Tenant name.'),
        ('*', 'meter_id', 'Meter.'),
        ('*', 'meter_code', 'Meter number.'),
        ('*', 'building', 'Building of the meter''s room.'),
        ('*', 'floor', 'Floor of the meter''s room.'),
        ('*', 'room', 'Room or shop number.'),
        ('*', 'day', 'Local date (site time zone).'),
        ('*', 'month', 'First day of the local month.'),
        ('energy_rollup', 'grain', 'day: a row of energy_day; month: a row of energy_month.'),
        ('energy_rollup', 'starts', 'The local day (grain day), or the first day of the local month (grain month).'),
        ('*', 'year', 'Local calendar year.'),
        ('*', 'period', 'Time-of-use period (or register) the energy was priced in; "all" for a single-price tariff.'),
        ('*', 'tier', 'Tier (1 = first block) the energy was priced in.'),
        ('*', 'energy', 'Energy charged (kWh or m3, after the multiplier).'),
        ('*', 'cost', 'Exact price of the energy (9 decimals, before rounding to cents).'),
        ('*', 'charged', 'Whole cents posted by the consumption entries whose interval starts in the bucket (counted on their first piece''s period and tier).'),
        ('*', 'charges', 'Consumption entries whose interval starts in the bucket.'),
        ('*', 'energy_year_before', 'Energy of the same month a year before (NULL if none).'),
        ('*', 'cost_year_before', 'Exact cost of the same month a year before.'),
        ('*', 'energy_change_pct', 'Energy change against the same month a year before, in percent (one decimal).'),
        ('*', 'accounts', 'Accounts charged in the month.'),
        ('*', 'accounts_year_before', 'Accounts charged in the same month a year before.'),
        ('*', 'kind', 'Ledger kind of the movement (consumption, recharge, refund, reversal, fee, ...).'),
        ('*', 'channel', 'Payment channel (cash, card, wechat, ...); NULL for movements without one.'),
        ('*', 'operator', 'Database user who posted the movement (the login of its prepay.actor row, ledger.actor_id).'),
        ('*', 'entries', 'Number of ledger entries.'),
        ('*', 'money_in', 'Sum of the positive amounts (credits to wallets).'),
        ('*', 'money_out', 'Sum of the negative amounts, as a positive number (debits from wallets).'),
        ('*', 'net', 'Net movement: money_in - money_out.'),
        ('*', 'entry_id', 'Ledger entry.'),
        ('*', 'created_at', 'When the entry was posted.'),
        ('*', 'amount', 'Signed amount: positive credits the wallet, negative debits it.'),
        ('*', 'balance_after', 'Wallet balance right after the entry.'),
        ('*', 'external_ref', 'The channel''s reference (receipt or transaction number).'),
        ('*', 'reason', 'Reason given for the entry.'),
        ('*', 'reverses_entry', 'For a reversal, the entry it cancels.'),
        ('*', 'reversed_kind', 'For a reversal, the kind of the entry it cancels.'),
        ('*', 'reversed_by', 'The reversal that cancelled this entry, if any.'),
        ('*', 'gateway_id', 'Gateway.'),
        ('*', 'gateway_name', 'Gateway name.'),
        ('*', 'transport', 'tcp, rtu or rtu_over_tcp.'),
        ('*', 'address', 'Host of a TCP gateway or serial device of an RTU line.'),
        ('*', 'agent_id', 'Agent that polls the gateway.'),
        ('*', 'cause', 'meter: the meter itself does not answer; gateway: its gateway is lost.'),
        ('*', 'lost_since', 'Since when contact is lost.'),
        ('*', 'lost_for', 'How long contact has been lost, now.'),
        ('*', 'last_read_at', 'Time of the last rated reading.'),
        ('*', 'meters', 'Active meters.'),
        ('*', 'alarm_id', 'Alarm.'),
        ('*', 'raised_at', 'When the alarm was raised.'),
        ('*', 'cleared_at', 'When it cleared; NULL while active.'),
        ('*', 'active', 'true while the alarm is not cleared.'),
        ('*', 'duration', 'How long the alarm lasted (until now while active).'),
        ('*', 'age', 'How long the alarm has been active.'),
        ('*', 'detail', 'Human explanation.'),
        ('*', 'mode', 'prepaid or postpaid.'),
        ('*', 'balance', 'Wallet balance.'),
        ('*', 'owed', 'Amount owed: minus the balance.'),
        ('*', 'credit_limit', 'How far below zero the balance may fall before the trip.'),
        ('*', 'alarm_level', 'Alarm level: 0 none, 1 low balance, 2 pre-trip, 3 arrears.'),
        ('*', 'protect', 'Keep-power on the account: never tripped.'),
        ('*', 'arrears_since', 'When the balance last went below zero (the first entry after the last one leaving it at or above zero).'),
        ('*', 'last_payment_at', 'When the account''s last recharge was posted.'),
        ('*', 'last_payment', 'Amount of the last recharge.'),
        ('*', 'meters_tripped', 'Active meters of the account whose relay is known to be tripped.'),
        ('*', 'phone', 'Contact phone.'),
        ('*', 'email', 'Contact e-mail.'),
        ('*', 'available', 'Money until arrears: balance + credit limit.'),
        ('*', 'meters_to_cut', 'Active meters not on keep-power: what a cut trips.'),
        ('*', 'recent_energy_per_day', 'Recent consumption per day (all active meters, over the site''s forecast_window).'),
        ('*', 'recent_cost_per_day', 'Recent exact cost per day, rounded to cents.'),
        ('*', 'run_out_at', 'When the available money is expected to run out (balance reaches minus the credit limit); NULL without a forecast (status no forecast: less than a minute of consumption, or money for more than 100 years).'),
        ('*', 'method', 'How run_out_at was found: tariff, 48 hours ahead; tariff, 48 hours extrapolated; recent average cost.'),
        ('*', 'cut_at', 'When supply is expected to be cut: run_out_at moved past no-cut windows, or the queued trip''s time; NULL when no cut is expected.'),
        ('*', 'status', 'forecast, trip queued, in arrears, cut, protected, postpaid, no meter, no recent consumption or no forecast (the rate is not usable: see why).'),
        ('*', 'will_be_cut', 'false for keep-power accounts that reach arrears but are never cut.'),
        ('*', 'why', 'Why: money left, rate, expected run-out and cut, no-cut windows, keep-power.'),
        ('*', 'since', 'Since when the suspicion holds.'),
        ('*', 'recent', 'zero_use, sudden_drop: energy per day in the recent days; reverse_energy: quarantined readings; multiplier_changed: new multiplier; loss_jump: loss percentage.'),
        ('*', 'usual', 'zero_use, sudden_drop: energy per day in the days before; multiplier_changed: old multiplier; loss_jump: previous loss percentage.'),
        ('alarm_history', 'kind', 'Alarm kind: low_balance, pretrip, arrears, bad_reading, conflicting_reading, split_fallback, command_failing, notification_dead, meter_lost, gateway_lost, or a billing alarm.'),
        ('active_alarms', 'kind', 'Alarm kind: low_balance, pretrip, arrears, bad_reading, conflicting_reading, split_fallback, command_failing, notification_dead, meter_lost, gateway_lost, or a billing alarm.'),
        ('alarm_history', 'day', 'Local date the alarm was raised.'),
        ('suspicious_consumption', 'kind', 'zero_use, sudden_drop, reverse_energy, multiplier_changed or loss_jump.'),
        ('balance_forecast', 'reason', 'Why: money left, rate, expected run-out and cut, no-cut windows, keep-power.'),
        ('lost_gateways', 'meters', 'Active meters behind the gateway.'),
        ('lost_gateways', 'last_read_at', 'Last rated reading of any meter behind the gateway.'),
        ('balance_forecast', 'last_read_at', 'Latest last reading of the account''s meters.'),
        ('energy_yoy_account', 'energy', 'Energy charged to the account in the month.'),
        ('energy_yoy_account', 'cost', 'Exact cost of the month''s energy.'),
        ('energy_yoy_site', 'energy', 'Energy charged at the site in the month.'),
        ('energy_yoy_site', 'cost', 'Exact cost of the month''s energy.')
        )
        SELECT cl.relname, a.attname,
               (SELECT d.comment FROM dictionary d
                 WHERE d.column_name = a.attname AND d.view_name IN (cl.relname, '*')
                 ORDER BY d.view_name = '*' LIMIT 1) AS comment
          FROM pg_catalog.pg_class cl
          JOIN pg_catalog.pg_namespace n ON n.oid = cl.relnamespace
          JOIN pg_catalog.pg_attribute a ON a.attrelid = cl.oid AND a.attnum > 0
         WHERE n.nspname = 'prepay' AND cl.relkind = 'v'
           AND pg_catalog.col_description(cl.oid, a.attnum) IS NULL
    LOOP
        IF c.comment IS NULL THEN
            RAISE EXCEPTION 'view column prepay.%.% has no comment', c.relname, c.attname;
        END IF;
        EXECUTE pg_catalog.format('COMMENT ON COLUMN prepay.%I.%I IS %L', c.relname, c.attname, c.comment);
    END LOOP;
END $f$;
COMMENT ON FUNCTION prepay._comment_report_columns() IS
'Internal: comment every view column of schema prepay that has none from one dictionary (one meaning per column name, with per-view exceptions), and raise if a column is left without one.  The install runs it, and an upgrade that creates views runs it again.';
SELECT prepay._comment_report_columns();

-- ---------------------------------------------------------------------
-- pg_dump: the rollups and logs are data (a restore in replica mode does
-- not run the triggers that would rebuild them)
-- ---------------------------------------------------------------------

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['energy_day_folded', 'energy_month_folded', 'energy_pending', 'consumption_posting_day', 'cut_reminder',
                             'cut_reminder_id_seq', 'multiplier_change', 'multiplier_change_id_seq'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(('prepay.' || t)::regclass, '');
    END LOOP;
END $$;
