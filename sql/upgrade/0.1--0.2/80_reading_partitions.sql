-- sql/upgrade/0.1--0.2/80_reading_partitions.sql: prepay.reading partitioned by range of read_at (sql/prepay.sql), its rows kept in the default partition; per-site retention, archives, pg_partman months and the growth view (sql/partition.sql); the two jobs (sql/schedule.sql).

-- ---------------------------------------------------------------------
-- prepay.reading becomes a partitioned table: the 0.1 table's rows go to
-- its default partition, unchanged and not rated again (a partition has
-- no rating trigger, and the triggers are made after the copy)
-- ---------------------------------------------------------------------
ALTER TABLE prepay.reading RENAME TO reading_0_1;
ALTER INDEX prepay.reading_pkey RENAME TO reading_0_1_pkey;
ALTER INDEX prepay.reading_quarantined RENAME TO reading_0_1_quarantined;

--@ copy table prepay.reading
COMMENT ON INDEX prepay.reading_quarantined IS 'The quarantine list: readings that were stored but not rated.';
--@ copy table prepay.reading_default

-- received_at becomes received_after_seconds (sql/prepay.sql)
INSERT INTO prepay.reading_default (site_id, meter_id, read_at, energy, sharp, peak, flat, valley, power, relay_state,
                                    quarantine_reason, quarantine_detail, received_after_seconds)
SELECT site_id, meter_id, read_at, energy, sharp, peak, flat, valley, power, relay_state,
       quarantine_reason, quarantine_detail,
       greatest(least(floor(extract(epoch FROM received_at - read_at)), 2147483647), -2147483648)::integer
  FROM prepay.reading_0_1;

-- every row is there, or the upgrade stops
DO $$
BEGIN
    IF (SELECT pg_catalog.count(*) FROM prepay.reading_0_1) <> (SELECT pg_catalog.count(*) FROM prepay.reading) THEN
        RAISE EXCEPTION 'prepay upgrade: the readings copied into the partitioned table do not match the 0.1 table';
    END IF;
END $$;
-- (the 0.1 table is dropped by part 98)

-- the release of impossible jumps stores them again with their receipt
--@ copy function prepay.release_quarantined

CREATE TRIGGER reading_skip_duplicate BEFORE INSERT ON prepay.reading
    FOR EACH ROW EXECUTE FUNCTION prepay.reading_skip_duplicate();
CREATE TRIGGER reading_rate_batch AFTER INSERT ON prepay.reading
    REFERENCING NEW TABLE AS new_readings
    FOR EACH STATEMENT EXECUTE FUNCTION prepay.reading_rate_batch();
--@ copy trigger reading_skip_duplicate ON prepay.reading
--@ copy trigger reading_rate_batch ON prepay.reading

-- rights and row security as sql/security.sql gives them (a partition has
-- none of its own: it is reached through its table)
REVOKE ALL ON TABLE prepay.reading FROM PUBLIC;
GRANT SELECT, INSERT (site_id, meter_id, read_at, energy, sharp, peak, flat, valley, power, relay_state) ON TABLE prepay.reading TO prepay_admin;
GRANT SELECT, INSERT (site_id, meter_id, read_at, energy, sharp, peak, flat, valley, power, relay_state) ON TABLE prepay.reading TO prepay_operator;
GRANT SELECT ON TABLE prepay.reading TO prepay_reader;
GRANT SELECT ON TABLE prepay.reading TO prepay_tenant;
GRANT INSERT (site_id, meter_id, read_at, energy, sharp, peak, flat, valley, power, relay_state) ON TABLE prepay.reading TO prepay_agent;
ALTER TABLE prepay.reading ENABLE ROW LEVEL SECURITY;
ALTER TABLE prepay.reading FORCE ROW LEVEL SECURITY;
CREATE POLICY site_staff ON prepay.reading TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader
    USING (site_id = ANY ((SELECT prepay._my_sites())::integer[])) WITH CHECK (site_id = ANY ((SELECT prepay._my_sites())::integer[]));
