-- sql/upgrade/0.1--0.2/60_distribute.sql: running distributed on Citus (sql/distribute.sql): the site's rating lock becomes the site row's lock once distributed, announcements skip Citus workers, the rating trigger's relay label cast Citus accepts, the caller's roles computed where the call is, the agent's catalog and command claims site by site, prepay.distribute() and the functions the distributed policies call.

CREATE OR REPLACE FUNCTION prepay._lock_site_rating(p_site_id integer)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF prepay._distributed() THEN
        -- on Citus the site's row, on the node holding the site's shards
        PERFORM FROM prepay.site WHERE site_id = p_site_id FOR NO KEY UPDATE;
    ELSE
        PERFORM pg_catalog.pg_advisory_xact_lock(1886545264, p_site_id);  -- 1886545264 = 'prep'
    END IF;
END $$;
COMMENT ON FUNCTION prepay._lock_site_rating(integer) IS
'Internal: the site''s rating lock: a transaction-level advisory lock on one node; once prepay.distribute() ran, a FOR NO KEY UPDATE lock on the site''s row, which the node holding the site''s shards keeps for every session whichever node it came through (an advisory lock is local to one node).  The rating trigger takes it before reading meter state, and so do the functions that change a meter''s account or readings, before any row lock: see the locking protocol in extension/reading.c.';

CREATE FUNCTION prepay._distributed() RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    distributed boolean;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;                       -- no Citus here
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = ''prepay.site''::pg_catalog.regclass)'
       INTO distributed;
    RETURN distributed;
END $$;
COMMENT ON FUNCTION prepay._distributed() IS
'Internal: whether prepay''s tables are distributed by Citus (prepay.distribute() ran), on whichever node asks: the coordinator and every worker keep Citus''s metadata.';

CREATE FUNCTION prepay._relay_state(p_label text) RETURNS prepay.relay_state
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_label::prepay.relay_state
$$;
COMMENT ON FUNCTION prepay._relay_state(text) IS
'Internal: a relay state label as prepay.relay_state, for the rating trigger''s meter update.  Declared IMMUTABLE (the labels of the type never change), so that Citus evaluates it on the node holding the shard, where it refuses a STABLE cast inside COALESCE.';

