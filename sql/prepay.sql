/*-------------------------------------------------------------------------
 * sql/prepay.sql
 *     The prepay extension, current version: schema, C bindings and the
 *     public SQL API.  Built into prepay--<version>.sql by the Makefile.
 *
 * Vocabulary
 *     site     a property (plaza, campus, transformer area); every table is
 *              keyed by site_id first so the schema can be distributed by
 *              site without redesign.
 *     meter    an electricity, water or heat meter with a relay or valve.
 *     account  a tenant's wallet; owns one or more meters.
 *     reading  a cumulative register value of one meter at one instant.
 *     ledger   the append-only list of every money movement.  An account's
 *              balance always equals the sum of its ledger amounts.
 *     command  a relay order (trip or close) for the agent to carry out.
 *
 * Money is numeric(14,2) in the site's currency; energy is numeric(15,3)
 * in kWh (electricity, heat) or m3 (water); prices are numeric(12,6) per
 * unit.  See docs/ARCHITECTURE.md for the rounding rule.
 *-------------------------------------------------------------------------
 */
\echo Use "CREATE EXTENSION prepay" to load this file. \quit

-- ---------------------------------------------------------------------
-- types
-- ---------------------------------------------------------------------

CREATE TYPE prepay.meter_kind AS ENUM ('electricity', 'water', 'heat');
COMMENT ON TYPE prepay.meter_kind IS 'What a meter measures: electricity and heat in kWh, water in m3.';

CREATE TYPE prepay.relay_state AS ENUM ('closed', 'tripped');
COMMENT ON TYPE prepay.relay_state IS 'State of a meter''s relay or valve: closed supplies, tripped cuts supply.';

CREATE TYPE prepay.account_mode AS ENUM ('prepaid', 'postpaid');
COMMENT ON TYPE prepay.account_mode IS 'prepaid accounts run the alarm ladder and are tripped in arrears; postpaid accounts are billed after use and never tripped.';

CREATE TYPE prepay.ledger_kind AS ENUM ('consumption', 'recharge', 'refund', 'reversal', 'closing_refund',
                                        'basic_charge', 'adjustment', 'fee', 'fee_credit', 'common_area',
                                        'loss', 'allowance', 'allowance_expiry', 'bill_payment', 'bill_charge');
COMMENT ON TYPE prepay.ledger_kind IS 'Kind of a ledger entry: a consumption charge, a payment (recharge), a refund, the reversal of another entry, the refund of the remaining balance when an account is closed, a two-part basic charge, a re-rating adjustment, a fee (rent, property fee, ...) and the credit of its unused days at move-out, a share of common-area energy or of line loss, an allowance credited and its expiry, and a bill payment with the bill charge it settles.  See docs/BILLING.md.';

CREATE TYPE prepay.command_action AS ENUM ('trip', 'close');
COMMENT ON TYPE prepay.command_action IS 'Relay command: trip cuts supply, close restores it.';

CREATE TYPE prepay.command_state AS ENUM ('queued', 'sent', 'done', 'failed', 'cancelled');
COMMENT ON TYPE prepay.command_state IS 'Life of a relay command: queued for the agent, sent to the meter, done after the relay state was read back, failed, or cancelled before it was sent.';

CREATE TYPE prepay.quarantine_reason AS ENUM (
    'unknown_meter', 'meter_removed', 'invalid_value', 'clock_ahead', 'clock_behind',
    'out_of_order', 'counter_backwards', 'impossible_jump', 'no_price');
COMMENT ON TYPE prepay.quarantine_reason IS 'Why a reading was stored but not rated: see docs/ARCHITECTURE.md, "Bad readings".';

-- ---------------------------------------------------------------------
-- sequences (explicit, so pg_dump keeps their positions)
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.site_id_seq AS integer;
CREATE SEQUENCE prepay.gateway_id_seq;
CREATE SEQUENCE prepay.tariff_id_seq;
CREATE SEQUENCE prepay.account_id_seq;
CREATE SEQUENCE prepay.meter_id_seq;
CREATE SEQUENCE prepay.ledger_entry_id_seq;
CREATE SEQUENCE prepay.command_id_seq;
CREATE SEQUENCE prepay.alarm_id_seq;
CREATE SEQUENCE prepay.notification_id_seq;
CREATE SEQUENCE prepay.no_cut_window_id_seq;
COMMENT ON SEQUENCE prepay.site_id_seq IS 'Source of site ids.';
COMMENT ON SEQUENCE prepay.gateway_id_seq IS 'Source of gateway ids.';
COMMENT ON SEQUENCE prepay.tariff_id_seq IS 'Source of tariff ids.';
COMMENT ON SEQUENCE prepay.account_id_seq IS 'Source of account ids.';
COMMENT ON SEQUENCE prepay.meter_id_seq IS 'Source of meter ids.';
COMMENT ON SEQUENCE prepay.ledger_entry_id_seq IS 'Source of ledger entry ids; increasing ids give the order of entries.';
COMMENT ON SEQUENCE prepay.command_id_seq IS 'Source of relay command ids.';
COMMENT ON SEQUENCE prepay.alarm_id_seq IS 'Source of alarm ids.';
COMMENT ON SEQUENCE prepay.notification_id_seq IS 'Source of notification ids.';
COMMENT ON SEQUENCE prepay.no_cut_window_id_seq IS 'Source of no-cut window ids.';

-- ---------------------------------------------------------------------
-- sites
-- ---------------------------------------------------------------------

CREATE TABLE prepay.site (
    site_id               integer PRIMARY KEY DEFAULT pg_catalog.nextval('prepay.site_id_seq'),
    name                  text NOT NULL UNIQUE,
    time_zone             text NOT NULL DEFAULT 'UTC'
        CHECK (pg_catalog.timezone(time_zone, timestamptz '2000-01-01 00:00+00') IS NOT NULL),
    currency              char(3) NOT NULL DEFAULT 'CNY' CHECK (currency ~ '^[A-Z]{3}$'),
    low_balance_threshold numeric(14,2) NOT NULL DEFAULT 50 CHECK (low_balance_threshold >= 0),
    pretrip_threshold     numeric(14,2) NOT NULL DEFAULT 10 CHECK (pretrip_threshold >= 0),
    fees_may_cut          boolean NOT NULL DEFAULT false,
    loss_alarm_pct        numeric(6,3) NOT NULL DEFAULT 10 CHECK (loss_alarm_pct >= 0),
    payment_terms_days    integer NOT NULL DEFAULT 15 CHECK (payment_terms_days BETWEEN 0 AND 365),
    created_at            timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK (pretrip_threshold <= low_balance_threshold)
);
COMMENT ON TABLE prepay.site IS 'A property run as one unit: its time zone, currency and default alarm thresholds.';
COMMENT ON COLUMN prepay.site.site_id IS 'Site id; the first key column of every prepay table.';
COMMENT ON COLUMN prepay.site.name IS 'Unique human name of the site.';
COMMENT ON COLUMN prepay.site.time_zone IS 'IANA time zone in which the site''s days, months, TOU periods and no-cut windows are evaluated.';
COMMENT ON COLUMN prepay.site.currency IS 'ISO 4217 currency of every amount at this site.';
COMMENT ON COLUMN prepay.site.low_balance_threshold IS 'Default alarm level 1 (low balance) threshold: balance at or below it.';
COMMENT ON COLUMN prepay.site.pretrip_threshold IS 'Default alarm level 2 (pre-trip) threshold: balance at or below it.';
COMMENT ON COLUMN prepay.site.fees_may_cut IS 'Whether fees (rent, property fee, ...) may be deducted from prepaid wallets, and so take a tenant into arrears and cut supply.  When false, fees can only be settled by bill.';
COMMENT ON COLUMN prepay.site.loss_alarm_pct IS 'Line and transformer loss, in percent of the master meter''s energy, above which a period''s loss raises a high_loss alarm.';
COMMENT ON COLUMN prepay.site.payment_terms_days IS 'Days between issuing a bill and its due date.';
COMMENT ON COLUMN prepay.site.created_at IS 'When the site was registered.';

CREATE TABLE prepay.no_cut_window (
    site_id     integer NOT NULL REFERENCES prepay.site,
    window_id   bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.no_cut_window_id_seq'),
    daily_from  time,
    daily_to    time,
    iso_days    smallint[] CHECK (iso_days <@ '{1,2,3,4,5,6,7}'::smallint[]),
    during      tstzrange,
    description text,
    PRIMARY KEY (site_id, window_id),
    CHECK ((daily_from IS NOT NULL AND daily_to IS NOT NULL AND daily_from <> daily_to AND during IS NULL)
        OR (daily_from IS NULL AND daily_to IS NULL AND iso_days IS NULL AND during IS NOT NULL))
);
COMMENT ON TABLE prepay.no_cut_window IS 'Times when supply must not be cut ("friendly hours"): either a daily local-time window, optionally on some ISO weekdays, or a one-off range such as a holiday.  A trip that falls in a window is queued for the window''s end.';
COMMENT ON COLUMN prepay.no_cut_window.site_id IS 'Site the window belongs to.';
COMMENT ON COLUMN prepay.no_cut_window.window_id IS 'Window id.';
COMMENT ON COLUMN prepay.no_cut_window.daily_from IS 'Local start time of a daily window; a window may cross midnight (22:00 to 07:00).';
COMMENT ON COLUMN prepay.no_cut_window.daily_to IS 'Local end time of a daily window (exclusive).';
COMMENT ON COLUMN prepay.no_cut_window.iso_days IS 'ISO weekdays (1 = Monday) on which a daily window starts; NULL means every day.';
COMMENT ON COLUMN prepay.no_cut_window.during IS 'A one-off window, for holidays and events.';
COMMENT ON COLUMN prepay.no_cut_window.description IS 'Why the window exists.';

-- ---------------------------------------------------------------------
-- gateways, tariffs, accounts, meters
-- ---------------------------------------------------------------------

CREATE TABLE prepay.gateway (
    site_id          integer NOT NULL REFERENCES prepay.site,
    gateway_id       bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.gateway_id_seq'),
    name             text NOT NULL,
    transport        text NOT NULL DEFAULT 'tcp' CHECK (transport IN ('tcp', 'rtu', 'rtu_over_tcp')),
    host             text,
    port             integer CHECK (port BETWEEN 1 AND 65535),
    serial_device    text,
    baud             integer CHECK (baud IN (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)),
    parity           char(1) CHECK (parity IN ('N', 'E', 'O')),
    data_bits        smallint CHECK (data_bits IN (7, 8)),
    stop_bits        smallint CHECK (stop_bits IN (1, 2)),
    agent_id         text,
    poll_interval    interval NOT NULL DEFAULT '15 minutes' CHECK (poll_interval >= '1 second'),
    lost_since       timestamptz,
    PRIMARY KEY (site_id, gateway_id),
    UNIQUE (site_id, name),
    CHECK (transport = 'rtu' AND serial_device IS NOT NULL OR transport <> 'rtu' AND host IS NOT NULL)
);
COMMENT ON TABLE prepay.gateway IS 'A communication manager or serial line that the agent polls meters through.';
COMMENT ON COLUMN prepay.gateway.site_id IS 'Site the gateway belongs to.';
COMMENT ON COLUMN prepay.gateway.gateway_id IS 'Gateway id.';
COMMENT ON COLUMN prepay.gateway.name IS 'Unique name within the site.';
COMMENT ON COLUMN prepay.gateway.transport IS 'tcp (Modbus-TCP), rtu (Modbus-RTU on a local serial line) or rtu_over_tcp.';
COMMENT ON COLUMN prepay.gateway.host IS 'Address of a TCP gateway.';
COMMENT ON COLUMN prepay.gateway.port IS 'TCP port of a TCP gateway.';
COMMENT ON COLUMN prepay.gateway.serial_device IS 'Serial device of an RTU line, e.g. /dev/ttyS1.';
COMMENT ON COLUMN prepay.gateway.baud IS 'Baud rate of an RTU line.';
COMMENT ON COLUMN prepay.gateway.parity IS 'Parity of an RTU line: N, E or O.';
COMMENT ON COLUMN prepay.gateway.data_bits IS 'Data bits of an RTU line.';
COMMENT ON COLUMN prepay.gateway.stop_bits IS 'Stop bits of an RTU line.';
COMMENT ON COLUMN prepay.gateway.agent_id IS 'Id of the agent that polls this gateway.';
COMMENT ON COLUMN prepay.gateway.poll_interval IS 'How often the agent reads every meter on this gateway.';
COMMENT ON COLUMN prepay.gateway.lost_since IS 'Since when the whole gateway has not answered; NULL when online.';

CREATE TABLE prepay.tariff (
    site_id    integer NOT NULL REFERENCES prepay.site,
    tariff_id  bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.tariff_id_seq'),
    name       text NOT NULL,
    unit       text NOT NULL DEFAULT 'kWh' CHECK (unit IN ('kWh', 'm3')),
    PRIMARY KEY (site_id, tariff_id),
    UNIQUE (site_id, name)
);
COMMENT ON TABLE prepay.tariff IS 'A named tariff; its prices live in tariff_version.';
COMMENT ON COLUMN prepay.tariff.site_id IS 'Site the tariff belongs to.';
COMMENT ON COLUMN prepay.tariff.tariff_id IS 'Tariff id.';
COMMENT ON COLUMN prepay.tariff.name IS 'Unique name within the site.';
COMMENT ON COLUMN prepay.tariff.unit IS 'Unit the price is per: kWh or m3.';

