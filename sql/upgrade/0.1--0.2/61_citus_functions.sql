-- sql/upgrade/0.1--0.2/61_citus_functions.sql: the coordinator-side functions on Citus (test/t/221_citus_functions.pl): SQL functions that read the tables become PL/pgSQL (Citus does not plan a SQL function's parameterized statements on distributed tables); row values passed as ROW(x.*) where a statement goes to a shard; bill_arrears without a sub-SELECT lacking FROM; the batch runner claims batches site by site and reads the clock before its UPDATEs; create_batch resolves its items before inserting them; send_cut_reminders site by site and account by account; apportion reads a member's ratio on its own; suspicious_consumption_at filtered by its site; prepay.distribute() lets the per-row helpers read their site's rows on a shard.

CREATE OR REPLACE FUNCTION prepay._command_moot(c prepay.command)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT CASE
        WHEN n.command_id IS NOT NULL THEN pg_catalog.format('superseded by command %s', n.command_id)
        WHEN m.meter_id IS NULL OR NOT m.active THEN 'meter removed'
        WHEN c.action = 'trip' AND m.protect THEN 'meter protected'
        WHEN c.action = 'trip' AND a.protect THEN 'account protected'
        WHEN c.action = 'trip' AND c.reason = 'arrears' AND a.closed_at IS NOT NULL THEN 'account closed'
        WHEN c.action = 'trip' AND c.reason = 'arrears' AND m.account_id IS DISTINCT FROM c.account_id
            THEN 'meter no longer on the account'
        WHEN c.action = 'trip' AND c.reason = 'arrears' AND (a.mode <> 'prepaid' OR a.alarm_level < 3)
            THEN 'account no longer in arrears'
    END
      FROM (SELECT 1) one
      LEFT JOIN prepay.meter m ON m.site_id = c.site_id AND m.meter_id = c.meter_id
      LEFT JOIN prepay.account a ON a.site_id = c.site_id AND a.account_id = c.account_id
      LEFT JOIN LATERAL (SELECT q.command_id FROM prepay.command q
                          WHERE q.site_id = c.site_id AND q.meter_id = c.meter_id AND q.command_id > c.command_id
                            AND q.state IN ('queued', 'sent', 'done')
                          ORDER BY q.command_id DESC LIMIT 1) n ON true);
END $$;

CREATE OR REPLACE FUNCTION prepay._command_impossible(c prepay.command)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT pg_catalog.format('impossible: device profile %s has no remote relay', d.profile)
      FROM prepay.meter m
      JOIN prepay.device_profile d ON d.site_id = m.site_id AND d.profile = m.device_profile
     WHERE m.site_id = c.site_id AND m.meter_id = c.meter_id AND d.relay_write_address IS NULL);
END $$;

CREATE OR REPLACE FUNCTION prepay._command_alarm(c prepay.command, p_error text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO prepay.alarm (site_id, kind, meter_id, detail)
    VALUES (c.site_id, 'command_failing', c.meter_id,
            pg_catalog.format('Command %s: %s of meter %s (account %s, reason %s) not done after %s attempt(s); last error: %s',
                              c.command_id, c.action, c.meter_id, coalesce(c.account_id::text, 'none'), c.reason,
                              c.attempts, p_error))
    ON CONFLICT (site_id, kind, (coalesce(account_id, 0)), (coalesce(meter_id, 0))) WHERE cleared_at IS NULL
    DO UPDATE SET detail = EXCLUDED.detail;
END $$;

CREATE OR REPLACE FUNCTION prepay._api_payment(p_site_id integer, p_entry_id bigint, p_replayed boolean)
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

CREATE OR REPLACE FUNCTION prepay._service_at(p_site_id integer, p_entry prepay.ledger)
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

CREATE OR REPLACE FUNCTION prepay._is_charge(p_site_id integer, p_entry prepay.ledger)
RETURNS boolean LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT p_entry.kind NOT IN ('recharge', 'refund', 'closing_refund', 'bill_payment', 'bill_charge')
       AND (p_entry.kind <> 'reversal'
            OR (SELECT r.kind FROM prepay.ledger r WHERE r.site_id = p_site_id AND r.entry_id = p_entry.reverses_entry)
               NOT IN ('recharge', 'refund', 'bill_payment')));
