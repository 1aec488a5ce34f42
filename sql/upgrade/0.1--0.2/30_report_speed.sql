-- sql/upgrade/0.1--0.2/30_report_speed.sql: the room status board, the raw energy report, the balance forecast and the arrears list keep their speed with the pinned search_path.

-- ---------------------------------------------------------------------
-- the reports keep their speed with the pinned search_path
-- ---------------------------------------------------------------------
-- A function with a SET clause is neither inlined nor planned for its
-- arguments: energy_from_ledger writes _entry_parts (and _local_day) out,
-- the room_status view holds the board's query, room_status_at and
-- balance_forecast_at plan per call (PL/pgSQL, RETURN QUERY EXECUTE), and
-- bill_arrears calls _local_day once per bill.  The same text as in
-- reports.sql and bill.sql.

CREATE OR REPLACE FUNCTION prepay._entry_parts(p_amount numeric, p_pieces json, p_tz text)
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

CREATE OR REPLACE FUNCTION prepay.energy_from_ledger(p_site_id integer, p_from date, p_to date)
RETURNS TABLE (site_id integer, meter_id bigint, day date, account_id bigint, period text, tier integer,
               energy numeric, cost numeric, charged numeric, charges bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    -- x is prepay._entry_parts(l.amount, l.pieces, s.time_zone) written out:
    -- a call per entry would cost a search_path save and restore and no
    -- inlining (keep the two the same)
    SELECT l.site_id, l.meter_id, x.day, l.account_id, x.period, x.tier,
           sum(x.energy), sum(x.cost), sum(x.charged), sum(x.charges)
      FROM prepay.site s
      JOIN prepay.ledger l ON l.site_id = s.site_id
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
                          FROM ROWS FROM (pg_catalog.json_to_recordset(l.pieces->'pieces')
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

CREATE OR REPLACE VIEW prepay.room_status WITH (security_invoker = true) AS
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

CREATE OR REPLACE FUNCTION prepay.room_status_at(p_site_id integer, p_at timestamptz)
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

CREATE OR REPLACE FUNCTION prepay.balance_forecast_at(p_site_id integer, p_at timestamptz, p_within interval DEFAULT NULL)
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

CREATE OR REPLACE VIEW prepay.bill_arrears WITH (security_invoker = true) AS
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
  -- one call per bill, not five (OFFSET 0 keeps the planner from copying
  -- the call into each use); the function, not a join, reads prepay.site,
  -- which a tenant may not read
  CROSS JOIN LATERAL (SELECT prepay._local_day(b.site_id, pg_catalog.now()) AS today OFFSET 0) AS s
 WHERE b.state = 'issued';
