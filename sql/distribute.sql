
/*-------------------------------------------------------------------------
 * sql/distribute.sql
 *     Running distributed on Citus, the site as the distribution key:
 *     prepay.distribute(), called once on a Citus coordinator after
 *     CREATE EXTENSION prepay, distributes every table of schema prepay by
 *     site_id in one colocation group with prepay.site, so that all the
 *     rows of a site (its meters, accounts, readings, ledger, alarms,
 *     commands, and the site row itself, which carries the site's rating
 *     lock) live in one shard group on one worker, and a reading is rated
 *     there, by the rating trigger on the reading's shard, with
 *     single-shard statements only.  docs/SCALE-OUT.md says when and how.
 *
 * What distributing changes, on every node (Citus does not carry these to
 * the copies CREATE EXTENSION made on the workers, so prepay.distribute()
 * runs prepay._prepare_distribution() on each node first):
 *   - the row-security policies read the caller's sites and accounts
 *     through STABLE functions instead of sub-SELECTs (Citus refuses
 *     sub-queries in the policies of distributed tables);
 *   - site.name is no longer unique (Citus cannot enforce a unique key
 *     without the distribution column): site_id is the site's identity;
 *   - profile_register's key to device_profile loses ON UPDATE CASCADE
 *     (refused by Citus): rename a profile by inserting the new one;
 *   - every prepay sequence draws ids from a range of its own on each
 *     node (the node's group id times 2^48 upwards, as Citus does for
 *     its own bigint sequences), so rows written on different nodes never
 *     collide; a ledger entry's and an alarm's id are drawn again, by a
 *     trigger on the shard, on the node that holds the site, so that the
 *     ids of one site increase in the order they were written whichever
 *     node a call came through.
 * The single-node schema is unchanged until prepay.distribute() runs.
 *
 * Who: a superuser on the coordinator.  Not in the generic EXECUTE grant
 * (security.sql revokes it from PUBLIC and the loop below it grants the
 * prepay roles; the function refuses anyone else with 42501).
 *-------------------------------------------------------------------------
 */

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
    ddl text;
    fk name;
    group_id bigint := 0;
BEGIN
    -- on a worker added after prepay.distribute(), the tables are Citus's
    -- already and Citus refuses DDL on them there unless told it is local
    IF prepay._citus_group() <> 0 THEN
        PERFORM pg_catalog.set_config('citus.enable_ddl_propagation', 'off', true);
    END IF;

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
    -- and accounts' shards, and no audit trigger, which would fire on each
    -- node's copy (docs/SCALE-OUT.md)
    FOR ddl IN
        SELECT pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', con.conrelid::regclass, con.conname)
          FROM pg_catalog.pg_constraint con
         WHERE con.contype = 'f' AND con.conrelid = ANY (prepay._mapping_tables())
        UNION ALL
        SELECT pg_catalog.format('DROP TRIGGER %I ON %s', tg.tgname, tg.tgrelid::regclass)
          FROM pg_catalog.pg_trigger tg
         WHERE tg.tgname = 'audit' AND tg.tgrelid = ANY (prepay._mapping_tables())
    LOOP
        EXECUTE ddl;
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
COMMENT ON FUNCTION prepay._prepare_distribution() IS
'Internal: the schema changes Citus needs, on this node (prepay.distribute() runs it on every node): policies without sub-SELECTs, site.name no longer unique, profile_register''s key without ON UPDATE CASCADE, the node''s own id range of every bigint sequence.  Idempotent.';