CREATE FUNCTION prepay._announce(p_channel text, p_payload text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- on a Citus worker nobody listens (agents connect to the coordinator and
    -- re-read their commands every second), and a NOTIFY there would stop
    -- the two-phase commit of a statement that wrote to several workers
    IF prepay._citus_group() <> 0 THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.pg_notify(p_channel, p_payload);
END $$;
COMMENT ON FUNCTION prepay._announce(text, text) IS
'Internal: NOTIFY p_channel with p_payload (relay commands, notifications, configuration changes), except on a Citus worker, where no agent listens: there the agent''s re-read of its commands every second and of its notifications pick the rows up (docs/SCALE-OUT.md).';

CREATE FUNCTION prepay._citus_group() RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g integer := 0;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_local_group') IS NOT NULL THEN
        EXECUTE 'SELECT groupid FROM pg_catalog.pg_dist_local_group' INTO g;
    END IF;
    RETURN coalesce(g, 0);
END $$;
COMMENT ON FUNCTION prepay._citus_group() IS
'Internal: this node''s Citus group id: 0 on the coordinator and on a server without Citus.';

CREATE OR REPLACE FUNCTION prepay._queue_command(p_site_id integer, p_meter_id bigint, p_action prepay.command_action,
                                      p_reason text, p_account_id bigint DEFAULT NULL,
                                      p_not_before timestamptz DEFAULT pg_catalog.now())
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queued prepay.command;
    new_id bigint;
BEGIN
    LOOP
        SELECT * INTO queued FROM prepay.command
         WHERE site_id = p_site_id AND meter_id = p_meter_id AND state = 'queued' FOR UPDATE;
        IF FOUND THEN
            IF queued.action = p_action THEN
                RETURN queued.command_id;          -- the same order is already waiting
            END IF;
            UPDATE prepay.command SET state = 'cancelled', updated_at = pg_catalog.now(),
                   last_error = pg_catalog.format('superseded by a %s command', p_action)
             WHERE site_id = p_site_id AND command_id = queued.command_id;
        END IF;
        BEGIN
            INSERT INTO prepay.command (site_id, meter_id, account_id, action, reason, not_before)
            VALUES (p_site_id, p_meter_id, p_account_id, p_action, p_reason, p_not_before)
            RETURNING command_id INTO new_id;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            -- a failed command of the meter was queued again for a retry
            -- (prepay.agent_command_failed) after our look: look again
        END;
    END LOOP;
    PERFORM prepay._announce('prepay_command', p_site_id || '/' || new_id);
    RETURN new_id;
END $$;
COMMENT ON FUNCTION prepay._queue_command(integer, bigint, prepay.command_action, text, bigint, timestamptz) IS
'Internal: queue a relay command unless the same one is already queued; an opposite queued command is cancelled.  A failed command queued again for a retry by a concurrent transaction is seen by looking again (test/specs/command_retry_race.spec).  Sends NOTIFY prepay_command with "site_id/command_id".';

CREATE OR REPLACE FUNCTION prepay._alarm_level_changed(p_site_id integer, p_account_id bigint,
                                            p_old smallint, p_new smallint)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kinds constant text[] := ARRAY['low_balance', 'pretrip', 'arrears'];
    a prepay.account;
    s prepay.site;
    notification_id bigint;
    msg text;
BEGIN
    UPDATE prepay.account SET alarm_level = p_new
     WHERE site_id = p_site_id AND account_id = p_account_id AND mode = 'prepaid' AND closed_at IS NULL
    RETURNING * INTO a;
    IF NOT FOUND THEN
        RETURN;             -- a closed or closing (or postpaid) account is outside the ladder
    END IF;
    SELECT * INTO s FROM prepay.site WHERE site_id = p_site_id;

    UPDATE prepay.alarm SET cleared_at = pg_catalog.now()
     WHERE site_id = p_site_id AND account_id = p_account_id AND meter_id IS NULL
       AND cleared_at IS NULL AND kind = ANY (kinds)
       AND (p_new = 0 OR kind <> kinds[p_new]);
    IF p_new > 0 THEN
        INSERT INTO prepay.alarm (site_id, kind, account_id, detail)
        VALUES (p_site_id, kinds[p_new], p_account_id,
                pg_catalog.format('balance %s %s', a.balance, s.currency))
        ON CONFLICT DO NOTHING;
    END IF;

    msg := CASE p_new
        WHEN 0 THEN pg_catalog.format('Account %s: balance is %s %s, thank you.', a.code, a.balance, s.currency)
        WHEN 1 THEN pg_catalog.format('Account %s: balance is low (%s %s). Please recharge.', a.code, a.balance, s.currency)
        WHEN 2 THEN pg_catalog.format('Account %s: balance %s %s; supply will be cut soon. Please recharge now.', a.code, a.balance, s.currency)
        ELSE pg_catalog.format(CASE WHEN a.protect THEN 'Account %s %s (%s %s). Please recharge.'
                                    ELSE 'Account %s %s (%s %s); supply is being cut. It is restored automatically when you recharge.' END,
                               a.code, CASE WHEN a.balance < 0 THEN 'is in arrears' ELSE 'has no credit left' END,
                               a.balance, s.currency)
    END;
    INSERT INTO prepay.notification (site_id, account_id, kind, alarm_level, balance, phone, email, message)
    VALUES (p_site_id, p_account_id, 'alarm_level', p_new, a.balance, a.phone, a.email, msg)
    RETURNING notification.notification_id INTO notification_id;
    PERFORM prepay._announce('prepay_notification', p_site_id || '/' || notification_id);

    IF p_new = 3 AND p_old < 3 THEN
        PERFORM prepay._trip_account(p_site_id, p_account_id, 'arrears');
    ELSIF p_old = 3 AND p_new < 3 THEN
        PERFORM prepay._restore_account(p_site_id, p_account_id, 'balance restored');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._alarm_level_changed(integer, bigint, smallint, smallint) IS
'Internal: the consequences of an alarm level change of an open prepaid account (any other is outside the ladder: nothing happens): store the level, swap the active ladder alarm, write a notification (NOTIFY prepay_notification), trip on entering arrears and restore on leaving them.  Called by the rating trigger and by every wallet movement.';

-- agent.sql: the agent's catalog and command claims site by site (one shard group each on Citus)
CREATE OR REPLACE FUNCTION prepay._notify_config() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._announce('prepay_config', TG_TABLE_NAME);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._notify_config() IS 'Internal: sends NOTIFY prepay_config (payload: the table changed) so that agents reload their catalog.';

CREATE OR REPLACE FUNCTION prepay.agent_catalog(p_agent_id text)
RETURNS TABLE (site_id integer, gateway_id bigint, gateway_name text, transport text, host text, port integer,
               serial_device text, baud integer, parity char(1), data_bits smallint, stop_bits smallint,
               poll_interval_ms bigint, gateway_lost boolean,
               meter_id bigint, unit_id smallint, kind prepay.meter_kind, device_profile text, meter_lost boolean,
               relay_write_address integer, trip_values integer[], close_values integer[],
               relay_read_address integer, relay_read_count smallint, relay_state_mask bigint,
               relay_tripped_value bigint, relay_closed_value bigint,
               meaning text, address integer, type text, word_order text, scale smallint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    site integer;
BEGIN
    -- site by site, each query on one site (one shard group on Citus)
    FOR site IN SELECT DISTINCT x.site_id FROM prepay.gateway x WHERE x.agent_id = p_agent_id ORDER BY 1 LOOP
    RETURN QUERY
    SELECT g.site_id, g.gateway_id, g.name, g.transport, g.host, g.port,
           g.serial_device, g.baud, g.parity, g.data_bits, g.stop_bits,
           (pg_catalog.date_part('epoch', g.poll_interval) * 1000)::bigint, g.lost_since IS NOT NULL,
           m.meter_id, m.unit_id, m.kind, m.device_profile, m.lost_since IS NOT NULL,
           d.relay_write_address, d.trip_values, d.close_values,
           d.relay_read_address, d.relay_read_count, d.relay_state_mask,
           d.relay_tripped_value, d.relay_closed_value,
           r.meaning, r.address, r.type, r.word_order, r.scale
      FROM prepay.gateway g
      LEFT JOIN prepay.meter m ON m.site_id = g.site_id AND m.gateway_id = g.gateway_id
                              AND m.active AND m.unit_id IS NOT NULL
      LEFT JOIN prepay.device_profile d ON d.site_id = m.site_id AND d.profile = m.device_profile
      LEFT JOIN prepay.profile_register r ON r.site_id = d.site_id AND r.profile = d.profile
                                         AND r.meaning IN ('total_energy', 'sharp', 'peak', 'flat', 'valley', 'power')
     WHERE g.agent_id = p_agent_id AND g.site_id = site
     ORDER BY g.site_id, g.gateway_id, m.meter_id, r.address;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.agent_catalog(text) IS
'What one agent polls, in one consistent snapshot: one row per (gateway, active meter, register to read), ordered by gateway and meter.  A gateway without meters gives one row with a NULL meter; a meter without a known profile gives one row with NULL profile columns (the agent logs and skips it).';

CREATE OR REPLACE FUNCTION prepay.agent_claim_commands(p_agent_id text, p_include_sent boolean DEFAULT false)
RETURNS TABLE (site_id integer, command_id bigint, meter_id bigint, gateway_id bigint,
               action prepay.command_action, attempts integer, created_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    site integer;
BEGIN
    PERFORM prepay._authorize_agent_id(p_agent_id);
    -- site by site (FOR UPDATE on one shard group on Citus), in site order
    FOR site IN SELECT DISTINCT x.site_id FROM prepay.gateway x WHERE x.agent_id = p_agent_id ORDER BY 1 LOOP
    CONTINUE WHEN NOT prepay._is_agent(site, p_agent_id);  -- judged here, where the caller is known
    RETURN QUERY
    WITH due AS (
        SELECT c.site_id, c.command_id
          FROM prepay.command c
          JOIN prepay.meter m ON m.site_id = c.site_id AND m.meter_id = c.meter_id
          JOIN prepay.gateway g ON g.site_id = m.site_id AND g.gateway_id = m.gateway_id
         WHERE g.agent_id = p_agent_id AND prepay._is_agent(g.site_id, g.agent_id)
           AND c.site_id = site AND m.site_id = site AND g.site_id = site
           AND (c.state = 'queued' AND c.not_before <= pg_catalog.now()
                OR p_include_sent AND c.state = 'sent'
                OR p_include_sent AND c.state = 'queued' AND c.attempts > 0
                   AND (c.action = 'close' OR c.reason <> 'arrears'
                        OR prepay.cut_allowed_at(c.site_id, pg_catalog.now()) <= pg_catalog.now()))
         ORDER BY c.site_id, c.command_id
           FOR UPDATE OF c SKIP LOCKED
    )
    UPDATE prepay.command c
       SET state = 'sent', attempts = c.attempts + 1, updated_at = pg_catalog.now()
      FROM due, prepay.meter m
     WHERE c.site_id = due.site_id AND c.command_id = due.command_id
       AND m.site_id = c.site_id AND m.meter_id = c.meter_id AND c.site_id = site AND m.site_id = site
    RETURNING c.site_id, c.command_id, c.meter_id, m.gateway_id, c.action, c.attempts, c.created_at;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.agent_claim_commands(text, boolean) IS
'The agent takes the commands it must carry out: every queued command due (not_before passed) of a meter on one of its gateways becomes sent, attempts + 1 (FOR UPDATE SKIP LOCKED).  With p_include_sent (at every (re)connect of the agent) it also takes back its sent commands, which a crash may have left in flight (relay commands are idempotent), and the queued commands waiting for a retry, at once (an arrears trip not inside a no-cut window).  Only the sites where the caller is mapped as this agent (prepay.agent_access) are served.';

-- security.sql: the mapping role without a correlated sub-query (Citus cannot plan one), the caller's roles computed here and passed on
CREATE OR REPLACE FUNCTION prepay._mapping_role() RETURNS oid
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN c.oid <> s.oid AND s.rolinherit
                     AND c.rolname IN ('prepay_admin', 'prepay_operator', 'prepay_cashier', 'prepay_reader',
                                       'prepay_tenant', 'prepay_agent')
                     AND NOT EXISTS (SELECT 1 FROM prepay.api_authenticator a WHERE a.grantee = SESSION_USER)
                THEN s.oid ELSE c.oid END
      FROM pg_catalog.pg_roles c, pg_catalog.pg_roles s
     WHERE c.oid = prepay._caller() AND s.rolname = SESSION_USER
$$;
COMMENT ON FUNCTION prepay._mapping_role() IS
'Internal: OID of the role whose mappings apply to the current call: the caller (prepay._caller(): the login, or the role it switched to with SET ROLE), so that a pooler''s or gateway''s authenticator that switches to a role gets that role''s mappings and not its own.  One exception keeps direct logins as they were: a login that switches to one of the six prepay_* group roles (which are never mapped) keeps its own mappings, SET ROLE narrowing what it may do, not where; not for an authenticator (prepay.api_authenticator) nor for a NOINHERIT login (as PostgREST''s authenticator is).  Called from the SECURITY DEFINER helpers.';

CREATE OR REPLACE FUNCTION prepay._my_sites() RETURNS integer[]
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    roles name[];
BEGIN
    IF prepay._caller_is_superuser() THEN
        RETURN ARRAY(SELECT s.site_id FROM prepay.site s ORDER BY 1);
    END IF;
    roles := prepay._my_roles();            -- here, not where a distributed table's rows are
    RETURN ARRAY(SELECT DISTINCT a.site_id FROM prepay.site_access a WHERE a.grantee = ANY (roles) ORDER BY 1);
END $$;
COMMENT ON FUNCTION prepay._my_sites() IS
'Internal: the sites the caller acts on as staff (prepay.site_access, through any group it belongs to); every site for a superuser.  The site policies call it once per statement.';

CREATE OR REPLACE FUNCTION prepay._my_accounts() RETURNS TABLE (site_id integer, account_id bigint)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    roles name[] := prepay._my_roles();     -- here, not where a distributed table's rows are
BEGIN
    RETURN QUERY
    SELECT t.site_id, t.account_id FROM prepay.tenant_access t WHERE t.grantee = ANY (roles)
    UNION
    SELECT c.site_id, c.account_id FROM prepay._claimed_accounts() c;
END $$;
COMMENT ON FUNCTION prepay._my_accounts() IS 'Internal: the accounts the caller sees as a tenant: those mapped to it (prepay.tenant_access) and the one its verified claims name (prepay._claimed_accounts()).';

CREATE OR REPLACE FUNCTION prepay._my_agents() RETURNS TABLE (site_id integer, agent_id text)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    roles name[] := prepay._my_roles();     -- here, not where a distributed table's rows are
BEGIN
    RETURN QUERY SELECT DISTINCT a.site_id, a.agent_id FROM prepay.agent_access a WHERE a.grantee = ANY (roles);
END $$;
COMMENT ON FUNCTION prepay._my_agents() IS 'Internal: the (site, agent id) pairs the caller acts as (prepay.agent_access).';

-- sql/distribute.sql
CREATE FUNCTION prepay._citus_installed() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'citus')
$$;
COMMENT ON FUNCTION prepay._citus_installed() IS 'Internal: whether the Citus extension is installed in this database.';

-- what the policies call once distributed, one row at a time (no sub-SELECT)
CREATE FUNCTION prepay._is_my_account(p_site_id integer, p_account_id bigint) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM prepay._my_accounts() t WHERE t.site_id = p_site_id AND t.account_id = p_account_id)
$$;
COMMENT ON FUNCTION prepay._is_my_account(integer, bigint) IS 'Internal: whether the caller sees this account as a tenant (prepay._my_accounts()); the account_tenant policies once distributed.';

CREATE FUNCTION prepay._tenant_sees_reading(p_site_id integer, p_meter_id bigint, p_read_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM prepay.meter m
                     JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id
                    WHERE m.site_id = p_site_id AND a.site_id = p_site_id AND m.meter_id = p_meter_id
                      AND p_read_at >= a.opened_at)
$$;
COMMENT ON FUNCTION prepay._tenant_sees_reading(integer, bigint, timestamptz) IS 'Internal: whether a tenant sees this reading (a meter of its account, since the account was opened); the reading_tenant policy once distributed.';

CREATE FUNCTION prepay._tenant_sees_bill(p_site_id integer, p_bill_id bigint) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM prepay.bill b WHERE b.site_id = p_site_id AND b.bill_id = p_bill_id)
$$;
COMMENT ON FUNCTION prepay._tenant_sees_bill(integer, bigint) IS 'Internal: whether a tenant sees this bill (its own accounts''); the bill_line_tenant policy once distributed.';

