-- sql/upgrade/0.1--0.2/10_trigger_comments.sql: every trigger has a COMMENT (0.1 had some without).

-- ---------------------------------------------------------------------
-- comments on the triggers that had none
-- ---------------------------------------------------------------------
COMMENT ON TRIGGER site_device_profiles ON prepay.site IS
'A new site gets its own copies of the shipped device profiles (prepay._site_device_profiles).';
COMMENT ON TRIGGER gateway_config ON prepay.gateway IS
'A change of what the agent polls (transport, address, serial settings, agent, interval) tells the agents to re-read their catalog (NOTIFY prepay_config).';
COMMENT ON TRIGGER meter_config ON prepay.meter IS
'A change of what the agent polls (gateway, unit, profile, kind, active) tells the agents to re-read their catalog (NOTIFY prepay_config).';
COMMENT ON TRIGGER device_profile_config ON prepay.device_profile IS
'A changed device profile tells the agents to re-read their catalog (NOTIFY prepay_config).';
COMMENT ON TRIGGER profile_register_config ON prepay.profile_register IS
'A changed register map tells the agents to re-read their catalog (NOTIFY prepay_config).';
COMMENT ON TRIGGER charge_item_check ON prepay.charge_item IS
'Refuses a deducted fee at a site whose fees may not cut supply, and a fixed fee with fractions of a cent (prepay._charge_item_check, PY020).';
COMMENT ON TRIGGER reading_skip_duplicate ON prepay.reading IS
'Skips a reading whose (site, meter, read_at) is already stored, so that a reading delivered again is neither stored nor charged twice.';
COMMENT ON TRIGGER reading_rate_batch ON prepay.reading IS
'Rates the statement''s readings as one batch (extension/reading.c): charges, ledger entries, wallets, meter state, rollups, alarms.';
COMMENT ON TRIGGER ledger_append_only ON prepay.ledger IS
'The ledger is append-only: UPDATE, DELETE and TRUNCATE are refused (prepay.ledger_refuse_change).';

