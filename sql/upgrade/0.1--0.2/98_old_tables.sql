-- sql/upgrade/0.1--0.2/98_old_tables.sql: the 0.1 tables that parts 80 and 81 copied into partitioned tables (prepay.reading_0_1, prepay.ledger_0_1) dropped, after pg_dump is told to forget them: a dropped table stays in the extension's list of tables to dump otherwise (an extension's own script may not ALTER EXTENSION ... DROP TABLE).
UPDATE pg_catalog.pg_extension e
   SET extconfig = k.config, extcondition = k.condition
  FROM (SELECT pg_catalog.array_agg(u.config ORDER BY u.i) AS config, pg_catalog.array_agg(u.condition ORDER BY u.i) AS condition
          FROM pg_catalog.pg_extension x,
               ROWS FROM (pg_catalog.unnest(x.extconfig), pg_catalog.unnest(x.extcondition)) WITH ORDINALITY AS u (config, condition, i)
         WHERE x.extname = 'prepay'
           AND u.config NOT IN ('prepay.reading_0_1'::pg_catalog.regclass, 'prepay.ledger_0_1'::pg_catalog.regclass)) AS k
 WHERE e.extname = 'prepay';
DROP TABLE prepay.reading_0_1;
DROP TABLE prepay.ledger_0_1;