CREATE FUNCTION prepay._is_my_agent(p_site_id integer, p_agent_id text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM prepay._my_agents() a WHERE a.site_id = p_site_id AND a.agent_id = p_agent_id)
$$;
COMMENT ON FUNCTION prepay._is_my_agent(integer, text) IS 'Internal: whether the caller acts as this agent of this site (prepay._my_agents()); the agent_gateway policy once distributed.';

CREATE FUNCTION prepay._my_agent_sites() RETURNS integer[]
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY(SELECT DISTINCT a.site_id FROM prepay._my_agents() a ORDER BY 1)
$$;
COMMENT ON FUNCTION prepay._my_agent_sites() IS 'Internal: the sites the caller is an agent of (prepay._my_agents()); the agent_site and agent_insert policies once distributed.';

CREATE FUNCTION prepay._agent_sees_gateway(p_site_id integer, p_gateway_id bigint) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM prepay.gateway g WHERE g.site_id = p_site_id AND g.gateway_id = p_gateway_id)
$$;
COMMENT ON FUNCTION prepay._agent_sees_gateway(integer, bigint) IS 'Internal: whether an agent sees this gateway (its gateway policy); the agent_meter policy once distributed.';

CREATE FUNCTION prepay._mapping_tables() RETURNS regclass[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT '{prepay.site_access,prepay.tenant_access,prepay.agent_access,prepay.api_authenticator}'::pg_catalog.regclass[]
$$;
COMMENT ON FUNCTION prepay._mapping_tables() IS 'Internal: the tables that map roles to sites, accounts and agents: reference tables once distributed (prepay.distribute()), so that who a caller is can be read on every node.';

CREATE FUNCTION prepay._redraw_id() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- TG_ARGV: the id column and its sequence; drawn on this node, the one holding the shard
    RETURN pg_catalog.jsonb_populate_record(NEW,
        pg_catalog.jsonb_build_object(TG_ARGV[0], pg_catalog.nextval(TG_ARGV[1]::pg_catalog.regclass)));
END $$;
COMMENT ON FUNCTION prepay._redraw_id() IS
'Internal: BEFORE INSERT trigger that prepay.distribute() puts on the ledger and the alarms: the row''s id is drawn from the sequence of the node holding the site''s shard (Citus evaluates a column default on the node the statement came through), so that a site''s ids increase in the order its rows were written.  Unused on a single node.';

CREATE FUNCTION prepay._prepare_distribution() RETURNS void
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
    -- site, or the small mapping tables)
    FOR f IN
        SELECT pr.oid::regprocedure AS sig FROM pg_catalog.pg_proc pr
         WHERE pr.pronamespace = 'prepay'::pg_catalog.regnamespace
           AND pr.proname IN ('_rate', '_rate_many', '_my_sites', '_my_accounts', '_my_agents', '_reading_sites',
                              '_my_roles', '_mapping_role', '_authenticated_claims', '_claimed_accounts')
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
COMMENT ON FUNCTION prepay._prepare_distribution() IS
'Internal: the schema changes Citus needs, on this node (prepay.distribute() runs it on every node): policies without sub-SELECTs, site.name no longer unique, profile_register''s key without ON UPDATE CASCADE, the node''s own id range of every bigint sequence.  Idempotent.';

