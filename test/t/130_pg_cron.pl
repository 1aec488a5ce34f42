# test/t/130_pg_cron.pl
#
# Scheduling with pg_cron, as docs/BILLING.md describes it: on a cluster with
# pg_cron preloaded (socket only, so with cron.use_background_workers = on),
# one call, prepay.schedule_jobs(), registers every periodic job prepay needs
# (the daily billing run, the batch runner, the fold of the energy rollups,
# the cut reminders) to run as the superuser who called it.  A second call
# leaves one job of each; a changed schedule is updated in place; a
# non-superuser is refused (42501).  Within a minute pg_cron runs them all:
# the month's fee is charged once, a due batch is carried out, the rollup
# deltas are folded (the rollups still equal the ledger), an account about
# to run out gets its reminder, and the next runs charge nothing more.
# prepay.scheduled_jobs() shows each job's last run; prepay.unschedule_jobs()
# removes them.  Nothing but PostgreSQL schedules anything.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use PrepayTest;

my $node = start_cron_node('cron');

$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_cron;
	CREATE EXTENSION prepay;
	INSERT INTO prepay.site (name, time_zone, fees_may_cut) VALUES ('Plaza', 'Asia/Shanghai', true);
	INSERT INTO prepay.tariff (site_id, name) VALUES (1, 'flat');
	INSERT INTO prepay.tariff_version VALUES (1, 1, '2026-01-01', 1.0);
	SELECT prepay.open_account(1, 'A1', 'Shop', 1, p_floor_area => 20);
	-- A2 (no floor area, so no rent) is about to run out: 0.10 left after 20 kWh
	SELECT prepay.open_account(1, 'A2', 'Kiosk', 1);
	UPDATE prepay.account SET opened_at = now() - interval '400 days';
	SELECT prepay.recharge(1, 1, 1000, 'cash', 'R1');
	SELECT prepay.recharge(1, 2, 20.10, 'cash', 'R2');
	-- 5 a m2 a month, charged from the 1st: 100.00 for this month
	INSERT INTO prepay.charge_item (site_id, name, basis, price, settle, active_from)
	VALUES (1, 'rent', 'per_m2', 5, 'deduct', '2020-01-01');
	SELECT prepay.create_batch(1, 'cron-recharge', 'recharge', 'account',
	                           '[{"id": 1, "amount": 25, "external_ref": "B1"}]', '{"channel": "bank"}');
	-- 5 kWh at 1.00: a consumption entry and its rollup delta
	INSERT INTO prepay.meter (site_id, code) VALUES (1, 'M1'), (1, 'M2');
	SELECT prepay.attach_meter(1, 1, 1, 0, now() - interval '2 hours');
	INSERT INTO prepay.reading (site_id, meter_id, read_at, energy) VALUES (1, 1, now() - interval '1 hour', 5);
	-- A2 used 20 kWh in the last two hours: at that rate (however the day is cut)
	-- its 0.10 runs out within the 30 minutes of the reminder lead
	SELECT prepay.attach_meter(1, 2, 2, 0, now() - interval '2 hours');
	INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
	VALUES (1, 2, now() - interval '1 hour', 10), (1, 2, now() - interval '1 minute', 20);
	CREATE ROLE cron_admin LOGIN IN ROLE prepay_admin;
	INSERT INTO prepay.site_access (site_id, grantee) VALUES (1, 'cron_admin');
});
is($node->safe_psql('postgres', q{SELECT count(*) > 0 FROM prepay.energy_pending}), 't', 'the readings left rollup deltas');
is($node->safe_psql('postgres', q{SELECT status FROM prepay.balance_forecast WHERE account_id = 2}), 'forecast',
	'A2 has a forecast');

# only a superuser schedules: the jobs run as the role that scheduled them
my ($rc, $out, $err) = $node->psql('postgres', 'SELECT * FROM prepay.schedule_jobs()',
	extra_params => ['-U', 'cron_admin', '-v', 'VERBOSITY=verbose']);
like($err, qr/42501: permission denied: prepay.schedule_jobs needs a superuser/, 'a prepay_admin login is refused');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job}), '0', 'and nothing was scheduled');

# every minute, so that the test sees each job run
my $every_minute = q{'{"prepay-daily": "* * * * *", "prepay-cut-reminders": "* * * * *", "prepay-partitions": "* * * * *", "prepay-retention": "* * * * *"}'};
is($node->safe_psql('postgres', qq{SELECT string_agg(jobname || ' ' || schedule || ' ' || run_as || ' ' || state, ', ' ORDER BY jobname)
                                     FROM prepay.schedule_jobs($every_minute)}),
	'prepay-batches * * * * * ' . $node->safe_psql('postgres', 'SELECT current_user') . ' scheduled, '
	. 'prepay-cut-reminders * * * * * ' . $node->safe_psql('postgres', 'SELECT current_user') . ' scheduled, '
	. 'prepay-daily * * * * * ' . $node->safe_psql('postgres', 'SELECT current_user') . ' scheduled, '
	. 'prepay-fold * * * * * ' . $node->safe_psql('postgres', 'SELECT current_user') . ' scheduled, '
	. 'prepay-partitions * * * * * ' . $node->safe_psql('postgres', 'SELECT current_user') . ' scheduled, '
	. 'prepay-retention * * * * * ' . $node->safe_psql('postgres', 'SELECT current_user') . ' scheduled',
	'schedule_jobs registered the billing run, the batch runner, the fold, the reminders, partitions and retention, to run as the caller');
