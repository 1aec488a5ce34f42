
/*-------------------------------------------------------------------------
 * sql/schedule.sql
 *     The periodic jobs prepay needs, registered with pg_cron in one call:
 *     prepay.schedule_jobs() schedules them (idempotently: a second call
 *     leaves one of each and updates a changed schedule or command),
 *     prepay.scheduled_jobs() shows them with pg_cron's state and last
 *     run, prepay.unschedule_jobs() removes them, prepay.periodic_jobs()
 *     lists what they are.  docs/BILLING.md ("The daily run and pg_cron")
 *     explains the server settings pg_cron needs.
 *
 * Who: scheduling and removing need a superuser.  pg_cron runs a job as
 * the role that scheduled it (cron.job.username: current_user), and the
 * jobs do every site's bookkeeping (the billing run, batches, rollups,
 * reminders), which no site-mapped role may; a superuser's job passes
 * every prepay check.  The functions are SECURITY INVOKER, so that the job
 * belongs to the caller, never to the extension's owner by surprise.
 *
 * pg_cron is optional: without it (not installed in this database) the
 * scheduling functions refuse with 55000, a message and a hint, and
 * prepay.scheduled_jobs() still lists the jobs with that state.  pg_cron
 * can only be created in its cron.database_name, so prepay and pg_cron
 * share a database.  Queries on schema cron are reached only after the
 * extension was found (PL/pgSQL plans a statement when it first runs).
 *
 * Appended before security.sql, whose generic loop grants EXECUTE on these
 * functions to the prepay roles (they check the caller themselves).
 *-------------------------------------------------------------------------
 */

