-- sql/upgrade/0.1--0.2/50_dedup.sql: logic that was written twice is
-- written once, in internal helpers the functions share (issue 21).  The
-- definitions are those of the sources (sql/upgrade/expand.pl).

-- credit_payment and refund_payment post through prepay._api_post
--@ copy function prepay._api_post
--@ copy function prepay.credit_payment
--@ copy function prepay.refund_payment

-- confirm_bill and issue_bill move a bill through prepay._bill_to_move
--@ copy function prepay._bill_to_move
--@ copy function prepay.confirm_bill
--@ copy function prepay.issue_bill

-- grant_allowances and charge_fees share their member loop, prepay._charge_members
--@ copy function prepay._charge_members
--@ copy function prepay.grant_allowances
--@ copy function prepay.charge_fees

-- run_batch, cancel_batch and reschedule_batch lock a batch with prepay._batch_for_update
--@ copy function prepay._batch_for_update
--@ copy function prepay.run_batch
--@ copy function prepay.cancel_batch
--@ copy function prepay.reschedule_batch

-- agent_meter_lost and agent_gateway_lost refuse an unknown meter or
-- gateway with prepay._agent_unknown
--@ copy function prepay._agent_unknown
--@ copy function prepay.agent_meter_lost
--@ copy function prepay.agent_gateway_lost