my $ids = $node->safe_psql('postgres', q{SELECT string_agg(jobid::text, ',' ORDER BY jobid) FROM cron.job});
$node->safe_psql('postgres', qq{SELECT count(*) FROM prepay.schedule_jobs($every_minute)});
is($node->safe_psql('postgres', q{SELECT string_agg(jobid::text, ',' ORDER BY jobid) FROM cron.job}), $ids,
	'calling it again leaves one job of each, the same ones');

ok($node->poll_query_until('postgres', q{
		SELECT count(DISTINCT j.jobname) FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		 WHERE d.status = 'succeeded'
	}, '6'), 'pg_cron ran the six jobs')
  or diag($node->safe_psql('postgres', 'SELECT jobid, status, return_message FROM cron.job_run_details'));

is($node->safe_psql('postgres', q{
	SELECT string_agg(kind || ' ' || amount, ', ' ORDER BY kind::text, amount) FROM prepay.ledger WHERE account_id = 1
}), 'consumption -5.00, fee -100.00, recharge 25.00, recharge 1000.00',
	'the month\'s rent was charged and the batch recharged');
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM prepay.energy_pending) || ' deltas, '
	       || (SELECT count(*) > 0 FROM prepay.energy_day_folded) || ' folded, differ from the ledger: '
	       || (SELECT count(*) FROM ((TABLE prepay.energy_day EXCEPT SELECT * FROM prepay.energy_from_ledger(1, '-infinity', 'infinity'))
	                                 UNION ALL (SELECT * FROM prepay.energy_from_ledger(1, '-infinity', 'infinity') EXCEPT TABLE prepay.energy_day)) d)
}), '0 deltas, true folded, differ from the ledger: 0', 'the fold moved the deltas and the rollups equal the ledger');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM prepay.notification n JOIN prepay.cut_reminder r USING (site_id, notification_id)
	 WHERE n.kind = 'cut_reminder' AND n.account_id = 2
}), '1', 'the reminder job reminded A2 before its cut');

# let at least one more scheduled run of each job happen: nothing more is charged
my $runs = $node->safe_psql('postgres', q{SELECT count(*) FROM cron.job_run_details WHERE status = 'succeeded'});
ok($node->poll_query_until('postgres',
	qq{SELECT count(*) >= $runs + 6 FROM cron.job_run_details WHERE status = 'succeeded'}), 'pg_cron ran the jobs again');
is($node->safe_psql('postgres', q{
	SELECT count(*) || ' entries, balance ' || (SELECT balance FROM prepay.account WHERE account_id = 1)
	  FROM prepay.ledger WHERE account_id = 1}),
	'4 entries, balance 920.00', 'the second run charged nothing');
is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.cut_reminder}), '1', 'and reminded once');

# the shown state: each job's last run succeeded
is($node->safe_psql('postgres', q{
	SELECT string_agg(jobname || ' ' || last_status, ', ' ORDER BY jobname) FROM prepay.scheduled_jobs()}),
	'prepay-batches succeeded, prepay-cut-reminders succeeded, prepay-daily succeeded, prepay-fold succeeded, '
	. 'prepay-partitions succeeded, prepay-retention succeeded',
	'scheduled_jobs shows every job\'s last run');

# back to the default schedules: updated in place
is($node->safe_psql('postgres', q{
	SELECT string_agg(jobname || ' ' || schedule, ', ' ORDER BY jobname) FROM prepay.schedule_jobs()}),
	'prepay-batches * * * * *, prepay-cut-reminders */5 * * * *, prepay-daily 5 * * * *, prepay-fold * * * * *, '
	. 'prepay-partitions 17 * * * *, prepay-retention 47 3 * * *',
	'a changed schedule is updated');
is($node->safe_psql('postgres', q{SELECT string_agg(jobid::text, ',' ORDER BY jobid) FROM cron.job}), $ids,
	'in place: still one job of each, the same ones');

is($node->safe_psql('postgres', q{SELECT prepay.unschedule_jobs()}), '6', 'unschedule_jobs removed the six jobs');
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM cron.job) || ' jobs, ' || string_agg(DISTINCT state, ', ') FROM prepay.scheduled_jobs()}),
	'0 jobs, not scheduled', 'none is left');

is($node->safe_psql('postgres', q{SELECT count(*) FROM prepay.check_ledger()}), '0', 'the ledger explains the balances');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job_run_details WHERE status <> 'succeeded'}), '0',
	'no scheduled run failed');

$node->stop;
done_testing();