COMMENT ON POLICY site_staff ON prepay.reading IS 'Administrators, operators, cashiers and readers see and change only the rows of the sites they are mapped to (prepay.site_access); their grants decide which changes.';
--@ copy policy reading_tenant ON prepay.reading
--@ copy policy agent_insert ON prepay.reading

SELECT pg_catalog.pg_extension_config_dump('prepay.reading', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.reading_default', '');

-- ---------------------------------------------------------------------
-- sql/partition.sql: retention per site, months, archives, growth
-- ---------------------------------------------------------------------
ALTER TABLE prepay.site ADD COLUMN reading_keep_months integer CHECK (reading_keep_months >= 1);
COMMENT ON COLUMN prepay.site.reading_keep_months IS 'How many whole months of readings the database keeps after the month ends; older month partitions are archived to files and dropped by the retention job (docs/OPERATIONS.md), once every site with readings in them allows it.  NULL (the default): keep forever.  The ledger and everything else are never dropped by retention.';

-- the audit trigger names every column of site (sql/security.sql)
DO $$
DECLARE
    cols text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = 'prepay.site'::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped;
    DROP TRIGGER audit ON prepay.site;
    EXECUTE pg_catalog.format('CREATE TRIGGER audit AFTER INSERT OR DELETE OR UPDATE OF %s ON prepay.site '
                              'FOR EACH ROW EXECUTE FUNCTION prepay._audit_row(''site_id'')', cols);
    COMMENT ON TRIGGER audit ON prepay.site IS 'Every change of this table is written to the audit trail (prepay.audit), with the values before and after.';
END $$;

--@ copy function prepay._require_superuser
--@ copy function prepay._partman_schema
--@ copy function prepay._by_month
--@ copy function prepay._month_tables
--@ copy function prepay._relation_sizes
--@ copy function prepay._partition_ranges
--@ copy function prepay._partitions
--@ copy function prepay._comment_partitions_view
--@ copy view prepay.reading_partitions
SELECT prepay._comment_partitions_view('prepay.reading_partitions', 'read_at', 'readings');
ALTER VIEW prepay.reading_partitions SET (security_invoker = true);
--@ copy function prepay._month_partition
--@ copy function prepay._partition_name
--@ copy function prepay._partition_column
--@ copy function prepay._attach_month
--@ copy function prepay._partman_partition_by_month
--@ copy function prepay.partition_by_month
--@ copy function prepay.maintain_partitions
--@ copy function prepay._archive_directory
--@ copy function prepay._file_sha256
--@ copy function prepay._rows_digest
--@ copy function prepay.archive_reading_month
--@ copy function prepay.restore_reading_archive
--@ copy function prepay.archive_due_partitions
--@ copy view prepay.table_growth
ALTER VIEW prepay.table_growth SET (security_invoker = true);

-- sql/schedule.sql: the jobs prepay-partitions and prepay-retention
--@ copy function prepay.periodic_jobs
--@ copy function prepay._cron_prerequisites

-- rights as sql/security.sql gives every function and view
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'prepay'::pg_catalog.regnamespace
           AND p.proname IN ('_require_superuser', '_partman_schema', '_by_month', '_month_tables', '_partitions',
                             '_month_partition', '_partition_name', '_partition_column',
                             '_attach_month', 'partition_by_month', 'maintain_partitions', '_archive_directory', '_file_sha256',
                             '_rows_digest', 'archive_reading_month', 'restore_reading_archive', 'archive_due_partitions')
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON ROUTINE %s TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent', f);
    END LOOP;
END $$;
REVOKE ALL ON TABLE prepay.reading_partitions FROM PUBLIC;
GRANT SELECT ON TABLE prepay.reading_partitions TO prepay_admin, prepay_operator, prepay_reader;
REVOKE ALL ON TABLE prepay.table_growth FROM PUBLIC;
GRANT SELECT ON TABLE prepay.table_growth TO prepay_admin, prepay_operator, prepay_reader;
