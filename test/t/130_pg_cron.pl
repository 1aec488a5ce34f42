# test/t/130_pg_cron.pl
#
# Scheduling with pg_cron, as docs/BILLING.md describes it: a cluster with
# pg_cron preloaded schedules prepay's daily billing run and the batch
# runner; within a minute pg_cron runs both, the month's fee is charged
# once, a due batch is carried out, and a second scheduled run (the next
# minute) charges nothing more.  Nothing but PostgreSQL schedules anything.

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
});

my $scheduled = $node->safe_psql('postgres', q{
	SELECT cron.schedule('prepay-daily', '* * * * *', 'SELECT count(*) FROM prepay.run_periodic_all()') > 0
	   AND cron.schedule('prepay-batches', '* * * * *', 'SELECT count(*) FROM prepay.run_due_batches(1000)') > 0;
});
is($scheduled, 't', 'the daily billing run and the batch runner are scheduled in pg_cron');

ok($node->poll_query_until('postgres', q{
		SELECT count(DISTINCT j.jobname) FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		 WHERE d.status = 'succeeded'
	}, '2'), 'pg_cron ran both jobs')
  or diag($node->safe_psql('postgres', 'SELECT jobid, status, return_message FROM cron.job_run_details'));

is($node->safe_psql('postgres', q{
	SELECT string_agg(kind || ' ' || amount, ', ' ORDER BY kind::text, amount) FROM prepay.ledger
}), 'fee -100.00, recharge 25.00, recharge 1000.00', 'the month\'s rent was charged and the batch recharged');

# let at least one more scheduled run of each job happen: nothing more is charged
my $runs = $node->safe_psql('postgres', q{SELECT count(*) FROM cron.job_run_details WHERE status = 'succeeded'});
ok($node->poll_query_until('postgres',
	qq{SELECT count(*) >= $runs + 2 FROM cron.job_run_details WHERE status = 'succeeded'}), 'pg_cron ran the jobs again');
is($node->safe_psql('postgres', q{SELECT count(*) || ' entries, balance ' || (SELECT balance FROM prepay.account) FROM prepay.ledger}),
	'3 entries, balance 925.00', 'the second run charged nothing');
is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.check_ledger()}), '0', 'the ledger explains the balance');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job_run_details WHERE status <> 'succeeded'}), '0',
	'no scheduled run failed');

$node->stop;
done_testing();
