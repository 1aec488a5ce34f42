# test/t/130_pg_cron.pl
#
# Scheduling with pg_cron, as docs/BILLING.md describes it: a cluster with
# pg_cron preloaded schedules prepay's daily billing run and the batch
# runner and the fold of the energy rollups; within a minute pg_cron runs
# them, the month's fee is charged once, a due batch is carried out, the
# rollup deltas are folded (the rollups still equal the ledger), and a
# second scheduled run (the next minute) charges nothing more.  Nothing but
# PostgreSQL schedules anything.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
});
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_cron;
	CREATE EXTENSION prepay;
	INSERT INTO prepay.site (name, time_zone, fees_may_cut) VALUES ('Plaza', 'Asia/Shanghai', true);
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2026-01-01', 1.0);
	SELECT prepay.open_account(1, 'A1', 'Shop', 1, p_floor_area => 20);
	UPDATE prepay.account SET opened_at = now() - interval '400 days';
	SELECT prepay.recharge(1, 1, 1000, 'cash', 'R1');
	-- 5 a m2 a month, charged from the 1st: 100.00 for this month
	INSERT INTO prepay.charge_item (site_id, name, basis, price, settle, active_from)
	VALUES (1, 'rent', 'per_m2', 5, 'deduct', '2020-01-01');
	SELECT prepay.create_batch(1, 'cron-recharge', 'recharge', 'account',
	                           '[{"id": 1, "amount": 25, "external_ref": "B1"}]', '{"channel": "bank"}');
	-- 5 kWh at 1.00: a consumption entry and its rollup delta
	INSERT INTO prepay.meter (site_id, code) VALUES (1, 'M1');
	SELECT prepay.attach_meter(1, 1, 1, 0, now() - interval '2 hours');
	INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, now() - interval '1 hour', 5);
});
is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.energy_pending}), '1', 'the reading left a rollup delta');

my $scheduled = $node->safe_psql('postgres', q{
	SELECT cron.schedule('prepay-daily', '* * * * *', 'SELECT count(*) FROM prepay.run_periodic_all()') > 0
	   AND cron.schedule('prepay-batches', '* * * * *', 'SELECT count(*) FROM prepay.run_due_batches(1000)') > 0
	   AND cron.schedule('prepay-fold', '* * * * *', 'SELECT prepay.fold_rollups()') > 0;
});
is($scheduled, 't', 'the daily billing run, the batch runner and the rollup fold are scheduled in pg_cron');

ok($node->poll_query_until('postgres', q{
		SELECT count(DISTINCT j.jobname) FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		 WHERE d.status = 'succeeded'
	}, '3'), 'pg_cron ran the three jobs')
  or diag($node->safe_psql('postgres', 'SELECT jobid, status, return_message FROM cron.job_run_details'));

is($node->safe_psql('postgres', q{
	SELECT string_agg(kind || ' ' || amount, ', ' ORDER BY kind::text, amount) FROM prepay.ledger
}), 'consumption -5.00, fee -100.00, recharge 25.00, recharge 1000.00',
	'the month\'s rent was charged and the batch recharged');
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM prepay.energy_pending) || ' deltas, '
	       || (SELECT count(*) > 0 FROM prepay.energy_day_folded) || ' folded, differ from the ledger: '
	       || (SELECT count(*) FROM ((TABLE prepay.energy_day EXCEPT SELECT * FROM prepay.energy_from_ledger(1, '-infinity', 'infinity'))
	                                 UNION ALL (SELECT * FROM prepay.energy_from_ledger(1, '-infinity', 'infinity') EXCEPT TABLE prepay.energy_day)) d)
}), '0 deltas, true folded, differ from the ledger: 0', 'the fold moved the delta and the rollups equal the ledger');

# let at least one more scheduled run of each job happen: nothing more is charged
my $runs = $node->safe_psql('postgres', q{SELECT count(*) FROM cron.job_run_details WHERE status = 'succeeded'});
ok($node->poll_query_until('postgres',
	qq{SELECT count(*) >= $runs + 3 FROM cron.job_run_details WHERE status = 'succeeded'}), 'pg_cron ran the jobs again');
is($node->safe_psql('postgres', q{SELECT count(*) || ' entries, balance ' || (SELECT balance FROM prepay.account) FROM prepay.ledger}),
	'4 entries, balance 920.00', 'the second run charged nothing');
is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.check_ledger()}), '0', 'the ledger explains the balance');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job_run_details WHERE status <> 'succeeded'}), '0',
	'no scheduled run failed');

$node->stop;
done_testing();