END $$;

CREATE OR REPLACE FUNCTION prepay._rule_name(p_charge prepay.period_charge)
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

CREATE OR REPLACE FUNCTION prepay._bill_lines(p_site_id integer, p_bill prepay.bill)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    WITH entries AS (
        SELECT l.* FROM prepay.bill_entry be
          JOIN prepay.ledger l ON l.site_id = be.site_id AND l.entry_id = be.entry_id
         WHERE be.site_id = p_site_id AND be.bill_id = p_bill.bill_id
    ), energy AS (           -- by TOU period, tier and price, from the pricing records
        SELECT 'energy' AS kind,
               'energy' || coalesce(' ' || nullif(x.period, 'all'), '') || coalesce(' tier ' || nullif(x.tier, 1), '') AS description,
               sum(x.energy) AS quantity, x.unit_price, round(sum(x.amount), 2) AS amount
          FROM entries e CROSS JOIN LATERAL prepay._pieces(e.pieces) AS x
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

CREATE OR REPLACE FUNCTION prepay._local_day(p_site_id integer, p_at timestamptz)
RETURNS date LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT (p_at AT TIME ZONE s.time_zone)::date FROM prepay.site s WHERE s.site_id = p_site_id);
END $$;

CREATE OR REPLACE FUNCTION prepay._local_start(p_site_id integer, p_day date)
RETURNS timestamptz LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT p_day::timestamp AT TIME ZONE s.time_zone FROM prepay.site s WHERE s.site_id = p_site_id);
END $$;

CREATE OR REPLACE FUNCTION prepay._members(p_site_id integer, p_group_id bigint)
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

CREATE OR REPLACE FUNCTION prepay.allowance_left(p_site_id integer, p_account_id bigint)
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
                                         WHERE r.site_id = l.site_id AND r.entry_id = l.reverses_entry
                                           AND r.kind = 'allowance')))), 0))
      FROM prepay.account a
     WHERE a.site_id = p_site_id AND a.account_id = p_account_id);
END $$;

CREATE OR REPLACE FUNCTION prepay.meter_register_at(p_site_id integer, p_meter_id bigint, p_at timestamptz)
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

CREATE OR REPLACE FUNCTION prepay.account_consumption(p_site_id integer, p_account_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS numeric LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT coalesce(sum(l.energy), 0) FROM prepay.ledger l
     WHERE l.site_id = p_site_id AND l.account_id = p_account_id AND l.kind = 'consumption'
       AND l.read_to > p_from AND l.read_to <= p_to);
END $$;

CREATE OR REPLACE FUNCTION prepay._alarm(p_site_id integer, p_kind text, p_meter_id bigint, p_detail text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO prepay.alarm (site_id, kind, meter_id, detail)
    VALUES (p_site_id, p_kind, p_meter_id, p_detail)
    ON CONFLICT DO NOTHING;
END $$;

CREATE OR REPLACE FUNCTION prepay._notify_language(p_site_id integer, p_account_id bigint)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT coalesce((SELECT l.language FROM prepay.account_language l
                      WHERE l.site_id = p_site_id AND l.account_id = p_account_id),
                    (SELECT s.language FROM prepay.notify_site s WHERE s.site_id = p_site_id), 'en'));
END $$;

CREATE OR REPLACE FUNCTION prepay._notify_values(p_site_id integer, p_account_id bigint, p_language text, p_balance numeric,
                                      p_amount numeric DEFAULT NULL, p_extra jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT pg_catalog.jsonb_build_object(
               'site', s.name, 'account', a.code, 'name', a.name,
               'balance', prepay._notify_money(p_balance, s.currency, p_language),
               'amount', prepay._notify_money(p_amount, s.currency, p_language)) || p_extra
      FROM prepay.site s JOIN prepay.account a ON a.site_id = s.site_id
     WHERE s.site_id = p_site_id AND a.account_id = p_account_id);
END $$;