-- ids in blocks of 2^48: a node draws each bigint id from a block of its
-- own (at first its group id's, prepay._prepare_distribution); a block
-- above every id drawn so far is what keeps a site's ids increasing when
-- its shards move to another node (prepay.move_site)
CREATE FUNCTION prepay._max_id_block() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(max(s.last_value >> 48), 0) FROM pg_catalog.pg_sequences s
     WHERE s.schemaname = 'prepay' AND s.data_type = 'bigint'::pg_catalog.regtype
$$;
COMMENT ON FUNCTION prepay._max_id_block() IS 'Internal: the highest id block (id >> 48) any prepay bigint sequence of this node has drawn from.';

CREATE FUNCTION prepay._id_block_at_least(p_block bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s record;
BEGIN
    FOR s IN
        SELECT pg_catalog.format('%I.%I', q.schemaname, q.sequencename) AS seq, q.last_value
          FROM pg_catalog.pg_sequences q
         WHERE q.schemaname = 'prepay' AND q.data_type = 'bigint'::pg_catalog.regtype
    LOOP
        IF coalesce(s.last_value, 0) < (p_block << 48) THEN
            PERFORM pg_catalog.setval(s.seq::pg_catalog.regclass, p_block << 48);
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay._id_block_at_least(bigint) IS 'Internal: move every prepay bigint sequence of this node below id block p_block (ids p_block x 2^48 upwards) up to the start of that block.';

CREATE FUNCTION prepay._cluster_id_block() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b bigint;
BEGIN
    EXECUTE 'SELECT pg_catalog.max(result::bigint) FROM pg_catalog.run_command_on_workers(''SELECT prepay._max_id_block()'') WHERE success'
       INTO b;
    RETURN greatest(coalesce(b, 0), prepay._max_id_block());
END $$;
COMMENT ON FUNCTION prepay._cluster_id_block() IS 'Internal: on the Citus coordinator, the highest id block any node has drawn from.';

CREATE FUNCTION prepay.move_site(p_site_id integer, p_node_name text, p_node_port integer)
RETURNS TABLE (site_id integer, from_node text, to_node text, id_block bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    shard bigint;
    src record;
    target integer;
    block bigint;
BEGIN
    PERFORM prepay._require_superuser('move_site', NULL, 'Connect to the Citus coordinator as a superuser');
    IF NOT prepay._distributed() THEN
        PERFORM prepay._raise('55000', 'prepay is not distributed',
            'prepay.move_site moves a site''s shards between Citus workers; this database runs prepay on one node.',
            'Distribute first (prepay.distribute(), docs/SCALE-OUT.md).');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM prepay.site s WHERE s.site_id = p_site_id) THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id), NULL);
    END IF;
    EXECUTE 'SELECT groupid FROM pg_catalog.pg_dist_node WHERE nodename = $1 AND nodeport = $2 AND isactive AND noderole = ''primary'''
       INTO target USING p_node_name, p_node_port;
    IF target IS NULL THEN
        PERFORM prepay._raise('22023', 'unknown worker',
            pg_catalog.format('No active primary node %s:%s in pg_dist_node.', p_node_name, p_node_port),
            'Add it first (citus_add_node), then call prepay.distribute() again.');
    END IF;
    EXECUTE 'SELECT pg_catalog.get_shard_id_for_distribution_column(''prepay.site'', $1)' INTO shard USING p_site_id;
    EXECUTE 'SELECT nodename, nodeport FROM pg_catalog.pg_dist_shard_placement WHERE shardid = $1' INTO src USING shard;
    site_id := p_site_id;
    from_node := src.nodename || ':' || src.nodeport;
    to_node := p_node_name || ':' || p_node_port;
    IF src.nodename = p_node_name AND src.nodeport = p_node_port THEN
        id_block := NULL;
        RETURN NEXT;
        RETURN;
    END IF;
    -- first the target onto a block above every id drawn anywhere: the
    -- source keeps drawing below it until the move completes, the target
    -- draws above it from then on
    block := prepay._cluster_id_block() + 1;
    EXECUTE pg_catalog.format('SELECT pg_catalog.bool_and(success) FROM pg_catalog.run_command_on_workers(%L)',
        pg_catalog.format('SELECT prepay._id_block_at_least(%s) WHERE prepay._citus_group() = %s', block, target));
    -- then the site's shard group (every table of the site), writes to it
    -- blocked while it is copied
    EXECUTE 'SELECT pg_catalog.citus_move_shard_placement($1, $2, $3, $4, $5, shard_transfer_mode => ''block_writes'')'
      USING shard, src.nodename, src.nodeport, p_node_name, p_node_port;
    id_block := block;
    RETURN NEXT;
END $$;
COMMENT ON FUNCTION prepay.move_site(integer, text, integer) IS
'On a Citus coordinator: move a site''s shard group (every table of the site, and the sites sharing its shards) to another worker, keeping the site''s ids increasing in the order its rows are written: the target first draws from an id block above every id drawn so far.  Writes to the shard group wait while it is copied.  Returns the site, the nodes and the target''s new id block.  42501 for a non-superuser, 55000 when not distributed, PY007 unknown site, 22023 unknown worker.  docs/SCALE-OUT.md.';

