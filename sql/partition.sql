
/*-------------------------------------------------------------------------
 * sql/partition.sql
 *     Years of readings: prepay.reading and prepay.ledger by UTC month,
 *     retention of readings with archives, and the sizes an operator
 *     watches (docs/OPERATIONS.md).
 *
 *     prepay.reading is partitioned by range of read_at, prepay.ledger by
 *     range of created_at.  A fresh install has only their default
 *     partitions prepay.reading_default and prepay.ledger_default, so that
 *     prepay works without pg_partman.  prepay.partition_by_month() gives
 *     every UTC month its own partition (prepay.reading_pYYYY_MM,
 *     prepay.ledger_pYYYY_MM, pg_partman's names), moving the rows the
 *     default partitions hold, and registers both tables with pg_partman,
 *     which the job prepay-partitions (prepay.maintain_partitions(),
 *     scheduled by prepay.schedule_jobs()) asks to create the months ahead
 *     of time.  The default partitions stay the extension's own tables
 *     (pg_dump keeps them with the extension).
 *
 *     Retention: site.reading_keep_months (NULL: forever).  The job
 *     prepay-retention (prepay.archive_due_partitions()) archives each
 *     month partition every site with readings in it lets go:
 *     prepay.archive_reading_month() writes it to a CSV file on the
 *     server, a SHA-256 checksum file and a JSON manifest, reads the file
 *     back to check it holds the same rows, and only then detaches and
 *     drops the partition.  prepay.restore_reading_archive() attaches an
 *     archive again.  Only readings are ever dropped: the ledger's month
 *     partitions, charges and rollups stay (a charge's reading times are in
 *     the ledger; money records are kept as long as the law asks, and
 *     prepay never drops a ledger partition).
 *
 * Who: all of it needs a superuser (server files, pg_partman, DDL); the
 * functions are SECURITY INVOKER and check it themselves.  Month
 * boundaries are UTC: the functions set timezone = UTC, which pg_partman
 * then follows too.
 *
 * Appended after reports.sql and before schedule.sql (whose job list names
 * these functions) and security.sql (which grants EXECUTE generically).
 *-------------------------------------------------------------------------
 */

-- retention, per site
ALTER TABLE prepay.site ADD COLUMN reading_keep_months integer CHECK (reading_keep_months >= 1);
COMMENT ON COLUMN prepay.site.reading_keep_months IS 'How many whole months of readings the database keeps after the month ends; older month partitions are archived to files and dropped by the retention job (docs/OPERATIONS.md), once every site with readings in them allows it.  NULL (the default): keep forever.  The ledger and everything else are never dropped by retention.';

CREATE FUNCTION prepay._partman_schema() RETURNS name
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_partman'
$$;
COMMENT ON FUNCTION prepay._partman_schema() IS 'Internal: the schema pg_partman is installed in; NULL when it is not installed in this database.';

CREATE FUNCTION prepay._by_month(p_table regclass) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s name := prepay._partman_schema();
    found boolean;
BEGIN
    IF s IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %I.part_config WHERE parent_table = %L)', s, p_table::text)
       INTO found;
    RETURN found;
END $$;
COMMENT ON FUNCTION prepay._by_month(regclass) IS 'Internal: whether p_table (prepay.reading or prepay.ledger) is registered with pg_partman (prepay.partition_by_month() ran).';

CREATE FUNCTION prepay._month_tables() RETURNS regclass[]
LANGUAGE sql IMMUTABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT '{prepay.reading,prepay.ledger}'::pg_catalog.regclass[]
$$;
COMMENT ON FUNCTION prepay._month_tables() IS 'Internal: the tables partitioned by UTC month (prepay.partition_by_month()): the readings by read_at and the ledger by created_at.  Only the readings are ever archived and dropped.';

-- sizes: once distributed on Citus, a table of the coordinator is an empty
-- shell and its rows are in shards on the workers (a reference table has a
-- copy on every node); its size is what its shards hold, found without
-- Citus installed on one node (the queries naming Citus's functions are
-- built at run time, as sql/distribute.sql does)
CREATE FUNCTION prepay._relation_sizes(p_relids regclass[])
RETURNS TABLE (relid regclass, total_bytes bigint, reltuples real, rows_inserted bigint)
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- every shard of a prepay table a node holds: id, estimated rows, rows
    -- inserted (catalog and statistics only: no lock on the shards, so
    -- that a transaction holding locks on them, which this query from
    -- other sessions would wait for, can ask)
    on_node constant text := $q$
        SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(s.shardid, c.reltuples,
                                                                        pg_catalog.pg_stat_get_tuples_inserted(c.oid))), '[]')
          FROM pg_catalog.pg_dist_shard s
          JOIN pg_catalog.pg_class l ON l.oid = s.logicalrelid
          JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(pg_catalog.shard_name(s.logicalrelid, s.shardid))
         WHERE l.relnamespace = 'prepay'::pg_catalog.regnamespace$q$;
    counts jsonb := '[]';
    node record;