CREATE FUNCTION prepay.periodic_jobs()
RETURNS TABLE (jobname text, schedule text, command text, purpose text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES
        ('prepay-daily', '5 * * * *', 'SELECT count(*) FROM prepay.run_periodic_all()',
         'the daily billing run of every site on its local day (basic charges, settlement, apportionment, '
         'allowances, fees, bills; docs/BILLING.md); hourly, since every step is idempotent and the first '
         'run after local midnight does the day''s work'),
        ('prepay-batches', '* * * * *', 'SELECT count(*) FROM prepay.run_due_batches(1000)',
         'the batch runner: scheduled batch operations whose time has come (docs/BATCH.md)'),
        ('prepay-fold', '* * * * *', 'SELECT prepay.fold_rollups()',
         'fold the energy rollups'' deltas, so that the report views stay fast (docs/REPORTS.md)'),
        ('prepay-cut-reminders', '*/5 * * * *', 'SELECT prepay.send_cut_reminders()',
         'the reminder before a predicted cut, cut_reminder_lead ahead (docs/REPORTS.md)'),
        ('prepay-partitions', '17 * * * *', 'SELECT prepay.maintain_partitions()',
         'pg_partman (on Citus: Citus''s create_time_partitions) creates the monthly partitions of prepay.reading ahead of time, '
         'once prepay.partition_by_month() ran (docs/OPERATIONS.md, docs/SCALE-OUT.md)'),
        ('prepay-retention', '47 3 * * *', 'SELECT count(*) FROM prepay.archive_due_partitions()',
         'archive to files, then drop, the month partitions of readings older than the sites'' reading_keep_months '
         '(docs/OPERATIONS.md)')
$$;
COMMENT ON FUNCTION prepay.periodic_jobs() IS
'The periodic jobs prepay needs: pg_cron job name, default schedule (cron format, the server''s time zone), the command, and what it is for.  prepay.schedule_jobs() registers exactly these.';

CREATE FUNCTION prepay._cron_installed() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_cron')
$$;
COMMENT ON FUNCTION prepay._cron_installed() IS 'Internal: whether pg_cron is installed in this database.';

CREATE FUNCTION prepay._cron_prerequisites(p_what text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._require_superuser(p_what, 'pg_cron runs a job as the role that scheduled it, and '
                                              'prepay''s jobs do the bookkeeping of every site.');
    IF NOT prepay._cron_installed() THEN
        PERFORM prepay._raise('55000', pg_catalog.format('pg_cron is not installed in database %s', pg_catalog.current_database()),
            'prepay''s periodic jobs (the billing run, the batch runner, the rollup fold, the cut reminders, partitions and retention) are '
            'scheduled with pg_cron; without them no fees are charged, no scheduled batch runs, no reminder is sent.',
            pg_catalog.format('Install postgresql-15-cron; in postgresql.conf set shared_preload_libraries = ''pg_cron'', '
                              'cron.database_name = %L and, on a server without TCP (listen_addresses = ''''), '
                              'cron.use_background_workers = on; restart; then CREATE EXTENSION pg_cron; (docs/BILLING.md).',
                              pg_catalog.current_database()));
    END IF;
END $$;
COMMENT ON FUNCTION prepay._cron_prerequisites(text) IS
'Internal: refuse to schedule or unschedule unless the caller (current_user, whom pg_cron runs the jobs as) is a superuser (42501) and pg_cron is installed in this database (55000, with a hint naming the settings).';

CREATE FUNCTION prepay._cron_reachable() RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- without background workers pg_cron runs a job over libpq to cron.host
    -- (localhost by default), which a socket-only server does not listen on
    IF pg_catalog.current_setting('listen_addresses') = ''
       AND coalesce(pg_catalog.current_setting('cron.use_background_workers', true), 'off') <> 'on'
       AND coalesce(pg_catalog.current_setting('cron.host', true), 'localhost') !~ '^/' THEN
        RAISE WARNING USING
            MESSAGE = 'pg_cron cannot reach this server: it listens on no TCP address and cron.use_background_workers is off',
            DETAIL = pg_catalog.format('pg_cron connects to cron.host = %s; every job run will fail to connect '
                                       '(prepay.scheduled_jobs() shows the failures).',
                                       coalesce(pg_catalog.current_setting('cron.host', true), 'localhost')),
            HINT = 'Set cron.use_background_workers = on in postgresql.conf (or cron.host to the socket directory) and restart.';
    END IF;
END $$;
COMMENT ON FUNCTION prepay._cron_reachable() IS
'Internal: warn when pg_cron''s job runs cannot connect: a server without TCP (listen_addresses empty) while cron.use_background_workers is off and cron.host is not a socket directory.';

CREATE FUNCTION prepay._job_schedules(p_schedules jsonb)
RETURNS TABLE (jobname text, schedule text, command text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    unknown text;
BEGIN
    IF p_schedules IS NOT NULL AND pg_catalog.jsonb_typeof(p_schedules) <> 'object' THEN
        PERFORM prepay._raise('22023', 'schedules must be a JSON object of job name to cron schedule',
            pg_catalog.format('Given: %s.', pg_catalog.left(p_schedules::text, 200)),
            'For example {"prepay-cut-reminders": "*/2 * * * *"}; prepay.periodic_jobs() lists the job names.');
    END IF;
    SELECT pg_catalog.string_agg(k, ', ' ORDER BY k) INTO unknown
      FROM pg_catalog.jsonb_each(coalesce(p_schedules, '{}')) AS e (k, v)
     WHERE k NOT IN (SELECT j.jobname FROM prepay.periodic_jobs() j) OR pg_catalog.jsonb_typeof(v) <> 'string';
    IF unknown IS NOT NULL THEN
        PERFORM prepay._raise('22023', 'schedules name unknown jobs or give a schedule that is not a string',
            pg_catalog.format('Not a prepay job, or not a string: %s.', pg_catalog.left(unknown, 200)),
            pg_catalog.format('The jobs are %s; a schedule is a cron string such as "*/5 * * * *".',
                              (SELECT pg_catalog.string_agg(j.jobname, ', ') FROM prepay.periodic_jobs() j)));
    END IF;
    RETURN QUERY
    SELECT j.jobname, coalesce(p_schedules ->> j.jobname, j.schedule), j.command FROM prepay.periodic_jobs() j;
END $$;
COMMENT ON FUNCTION prepay._job_schedules(jsonb) IS
'Internal: the jobs with their schedules, the defaults overridden by p_schedules ({"job name": "cron schedule"}); 22023 for anything but an object of known job names to strings.';

CREATE FUNCTION prepay.scheduled_jobs()
RETURNS TABLE (jobname text, jobid bigint, schedule text, command text, active boolean, run_as text,
               last_run_at timestamptz, last_status text, last_message text, state text, purpose text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT prepay._cron_installed() THEN
        RETURN QUERY SELECT j.jobname, NULL::bigint, j.schedule, j.command, NULL::boolean, NULL::text,
                            NULL::timestamptz, NULL::text, NULL::text, 'pg_cron is not installed'::text, j.purpose
                       FROM prepay.periodic_jobs() j ORDER BY j.jobname;
        RETURN;
    END IF;
    IF NOT pg_catalog.has_schema_privilege('cron', 'USAGE') THEN
        RETURN QUERY SELECT j.jobname, NULL::bigint, j.schedule, j.command, NULL::boolean, NULL::text,
                            NULL::timestamptz, NULL::text, NULL::text,
                            pg_catalog.format('pg_cron''s jobs are not visible to %s', current_user), j.purpose
                       FROM prepay.periodic_jobs() j ORDER BY j.jobname;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT j.jobname, c.jobid, coalesce(c.schedule, j.schedule), coalesce(c.command, j.command), c.active,
           c.username::text, r.start_time, r.status, r.return_message,
           CASE WHEN c.jobid IS NULL THEN 'not scheduled'
                WHEN NOT c.active THEN 'inactive'
                WHEN c.command <> j.command THEN 'scheduled with another command'
                ELSE 'scheduled' END,
           j.purpose
      FROM prepay.periodic_jobs() j
      LEFT JOIN cron.job c ON c.jobname = j.jobname
      LEFT JOIN LATERAL (SELECT d.start_time, d.status, d.return_message FROM cron.job_run_details d
                          WHERE d.jobid = c.jobid ORDER BY d.runid DESC LIMIT 1) AS r ON true
     ORDER BY j.jobname, c.jobid;
END $$;
COMMENT ON FUNCTION prepay.scheduled_jobs() IS
'prepay''s periodic jobs as pg_cron has them: job id, schedule, command, whether active, the role a run acts as, the last run (start, status, pg_cron''s message) and a state (scheduled, not scheduled, inactive, scheduled with another command, pg_cron is not installed, not visible to the caller).  Works without pg_cron.';

CREATE FUNCTION prepay.schedule_jobs(p_schedules jsonb DEFAULT '{}')
RETURNS TABLE (jobname text, jobid bigint, schedule text, command text, active boolean, run_as text,
               last_run_at timestamptz, last_status text, last_message text, state text, purpose text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
    other bigint;
BEGIN
    PERFORM prepay._cron_prerequisites('schedule_jobs');
    PERFORM prepay._cron_reachable();
    FOR j IN SELECT * FROM prepay._job_schedules(p_schedules) LOOP
        -- one of each: the same job scheduled by another role would run twice
        FOR other IN SELECT c.jobid FROM cron.job c WHERE c.jobname = j.jobname AND c.username <> current_user LOOP
            PERFORM cron.unschedule(other);
        END LOOP;
        -- pg_cron updates the caller's job of that name in place (same job id)
        PERFORM cron.schedule(j.jobname, j.schedule, j.command);
    END LOOP;
    RETURN QUERY SELECT * FROM prepay.scheduled_jobs();
END $$;
COMMENT ON FUNCTION prepay.schedule_jobs(jsonb) IS
'Register every periodic job prepay needs (prepay.periodic_jobs()) with pg_cron, to run as the caller, and return them as prepay.scheduled_jobs() shows them.  Idempotent: calling it again leaves one job of each name (a same-named job of another role is removed) and updates a changed schedule or command in place.  p_schedules overrides default schedules, e.g. {"prepay-cut-reminders": "*/2 * * * *"} (22023 for an unknown job name or a non-string; pg_cron refuses an invalid schedule).  Needs a superuser (42501) and pg_cron in this database (55000, with a hint naming the postgresql.conf settings); warns when pg_cron cannot reach a socket-only server.';

CREATE FUNCTION prepay.unschedule_jobs()
RETURNS integer LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint;
    n integer := 0;
BEGIN
    PERFORM prepay._cron_prerequisites('unschedule_jobs');
    FOR id IN SELECT c.jobid FROM cron.job c
               WHERE c.jobname IN (SELECT j.jobname FROM prepay.periodic_jobs() j) ORDER BY c.jobid LOOP
        PERFORM cron.unschedule(id);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.unschedule_jobs() IS
'Remove prepay''s periodic jobs (the names prepay.periodic_jobs() lists, whoever scheduled them) from pg_cron; returns how many were removed.  Jobs scheduled by hand under other names are left alone.  Needs a superuser (42501) and pg_cron in this database (55000).';