CREATE FUNCTION prepay.distribute() RETURNS TABLE (table_name regclass, distribution text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    block bigint;
    failed text;
BEGIN
    PERFORM prepay._require_superuser('distribute', NULL, 'Connect to the Citus coordinator as a superuser');
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
             WHERE c.relnamespace = 'prepay'::pg_catalog.regnamespace AND c.relkind IN ('r', 'p') AND c.relname <> 'site'
               AND NOT c.relispartition    -- Citus distributes a partitioned table with its partitions
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
    ELSE
        -- again, after adding workers: the schema changes on the new ones
        -- (idempotent on the others), then every worker on an id block of its
        -- own above every id drawn so far (a new worker's own range may be one
        -- that prepay.move_site gave another)
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        EXECUTE 'SELECT pg_catalog.string_agg(nodename || '':'' || nodeport || '': '' || result, ''; '') FILTER (WHERE NOT success)
                   FROM pg_catalog.run_command_on_workers(''SELECT prepay._prepare_distribution()'')' INTO failed;
        IF failed IS NULL THEN
            block := prepay._cluster_id_block();
            EXECUTE pg_catalog.format('SELECT pg_catalog.string_agg(nodename || '':'' || nodeport || '': '' || result, ''; '') FILTER (WHERE NOT success)
                                         FROM pg_catalog.run_command_on_workers(%L)',
                pg_catalog.format('SELECT prepay._id_block_at_least(%s + prepay._citus_group())', block)) INTO failed;
        END IF;
        IF failed IS NOT NULL THEN
            PERFORM prepay._raise('55000', 'a worker could not be prepared for prepay', failed,
                'Check that prepay is installed on every worker (the same version), then call prepay.distribute() again.');
        END IF;
        -- the mapping tables on every worker (a move needs them on its target)
        EXECUTE 'SELECT pg_catalog.replicate_reference_tables(shard_transfer_mode => ''block_writes'')';
    END IF;
    RETURN QUERY EXECUTE
        'SELECT p.logicalrelid::pg_catalog.regclass,
                CASE WHEN p.partmethod = ''n'' THEN ''reference''
                     ELSE pg_catalog.format(''by %s, colocation %s'', pg_catalog.column_to_column_name(p.logicalrelid, p.partkey), p.colocationid) END
           FROM pg_catalog.pg_dist_partition p JOIN pg_catalog.pg_class c ON c.oid = p.logicalrelid
          WHERE c.relnamespace = ''prepay''::pg_catalog.regnamespace ORDER BY 1::pg_catalog.text';
END $$;
COMMENT ON FUNCTION prepay.distribute() IS
'On a Citus coordinator, after CREATE EXTENSION prepay: distribute every table of schema prepay by site_id in one colocation group with prepay.site (the schema changes Citus needs are made on every node first, see sql/distribute.sql), and list the distributed tables.  Run again (after citus_add_node), it makes the schema changes on new workers, moves every worker''s ids to a block of its own above every id drawn so far, and lists the tables.  55000 without Citus, 42501 for a non-superuser.  docs/SCALE-OUT.md.';

-- ---------------------------------------------------------------------
-- time partitions on Citus: the partitioned tables of prepay
-- (prepay.reading, prepay.ledger) by UTC month with Citus's create_time_partitions() instead of pg_partman
-- (prepay.partition_by_month and prepay.maintain_partitions call these
-- once distributed).  Citus creates a month partition of a distributed
-- table as CREATE TABLE ... PARTITION OF, on the coordinator and on every
-- shard; PostgreSQL refuses that while the default partition holds rows of
-- the month ("updated partition constraint for default partition would be
-- violated").  Such a month is made by hand instead, the way Citus attaches
-- a table: a table like the parent, distributed colocated with it, the
-- month's rows moved into it shard by shard (no trigger firing, as on one
-- node), then ATTACH PARTITION.  Retention drops months of the readings
-- only (sql/partition.sql).  Names are Citus's and pg_partman's: <table>_pYYYY_MM.
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._default_partition(p_table regclass) RETURNS regclass
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.oid::pg_catalog.regclass FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = p_table AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
$$;
COMMENT ON FUNCTION prepay._default_partition(regclass) IS 'Internal: the default partition of the partitioned table p_table; NULL when it has none.';

CREATE FUNCTION prepay._month_partitions(p_table regclass) RETURNS integer
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.count(*)::integer FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = p_table AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
$$;
COMMENT ON FUNCTION prepay._month_partitions(regclass) IS 'Internal: how many partitions of p_table take a range (every partition but the default one).';

CREATE FUNCTION prepay._citus_premake() RETURNS integer
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v text := pg_catalog.current_setting('prepay.partition_premake', true);
BEGIN
    IF v ~ '^[0-9]{1,2}$' AND v::integer BETWEEN 1 AND 36 THEN
        RETURN v::integer;
    END IF;
    RETURN 4;
END $$;
COMMENT ON FUNCTION prepay._citus_premake() IS
'Internal: on Citus, how many months ahead of now the job prepay-partitions keeps partitions: the setting prepay.partition_premake, which prepay.partition_by_month(p_premake) stores for the database (ALTER DATABASE ... SET); 4 when unset or not a number from 1 to 36.';

CREATE FUNCTION prepay._require_citus_table(p_table regclass, p_what text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    distributed boolean := false;
BEGIN
    PERFORM prepay._require_superuser(p_what);
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1 AND partmethod = ''h'')'
           INTO distributed USING p_table;
    END IF;
    IF NOT distributed OR prepay._citus_group() <> 0 THEN
        PERFORM prepay._raise('55000', pg_catalog.format('%s is not a distributed table of this Citus coordinator', p_table),
            pg_catalog.format('prepay.%s makes Citus time partitions of a table distributed by prepay.distribute(), on the coordinator.', p_what),
            'On one node, or before prepay.distribute(), call prepay.partition_by_month() (pg_partman); on Citus, call it on the coordinator.');
    END IF;
    IF prepay._partition_column(p_table) IS NULL
       OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partitioned_table p WHERE p.partrelid = p_table AND p.partstrat = 'r') THEN
        PERFORM prepay._raise('22023', pg_catalog.format('%s is not partitioned by range of one column', p_table),
            'Only a table partitioned by range of a time column is partitioned by month.', NULL);
    END IF;
