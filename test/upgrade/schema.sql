-- test/upgrade/schema.sql: a description of everything the extension
-- defines, one sorted line per fact, which test/t/200_upgrade.pl compares
-- between an upgraded and a freshly installed database.  Columns are
-- compared by name, not position: ALTER TABLE ADD COLUMN appends, so an
-- upgraded table may order its columns differently from a fresh one.
-- Object identifiers and other per-database numbers are left out; the
-- tables pg_dump keeps (pg_extension_config_dump) are included.
WITH ext AS (
    SELECT d.classid, d.objid
      FROM pg_depend d
     WHERE d.refclassid = 'pg_extension'::regclass
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'prepay') AND d.deptype = 'e'
), facts(fact) AS (
    SELECT 'extension member: ' || pg_describe_object(classid, objid, 0) FROM ext
    UNION ALL
    SELECT format('relation %s kind %s options %s acl %s rls %s/%s comment %s', c.oid::regclass, c.relkind,
                  c.reloptions, c.relacl, c.relrowsecurity, c.relforcerowsecurity, obj_description(c.oid, 'pg_class'))
      FROM pg_class c WHERE c.relnamespace = 'prepay'::regnamespace
    UNION ALL
    SELECT format('column %s.%s %s notnull %s default %s acl %s comment %s', a.attrelid::regclass, a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attacl,
                  col_description(a.attrelid, a.attnum))
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
     WHERE c.relnamespace = 'prepay'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('constraint %s %s: %s', k.conrelid::regclass, k.conname, pg_get_constraintdef(k.oid))
      FROM pg_constraint k WHERE k.connamespace = 'prepay'::regnamespace
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = 'prepay'::regnamespace
    UNION ALL
    SELECT format('trigger %s enabled %s comment %s', pg_get_triggerdef(t.oid), t.tgenabled,
                  obj_description(t.oid, 'pg_trigger'))
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = 'prepay'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT format('view %s: %s', c.oid::regclass, pg_get_viewdef(c.oid))
      FROM pg_class c WHERE c.relnamespace = 'prepay'::regnamespace AND c.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('function %s kind %s definer %s volatile %s parallel %s strict %s config %s acl %s comment %s: %s',
                  p.oid::regprocedure, p.prokind, p.prosecdef, p.provolatile, p.proparallel, p.proisstrict,
                  p.proconfig, p.proacl, obj_description(p.oid, 'pg_proc'),
                  CASE WHEN p.prokind = 'a' THEN '' ELSE pg_get_functiondef(p.oid) END)
      FROM pg_proc p WHERE p.pronamespace = 'prepay'::regnamespace
    UNION ALL
    SELECT format('policy %s on %s.%s for %s to %s using %s check %s', pol.policyname, pol.schemaname,
                  pol.tablename, pol.cmd, pol.roles, pol.qual, pol.with_check)
      FROM pg_policies pol WHERE pol.schemaname = 'prepay'
    UNION ALL
    SELECT format('type %s labels %s comment %s', t.oid::regtype,
                  (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
                  obj_description(t.oid, 'pg_type'))
      FROM pg_type t WHERE t.typnamespace = 'prepay'::regnamespace AND t.typtype IN ('e', 'd', 'c')
    UNION ALL
    SELECT format('dumped with pg_dump: %s', c::regclass)
      FROM pg_extension e, unnest(e.extconfig) AS c WHERE e.extname = 'prepay'
    UNION ALL
    SELECT format('schema prepay acl %s comment %s', n.nspacl, obj_description(n.oid, 'pg_namespace'))
      FROM pg_namespace n WHERE n.nspname = 'prepay'
)
SELECT fact FROM facts ORDER BY fact COLLATE "C";
