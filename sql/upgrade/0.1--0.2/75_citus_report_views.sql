-- sql/upgrade/0.1--0.2/75_citus_report_views.sql: the per-site report views on Citus (test/t/221_citus_functions.pl): balance_forecast, cuts_next_24h and suspicious_consumption list the sites first, so that Citus calls the per-site function on the coordinator rather than on a shard.

--@ copy view prepay.balance_forecast
--@ copy view prepay.cuts_next_24h
--@ copy view prepay.suspicious_consumption