END $$;
COMMENT ON FUNCTION prepay._require_citus_table(regclass, text) IS
'Internal: refuse unless the caller is a superuser (42501), this is the Citus coordinator and p_table is distributed by hash there (55000), and p_table is partitioned by range of one column (22023); p_what names the calling function in the messages.';

CREATE FUNCTION prepay._citus_month_table(p_table regclass, p_month timestamptz) RETURNS regclass
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC' AS $$
DECLARE
    nsp name;
    rel name;
    t text;
    made regclass;
BEGIN
    SELECT n.nspname, c.relname INTO nsp, rel
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_table;
    t := rel || '_p' || pg_catalog.to_char(pg_catalog.date_trunc('month', p_month), 'YYYY_MM');
    EXECUTE pg_catalog.format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES INCLUDING STORAGE)',
                              nsp, t, p_table);
    made := pg_catalog.format('%I.%I', nsp, t)::pg_catalog.regclass;
    -- by the parent's distribution column, in its colocation group: ATTACH
    -- PARTITION wants a partition colocated with its table
    EXECUTE 'SELECT pg_catalog.create_distributed_table($1, pg_catalog.column_to_column_name(p.logicalrelid, p.partkey), '
            'colocate_with => $2) FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $3'
      USING made, p_table::text, p_table;
    RETURN made;
END $$;
COMMENT ON FUNCTION prepay._citus_month_table(regclass, timestamptz) IS
'Internal, on a Citus coordinator: a new empty table <table>_pYYYY_MM for the UTC month of p_month, like the distributed partitioned table p_table (columns, defaults, checks, indexes) and distributed like it, colocated with it; not yet a partition (prepay._citus_attach_month attaches it).';

