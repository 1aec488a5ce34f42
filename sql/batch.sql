/*-------------------------------------------------------------------------
 * sql/batch.sql
 *     Batch operations: set a tariff, alarm thresholds, keep-power or the
 *     relay state, or recharge, for many accounts or meters at once, now
 *     or at a scheduled time, with a result per item.  Also the two single-
 *     target setters the batches call (set_tariff, set_thresholds).
 *     Appended after billing.sql into prepay--<version>.sql.
 *
 * Vocabulary
 *     batch    one order for many targets: an action, its parameters, its
 *              targets (a list of ids or codes, or a selector resolved when
 *              the batch is created), when to run it, who created it and
 *              its state.  Created once per (site, client_ref).
 *     item     one target of a batch, with its own result: done, failed
 *              (SQLSTATE, message, detail, hint) or skipped, and when.
 *     runner   prepay.run_due_batches(): runs every due batch; pg_cron (or
 *              anyone) calls it every minute.  prepay.run_batch() runs one.
 *
 * Life of a batch
 *     scheduled --runner, run_at reached--> running --no item pending--> done
 *     scheduled / running --cancel_batch--> cancelled (pending items skipped)
 *     A batch is "running" only between two runs limited by p_max_items.
 *
 * Exactly once.  A runner locks the batch rows it runs (FOR UPDATE SKIP
 * LOCKED: a second runner skips them) and writes each item's result in the
 * same transaction as the item's effect, each item in its own
 * subtransaction.  A run that does not commit leaves no effect and no
 * result: the items are still pending for the next run.
 *
 * Locking.  A runner claims one batch at a time (a batch row: nothing else
 * in prepay locks those) and then takes the core's locks in the core's
 * order (docs/ARCHITECTURE.md, "Locking protocol"): a set_tariff batch first
 * takes its site's rating lock, then each item takes its account, meter and
 * command rows like the single functions do.  Once a run holds row locks of
 * earlier batches it only tries the rating lock of a later set_tariff
 * batch, and leaves that batch to a later run if a rating batch holds it:
 * no lock is ever awaited out of the protocol's order.  Call the runner at
 * the start of a transaction (pg_cron does).
 *
 * Errors raised here use SQLSTATEs PY3xx (docs/BATCH.md).
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- single-target setters
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._check_threshold(p_value numeric, p_what text)
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_value IS NULL THEN
        RETURN;
    END IF;
    IF p_value = 'NaN'::numeric OR p_value < 0 THEN
        PERFORM prepay._raise('22023', pg_catalog.format('%s must be a number at or above zero', p_what),
            pg_catalog.format('The value given was %s.', p_value),
            'Pass an amount in the site''s currency, at or above zero.');
    END IF;
    PERFORM prepay._check_cents(p_value, p_what);
END $$;
COMMENT ON FUNCTION prepay._check_threshold(numeric, text) IS
'Internal: refuse an alarm threshold or credit limit that is NaN, negative or has fractions of a cent (22023), or is absurdly large (22003).  NULL passes.';

CREATE FUNCTION prepay.set_thresholds(p_site_id integer, p_account_id bigint,
                                      p_low_balance numeric, p_pretrip numeric,
                                      p_credit_limit numeric DEFAULT NULL)
RETURNS smallint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    s prepay.site;
    new_level smallint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._check_threshold(p_low_balance, 'low-balance threshold');
    PERFORM prepay._check_threshold(p_pretrip, 'pre-trip threshold');
    PERFORM prepay._check_threshold(p_credit_limit, 'credit limit');
    a := prepay._lock_account(p_site_id, p_account_id);
    SELECT * INTO s FROM prepay.site WHERE site_id = p_site_id;
    IF coalesce(p_pretrip, s.pretrip_threshold) > coalesce(p_low_balance, s.low_balance_threshold) THEN
        PERFORM prepay._raise('22023', 'pre-trip threshold is above the low-balance threshold',
            pg_catalog.format('Pre-trip %s, low balance %s (NULL takes the site''s %s and %s).',
                              coalesce(p_pretrip::text, 'NULL'), coalesce(p_low_balance::text, 'NULL'),
                              s.pretrip_threshold, s.low_balance_threshold),
            'The ladder warns at the low-balance threshold first, then at the pre-trip one: pre-trip <= low balance.');
    END IF;
    UPDATE prepay.account
       SET low_balance_threshold = p_low_balance, pretrip_threshold = p_pretrip,
           credit_limit = coalesce(p_credit_limit, credit_limit)
     WHERE site_id = p_site_id AND account_id = p_account_id
    RETURNING * INTO a;
    IF a.mode <> 'prepaid' THEN
        RETURN a.alarm_level;
    END IF;
    -- the ladder, as after a wallet movement (prepay._post_entry)
    new_level := prepay.alarm_level(a.balance, coalesce(a.low_balance_threshold, s.low_balance_threshold),
                                    coalesce(a.pretrip_threshold, s.pretrip_threshold), a.credit_limit);
    IF new_level <> a.alarm_level THEN
        PERFORM prepay._alarm_level_changed(p_site_id, p_account_id, a.alarm_level, new_level);
    END IF;
    RETURN new_level;
END $$;
COMMENT ON FUNCTION prepay.set_thresholds(integer, bigint, numeric, numeric, numeric) IS
'Set an account''s alarm thresholds: low balance and pre-trip (NULL: the site''s default) and, when given, the credit limit (NULL: unchanged), then run the alarm ladder at once: a level change notifies, and entering or leaving arrears (a credit limit change) trips or restores supply.  Returns the new alarm level.  22023 negative, fractional-cent or NaN values, or pre-trip above low balance; PY001, PY002.';

CREATE FUNCTION prepay.set_tariff(p_site_id integer, p_tariff_id bigint,
                                  p_account_id bigint DEFAULT NULL, p_meter_id bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    m prepay.meter;
    t prepay.tariff;
    mismatch bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF (p_meter_id IS NULL) = (p_account_id IS NULL) THEN
        PERFORM prepay._raise('22023', 'set_tariff needs exactly one of a meter or an account', NULL,
            'Call prepay.set_tariff(site, tariff, p_account_id => 3) or prepay.set_tariff(site, tariff, p_meter_id => 7).');
    END IF;
    IF p_tariff_id IS NULL AND p_account_id IS NOT NULL THEN
        PERFORM prepay._raise('22023', 'an account needs a tariff', NULL,
            'Pass a tariff id; only a meter''s own tariff can be cleared (NULL: the meter uses its account''s).');
    END IF;
    IF p_tariff_id IS NOT NULL THEN
        SELECT * INTO t FROM prepay.tariff WHERE site_id = p_site_id AND tariff_id = p_tariff_id;
        IF NOT FOUND THEN
            PERFORM prepay._raise('PY009', 'unknown tariff',
                pg_catalog.format('Site %s has no tariff %s.', p_site_id, p_tariff_id), 'prepay.tariff lists the tariffs.');
        END IF;
    END IF;
    -- what the rater reads changes: the site's rating lock first (locking protocol)
    PERFORM prepay._lock_site_rating(p_site_id);
    IF p_account_id IS NOT NULL THEN
        a := prepay._lock_account(p_site_id, p_account_id);
        SELECT min(x.meter_id) INTO mismatch FROM prepay.meter x
         WHERE x.site_id = p_site_id AND x.account_id = p_account_id AND x.active AND x.tariff_id IS NULL
           AND (x.kind = 'water') <> (t.unit = 'm3');
        IF mismatch IS NOT NULL THEN
            PERFORM prepay._raise('22023', 'tariff unit does not fit the meter',
                pg_catalog.format('Tariff %s is priced per %s; meter %s of account %s, which uses the account''s tariff, is a %s meter.',
                                  p_tariff_id, t.unit, mismatch, p_account_id,
                                  (SELECT x.kind FROM prepay.meter x WHERE x.site_id = p_site_id AND x.meter_id = mismatch)),
                'Give that meter its own tariff first (prepay.set_tariff with p_meter_id).');
        END IF;
        UPDATE prepay.account SET tariff_id = p_tariff_id WHERE site_id = p_site_id AND account_id = p_account_id;
        RETURN a.tariff_id;
    END IF;
    m := prepay._lock_meter(p_site_id, p_meter_id);
    IF NOT m.active THEN
        PERFORM prepay._raise('PY010', 'meter was removed',
            pg_catalog.format('Meter %s was removed at %s.', p_meter_id, m.removed_at), 'Set the tariff of the meter that replaced it.');
    END IF;
    IF p_tariff_id IS NOT NULL AND (m.kind = 'water') <> (t.unit = 'm3') THEN
        PERFORM prepay._raise('22023', 'tariff unit does not fit the meter',
            pg_catalog.format('Tariff %s is priced per %s; meter %s is a %s meter.', p_tariff_id, t.unit, p_meter_id, m.kind),
            'Water meters take tariffs per m3; electricity and heat meters take tariffs per kWh.');
    END IF;
    UPDATE prepay.meter SET tariff_id = p_tariff_id WHERE site_id = p_site_id AND meter_id = p_meter_id;
    RETURN m.tariff_id;
END $$;
COMMENT ON FUNCTION prepay.set_tariff(integer, bigint, bigint, bigint) IS
'Put an account (p_account_id) or a meter (p_meter_id; NULL tariff: use the account''s) on a tariff and return the previous tariff id.  It prices every reading rated after it commits, including the whole interval since the meter''s last rated reading; it waits for a rating batch of the site in progress (which keeps the old tariff).  Past charges stay (prepay.rerate settles them).  22023 neither or both targets, NULL tariff for an account, unit that does not fit a meter; PY009, PY001, PY002, PY003, PY010.';

-- ---------------------------------------------------------------------
-- types, sequence, tables
-- ---------------------------------------------------------------------

CREATE TYPE prepay.batch_action AS ENUM ('set_tariff', 'set_thresholds', 'set_protect', 'set_relay', 'recharge');
COMMENT ON TYPE prepay.batch_action IS 'What a batch does to each target: set_tariff (accounts or meters), set_thresholds (accounts), set_protect (accounts or meters), set_relay (trip or close meters, or all meters of accounts), recharge (accounts).  See docs/BATCH.md.';

CREATE TYPE prepay.batch_target AS ENUM ('account', 'meter');
COMMENT ON TYPE prepay.batch_target IS 'What the targets of a batch are: accounts or meters.';

CREATE TYPE prepay.batch_state AS ENUM ('scheduled', 'running', 'done', 'cancelled');
COMMENT ON TYPE prepay.batch_state IS 'Life of a batch: scheduled until a run starts it, running while items are pending after a run limited by p_max_items, done when every item has a result, cancelled before that (pending items skipped).';

CREATE TYPE prepay.batch_item_state AS ENUM ('pending', 'done', 'failed', 'skipped');
COMMENT ON TYPE prepay.batch_item_state IS 'Result of one item: pending (not run yet), done, failed (with SQLSTATE and message; nothing of the item happened) or skipped (nothing to do: duplicate target, payment already posted, account without meters, batch cancelled).';

CREATE SEQUENCE prepay.batch_id_seq;
COMMENT ON SEQUENCE prepay.batch_id_seq IS 'Source of batch ids.';

CREATE TABLE prepay.batch (
    site_id       integer NOT NULL REFERENCES prepay.site,
    batch_id      bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.batch_id_seq'),
    client_ref    text NOT NULL,
    action        prepay.batch_action NOT NULL,
    target        prepay.batch_target NOT NULL,
    targets       jsonb NOT NULL,
    params        jsonb NOT NULL DEFAULT '{}',
    run_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    state         prepay.batch_state NOT NULL DEFAULT 'scheduled',
    note          text,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by    text NOT NULL DEFAULT SESSION_USER,
    started_at    timestamptz,
    run_by        text,
    finished_at   timestamptz,
    cancelled_by  text,
    cancel_reason text,
    last_error    text,
    PRIMARY KEY (site_id, batch_id),
    UNIQUE (site_id, client_ref),
    CHECK (jsonb_typeof(targets) IN ('array', 'object')),
    CHECK (jsonb_typeof(params) = 'object'),
    CHECK ((state IN ('done', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK ((state = 'cancelled') = (cancelled_by IS NOT NULL))
);
CREATE INDEX batch_due ON prepay.batch (run_at) WHERE state IN ('scheduled', 'running');
COMMENT ON INDEX prepay.batch_due IS 'What the runner looks for: batches not finished, by run_at (across sites, so not keyed by site).';
COMMENT ON TABLE prepay.batch IS 'A batch operation: one action with its parameters for many accounts or meters, run once at or after run_at.  Created by prepay.create_batch (idempotent per client_ref), run by prepay.run_due_batches or prepay.run_batch.  Results are per item (prepay.batch_item; views prepay.batch_summary and prepay.batch_result).';
COMMENT ON COLUMN prepay.batch.site_id IS 'Site of every target.';
COMMENT ON COLUMN prepay.batch.batch_id IS 'Batch id.';
COMMENT ON COLUMN prepay.batch.client_ref IS 'The creator''s reference: creating again with it returns this batch (idempotent creation).';
COMMENT ON COLUMN prepay.batch.action IS 'set_tariff, set_thresholds, set_protect, set_relay or recharge.';
COMMENT ON COLUMN prepay.batch.target IS 'account or meter: what the targets are.';
COMMENT ON COLUMN prepay.batch.targets IS 'The targets as given: an array of ids, codes or objects ({"id": 3, "amount": 20, "external_ref": "R-1"}), or a selector object ({"building": "A", "floor": "3"}, {"tariff_id": 2}, {"all": true}).  The items were resolved from it at creation.';
COMMENT ON COLUMN prepay.batch.params IS 'The action''s parameters (docs/BATCH.md): {"tariff_id"}, {"low_balance", "pretrip", "credit_limit"}, {"on"}, {"action", "reason"}, {"channel", "amount"}.';
COMMENT ON COLUMN prepay.batch.run_at IS 'Not run before this time; the creation time for "now".';
COMMENT ON COLUMN prepay.batch.state IS 'scheduled, running, done or cancelled.';
COMMENT ON COLUMN prepay.batch.note IS 'Free text from the creator (why).';
COMMENT ON COLUMN prepay.batch.created_at IS 'When the batch was created.';
COMMENT ON COLUMN prepay.batch.created_by IS 'Database user who created it (session_user).';
COMMENT ON COLUMN prepay.batch.started_at IS 'When a run first started it.';
COMMENT ON COLUMN prepay.batch.run_by IS 'Database user of the run that started it (session_user; the pg_cron job''s user).';
COMMENT ON COLUMN prepay.batch.finished_at IS 'When the last item ran, or when it was cancelled.';
COMMENT ON COLUMN prepay.batch.cancelled_by IS 'Database user who cancelled it.';
COMMENT ON COLUMN prepay.batch.cancel_reason IS 'Why it was cancelled.';
COMMENT ON COLUMN prepay.batch.last_error IS 'Error that stopped its last run before commit (deadlock, lack of resources): nothing of that run stayed, the items are still pending and the next run retries them.';

CREATE TABLE prepay.batch_item (
    site_id     integer NOT NULL,
    batch_id    bigint NOT NULL,
    item_no     integer NOT NULL CHECK (item_no >= 1),
    account_id  bigint,
    meter_id    bigint,
    input       jsonb,
    state       prepay.batch_item_state NOT NULL DEFAULT 'pending',
    result      jsonb,
    sqlstate    text,
    message     text,
    detail      text,
    hint        text,
    finished_at timestamptz,
    PRIMARY KEY (site_id, batch_id, item_no),
    FOREIGN KEY (site_id, batch_id) REFERENCES prepay.batch,
    CHECK ((state = 'pending') = (finished_at IS NULL)),
    CHECK ((state = 'failed') = (sqlstate IS NOT NULL))
);
CREATE INDEX batch_item_pending ON prepay.batch_item (site_id, batch_id, item_no) WHERE state = 'pending';
COMMENT ON INDEX prepay.batch_item_pending IS 'Items a run still has to do.';
COMMENT ON TABLE prepay.batch_item IS 'One target of a batch and its result: done (with what it did in result), failed (SQLSTATE, message, detail, hint; the item changed nothing) or skipped (message says why), and when.  account_id and meter_id have no foreign key: an unknown id is an item that fails, not a batch that is refused.';
COMMENT ON COLUMN prepay.batch_item.site_id IS 'Site of the batch.';
COMMENT ON COLUMN prepay.batch_item.batch_id IS 'Batch the item belongs to.';
COMMENT ON COLUMN prepay.batch_item.item_no IS 'Position in the batch: list order for a list of targets, id order for a selector; items run in this order.';
COMMENT ON COLUMN prepay.batch_item.account_id IS 'Target account (target = account); NULL when the input named no account (the item fails).';
COMMENT ON COLUMN prepay.batch_item.meter_id IS 'Target meter (target = meter); NULL when the input named no meter (the item fails).';
COMMENT ON COLUMN prepay.batch_item.input IS 'The list element as given (id, code or object with amount and external_ref); NULL for a target found by a selector.';
COMMENT ON COLUMN prepay.batch_item.state IS 'pending, done, failed or skipped.';
COMMENT ON COLUMN prepay.batch_item.result IS 'What a done or skipped item did or found: ledger entry, command ids, previous tariff, alarm levels.';
COMMENT ON COLUMN prepay.batch_item.sqlstate IS 'SQLSTATE of a failed item (docs/API.md, docs/BATCH.md).';
COMMENT ON COLUMN prepay.batch_item.message IS 'Error message of a failed item, or why it was skipped.';
COMMENT ON COLUMN prepay.batch_item.detail IS 'Error detail of a failed item.';
COMMENT ON COLUMN prepay.batch_item.hint IS 'Error hint of a failed item.';
COMMENT ON COLUMN prepay.batch_item.finished_at IS 'When the item ran (clock time), or was skipped by a cancellation; NULL while pending.';

-- ---------------------------------------------------------------------
-- results
-- ---------------------------------------------------------------------

CREATE VIEW prepay.batch_summary AS
SELECT b.site_id, b.batch_id, b.client_ref, b.action, b.target, b.state, b.run_at,
       b.created_by, b.created_at, b.started_at, b.finished_at,
       count(i.item_no) AS items,
       count(i.item_no) FILTER (WHERE i.state = 'pending') AS pending,
       count(i.item_no) FILTER (WHERE i.state = 'done') AS done,
       count(i.item_no) FILTER (WHERE i.state = 'failed') AS failed,
       count(i.item_no) FILTER (WHERE i.state = 'skipped') AS skipped,
       b.last_error
  FROM prepay.batch b
  LEFT JOIN prepay.batch_item i ON i.site_id = b.site_id AND i.batch_id = b.batch_id
 GROUP BY b.site_id, b.batch_id;
COMMENT ON VIEW prepay.batch_summary IS 'One row per batch: its state and how many items are pending, done, failed and skipped.';
COMMENT ON COLUMN prepay.batch_summary.site_id IS 'Site of the batch.';
COMMENT ON COLUMN prepay.batch_summary.batch_id IS 'Batch id.';
COMMENT ON COLUMN prepay.batch_summary.client_ref IS 'The creator''s reference.';
COMMENT ON COLUMN prepay.batch_summary.action IS 'What the batch does.';
COMMENT ON COLUMN prepay.batch_summary.target IS 'account or meter.';
COMMENT ON COLUMN prepay.batch_summary.state IS 'scheduled, running, done or cancelled.';
COMMENT ON COLUMN prepay.batch_summary.run_at IS 'Not run before this time.';
COMMENT ON COLUMN prepay.batch_summary.created_by IS 'Who created the batch.';
COMMENT ON COLUMN prepay.batch_summary.created_at IS 'When it was created.';
COMMENT ON COLUMN prepay.batch_summary.started_at IS 'When a run first started it.';
COMMENT ON COLUMN prepay.batch_summary.finished_at IS 'When it finished or was cancelled.';
COMMENT ON COLUMN prepay.batch_summary.items IS 'Number of items.';
COMMENT ON COLUMN prepay.batch_summary.pending IS 'Items not run yet.';
COMMENT ON COLUMN prepay.batch_summary.done IS 'Items done.';
COMMENT ON COLUMN prepay.batch_summary.failed IS 'Items failed (see prepay.batch_result).';
COMMENT ON COLUMN prepay.batch_summary.skipped IS 'Items skipped.';
COMMENT ON COLUMN prepay.batch_summary.last_error IS 'Error that stopped the last run before commit, if any (retried).';

CREATE VIEW prepay.batch_result AS
SELECT i.site_id, i.batch_id, b.client_ref, b.action, i.item_no, i.account_id, i.meter_id, i.state,
       CASE i.state WHEN 'failed' THEN i.sqlstate || ': ' || i.message ELSE i.message END AS why,
       i.sqlstate, i.message, i.detail, i.hint, i.result, i.input, i.finished_at
  FROM prepay.batch_item i
  JOIN prepay.batch b ON b.site_id = i.site_id AND b.batch_id = i.batch_id;
COMMENT ON VIEW prepay.batch_result IS 'One row per item with its batch''s action and reference, and why it failed or was skipped ("why").';
COMMENT ON COLUMN prepay.batch_result.site_id IS 'Site of the batch.';
COMMENT ON COLUMN prepay.batch_result.batch_id IS 'Batch id.';
COMMENT ON COLUMN prepay.batch_result.client_ref IS 'The batch''s reference.';
COMMENT ON COLUMN prepay.batch_result.action IS 'What the batch does.';
COMMENT ON COLUMN prepay.batch_result.item_no IS 'Position of the item in its batch.';
COMMENT ON COLUMN prepay.batch_result.account_id IS 'Target account, if the batch targets accounts.';
COMMENT ON COLUMN prepay.batch_result.meter_id IS 'Target meter, if the batch targets meters.';
COMMENT ON COLUMN prepay.batch_result.state IS 'pending, done, failed or skipped.';
COMMENT ON COLUMN prepay.batch_result.why IS 'For a failed item "SQLSTATE: message"; for a skipped one, the reason.';
COMMENT ON COLUMN prepay.batch_result.sqlstate IS 'SQLSTATE of a failed item.';
COMMENT ON COLUMN prepay.batch_result.message IS 'Error message, or why the item was skipped.';
COMMENT ON COLUMN prepay.batch_result.detail IS 'Error detail.';
COMMENT ON COLUMN prepay.batch_result.hint IS 'Error hint.';
COMMENT ON COLUMN prepay.batch_result.result IS 'What the item did (ledger entry, commands, previous tariff, alarm levels).';
COMMENT ON COLUMN prepay.batch_result.input IS 'The list element as given.';
COMMENT ON COLUMN prepay.batch_result.finished_at IS 'When the item ran.';

-- ---------------------------------------------------------------------
-- creation
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._batch_check_keys(p_params jsonb, p_allowed text[], p_required text[])
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
BEGIN
    FOR k IN SELECT jsonb_object_keys(p_params) LOOP
        IF NOT k = ANY (p_allowed) THEN
            PERFORM prepay._raise('22023', pg_catalog.format('unknown batch parameter %L', k),
                pg_catalog.format('Parameters given: %s.', p_params),
                pg_catalog.format('This action takes %s.', pg_catalog.array_to_string(p_allowed, ', ')));
        END IF;
    END LOOP;
    FOREACH k IN ARRAY p_required LOOP
        IF NOT p_params ? k THEN
            PERFORM prepay._raise('22023', pg_catalog.format('batch parameter %L is missing', k),
                pg_catalog.format('Parameters given: %s.', p_params),
                pg_catalog.format('This action needs %s.', pg_catalog.array_to_string(p_required, ', ')));
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay._batch_check_keys(jsonb, text[], text[]) IS 'Internal: refuse (22023) a parameter object with a key not in p_allowed or without a key of p_required.';

CREATE FUNCTION prepay._batch_number(p_params jsonb, p_key text)
RETURNS numeric LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_params->p_key IS NULL OR jsonb_typeof(p_params->p_key) = 'null' THEN
        RETURN NULL;
    END IF;
    RETURN (p_params->>p_key)::numeric;
EXCEPTION WHEN invalid_text_representation THEN
    PERFORM prepay._raise('22023', pg_catalog.format('batch parameter %L is not a number', p_key),
        pg_catalog.format('The value given was %s.', p_params->p_key), 'Pass a JSON number, e.g. 20.00.');
END $$;
COMMENT ON FUNCTION prepay._batch_number(jsonb, text) IS 'Internal: a numeric batch parameter (JSON number or numeric string), NULL if absent or null; 22023 if not a number.';

CREATE FUNCTION prepay._batch_check_params(p_site_id integer, p_action prepay.batch_action,
                                           p_target prepay.batch_target, p_params jsonb)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s prepay.site;
BEGIN
    IF p_action IN ('set_thresholds', 'recharge') AND p_target <> 'account' THEN
        PERFORM prepay._raise('22023', pg_catalog.format('%s applies to accounts only', p_action),
            pg_catalog.format('The target given was %s.', p_target), 'Pass target ''account''.');
    END IF;
    IF p_params IS NULL OR jsonb_typeof(p_params) <> 'object' THEN
        PERFORM prepay._raise('22023', 'batch parameters must be a JSON object',
            pg_catalog.format('The parameters given were %s.', coalesce(p_params::text, 'NULL')),
            'See docs/BATCH.md for the parameters of each action.');
    END IF;
    CASE p_action
    WHEN 'set_tariff' THEN
        PERFORM prepay._batch_check_keys(p_params, '{tariff_id}', '{tariff_id}');
        IF jsonb_typeof(p_params->'tariff_id') = 'null' THEN
            IF p_target = 'account' THEN
                PERFORM prepay._raise('22023', 'an account needs a tariff', NULL,
                    'Pass {"tariff_id": N}; only meters can go back to their account''s tariff (null).');
            END IF;
        ELSIF jsonb_typeof(p_params->'tariff_id') <> 'number' THEN
            PERFORM prepay._raise('22023', 'batch parameter "tariff_id" must be a number',
                pg_catalog.format('The value given was %s.', p_params->'tariff_id'), 'Pass {"tariff_id": N}.');
        ELSIF NOT EXISTS (SELECT 1 FROM prepay.tariff t WHERE t.site_id = p_site_id
                             AND t.tariff_id::numeric = (p_params->>'tariff_id')::numeric) THEN
            PERFORM prepay._raise('PY009', 'unknown tariff',
                pg_catalog.format('Site %s has no tariff %s.', p_site_id, p_params->'tariff_id'),
                'prepay.tariff lists the tariffs.');
        END IF;
    WHEN 'set_thresholds' THEN
        PERFORM prepay._batch_check_keys(p_params, '{low_balance,pretrip,credit_limit}', '{low_balance,pretrip}');
        PERFORM prepay._check_threshold(prepay._batch_number(p_params, 'low_balance'), 'low-balance threshold');
        PERFORM prepay._check_threshold(prepay._batch_number(p_params, 'pretrip'), 'pre-trip threshold');
        PERFORM prepay._check_threshold(prepay._batch_number(p_params, 'credit_limit'), 'credit limit');
        SELECT * INTO s FROM prepay.site WHERE site_id = p_site_id;
        IF coalesce(prepay._batch_number(p_params, 'pretrip'), s.pretrip_threshold)
           > coalesce(prepay._batch_number(p_params, 'low_balance'), s.low_balance_threshold) THEN
            PERFORM prepay._raise('22023', 'pre-trip threshold is above the low-balance threshold',
                pg_catalog.format('Parameters given: %s; the site''s defaults are %s and %s.',
                                  p_params, s.low_balance_threshold, s.pretrip_threshold),
                'The ladder warns at the low-balance threshold first, then at the pre-trip one: pre-trip <= low balance.');
        END IF;
    WHEN 'set_protect' THEN
        PERFORM prepay._batch_check_keys(p_params, '{on}', '{on}');
        IF jsonb_typeof(p_params->'on') <> 'boolean' THEN
            PERFORM prepay._raise('22023', 'batch parameter "on" must be true or false',
                pg_catalog.format('The value given was %s.', p_params->'on'), 'Pass {"on": true} or {"on": false}.');
        END IF;
    WHEN 'set_relay' THEN
        PERFORM prepay._batch_check_keys(p_params, '{action,reason}', '{action}');
        IF p_params->>'action' IS DISTINCT FROM 'trip' AND p_params->>'action' IS DISTINCT FROM 'close' THEN
            PERFORM prepay._raise('22023', 'batch parameter "action" must be trip or close',
                pg_catalog.format('The value given was %s.', p_params->'action'), 'Pass {"action": "trip"} or {"action": "close"}.');
        END IF;
        IF p_params ? 'reason' THEN
            PERFORM prepay._check_text(p_params->>'reason', 'reason');
        END IF;
    WHEN 'recharge' THEN
        PERFORM prepay._batch_check_keys(p_params, '{channel,amount}', '{channel}');
        PERFORM prepay._check_reference(p_params->>'channel', 'channel');
        IF p_params ? 'amount' THEN
            PERFORM prepay._check_amount(prepay._batch_number(p_params, 'amount'), 'recharge');
        END IF;
    END CASE;
END $$;
COMMENT ON FUNCTION prepay._batch_check_params(integer, prepay.batch_action, prepay.batch_target, jsonb) IS
'Internal: refuse a batch whose action does not fit its target or whose parameters are unknown, missing or invalid (22023, 22003, PY009).  Per-item values (amounts, references) are checked when each item runs.';

CREATE FUNCTION prepay._batch_resolve(p_site_id integer, p_target prepay.batch_target, p_element jsonb)
RETURNS bigint LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e jsonb := p_element;
    n numeric;
BEGIN
    IF jsonb_typeof(e) = 'object' THEN
        e := coalesce(e->'id', e->'code');
    END IF;
    IF jsonb_typeof(e) = 'number' THEN
        n := (e #>> '{}')::numeric;
        IF n = pg_catalog.trunc(n) AND n BETWEEN 1 AND 9223372036854775807 THEN
            RETURN n::bigint;
        END IF;
    ELSIF jsonb_typeof(e) = 'string' AND p_target = 'account' THEN
        RETURN (SELECT a.account_id FROM prepay.account a WHERE a.site_id = p_site_id AND a.code = e #>> '{}');
    ELSIF jsonb_typeof(e) = 'string' THEN
        RETURN (SELECT m.meter_id FROM prepay.meter m WHERE m.site_id = p_site_id AND m.code = e #>> '{}');
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._batch_resolve(integer, prepay.batch_target, jsonb) IS
'Internal: the account or meter id a list element names: a whole number is an id (unchecked: an unknown id fails when its item runs), a string is a code, an object has "id" or "code".  NULL when it names none.';

CREATE FUNCTION prepay._batch_check_selector(p_selector jsonb)
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
BEGIN
    IF p_selector = '{}'::jsonb THEN
        PERFORM prepay._raise('22023', 'empty batch selector', NULL,
            'Select with building, floor, room and/or tariff_id, or pass {"all": true}.');
    END IF;
    FOR k IN SELECT jsonb_object_keys(p_selector) LOOP
        IF k NOT IN ('all', 'building', 'floor', 'room', 'tariff_id') THEN
            PERFORM prepay._raise('22023', pg_catalog.format('unknown batch selector %L', k),
                pg_catalog.format('The selector given was %s.', p_selector),
                'Select with building, floor, room and/or tariff_id, or pass {"all": true}.');
        END IF;
        IF k IN ('building', 'floor', 'room') AND jsonb_typeof(p_selector->k) <> 'string'
           OR k = 'tariff_id' AND jsonb_typeof(p_selector->k) <> 'number' THEN
            PERFORM prepay._raise('22023', pg_catalog.format('batch selector %L has the wrong type', k),
                pg_catalog.format('The selector given was %s.', p_selector),
                'building, floor and room are strings, tariff_id a number.');
        END IF;
    END LOOP;
    IF p_selector ? 'all' AND (p_selector->'all' <> 'true'::jsonb OR p_selector <> '{"all": true}'::jsonb) THEN
        PERFORM prepay._raise('22023', 'batch selector "all" must be true and alone',
            pg_catalog.format('The selector given was %s.', p_selector), 'Pass {"all": true} for every target of the site.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._batch_check_selector(jsonb) IS
'Internal: refuse (22023) a selector that is empty, has an unknown key or a value of the wrong type, or uses "all" other than alone as {"all": true}.';

CREATE FUNCTION prepay._batch_select(p_site_id integer, p_target prepay.batch_target, p_selector jsonb)
RETURNS SETOF bigint LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_target = 'meter' THEN
        RETURN QUERY
        SELECT m.meter_id FROM prepay.meter m
          LEFT JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id
         WHERE m.site_id = p_site_id AND m.active
           AND (NOT p_selector ? 'building' OR m.building = p_selector->>'building')
           AND (NOT p_selector ? 'floor' OR m.floor = p_selector->>'floor')
           AND (NOT p_selector ? 'room' OR m.room = p_selector->>'room')
           AND (NOT p_selector ? 'tariff_id'
                OR coalesce(m.tariff_id, a.tariff_id)::numeric = (p_selector->>'tariff_id')::numeric)
         ORDER BY m.meter_id;
    ELSE
        RETURN QUERY
        SELECT a.account_id FROM prepay.account a
         WHERE a.site_id = p_site_id AND a.closed_at IS NULL
           AND (NOT p_selector ? 'tariff_id' OR a.tariff_id::numeric = (p_selector->>'tariff_id')::numeric)
           AND (NOT (p_selector ?| ARRAY['building', 'floor', 'room'])
                OR EXISTS (SELECT 1 FROM prepay.meter m
                            WHERE m.site_id = a.site_id AND m.account_id = a.account_id AND m.active
                              AND (NOT p_selector ? 'building' OR m.building = p_selector->>'building')
                              AND (NOT p_selector ? 'floor' OR m.floor = p_selector->>'floor')
                              AND (NOT p_selector ? 'room' OR m.room = p_selector->>'room')))
         ORDER BY a.account_id;
    END IF;
END $$;
COMMENT ON FUNCTION prepay._batch_select(integer, prepay.batch_target, jsonb) IS
'Internal: the targets a (checked) selector picks, in id order.  Meters: active meters in the building/floor/room, priced by tariff_id (their own or their account''s).  Accounts: open accounts with an active meter in the building/floor/room, on tariff_id.  {"all": true}: every active meter or open account.';

CREATE FUNCTION prepay.create_batch(p_site_id integer, p_client_ref text, p_action prepay.batch_action,
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
COMMENT ON FUNCTION prepay.create_batch(integer, text, prepay.batch_action, prepay.batch_target, jsonb, jsonb, timestamptz, text) IS
'Create a batch and return its id: an action for many accounts or meters (a list of ids, codes or objects, or a selector, resolved now into items), with its parameters, to run at p_run_at (NULL: now; the runner or prepay.run_batch runs it).  Idempotent: the same client reference returns the same batch; with a different action, target, targets, parameters or (given) run_at it is refused (PY302).  22023 bad action/target pair, parameters, targets or selector, or an infinite run_at; PY007; PY009.  See docs/BATCH.md.';

-- ---------------------------------------------------------------------
-- running
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._batch_target_error(b prepay.batch, it prepay.batch_item)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    named jsonb := CASE WHEN jsonb_typeof(it.input) = 'object' THEN coalesce(it.input->'id', it.input->'code')
                        ELSE it.input END;
BEGIN
    IF jsonb_typeof(named) = 'string' AND b.target = 'account' THEN
        PERFORM prepay._raise('PY001', 'unknown account',
            pg_catalog.format('Site %s has no account with code %s.', b.site_id, named),
            'Check the code; prepay.account lists the accounts.');
    ELSIF jsonb_typeof(named) = 'string' THEN
        PERFORM prepay._raise('PY003', 'unknown meter',
            pg_catalog.format('Site %s has no meter with code %s.', b.site_id, named),
            'Check the code; prepay.meter lists the meters.');
    END IF;
    PERFORM prepay._raise('22023', pg_catalog.format('batch target names no %s', b.target),
        pg_catalog.format('Item %s is %s.', it.item_no, coalesce(it.input::text, 'NULL')),
        'Name a target by a whole-number id, a code, or an object with "id" or "code".');
END $$;
COMMENT ON FUNCTION prepay._batch_target_error(prepay.batch, prepay.batch_item) IS 'Internal: raise why an item names no target: PY001/PY003 for an unknown code, else 22023.';

CREATE FUNCTION prepay._batch_run_item(b prepay.batch, it prepay.batch_item,
                                       OUT state prepay.batch_item_state, OUT result jsonb, OUT message text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target_id bigint := coalesce(it.account_id, it.meter_id);
    earlier integer;
    previous bigint;
    a prepay.account;
    m prepay.meter;
    amount numeric;
    ref text;
    entry bigint;
    commands bigint[] := '{}';
    level_before smallint;
    level_after smallint;
BEGIN
    state := 'done';
    IF target_id IS NULL THEN
        PERFORM prepay._batch_target_error(b, it);
    END IF;
    IF b.action <> 'recharge' THEN
        -- setting the same target twice is nothing to do; two recharges are two payments
        SELECT min(x.item_no) INTO earlier FROM prepay.batch_item x
         WHERE x.site_id = it.site_id AND x.batch_id = it.batch_id AND x.item_no < it.item_no
           AND coalesce(x.account_id, x.meter_id) = target_id;
        IF earlier IS NOT NULL THEN
            state := 'skipped';
            message := pg_catalog.format('duplicate of item %s', earlier);
            RETURN;
        END IF;
    END IF;

    CASE b.action
    WHEN 'set_tariff' THEN
        IF b.target = 'account' THEN
            previous := prepay.set_tariff(b.site_id, (b.params->>'tariff_id')::bigint, p_account_id => target_id);
        ELSE
            previous := prepay.set_tariff(b.site_id, (b.params->>'tariff_id')::bigint, p_meter_id => target_id);
        END IF;
        result := jsonb_build_object('tariff_id', (b.params->>'tariff_id')::bigint, 'previous_tariff_id', previous);
    WHEN 'set_thresholds' THEN
        SELECT x.alarm_level INTO level_before FROM prepay.account x
         WHERE x.site_id = b.site_id AND x.account_id = target_id;
        level_after := prepay.set_thresholds(b.site_id, target_id, prepay._batch_number(b.params, 'low_balance'),
                                             prepay._batch_number(b.params, 'pretrip'),
                                             prepay._batch_number(b.params, 'credit_limit'));
        result := jsonb_build_object('alarm_level_before', level_before, 'alarm_level', level_after);
    WHEN 'set_protect' THEN
        IF b.target = 'account' THEN
            PERFORM prepay.protect(b.site_id, (b.params->>'on')::boolean, p_account_id => target_id);
        ELSE
            PERFORM prepay.protect(b.site_id, (b.params->>'on')::boolean, p_meter_id => target_id);
        END IF;
        result := jsonb_build_object('protect', (b.params->>'on')::boolean);
    WHEN 'set_relay' THEN
        IF b.target = 'meter' THEN
            commands := ARRAY[prepay._batch_relay(b, target_id)];
        ELSE
            -- every active meter of the account, or none of them
            a := prepay._lock_account(b.site_id, target_id);
            FOR m IN SELECT * FROM prepay.meter x
                      WHERE x.site_id = b.site_id AND x.account_id = target_id AND x.active
                      ORDER BY x.meter_id LOOP
                commands := commands || prepay._batch_relay(b, m.meter_id);
            END LOOP;
            IF cardinality(commands) = 0 THEN
                state := 'skipped';
                message := 'account has no active meter';
                RETURN;
            END IF;
        END IF;
        result := jsonb_build_object('action', b.params->>'action', 'command_ids', to_jsonb(commands));
    WHEN 'recharge' THEN
        amount := coalesce((it.input->>'amount')::numeric, prepay._batch_number(b.params, 'amount'));
        ref := CASE WHEN jsonb_typeof(it.input) = 'object' AND it.input ? 'external_ref'
                    THEN it.input->>'external_ref'
                    ELSE pg_catalog.format('batch:%s:%s', b.batch_id, it.item_no) END;
        SELECT l.entry_id INTO previous FROM prepay.ledger l
         WHERE l.site_id = b.site_id AND l.channel = b.params->>'channel' AND l.external_ref = ref;
        entry := prepay.recharge(b.site_id, target_id, amount, b.params->>'channel', ref);
        result := jsonb_build_object('entry_id', entry, 'amount', amount, 'channel', b.params->>'channel',
                                     'external_ref', ref);
        IF previous IS NOT NULL THEN
            state := 'skipped';
            message := pg_catalog.format('payment already posted as ledger entry %s', entry);
        END IF;
    END CASE;
END $$;
COMMENT ON FUNCTION prepay._batch_run_item(prepay.batch, prepay.batch_item) IS
'Internal: carry out one item through the public single-target function (set_tariff, set_thresholds, protect, trip/close, recharge) and say what it did; raises the function''s error for a failed item.  The caller runs it in a subtransaction.';

CREATE FUNCTION prepay._batch_relay(b prepay.batch, p_meter_id bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    reason text := coalesce(b.params->>'reason', 'batch ' || b.client_ref);
BEGIN
    IF b.params->>'action' = 'trip' THEN
        RETURN prepay.trip(b.site_id, p_meter_id, reason);
    END IF;
    RETURN prepay.close(b.site_id, p_meter_id, reason);
END $$;
COMMENT ON FUNCTION prepay._batch_relay(prepay.batch, bigint) IS 'Internal: queue a batch''s trip or close for one meter (prepay.trip / prepay.close) with the batch''s reason (default "batch <client_ref>"); returns the command id.';

CREATE FUNCTION prepay._batch_run(b prepay.batch, p_max_items bigint)
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
COMMENT ON FUNCTION prepay._batch_run(prepay.batch, bigint) IS
'Internal: run up to p_max_items (NULL: all) pending items of a batch the caller has locked, in item order, each in its own subtransaction: a failing item is recorded as failed with its SQLSTATE, message, detail and hint, and the others go on.  Errors of classes 40, 53-58 and XX (deadlock, serialization, resources, operator intervention, internal) are re-raised.  Marks the batch done when no item is pending.  Returns how many items ran.';

CREATE FUNCTION prepay._batch_run_safely(b prepay.batch, p_max_items bigint)
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
COMMENT ON FUNCTION prepay._batch_run_safely(prepay.batch, bigint) IS
'Internal: run a batch in a subtransaction; if the run stops on an error that is not an item''s (deadlock, lack of resources, ...), undo the whole run of this batch (its items stay pending), note the error in batch.last_error and return 0, so other batches still run.';

CREATE FUNCTION prepay._batch_lock_site(b prepay.batch, p_wait boolean)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF b.action <> 'set_tariff' THEN
        RETURN true;
    END IF;
    IF p_wait THEN
        PERFORM prepay._lock_site_rating(b.site_id);
        RETURN true;
    END IF;
    RETURN pg_catalog.pg_try_advisory_xact_lock(1886545264, b.site_id);   -- prepay._lock_site_rating's key
END $$;
COMMENT ON FUNCTION prepay._batch_lock_site(prepay.batch, boolean) IS
'Internal: a set_tariff batch changes what the rater reads, so it runs under its site''s rating lock, taken before any row lock (the locking protocol''s first step).  With p_wait false (the run already holds row locks or other sites'' locks) it only tries, and returns false if a rating batch holds the lock: the batch is left for a later run instead of risking a deadlock.';

CREATE FUNCTION prepay.run_due_batches(p_max_items bigint DEFAULT NULL)
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
COMMENT ON FUNCTION prepay.run_due_batches(bigint) IS
'The runner: run every batch whose run_at has come (oldest first), each item once, in the calling transaction; pg_cron (or anyone) calls it every minute: SELECT * FROM prepay.run_due_batches().  It claims one batch at a time and concurrent runners skip each other''s batches (FOR UPDATE SKIP LOCKED), so running it twice or from two sessions runs each item exactly once.  p_max_items bounds the items of one call (the rest stay pending: state running).  Returns one row per batch it ran: items run now, and the batch''s counts.  Call it at the start of a transaction.';

CREATE FUNCTION prepay._batch_for_update(p_site_id integer, p_batch_id bigint)
RETURNS prepay.batch LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.batch;
BEGIN
    SELECT * INTO b FROM prepay.batch x WHERE x.site_id = p_site_id AND x.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY301', 'unknown batch',
            pg_catalog.format('Site %s has no batch %s.', p_site_id, p_batch_id), 'prepay.batch_summary lists the batches.');
    END IF;
    RETURN b;
END $$;
COMMENT ON FUNCTION prepay._batch_for_update(integer, bigint) IS 'Internal: lock a batch (waiting for a runner holding it), PY301 if unknown.';

CREATE FUNCTION prepay.run_batch(p_site_id integer, p_batch_id bigint)
RETURNS TABLE (site_id integer, batch_id bigint, client_ref text, action prepay.batch_action,
               state prepay.batch_state, items_run bigint, pending bigint, done bigint, failed bigint,
               skipped bigint, last_error text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b prepay.batch;
    ran bigint := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, CASE WHEN (SELECT b.action FROM prepay.batch b
                                                     WHERE b.site_id = p_site_id AND b.batch_id = p_batch_id) = 'recharge'
                                              THEN 'money' ELSE 'manage' END);
    -- waits for a runner holding the batch, then sees what it did
    b := prepay._batch_for_update(p_site_id, p_batch_id);
    IF b.state IN ('scheduled', 'running') THEN
        IF b.run_at > pg_catalog.now() THEN
            PERFORM prepay._raise('PY303', 'batch is scheduled for later',
                pg_catalog.format('Batch %s runs at %s.', p_batch_id, b.run_at),
                'Move it with prepay.reschedule_batch(site, batch, now()) to run it now.');
        END IF;
        PERFORM prepay._batch_lock_site(b, true);
        ran := prepay._batch_run(b, NULL);
    END IF;
    RETURN QUERY
    SELECT s.site_id, s.batch_id, s.client_ref, s.action, s.state, ran, s.pending, s.done, s.failed,
           s.skipped, s.last_error
      FROM prepay.batch_summary s WHERE s.site_id = p_site_id AND s.batch_id = p_batch_id;
END $$;
COMMENT ON FUNCTION prepay.run_batch(integer, bigint) IS
'Run one due batch now, in the calling transaction (after prepay.create_batch for "immediately"), and return its counts.  A batch that is done or cancelled is not run again: its counts are returned with items_run 0; a runner holding it is waited for.  PY301 unknown batch; PY303 run_at still ahead.';

CREATE FUNCTION prepay.cancel_batch(p_site_id integer, p_batch_id bigint, p_reason text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t timestamptz;
    b prepay.batch;
    n bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._check_text(p_reason, 'reason');
    b := prepay._batch_for_update(p_site_id, p_batch_id);
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
COMMENT ON FUNCTION prepay.cancel_batch(integer, bigint, text) IS
'Cancel a batch that has not finished: its pending items are skipped ("batch cancelled: reason"); items already run stay as they are.  Returns how many items were skipped.  Waits for a runner holding the batch.  PY301 unknown batch; PY303 already done or cancelled; 22023 blank reason.';

CREATE FUNCTION prepay.reschedule_batch(p_site_id integer, p_batch_id bigint, p_run_at timestamptz)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.batch;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF p_run_at IS NULL OR NOT pg_catalog.isfinite(p_run_at) THEN
        PERFORM prepay._raise('22023', 'run_at must be a finite time',
            pg_catalog.format('The time given was %s.', coalesce(p_run_at::text, 'NULL')),
            'Pass now() to run the batch at the next run; cancel a batch that should never run.');
    END IF;
    b := prepay._batch_for_update(p_site_id, p_batch_id);
    IF b.state <> 'scheduled' THEN
        PERFORM prepay._raise('PY303', pg_catalog.format('batch is already %s', b.state),
            pg_catalog.format('Batch %s started at %s.', p_batch_id, coalesce(b.started_at, b.finished_at)),
            'Only a batch that has not started can be moved.');
    END IF;
    UPDATE prepay.batch x SET run_at = p_run_at WHERE x.site_id = p_site_id AND x.batch_id = p_batch_id;
END $$;
COMMENT ON FUNCTION prepay.reschedule_batch(integer, bigint, timestamptz) IS
'Move a batch that has not started to another run_at (now() to run it at the next run).  PY301 unknown batch; PY303 started, done or cancelled; 22023 NULL or infinite time.';

-- ---------------------------------------------------------------------
-- pg_dump: batches and their results are user data
-- ---------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('prepay.batch', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.batch_item', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.batch_id_seq', '');