CREATE OR REPLACE FUNCTION prepay._delivery_request(p_site_id integer, p_notification_id bigint, p_channel text)
RETURNS TABLE (idempotency_key text, created_epoch numeric, url text, method text, headers text,
               body text, secret text, username text, mail_from text, mail_to text, timeout_s integer,
               ca_certificate text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT k.key, pg_catalog.date_part('epoch', n.created_at)::numeric,
           CASE c.channel WHEN 'sms' THEN prepay._sms_fill(c.url, n.phone, n.message, k.key, x.secret) ELSE c.url END,
           CASE c.channel WHEN 'email' THEN c.smtp_tls WHEN 'webhook' THEN 'POST' ELSE c.method END,
           CASE c.channel WHEN 'webhook' THEN pg_catalog.array_to_string(ARRAY['Content-Type: application/json'] || c.headers, E'\n')
                          WHEN 'sms' THEN pg_catalog.array_to_string(ARRAY(SELECT prepay._sms_fill(h, n.phone, n.message, k.key, x.secret)
                                                                               FROM pg_catalog.unnest(c.headers) AS h), E'\n')
                          ELSE '' END,
           CASE c.channel
               WHEN 'webhook' THEN pg_catalog.json_build_object(
                   'notification_id', n.notification_id, 'idempotency_key', k.key,
                   'site_id', n.site_id, 'site', s.name, 'account_id', n.account_id, 'account', a.code,
                   'meters', (SELECT coalesce(pg_catalog.json_agg(m.code ORDER BY m.meter_id), '[]')
                                FROM prepay.meter m WHERE m.site_id = n.site_id AND m.account_id = n.account_id),
                   'kind', n.kind, 'level', n.alarm_level, 'balance', n.balance, 'currency', s.currency,
                   'message', n.message, 'created_at', n.created_at, 'bill_id', n.bill_id)::text
               WHEN 'sms' THEN prepay._sms_fill(c.body, n.phone, n.message, k.key, x.secret)
               ELSE prepay._mail_message(c.mail_from, n.email,
                        (prepay._notify_text(n.site_id, prepay._notify_template_of(n.kind, n.alarm_level),
                                            prepay._notify_language(n.site_id, n.account_id), '{}')).subject,
                        n.message, k.key) END,
           CASE c.channel WHEN 'sms' THEN NULL ELSE x.secret END,
           c.smtp_user, c.mail_from, CASE c.channel WHEN 'email' THEN n.email END,
           greatest(1, (pg_catalog.date_part('epoch', c.lease) / 2)::integer), c.ca_certificate
      FROM prepay.notification n
      JOIN prepay.site s ON s.site_id = n.site_id
      JOIN prepay.account a ON a.site_id = n.site_id AND a.account_id = n.account_id
      JOIN prepay.notify_channel c ON c.site_id = n.site_id AND c.channel = p_channel
      LEFT JOIN prepay.notify_secret x ON x.site_id = c.site_id AND x.channel = c.channel
     CROSS JOIN LATERAL (SELECT pg_catalog.format('prepay-%s-%s-%s', n.site_id, n.notification_id, p_channel) AS key) k
     WHERE n.site_id = p_site_id AND n.notification_id = p_notification_id;
END $$;

CREATE OR REPLACE FUNCTION prepay.energy_from_ledger(p_site_id integer, p_from date, p_to date)
RETURNS TABLE (site_id integer, meter_id bigint, day date, account_id bigint, period text, tier integer,
               energy numeric, cost numeric, charged numeric, charges bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
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
     GROUP BY l.site_id, l.meter_id, x.day, l.account_id, x.period, x.tier;
END $$;

CREATE OR REPLACE FUNCTION prepay.loss_jumps(p_site_id integer, p_min_points numeric DEFAULT 5)
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

CREATE OR REPLACE FUNCTION prepay.suspicious_consumption_at(p_site_id integer, p_at timestamptz, p_days integer DEFAULT 7,
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

CREATE OR REPLACE FUNCTION prepay._charged_exact(p_site_id integer, p_account_id bigint, p_entry prepay.ledger)
RETURNS numeric LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT p_entry.exact_charge + coalesce(sum((x->>'exact_delta')::numeric), 0)
      FROM prepay.ledger a, pg_catalog.json_array_elements(a.pieces->'rerate') AS x
     WHERE a.site_id = p_site_id AND a.account_id = p_account_id AND a.kind = 'adjustment'
       AND (x->>'entry_id')::bigint = p_entry.entry_id);
END $$;

CREATE OR REPLACE FUNCTION prepay.max_demand(p_site_id integer, p_account_id bigint, p_from timestamptz, p_to timestamptz)
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

CREATE OR REPLACE FUNCTION prepay._basic_accrued(p_site_id integer, p_account_id bigint, p_month date)
RETURNS numeric LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT coalesce(-sum(l.amount), 0) FROM prepay.ledger l
     WHERE l.site_id = p_site_id AND l.account_id = p_account_id AND l.kind = 'basic_charge'
       AND l.channel = 'basic_charge' AND l.external_ref LIKE p_account_id || '/' || to_char(p_month, 'YYYY-MM') || '-%');
END $$;

CREATE OR REPLACE FUNCTION prepay.run_due_batches(p_max_items bigint DEFAULT NULL)
RETURNS TABLE (site_id integer, batch_id bigint, client_ref text, action prepay.batch_action,
               state prepay.batch_state, items_run bigint, pending bigint, done bigint, failed bigint,
               skipped bigint, last_error text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b prepay.batch;
    seen bigint[] := '{}';
    budget bigint := p_max_items;
    ran bigint;
    due_sites integer[];
    due_batches bigint[];
BEGIN
    IF p_max_items IS NOT NULL AND p_max_items < 1 THEN
        PERFORM prepay._raise('22023', 'p_max_items must be positive',
            pg_catalog.format('The value given was %s.', p_max_items), 'Pass NULL to run every due item.');
    END IF;
    LOOP
        EXIT WHEN budget = 0;
        -- claim the oldest due batch; one another runner holds is skipped (it
        -- runs there, once).  The due batches are listed first and claimed one
        -- by one, each by its site: on Citus a FOR UPDATE must name one shard
        SELECT pg_catalog.array_agg(d.site_id ORDER BY d.run_at, d.site_id, d.batch_id),
               pg_catalog.array_agg(d.batch_id ORDER BY d.run_at, d.site_id, d.batch_id)
          INTO due_sites, due_batches
          FROM prepay.batch d
         WHERE d.state IN ('scheduled', 'running') AND d.run_at <= pg_catalog.now()
           AND NOT (d.batch_id = ANY (seen));
        b := NULL;
        FOR i IN 1 .. coalesce(cardinality(due_batches), 0) LOOP
            SELECT * INTO b FROM prepay.batch d
             WHERE d.site_id = due_sites[i] AND d.batch_id = due_batches[i]
               AND d.state IN ('scheduled', 'running') AND d.run_at <= pg_catalog.now()
               FOR UPDATE SKIP LOCKED;
            EXIT WHEN FOUND;
        END LOOP;
        EXIT WHEN b.batch_id IS NULL;
        seen := seen || b.batch_id;
        CONTINUE WHEN NOT prepay._batch_lock_site(b, cardinality(seen) = 1);
        ran := prepay._batch_run_safely(b, budget);
        budget := budget - ran;
        RETURN QUERY
        SELECT s.site_id, s.batch_id, s.client_ref, s.action, s.state, ran, s.pending, s.done, s.failed,
               s.skipped, s.last_error
          FROM prepay.batch_summary s WHERE s.site_id = b.site_id AND s.batch_id = b.batch_id;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION prepay.create_batch(p_site_id integer, p_client_ref text, p_action prepay.batch_action,
                                    p_target prepay.batch_target, p_targets jsonb,
                                    p_params jsonb DEFAULT '{}', p_run_at timestamptz DEFAULT NULL,
                                    p_note text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.batch;
    id bigint;
    elements jsonb[];
    target_ids bigint[] := '{}';
BEGIN
    -- what the batch will do decides who may create it: the runner (often
    -- pg_cron as a superuser) carries it out later on the creator's word
    PERFORM prepay._authorize(p_site_id, CASE WHEN p_action = 'recharge' THEN 'money' ELSE 'manage' END);
    PERFORM prepay._check_text(p_client_ref, 'batch reference');
    IF p_action IS NULL OR p_target IS NULL THEN
        PERFORM prepay._raise('22023', 'a batch needs an action and a target', NULL,
            'Pass an action (set_tariff, set_thresholds, set_protect, set_relay, recharge) and a target (account, meter).');
    END IF;
    IF NOT pg_catalog.isfinite(p_run_at) THEN
        PERFORM prepay._raise('22023', 'run_at must be a finite time',
            pg_catalog.format('The time given was %s.', p_run_at),
            'Omit it (or pass now()) to run the batch at the next run.');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM prepay.site WHERE site_id = p_site_id) THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id),
                              'prepay.site lists the sites.');
    END IF;
    PERFORM prepay._batch_check_params(p_site_id, p_action, p_target, p_params);
    IF p_targets IS NULL OR jsonb_typeof(p_targets) NOT IN ('array', 'object')
       OR jsonb_typeof(p_targets) = 'array' AND jsonb_array_length(p_targets) = 0 THEN
        PERFORM prepay._raise('22023', 'batch targets must be a non-empty array or a selector object',
            pg_catalog.format('The targets given were %s.', coalesce(p_targets::text, 'NULL')),
            'Pass ids or codes ([3, 4, "A-101"]), objects ([{"id": 3, "amount": 20}]) or a selector ({"building": "A", "floor": "3"}).');
    END IF;
    IF jsonb_typeof(p_targets) = 'object' THEN
        PERFORM prepay._batch_check_selector(p_targets);
    END IF;

    SELECT * INTO b FROM prepay.batch x WHERE x.site_id = p_site_id AND x.client_ref = p_client_ref;
    IF NOT FOUND THEN
        INSERT INTO prepay.batch (site_id, client_ref, action, target, targets, params, run_at, note)
        VALUES (p_site_id, p_client_ref, p_action, p_target, p_targets, p_params,
                coalesce(p_run_at, pg_catalog.now()), p_note)
        ON CONFLICT (site_id, client_ref) DO NOTHING
        RETURNING batch_id INTO id;
        IF id IS NULL THEN
            -- a session creating it too has just committed
            SELECT * INTO b FROM prepay.batch x WHERE x.site_id = p_site_id AND x.client_ref = p_client_ref;
        END IF;
    END IF;
    IF id IS NULL THEN
        -- created before: the same batch, or a misuse of the reference
        IF b.action <> p_action OR b.target <> p_target OR b.targets <> p_targets OR b.params <> p_params
           OR b.run_at <> coalesce(p_run_at, b.run_at) THEN
            PERFORM prepay._raise('PY302', 'batch reference already used for a different batch',
                pg_catalog.format('Reference %L is batch %s: %s of %s targets %s with %s.', p_client_ref, b.batch_id,
                                  b.action, b.target, pg_catalog.left(b.targets::text, 60)
                                  || CASE WHEN pg_catalog.length(b.targets::text) > 60 THEN '...' ELSE '' END, b.params),
                'A reference identifies one batch; use a new reference for a new batch.');
        END IF;
        RETURN b.batch_id;
    END IF;

    -- the items are resolved first, then inserted in one statement (on Citus
    -- an INSERT into a site's shard cannot read the site's tables row by row)
    IF jsonb_typeof(p_targets) = 'array' THEN
        SELECT pg_catalog.array_agg(e.element ORDER BY e.ord) INTO elements
          FROM jsonb_array_elements(p_targets) WITH ORDINALITY AS e(element, ord);
        FOR i IN 1 .. coalesce(cardinality(elements), 0) LOOP
            target_ids := target_ids || prepay._batch_resolve(p_site_id, p_target, elements[i]);
        END LOOP;
        INSERT INTO prepay.batch_item (site_id, batch_id, item_no, account_id, meter_id, input)
        SELECT p_site_id, id, e.ord,
               CASE WHEN p_target = 'account' THEN e.target_id END,
               CASE WHEN p_target = 'meter' THEN e.target_id END,
               e.element
          FROM ROWS FROM (pg_catalog.unnest(elements), pg_catalog.unnest(target_ids)) WITH ORDINALITY AS e(element, target_id, ord);
    ELSE
        SELECT pg_catalog.array_agg(t.target_id ORDER BY t.target_id) INTO target_ids
          FROM prepay._batch_select(p_site_id, p_target, p_targets) AS t(target_id);
        INSERT INTO prepay.batch_item (site_id, batch_id, item_no, account_id, meter_id)
        SELECT p_site_id, id, t.ord,
               CASE WHEN p_target = 'account' THEN t.target_id END,
               CASE WHEN p_target = 'meter' THEN t.target_id END
          FROM pg_catalog.unnest(target_ids) WITH ORDINALITY AS t(target_id, ord);
    END IF;
    RETURN id;