-- the rows of a month move as they are, no trigger firing, on the workers
-- as on one node (prepay._attach_month runs with session_replication_role
-- = replica): the ledger's partitions refuse DELETE (PY013), and the AFTER
-- INSERT triggers recorded these rows when they came.  Citus sends a SET
-- LOCAL to the workers of the transaction (citus.propagate_set_commands =
-- local) when it sees it run inside a statement of a function; only a
-- superuser may set session_replication_role, here and on the workers
CREATE FUNCTION prepay._citus_replication_role(p_role text, p_nested boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_role IS NULL OR p_role NOT IN ('origin', 'replica', 'local') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = pg_catalog.format('not a replication role: %s', p_role);
    END IF;
    IF NOT p_nested THEN
        -- through a statement: Citus propagates a SET LOCAL only from a
        -- nested executor (a plpgsql call of an expression has none)
        EXECUTE 'SELECT prepay._citus_replication_role($1, true)' USING p_role;
        RETURN;
    END IF;
    IF pg_catalog.current_setting('citus.propagate_set_commands', true) IS DISTINCT FROM 'local' THEN
        RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = 'citus.propagate_set_commands must be local here',
            DETAIL = 'session_replication_role would change on this node only.';
    END IF;
    EXECUTE pg_catalog.format('SET LOCAL session_replication_role = %L', p_role);
END $$;
COMMENT ON FUNCTION prepay._citus_replication_role(text, boolean) IS
'Internal, on a Citus coordinator, from a function with SET citus.propagate_set_commands = local (prepay._citus_attach_month): SET LOCAL session_replication_role = p_role (origin, replica or local) here and, through Citus, on every worker of this transaction, until set again.  Needs a superuser (PostgreSQL refuses the setting to anyone else).  p_nested: internal (the call Citus sees run inside a statement).';

CREATE FUNCTION prepay._citus_attach_month(p_table regclass, p_part regclass, p_month timestamptz) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC'
SET citus.propagate_set_commands = 'local' AS $$
DECLARE
    m_from timestamptz := pg_catalog.date_trunc('month', p_month);
    m_to timestamptz := pg_catalog.date_trunc('month', p_month) + interval '1 month';
    dflt regclass := prepay._default_partition(p_table);
    col name := prepay._partition_column(p_table);
    role_before text := pg_catalog.current_setting('session_replication_role');
    moved bigint := 0;
BEGIN
    IF dflt IS NOT NULL THEN
        -- no write to the table between the copy and the delete: writes
        -- through the coordinator lock the table there (reads go on)
        EXECUTE pg_catalog.format('LOCK TABLE %s IN EXCLUSIVE MODE', p_table);
        -- the month's rows of the default partition, shard by shard (the
        -- two tables are colocated: each worker copies its own), then gone
        -- from it: the default partition may not keep rows of an attached
        -- range.  No trigger fires meanwhile, on any node (above)
        PERFORM prepay._citus_replication_role('replica');
        EXECUTE pg_catalog.format('INSERT INTO %s SELECT * FROM %s WHERE %I >= %L AND %I < %L',
                                  p_part, dflt, col, m_from, col, m_to);
        GET DIAGNOSTICS moved = ROW_COUNT;
        EXECUTE pg_catalog.format('DELETE FROM %s WHERE %I >= %L AND %I < %L', dflt, col, m_from, col, m_to);
        PERFORM prepay._citus_replication_role(role_before);
    END IF;
    EXECUTE pg_catalog.format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)', p_table, p_part, m_from, m_to);
    RETURN moved;
END $$;
COMMENT ON FUNCTION prepay._citus_attach_month(regclass, regclass, timestamptz) IS
'Internal, on a Citus coordinator: move the rows of p_month''s UTC month from the default partition of p_table (prepay.reading or prepay.ledger) into p_part (made by prepay._citus_month_table, colocated: each worker moves its own shards'' rows), no trigger firing on any node (prepay._citus_replication_role), then attach p_part as that month''s partition (Citus attaches every shard).  Writes to p_table wait meanwhile (EXCLUSIVE lock).  Returns how many rows moved.';