CREATE FUNCTION prepay.distribute() RETURNS TABLE (table_name regclass, distribution text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
BEGIN
    IF NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false) THEN
        PERFORM prepay._raise('42501', 'permission denied: prepay.distribute needs a superuser',
            pg_catalog.format('Role %s is not a superuser.', current_user),
            'Connect to the Citus coordinator as a superuser and call it again.');
    END IF;
    IF NOT prepay._citus_installed() THEN
        PERFORM prepay._raise('55000', pg_catalog.format('Citus is not installed in database %s', pg_catalog.current_database()),
            'prepay.distribute() distributes prepay''s tables by site over a Citus cluster; this server runs prepay on one node, which needs nothing more.',
            'Install Citus from its packages on every node, set shared_preload_libraries = ''citus'', restart, CREATE EXTENSION citus; before CREATE EXTENSION prepay; add the workers (citus_add_node) and call it again on the coordinator (docs/SCALE-OUT.md).');
    END IF;
    IF NOT prepay._distributed() THEN
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        PERFORM prepay._prepare_distribution();
        EXECUTE 'SELECT pg_catalog.bool_and(success) FROM pg_catalog.run_command_on_workers(''SELECT prepay._prepare_distribution()'')';
        EXECUTE 'SELECT pg_catalog.create_distributed_table(''prepay.site'', ''site_id'')';
        FOR t IN SELECT pg_catalog.unnest(prepay._mapping_tables()) AS rel LOOP
            EXECUTE pg_catalog.format('SELECT pg_catalog.create_reference_table(%L)', t.rel);
        END LOOP;
        FOR t IN
            SELECT c.oid::regclass AS rel FROM pg_catalog.pg_class c
             WHERE c.relnamespace = 'prepay'::pg_catalog.regnamespace AND c.relkind = 'r' AND c.relname <> 'site'
               AND NOT c.oid = ANY (prepay._mapping_tables())
             ORDER BY c.oid
        LOOP
            EXECUTE pg_catalog.format('SELECT pg_catalog.create_distributed_table(%L, ''site_id'', colocate_with => ''prepay.site'')', t.rel);
        END LOOP;
        CREATE TRIGGER redraw_entry_id BEFORE INSERT ON prepay.ledger
            FOR EACH ROW EXECUTE FUNCTION prepay._redraw_id('entry_id', 'prepay.ledger_entry_id_seq');
        CREATE TRIGGER redraw_alarm_id BEFORE INSERT ON prepay.alarm
            FOR EACH ROW EXECUTE FUNCTION prepay._redraw_id('alarm_id', 'prepay.alarm_id_seq');
        CREATE TRIGGER redraw_command_id BEFORE INSERT ON prepay.command
            FOR EACH ROW EXECUTE FUNCTION prepay._redraw_id('command_id', 'prepay.command_id_seq');
        CREATE TRIGGER redraw_notification_id BEFORE INSERT ON prepay.notification
            FOR EACH ROW EXECUTE FUNCTION prepay._redraw_id('notification_id', 'prepay.notification_id_seq');
    END IF;
    RETURN QUERY EXECUTE
        'SELECT p.logicalrelid::pg_catalog.regclass,
                CASE WHEN p.partmethod = ''n'' THEN ''reference''
                     ELSE pg_catalog.format(''by %s, colocation %s'', pg_catalog.column_to_column_name(p.logicalrelid, p.partkey), p.colocationid) END
           FROM pg_catalog.pg_dist_partition p JOIN pg_catalog.pg_class c ON c.oid = p.logicalrelid
          WHERE c.relnamespace = ''prepay''::pg_catalog.regnamespace ORDER BY 1::pg_catalog.text';
