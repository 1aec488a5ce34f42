/*-------------------------------------------------------------------------
 * sql/upgrade/0.1--0.2/00_header.sql
 *     Upgrade of an installed prepay 0.1 to 0.2 (ALTER EXTENSION prepay
 *     UPDATE).  The Makefile expands the files of this folder, in name
 *     order, into sql/prepay--0.1--0.2.sql (sql/upgrade/expand.pl); each
 *     change to the schema adds its own file here, and 99_rights.sql, last,
 *     gives what they created the install's rights.  test/t/200_upgrade.pl
 *     checks that the result equals a fresh install of 0.2: schema,
 *     behaviour on a scenario, balances.
 *-------------------------------------------------------------------------
 */
\echo Use "ALTER EXTENSION prepay UPDATE TO '0.2'" to load this file. \quit