CREATE FUNCTION prepay._citus_maintain_partitions(p_table regclass, p_premake integer,
                                                  p_from timestamptz DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC' AS $$
DECLARE
    before integer := prepay._month_partitions(p_table);
    m_from timestamptz := pg_catalog.date_trunc('month', coalesce(p_from, pg_catalog.now()));
    m_end timestamptz := pg_catalog.date_trunc('month', pg_catalog.now()) + pg_catalog.make_interval(months => p_premake + 1);
    dflt regclass := prepay._default_partition(p_table);
    col name := prepay._partition_column(p_table);
    months timestamptz[];
    m timestamptz;
    done boolean;
BEGIN
    PERFORM prepay._require_citus_table(p_table, '_citus_maintain_partitions');
    IF before = 0 THEN
        RETURN 0;       -- not partitioned by month (prepay.partition_by_month() did not run)
    END IF;
    -- (months are cut in UTC explicitly: the workers evaluate the query,
    -- each in its own session's time zone)
    -- a month of the window that has rows in the default partition (a
    -- reading from a clock far ahead, before its month was made) is moved
    -- into a partition of its own first: Citus's CREATE TABLE ... PARTITION
    -- OF would be refused for it
    IF dflt IS NOT NULL THEN
        EXECUTE pg_catalog.format('SELECT pg_catalog.array_agg(DISTINCT pg_catalog.date_trunc(''month'', d.%I, ''UTC'')) FROM %s d '
                                  'WHERE d.%I >= %L AND d.%I < %L', col, dflt, col, m_from, col, m_end)
           INTO months;
        FOREACH m IN ARRAY coalesce(months, '{}') LOOP
            PERFORM prepay._citus_attach_month(p_table, prepay._citus_month_table(p_table, m), m);
        END LOOP;
    END IF;
    -- the other months of the window: Citus makes them (and their shards)
    EXECUTE 'SELECT pg_catalog.create_time_partitions($1, interval ''1 month'', $2, $3)'
       INTO done USING p_table, m_end, m_from;
    RETURN prepay._month_partitions(p_table) - before;
END $$;
COMMENT ON FUNCTION prepay._citus_maintain_partitions(regclass, integer, timestamptz) IS
'Internal, on a Citus coordinator: give the distributed table p_table, partitioned by month, a partition for every UTC month from p_from (default: this month) until p_premake months past this one, with Citus''s create_time_partitions(); a month whose rows wait in the default partition gets its partition by prepay._citus_attach_month first.  Does nothing (0) while p_table has no month partition.  Returns how many partitions it made.  Refuses as prepay._require_citus_table says.';

CREATE FUNCTION prepay._citus_partition_by_month(p_table regclass, p_premake integer) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC' AS $$
DECLARE
    dflt regclass := prepay._default_partition(p_table);
    col name := prepay._partition_column(p_table);
    months timestamptz[];
    m timestamptz;
    first_month timestamptz;
    made integer := 0;
BEGIN
    PERFORM prepay._require_citus_table(p_table, '_citus_partition_by_month');
    IF p_premake IS NULL OR p_premake < 1 OR p_premake > 36 THEN
        PERFORM prepay._raise('22023', 'premake must be between 1 and 36 months',
            pg_catalog.format('Given: %s.', p_premake), 'Partitions are kept that many months ahead of now (4 by default).');
    END IF;
    -- the premake, for the job prepay-partitions (a new session: the database's setting)
    EXECUTE pg_catalog.format('ALTER DATABASE %I SET prepay.partition_premake = %s', pg_catalog.current_database(), p_premake);
    PERFORM pg_catalog.set_config('prepay.partition_premake', p_premake::text, false);
    IF prepay._month_partitions(p_table) = 0 THEN
        -- the first time: every month of the default partition gets its
        -- partition, rows moved, no write meanwhile
        EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', p_table);
        IF dflt IS NOT NULL THEN
            EXECUTE pg_catalog.format('SELECT pg_catalog.array_agg(DISTINCT pg_catalog.date_trunc(''month'', d.%I, ''UTC'') ORDER BY pg_catalog.date_trunc(''month'', d.%I, ''UTC'')) FROM %s d',
                                      col, col, dflt)
               INTO months;
        END IF;
        FOREACH m IN ARRAY coalesce(months, '{}') LOOP
            PERFORM prepay._citus_attach_month(p_table, prepay._citus_month_table(p_table, m), m);
            made := made + 1;
        END LOOP;
        -- the months between the first and now too, as pg_partman does on one node
        first_month := LEAST(months[1], pg_catalog.date_trunc('month', pg_catalog.now()));
    END IF;
    IF made = 0 AND prepay._month_partitions(p_table) = 0 THEN
        -- an empty table: this month on (prepay._citus_maintain_partitions
        -- keeps away from a table without month partitions)
        EXECUTE 'SELECT pg_catalog.create_time_partitions($1, interval ''1 month'', $2, $3)'
          USING p_table, pg_catalog.date_trunc('month', pg_catalog.now()) + interval '1 month', pg_catalog.date_trunc('month', pg_catalog.now());
        made := 1;
    END IF;
    RETURN made + prepay._citus_maintain_partitions(p_table, p_premake, first_month);
END $$;
COMMENT ON FUNCTION prepay._citus_partition_by_month(regclass, integer) IS
'Internal, on a Citus coordinator (prepay.partition_by_month() once distributed): partition the distributed table p_table (partitioned by range of a time column) by UTC month.  The first time, every month with rows in the default partition gets its own partition <table>_pYYYY_MM, its rows moved shard by shard (prepay._citus_attach_month), under an exclusive lock; then Citus''s create_time_partitions() makes every month from the first until p_premake months past this one.  Stores p_premake (1 to 36, else 22023) for the database (prepay.partition_premake) for the job prepay-partitions.  Returns how many partitions it made.  Refuses as prepay._require_citus_table says.';