CREATE TABLE prepay.tariff_version (
    site_id    integer NOT NULL,
    tariff_id  bigint NOT NULL,
    valid_from timestamptz NOT NULL,
    price      numeric(12,6) CHECK (price >= 0),
    definition jsonb,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (site_id, tariff_id, valid_from),
    CONSTRAINT tariff_version_price_or_definition CHECK ((price IS NULL) <> (definition IS NULL)),
    FOREIGN KEY (site_id, tariff_id) REFERENCES prepay.tariff
);
COMMENT ON TABLE prepay.tariff_version IS 'A tariff''s prices from a point in time on: a flat price, or a definition (time-of-use, tiers, two-part, register split; see docs/TARIFFS.md).  Consumption that straddles a valid_from is split at it; consumption before the first version is priced at the first version.  A back-dated version changes future rating only; prepay.rerate settles the past.';
COMMENT ON COLUMN prepay.tariff_version.site_id IS 'Site of the tariff.';
COMMENT ON COLUMN prepay.tariff_version.tariff_id IS 'Tariff this version belongs to.';
COMMENT ON COLUMN prepay.tariff_version.valid_from IS 'Instant from which this price applies.';
COMMENT ON COLUMN prepay.tariff_version.price IS 'Flat price per unit (kWh or m3), six decimals; shorthand for the definition {"price": p}.  Exactly one of price and definition is set.';
COMMENT ON COLUMN prepay.tariff_version.definition IS 'Tariff definition document (docs/TARIFFS.md), validated on write by prepay.tariff_check (SQLSTATE PY015).';
COMMENT ON COLUMN prepay.tariff_version.created_at IS 'When this version was written (a valid_from before it is back-dated).';

CREATE TABLE prepay.account (
    site_id               integer NOT NULL REFERENCES prepay.site,
    account_id            bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.account_id_seq'),
    code                  text NOT NULL,
    name                  text NOT NULL,
    phone                 text,
    email                 text,
    floor_area            numeric(10,2) CHECK (floor_area >= 0),
    capacity_kva          numeric(10,3) CHECK (capacity_kva >= 0),
    mode                  prepay.account_mode NOT NULL DEFAULT 'prepaid',
    tariff_id             bigint NOT NULL,
    credit_limit          numeric(14,2) NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    protect               boolean NOT NULL DEFAULT false,
    low_balance_threshold numeric(14,2) CHECK (low_balance_threshold >= 0),
    pretrip_threshold     numeric(14,2) CHECK (pretrip_threshold >= 0),
    balance               numeric(14,2) NOT NULL DEFAULT 0,
    allowance_left        numeric(14,2) NOT NULL DEFAULT 0 CHECK (allowance_left >= 0),
    allowance_as_of       bigint NOT NULL DEFAULT 0,
    alarm_level           smallint NOT NULL DEFAULT 0 CHECK (alarm_level BETWEEN 0 AND 3),
    opened_at             timestamptz NOT NULL DEFAULT pg_catalog.now(),
    closed_at             timestamptz,
    PRIMARY KEY (site_id, account_id),
    UNIQUE (site_id, code),
    FOREIGN KEY (site_id, tariff_id) REFERENCES prepay.tariff
) WITH (fillfactor = 40);
COMMENT ON TABLE prepay.account IS 'A tenant''s wallet and contact details.  balance is maintained only by the ledger functions and the rating trigger; prepay.check_ledger() proves it equals the ledger.';
COMMENT ON COLUMN prepay.account.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.account.account_id IS 'Account id.';
COMMENT ON COLUMN prepay.account.code IS 'Unique tenant-facing account number within the site.';
COMMENT ON COLUMN prepay.account.name IS 'Tenant name.';
COMMENT ON COLUMN prepay.account.phone IS 'Contact phone for notifications.';
COMMENT ON COLUMN prepay.account.email IS 'Contact e-mail for notifications.';
COMMENT ON COLUMN prepay.account.floor_area IS 'Floor area in m2, for fees and apportionment by area.';
COMMENT ON COLUMN prepay.account.capacity_kva IS 'Contracted transformer capacity in kVA: the basis of a two-part tariff''s basic charge by capacity.';
COMMENT ON COLUMN prepay.account.mode IS 'prepaid or postpaid.';
COMMENT ON COLUMN prepay.account.tariff_id IS 'Tariff of the account''s meters unless a meter has its own.';
COMMENT ON COLUMN prepay.account.credit_limit IS 'Credit below zero: arrears (alarm level 3) and the trip come when the balance is at or below -credit_limit.  With 0 (the default) a balance of exactly 0.00 is arrears: supply is cut when the money runs out.';
COMMENT ON COLUMN prepay.account.protect IS 'Keep power: never trip this account''s meters, whatever the balance.';
COMMENT ON COLUMN prepay.account.low_balance_threshold IS 'Overrides the site''s low-balance threshold when set.';
COMMENT ON COLUMN prepay.account.pretrip_threshold IS 'Overrides the site''s pre-trip threshold when set.';
COMMENT ON COLUMN prepay.account.balance IS 'Wallet balance; always the sum of the account''s ledger amounts.';
COMMENT ON COLUMN prepay.account.allowance_left IS 'Unspent allowance in the wallet as of ledger entry allowance_as_of; read it with prepay.allowance_left(), which also counts the spending since (docs/BILLING.md, "Allowances").';
COMMENT ON COLUMN prepay.account.allowance_as_of IS 'Ledger entry up to which allowance_left is counted.';
COMMENT ON COLUMN prepay.account.alarm_level IS '0 none, 1 low balance, 2 pre-trip, 3 arrears (balance at or below -credit_limit, so 0.00 with no credit limit).  Only open prepaid accounts are on the ladder; closing an account sets it to 0.';
COMMENT ON COLUMN prepay.account.opened_at IS 'When the account was opened.';
COMMENT ON COLUMN prepay.account.closed_at IS 'When the account was closed and settled; NULL while open.';

CREATE TABLE prepay.meter (
    site_id        integer NOT NULL REFERENCES prepay.site,
    meter_id       bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.meter_id_seq'),
    code           text NOT NULL,
    kind           prepay.meter_kind NOT NULL DEFAULT 'electricity',
    multiplier     integer NOT NULL DEFAULT 1 CHECK (multiplier >= 1),
    max_per_hour   numeric(12,3) CHECK (max_per_hour > 0),
    building       text,
    floor          text,
    room           text,
    gateway_id     bigint,
    unit_id        smallint CHECK (unit_id BETWEEN 1 AND 247),
    device_profile text,
    account_id     bigint,
    tariff_id      bigint,
    protect        boolean NOT NULL DEFAULT false,
    active         boolean NOT NULL DEFAULT true,
    removed_at     timestamptz,
    replaced_by    bigint,
    relay_state    prepay.relay_state,
    relay_state_at timestamptz,
    lost_since     timestamptz,
    last_read_at   timestamptz,
    last_energy    numeric(15,3),
    charge_carry   numeric(12,9) NOT NULL DEFAULT 0 CHECK (charge_carry >= 0 AND charge_carry < 0.01),
    cycle_start    timestamptz,
    cycle_used     numeric(15,3) NOT NULL DEFAULT 0 CHECK (cycle_used >= 0),
    last_sharp     numeric(15,3),
    last_peak      numeric(15,3),
    last_flat      numeric(15,3),
    last_valley    numeric(15,3),
    PRIMARY KEY (site_id, meter_id),
    UNIQUE (site_id, code),
    FOREIGN KEY (site_id, gateway_id) REFERENCES prepay.gateway,
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account,
    FOREIGN KEY (site_id, tariff_id) REFERENCES prepay.tariff,
    CHECK (active OR removed_at IS NOT NULL)
) WITH (fillfactor = 40);
CREATE UNIQUE INDEX meter_bus_address ON prepay.meter (site_id, gateway_id, unit_id) WHERE active;
CREATE INDEX meter_account ON prepay.meter (site_id, account_id);
COMMENT ON INDEX prepay.meter_bus_address IS 'Two active meters cannot answer at the same address on one gateway.';
COMMENT ON INDEX prepay.meter_account IS 'Meters of an account.';
COMMENT ON TABLE prepay.meter IS 'A physical meter: where it is, how to reach it, whose it is, and the state the rating trigger keeps (last rated reading, sub-cent carry).';
COMMENT ON COLUMN prepay.meter.site_id IS 'Site of the meter.';
COMMENT ON COLUMN prepay.meter.meter_id IS 'Meter id.';
COMMENT ON COLUMN prepay.meter.code IS 'Unique meter number within the site (nameplate or asset number).';
COMMENT ON COLUMN prepay.meter.kind IS 'electricity, water or heat.';
COMMENT ON COLUMN prepay.meter.multiplier IS 'CT ratio times PT ratio: consumption = register difference times multiplier.';
COMMENT ON COLUMN prepay.meter.max_per_hour IS 'Largest plausible consumption per hour after the multiplier (kW for electricity, m3/h for water); a larger jump is quarantined as impossible_jump.  NULL (the default): derived from what the meter can deliver, its register''s limit for its kind (electricity 100 kWh/h, water 100 m3/h, heat 1,000 kWh/h) times the multiplier; see docs/ARCHITECTURE.md, "Bad readings".';
COMMENT ON COLUMN prepay.meter.building IS 'Building of the metered unit.';
COMMENT ON COLUMN prepay.meter.floor IS 'Floor of the metered unit.';
COMMENT ON COLUMN prepay.meter.room IS 'Room or shop number of the metered unit.';
COMMENT ON COLUMN prepay.meter.gateway_id IS 'Gateway the meter is polled through.';
COMMENT ON COLUMN prepay.meter.unit_id IS 'Modbus unit (slave) address on the gateway.';
COMMENT ON COLUMN prepay.meter.device_profile IS 'Name of the register map the agent uses for this meter.';
COMMENT ON COLUMN prepay.meter.account_id IS 'Account charged for the meter''s consumption; NULL for a vacant unit (readings rated, nothing charged).';
COMMENT ON COLUMN prepay.meter.tariff_id IS 'Meter''s own tariff ("one meter, one price"); NULL uses the account''s.';
COMMENT ON COLUMN prepay.meter.protect IS 'Keep power: never trip this meter.';
COMMENT ON COLUMN prepay.meter.active IS 'false once the meter was replaced or removed; its later readings are quarantined.';
COMMENT ON COLUMN prepay.meter.removed_at IS 'When the meter was replaced or removed.';
COMMENT ON COLUMN prepay.meter.replaced_by IS 'Meter that replaced this one.';
COMMENT ON COLUMN prepay.meter.relay_state IS 'Last relay state known (reported with a reading or read back after a command); NULL if never known.';
COMMENT ON COLUMN prepay.meter.relay_state_at IS 'When relay_state was last learnt.';
COMMENT ON COLUMN prepay.meter.lost_since IS 'Since when the meter has not answered; NULL when online.';
COMMENT ON COLUMN prepay.meter.last_read_at IS 'Time of the last rated reading: the start of the next consumption interval.';
COMMENT ON COLUMN prepay.meter.last_energy IS 'Register value of the last rated reading.';
COMMENT ON COLUMN prepay.meter.cycle_start IS 'Start of the billing cycle cycle_used counts in (tiered tariffs); NULL before the first tiered charge.';
COMMENT ON COLUMN prepay.meter.cycle_used IS 'Consumption (after the multiplier) charged in the current billing cycle: what tier the next unit falls in.';
COMMENT ON COLUMN prepay.meter.last_sharp IS 'Sharp TOU register of the last rated reading (for tariffs that split by registers).';
COMMENT ON COLUMN prepay.meter.last_peak IS 'Peak TOU register of the last rated reading.';
COMMENT ON COLUMN prepay.meter.last_flat IS 'Flat TOU register of the last rated reading.';
COMMENT ON COLUMN prepay.meter.last_valley IS 'Valley TOU register of the last rated reading.';
COMMENT ON COLUMN prepay.meter.charge_carry IS 'Sub-cent part of the exact consumption charges not yet posted (0 <= carry < 0.01); see the rounding rule.';

-- ---------------------------------------------------------------------
-- readings
-- ---------------------------------------------------------------------

CREATE TABLE prepay.reading (
    -- the receipt delay, 4 bytes, fills the alignment gap after site_id
    -- (docs/ARCHITECTURE.md, "What a rated reading costs on disk")
    site_id           integer NOT NULL,
    received_after_seconds integer,
    meter_id          bigint NOT NULL,
    read_at           timestamptz NOT NULL,
    energy            numeric(15,3),
    sharp             numeric(15,3),
    peak              numeric(15,3),
    flat              numeric(15,3),
    valley            numeric(15,3),
    power             numeric(12,3),
    relay_state       prepay.relay_state,
    quarantine_reason prepay.quarantine_reason,
    quarantine_detail text,
    PRIMARY KEY (site_id, meter_id, read_at)
) PARTITION BY RANGE (read_at);
COMMENT ON TABLE prepay.reading IS 'Every reading received, exactly once per (meter, read_at): insert or COPY here and the rating trigger charges the consumption in the same transaction.  A duplicate is silently skipped.  A reading that cannot be rated is kept with a quarantine_reason and an alarm.  No foreign key: a reading of an unknown meter is kept, not refused.  Partitioned by range of read_at: one partition per UTC month once prepay.partition_by_month() ran (pg_partman creates them ahead), and the default partition prepay.reading_default for every reading no month partition takes; write to this table, never to a partition (a partition has no rating trigger: docs/OPERATIONS.md).';
COMMENT ON COLUMN prepay.reading.site_id IS 'Site of the meter.';
COMMENT ON COLUMN prepay.reading.meter_id IS 'Meter read.';
COMMENT ON COLUMN prepay.reading.read_at IS 'When the meter was read.';
COMMENT ON COLUMN prepay.reading.energy IS 'Cumulative total register (kWh or m3, before the multiplier).';
COMMENT ON COLUMN prepay.reading.sharp IS 'Cumulative sharp (tip) TOU register, if the meter has one.';
COMMENT ON COLUMN prepay.reading.peak IS 'Cumulative peak TOU register.';
COMMENT ON COLUMN prepay.reading.flat IS 'Cumulative flat TOU register.';
COMMENT ON COLUMN prepay.reading.valley IS 'Cumulative valley TOU register.';
COMMENT ON COLUMN prepay.reading.power IS 'Active power at read_at, kW (informational).';
COMMENT ON COLUMN prepay.reading.relay_state IS 'Relay state the meter reported, if read.';
COMMENT ON COLUMN prepay.reading.quarantine_reason IS 'NULL when rated; otherwise why the reading was not charged.';
COMMENT ON COLUMN prepay.reading.quarantine_detail IS 'Human explanation of the quarantine, with the values involved.';
COMMENT ON COLUMN prepay.reading.received_after_seconds IS 'When the database received the reading, as whole seconds after read_at (received at read_at + received_after_seconds seconds, to the second; negative for a reading stamped later than its arrival), set by the reading_skip_duplicate trigger from the transaction''s start (now()) unless the writer gave it; held to the integer range (about 68 years either way).';

