/*-------------------------------------------------------------------------
 * sql/agent.sql
 *     Everything prepay-agent needs from the database: device profiles
 *     (register maps as data), the agent's catalog, lost-contact marks,
 *     the relay command state machine and the prepay_config notification.
 *     Appended after prepay.sql and tariff.sql into prepay--<version>.sql.
 *
 * Vocabulary
 *     device profile  a named register map of a meter model (per site):
 *                     which holding registers hold which value, how to
 *                     decode them, and how to trip, close and read back
 *                     the relay.
 *     shipped profile a profile prepay installs into every site (ddsy1352,
 *                     dtsy1352, adf400l, generic).  Edit a copy, not the
 *                     shipped one: shipped rows are recreated, not dumped.
 *     agent           a prepay-agent process, named by gateway.agent_id.
 *
 * Command life as the agent sees it (see docs/AGENT.md):
 *     queued --agent_claim_commands--> sent --agent_command_done--> done
 *                                           --agent_command_failed--> queued
 *                                             (retry after a backoff of at most
 *                                             60 s, as long as the command is
 *                                             still called for; a command_failing
 *                                             alarm from the 5th attempt) or
 *                                             failed (superseded, no longer
 *                                             called for, or impossible)
 *     A queued retry becomes due at once when contact with its meter or
 *     gateway returns (agent_meter_found, agent_gateway_found) and when the
 *     agent (re)connects (agent_claim_commands with p_include_sent).
 *
 * Errors raised here use SQLSTATEs PY1xx (docs/API.md).
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- device profiles
-- ---------------------------------------------------------------------

CREATE TABLE prepay.device_profile (
    site_id             integer NOT NULL REFERENCES prepay.site,
    profile             text NOT NULL CHECK (profile ~ '^[a-z0-9_]+$'),
    description         text NOT NULL,
    shipped             boolean NOT NULL DEFAULT false,
    relay_write_address integer CHECK (relay_write_address BETWEEN 0 AND 65535),
    trip_values         integer[] CHECK (0 <= ALL (trip_values) AND 65535 >= ALL (trip_values)),
    close_values        integer[] CHECK (0 <= ALL (close_values) AND 65535 >= ALL (close_values)),
    protect_values      integer[] CHECK (0 <= ALL (protect_values) AND 65535 >= ALL (protect_values)),
    relay_read_address  integer CHECK (relay_read_address BETWEEN 0 AND 65535),
    relay_read_count    smallint CHECK (relay_read_count IN (1, 2)),
    relay_state_mask    bigint NOT NULL DEFAULT 4294967295 CHECK (relay_state_mask BETWEEN 1 AND 4294967295),
    relay_tripped_value bigint,
    relay_closed_value  bigint,
    relay_verified      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (site_id, profile),
    CHECK ((relay_write_address IS NULL) = (trip_values IS NULL AND close_values IS NULL)),
    CHECK ((relay_read_address IS NULL) = (relay_read_count IS NULL)),
    CHECK (relay_read_address IS NULL OR (relay_tripped_value IS NOT NULL AND relay_closed_value IS NOT NULL
                                          AND relay_tripped_value <> relay_closed_value)),
    CHECK (relay_write_address IS NULL OR relay_read_address IS NOT NULL)
);
COMMENT ON TABLE prepay.device_profile IS 'A meter model''s register map, per site: the registers to read (prepay.profile_register) and how to trip, close and protect the relay and read its state back.  meter.device_profile names one.  Changing a profile makes the agents reload (NOTIFY prepay_config).';
COMMENT ON COLUMN prepay.device_profile.site_id IS 'Site the profile belongs to.';
COMMENT ON COLUMN prepay.device_profile.profile IS 'Profile name, as written in prepay.meter.device_profile (lower case, digits, underscore).';
COMMENT ON COLUMN prepay.device_profile.description IS 'Meter model, sources of the map, and what is still unverified.';
COMMENT ON COLUMN prepay.device_profile.shipped IS 'true for the profiles prepay installs into every site; they are recreated by a trigger, never dumped.  Copy one under another name to change it.';
COMMENT ON COLUMN prepay.device_profile.relay_write_address IS 'First holding register written (FC16) to trip, close or protect; NULL when the meter has no remote relay.';
COMMENT ON COLUMN prepay.device_profile.trip_values IS 'Register values written from relay_write_address to trip (cut supply).';
COMMENT ON COLUMN prepay.device_profile.close_values IS 'Register values written from relay_write_address to close (restore supply).';
COMMENT ON COLUMN prepay.device_profile.protect_values IS 'Register values written to put the meter on keep-power; NULL when the meter has no such function.';
COMMENT ON COLUMN prepay.device_profile.relay_read_address IS 'First holding register read back (FC03) for the relay state, after a command and with every reading.';
COMMENT ON COLUMN prepay.device_profile.relay_read_count IS '1 or 2 registers read back; two are combined high word first.';
COMMENT ON COLUMN prepay.device_profile.relay_state_mask IS 'Bits of the read-back value that carry the relay state (the rest, e.g. an enable flag, is ignored).';
COMMENT ON COLUMN prepay.device_profile.relay_tripped_value IS 'Masked read-back value meaning tripped.';
COMMENT ON COLUMN prepay.device_profile.relay_closed_value IS 'Masked read-back value meaning closed; any other value is reported as an unknown relay state.';
COMMENT ON COLUMN prepay.device_profile.relay_verified IS 'false while the relay registers are to be confirmed on hardware.';

CREATE TABLE prepay.profile_register (
    site_id     integer NOT NULL,
    profile     text NOT NULL,
    meaning     text NOT NULL CHECK (meaning IN ('total_energy', 'sharp', 'peak', 'flat', 'valley',
                                                 'power', 'voltage', 'relay_state')),
    address     integer NOT NULL CHECK (address BETWEEN 0 AND 65535),
    type        text NOT NULL CHECK (type IN ('u16', 'i16', 'u32', 'i32', 'float')),
    word_order  text NOT NULL DEFAULT 'high_first' CHECK (word_order IN ('high_first', 'low_first')),
    scale       smallint NOT NULL DEFAULT 0 CHECK (scale BETWEEN -6 AND 6),
    unit        text NOT NULL,
    shipped     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (site_id, profile, meaning),
    FOREIGN KEY (site_id, profile) REFERENCES prepay.device_profile ON UPDATE CASCADE ON DELETE CASCADE,
    CHECK (type <> 'float' OR meaning NOT IN ('total_energy', 'sharp', 'peak', 'flat', 'valley')),
    CHECK (type <> 'float' OR scale = 0)
);
COMMENT ON TABLE prepay.profile_register IS 'One value of a device profile: where it is and how to decode it.  Value = integer register value x 10^scale, converted to a decimal string exactly; energy never passes through floating point (float is refused for energy meanings).';
COMMENT ON COLUMN prepay.profile_register.site_id IS 'Site of the profile.';
COMMENT ON COLUMN prepay.profile_register.profile IS 'Profile the register belongs to.';
COMMENT ON COLUMN prepay.profile_register.meaning IS 'What the value is: total_energy, sharp, peak, flat, valley (cumulative registers), power (kW), voltage (V) or relay_state.';
COMMENT ON COLUMN prepay.profile_register.address IS 'Holding register address (PDU address, 0-based), read with FC03.';
COMMENT ON COLUMN prepay.profile_register.type IS 'u16, i16 (one register), u32, i32 or float (two registers; float not for energy).';
COMMENT ON COLUMN prepay.profile_register.word_order IS 'Order of the two registers of a 32-bit value: high_first (reg0 << 16 | reg1) or low_first.';
COMMENT ON COLUMN prepay.profile_register.scale IS 'Decimal exponent: the value is the register integer times 10^scale (-2 for 0.01 kWh).';
COMMENT ON COLUMN prepay.profile_register.unit IS 'Unit of the scaled value (kWh, kW, V, m3).';
COMMENT ON COLUMN prepay.profile_register.shipped IS 'true for registers of shipped profiles (recreated, not dumped).';

-- ---------------------------------------------------------------------
-- the shipped profiles
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.install_device_profiles(p_site_id integer)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO prepay.device_profile AS d (site_id, profile, description, shipped, relay_write_address,
           trip_values, close_values, relay_read_address, relay_read_count, relay_state_mask,
           relay_tripped_value, relay_closed_value, relay_verified)
    VALUES
      (p_site_id, 'ddsy1352', 'Acrel DDSY1352 single-phase prepaid meter.  Energy map from the vendor manual (0000H-0010H); relay forced control 0057H-0058H from unofficial sources: to be confirmed on hardware.',
       true, 87, '{1,1}', '{1,0}', 87, 2, 65535, 1, 0, false),
      (p_site_id, 'dtsy1352', 'Acrel DTSY1352 three-phase prepaid meter, same energy and relay map as ddsy1352 (unofficial sources; relay to be confirmed on hardware).',
       true, 87, '{1,1}', '{1,0}', 87, 2, 65535, 1, 0, false),
      (p_site_id, 'adf400l', 'Acrel ADF400L multi-user meter, single-phase user area (one unit id per user).  Forced-control word 0801H: 0100H trips, 0001H closes (unverified on hardware).',
       true, 2049, '{256}', '{1}', 2049, 1, 65535, 256, 1, false),
      (p_site_id, 'generic', 'Configurable template: copy it under a new name and set its registers and relay.  As shipped it reads a U32 total energy in 0.01 kWh at 0000H and has no relay.',
       true, NULL, NULL, NULL, NULL, NULL, 4294967295, NULL, NULL, false)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;

    INSERT INTO prepay.profile_register (site_id, profile, meaning, address, type, scale, unit, shipped)
    SELECT p_site_id, p.profile, r.meaning, r.address, r.type, r.scale, r.unit, true
      FROM (VALUES ('ddsy1352'), ('dtsy1352')) AS p (profile),
           (VALUES ('total_energy', 0, 'u32', -2, 'kWh'), ('sharp', 2, 'u32', -2, 'kWh'),
                   ('peak', 4, 'u32', -2, 'kWh'), ('flat', 6, 'u32', -2, 'kWh'),
                   ('valley', 8, 'u32', -2, 'kWh'), ('voltage', 11, 'u16', -1, 'V'),
                   ('power', 13, 'i16', -3, 'kW')) AS r (meaning, address, type, scale, unit)
    UNION ALL
    SELECT p_site_id, 'adf400l', r.meaning, r.address, r.type, r.scale, r.unit, true
      FROM (VALUES ('total_energy', 774, 'u32', -2, 'kWh'), ('sharp', 1024, 'u32', -2, 'kWh'),
                   ('peak', 1026, 'u32', -2, 'kWh'), ('flat', 1028, 'u32', -2, 'kWh'),
                   ('valley', 1030, 'u32', -2, 'kWh'), ('power', 770, 'i16', -3, 'kW'),
                   ('voltage', 768, 'u16', -1, 'V')) AS r (meaning, address, type, scale, unit)
    UNION ALL
    SELECT p_site_id, 'generic', 'total_energy', 0, 'u32', -2, 'kWh', true
    ON CONFLICT DO NOTHING;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.install_device_profiles(integer) IS
'Install the shipped device profiles (ddsy1352, dtsy1352, adf400l, generic) into a site, keeping any that exist; returns how many profiles were added.  Runs for every new site (trigger site_device_profiles) and for the existing sites at install time.';

CREATE FUNCTION prepay._site_device_profiles() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay.install_device_profiles(NEW.site_id);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._site_device_profiles() IS 'Internal: AFTER INSERT row trigger on prepay.site installing the shipped device profiles.';
CREATE TRIGGER site_device_profiles AFTER INSERT ON prepay.site
    FOR EACH ROW EXECUTE FUNCTION prepay._site_device_profiles();
COMMENT ON TRIGGER site_device_profiles ON prepay.site IS
'A new site gets its own copies of the shipped device profiles (prepay._site_device_profiles).';
-- shipped profiles are not dumped, so a restore must recreate them, also in
-- session_replication_role = replica (the documented restore procedure)
ALTER TABLE prepay.site ENABLE ALWAYS TRIGGER site_device_profiles;

SELECT prepay.install_device_profiles(site_id) FROM prepay.site;

-- ---------------------------------------------------------------------
-- configuration changes wake the agents
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._notify_config() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._announce('prepay_config', TG_TABLE_NAME);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._notify_config() IS 'Internal: sends NOTIFY prepay_config (payload: the table changed) so that agents reload their catalog.';

CREATE TRIGGER gateway_config AFTER INSERT OR DELETE OR UPDATE OF transport, host, port, serial_device, baud,
        parity, data_bits, stop_bits, agent_id, poll_interval ON prepay.gateway
    FOR EACH STATEMENT EXECUTE FUNCTION prepay._notify_config();
CREATE TRIGGER meter_config AFTER INSERT OR DELETE OR UPDATE OF gateway_id, unit_id, device_profile, kind, active
    ON prepay.meter FOR EACH STATEMENT EXECUTE FUNCTION prepay._notify_config();
CREATE TRIGGER device_profile_config AFTER INSERT OR DELETE OR UPDATE ON prepay.device_profile
    FOR EACH STATEMENT EXECUTE FUNCTION prepay._notify_config();
CREATE TRIGGER profile_register_config AFTER INSERT OR DELETE OR UPDATE ON prepay.profile_register
    FOR EACH STATEMENT EXECUTE FUNCTION prepay._notify_config();
COMMENT ON TRIGGER gateway_config ON prepay.gateway IS
'A change of what the agent polls (transport, address, serial settings, agent, interval) tells the agents to re-read their catalog (NOTIFY prepay_config).';
COMMENT ON TRIGGER meter_config ON prepay.meter IS
'A change of what the agent polls (gateway, unit, profile, kind, active) tells the agents to re-read their catalog (NOTIFY prepay_config).';
COMMENT ON TRIGGER device_profile_config ON prepay.device_profile IS
'A changed device profile tells the agents to re-read their catalog (NOTIFY prepay_config).';
COMMENT ON TRIGGER profile_register_config ON prepay.profile_register IS
'A changed register map tells the agents to re-read their catalog (NOTIFY prepay_config).';

-- ---------------------------------------------------------------------
-- the agent's catalog
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.agent_catalog(p_agent_id text)
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

-- ---------------------------------------------------------------------
-- lost contact
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._raise_alarm_once(p_site_id integer, p_kind text, p_meter_id bigint, p_detail text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO prepay.alarm (site_id, kind, meter_id, detail)
    SELECT p_site_id, p_kind, p_meter_id, p_detail
     WHERE NOT EXISTS (SELECT 1 FROM prepay.alarm a
                        WHERE a.site_id = p_site_id AND a.kind = p_kind AND a.account_id IS NULL
                          AND a.meter_id IS NOT DISTINCT FROM p_meter_id AND a.cleared_at IS NULL);
END $$;
COMMENT ON FUNCTION prepay._raise_alarm_once(integer, text, bigint, text) IS 'Internal: raise an alarm of a kind for a meter (or for nothing) unless one is already active.';

CREATE FUNCTION prepay._agent_unknown(p_site_id integer, p_what text, p_id bigint)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._raise(CASE p_what WHEN 'meter' THEN 'PY101' ELSE 'PY102' END,
        pg_catalog.format('unknown %s for the agent', p_what),
        pg_catalog.format('Site %s has no %s %s.', p_site_id, p_what, p_id),
        'Reload the agent''s catalog (NOTIFY prepay_config).');
END $$;
COMMENT ON FUNCTION prepay._agent_unknown(integer, text, bigint) IS
'Internal: refuse a meter (PY101) or gateway (PY102) an agent reported on that its site does not have: the agent''s catalog is out of date.';

CREATE FUNCTION prepay.agent_meter_lost(p_site_id integer, p_meter_id bigint, p_failures integer, p_error text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize_agent(p_site_id, (SELECT m.gateway_id FROM prepay.meter m
                                                 WHERE m.site_id = p_site_id AND m.meter_id = p_meter_id));
    UPDATE prepay.meter SET lost_since = pg_catalog.now()
     WHERE site_id = p_site_id AND meter_id = p_meter_id AND lost_since IS NULL;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM prepay.meter WHERE site_id = p_site_id AND meter_id = p_meter_id) THEN
        PERFORM prepay._agent_unknown(p_site_id, 'meter', p_meter_id);
    END IF;
    PERFORM prepay._raise_alarm_once(p_site_id, 'meter_lost', p_meter_id,
        pg_catalog.format('Meter %s did not answer %s times in a row: %s', p_meter_id, p_failures, p_error));
END $$;
COMMENT ON FUNCTION prepay.agent_meter_lost(integer, bigint, integer, text) IS
'Called by the agent after a meter failed p_failures consecutive polls: sets meter.lost_since (if not yet set) and raises one meter_lost alarm.  Idempotent.  PY101 for an unknown meter.';

CREATE FUNCTION prepay.agent_meter_found(p_site_id integer, p_meter_id bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize_agent(p_site_id, (SELECT m.gateway_id FROM prepay.meter m
                                                 WHERE m.site_id = p_site_id AND m.meter_id = p_meter_id));
    UPDATE prepay.meter SET lost_since = NULL WHERE site_id = p_site_id AND meter_id = p_meter_id;
    UPDATE prepay.alarm SET cleared_at = pg_catalog.now()
     WHERE site_id = p_site_id AND kind = 'meter_lost' AND meter_id = p_meter_id AND cleared_at IS NULL;
    PERFORM prepay._wake_commands(p_site_id, NULL, p_meter_id);
END $$;
COMMENT ON FUNCTION prepay.agent_meter_found(integer, bigint) IS
'Called by the agent on the first good read of a lost meter: clears meter.lost_since and its meter_lost alarm, and makes the meter''s commands waiting for a retry due at once (prepay._wake_commands).  Idempotent.';

CREATE FUNCTION prepay.agent_gateway_lost(p_site_id integer, p_gateway_id bigint, p_error text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize_agent(p_site_id, p_gateway_id);
    UPDATE prepay.gateway SET lost_since = pg_catalog.now()
     WHERE site_id = p_site_id AND gateway_id = p_gateway_id AND lost_since IS NULL;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM prepay.gateway WHERE site_id = p_site_id AND gateway_id = p_gateway_id) THEN
        PERFORM prepay._agent_unknown(p_site_id, 'gateway', p_gateway_id);
    END IF;
    INSERT INTO prepay.alarm (site_id, kind, detail)
    SELECT p_site_id, 'gateway_lost', pg_catalog.format('Gateway %s: %s', p_gateway_id, p_error)
     WHERE NOT EXISTS (SELECT 1 FROM prepay.alarm a
                        WHERE a.site_id = p_site_id AND a.kind = 'gateway_lost' AND a.cleared_at IS NULL
                          AND a.detail LIKE pg_catalog.format('Gateway %s:%%', p_gateway_id));
END $$;
COMMENT ON FUNCTION prepay.agent_gateway_lost(integer, bigint, text) IS
'Called by the agent when no meter of a gateway answered a whole sweep (or it cannot connect): sets gateway.lost_since and raises one gateway_lost alarm (its detail starts with "Gateway <id>:").  Idempotent.  PY102 for an unknown gateway.';

CREATE FUNCTION prepay.agent_gateway_found(p_site_id integer, p_gateway_id bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize_agent(p_site_id, p_gateway_id);
    UPDATE prepay.gateway SET lost_since = NULL WHERE site_id = p_site_id AND gateway_id = p_gateway_id;
    UPDATE prepay.alarm SET cleared_at = pg_catalog.now()
     WHERE site_id = p_site_id AND kind = 'gateway_lost' AND cleared_at IS NULL
       AND detail LIKE pg_catalog.format('Gateway %s:%%', p_gateway_id);
    PERFORM prepay._wake_commands(p_site_id, p_gateway_id, NULL);
END $$;
COMMENT ON FUNCTION prepay.agent_gateway_found(integer, bigint) IS
'Called by the agent on the first good read through a lost gateway: clears gateway.lost_since and its gateway_lost alarm, and makes the commands of its meters waiting for a retry due at once (prepay._wake_commands).  Idempotent.';

-- ---------------------------------------------------------------------
-- relay commands
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.agent_claim_commands(p_agent_id text, p_include_sent boolean DEFAULT false)
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

CREATE FUNCTION prepay._agent_command(p_site_id integer, p_command_id bigint)
RETURNS prepay.command LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c prepay.command;
BEGIN
    SELECT * INTO c FROM prepay.command WHERE site_id = p_site_id AND command_id = p_command_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY103', 'unknown command',
            pg_catalog.format('Site %s has no command %s.', p_site_id, p_command_id), NULL);
    END IF;
    IF c.state <> 'sent' THEN
        PERFORM prepay._raise('PY104', 'command is not in flight',
            pg_catalog.format('Command %s is %s, not sent.', p_command_id, c.state),
            'Only a command claimed with prepay.agent_claim_commands can be completed.');
    END IF;
    RETURN c;
END $$;
COMMENT ON FUNCTION prepay._agent_command(integer, bigint) IS 'Internal: lock a command the agent reports on; PY103 if unknown, PY104 if it is not sent.';

CREATE FUNCTION prepay.agent_command_done(p_site_id integer, p_command_id bigint, p_relay_state prepay.relay_state)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c prepay.command;
BEGIN
    PERFORM prepay._authorize_agent(p_site_id, (SELECT m.gateway_id FROM prepay.command q
                                                  JOIN prepay.meter m ON m.site_id = q.site_id AND m.meter_id = q.meter_id
                                                 WHERE q.site_id = p_site_id AND q.command_id = p_command_id));
    c := prepay._agent_command(p_site_id, p_command_id);
    IF p_relay_state IS DISTINCT FROM (CASE c.action WHEN 'trip' THEN 'tripped' ELSE 'closed' END)::prepay.relay_state THEN
        PERFORM prepay._raise('PY105', 'relay state read back does not match the command',
            pg_catalog.format('Command %s is a %s; the meter reads %s.', p_command_id, c.action,
                              coalesce(p_relay_state::text, 'unknown')),
            'Report it with prepay.agent_command_failed.');
    END IF;
    UPDATE prepay.command SET state = 'done', updated_at = pg_catalog.now(), last_error = NULL
     WHERE site_id = p_site_id AND command_id = p_command_id;
    UPDATE prepay.meter SET relay_state = p_relay_state, relay_state_at = pg_catalog.now()
     WHERE site_id = p_site_id AND meter_id = c.meter_id;
END $$;
COMMENT ON FUNCTION prepay.agent_command_done(integer, bigint, prepay.relay_state) IS
'The agent carried out a command and read the relay state back: the command is done and meter.relay_state is set.  PY105 if the state read back is not what the command asked for; PY103, PY104.';

CREATE FUNCTION prepay._command_moot(c prepay.command)
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
COMMENT ON FUNCTION prepay._command_moot(prepay.command) IS
'Internal: why the account''s or the operator''s state no longer calls for a command (NULL while it still does): a newer command of the meter (queued, sent or done) supersedes it; the meter was removed; a trip of a protected meter or account; an arrears trip of an account closed, detached from the meter, postpaid or out of arrears.  A close is called for until superseded.';

CREATE FUNCTION prepay._command_impossible(c prepay.command)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
    SELECT pg_catalog.format('impossible: device profile %s has no remote relay', d.profile)
      FROM prepay.meter m
      JOIN prepay.device_profile d ON d.site_id = m.site_id AND d.profile = m.device_profile
     WHERE m.site_id = c.site_id AND m.meter_id = c.meter_id AND d.relay_write_address IS NULL);
END $$;
COMMENT ON FUNCTION prepay._command_impossible(prepay.command) IS
'Internal: why a command can never be carried out (NULL when it can): the meter''s device profile has no remote relay.  Retrying would not help; the operator changes the profile or the installation.';

CREATE FUNCTION prepay._command_alarm(c prepay.command, p_error text)
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
COMMENT ON FUNCTION prepay._command_alarm(prepay.command, text) IS
'Internal: raise the meter''s command_failing alarm for a command (detail "Command <id>: <action> of meter <id> (account, reason) not done after <n> attempt(s); last error: ..."), or bring the detail of the active one up to date: one alarm per meter, raised once.';

CREATE FUNCTION prepay._command_alarm_clear() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE prepay.alarm SET cleared_at = pg_catalog.now()
     WHERE site_id = NEW.site_id AND kind = 'command_failing' AND meter_id = NEW.meter_id AND cleared_at IS NULL
       AND (NEW.state = 'done' OR detail LIKE pg_catalog.format('Command %s:%%', NEW.command_id));
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._command_alarm_clear() IS
'Internal trigger function: a command done clears its meter''s command_failing alarm (the relay follows the latest order); a command cancelled (superseded before it was sent again) clears the alarm naming it.';
CREATE TRIGGER command_alarm_clear AFTER UPDATE OF state ON prepay.command
    FOR EACH ROW WHEN (NEW.state IN ('done', 'cancelled') AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION prepay._command_alarm_clear();
COMMENT ON TRIGGER command_alarm_clear ON prepay.command IS
'Clears command_failing alarms when a command is done or cancelled (prepay._command_alarm_clear).';

CREATE FUNCTION prepay._wake_commands(p_site_id integer, p_gateway_id bigint, p_meter_id bigint)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    woken bigint;
    n integer := 0;
BEGIN
    FOR woken IN
        UPDATE prepay.command c
           SET not_before = LEAST(c.not_before,
                   CASE WHEN c.action = 'trip' AND c.reason = 'arrears'
                        THEN prepay.cut_allowed_at(c.site_id, pg_catalog.now()) ELSE pg_catalog.now() END)
          FROM prepay.meter m
         WHERE c.site_id = p_site_id AND c.state = 'queued' AND c.attempts > 0
           AND c.not_before > pg_catalog.now()
           AND m.site_id = c.site_id AND m.meter_id = c.meter_id
           AND (m.meter_id = p_meter_id OR m.gateway_id = p_gateway_id)
        RETURNING c.command_id
    LOOP
        PERFORM pg_catalog.pg_notify('prepay_command', p_site_id || '/' || woken);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay._wake_commands(integer, bigint, bigint) IS
'Internal: contact with a meter (p_meter_id) or a gateway (p_gateway_id) returned: its queued commands waiting for a retry become due now (an arrears trip at the end of any no-cut window in force), with NOTIFY prepay_command.  Returns how many.';

CREATE FUNCTION prepay.agent_command_failed(p_site_id integer, p_command_id bigint, p_error text,
                                            p_retry_after interval DEFAULT '10 seconds',
                                            p_alarm_after integer DEFAULT 5)
RETURNS prepay.command_state LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c prepay.command;
    why text;
    retry_at timestamptz;
BEGIN
    PERFORM prepay._authorize_agent(p_site_id, (SELECT m.gateway_id FROM prepay.command q
                                                  JOIN prepay.meter m ON m.site_id = q.site_id AND m.meter_id = q.meter_id
                                                 WHERE q.site_id = p_site_id AND q.command_id = p_command_id));
    c := prepay._agent_command(p_site_id, p_command_id);
    why := coalesce(prepay._command_moot(c), prepay._command_impossible(c));
    IF why IS NULL THEN
        retry_at := pg_catalog.now() + LEAST(GREATEST(coalesce(p_retry_after, '0 seconds'),
                                                                            '0 seconds'), '60 seconds');
        IF c.action = 'trip' AND c.reason = 'arrears' THEN
            retry_at := prepay.cut_allowed_at(p_site_id, retry_at);
        END IF;
        BEGIN
            UPDATE prepay.command SET state = 'queued', updated_at = pg_catalog.now(), not_before = retry_at,
                   last_error = p_error
             WHERE site_id = p_site_id AND command_id = p_command_id;
        EXCEPTION WHEN unique_violation THEN
            -- a newer command was queued for the meter meanwhile
            why := 'superseded by a newer queued command';
        END;
    END IF;
    IF why IS NULL THEN
        IF c.attempts >= p_alarm_after THEN
            PERFORM prepay._command_alarm(c, p_error);
        END IF;
        RETURN 'queued';
    END IF;
    UPDATE prepay.command SET state = 'failed', updated_at = pg_catalog.now(),
           last_error = pg_catalog.format('%s; %s', p_error, why)
     WHERE site_id = p_site_id AND command_id = p_command_id;
    IF why LIKE 'impossible:%' THEN
        PERFORM prepay._command_alarm(c, pg_catalog.format('%s; %s', p_error, why));
    ELSE
        UPDATE prepay.alarm SET cleared_at = pg_catalog.now()
         WHERE site_id = p_site_id AND kind = 'command_failing' AND meter_id = c.meter_id AND cleared_at IS NULL
           AND detail LIKE pg_catalog.format('Command %s:%%', p_command_id);
    END IF;
    RETURN 'failed';
END $$;
COMMENT ON FUNCTION prepay.agent_command_failed(integer, bigint, text, interval, integer) IS
'The agent could not carry out a command (no answer, exception, wrong read-back).  A command still called for is never abandoned: it is queued again after p_retry_after (capped to 0..60 s; an arrears trip not before the end of a no-cut window, as when it was queued), and from attempt p_alarm_after on the meter''s command_failing alarm is raised once (its detail kept current).  It is failed only when it is no longer called for (prepay._command_moot: superseded by a newer command, meter removed, trip of a protected meter or account, arrears trip of an account no longer in arrears) or impossible (prepay._command_impossible: no remote relay, which raises the alarm); last_error says why.  Returns the new state (queued or failed).  PY103, PY104.';

CREATE FUNCTION prepay.agent_commands_failing(p_agent_id text)
RETURNS bigint LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize_agent_id(p_agent_id);
    RETURN (SELECT pg_catalog.count(*)
              FROM prepay.command c
              JOIN prepay.meter m ON m.site_id = c.site_id AND m.meter_id = c.meter_id
              JOIN prepay.gateway g ON g.site_id = m.site_id AND g.gateway_id = m.gateway_id
             WHERE g.agent_id = p_agent_id AND prepay._is_agent(g.site_id, g.agent_id)
               AND c.state IN ('queued', 'sent') AND c.attempts > 0 AND c.last_error IS NOT NULL);
END $$;
COMMENT ON FUNCTION prepay.agent_commands_failing(text) IS
'How many commands of one agent''s meters failed their last attempt and are still to be carried out (queued for a retry, or sent again): the agent''s prepay_agent_commands_failing gauge.  Only the sites where the caller is mapped as this agent are counted.';

-- ---------------------------------------------------------------------
-- pg_dump: user rows only (shipped profiles are recreated by the trigger)
-- ---------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('prepay.device_profile', 'WHERE NOT shipped');
SELECT pg_catalog.pg_extension_config_dump('prepay.profile_register', 'WHERE NOT shipped');
