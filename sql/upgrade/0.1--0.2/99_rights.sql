-- sql/upgrade/0.1--0.2/99_rights.sql: last, the rights the install gives every function and view, given again to what the parts above created or replaced (and security_invoker to the views they re-created).
--@ copy function prepay._check_routines
--@ copy function prepay._grant_routines
--@ copy function prepay._grant_views
SELECT prepay._check_routines();
SELECT prepay._grant_routines();
SELECT prepay._grant_views();