CREATE INDEX reading_quarantined ON prepay.reading (site_id, meter_id, read_at) WHERE quarantine_reason IS NOT NULL;
COMMENT ON INDEX prepay.reading_quarantined IS 'The quarantine list: readings that were stored but not rated.';

-- the default partition: every reading until prepay.partition_by_month()
-- gives the months their own partitions (and then those of no month
-- partition: far in the past or the future, or a month archived)
CREATE TABLE prepay.reading_default PARTITION OF prepay.reading DEFAULT;
COMMENT ON TABLE prepay.reading_default IS 'Default partition of prepay.reading: every reading of an installation not partitioned by month; once prepay.partition_by_month() ran, only readings no month partition takes (a time far off, or a month archived).  Read and write prepay.reading, not this table.';

-- ---------------------------------------------------------------------
-- the ledger
-- ---------------------------------------------------------------------

CREATE TABLE prepay.ledger (
    -- fixed-width columns first, widest first, then the variable ones:
    -- no alignment padding inside a row (docs/ARCHITECTURE.md, "What a
    -- rated reading costs on disk")
    site_id          integer NOT NULL,
    kind             prepay.ledger_kind NOT NULL,
    entry_id         bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.ledger_entry_id_seq'),
    account_id       bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    meter_id         bigint,
    read_from        timestamptz,
    read_to          timestamptz,
    reverses_entry   bigint,
    pricing_id       integer,
    actor_id         smallint NOT NULL,
    amount           numeric(14,2) NOT NULL,
    balance_after    numeric(14,2) NOT NULL,
    energy           numeric(15,3),
    exact_charge     numeric(18,9),
    channel          text,
    external_ref     text,
    reason           text,
    pieces           json,
    -- one b-tree serves as the key and as the account's entries in order;
    -- an entry found by its id alone goes through ledger_entry (BRIN)
    -- (docs/ARCHITECTURE.md, "What a rated reading costs on disk"); the
    -- key of a partitioned table includes its partition key created_at
    PRIMARY KEY (site_id, account_id, entry_id, created_at),
    CHECK (kind <> 'consumption' OR (meter_id IS NOT NULL AND read_from < read_to AND energy >= 0 AND exact_charge >= 0)),
    CHECK (kind NOT IN ('recharge', 'refund') OR (channel IS NOT NULL AND external_ref IS NOT NULL)),
    CHECK (kind <> 'reversal' OR reverses_entry IS NOT NULL),
    CONSTRAINT ledger_pricing_check CHECK (pricing_id IS NULL OR (kind = 'consumption' AND pieces IS NULL))
) PARTITION BY RANGE (created_at);
CREATE INDEX ledger_entry ON prepay.ledger USING brin (site_id, entry_id) WITH (pages_per_range = 8, autosummarize = on);
CREATE INDEX ledger_payment_ref ON prepay.ledger (site_id, channel, external_ref) WHERE external_ref IS NOT NULL;
CREATE INDEX ledger_reversal ON prepay.ledger (site_id, reverses_entry) WHERE reverses_entry IS NOT NULL;
COMMENT ON INDEX prepay.ledger_entry IS 'An entry by its id without its account (explain_charge, reverse, a bill''s entries): the ledger is append-only and its ids grow with the order rows are written, so each range of 8 pages holds a narrow range of ids, and a lookup reads one or two ranges.  The primary key (site_id, account_id, entry_id, created_at) is the account''s entries in order: statements and trails.';
COMMENT ON INDEX prepay.ledger_payment_ref IS 'The entries of a payment reference (reports, order lookups).  Not unique: a partitioned table cannot enforce a key without created_at; prepay.payment_reference keeps a reference used once per channel.';
COMMENT ON INDEX prepay.ledger_reversal IS 'The reversal of an entry.  Not unique: prepay.reversed_entry keeps an entry reversed at most once.';
COMMENT ON TABLE prepay.ledger IS 'Append-only record of every money movement.  Positive amounts credit the wallet, negative ones debit it.  Corrections are new reversal entries; UPDATE and DELETE are refused, on the table and on each of its partitions.  account_id has no foreign key: rows are written only by prepay''s own functions right after they locked or moved the account, and a per-row key check would double the cost of rating; prepay.check_ledger() reports any entry without its account.  Nor has actor_id (who posted it: prepay.actor), for the same reason; check_ledger() reports an entry without its actor row too.  Partitioned by range of created_at: one partition per UTC month once prepay.partition_by_month() ran (pg_partman creates them ahead), and the default partition prepay.ledger_default for every entry no month partition takes.  Retention never drops a ledger partition (docs/OPERATIONS.md).  A payment reference''s and a reversal''s uniqueness, which a key of this table cannot hold across months, are kept by prepay.payment_reference and prepay.reversed_entry.';
COMMENT ON COLUMN prepay.ledger.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.ledger.entry_id IS 'Entry id, unique in the site (always drawn from ledger_entry_id_seq: no role inserts ledger rows itself, and the key (site_id, account_id, entry_id, created_at) does not check it); increasing with time.';
COMMENT ON COLUMN prepay.ledger.account_id IS 'Account whose wallet moved.';
COMMENT ON COLUMN prepay.ledger.kind IS 'consumption, recharge, refund, reversal or closing_refund.';
COMMENT ON COLUMN prepay.ledger.amount IS 'Signed amount: positive credits the wallet, negative debits it.';
COMMENT ON COLUMN prepay.ledger.balance_after IS 'Wallet balance right after this entry.';
COMMENT ON COLUMN prepay.ledger.created_at IS 'When the entry was posted (transaction time).';
COMMENT ON COLUMN prepay.ledger.actor_id IS 'Database user who posted it (session_user), as its prepay.actor row of the site: (site_id, actor_id) names the login (prepay._actor_id gives the id).  No default: every writer passes prepay._actor_id(site_id).';
COMMENT ON COLUMN prepay.ledger.channel IS 'Payment channel of a recharge or refund (cash, card, wechat, ...).';
COMMENT ON COLUMN prepay.ledger.external_ref IS 'The channel''s reference (receipt or transaction number); unique per channel.';
COMMENT ON COLUMN prepay.ledger.reverses_entry IS 'For a reversal, the entry it cancels.';
COMMENT ON COLUMN prepay.ledger.reason IS 'Free text given by the operator (reversal reason, refund reason).';
COMMENT ON COLUMN prepay.ledger.meter_id IS 'For a consumption charge, the meter.';
COMMENT ON COLUMN prepay.ledger.read_from IS 'For a consumption charge, the previous rated reading''s time.';
COMMENT ON COLUMN prepay.ledger.read_to IS 'For a consumption charge, the reading charged.';
COMMENT ON COLUMN prepay.ledger.energy IS 'For a consumption charge, the energy charged (register difference times multiplier).';
COMMENT ON COLUMN prepay.ledger.exact_charge IS 'For a consumption charge, the exact price of the energy before rounding to cents; for basic charges and adjustments, their exact amount.';
COMMENT ON COLUMN prepay.ledger.pieces IS 'For a consumption charge not described by pricing_id, how it was priced: multiplier, split, billing cycle and the priced pieces (period, tier, energy, price, exact amount); for a re-rating adjustment, the exact difference per charge.  Read a charge''s with prepay._pricing_record or prepay.explain_charge.';
COMMENT ON COLUMN prepay.ledger.pricing_id IS 'For a consumption charge priced as one piece at tier 1, split uniformly, outside any billing cycle: its tariff, multiplier, version and period (prepay.charge_pricing), instead of the pricing record in pieces; the piece is the whole interval, energy and exact charge, at the unit price exact_charge / energy.';

-- the default partition: every entry until prepay.partition_by_month()
-- gives the months their own partitions (and then those no month
-- partition takes)
CREATE TABLE prepay.ledger_default PARTITION OF prepay.ledger DEFAULT;
COMMENT ON TABLE prepay.ledger_default IS 'Default partition of prepay.ledger: every entry of an installation not partitioned by month; once prepay.partition_by_month() ran, only entries no month partition takes (a month pg_partman had not made yet).  Read prepay.ledger, not this table.';

-- what a key of the partitioned ledger cannot hold across its months: a
-- payment reference used once per channel, an entry reversed at most once;
-- written by the ledger's trigger ledger_unique_keys in the transaction
-- that posts the entry, whatever inserted it
CREATE TABLE prepay.payment_reference (
    site_id       integer NOT NULL,
    account_id    bigint NOT NULL,
    entry_id      bigint NOT NULL,
    created_at    timestamptz NOT NULL,
    channel       text NOT NULL,
    external_ref  text NOT NULL,
    PRIMARY KEY (site_id, channel, external_ref)
);
COMMENT ON TABLE prepay.payment_reference IS 'Every payment reference of the ledger, once per site and channel: what makes recharge and refund idempotent across the ledger''s month partitions (a key of the partitioned ledger would have to include created_at).  One row per ledger entry with an external_ref, written by the trigger ledger_unique_keys in the same transaction; a second entry with the same reference fails (23505) as the unique index of an unpartitioned ledger did.  Append-only.';
COMMENT ON COLUMN prepay.payment_reference.site_id IS 'Site of the entry.';
COMMENT ON COLUMN prepay.payment_reference.account_id IS 'Account of the entry.';
COMMENT ON COLUMN prepay.payment_reference.entry_id IS 'The ledger entry that used the reference.';
COMMENT ON COLUMN prepay.payment_reference.created_at IS 'The entry''s created_at: with site, account and entry id, the ledger''s key (one partition).';
COMMENT ON COLUMN prepay.payment_reference.channel IS 'Payment channel (ledger.channel).';
COMMENT ON COLUMN prepay.payment_reference.external_ref IS 'The channel''s reference (ledger.external_ref).';

CREATE TABLE prepay.reversed_entry (
    site_id          integer NOT NULL,
    reverses_entry   bigint NOT NULL,
    account_id       bigint NOT NULL,
    entry_id         bigint NOT NULL,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (site_id, reverses_entry)
);
COMMENT ON TABLE prepay.reversed_entry IS 'Every ledger entry that was reversed, once: an entry is reversed at most once, across the ledger''s month partitions.  One row per ledger entry with reverses_entry, written by the trigger ledger_unique_keys in the same transaction; a second reversal of the same entry fails (23505) as the unique index of an unpartitioned ledger did.  Append-only.';
COMMENT ON COLUMN prepay.reversed_entry.site_id IS 'Site of the entries.';
COMMENT ON COLUMN prepay.reversed_entry.reverses_entry IS 'The entry reversed (ledger.reverses_entry).';
COMMENT ON COLUMN prepay.reversed_entry.account_id IS 'Account of the reversal.';
COMMENT ON COLUMN prepay.reversed_entry.entry_id IS 'The reversal''s own entry id.';
COMMENT ON COLUMN prepay.reversed_entry.created_at IS 'The reversal''s created_at: with site, account and entry id, the ledger''s key (one partition).';

CREATE TABLE prepay.charge_pricing (
    site_id       integer NOT NULL,
    pricing_id    integer NOT NULL,
    tariff_id     bigint NOT NULL,
    multiplier    integer NOT NULL,
    version_from  timestamptz NOT NULL,
    period        text NOT NULL,
    PRIMARY KEY (site_id, pricing_id),
    UNIQUE (site_id, tariff_id, multiplier, version_from, period)
);
COMMENT ON TABLE prepay.charge_pricing IS 'What the pricing records of the one-piece charges have in common, kept once: a consumption charge priced as one piece at tier 1 (a flat price, or a time-of-use period covering the whole interval, with no tiers) names its row by ledger.pricing_id instead of carrying its pricing record.  Rows are added by the rating trigger when first needed (prepay._charge_pricing_id), never changed.';
COMMENT ON COLUMN prepay.charge_pricing.site_id IS 'Site of the charges.';
COMMENT ON COLUMN prepay.charge_pricing.pricing_id IS 'Id the ledger entries name: 1, 2, ... per site, drawn under the site''s rating lock.';
COMMENT ON COLUMN prepay.charge_pricing.tariff_id IS 'Tariff the charges were priced with.';
COMMENT ON COLUMN prepay.charge_pricing.multiplier IS 'Meter multiplier at rating time.';
COMMENT ON COLUMN prepay.charge_pricing.version_from IS 'valid_from of the tariff version that priced them.';
COMMENT ON COLUMN prepay.charge_pricing.period IS 'Period of that version the whole interval fell in.';

-- PL/pgSQL, statement by statement, each filtered on the site: Citus plans
-- each as a single-shard statement (it does not plan a SQL-language
-- function's statements with parameters over distributed tables)
CREATE FUNCTION prepay._charge_pricing_id(p_site_id integer, p_tariff_id bigint, p_multiplier integer,
                                          p_version_from timestamptz, p_period text)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id integer;
BEGIN
    LOOP
        SELECT c.pricing_id INTO id FROM prepay.charge_pricing c
         WHERE c.site_id = p_site_id AND c.tariff_id = p_tariff_id AND c.multiplier = p_multiplier
           AND c.version_from = p_version_from AND c.period = p_period;
        EXIT WHEN FOUND;
        -- the caller holds the site's rating lock: no one else adds a row of
        -- this site now; a row added by a transaction that committed after
        -- this one's snapshot (REPEATABLE READ) conflicts, and DO NOTHING
        -- then fails with 40001, as the rating's other writes would
        SELECT coalesce(max(c.pricing_id), 0) + 1 INTO id FROM prepay.charge_pricing c WHERE c.site_id = p_site_id;
        INSERT INTO prepay.charge_pricing (site_id, pricing_id, tariff_id, multiplier, version_from, period)
        VALUES (p_site_id, id, p_tariff_id, p_multiplier, p_version_from, p_period)
        ON CONFLICT DO NOTHING;
        EXIT WHEN FOUND;
    END LOOP;
    RETURN id;
END $$;
COMMENT ON FUNCTION prepay._charge_pricing_id(integer, bigint, integer, timestamptz, text) IS
'Internal: the prepay.charge_pricing row of a one-piece charge, added if new (the next id of the site).  The rating trigger calls it, under the site''s rating lock, once per batch and distinct pricing.';

-- who posted a ledger entry: the login (session_user) kept once per site,
-- the entries naming it by a 2-byte id (docs/ARCHITECTURE.md, "What a
-- rated reading costs on disk")
CREATE TABLE prepay.actor (
    site_id          integer NOT NULL,
    actor_id         smallint NOT NULL,
    login            text NOT NULL,
    first_posted_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (site_id, actor_id),
    UNIQUE (site_id, login)
);
COMMENT ON TABLE prepay.actor IS 'The database users who posted ledger entries at a site, once each: a ledger entry names its poster by (site_id, actor_id) instead of carrying the login on every row.  Rows are added by prepay._actor_id when a login first posts at the site (the rating trigger, every posting function), never changed.  prepay.check_ledger() reports an entry whose actor row is missing.';
COMMENT ON COLUMN prepay.actor.site_id IS 'Site of the entries.';
COMMENT ON COLUMN prepay.actor.actor_id IS 'Id the ledger entries name (ledger.actor_id): 1, 2, ... per site in the order the logins first posted, at most 32767 (PY026 refuses the next).';
COMMENT ON COLUMN prepay.actor.login IS 'The login (session_user) that posted them.';
COMMENT ON COLUMN prepay.actor.first_posted_at IS 'When the login first posted at the site (the transaction that added the row).';

-- PL/pgSQL, statement by statement, each filtered on the site, as
-- _charge_pricing_id; called from the rating trigger and the posting
-- functions, which run with the owner's rights (SECURITY DEFINER): the
-- roles themselves may only read prepay.actor
CREATE FUNCTION prepay._actor_id(p_site_id integer)
RETURNS smallint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- taken here, on the node the call runs on, and passed as a value: a
    -- statement's own SESSION_USER could be evaluated on a Citus worker,
    -- under the user of the coordinator's connection
    me constant text := SESSION_USER;
    id integer;
BEGIN
    LOOP
        SELECT a.actor_id INTO id FROM prepay.actor a WHERE a.site_id = p_site_id AND a.login = me;
        EXIT WHEN FOUND;
        -- a login added meanwhile by a transaction in flight (the same one,
        -- or another with the same id) makes DO NOTHING wait for it, then
        -- skip: the loop reads again; under REPEATABLE READ a row committed
        -- after this snapshot fails with 40001, as charge_pricing's does
        SELECT coalesce(max(a.actor_id), 0) + 1 INTO id FROM prepay.actor a WHERE a.site_id = p_site_id;
        IF id > 32767 THEN
            PERFORM prepay._raise('PY026', 'too many logins have posted at this site',
                pg_catalog.format('Site %s has 32767 logins in prepay.actor; login %s would be the 32768th to post to its ledger.',
                                  p_site_id, me),
                'Post with a login that posted at the site before (prepay.actor lists them): one login per person or application, not one per transaction or request.');
        END IF;
        INSERT INTO prepay.actor (site_id, actor_id, login) VALUES (p_site_id, id, me)
        ON CONFLICT DO NOTHING;
        EXIT WHEN FOUND;
    END LOOP;
    RETURN id;
END $$;
COMMENT ON FUNCTION prepay._actor_id(integer) IS
'Internal: the prepay.actor id of the calling login (session_user) at a site, added if new (the next id of the site); PY026 for the 32768th login of a site.  Every writer of prepay.ledger passes it as actor_id: the rating trigger once per batch and site, the posting functions once per entry.';

-- no table read: a caller joins charge_pricing on (site_id, pricing_id),
-- which Citus runs on the site's shards
CREATE FUNCTION prepay._pricing_record(p_pieces json, p_tariff_id bigint, p_multiplier integer,
                                       p_version_from timestamptz, p_period text, p_read_from timestamptz,
                                       p_read_to timestamptz, p_energy numeric, p_exact_charge numeric)
RETURNS json LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_tariff_id IS NULL THEN p_pieces ELSE
           pg_catalog.json_build_object(
               'tariff_id', p_tariff_id, 'multiplier', p_multiplier, 'split', 'uniform',
               'pieces', pg_catalog.json_build_array(pg_catalog.json_build_object(
                   'from', p_read_from, 'to', p_read_to, 'version', p_version_from,
                   'period', p_period, 'tier', 1, 'energy', p_energy,
                   'price', round(p_exact_charge / p_energy, 6),
                   'amount', p_exact_charge))) END
$$;
COMMENT ON FUNCTION prepay._pricing_record(json, bigint, integer, timestamptz, text, timestamptz, timestamptz, numeric, numeric) IS
'Internal: the pricing record of a ledger entry l, in the format the rating trigger writes to ledger.pieces (multiplier, split, billing cycle, priced pieces), from l.pieces, the columns of its charge_pricing row c (LEFT JOIN prepay.charge_pricing c ON c.site_id = l.site_id AND c.pricing_id = l.pricing_id) and l.read_from, l.read_to, l.energy, l.exact_charge: pieces itself, or for a one-piece charge the record c and its own interval, energy and exact charge describe.  NULL for entries without one.';

-- ---------------------------------------------------------------------
-- commands, alarms, notifications
-- ---------------------------------------------------------------------

CREATE TABLE prepay.command (
    site_id     integer NOT NULL,
    command_id  bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.command_id_seq'),
    meter_id    bigint NOT NULL,
    account_id  bigint,
    action      prepay.command_action NOT NULL,
    state       prepay.command_state NOT NULL DEFAULT 'queued',
    reason      text NOT NULL,
    not_before  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by  text NOT NULL DEFAULT SESSION_USER,
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    PRIMARY KEY (site_id, command_id),
    FOREIGN KEY (site_id, meter_id) REFERENCES prepay.meter
);
CREATE UNIQUE INDEX command_one_queued ON prepay.command (site_id, meter_id) WHERE state = 'queued';
CREATE INDEX command_open ON prepay.command (site_id, not_before) WHERE state IN ('queued', 'sent');
COMMENT ON INDEX prepay.command_one_queued IS 'At most one queued command per meter: no duplicate commands pile up.';
COMMENT ON INDEX prepay.command_open IS 'Commands the agent still has to carry out.';
COMMENT ON TABLE prepay.command IS 'Relay command queue: the row is the truth, NOTIFY prepay_command only wakes the agent.';
COMMENT ON COLUMN prepay.command.site_id IS 'Site of the meter.';
COMMENT ON COLUMN prepay.command.command_id IS 'Command id.';
COMMENT ON COLUMN prepay.command.meter_id IS 'Meter whose relay is to move.';
COMMENT ON COLUMN prepay.command.account_id IS 'Account whose balance caused the command, if any.';
COMMENT ON COLUMN prepay.command.action IS 'trip or close.';
COMMENT ON COLUMN prepay.command.state IS 'queued, sent, done, failed or cancelled.';
COMMENT ON COLUMN prepay.command.reason IS 'Why: arrears, restored, manual, ...';
COMMENT ON COLUMN prepay.command.not_before IS 'Do not execute before this time (the end of a no-cut window).';
COMMENT ON COLUMN prepay.command.created_at IS 'When the command was queued.';
COMMENT ON COLUMN prepay.command.created_by IS 'Database user who queued it.';
COMMENT ON COLUMN prepay.command.updated_at IS 'Last state change.';
COMMENT ON COLUMN prepay.command.attempts IS 'How many times the agent tried it.';
COMMENT ON COLUMN prepay.command.last_error IS 'Error of the last failed attempt.';

CREATE TABLE prepay.alarm (
    site_id     integer NOT NULL,
    alarm_id    bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.alarm_id_seq'),
    kind        text NOT NULL,
    account_id  bigint,
    meter_id    bigint,
    raised_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    cleared_at  timestamptz,
    detail      text,
    PRIMARY KEY (site_id, alarm_id)
);
CREATE UNIQUE INDEX alarm_one_active ON prepay.alarm (site_id, kind, coalesce(account_id, 0), coalesce(meter_id, 0)) WHERE cleared_at IS NULL;
COMMENT ON INDEX prepay.alarm_one_active IS 'At most one active alarm of a kind per account and meter.';
COMMENT ON TABLE prepay.alarm IS 'Alarms, active (cleared_at NULL) and historical: low_balance, pretrip, arrears, bad_reading, conflicting_reading, split_fallback, command_failing, ...';
COMMENT ON COLUMN prepay.alarm.site_id IS 'Site the alarm belongs to.';
COMMENT ON COLUMN prepay.alarm.alarm_id IS 'Alarm id.';
COMMENT ON COLUMN prepay.alarm.kind IS 'low_balance, pretrip, arrears (the balance ladder), bad_reading (a quarantined reading), conflicting_reading (a second reading of a meter and time with other registers, see prepay.reading_refused), split_fallback (a charge of a tariff that splits by registers split uniformly), command_failing (a relay command still called for keeps failing), notification_dead (a notification given up), meter_lost, gateway_lost (the agent), or a billing alarm.';
COMMENT ON COLUMN prepay.alarm.account_id IS 'Account concerned, if any.';
COMMENT ON COLUMN prepay.alarm.meter_id IS 'Meter concerned, if any.';
COMMENT ON COLUMN prepay.alarm.raised_at IS 'When the alarm was raised.';
COMMENT ON COLUMN prepay.alarm.cleared_at IS 'When it cleared; NULL while active.';
COMMENT ON COLUMN prepay.alarm.detail IS 'Human explanation.';

CREATE TABLE prepay.notification (
    site_id          integer NOT NULL,
    notification_id  bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.notification_id_seq'),
    account_id       bigint NOT NULL,
    kind             text NOT NULL,
    alarm_level      smallint,
    balance          numeric(14,2),
    phone            text,
    email            text,
    message          text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    delivered_at     timestamptz,
    PRIMARY KEY (site_id, notification_id),
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account
);
CREATE INDEX notification_undelivered ON prepay.notification (site_id, notification_id) WHERE delivered_at IS NULL;
COMMENT ON INDEX prepay.notification_undelivered IS 'The outbox: notifications not yet delivered.';
COMMENT ON TABLE prepay.notification IS 'Outbox of messages to tenants (SMS, e-mail, push): a delivery hook reads undelivered rows after NOTIFY prepay_notification and sets delivered_at.';
COMMENT ON COLUMN prepay.notification.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.notification.notification_id IS 'Notification id.';
COMMENT ON COLUMN prepay.notification.account_id IS 'Account notified.';
COMMENT ON COLUMN prepay.notification.kind IS 'alarm_level for balance ladder changes.';
COMMENT ON COLUMN prepay.notification.alarm_level IS 'The new alarm level.';
COMMENT ON COLUMN prepay.notification.balance IS 'Balance when the notification was written.';
COMMENT ON COLUMN prepay.notification.phone IS 'Phone to send to (copied from the account).';
COMMENT ON COLUMN prepay.notification.email IS 'E-mail to send to (copied from the account).';
COMMENT ON COLUMN prepay.notification.message IS 'The text to send.';
COMMENT ON COLUMN prepay.notification.created_at IS 'When it was written.';
COMMENT ON COLUMN prepay.notification.delivered_at IS 'When the delivery hook sent it; NULL while pending.';

-- ---------------------------------------------------------------------
-- C functions and triggers
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.alarm_level(balance numeric, low_balance_threshold numeric,
                                   pretrip_threshold numeric, credit_limit numeric)
RETURNS smallint
AS 'MODULE_PATHNAME', 'prepay_alarm_level'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION prepay.alarm_level(numeric, numeric, numeric, numeric) IS
'The alarm ladder: 3 (arrears) when balance <= -credit_limit (with no credit limit a balance of exactly 0.00 is arrears: the money has run out), else 2 (pre-trip) when balance <= pretrip_threshold, else 1 (low balance) when balance <= low_balance_threshold, else 0.  The rating trigger uses the same C code.  It applies to open prepaid accounts only.';

CREATE FUNCTION prepay.reading_skip_duplicate() RETURNS trigger
AS 'MODULE_PATHNAME', 'prepay_reading_skip_duplicate'
LANGUAGE C SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION prepay.reading_skip_duplicate() IS
'BEFORE INSERT row trigger on prepay.reading: skips a reading whose (site, meter, read_at) is already stored, so INSERT and COPY of duplicates charge nothing and fail nothing.';

CREATE FUNCTION prepay.reading_rate_batch() RETURNS trigger
AS 'MODULE_PATHNAME', 'prepay_reading_rate_batch'
LANGUAGE C SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION prepay.reading_rate_batch() IS
'AFTER INSERT statement trigger on prepay.reading: rates every new reading of the statement in one pass (consumption, price, ledger entry, wallet, alarm ladder, relay commands) and quarantines the bad ones.';

CREATE TRIGGER reading_skip_duplicate BEFORE INSERT ON prepay.reading
    FOR EACH ROW EXECUTE FUNCTION prepay.reading_skip_duplicate();
CREATE TRIGGER reading_rate_batch AFTER INSERT ON prepay.reading
    REFERENCING NEW TABLE AS new_readings
    FOR EACH STATEMENT EXECUTE FUNCTION prepay.reading_rate_batch();
COMMENT ON TRIGGER reading_skip_duplicate ON prepay.reading IS
'Skips a reading whose (site, meter, read_at) is already stored, so that a reading delivered again is neither stored nor charged twice.';
COMMENT ON TRIGGER reading_rate_batch ON prepay.reading IS
'Rates the statement''s readings as one batch (extension/reading.c): charges, ledger entries, wallets, meter state, rollups, alarms.';

-- readings that were not stored, and why: a conflicting duplicate, or a
-- row naming a site its writer may not write (docs/SECURITY.md)
CREATE SEQUENCE prepay.reading_refused_id_seq;
COMMENT ON SEQUENCE prepay.reading_refused_id_seq IS 'Source of prepay.reading_refused ids.';

CREATE TABLE prepay.reading_refused (
    site_id      integer NOT NULL,
    refused_id   bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.reading_refused_id_seq'),
    meter_id     bigint NOT NULL,
    read_at      timestamptz NOT NULL,
    energy       numeric(15,3),
    sharp        numeric(15,3),
    peak         numeric(15,3),
    flat         numeric(15,3),
    valley       numeric(15,3),
    power        numeric(12,3),
    relay_state  prepay.relay_state,
    reason       text NOT NULL CHECK (reason IN ('conflicting_duplicate', 'site_not_mapped')),
    detail       text NOT NULL,
    login        name NOT NULL DEFAULT SESSION_USER,
    acting_role  name NOT NULL,
    refused_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (site_id, refused_id)
);
COMMENT ON TABLE prepay.reading_refused IS 'Readings written to prepay.reading (directly or through prepay.reading_intake) that were not stored, with why: conflicting_duplicate (a reading of the same meter and time is stored with other register values; the stored one keeps its charge, and a conflicting_reading alarm is raised) or site_not_mapped (the writer may not write readings of that site; recorded under the site the row named, so that site''s staff see who tried, and the writer learns nothing of it).  Written by the BEFORE trigger reading_skip_duplicate, never by a role; an identical duplicate is not recorded (replays are silent).';
COMMENT ON COLUMN prepay.reading_refused.site_id IS 'Site the refused row named (for site_not_mapped, a site the writer is not mapped to, perhaps none that exists).';
COMMENT ON COLUMN prepay.reading_refused.refused_id IS 'Refusal id; increasing with time.';
COMMENT ON COLUMN prepay.reading_refused.meter_id IS 'Meter the refused row named.';
COMMENT ON COLUMN prepay.reading_refused.read_at IS 'Time the refused row named.';
COMMENT ON COLUMN prepay.reading_refused.energy IS 'Total register of the refused row.';
COMMENT ON COLUMN prepay.reading_refused.sharp IS 'Sharp register of the refused row.';
COMMENT ON COLUMN prepay.reading_refused.peak IS 'Peak register of the refused row.';
COMMENT ON COLUMN prepay.reading_refused.flat IS 'Flat register of the refused row.';
COMMENT ON COLUMN prepay.reading_refused.valley IS 'Valley register of the refused row.';
COMMENT ON COLUMN prepay.reading_refused.power IS 'Power of the refused row.';
COMMENT ON COLUMN prepay.reading_refused.relay_state IS 'Relay state of the refused row.';
COMMENT ON COLUMN prepay.reading_refused.reason IS 'conflicting_duplicate or site_not_mapped.';
COMMENT ON COLUMN prepay.reading_refused.detail IS 'Human explanation: for a conflict, the stored and the refused register values.';
COMMENT ON COLUMN prepay.reading_refused.login IS 'The session user that wrote the row.';
COMMENT ON COLUMN prepay.reading_refused.acting_role IS 'The role the row was written as (after SET ROLE).';
COMMENT ON COLUMN prepay.reading_refused.refused_at IS 'Transaction time of the refusal.';

-- the bulk path for every role: COPY (or INSERT) here, and the rows go on
-- into prepay.reading in the same statement
CREATE UNLOGGED TABLE prepay.reading_intake (
    site_id      integer NOT NULL,
    meter_id     bigint NOT NULL,
    read_at      timestamptz NOT NULL,
    energy       numeric(15,3),
    sharp        numeric(15,3),
    peak         numeric(15,3),
    flat         numeric(15,3),
    valley       numeric(15,3),
    power        numeric(12,3),
    relay_state  prepay.relay_state
)
-- each statement leaves its rows dead: vacuum often, so that the drain's
-- scan for its own rows stays short
WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
COMMENT ON TABLE prepay.reading_intake IS 'Bulk intake of readings for roles that row-level security keeps from COPY into prepay.reading (COPY FROM is refused on a table with row security): COPY or INSERT here; at the end of the statement its rows are inserted into prepay.reading with the writer''s own rights (the same duplicate, conflict, foreign-site and quarantine rules, rated by the same trigger) and removed from here.  No row security, INSERT only: nobody but a superuser reads it, and it is empty after every statement.  Unlogged: its rows never outlive their statement.';
COMMENT ON COLUMN prepay.reading_intake.site_id IS 'Site of the meter (as prepay.reading).';
COMMENT ON COLUMN prepay.reading_intake.meter_id IS 'Meter read.';
COMMENT ON COLUMN prepay.reading_intake.read_at IS 'When the meter was read.';
COMMENT ON COLUMN prepay.reading_intake.energy IS 'Cumulative total register (before the multiplier).';
COMMENT ON COLUMN prepay.reading_intake.sharp IS 'Cumulative sharp TOU register, if any.';
COMMENT ON COLUMN prepay.reading_intake.peak IS 'Cumulative peak TOU register.';
COMMENT ON COLUMN prepay.reading_intake.flat IS 'Cumulative flat TOU register.';
COMMENT ON COLUMN prepay.reading_intake.valley IS 'Cumulative valley TOU register.';
COMMENT ON COLUMN prepay.reading_intake.power IS 'Active power at read_at, kW.';
COMMENT ON COLUMN prepay.reading_intake.relay_state IS 'Relay state the meter reported, if read.';

CREATE FUNCTION prepay.reading_intake_drain() RETURNS trigger
AS 'MODULE_PATHNAME', 'prepay_reading_intake_drain'
LANGUAGE C SECURITY INVOKER SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION prepay.reading_intake_drain() IS
'AFTER INSERT statement trigger on prepay.reading_intake: inserts the statement''s rows (transition table intake_rows, read into one array per column and passed to one INSERT as parameters, which works on Citus too, where the trigger fires on a shard) into prepay.reading as the writer (its grants and row security; rows of sites it may not write are refused one by one), then deletes them from the intake.  SECURITY INVOKER on purpose: the writer''s rights are what decide.';
CREATE TRIGGER reading_intake_drain AFTER INSERT ON prepay.reading_intake
    REFERENCING NEW TABLE AS intake_rows
    FOR EACH STATEMENT EXECUTE FUNCTION prepay.reading_intake_drain();
COMMENT ON TRIGGER reading_intake_drain ON prepay.reading_intake IS 'Moves every statement''s rows on into prepay.reading, with the writer''s rights, and leaves the intake empty.';

-- ---------------------------------------------------------------------
-- append-only ledger
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'the prepay ledger is append-only'
        USING ERRCODE = 'PY013',
              DETAIL = pg_catalog.format('%s on prepay.%s was refused.', TG_OP, TG_TABLE_NAME),
              HINT = 'Correct an entry with prepay.reverse(site_id, entry_id, reason).';
END $$;
COMMENT ON FUNCTION prepay.ledger_refuse_change() IS 'Refuses UPDATE, DELETE and TRUNCATE on the ledger (its partitions and the tables of its unique keys included).';
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON prepay.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION prepay.ledger_refuse_change();
COMMENT ON TRIGGER ledger_append_only ON prepay.ledger IS
'The ledger is append-only: UPDATE, DELETE and TRUNCATE are refused (prepay.ledger_refuse_change).';
-- a statement trigger fires for the table a statement names, a row trigger
-- is cloned onto every partition: UPDATE and DELETE are refused on each
-- month partition too
CREATE TRIGGER ledger_append_only_rows BEFORE UPDATE OR DELETE ON prepay.ledger
    FOR EACH ROW EXECUTE FUNCTION prepay.ledger_refuse_change();
COMMENT ON TRIGGER ledger_append_only_rows ON prepay.ledger IS
'UPDATE and DELETE are refused on every partition of the ledger too (a row trigger is cloned onto each; prepay.ledger_refuse_change).';
CREATE TRIGGER payment_reference_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON prepay.payment_reference
    FOR EACH STATEMENT EXECUTE FUNCTION prepay.ledger_refuse_change();
COMMENT ON TRIGGER payment_reference_append_only ON prepay.payment_reference IS
'Part of the append-only ledger: UPDATE, DELETE and TRUNCATE are refused (prepay.ledger_refuse_change).';
CREATE TRIGGER reversed_entry_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON prepay.reversed_entry
    FOR EACH STATEMENT EXECUTE FUNCTION prepay.ledger_refuse_change();
COMMENT ON TRIGGER reversed_entry_append_only ON prepay.reversed_entry IS
'Part of the append-only ledger: UPDATE, DELETE and TRUNCATE are refused (prepay.ledger_refuse_change).';

CREATE FUNCTION prepay._ledger_unique_keys() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.external_ref IS NOT NULL THEN
        INSERT INTO prepay.payment_reference (site_id, account_id, entry_id, created_at, channel, external_ref)
        VALUES (NEW.site_id, NEW.account_id, NEW.entry_id, NEW.created_at, NEW.channel, NEW.external_ref);
    END IF;
    IF NEW.reverses_entry IS NOT NULL THEN
        INSERT INTO prepay.reversed_entry (site_id, reverses_entry, account_id, entry_id, created_at)
        VALUES (NEW.site_id, NEW.reverses_entry, NEW.account_id, NEW.entry_id, NEW.created_at);
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._ledger_unique_keys() IS
'Internal: AFTER INSERT row trigger on prepay.ledger for the entries with a payment reference or a reversed entry: records them in prepay.payment_reference and prepay.reversed_entry, whose keys refuse (23505) a reference used twice on a channel and an entry reversed twice, in whichever month partitions the entries are.';
CREATE TRIGGER ledger_unique_keys AFTER INSERT ON prepay.ledger
    FOR EACH ROW WHEN (NEW.external_ref IS NOT NULL OR NEW.reverses_entry IS NOT NULL)
    EXECUTE FUNCTION prepay._ledger_unique_keys();
COMMENT ON TRIGGER ledger_unique_keys ON prepay.ledger IS
'A payment reference used once per channel and an entry reversed at most once, across the month partitions (prepay._ledger_unique_keys).  Never fires for consumption entries.';

-- ---------------------------------------------------------------------
-- internal helpers (not part of the public API)
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._raise(sqlstate text, message text, detail text, hint text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF detail IS NOT NULL AND hint IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, DETAIL = detail, HINT = hint;
    ELSIF detail IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, DETAIL = detail;
    ELSIF hint IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, HINT = hint;
    ELSE
        RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message;
    END IF;
END $$;
COMMENT ON FUNCTION prepay._raise(text, text, text, text) IS 'Internal: raise an error with a SQLSTATE, message, detail and hint.';

-- the functions that change the server (partitions, files, pg_cron jobs,
-- Citus's catalog) are a superuser's alone
CREATE FUNCTION prepay._require_superuser(p_what text, p_why text DEFAULT NULL,
                                          p_how text DEFAULT 'Connect as a superuser (for example postgres)')
RETURNS void LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied: prepay.%s needs a superuser', p_what),
            pg_catalog.concat_ws('  ', pg_catalog.format('Role %s is not a superuser.', current_user), p_why),
            p_how || ' and call it again.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._require_superuser(text, text, text) IS
'Internal: refuse (42501) unless the caller is a superuser: p_what names the function in the message, p_why (optional) says in the detail why it needs one, p_how says in the hint where to connect.';

CREATE FUNCTION prepay._check_cents(p_amount numeric, p_what text)
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_amount <> pg_catalog.round(p_amount, 2) THEN
        PERFORM prepay._raise('22023', pg_catalog.format('%s has more than two decimal places', p_what),
            pg_catalog.format('The amount given was %s.', p_amount), 'Amounts are exact to the cent.');
    END IF;
    IF p_amount >= 1e12 THEN
        PERFORM prepay._raise('22003', pg_catalog.format('%s is too large', p_what),
            pg_catalog.format('The amount given was %s.', p_amount), 'Amounts must be below 1,000,000,000,000.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._check_cents(numeric, text) IS 'Internal: refuse an amount with fractions of a cent (22023) or absurdly large (22003); the checks every money input shares.';

CREATE FUNCTION prepay._check_amount(p_amount numeric, p_what text)
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_amount = 'NaN'::numeric THEN
        PERFORM prepay._raise('22023', pg_catalog.format('%s amount is not a number', p_what), NULL,
            'Pass a positive amount in the site''s currency.');
    END IF;
    IF p_amount IS NULL OR p_amount <= 0 THEN
        PERFORM prepay._raise('22023', pg_catalog.format('%s amount must be positive', p_what),
            pg_catalog.format('The amount given was %s.', coalesce(p_amount::text, 'NULL')),
            'Pass a positive amount in the site''s currency; use prepay.refund or prepay.reverse to take money back.');
    END IF;
    PERFORM prepay._check_cents(p_amount, p_what || ' amount');
END $$;
COMMENT ON FUNCTION prepay._check_amount(numeric, text) IS 'Internal: refuse a money amount that is not positive, has fractions of a cent or is absurdly large (SQLSTATE 22023 or 22003).';

CREATE FUNCTION prepay._check_text(p_value text, p_what text)
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_value IS NULL OR pg_catalog.btrim(p_value) = '' THEN
        PERFORM prepay._raise('22023', pg_catalog.format('%s must not be empty', p_what), NULL,
            pg_catalog.format('Pass a non-empty %s.', p_what));
    END IF;
END $$;
COMMENT ON FUNCTION prepay._check_text(text, text) IS 'Internal: refuse a NULL or blank required text argument (SQLSTATE 22023).';

CREATE FUNCTION prepay._check_reference(p_value text, p_what text)
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at integer := pg_catalog.regexp_instr(p_value, '[\x01-\x1f\x7f-\x9f]');
BEGIN
    PERFORM prepay._check_text(p_value, p_what);
    IF at > 0 THEN
        PERFORM prepay._raise('PY017', pg_catalog.format('%s contains a control character', p_what),
            pg_catalog.format('Character %s of the %s is U+%s.', at, p_what,
                              pg_catalog.upper(pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.ascii(pg_catalog.substr(p_value, at, 1))), 4, '0'))),
            pg_catalog.format('Pass the %s as printable text: control characters (tabs, line breaks, escapes) '
                              'are refused in payment channels and references.', p_what));
    END IF;
END $$;
COMMENT ON FUNCTION prepay._check_reference(text, text) IS 'Internal: refuse a payment channel or reference (external id) that is NULL or blank (22023) or contains a control character, U+0001-U+001F or U+007F-U+009F (PY017).  Every public function that stores a channel or reference with money calls it.';

CREATE FUNCTION prepay._lock_site_rating(p_site_id integer)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF prepay._distributed() THEN
        -- on Citus the site's row, on the node holding the site's shards
        PERFORM FROM prepay.site WHERE site_id = p_site_id FOR NO KEY UPDATE;
    ELSE
        PERFORM pg_catalog.pg_advisory_xact_lock(1886545264, p_site_id);  -- 1886545264 = 'prep'
    END IF;
END $$;
COMMENT ON FUNCTION prepay._lock_site_rating(integer) IS
'Internal: the site''s rating lock: a transaction-level advisory lock on one node; once prepay.distribute() ran, a FOR NO KEY UPDATE lock on the site''s row, which the node holding the site''s shards keeps for every session whichever node it came through (an advisory lock is local to one node).  The rating trigger takes it before reading meter state, and so do the functions that change a meter''s account or readings, before any row lock: see the locking protocol in extension/reading.c.';

CREATE FUNCTION prepay._distributed() RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    distributed boolean;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;                       -- no Citus here
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = ''prepay.site''::pg_catalog.regclass)'
       INTO distributed;
    RETURN distributed;
END $$;
COMMENT ON FUNCTION prepay._distributed() IS
'Internal: whether prepay''s tables are distributed by Citus (prepay.distribute() ran), on whichever node asks: the coordinator and every worker keep Citus''s metadata.';

CREATE FUNCTION prepay._relay_state(p_label text) RETURNS prepay.relay_state
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_label::prepay.relay_state
$$;
COMMENT ON FUNCTION prepay._relay_state(text) IS
'Internal: a relay state label as prepay.relay_state, for the rating trigger''s meter update.  Declared IMMUTABLE (the labels of the type never change), so that Citus evaluates it on the node holding the shard, where it refuses a STABLE cast inside COALESCE.';

CREATE FUNCTION prepay._lock_account(p_site_id integer, p_account_id bigint, p_must_be_open boolean DEFAULT true)
RETURNS prepay.account LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
BEGIN
    SELECT * INTO a FROM prepay.account
     WHERE site_id = p_site_id AND account_id = p_account_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY001', 'unknown account',
            pg_catalog.format('Site %s has no account %s.', p_site_id, p_account_id),
            'Check the site and account ids; prepay.account lists the accounts.');
    END IF;
    IF p_must_be_open AND a.closed_at IS NOT NULL THEN
        PERFORM prepay._raise('PY002', 'account is closed',
            pg_catalog.format('Account %s of site %s is closed.', p_account_id, p_site_id),
            'Open a new account for the tenant.');
    END IF;
    RETURN a;
END $$;
COMMENT ON FUNCTION prepay._lock_account(integer, bigint, boolean) IS 'Internal: lock an account row for a wallet movement (the one lock every money path takes), raising PY001 if unknown and PY002 if closed.';

CREATE FUNCTION prepay._lock_meter(p_site_id integer, p_meter_id bigint)
RETURNS prepay.meter LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m prepay.meter;
BEGIN
    SELECT * INTO m FROM prepay.meter
     WHERE site_id = p_site_id AND meter_id = p_meter_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY003', 'unknown meter',
            pg_catalog.format('Site %s has no meter %s.', p_site_id, p_meter_id),
            'Check the site and meter ids; prepay.meter lists the meters.');
    END IF;
    RETURN m;
END $$;
COMMENT ON FUNCTION prepay._lock_meter(integer, bigint) IS 'Internal: lock a meter row, raising PY003 if it does not exist.';

CREATE FUNCTION prepay.cut_allowed_at(p_site_id integer, p_at timestamptz)
RETURNS timestamptz LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tz text;
    t timestamptz := p_at;
    moved boolean := true;
    w prepay.no_cut_window;
    local timestamp;
    day date;
    window_end timestamptz;
    rounds integer := 0;
BEGIN
    SELECT time_zone INTO tz FROM prepay.site WHERE site_id = p_site_id;
    WHILE moved AND rounds < 100 LOOP
        moved := false;
        rounds := rounds + 1;
        FOR w IN SELECT * FROM prepay.no_cut_window WHERE site_id = p_site_id LOOP
            window_end := NULL;
            IF w.during IS NOT NULL THEN
                IF w.during @> t THEN
                    window_end := pg_catalog.upper(w.during);
                END IF;
            ELSE
                local := pg_catalog.timezone(tz, t);
                day := local::date;
                IF w.daily_from < w.daily_to THEN
                    IF local::time >= w.daily_from AND local::time < w.daily_to THEN
                        window_end := pg_catalog.timezone(tz, day + w.daily_to);
                    END IF;
                ELSIF local::time >= w.daily_from THEN
                    window_end := pg_catalog.timezone(tz, day + 1 + w.daily_to);
                ELSIF local::time < w.daily_to THEN
                    day := day - 1;   -- the window started the evening before
                    window_end := pg_catalog.timezone(tz, day + 1 + w.daily_to);
                END IF;
                IF window_end IS NOT NULL AND w.iso_days IS NOT NULL
                   AND NOT (pg_catalog.date_part('isodow', day)::smallint = ANY (w.iso_days)) THEN
                    window_end := NULL;
                END IF;
            END IF;
            IF window_end IS NOT NULL AND window_end > t THEN
                t := window_end;
                moved := true;
            END IF;
        END LOOP;
    END LOOP;
    RETURN t;
END $$;
COMMENT ON FUNCTION prepay.cut_allowed_at(integer, timestamptz) IS
'Earliest instant at or after p_at when the site allows cutting supply: p_at itself unless a no-cut window is in force, else the end of the (chained) windows.';

CREATE FUNCTION prepay._announce(p_channel text, p_payload text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- on a Citus worker nobody listens (agents connect to the coordinator and
    -- re-read their commands every second), and a NOTIFY there would stop
    -- the two-phase commit of a statement that wrote to several workers
    IF prepay._citus_group() <> 0 THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.pg_notify(p_channel, p_payload);
END $$;
COMMENT ON FUNCTION prepay._announce(text, text) IS
'Internal: NOTIFY p_channel with p_payload (relay commands, notifications, configuration changes), except on a Citus worker, where no agent listens: there the agent''s re-read of its commands every second and of its notifications pick the rows up (docs/SCALE-OUT.md).';

CREATE FUNCTION prepay._citus_group() RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g integer := 0;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_local_group') IS NOT NULL THEN
        EXECUTE 'SELECT groupid FROM pg_catalog.pg_dist_local_group' INTO g;
    END IF;
    RETURN coalesce(g, 0);
END $$;
COMMENT ON FUNCTION prepay._citus_group() IS
'Internal: this node''s Citus group id: 0 on the coordinator and on a server without Citus.';

CREATE FUNCTION prepay._queue_command(p_site_id integer, p_meter_id bigint, p_action prepay.command_action,
                                      p_reason text, p_account_id bigint DEFAULT NULL,
                                      p_not_before timestamptz DEFAULT pg_catalog.now())
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    queued prepay.command;
    new_id bigint;
BEGIN
    LOOP
        SELECT * INTO queued FROM prepay.command
         WHERE site_id = p_site_id AND meter_id = p_meter_id AND state = 'queued' FOR UPDATE;
        IF FOUND THEN
            IF queued.action = p_action THEN
                RETURN queued.command_id;          -- the same order is already waiting
            END IF;
            UPDATE prepay.command SET state = 'cancelled', updated_at = pg_catalog.now(),
                   last_error = pg_catalog.format('superseded by a %s command', p_action)
             WHERE site_id = p_site_id AND command_id = queued.command_id;
        END IF;
        BEGIN
            INSERT INTO prepay.command (site_id, meter_id, account_id, action, reason, not_before)
            VALUES (p_site_id, p_meter_id, p_account_id, p_action, p_reason, p_not_before)
            RETURNING command_id INTO new_id;
            EXIT;
        EXCEPTION WHEN unique_violation THEN
            -- a failed command of the meter was queued again for a retry
            -- (prepay.agent_command_failed) after our look: look again
        END;
    END LOOP;
    PERFORM prepay._announce('prepay_command', p_site_id || '/' || new_id);
    RETURN new_id;
END $$;
COMMENT ON FUNCTION prepay._queue_command(integer, bigint, prepay.command_action, text, bigint, timestamptz) IS
'Internal: queue a relay command unless the same one is already queued; an opposite queued command is cancelled.  A failed command queued again for a retry by a concurrent transaction is seen by looking again (test/specs/command_retry_race.spec).  Sends NOTIFY prepay_command with "site_id/command_id".';

CREATE FUNCTION prepay._cancel_queued(p_site_id integer, p_meter_id bigint, p_action prepay.command_action, p_why text)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE prepay.command SET state = 'cancelled', updated_at = pg_catalog.now(), last_error = p_why
     WHERE site_id = p_site_id AND meter_id = p_meter_id AND state = 'queued' AND action = p_action;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION prepay._cancel_queued(integer, bigint, prepay.command_action, text) IS 'Internal: cancel a queued command of the given action for a meter; true if one was cancelled.';

CREATE FUNCTION prepay._trip_account(p_site_id integer, p_account_id bigint, p_reason text)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    m prepay.meter;
    n integer := 0;
BEGIN
    SELECT * INTO a FROM prepay.account WHERE site_id = p_site_id AND account_id = p_account_id;
    IF a.protect OR a.mode <> 'prepaid' THEN
        RETURN 0;
    END IF;
    FOR m IN SELECT * FROM prepay.meter
              WHERE site_id = p_site_id AND account_id = p_account_id AND active AND NOT protect
              ORDER BY meter_id LOOP
        PERFORM prepay._queue_command(p_site_id, m.meter_id, 'trip', p_reason, p_account_id,
                                      prepay.cut_allowed_at(p_site_id, pg_catalog.now()));
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay._trip_account(integer, bigint, text) IS 'Internal: queue a trip for each unprotected active meter of an unprotected prepaid account, deferred to the end of any no-cut window.  Returns how many.';

CREATE FUNCTION prepay._restore_account(p_site_id integer, p_account_id bigint, p_reason text)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m prepay.meter;
    n integer := 0;
BEGIN
    FOR m IN SELECT * FROM prepay.meter
              WHERE site_id = p_site_id AND account_id = p_account_id AND active
              ORDER BY meter_id LOOP
        PERFORM prepay._cancel_queued(p_site_id, m.meter_id, 'trip', 'balance restored before the trip was sent');
        IF m.relay_state IS DISTINCT FROM 'closed'
           OR EXISTS (SELECT 1 FROM prepay.command c
                       WHERE c.site_id = p_site_id AND c.meter_id = m.meter_id
                         AND c.action = 'trip' AND c.state = 'sent') THEN
            PERFORM prepay._queue_command(p_site_id, m.meter_id, 'close', p_reason, p_account_id);
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay._restore_account(integer, bigint, text) IS 'Internal: automatic restore: cancel queued trips and queue a close for every meter not known to be closed.  Returns how many closes were queued.';

CREATE FUNCTION prepay._alarm_level_changed(p_site_id integer, p_account_id bigint,
                                            p_old smallint, p_new smallint)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kinds constant text[] := ARRAY['low_balance', 'pretrip', 'arrears'];
    a prepay.account;
    s prepay.site;
    notification_id bigint;
    msg text;
BEGIN
    UPDATE prepay.account SET alarm_level = p_new
     WHERE site_id = p_site_id AND account_id = p_account_id AND mode = 'prepaid' AND closed_at IS NULL
    RETURNING * INTO a;
    IF NOT FOUND THEN
        RETURN;             -- a closed or closing (or postpaid) account is outside the ladder
    END IF;
    SELECT * INTO s FROM prepay.site WHERE site_id = p_site_id;

    UPDATE prepay.alarm SET cleared_at = pg_catalog.now()
     WHERE site_id = p_site_id AND account_id = p_account_id AND meter_id IS NULL
       AND cleared_at IS NULL AND kind = ANY (kinds)
       AND (p_new = 0 OR kind <> kinds[p_new]);
    IF p_new > 0 THEN
        INSERT INTO prepay.alarm (site_id, kind, account_id, detail)
        VALUES (p_site_id, kinds[p_new], p_account_id,
                pg_catalog.format('balance %s %s', a.balance, s.currency))
        ON CONFLICT DO NOTHING;
    END IF;

    msg := CASE p_new
        WHEN 0 THEN pg_catalog.format('Account %s: balance is %s %s, thank you.', a.code, a.balance, s.currency)
        WHEN 1 THEN pg_catalog.format('Account %s: balance is low (%s %s). Please recharge.', a.code, a.balance, s.currency)
        WHEN 2 THEN pg_catalog.format('Account %s: balance %s %s; supply will be cut soon. Please recharge now.', a.code, a.balance, s.currency)
        ELSE pg_catalog.format(CASE WHEN a.protect THEN 'Account %s %s (%s %s). Please recharge.'
                                    ELSE 'Account %s %s (%s %s); supply is being cut. It is restored automatically when you recharge.' END,
                               a.code, CASE WHEN a.balance < 0 THEN 'is in arrears' ELSE 'has no credit left' END,
                               a.balance, s.currency)
    END;
    INSERT INTO prepay.notification (site_id, account_id, kind, alarm_level, balance, phone, email, message)
    VALUES (p_site_id, p_account_id, 'alarm_level', p_new, a.balance, a.phone, a.email, msg)
    RETURNING notification.notification_id INTO notification_id;
    PERFORM prepay._announce('prepay_notification', p_site_id || '/' || notification_id);

    IF p_new = 3 AND p_old < 3 THEN
        PERFORM prepay._trip_account(p_site_id, p_account_id, 'arrears');
    ELSIF p_old = 3 AND p_new < 3 THEN
        PERFORM prepay._restore_account(p_site_id, p_account_id, 'balance restored');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._alarm_level_changed(integer, bigint, smallint, smallint) IS
'Internal: the consequences of an alarm level change of an open prepaid account (any other is outside the ladder: nothing happens): store the level, swap the active ladder alarm, write a notification (NOTIFY prepay_notification), trip on entering arrears and restore on leaving them.  Called by the rating trigger and by every wallet movement.';

CREATE FUNCTION prepay._post_entry(p_site_id integer, p_account_id bigint, p_kind prepay.ledger_kind,
                                   p_amount numeric, p_channel text DEFAULT NULL, p_external_ref text DEFAULT NULL,
                                   p_reason text DEFAULT NULL, p_reverses bigint DEFAULT NULL,
                                   p_exact numeric DEFAULT NULL, p_pieces json DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    s prepay.site;
    entry bigint;
    new_level smallint;
BEGIN
    -- caller holds the account lock (prepay._lock_account)
    UPDATE prepay.account SET balance = balance + p_amount
     WHERE site_id = p_site_id AND account_id = p_account_id
    RETURNING * INTO a;
    INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, actor_id,
                               channel, external_ref, reason, reverses_entry, exact_charge, pieces)
    VALUES (p_site_id, p_account_id, p_kind, p_amount, a.balance, prepay._actor_id(p_site_id),
            p_channel, p_external_ref, p_reason, p_reverses, p_exact, p_pieces)
    RETURNING entry_id INTO entry;

    IF a.mode = 'prepaid' AND a.closed_at IS NULL THEN
        SELECT * INTO s FROM prepay.site WHERE site_id = p_site_id;
        new_level := prepay.alarm_level(a.balance,
                                        coalesce(a.low_balance_threshold, s.low_balance_threshold),
                                        coalesce(a.pretrip_threshold, s.pretrip_threshold),
                                        a.credit_limit);
        IF new_level <> a.alarm_level THEN
            PERFORM prepay._alarm_level_changed(p_site_id, p_account_id, a.alarm_level, new_level);
        END IF;
    END IF;
    RETURN entry;
END $$;
COMMENT ON FUNCTION prepay._post_entry(integer, bigint, prepay.ledger_kind, numeric, text, text, text, bigint, numeric, json) IS
'Internal: post one ledger entry, move the wallet by the same amount and run the alarm ladder.  The caller must hold the account lock.';

CREATE FUNCTION prepay._payment_replay(p_site_id integer, p_account_id bigint, p_kind prepay.ledger_kind,
                                       p_amount numeric, p_channel text, p_external_ref text)
RETURNS bigint LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e prepay.ledger;
BEGIN
    -- the reference's entry, in the one partition of its created_at
    SELECT l.* INTO e FROM prepay.payment_reference p
      JOIN prepay.ledger l ON l.site_id = p.site_id AND l.account_id = p.account_id AND l.entry_id = p.entry_id
                          AND l.created_at = p.created_at
     WHERE p.site_id = p_site_id AND l.site_id = p_site_id AND p.channel = p_channel AND p.external_ref = p_external_ref;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF e.account_id <> p_account_id OR e.kind <> p_kind OR e.amount <> p_amount THEN
        PERFORM prepay._raise('PY004', 'payment reference already used for a different payment',
            pg_catalog.format('Reference %L on channel %L is ledger entry %s: %s of %s on account %s.',
                              p_external_ref, p_channel, e.entry_id, e.kind, e.amount, e.account_id),
            'A reference identifies one payment; use a new reference for a new payment.');
    END IF;
    RETURN e.entry_id;
END $$;
COMMENT ON FUNCTION prepay._payment_replay(integer, bigint, prepay.ledger_kind, numeric, text, text) IS
'Internal: the entry already posted for (channel, external_ref), NULL if none; PY004 if that entry is a different payment.';

-- ---------------------------------------------------------------------
-- public API: accounts and meters
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._record_reading(p_site_id integer, p_meter_id bigint, p_at timestamptz,
                                       p_energy numeric, p_what text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    why text;
BEGIN
    INSERT INTO prepay.reading (site_id, meter_id, read_at, energy)
    VALUES (p_site_id, p_meter_id, p_at, p_energy);
    SELECT quarantine_detail INTO why FROM prepay.reading
     WHERE site_id = p_site_id AND meter_id = p_meter_id AND read_at = p_at AND quarantine_reason IS NOT NULL;
    IF FOUND THEN
        PERFORM prepay._raise('PY011', pg_catalog.format('%s reading was not accepted', p_what), why,
            'Check the register value and its time against the meter''s last reading.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._record_reading(integer, bigint, timestamptz, numeric, text) IS
'Internal: record a reading an operator typed in (handover, final, initial) through the rating trigger, and raise PY011 with the quarantine detail if it was not accepted.';

CREATE FUNCTION prepay.open_account(p_site_id integer, p_code text, p_name text, p_tariff_id bigint,
                                    p_mode prepay.account_mode DEFAULT 'prepaid',
                                    p_phone text DEFAULT NULL, p_email text DEFAULT NULL,
                                    p_floor_area numeric DEFAULT NULL, p_credit_limit numeric DEFAULT 0)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._check_text(p_code, 'account code');
    PERFORM prepay._check_text(p_name, 'account name');
    IF NOT EXISTS (SELECT 1 FROM prepay.site WHERE site_id = p_site_id) THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id),
                              'prepay.site lists the sites.');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM prepay.tariff WHERE site_id = p_site_id AND tariff_id = p_tariff_id) THEN
        PERFORM prepay._raise('PY009', 'unknown tariff',
            pg_catalog.format('Site %s has no tariff %s.', p_site_id, p_tariff_id), 'prepay.tariff lists the tariffs.');
    END IF;
    IF p_credit_limit IS NULL OR p_credit_limit = 'NaN'::numeric OR p_credit_limit < 0 THEN
        PERFORM prepay._raise('22023', 'credit limit must be a number at or above zero',
            pg_catalog.format('The credit limit given was %s.', coalesce(p_credit_limit::text, 'NULL')),
            'With a credit limit of 100 the trip comes when the balance reaches -100.00; with 0, when it reaches 0.00.');
    END IF;
    PERFORM prepay._check_cents(p_credit_limit, 'credit limit');
    IF p_floor_area = 'NaN'::numeric OR p_floor_area < 0 THEN
        PERFORM prepay._raise('22023', 'floor area must be a number at or above zero',
            pg_catalog.format('The floor area given was %s.', p_floor_area),
            'Pass the area in m2, or NULL when it is not known.');
    END IF;
    INSERT INTO prepay.account (site_id, code, name, tariff_id, mode, phone, email, floor_area, credit_limit)
    VALUES (p_site_id, p_code, p_name, p_tariff_id, p_mode, p_phone, p_email, p_floor_area, p_credit_limit)
    RETURNING account_id INTO id;
    RETURN id;
EXCEPTION WHEN unique_violation THEN
    PERFORM prepay._raise('23505', 'account code already exists',
        pg_catalog.format('Site %s already has an account with code %L.', p_site_id, p_code),
        'Account codes are unique within a site.');
END $$;
COMMENT ON FUNCTION prepay.open_account(integer, text, text, bigint, prepay.account_mode, text, text, numeric, numeric) IS
'Open an account (wallet) with balance 0 on a tariff; returns its account_id.  Attach meters with prepay.attach_meter and fund it with prepay.recharge.';

CREATE FUNCTION prepay.attach_meter(p_site_id integer, p_account_id bigint, p_meter_id bigint,
                                    p_initial_energy numeric DEFAULT NULL,
                                    p_at timestamptz DEFAULT pg_catalog.now())
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    m prepay.meter;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._lock_site_rating(p_site_id);
    a := prepay._lock_account(p_site_id, p_account_id);
    m := prepay._lock_meter(p_site_id, p_meter_id);
    IF NOT m.active THEN
        PERFORM prepay._raise('PY010', 'meter was removed',
            pg_catalog.format('Meter %s was removed at %s.', p_meter_id, m.removed_at),
            'Attach the meter that replaced it.');
    END IF;
    IF m.account_id IS NOT NULL AND m.account_id <> p_account_id THEN
        PERFORM prepay._raise('PY008', 'meter belongs to another account',
            pg_catalog.format('Meter %s is attached to account %s.', p_meter_id, m.account_id),
            'Close that account first, or attach another meter.');
    END IF;
    IF p_initial_energy IS NOT NULL THEN
        -- the handover reading, rated while the meter is still vacant: the
        -- new tenant pays only for what is used after it
        PERFORM prepay._record_reading(p_site_id, p_meter_id, p_at, p_initial_energy, 'handover');
    END IF;
    UPDATE prepay.meter SET account_id = p_account_id, charge_carry = 0
     WHERE site_id = p_site_id AND meter_id = p_meter_id;
END $$;
COMMENT ON FUNCTION prepay.attach_meter(integer, bigint, bigint, numeric, timestamptz) IS
'Attach a meter to an account.  With p_initial_energy, first records the handover reading at p_at so that only later consumption is charged to the account.';

CREATE FUNCTION prepay.replace_meter(p_site_id integer, p_old_meter_id bigint, p_final_energy numeric,
                                     p_new_code text, p_initial_energy numeric,
                                     p_at timestamptz DEFAULT pg_catalog.now())
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m prepay.meter;
    new_id bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._check_text(p_new_code, 'new meter code');
    IF p_final_energy IS NULL OR p_initial_energy IS NULL OR p_initial_energy < 0 THEN
        PERFORM prepay._raise('22023', 'final and initial readings are required',
            pg_catalog.format('final %s, initial %s', p_final_energy, p_initial_energy),
            'Pass the old meter''s last register value and the new meter''s first one.');
    END IF;
    PERFORM prepay._lock_site_rating(p_site_id);
    SELECT account_id INTO m.account_id FROM prepay.meter WHERE site_id = p_site_id AND meter_id = p_old_meter_id;
    IF m.account_id IS NOT NULL THEN
        PERFORM prepay._lock_account(p_site_id, m.account_id, false);
    END IF;
    m := prepay._lock_meter(p_site_id, p_old_meter_id);
    IF NOT m.active THEN
        PERFORM prepay._raise('PY010', 'meter was removed',
            pg_catalog.format('Meter %s was removed at %s.', p_old_meter_id, m.removed_at), NULL);
    END IF;

    -- the old meter's final reading is rated (and charged) like any other
    PERFORM prepay._record_reading(p_site_id, p_old_meter_id, p_at, p_final_energy, 'final');

    UPDATE prepay.meter SET active = false, removed_at = p_at
     WHERE site_id = p_site_id AND meter_id = p_old_meter_id;
    INSERT INTO prepay.meter (site_id, code, kind, multiplier, max_per_hour, building, floor, room,
                              gateway_id, unit_id, device_profile, account_id, tariff_id, protect)
    VALUES (p_site_id, p_new_code, m.kind, m.multiplier, m.max_per_hour, m.building, m.floor, m.room,
            m.gateway_id, m.unit_id, m.device_profile, NULL, m.tariff_id, m.protect)
    RETURNING meter_id INTO new_id;
    UPDATE prepay.meter SET replaced_by = new_id WHERE site_id = p_site_id AND meter_id = p_old_meter_id;
    UPDATE prepay.command SET state = 'cancelled', updated_at = pg_catalog.now(), last_error = 'meter replaced'
     WHERE site_id = p_site_id AND meter_id = p_old_meter_id AND state = 'queued';

    -- the new meter's first reading is its baseline; then it takes over the account
    PERFORM prepay._record_reading(p_site_id, new_id, p_at, p_initial_energy, 'initial');
    UPDATE prepay.meter SET account_id = m.account_id WHERE site_id = p_site_id AND meter_id = new_id;
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    PERFORM prepay._raise('23505', 'meter code already exists',
        pg_catalog.format('Site %s already has a meter with code %L.', p_site_id, p_new_code),
        'Meter codes are unique within a site.');
END $$;
COMMENT ON FUNCTION prepay.replace_meter(integer, bigint, numeric, text, numeric, timestamptz) IS
'Replace a meter: its final reading is rated and charged, it is marked removed, and a new meter with the same place, address, multiplier and account starts from its initial reading.  The balance carries over untouched.  Returns the new meter_id.';

CREATE FUNCTION prepay.close_account(p_site_id integer, p_account_id bigint,
                                     p_channel text DEFAULT 'closing', p_reason text DEFAULT 'account closed',
                                     p_moved_out_at timestamptz DEFAULT pg_catalog.now())
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    entry bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._check_reference(p_channel, 'channel');
    PERFORM prepay._lock_site_rating(p_site_id);
    a := prepay._lock_account(p_site_id, p_account_id);
    IF p_moved_out_at IS NULL OR p_moved_out_at > pg_catalog.now() OR p_moved_out_at < a.opened_at THEN
        PERFORM prepay._raise('22023', 'move-out time must be between the opening and now',
            pg_catalog.format('Account %s was opened at %s; the move-out time given was %s.', p_account_id,
                              a.opened_at, coalesce(p_moved_out_at::text, 'NULL')),
            'Pass when the tenant left, or omit it for now.');
    END IF;
    -- from here on the account is closing, so outside the alarm ladder: its
    -- settlement and refund take the balance to 0.00, which the ladder would
    -- read as arrears (a notification, trips, NOTIFY prepay_command)
    UPDATE prepay.account SET closed_at = p_moved_out_at
     WHERE site_id = p_site_id AND account_id = p_account_id;
    -- credit the unused days of fees charged in advance, forfeit the allowance
    PERFORM prepay._settle_at_close(p_site_id, p_account_id, prepay._local_day(p_site_id, p_moved_out_at));
    SELECT * INTO a FROM prepay.account WHERE site_id = p_site_id AND account_id = p_account_id;
    IF a.balance < 0 THEN
        PERFORM prepay._raise('PY012', 'account owes money',
            pg_catalog.format('Account %s owes %s.', p_account_id, -a.balance),
            'Recharge at least what it owes (prepay.recharge) before closing the account.');
    END IF;
    IF a.balance > 0 THEN
        entry := prepay._post_entry(p_site_id, p_account_id, 'closing_refund', -a.balance,
                                    p_channel, 'close:' || p_account_id, p_reason);
    END IF;
    UPDATE prepay.command SET state = 'cancelled', updated_at = pg_catalog.now(), last_error = 'account closed'
     WHERE site_id = p_site_id AND account_id = p_account_id AND state = 'queued';
    UPDATE prepay.alarm SET cleared_at = pg_catalog.now()
     WHERE site_id = p_site_id AND account_id = p_account_id AND cleared_at IS NULL;
    UPDATE prepay.meter SET account_id = NULL, charge_carry = 0
     WHERE site_id = p_site_id AND account_id = p_account_id;
    UPDATE prepay.account SET alarm_level = 0
     WHERE site_id = p_site_id AND account_id = p_account_id;
    RETURN entry;
END $$;
COMMENT ON FUNCTION prepay.close_account(integer, bigint, text, text, timestamptz) IS
'Close an account with final settlement as of the move-out time (default now): fees charged in advance are credited for the days from the move-out day on, unspent allowance expires, the remaining balance is refunded by a closing_refund ledger entry on p_channel (returned; NULL when the balance is zero), meters are detached, queued commands cancelled, alarms cleared.  A closing account is outside the alarm ladder: closing notifies nobody and queues no relay command.  Insert the final readings first.  Refused (PY012) while the account owes money (balance below zero); a blank channel is refused (22023).';

-- ---------------------------------------------------------------------
-- public API: money
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.recharge(p_site_id integer, p_account_id bigint, p_amount numeric,
                                p_channel text, p_external_ref text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    entry bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'money');
    PERFORM prepay._check_amount(p_amount, 'recharge');
    PERFORM prepay._check_reference(p_channel, 'channel');
    PERFORM prepay._check_reference(p_external_ref, 'external reference');
    PERFORM prepay._lock_account(p_site_id, p_account_id);
    entry := prepay._payment_replay(p_site_id, p_account_id, 'recharge', p_amount, p_channel, p_external_ref);
    IF entry IS NOT NULL THEN
        RETURN entry;
    END IF;
    BEGIN
        RETURN prepay._post_entry(p_site_id, p_account_id, 'recharge', p_amount, p_channel, p_external_ref);
    EXCEPTION WHEN unique_violation THEN
        -- the same reference was committed meanwhile for another account
        RETURN prepay._payment_replay(p_site_id, p_account_id, 'recharge', p_amount, p_channel, p_external_ref);
    END;
END $$;
COMMENT ON FUNCTION prepay.recharge(integer, bigint, numeric, text, text) IS
'Credit a payment to an account''s wallet and return its ledger entry.  Idempotent: the same (channel, external_ref) returns the same entry and credits nothing; reusing a reference for a different payment is refused (PY004).  Leaving arrears queues the close (automatic restore).';

CREATE FUNCTION prepay.refund(p_site_id integer, p_account_id bigint, p_amount numeric,
                              p_channel text, p_external_ref text, p_reason text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    entry bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'money');
    PERFORM prepay._check_amount(p_amount, 'refund');
    PERFORM prepay._check_reference(p_channel, 'channel');
    PERFORM prepay._check_reference(p_external_ref, 'external reference');
    a := prepay._lock_account(p_site_id, p_account_id);
    entry := prepay._payment_replay(p_site_id, p_account_id, 'refund', -p_amount, p_channel, p_external_ref);
    IF entry IS NOT NULL THEN
        RETURN entry;
    END IF;
    IF p_amount > a.balance - prepay.allowance_left(p_site_id, p_account_id) THEN
        PERFORM prepay._raise('PY005', 'refund exceeds the paid balance',
            pg_catalog.format('Account %s has %s, of which %s is allowance; %s was asked.', p_account_id, a.balance,
                              prepay.allowance_left(p_site_id, p_account_id), p_amount),
            'Refund at most the current balance less the unspent allowance.');
    END IF;
    BEGIN
        RETURN prepay._post_entry(p_site_id, p_account_id, 'refund', -p_amount, p_channel, p_external_ref, p_reason);
    EXCEPTION WHEN unique_violation THEN
        RETURN prepay._payment_replay(p_site_id, p_account_id, 'refund', -p_amount, p_channel, p_external_ref);
    END;
END $$;
COMMENT ON FUNCTION prepay.refund(integer, bigint, numeric, text, text, text) IS
'Pay money back out of a wallet (at most the balance less the unspent allowance, which is never paid out) and return the ledger entry.  Idempotent per (channel, external_ref) like recharge.';

CREATE FUNCTION prepay.reverse(p_site_id integer, p_entry_id bigint, p_reason text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e prepay.ledger;
    existing bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'money');
    PERFORM prepay._check_text(p_reason, 'reason');
    SELECT * INTO e FROM prepay.ledger WHERE site_id = p_site_id AND entry_id = p_entry_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY006', 'unknown ledger entry',
            pg_catalog.format('Site %s has no ledger entry %s.', p_site_id, p_entry_id),
            'prepay.ledger lists the entries.');
    END IF;
    IF e.kind IN ('reversal', 'closing_refund') THEN
        PERFORM prepay._raise('PY006', pg_catalog.format('a %s entry cannot be reversed', e.kind),
            pg_catalog.format('Entry %s is a %s.', p_entry_id, e.kind),
            'Post a new recharge or refund instead.');
    END IF;
    PERFORM prepay._lock_account(p_site_id, e.account_id);
    SELECT r.entry_id INTO existing FROM prepay.reversed_entry r WHERE r.site_id = p_site_id AND r.reverses_entry = p_entry_id;
    IF FOUND THEN
        RETURN existing;
    END IF;
    RETURN prepay._post_entry(p_site_id, e.account_id, 'reversal', -e.amount, NULL, NULL, p_reason, p_entry_id);