BEGIN
    IF NOT prepay._distributed() THEN
        RETURN QUERY
            SELECT r.r, pg_catalog.pg_total_relation_size(r.r), c.reltuples, st.n_tup_ins
              FROM pg_catalog.unnest(p_relids) r (r)
              JOIN pg_catalog.pg_class c ON c.oid = r.r
              LEFT JOIN pg_catalog.pg_stat_all_tables st ON st.relid = r.r;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_locks k
                WHERE k.pid = pg_catalog.pg_backend_pid() AND k.locktype = 'relation' AND k.mode = 'AccessExclusiveLock') THEN
        -- this transaction changed (or locked) tables, on this node and on
        -- the workers' shards: the sessions that would measure the shards
        -- would wait for it, and it for them.  Not known until it ends
        RETURN QUERY SELECT r.r, NULL::bigint, NULL::real, NULL::bigint FROM pg_catalog.unnest(p_relids) r (r);
        RETURN;
    END IF;
    FOR node IN EXECUTE 'SELECT nodeid, success, result FROM pg_catalog.run_command_on_all_nodes($1)' USING on_node LOOP
        IF node.success THEN
            counts := counts || node.result::jsonb;
        ELSE
            RAISE WARNING 'the row counts of Citus node % are left out', node.nodeid USING DETAIL = node.result;
        END IF;
    END LOOP;
    -- bytes: every placement (Citus's citus_shard_sizes(), which sees this
    -- transaction's shards); rows: each shard once; a table Citus does not
    -- know: this node's
    RETURN QUERY EXECUTE $q$
        WITH placed AS (
            SELECT z.shard_id::bigint AS shardid, pg_catalog.sum(z.size)::bigint AS bytes
              FROM pg_catalog.citus_shard_sizes() z GROUP BY 1
        ), counted AS (
            SELECT (e ->> 0)::bigint AS shardid, pg_catalog.max((e ->> 1)::real) AS reltuples,
                   pg_catalog.max((e ->> 2)::bigint) AS inserted
              FROM pg_catalog.jsonb_array_elements($2) e GROUP BY 1
        ), shards AS (
            SELECT s.logicalrelid, pg_catalog.count(*) AS n,
                   coalesce(pg_catalog.sum(p.bytes), 0)::bigint AS bytes,
                   CASE WHEN pg_catalog.bool_and(coalesce(k.reltuples, -1) < 0) THEN -1
                        ELSE pg_catalog.sum(GREATEST(k.reltuples, 0)) END::real AS reltuples,
                   coalesce(pg_catalog.sum(k.inserted), 0)::bigint AS inserted
              FROM pg_catalog.pg_dist_shard s
              LEFT JOIN placed p USING (shardid)
              LEFT JOIN counted k USING (shardid)
             WHERE s.logicalrelid = ANY ($1)
             GROUP BY s.logicalrelid
        )
        SELECT r.r,
               CASE WHEN d.n IS NULL THEN pg_catalog.pg_total_relation_size(r.r) ELSE d.bytes END,
               CASE WHEN d.n IS NULL THEN c.reltuples ELSE d.reltuples END,
               CASE WHEN d.n IS NULL THEN pg_catalog.pg_stat_get_tuples_inserted(r.r) ELSE d.inserted END
          FROM pg_catalog.unnest($1) r (r)
          JOIN pg_catalog.pg_class c ON c.oid = r.r
          LEFT JOIN shards d ON d.logicalrelid = r.r$q$
      USING p_relids, counts;
END $$;
COMMENT ON FUNCTION prepay._relation_sizes(regclass[]) IS
'Internal: for each of the tables p_relids, bytes on disk with indexes and TOAST, the planner''s estimated rows (reltuples: -1 never analyzed) and rows inserted since the statistics were reset.  Once distributed on Citus, of its shards: bytes over every placement (a reference table''s copy on each node, Citus''s citus_shard_sizes()), rows and inserts of each shard once, from every node (a node that does not answer is left out, with a warning); a table that is not Citus''s: this node''s; all NULL in a transaction holding an ACCESS EXCLUSIVE lock on a table (DDL, LOCK TABLE: the shards are measured by other sessions, which would wait for it).  On one node, this node''s.';

CREATE FUNCTION prepay._partition_ranges(p_table regclass)
RETURNS TABLE (partition_name regclass, is_default boolean, from_time timestamptz, to_time timestamptz)
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.oid::regclass,
           pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT',
           CASE WHEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
                THEN (pg_catalog.regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz
           END,
           CASE WHEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
                THEN (pg_catalog.regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
           END
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = p_table
$$;
COMMENT ON FUNCTION prepay._partition_ranges(regclass) IS 'Internal: the partitions of a table partitioned by range of a time, with the range each takes (NULL for the default partition); no sizes (prepay._partitions).';

CREATE FUNCTION prepay._partitions(p_table regclass)
RETURNS TABLE (partition_name regclass, is_default boolean, from_time timestamptz, to_time timestamptz,
               total_bytes bigint, rows_estimated bigint)
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.partition_name, p.is_default, p.from_time, p.to_time, z.total_bytes, z.reltuples::bigint
      FROM prepay._partition_ranges(p_table) p
      LEFT JOIN prepay._relation_sizes(ARRAY(SELECT q.partition_name FROM prepay._partition_ranges(p_table) q)) z
        ON z.relid = p.partition_name
$$;
COMMENT ON FUNCTION prepay._partitions(regclass) IS 'Internal: the partitions of a table partitioned by range of a time, with their sizes (prepay._relation_sizes: on Citus, their shards''): prepay.reading_partitions, prepay.ledger_partitions.';

-- the two views of partitions have the same columns
CREATE FUNCTION prepay._comment_partitions_view(p_view regclass, p_column text, p_rows text) RETURNS void
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT * FROM (VALUES
            ('partition_name', 'The partition.'),
            ('is_default', pg_catalog.format('true for the default partition (%s no month partition takes).', p_rows)),
            ('from_time', pg_catalog.format('First %s it takes (a UTC month''s start); NULL for the default partition.', p_column)),
            ('to_time', pg_catalog.format('First %s it no longer takes; NULL for the default partition.', p_column)),
            ('total_bytes', 'Size on disk with its indexes and TOAST.'),
            ('rows_estimated', 'Rows as the planner''s statistics estimate them (-1: never vacuumed or analyzed).')) AS v (col, description)
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON COLUMN %s.%I IS %L', p_view, c.col, c.description);
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay._comment_partitions_view(regclass, text, text) IS
'Internal: the column comments of a view of partitions (prepay.reading_partitions, prepay.ledger_partitions): p_column is the time the table is partitioned by, p_rows what its rows are.';

CREATE VIEW prepay.reading_partitions AS
SELECT p.partition_name, p.is_default, p.from_time, p.to_time, p.total_bytes, p.rows_estimated
  FROM prepay._partitions('prepay.reading') p;
COMMENT ON VIEW prepay.reading_partitions IS 'The partitions of prepay.reading: name, whether it is the default partition, the range of read_at it takes (from inclusive, to exclusive), size with indexes and estimated rows.';
SELECT prepay._comment_partitions_view('prepay.reading_partitions', 'read_at', 'readings');

CREATE VIEW prepay.ledger_partitions AS
SELECT p.partition_name, p.is_default, p.from_time, p.to_time, p.total_bytes, p.rows_estimated
  FROM prepay._partitions('prepay.ledger') p;
COMMENT ON VIEW prepay.ledger_partitions IS 'The partitions of prepay.ledger: name, whether it is the default partition, the range of created_at it takes (from inclusive, to exclusive), size with indexes and estimated rows.  Retention never drops one (docs/OPERATIONS.md).';
SELECT prepay._comment_partitions_view('prepay.ledger_partitions', 'created_at', 'entries');

CREATE FUNCTION prepay._month_partition(p_table regclass, p_month timestamptz) RETURNS regclass
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC' AS $$
    SELECT p.partition_name FROM prepay._partition_ranges(p_table) p WHERE p.from_time = pg_catalog.date_trunc('month', p_month)
$$;
COMMENT ON FUNCTION prepay._month_partition(regclass, timestamptz) IS 'Internal: the partition of p_table (prepay.reading or prepay.ledger) that takes the UTC month of p_month; NULL when none does (its rows are in the default partition).';

CREATE FUNCTION prepay._partition_name(p_table regclass, p_month timestamptz) RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.relname || '_p' || pg_catalog.to_char(p_month AT TIME ZONE 'UTC', 'YYYY_MM')
      FROM pg_catalog.pg_class c WHERE c.oid = p_table
$$;
COMMENT ON FUNCTION prepay._partition_name(regclass, timestamptz) IS 'Internal: the name of p_table''s month partition of p_month''s UTC month, as pg_partman names it (reading_pYYYY_MM, ledger_pYYYY_MM).';

CREATE FUNCTION prepay._partition_column(p_table regclass) RETURNS name
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.attname FROM pg_catalog.pg_partitioned_table pt
      JOIN pg_catalog.pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
     WHERE pt.partrelid = p_table
$$;
COMMENT ON FUNCTION prepay._partition_column(regclass) IS 'Internal: the column p_table is partitioned by (read_at for the readings, created_at for the ledger).';

CREATE FUNCTION prepay._attach_month(p_table regclass, p_month timestamptz, p_partition regclass) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC'
-- the rows move as they are: no trigger fires (the ledger's partitions
-- refuse DELETE, its AFTER INSERT triggers have recorded these entries
-- already, and the new table has none until attached)
SET session_replication_role = replica AS $$
DECLARE
    m_from timestamptz := pg_catalog.date_trunc('month', p_month);
    m_to timestamptz := pg_catalog.date_trunc('month', p_month) + interval '1 month';
    col name := prepay._partition_column(p_table);
    moved bigint;
BEGIN
    -- the month's rows the default partition holds move into the new one
    -- (the default partition may not keep rows of an attached range)
    EXECUTE pg_catalog.format(
        'WITH m AS (DELETE FROM prepay.%I WHERE %I >= %L AND %I < %L RETURNING *) '
        'INSERT INTO %s SELECT * FROM m', (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = p_table) || '_default',
        col, m_from, col, m_to, p_partition);
    GET DIAGNOSTICS moved = ROW_COUNT;
    EXECUTE pg_catalog.format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                              p_table, p_partition, m_from, m_to);
    RETURN moved;
END $$;
COMMENT ON FUNCTION prepay._attach_month(regclass, timestamptz, regclass) IS
'Internal: move the rows of p_month''s UTC month from the default partition of p_table (prepay.reading or prepay.ledger) into p_partition (a table like p_table), no trigger firing, and attach it as that month''s partition; returns how many rows moved.';

CREATE FUNCTION prepay.partition_by_month(p_premake integer DEFAULT 4)
RETURNS TABLE (table_name regclass, partition_name regclass, is_default boolean, from_time timestamptz,
               to_time timestamptz, total_bytes bigint, rows_estimated bigint)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC' AS $$
DECLARE
    tab regclass;
BEGIN
    PERFORM prepay._require_superuser('partition_by_month');
    IF p_premake IS NULL OR p_premake < 1 OR p_premake > 36 THEN
        PERFORM prepay._raise('22023', 'premake must be between 1 and 36 months',
            pg_catalog.format('Given: %s.', p_premake), 'pg_partman keeps that many months'' partitions ready ahead of now (4 by default).');
    END IF;
    IF prepay._distributed() THEN
        -- on Citus: Citus's create_time_partitions, readings first, then
        -- the ledger (the rating's order)
        FOREACH tab IN ARRAY prepay._month_tables() LOOP
            PERFORM prepay._citus_partition_by_month(tab, p_premake);
        END LOOP;
    ELSE
        PERFORM prepay._partman_partition_by_month(p_premake);
    END IF;
    FOREACH tab IN ARRAY prepay._month_tables() LOOP
        RETURN QUERY SELECT tab, p.partition_name, p.is_default, p.from_time, p.to_time, p.total_bytes, p.rows_estimated
                       FROM prepay._partitions(tab) p ORDER BY p.from_time NULLS LAST;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.partition_by_month(integer) IS
'Partition prepay.reading (by read_at) and prepay.ledger (by created_at) by UTC month: every month with rows in a default partition gets its own partition (prepay.reading_pYYYY_MM, prepay.ledger_pYYYY_MM, rows moved under an exclusive lock), and partitions are made p_premake months ahead (1 to 36, default 4); the job prepay-partitions keeps them ahead.  On one node with pg_partman (prepay._partman_partition_by_month; 55000 without it).  Once distributed on Citus, on the coordinator, with Citus''s create_time_partitions(), p_premake kept as the database setting prepay.partition_premake (prepay._citus_partition_by_month; docs/SCALE-OUT.md).  Called again, it only changes premake and runs the maintenance.  Returns the partitions of both tables (on Citus, their sizes NULL when it changed them: prepay._relation_sizes).  Needs a superuser (42501).  docs/OPERATIONS.md.';

CREATE FUNCTION prepay._partman_partition_by_month(p_premake integer) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC' AS $$
DECLARE
    pm name := prepay._partman_schema();
    tab regclass;
    months timestamptz[];
    m timestamptz;
    first_month timestamptz;
    t text;
    parent text;
    col name;
BEGIN
    PERFORM prepay._require_superuser('partition_by_month');
    IF pm IS NULL THEN
        PERFORM prepay._raise('55000', pg_catalog.format('pg_partman is not installed in database %s', pg_catalog.current_database()),
            'prepay.reading and prepay.ledger are partitioned by month with pg_partman, which creates the months ahead of time; without it every row stays in the default partitions, which works but cannot be archived month by month.',
            'Install postgresql-15-partman; CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman; then call it again (docs/OPERATIONS.md).');
    END IF;

    -- no row comes in meanwhile: the months are cut out of the default
    -- partitions and the tables handed to pg_partman at once (readings
    -- first, then the ledger: the rating's order)
    FOREACH tab IN ARRAY prepay._month_tables() LOOP
        EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', tab);
    END LOOP;
    FOREACH tab IN ARRAY prepay._month_tables() LOOP
        IF prepay._by_month(tab) THEN
            EXECUTE pg_catalog.format('UPDATE %I.part_config SET premake = %s WHERE parent_table = %L', pm, p_premake, tab::text);
            CONTINUE;
        END IF;
        parent := (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = tab);
        col := prepay._partition_column(tab);
        -- the months first: no query on the table stays open while it changes
        EXECUTE pg_catalog.format('SELECT pg_catalog.array_agg(DISTINCT pg_catalog.date_trunc(''month'', d.%I)) FROM prepay.%I d',
                                  col, parent || '_default')
           INTO months;
        FOREACH m IN ARRAY coalesce(months, '{}') LOOP
            t := prepay._partition_name(tab, m);
            EXECUTE pg_catalog.format('CREATE TABLE prepay.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                                      'INCLUDING INDEXES INCLUDING STORAGE)', t, tab);
            PERFORM prepay._attach_month(tab, m, pg_catalog.format('prepay.%I', t)::regclass);
        END LOOP;
        SELECT LEAST(pg_catalog.min(p.from_time), pg_catalog.date_trunc('month', pg_catalog.now()))
          INTO first_month FROM prepay._partition_ranges(tab) p WHERE NOT p.is_default;
        -- pg_partman makes a default partition of its own, by the name of
        -- ours: ours is set aside meanwhile, then takes its place again
        EXECUTE pg_catalog.format('ALTER TABLE %s DETACH PARTITION prepay.%I', tab, parent || '_default');
        EXECUTE pg_catalog.format('ALTER TABLE prepay.%I RENAME TO %I', parent || '_default', parent || '_default_kept');
        EXECUTE pg_catalog.format('SELECT %I.create_parent(p_parent_table := %L, p_control := %L, '
                                  'p_type := ''native'', p_interval := ''monthly'', p_premake := %s, '
                                  'p_start_partition := %L, p_jobmon := false)',
                                  pm, tab::text, col, p_premake, pg_catalog.to_char(first_month, 'YYYY-MM-DD HH24:MI:SS'));
        EXECUTE pg_catalog.format('DROP TABLE prepay.%I', parent || '_default');
        EXECUTE pg_catalog.format('ALTER TABLE prepay.%I RENAME TO %I', parent || '_default_kept', parent || '_default');
        EXECUTE pg_catalog.format('ALTER TABLE %s ATTACH PARTITION prepay.%I DEFAULT', tab, parent || '_default');
        -- months ahead even while no row arrives
        EXECUTE pg_catalog.format('UPDATE %I.part_config SET infinite_time_partitions = true WHERE parent_table = %L', pm, tab::text);
    END LOOP;
    PERFORM prepay.maintain_partitions();
END $$;
COMMENT ON FUNCTION prepay._partman_partition_by_month(integer) IS
'Internal: prepay.partition_by_month() on one node: every month with rows in the default partition of prepay.reading or prepay.ledger gets its own partition (reading_pYYYY_MM, ledger_pYYYY_MM, rows moved under an exclusive lock), the tables are registered with pg_partman, and partitions are made p_premake months ahead.  Called again, it only changes premake (and partitions a table not partitioned yet, such as the ledger of an installation partitioned before it was) and runs the maintenance.  55000 without pg_partman.';

CREATE FUNCTION prepay.maintain_partitions() RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC' AS $$
DECLARE
    tab regclass;
    before integer;
    made integer := 0;
BEGIN
    PERFORM prepay._require_superuser('maintain_partitions');
    FOREACH tab IN ARRAY prepay._month_tables() LOOP
        IF prepay._distributed() THEN
            -- on Citus: Citus's create_time_partitions
            made := made + prepay._citus_maintain_partitions(tab, prepay._citus_premake());
            CONTINUE;
        END IF;
        CONTINUE WHEN NOT prepay._by_month(tab);    -- not partitioned by month: nothing to keep ahead
        SELECT pg_catalog.count(*) INTO before FROM prepay._partition_ranges(tab);
        EXECUTE pg_catalog.format('SELECT %I.run_maintenance(p_parent_table := %L, p_jobmon := false)',
                                  prepay._partman_schema(), tab::text);
        made := made + (SELECT pg_catalog.count(*) FROM prepay._partition_ranges(tab)) - before;
    END LOOP;
    RETURN made;
END $$;
COMMENT ON FUNCTION prepay.maintain_partitions() IS
'The job prepay-partitions: ask pg_partman to create the months of prepay.reading and prepay.ledger ahead of time (premake months past now); returns how many partitions it created.  0 and nothing done while neither is partitioned by month.  Once distributed on Citus, Citus''s create_time_partitions() makes the months of both, prepay.partition_premake months ahead (prepay._citus_maintain_partitions).  Needs a superuser (42501).';

-- ---------------------------------------------------------------------
-- archives: a month of readings as files on the server
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._archive_directory(p_directory text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d text := pg_catalog.rtrim(coalesce(p_directory, pg_catalog.current_setting('prepay.archive_directory', true)), '/');
BEGIN
    IF d IS NULL OR d = '' THEN
        PERFORM prepay._raise('55000', 'no archive directory',
            'Archives are written by the server into a directory on its disk; none was given and prepay.archive_directory is not set.',
            'Pass the directory, or ALTER DATABASE ... SET prepay.archive_directory = ''/var/lib/prepay/archive'' (a directory the server''s account may write).');
    END IF;
    -- the path goes to sha256sum through a shell: plain characters only
    IF d !~ '^/[A-Za-z0-9._/-]+$' OR d ~ '(^|/)\.\.(/|$)' THEN
        PERFORM prepay._raise('22023', 'an archive directory must be an absolute path of letters, digits, ., _, - and /',
            pg_catalog.format('Given: %s.', pg_catalog.left(d, 200)), 'Choose a plain absolute path, such as /var/lib/prepay/archive.');
    END IF;
    RETURN d;
END $$;
COMMENT ON FUNCTION prepay._archive_directory(text) IS
'Internal: the archive directory: p_directory, else the setting prepay.archive_directory; 55000 when neither is set, 22023 unless a plain absolute path (it is handed to sha256sum).';

CREATE FUNCTION prepay._file_sha256(p_path text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h text;
BEGIN
    -- the file may be far larger than a bytea: sha256sum reads it, by path
    CREATE TEMPORARY TABLE IF NOT EXISTS prepay_sha256 (line text);
    TRUNCATE prepay_sha256;
    EXECUTE pg_catalog.format('COPY prepay_sha256 FROM PROGRAM %L', 'sha256sum -b ' || p_path);
    SELECT pg_catalog.left(line, 64) INTO h FROM prepay_sha256;
    DROP TABLE prepay_sha256;
    IF h IS NULL OR h !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'sha256sum gave no checksum for %', p_path;
    END IF;
    RETURN h;
END $$;
COMMENT ON FUNCTION prepay._file_sha256(text) IS 'Internal: the SHA-256 of a server file (sha256sum, run by the server; the path is checked by prepay._archive_directory).';

CREATE FUNCTION prepay._rows_digest(p_table regclass, p_from timestamptz, p_to timestamptz, OUT n bigint, OUT digest numeric)
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF prepay._distributed() THEN
        -- on Citus the rows' text is made here, on the coordinator, with this
        -- session's settings: a worker would write its times in its own time zone
        EXECUTE pg_catalog.format('WITH r AS MATERIALIZED (SELECT * FROM %s WHERE read_at >= %L AND read_at < %L) '
                                  'SELECT pg_catalog.count(*), coalesce(pg_catalog.sum(pg_catalog.hashtextextended(r::text, 0)::numeric), 0) FROM r',
                                  p_table, p_from, p_to)
           INTO n, digest;
        RETURN;
    END IF;
    -- order-free: the sum of a 64-bit hash of every row's text
    EXECUTE pg_catalog.format('SELECT pg_catalog.count(*), coalesce(pg_catalog.sum(pg_catalog.hashtextextended(r::text, 0)::numeric), 0) '
                              'FROM %s r WHERE read_at >= %L AND read_at < %L', p_table, p_from, p_to)
       INTO n, digest;
END $$;
COMMENT ON FUNCTION prepay._rows_digest(regclass, timestamptz, timestamptz) IS
'Internal: how many rows of p_table (prepay.reading''s columns) lie in [p_from, p_to), and an order-free digest of their values: what an archive''s file must give back.  Once distributed on Citus, the rows are read through the coordinator, so that their text (times in the caller''s time zone, UTC in the archive functions) is the same whichever worker holds them.';

CREATE FUNCTION prepay.archive_reading_month(p_month date, p_directory text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC' AS $$
DECLARE
    dir text := prepay._archive_directory(p_directory);
    m_from timestamptz := pg_catalog.date_trunc('month', p_month::timestamp AT TIME ZONE 'UTC');
    m_to timestamptz := pg_catalog.date_trunc('month', p_month::timestamp AT TIME ZONE 'UTC') + interval '1 month';
    part regclass;
    base text;
    csv text;
    written bigint;
    src record;
    back record;
    sha text;
    manifest jsonb;
BEGIN
    PERFORM prepay._require_superuser('archive_reading_month');
    part := prepay._month_partition('prepay.reading', m_from);
    IF part IS NULL THEN
        PERFORM prepay._raise('55000', pg_catalog.format('no partition of prepay.reading holds %s', pg_catalog.to_char(m_from, 'YYYY-MM')),
            'Only a month partition can be archived (prepay.reading_partitions lists them); readings in the default partition are not archived.',
            'Partition by month first (prepay.partition_by_month()), or pick a month that has a partition.');
    END IF;
    IF m_to > pg_catalog.date_trunc('month', pg_catalog.now()) THEN
        PERFORM prepay._raise('55000', pg_catalog.format('%s is not over', pg_catalog.to_char(m_from, 'YYYY-MM')),
            'A month is archived only once it has ended (UTC).',
            'Archive an earlier month.');
    END IF;
    base := 'prepay.reading.' || pg_catalog.to_char(m_from, 'YYYY-MM');
    csv := dir || '/' || base || '.csv';
    -- no row of the month changes while it is written and checked (late
    -- readings of the month, a rerate, the quarantine step of a rating
    -- batch wait); rating of other months goes on
    EXECUTE pg_catalog.format('LOCK TABLE %s IN SHARE MODE', part);
    src := prepay._rows_digest(part, m_from, m_to);

    EXECUTE pg_catalog.format('COPY (SELECT * FROM %s ORDER BY site_id, meter_id, read_at) TO %L WITH (FORMAT csv, HEADER true, ENCODING ''UTF8'')',
                              part, csv);
    GET DIAGNOSTICS written = ROW_COUNT;
    sha := prepay._file_sha256(csv);

    -- read back what was written: the same rows, or nothing is dropped
    CREATE TEMPORARY TABLE prepay_archive_check (LIKE prepay.reading) ON COMMIT DROP;
    EXECUTE pg_catalog.format('COPY prepay_archive_check FROM %L WITH (FORMAT csv, HEADER true, ENCODING ''UTF8'')', csv);
    back := prepay._rows_digest('prepay_archive_check'::regclass, m_from, m_to);
    DROP TABLE prepay_archive_check;
    IF back.n <> src.n OR back.digest <> src.digest OR written <> src.n OR prepay._file_sha256(csv) <> sha THEN
        RAISE EXCEPTION USING ERRCODE = 'XX001',
            MESSAGE = pg_catalog.format('the archive %s does not give back the rows of %s', csv, part),
            DETAIL = pg_catalog.format('%s rows in the partition, %s written, %s read back (digests %s, %s).', src.n, written, back.n, src.digest, back.digest),
            HINT = 'Nothing was dropped.  Check the disk of the archive directory and try again.';
    END IF;

    manifest := pg_catalog.jsonb_build_object(
        'format', 'prepay reading archive 1',
        'table', 'prepay.reading',
        'partition', part::text,
        'month', pg_catalog.to_char(m_from, 'YYYY-MM'),
        'from', pg_catalog.to_char(m_from, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'to', pg_catalog.to_char(m_to, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'file', base || '.csv',
        'copy_options', 'FORMAT csv, HEADER true, ENCODING UTF8',
        'columns', (SELECT pg_catalog.jsonb_agg(a.attname ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
                     WHERE a.attrelid = 'prepay.reading'::regclass AND a.attnum > 0 AND NOT a.attisdropped),
        'rows', src.n,
        'rows_digest', src.digest::text,
        'sha256', sha,
        'sites', (SELECT pg_catalog.jsonb_agg(s.site_id ORDER BY s.site_id) FROM prepay.site s
                   WHERE EXISTS (SELECT 1 FROM prepay.reading r WHERE r.site_id = s.site_id AND r.read_at >= m_from AND r.read_at < m_to)),
        'prepay_version', (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'prepay'),
        'archived_at', pg_catalog.to_char(pg_catalog.now(), 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
    -- the checksum file for sha256sum -c, then the manifest (one line)
    EXECUTE pg_catalog.format('COPY (SELECT %L) TO %L', sha || ' *' || base || '.csv', dir || '/' || base || '.csv.sha256');
    EXECUTE pg_catalog.format('COPY (SELECT %L) TO %L', manifest::text, dir || '/' || base || '.manifest.json');

    EXECUTE pg_catalog.format('ALTER TABLE prepay.reading DETACH PARTITION %s', part);
    EXECUTE pg_catalog.format('DROP TABLE %s', part);
    RAISE NOTICE 'archived % rows of % to % and dropped %', src.n, pg_catalog.to_char(m_from, 'YYYY-MM'), csv, manifest ->> 'partition';
    RETURN manifest;
END $$;
COMMENT ON FUNCTION prepay.archive_reading_month(date, text) IS
'Archive the month partition of prepay.reading holding p_month (UTC) into p_directory (default: the setting prepay.archive_directory), a directory on the database server: writes prepay.reading.YYYY-MM.csv (COPY CSV with a header, UTF8), its SHA-256 (prepay.reading.YYYY-MM.csv.sha256, for sha256sum -c) and prepay.reading.YYYY-MM.manifest.json (month, columns, rows, a digest of the rows, checksum, sites), reads the file back and checks the same rows come out, and only then detaches and drops the partition.  Returns the manifest.  Writes to that month wait meanwhile (SHARE lock).  Needs a superuser (42501); 55000 when no partition holds the month or the month is not over; XX001 and nothing dropped when the file does not give the rows back.  docs/OPERATIONS.md.';

CREATE FUNCTION prepay.restore_reading_archive(p_manifest text)
RETURNS SETOF prepay.reading_partitions
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC' AS $$
DECLARE
    manifest jsonb;
    dir text;
    csv text;
    m_from timestamptz;
    m_to timestamptz;
    t text;
    back record;
    sha text;
    late bigint;
BEGIN
    PERFORM prepay._require_superuser('restore_reading_archive');
    dir := prepay._archive_directory(pg_catalog.regexp_replace(coalesce(p_manifest, ''), '/[^/]*$', ''));
    IF (pg_catalog.pg_stat_file(p_manifest, true)).size IS NULL THEN
        PERFORM prepay._raise('58P01', pg_catalog.format('no archive manifest at %s', p_manifest),
            'The database server reads the manifest and the archive from its own disk.',
            'Give the path, on the database server, of a .manifest.json file prepay.archive_reading_month() wrote (copy the archive back there first).');
    END IF;
    BEGIN
        manifest := pg_catalog.pg_read_file(p_manifest)::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        manifest := NULL;
    END;
    IF manifest ->> 'format' IS DISTINCT FROM 'prepay reading archive 1' OR manifest ->> 'file' !~ '^[A-Za-z0-9._-]+$' THEN
        PERFORM prepay._raise('22023', 'not a prepay reading archive manifest',
            pg_catalog.format('%s has format %s.', p_manifest, coalesce(manifest ->> 'format', 'none')),
            'Give the .manifest.json file prepay.archive_reading_month() wrote.');
    END IF;
    csv := dir || '/' || (manifest ->> 'file');
    m_from := (manifest ->> 'from')::timestamptz;
    m_to := (manifest ->> 'to')::timestamptz;
    IF prepay._month_partition('prepay.reading', m_from) IS NOT NULL THEN
        PERFORM prepay._raise('55000', pg_catalog.format('%s has a partition already', manifest ->> 'month'),
            pg_catalog.format('%s holds that month; an archive is restored into a month that has none.', prepay._month_partition('prepay.reading', m_from)),
            'Nothing to do if it was restored before; otherwise archive or drop that partition first.');
    END IF;
    sha := prepay._file_sha256(csv);
    IF sha <> manifest ->> 'sha256' THEN
        PERFORM prepay._raise('XX001', pg_catalog.format('the checksum of %s does not match its manifest', csv),
            pg_catalog.format('Manifest: %s; file: %s.', manifest ->> 'sha256', sha),
            'The file was changed or damaged: restore it from the copy of the archive kept elsewhere.');
    END IF;
    -- a new table like the others, filled without the rating trigger (these
    -- readings were rated when they came), then attached as the month
    t := prepay._partition_name('prepay.reading', m_from);
    IF prepay._distributed() THEN
        -- on Citus: distributed like prepay.reading before the COPY, which
        -- sends each row to its site's shard
        PERFORM prepay._citus_month_table('prepay.reading', m_from);
    ELSE
        EXECUTE pg_catalog.format('CREATE TABLE prepay.%I (LIKE prepay.reading INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                                  'INCLUDING INDEXES INCLUDING STORAGE)', t);
    END IF;
    EXECUTE pg_catalog.format('COPY prepay.%I FROM %L WITH (FORMAT csv, HEADER true, ENCODING ''UTF8'')', t, csv);
    back := prepay._rows_digest(pg_catalog.format('prepay.%I', t)::regclass, m_from, m_to);
    IF back.n <> (manifest ->> 'rows')::bigint OR back.digest <> (manifest ->> 'rows_digest')::numeric THEN
        PERFORM prepay._raise('XX001', pg_catalog.format('%s does not give back the rows its manifest describes', csv),
            pg_catalog.format('%s rows read (manifest: %s); digest %s (manifest: %s).', back.n, manifest ->> 'rows', back.digest, manifest ->> 'rows_digest'),
            'Nothing was restored.');
    END IF;
    -- readings of the month written after it was archived are in the default
    -- partition (quarantined: out of order); they join the restored month
    IF prepay._distributed() THEN
        late := prepay._citus_attach_month('prepay.reading', pg_catalog.format('prepay.%I', t)::regclass, m_from);
    ELSE
        late := prepay._attach_month('prepay.reading', m_from, pg_catalog.format('prepay.%I', t)::regclass);
    END IF;
    RAISE NOTICE 'restored % rows of % from %; % later readings of the month moved from the default partition',
        back.n, manifest ->> 'month', csv, late;
    RETURN QUERY SELECT * FROM prepay.reading_partitions p WHERE p.from_time = m_from;
END $$;
COMMENT ON FUNCTION prepay.restore_reading_archive(text) IS
'Restore a month archived by prepay.archive_reading_month(): p_manifest is the path of its .manifest.json on the database server (the CSV beside it).  Checks the file''s SHA-256 against the manifest, loads it into a new partition prepay.reading_pYYYY_MM without re-rating anything, checks the rows against the manifest''s count and digest, moves in the month''s readings that arrived later (kept in the default partition), and attaches it; returns its row of prepay.reading_partitions (on Citus, sizes NULL: prepay._relation_sizes).  Needs a superuser (42501); 55000 when the month has a partition; 22023 for a file that is not a manifest; XX001 for a checksum or row mismatch (nothing restored).  docs/OPERATIONS.md.';

CREATE FUNCTION prepay.archive_due_partitions(p_directory text DEFAULT NULL)
RETURNS TABLE (month text, rows bigint, file text, sha256 text)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp SET timezone = 'UTC' AS $$
DECLARE
    months timestamptz[] := '{}';
    m timestamptz;
    r record;
    shortest integer;
    manifest jsonb;
    this_month timestamptz := pg_catalog.date_trunc('month', pg_catalog.now());
BEGIN
    PERFORM prepay._require_superuser('archive_due_partitions');
    IF NOT EXISTS (SELECT 1 FROM prepay.site s WHERE s.reading_keep_months IS NOT NULL) THEN
        RETURN;     -- every site keeps its readings forever
    END IF;
    PERFORM prepay._archive_directory(p_directory);
    -- the months are chosen first: no query on prepay.reading may be open
    -- while a partition is detached.  A month partition every site's
    -- retention has passed (an empty month goes then) ...
    shortest := (SELECT pg_catalog.min(s.reading_keep_months) FROM prepay.site s);
    FOR r IN
        SELECT p.from_time, p.to_time FROM prepay._partition_ranges('prepay.reading') p
         WHERE NOT p.is_default AND p.to_time <= this_month - pg_catalog.make_interval(months => shortest)
         ORDER BY p.from_time
    LOOP
        -- ... goes when every site with readings in it lets it go; a site
        -- that keeps them forever, or longer, keeps the month (one query a
        -- month, its bounds as values: on Citus it runs on the sites'
        -- shards, which a query correlated with the catalog cannot)
        IF NOT EXISTS (SELECT 1 FROM prepay.site s
                        WHERE (s.reading_keep_months IS NULL
                               OR r.to_time > this_month - pg_catalog.make_interval(months => s.reading_keep_months))
                          AND EXISTS (SELECT 1 FROM prepay.reading x
                                       WHERE x.site_id = s.site_id AND x.read_at >= r.from_time AND x.read_at < r.to_time)) THEN
            months := months || r.from_time;
        END IF;
    END LOOP;
    FOREACH m IN ARRAY coalesce(months, '{}') LOOP
        manifest := prepay.archive_reading_month((m AT TIME ZONE 'UTC')::date, p_directory);
        month := manifest ->> 'month';
        rows := (manifest ->> 'rows')::bigint;
        file := prepay._archive_directory(p_directory) || '/' || (manifest ->> 'file');
        sha256 := manifest ->> 'sha256';
        RETURN NEXT;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.archive_due_partitions(text) IS
'The job prepay-retention: archive (prepay.archive_reading_month) and drop every month partition of prepay.reading that every site with readings in it lets go: the month ended at least reading_keep_months whole months ago for each of them (a site with NULL keeps its months forever).  Does nothing while no site has a retention.  Returns the months archived, with rows, file and SHA-256.  Needs a superuser (42501) and an archive directory (p_directory or prepay.archive_directory, 55000).';

-- ---------------------------------------------------------------------
-- sizes and growth
-- ---------------------------------------------------------------------

CREATE VIEW prepay.table_growth AS
WITH since AS (
    SELECT coalesce((SELECT d.stats_reset FROM pg_catalog.pg_stat_database d WHERE d.datname = pg_catalog.current_database()),
                    (SELECT pg_catalog.min(s.created_at) FROM prepay.site s)) AS at
), tables AS (
    -- a table's rows are in its leaves: a partitioned table's partitions
    -- (its own statistics after ANALYZE count theirs again), or the table
    SELECT c.oid AS relid,
           CASE WHEN c.relkind = 'p'
                THEN ARRAY(SELECT t.relid FROM pg_catalog.pg_partition_tree(c.oid) t WHERE t.isleaf)
                ELSE ARRAY[c.oid::pg_catalog.regclass] END AS members
      FROM pg_catalog.pg_class c
     WHERE c.relnamespace = 'prepay'::pg_catalog.regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
), sizes AS (
    -- on Citus, of the shards (prepay._relation_sizes)
    SELECT z.* FROM prepay._relation_sizes(ARRAY(SELECT pg_catalog.unnest(t.members) FROM tables t)) z
), sized AS (
    SELECT t.relid,
           (SELECT pg_catalog.sum(z.total_bytes)::bigint FROM sizes z WHERE z.relid = ANY (t.members)) AS total_bytes,
           (SELECT pg_catalog.sum(GREATEST(z.reltuples, 0))::bigint FROM sizes z WHERE z.relid = ANY (t.members)) AS rows_estimated,
           (SELECT pg_catalog.sum(z.rows_inserted)::bigint FROM sizes z WHERE z.relid = ANY (t.members)) AS inserted
      FROM tables t
)
SELECT z.relid::regclass AS table_name,
       z.total_bytes,
       pg_catalog.pg_size_pretty(z.total_bytes) AS total_size,
       z.rows_estimated,
       CASE WHEN z.rows_estimated > 0 THEN pg_catalog.round(z.total_bytes::numeric / z.rows_estimated) END AS bytes_per_row,
       z.inserted AS rows_inserted,
       since.at AS counted_since,
       CASE WHEN pg_catalog.now() - since.at >= interval '1 hour'
            THEN pg_catalog.round(z.inserted / (EXTRACT(epoch FROM pg_catalog.now() - since.at) / 86400), 1) END AS rows_per_day,
       CASE WHEN pg_catalog.now() - since.at >= interval '1 hour' AND z.rows_estimated > 0
            THEN pg_catalog.round(z.inserted / (EXTRACT(epoch FROM pg_catalog.now() - since.at) / 86400)
                                  * z.total_bytes / z.rows_estimated)::bigint END AS bytes_per_day
  FROM sized z, since;
COMMENT ON VIEW prepay.table_growth IS 'Size and growth of every prepay table (a partitioned table with all its partitions): bytes on disk with indexes and TOAST, estimated rows, bytes per row, rows inserted since the statistics were last reset (or since the first site, when never reset), and from those rows and bytes per day.  Estimates from the server''s statistics: run ANALYZE for fresh row counts (docs/OPERATIONS.md).  Once distributed on Citus, read on the coordinator, of the tables'' shards on every node (a reference table''s bytes count its copy on each node; prepay._relation_sizes).';
COMMENT ON COLUMN prepay.table_growth.table_name IS 'The table (a partitioned one counts its partitions).';
COMMENT ON COLUMN prepay.table_growth.total_bytes IS 'Bytes on disk: table, indexes, TOAST, every partition.';
COMMENT ON COLUMN prepay.table_growth.total_size IS 'total_bytes, readable.';
COMMENT ON COLUMN prepay.table_growth.rows_estimated IS 'Rows as last estimated by VACUUM or ANALYZE.';
COMMENT ON COLUMN prepay.table_growth.bytes_per_row IS 'total_bytes / rows_estimated: what one more row costs, indexes included.';
COMMENT ON COLUMN prepay.table_growth.rows_inserted IS 'Rows inserted since counted_since (the statistics'' count: rows moved between partitions count again).';
COMMENT ON COLUMN prepay.table_growth.counted_since IS 'When the database''s statistics were last reset, or the first site''s creation if never.';
COMMENT ON COLUMN prepay.table_growth.rows_per_day IS 'rows_inserted per day since counted_since (NULL in the first hour).';
COMMENT ON COLUMN prepay.table_growth.bytes_per_day IS 'rows_per_day x bytes_per_row: how fast the table grows on disk.';
