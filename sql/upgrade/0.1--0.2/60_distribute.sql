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