END $$;
COMMENT ON FUNCTION prepay.reverse(integer, bigint, text) IS
'Cancel a wrong entry by posting its exact opposite, once: calling it again returns the same reversal.  Reversals and closing refunds cannot be reversed (PY006).';

CREATE FUNCTION prepay.balance(p_site_id integer, p_account_id bigint)
RETURNS numeric LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b numeric;
BEGIN
    PERFORM prepay._authorize_account(p_site_id, p_account_id, 'read');
    SELECT balance INTO b FROM prepay.account WHERE site_id = p_site_id AND account_id = p_account_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY001', 'unknown account',
            pg_catalog.format('Site %s has no account %s.', p_site_id, p_account_id),
            'Check the site and account ids; prepay.account lists the accounts.');
    END IF;
    RETURN b;
END $$;
COMMENT ON FUNCTION prepay.balance(integer, bigint) IS 'Current wallet balance of an account (PY001 if unknown).';

-- ---------------------------------------------------------------------
-- public API: relay
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.trip(p_site_id integer, p_meter_id bigint, p_reason text DEFAULT 'manual')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m prepay.meter;
    a prepay.account;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'relay');
    PERFORM prepay._check_text(p_reason, 'reason');
    m := prepay._lock_meter(p_site_id, p_meter_id);
    SELECT * INTO a FROM prepay.account WHERE site_id = p_site_id AND account_id = m.account_id;
    IF m.protect OR coalesce(a.protect, false) THEN
        PERFORM prepay._raise('PY014', 'meter is protected',
            pg_catalog.format('Meter %s is on keep-power (%s).', p_meter_id,
                              CASE WHEN m.protect THEN 'meter' ELSE 'account' END),
            'Turn protection off with prepay.protect first.');
    END IF;
    IF NOT m.active THEN
        PERFORM prepay._raise('PY010', 'meter was removed', pg_catalog.format('Meter %s was removed.', p_meter_id), NULL);
    END IF;
    RETURN prepay._queue_command(p_site_id, p_meter_id, 'trip', p_reason, m.account_id);