END $$;

CREATE OR REPLACE FUNCTION prepay._batch_run(b prepay.batch, p_max_items bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    it prepay.batch_item;
    r record;
    n bigint := 0;
    e_state text;
    e_message text;
    e_detail text;
    e_hint text;
    t timestamptz;   -- the time, read before an UPDATE (Citus refuses volatile calls in one)
BEGIN
    t := pg_catalog.clock_timestamp();
    UPDATE prepay.batch x SET state = 'running', started_at = t, run_by = SESSION_USER
     WHERE x.site_id = b.site_id AND x.batch_id = b.batch_id AND x.state = 'scheduled';
    FOR it IN SELECT * FROM prepay.batch_item x
               WHERE x.site_id = b.site_id AND x.batch_id = b.batch_id AND x.state = 'pending'
               ORDER BY x.item_no
               LIMIT p_max_items LOOP
        BEGIN
            r := prepay._batch_run_item(b, it);
            t := pg_catalog.clock_timestamp();
            UPDATE prepay.batch_item x
               SET state = r.state, result = r.result, message = r.message,
                   finished_at = t
             WHERE x.site_id = it.site_id AND x.batch_id = it.batch_id AND x.item_no = it.item_no;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
                                    e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
            -- a deadlock, a serialization failure or a lack of resources is not the
            -- item's fault: give up this batch's run (prepay._batch_run_safely)
            IF pg_catalog.left(e_state, 2) IN ('40', '53', '54', '55', '57', '58', 'XX') THEN
                RAISE;
            END IF;
            t := pg_catalog.clock_timestamp();
            UPDATE prepay.batch_item x
               SET state = 'failed', sqlstate = e_state, message = e_message,
                   detail = nullif(e_detail, ''), hint = nullif(e_hint, ''),
                   finished_at = t
             WHERE x.site_id = it.site_id AND x.batch_id = it.batch_id AND x.item_no = it.item_no;
        END;
        n := n + 1;
    END LOOP;
    t := pg_catalog.clock_timestamp();
    UPDATE prepay.batch x SET state = 'done', finished_at = t, last_error = NULL
     WHERE x.site_id = b.site_id AND x.batch_id = b.batch_id
       AND NOT EXISTS (SELECT 1 FROM prepay.batch_item i
                        WHERE i.site_id = x.site_id AND i.batch_id = x.batch_id AND i.state = 'pending');
    RETURN n;
END $$;

CREATE OR REPLACE FUNCTION prepay._batch_run_safely(b prepay.batch, p_max_items bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_state text;
    e_message text;
    t timestamptz;
BEGIN
    RETURN prepay._batch_run(b, p_max_items);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT;
    t := pg_catalog.clock_timestamp();
    UPDATE prepay.batch x SET last_error = pg_catalog.format('%s: %s (run at %s)', e_state, e_message, t)
     WHERE x.site_id = b.site_id AND x.batch_id = b.batch_id;
    RETURN 0;
END $$;

CREATE OR REPLACE FUNCTION prepay.cancel_batch(p_site_id integer, p_batch_id bigint, p_reason text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t timestamptz;
    b prepay.batch;
    n bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._check_text(p_reason, 'reason');
    SELECT * INTO b FROM prepay.batch x WHERE x.site_id = p_site_id AND x.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY301', 'unknown batch',
            pg_catalog.format('Site %s has no batch %s.', p_site_id, p_batch_id), 'prepay.batch_summary lists the batches.');
    END IF;
    IF b.state IN ('done', 'cancelled') THEN
        PERFORM prepay._raise('PY303', pg_catalog.format('batch is already %s', b.state),
            pg_catalog.format('Batch %s finished at %s.', p_batch_id, b.finished_at),
            'Undo what it did with a new batch (or prepay.reverse for payments).');
    END IF;
    t := pg_catalog.clock_timestamp();
    UPDATE prepay.batch_item x SET state = 'skipped', message = 'batch cancelled: ' || p_reason,
           finished_at = t
     WHERE x.site_id = p_site_id AND x.batch_id = p_batch_id AND x.state = 'pending';
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE prepay.batch x SET state = 'cancelled', finished_at = t,
           cancelled_by = SESSION_USER, cancel_reason = p_reason
     WHERE x.site_id = p_site_id AND x.batch_id = p_batch_id;
    RETURN n;
END $$;

CREATE OR REPLACE FUNCTION prepay.send_cut_reminders(p_site_id integer DEFAULT NULL, p_at timestamptz DEFAULT pg_catalog.now())
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

CREATE OR REPLACE FUNCTION prepay.draft_bill(p_site_id integer, p_account_id bigint, p_period_start date, p_period_end date)
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
                             JOIN prepay.ledger l ON l.site_id = be.site_id AND l.entry_id = be.entry_id
                            WHERE be.site_id = p_site_id AND be.bill_id = b.bill_id AND l.kind = 'consumption'), 0),
        charges = coalesce((SELECT sum(amount) FROM prepay.bill_line WHERE site_id = p_site_id AND bill_id = b.bill_id), 0),
        amount_due = coalesce((SELECT sum(amount) FROM prepay.bill_line
                                WHERE site_id = p_site_id AND bill_id = b.bill_id AND payable), 0)
     WHERE site_id = p_site_id AND bill_id = b.bill_id
    RETURNING * INTO b;
    RETURN b;