END $$;
COMMENT ON FUNCTION prepay.distribute() IS
'On a Citus coordinator, after CREATE EXTENSION prepay: distribute every table of schema prepay by site_id in one colocation group with prepay.site (the schema changes Citus needs are made on every node first, see sql/distribute.sql), and list the distributed tables.  Run again, it changes nothing and lists them.  55000 without Citus, 42501 for a non-superuser.  docs/SCALE-OUT.md.';

-- rights as security.sql gives every function: none for PUBLIC, EXECUTE for the prepay roles, none on a trigger
REVOKE ALL ON FUNCTION prepay._redraw_id() FROM PUBLIC;
REVOKE ALL ON FUNCTION prepay._distributed() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._distributed() TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay._relay_state(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._relay_state(text) TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay._announce(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._announce(text, text) TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay._citus_group() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._citus_group() TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay._citus_installed() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._citus_installed() TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay._is_my_account(integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._is_my_account(integer, bigint) TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay._tenant_sees_reading(integer, bigint, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._tenant_sees_reading(integer, bigint, timestamptz) TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay._tenant_sees_bill(integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._tenant_sees_bill(integer, bigint) TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay._is_my_agent(integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._is_my_agent(integer, text) TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay._my_agent_sites() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._my_agent_sites() TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay._agent_sees_gateway(integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._agent_sees_gateway(integer, bigint) TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay._mapping_tables() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._mapping_tables() TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay._prepare_distribution() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay._prepare_distribution() TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
REVOKE ALL ON FUNCTION prepay.distribute() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepay.distribute() TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