END $$;
COMMENT ON FUNCTION prepay.trip(integer, bigint, text) IS 'Queue a manual trip (cut supply) for a meter and return the command id; refused for protected meters (PY014).';

CREATE FUNCTION prepay.close(p_site_id integer, p_meter_id bigint, p_reason text DEFAULT 'manual')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m prepay.meter;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'relay');
    PERFORM prepay._check_text(p_reason, 'reason');
    m := prepay._lock_meter(p_site_id, p_meter_id);
    IF NOT m.active THEN
        PERFORM prepay._raise('PY010', 'meter was removed', pg_catalog.format('Meter %s was removed.', p_meter_id), NULL);
    END IF;
    RETURN prepay._queue_command(p_site_id, p_meter_id, 'close', p_reason, m.account_id);
END $$;
COMMENT ON FUNCTION prepay.close(integer, bigint, text) IS 'Queue a manual close (restore supply) for a meter and return the command id.  An account still in arrears is not tripped again until it re-enters arrears.';

CREATE FUNCTION prepay.protect(p_site_id integer, p_on boolean,
                               p_meter_id bigint DEFAULT NULL, p_account_id bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    m prepay.meter;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'relay');
    IF p_on IS NULL OR (p_meter_id IS NULL) = (p_account_id IS NULL) THEN
        PERFORM prepay._raise('22023', 'protect needs on/off and exactly one of a meter or an account', NULL,
            'Call prepay.protect(site, true, p_meter_id => 7) or prepay.protect(site, false, p_account_id => 3).');
    END IF;
    IF p_account_id IS NOT NULL THEN
        a := prepay._lock_account(p_site_id, p_account_id);
        UPDATE prepay.account SET protect = p_on WHERE site_id = p_site_id AND account_id = p_account_id;
        IF p_on THEN
            UPDATE prepay.command SET state = 'cancelled', updated_at = pg_catalog.now(), last_error = 'account protected'
             WHERE site_id = p_site_id AND account_id = p_account_id AND state = 'queued' AND action = 'trip';
        ELSIF a.alarm_level = 3 THEN
            PERFORM prepay._trip_account(p_site_id, p_account_id, 'arrears');
        END IF;
    ELSE
        m := prepay._lock_meter(p_site_id, p_meter_id);
        UPDATE prepay.meter SET protect = p_on WHERE site_id = p_site_id AND meter_id = p_meter_id;
        IF p_on THEN
            PERFORM prepay._cancel_queued(p_site_id, p_meter_id, 'trip', 'meter protected');
        ELSIF m.account_id IS NOT NULL THEN
            SELECT * INTO a FROM prepay.account WHERE site_id = p_site_id AND account_id = m.account_id;
            IF a.alarm_level = 3 AND NOT a.protect AND a.mode = 'prepaid' AND m.active THEN
                PERFORM prepay._queue_command(p_site_id, p_meter_id, 'trip', 'arrears', a.account_id,
                                              prepay.cut_allowed_at(p_site_id, pg_catalog.now()));
            END IF;
        END IF;
    END IF;
