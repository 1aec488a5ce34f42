-- sql/upgrade/0.1--0.2/30_report_speed.sql: the room status board, the raw energy report, the balance forecast and the arrears list keep their speed with the pinned search_path.

-- ---------------------------------------------------------------------
-- the reports keep their speed with the pinned search_path
-- ---------------------------------------------------------------------
-- A function with a SET clause is neither inlined nor planned for its
-- arguments: energy_from_ledger writes _entry_parts (and _local_day) out,
-- the room_status view holds the board's query, room_status_at and
-- balance_forecast_at plan per call (PL/pgSQL, RETURN QUERY EXECUTE), and
-- bill_arrears calls _local_day once per bill.  Their definitions are
-- those of reports.sql and bill.sql (sql/upgrade/expand.pl);
-- energy_from_ledger's is written by 70_ledger_compact.sql, after the
-- table it now reads (prepay.charge_pricing).

--@ copy function prepay._entry_parts
--@ copy view prepay.room_status

--@ copy function prepay.room_status_at
--@ copy function prepay.balance_forecast_at
--@ copy view prepay.bill_arrears
