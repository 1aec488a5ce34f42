-- The agent's SQL: shipped device profiles per site, the catalog, lost
-- contact marks, and the command state machine with its errors.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/fixtures/fresh.psql
CREATE SCHEMA agent_t;
INSERT INTO prepay.site (name) VALUES ('Agent site');
SELECT site_id AS s FROM prepay.site WHERE name = 'Agent site' \gset

-- a new site gets the shipped profiles
SELECT profile, shipped, relay_write_address, trip_values, close_values, relay_read_address,
       relay_tripped_value, relay_closed_value, relay_verified
  FROM prepay.device_profile WHERE site_id = :s ORDER BY profile;
SELECT profile, meaning, to_hex(address) AS address, type, word_order, scale, unit
  FROM prepay.profile_register WHERE site_id = :s ORDER BY profile, address;
SELECT prepay.install_device_profiles(:s) AS added_again;

-- energy never as float
SELECT regress.try(format($$INSERT INTO prepay.profile_register (site_id, profile, meaning, address, type, unit)
                           VALUES (%s, 'generic', 'peak', 2, 'float', 'kWh') RETURNING 1$$, :s));
SELECT regress.try(format($$INSERT INTO prepay.profile_register (site_id, profile, meaning, address, type, unit)
                           VALUES (%s, 'generic', 'power', 2, 'float', 'kW') RETURNING 'float power ok'$$, :s));

-- a gateway, two meters, one of an unknown profile
INSERT INTO prepay.gateway (site_id, name, host, port, agent_id, poll_interval)
VALUES (:s, 'gw', '127.0.0.1', 1502, 'regress', '2 seconds');
SELECT gateway_id AS g FROM prepay.gateway WHERE site_id = :s \gset
INSERT INTO prepay.meter (site_id, code, gateway_id, unit_id, device_profile)
VALUES (:s, 'AG1', :g, 1, 'ddsy1352'), (:s, 'AG2', :g, 2, 'nosuch');
SELECT meter_id AS m FROM prepay.meter WHERE site_id = :s AND code = 'AG1' \gset
SELECT m.code, c.unit_id, c.device_profile, c.poll_interval_ms, c.meaning, c.address, c.type, c.scale
  FROM prepay.agent_catalog('regress') c JOIN prepay.meter m USING (site_id, meter_id) ORDER BY m.code, c.address;
SELECT count(*) AS other_agent FROM prepay.agent_catalog('nobody');

-- lost and found
SELECT prepay.agent_meter_lost(:s, :m, 3, 'timeout');
SELECT prepay.agent_meter_lost(:s, :m, 4, 'timeout');
SELECT lost_since IS NOT NULL AS lost FROM prepay.meter WHERE site_id = :s AND meter_id = :m;
SELECT kind, detail FROM prepay.alarm WHERE site_id = :s AND cleared_at IS NULL;
SELECT prepay.agent_meter_found(:s, :m);
SELECT count(*) AS active_alarms FROM prepay.alarm WHERE site_id = :s AND cleared_at IS NULL;
SELECT prepay.agent_gateway_lost(:s, :g, 'connect: Connection refused');
SELECT prepay.agent_gateway_lost(:s, :g, 'connect: Connection refused');
SELECT kind, detail FROM prepay.alarm WHERE site_id = :s AND cleared_at IS NULL;
SELECT prepay.agent_gateway_found(:s, :g);
SELECT lost_since FROM prepay.gateway WHERE site_id = :s;
SELECT regress.try(format('SELECT prepay.agent_meter_lost(%s, 999999, 3, %L)', :s, 'x'));
SELECT regress.try(format('SELECT prepay.agent_gateway_lost(%s, 999999, %L)', :s, 'x'));

-- commands: claim, done, failed and retried, superseded
SELECT prepay.trip(:s, :m) AS c1 \gset
SELECT command_id = :c1 AS claimed, action, attempts FROM prepay.agent_claim_commands('regress');
SELECT count(*) AS nothing_more FROM prepay.agent_claim_commands('regress');
SELECT regress.try(format('SELECT prepay.agent_command_done(%s, %s, %L)', :s, :c1, 'closed'));
SELECT prepay.agent_command_done(:s, :c1, 'tripped');
SELECT state FROM prepay.command WHERE site_id = :s AND command_id = :c1;
SELECT relay_state FROM prepay.meter WHERE site_id = :s AND meter_id = :m;
SELECT regress.try(format('SELECT prepay.agent_command_done(%s, %s, %L)', :s, :c1, 'tripped'));
SELECT regress.try(format('SELECT prepay.agent_command_done(%s, 999999, %L)', :s, 'tripped'));

SELECT prepay.close(:s, :m) AS c2 \gset
SELECT count(*) AS claimed FROM prepay.agent_claim_commands('regress');
SELECT prepay.agent_command_failed(:s, :c2, 'timeout', '0 seconds', 2) AS after_first_failure;
SELECT state, attempts, last_error FROM prepay.command WHERE site_id = :s AND command_id = :c2;
SELECT count(*) AS claimed_again FROM prepay.agent_claim_commands('regress');
SELECT prepay.agent_command_failed(:s, :c2, 'timeout', '0 seconds', 2) AS after_second_failure;

-- a sent command taken back at agent start; a newer queued one supersedes a failure
SELECT prepay.trip(:s, :m) AS c3 \gset
SELECT count(*) AS claimed FROM prepay.agent_claim_commands('regress');
SELECT count(*) AS without_sent FROM prepay.agent_claim_commands('regress');
SELECT attempts FROM prepay.agent_claim_commands('regress', true);
SELECT prepay.close(:s, :m) <> :c3 AS newer_queued;
SELECT prepay.agent_command_failed(:s, :c3, 'timeout') AS superseded;
SELECT last_error ~ 'superseded by command' AS says_so FROM prepay.command WHERE site_id = :s AND command_id = :c3;

DROP SCHEMA agent_t;