END $$;
COMMENT ON FUNCTION prepay.protect(integer, boolean, bigint, bigint) IS
'Turn keep-power on or off for a meter (p_meter_id) or a whole account (p_account_id).  On cancels queued trips; off trips at once (after any no-cut window) if the account is in arrears.';

-- ---------------------------------------------------------------------
-- audit
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.check_ledger()
RETURNS TABLE (site_id integer, account_id bigint, balance numeric, ledger_total numeric,
               last_balance_after numeric, problem text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH totals AS (
        SELECT l.site_id, l.account_id, sum(l.amount) AS total,
               (array_agg(l.balance_after ORDER BY l.entry_id DESC))[1] AS last_after
          FROM prepay.ledger l
         GROUP BY l.site_id, l.account_id
    ),
    -- the key is (site, account, entry): an entry id is unique in its site
    -- by its sequence, and this says so
    reused_ids AS (
        SELECT l.site_id, l.entry_id, min(l.account_id) AS account_id
          FROM prepay.ledger l
         GROUP BY l.site_id, l.entry_id
        HAVING count(*) > 1
    ),
    -- who posted an entry is its actor row (site, actor_id)
    no_actor AS (
        SELECT l.site_id, l.account_id, l.actor_id, count(*) AS entries
          FROM prepay.ledger l
          LEFT JOIN prepay.actor ac ON ac.site_id = l.site_id AND ac.actor_id = l.actor_id
         WHERE ac.actor_id IS NULL
         GROUP BY l.site_id, l.account_id, l.actor_id
    )
    SELECT coalesce(a.site_id, t.site_id), coalesce(a.account_id, t.account_id), a.balance,
           coalesce(t.total, 0), t.last_after,
           CASE WHEN a.account_id IS NULL THEN 'ledger entries of an account that does not exist'
                WHEN a.balance <> coalesce(t.total, 0) THEN 'balance differs from the sum of the ledger'
                ELSE 'balance differs from the last entry''s balance_after' END
      FROM prepay.account a
      FULL JOIN totals t ON t.site_id = a.site_id AND t.account_id = a.account_id
     WHERE a.account_id IS NULL
        OR a.balance <> coalesce(t.total, 0)
        OR a.balance IS DISTINCT FROM coalesce(t.last_after, 0)
    UNION ALL
    SELECT r.site_id, r.account_id, NULL, NULL, NULL, 'entry id ' || r.entry_id || ' is used by more than one entry'
      FROM reused_ids r
    UNION ALL
    SELECT n.site_id, n.account_id, NULL, NULL, NULL,
           n.entries || ' ledger entries of an actor that does not exist (actor_id ' || n.actor_id || ')'
      FROM no_actor n
     ORDER BY 1, 2, 6;
$$;
COMMENT ON FUNCTION prepay.check_ledger() IS
'The auditor''s check: every account whose balance differs from what its ledger explains (the sum of its amounts, and the balance_after of its last entry), any ledger entry whose account does not exist, any entry whose actor (site_id, actor_id) has no prepay.actor row, and any entry id used twice in a site (the ledger''s key is (site, account, entry); the id is unique by its sequence).  Empty when all is well.';

-- ---------------------------------------------------------------------
-- pg_dump: extension tables hold user data
-- ---------------------------------------------------------------------

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['site', 'no_cut_window', 'gateway', 'tariff', 'tariff_version', 'account',
                             'meter', 'reading', 'reading_default', 'reading_refused', 'reading_intake', 'ledger', 'ledger_default',
                             'payment_reference', 'reversed_entry', 'command', 'alarm',
                             'notification', 'reading_refused_id_seq', 'site_id_seq', 'gateway_id_seq',
                             'tariff_id_seq', 'account_id_seq',
                             'meter_id_seq', 'ledger_entry_id_seq', 'command_id_seq', 'alarm_id_seq',
                             'notification_id_seq', 'no_cut_window_id_seq', 'charge_pricing', 'actor'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(('prepay.' || t)::regclass, '');
    END LOOP;
END $$;
