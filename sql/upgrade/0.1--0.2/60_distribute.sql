-- sql/upgrade/0.1--0.2/60_distribute.sql: running distributed on Citus (sql/distribute.sql): the site's rating lock becomes the site row's lock once distributed, announcements skip Citus workers, the rating trigger's relay label cast Citus accepts, the caller's roles computed where the call is, the agent's catalog and command claims site by site, prepay.distribute() and the functions the distributed policies call.

--@ copy function prepay._lock_site_rating
--@ copy function prepay._distributed
--@ copy function prepay._relay_state
--@ copy function prepay._announce
--@ copy function prepay._citus_group
--@ copy function prepay._queue_command
--@ copy function prepay._alarm_level_changed

-- agent.sql: the agent's catalog and command claims site by site (one shard group each on Citus)
--@ copy function prepay._notify_config
--@ copy function prepay.agent_catalog
--@ copy function prepay.agent_claim_commands

-- security.sql: the mapping role without a correlated sub-query (Citus cannot plan one), the caller's roles computed here and passed on
--@ copy function prepay._mapping_role
--@ copy function prepay._my_sites
--@ copy function prepay._my_accounts
--@ copy function prepay._my_agents

-- sql/distribute.sql
--@ copy function prepay._citus_installed

-- what the policies call once distributed, one row at a time (no sub-SELECT)
--@ copy function prepay._is_my_account
--@ copy function prepay._tenant_sees_reading
--@ copy function prepay._tenant_sees_bill
--@ copy function prepay._is_my_agent
--@ copy function prepay._my_agent_sites
--@ copy function prepay._agent_sees_gateway
--@ copy function prepay._mapping_tables
--@ copy function prepay._redraw_id
--@ copy function prepay._prepare_distribution
--@ copy function prepay.distribute

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
