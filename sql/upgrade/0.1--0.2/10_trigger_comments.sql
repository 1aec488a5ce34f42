-- sql/upgrade/0.1--0.2/10_trigger_comments.sql: every trigger has a COMMENT (0.1 had some without).

-- ---------------------------------------------------------------------
-- comments on the triggers that had none
-- ---------------------------------------------------------------------
--@ copy trigger site_device_profiles ON prepay.site
--@ copy trigger gateway_config ON prepay.gateway
--@ copy trigger meter_config ON prepay.meter
--@ copy trigger device_profile_config ON prepay.device_profile
--@ copy trigger profile_register_config ON prepay.profile_register
--@ copy trigger charge_item_check ON prepay.charge_item
--@ copy trigger reading_skip_duplicate ON prepay.reading
--@ copy trigger reading_rate_batch ON prepay.reading
--@ copy trigger ledger_append_only ON prepay.ledger

