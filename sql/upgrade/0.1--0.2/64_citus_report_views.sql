-- sql/upgrade/0.1--0.2/64_citus_report_views.sql: the per-site report views on Citus (test/t/221_citus_functions.pl): balance_forecast, cuts_next_24h and suspicious_consumption list the sites first, so that Citus calls the per-site function on the coordinator rather than on a shard.

CREATE OR REPLACE VIEW prepay.balance_forecast WITH (security_invoker = true) AS
SELECT f.* FROM (SELECT s.site_id FROM prepay.site s OFFSET 0) s   -- the sites first: on Citus the function then runs on the coordinator
 CROSS JOIN LATERAL prepay.balance_forecast_at(s.site_id, pg_catalog.now()) AS f;

CREATE OR REPLACE VIEW prepay.cuts_next_24h WITH (security_invoker = true) AS
SELECT c.* FROM (SELECT s.site_id FROM prepay.site s OFFSET 0) s   -- the sites first: on Citus the function then runs on the coordinator
 CROSS JOIN LATERAL prepay.cut_forecast(s.site_id) AS c;

CREATE OR REPLACE VIEW prepay.suspicious_consumption WITH (security_invoker = true) AS
SELECT x.* FROM (SELECT s.site_id FROM prepay.site s OFFSET 0) s   -- the sites first: on Citus the function then runs on the coordinator
 CROSS JOIN LATERAL prepay.suspicious_consumption_at(s.site_id, pg_catalog.now()) AS x;