END $$;

CREATE OR REPLACE FUNCTION prepay.draft_bills(p_site_id integer, p_period_start date, p_period_end date DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION prepay.apportion(p_site_id integer, p_rule_id bigint, p_period_start date)
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

CREATE OR REPLACE FUNCTION prepay._prepare_distribution() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p record;
    s record;
    f record;
    fk name;
    group_id bigint := 0;
BEGIN
    -- policies without sub-SELECTs
    FOR p IN
        SELECT c.oid::regclass AS rel, pol.polname, pol.polcmd, pg_catalog.pg_get_expr(pol.polqual, pol.polrelid) AS qual
          FROM pg_catalog.pg_policy pol JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid
         WHERE c.relnamespace = 'prepay'::pg_catalog.regnamespace
           AND pg_catalog.pg_get_expr(pol.polqual, pol.polrelid) ~ 'SELECT'
    LOOP
        IF p.polname = 'site_staff' THEN
            EXECUTE pg_catalog.format('ALTER POLICY site_staff ON %s USING (site_id = ANY (prepay._my_sites())) '
                                      'WITH CHECK (site_id = ANY (prepay._my_sites()))', p.rel);
        ELSIF p.polname = 'account_tenant' THEN
            EXECUTE pg_catalog.format('ALTER POLICY account_tenant ON %s USING (prepay._is_my_account(site_id, account_id))', p.rel);
        ELSIF p.polname = 'reading_tenant' THEN
            ALTER POLICY reading_tenant ON prepay.reading USING (prepay._tenant_sees_reading(site_id, meter_id, read_at));
        ELSIF p.polname = 'bill_line_tenant' THEN
            ALTER POLICY bill_line_tenant ON prepay.bill_line USING (prepay._tenant_sees_bill(site_id, bill_id));
        ELSIF p.polname = 'agent_gateway' THEN
            ALTER POLICY agent_gateway ON prepay.gateway USING (prepay._is_my_agent(site_id, agent_id));
        ELSIF p.polname = 'agent_meter' THEN
            ALTER POLICY agent_meter ON prepay.meter USING (prepay._agent_sees_gateway(site_id, gateway_id));
        ELSIF p.polname = 'agent_site' THEN
            EXECUTE pg_catalog.format('ALTER POLICY agent_site ON %s USING (site_id = ANY (prepay._my_agent_sites()))', p.rel);
        END IF;
    END LOOP;
    FOR p IN
        SELECT c.oid::regclass AS rel, pol.polname
          FROM pg_catalog.pg_policy pol JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid
         WHERE c.relnamespace = 'prepay'::pg_catalog.regnamespace AND pol.polname = 'agent_insert'
           AND pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid) ~ 'SELECT'
    LOOP
        ALTER POLICY agent_insert ON prepay.reading WITH CHECK (site_id = ANY (prepay._my_agent_sites()));
    END LOOP;

    -- the mapping tables become reference tables (a copy on every node, read
    -- where a policy asks who the caller is): no foreign keys to the sites'
    -- and accounts' shards
    FOR p IN
        SELECT con.conrelid::regclass AS rel, con.conname AS polname, NULL::"char" AS polcmd, NULL::text AS qual
          FROM pg_catalog.pg_constraint con
         WHERE con.contype = 'f' AND con.conrelid = ANY (prepay._mapping_tables())
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', p.rel, p.polname);
    END LOOP;
    -- ... and no audit trigger: it would fire on each node's copy (docs/SCALE-OUT.md)
    FOR p IN
        SELECT tg.tgrelid::regclass AS rel, tg.tgname AS polname, NULL::"char" AS polcmd, NULL::text AS qual
          FROM pg_catalog.pg_trigger tg
         WHERE tg.tgname = 'audit' AND tg.tgrelid = ANY (prepay._mapping_tables())
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', p.polname, p.rel);
    END LOOP;

    -- site names: unique per coordinator no more (site_id is the identity)
    ALTER TABLE prepay.site DROP CONSTRAINT IF EXISTS site_name_key;

    -- profile_register: no ON UPDATE CASCADE
    SELECT con.conname INTO fk FROM pg_catalog.pg_constraint con
     WHERE con.conrelid = 'prepay.profile_register'::pg_catalog.regclass AND con.contype = 'f' AND con.confupdtype = 'c';
    IF fk IS NOT NULL THEN
        EXECUTE pg_catalog.format('ALTER TABLE prepay.profile_register DROP CONSTRAINT %I', fk);
        ALTER TABLE prepay.profile_register ADD FOREIGN KEY (site_id, profile)
            REFERENCES prepay.device_profile ON DELETE CASCADE;
    END IF;

    -- functions that read the site's own rows (or the caller's mappings) from
    -- inside a statement Citus runs on a shard: Citus refuses such nested
    -- statements unless told they are safe, which they are (the rows of one
    -- site, whose shards are on the same worker, or the small mapping
    -- tables).  The second line: the helpers that reports, bills and the
    -- periodic run call per row of a site's table (a site's local day, an
    -- account's days open, a charge's service time, ...)
    FOR f IN
        SELECT pr.oid::regprocedure AS sig FROM pg_catalog.pg_proc pr
         WHERE pr.pronamespace = 'prepay'::pg_catalog.regnamespace
           AND pr.proname IN ('_rate', '_rate_many', '_my_sites', '_my_accounts', '_my_agents', '_reading_sites',
                              '_my_roles', '_mapping_role', '_authenticated_claims', '_claimed_accounts',
                              '_local_day', '_local_start', '_days_open', '_is_charge', '_service_at', '_rule_name',
                              'allowance_left', 'meter_register_at', 'account_consumption', 'max_demand',
                              '_charged_exact', '_basic_accrued', '_notify_language', '_notify_values',
                              '_command_moot', '_command_impossible', 'explain_charge')
    LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET citus.allow_nested_distributed_execution = on', f.sig);
    END LOOP;

    -- each node's own id range
    group_id := prepay._citus_group();
    FOR s IN
        SELECT c.oid::regclass AS seq, sq.seqtypid = 'pg_catalog.int4'::pg_catalog.regtype AS small
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_sequence sq ON sq.seqrelid = c.oid
         WHERE c.relnamespace = 'prepay'::pg_catalog.regnamespace AND c.relkind = 'S'
    LOOP
        CONTINUE WHEN s.small OR group_id = 0;   -- site ids are drawn on the coordinator only
        IF pg_catalog.nextval(s.seq) < (group_id << 48) THEN
            PERFORM pg_catalog.setval(s.seq, group_id << 48);
        END IF;
    END LOOP;
END $$;

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
  -- one call per bill, not five (a function in FROM is called once per
  -- row; Citus refuses a sub-SELECT without FROM here); the function, not
  -- a join, reads prepay.site, which a tenant may not read
  CROSS JOIN LATERAL prepay._local_day(b.site_id, pg_catalog.now()) AS s(today)
 WHERE b.state = 'issued';
