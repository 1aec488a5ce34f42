-- sql/releases/prepay--0.1.sql: the install script of release 0.1 (git tag
-- v0.1), kept as it was released so that an operator's 0.1 database can be
-- updated (ALTER EXTENSION prepay UPDATE) and test/t/200_upgrade.pl can
-- install it.  Never edit it: changes go into the next release's upgrade
-- script, sql/prepay--0.1--0.2.sql, and the current sources.
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
    site_id           integer NOT NULL,
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
    received_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (site_id, meter_id, read_at)
);
COMMENT ON TABLE prepay.reading IS 'Every reading received, exactly once per (meter, read_at): insert or COPY here and the rating trigger charges the consumption in the same transaction.  A duplicate is silently skipped.  A reading that cannot be rated is kept with a quarantine_reason and an alarm.  No foreign key: a reading of an unknown meter is kept, not refused.';
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
COMMENT ON COLUMN prepay.reading.received_at IS 'When the database received the reading.';

CREATE INDEX reading_quarantined ON prepay.reading (site_id, meter_id, read_at) WHERE quarantine_reason IS NOT NULL;
COMMENT ON INDEX prepay.reading_quarantined IS 'The quarantine list: readings that were stored but not rated.';

-- ---------------------------------------------------------------------
-- the ledger
-- ---------------------------------------------------------------------

CREATE TABLE prepay.ledger (
    site_id          integer NOT NULL,
    entry_id         bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.ledger_entry_id_seq'),
    account_id       bigint NOT NULL,
    kind             prepay.ledger_kind NOT NULL,
    amount           numeric(14,2) NOT NULL,
    balance_after    numeric(14,2) NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by       text NOT NULL DEFAULT SESSION_USER,
    channel          text,
    external_ref     text,
    reverses_entry   bigint,
    reason           text,
    meter_id         bigint,
    read_from        timestamptz,
    read_to          timestamptz,
    energy           numeric(15,3),
    exact_charge     numeric(18,9),
    pieces           json,
    PRIMARY KEY (site_id, entry_id),
    CHECK (kind <> 'consumption' OR (meter_id IS NOT NULL AND read_from < read_to AND energy >= 0 AND exact_charge >= 0)),
    CHECK (kind NOT IN ('recharge', 'refund') OR (channel IS NOT NULL AND external_ref IS NOT NULL)),
    CHECK (kind <> 'reversal' OR reverses_entry IS NOT NULL)
);
CREATE INDEX ledger_account ON prepay.ledger (site_id, account_id, entry_id);
CREATE UNIQUE INDEX ledger_payment_ref ON prepay.ledger (site_id, channel, external_ref) WHERE external_ref IS NOT NULL;
CREATE UNIQUE INDEX ledger_reversal ON prepay.ledger (site_id, reverses_entry) WHERE reverses_entry IS NOT NULL;
COMMENT ON INDEX prepay.ledger_account IS 'An account''s entries in order: statements and trails.';
COMMENT ON INDEX prepay.ledger_payment_ref IS 'A payment reference is used once per channel: what makes recharge and refund idempotent.';
COMMENT ON INDEX prepay.ledger_reversal IS 'An entry is reversed at most once.';
COMMENT ON TABLE prepay.ledger IS 'Append-only record of every money movement.  Positive amounts credit the wallet, negative ones debit it.  Corrections are new reversal entries; UPDATE and DELETE are refused.  account_id has no foreign key: rows are written only by prepay''s own functions right after they locked or moved the account, and a per-row key check would double the cost of rating; prepay.check_ledger() reports any entry without its account.';
COMMENT ON COLUMN prepay.ledger.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.ledger.entry_id IS 'Entry id; increasing with time.';
COMMENT ON COLUMN prepay.ledger.account_id IS 'Account whose wallet moved.';
COMMENT ON COLUMN prepay.ledger.kind IS 'consumption, recharge, refund, reversal or closing_refund.';
COMMENT ON COLUMN prepay.ledger.amount IS 'Signed amount: positive credits the wallet, negative debits it.';
COMMENT ON COLUMN prepay.ledger.balance_after IS 'Wallet balance right after this entry.';
COMMENT ON COLUMN prepay.ledger.created_at IS 'When the entry was posted (transaction time).';
COMMENT ON COLUMN prepay.ledger.created_by IS 'Database user who posted it (session_user).';
COMMENT ON COLUMN prepay.ledger.channel IS 'Payment channel of a recharge or refund (cash, card, wechat, ...).';
COMMENT ON COLUMN prepay.ledger.external_ref IS 'The channel''s reference (receipt or transaction number); unique per channel.';
COMMENT ON COLUMN prepay.ledger.reverses_entry IS 'For a reversal, the entry it cancels.';
COMMENT ON COLUMN prepay.ledger.reason IS 'Free text given by the operator (reversal reason, refund reason).';
COMMENT ON COLUMN prepay.ledger.meter_id IS 'For a consumption charge, the meter.';
COMMENT ON COLUMN prepay.ledger.read_from IS 'For a consumption charge, the previous rated reading''s time.';
COMMENT ON COLUMN prepay.ledger.read_to IS 'For a consumption charge, the reading charged.';
COMMENT ON COLUMN prepay.ledger.energy IS 'For a consumption charge, the energy charged (register difference times multiplier).';
COMMENT ON COLUMN prepay.ledger.exact_charge IS 'For a consumption charge, the exact price of the energy before rounding to cents; for basic charges and adjustments, their exact amount.';
COMMENT ON COLUMN prepay.ledger.pieces IS 'For a consumption charge, how it was priced: multiplier, split, billing cycle and the priced pieces (period, tier, energy, price, exact amount).  Read it with prepay.explain_charge.';

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
'AFTER INSERT statement trigger on prepay.reading_intake: inserts the statement''s rows (transition table intake_rows) into prepay.reading as the writer (its grants and row security; rows of sites it may not write are refused one by one), then deletes them from the intake.  SECURITY INVOKER on purpose: the writer''s rights are what decide.';
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
              DETAIL = pg_catalog.format('%s on prepay.ledger was refused.', TG_OP),
              HINT = 'Correct an entry with prepay.reverse(site_id, entry_id, reason).';
END $$;
COMMENT ON FUNCTION prepay.ledger_refuse_change() IS 'Refuses UPDATE, DELETE and TRUNCATE on the ledger.';
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON prepay.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION prepay.ledger_refuse_change();

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
RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.pg_advisory_xact_lock(1886545264, p_site_id);  -- 1886545264 = 'prep'
$$;
COMMENT ON FUNCTION prepay._lock_site_rating(integer) IS
'Internal: the site''s rating lock (a transaction-level advisory lock).  The rating trigger takes it before reading meter state, and so do the functions that change a meter''s account or readings, before any row lock: see the locking protocol in extension/reading.c.';

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
    PERFORM pg_catalog.pg_notify('prepay_command', p_site_id || '/' || new_id);
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
    PERFORM pg_catalog.pg_notify('prepay_notification', p_site_id || '/' || notification_id);

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
    INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after,
                               channel, external_ref, reason, reverses_entry, exact_charge, pieces)
    VALUES (p_site_id, p_account_id, p_kind, p_amount, a.balance,
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
    SELECT * INTO e FROM prepay.ledger
     WHERE site_id = p_site_id AND channel = p_channel AND external_ref = p_external_ref;
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
    SELECT entry_id INTO existing FROM prepay.ledger WHERE site_id = p_site_id AND reverses_entry = p_entry_id;
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
     ORDER BY 1, 2;
$$;
COMMENT ON FUNCTION prepay.check_ledger() IS
'The auditor''s check: every account whose balance differs from what its ledger explains (the sum of its amounts, and the balance_after of its last entry), and any ledger entry whose account does not exist.  Empty when all is well.';

-- ---------------------------------------------------------------------
-- pg_dump: extension tables hold user data
-- ---------------------------------------------------------------------

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['site', 'no_cut_window', 'gateway', 'tariff', 'tariff_version', 'account',
                             'meter', 'reading', 'reading_refused', 'reading_intake', 'ledger', 'command', 'alarm',
                             'notification', 'reading_refused_id_seq', 'site_id_seq', 'gateway_id_seq',
                             'tariff_id_seq', 'account_id_seq',
                             'meter_id_seq', 'ledger_entry_id_seq', 'command_id_seq', 'alarm_id_seq',
                             'notification_id_seq', 'no_cut_window_id_seq'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(('prepay.' || t)::regclass, '');
    END LOOP;
END $$;

-- =====================================================================
-- The tariff engine (sql/tariff.sql): holidays, validated definitions,
-- the transparency functions (rate, explain_charge, simulate_bill), re-
-- rating after a back-dated price, and the daily basic charge of two-
-- part tariffs.  Rating itself happens in C (extension/tariff*.c); every
-- function here reaches the same C core through prepay._rate().
-- =====================================================================

CREATE TABLE prepay.holiday (
    site_id integer NOT NULL REFERENCES prepay.site,
    day     date NOT NULL,
    kind    text NOT NULL DEFAULT 'holiday' CHECK (kind IN ('holiday', 'workday')),
    name    text,
    PRIMARY KEY (site_id, day)
);
COMMENT ON TABLE prepay.holiday IS 'A site''s calendar exceptions for time-of-use schedules: public holidays (priced by the schedule for "holiday", else as a weekend) and worked weekend days (working-day swaps, priced as weekdays).';
COMMENT ON COLUMN prepay.holiday.site_id IS 'Site whose calendar this is.';
COMMENT ON COLUMN prepay.holiday.day IS 'Local date in the site''s time zone.';
COMMENT ON COLUMN prepay.holiday.kind IS 'holiday: priced as a holiday; workday: a weekend day worked, priced as a weekday.';
COMMENT ON COLUMN prepay.holiday.name IS 'Name of the holiday or swap, for people.';
SELECT pg_catalog.pg_extension_config_dump('prepay.holiday', '');

-- ---------------------------------------------------------------------
-- definitions
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.tariff_check(p_definition jsonb) RETURNS void
LANGUAGE C STRICT STABLE SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'prepay_tariff_check';
COMMENT ON FUNCTION prepay.tariff_check(jsonb) IS
'Validate a tariff definition (docs/TARIFFS.md): returns nothing if it is valid, else raises PY015 with a message naming what is wrong.';

CREATE FUNCTION prepay._tariff_version_check() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.definition IS NOT NULL THEN
        PERFORM prepay.tariff_check(NEW.definition);
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION prepay._tariff_version_check() IS 'Internal: trigger that refuses an invalid tariff definition (PY015).';

CREATE TRIGGER tariff_version_check BEFORE INSERT OR UPDATE ON prepay.tariff_version
    FOR EACH ROW EXECUTE FUNCTION prepay._tariff_version_check();
COMMENT ON TRIGGER tariff_version_check ON prepay.tariff_version IS 'Validates every definition as it is written.';

-- ---------------------------------------------------------------------
-- transparency
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._rate(p_site_id integer, p_tariff_id bigint, p_from timestamptz, p_to timestamptz,
                             p_energy numeric, p_cycle_used numeric, p_cycle_start timestamptz,
                             p_registers numeric[])
RETURNS json LANGUAGE C STABLE SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'prepay_rate';
COMMENT ON FUNCTION prepay._rate(integer, bigint, timestamptz, timestamptz, numeric, numeric, timestamptz, numeric[]) IS
'Internal: rate energy over (from, to] with a tariff, given the billing cycle''s start (NULL: the cycle containing from) and its consumption so far, and optionally the {sharp, peak, flat, valley} register energies; returns the pieces in the format of prepay.ledger.pieces.  The rating trigger uses the same C core.';

CREATE FUNCTION prepay._rate_many(p_site_id integer, p_tariff_id bigint[], p_from timestamptz[], p_to timestamptz[],
                                  p_energy numeric[], p_cycle_used numeric[], p_cycle_start timestamptz[],
                                  p_registers numeric[])
RETURNS SETOF json LANGUAGE C STABLE SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'prepay_rate_many';
COMMENT ON FUNCTION prepay._rate_many(integer, bigint[], timestamptz[], timestamptz[], numeric[], numeric[], timestamptz[], numeric[]) IS
'Internal: prepay._rate() of a series of intervals of one site (the i-th elements of the arrays), in order, with the site''s tariffs loaded once.  A NULL cycle_used continues the billing cycle the previous interval left; p_registers is NULL or has one row {sharp, peak, flat, valley} per interval (a row with a NULL: none).';

CREATE FUNCTION prepay._pieces(p_pieces json)
RETURNS TABLE (piece_from timestamptz, piece_to timestamptz, version_from timestamptz, period text,
               tier integer, energy numeric, unit_price numeric, amount numeric)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (p->>'from')::timestamptz, (p->>'to')::timestamptz, (p->>'version')::timestamptz, p->>'period',
           (p->>'tier')::integer, (p->>'energy')::numeric(15,3), (p->>'price')::numeric(12,6),
           (p->>'amount')::numeric(18,9)
      FROM pg_catalog.json_array_elements(p_pieces->'pieces') AS p
$$;
COMMENT ON FUNCTION prepay._pieces(json) IS 'Internal: the pieces of a pricing record (prepay.ledger.pieces) as rows.';

CREATE FUNCTION prepay.rate(p_site_id integer, p_tariff_id bigint, p_from timestamptz, p_to timestamptz,
                            p_energy numeric, p_cycle_used numeric DEFAULT 0)
RETURNS TABLE (piece_from timestamptz, piece_to timestamptz, version_from timestamptz, period text,
               tier integer, energy numeric, unit_price numeric, amount numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_site_id IS NULL OR p_tariff_id IS NULL OR p_from IS NULL OR p_to IS NULL OR p_energy IS NULL THEN
        PERFORM prepay._raise('22004', 'rate needs a site, a tariff, an interval and an energy', NULL, NULL);
    END IF;
    IF NOT pg_catalog.isfinite(p_from) OR NOT pg_catalog.isfinite(p_to) OR p_to > p_from + interval '10 years' THEN
        PERFORM prepay._raise('22023', 'rate needs a finite interval of at most 10 years',
            pg_catalog.format('The interval given was (%s, %s].', p_from, p_to),
            'Rate a longer consumption in parts.');
    END IF;
    RETURN QUERY
    SELECT * FROM prepay._pieces(prepay._rate(p_site_id, p_tariff_id, p_from, p_to, p_energy,
                                              coalesce(p_cycle_used, 0), NULL, NULL));
END $$;
COMMENT ON FUNCTION prepay.rate(integer, bigint, timestamptz, timestamptz, numeric, numeric) IS
'Rate a consumption (after the multiplier) spread uniformly over (from, to] with a tariff, given the consumption already counted in the billing cycle: one row per piece (period, tier, energy, unit price, exact amount).  The rating trigger prices readings with the same C core.  The interval must be finite and at most 10 years long (22023).';

CREATE FUNCTION prepay.explain_charge(p_site_id integer, p_entry_id bigint)
RETURNS TABLE (entry_id bigint, meter_id bigint, read_from timestamptz, register_from numeric,
               read_to timestamptz, register_to numeric, multiplier integer, energy numeric,
               piece_from timestamptz, piece_to timestamptz, version_from timestamptz, period text,
               tier integer, piece_energy numeric, unit_price numeric, amount numeric, charged numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e prepay.ledger;
BEGIN
    SELECT * INTO e FROM prepay.ledger l WHERE l.site_id = p_site_id AND l.entry_id = p_entry_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY006', 'unknown ledger entry',
            pg_catalog.format('Site %s has no ledger entry %s.', p_site_id, p_entry_id), NULL);
    END IF;
    IF e.kind <> 'consumption' OR e.pieces IS NULL THEN
        PERFORM prepay._raise('PY016', 'not a consumption charge',
            pg_catalog.format('Ledger entry %s is a %s entry.', p_entry_id, e.kind),
            'Only consumption charges are priced from readings.');
    END IF;
    RETURN QUERY
    SELECT e.entry_id, e.meter_id,
           e.read_from, (SELECT r.energy FROM prepay.reading r
                          WHERE r.site_id = e.site_id AND r.meter_id = e.meter_id AND r.read_at = e.read_from),
           e.read_to, (SELECT r.energy FROM prepay.reading r
                        WHERE r.site_id = e.site_id AND r.meter_id = e.meter_id AND r.read_at = e.read_to),
           (e.pieces->>'multiplier')::integer, e.energy,
           p.piece_from, p.piece_to, p.version_from, p.period, p.tier, p.energy, p.unit_price, p.amount,
           -e.amount
      FROM prepay._pieces(e.pieces) AS p;
END $$;
COMMENT ON FUNCTION prepay.explain_charge(integer, bigint) IS
'What is behind a consumption charge: the two readings (register values), the multiplier, the energy, and each priced piece (time span, tariff version, period, tier, energy, unit price, exact amount), with the whole cents charged.  PY006 unknown entry; PY016 not a consumption charge.';

CREATE FUNCTION prepay._register_energy(p_pieces json) RETURNS numeric[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_pieces->>'split' = 'registers' THEN
           ARRAY(SELECT coalesce(sum(p.energy) FILTER (WHERE p.period = r.name), 0)
                   FROM unnest(ARRAY['sharp', 'peak', 'flat', 'valley']) WITH ORDINALITY AS r(name, ord)
                   LEFT JOIN prepay._pieces(p_pieces) AS p ON true
                  GROUP BY r.ord ORDER BY r.ord)
           END
$$;
COMMENT ON FUNCTION prepay._register_energy(json) IS 'Internal: the {sharp, peak, flat, valley} energies of a charge priced by the meter''s registers; NULL for a uniform split.';

CREATE FUNCTION prepay.simulate_bill(p_site_id integer, p_account_id bigint, p_tariff_id bigint,
                                     p_from timestamptz, p_to timestamptz)
RETURNS TABLE (period text, tier integer, unit_price numeric, energy numeric, amount numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM prepay.account a WHERE a.site_id = p_site_id AND a.account_id = p_account_id) THEN
        PERFORM prepay._raise('PY001', 'unknown account',
            pg_catalog.format('Site %s has no account %s.', p_site_id, p_account_id), NULL);
    END IF;
    -- each meter's charges in time order; a meter's first charge starts a
    -- billing cycle at zero (cycle_used 0), the others continue it (NULL)
    RETURN QUERY
    WITH e AS (
        SELECT l.read_from, l.read_to, l.energy,
               CASE WHEN pg_catalog.lag(l.meter_id) OVER w IS DISTINCT FROM l.meter_id THEN 0 END AS cycle_used,
               coalesce(prepay._register_energy(l.pieces), '{NULL,NULL,NULL,NULL}') AS registers,
               pg_catalog.row_number() OVER w AS ord
          FROM prepay.ledger l
         WHERE l.site_id = p_site_id AND l.account_id = p_account_id AND l.kind = 'consumption'
           AND l.read_from >= p_from AND l.read_to <= p_to
        WINDOW w AS (ORDER BY l.meter_id, l.read_from)),
    a AS (
        SELECT pg_catalog.array_agg(p_tariff_id ORDER BY e.ord) AS tariffs,
               pg_catalog.array_agg(e.read_from ORDER BY e.ord) AS froms,
               pg_catalog.array_agg(e.read_to ORDER BY e.ord) AS tos,
               pg_catalog.array_agg(e.energy ORDER BY e.ord) AS energies,
               pg_catalog.array_agg(e.cycle_used ORDER BY e.ord) AS cycle_used,
               pg_catalog.array_agg(NULL::timestamptz ORDER BY e.ord) AS cycle_starts,
               pg_catalog.array_agg(e.registers ORDER BY e.ord) AS registers
          FROM e)
    SELECT p.period, p.tier, p.unit_price, sum(p.energy), sum(p.amount)
      FROM a, prepay._rate_many(p_site_id, a.tariffs, a.froms, a.tos, a.energies, a.cycle_used,
                                a.cycle_starts, a.registers) AS j,
           prepay._pieces(j) AS p
     GROUP BY p.period, p.tier, p.unit_price
     ORDER BY p.period, p.tier, p.unit_price;
END $$;
COMMENT ON FUNCTION prepay.simulate_bill(integer, bigint, bigint, timestamptz, timestamptz) IS
'What the account''s real consumption in [from, to] (its consumption charges lying wholly inside) would have cost under another tariff: energy and exact amount per period, tier and unit price.  Tier counting starts at zero at the first charge, so compare over whole billing cycles.';

-- ---------------------------------------------------------------------
-- re-rating
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._charged_exact(p_site_id integer, p_account_id bigint, p_entry prepay.ledger)
RETURNS numeric LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_entry.exact_charge + coalesce(sum((x->>'exact_delta')::numeric), 0)
      FROM prepay.ledger a, pg_catalog.json_array_elements(a.pieces->'rerate') AS x
     WHERE a.site_id = p_site_id AND a.account_id = p_account_id AND a.kind = 'adjustment'
       AND (x->>'entry_id')::bigint = p_entry.entry_id
$$;
COMMENT ON FUNCTION prepay._charged_exact(integer, bigint, prepay.ledger) IS
'Internal: the exact amount a consumption charge stands at now: its own exact charge plus every re-rating adjustment of it.';

CREATE FUNCTION prepay.rerate(p_site_id integer, p_account_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (account_id bigint, charges integer, charged numeric, repriced numeric,
               adjustment numeric, entry_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acc bigint;
    deltas json[];
    total numeric;
    n integer;
    sum_was numeric;
    sum_now numeric;
    posted bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._lock_site_rating(p_site_id);
    FOR acc IN
        SELECT a.account_id FROM prepay.account a
         WHERE a.site_id = p_site_id AND (p_account_id IS NULL OR a.account_id = p_account_id)
         ORDER BY a.account_id
    LOOP
        PERFORM prepay._lock_account(p_site_id, acc);
        posted := NULL;
        -- every charge re-priced in one call (_rate_many: the tariffs are
        -- loaded once), next to what it stands at now: its exact charge
        -- plus every re-rating adjustment of it (as _charged_exact)
        WITH e AS (
            SELECT l.entry_id, l.exact_charge, l.read_from, l.read_to, l.energy,
                   (l.pieces->>'tariff_id')::bigint AS tariff_id,
                   coalesce((l.pieces->>'cycle_used_before')::numeric, 0) AS cycle_used,
                   (l.pieces->>'cycle_start')::timestamptz AS cycle_start,
                   coalesce(prepay._register_energy(l.pieces), '{NULL,NULL,NULL,NULL}') AS registers,
                   pg_catalog.row_number() OVER (ORDER BY l.entry_id) AS ord
              FROM prepay.ledger l
             WHERE l.site_id = p_site_id AND l.account_id = acc AND l.kind = 'consumption'
               AND l.read_from >= p_from AND l.read_to <= p_to AND l.pieces IS NOT NULL),
        adjusted AS (
            SELECT (x->>'entry_id')::bigint AS entry_id, sum((x->>'exact_delta')::numeric) AS delta
              FROM prepay.ledger a, pg_catalog.json_array_elements(a.pieces->'rerate') AS x
             WHERE a.site_id = p_site_id AND a.account_id = acc AND a.kind = 'adjustment'
             GROUP BY 1),
        arrays AS (
            SELECT pg_catalog.array_agg(e.tariff_id ORDER BY e.ord) AS tariffs,
                   pg_catalog.array_agg(e.read_from ORDER BY e.ord) AS froms,
                   pg_catalog.array_agg(e.read_to ORDER BY e.ord) AS tos,
                   pg_catalog.array_agg(e.energy ORDER BY e.ord) AS energies,
                   pg_catalog.array_agg(e.cycle_used ORDER BY e.ord) AS cycle_used,
                   pg_catalog.array_agg(e.cycle_start ORDER BY e.ord) AS cycle_starts,
                   pg_catalog.array_agg(e.registers ORDER BY e.ord) AS registers
              FROM e),
        priced AS (
            SELECT r.ord, (SELECT sum(p.amount) FROM prepay._pieces(r.j) AS p) AS amount
              FROM arrays, prepay._rate_many(p_site_id, arrays.tariffs, arrays.froms, arrays.tos,
                                             arrays.energies, arrays.cycle_used, arrays.cycle_starts,
                                             arrays.registers) WITH ORDINALITY AS r(j, ord)),
        x AS (
            SELECT e.entry_id, e.exact_charge + coalesce(d.delta, 0) AS was,
                   coalesce(pr.amount, 0) AS now_exact
              FROM e JOIN priced pr ON pr.ord = e.ord
              LEFT JOIN adjusted d ON d.entry_id = e.entry_id)
        SELECT count(*), coalesce(sum(x.was), 0), coalesce(sum(x.now_exact), 0),
               coalesce(sum(x.now_exact - x.was) FILTER (WHERE x.now_exact <> x.was), 0),
               coalesce(pg_catalog.array_agg(pg_catalog.json_build_object('entry_id', x.entry_id,
                                                                          'exact_delta', x.now_exact - x.was)
                                             ORDER BY x.entry_id) FILTER (WHERE x.now_exact <> x.was), '{}')
          INTO n, sum_was, sum_now, total, deltas
          FROM x;
        IF round(total, 2) <> 0 THEN
            posted := prepay._post_entry(p_site_id, acc, 'adjustment', -round(total, 2), NULL, NULL,
                pg_catalog.format('re-rated consumption from %s to %s', p_from, p_to), NULL,
                total, pg_catalog.json_build_object('rerate', pg_catalog.array_to_json(deltas)));
        END IF;
        IF n > 0 THEN
            account_id := acc; charges := n; charged := sum_was; repriced := sum_now;
            adjustment := CASE WHEN posted IS NULL THEN 0 ELSE -round(total, 2) END;
            entry_id := posted;
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.rerate(integer, bigint, timestamptz, timestamptz) IS
'After a back-dated tariff version: re-price every consumption charge of the account (every account when NULL) lying wholly in [from, to] with the tariff versions as they are now, and post one adjustment entry per account for the difference (never editing the ledger).  Returns per account the charges looked at, what they stand at (exact), what they should be (exact) and the adjustment posted (whole cents, negative = charged).  Re-running changes nothing: each adjustment records its exact difference per charge.';

-- ---------------------------------------------------------------------
-- two-part tariffs: the basic charge accrues daily
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.max_demand(p_site_id integer, p_account_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS numeric LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(round(max(w.kw), 3), 0)
      FROM (SELECT sum(l.energy * extract(epoch FROM least(l.read_to, g + interval '15 minutes') - greatest(l.read_from, g))
                                / extract(epoch FROM l.read_to - l.read_from)) * 4 AS kw
              FROM prepay.ledger l
             CROSS JOIN LATERAL pg_catalog.generate_series(
                       pg_catalog.date_bin('15 minutes', greatest(l.read_from, p_from), p_from),
                       least(l.read_to, p_to) - interval '1 microsecond', interval '15 minutes') AS g
             WHERE l.site_id = p_site_id AND l.account_id = p_account_id AND l.kind = 'consumption'
               AND l.read_to > p_from AND l.read_from < p_to
             GROUP BY g) AS w
$$;
COMMENT ON FUNCTION prepay.max_demand(integer, bigint, timestamptz, timestamptz) IS
'An account''s maximum demand in kW over [from, to): the largest consumption in any 15-minute window (aligned on from), times 4, with each charge''s energy spread uniformly over its interval.';

CREATE FUNCTION prepay._pro_rata(p_full numeric, p_days integer, p_days_in_period integer)
RETURNS numeric LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (pg_catalog.div(p_full * p_days * 100, p_days_in_period) / 100)::numeric(14,2)
$$;
COMMENT ON FUNCTION prepay._pro_rata(numeric, integer, integer) IS 'Internal: full x days / days in period, rounded down to the cent (the tenant never pays a fraction of a cent more).';

CREATE FUNCTION prepay._basic_terms(p_account prepay.account, p_version_at timestamptz,
                                    p_month_start timestamptz, p_until timestamptz,
                                    OUT basic jsonb, OUT basis numeric, OUT monthly numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT v.definition->'basic' INTO basic FROM prepay.tariff_version v
     WHERE v.site_id = p_account.site_id AND v.tariff_id = p_account.tariff_id AND v.valid_from <= p_version_at
     ORDER BY v.valid_from DESC LIMIT 1;
    IF basic IS NULL THEN
        RETURN;
    END IF;
    basis := CASE WHEN basic->>'by' = 'capacity' THEN coalesce(p_account.capacity_kva, 0)
                  ELSE prepay.max_demand(p_account.site_id, p_account.account_id, p_month_start, p_until) END;
    monthly := basis * (basic->>'price')::numeric;
END $$;
COMMENT ON FUNCTION prepay._basic_terms(prepay.account, timestamptz, timestamptz, timestamptz) IS
'Internal: the two-part basic charge of an account''s tariff version in force at p_version_at (NULL when it has none), its basis (contracted kVA, or the maximum 15-minute demand over [p_month_start, p_until)) and the monthly amount.  The daily accrual and the month''s settlement both use it.';

CREATE FUNCTION prepay._basic_accrued(p_site_id integer, p_account_id bigint, p_month date)
RETURNS numeric LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(-sum(l.amount), 0) FROM prepay.ledger l
     WHERE l.site_id = p_site_id AND l.account_id = p_account_id AND l.kind = 'basic_charge'
       AND l.channel = 'basic_charge' AND l.external_ref LIKE p_account_id || '/' || to_char(p_month, 'YYYY-MM') || '-%'
$$;
COMMENT ON FUNCTION prepay._basic_accrued(integer, bigint, date) IS 'Internal: what the daily accruals of the month containing p_month have posted for an account.';

CREATE FUNCTION prepay.accrue_basic_charges(p_site_id integer, p_day date)
RETURNS TABLE (account_id bigint, basis numeric, monthly numeric, accrued numeric, posted numeric)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tz text;
    day_start timestamptz;
    day_end timestamptz;
    month_start timestamptz;
    days_in_month integer;
    ac prepay.account;
    terms record;
    ref text;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    SELECT s.time_zone INTO tz FROM prepay.site s WHERE s.site_id = p_site_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id), NULL);
    END IF;
    day_start := p_day::timestamp AT TIME ZONE tz;
    day_end := (p_day + 1)::timestamp AT TIME ZONE tz;
    month_start := date_trunc('month', p_day)::timestamp AT TIME ZONE tz;
    days_in_month := extract(day FROM date_trunc('month', p_day) + interval '1 month - 1 day');

    FOR ac IN SELECT * FROM prepay.account a
               WHERE a.site_id = p_site_id AND a.closed_at IS NULL AND a.opened_at < day_end
               ORDER BY a.account_id LOOP
        -- the version in force when the day starts; demand up to the day's end
        terms := prepay._basic_terms(ac, day_start, month_start, day_end);
        CONTINUE WHEN terms.basic IS NULL;
        account_id := ac.account_id;
        basis := terms.basis;
        monthly := terms.monthly;
        -- the days open so far this month: a tenant who moved in mid-month pays from that day
        accrued := prepay._pro_rata(monthly, p_day + 1 - greatest(date_trunc('month', p_day)::date,
                                                                 (ac.opened_at AT TIME ZONE tz)::date), days_in_month);
        ref := ac.account_id || '/' || to_char(p_day, 'YYYY-MM-DD');   -- the same whatever the DateStyle
        PERFORM prepay._lock_account(p_site_id, ac.account_id);
        IF EXISTS (SELECT 1 FROM prepay.ledger l WHERE l.site_id = p_site_id AND l.channel = 'basic_charge'
                                                   AND l.external_ref = ref) THEN
            posted := 0;
        ELSE
            -- never back: the month's settlement reconciles
            posted := greatest(accrued - prepay._basic_accrued(p_site_id, ac.account_id, p_day), 0);
            IF posted <> 0 THEN
                PERFORM prepay._post_entry(p_site_id, ac.account_id, 'basic_charge', -posted, 'basic_charge', ref,
                    pg_catalog.format('basic charge %s: %s x %s per month, day %s of %s', p_day, basis,
                                      terms.basic->>'price', extract(day FROM p_day), days_in_month),
                    NULL, posted, NULL);
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.accrue_basic_charges(integer, date) IS
'Post the day''s share of the basic charge of every open account on a two-part tariff: by capacity (account.capacity_kva x price per kVA per month) or by demand (the month''s maximum 15-minute demand up to the end of the day x price per kW per month).  Each day posts what brings the month''s total to floor(monthly x days open so far / days in month) in cents, so the month ends exactly at the monthly charge and a missed day is caught up; a day run late after a later one posts nothing (accruals never go back: prepay.settle_basic_charges reconciles the month).  Idempotent per account and day; a day with nothing to post posts nothing.  Returns the accounts that have a basic charge.  Schedule it daily after midnight for the day before (pg_cron).';

-- ---------------------------------------------------------------------
-- re-rating readings quarantined under a plausibility limit that was too
-- low (docs/ARCHITECTURE.md, "Bad readings")
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.release_quarantined(p_site_id integer, p_meter_id bigint)
RETURNS TABLE (read_at timestamptz, energy numeric, outcome text, detail text, charged numeric)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m prepay.meter;
    released prepay.reading[];
    mark bigint;
    n_rated integer := 0;
    n_skipped integer := 0;
    total numeric := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._lock_site_rating(p_site_id);
    SELECT * INTO m FROM prepay.meter x WHERE x.site_id = p_site_id AND x.meter_id = p_meter_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY003', 'unknown meter',
            pg_catalog.format('Site %s has no meter %s.', p_site_id, p_meter_id), 'prepay.meter lists the meters.');
    END IF;
    IF NOT m.active THEN
        PERFORM prepay._raise('PY010', 'meter was removed',
            pg_catalog.format('Meter %s was removed at %s; its readings are no longer rated.', p_meter_id, m.removed_at),
            'Release the readings of the meter that replaced it.');
    END IF;
    SELECT pg_catalog.max(l.entry_id) INTO mark FROM prepay.ledger l
     WHERE l.site_id = p_site_id AND l.account_id = m.account_id;

    -- the impossible jumps after the meter's last rated reading are taken
    -- out and stored again in time order, as one statement: the rating
    -- trigger rates them as any batch, against the meter's state and limit
    -- as they are now (each is rated or quarantined again, never both)
    WITH gone AS (
        DELETE FROM prepay.reading r
         WHERE r.site_id = p_site_id AND r.meter_id = p_meter_id AND r.quarantine_reason = 'impossible_jump'
           AND (m.last_read_at IS NULL OR r.read_at > m.last_read_at)
        RETURNING r.*)
    SELECT pg_catalog.array_agg(g ORDER BY g.read_at) INTO released FROM gone g;
    INSERT INTO prepay.reading (site_id, meter_id, read_at, energy, sharp, peak, flat, valley, power,
                                relay_state, received_at)
    SELECT u.site_id, u.meter_id, u.read_at, u.energy, u.sharp, u.peak, u.flat, u.valley, u.power,
           u.relay_state, u.received_at
      FROM pg_catalog.unnest(coalesce(released, '{}')) AS u ORDER BY u.read_at;

    -- what became of each, and the earlier impossible jumps left as they are
    FOR read_at, energy, outcome, detail, charged IN
        SELECT r.read_at, r.energy, coalesce(r.quarantine_reason::text, 'rated'), r.quarantine_detail, -l.amount
          FROM pg_catalog.unnest(coalesce(released, '{}')) AS u
          JOIN prepay.reading r ON r.site_id = u.site_id AND r.meter_id = u.meter_id AND r.read_at = u.read_at
          LEFT JOIN prepay.ledger l ON l.site_id = p_site_id AND l.account_id = m.account_id
                                   AND l.entry_id > coalesce(mark, 0) AND l.kind = 'consumption'
                                   AND l.meter_id = p_meter_id AND l.read_to = r.read_at
        UNION ALL
        SELECT r.read_at, r.energy, 'skipped',
               pg_catalog.format('at or before the meter''s last rated reading (%s), whose interval counts its consumption',
                                 m.last_read_at), NULL
          FROM prepay.reading r
         WHERE r.site_id = p_site_id AND r.meter_id = p_meter_id AND r.quarantine_reason = 'impossible_jump'
           AND r.read_at <= m.last_read_at
         ORDER BY 1
    LOOP
        n_rated := n_rated + (outcome = 'rated')::integer;
        n_skipped := n_skipped + (outcome = 'skipped')::integer;
        total := total + coalesce(charged, 0);
        RETURN NEXT;
    END LOOP;

    INSERT INTO prepay.audit (site_id, acting_role, application_name, action, object, object_key,
                              before_values, after_values)
    VALUES (p_site_id, prepay._caller_name(), pg_catalog.current_setting('application_name'), 'release_quarantined',
            'reading', pg_catalog.jsonb_build_object('site_id', p_site_id, 'meter_id', p_meter_id),
            pg_catalog.jsonb_build_object('max_per_hour', m.max_per_hour, 'multiplier', m.multiplier,
                                          'last_read_at', m.last_read_at, 'last_energy', m.last_energy),
            pg_catalog.jsonb_build_object(
                'released', coalesce(pg_catalog.array_length(released, 1), 0), 'rated', n_rated,
                'quarantined_again', coalesce(pg_catalog.array_length(released, 1), 0) - n_rated,
                'skipped', n_skipped, 'charged', total,
                'first_read_at', (released[1]).read_at,
                'last_read_at', (released[pg_catalog.array_length(released, 1)]).read_at));
END $$;
COMMENT ON FUNCTION prepay.release_quarantined(integer, bigint) IS
'Re-rate a meter''s readings quarantined as impossible_jump, after its plausibility limit (meter.max_per_hour) was raised: those after the meter''s last rated reading are stored again in time order through the rating trigger, so each is rated (and charged) or quarantined again with its new reason; readings quarantined for other reasons stay as they are, and impossible jumps at or before the last rated reading are skipped (a later reading''s interval counts their consumption).  Calling it again rates nothing twice.  One row per reading: its outcome (rated, skipped, or the quarantine reason), detail and the cents charged; the call is audited (action release_quarantined).  Needs the manage capability at the site; PY003 unknown meter, PY010 removed meter.';
/*-------------------------------------------------------------------------
 * sql/agent.sql
 *     Everything prepay-agent needs from the database: device profiles
 *     (register maps as data), the agent's catalog, lost-contact marks,
 *     the relay command state machine and the prepay_config notification.
 *     Appended after prepay.sql and tariff.sql into prepay--<version>.sql.
 *
 * Vocabulary
 *     device profile  a named register map of a meter model (per site):
 *                     which holding registers hold which value, how to
 *                     decode them, and how to trip, close and read back
 *                     the relay.
 *     shipped profile a profile prepay installs into every site (ddsy1352,
 *                     dtsy1352, adf400l, generic).  Edit a copy, not the
 *                     shipped one: shipped rows are recreated, not dumped.
 *     agent           a prepay-agent process, named by gateway.agent_id.
 *
 * Command life as the agent sees it (see docs/AGENT.md):
 *     queued --agent_claim_commands--> sent --agent_command_done--> done
 *                                           --agent_command_failed--> queued
 *                                             (retry after a backoff of at most
 *                                             60 s, as long as the command is
 *                                             still called for; a command_failing
 *                                             alarm from the 5th attempt) or
 *                                             failed (superseded, no longer
 *                                             called for, or impossible)
 *     A queued retry becomes due at once when contact with its meter or
 *     gateway returns (agent_meter_found, agent_gateway_found) and when the
 *     agent (re)connects (agent_claim_commands with p_include_sent).
 *
 * Errors raised here use SQLSTATEs PY1xx (docs/API.md).
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- device profiles
-- ---------------------------------------------------------------------

CREATE TABLE prepay.device_profile (
    site_id             integer NOT NULL REFERENCES prepay.site,
    profile             text NOT NULL CHECK (profile ~ '^[a-z0-9_]+$'),
    description         text NOT NULL,
    shipped             boolean NOT NULL DEFAULT false,
    relay_write_address integer CHECK (relay_write_address BETWEEN 0 AND 65535),
    trip_values         integer[] CHECK (0 <= ALL (trip_values) AND 65535 >= ALL (trip_values)),
    close_values        integer[] CHECK (0 <= ALL (close_values) AND 65535 >= ALL (close_values)),
    protect_values      integer[] CHECK (0 <= ALL (protect_values) AND 65535 >= ALL (protect_values)),
    relay_read_address  integer CHECK (relay_read_address BETWEEN 0 AND 65535),
    relay_read_count    smallint CHECK (relay_read_count IN (1, 2)),
    relay_state_mask    bigint NOT NULL DEFAULT 4294967295 CHECK (relay_state_mask BETWEEN 1 AND 4294967295),
    relay_tripped_value bigint,
    relay_closed_value  bigint,
    relay_verified      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (site_id, profile),
    CHECK ((relay_write_address IS NULL) = (trip_values IS NULL AND close_values IS NULL)),
    CHECK ((relay_read_address IS NULL) = (relay_read_count IS NULL)),
    CHECK (relay_read_address IS NULL OR (relay_tripped_value IS NOT NULL AND relay_closed_value IS NOT NULL
                                          AND relay_tripped_value <> relay_closed_value)),
    CHECK (relay_write_address IS NULL OR relay_read_address IS NOT NULL)
);
COMMENT ON TABLE prepay.device_profile IS 'A meter model''s register map, per site: the registers to read (prepay.profile_register) and how to trip, close and protect the relay and read its state back.  meter.device_profile names one.  Changing a profile makes the agents reload (NOTIFY prepay_config).';
COMMENT ON COLUMN prepay.device_profile.site_id IS 'Site the profile belongs to.';
COMMENT ON COLUMN prepay.device_profile.profile IS 'Profile name, as written in prepay.meter.device_profile (lower case, digits, underscore).';
COMMENT ON COLUMN prepay.device_profile.description IS 'Meter model, sources of the map, and what is still unverified.';
COMMENT ON COLUMN prepay.device_profile.shipped IS 'true for the profiles prepay installs into every site; they are recreated by a trigger, never dumped.  Copy one under another name to change it.';
COMMENT ON COLUMN prepay.device_profile.relay_write_address IS 'First holding register written (FC16) to trip, close or protect; NULL when the meter has no remote relay.';
COMMENT ON COLUMN prepay.device_profile.trip_values IS 'Register values written from relay_write_address to trip (cut supply).';
COMMENT ON COLUMN prepay.device_profile.close_values IS 'Register values written from relay_write_address to close (restore supply).';
COMMENT ON COLUMN prepay.device_profile.protect_values IS 'Register values written to put the meter on keep-power; NULL when the meter has no such function.';
COMMENT ON COLUMN prepay.device_profile.relay_read_address IS 'First holding register read back (FC03) for the relay state, after a command and with every reading.';
COMMENT ON COLUMN prepay.device_profile.relay_read_count IS '1 or 2 registers read back; two are combined high word first.';
COMMENT ON COLUMN prepay.device_profile.relay_state_mask IS 'Bits of the read-back value that carry the relay state (the rest, e.g. an enable flag, is ignored).';
COMMENT ON COLUMN prepay.device_profile.relay_tripped_value IS 'Masked read-back value meaning tripped.';
COMMENT ON COLUMN prepay.device_profile.relay_closed_value IS 'Masked read-back value meaning closed; any other value is reported as an unknown relay state.';
COMMENT ON COLUMN prepay.device_profile.relay_verified IS 'false while the relay registers are to be confirmed on hardware.';

CREATE TABLE prepay.profile_register (
    site_id     integer NOT NULL,
    profile     text NOT NULL,
    meaning     text NOT NULL CHECK (meaning IN ('total_energy', 'sharp', 'peak', 'flat', 'valley',
                                                 'power', 'voltage', 'relay_state')),
    address     integer NOT NULL CHECK (address BETWEEN 0 AND 65535),
    type        text NOT NULL CHECK (type IN ('u16', 'i16', 'u32', 'i32', 'float')),
    word_order  text NOT NULL DEFAULT 'high_first' CHECK (word_order IN ('high_first', 'low_first')),
    scale       smallint NOT NULL DEFAULT 0 CHECK (scale BETWEEN -6 AND 6),
    unit        text NOT NULL,
    shipped     boolean NOT NULL DEFAULT false,
    PRIMARY KEY (site_id, profile, meaning),
    FOREIGN KEY (site_id, profile) REFERENCES prepay.device_profile ON UPDATE CASCADE ON DELETE CASCADE,
    CHECK (type <> 'float' OR meaning NOT IN ('total_energy', 'sharp', 'peak', 'flat', 'valley')),
    CHECK (type <> 'float' OR scale = 0)
);
COMMENT ON TABLE prepay.profile_register IS 'One value of a device profile: where it is and how to decode it.  Value = integer register value x 10^scale, converted to a decimal string exactly; energy never passes through floating point (float is refused for energy meanings).';
COMMENT ON COLUMN prepay.profile_register.site_id IS 'Site of the profile.';
COMMENT ON COLUMN prepay.profile_register.profile IS 'Profile the register belongs to.';
COMMENT ON COLUMN prepay.profile_register.meaning IS 'What the value is: total_energy, sharp, peak, flat, valley (cumulative registers), power (kW), voltage (V) or relay_state.';
COMMENT ON COLUMN prepay.profile_register.address IS 'Holding register address (PDU address, 0-based), read with FC03.';
COMMENT ON COLUMN prepay.profile_register.type IS 'u16, i16 (one register), u32, i32 or float (two registers; float not for energy).';
COMMENT ON COLUMN prepay.profile_register.word_order IS 'Order of the two registers of a 32-bit value: high_first (reg0 << 16 | reg1) or low_first.';
COMMENT ON COLUMN prepay.profile_register.scale IS 'Decimal exponent: the value is the register integer times 10^scale (-2 for 0.01 kWh).';
COMMENT ON COLUMN prepay.profile_register.unit IS 'Unit of the scaled value (kWh, kW, V, m3).';
COMMENT ON COLUMN prepay.profile_register.shipped IS 'true for registers of shipped profiles (recreated, not dumped).';

-- ---------------------------------------------------------------------
-- the shipped profiles
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.install_device_profiles(p_site_id integer)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO prepay.device_profile AS d (site_id, profile, description, shipped, relay_write_address,
           trip_values, close_values, relay_read_address, relay_read_count, relay_state_mask,
           relay_tripped_value, relay_closed_value, relay_verified)
    VALUES
      (p_site_id, 'ddsy1352', 'Acrel DDSY1352 single-phase prepaid meter.  Energy map from the vendor manual (0000H-0010H); relay forced control 0057H-0058H from unofficial sources: to be confirmed on hardware.',
       true, 87, '{1,1}', '{1,0}', 87, 2, 65535, 1, 0, false),
      (p_site_id, 'dtsy1352', 'Acrel DTSY1352 three-phase prepaid meter, same energy and relay map as ddsy1352 (unofficial sources; relay to be confirmed on hardware).',
       true, 87, '{1,1}', '{1,0}', 87, 2, 65535, 1, 0, false),
      (p_site_id, 'adf400l', 'Acrel ADF400L multi-user meter, single-phase user area (one unit id per user).  Forced-control word 0801H: 0100H trips, 0001H closes (unverified on hardware).',
       true, 2049, '{256}', '{1}', 2049, 1, 65535, 256, 1, false),
      (p_site_id, 'generic', 'Configurable template: copy it under a new name and set its registers and relay.  As shipped it reads a U32 total energy in 0.01 kWh at 0000H and has no relay.',
       true, NULL, NULL, NULL, NULL, NULL, 4294967295, NULL, NULL, false)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;

    INSERT INTO prepay.profile_register (site_id, profile, meaning, address, type, scale, unit, shipped)
    SELECT p_site_id, p.profile, r.meaning, r.address, r.type, r.scale, r.unit, true
      FROM (VALUES ('ddsy1352'), ('dtsy1352')) AS p (profile),
           (VALUES ('total_energy', 0, 'u32', -2, 'kWh'), ('sharp', 2, 'u32', -2, 'kWh'),
                   ('peak', 4, 'u32', -2, 'kWh'), ('flat', 6, 'u32', -2, 'kWh'),
                   ('valley', 8, 'u32', -2, 'kWh'), ('voltage', 11, 'u16', -1, 'V'),
                   ('power', 13, 'i16', -3, 'kW')) AS r (meaning, address, type, scale, unit)
    UNION ALL
    SELECT p_site_id, 'adf400l', r.meaning, r.address, r.type, r.scale, r.unit, true
      FROM (VALUES ('total_energy', 774, 'u32', -2, 'kWh'), ('sharp', 1024, 'u32', -2, 'kWh'),
                   ('peak', 1026, 'u32', -2, 'kWh'), ('flat', 1028, 'u32', -2, 'kWh'),
                   ('valley', 1030, 'u32', -2, 'kWh'), ('power', 770, 'i16', -3, 'kW'),
                   ('voltage', 768, 'u16', -1, 'V')) AS r (meaning, address, type, scale, unit)
    UNION ALL
    SELECT p_site_id, 'generic', 'total_energy', 0, 'u32', -2, 'kWh', true
    ON CONFLICT DO NOTHING;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.install_device_profiles(integer) IS
'Install the shipped device profiles (ddsy1352, dtsy1352, adf400l, generic) into a site, keeping any that exist; returns how many profiles were added.  Runs for every new site (trigger site_device_profiles) and for the existing sites at install time.';

CREATE FUNCTION prepay._site_device_profiles() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay.install_device_profiles(NEW.site_id);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._site_device_profiles() IS 'Internal: AFTER INSERT row trigger on prepay.site installing the shipped device profiles.';
CREATE TRIGGER site_device_profiles AFTER INSERT ON prepay.site
    FOR EACH ROW EXECUTE FUNCTION prepay._site_device_profiles();
-- shipped profiles are not dumped, so a restore must recreate them, also in
-- session_replication_role = replica (the documented restore procedure)
ALTER TABLE prepay.site ENABLE ALWAYS TRIGGER site_device_profiles;

SELECT prepay.install_device_profiles(site_id) FROM prepay.site;

-- ---------------------------------------------------------------------
-- configuration changes wake the agents
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._notify_config() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('prepay_config', TG_TABLE_NAME);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._notify_config() IS 'Internal: sends NOTIFY prepay_config (payload: the table changed) so that agents reload their catalog.';

CREATE TRIGGER gateway_config AFTER INSERT OR DELETE OR UPDATE OF transport, host, port, serial_device, baud,
        parity, data_bits, stop_bits, agent_id, poll_interval ON prepay.gateway
    FOR EACH STATEMENT EXECUTE FUNCTION prepay._notify_config();
CREATE TRIGGER meter_config AFTER INSERT OR DELETE OR UPDATE OF gateway_id, unit_id, device_profile, kind, active
    ON prepay.meter FOR EACH STATEMENT EXECUTE FUNCTION prepay._notify_config();
CREATE TRIGGER device_profile_config AFTER INSERT OR DELETE OR UPDATE ON prepay.device_profile
    FOR EACH STATEMENT EXECUTE FUNCTION prepay._notify_config();
CREATE TRIGGER profile_register_config AFTER INSERT OR DELETE OR UPDATE ON prepay.profile_register
    FOR EACH STATEMENT EXECUTE FUNCTION prepay._notify_config();

-- ---------------------------------------------------------------------
-- the agent's catalog
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.agent_catalog(p_agent_id text)
RETURNS TABLE (site_id integer, gateway_id bigint, gateway_name text, transport text, host text, port integer,
               serial_device text, baud integer, parity char(1), data_bits smallint, stop_bits smallint,
               poll_interval_ms bigint, gateway_lost boolean,
               meter_id bigint, unit_id smallint, kind prepay.meter_kind, device_profile text, meter_lost boolean,
               relay_write_address integer, trip_values integer[], close_values integer[],
               relay_read_address integer, relay_read_count smallint, relay_state_mask bigint,
               relay_tripped_value bigint, relay_closed_value bigint,
               meaning text, address integer, type text, word_order text, scale smallint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT g.site_id, g.gateway_id, g.name, g.transport, g.host, g.port,
           g.serial_device, g.baud, g.parity, g.data_bits, g.stop_bits,
           (pg_catalog.date_part('epoch', g.poll_interval) * 1000)::bigint, g.lost_since IS NOT NULL,
           m.meter_id, m.unit_id, m.kind, m.device_profile, m.lost_since IS NOT NULL,
           d.relay_write_address, d.trip_values, d.close_values,
           d.relay_read_address, d.relay_read_count, d.relay_state_mask,
           d.relay_tripped_value, d.relay_closed_value,
           r.meaning, r.address, r.type, r.word_order, r.scale
      FROM prepay.gateway g
      LEFT JOIN prepay.meter m ON m.site_id = g.site_id AND m.gateway_id = g.gateway_id
                              AND m.active AND m.unit_id IS NOT NULL
      LEFT JOIN prepay.device_profile d ON d.site_id = m.site_id AND d.profile = m.device_profile
      LEFT JOIN prepay.profile_register r ON r.site_id = d.site_id AND r.profile = d.profile
                                         AND r.meaning IN ('total_energy', 'sharp', 'peak', 'flat', 'valley', 'power')
     WHERE g.agent_id = p_agent_id
     ORDER BY g.site_id, g.gateway_id, m.meter_id, r.address;
$$;
COMMENT ON FUNCTION prepay.agent_catalog(text) IS
'What one agent polls, in one consistent snapshot: one row per (gateway, active meter, register to read), ordered by gateway and meter.  A gateway without meters gives one row with a NULL meter; a meter without a known profile gives one row with NULL profile columns (the agent logs and skips it).';

-- ---------------------------------------------------------------------
-- lost contact
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._raise_alarm_once(p_site_id integer, p_kind text, p_meter_id bigint, p_detail text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO prepay.alarm (site_id, kind, meter_id, detail)
    SELECT p_site_id, p_kind, p_meter_id, p_detail
     WHERE NOT EXISTS (SELECT 1 FROM prepay.alarm a
                        WHERE a.site_id = p_site_id AND a.kind = p_kind AND a.account_id IS NULL
                          AND a.meter_id IS NOT DISTINCT FROM p_meter_id AND a.cleared_at IS NULL);
END $$;
COMMENT ON FUNCTION prepay._raise_alarm_once(integer, text, bigint, text) IS 'Internal: raise an alarm of a kind for a meter (or for nothing) unless one is already active.';

CREATE FUNCTION prepay.agent_meter_lost(p_site_id integer, p_meter_id bigint, p_failures integer, p_error text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize_agent(p_site_id, (SELECT m.gateway_id FROM prepay.meter m
                                                 WHERE m.site_id = p_site_id AND m.meter_id = p_meter_id));
    UPDATE prepay.meter SET lost_since = pg_catalog.now()
     WHERE site_id = p_site_id AND meter_id = p_meter_id AND lost_since IS NULL;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM prepay.meter WHERE site_id = p_site_id AND meter_id = p_meter_id) THEN
        PERFORM prepay._raise('PY101', 'unknown meter for the agent',
            pg_catalog.format('Site %s has no meter %s.', p_site_id, p_meter_id),
            'Reload the agent''s catalog (NOTIFY prepay_config).');
    END IF;
    PERFORM prepay._raise_alarm_once(p_site_id, 'meter_lost', p_meter_id,
        pg_catalog.format('Meter %s did not answer %s times in a row: %s', p_meter_id, p_failures, p_error));
END $$;
COMMENT ON FUNCTION prepay.agent_meter_lost(integer, bigint, integer, text) IS
'Called by the agent after a meter failed p_failures consecutive polls: sets meter.lost_since (if not yet set) and raises one meter_lost alarm.  Idempotent.  PY101 for an unknown meter.';

CREATE FUNCTION prepay.agent_meter_found(p_site_id integer, p_meter_id bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize_agent(p_site_id, (SELECT m.gateway_id FROM prepay.meter m
                                                 WHERE m.site_id = p_site_id AND m.meter_id = p_meter_id));
    UPDATE prepay.meter SET lost_since = NULL WHERE site_id = p_site_id AND meter_id = p_meter_id;
    UPDATE prepay.alarm SET cleared_at = pg_catalog.now()
     WHERE site_id = p_site_id AND kind = 'meter_lost' AND meter_id = p_meter_id AND cleared_at IS NULL;
    PERFORM prepay._wake_commands(p_site_id, NULL, p_meter_id);
END $$;
COMMENT ON FUNCTION prepay.agent_meter_found(integer, bigint) IS
'Called by the agent on the first good read of a lost meter: clears meter.lost_since and its meter_lost alarm, and makes the meter''s commands waiting for a retry due at once (prepay._wake_commands).  Idempotent.';

CREATE FUNCTION prepay.agent_gateway_lost(p_site_id integer, p_gateway_id bigint, p_error text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize_agent(p_site_id, p_gateway_id);
    UPDATE prepay.gateway SET lost_since = pg_catalog.now()
     WHERE site_id = p_site_id AND gateway_id = p_gateway_id AND lost_since IS NULL;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM prepay.gateway WHERE site_id = p_site_id AND gateway_id = p_gateway_id) THEN
        PERFORM prepay._raise('PY102', 'unknown gateway for the agent',
            pg_catalog.format('Site %s has no gateway %s.', p_site_id, p_gateway_id),
            'Reload the agent''s catalog (NOTIFY prepay_config).');
    END IF;
    INSERT INTO prepay.alarm (site_id, kind, detail)
    SELECT p_site_id, 'gateway_lost', pg_catalog.format('Gateway %s: %s', p_gateway_id, p_error)
     WHERE NOT EXISTS (SELECT 1 FROM prepay.alarm a
                        WHERE a.site_id = p_site_id AND a.kind = 'gateway_lost' AND a.cleared_at IS NULL
                          AND a.detail LIKE pg_catalog.format('Gateway %s:%%', p_gateway_id));
END $$;
COMMENT ON FUNCTION prepay.agent_gateway_lost(integer, bigint, text) IS
'Called by the agent when no meter of a gateway answered a whole sweep (or it cannot connect): sets gateway.lost_since and raises one gateway_lost alarm (its detail starts with "Gateway <id>:").  Idempotent.  PY102 for an unknown gateway.';

CREATE FUNCTION prepay.agent_gateway_found(p_site_id integer, p_gateway_id bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize_agent(p_site_id, p_gateway_id);
    UPDATE prepay.gateway SET lost_since = NULL WHERE site_id = p_site_id AND gateway_id = p_gateway_id;
    UPDATE prepay.alarm SET cleared_at = pg_catalog.now()
     WHERE site_id = p_site_id AND kind = 'gateway_lost' AND cleared_at IS NULL
       AND detail LIKE pg_catalog.format('Gateway %s:%%', p_gateway_id);
    PERFORM prepay._wake_commands(p_site_id, p_gateway_id, NULL);
END $$;
COMMENT ON FUNCTION prepay.agent_gateway_found(integer, bigint) IS
'Called by the agent on the first good read through a lost gateway: clears gateway.lost_since and its gateway_lost alarm, and makes the commands of its meters waiting for a retry due at once (prepay._wake_commands).  Idempotent.';

-- ---------------------------------------------------------------------
-- relay commands
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.agent_claim_commands(p_agent_id text, p_include_sent boolean DEFAULT false)
RETURNS TABLE (site_id integer, command_id bigint, meter_id bigint, gateway_id bigint,
               action prepay.command_action, attempts integer, created_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize_agent_id(p_agent_id);
    RETURN QUERY
    WITH due AS (
        SELECT c.site_id, c.command_id
          FROM prepay.command c
          JOIN prepay.meter m ON m.site_id = c.site_id AND m.meter_id = c.meter_id
          JOIN prepay.gateway g ON g.site_id = m.site_id AND g.gateway_id = m.gateway_id
         WHERE g.agent_id = p_agent_id AND prepay._is_agent(g.site_id, g.agent_id)
           AND (c.state = 'queued' AND c.not_before <= pg_catalog.now()
                OR p_include_sent AND c.state = 'sent'
                OR p_include_sent AND c.state = 'queued' AND c.attempts > 0
                   AND (c.action = 'close' OR c.reason <> 'arrears'
                        OR prepay.cut_allowed_at(c.site_id, pg_catalog.now()) <= pg_catalog.now()))
         ORDER BY c.site_id, c.command_id
           FOR UPDATE OF c SKIP LOCKED
    )
    UPDATE prepay.command c
       SET state = 'sent', attempts = c.attempts + 1, updated_at = pg_catalog.now()
      FROM due, prepay.meter m
     WHERE c.site_id = due.site_id AND c.command_id = due.command_id
       AND m.site_id = c.site_id AND m.meter_id = c.meter_id
    RETURNING c.site_id, c.command_id, c.meter_id, m.gateway_id, c.action, c.attempts, c.created_at;
END $$;
COMMENT ON FUNCTION prepay.agent_claim_commands(text, boolean) IS
'The agent takes the commands it must carry out: every queued command due (not_before passed) of a meter on one of its gateways becomes sent, attempts + 1 (FOR UPDATE SKIP LOCKED).  With p_include_sent (at every (re)connect of the agent) it also takes back its sent commands, which a crash may have left in flight (relay commands are idempotent), and the queued commands waiting for a retry, at once (an arrears trip not inside a no-cut window).  Only the sites where the caller is mapped as this agent (prepay.agent_access) are served.';

CREATE FUNCTION prepay._agent_command(p_site_id integer, p_command_id bigint)
RETURNS prepay.command LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c prepay.command;
BEGIN
    SELECT * INTO c FROM prepay.command WHERE site_id = p_site_id AND command_id = p_command_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY103', 'unknown command',
            pg_catalog.format('Site %s has no command %s.', p_site_id, p_command_id), NULL);
    END IF;
    IF c.state <> 'sent' THEN
        PERFORM prepay._raise('PY104', 'command is not in flight',
            pg_catalog.format('Command %s is %s, not sent.', p_command_id, c.state),
            'Only a command claimed with prepay.agent_claim_commands can be completed.');
    END IF;
    RETURN c;
END $$;
COMMENT ON FUNCTION prepay._agent_command(integer, bigint) IS 'Internal: lock a command the agent reports on; PY103 if unknown, PY104 if it is not sent.';

CREATE FUNCTION prepay.agent_command_done(p_site_id integer, p_command_id bigint, p_relay_state prepay.relay_state)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c prepay.command;
BEGIN
    PERFORM prepay._authorize_agent(p_site_id, (SELECT m.gateway_id FROM prepay.command q
                                                  JOIN prepay.meter m ON m.site_id = q.site_id AND m.meter_id = q.meter_id
                                                 WHERE q.site_id = p_site_id AND q.command_id = p_command_id));
    c := prepay._agent_command(p_site_id, p_command_id);
    IF p_relay_state IS DISTINCT FROM (CASE c.action WHEN 'trip' THEN 'tripped' ELSE 'closed' END)::prepay.relay_state THEN
        PERFORM prepay._raise('PY105', 'relay state read back does not match the command',
            pg_catalog.format('Command %s is a %s; the meter reads %s.', p_command_id, c.action,
                              coalesce(p_relay_state::text, 'unknown')),
            'Report it with prepay.agent_command_failed.');
    END IF;
    UPDATE prepay.command SET state = 'done', updated_at = pg_catalog.now(), last_error = NULL
     WHERE site_id = p_site_id AND command_id = p_command_id;
    UPDATE prepay.meter SET relay_state = p_relay_state, relay_state_at = pg_catalog.now()
     WHERE site_id = p_site_id AND meter_id = c.meter_id;
END $$;
COMMENT ON FUNCTION prepay.agent_command_done(integer, bigint, prepay.relay_state) IS
'The agent carried out a command and read the relay state back: the command is done and meter.relay_state is set.  PY105 if the state read back is not what the command asked for; PY103, PY104.';

CREATE FUNCTION prepay._command_moot(c prepay.command)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN n.command_id IS NOT NULL THEN pg_catalog.format('superseded by command %s', n.command_id)
        WHEN m.meter_id IS NULL OR NOT m.active THEN 'meter removed'
        WHEN c.action = 'trip' AND m.protect THEN 'meter protected'
        WHEN c.action = 'trip' AND a.protect THEN 'account protected'
        WHEN c.action = 'trip' AND c.reason = 'arrears' AND a.closed_at IS NOT NULL THEN 'account closed'
        WHEN c.action = 'trip' AND c.reason = 'arrears' AND m.account_id IS DISTINCT FROM c.account_id
            THEN 'meter no longer on the account'
        WHEN c.action = 'trip' AND c.reason = 'arrears' AND (a.mode <> 'prepaid' OR a.alarm_level < 3)
            THEN 'account no longer in arrears'
    END
      FROM (SELECT 1) one
      LEFT JOIN prepay.meter m ON m.site_id = c.site_id AND m.meter_id = c.meter_id
      LEFT JOIN prepay.account a ON a.site_id = c.site_id AND a.account_id = c.account_id
      LEFT JOIN LATERAL (SELECT q.command_id FROM prepay.command q
                          WHERE q.site_id = c.site_id AND q.meter_id = c.meter_id AND q.command_id > c.command_id
                            AND q.state IN ('queued', 'sent', 'done')
                          ORDER BY q.command_id DESC LIMIT 1) n ON true;
$$;
COMMENT ON FUNCTION prepay._command_moot(prepay.command) IS
'Internal: why the account''s or the operator''s state no longer calls for a command (NULL while it still does): a newer command of the meter (queued, sent or done) supersedes it; the meter was removed; a trip of a protected meter or account; an arrears trip of an account closed, detached from the meter, postpaid or out of arrears.  A close is called for until superseded.';

CREATE FUNCTION prepay._command_impossible(c prepay.command)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format('impossible: device profile %s has no remote relay', d.profile)
      FROM prepay.meter m
      JOIN prepay.device_profile d ON d.site_id = m.site_id AND d.profile = m.device_profile
     WHERE m.site_id = c.site_id AND m.meter_id = c.meter_id AND d.relay_write_address IS NULL;
$$;
COMMENT ON FUNCTION prepay._command_impossible(prepay.command) IS
'Internal: why a command can never be carried out (NULL when it can): the meter''s device profile has no remote relay.  Retrying would not help; the operator changes the profile or the installation.';

CREATE FUNCTION prepay._command_alarm(c prepay.command, p_error text)
RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO prepay.alarm (site_id, kind, meter_id, detail)
    VALUES (c.site_id, 'command_failing', c.meter_id,
            pg_catalog.format('Command %s: %s of meter %s (account %s, reason %s) not done after %s attempt(s); last error: %s',
                              c.command_id, c.action, c.meter_id, coalesce(c.account_id::text, 'none'), c.reason,
                              c.attempts, p_error))
    ON CONFLICT (site_id, kind, (coalesce(account_id, 0)), (coalesce(meter_id, 0))) WHERE cleared_at IS NULL
    DO UPDATE SET detail = EXCLUDED.detail;
$$;
COMMENT ON FUNCTION prepay._command_alarm(prepay.command, text) IS
'Internal: raise the meter''s command_failing alarm for a command (detail "Command <id>: <action> of meter <id> (account, reason) not done after <n> attempt(s); last error: ..."), or bring the detail of the active one up to date: one alarm per meter, raised once.';

CREATE FUNCTION prepay._command_alarm_clear() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE prepay.alarm SET cleared_at = pg_catalog.now()
     WHERE site_id = NEW.site_id AND kind = 'command_failing' AND meter_id = NEW.meter_id AND cleared_at IS NULL
       AND (NEW.state = 'done' OR detail LIKE pg_catalog.format('Command %s:%%', NEW.command_id));
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._command_alarm_clear() IS
'Internal trigger function: a command done clears its meter''s command_failing alarm (the relay follows the latest order); a command cancelled (superseded before it was sent again) clears the alarm naming it.';
CREATE TRIGGER command_alarm_clear AFTER UPDATE OF state ON prepay.command
    FOR EACH ROW WHEN (NEW.state IN ('done', 'cancelled') AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION prepay._command_alarm_clear();
COMMENT ON TRIGGER command_alarm_clear ON prepay.command IS
'Clears command_failing alarms when a command is done or cancelled (prepay._command_alarm_clear).';

CREATE FUNCTION prepay._wake_commands(p_site_id integer, p_gateway_id bigint, p_meter_id bigint)
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    woken bigint;
    n integer := 0;
BEGIN
    FOR woken IN
        UPDATE prepay.command c
           SET not_before = LEAST(c.not_before,
                   CASE WHEN c.action = 'trip' AND c.reason = 'arrears'
                        THEN prepay.cut_allowed_at(c.site_id, pg_catalog.now()) ELSE pg_catalog.now() END)
          FROM prepay.meter m
         WHERE c.site_id = p_site_id AND c.state = 'queued' AND c.attempts > 0
           AND c.not_before > pg_catalog.now()
           AND m.site_id = c.site_id AND m.meter_id = c.meter_id
           AND (m.meter_id = p_meter_id OR m.gateway_id = p_gateway_id)
        RETURNING c.command_id
    LOOP
        PERFORM pg_catalog.pg_notify('prepay_command', p_site_id || '/' || woken);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay._wake_commands(integer, bigint, bigint) IS
'Internal: contact with a meter (p_meter_id) or a gateway (p_gateway_id) returned: its queued commands waiting for a retry become due now (an arrears trip at the end of any no-cut window in force), with NOTIFY prepay_command.  Returns how many.';

CREATE FUNCTION prepay.agent_command_failed(p_site_id integer, p_command_id bigint, p_error text,
                                            p_retry_after interval DEFAULT '10 seconds',
                                            p_alarm_after integer DEFAULT 5)
RETURNS prepay.command_state LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c prepay.command;
    why text;
    retry_at timestamptz;
BEGIN
    PERFORM prepay._authorize_agent(p_site_id, (SELECT m.gateway_id FROM prepay.command q
                                                  JOIN prepay.meter m ON m.site_id = q.site_id AND m.meter_id = q.meter_id
                                                 WHERE q.site_id = p_site_id AND q.command_id = p_command_id));
    c := prepay._agent_command(p_site_id, p_command_id);
    why := coalesce(prepay._command_moot(c), prepay._command_impossible(c));
    IF why IS NULL THEN
        retry_at := pg_catalog.now() + LEAST(GREATEST(coalesce(p_retry_after, '0 seconds'),
                                                                            '0 seconds'), '60 seconds');
        IF c.action = 'trip' AND c.reason = 'arrears' THEN
            retry_at := prepay.cut_allowed_at(p_site_id, retry_at);
        END IF;
        BEGIN
            UPDATE prepay.command SET state = 'queued', updated_at = pg_catalog.now(), not_before = retry_at,
                   last_error = p_error
             WHERE site_id = p_site_id AND command_id = p_command_id;
        EXCEPTION WHEN unique_violation THEN
            -- a newer command was queued for the meter meanwhile
            why := 'superseded by a newer queued command';
        END;
    END IF;
    IF why IS NULL THEN
        IF c.attempts >= p_alarm_after THEN
            PERFORM prepay._command_alarm(c, p_error);
        END IF;
        RETURN 'queued';
    END IF;
    UPDATE prepay.command SET state = 'failed', updated_at = pg_catalog.now(),
           last_error = pg_catalog.format('%s; %s', p_error, why)
     WHERE site_id = p_site_id AND command_id = p_command_id;
    IF why LIKE 'impossible:%' THEN
        PERFORM prepay._command_alarm(c, pg_catalog.format('%s; %s', p_error, why));
    ELSE
        UPDATE prepay.alarm SET cleared_at = pg_catalog.now()
         WHERE site_id = p_site_id AND kind = 'command_failing' AND meter_id = c.meter_id AND cleared_at IS NULL
           AND detail LIKE pg_catalog.format('Command %s:%%', p_command_id);
    END IF;
    RETURN 'failed';
END $$;
COMMENT ON FUNCTION prepay.agent_command_failed(integer, bigint, text, interval, integer) IS
'The agent could not carry out a command (no answer, exception, wrong read-back).  A command still called for is never abandoned: it is queued again after p_retry_after (capped to 0..60 s; an arrears trip not before the end of a no-cut window, as when it was queued), and from attempt p_alarm_after on the meter''s command_failing alarm is raised once (its detail kept current).  It is failed only when it is no longer called for (prepay._command_moot: superseded by a newer command, meter removed, trip of a protected meter or account, arrears trip of an account no longer in arrears) or impossible (prepay._command_impossible: no remote relay, which raises the alarm); last_error says why.  Returns the new state (queued or failed).  PY103, PY104.';

CREATE FUNCTION prepay.agent_commands_failing(p_agent_id text)
RETURNS bigint LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._authorize_agent_id(p_agent_id);
    RETURN (SELECT pg_catalog.count(*)
              FROM prepay.command c
              JOIN prepay.meter m ON m.site_id = c.site_id AND m.meter_id = c.meter_id
              JOIN prepay.gateway g ON g.site_id = m.site_id AND g.gateway_id = m.gateway_id
             WHERE g.agent_id = p_agent_id AND prepay._is_agent(g.site_id, g.agent_id)
               AND c.state IN ('queued', 'sent') AND c.attempts > 0 AND c.last_error IS NOT NULL);
END $$;
COMMENT ON FUNCTION prepay.agent_commands_failing(text) IS
'How many commands of one agent''s meters failed their last attempt and are still to be carried out (queued for a retry, or sent again): the agent''s prepay_agent_commands_failing gauge.  Only the sites where the caller is mapped as this agent are counted.';

-- ---------------------------------------------------------------------
-- pg_dump: user rows only (shipped profiles are recreated by the trigger)
-- ---------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('prepay.device_profile', 'WHERE NOT shipped');
SELECT pg_catalog.pg_extension_config_dump('prepay.profile_register', 'WHERE NOT shipped');
/*-------------------------------------------------------------------------
 * sql/billing.sql
 *     Periodic billing: fees (rent, property fee, ...), common-area and
 *     line-loss apportionment, the month's two-part basic charge
 *     settlement, allowances, and period bills (payable for postpaid
 *     accounts and for fees settled by bill; a statement for everyone).
 *
 * Exactly once.  Every periodic posting is a row of prepay.period_charge
 * keyed by (site, source, rule, account, period start) and inserted before
 * anything is posted, under the account's row lock: running a job twice,
 * or from two sessions at once, posts each charge once.  Apportionments
 * and bills have the same kind of key (rule, period) and (account,
 * period).  Jobs visit accounts in account_id order, as the rating
 * trigger does, so concurrent jobs never deadlock on account locks.
 *
 * The rules (pro-rating, rounding, what a period is, how consumption over
 * a period is measured) are in docs/BILLING.md.
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- periods and days
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._period(p_kind text, p_day date, OUT period_start date, OUT period_end date)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_kind NOT IN ('month', 'quarter', 'year') OR p_day IS NULL THEN
        PERFORM prepay._raise('22023', pg_catalog.format('unknown period %L', p_kind), NULL,
                              'A period is month, quarter or year.');
    END IF;
    period_start := pg_catalog.date_trunc(p_kind, p_day)::date;
    period_end := (period_start + ('1 ' || p_kind)::interval)::date;
END $$;
COMMENT ON FUNCTION prepay._period(text, date) IS 'Internal: the calendar month, quarter or year containing a day, as [period_start, period_end).';

CREATE FUNCTION prepay._local_day(p_site_id integer, p_at timestamptz)
RETURNS date LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (p_at AT TIME ZONE s.time_zone)::date FROM prepay.site s WHERE s.site_id = p_site_id
$$;
COMMENT ON FUNCTION prepay._local_day(integer, timestamptz) IS 'Internal: the site''s local date of an instant.';

CREATE FUNCTION prepay._local_start(p_site_id integer, p_day date)
RETURNS timestamptz LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_day::timestamp AT TIME ZONE s.time_zone FROM prepay.site s WHERE s.site_id = p_site_id
$$;
COMMENT ON FUNCTION prepay._local_start(integer, date) IS 'Internal: the instant a local date of the site begins (local midnight).';

CREATE FUNCTION prepay._days_open(p_site_id integer, p_account prepay.account, p_from date, p_to date)
RETURNS integer LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT greatest(0, least(p_to, coalesce(prepay._local_day(p_site_id, p_account.closed_at), p_to))
                       - greatest(p_from, prepay._local_day(p_site_id, p_account.opened_at)))
$$;
COMMENT ON FUNCTION prepay._days_open(integer, prepay.account, date, date) IS
'Internal: how many days of [from, to) the account is open: the move-in day counts, the move-out day does not.  An open account counts as open to the end.';

-- ---------------------------------------------------------------------
-- account groups
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.account_group_id_seq;
COMMENT ON SEQUENCE prepay.account_group_id_seq IS 'Source of account group ids.';

CREATE TABLE prepay.account_group (
    site_id   integer NOT NULL REFERENCES prepay.site,
    group_id  bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.account_group_id_seq'),
    name      text NOT NULL,
    PRIMARY KEY (site_id, group_id),
    UNIQUE (site_id, name)
);
COMMENT ON TABLE prepay.account_group IS 'A named set of accounts that a fee, an apportionment or an allowance applies to (a floor, the shops sharing a corridor, the students of a dormitory).';
COMMENT ON COLUMN prepay.account_group.site_id IS 'Site of the group.';
COMMENT ON COLUMN prepay.account_group.group_id IS 'Group id.';
COMMENT ON COLUMN prepay.account_group.name IS 'Unique name within the site.';

CREATE TABLE prepay.account_group_member (
    site_id    integer NOT NULL,
    group_id   bigint NOT NULL,
    account_id bigint NOT NULL,
    ratio      numeric(12,6) NOT NULL DEFAULT 1 CHECK (ratio >= 0),
    PRIMARY KEY (site_id, group_id, account_id),
    FOREIGN KEY (site_id, group_id) REFERENCES prepay.account_group ON DELETE CASCADE,
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account
);
COMMENT ON TABLE prepay.account_group_member IS 'The accounts of a group.';
COMMENT ON COLUMN prepay.account_group_member.site_id IS 'Site of the group.';
COMMENT ON COLUMN prepay.account_group_member.group_id IS 'Group.';
COMMENT ON COLUMN prepay.account_group_member.account_id IS 'Member account.';
COMMENT ON COLUMN prepay.account_group_member.ratio IS 'The member''s share weight for apportionment by custom ratios (ignored by the other methods).';

CREATE FUNCTION prepay._members(p_site_id integer, p_group_id bigint)
RETURNS SETOF prepay.account LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.* FROM prepay.account a
     WHERE a.site_id = p_site_id
       AND (p_group_id IS NULL
            OR EXISTS (SELECT 1 FROM prepay.account_group_member g
                        WHERE g.site_id = p_site_id AND g.group_id = p_group_id AND g.account_id = a.account_id))
     ORDER BY a.account_id
$$;
COMMENT ON FUNCTION prepay._members(integer, bigint) IS 'Internal: the accounts of a group, or every account of the site when the group is NULL, in account_id order (the lock order).';

-- ---------------------------------------------------------------------
-- periodic postings: the exactly-once record
-- ---------------------------------------------------------------------

CREATE TABLE prepay.period_charge (
    site_id      integer NOT NULL,
    source       text NOT NULL CHECK (source IN ('fee', 'fee_credit', 'common_area', 'loss', 'allowance',
                                                 'allowance_expiry', 'basic_settlement')),
    rule_id      bigint NOT NULL,
    account_id   bigint NOT NULL,
    period_start date NOT NULL,
    period_end   date NOT NULL,
    amount       numeric(14,2) NOT NULL,
    settle       text NOT NULL CHECK (settle IN ('deduct', 'bill', 'none')),
    entry_id     bigint,
    bill_id      bigint,
    inputs       jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (site_id, source, rule_id, account_id, period_start),
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account,
    CHECK (period_start < period_end),
    CHECK (entry_id IS NULL OR settle = 'deduct')
);
CREATE INDEX period_charge_account ON prepay.period_charge (site_id, account_id, period_start);
COMMENT ON INDEX prepay.period_charge_account IS 'An account''s periodic charges: statements and bills.';
CREATE UNIQUE INDEX period_charge_entry ON prepay.period_charge (site_id, entry_id) WHERE entry_id IS NOT NULL;
COMMENT ON INDEX prepay.period_charge_entry IS 'The periodic charge a ledger entry posted (one at most): how a bill finds a charge''s period and name.';
COMMENT ON TABLE prepay.period_charge IS 'Every periodic charge or credit, exactly once per (source, rule, account, period): fees, their move-out credits, common-area and loss shares, allowances and their expiry, basic charge settlements.  inputs holds what the amount was computed from, so anyone can reproduce it.';
COMMENT ON COLUMN prepay.period_charge.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.period_charge.source IS 'What produced it: fee, fee_credit, common_area, loss, allowance, allowance_expiry or basic_settlement.';
COMMENT ON COLUMN prepay.period_charge.rule_id IS 'The charge item, apportionment rule or allowance rule (0 for basic settlements and allowance expiry at move-out).';
COMMENT ON COLUMN prepay.period_charge.account_id IS 'Account charged or credited.';
COMMENT ON COLUMN prepay.period_charge.period_start IS 'First local day of the period (the due date of a one-off fee).';
COMMENT ON COLUMN prepay.period_charge.period_end IS 'Day after the period''s last local day.';
COMMENT ON COLUMN prepay.period_charge.amount IS 'Signed like the ledger: negative charges the tenant, positive credits.';
COMMENT ON COLUMN prepay.period_charge.settle IS 'deduct: posted to the wallet (entry_id); bill: due on the period bill; none: not charged (the share of an account closed before the apportionment ran).';
COMMENT ON COLUMN prepay.period_charge.entry_id IS 'The ledger entry that posted it (deduct; NULL when the amount is zero).';
COMMENT ON COLUMN prepay.period_charge.bill_id IS 'The bill it is a payable line of (settle = bill).';
COMMENT ON COLUMN prepay.period_charge.inputs IS 'The figures the amount was computed from (price, basis, days, shares, ...).';
COMMENT ON COLUMN prepay.period_charge.created_at IS 'When it was charged.';

CREATE FUNCTION prepay._ledger_kind(p_source text)
RETURNS prepay.ledger_kind LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE p_source WHEN 'basic_settlement' THEN 'basic_charge' ELSE p_source END::prepay.ledger_kind
$$;
COMMENT ON FUNCTION prepay._ledger_kind(text) IS 'Internal: the ledger kind a periodic charge is posted as.';

CREATE FUNCTION prepay._charge(p_site_id integer, p_source text, p_rule_id bigint, p_account_id bigint,
                               p_period_start date, p_period_end date, p_amount numeric, p_settle text,
                               p_inputs jsonb, p_reason text)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    settle text := p_settle;
    entry bigint;
    pot numeric;
BEGIN
    a := prepay._lock_account(p_site_id, p_account_id, false);
    IF a.closed_at IS NOT NULL AND p_source NOT IN ('fee_credit', 'allowance_expiry') THEN
        -- a closed account is charged nothing more; only close_account's own
        -- settlement (fee credits, the allowance forfeited) is posted to it
        settle := 'none';
    ELSIF a.mode = 'postpaid' AND settle = 'bill' THEN
        settle := 'deduct';          -- a postpaid wallet is the running account: its bill asks for it
    END IF;
    INSERT INTO prepay.period_charge (site_id, source, rule_id, account_id, period_start, period_end,
                                      amount, settle, inputs)
    VALUES (p_site_id, p_source, p_rule_id, p_account_id, p_period_start, p_period_end, p_amount, settle, p_inputs)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;                -- already charged for this period
    END IF;
    IF settle <> 'deduct' OR p_amount = 0 THEN
        RETURN true;
    END IF;
    IF p_source IN ('allowance', 'allowance_expiry') THEN
        pot := prepay.allowance_left(p_site_id, p_account_id);
    END IF;
    entry := prepay._post_entry(p_site_id, p_account_id, prepay._ledger_kind(p_source), p_amount,
                                NULL, NULL, p_reason, NULL, NULL, NULL);
    UPDATE prepay.period_charge SET entry_id = entry
     WHERE site_id = p_site_id AND source = p_source AND rule_id = p_rule_id
       AND account_id = p_account_id AND period_start = p_period_start;
    IF p_source IN ('allowance', 'allowance_expiry') THEN
        SELECT * INTO a FROM prepay.account WHERE site_id = p_site_id AND account_id = p_account_id;
        UPDATE prepay.account
           SET allowance_left = CASE WHEN p_source = 'allowance' THEN least(pot + p_amount, greatest(a.balance, 0))
                                     ELSE greatest(pot + p_amount, 0) END,
               allowance_as_of = entry
         WHERE site_id = p_site_id AND account_id = p_account_id;
    END IF;
    RETURN true;
END $$;
COMMENT ON FUNCTION prepay._charge(integer, text, bigint, bigint, date, date, numeric, text, jsonb, text) IS
'Internal: record a periodic charge once per (source, rule, account, period) and post it to the wallet when it is deducted.  Postpaid accounts always have it posted (their bill asks for the wallet''s charges); closed accounts never (settle none), except for the settlement close_account makes as it closes them (fee_credit, allowance_expiry).  Returns false when it was already charged.';

-- ---------------------------------------------------------------------
-- allowances
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.allowance_left(p_site_id integer, p_account_id bigint)
RETURNS numeric LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT greatest(0.00, a.allowance_left + coalesce(
               (SELECT sum(l.amount) FROM prepay.ledger l
                 WHERE l.site_id = a.site_id AND l.account_id = a.account_id
                   AND l.entry_id > a.allowance_as_of AND l.amount < 0
                   AND (l.kind IN ('consumption', 'basic_charge', 'adjustment', 'fee', 'common_area', 'loss',
                                   'allowance_expiry')
                        OR (l.kind = 'reversal'
                            AND EXISTS (SELECT 1 FROM prepay.ledger r
                                         WHERE r.site_id = l.site_id AND r.entry_id = l.reverses_entry
                                           AND r.kind = 'allowance')))), 0))
      FROM prepay.account a
     WHERE a.site_id = p_site_id AND a.account_id = p_account_id
$$;
COMMENT ON FUNCTION prepay.allowance_left(integer, bigint) IS
'Unspent allowance in an account''s wallet: the allowance counted at allowance_as_of, less every charge posted since (charges spend allowance before paid money).  Refunds, payments and bill settlements do not spend it.  Entries of an account get their ids under the account lock, so "posted since" is exact.';

CREATE SEQUENCE prepay.allowance_rule_id_seq;
COMMENT ON SEQUENCE prepay.allowance_rule_id_seq IS 'Source of allowance rule ids.';

CREATE TABLE prepay.allowance_rule (
    site_id     integer NOT NULL REFERENCES prepay.site,
    rule_id     bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.allowance_rule_id_seq'),
    name        text NOT NULL,
    amount      numeric(14,2) NOT NULL CHECK (amount > 0),
    period      text NOT NULL DEFAULT 'month' CHECK (period IN ('month', 'quarter', 'year')),
    group_id    bigint,
    expires     boolean NOT NULL DEFAULT true,
    active_from date NOT NULL,
    active_to   date,
    PRIMARY KEY (site_id, rule_id),
    UNIQUE (site_id, name),
    FOREIGN KEY (site_id, group_id) REFERENCES prepay.account_group,
    CHECK (active_to IS NULL OR active_to >= active_from)
);
COMMENT ON TABLE prepay.allowance_rule IS 'A periodic free credit (student subsidy, basic free amount) for the accounts of a group: credited to the wallet as an allowance entry at the start of each period, spent before paid money, never refunded, and optionally expiring at the end of its period.';
COMMENT ON COLUMN prepay.allowance_rule.site_id IS 'Site of the rule.';
COMMENT ON COLUMN prepay.allowance_rule.rule_id IS 'Rule id.';
COMMENT ON COLUMN prepay.allowance_rule.name IS 'Unique name within the site; shown on statements.';
COMMENT ON COLUMN prepay.allowance_rule.amount IS 'Amount credited per full period (pro-rated for a tenant who moves in during the period).';
COMMENT ON COLUMN prepay.allowance_rule.period IS 'month, quarter or year.';
COMMENT ON COLUMN prepay.allowance_rule.group_id IS 'Accounts that receive it; NULL for every account of the site.';
COMMENT ON COLUMN prepay.allowance_rule.expires IS 'Whether what is left of a period''s allowance expires when the period ends.';
COMMENT ON COLUMN prepay.allowance_rule.active_from IS 'First day the rule credits.';
COMMENT ON COLUMN prepay.allowance_rule.active_to IS 'Last day the rule credits; NULL while in force.';

CREATE FUNCTION prepay.grant_allowances(p_site_id integer, p_day date)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r prepay.allowance_rule;
    a prepay.account;
    p record;
    days integer;
    amount numeric;
    n integer := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    FOR r IN SELECT * FROM prepay.allowance_rule
              WHERE site_id = p_site_id AND active_from <= p_day AND (active_to IS NULL OR p_day <= active_to)
              ORDER BY rule_id LOOP
        p := prepay._period(r.period, p_day);
        FOR a IN SELECT * FROM prepay._members(p_site_id, r.group_id) m
                  WHERE m.closed_at IS NULL AND prepay._local_day(p_site_id, m.opened_at) <= p_day LOOP
            days := prepay._days_open(p_site_id, a, p.period_start, p.period_end);
            amount := prepay._pro_rata(r.amount, days, p.period_end - p.period_start);
            IF prepay._charge(p_site_id, 'allowance', r.rule_id, a.account_id, p.period_start, p.period_end,
                              amount, 'deduct',
                              pg_catalog.jsonb_build_object('amount', r.amount, 'days', days,
                                                            'days_in_period', p.period_end - p.period_start),
                              pg_catalog.format('%s %s..%s', r.name, p.period_start, p.period_end - 1)) THEN
                n := n + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.grant_allowances(integer, date) IS
'Credit every allowance due on a local day: for each rule in force, each open member account gets the allowance of the period containing the day once (pro-rated by the days it is open in the period).  Idempotent per (rule, account, period).  Returns how many were credited.';

CREATE FUNCTION prepay.expire_allowances(p_site_id integer, p_day date)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g prepay.period_charge;
    later numeric;
    expiring numeric;
    n integer := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    FOR g IN SELECT c.* FROM prepay.period_charge c
               JOIN prepay.allowance_rule r ON r.site_id = c.site_id AND r.rule_id = c.rule_id
               JOIN prepay.account a ON a.site_id = c.site_id AND a.account_id = c.account_id
              WHERE c.site_id = p_site_id AND c.source = 'allowance' AND r.expires
                AND c.period_end <= p_day AND a.closed_at IS NULL AND c.entry_id IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM prepay.period_charge x
                                 WHERE x.site_id = c.site_id AND x.source = 'allowance_expiry'
                                   AND x.rule_id = c.rule_id AND x.account_id = c.account_id
                                   AND x.period_start = c.period_start)
              ORDER BY c.account_id, c.period_start, c.rule_id LOOP
        PERFORM prepay._lock_account(p_site_id, g.account_id);
        -- spending takes the oldest allowance first: later grants are still whole
        SELECT coalesce(sum(c.amount), 0) INTO later FROM prepay.period_charge c
         WHERE c.site_id = p_site_id AND c.account_id = g.account_id AND c.source = 'allowance'
           AND c.period_start > g.period_start;
        expiring := least(g.amount, greatest(0, prepay.allowance_left(p_site_id, g.account_id) - later));
        IF prepay._charge(p_site_id, 'allowance_expiry', g.rule_id, g.account_id, g.period_start, g.period_end,
                          -expiring, 'deduct',
                          pg_catalog.jsonb_build_object('granted', g.amount, 'left', expiring),
                          pg_catalog.format('allowance of %s..%s expired', g.period_start, g.period_end - 1)) THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.expire_allowances(integer, date) IS
'Expire what is left of every expiring allowance whose period ended on or before a local day: posts an allowance_expiry entry of the unspent part (possibly zero, recorded all the same).  Allowance is spent oldest first.  Idempotent per (rule, account, period).';

-- ---------------------------------------------------------------------
-- fees
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.charge_item_id_seq;
COMMENT ON SEQUENCE prepay.charge_item_id_seq IS 'Source of charge item ids.';

CREATE TABLE prepay.charge_item (
    site_id     integer NOT NULL REFERENCES prepay.site,
    item_id     bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.charge_item_id_seq'),
    name        text NOT NULL,
    basis       text NOT NULL DEFAULT 'fixed' CHECK (basis IN ('fixed', 'per_m2')),
    price       numeric(14,6) NOT NULL CHECK (price >= 0),
    recurrence  text NOT NULL DEFAULT 'monthly' CHECK (recurrence IN ('once', 'monthly', 'quarterly', 'yearly')),
    charge_day  smallint NOT NULL DEFAULT 1 CHECK (charge_day BETWEEN 1 AND 28),
    due_on      date,
    settle      text NOT NULL DEFAULT 'bill' CHECK (settle IN ('deduct', 'bill')),
    group_id    bigint,
    active_from date NOT NULL,
    active_to   date,
    PRIMARY KEY (site_id, item_id),
    UNIQUE (site_id, name),
    FOREIGN KEY (site_id, group_id) REFERENCES prepay.account_group,
    CHECK ((recurrence = 'once') = (due_on IS NOT NULL)),
    CHECK (active_to IS NULL OR active_to >= active_from)
);
COMMENT ON TABLE prepay.charge_item IS 'A fee: rent, property fee, service fee or any named charge; a fixed amount or a price per m2 of the account''s floor area; one-off or periodic; deducted from the wallet (part of the alarm ladder and the trip, only where the site allows: site.fees_may_cut) or settled by bill.';
COMMENT ON COLUMN prepay.charge_item.site_id IS 'Site of the item.';
COMMENT ON COLUMN prepay.charge_item.item_id IS 'Item id.';
COMMENT ON COLUMN prepay.charge_item.name IS 'Unique name within the site; shown on statements and bills.';
COMMENT ON COLUMN prepay.charge_item.basis IS 'fixed: price is the amount per period; per_m2: price per m2 of account.floor_area per period.';
COMMENT ON COLUMN prepay.charge_item.price IS 'Amount (fixed, in cents precision) or price per m2 per full period.';
COMMENT ON COLUMN prepay.charge_item.recurrence IS 'once (on due_on), monthly, quarterly or yearly (calendar periods, site local time).';
COMMENT ON COLUMN prepay.charge_item.charge_day IS 'Day of the period (of its first month) from which a periodic fee is charged, in advance, for the whole period.';
COMMENT ON COLUMN prepay.charge_item.due_on IS 'The day a one-off fee is charged.';
COMMENT ON COLUMN prepay.charge_item.settle IS 'deduct from the wallet, or bill: a payable line of the period bill.';
COMMENT ON COLUMN prepay.charge_item.group_id IS 'Accounts charged; NULL for every account of the site.';
COMMENT ON COLUMN prepay.charge_item.active_from IS 'First day the item is charged.';
COMMENT ON COLUMN prepay.charge_item.active_to IS 'Last day the item is charged; NULL while in force.';

CREATE FUNCTION prepay._charge_item_check() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.settle = 'deduct' AND NOT (SELECT s.fees_may_cut FROM prepay.site s WHERE s.site_id = NEW.site_id) THEN
        PERFORM prepay._raise('PY020', 'this site does not deduct fees from wallets',
            pg_catalog.format('Charge item %L would be deducted, and site %s does not allow fees to cut supply.',
                              NEW.name, NEW.site_id),
            'Settle the fee by bill (settle = ''bill''), or set prepay.site.fees_may_cut = true.');
    END IF;
    IF NEW.basis = 'fixed' AND NEW.price <> pg_catalog.round(NEW.price, 2) THEN
        PERFORM prepay._raise('PY020', 'a fixed fee is an amount in cents',
            pg_catalog.format('Charge item %L has price %s.', NEW.name, NEW.price), 'Use at most two decimals.');
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION prepay._charge_item_check() IS 'Internal: refuse (PY020) a deducted fee at a site that does not let fees cut supply, and a fixed fee with fractions of a cent.';
CREATE TRIGGER charge_item_check BEFORE INSERT OR UPDATE ON prepay.charge_item
    FOR EACH ROW EXECUTE FUNCTION prepay._charge_item_check();

CREATE FUNCTION prepay._fee_period(p_item prepay.charge_item, p_day date, OUT period_start date, OUT period_end date)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_item.recurrence = 'once' THEN
        period_start := p_item.due_on;
        period_end := p_item.due_on + 1;
    ELSE
        SELECT * INTO period_start, period_end
          FROM prepay._period(CASE p_item.recurrence WHEN 'monthly' THEN 'month' WHEN 'quarterly' THEN 'quarter'
                                                     ELSE 'year' END, p_day);
    END IF;
END $$;
COMMENT ON FUNCTION prepay._fee_period(prepay.charge_item, date) IS 'Internal: the period of a fee that a day falls in (a one-off fee''s period is its due day).';

CREATE FUNCTION prepay._fee_amount(p_site_id integer, p_item prepay.charge_item, p_account prepay.account,
                                   p_period_start date, p_period_end date, p_until date,
                                   OUT amount numeric, OUT inputs jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    basis numeric := CASE p_item.basis WHEN 'fixed' THEN 1 ELSE coalesce(p_account.floor_area, 0) END;
    full_amount numeric := p_item.price * basis;
    days integer := p_period_end - p_period_start;
BEGIN
    IF p_item.recurrence <> 'once' THEN
        days := greatest(0, least(p_until, p_period_end)
                            - greatest(p_period_start, prepay._local_day(p_site_id, p_account.opened_at)));
    END IF;
    amount := prepay._pro_rata(full_amount, days, p_period_end - p_period_start);
    inputs := pg_catalog.jsonb_build_object('basis', p_item.basis, 'price', p_item.price,
                                            'floor_area', p_account.floor_area, 'days', days,
                                            'days_in_period', p_period_end - p_period_start);
END $$;
COMMENT ON FUNCTION prepay._fee_amount(integer, prepay.charge_item, prepay.account, date, date, date) IS
'Internal: a fee for the days from the later of the period start and the move-in day up to p_until (exclusive), pro-rated and rounded down to the cent, with its inputs.';

CREATE FUNCTION prepay.charge_fees(p_site_id integer, p_day date)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    it prepay.charge_item;
    a prepay.account;
    p record;
    f record;
    n integer := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    FOR it IN SELECT * FROM prepay.charge_item
               WHERE site_id = p_site_id AND active_from <= p_day AND (active_to IS NULL OR p_day <= active_to)
               ORDER BY item_id LOOP
        p := prepay._fee_period(it, p_day);
        CONTINUE WHEN p_day < p.period_start + (CASE WHEN it.recurrence = 'once' THEN 0 ELSE it.charge_day - 1 END);
        FOR a IN SELECT * FROM prepay._members(p_site_id, it.group_id) m
                  WHERE m.closed_at IS NULL AND prepay._local_day(p_site_id, m.opened_at) <= p_day LOOP
            f := prepay._fee_amount(p_site_id, it, a, p.period_start, p.period_end, p.period_end);
            IF prepay._charge(p_site_id, 'fee', it.item_id, a.account_id, p.period_start, p.period_end,
                              -f.amount, it.settle, f.inputs,
                              pg_catalog.format('%s %s..%s', it.name, p.period_start, p.period_end - 1)) THEN
                n := n + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.charge_fees(integer, date) IS
'Charge every fee due on a local day: a periodic fee from its charge day on, in advance for the whole period (pro-rated from the move-in day for a tenant who moves in during the period: the daily run charges them on the next run); a one-off fee from its due day on.  Idempotent per (item, account, period).  Returns how many were charged.';

CREATE FUNCTION prepay._settle_at_close(p_site_id integer, p_account_id bigint, p_moved_out_on date)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    today date := p_moved_out_on;
    c record;
    f record;
    pot numeric;
BEGIN
    -- caller holds the account lock
    SELECT * INTO a FROM prepay.account WHERE site_id = p_site_id AND account_id = p_account_id;
    FOR c IN SELECT pc.*, (it::prepay.charge_item) AS item
               FROM prepay.period_charge pc
               JOIN prepay.charge_item it ON it.site_id = pc.site_id AND it.item_id = pc.rule_id
              WHERE pc.site_id = p_site_id AND pc.account_id = p_account_id AND pc.source = 'fee'
                AND pc.period_end > today AND it.recurrence <> 'once' AND pc.amount < 0
              ORDER BY pc.rule_id, pc.period_start LOOP
        f := prepay._fee_amount(p_site_id, c.item, a, c.period_start, c.period_end, today);
        IF -c.amount - f.amount > 0 THEN
            PERFORM prepay._charge(p_site_id, 'fee_credit', c.rule_id, p_account_id, c.period_start, c.period_end,
                                   -c.amount - f.amount, c.settle,
                                   f.inputs || pg_catalog.jsonb_build_object('charged', -c.amount, 'moved_out', today),
                                   pg_catalog.format('%s: %s days not used', (c.item).name,
                                                     c.period_end - greatest(today, c.period_start)));
        END IF;
    END LOOP;
    pot := prepay.allowance_left(p_site_id, p_account_id);
    IF pot > 0 THEN
        PERFORM prepay._charge(p_site_id, 'allowance_expiry', 0, p_account_id, today, today + 1, -pot, 'deduct',
                               pg_catalog.jsonb_build_object('left', pot, 'moved_out', today),
                               'allowance forfeited at move-out');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._settle_at_close(integer, bigint, date) IS
'Internal, for close_account: credit the days from the move-out day to the end of each period a fee was charged in advance for (fee_credit), and expire the unspent allowance (it is never refunded).';

-- ---------------------------------------------------------------------
-- consumption over a period
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.meter_register_at(p_site_id integer, p_meter_id bigint, p_at timestamptz)
RETURNS numeric LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.energy * m.multiplier
      FROM prepay.reading r
      JOIN prepay.meter m ON m.site_id = r.site_id AND m.meter_id = r.meter_id
     WHERE r.site_id = p_site_id AND r.meter_id = p_meter_id AND r.read_at <= p_at
       AND r.quarantine_reason IS NULL AND r.energy IS NOT NULL
     ORDER BY r.read_at DESC LIMIT 1
$$;
COMMENT ON FUNCTION prepay.meter_register_at(integer, bigint, timestamptz) IS
'A meter''s register at an instant, times its multiplier: that of its last accepted reading at or before the instant; NULL when it has none.';

CREATE FUNCTION prepay.meter_consumption(p_site_id integer, p_meter_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS numeric LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    at_from numeric := prepay.meter_register_at(p_site_id, p_meter_id, p_from);
    at_to numeric := prepay.meter_register_at(p_site_id, p_meter_id, p_to);
BEGIN
    IF at_from IS NULL OR at_to IS NULL THEN
        PERFORM prepay._raise('PY024', 'meter has no reading at a period boundary',
            pg_catalog.format('Meter %s of site %s has no accepted reading at or before %s.', p_meter_id, p_site_id,
                              CASE WHEN at_from IS NULL THEN p_from ELSE p_to END),
            'Record the register at the boundary (prepay.record_master_reading for a hand-read meter).');
    END IF;
    RETURN at_to - at_from;
END $$;
COMMENT ON FUNCTION prepay.meter_consumption(integer, bigint, timestamptz, timestamptz) IS
'A meter''s consumption over [from, to]: its register at to less its register at from (prepay.meter_register_at), after the multiplier.  PY024 when a boundary has no reading.';

CREATE FUNCTION prepay.account_consumption(p_site_id integer, p_account_id bigint, p_from timestamptz, p_to timestamptz)
RETURNS numeric LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(sum(l.energy), 0) FROM prepay.ledger l
     WHERE l.site_id = p_site_id AND l.account_id = p_account_id AND l.kind = 'consumption'
       AND l.read_to > p_from AND l.read_to <= p_to
$$;
COMMENT ON FUNCTION prepay.account_consumption(integer, bigint, timestamptz, timestamptz) IS
'Energy charged to an account for readings taken in (from, to], after multipliers: the same measure as prepay.meter_consumption, over every meter the account had.';

CREATE FUNCTION prepay.record_master_reading(p_site_id integer, p_meter_id bigint, p_at timestamptz, p_energy numeric)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m prepay.meter;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    SELECT * INTO m FROM prepay.meter WHERE site_id = p_site_id AND meter_id = p_meter_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY003', 'unknown meter',
            pg_catalog.format('Site %s has no meter %s.', p_site_id, p_meter_id), 'prepay.meter lists the meters.');
    END IF;
    IF m.account_id IS NOT NULL THEN
        PERFORM prepay._raise('PY024', 'a master meter belongs to no account',
            pg_catalog.format('Meter %s is attached to account %s.', p_meter_id, m.account_id),
            'Record master readings on the utility-side or common-area meter, which no tenant pays directly.');
    END IF;
    IF p_at IS NULL OR p_energy IS NULL THEN
        PERFORM prepay._raise('22004', 'a master reading needs a time and a register value', NULL, NULL);
    END IF;
    PERFORM prepay._record_reading(p_site_id, p_meter_id, p_at, p_energy, 'master');
END $$;
COMMENT ON FUNCTION prepay.record_master_reading(integer, bigint, timestamptz, numeric) IS
'Record a register value read by hand on a master meter (utility-side or common-area; a meter with no account): checked like any reading (PY011 with the reason when refused).  Record one at each period boundary.';

-- ---------------------------------------------------------------------
-- apportionment: common area and line loss
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.apportion_rule_id_seq;
COMMENT ON SEQUENCE prepay.apportion_rule_id_seq IS 'Source of apportionment rule ids.';

CREATE TABLE prepay.apportion_rule (
    site_id           integer NOT NULL REFERENCES prepay.site,
    rule_id           bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.apportion_rule_id_seq'),
    name              text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('common_area', 'loss')),
    method            text NOT NULL CHECK (method IN ('consumption', 'area', 'equal', 'ratio')),
    group_id          bigint NOT NULL,
    master_meters     bigint[] NOT NULL CHECK (pg_catalog.cardinality(master_meters) > 0),
    downstream_meters bigint[] NOT NULL DEFAULT '{}',
    price             numeric(12,6) NOT NULL CHECK (price >= 0),
    period            text NOT NULL DEFAULT 'month' CHECK (period IN ('month', 'quarter', 'year')),
    settle            text NOT NULL DEFAULT 'bill' CHECK (settle IN ('deduct', 'bill')),
    active_from       date NOT NULL,
    active_to         date,
    PRIMARY KEY (site_id, rule_id),
    UNIQUE (site_id, name),
    FOREIGN KEY (site_id, group_id) REFERENCES prepay.account_group
);
COMMENT ON TABLE prepay.apportion_rule IS 'How a shared energy is split among a group of accounts each period: common-area energy (the consumption of master_meters) or line and transformer loss (the utility-side master_meters less the group''s own consumption and downstream_meters), priced at price per unit and shared by consumption, floor area, equally or by custom ratios.';
COMMENT ON COLUMN prepay.apportion_rule.site_id IS 'Site of the rule.';
COMMENT ON COLUMN prepay.apportion_rule.rule_id IS 'Rule id.';
COMMENT ON COLUMN prepay.apportion_rule.name IS 'Unique name within the site; shown on statements and bills.';
COMMENT ON COLUMN prepay.apportion_rule.kind IS 'common_area or loss.';
COMMENT ON COLUMN prepay.apportion_rule.method IS 'consumption (each member''s energy in the period), area (floor area x days open), equal (days open) or ratio (account_group_member.ratio x days open).';
COMMENT ON COLUMN prepay.apportion_rule.group_id IS 'The accounts sharing it.';
COMMENT ON COLUMN prepay.apportion_rule.master_meters IS 'Meters (with no account) whose consumption is shared (common area) or that measure the supply (loss).';
COMMENT ON COLUMN prepay.apportion_rule.downstream_meters IS 'For loss: meters with no account fed by the supply besides the members'' own (common-area meters).';
COMMENT ON COLUMN prepay.apportion_rule.price IS 'Price per kWh or m3 of the shared energy.';
COMMENT ON COLUMN prepay.apportion_rule.period IS 'month, quarter or year.';
COMMENT ON COLUMN prepay.apportion_rule.settle IS 'deduct from the wallets, or bill.';
COMMENT ON COLUMN prepay.apportion_rule.active_from IS 'The daily run apportions the periods that start on or after this day (record the master meters'' readings from then on).';
COMMENT ON COLUMN prepay.apportion_rule.active_to IS 'The daily run apportions the periods that start on or before this day; NULL while in force.';

CREATE TABLE prepay.apportionment (
    site_id           integer NOT NULL,
    rule_id           bigint NOT NULL,
    period_start      date NOT NULL,
    period_end        date NOT NULL,
    kind              text NOT NULL,
    method            text NOT NULL,
    master_energy     numeric(15,3) NOT NULL,
    downstream_energy numeric(15,3),
    shared_energy     numeric(15,3) NOT NULL,
    loss_pct          numeric(9,3),
    price             numeric(12,6) NOT NULL,
    total_amount      numeric(14,2) NOT NULL,
    allocated         numeric(14,2) NOT NULL,
    unallocated       numeric(14,2) NOT NULL,
    total_weight      numeric NOT NULL,
    note              text,
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (site_id, rule_id, period_start),
    FOREIGN KEY (site_id, rule_id) REFERENCES prepay.apportion_rule
);
COMMENT ON TABLE prepay.apportionment IS 'One row per rule and period, written once: the figures an apportionment was computed from and its result.  The shares are the period_charge rows with the same source, rule and period.';
COMMENT ON COLUMN prepay.apportionment.site_id IS 'Site.';
COMMENT ON COLUMN prepay.apportionment.rule_id IS 'Apportionment rule.';
COMMENT ON COLUMN prepay.apportionment.period_start IS 'First local day of the period.';
COMMENT ON COLUMN prepay.apportionment.period_end IS 'Day after the period''s last local day.';
COMMENT ON COLUMN prepay.apportionment.kind IS 'common_area or loss (copied from the rule).';
COMMENT ON COLUMN prepay.apportionment.method IS 'How it was shared (copied from the rule).';
COMMENT ON COLUMN prepay.apportionment.master_energy IS 'Consumption of the master meters over the period.';
COMMENT ON COLUMN prepay.apportionment.downstream_energy IS 'For loss: the members'' consumption plus the downstream meters''.';
COMMENT ON COLUMN prepay.apportionment.shared_energy IS 'Energy shared: the master energy (common area) or the loss; zero when the loss is negative.';
COMMENT ON COLUMN prepay.apportionment.loss_pct IS 'For loss: loss in percent of the master energy (negative when the tenants'' meters add up to more than the master).';
COMMENT ON COLUMN prepay.apportionment.price IS 'Price per unit used.';
COMMENT ON COLUMN prepay.apportionment.total_amount IS 'shared_energy x price, rounded down to the cent.';
COMMENT ON COLUMN prepay.apportionment.allocated IS 'Sum of the shares charged.';
COMMENT ON COLUMN prepay.apportionment.unallocated IS 'What nobody was charged: shares of accounts closed before the run, or all of it when there was nothing to share on.';
COMMENT ON COLUMN prepay.apportionment.total_weight IS 'Sum of the members'' weights (kWh, m2 x days, days or ratio x days).';
COMMENT ON COLUMN prepay.apportionment.note IS 'Why nothing or not everything was charged, if so.';
COMMENT ON COLUMN prepay.apportionment.created_at IS 'When it ran.';

CREATE VIEW prepay.loss_period AS
SELECT site_id, rule_id, period_start, period_end, master_energy, downstream_energy,
       master_energy - downstream_energy AS loss_energy, loss_pct
  FROM prepay.apportionment
 WHERE kind = 'loss';
COMMENT ON VIEW prepay.loss_period IS 'Line and transformer loss per rule and period.';
COMMENT ON COLUMN prepay.loss_period.site_id IS 'Site.';
COMMENT ON COLUMN prepay.loss_period.rule_id IS 'Loss rule.';
COMMENT ON COLUMN prepay.loss_period.period_start IS 'First local day of the period.';
COMMENT ON COLUMN prepay.loss_period.period_end IS 'Day after the period''s last local day.';
COMMENT ON COLUMN prepay.loss_period.master_energy IS 'Energy the utility-side master meters measured.';
COMMENT ON COLUMN prepay.loss_period.downstream_energy IS 'Energy the tenants'' and downstream meters measured.';
COMMENT ON COLUMN prepay.loss_period.loss_energy IS 'master_energy - downstream_energy (negative is a sign of a metering fault).';
COMMENT ON COLUMN prepay.loss_period.loss_pct IS 'Loss in percent of the master energy.';

CREATE FUNCTION prepay._allocate(p_total numeric, p_weights numeric[], p_keys bigint[])
RETURNS TABLE (key bigint, amount numeric) LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH w AS (
        SELECT k, wt, p_total * 100 * wt / sum(wt) OVER () AS exact_cents
          FROM unnest(p_keys, p_weights) AS u(k, wt)
    ), f AS (
        SELECT k, floor(exact_cents) AS base,
               row_number() OVER (ORDER BY exact_cents - floor(exact_cents) DESC, k) AS rank,
               p_total * 100 - sum(floor(exact_cents)) OVER () AS spare
          FROM w
    )
    SELECT k, ((base + CASE WHEN rank <= spare THEN 1 ELSE 0 END) / 100)::numeric(14,2) FROM f ORDER BY k
$$;
COMMENT ON FUNCTION prepay._allocate(numeric, numeric[], bigint[]) IS
'Internal: split an amount in cents by weights, largest remainder first: each key gets its share rounded down to the cent, and the cents left over go one each to the largest remainders (ties to the smaller key), so the shares add up to the amount exactly.';

CREATE FUNCTION prepay._alarm(p_site_id integer, p_kind text, p_meter_id bigint, p_detail text)
RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO prepay.alarm (site_id, kind, meter_id, detail)
    VALUES (p_site_id, p_kind, p_meter_id, p_detail)
    ON CONFLICT DO NOTHING
$$;
COMMENT ON FUNCTION prepay._alarm(integer, text, bigint, text) IS 'Internal: raise an alarm on a meter unless the same kind is already active there.';

CREATE FUNCTION prepay.apportion(p_site_id integer, p_rule_id bigint, p_period_start date)
RETURNS prepay.apportionment LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r prepay.apportion_rule;
    s prepay.site;
    p record;
    h prepay.apportionment;
    t_from timestamptz;
    t_to timestamptz;
    members prepay.account[];
    keys bigint[];
    weights numeric[];
    energies numeric[];
    a prepay.account;
    i integer;
    share record;
    member_energy numeric := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    SELECT * INTO r FROM prepay.apportion_rule WHERE site_id = p_site_id AND rule_id = p_rule_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY021', 'unknown apportionment rule',
            pg_catalog.format('Site %s has no apportionment rule %s.', p_site_id, p_rule_id),
            'prepay.apportion_rule lists the rules.');
    END IF;
    SELECT * INTO s FROM prepay.site WHERE site_id = p_site_id;
    p := prepay._period(r.period, p_period_start);
    IF p.period_start <> p_period_start THEN
        PERFORM prepay._raise('PY025', 'not the first day of a period',
            pg_catalog.format('Rule %s is apportioned per %s; %s is not the first day of one.', r.name, r.period, p_period_start),
            pg_catalog.format('Pass %s.', p.period_start));
    END IF;
    IF p.period_end > prepay._local_day(p_site_id, pg_catalog.now()) THEN
        PERFORM prepay._raise('PY025', 'the period is not over',
            pg_catalog.format('The %s from %s ends on %s (local time).', r.period, p.period_start, p.period_end - 1),
            'Apportion a period once it has ended, when every reading of it is in.');
    END IF;
    SELECT * INTO h FROM prepay.apportionment
     WHERE site_id = p_site_id AND rule_id = p_rule_id AND period_start = p_period_start;
    IF FOUND THEN
        RETURN h;
    END IF;

    t_from := prepay._local_start(p_site_id, p.period_start);
    t_to := prepay._local_start(p_site_id, p.period_end);
    h.site_id := p_site_id; h.rule_id := p_rule_id; h.period_start := p.period_start; h.period_end := p.period_end;
    h.kind := r.kind; h.method := r.method; h.price := r.price;
    SELECT coalesce(sum(prepay.meter_consumption(p_site_id, m, t_from, t_to)), 0) INTO h.master_energy
      FROM unnest(r.master_meters) AS m;

    SELECT array_agg(m ORDER BY m.account_id) INTO members
      FROM prepay._members(p_site_id, r.group_id) m
     WHERE prepay._days_open(p_site_id, m, p.period_start, p.period_end) > 0
        OR prepay.account_consumption(p_site_id, m.account_id, t_from, t_to) > 0;
    members := coalesce(members, '{}');
    FOREACH a IN ARRAY members LOOP
        keys := keys || a.account_id;
        energies := energies || prepay.account_consumption(p_site_id, a.account_id, t_from, t_to);
        member_energy := member_energy + energies[pg_catalog.cardinality(energies)];
        weights := weights || CASE r.method
            WHEN 'consumption' THEN energies[pg_catalog.cardinality(energies)]
            WHEN 'area' THEN coalesce(a.floor_area, 0) * prepay._days_open(p_site_id, a, p.period_start, p.period_end)
            WHEN 'equal' THEN prepay._days_open(p_site_id, a, p.period_start, p.period_end)::numeric
            ELSE coalesce((SELECT g.ratio FROM prepay.account_group_member g
                            WHERE g.site_id = p_site_id AND g.group_id = r.group_id AND g.account_id = a.account_id), 0)
                 * prepay._days_open(p_site_id, a, p.period_start, p.period_end) END;
    END LOOP;

    IF r.kind = 'common_area' THEN
        h.shared_energy := h.master_energy;
    ELSE
        SELECT member_energy + coalesce(sum(prepay.meter_consumption(p_site_id, m, t_from, t_to)), 0)
          INTO h.downstream_energy FROM unnest(r.downstream_meters) AS m;
        h.shared_energy := greatest(h.master_energy - h.downstream_energy, 0);
        IF h.master_energy > 0 THEN
            h.loss_pct := round((h.master_energy - h.downstream_energy) * 100 / h.master_energy, 3);
        END IF;
        IF h.master_energy < h.downstream_energy THEN
            h.note := 'negative loss: the meters below the master add up to more than it; nothing charged';
            PERFORM prepay._alarm(p_site_id, 'negative_loss', r.master_meters[1],
                pg_catalog.format('%s %s..%s: master %s, meters below it %s', r.name, p.period_start,
                                  p.period_end - 1, h.master_energy, h.downstream_energy));
        ELSIF h.loss_pct > s.loss_alarm_pct THEN
            PERFORM prepay._alarm(p_site_id, 'high_loss', r.master_meters[1],
                pg_catalog.format('%s %s..%s: loss %s%% above the site''s %s%%', r.name, p.period_start,
                                  p.period_end - 1, h.loss_pct, s.loss_alarm_pct));
        END IF;
    END IF;

    h.total_amount := (pg_catalog.div(h.shared_energy * r.price * 100, 1) / 100)::numeric(14,2);
    h.total_weight := coalesce((SELECT sum(w) FROM unnest(weights) AS w), 0);
    h.created_at := pg_catalog.now();
    h.allocated := 0;
    h.unallocated := h.total_amount;
    IF h.total_amount > 0 AND h.total_weight = 0 THEN
        h.note := 'no member has anything to share on (no consumption, area, days or ratio); nothing charged';
    END IF;
    INSERT INTO prepay.apportionment VALUES (h.*) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN                -- a concurrent run got there first
        SELECT * INTO h FROM prepay.apportionment
         WHERE site_id = p_site_id AND rule_id = p_rule_id AND period_start = p_period_start;
        RETURN h;
    END IF;

    IF h.total_amount > 0 AND h.total_weight > 0 THEN
        FOR share IN SELECT * FROM prepay._allocate(h.total_amount, weights, keys) LOOP
            i := pg_catalog.array_position(keys, share.key);
            PERFORM prepay._charge(p_site_id, r.kind, r.rule_id, share.key, p.period_start, p.period_end,
                                   -share.amount, r.settle,
                                   pg_catalog.jsonb_build_object('method', r.method, 'weight', weights[i],
                                       'total_weight', h.total_weight, 'energy', energies[i],
                                       'shared_energy', h.shared_energy, 'price', r.price,
                                       'total_amount', h.total_amount),
                                   pg_catalog.format('%s %s..%s', r.name, p.period_start, p.period_end - 1));
        END LOOP;
    END IF;
    SELECT coalesce(-sum(c.amount) FILTER (WHERE c.settle <> 'none'), 0) INTO h.allocated
      FROM prepay.period_charge c
     WHERE c.site_id = p_site_id AND c.source = r.kind AND c.rule_id = r.rule_id AND c.period_start = p.period_start;
    h.unallocated := h.total_amount - h.allocated;
    IF h.unallocated > 0 AND h.note IS NULL THEN
        h.note := 'shares of accounts closed before the run are not charged';
    END IF;
    UPDATE prepay.apportionment SET allocated = h.allocated, unallocated = h.unallocated, note = h.note
     WHERE site_id = p_site_id AND rule_id = p_rule_id AND period_start = p_period_start;
    RETURN h;
END $$;
COMMENT ON FUNCTION prepay.apportion(integer, bigint, date) IS
'Apportion a rule''s shared energy for the period starting on a day, once: measures the master meters (and for loss the members and downstream meters), raises negative_loss or high_loss alarms, prices the shared energy, splits it by the rule''s method to the cent (largest remainder) and charges each member (period_charge, deducted or billed).  A second call returns the stored result.  PY025 for a period not over or a day that does not start one; PY024 when a master meter has no reading at a boundary.';

-- ---------------------------------------------------------------------
-- two-part tariffs: the month's settlement
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.settle_basic_charges(p_site_id integer, p_month date)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    month_start date := pg_catalog.date_trunc('month', p_month)::date;
    month_end date := (pg_catalog.date_trunc('month', p_month) + interval '1 month')::date;
    t_to timestamptz;
    ac prepay.account;
    terms record;
    days integer;
    target numeric;
    accrued numeric;
    settled boolean;
    n integer := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF month_end > prepay._local_day(p_site_id, pg_catalog.now()) THEN
        PERFORM prepay._raise('PY025', 'the month is not over',
            pg_catalog.format('%s ends on %s (local time).', month_start, month_end - 1),
            'Settle a month once it has ended.');
    END IF;
    t_to := prepay._local_start(p_site_id, month_end);
    FOR ac IN SELECT * FROM prepay.account a
               WHERE a.site_id = p_site_id AND a.closed_at IS NULL ORDER BY a.account_id LOOP
        -- the version in force on the month's last instant; the whole month's demand
        terms := prepay._basic_terms(ac, t_to - interval '1 microsecond',
                                     prepay._local_start(p_site_id, month_start), t_to);
        CONTINUE WHEN terms.basic IS NULL;
        days := prepay._days_open(p_site_id, ac, month_start, month_end);
        CONTINUE WHEN days = 0;
        target := prepay._pro_rata(terms.monthly, days, month_end - month_start);
        accrued := prepay._basic_accrued(p_site_id, ac.account_id, month_start);
        settled := prepay._charge(p_site_id, 'basic_settlement', 0, ac.account_id, month_start, month_end,
                          accrued - target, 'deduct',
                          pg_catalog.jsonb_build_object('by', terms.basic->>'by', 'basis', terms.basis,
                              'price', terms.basic->>'price', 'monthly', terms.monthly, 'days', days,
                              'days_in_month', month_end - month_start, 'target', target, 'accrued', accrued),
                          pg_catalog.format('basic charge %s: %s x %s per month for %s of %s days, %s accrued',
                                            to_char(month_start, 'YYYY-MM'), terms.basis, terms.basic->>'price', days,
                                            month_end - month_start, accrued));
        -- count postings, not settlement rows: a month whose accruals were
        -- complete records its zero settlement but posts nothing
        IF settled AND accrued <> target THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.settle_basic_charges(integer, date) IS
'Settle the month of every open account on a two-part tariff once the month is over: the monthly basic charge (capacity, or the month''s maximum demand, times the price) pro-rated by the days the account was open, less what the daily accruals posted; the difference (usually zero, a catch-up for missed days or a credit) is posted once per account and month, and a zero difference is recorded in period_charge all the same.  Returns how many ledger entries it posted: 0 when the accruals were complete, or when the month was settled already.';

-- ---------------------------------------------------------------------
-- bills and statements
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.bill_id_seq;
COMMENT ON SEQUENCE prepay.bill_id_seq IS 'Source of bill ids.';

CREATE TABLE prepay.bill (
    site_id         integer NOT NULL,
    bill_id         bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.bill_id_seq'),
    account_id      bigint NOT NULL,
    period_start    date NOT NULL,
    period_end      date NOT NULL,
    mode            prepay.account_mode NOT NULL,
    state           text NOT NULL DEFAULT 'draft' CHECK (state IN ('draft', 'confirmed', 'issued', 'paid')),
    wallet_balance  numeric(14,2) NOT NULL,
    energy          numeric(15,3) NOT NULL,
    charges         numeric(14,2) NOT NULL,
    amount_due      numeric(14,2) NOT NULL,
    paid            numeric(14,2) NOT NULL DEFAULT 0,
    drafted_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    confirmed_at    timestamptz,
    confirmed_by    text,
    issued_at       timestamptz,
    issued_by       text,
    due_on          date,
    PRIMARY KEY (site_id, bill_id),
    UNIQUE (site_id, account_id, period_start),
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account,
    CHECK (paid >= 0 AND paid <= greatest(amount_due, 0))
);
COMMENT ON TABLE prepay.bill IS 'An account''s bill for a period, one per account and period: drafted from the ledger and the periodic charges, confirmed by staff, then issued.  For a postpaid account it asks for the period''s charges; for a prepaid account it is a statement, payable only for fees and shares settled by bill.';
COMMENT ON COLUMN prepay.bill.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.bill.bill_id IS 'Bill id.';
COMMENT ON COLUMN prepay.bill.account_id IS 'Account billed.';
COMMENT ON COLUMN prepay.bill.period_start IS 'First local day billed.';
COMMENT ON COLUMN prepay.bill.period_end IS 'Day after the last local day billed.';
COMMENT ON COLUMN prepay.bill.mode IS 'The account''s mode when drafted.';
COMMENT ON COLUMN prepay.bill.state IS 'draft (redrafted on demand), confirmed (by staff), issued (payable), paid.';
COMMENT ON COLUMN prepay.bill.wallet_balance IS 'Wallet balance when the bill was drafted (for a prepaid statement; a postpaid account''s is minus what it owes).';
COMMENT ON COLUMN prepay.bill.energy IS 'Energy charged on the bill.';
COMMENT ON COLUMN prepay.bill.charges IS 'Sum of every line (what the period cost, allowances deducted).';
COMMENT ON COLUMN prepay.bill.amount_due IS 'Sum of the payable lines: everything for a postpaid account, the fees and shares settled by bill for a prepaid one.';
COMMENT ON COLUMN prepay.bill.paid IS 'How much of amount_due payments have settled.';
COMMENT ON COLUMN prepay.bill.drafted_at IS 'When it was (last) drafted.';
COMMENT ON COLUMN prepay.bill.confirmed_at IS 'When staff confirmed it.';
COMMENT ON COLUMN prepay.bill.confirmed_by IS 'Who confirmed it.';
COMMENT ON COLUMN prepay.bill.issued_at IS 'When it was issued.';
COMMENT ON COLUMN prepay.bill.issued_by IS 'Who issued it.';
COMMENT ON COLUMN prepay.bill.due_on IS 'Payment due date (issue day plus the site''s payment terms).';

CREATE TABLE prepay.bill_line (
    site_id     integer NOT NULL,
    bill_id     bigint NOT NULL,
    line_no     integer NOT NULL,
    kind        text NOT NULL,
    description text NOT NULL,
    quantity    numeric(15,3),
    unit_price  numeric(14,6),
    amount      numeric(14,2) NOT NULL,
    payable     boolean NOT NULL,
    PRIMARY KEY (site_id, bill_id, line_no),
    FOREIGN KEY (site_id, bill_id) REFERENCES prepay.bill ON DELETE CASCADE
);
COMMENT ON TABLE prepay.bill_line IS 'The lines of a bill: energy by TOU period and tier, rounding, basic charge, fees, common-area and loss shares, allowances, adjustments.';
COMMENT ON COLUMN prepay.bill_line.site_id IS 'Site.';
COMMENT ON COLUMN prepay.bill_line.bill_id IS 'Bill.';
COMMENT ON COLUMN prepay.bill_line.line_no IS 'Order of the line on the bill.';
COMMENT ON COLUMN prepay.bill_line.kind IS 'energy, rounding, basic_charge, fee, fee_credit, common_area, loss, allowance, allowance_expiry, adjustment or reversal.';
COMMENT ON COLUMN prepay.bill_line.description IS 'What the line is (TOU period and tier, fee or rule name).';
COMMENT ON COLUMN prepay.bill_line.quantity IS 'Energy (kWh or m3) for energy and share lines.';
COMMENT ON COLUMN prepay.bill_line.unit_price IS 'Price per unit for energy lines.';
COMMENT ON COLUMN prepay.bill_line.amount IS 'Amount; positive is owed by the tenant, negative is a credit.';
COMMENT ON COLUMN prepay.bill_line.payable IS 'Whether the line is asked for (part of amount_due) or shown for information (already paid from the prepaid wallet).';

CREATE TABLE prepay.bill_entry (
    site_id  integer NOT NULL,
    entry_id bigint NOT NULL,
    bill_id  bigint NOT NULL,
    PRIMARY KEY (site_id, entry_id),
    FOREIGN KEY (site_id, bill_id) REFERENCES prepay.bill ON DELETE CASCADE
);
CREATE INDEX bill_entry_bill ON prepay.bill_entry (site_id, bill_id);
COMMENT ON INDEX prepay.bill_entry_bill IS 'The ledger entries of a bill.';
COMMENT ON TABLE prepay.bill_entry IS 'Which bill each ledger charge is on: every charge is billed exactly once, on the first bill drafted after it.';
COMMENT ON COLUMN prepay.bill_entry.site_id IS 'Site.';
COMMENT ON COLUMN prepay.bill_entry.entry_id IS 'Ledger entry.';
COMMENT ON COLUMN prepay.bill_entry.bill_id IS 'Bill it is on.';

CREATE TABLE prepay.bill_payment (
    site_id  integer NOT NULL,
    entry_id bigint NOT NULL,
    bill_id  bigint NOT NULL,
    amount   numeric(14,2) NOT NULL CHECK (amount > 0),
    PRIMARY KEY (site_id, entry_id, bill_id),
    FOREIGN KEY (site_id, bill_id) REFERENCES prepay.bill
);
COMMENT ON TABLE prepay.bill_payment IS 'How a bill payment (ledger entry of kind bill_payment) was allocated to issued bills, oldest first.';
COMMENT ON COLUMN prepay.bill_payment.site_id IS 'Site.';
COMMENT ON COLUMN prepay.bill_payment.entry_id IS 'The bill_payment ledger entry.';
COMMENT ON COLUMN prepay.bill_payment.bill_id IS 'Bill settled.';
COMMENT ON COLUMN prepay.bill_payment.amount IS 'Part of the payment that went to this bill.';

CREATE FUNCTION prepay._service_at(p_site_id integer, p_entry prepay.ledger)
RETURNS timestamptz LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN p_entry.kind = 'consumption' THEN p_entry.read_to
        WHEN p_entry.channel = 'basic_charge' THEN
            prepay._local_start(p_site_id, pg_catalog.split_part(p_entry.external_ref, '/', 2)::date)
        ELSE coalesce((SELECT prepay._local_start(p_site_id, c.period_start) FROM prepay.period_charge c
                        WHERE c.site_id = p_site_id AND c.entry_id = p_entry.entry_id), p_entry.created_at)
    END
$$;
COMMENT ON FUNCTION prepay._service_at(integer, prepay.ledger) IS
'Internal: the instant a charge is for, which decides its bill: a consumption''s reading time, a basic charge''s day, a periodic charge''s period start, else when it was posted.';

CREATE FUNCTION prepay._is_charge(p_site_id integer, p_entry prepay.ledger)
RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_entry.kind NOT IN ('recharge', 'refund', 'closing_refund', 'bill_payment', 'bill_charge')
       AND (p_entry.kind <> 'reversal'
            OR (SELECT r.kind FROM prepay.ledger r WHERE r.site_id = p_site_id AND r.entry_id = p_entry.reverses_entry)
               NOT IN ('recharge', 'refund', 'bill_payment'))
$$;
COMMENT ON FUNCTION prepay._is_charge(integer, prepay.ledger) IS 'Internal: whether a ledger entry is something billed (a charge, a credit against charges or its reversal) rather than a payment.';

CREATE FUNCTION prepay._rule_name(p_charge prepay.period_charge)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN p_charge.source IN ('fee', 'fee_credit') THEN
            (SELECT it.name FROM prepay.charge_item it WHERE it.site_id = p_charge.site_id AND it.item_id = p_charge.rule_id)
        WHEN p_charge.source IN ('common_area', 'loss') THEN
            (SELECT r.name FROM prepay.apportion_rule r WHERE r.site_id = p_charge.site_id AND r.rule_id = p_charge.rule_id)
        WHEN p_charge.source IN ('allowance', 'allowance_expiry') THEN
            (SELECT r.name FROM prepay.allowance_rule r WHERE r.site_id = p_charge.site_id AND r.rule_id = p_charge.rule_id)
    END
$$;
COMMENT ON FUNCTION prepay._rule_name(prepay.period_charge) IS 'Internal: the name of the fee or rule a periodic charge comes from (NULL for basic settlements and move-out expiry).';

CREATE FUNCTION prepay._bill_lines(p_site_id integer, p_bill prepay.bill)
RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH entries AS (
        SELECT l.* FROM prepay.bill_entry be
          JOIN prepay.ledger l ON l.site_id = be.site_id AND l.entry_id = be.entry_id
         WHERE be.site_id = p_site_id AND be.bill_id = p_bill.bill_id
    ), energy AS (           -- by TOU period, tier and price, from the pricing records
        SELECT 'energy' AS kind,
               'energy' || coalesce(' ' || nullif(x.period, 'all'), '') || coalesce(' tier ' || nullif(x.tier, 1), '') AS description,
               sum(x.energy) AS quantity, x.unit_price, round(sum(x.amount), 2) AS amount
          FROM entries e CROSS JOIN LATERAL prepay._pieces(e.pieces) AS x
         WHERE e.kind = 'consumption'
         GROUP BY x.period, x.tier, x.unit_price
    ), rounding AS (         -- the ledger charged the cents carried between readings
        SELECT 'rounding' AS kind, 'rounding to the cent (carried between readings)' AS description,
               NULL::numeric AS quantity, NULL::numeric AS unit_price,
               (SELECT -sum(e.amount) FROM entries e WHERE e.kind = 'consumption')
               - (SELECT coalesce(sum(amount), 0) FROM energy) AS amount
    ), other AS (            -- every other charge, by kind and rule
        SELECT e.kind::text AS kind, coalesce(prepay._rule_name(c), e.kind::text) AS description,
               NULL::numeric AS quantity, NULL::numeric AS unit_price, -sum(e.amount) AS amount
          FROM entries e
          LEFT JOIN prepay.period_charge c ON c.site_id = e.site_id AND c.entry_id = e.entry_id
         WHERE e.kind <> 'consumption'
         GROUP BY e.kind, coalesce(prepay._rule_name(c), e.kind::text)
    ), billed AS (           -- fees and shares settled by bill
        SELECT c.source AS kind,
               coalesce(prepay._rule_name(c), c.source) || pg_catalog.format(' %s..%s', c.period_start, c.period_end - 1) AS description,
               NULL::numeric AS quantity, NULL::numeric AS unit_price, -c.amount AS amount
          FROM prepay.period_charge c
         WHERE c.site_id = p_site_id AND c.bill_id = p_bill.bill_id
    ), lines AS (
        SELECT *, p_bill.mode = 'postpaid' AS payable FROM energy
        UNION ALL SELECT *, p_bill.mode = 'postpaid' FROM rounding WHERE amount <> 0
        UNION ALL SELECT *, p_bill.mode = 'postpaid' FROM other
        UNION ALL SELECT *, true FROM billed
    )
    INSERT INTO prepay.bill_line (site_id, bill_id, line_no, kind, description, quantity, unit_price, amount, payable)
    SELECT p_site_id, p_bill.bill_id,
           row_number() OVER (ORDER BY payable, array_position(ARRAY['energy', 'rounding', 'basic_charge', 'fee',
               'fee_credit', 'common_area', 'loss', 'adjustment', 'reversal', 'allowance', 'allowance_expiry'], kind),
               description),
           kind, description, quantity, unit_price, amount, payable
      FROM lines
$$;
COMMENT ON FUNCTION prepay._bill_lines(integer, prepay.bill) IS 'Internal: write the lines of a bill from its ledger entries and its periodic charges settled by bill.';

CREATE FUNCTION prepay.draft_bill(p_site_id integer, p_account_id bigint, p_period_start date, p_period_end date)
RETURNS prepay.bill LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    b prepay.bill;
    t_to timestamptz := prepay._local_start(p_site_id, p_period_end);
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF p_period_start IS NULL OR p_period_end IS NULL OR p_period_end <= p_period_start
       OR NOT pg_catalog.isfinite(p_period_start) OR NOT pg_catalog.isfinite(p_period_end) THEN
        PERFORM prepay._raise('22023', 'a bill needs a period', pg_catalog.format('%s..%s', p_period_start, p_period_end),
                              'Pass the first day and the day after the last day.');
    END IF;
    a := prepay._lock_account(p_site_id, p_account_id, false);
    SELECT * INTO b FROM prepay.bill WHERE site_id = p_site_id AND account_id = p_account_id AND period_start = p_period_start;
    IF FOUND AND b.state <> 'draft' THEN
        RETURN b;                    -- confirmed bills are never redrafted
    END IF;
    IF FOUND THEN
        UPDATE prepay.period_charge SET bill_id = NULL WHERE site_id = p_site_id AND bill_id = b.bill_id;
        DELETE FROM prepay.bill WHERE site_id = p_site_id AND bill_id = b.bill_id;
    END IF;
    INSERT INTO prepay.bill (site_id, account_id, period_start, period_end, mode, wallet_balance,
                             energy, charges, amount_due)
    VALUES (p_site_id, p_account_id, p_period_start, p_period_end, a.mode, a.balance, 0, 0, 0)
    RETURNING * INTO b;
    INSERT INTO prepay.bill_entry (site_id, entry_id, bill_id)
    SELECT p_site_id, l.entry_id, b.bill_id FROM prepay.ledger l
     WHERE l.site_id = p_site_id AND l.account_id = p_account_id
       AND NOT EXISTS (SELECT 1 FROM prepay.bill_entry x WHERE x.site_id = p_site_id AND x.entry_id = l.entry_id)
       AND prepay._is_charge(p_site_id, l)
       AND CASE WHEN l.kind = 'consumption' THEN l.read_to <= t_to   -- consumption is over (read_from, read_to]
                ELSE prepay._service_at(p_site_id, l) < t_to END;
    UPDATE prepay.period_charge SET bill_id = b.bill_id
     WHERE site_id = p_site_id AND account_id = p_account_id AND settle = 'bill' AND bill_id IS NULL
       AND period_start < p_period_end;
    PERFORM prepay._bill_lines(p_site_id, b);
    UPDATE prepay.bill SET
        energy = coalesce((SELECT sum(l.energy) FROM prepay.bill_entry be
                             JOIN prepay.ledger l ON l.site_id = be.site_id AND l.entry_id = be.entry_id
                            WHERE be.site_id = p_site_id AND be.bill_id = b.bill_id AND l.kind = 'consumption'), 0),
        charges = coalesce((SELECT sum(amount) FROM prepay.bill_line WHERE site_id = p_site_id AND bill_id = b.bill_id), 0),
        amount_due = coalesce((SELECT sum(amount) FROM prepay.bill_line
                                WHERE site_id = p_site_id AND bill_id = b.bill_id AND payable), 0)
     WHERE site_id = p_site_id AND bill_id = b.bill_id
    RETURNING * INTO b;
    RETURN b;
END $$;
COMMENT ON FUNCTION prepay.draft_bill(integer, bigint, date, date) IS
'Draft (or redraft, while still a draft) an account''s bill for [start, end): every ledger charge not yet billed whose service time is before the end (so a late charge lands on the next bill, never on two), and the fees and shares settled by bill.  A confirmed or issued bill is returned unchanged.  22023 for a missing, empty or infinite period.';

CREATE FUNCTION prepay.draft_bills(p_site_id integer, p_period_start date, p_period_end date DEFAULT NULL)
RETURNS SETOF prepay.bill LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    period_end date := coalesce(p_period_end, (p_period_start + interval '1 month')::date);
    a prepay.account;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF p_period_start IS NULL OR NOT pg_catalog.isfinite(p_period_start) OR NOT pg_catalog.isfinite(period_end) THEN
        PERFORM prepay._raise('22023', 'a bill needs a period', pg_catalog.format('%s..%s', p_period_start, period_end),
                              'Pass the first day and the day after the last day.');
    END IF;
    FOR a IN SELECT * FROM prepay.account ac
              WHERE ac.site_id = p_site_id
                AND prepay._days_open(p_site_id, ac, p_period_start, period_end) > 0
              ORDER BY ac.account_id LOOP
        RETURN NEXT prepay.draft_bill(p_site_id, a.account_id, p_period_start, period_end);
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.draft_bills(integer, date, date) IS 'Draft the bill of every account open during [start, end) (end defaults to a month after start), postpaid and prepaid alike.';

CREATE FUNCTION prepay._bill_for_update(p_site_id integer, p_bill_id bigint)
RETURNS prepay.bill LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.bill;
BEGIN
    SELECT * INTO b FROM prepay.bill WHERE site_id = p_site_id AND bill_id = p_bill_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY021', 'unknown bill', pg_catalog.format('Site %s has no bill %s.', p_site_id, p_bill_id),
                              'prepay.bill lists the bills.');
    END IF;
    RETURN b;
END $$;
COMMENT ON FUNCTION prepay._bill_for_update(integer, bigint) IS 'Internal: lock a bill, PY021 if unknown.';

CREATE FUNCTION prepay.confirm_bill(p_site_id integer, p_bill_id bigint)
RETURNS prepay.bill LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.bill;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    b := prepay._bill_for_update(p_site_id, p_bill_id);
    IF b.state = 'confirmed' THEN
        RETURN b;
    END IF;
    IF b.state <> 'draft' THEN
        PERFORM prepay._raise('PY022', 'only a draft bill can be confirmed',
            pg_catalog.format('Bill %s is %s.', p_bill_id, b.state), NULL);
    END IF;
    UPDATE prepay.bill SET state = 'confirmed', confirmed_at = pg_catalog.now(), confirmed_by = SESSION_USER
     WHERE site_id = p_site_id AND bill_id = p_bill_id RETURNING * INTO b;
    RETURN b;
END $$;
COMMENT ON FUNCTION prepay.confirm_bill(integer, bigint) IS 'Staff confirm a drafted bill (recording who and when); it is never redrafted after.  Confirming twice is harmless; PY022 for an issued bill.';

CREATE FUNCTION prepay.issue_bill(p_site_id integer, p_bill_id bigint)
RETURNS prepay.bill LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.bill;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    b := prepay._bill_for_update(p_site_id, p_bill_id);
    IF b.state IN ('issued', 'paid') THEN
        RETURN b;
    END IF;
    IF b.state <> 'confirmed' THEN
        PERFORM prepay._raise('PY022', 'a bill must be confirmed before it is issued',
            pg_catalog.format('Bill %s is a draft.', p_bill_id), 'Call prepay.confirm_bill first.');
    END IF;
    UPDATE prepay.bill
       SET state = CASE WHEN amount_due <= 0 THEN 'paid' ELSE 'issued' END,
           issued_at = pg_catalog.now(), issued_by = SESSION_USER,
           due_on = prepay._local_day(p_site_id, pg_catalog.now())
                    + (SELECT s.payment_terms_days FROM prepay.site s WHERE s.site_id = p_site_id)
     WHERE site_id = p_site_id AND bill_id = p_bill_id RETURNING * INTO b;
    RETURN b;
END $$;
COMMENT ON FUNCTION prepay.issue_bill(integer, bigint) IS 'Issue a confirmed bill: it becomes payable, due after the site''s payment terms; a bill with nothing due is paid at once.  Issuing twice is harmless; PY022 for a draft.';

CREATE FUNCTION prepay.pay_bills(p_site_id integer, p_account_id bigint, p_amount numeric,
                                 p_channel text, p_external_ref text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    entry bigint;
    outstanding numeric;
    b prepay.bill;
    left_to_allocate numeric := p_amount;
    part numeric;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'money');
    PERFORM prepay._check_amount(p_amount, 'bill payment');
    PERFORM prepay._check_reference(p_channel, 'channel');
    PERFORM prepay._check_reference(p_external_ref, 'external reference');
    a := prepay._lock_account(p_site_id, p_account_id, false);
    entry := prepay._payment_replay(p_site_id, p_account_id, 'bill_payment', p_amount, p_channel, p_external_ref);
    IF entry IS NOT NULL THEN
        RETURN entry;
    END IF;
    SELECT coalesce(sum(amount_due - paid), 0) INTO outstanding FROM prepay.bill
     WHERE site_id = p_site_id AND account_id = p_account_id AND state = 'issued';
    IF p_amount > outstanding THEN
        PERFORM prepay._raise('PY023', 'payment exceeds the bills outstanding',
            pg_catalog.format('Account %s owes %s on issued bills; %s was paid.', p_account_id, outstanding, p_amount),
            'Pay at most what the issued bills ask for; put any extra on the wallet with prepay.recharge.');
    END IF;
    IF a.mode = 'postpaid' THEN
        -- the charges are in the wallet already: the payment brings it back up
        entry := prepay._post_entry(p_site_id, p_account_id, 'bill_payment', p_amount, p_channel, p_external_ref);
    ELSE
        -- fees billed to a prepaid account: the money comes in and settles them, the wallet does not move
        INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, channel, external_ref, reason)
        VALUES (p_site_id, p_account_id, 'bill_payment', p_amount, a.balance + p_amount, p_channel, p_external_ref,
                'bill payment')
        RETURNING entry_id INTO entry;
        INSERT INTO prepay.ledger (site_id, account_id, kind, amount, balance_after, reason, reverses_entry)
        VALUES (p_site_id, p_account_id, 'bill_charge', -p_amount, a.balance,
                pg_catalog.format('billed charges settled by entry %s', entry), NULL);
    END IF;
    FOR b IN SELECT * FROM prepay.bill
              WHERE site_id = p_site_id AND account_id = p_account_id AND state = 'issued'
              ORDER BY period_start, bill_id FOR UPDATE LOOP
        EXIT WHEN left_to_allocate = 0;
        part := least(left_to_allocate, b.amount_due - b.paid);
        INSERT INTO prepay.bill_payment (site_id, entry_id, bill_id, amount) VALUES (p_site_id, entry, b.bill_id, part);
        UPDATE prepay.bill SET paid = paid + part,
                               state = CASE WHEN paid + part = amount_due THEN 'paid' ELSE 'issued' END
         WHERE site_id = p_site_id AND bill_id = b.bill_id;
        left_to_allocate := left_to_allocate - part;
    END LOOP;
    RETURN entry;
END $$;
COMMENT ON FUNCTION prepay.pay_bills(integer, bigint, numeric, text, text) IS
'Pay an account''s issued bills, oldest first, and return the bill_payment ledger entry.  A postpaid account''s wallet goes up by the payment; a prepaid account''s bill-settled fees are recorded as paid in and charged (bill_payment and bill_charge entries), its wallet unchanged.  Idempotent per (channel, external_ref); PY023 beyond what is outstanding.';

CREATE VIEW prepay.bill_arrears AS
SELECT b.site_id, b.account_id, a.code AS account_code, a.name AS account_name, a.phone, a.email,
       b.bill_id, b.period_start, b.period_end, b.due_on, b.amount_due, b.paid,
       b.amount_due - b.paid AS outstanding,
       greatest(prepay._local_day(b.site_id, pg_catalog.now()) - b.due_on, 0) AS days_overdue,
       CASE WHEN prepay._local_day(b.site_id, pg_catalog.now()) <= b.due_on THEN 'not due'
            WHEN prepay._local_day(b.site_id, pg_catalog.now()) - b.due_on <= 30 THEN '1-30'
            WHEN prepay._local_day(b.site_id, pg_catalog.now()) - b.due_on <= 60 THEN '31-60'
            WHEN prepay._local_day(b.site_id, pg_catalog.now()) - b.due_on <= 90 THEN '61-90'
            ELSE 'over 90' END AS ageing
  FROM prepay.bill b
  JOIN prepay.account a ON a.site_id = b.site_id AND a.account_id = b.account_id
 WHERE b.state = 'issued';
COMMENT ON VIEW prepay.bill_arrears IS 'Issued bills not fully paid, with their age: the arrears list (postpaid accounts, and fees billed to prepaid ones).';
COMMENT ON COLUMN prepay.bill_arrears.site_id IS 'Site.';
COMMENT ON COLUMN prepay.bill_arrears.account_id IS 'Account.';
COMMENT ON COLUMN prepay.bill_arrears.account_code IS 'Account code.';
COMMENT ON COLUMN prepay.bill_arrears.account_name IS 'Tenant name.';
COMMENT ON COLUMN prepay.bill_arrears.phone IS 'Contact phone.';
COMMENT ON COLUMN prepay.bill_arrears.email IS 'Contact e-mail.';
COMMENT ON COLUMN prepay.bill_arrears.bill_id IS 'Bill.';
COMMENT ON COLUMN prepay.bill_arrears.period_start IS 'First day billed.';
COMMENT ON COLUMN prepay.bill_arrears.period_end IS 'Day after the last day billed.';
COMMENT ON COLUMN prepay.bill_arrears.due_on IS 'Due date.';
COMMENT ON COLUMN prepay.bill_arrears.amount_due IS 'Amount the bill asks for.';
COMMENT ON COLUMN prepay.bill_arrears.paid IS 'Paid so far.';
COMMENT ON COLUMN prepay.bill_arrears.outstanding IS 'Still owed.';
COMMENT ON COLUMN prepay.bill_arrears.days_overdue IS 'Days past the due date (site local), 0 when not yet due.';
COMMENT ON COLUMN prepay.bill_arrears.ageing IS 'Ageing bucket: not due, 1-30, 31-60, 61-90, over 90 days overdue.';

-- ---------------------------------------------------------------------
-- the daily run
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.run_periodic(p_site_id integer, p_day date)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done jsonb := '{}';
    previous_month date := (pg_catalog.date_trunc('month', p_day) - interval '1 month')::date;
    r prepay.apportion_rule;
    p record;
    n integer;
    failed jsonb := '[]';
    problem text;
    problem_detail text;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF NOT EXISTS (SELECT 1 FROM prepay.site WHERE site_id = p_site_id) THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id), NULL);
    END IF;
    -- the period that just ended first: its accruals, settlement and shares
    SELECT count(*) INTO n FROM prepay.accrue_basic_charges(p_site_id, p_day - 1) x WHERE x.posted <> 0;
    done := done || pg_catalog.jsonb_build_object('basic_charges_accrued', n);
    IF p_day = pg_catalog.date_trunc('month', p_day)::date THEN
        done := done || pg_catalog.jsonb_build_object('basic_charges_settled',
                                                      prepay.settle_basic_charges(p_site_id, previous_month));
        n := 0;
        FOR r IN SELECT * FROM prepay.apportion_rule WHERE site_id = p_site_id ORDER BY rule_id LOOP
            p := prepay._period(r.period, p_day - 1);
            CONTINUE WHEN p.period_end <> p_day OR p.period_start < r.active_from
                          OR p.period_start > coalesce(r.active_to, p.period_start);
            BEGIN
                PERFORM prepay.apportion(p_site_id, r.rule_id, p.period_start);
                n := n + 1;
            EXCEPTION WHEN sqlstate 'PY024' THEN
                -- one rule without its master readings must not stop the others
                GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT, problem_detail = PG_EXCEPTION_DETAIL;
                failed := failed || pg_catalog.jsonb_build_object('rule', r.rule_id, 'error', problem || ': ' || problem_detail);
                PERFORM prepay._alarm(p_site_id, 'apportionment_failed', r.master_meters[1],
                                      pg_catalog.format('%s %s: %s: %s', r.name, p.period_start, problem, problem_detail));
            END;
        END LOOP;
        done := done || pg_catalog.jsonb_build_object('apportionments', n);
        IF failed <> '[]' THEN
            done := done || pg_catalog.jsonb_build_object('apportionments_failed', failed);
        END IF;
    END IF;
    -- then the allowances: what is left of the old period expires before the new one is credited
    done := done || pg_catalog.jsonb_build_object('allowances_expired', prepay.expire_allowances(p_site_id, p_day));
    done := done || pg_catalog.jsonb_build_object('allowances_granted', prepay.grant_allowances(p_site_id, p_day));
    done := done || pg_catalog.jsonb_build_object('fees_charged', prepay.charge_fees(p_site_id, p_day));
    IF p_day = pg_catalog.date_trunc('month', p_day)::date THEN
        SELECT count(*) INTO n FROM prepay.draft_bills(p_site_id, previous_month, p_day);
        done := done || pg_catalog.jsonb_build_object('bills_drafted', n);
    END IF;
    RETURN done;
END $$;
COMMENT ON FUNCTION prepay.run_periodic(integer, date) IS
'The site''s daily billing run for a local day, in order: accrue the previous day''s basic charges; on the first day of a month settle the previous month''s basic charges and apportion every rule in force whose period just ended (a rule whose master readings are missing raises an apportionment_failed alarm and is listed; the others go on; run it again once the readings are in) ; then expire the allowances of periods ended, credit the period''s allowances, charge the fees due, and on the first day of a month draft the previous month''s bills.  The period that ended is charged before its allowance expires, and spends it first.  Every step is idempotent, so running it twice, late, or from two sessions at once charges once.  Returns what it did.';

CREATE FUNCTION prepay.run_periodic_all()
RETURNS TABLE (site_id integer, local_day date, done jsonb) LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s prepay.site;
BEGIN
    FOR s IN SELECT * FROM prepay.site ORDER BY site.site_id LOOP
        site_id := s.site_id;
        local_day := prepay._local_day(s.site_id, pg_catalog.now());
        done := prepay.run_periodic(s.site_id, local_day);
        RETURN NEXT;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.run_periodic_all() IS
'prepay.run_periodic for every site on its own local today: what pg_cron runs, e.g. SELECT cron.schedule(''prepay-daily'', ''10 * * * *'', ''SELECT * FROM prepay.run_periodic_all()''); hourly is fine since every step is idempotent (docs/BILLING.md).';

-- ---------------------------------------------------------------------
-- pg_dump: user data
-- ---------------------------------------------------------------------

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['account_group', 'account_group_member', 'period_charge', 'allowance_rule',
                             'charge_item', 'apportion_rule', 'apportionment', 'bill', 'bill_line', 'bill_entry',
                             'bill_payment', 'account_group_id_seq', 'allowance_rule_id_seq', 'charge_item_id_seq',
                             'apportion_rule_id_seq', 'bill_id_seq'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(('prepay.' || t)::regclass, '');
    END LOOP;
END $$;
/*-------------------------------------------------------------------------
 * sql/batch.sql
 *     Batch operations: set a tariff, alarm thresholds, keep-power or the
 *     relay state, or recharge, for many accounts or meters at once, now
 *     or at a scheduled time, with a result per item.  Also the two single-
 *     target setters the batches call (set_tariff, set_thresholds).
 *     Appended after billing.sql into prepay--<version>.sql.
 *
 * Vocabulary
 *     batch    one order for many targets: an action, its parameters, its
 *              targets (a list of ids or codes, or a selector resolved when
 *              the batch is created), when to run it, who created it and
 *              its state.  Created once per (site, client_ref).
 *     item     one target of a batch, with its own result: done, failed
 *              (SQLSTATE, message, detail, hint) or skipped, and when.
 *     runner   prepay.run_due_batches(): runs every due batch; pg_cron (or
 *              anyone) calls it every minute.  prepay.run_batch() runs one.
 *
 * Life of a batch
 *     scheduled --runner, run_at reached--> running --no item pending--> done
 *     scheduled / running --cancel_batch--> cancelled (pending items skipped)
 *     A batch is "running" only between two runs limited by p_max_items.
 *
 * Exactly once.  A runner locks the batch rows it runs (FOR UPDATE SKIP
 * LOCKED: a second runner skips them) and writes each item's result in the
 * same transaction as the item's effect, each item in its own
 * subtransaction.  A run that does not commit leaves no effect and no
 * result: the items are still pending for the next run.
 *
 * Locking.  A runner claims one batch at a time (a batch row: nothing else
 * in prepay locks those) and then takes the core's locks in the core's
 * order (docs/ARCHITECTURE.md, "Locking protocol"): a set_tariff batch first
 * takes its site's rating lock, then each item takes its account, meter and
 * command rows like the single functions do.  Once a run holds row locks of
 * earlier batches it only tries the rating lock of a later set_tariff
 * batch, and leaves that batch to a later run if a rating batch holds it:
 * no lock is ever awaited out of the protocol's order.  Call the runner at
 * the start of a transaction (pg_cron does).
 *
 * Errors raised here use SQLSTATEs PY3xx (docs/BATCH.md).
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- single-target setters
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._check_threshold(p_value numeric, p_what text)
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_value IS NULL THEN
        RETURN;
    END IF;
    IF p_value = 'NaN'::numeric OR p_value < 0 THEN
        PERFORM prepay._raise('22023', pg_catalog.format('%s must be a number at or above zero', p_what),
            pg_catalog.format('The value given was %s.', p_value),
            'Pass an amount in the site''s currency, at or above zero.');
    END IF;
    PERFORM prepay._check_cents(p_value, p_what);
END $$;
COMMENT ON FUNCTION prepay._check_threshold(numeric, text) IS
'Internal: refuse an alarm threshold or credit limit that is NaN, negative or has fractions of a cent (22023), or is absurdly large (22003).  NULL passes.';

CREATE FUNCTION prepay.set_thresholds(p_site_id integer, p_account_id bigint,
                                      p_low_balance numeric, p_pretrip numeric,
                                      p_credit_limit numeric DEFAULT NULL)
RETURNS smallint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    s prepay.site;
    new_level smallint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._check_threshold(p_low_balance, 'low-balance threshold');
    PERFORM prepay._check_threshold(p_pretrip, 'pre-trip threshold');
    PERFORM prepay._check_threshold(p_credit_limit, 'credit limit');
    a := prepay._lock_account(p_site_id, p_account_id);
    SELECT * INTO s FROM prepay.site WHERE site_id = p_site_id;
    IF coalesce(p_pretrip, s.pretrip_threshold) > coalesce(p_low_balance, s.low_balance_threshold) THEN
        PERFORM prepay._raise('22023', 'pre-trip threshold is above the low-balance threshold',
            pg_catalog.format('Pre-trip %s, low balance %s (NULL takes the site''s %s and %s).',
                              coalesce(p_pretrip::text, 'NULL'), coalesce(p_low_balance::text, 'NULL'),
                              s.pretrip_threshold, s.low_balance_threshold),
            'The ladder warns at the low-balance threshold first, then at the pre-trip one: pre-trip <= low balance.');
    END IF;
    UPDATE prepay.account
       SET low_balance_threshold = p_low_balance, pretrip_threshold = p_pretrip,
           credit_limit = coalesce(p_credit_limit, credit_limit)
     WHERE site_id = p_site_id AND account_id = p_account_id
    RETURNING * INTO a;
    IF a.mode <> 'prepaid' THEN
        RETURN a.alarm_level;
    END IF;
    -- the ladder, as after a wallet movement (prepay._post_entry)
    new_level := prepay.alarm_level(a.balance, coalesce(a.low_balance_threshold, s.low_balance_threshold),
                                    coalesce(a.pretrip_threshold, s.pretrip_threshold), a.credit_limit);
    IF new_level <> a.alarm_level THEN
        PERFORM prepay._alarm_level_changed(p_site_id, p_account_id, a.alarm_level, new_level);
    END IF;
    RETURN new_level;
END $$;
COMMENT ON FUNCTION prepay.set_thresholds(integer, bigint, numeric, numeric, numeric) IS
'Set an account''s alarm thresholds: low balance and pre-trip (NULL: the site''s default) and, when given, the credit limit (NULL: unchanged), then run the alarm ladder at once: a level change notifies, and entering or leaving arrears (a credit limit change) trips or restores supply.  Returns the new alarm level.  22023 negative, fractional-cent or NaN values, or pre-trip above low balance; PY001, PY002.';

CREATE FUNCTION prepay.set_tariff(p_site_id integer, p_tariff_id bigint,
                                  p_account_id bigint DEFAULT NULL, p_meter_id bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    m prepay.meter;
    t prepay.tariff;
    mismatch bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF (p_meter_id IS NULL) = (p_account_id IS NULL) THEN
        PERFORM prepay._raise('22023', 'set_tariff needs exactly one of a meter or an account', NULL,
            'Call prepay.set_tariff(site, tariff, p_account_id => 3) or prepay.set_tariff(site, tariff, p_meter_id => 7).');
    END IF;
    IF p_tariff_id IS NULL AND p_account_id IS NOT NULL THEN
        PERFORM prepay._raise('22023', 'an account needs a tariff', NULL,
            'Pass a tariff id; only a meter''s own tariff can be cleared (NULL: the meter uses its account''s).');
    END IF;
    IF p_tariff_id IS NOT NULL THEN
        SELECT * INTO t FROM prepay.tariff WHERE site_id = p_site_id AND tariff_id = p_tariff_id;
        IF NOT FOUND THEN
            PERFORM prepay._raise('PY009', 'unknown tariff',
                pg_catalog.format('Site %s has no tariff %s.', p_site_id, p_tariff_id), 'prepay.tariff lists the tariffs.');
        END IF;
    END IF;
    -- what the rater reads changes: the site's rating lock first (locking protocol)
    PERFORM prepay._lock_site_rating(p_site_id);
    IF p_account_id IS NOT NULL THEN
        a := prepay._lock_account(p_site_id, p_account_id);
        SELECT min(x.meter_id) INTO mismatch FROM prepay.meter x
         WHERE x.site_id = p_site_id AND x.account_id = p_account_id AND x.active AND x.tariff_id IS NULL
           AND (x.kind = 'water') <> (t.unit = 'm3');
        IF mismatch IS NOT NULL THEN
            PERFORM prepay._raise('22023', 'tariff unit does not fit the meter',
                pg_catalog.format('Tariff %s is priced per %s; meter %s of account %s, which uses the account''s tariff, is a %s meter.',
                                  p_tariff_id, t.unit, mismatch, p_account_id,
                                  (SELECT x.kind FROM prepay.meter x WHERE x.site_id = p_site_id AND x.meter_id = mismatch)),
                'Give that meter its own tariff first (prepay.set_tariff with p_meter_id).');
        END IF;
        UPDATE prepay.account SET tariff_id = p_tariff_id WHERE site_id = p_site_id AND account_id = p_account_id;
        RETURN a.tariff_id;
    END IF;
    m := prepay._lock_meter(p_site_id, p_meter_id);
    IF NOT m.active THEN
        PERFORM prepay._raise('PY010', 'meter was removed',
            pg_catalog.format('Meter %s was removed at %s.', p_meter_id, m.removed_at), 'Set the tariff of the meter that replaced it.');
    END IF;
    IF p_tariff_id IS NOT NULL AND (m.kind = 'water') <> (t.unit = 'm3') THEN
        PERFORM prepay._raise('22023', 'tariff unit does not fit the meter',
            pg_catalog.format('Tariff %s is priced per %s; meter %s is a %s meter.', p_tariff_id, t.unit, p_meter_id, m.kind),
            'Water meters take tariffs per m3; electricity and heat meters take tariffs per kWh.');
    END IF;
    UPDATE prepay.meter SET tariff_id = p_tariff_id WHERE site_id = p_site_id AND meter_id = p_meter_id;
    RETURN m.tariff_id;
END $$;
COMMENT ON FUNCTION prepay.set_tariff(integer, bigint, bigint, bigint) IS
'Put an account (p_account_id) or a meter (p_meter_id; NULL tariff: use the account''s) on a tariff and return the previous tariff id.  It prices every reading rated after it commits, including the whole interval since the meter''s last rated reading; it waits for a rating batch of the site in progress (which keeps the old tariff).  Past charges stay (prepay.rerate settles them).  22023 neither or both targets, NULL tariff for an account, unit that does not fit a meter; PY009, PY001, PY002, PY003, PY010.';

-- ---------------------------------------------------------------------
-- types, sequence, tables
-- ---------------------------------------------------------------------

CREATE TYPE prepay.batch_action AS ENUM ('set_tariff', 'set_thresholds', 'set_protect', 'set_relay', 'recharge');
COMMENT ON TYPE prepay.batch_action IS 'What a batch does to each target: set_tariff (accounts or meters), set_thresholds (accounts), set_protect (accounts or meters), set_relay (trip or close meters, or all meters of accounts), recharge (accounts).  See docs/BATCH.md.';

CREATE TYPE prepay.batch_target AS ENUM ('account', 'meter');
COMMENT ON TYPE prepay.batch_target IS 'What the targets of a batch are: accounts or meters.';

CREATE TYPE prepay.batch_state AS ENUM ('scheduled', 'running', 'done', 'cancelled');
COMMENT ON TYPE prepay.batch_state IS 'Life of a batch: scheduled until a run starts it, running while items are pending after a run limited by p_max_items, done when every item has a result, cancelled before that (pending items skipped).';

CREATE TYPE prepay.batch_item_state AS ENUM ('pending', 'done', 'failed', 'skipped');
COMMENT ON TYPE prepay.batch_item_state IS 'Result of one item: pending (not run yet), done, failed (with SQLSTATE and message; nothing of the item happened) or skipped (nothing to do: duplicate target, payment already posted, account without meters, batch cancelled).';

CREATE SEQUENCE prepay.batch_id_seq;
COMMENT ON SEQUENCE prepay.batch_id_seq IS 'Source of batch ids.';

CREATE TABLE prepay.batch (
    site_id       integer NOT NULL REFERENCES prepay.site,
    batch_id      bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.batch_id_seq'),
    client_ref    text NOT NULL,
    action        prepay.batch_action NOT NULL,
    target        prepay.batch_target NOT NULL,
    targets       jsonb NOT NULL,
    params        jsonb NOT NULL DEFAULT '{}',
    run_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    state         prepay.batch_state NOT NULL DEFAULT 'scheduled',
    note          text,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by    text NOT NULL DEFAULT SESSION_USER,
    started_at    timestamptz,
    run_by        text,
    finished_at   timestamptz,
    cancelled_by  text,
    cancel_reason text,
    last_error    text,
    PRIMARY KEY (site_id, batch_id),
    UNIQUE (site_id, client_ref),
    CHECK (jsonb_typeof(targets) IN ('array', 'object')),
    CHECK (jsonb_typeof(params) = 'object'),
    CHECK ((state IN ('done', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK ((state = 'cancelled') = (cancelled_by IS NOT NULL))
);
CREATE INDEX batch_due ON prepay.batch (run_at) WHERE state IN ('scheduled', 'running');
COMMENT ON INDEX prepay.batch_due IS 'What the runner looks for: batches not finished, by run_at (across sites, so not keyed by site).';
COMMENT ON TABLE prepay.batch IS 'A batch operation: one action with its parameters for many accounts or meters, run once at or after run_at.  Created by prepay.create_batch (idempotent per client_ref), run by prepay.run_due_batches or prepay.run_batch.  Results are per item (prepay.batch_item; views prepay.batch_summary and prepay.batch_result).';
COMMENT ON COLUMN prepay.batch.site_id IS 'Site of every target.';
COMMENT ON COLUMN prepay.batch.batch_id IS 'Batch id.';
COMMENT ON COLUMN prepay.batch.client_ref IS 'The creator''s reference: creating again with it returns this batch (idempotent creation).';
COMMENT ON COLUMN prepay.batch.action IS 'set_tariff, set_thresholds, set_protect, set_relay or recharge.';
COMMENT ON COLUMN prepay.batch.target IS 'account or meter: what the targets are.';
COMMENT ON COLUMN prepay.batch.targets IS 'The targets as given: an array of ids, codes or objects ({"id": 3, "amount": 20, "external_ref": "R-1"}), or a selector object ({"building": "A", "floor": "3"}, {"tariff_id": 2}, {"all": true}).  The items were resolved from it at creation.';
COMMENT ON COLUMN prepay.batch.params IS 'The action''s parameters (docs/BATCH.md): {"tariff_id"}, {"low_balance", "pretrip", "credit_limit"}, {"on"}, {"action", "reason"}, {"channel", "amount"}.';
COMMENT ON COLUMN prepay.batch.run_at IS 'Not run before this time; the creation time for "now".';
COMMENT ON COLUMN prepay.batch.state IS 'scheduled, running, done or cancelled.';
COMMENT ON COLUMN prepay.batch.note IS 'Free text from the creator (why).';
COMMENT ON COLUMN prepay.batch.created_at IS 'When the batch was created.';
COMMENT ON COLUMN prepay.batch.created_by IS 'Database user who created it (session_user).';
COMMENT ON COLUMN prepay.batch.started_at IS 'When a run first started it.';
COMMENT ON COLUMN prepay.batch.run_by IS 'Database user of the run that started it (session_user; the pg_cron job''s user).';
COMMENT ON COLUMN prepay.batch.finished_at IS 'When the last item ran, or when it was cancelled.';
COMMENT ON COLUMN prepay.batch.cancelled_by IS 'Database user who cancelled it.';
COMMENT ON COLUMN prepay.batch.cancel_reason IS 'Why it was cancelled.';
COMMENT ON COLUMN prepay.batch.last_error IS 'Error that stopped its last run before commit (deadlock, lack of resources): nothing of that run stayed, the items are still pending and the next run retries them.';

CREATE TABLE prepay.batch_item (
    site_id     integer NOT NULL,
    batch_id    bigint NOT NULL,
    item_no     integer NOT NULL CHECK (item_no >= 1),
    account_id  bigint,
    meter_id    bigint,
    input       jsonb,
    state       prepay.batch_item_state NOT NULL DEFAULT 'pending',
    result      jsonb,
    sqlstate    text,
    message     text,
    detail      text,
    hint        text,
    finished_at timestamptz,
    PRIMARY KEY (site_id, batch_id, item_no),
    FOREIGN KEY (site_id, batch_id) REFERENCES prepay.batch,
    CHECK ((state = 'pending') = (finished_at IS NULL)),
    CHECK ((state = 'failed') = (sqlstate IS NOT NULL))
);
CREATE INDEX batch_item_pending ON prepay.batch_item (site_id, batch_id, item_no) WHERE state = 'pending';
COMMENT ON INDEX prepay.batch_item_pending IS 'Items a run still has to do.';
COMMENT ON TABLE prepay.batch_item IS 'One target of a batch and its result: done (with what it did in result), failed (SQLSTATE, message, detail, hint; the item changed nothing) or skipped (message says why), and when.  account_id and meter_id have no foreign key: an unknown id is an item that fails, not a batch that is refused.';
COMMENT ON COLUMN prepay.batch_item.site_id IS 'Site of the batch.';
COMMENT ON COLUMN prepay.batch_item.batch_id IS 'Batch the item belongs to.';
COMMENT ON COLUMN prepay.batch_item.item_no IS 'Position in the batch: list order for a list of targets, id order for a selector; items run in this order.';
COMMENT ON COLUMN prepay.batch_item.account_id IS 'Target account (target = account); NULL when the input named no account (the item fails).';
COMMENT ON COLUMN prepay.batch_item.meter_id IS 'Target meter (target = meter); NULL when the input named no meter (the item fails).';
COMMENT ON COLUMN prepay.batch_item.input IS 'The list element as given (id, code or object with amount and external_ref); NULL for a target found by a selector.';
COMMENT ON COLUMN prepay.batch_item.state IS 'pending, done, failed or skipped.';
COMMENT ON COLUMN prepay.batch_item.result IS 'What a done or skipped item did or found: ledger entry, command ids, previous tariff, alarm levels.';
COMMENT ON COLUMN prepay.batch_item.sqlstate IS 'SQLSTATE of a failed item (docs/API.md, docs/BATCH.md).';
COMMENT ON COLUMN prepay.batch_item.message IS 'Error message of a failed item, or why it was skipped.';
COMMENT ON COLUMN prepay.batch_item.detail IS 'Error detail of a failed item.';
COMMENT ON COLUMN prepay.batch_item.hint IS 'Error hint of a failed item.';
COMMENT ON COLUMN prepay.batch_item.finished_at IS 'When the item ran (clock time), or was skipped by a cancellation; NULL while pending.';

-- ---------------------------------------------------------------------
-- results
-- ---------------------------------------------------------------------

CREATE VIEW prepay.batch_summary AS
SELECT b.site_id, b.batch_id, b.client_ref, b.action, b.target, b.state, b.run_at,
       b.created_by, b.created_at, b.started_at, b.finished_at,
       count(i.item_no) AS items,
       count(i.item_no) FILTER (WHERE i.state = 'pending') AS pending,
       count(i.item_no) FILTER (WHERE i.state = 'done') AS done,
       count(i.item_no) FILTER (WHERE i.state = 'failed') AS failed,
       count(i.item_no) FILTER (WHERE i.state = 'skipped') AS skipped,
       b.last_error
  FROM prepay.batch b
  LEFT JOIN prepay.batch_item i ON i.site_id = b.site_id AND i.batch_id = b.batch_id
 GROUP BY b.site_id, b.batch_id;
COMMENT ON VIEW prepay.batch_summary IS 'One row per batch: its state and how many items are pending, done, failed and skipped.';
COMMENT ON COLUMN prepay.batch_summary.site_id IS 'Site of the batch.';
COMMENT ON COLUMN prepay.batch_summary.batch_id IS 'Batch id.';
COMMENT ON COLUMN prepay.batch_summary.client_ref IS 'The creator''s reference.';
COMMENT ON COLUMN prepay.batch_summary.action IS 'What the batch does.';
COMMENT ON COLUMN prepay.batch_summary.target IS 'account or meter.';
COMMENT ON COLUMN prepay.batch_summary.state IS 'scheduled, running, done or cancelled.';
COMMENT ON COLUMN prepay.batch_summary.run_at IS 'Not run before this time.';
COMMENT ON COLUMN prepay.batch_summary.created_by IS 'Who created the batch.';
COMMENT ON COLUMN prepay.batch_summary.created_at IS 'When it was created.';
COMMENT ON COLUMN prepay.batch_summary.started_at IS 'When a run first started it.';
COMMENT ON COLUMN prepay.batch_summary.finished_at IS 'When it finished or was cancelled.';
COMMENT ON COLUMN prepay.batch_summary.items IS 'Number of items.';
COMMENT ON COLUMN prepay.batch_summary.pending IS 'Items not run yet.';
COMMENT ON COLUMN prepay.batch_summary.done IS 'Items done.';
COMMENT ON COLUMN prepay.batch_summary.failed IS 'Items failed (see prepay.batch_result).';
COMMENT ON COLUMN prepay.batch_summary.skipped IS 'Items skipped.';
COMMENT ON COLUMN prepay.batch_summary.last_error IS 'Error that stopped the last run before commit, if any (retried).';

CREATE VIEW prepay.batch_result AS
SELECT i.site_id, i.batch_id, b.client_ref, b.action, i.item_no, i.account_id, i.meter_id, i.state,
       CASE i.state WHEN 'failed' THEN i.sqlstate || ': ' || i.message ELSE i.message END AS why,
       i.sqlstate, i.message, i.detail, i.hint, i.result, i.input, i.finished_at
  FROM prepay.batch_item i
  JOIN prepay.batch b ON b.site_id = i.site_id AND b.batch_id = i.batch_id;
COMMENT ON VIEW prepay.batch_result IS 'One row per item with its batch''s action and reference, and why it failed or was skipped ("why").';
COMMENT ON COLUMN prepay.batch_result.site_id IS 'Site of the batch.';
COMMENT ON COLUMN prepay.batch_result.batch_id IS 'Batch id.';
COMMENT ON COLUMN prepay.batch_result.client_ref IS 'The batch''s reference.';
COMMENT ON COLUMN prepay.batch_result.action IS 'What the batch does.';
COMMENT ON COLUMN prepay.batch_result.item_no IS 'Position of the item in its batch.';
COMMENT ON COLUMN prepay.batch_result.account_id IS 'Target account, if the batch targets accounts.';
COMMENT ON COLUMN prepay.batch_result.meter_id IS 'Target meter, if the batch targets meters.';
COMMENT ON COLUMN prepay.batch_result.state IS 'pending, done, failed or skipped.';
COMMENT ON COLUMN prepay.batch_result.why IS 'For a failed item "SQLSTATE: message"; for a skipped one, the reason.';
COMMENT ON COLUMN prepay.batch_result.sqlstate IS 'SQLSTATE of a failed item.';
COMMENT ON COLUMN prepay.batch_result.message IS 'Error message, or why the item was skipped.';
COMMENT ON COLUMN prepay.batch_result.detail IS 'Error detail.';
COMMENT ON COLUMN prepay.batch_result.hint IS 'Error hint.';
COMMENT ON COLUMN prepay.batch_result.result IS 'What the item did (ledger entry, commands, previous tariff, alarm levels).';
COMMENT ON COLUMN prepay.batch_result.input IS 'The list element as given.';
COMMENT ON COLUMN prepay.batch_result.finished_at IS 'When the item ran.';

-- ---------------------------------------------------------------------
-- creation
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._batch_check_keys(p_params jsonb, p_allowed text[], p_required text[])
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
BEGIN
    FOR k IN SELECT jsonb_object_keys(p_params) LOOP
        IF NOT k = ANY (p_allowed) THEN
            PERFORM prepay._raise('22023', pg_catalog.format('unknown batch parameter %L', k),
                pg_catalog.format('Parameters given: %s.', p_params),
                pg_catalog.format('This action takes %s.', pg_catalog.array_to_string(p_allowed, ', ')));
        END IF;
    END LOOP;
    FOREACH k IN ARRAY p_required LOOP
        IF NOT p_params ? k THEN
            PERFORM prepay._raise('22023', pg_catalog.format('batch parameter %L is missing', k),
                pg_catalog.format('Parameters given: %s.', p_params),
                pg_catalog.format('This action needs %s.', pg_catalog.array_to_string(p_required, ', ')));
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay._batch_check_keys(jsonb, text[], text[]) IS 'Internal: refuse (22023) a parameter object with a key not in p_allowed or without a key of p_required.';

CREATE FUNCTION prepay._batch_number(p_params jsonb, p_key text)
RETURNS numeric LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_params->p_key IS NULL OR jsonb_typeof(p_params->p_key) = 'null' THEN
        RETURN NULL;
    END IF;
    RETURN (p_params->>p_key)::numeric;
EXCEPTION WHEN invalid_text_representation THEN
    PERFORM prepay._raise('22023', pg_catalog.format('batch parameter %L is not a number', p_key),
        pg_catalog.format('The value given was %s.', p_params->p_key), 'Pass a JSON number, e.g. 20.00.');
END $$;
COMMENT ON FUNCTION prepay._batch_number(jsonb, text) IS 'Internal: a numeric batch parameter (JSON number or numeric string), NULL if absent or null; 22023 if not a number.';

CREATE FUNCTION prepay._batch_check_params(p_site_id integer, p_action prepay.batch_action,
                                           p_target prepay.batch_target, p_params jsonb)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s prepay.site;
BEGIN
    IF p_action IN ('set_thresholds', 'recharge') AND p_target <> 'account' THEN
        PERFORM prepay._raise('22023', pg_catalog.format('%s applies to accounts only', p_action),
            pg_catalog.format('The target given was %s.', p_target), 'Pass target ''account''.');
    END IF;
    IF p_params IS NULL OR jsonb_typeof(p_params) <> 'object' THEN
        PERFORM prepay._raise('22023', 'batch parameters must be a JSON object',
            pg_catalog.format('The parameters given were %s.', coalesce(p_params::text, 'NULL')),
            'See docs/BATCH.md for the parameters of each action.');
    END IF;
    CASE p_action
    WHEN 'set_tariff' THEN
        PERFORM prepay._batch_check_keys(p_params, '{tariff_id}', '{tariff_id}');
        IF jsonb_typeof(p_params->'tariff_id') = 'null' THEN
            IF p_target = 'account' THEN
                PERFORM prepay._raise('22023', 'an account needs a tariff', NULL,
                    'Pass {"tariff_id": N}; only meters can go back to their account''s tariff (null).');
            END IF;
        ELSIF jsonb_typeof(p_params->'tariff_id') <> 'number' THEN
            PERFORM prepay._raise('22023', 'batch parameter "tariff_id" must be a number',
                pg_catalog.format('The value given was %s.', p_params->'tariff_id'), 'Pass {"tariff_id": N}.');
        ELSIF NOT EXISTS (SELECT 1 FROM prepay.tariff t WHERE t.site_id = p_site_id
                             AND t.tariff_id::numeric = (p_params->>'tariff_id')::numeric) THEN
            PERFORM prepay._raise('PY009', 'unknown tariff',
                pg_catalog.format('Site %s has no tariff %s.', p_site_id, p_params->'tariff_id'),
                'prepay.tariff lists the tariffs.');
        END IF;
    WHEN 'set_thresholds' THEN
        PERFORM prepay._batch_check_keys(p_params, '{low_balance,pretrip,credit_limit}', '{low_balance,pretrip}');
        PERFORM prepay._check_threshold(prepay._batch_number(p_params, 'low_balance'), 'low-balance threshold');
        PERFORM prepay._check_threshold(prepay._batch_number(p_params, 'pretrip'), 'pre-trip threshold');
        PERFORM prepay._check_threshold(prepay._batch_number(p_params, 'credit_limit'), 'credit limit');
        SELECT * INTO s FROM prepay.site WHERE site_id = p_site_id;
        IF coalesce(prepay._batch_number(p_params, 'pretrip'), s.pretrip_threshold)
           > coalesce(prepay._batch_number(p_params, 'low_balance'), s.low_balance_threshold) THEN
            PERFORM prepay._raise('22023', 'pre-trip threshold is above the low-balance threshold',
                pg_catalog.format('Parameters given: %s; the site''s defaults are %s and %s.',
                                  p_params, s.low_balance_threshold, s.pretrip_threshold),
                'The ladder warns at the low-balance threshold first, then at the pre-trip one: pre-trip <= low balance.');
        END IF;
    WHEN 'set_protect' THEN
        PERFORM prepay._batch_check_keys(p_params, '{on}', '{on}');
        IF jsonb_typeof(p_params->'on') <> 'boolean' THEN
            PERFORM prepay._raise('22023', 'batch parameter "on" must be true or false',
                pg_catalog.format('The value given was %s.', p_params->'on'), 'Pass {"on": true} or {"on": false}.');
        END IF;
    WHEN 'set_relay' THEN
        PERFORM prepay._batch_check_keys(p_params, '{action,reason}', '{action}');
        IF p_params->>'action' IS DISTINCT FROM 'trip' AND p_params->>'action' IS DISTINCT FROM 'close' THEN
            PERFORM prepay._raise('22023', 'batch parameter "action" must be trip or close',
                pg_catalog.format('The value given was %s.', p_params->'action'), 'Pass {"action": "trip"} or {"action": "close"}.');
        END IF;
        IF p_params ? 'reason' THEN
            PERFORM prepay._check_text(p_params->>'reason', 'reason');
        END IF;
    WHEN 'recharge' THEN
        PERFORM prepay._batch_check_keys(p_params, '{channel,amount}', '{channel}');
        PERFORM prepay._check_reference(p_params->>'channel', 'channel');
        IF p_params ? 'amount' THEN
            PERFORM prepay._check_amount(prepay._batch_number(p_params, 'amount'), 'recharge');
        END IF;
    END CASE;
END $$;
COMMENT ON FUNCTION prepay._batch_check_params(integer, prepay.batch_action, prepay.batch_target, jsonb) IS
'Internal: refuse a batch whose action does not fit its target or whose parameters are unknown, missing or invalid (22023, 22003, PY009).  Per-item values (amounts, references) are checked when each item runs.';

CREATE FUNCTION prepay._batch_resolve(p_site_id integer, p_target prepay.batch_target, p_element jsonb)
RETURNS bigint LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e jsonb := p_element;
    n numeric;
BEGIN
    IF jsonb_typeof(e) = 'object' THEN
        e := coalesce(e->'id', e->'code');
    END IF;
    IF jsonb_typeof(e) = 'number' THEN
        n := (e #>> '{}')::numeric;
        IF n = pg_catalog.trunc(n) AND n BETWEEN 1 AND 9223372036854775807 THEN
            RETURN n::bigint;
        END IF;
    ELSIF jsonb_typeof(e) = 'string' AND p_target = 'account' THEN
        RETURN (SELECT a.account_id FROM prepay.account a WHERE a.site_id = p_site_id AND a.code = e #>> '{}');
    ELSIF jsonb_typeof(e) = 'string' THEN
        RETURN (SELECT m.meter_id FROM prepay.meter m WHERE m.site_id = p_site_id AND m.code = e #>> '{}');
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._batch_resolve(integer, prepay.batch_target, jsonb) IS
'Internal: the account or meter id a list element names: a whole number is an id (unchecked: an unknown id fails when its item runs), a string is a code, an object has "id" or "code".  NULL when it names none.';

CREATE FUNCTION prepay._batch_check_selector(p_selector jsonb)
RETURNS void LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
BEGIN
    IF p_selector = '{}'::jsonb THEN
        PERFORM prepay._raise('22023', 'empty batch selector', NULL,
            'Select with building, floor, room and/or tariff_id, or pass {"all": true}.');
    END IF;
    FOR k IN SELECT jsonb_object_keys(p_selector) LOOP
        IF k NOT IN ('all', 'building', 'floor', 'room', 'tariff_id') THEN
            PERFORM prepay._raise('22023', pg_catalog.format('unknown batch selector %L', k),
                pg_catalog.format('The selector given was %s.', p_selector),
                'Select with building, floor, room and/or tariff_id, or pass {"all": true}.');
        END IF;
        IF k IN ('building', 'floor', 'room') AND jsonb_typeof(p_selector->k) <> 'string'
           OR k = 'tariff_id' AND jsonb_typeof(p_selector->k) <> 'number' THEN
            PERFORM prepay._raise('22023', pg_catalog.format('batch selector %L has the wrong type', k),
                pg_catalog.format('The selector given was %s.', p_selector),
                'building, floor and room are strings, tariff_id a number.');
        END IF;
    END LOOP;
    IF p_selector ? 'all' AND (p_selector->'all' <> 'true'::jsonb OR p_selector <> '{"all": true}'::jsonb) THEN
        PERFORM prepay._raise('22023', 'batch selector "all" must be true and alone',
            pg_catalog.format('The selector given was %s.', p_selector), 'Pass {"all": true} for every target of the site.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._batch_check_selector(jsonb) IS
'Internal: refuse (22023) a selector that is empty, has an unknown key or a value of the wrong type, or uses "all" other than alone as {"all": true}.';

CREATE FUNCTION prepay._batch_select(p_site_id integer, p_target prepay.batch_target, p_selector jsonb)
RETURNS SETOF bigint LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_target = 'meter' THEN
        RETURN QUERY
        SELECT m.meter_id FROM prepay.meter m
          LEFT JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id
         WHERE m.site_id = p_site_id AND m.active
           AND (NOT p_selector ? 'building' OR m.building = p_selector->>'building')
           AND (NOT p_selector ? 'floor' OR m.floor = p_selector->>'floor')
           AND (NOT p_selector ? 'room' OR m.room = p_selector->>'room')
           AND (NOT p_selector ? 'tariff_id'
                OR coalesce(m.tariff_id, a.tariff_id)::numeric = (p_selector->>'tariff_id')::numeric)
         ORDER BY m.meter_id;
    ELSE
        RETURN QUERY
        SELECT a.account_id FROM prepay.account a
         WHERE a.site_id = p_site_id AND a.closed_at IS NULL
           AND (NOT p_selector ? 'tariff_id' OR a.tariff_id::numeric = (p_selector->>'tariff_id')::numeric)
           AND (NOT (p_selector ?| ARRAY['building', 'floor', 'room'])
                OR EXISTS (SELECT 1 FROM prepay.meter m
                            WHERE m.site_id = a.site_id AND m.account_id = a.account_id AND m.active
                              AND (NOT p_selector ? 'building' OR m.building = p_selector->>'building')
                              AND (NOT p_selector ? 'floor' OR m.floor = p_selector->>'floor')
                              AND (NOT p_selector ? 'room' OR m.room = p_selector->>'room')))
         ORDER BY a.account_id;
    END IF;
END $$;
COMMENT ON FUNCTION prepay._batch_select(integer, prepay.batch_target, jsonb) IS
'Internal: the targets a (checked) selector picks, in id order.  Meters: active meters in the building/floor/room, priced by tariff_id (their own or their account''s).  Accounts: open accounts with an active meter in the building/floor/room, on tariff_id.  {"all": true}: every active meter or open account.';

CREATE FUNCTION prepay.create_batch(p_site_id integer, p_client_ref text, p_action prepay.batch_action,
                                    p_target prepay.batch_target, p_targets jsonb,
                                    p_params jsonb DEFAULT '{}', p_run_at timestamptz DEFAULT NULL,
                                    p_note text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.batch;
    id bigint;
BEGIN
    -- what the batch will do decides who may create it: the runner (often
    -- pg_cron as a superuser) carries it out later on the creator's word
    PERFORM prepay._authorize(p_site_id, CASE WHEN p_action = 'recharge' THEN 'money' ELSE 'manage' END);
    PERFORM prepay._check_text(p_client_ref, 'batch reference');
    IF p_action IS NULL OR p_target IS NULL THEN
        PERFORM prepay._raise('22023', 'a batch needs an action and a target', NULL,
            'Pass an action (set_tariff, set_thresholds, set_protect, set_relay, recharge) and a target (account, meter).');
    END IF;
    IF NOT pg_catalog.isfinite(p_run_at) THEN
        PERFORM prepay._raise('22023', 'run_at must be a finite time',
            pg_catalog.format('The time given was %s.', p_run_at),
            'Omit it (or pass now()) to run the batch at the next run.');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM prepay.site WHERE site_id = p_site_id) THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id),
                              'prepay.site lists the sites.');
    END IF;
    PERFORM prepay._batch_check_params(p_site_id, p_action, p_target, p_params);
    IF p_targets IS NULL OR jsonb_typeof(p_targets) NOT IN ('array', 'object')
       OR jsonb_typeof(p_targets) = 'array' AND jsonb_array_length(p_targets) = 0 THEN
        PERFORM prepay._raise('22023', 'batch targets must be a non-empty array or a selector object',
            pg_catalog.format('The targets given were %s.', coalesce(p_targets::text, 'NULL')),
            'Pass ids or codes ([3, 4, "A-101"]), objects ([{"id": 3, "amount": 20}]) or a selector ({"building": "A", "floor": "3"}).');
    END IF;
    IF jsonb_typeof(p_targets) = 'object' THEN
        PERFORM prepay._batch_check_selector(p_targets);
    END IF;

    SELECT * INTO b FROM prepay.batch x WHERE x.site_id = p_site_id AND x.client_ref = p_client_ref;
    IF NOT FOUND THEN
        INSERT INTO prepay.batch (site_id, client_ref, action, target, targets, params, run_at, note)
        VALUES (p_site_id, p_client_ref, p_action, p_target, p_targets, p_params,
                coalesce(p_run_at, pg_catalog.now()), p_note)
        ON CONFLICT (site_id, client_ref) DO NOTHING
        RETURNING batch_id INTO id;
        IF id IS NULL THEN
            -- a session creating it too has just committed
            SELECT * INTO b FROM prepay.batch x WHERE x.site_id = p_site_id AND x.client_ref = p_client_ref;
        END IF;
    END IF;
    IF id IS NULL THEN
        -- created before: the same batch, or a misuse of the reference
        IF b.action <> p_action OR b.target <> p_target OR b.targets <> p_targets OR b.params <> p_params
           OR b.run_at <> coalesce(p_run_at, b.run_at) THEN
            PERFORM prepay._raise('PY302', 'batch reference already used for a different batch',
                pg_catalog.format('Reference %L is batch %s: %s of %s targets %s with %s.', p_client_ref, b.batch_id,
                                  b.action, b.target, pg_catalog.left(b.targets::text, 60)
                                  || CASE WHEN pg_catalog.length(b.targets::text) > 60 THEN '...' ELSE '' END, b.params),
                'A reference identifies one batch; use a new reference for a new batch.');
        END IF;
        RETURN b.batch_id;
    END IF;

    IF jsonb_typeof(p_targets) = 'array' THEN
        INSERT INTO prepay.batch_item (site_id, batch_id, item_no, account_id, meter_id, input)
        SELECT p_site_id, id, e.ord,
               CASE WHEN p_target = 'account' THEN prepay._batch_resolve(p_site_id, p_target, e.element) END,
               CASE WHEN p_target = 'meter' THEN prepay._batch_resolve(p_site_id, p_target, e.element) END,
               e.element
          FROM jsonb_array_elements(p_targets) WITH ORDINALITY AS e(element, ord);
    ELSE
        INSERT INTO prepay.batch_item (site_id, batch_id, item_no, account_id, meter_id)
        SELECT p_site_id, id, row_number() OVER (ORDER BY t.target_id),
               CASE WHEN p_target = 'account' THEN t.target_id END,
               CASE WHEN p_target = 'meter' THEN t.target_id END
          FROM prepay._batch_select(p_site_id, p_target, p_targets) AS t(target_id);
    END IF;
    RETURN id;
END $$;
COMMENT ON FUNCTION prepay.create_batch(integer, text, prepay.batch_action, prepay.batch_target, jsonb, jsonb, timestamptz, text) IS
'Create a batch and return its id: an action for many accounts or meters (a list of ids, codes or objects, or a selector, resolved now into items), with its parameters, to run at p_run_at (NULL: now; the runner or prepay.run_batch runs it).  Idempotent: the same client reference returns the same batch; with a different action, target, targets, parameters or (given) run_at it is refused (PY302).  22023 bad action/target pair, parameters, targets or selector, or an infinite run_at; PY007; PY009.  See docs/BATCH.md.';

-- ---------------------------------------------------------------------
-- running
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._batch_target_error(b prepay.batch, it prepay.batch_item)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    named jsonb := CASE WHEN jsonb_typeof(it.input) = 'object' THEN coalesce(it.input->'id', it.input->'code')
                        ELSE it.input END;
BEGIN
    IF jsonb_typeof(named) = 'string' AND b.target = 'account' THEN
        PERFORM prepay._raise('PY001', 'unknown account',
            pg_catalog.format('Site %s has no account with code %s.', b.site_id, named),
            'Check the code; prepay.account lists the accounts.');
    ELSIF jsonb_typeof(named) = 'string' THEN
        PERFORM prepay._raise('PY003', 'unknown meter',
            pg_catalog.format('Site %s has no meter with code %s.', b.site_id, named),
            'Check the code; prepay.meter lists the meters.');
    END IF;
    PERFORM prepay._raise('22023', pg_catalog.format('batch target names no %s', b.target),
        pg_catalog.format('Item %s is %s.', it.item_no, coalesce(it.input::text, 'NULL')),
        'Name a target by a whole-number id, a code, or an object with "id" or "code".');
END $$;
COMMENT ON FUNCTION prepay._batch_target_error(prepay.batch, prepay.batch_item) IS 'Internal: raise why an item names no target: PY001/PY003 for an unknown code, else 22023.';

CREATE FUNCTION prepay._batch_run_item(b prepay.batch, it prepay.batch_item,
                                       OUT state prepay.batch_item_state, OUT result jsonb, OUT message text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target_id bigint := coalesce(it.account_id, it.meter_id);
    earlier integer;
    previous bigint;
    a prepay.account;
    m prepay.meter;
    amount numeric;
    ref text;
    entry bigint;
    commands bigint[] := '{}';
    level_before smallint;
    level_after smallint;
BEGIN
    state := 'done';
    IF target_id IS NULL THEN
        PERFORM prepay._batch_target_error(b, it);
    END IF;
    IF b.action <> 'recharge' THEN
        -- setting the same target twice is nothing to do; two recharges are two payments
        SELECT min(x.item_no) INTO earlier FROM prepay.batch_item x
         WHERE x.site_id = it.site_id AND x.batch_id = it.batch_id AND x.item_no < it.item_no
           AND coalesce(x.account_id, x.meter_id) = target_id;
        IF earlier IS NOT NULL THEN
            state := 'skipped';
            message := pg_catalog.format('duplicate of item %s', earlier);
            RETURN;
        END IF;
    END IF;

    CASE b.action
    WHEN 'set_tariff' THEN
        IF b.target = 'account' THEN
            previous := prepay.set_tariff(b.site_id, (b.params->>'tariff_id')::bigint, p_account_id => target_id);
        ELSE
            previous := prepay.set_tariff(b.site_id, (b.params->>'tariff_id')::bigint, p_meter_id => target_id);
        END IF;
        result := jsonb_build_object('tariff_id', (b.params->>'tariff_id')::bigint, 'previous_tariff_id', previous);
    WHEN 'set_thresholds' THEN
        SELECT x.alarm_level INTO level_before FROM prepay.account x
         WHERE x.site_id = b.site_id AND x.account_id = target_id;
        level_after := prepay.set_thresholds(b.site_id, target_id, prepay._batch_number(b.params, 'low_balance'),
                                             prepay._batch_number(b.params, 'pretrip'),
                                             prepay._batch_number(b.params, 'credit_limit'));
        result := jsonb_build_object('alarm_level_before', level_before, 'alarm_level', level_after);
    WHEN 'set_protect' THEN
        IF b.target = 'account' THEN
            PERFORM prepay.protect(b.site_id, (b.params->>'on')::boolean, p_account_id => target_id);
        ELSE
            PERFORM prepay.protect(b.site_id, (b.params->>'on')::boolean, p_meter_id => target_id);
        END IF;
        result := jsonb_build_object('protect', (b.params->>'on')::boolean);
    WHEN 'set_relay' THEN
        IF b.target = 'meter' THEN
            commands := ARRAY[prepay._batch_relay(b, target_id)];
        ELSE
            -- every active meter of the account, or none of them
            a := prepay._lock_account(b.site_id, target_id);
            FOR m IN SELECT * FROM prepay.meter x
                      WHERE x.site_id = b.site_id AND x.account_id = target_id AND x.active
                      ORDER BY x.meter_id LOOP
                commands := commands || prepay._batch_relay(b, m.meter_id);
            END LOOP;
            IF cardinality(commands) = 0 THEN
                state := 'skipped';
                message := 'account has no active meter';
                RETURN;
            END IF;
        END IF;
        result := jsonb_build_object('action', b.params->>'action', 'command_ids', to_jsonb(commands));
    WHEN 'recharge' THEN
        amount := coalesce((it.input->>'amount')::numeric, prepay._batch_number(b.params, 'amount'));
        ref := CASE WHEN jsonb_typeof(it.input) = 'object' AND it.input ? 'external_ref'
                    THEN it.input->>'external_ref'
                    ELSE pg_catalog.format('batch:%s:%s', b.batch_id, it.item_no) END;
        SELECT l.entry_id INTO previous FROM prepay.ledger l
         WHERE l.site_id = b.site_id AND l.channel = b.params->>'channel' AND l.external_ref = ref;
        entry := prepay.recharge(b.site_id, target_id, amount, b.params->>'channel', ref);
        result := jsonb_build_object('entry_id', entry, 'amount', amount, 'channel', b.params->>'channel',
                                     'external_ref', ref);
        IF previous IS NOT NULL THEN
            state := 'skipped';
            message := pg_catalog.format('payment already posted as ledger entry %s', entry);
        END IF;
    END CASE;
END $$;
COMMENT ON FUNCTION prepay._batch_run_item(prepay.batch, prepay.batch_item) IS
'Internal: carry out one item through the public single-target function (set_tariff, set_thresholds, protect, trip/close, recharge) and say what it did; raises the function''s error for a failed item.  The caller runs it in a subtransaction.';

CREATE FUNCTION prepay._batch_relay(b prepay.batch, p_meter_id bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    reason text := coalesce(b.params->>'reason', 'batch ' || b.client_ref);
BEGIN
    IF b.params->>'action' = 'trip' THEN
        RETURN prepay.trip(b.site_id, p_meter_id, reason);
    END IF;
    RETURN prepay.close(b.site_id, p_meter_id, reason);
END $$;
COMMENT ON FUNCTION prepay._batch_relay(prepay.batch, bigint) IS 'Internal: queue a batch''s trip or close for one meter (prepay.trip / prepay.close) with the batch''s reason (default "batch <client_ref>"); returns the command id.';

CREATE FUNCTION prepay._batch_run(b prepay.batch, p_max_items bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    it prepay.batch_item;
    r record;
    n bigint := 0;
    e_state text;
    e_message text;
    e_detail text;
    e_hint text;
BEGIN
    UPDATE prepay.batch x SET state = 'running', started_at = pg_catalog.clock_timestamp(), run_by = SESSION_USER
     WHERE x.site_id = b.site_id AND x.batch_id = b.batch_id AND x.state = 'scheduled';
    FOR it IN SELECT * FROM prepay.batch_item x
               WHERE x.site_id = b.site_id AND x.batch_id = b.batch_id AND x.state = 'pending'
               ORDER BY x.item_no
               LIMIT p_max_items LOOP
        BEGIN
            r := prepay._batch_run_item(b, it);
            UPDATE prepay.batch_item x
               SET state = r.state, result = r.result, message = r.message,
                   finished_at = pg_catalog.clock_timestamp()
             WHERE x.site_id = it.site_id AND x.batch_id = it.batch_id AND x.item_no = it.item_no;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT,
                                    e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
            -- a deadlock, a serialization failure or a lack of resources is not the
            -- item's fault: give up this batch's run (prepay._batch_run_safely)
            IF pg_catalog.left(e_state, 2) IN ('40', '53', '54', '55', '57', '58', 'XX') THEN
                RAISE;
            END IF;
            UPDATE prepay.batch_item x
               SET state = 'failed', sqlstate = e_state, message = e_message,
                   detail = nullif(e_detail, ''), hint = nullif(e_hint, ''),
                   finished_at = pg_catalog.clock_timestamp()
             WHERE x.site_id = it.site_id AND x.batch_id = it.batch_id AND x.item_no = it.item_no;
        END;
        n := n + 1;
    END LOOP;
    UPDATE prepay.batch x SET state = 'done', finished_at = pg_catalog.clock_timestamp(), last_error = NULL
     WHERE x.site_id = b.site_id AND x.batch_id = b.batch_id
       AND NOT EXISTS (SELECT 1 FROM prepay.batch_item i
                        WHERE i.site_id = x.site_id AND i.batch_id = x.batch_id AND i.state = 'pending');
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay._batch_run(prepay.batch, bigint) IS
'Internal: run up to p_max_items (NULL: all) pending items of a batch the caller has locked, in item order, each in its own subtransaction: a failing item is recorded as failed with its SQLSTATE, message, detail and hint, and the others go on.  Errors of classes 40, 53-58 and XX (deadlock, serialization, resources, operator intervention, internal) are re-raised.  Marks the batch done when no item is pending.  Returns how many items ran.';

CREATE FUNCTION prepay._batch_run_safely(b prepay.batch, p_max_items bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_state text;
    e_message text;
BEGIN
    RETURN prepay._batch_run(b, p_max_items);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT;
    UPDATE prepay.batch x SET last_error = pg_catalog.format('%s: %s (run at %s)', e_state, e_message, pg_catalog.clock_timestamp())
     WHERE x.site_id = b.site_id AND x.batch_id = b.batch_id;
    RETURN 0;
END $$;
COMMENT ON FUNCTION prepay._batch_run_safely(prepay.batch, bigint) IS
'Internal: run a batch in a subtransaction; if the run stops on an error that is not an item''s (deadlock, lack of resources, ...), undo the whole run of this batch (its items stay pending), note the error in batch.last_error and return 0, so other batches still run.';

CREATE FUNCTION prepay._batch_lock_site(b prepay.batch, p_wait boolean)
RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF b.action <> 'set_tariff' THEN
        RETURN true;
    END IF;
    IF p_wait THEN
        PERFORM prepay._lock_site_rating(b.site_id);
        RETURN true;
    END IF;
    RETURN pg_catalog.pg_try_advisory_xact_lock(1886545264, b.site_id);   -- prepay._lock_site_rating's key
END $$;
COMMENT ON FUNCTION prepay._batch_lock_site(prepay.batch, boolean) IS
'Internal: a set_tariff batch changes what the rater reads, so it runs under its site''s rating lock, taken before any row lock (the locking protocol''s first step).  With p_wait false (the run already holds row locks or other sites'' locks) it only tries, and returns false if a rating batch holds the lock: the batch is left for a later run instead of risking a deadlock.';

CREATE FUNCTION prepay.run_due_batches(p_max_items bigint DEFAULT NULL)
RETURNS TABLE (site_id integer, batch_id bigint, client_ref text, action prepay.batch_action,
               state prepay.batch_state, items_run bigint, pending bigint, done bigint, failed bigint,
               skipped bigint, last_error text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b prepay.batch;
    seen bigint[] := '{}';
    budget bigint := p_max_items;
    ran bigint;
BEGIN
    IF p_max_items IS NOT NULL AND p_max_items < 1 THEN
        PERFORM prepay._raise('22023', 'p_max_items must be positive',
            pg_catalog.format('The value given was %s.', p_max_items), 'Pass NULL to run every due item.');
    END IF;
    LOOP
        EXIT WHEN budget = 0;
        -- claim the oldest due batch; one another runner holds is skipped (it runs there, once)
        SELECT * INTO b FROM prepay.batch d
         WHERE d.state IN ('scheduled', 'running') AND d.run_at <= pg_catalog.now()
           AND NOT (d.batch_id = ANY (seen))
         ORDER BY d.run_at, d.site_id, d.batch_id
         LIMIT 1
           FOR UPDATE SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        seen := seen || b.batch_id;
        CONTINUE WHEN NOT prepay._batch_lock_site(b, cardinality(seen) = 1);
        ran := prepay._batch_run_safely(b, budget);
        budget := budget - ran;
        RETURN QUERY
        SELECT s.site_id, s.batch_id, s.client_ref, s.action, s.state, ran, s.pending, s.done, s.failed,
               s.skipped, s.last_error
          FROM prepay.batch_summary s WHERE s.site_id = b.site_id AND s.batch_id = b.batch_id;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay.run_due_batches(bigint) IS
'The runner: run every batch whose run_at has come (oldest first), each item once, in the calling transaction; pg_cron (or anyone) calls it every minute: SELECT * FROM prepay.run_due_batches().  It claims one batch at a time and concurrent runners skip each other''s batches (FOR UPDATE SKIP LOCKED), so running it twice or from two sessions runs each item exactly once.  p_max_items bounds the items of one call (the rest stay pending: state running).  Returns one row per batch it ran: items run now, and the batch''s counts.  Call it at the start of a transaction.';

CREATE FUNCTION prepay.run_batch(p_site_id integer, p_batch_id bigint)
RETURNS TABLE (site_id integer, batch_id bigint, client_ref text, action prepay.batch_action,
               state prepay.batch_state, items_run bigint, pending bigint, done bigint, failed bigint,
               skipped bigint, last_error text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b prepay.batch;
    ran bigint := 0;
BEGIN
    PERFORM prepay._authorize(p_site_id, CASE WHEN (SELECT b.action FROM prepay.batch b
                                                     WHERE b.site_id = p_site_id AND b.batch_id = p_batch_id) = 'recharge'
                                              THEN 'money' ELSE 'manage' END);
    -- waits for a runner holding the batch, then sees what it did
    SELECT * INTO b FROM prepay.batch x WHERE x.site_id = p_site_id AND x.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY301', 'unknown batch',
            pg_catalog.format('Site %s has no batch %s.', p_site_id, p_batch_id), 'prepay.batch_summary lists the batches.');
    END IF;
    IF b.state IN ('scheduled', 'running') THEN
        IF b.run_at > pg_catalog.now() THEN
            PERFORM prepay._raise('PY303', 'batch is scheduled for later',
                pg_catalog.format('Batch %s runs at %s.', p_batch_id, b.run_at),
                'Move it with prepay.reschedule_batch(site, batch, now()) to run it now.');
        END IF;
        PERFORM prepay._batch_lock_site(b, true);
        ran := prepay._batch_run(b, NULL);
    END IF;
    RETURN QUERY
    SELECT s.site_id, s.batch_id, s.client_ref, s.action, s.state, ran, s.pending, s.done, s.failed,
           s.skipped, s.last_error
      FROM prepay.batch_summary s WHERE s.site_id = p_site_id AND s.batch_id = p_batch_id;
END $$;
COMMENT ON FUNCTION prepay.run_batch(integer, bigint) IS
'Run one due batch now, in the calling transaction (after prepay.create_batch for "immediately"), and return its counts.  A batch that is done or cancelled is not run again: its counts are returned with items_run 0; a runner holding it is waited for.  PY301 unknown batch; PY303 run_at still ahead.';

CREATE FUNCTION prepay.cancel_batch(p_site_id integer, p_batch_id bigint, p_reason text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.batch;
    n bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    PERFORM prepay._check_text(p_reason, 'reason');
    SELECT * INTO b FROM prepay.batch x WHERE x.site_id = p_site_id AND x.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY301', 'unknown batch',
            pg_catalog.format('Site %s has no batch %s.', p_site_id, p_batch_id), 'prepay.batch_summary lists the batches.');
    END IF;
    IF b.state IN ('done', 'cancelled') THEN
        PERFORM prepay._raise('PY303', pg_catalog.format('batch is already %s', b.state),
            pg_catalog.format('Batch %s finished at %s.', p_batch_id, b.finished_at),
            'Undo what it did with a new batch (or prepay.reverse for payments).');
    END IF;
    UPDATE prepay.batch_item x SET state = 'skipped', message = 'batch cancelled: ' || p_reason,
           finished_at = pg_catalog.clock_timestamp()
     WHERE x.site_id = p_site_id AND x.batch_id = p_batch_id AND x.state = 'pending';
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE prepay.batch x SET state = 'cancelled', finished_at = pg_catalog.clock_timestamp(),
           cancelled_by = SESSION_USER, cancel_reason = p_reason
     WHERE x.site_id = p_site_id AND x.batch_id = p_batch_id;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.cancel_batch(integer, bigint, text) IS
'Cancel a batch that has not finished: its pending items are skipped ("batch cancelled: reason"); items already run stay as they are.  Returns how many items were skipped.  Waits for a runner holding the batch.  PY301 unknown batch; PY303 already done or cancelled; 22023 blank reason.';

CREATE FUNCTION prepay.reschedule_batch(p_site_id integer, p_batch_id bigint, p_run_at timestamptz)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b prepay.batch;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'manage');
    IF p_run_at IS NULL OR NOT pg_catalog.isfinite(p_run_at) THEN
        PERFORM prepay._raise('22023', 'run_at must be a finite time',
            pg_catalog.format('The time given was %s.', coalesce(p_run_at::text, 'NULL')),
            'Pass now() to run the batch at the next run; cancel a batch that should never run.');
    END IF;
    SELECT * INTO b FROM prepay.batch x WHERE x.site_id = p_site_id AND x.batch_id = p_batch_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY301', 'unknown batch',
            pg_catalog.format('Site %s has no batch %s.', p_site_id, p_batch_id), 'prepay.batch_summary lists the batches.');
    END IF;
    IF b.state <> 'scheduled' THEN
        PERFORM prepay._raise('PY303', pg_catalog.format('batch is already %s', b.state),
            pg_catalog.format('Batch %s started at %s.', p_batch_id, coalesce(b.started_at, b.finished_at)),
            'Only a batch that has not started can be moved.');
    END IF;
    UPDATE prepay.batch x SET run_at = p_run_at WHERE x.site_id = p_site_id AND x.batch_id = p_batch_id;
END $$;
COMMENT ON FUNCTION prepay.reschedule_batch(integer, bigint, timestamptz) IS
'Move a batch that has not started to another run_at (now() to run it at the next run).  PY301 unknown batch; PY303 started, done or cancelled; 22023 NULL or infinite time.';

-- ---------------------------------------------------------------------
-- pg_dump: batches and their results are user data
-- ---------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('prepay.batch', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.batch_item', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.batch_id_seq', '');
/*-------------------------------------------------------------------------
 * sql/reports.sql
 *     Monitoring and reports: the energy rollups kept as readings are
 *     rated, the room status board, energy reports with their time-of-use
 *     breakdown, finance reports and the order overview, the per-account
 *     trail, lost contact, alarms, arrears, the balance forecast with the
 *     reminder before a predicted cut, and suspicious consumption.
 *     Appended after billing.sql and batch.sql into prepay--<version>.sql.
 *     See docs/REPORTS.md.
 *
 * Vocabulary
 *     rollup      a table of sums kept up to date by a trigger, so that a
 *                 report reads a few rows per meter instead of every
 *                 reading: energy_day and energy_month (energy and exact
 *                 cost per meter, account, local day or month, time-of-use
 *                 period and tier) and consumption_posting_day (consumption
 *                 money posted per local day and database user).
 *     part        the share of one priced piece (ledger.pieces) that falls
 *                 in one local day; a piece that crosses a local midnight
 *                 (flat tariffs are not cut at midnights) is split
 *                 uniformly, like the tariff engine splits an interval.
 *     cost        exact amounts (9 decimals) as priced; charged is the
 *                 whole cents posted (see the rounding rule).
 *     local       in the site's time zone (prepay.site.time_zone).
 *
 * Locking: the rollups are written only for consumption entries, and those
 * are written only under the site's rating lock (prepay._lock_site_rating),
 * so rollup rows add no lock waits and no deadlocks: they are taken after
 * the account rows and before the meter rows, by one batch of a site at a
 * time.  Money movements other than consumption are not rolled up (a hot
 * summary row would serialise payments); finance reports read them from
 * the ledger through the partial index ledger_money.
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- settings
-- ---------------------------------------------------------------------

ALTER TABLE prepay.site
    ADD COLUMN cut_reminder_lead interval NOT NULL DEFAULT '30 minutes'
        CHECK (cut_reminder_lead >= '0' AND cut_reminder_lead <= '7 days'),
    ADD COLUMN forecast_window interval NOT NULL DEFAULT '7 days'
        CHECK (forecast_window >= '1 day' AND forecast_window <= '90 days');
COMMENT ON COLUMN prepay.site.cut_reminder_lead IS 'How long before a predicted cut prepay.send_cut_reminders writes the final reminder (default 30 minutes).';
COMMENT ON COLUMN prepay.site.forecast_window IS 'How much recent consumption (whole local days before today, plus today) the balance forecast averages (default 7 days).';

-- ---------------------------------------------------------------------
-- rollups
-- ---------------------------------------------------------------------

CREATE TABLE prepay.energy_day_folded (
    site_id    integer NOT NULL,
    meter_id   bigint NOT NULL,
    day        date NOT NULL,
    account_id bigint NOT NULL,
    period     text NOT NULL,
    tier       integer NOT NULL,
    energy     numeric(15,3) NOT NULL,
    cost       numeric(18,9) NOT NULL,
    charged    numeric(14,2) NOT NULL,
    charges    integer NOT NULL,
    PRIMARY KEY (site_id, meter_id, day, account_id, period, tier)
) WITH (fillfactor = 50);
CREATE INDEX energy_day_folded_account ON prepay.energy_day_folded (site_id, account_id, day);
CREATE INDEX energy_day_folded_day ON prepay.energy_day_folded (site_id, day);
COMMENT ON INDEX prepay.energy_day_folded_account IS 'An account''s days: trails, forecasts, per-account reports.';
COMMENT ON INDEX prepay.energy_day_folded_day IS 'A site''s day: daily reports, suspicious-consumption windows.';
COMMENT ON TABLE prepay.energy_day_folded IS 'Rollup store: consumption charged per meter, account, local day, time-of-use period and tier, as far as prepay.fold_rollups has folded prepay.energy_pending into it.  Read prepay.energy_day, which adds what is not folded yet.';
COMMENT ON COLUMN prepay.energy_day_folded.site_id IS 'Site of the meter.';
COMMENT ON COLUMN prepay.energy_day_folded.meter_id IS 'Meter.';
COMMENT ON COLUMN prepay.energy_day_folded.day IS 'Local date (site time zone) the energy was consumed on.';
COMMENT ON COLUMN prepay.energy_day_folded.account_id IS 'Account charged.';
COMMENT ON COLUMN prepay.energy_day_folded.period IS 'Time-of-use period (or register) the energy was priced in; "all" for a single-price tariff.';
COMMENT ON COLUMN prepay.energy_day_folded.tier IS 'Tier (1 = first block) the energy was priced in.';
COMMENT ON COLUMN prepay.energy_day_folded.energy IS 'Energy (kWh or m3, after the multiplier).';
COMMENT ON COLUMN prepay.energy_day_folded.cost IS 'Exact price of that energy (9 decimals, before rounding to cents).';
COMMENT ON COLUMN prepay.energy_day_folded.charged IS 'Whole cents posted by the consumption entries whose interval starts on this day, counted on the period and tier of their first piece.';
COMMENT ON COLUMN prepay.energy_day_folded.charges IS 'Consumption entries whose interval starts on this day, counted like charged.';

CREATE TABLE prepay.energy_month_folded (
    site_id    integer NOT NULL,
    meter_id   bigint NOT NULL,
    month      date NOT NULL CHECK (pg_catalog.date_part('day', month) = 1),
    account_id bigint NOT NULL,
    period     text NOT NULL,
    tier       integer NOT NULL,
    energy     numeric(15,3) NOT NULL,
    cost       numeric(18,9) NOT NULL,
    charged    numeric(14,2) NOT NULL,
    charges    integer NOT NULL,
    PRIMARY KEY (site_id, meter_id, month, account_id, period, tier)
) WITH (fillfactor = 50);
CREATE INDEX energy_month_folded_month ON prepay.energy_month_folded (site_id, month);
COMMENT ON INDEX prepay.energy_month_folded_month IS 'A site''s month: monthly, yearly and year-over-year reports.';
COMMENT ON TABLE prepay.energy_month_folded IS 'Rollup store: energy_day_folded summed per local calendar month, folded at the same time.  Read prepay.energy_month.';
COMMENT ON COLUMN prepay.energy_month_folded.site_id IS 'Site of the meter.';
COMMENT ON COLUMN prepay.energy_month_folded.meter_id IS 'Meter.';
COMMENT ON COLUMN prepay.energy_month_folded.month IS 'First day of the local calendar month.';
COMMENT ON COLUMN prepay.energy_month_folded.account_id IS 'Account charged.';
COMMENT ON COLUMN prepay.energy_month_folded.period IS 'Time-of-use period (or register); "all" for a single-price tariff.';
COMMENT ON COLUMN prepay.energy_month_folded.tier IS 'Tier (1 = first block).';
COMMENT ON COLUMN prepay.energy_month_folded.energy IS 'Energy (kWh or m3, after the multiplier).';
COMMENT ON COLUMN prepay.energy_month_folded.cost IS 'Exact price of that energy (9 decimals).';
COMMENT ON COLUMN prepay.energy_month_folded.charged IS 'Whole cents posted by the consumption entries whose interval starts in this month (on their first piece''s period and tier).';
COMMENT ON COLUMN prepay.energy_month_folded.charges IS 'Consumption entries whose interval starts in this month.';

CREATE TABLE prepay.energy_pending (
    site_id    integer NOT NULL,
    meter_id   bigint NOT NULL,
    day        date NOT NULL,
    account_id bigint NOT NULL,
    period     text NOT NULL,
    tier       integer NOT NULL,
    energy     numeric(15,3) NOT NULL,
    cost       numeric(18,9) NOT NULL,
    charged    numeric(14,2) NOT NULL,
    charges    integer NOT NULL
);
COMMENT ON TABLE prepay.energy_pending IS 'Rollup deltas not folded yet: each rating batch appends one row per meter, account, local day, period and tier it charged (extension/rollup.c), in the transaction that posts the entries; prepay.fold_rollups moves them into energy_day_folded and energy_month_folded.  No index and no key: appending is all the rating path pays.  Read prepay.energy_day.';
COMMENT ON COLUMN prepay.energy_pending.site_id IS 'Site of the meter.';
COMMENT ON COLUMN prepay.energy_pending.meter_id IS 'Meter.';
COMMENT ON COLUMN prepay.energy_pending.day IS 'Local date (site time zone) the energy was consumed on.';
COMMENT ON COLUMN prepay.energy_pending.account_id IS 'Account charged.';
COMMENT ON COLUMN prepay.energy_pending.period IS 'Time-of-use period (or register); "all" for a single-price tariff.';
COMMENT ON COLUMN prepay.energy_pending.tier IS 'Tier (1 = first block).';
COMMENT ON COLUMN prepay.energy_pending.energy IS 'Energy (kWh or m3, after the multiplier) one batch added.';
COMMENT ON COLUMN prepay.energy_pending.cost IS 'Exact price of that energy (9 decimals).';
COMMENT ON COLUMN prepay.energy_pending.charged IS 'Whole cents of the batch''s entries counted here (see energy_day_folded.charged).';
COMMENT ON COLUMN prepay.energy_pending.charges IS 'The batch''s entries counted here.';

CREATE VIEW prepay.energy_day AS
SELECT e.site_id, e.meter_id, e.day, e.account_id, e.period, e.tier,
       sum(e.energy)::numeric(15,3) AS energy, sum(e.cost)::numeric(18,9) AS cost,
       sum(e.charged)::numeric(14,2) AS charged, sum(e.charges)::integer AS charges
  FROM (SELECT f.site_id, f.meter_id, f.day, f.account_id, f.period, f.tier, f.energy, f.cost, f.charged, f.charges
          FROM prepay.energy_day_folded f
        UNION ALL
        SELECT p.site_id, p.meter_id, p.day, p.account_id, p.period, p.tier, p.energy, p.cost, p.charged, p.charges
          FROM prepay.energy_pending p) AS e
 GROUP BY e.site_id, e.meter_id, e.day, e.account_id, e.period, e.tier;
COMMENT ON VIEW prepay.energy_day IS 'Rollup: consumption charged per meter, account, local day, time-of-use period and tier, up to the last committed rating batch (the folded store plus the deltas not folded yet).  Equals what prepay.energy_from_ledger computes from the ledger; prepay.rebuild_rollups recomputes it.';

CREATE VIEW prepay.energy_month AS
SELECT e.site_id, e.meter_id, e.month, e.account_id, e.period, e.tier,
       sum(e.energy)::numeric(15,3) AS energy, sum(e.cost)::numeric(18,9) AS cost,
       sum(e.charged)::numeric(14,2) AS charged, sum(e.charges)::integer AS charges
  FROM (SELECT f.site_id, f.meter_id, f.month, f.account_id, f.period, f.tier, f.energy, f.cost, f.charged, f.charges
          FROM prepay.energy_month_folded f
        UNION ALL
        SELECT p.site_id, p.meter_id, pg_catalog.date_trunc('month', p.day)::date, p.account_id, p.period, p.tier,
               p.energy, p.cost, p.charged, p.charges
          FROM prepay.energy_pending p) AS e
 GROUP BY e.site_id, e.meter_id, e.month, e.account_id, e.period, e.tier;
COMMENT ON VIEW prepay.energy_month IS 'Rollup: energy_day summed per local calendar month, up to the last committed rating batch.';

-- the views' columns mean what the folded tables' columns mean
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT v.view, a.attname, pg_catalog.col_description(a.attrelid, a.attnum) AS description
          FROM (VALUES ('prepay.energy_day'::pg_catalog.regclass, 'prepay.energy_day_folded'::pg_catalog.regclass),
                       ('prepay.energy_month', 'prepay.energy_month_folded')) AS v (view, store)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = v.store AND a.attnum > 0 AND NOT a.attisdropped
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON COLUMN %s.%I IS %L', c.view, c.attname, c.description);
    END LOOP;
END $$;

CREATE TABLE prepay.consumption_posting_day (
    site_id    integer NOT NULL,
    day        date NOT NULL,
    created_by text NOT NULL,
    entries    bigint NOT NULL,
    amount     numeric(16,2) NOT NULL,
    PRIMARY KEY (site_id, day, created_by)
);
COMMENT ON TABLE prepay.consumption_posting_day IS 'Rollup: consumption entries posted per local day of posting (ledger.created_at) and database user, for the finance reports (the energy rollups count the day the energy was used instead).';
COMMENT ON COLUMN prepay.consumption_posting_day.site_id IS 'Site.';
COMMENT ON COLUMN prepay.consumption_posting_day.day IS 'Local date the entries were posted on.';
COMMENT ON COLUMN prepay.consumption_posting_day.created_by IS 'Database user whose rating transaction posted them (the agent''s user for readings).';
COMMENT ON COLUMN prepay.consumption_posting_day.entries IS 'Number of consumption entries.';
COMMENT ON COLUMN prepay.consumption_posting_day.amount IS 'Sum of their amounts (negative: debits).';

CREATE INDEX ledger_money ON prepay.ledger (site_id, created_at) WHERE kind <> 'consumption';
COMMENT ON INDEX prepay.ledger_money IS 'Every money movement that is not a consumption charge (payments, refunds, reversals, fees, ...), by time: the finance reports and the order overview.  Consumption entries are not in it and cost it nothing.';

-- ---------------------------------------------------------------------
-- how a consumption entry is rolled up
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._local_day(p_at timestamptz, p_tz text)
RETURNS date LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ((p_at OPERATOR(pg_catalog.-) interval '1 microsecond') AT TIME ZONE p_tz)::date
$$;
COMMENT ON FUNCTION prepay._local_day(timestamptz, text) IS 'Internal: the local date an interval ending at p_at belongs to ((a, b] ends on the day of b minus one microsecond, so an interval ending at midnight belongs to the day before).';

CREATE FUNCTION prepay._entry_parts(p_amount numeric, p_pieces json, p_tz text)
RETURNS TABLE (day date, period text, tier integer, energy numeric, cost numeric, charged numeric, charges integer)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT q.day, q.period, q.tier,
           CASE WHEN q.first_day = q.last_day THEN q.energy ELSE q.part END,
           CASE WHEN q.first_day = q.last_day THEN q.amount ELSE q.part * q.price END,
           CASE WHEN q.n = 1 AND q.day = q.first_day THEN -p_amount ELSE 0 END,
           CASE WHEN q.n = 1 AND q.day = q.first_day THEN 1 ELSE 0 END
      FROM (SELECT r.*,
                   -- a piece across local midnights is split uniformly in Wh
                   CASE WHEN r.first_day <> r.last_day THEN
                       -- in whole Wh and microseconds: div() is exact where / rounds
                       (pg_catalog.div(r.energy * 1000
                            * EXTRACT(epoch FROM least(r."to", (r.day + 1)::timestamp AT TIME ZONE p_tz) - r."from") * 1000000,
                            EXTRACT(epoch FROM r."to" - r."from") * 1000000)
                        - pg_catalog.div(r.energy * 1000
                            * EXTRACT(epoch FROM greatest(r."from", r.day::timestamp AT TIME ZONE p_tz) - r."from") * 1000000,
                            EXTRACT(epoch FROM r."to" - r."from") * 1000000)) / 1000 END AS part
              FROM (SELECT p.*, d.first_day, d.last_day,
                           pg_catalog.generate_series(d.first_day::timestamp, d.last_day::timestamp,
                                                      interval '1 day')::date AS day
                      FROM ROWS FROM (pg_catalog.json_to_recordset(p_pieces->'pieces')
                                      AS ("from" timestamptz, "to" timestamptz, period text, tier integer,
                                          energy numeric, price numeric, amount numeric)) WITH ORDINALITY
                               AS p("from", "to", period, tier, energy, price, amount, n)
                     CROSS JOIN LATERAL (SELECT (p."from" AT TIME ZONE p_tz)::date AS first_day,
                                                prepay._local_day(p."to", p_tz) AS last_day) AS d) AS r) AS q
$$;
COMMENT ON FUNCTION prepay._entry_parts(numeric, json, text) IS
'Internal: how one consumption entry is rolled up: each priced piece of its pricing record on the local day it lies in (a piece crossing local midnights is split uniformly: the part up to instant t gets floor(E x (t - from) / (to - from)) Wh, so the parts add up to the piece and each part costs its energy x the piece''s price), and the entry''s posted cents (and a count of 1) on its first piece''s first day, period and tier.  prepay.energy_from_ledger and prepay.rebuild_rollups use it; the rating batch applies the same rule in C (extension/rollup.c).';

CREATE FUNCTION prepay.energy_from_ledger(p_site_id integer, p_from date, p_to date)
RETURNS TABLE (site_id integer, meter_id bigint, day date, account_id bigint, period text, tier integer,
               energy numeric, cost numeric, charged numeric, charges bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT l.site_id, l.meter_id, x.day, l.account_id, x.period, x.tier,
           sum(x.energy), sum(x.cost), sum(x.charged), sum(x.charges)
      FROM prepay.site s
      JOIN prepay.ledger l ON l.site_id = s.site_id
     CROSS JOIN LATERAL prepay._entry_parts(l.amount, l.pieces, s.time_zone) AS x
     WHERE s.site_id = p_site_id AND l.kind = 'consumption'
       AND l.read_to > p_from::timestamp AT TIME ZONE s.time_zone
       AND l.read_from < p_to::timestamp AT TIME ZONE s.time_zone
       AND x.day >= p_from AND x.day < p_to
     GROUP BY l.site_id, l.meter_id, x.day, l.account_id, x.period, x.tier
$$;
COMMENT ON FUNCTION prepay.energy_from_ledger(integer, date, date) IS
'The rows of prepay.energy_day for local days [from, to), computed from the ledger''s consumption entries and their pricing records instead of the rollup: the reference the rollups are tested against, and the "raw" side of the reports benchmark.';

CREATE FUNCTION prepay.rebuild_rollups(p_site_id integer)
RETURNS TABLE (days bigint, months bigint, posting_days bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM prepay.site s WHERE s.site_id = p_site_id) THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id),
                              'prepay.site lists the sites.');
    END IF;
    PERFORM prepay._lock_site_rating(p_site_id);
    DELETE FROM prepay.energy_pending r WHERE r.site_id = p_site_id;
    DELETE FROM prepay.energy_day_folded r WHERE r.site_id = p_site_id;
    DELETE FROM prepay.energy_month_folded r WHERE r.site_id = p_site_id;
    DELETE FROM prepay.consumption_posting_day r WHERE r.site_id = p_site_id;
    INSERT INTO prepay.energy_day_folded
    SELECT * FROM prepay.energy_from_ledger(p_site_id, '-infinity', 'infinity');
    GET DIAGNOSTICS days = ROW_COUNT;
    INSERT INTO prepay.energy_month_folded
    SELECT r.site_id, r.meter_id, pg_catalog.date_trunc('month', r.day)::date, r.account_id, r.period, r.tier,
           sum(r.energy), sum(r.cost), sum(r.charged), sum(r.charges)
      FROM prepay.energy_day_folded r WHERE r.site_id = p_site_id
     GROUP BY 1, 2, 3, 4, 5, 6;
    GET DIAGNOSTICS months = ROW_COUNT;
    INSERT INTO prepay.consumption_posting_day
    SELECT l.site_id, (l.created_at AT TIME ZONE s.time_zone)::date, l.created_by, count(*), sum(l.amount)
      FROM prepay.ledger l JOIN prepay.site s ON s.site_id = l.site_id
     WHERE l.site_id = p_site_id AND l.kind = 'consumption'
     GROUP BY 1, 2, 3;
    GET DIAGNOSTICS posting_days = ROW_COUNT;
    RETURN NEXT;
END $$;
COMMENT ON FUNCTION prepay.rebuild_rollups(integer) IS
'Recompute a site''s rollups from its ledger (after loading ledger rows with triggers disabled, or to prove them): returns the rows written.  Takes the site''s rating lock.  PY007 unknown site.';

CREATE FUNCTION prepay.fold_rollups(p_site_id integer DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integer;
    moved_rows bigint;
    total bigint := 0;
BEGIN
    IF p_site_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM prepay.site x WHERE x.site_id = p_site_id) THEN
        PERFORM prepay._raise('PY007', 'unknown site', pg_catalog.format('There is no site %s.', p_site_id),
                              'prepay.site lists the sites.');
    END IF;
    FOR s IN SELECT x.site_id FROM prepay.site x WHERE p_site_id IS NULL OR x.site_id = p_site_id
              ORDER BY x.site_id LOOP
        PERFORM prepay._authorize(s, 'manage');
        -- no rating batch of the site is in flight past this point, so
        -- every delta committed so far is seen and none arrives meanwhile
        PERFORM prepay._lock_site_rating(s);
        WITH moved AS (
            DELETE FROM prepay.energy_pending p WHERE p.site_id = s RETURNING p.*
        ), days AS (
            INSERT INTO prepay.energy_day_folded AS r (site_id, meter_id, day, account_id, period, tier,
                                                       energy, cost, charged, charges)
            SELECT m.site_id, m.meter_id, m.day, m.account_id, m.period, m.tier,
                   sum(m.energy), sum(m.cost), sum(m.charged), sum(m.charges)
              FROM moved m
             GROUP BY m.site_id, m.meter_id, m.day, m.account_id, m.period, m.tier
            ON CONFLICT (site_id, meter_id, day, account_id, period, tier) DO UPDATE
               SET energy = r.energy + excluded.energy, cost = r.cost + excluded.cost,
                   charged = r.charged + excluded.charged, charges = r.charges + excluded.charges
        ), months AS (
            INSERT INTO prepay.energy_month_folded AS r (site_id, meter_id, month, account_id, period, tier,
                                                         energy, cost, charged, charges)
            SELECT m.site_id, m.meter_id, pg_catalog.date_trunc('month', m.day)::date, m.account_id, m.period, m.tier,
                   sum(m.energy), sum(m.cost), sum(m.charged), sum(m.charges)
              FROM moved m
             GROUP BY 1, 2, 3, 4, 5, 6
            ON CONFLICT (site_id, meter_id, month, account_id, period, tier) DO UPDATE
               SET energy = r.energy + excluded.energy, cost = r.cost + excluded.cost,
                   charged = r.charged + excluded.charged, charges = r.charges + excluded.charges
        )
        SELECT count(*) INTO moved_rows FROM moved;
        total := total + moved_rows;
    END LOOP;
    RETURN total;
END $$;
COMMENT ON FUNCTION prepay.fold_rollups(integer) IS
'Fold the rollup deltas of a site (NULL: every site) into energy_day_folded and energy_month_folded; returns the delta rows folded.  prepay.energy_day and energy_month read the same before and after: folding only keeps the deltas few, so that those views stay fast.  Takes each site''s rating lock for the length of the transaction (rating of the site waits).  Schedule it every minute with pg_cron: SELECT cron.schedule(''prepay-fold'', ''* * * * *'', ''SELECT prepay.fold_rollups()'').  Needs the manage capability at each site; PY007 unknown site.';

-- ---------------------------------------------------------------------
-- the room status board
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.room_status_at(p_site_id integer, p_at timestamptz)
RETURNS TABLE (site_id integer, building text, floor text, room text, meter_id bigint, meter_code text,
               account_id bigint, account_code text, account_name text, balance numeric, alarm_level smallint,
               alarm_colour text, relay_state prepay.relay_state, relay_state_at timestamptz, protected boolean,
               online boolean, lost_since timestamptz, today date, today_energy numeric, today_cost numeric,
               today_charged numeric, last_read_at timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.site_id, m.building, m.floor, m.room, m.meter_id, m.code, a.account_id, a.code, a.name, a.balance,
           a.alarm_level,
           CASE a.alarm_level WHEN 0 THEN 'green' WHEN 1 THEN 'yellow' WHEN 2 THEN 'orange' WHEN 3 THEN 'red' END,
           m.relay_state, m.relay_state_at, m.protect OR coalesce(a.protect, false),
           m.lost_since IS NULL AND g.lost_since IS NULL, least(m.lost_since, g.lost_since),
           (p_at AT TIME ZONE s.time_zone)::date,
           CASE WHEN a.account_id IS NOT NULL THEN coalesce(t.energy, 0) END,
           CASE WHEN a.account_id IS NOT NULL THEN coalesce(t.cost, 0) END,
           CASE WHEN a.account_id IS NOT NULL THEN coalesce(t.charged, 0) END,
           m.last_read_at
      FROM prepay.site s
      JOIN prepay.meter m ON m.site_id = s.site_id AND m.active
      LEFT JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id
      LEFT JOIN prepay.gateway g ON g.site_id = m.site_id AND g.gateway_id = m.gateway_id
      LEFT JOIN LATERAL (SELECT sum(e.energy) AS energy, sum(e.cost) AS cost, sum(e.charged) AS charged
                           FROM prepay.energy_day e
                          WHERE e.site_id = m.site_id AND e.meter_id = m.meter_id
                            AND e.day = (p_at AT TIME ZONE s.time_zone)::date
                            AND e.account_id = m.account_id) AS t ON true
     WHERE s.site_id = p_site_id
$$;
COMMENT ON FUNCTION prepay.room_status_at(integer, timestamptz) IS
'The room status board of a site as seen at p_at (its local day is "today"): one row per active meter; prepay.room_status is the same at now() for every site.';

CREATE VIEW prepay.room_status AS
SELECT b.* FROM prepay.site s CROSS JOIN LATERAL prepay.room_status_at(s.site_id, pg_catalog.now()) AS b;
COMMENT ON VIEW prepay.room_status IS 'Room status board: one row per active meter (room) with its account, balance, alarm colour, relay, online state and today''s usage.  Filter by site_id.';
COMMENT ON COLUMN prepay.room_status.site_id IS 'Site.';
COMMENT ON COLUMN prepay.room_status.building IS 'Building of the room.';
COMMENT ON COLUMN prepay.room_status.floor IS 'Floor of the room.';
COMMENT ON COLUMN prepay.room_status.room IS 'Room or shop number.';
COMMENT ON COLUMN prepay.room_status.meter_id IS 'Meter of the room.';
COMMENT ON COLUMN prepay.room_status.meter_code IS 'Meter number.';
COMMENT ON COLUMN prepay.room_status.account_id IS 'Account the meter is attached to; NULL for a vacant room.';
COMMENT ON COLUMN prepay.room_status.account_code IS 'Account number.';
COMMENT ON COLUMN prepay.room_status.account_name IS 'Tenant name.';
COMMENT ON COLUMN prepay.room_status.balance IS 'Wallet balance of the account.';
COMMENT ON COLUMN prepay.room_status.alarm_level IS 'Alarm level: 0 none, 1 low balance, 2 pre-trip, 3 arrears.';
COMMENT ON COLUMN prepay.room_status.alarm_colour IS 'The alarm level as a colour: green, yellow, orange, red.';
COMMENT ON COLUMN prepay.room_status.relay_state IS 'Last known relay state (closed or tripped); NULL if never known.';
COMMENT ON COLUMN prepay.room_status.relay_state_at IS 'When the relay state was learnt.';
COMMENT ON COLUMN prepay.room_status.protected IS 'Keep-power on the meter or the account: never tripped.';
COMMENT ON COLUMN prepay.room_status.online IS 'true unless the meter or its gateway is marked lost.';
COMMENT ON COLUMN prepay.room_status.lost_since IS 'Since when the meter (or its gateway, whichever is earlier) has not answered; NULL when online.';
COMMENT ON COLUMN prepay.room_status.today IS 'The site''s local date the today_* columns count.';
COMMENT ON COLUMN prepay.room_status.today_energy IS 'Energy charged to the account on this meter today (local day), kWh or m3.';
COMMENT ON COLUMN prepay.room_status.today_cost IS 'Exact cost of today''s energy.';
COMMENT ON COLUMN prepay.room_status.today_charged IS 'Whole cents posted for this meter by charges whose interval starts today.';
COMMENT ON COLUMN prepay.room_status.last_read_at IS 'Time of the meter''s last rated reading.';

-- ---------------------------------------------------------------------
-- energy reports
-- ---------------------------------------------------------------------

CREATE VIEW prepay.energy_meter_daily AS
SELECT e.site_id, e.day, e.meter_id, m.code AS meter_code, m.building, m.floor, m.room,
       e.account_id, a.code AS account_code, e.period, e.tier, e.energy, e.cost, e.charged, e.charges
  FROM prepay.energy_day e
  JOIN prepay.meter m ON m.site_id = e.site_id AND m.meter_id = e.meter_id
  JOIN prepay.account a ON a.site_id = e.site_id AND a.account_id = e.account_id;
COMMENT ON VIEW prepay.energy_meter_daily IS 'Energy and cost per meter, account, local day, time-of-use period and tier (rollup energy_day).';

CREATE VIEW prepay.energy_meter_monthly AS
SELECT e.site_id, e.month, e.meter_id, m.code AS meter_code, m.building, m.floor, m.room,
       e.account_id, a.code AS account_code, e.period, e.tier, e.energy, e.cost, e.charged, e.charges
  FROM prepay.energy_month e
  JOIN prepay.meter m ON m.site_id = e.site_id AND m.meter_id = e.meter_id
  JOIN prepay.account a ON a.site_id = e.site_id AND a.account_id = e.account_id;
COMMENT ON VIEW prepay.energy_meter_monthly IS 'Energy and cost per meter, account, local month, time-of-use period and tier (rollup energy_month).';

CREATE VIEW prepay.energy_meter_yearly AS
SELECT e.site_id, pg_catalog.date_part('year', e.month)::integer AS year, e.meter_id, m.code AS meter_code,
       m.building, m.floor, m.room, e.account_id, a.code AS account_code, e.period, e.tier,
       sum(e.energy) AS energy, sum(e.cost) AS cost, sum(e.charged) AS charged, sum(e.charges) AS charges
  FROM prepay.energy_month e
  JOIN prepay.meter m ON m.site_id = e.site_id AND m.meter_id = e.meter_id
  JOIN prepay.account a ON a.site_id = e.site_id AND a.account_id = e.account_id
 GROUP BY e.site_id, 2, e.meter_id, m.code, m.building, m.floor, m.room, e.account_id, a.code, e.period, e.tier;
COMMENT ON VIEW prepay.energy_meter_yearly IS 'Energy and cost per meter, account, local calendar year, time-of-use period and tier (from energy_month).';

CREATE VIEW prepay.energy_account_daily AS
SELECT e.site_id, e.day, e.account_id, a.code AS account_code, a.name AS account_name, e.period, e.tier,
       sum(e.energy) AS energy, sum(e.cost) AS cost, sum(e.charged) AS charged, sum(e.charges) AS charges
  FROM prepay.energy_day e
  JOIN prepay.account a ON a.site_id = e.site_id AND a.account_id = e.account_id
 GROUP BY e.site_id, e.day, e.account_id, a.code, a.name, e.period, e.tier;
COMMENT ON VIEW prepay.energy_account_daily IS 'Energy and cost per account (all its meters), local day, time-of-use period and tier.';

CREATE VIEW prepay.energy_account_monthly AS
SELECT e.site_id, e.month, e.account_id, a.code AS account_code, a.name AS account_name, e.period, e.tier,
       sum(e.energy) AS energy, sum(e.cost) AS cost, sum(e.charged) AS charged, sum(e.charges) AS charges
  FROM prepay.energy_month e
  JOIN prepay.account a ON a.site_id = e.site_id AND a.account_id = e.account_id
 GROUP BY e.site_id, e.month, e.account_id, a.code, a.name, e.period, e.tier;
COMMENT ON VIEW prepay.energy_account_monthly IS 'Energy and cost per account (all its meters), local month, time-of-use period and tier: the monthly energy-and-cost report.';

CREATE VIEW prepay.energy_account_yearly AS
SELECT e.site_id, pg_catalog.date_part('year', e.month)::integer AS year, e.account_id, a.code AS account_code,
       a.name AS account_name, e.period, e.tier,
       sum(e.energy) AS energy, sum(e.cost) AS cost, sum(e.charged) AS charged, sum(e.charges) AS charges
  FROM prepay.energy_month e
  JOIN prepay.account a ON a.site_id = e.site_id AND a.account_id = e.account_id
 GROUP BY e.site_id, 2, e.account_id, a.code, a.name, e.period, e.tier;
COMMENT ON VIEW prepay.energy_account_yearly IS 'Energy and cost per account, local calendar year, time-of-use period and tier.';

CREATE VIEW prepay.energy_yoy_account AS
WITH m AS (
    SELECT e.site_id, e.account_id, e.month, sum(e.energy) AS energy, sum(e.cost) AS cost
      FROM prepay.energy_month e
     GROUP BY e.site_id, e.account_id, e.month
)
SELECT cur.site_id, cur.month, cur.account_id, a.code AS account_code, a.name AS account_name,
       cur.energy, cur.cost, prev.energy AS energy_year_before, prev.cost AS cost_year_before,
       round((cur.energy - prev.energy) * 100 / NULLIF(prev.energy, 0), 1) AS energy_change_pct
  FROM m cur
  JOIN prepay.account a ON a.site_id = cur.site_id AND a.account_id = cur.account_id
  LEFT JOIN m prev ON prev.site_id = cur.site_id AND prev.account_id = cur.account_id
                  AND prev.month = (cur.month - interval '1 year')::date;
COMMENT ON VIEW prepay.energy_yoy_account IS 'Year-over-year comparison per account and local month: this month''s energy and cost against the same month a year before.';

CREATE VIEW prepay.energy_yoy_site AS
WITH m AS (
    SELECT e.site_id, e.month, sum(e.energy) AS energy, sum(e.cost) AS cost, count(DISTINCT e.account_id) AS accounts
      FROM prepay.energy_month e
     GROUP BY e.site_id, e.month
)
SELECT cur.site_id, cur.month, cur.accounts, cur.energy, cur.cost, prev.accounts AS accounts_year_before,
       prev.energy AS energy_year_before, prev.cost AS cost_year_before,
       round((cur.energy - prev.energy) * 100 / NULLIF(prev.energy, 0), 1) AS energy_change_pct
  FROM m cur
  LEFT JOIN m prev ON prev.site_id = cur.site_id AND prev.month = (cur.month - interval '1 year')::date;
COMMENT ON VIEW prepay.energy_yoy_site IS 'Year-over-year comparison per site and local month: the site''s charged energy and cost against the same month a year before.';

-- ---------------------------------------------------------------------
-- finance
-- ---------------------------------------------------------------------

CREATE VIEW prepay.finance_daily AS
SELECT l.site_id, (l.created_at AT TIME ZONE s.time_zone)::date AS day, l.kind, l.channel, l.created_by AS operator,
       count(*) AS entries,
       coalesce(sum(l.amount) FILTER (WHERE l.amount > 0), 0) AS money_in,
       coalesce(-sum(l.amount) FILTER (WHERE l.amount < 0), 0) AS money_out,
       sum(l.amount) AS net
  FROM prepay.ledger l
  JOIN prepay.site s ON s.site_id = l.site_id
 WHERE l.kind <> 'consumption'
 GROUP BY l.site_id, 2, l.kind, l.channel, l.created_by
UNION ALL
SELECT c.site_id, c.day, 'consumption'::prepay.ledger_kind, NULL, c.created_by, c.entries,
       0, -c.amount, c.amount
  FROM prepay.consumption_posting_day c;
COMMENT ON VIEW prepay.finance_daily IS 'Money movements per site, local day of posting, ledger kind, channel and operator: recharges, refunds, reversals, fees, consumption and every other kind (grouped generically by kind).';

CREATE VIEW prepay.finance_monthly AS
SELECT f.site_id, pg_catalog.date_trunc('month', f.day)::date AS month, f.kind, f.channel, f.operator,
       sum(f.entries) AS entries, sum(f.money_in) AS money_in, sum(f.money_out) AS money_out, sum(f.net) AS net
  FROM prepay.finance_daily f
 GROUP BY f.site_id, 2, f.kind, f.channel, f.operator;
COMMENT ON VIEW prepay.finance_monthly IS 'Money movements per site, local month, ledger kind, channel and operator.';

CREATE VIEW prepay.finance_yearly AS
SELECT f.site_id, pg_catalog.date_part('year', f.day)::integer AS year, f.kind, f.channel, f.operator,
       sum(f.entries) AS entries, sum(f.money_in) AS money_in, sum(f.money_out) AS money_out, sum(f.net) AS net
  FROM prepay.finance_daily f
 GROUP BY f.site_id, 2, f.kind, f.channel, f.operator;
COMMENT ON VIEW prepay.finance_yearly IS 'Money movements per site, local calendar year, ledger kind, channel and operator.';

CREATE VIEW prepay.order_overview AS
SELECT l.site_id, l.entry_id, l.created_at, (l.created_at AT TIME ZONE s.time_zone)::date AS day, l.kind,
       l.account_id, a.code AS account_code, a.name AS account_name, l.amount, l.balance_after,
       l.channel, l.external_ref, l.created_by AS operator, l.reason, l.reverses_entry,
       r.kind AS reversed_kind, rv.entry_id AS reversed_by
  FROM prepay.ledger l
  JOIN prepay.site s ON s.site_id = l.site_id
  LEFT JOIN prepay.account a ON a.site_id = l.site_id AND a.account_id = l.account_id
  LEFT JOIN prepay.ledger r ON r.site_id = l.site_id AND r.entry_id = l.reverses_entry
  LEFT JOIN prepay.ledger rv ON rv.site_id = l.site_id AND rv.reverses_entry = l.entry_id
 WHERE l.kind <> 'consumption';
COMMENT ON VIEW prepay.order_overview IS 'Every money movement other than a consumption charge (recharges, refunds, reversals, closing refunds, fees, allowances, bills, adjustments, ...) with who posted it; consumption charges are summed by finance_daily and listed per account by prepay.account_trail.';

-- ---------------------------------------------------------------------
-- the energy and money trail of an account
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.account_trail(p_site_id integer, p_account_id bigint, p_from timestamptz, p_to timestamptz,
                                     p_consumption_by_day boolean DEFAULT false)
RETURNS TABLE (line bigint, at timestamptz, kind text, entry_id bigint, amount numeric, balance numeric,
               energy numeric, meter_id bigint, read_from timestamptz, read_to timestamptz, channel text,
               external_ref text, operator text, reason text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tz text;
    opening numeric;
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_from >= p_to THEN
        PERFORM prepay._raise('22023', 'the trail needs a period with from before to',
            pg_catalog.format('from %s, to %s', p_from, p_to), 'Pass two instants, the earlier first.');
    END IF;
    SELECT s.time_zone INTO tz FROM prepay.account a JOIN prepay.site s ON s.site_id = a.site_id
     WHERE a.site_id = p_site_id AND a.account_id = p_account_id;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY001', 'unknown account',
            pg_catalog.format('Site %s has no account %s.', p_site_id, p_account_id),
            'Check the site and account ids; prepay.account lists the accounts.');
    END IF;
    SELECT coalesce(sum(l.amount), 0) INTO opening FROM prepay.ledger l
     WHERE l.site_id = p_site_id AND l.account_id = p_account_id AND l.created_at < p_from;
    RETURN QUERY
    WITH moves AS (
        SELECT min(l.entry_id) AS first_entry, max(l.created_at) AS at, l.kind::text AS kind,
               CASE WHEN count(*) = 1 THEN min(l.entry_id) END AS entry_id, sum(l.amount) AS amount,
               sum(l.energy) AS energy,
               CASE WHEN count(DISTINCT l.meter_id) = 1 THEN min(l.meter_id) END AS meter_id,
               min(l.read_from) AS read_from, max(l.read_to) AS read_to, min(l.channel) AS channel,
               min(l.external_ref) AS external_ref, min(l.created_by) AS operator,
               CASE WHEN count(*) = 1 THEN min(l.reason) ELSE pg_catalog.format('%s charges', count(*)) END AS reason
          FROM prepay.ledger l
         WHERE l.site_id = p_site_id AND l.account_id = p_account_id
           AND l.created_at >= p_from AND l.created_at < p_to
         GROUP BY CASE WHEN p_consumption_by_day AND l.kind = 'consumption'
                       THEN -((l.created_at AT TIME ZONE tz)::date - date '2000-01-01')
                       ELSE l.entry_id END,
                  l.kind
    ), ordered AS (
        SELECT m.*, opening + sum(m.amount) OVER (ORDER BY m.first_entry) AS running,
               pg_catalog.row_number() OVER (ORDER BY m.first_entry) AS n
          FROM moves m
    )
    SELECT 0::bigint, p_from, 'opening'::text, NULL::bigint, NULL::numeric, opening, NULL::numeric, NULL::bigint,
           NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::text, NULL::text, NULL::text
    UNION ALL
    SELECT o.n, o.at, o.kind, o.entry_id, o.amount, o.running, o.energy, o.meter_id, o.read_from, o.read_to,
           o.channel, o.external_ref, o.operator, o.reason
      FROM ordered o
    UNION ALL
    SELECT (SELECT count(*) FROM moves) + 1, p_to, 'closing', NULL, (SELECT sum(m.amount) FROM moves m),
           opening + coalesce((SELECT sum(m.amount) FROM moves m), 0),
           (SELECT sum(m.energy) FROM moves m), NULL, NULL, NULL, NULL, NULL, NULL, NULL
     ORDER BY 1;
END $$;
COMMENT ON FUNCTION prepay.account_trail(integer, bigint, timestamptz, timestamptz, boolean) IS
'The energy and money trail of an account for [from, to) by posting time: an opening line (the balance before from), every ledger entry in entry order with the running balance and, for consumption, energy, meter and interval (with p_consumption_by_day, one line per local day of posting for consumption charges), and a closing line (the net movement, the balance at to and the energy).  PY001 unknown account; 22023 empty period.';

-- ---------------------------------------------------------------------
-- lost contact, alarms, arrears
-- ---------------------------------------------------------------------

CREATE VIEW prepay.lost_meters AS
SELECT m.site_id, m.meter_id, m.code AS meter_code, m.building, m.floor, m.room, m.gateway_id,
       g.name AS gateway_name, m.account_id, a.code AS account_code, a.name AS account_name,
       CASE WHEN g.lost_since IS NOT NULL THEN 'gateway' ELSE 'meter' END AS cause,
       least(m.lost_since, g.lost_since) AS lost_since,
       pg_catalog.now() - least(m.lost_since, g.lost_since) AS lost_for, m.last_read_at
  FROM prepay.meter m
  LEFT JOIN prepay.gateway g ON g.site_id = m.site_id AND g.gateway_id = m.gateway_id
  LEFT JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id
 WHERE m.active AND (m.lost_since IS NOT NULL OR g.lost_since IS NOT NULL);
COMMENT ON VIEW prepay.lost_meters IS 'Active meters out of contact: marked lost themselves or behind a lost gateway (the agent marks both).';

CREATE VIEW prepay.lost_gateways AS
SELECT g.site_id, g.gateway_id, g.name AS gateway_name, g.transport, coalesce(g.host, g.serial_device) AS address,
       g.agent_id, g.lost_since, pg_catalog.now() - g.lost_since AS lost_for,
       (SELECT count(*) FROM prepay.meter m WHERE m.site_id = g.site_id AND m.gateway_id = g.gateway_id AND m.active) AS meters,
       (SELECT max(m.last_read_at) FROM prepay.meter m WHERE m.site_id = g.site_id AND m.gateway_id = g.gateway_id) AS last_read_at
  FROM prepay.gateway g
 WHERE g.lost_since IS NOT NULL;
COMMENT ON VIEW prepay.lost_gateways IS 'Gateways out of contact, with the number of meters they cut off.';

CREATE VIEW prepay.alarm_history AS
SELECT al.site_id, al.alarm_id, al.kind, al.raised_at, (al.raised_at AT TIME ZONE s.time_zone)::date AS day,
       al.cleared_at, al.cleared_at IS NULL AS active, coalesce(al.cleared_at, pg_catalog.now()) - al.raised_at AS duration,
       al.account_id, a.code AS account_code, a.name AS account_name,
       al.meter_id, m.code AS meter_code, m.building, m.floor, m.room, al.detail
  FROM prepay.alarm al
  JOIN prepay.site s ON s.site_id = al.site_id
  LEFT JOIN prepay.account a ON a.site_id = al.site_id AND a.account_id = al.account_id
  LEFT JOIN prepay.meter m ON m.site_id = al.site_id AND m.meter_id = al.meter_id;
COMMENT ON VIEW prepay.alarm_history IS 'Every alarm, active and cleared (balance ladder, bad readings, lost meters and gateways), with where and whose.';

CREATE VIEW prepay.active_alarms AS
SELECT h.site_id, h.alarm_id, h.kind, h.raised_at, h.duration AS age, h.account_id, h.account_code, h.account_name,
       h.meter_id, h.meter_code, h.building, h.floor, h.room, h.detail
  FROM prepay.alarm_history h
 WHERE h.active;
COMMENT ON VIEW prepay.active_alarms IS 'Alarms still active (not cleared).';

CREATE VIEW prepay.arrears AS
SELECT a.site_id, a.account_id, a.code AS account_code, a.name AS account_name, a.mode, a.balance,
       -a.balance AS owed, a.credit_limit, a.alarm_level, a.protect,
       (SELECT min(l.created_at) FROM prepay.ledger l
         WHERE l.site_id = a.site_id AND l.account_id = a.account_id
           AND l.entry_id > coalesce((SELECT max(z.entry_id) FROM prepay.ledger z
                                       WHERE z.site_id = a.site_id AND z.account_id = a.account_id
                                         AND z.balance_after >= 0), 0)) AS arrears_since,
       p.created_at AS last_payment_at, p.amount AS last_payment,
       (SELECT count(*) FROM prepay.meter m WHERE m.site_id = a.site_id AND m.account_id = a.account_id
           AND m.active AND m.relay_state = 'tripped') AS meters_tripped,
       a.phone, a.email
  FROM prepay.account a
  LEFT JOIN LATERAL (SELECT l.created_at, l.amount FROM prepay.ledger l
                      WHERE l.site_id = a.site_id AND l.account_id = a.account_id AND l.kind = 'recharge'
                      ORDER BY l.entry_id DESC LIMIT 1) AS p ON true
 WHERE a.balance < 0;
COMMENT ON VIEW prepay.arrears IS 'Accounts owing money (balance below zero), prepaid and postpaid, with since when, the last payment and how many meters are tripped.';

-- ---------------------------------------------------------------------
-- balance forecast, cuts ahead and the reminder before a cut
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.balance_forecast_at(p_site_id integer, p_at timestamptz, p_within interval DEFAULT NULL)
RETURNS TABLE (site_id integer, account_id bigint, account_code text, account_name text, mode prepay.account_mode,
               balance numeric, credit_limit numeric, available numeric, protect boolean, meters bigint,
               meters_to_cut bigint, recent_energy_per_day numeric, recent_cost_per_day numeric,
               last_read_at timestamptz, run_out_at timestamptz, method text, cut_at timestamptz, status text,
               reason text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH s AS (
        SELECT st.site_id, st.time_zone, st.currency,
               ((p_at AT TIME ZONE st.time_zone)::date
                - pg_catalog.floor(EXTRACT(epoch FROM st.forecast_window) / 86400)::integer) AS first_day,
               (p_at AT TIME ZONE st.time_zone)::date AS today
          FROM prepay.site st WHERE st.site_id = p_site_id
    ), mt AS (
        -- each active meter of an open account: its recent consumption rate
        SELECT a.account_id, m.meter_id, coalesce(m.tariff_id, a.tariff_id) AS tariff_id, m.last_read_at,
               m.cycle_used, m.cycle_start, NOT m.protect AS cuttable, m.relay_state,
               r.energy, r.cost,
               EXTRACT(epoch FROM m.last_read_at
                   - greatest(r.first_day::timestamp AT TIME ZONE s.time_zone, a.opened_at)) / 3600 AS hours
          FROM s
          JOIN prepay.account a ON a.site_id = s.site_id AND a.closed_at IS NULL
          JOIN prepay.meter m ON m.site_id = a.site_id AND m.account_id = a.account_id AND m.active
          LEFT JOIN LATERAL (SELECT sum(e.energy) AS energy, sum(e.cost) AS cost, min(e.day) AS first_day
                               FROM prepay.energy_day e
                              WHERE e.site_id = m.site_id AND e.meter_id = m.meter_id AND e.account_id = a.account_id
                                AND e.day >= s.first_day AND e.day <= s.today) AS r ON true
    ), ac AS (
        SELECT a.account_id, a.code, a.name, a.mode, a.balance, a.credit_limit, a.balance + a.credit_limit AS available,
               a.protect, a.opened_at,
               count(mt.meter_id) AS meters, count(mt.meter_id) FILTER (WHERE mt.cuttable) AS meters_to_cut,
               count(mt.meter_id) FILTER (WHERE mt.cuttable AND mt.relay_state = 'tripped') AS meters_cut,
               -- a rate needs a minute (the agent's usual poll interval) of consumption: over
               -- milliseconds (a back-dated attach with back-filled readings) it is noise
               sum(mt.energy * 24 / mt.hours) FILTER (WHERE mt.hours >= 1.0 / 60) AS energy_per_day,
               sum(mt.cost * 24 / mt.hours) FILTER (WHERE mt.hours >= 1.0 / 60) AS cost_per_day,
               coalesce(bool_or(mt.energy > 0 AND mt.hours < 1.0 / 60), false) AS short_history,
               -- 48 hours at that rate must stay far inside the tariff engine's range (about 9.2e9
               -- per charge), else the account keeps the recent-average estimate
               coalesce(bool_or(mt.hours >= 1.0 / 60 AND (mt.cost * 48 / mt.hours > 1e8
                                                     OR mt.energy * 48 / mt.hours >= 1e12)), false) AS beyond_pricing,
               max(mt.last_read_at) AS last_read_at,
               (SELECT min(c.not_before) FROM prepay.command c
                 WHERE c.site_id = a.site_id AND c.account_id = a.account_id AND c.action = 'trip'
                   AND c.state = 'queued') AS trip_queued_for
          FROM s
          JOIN prepay.account a ON a.site_id = s.site_id AND a.closed_at IS NULL
          LEFT JOIN mt ON mt.account_id = a.account_id
         GROUP BY a.site_id, a.account_id
    ), todo AS (
        -- accounts worth pricing ahead: money left, consumption, and (with p_within) a rough runway
        -- at most four times p_within, so that a price peak cannot hide a cut
        SELECT ac.* FROM ac
         WHERE ac.mode = 'prepaid' AND ac.available > 0 AND ac.cost_per_day > 0 AND NOT ac.beyond_pricing
           AND (p_within IS NULL
                OR ac.available / ac.cost_per_day * 86400 <= 4 * EXTRACT(epoch FROM p_within))
    ), pieces AS (
        -- the next 48 hours of each meter at its recent rate, priced with its tariff as it stands
        SELECT mt.account_id, p.piece_from, p.piece_to, p.amount
          FROM todo JOIN mt ON mt.account_id = todo.account_id
         CROSS JOIN LATERAL prepay._pieces(prepay._rate(p_site_id, mt.tariff_id, mt.last_read_at,
                                                        mt.last_read_at + interval '48 hours',
                                                        round(mt.energy * 48 / mt.hours, 3),
                                                        mt.cycle_used, mt.cycle_start, NULL)) AS p
         WHERE mt.hours >= 1.0 / 60 AND mt.energy > 0
    ), walk AS (
        SELECT pc.account_id, pc.piece_from, pc.piece_to, pc.amount,
               sum(pc.amount) OVER (PARTITION BY pc.account_id ORDER BY pc.piece_to, pc.piece_from
                                    ROWS UNBOUNDED PRECEDING) AS spent
          FROM pieces pc
    ), priced AS (
        SELECT todo.account_id,
               (SELECT pg_catalog.date_trunc('second', w.piece_from + (w.piece_to - w.piece_from)
                           * ((todo.available - (w.spent - w.amount)) / w.amount)::double precision)
                  FROM walk w WHERE w.account_id = todo.account_id AND w.spent >= todo.available AND w.amount > 0
                 ORDER BY w.spent LIMIT 1) AS crossing,
               (SELECT sum(w.amount) FROM walk w WHERE w.account_id = todo.account_id) AS cost_48h
          FROM todo
    ), ahead AS (
        -- beyond 48 hours: days of money left at the 48-hour cost, else at the recent average
        SELECT ac.*, pr.crossing,
               CASE WHEN pr.crossing IS NOT NULL THEN NULL
                    WHEN pr.cost_48h > 0 THEN ac.available / pr.cost_48h * 2
                    WHEN ac.mode = 'prepaid' AND ac.available > 0 AND ac.cost_per_day > 0
                         THEN ac.available / ac.cost_per_day
               END AS days_left,
               CASE WHEN pr.crossing IS NOT NULL THEN 'tariff, 48 hours ahead'
                    WHEN pr.cost_48h > 0 THEN 'tariff, 48 hours extrapolated'
                    WHEN ac.mode = 'prepaid' AND ac.available > 0 AND ac.cost_per_day > 0 THEN 'recent average cost'
               END AS method
          FROM ac LEFT JOIN priced pr ON pr.account_id = ac.account_id
    ), f AS (
        -- no forecast rather than an error: a rate over less than a minute, or money for
        -- more than 100 years (a time that far ahead is out of the timestamp's range)
        SELECT ah.*,
               CASE WHEN ah.crossing IS NOT NULL THEN ah.crossing
                    WHEN ah.days_left <= 36500 THEN pg_catalog.date_trunc('second', ah.last_read_at
                         + interval '1 day' * ah.days_left::double precision)
               END AS run_out_at,
               CASE WHEN ah.days_left > 36500 THEN 'money for more than 100 years at the recent rate'
                    WHEN ah.crossing IS NULL AND ah.days_left IS NULL AND ah.short_history
                         THEN 'less than a minute of consumption since the account opened'
               END AS no_forecast
          FROM ahead ah
    ), st AS (
        SELECT f.*,
               CASE WHEN f.mode = 'postpaid' THEN 'postpaid'
                    WHEN f.meters = 0 THEN 'no meter'
                    WHEN f.available <= 0 AND f.trip_queued_for IS NOT NULL THEN 'trip queued'
                    WHEN f.protect OR f.meters_to_cut = 0 THEN 'protected'
                    WHEN f.available <= 0 AND f.meters_cut = f.meters_to_cut THEN 'cut'
                    WHEN f.available <= 0 THEN 'in arrears'
                    WHEN f.no_forecast IS NOT NULL THEN 'no forecast'
                    WHEN f.run_out_at IS NULL THEN 'no recent consumption'
                    ELSE 'forecast' END AS status
          FROM f
    )
    SELECT p_site_id, st.account_id, st.code, st.name, st.mode, st.balance, st.credit_limit, st.available,
           st.protect, st.meters, st.meters_to_cut, round(st.energy_per_day, 3), round(st.cost_per_day, 2),
           st.last_read_at, st.run_out_at, CASE WHEN st.run_out_at IS NOT NULL THEN st.method END,
           CASE st.status WHEN 'trip queued' THEN st.trip_queued_for
                          WHEN 'forecast' THEN prepay.cut_allowed_at(p_site_id, st.run_out_at) END,
           st.status,
           CASE st.status
               WHEN 'postpaid' THEN 'postpaid accounts are billed, never cut'
               WHEN 'no meter' THEN 'no active meter attached'
               WHEN 'trip queued' THEN pg_catalog.format('in arrears (%s %s); the trip is queued for %s',
                                                         st.balance, s.currency,
                                                         pg_catalog.to_char(st.trip_queued_for AT TIME ZONE s.time_zone, 'YYYY-MM-DD HH24:MI'))
               WHEN 'protected' THEN CASE WHEN st.available <= 0
                   THEN pg_catalog.format('in arrears (%s %s) but on keep-power: never cut', st.balance, s.currency)
                   ELSE pg_catalog.format('on keep-power: never cut%s', CASE WHEN st.run_out_at IS NOT NULL THEN
                        pg_catalog.format('; reaches arrears about %s',
                                          pg_catalog.to_char(st.run_out_at AT TIME ZONE s.time_zone, 'YYYY-MM-DD HH24:MI')) ELSE '' END) END
               WHEN 'cut' THEN pg_catalog.format('in arrears (%s %s); supply is cut', st.balance, s.currency)
               WHEN 'in arrears' THEN pg_catalog.format('in arrears (%s %s); the trip is under way', st.balance, s.currency)
               WHEN 'no recent consumption' THEN 'no consumption in the forecast window'
               WHEN 'no forecast' THEN pg_catalog.format('no forecast: %s', st.no_forecast)
               ELSE pg_catalog.format('%s %s left (balance %s + credit %s) at %s per day: arrears about %s (%s)%s',
                        st.available, s.currency, st.balance, st.credit_limit, round(st.cost_per_day, 2),
                        pg_catalog.to_char(st.run_out_at AT TIME ZONE s.time_zone, 'YYYY-MM-DD HH24:MI'), st.method,
                        CASE WHEN prepay.cut_allowed_at(p_site_id, st.run_out_at) > st.run_out_at
                             THEN pg_catalog.format('; a no-cut window defers the cut to %s',
                                  pg_catalog.to_char(prepay.cut_allowed_at(p_site_id, st.run_out_at) AT TIME ZONE s.time_zone,
                                                     'YYYY-MM-DD HH24:MI'))
                             ELSE '' END)
           END
      FROM st CROSS JOIN s
$$;
COMMENT ON FUNCTION prepay.balance_forecast_at(integer, timestamptz, interval) IS
'Balance forecast of every open account of a site as seen at p_at: the recent consumption rate of each active meter (energy_day over the site''s forecast_window, from the first day with consumption in it, up to its last reading), the next 48 hours at that rate priced with the meter''s tariff as it stands (time of use, tiers, scheduled price changes), and the instant the available money (balance + credit limit) runs out (beyond 48 hours extrapolated), then the predicted cut: after any no-cut window, never for keep-power, the queued trip''s time for an account already in arrears.  With p_within only accounts whose rough runway is within 4 x p_within are priced (the others get the recent-average estimate).  A meter''s rate needs a minute of consumption since the account opened; an account without a usable rate (or with money for more than 100 years) gets status no forecast and NULL run_out_at and cut_at, never an error, so one degenerate account cannot break the forecast of the others.';

CREATE VIEW prepay.balance_forecast AS
SELECT f.* FROM prepay.site s CROSS JOIN LATERAL prepay.balance_forecast_at(s.site_id, pg_catalog.now()) AS f;
COMMENT ON VIEW prepay.balance_forecast IS 'Balance forecast of every open account now: expected run-out time from recent consumption and the active tariff, and the predicted cut.';

CREATE FUNCTION prepay.cut_forecast(p_site_id integer, p_horizon interval DEFAULT '24 hours',
                                    p_at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (site_id integer, account_id bigint, account_code text, account_name text, balance numeric,
               available numeric, run_out_at timestamptz, cut_at timestamptz, will_be_cut boolean,
               meters_to_cut bigint, status text, why text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT f.site_id, f.account_id, f.account_code, f.account_name, f.balance, f.available, f.run_out_at, f.cut_at,
           f.cut_at IS NOT NULL, f.meters_to_cut, f.status, f.reason
      FROM prepay.balance_forecast_at(p_site_id, p_at, p_horizon) AS f
     WHERE f.cut_at <= p_at + p_horizon
        OR (f.status = 'protected' AND f.run_out_at <= p_at + p_horizon)
     ORDER BY coalesce(f.cut_at, f.run_out_at), f.account_id
$$;
COMMENT ON FUNCTION prepay.cut_forecast(integer, interval, timestamptz) IS
'Who will be cut within p_horizon (default the next 24 hours) and why: accounts whose predicted cut (after no-cut windows) or queued trip falls in the horizon, plus keep-power accounts that reach arrears in it (will_be_cut false).';

CREATE VIEW prepay.cuts_next_24h AS
SELECT c.* FROM prepay.site s CROSS JOIN LATERAL prepay.cut_forecast(s.site_id) AS c;
COMMENT ON VIEW prepay.cuts_next_24h IS 'Who will be cut in the next 24 hours and why, every site.';

CREATE SEQUENCE prepay.cut_reminder_id_seq;
COMMENT ON SEQUENCE prepay.cut_reminder_id_seq IS 'Source of cut reminder ids.';
CREATE TABLE prepay.cut_reminder (
    site_id          integer NOT NULL,
    reminder_id      bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.cut_reminder_id_seq'),
    account_id       bigint NOT NULL,
    funded_by_entry  bigint NOT NULL,
    predicted_cut    timestamptz NOT NULL,
    notification_id  bigint NOT NULL,
    sent_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (site_id, reminder_id),
    UNIQUE (site_id, account_id, funded_by_entry),
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account
);
COMMENT ON TABLE prepay.cut_reminder IS 'Final reminders sent before a predicted cut: at most one per account and predicted cut, where a predicted cut is identified by the account''s last credit (a new payment starts a new one).';
COMMENT ON COLUMN prepay.cut_reminder.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.cut_reminder.reminder_id IS 'Reminder id.';
COMMENT ON COLUMN prepay.cut_reminder.account_id IS 'Account reminded.';
COMMENT ON COLUMN prepay.cut_reminder.funded_by_entry IS 'The account''s last ledger entry with a positive amount when the reminder was sent (0 if none): the money the predicted cut ends.';
COMMENT ON COLUMN prepay.cut_reminder.predicted_cut IS 'The cut predicted when the reminder was sent.';
COMMENT ON COLUMN prepay.cut_reminder.notification_id IS 'The notification written (prepay.notification, kind cut_reminder).';
COMMENT ON COLUMN prepay.cut_reminder.sent_at IS 'When the reminder was written.';

CREATE FUNCTION prepay.send_cut_reminders(p_site_id integer DEFAULT NULL, p_at timestamptz DEFAULT pg_catalog.now())
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN
        WITH due AS (
            SELECT s.site_id, s.currency, s.time_zone, c.account_id, c.cut_at, c.balance
              FROM prepay.site s
             CROSS JOIN LATERAL prepay.cut_forecast(s.site_id, s.cut_reminder_lead, p_at) AS c
             WHERE (p_site_id IS NULL OR s.site_id = p_site_id) AND c.will_be_cut
        ), keyed AS (
            SELECT d.*, coalesce((SELECT l.entry_id FROM prepay.ledger l
                                   WHERE l.site_id = d.site_id AND l.account_id = d.account_id AND l.amount > 0
                                   ORDER BY l.entry_id DESC LIMIT 1), 0) AS funded_by
              FROM due d
        )
        INSERT INTO prepay.cut_reminder (site_id, account_id, funded_by_entry, predicted_cut, notification_id, sent_at)
        SELECT k.site_id, k.account_id, k.funded_by, k.cut_at, pg_catalog.nextval('prepay.notification_id_seq'), p_at
          FROM keyed k
        ON CONFLICT (site_id, account_id, funded_by_entry) DO NOTHING
        RETURNING cut_reminder.site_id, cut_reminder.account_id, cut_reminder.predicted_cut, cut_reminder.notification_id
    LOOP
        INSERT INTO prepay.notification (site_id, notification_id, account_id, kind, alarm_level, balance, phone, email,
                                         message, created_at)
        SELECT a.site_id, r.notification_id, a.account_id, 'cut_reminder', a.alarm_level, a.balance, a.phone, a.email,
               pg_catalog.format('Account %s: supply will be cut at about %s (balance %s %s). Please recharge now.',
                                 a.code, pg_catalog.to_char(r.predicted_cut AT TIME ZONE s.time_zone, 'YYYY-MM-DD HH24:MI'),
                                 a.balance, s.currency),
               p_at
          FROM prepay.account a JOIN prepay.site s ON s.site_id = a.site_id
         WHERE a.site_id = r.site_id AND a.account_id = r.account_id;
        PERFORM pg_catalog.pg_notify('prepay_notification', r.site_id || '/' || r.notification_id);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.send_cut_reminders(integer, timestamptz) IS
'The final reminder before a cut: for every account of the site (every site when NULL) whose predicted cut (prepay.cut_forecast) falls within the site''s cut_reminder_lead (default 30 minutes), write one notification of kind cut_reminder (NOTIFY prepay_notification), once per account and predicted cut (prepay.cut_reminder).  Returns how many were written.  Idempotent: schedule it every few minutes (pg_cron: SELECT prepay.send_cut_reminders()).';

-- ---------------------------------------------------------------------
-- suspicious consumption
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.multiplier_change_id_seq;
COMMENT ON SEQUENCE prepay.multiplier_change_id_seq IS 'Source of multiplier change ids.';
CREATE TABLE prepay.multiplier_change (
    site_id        integer NOT NULL,
    change_id      bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.multiplier_change_id_seq'),
    meter_id       bigint NOT NULL,
    old_multiplier integer NOT NULL,
    new_multiplier integer NOT NULL,
    changed_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    changed_by     text NOT NULL DEFAULT SESSION_USER,
    PRIMARY KEY (site_id, change_id),
    FOREIGN KEY (site_id, meter_id) REFERENCES prepay.meter
);
CREATE INDEX multiplier_change_meter ON prepay.multiplier_change (site_id, meter_id, changed_at);
COMMENT ON INDEX prepay.multiplier_change_meter IS 'A meter''s multiplier history.';
COMMENT ON TABLE prepay.multiplier_change IS 'Every change of a meter''s multiplier (CT x PT ratio), with who made it: written by the trigger meter_multiplier_change.  A lowered multiplier under-bills every later reading.';
COMMENT ON COLUMN prepay.multiplier_change.site_id IS 'Site of the meter.';
COMMENT ON COLUMN prepay.multiplier_change.change_id IS 'Change id.';
COMMENT ON COLUMN prepay.multiplier_change.meter_id IS 'Meter changed.';
COMMENT ON COLUMN prepay.multiplier_change.old_multiplier IS 'Multiplier before.';
COMMENT ON COLUMN prepay.multiplier_change.new_multiplier IS 'Multiplier after.';
COMMENT ON COLUMN prepay.multiplier_change.changed_at IS 'When (transaction time).';
COMMENT ON COLUMN prepay.multiplier_change.changed_by IS 'Database user who changed it.';

CREATE FUNCTION prepay._log_multiplier_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO prepay.multiplier_change (site_id, meter_id, old_multiplier, new_multiplier)
    VALUES (NEW.site_id, NEW.meter_id, OLD.multiplier, NEW.multiplier);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._log_multiplier_change() IS 'Internal: AFTER UPDATE row trigger on prepay.meter recording a multiplier change in prepay.multiplier_change.';
CREATE TRIGGER meter_multiplier_change AFTER UPDATE OF multiplier ON prepay.meter
    FOR EACH ROW WHEN (OLD.multiplier IS DISTINCT FROM NEW.multiplier)
    EXECUTE FUNCTION prepay._log_multiplier_change();
COMMENT ON TRIGGER meter_multiplier_change ON prepay.meter IS 'Logs multiplier changes (the rating trigger never updates the multiplier, so it never fires for readings).';

CREATE FUNCTION prepay.loss_jumps(p_site_id integer, p_min_points numeric DEFAULT 5)
RETURNS TABLE (site_id integer, rule_id bigint, period_start date, loss_pct numeric, previous_pct numeric)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT x.site_id, x.rule_id, x.period_start, x.loss_pct, x.previous_pct
      FROM (SELECT l.site_id, l.rule_id, l.period_start, l.loss_pct,
                   pg_catalog.lag(l.loss_pct) OVER (PARTITION BY l.rule_id ORDER BY l.period_start) AS previous_pct
              FROM prepay.loss_period l WHERE l.site_id = p_site_id) AS x
     WHERE x.loss_pct - x.previous_pct >= p_min_points
     ORDER BY x.period_start, x.rule_id
$$;
COMMENT ON FUNCTION prepay.loss_jumps(integer, numeric) IS
'Loss periods of a site whose line-loss percentage rose by at least p_min_points percentage points (default 5) over the previous period of the same loss rule (prepay.loss_period, kept by periodic billing); empty when loss accounting is not installed.';

CREATE FUNCTION prepay.suspicious_consumption_at(p_site_id integer, p_at timestamptz, p_days integer DEFAULT 7,
                                                 p_drop numeric DEFAULT 0.3)
RETURNS TABLE (site_id integer, kind text, account_id bigint, account_code text, meter_id bigint, meter_code text,
               building text, floor text, room text, since timestamptz, recent numeric, usual numeric, detail text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH s AS (
        SELECT st.site_id, st.time_zone, (p_at AT TIME ZONE st.time_zone)::date AS today
          FROM prepay.site st WHERE st.site_id = p_site_id
    ), w AS (
        -- per attached meter: energy in the last p_days whole local days, and in the 4 x p_days before
        SELECT m.meter_id, m.code, m.building, m.floor, m.room, m.last_read_at, a.account_id, a.code AS account_code,
               a.opened_at,
               coalesce(sum(e.energy) FILTER (WHERE e.day >= s.today - p_days), 0) AS recent,
               coalesce(sum(e.energy) FILTER (WHERE e.day < s.today - p_days), 0) AS before,
               max(e.day) AS last_day
          FROM s
          JOIN prepay.account a ON a.site_id = s.site_id AND a.closed_at IS NULL
          JOIN prepay.meter m ON m.site_id = a.site_id AND m.account_id = a.account_id AND m.active
          LEFT JOIN prepay.energy_day e ON e.site_id = m.site_id AND e.meter_id = m.meter_id
                                       AND e.account_id = a.account_id
                                       AND e.day >= s.today - 5 * p_days AND e.day < s.today
         GROUP BY m.site_id, m.meter_id, a.site_id, a.account_id
    )
    SELECT p_site_id, 'zero_use', w.account_id, w.account_code, w.meter_id, w.code, w.building, w.floor, w.room,
           coalesce((w.last_day + 1)::timestamp, (s.today - p_days)::timestamp) AT TIME ZONE s.time_zone,
           0::numeric, round(w.before / (4 * p_days), 3),
           pg_catalog.format('no consumption charged in the last %s days although the account is open and the meter reports', p_days)
      FROM w CROSS JOIN s
     WHERE w.recent = 0 AND w.last_read_at >= p_at - interval '1 day'
       AND w.opened_at <= (s.today - p_days)::timestamp AT TIME ZONE s.time_zone
    UNION ALL
    SELECT p_site_id, 'sudden_drop', w.account_id, w.account_code, w.meter_id, w.code, w.building, w.floor, w.room,
           (s.today - p_days)::timestamp AT TIME ZONE s.time_zone,
           round(w.recent / p_days, 3), round(w.before / (4 * p_days), 3),
           pg_catalog.format('%s per day in the last %s days against %s per day in the %s days before (below %s%%)',
                             round(w.recent / p_days, 3), p_days, round(w.before / (4 * p_days), 3), 4 * p_days,
                             round(p_drop * 100))
      FROM w CROSS JOIN s
     WHERE w.recent > 0 AND w.before / (4 * p_days) >= 1 AND w.recent / p_days < p_drop * w.before / (4 * p_days)
    UNION ALL
    SELECT p_site_id, 'reverse_energy', m.account_id, a.code, m.meter_id, m.code, m.building, m.floor, m.room,
           q.first_at, q.readings, NULL::numeric,
           pg_catalog.format('%s readings with the register going backwards since %s; last: %s',
                             q.readings, pg_catalog.to_char(q.first_at AT TIME ZONE s.time_zone, 'YYYY-MM-DD HH24:MI'), q.last_detail)
      FROM s
      JOIN LATERAL (SELECT r.meter_id, count(*)::numeric AS readings, min(r.read_at) AS first_at,
                           (array_agg(r.quarantine_detail ORDER BY r.read_at DESC))[1] AS last_detail
                      FROM prepay.reading r
                     WHERE r.site_id = s.site_id AND r.quarantine_reason = 'counter_backwards'
                       AND r.read_at > p_at - 5 * p_days * interval '1 day' AND r.read_at <= p_at
                     GROUP BY r.meter_id) AS q ON true
      JOIN prepay.meter m ON m.site_id = s.site_id AND m.meter_id = q.meter_id
      LEFT JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id
    UNION ALL
    SELECT p_site_id, 'multiplier_changed', m.account_id, a.code, m.meter_id, m.code, m.building, m.floor, m.room,
           c.changed_at, c.new_multiplier, c.old_multiplier,
           pg_catalog.format('multiplier changed from %s to %s by %s', c.old_multiplier, c.new_multiplier, c.changed_by)
      FROM s
      JOIN prepay.multiplier_change c ON c.site_id = s.site_id
                                     AND c.changed_at > p_at - 5 * p_days * interval '1 day' AND c.changed_at <= p_at
      JOIN prepay.meter m ON m.site_id = c.site_id AND m.meter_id = c.meter_id
      LEFT JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id
    UNION ALL
    SELECT p_site_id, 'loss_jump', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           j.period_start::timestamp AT TIME ZONE s.time_zone, j.loss_pct, j.previous_pct,
           pg_catalog.format('line loss of rule %s rose from %s%% to %s%%', j.rule_id, j.previous_pct, j.loss_pct)
      FROM s CROSS JOIN LATERAL prepay.loss_jumps(s.site_id) AS j
     WHERE j.period_start <= s.today
$$;
COMMENT ON FUNCTION prepay.suspicious_consumption_at(integer, timestamptz, integer, numeric) IS
'Suspicious consumption of a site as seen at p_at: zero_use (an open account whose meter reports but charged nothing in the last p_days whole days), sudden_drop (its last p_days average below p_drop x the average of the 4 x p_days before, from at least 1 unit a day), reverse_energy (readings quarantined as counter_backwards in the last 5 x p_days days), multiplier_changed (in the last 5 x p_days days) and loss_jump (prepay.loss_jumps).  recent and usual are per-day energies (readings, new multiplier, loss % for the other kinds; see docs/REPORTS.md).';

CREATE VIEW prepay.suspicious_consumption AS
SELECT x.* FROM prepay.site s CROSS JOIN LATERAL prepay.suspicious_consumption_at(s.site_id, pg_catalog.now()) AS x;
COMMENT ON VIEW prepay.suspicious_consumption IS 'Suspicious consumption now, every site: zero use while occupied, sudden drops, reverse energy, multiplier changes, line-loss jumps.';

-- ---------------------------------------------------------------------
-- column comments of the report views
-- ---------------------------------------------------------------------

-- One meaning per column name, with per-view exceptions; installing fails
-- if a view column is left without a comment.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        WITH dictionary (view_name, column_name, comment) AS (VALUES
        ('*', 'site_id', 'Site.'),
        ('*', 'account_id', 'Account.'),
        ('*', 'account_code', 'Account number.'),
        ('*', 'account_name', 'Tenant name.'),
        ('*', 'meter_id', 'Meter.'),
        ('*', 'meter_code', 'Meter number.'),
        ('*', 'building', 'Building of the meter''s room.'),
        ('*', 'floor', 'Floor of the meter''s room.'),
        ('*', 'room', 'Room or shop number.'),
        ('*', 'day', 'Local date (site time zone).'),
        ('*', 'month', 'First day of the local month.'),
        ('*', 'year', 'Local calendar year.'),
        ('*', 'period', 'Time-of-use period (or register) the energy was priced in; "all" for a single-price tariff.'),
        ('*', 'tier', 'Tier (1 = first block) the energy was priced in.'),
        ('*', 'energy', 'Energy charged (kWh or m3, after the multiplier).'),
        ('*', 'cost', 'Exact price of the energy (9 decimals, before rounding to cents).'),
        ('*', 'charged', 'Whole cents posted by the consumption entries whose interval starts in the bucket (counted on their first piece''s period and tier).'),
        ('*', 'charges', 'Consumption entries whose interval starts in the bucket.'),
        ('*', 'energy_year_before', 'Energy of the same month a year before (NULL if none).'),
        ('*', 'cost_year_before', 'Exact cost of the same month a year before.'),
        ('*', 'energy_change_pct', 'Energy change against the same month a year before, in percent (one decimal).'),
        ('*', 'accounts', 'Accounts charged in the month.'),
        ('*', 'accounts_year_before', 'Accounts charged in the same month a year before.'),
        ('*', 'kind', 'Ledger kind of the movement (consumption, recharge, refund, reversal, fee, ...).'),
        ('*', 'channel', 'Payment channel (cash, card, wechat, ...); NULL for movements without one.'),
        ('*', 'operator', 'Database user who posted the movement (ledger.created_by).'),
        ('*', 'entries', 'Number of ledger entries.'),
        ('*', 'money_in', 'Sum of the positive amounts (credits to wallets).'),
        ('*', 'money_out', 'Sum of the negative amounts, as a positive number (debits from wallets).'),
        ('*', 'net', 'Net movement: money_in - money_out.'),
        ('*', 'entry_id', 'Ledger entry.'),
        ('*', 'created_at', 'When the entry was posted.'),
        ('*', 'amount', 'Signed amount: positive credits the wallet, negative debits it.'),
        ('*', 'balance_after', 'Wallet balance right after the entry.'),
        ('*', 'external_ref', 'The channel''s reference (receipt or transaction number).'),
        ('*', 'reason', 'Reason given for the entry.'),
        ('*', 'reverses_entry', 'For a reversal, the entry it cancels.'),
        ('*', 'reversed_kind', 'For a reversal, the kind of the entry it cancels.'),
        ('*', 'reversed_by', 'The reversal that cancelled this entry, if any.'),
        ('*', 'gateway_id', 'Gateway.'),
        ('*', 'gateway_name', 'Gateway name.'),
        ('*', 'transport', 'tcp, rtu or rtu_over_tcp.'),
        ('*', 'address', 'Host of a TCP gateway or serial device of an RTU line.'),
        ('*', 'agent_id', 'Agent that polls the gateway.'),
        ('*', 'cause', 'meter: the meter itself does not answer; gateway: its gateway is lost.'),
        ('*', 'lost_since', 'Since when contact is lost.'),
        ('*', 'lost_for', 'How long contact has been lost, now.'),
        ('*', 'last_read_at', 'Time of the last rated reading.'),
        ('*', 'meters', 'Active meters.'),
        ('*', 'alarm_id', 'Alarm.'),
        ('*', 'raised_at', 'When the alarm was raised.'),
        ('*', 'cleared_at', 'When it cleared; NULL while active.'),
        ('*', 'active', 'true while the alarm is not cleared.'),
        ('*', 'duration', 'How long the alarm lasted (until now while active).'),
        ('*', 'age', 'How long the alarm has been active.'),
        ('*', 'detail', 'Human explanation.'),
        ('*', 'mode', 'prepaid or postpaid.'),
        ('*', 'balance', 'Wallet balance.'),
        ('*', 'owed', 'Amount owed: minus the balance.'),
        ('*', 'credit_limit', 'How far below zero the balance may fall before the trip.'),
        ('*', 'alarm_level', 'Alarm level: 0 none, 1 low balance, 2 pre-trip, 3 arrears.'),
        ('*', 'protect', 'Keep-power on the account: never tripped.'),
        ('*', 'arrears_since', 'When the balance last went below zero (the first entry after the last one leaving it at or above zero).'),
        ('*', 'last_payment_at', 'When the account''s last recharge was posted.'),
        ('*', 'last_payment', 'Amount of the last recharge.'),
        ('*', 'meters_tripped', 'Active meters of the account whose relay is known to be tripped.'),
        ('*', 'phone', 'Contact phone.'),
        ('*', 'email', 'Contact e-mail.'),
        ('*', 'available', 'Money until arrears: balance + credit limit.'),
        ('*', 'meters_to_cut', 'Active meters not on keep-power: what a cut trips.'),
        ('*', 'recent_energy_per_day', 'Recent consumption per day (all active meters, over the site''s forecast_window).'),
        ('*', 'recent_cost_per_day', 'Recent exact cost per day, rounded to cents.'),
        ('*', 'run_out_at', 'When the available money is expected to run out (balance reaches minus the credit limit); NULL without a forecast (status no forecast: less than a minute of consumption, or money for more than 100 years).'),
        ('*', 'method', 'How run_out_at was found: tariff, 48 hours ahead; tariff, 48 hours extrapolated; recent average cost.'),
        ('*', 'cut_at', 'When supply is expected to be cut: run_out_at moved past no-cut windows, or the queued trip''s time; NULL when no cut is expected.'),
        ('*', 'status', 'forecast, trip queued, in arrears, cut, protected, postpaid, no meter, no recent consumption or no forecast (the rate is not usable: see why).'),
        ('*', 'will_be_cut', 'false for keep-power accounts that reach arrears but are never cut.'),
        ('*', 'why', 'Why: money left, rate, expected run-out and cut, no-cut windows, keep-power.'),
        ('*', 'since', 'Since when the suspicion holds.'),
        ('*', 'recent', 'zero_use, sudden_drop: energy per day in the recent days; reverse_energy: quarantined readings; multiplier_changed: new multiplier; loss_jump: loss percentage.'),
        ('*', 'usual', 'zero_use, sudden_drop: energy per day in the days before; multiplier_changed: old multiplier; loss_jump: previous loss percentage.'),
        ('alarm_history', 'kind', 'Alarm kind: low_balance, pretrip, arrears, bad_reading, conflicting_reading, split_fallback, command_failing, notification_dead, meter_lost, gateway_lost, or a billing alarm.'),
        ('active_alarms', 'kind', 'Alarm kind: low_balance, pretrip, arrears, bad_reading, conflicting_reading, split_fallback, command_failing, notification_dead, meter_lost, gateway_lost, or a billing alarm.'),
        ('alarm_history', 'day', 'Local date the alarm was raised.'),
        ('suspicious_consumption', 'kind', 'zero_use, sudden_drop, reverse_energy, multiplier_changed or loss_jump.'),
        ('balance_forecast', 'reason', 'Why: money left, rate, expected run-out and cut, no-cut windows, keep-power.'),
        ('lost_gateways', 'meters', 'Active meters behind the gateway.'),
        ('lost_gateways', 'last_read_at', 'Last rated reading of any meter behind the gateway.'),
        ('balance_forecast', 'last_read_at', 'Latest last reading of the account''s meters.'),
        ('energy_yoy_account', 'energy', 'Energy charged to the account in the month.'),
        ('energy_yoy_account', 'cost', 'Exact cost of the month''s energy.'),
        ('energy_yoy_site', 'energy', 'Energy charged at the site in the month.'),
        ('energy_yoy_site', 'cost', 'Exact cost of the month''s energy.')
        )
        SELECT cl.relname, a.attname,
               (SELECT d.comment FROM dictionary d
                 WHERE d.column_name = a.attname AND d.view_name IN (cl.relname, '*')
                 ORDER BY d.view_name = '*' LIMIT 1) AS comment
          FROM pg_catalog.pg_class cl
          JOIN pg_catalog.pg_namespace n ON n.oid = cl.relnamespace
          JOIN pg_catalog.pg_attribute a ON a.attrelid = cl.oid AND a.attnum > 0
         WHERE n.nspname = 'prepay' AND cl.relkind = 'v'
           AND pg_catalog.col_description(cl.oid, a.attnum) IS NULL
    LOOP
        IF c.comment IS NULL THEN
            RAISE EXCEPTION 'view column prepay.%.% has no comment', c.relname, c.attname;
        END IF;
        EXECUTE pg_catalog.format('COMMENT ON COLUMN prepay.%I.%I IS %L', c.relname, c.attname, c.comment);
    END LOOP;
END $$;

-- ---------------------------------------------------------------------
-- pg_dump: the rollups and logs are data (a restore in replica mode does
-- not run the triggers that would rebuild them)
-- ---------------------------------------------------------------------

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['energy_day_folded', 'energy_month_folded', 'energy_pending', 'consumption_posting_day', 'cut_reminder',
                             'cut_reminder_id_seq', 'multiplier_change', 'multiplier_change_id_seq'] LOOP
        PERFORM pg_catalog.pg_extension_config_dump(('prepay.' || t)::regclass, '');
    END LOOP;
END $$;
-- sql/integrity.sql
--	  Rules that hold for every table of the schema, added after all of
--	  them exist (the install script's second-last part; security.sql
--	  comes last).
--
--	  NaN is a value of type numeric and passes CHECK (x >= 0): a NaN
--	  written directly into a price, a threshold, an area or a balance
--	  would be stored and break rating later.  The functions refuse it
--	  with their own SQLSTATEs; these constraints make the tables refuse
--	  it too (23514, the constraint named <table>_<column>_not_nan).
--	  prepay.reading is the exception: a NaN register is telemetry, stored
--	  and quarantined as invalid_value, never refused; so are the bulk
--	  intake that feeds it and the record of the readings it refused.  Infinity needs no
--	  rule: every numeric column here has a precision, which refuses it.

DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT cl.oid::regclass AS rel, cl.relname, a.attname
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_class cl ON cl.oid = a.attrelid
         WHERE cl.relnamespace = 'prepay'::pg_catalog.regnamespace AND cl.relkind IN ('r', 'p')
           AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'pg_catalog.numeric'::pg_catalog.regtype
           AND cl.relname NOT IN ('reading', 'reading_intake', 'reading_refused')
         ORDER BY cl.relname, a.attnum
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%I OPERATOR(pg_catalog.<>) ''NaN''::pg_catalog.numeric)',
                                  c.rel, c.relname || '_' || c.attname || '_not_nan', c.attname);
        EXECUTE pg_catalog.format('COMMENT ON CONSTRAINT %I ON %s IS %L', c.relname || '_' || c.attname || '_not_nan', c.rel,
                                  pg_catalog.format('%s is a number: NaN is refused (sql/integrity.sql).', c.attname));
    END LOOP;
END $$;
/*-------------------------------------------------------------------------
 * sql/notify.sql
 *     Delivery of the notification outbox (prepay.notification) by webhook,
 *     e-mail and SMS: the per-site channels and their secrets, the text
 *     templates per site and language, the events that write notifications
 *     besides the balance ladder and the cut reminders (payment received,
 *     supply restored, bill issued), and the delivery state machine a
 *     delivering prepay-agent drives.  Appended after reports.sql and
 *     before security.sql into prepay--<version>.sql.
 *
 * Vocabulary
 *     channel     webhook, email or sms; configured per site in
 *                 prepay.notify_channel, its secret in prepay.notify_secret
 *                 (readable by prepay_admin, handed to the agent only by
 *                 prepay.agent_claim_deliveries).
 *     delivery    one notification on one channel (prepay.notification_delivery),
 *                 written by a trigger when the notification is written.
 *     lease       a claimed delivery belongs to the claiming agent until
 *                 lease_until; an agent that dies mid-delivery loses it and
 *                 another claim sends it again with the same idempotency key.
 *
 * Delivery life (see docs/AGENT.md):
 *     pending --agent_claim_deliveries--> leased --agent_delivery_done--> delivered
 *                                            |--agent_delivery_failed--> pending (backoff) or dead
 *                                            +--lease expires----------> pending (claimed again)
 *     dead: a permanent failure, max_attempts reached or max_age passed;
 *     raises an alarm of kind notification_dead for the account.
 *
 * Errors raised here use SQLSTATEs PY5xx (docs/API.md).
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- configuration: channels, secrets, site settings, languages, templates
-- ---------------------------------------------------------------------

CREATE TABLE prepay.notify_site (
    site_id           integer PRIMARY KEY REFERENCES prepay.site,
    language          text NOT NULL DEFAULT 'en' CHECK (language IN ('zh', 'en')),
    payment_received  boolean NOT NULL DEFAULT true,
    supply_restored   boolean NOT NULL DEFAULT true,
    bill_issued       boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE prepay.notify_site IS 'A site''s notification settings.  With a row here the site''s notifications are written from its templates in the tenant''s language (prepay.notify_template), and the events switched on below write notifications too; without one, notifications keep the built-in English text.';
COMMENT ON COLUMN prepay.notify_site.site_id IS 'Site.';
COMMENT ON COLUMN prepay.notify_site.language IS 'Default language of the site''s messages (zh or en); prepay.account_language overrides it per account.';
COMMENT ON COLUMN prepay.notify_site.payment_received IS 'Write a payment_received notification (with the new balance) for every recharge.';
COMMENT ON COLUMN prepay.notify_site.supply_restored IS 'Write a supply_restored notification when a close command of an account''s meter is done.';
COMMENT ON COLUMN prepay.notify_site.bill_issued IS 'Write a bill_issued notification when a bill is issued.';

CREATE TABLE prepay.account_language (
    site_id     integer NOT NULL,
    account_id  bigint NOT NULL,
    language    text NOT NULL CHECK (language IN ('zh', 'en')),
    PRIMARY KEY (site_id, account_id),
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account ON DELETE CASCADE
);
COMMENT ON TABLE prepay.account_language IS 'The language a tenant is written to in, when it is not the site''s (prepay.notify_site.language).';
COMMENT ON COLUMN prepay.account_language.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.account_language.account_id IS 'Account.';
COMMENT ON COLUMN prepay.account_language.language IS 'zh or en.';

CREATE TABLE prepay.notify_channel (
    site_id         integer NOT NULL REFERENCES prepay.site,
    channel         text NOT NULL CHECK (channel IN ('webhook', 'email', 'sms')),
    enabled         boolean NOT NULL DEFAULT true,
    url             text NOT NULL,
    method          text NOT NULL DEFAULT 'POST' CHECK (method IN ('GET', 'POST', 'PUT')),
    headers         text[] NOT NULL DEFAULT '{}',
    body            text,
    smtp_tls        text NOT NULL DEFAULT 'starttls' CHECK (smtp_tls IN ('starttls', 'implicit', 'none')),
    smtp_user       text,
    mail_from       text,
    max_per_minute  integer NOT NULL DEFAULT 60 CHECK (max_per_minute > 0),
    max_attempts    integer NOT NULL DEFAULT 12 CHECK (max_attempts BETWEEN 1 AND 100),
    max_age         interval NOT NULL DEFAULT '2 days' CHECK (max_age > '0'),
    backoff_base    interval NOT NULL DEFAULT '10 seconds' CHECK (backoff_base > '0'),
    backoff_max     interval NOT NULL DEFAULT '1 hour' CHECK (backoff_max >= backoff_base),
    lease           interval NOT NULL DEFAULT '60 seconds' CHECK (lease BETWEEN '5 seconds' AND '1 hour'),
    PRIMARY KEY (site_id, channel),
    -- plain http and unencrypted SMTP only to this host (tests, a local relay)
    CHECK (channel = 'email' OR url ~ '^https://' OR url ~ '^http://(127\.[0-9.]+|localhost|\[::1\])(:[0-9]+)?(/|$)'),
    CHECK (channel <> 'email' OR url ~ '^smtps?://[^/]+/?$'),
    CHECK (channel <> 'email' OR smtp_tls <> 'none' OR url ~ '^smtp://(127\.[0-9.]+|localhost|\[::1\])(:[0-9]+)?/?$'),
    CHECK (channel <> 'email' OR mail_from IS NOT NULL),
    CHECK (channel <> 'sms' OR body IS NOT NULL OR method = 'GET')
);
COMMENT ON TABLE prepay.notify_channel IS 'How a site''s notifications leave: one row per channel (webhook, email, sms).  A notification gets one delivery per enabled channel it has an address for (webhook always, email when it has an e-mail address, sms when it has a phone).  Secrets are in prepay.notify_secret.  Plain http:// and unencrypted SMTP are accepted only to the loopback host.';
COMMENT ON COLUMN prepay.notify_channel.site_id IS 'Site.';
COMMENT ON COLUMN prepay.notify_channel.channel IS 'webhook, email or sms.';
COMMENT ON COLUMN prepay.notify_channel.enabled IS 'false: no new deliveries are written and pending ones are not claimed (they wait).';
COMMENT ON COLUMN prepay.notify_channel.url IS 'webhook: the https:// URL POSTed to; email: the SMTP server, smtp://host:port (STARTTLS or none) or smtps://host:port (implicit TLS); sms: the provider''s request URL, a template (placeholders as in body).';
COMMENT ON COLUMN prepay.notify_channel.method IS 'sms: the HTTP method of the provider request (GET, POST, PUT); webhook: always POST.';
COMMENT ON COLUMN prepay.notify_channel.headers IS 'sms: request headers, "Name: value" templates (placeholders as in body); webhook: extra headers sent as they are.';
COMMENT ON COLUMN prepay.notify_channel.body IS 'sms: the request body template.  Placeholders: {phone}, {text}, {key} (idempotency key), {secret} (prepay.notify_secret), and {phone_url}, {text_url} (percent-encoded), {phone_json}, {text_json} (JSON strings with their quotes).';
COMMENT ON COLUMN prepay.notify_channel.smtp_tls IS 'email: starttls (smtp://, TLS required), implicit (smtps://) or none (loopback only).';
COMMENT ON COLUMN prepay.notify_channel.smtp_user IS 'email: SMTP login; NULL for no authentication.  The password is prepay.notify_secret.secret.';
COMMENT ON COLUMN prepay.notify_channel.mail_from IS 'email: the sender address.';
COMMENT ON COLUMN prepay.notify_channel.max_per_minute IS 'Rate limit: at most this many attempts per minute on this channel of this site; the rest wait for the next claim.';
COMMENT ON COLUMN prepay.notify_channel.max_attempts IS 'A delivery is dead-lettered when this attempt fails.';
COMMENT ON COLUMN prepay.notify_channel.max_age IS 'A delivery still undelivered this long after it was written (with its notification) is dead-lettered.';
COMMENT ON COLUMN prepay.notify_channel.backoff_base IS 'Retry delay after the first failed attempt; it doubles with each attempt, with jitter (between half and all of it).';
COMMENT ON COLUMN prepay.notify_channel.backoff_max IS 'Longest retry delay.';
COMMENT ON COLUMN prepay.notify_channel.lease IS 'How long a claimed delivery belongs to the claiming agent; the agent gives up a request after half of it.  Unreported at the end, it is claimed again.';

CREATE TABLE prepay.notify_secret (
    site_id  integer NOT NULL,
    channel  text NOT NULL,
    secret   text NOT NULL,
    PRIMARY KEY (site_id, channel),
    FOREIGN KEY (site_id, channel) REFERENCES prepay.notify_channel ON DELETE CASCADE
);
COMMENT ON TABLE prepay.notify_secret IS 'The secret of a channel: readable and writable by prepay_admin only; the delivering agent receives it from prepay.agent_claim_deliveries.  Not in the audit trail (which readers see); changes are not audited.';
COMMENT ON COLUMN prepay.notify_secret.site_id IS 'Site.';
COMMENT ON COLUMN prepay.notify_secret.channel IS 'Channel the secret belongs to.';
COMMENT ON COLUMN prepay.notify_secret.secret IS 'webhook: the HMAC-SHA256 key of the signature header; email: the SMTP password; sms: the value of the {secret} placeholder (an API key or token).';

CREATE TABLE prepay.notify_template (
    site_id   integer NOT NULL REFERENCES prepay.site,
    template  text NOT NULL CHECK (template IN ('balance_ok', 'low_balance', 'pretrip', 'arrears', 'cut_reminder',
                                                'supply_restored', 'payment_received', 'bill_issued')),
    language  text NOT NULL CHECK (language IN ('zh', 'en')),
    subject   text NOT NULL,
    body      text NOT NULL,
    PRIMARY KEY (site_id, template, language)
);
COMMENT ON TABLE prepay.notify_template IS 'A site''s own wording of a message, replacing the built-in one (prepay._notify_default_template).  Placeholders: {site}, {account}, {name}, {balance}, {amount}, {cut_at}, {due_on} (amounts in the site''s currency).';
COMMENT ON COLUMN prepay.notify_template.site_id IS 'Site.';
COMMENT ON COLUMN prepay.notify_template.template IS 'Which message: balance_ok, low_balance, pretrip, arrears (the alarm ladder), cut_reminder, supply_restored, payment_received, bill_issued.';
COMMENT ON COLUMN prepay.notify_template.language IS 'zh or en.';
COMMENT ON COLUMN prepay.notify_template.subject IS 'E-mail subject.';
COMMENT ON COLUMN prepay.notify_template.body IS 'Message text (SMS, e-mail body, webhook message).';

-- ---------------------------------------------------------------------
-- deliveries
-- ---------------------------------------------------------------------

CREATE TABLE prepay.notification_delivery (
    site_id          integer NOT NULL,
    notification_id  bigint NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('webhook', 'email', 'sms')),
    account_id       bigint NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    lease_until      timestamptz,
    leased_by        text,
    last_attempt_at  timestamptz,
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    delivered_at     timestamptz,
    dead_at          timestamptz,
    PRIMARY KEY (site_id, notification_id, channel),
    FOREIGN KEY (site_id, notification_id) REFERENCES prepay.notification ON DELETE CASCADE,
    CHECK (delivered_at IS NULL OR dead_at IS NULL)
);
CREATE INDEX notification_delivery_due ON prepay.notification_delivery (site_id, channel, next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX notification_delivery_recent ON prepay.notification_delivery (site_id, channel, last_attempt_at);
COMMENT ON INDEX prepay.notification_delivery_due IS 'Deliveries still to make, per channel, by when they are due.';
COMMENT ON INDEX prepay.notification_delivery_recent IS 'The attempts of the last minute per channel (the rate limit).';
COMMENT ON TABLE prepay.notification_delivery IS 'One notification on one channel, and how its delivery went.  Written by a trigger with the notification; changed only by the agent functions (agent_claim_deliveries, agent_delivery_done, agent_delivery_failed).  Read it through prepay.notification_delivery_status.';
COMMENT ON COLUMN prepay.notification_delivery.site_id IS 'Site.';
COMMENT ON COLUMN prepay.notification_delivery.notification_id IS 'The notification delivered.';
COMMENT ON COLUMN prepay.notification_delivery.channel IS 'webhook, email or sms.';
COMMENT ON COLUMN prepay.notification_delivery.account_id IS 'The notification''s account (so that a tenant sees the deliveries of its notifications).';
COMMENT ON COLUMN prepay.notification_delivery.attempts IS 'Attempts so far (a claim is an attempt).';
COMMENT ON COLUMN prepay.notification_delivery.next_attempt_at IS 'Not claimed before this time (the backoff after a failure).';
COMMENT ON COLUMN prepay.notification_delivery.lease_until IS 'While in the future, the delivery belongs to leased_by.';
COMMENT ON COLUMN prepay.notification_delivery.leased_by IS 'Agent id of the last claim.';
COMMENT ON COLUMN prepay.notification_delivery.last_attempt_at IS 'When it was last claimed.';
COMMENT ON COLUMN prepay.notification_delivery.last_status IS 'HTTP status or SMTP reply code of the last attempt; NULL for a transport error (no answer).';
COMMENT ON COLUMN prepay.notification_delivery.last_error IS 'Error of the last failed attempt.';
COMMENT ON COLUMN prepay.notification_delivery.created_at IS 'When the delivery was written (with its notification).';
COMMENT ON COLUMN prepay.notification_delivery.delivered_at IS 'When the receiver accepted it; NULL until then.';
COMMENT ON COLUMN prepay.notification_delivery.dead_at IS 'When it was given up (dead letter); an alarm notification_dead was raised.';

CREATE VIEW prepay.notification_delivery_status AS
SELECT d.site_id, d.notification_id, d.channel, d.account_id, n.kind, n.alarm_level,
       CASE WHEN d.delivered_at IS NOT NULL THEN 'delivered'
            WHEN d.dead_at IS NOT NULL THEN 'dead'
            WHEN d.lease_until > pg_catalog.now() THEN 'in_flight'
            ELSE 'pending' END AS state,
       d.attempts, d.last_attempt_at, d.next_attempt_at, d.last_status, d.last_error,
       n.created_at, d.delivered_at, d.dead_at, d.delivered_at - n.created_at AS latency
  FROM prepay.notification_delivery d
  JOIN prepay.notification n ON n.site_id = d.site_id AND n.notification_id = d.notification_id;
COMMENT ON VIEW prepay.notification_delivery_status IS 'Per notification and channel: state (pending, in_flight, delivered, dead), attempts, last error, delivered time and latency.';
COMMENT ON COLUMN prepay.notification_delivery_status.site_id IS 'Site.';
COMMENT ON COLUMN prepay.notification_delivery_status.notification_id IS 'Notification.';
COMMENT ON COLUMN prepay.notification_delivery_status.channel IS 'webhook, email or sms.';
COMMENT ON COLUMN prepay.notification_delivery_status.account_id IS 'Account notified.';
COMMENT ON COLUMN prepay.notification_delivery_status.kind IS 'The notification''s kind.';
COMMENT ON COLUMN prepay.notification_delivery_status.alarm_level IS 'The notification''s alarm level.';
COMMENT ON COLUMN prepay.notification_delivery_status.state IS 'pending (due at next_attempt_at), in_flight (leased to an agent), delivered or dead.';
COMMENT ON COLUMN prepay.notification_delivery_status.attempts IS 'Attempts so far.';
COMMENT ON COLUMN prepay.notification_delivery_status.last_attempt_at IS 'When it was last claimed.';
COMMENT ON COLUMN prepay.notification_delivery_status.next_attempt_at IS 'When it is due again.';
COMMENT ON COLUMN prepay.notification_delivery_status.last_status IS 'HTTP status or SMTP code of the last attempt.';
COMMENT ON COLUMN prepay.notification_delivery_status.last_error IS 'Error of the last failed attempt.';
COMMENT ON COLUMN prepay.notification_delivery_status.created_at IS 'When the notification was written.';
COMMENT ON COLUMN prepay.notification_delivery_status.delivered_at IS 'When it was delivered.';
COMMENT ON COLUMN prepay.notification_delivery_status.dead_at IS 'When it was given up.';
COMMENT ON COLUMN prepay.notification_delivery_status.latency IS 'delivered_at - created_at.';

-- ---------------------------------------------------------------------
-- texts
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._notify_default_template(p_template text, p_language text,
                                               OUT subject text, OUT body text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.subject, t.body FROM (VALUES
        ('balance_ok', 'en', 'Balance restored', 'Account {account}: balance is {balance}, thank you.'),
        ('balance_ok', 'zh', '余额已恢复', '账户{account}：当前余额{balance}，谢谢。'),
        ('low_balance', 'en', 'Low balance', 'Account {account}: balance is low ({balance}). Please recharge.'),
        ('low_balance', 'zh', '余额不足', '账户{account}：余额不足（{balance}），请及时充值。'),
        ('pretrip', 'en', 'Supply will be cut soon', 'Account {account}: balance {balance}; supply will be cut soon. Please recharge now.'),
        ('pretrip', 'zh', '即将停电', '账户{account}：余额{balance}，即将停止供电，请立即充值。'),
        ('arrears', 'en', 'Account in arrears', 'Account {account} is in arrears ({balance}). Supply is restored automatically when you recharge.'),
        ('arrears', 'zh', '账户已欠费', '账户{account}已欠费（{balance}），充值后自动恢复供电。'),
        ('cut_reminder', 'en', 'Supply cut reminder', 'Account {account}: supply will be cut at about {cut_at} (balance {balance}). Please recharge now.'),
        ('cut_reminder', 'zh', '停电提醒', '账户{account}：预计{cut_at}停止供电（余额{balance}），请立即充值。'),
        ('supply_restored', 'en', 'Supply restored', 'Account {account}: supply is restored (balance {balance}).'),
        ('supply_restored', 'zh', '已恢复供电', '账户{account}：已恢复供电（余额{balance}）。'),
        ('payment_received', 'en', 'Payment received', 'Account {account}: payment of {amount} received, new balance {balance}.'),
        ('payment_received', 'zh', '充值成功', '账户{account}：充值{amount}已到账，当前余额{balance}。'),
        ('bill_issued', 'en', 'New bill', 'Account {account}: your bill of {amount} is due on {due_on}.'),
        ('bill_issued', 'zh', '账单通知', '账户{account}：本期账单{amount}，请于{due_on}前缴纳。'))
        AS t (template, language, subject, body)
     WHERE t.template = p_template AND t.language = p_language
$$;
COMMENT ON FUNCTION prepay._notify_default_template(text, text) IS
'The built-in subject and text of a message in a language (zh, en), used when the site has no prepay.notify_template row for it.';

CREATE FUNCTION prepay._notify_money(p_amount numeric, p_currency text, p_language text)
RETURNS text LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_amount IS NULL THEN ''
                WHEN p_language = 'zh' AND p_currency = 'CNY' THEN pg_catalog.round(p_amount, 2)::text || '元'
                ELSE pg_catalog.round(p_amount, 2)::text || ' ' || p_currency END
$$;
COMMENT ON FUNCTION prepay._notify_money(numeric, text, text) IS
'An amount as a message shows it: two decimals and the currency (12.50 CNY; in Chinese 12.50元 for CNY).  Exact: no floating point.';

CREATE FUNCTION prepay._notify_language(p_site_id integer, p_account_id bigint)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT l.language FROM prepay.account_language l
                      WHERE l.site_id = p_site_id AND l.account_id = p_account_id),
                    (SELECT s.language FROM prepay.notify_site s WHERE s.site_id = p_site_id), 'en')
$$;
COMMENT ON FUNCTION prepay._notify_language(integer, bigint) IS 'The language an account is written to in: prepay.account_language, else the site''s, else en.';

CREATE FUNCTION prepay._notify_text(p_site_id integer, p_template text, p_language text, p_values jsonb,
                                   OUT subject text, OUT body text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
    v text;
BEGIN
    SELECT t.subject, t.body INTO subject, body FROM prepay.notify_template t
     WHERE t.site_id = p_site_id AND t.template = p_template AND t.language = p_language;
    IF NOT FOUND THEN
        SELECT d.subject, d.body INTO subject, body FROM prepay._notify_default_template(p_template, p_language) d;
    END IF;
    FOR k, v IN SELECT e.key, e.value FROM pg_catalog.jsonb_each_text(p_values) e LOOP
        subject := pg_catalog.replace(subject, '{' || k || '}', coalesce(v, ''));
        body := pg_catalog.replace(body, '{' || k || '}', coalesce(v, ''));
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay._notify_text(integer, text, text, jsonb) IS
'A message of a site in a language: its template (the site''s, else the built-in one) with each {key} of p_values replaced by its value.';

CREATE FUNCTION prepay._notify_values(p_site_id integer, p_account_id bigint, p_language text, p_balance numeric,
                                      p_amount numeric DEFAULT NULL, p_extra jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.jsonb_build_object(
               'site', s.name, 'account', a.code, 'name', a.name,
               'balance', prepay._notify_money(p_balance, s.currency, p_language),
               'amount', prepay._notify_money(p_amount, s.currency, p_language)) || p_extra
      FROM prepay.site s JOIN prepay.account a ON a.site_id = s.site_id
     WHERE s.site_id = p_site_id AND a.account_id = p_account_id
$$;
COMMENT ON FUNCTION prepay._notify_values(integer, bigint, text, numeric, numeric, jsonb) IS
'Internal: the placeholder values of a message to an account (site, account, name, balance, amount in the site''s currency) plus p_extra.';

CREATE FUNCTION prepay._notify_template_of(p_kind text, p_alarm_level smallint)
RETURNS text LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_kind = 'alarm_level'
                THEN (ARRAY['balance_ok', 'low_balance', 'pretrip', 'arrears'])[p_alarm_level + 1]
                ELSE p_kind END
$$;
COMMENT ON FUNCTION prepay._notify_template_of(text, smallint) IS 'Internal: the template of a notification: the alarm level''s for kind alarm_level, else the kind.';

-- ---------------------------------------------------------------------
-- notifications: written in the tenant's language, one delivery per channel
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._notification_text() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lang text;
    extra jsonb := '{}';
    t record;
BEGIN
    IF NEW.kind NOT IN ('alarm_level', 'cut_reminder')
       OR NOT EXISTS (SELECT 1 FROM prepay.notify_site s WHERE s.site_id = NEW.site_id) THEN
        RETURN NEW;
    END IF;
    lang := prepay._notify_language(NEW.site_id, NEW.account_id);
    IF NEW.kind = 'cut_reminder' THEN
        SELECT pg_catalog.jsonb_build_object('cut_at', pg_catalog.to_char(r.predicted_cut AT TIME ZONE s.time_zone,
                                                                          'YYYY-MM-DD HH24:MI'))
          INTO extra
          FROM prepay.cut_reminder r JOIN prepay.site s ON s.site_id = r.site_id
         WHERE r.site_id = NEW.site_id AND r.notification_id = NEW.notification_id;
    END IF;
    SELECT * INTO t FROM prepay._notify_text(NEW.site_id, prepay._notify_template_of(NEW.kind, NEW.alarm_level), lang,
        prepay._notify_values(NEW.site_id, NEW.account_id, lang, NEW.balance, NULL, coalesce(extra, '{}')));
    NEW.message := coalesce(t.body, NEW.message);
    RETURN NEW;
END $$;
COMMENT ON FUNCTION prepay._notification_text() IS
'Internal: BEFORE INSERT trigger on prepay.notification: at a site with prepay.notify_site, the text of an alarm level or cut reminder notification is the site''s template in the tenant''s language.';
CREATE TRIGGER notification_text BEFORE INSERT ON prepay.notification
    FOR EACH ROW EXECUTE FUNCTION prepay._notification_text();
COMMENT ON TRIGGER notification_text ON prepay.notification IS 'Writes the message from the site''s templates in the tenant''s language (sites with prepay.notify_site only).';

CREATE FUNCTION prepay._notification_deliveries() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO prepay.notification_delivery (site_id, notification_id, channel, account_id)
    SELECT NEW.site_id, NEW.notification_id, c.channel, NEW.account_id
      FROM prepay.notify_channel c
     WHERE c.site_id = NEW.site_id AND c.enabled
       AND (c.channel = 'webhook' OR c.channel = 'email' AND NEW.email IS NOT NULL AND NEW.email <> ''
            OR c.channel = 'sms' AND NEW.phone IS NOT NULL AND NEW.phone <> '');
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._notification_deliveries() IS
'Internal: AFTER INSERT trigger on prepay.notification: one delivery per enabled channel of the site the notification has an address for (webhook always; email with an e-mail address; sms with a phone).';
CREATE TRIGGER notification_deliveries AFTER INSERT ON prepay.notification
    FOR EACH ROW EXECUTE FUNCTION prepay._notification_deliveries();
COMMENT ON TRIGGER notification_deliveries ON prepay.notification IS 'Queues the notification on each channel of its site.';

CREATE FUNCTION prepay._notify_event(p_site_id integer, p_account_id bigint, p_kind text,
                                     p_amount numeric, p_extra jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a prepay.account;
    lang text := prepay._notify_language(p_site_id, p_account_id);
    t record;
    id bigint;
BEGIN
    SELECT * INTO a FROM prepay.account WHERE site_id = p_site_id AND account_id = p_account_id;
    SELECT * INTO t FROM prepay._notify_text(p_site_id, p_kind, lang,
        prepay._notify_values(p_site_id, p_account_id, lang, a.balance, p_amount, p_extra));
    INSERT INTO prepay.notification (site_id, account_id, kind, alarm_level, balance, phone, email, message)
    VALUES (p_site_id, p_account_id, p_kind, a.alarm_level, a.balance, a.phone, a.email, t.body)
    RETURNING notification.notification_id INTO id;
    PERFORM pg_catalog.pg_notify('prepay_notification', p_site_id || '/' || id);
    RETURN id;
END $$;
COMMENT ON FUNCTION prepay._notify_event(integer, bigint, text, numeric, jsonb) IS
'Internal: write a notification of an event (payment_received, supply_restored, bill_issued) to an account in its language, and NOTIFY prepay_notification.';

CREATE FUNCTION prepay._notify_payment() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM prepay.notify_site s WHERE s.site_id = NEW.site_id AND s.payment_received) THEN
        PERFORM prepay._notify_event(NEW.site_id, NEW.account_id, 'payment_received', NEW.amount);
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._notify_payment() IS 'Internal: AFTER INSERT trigger on prepay.ledger for recharges: a payment_received notification (the amount and the new balance) where the site asks for it.';
CREATE TRIGGER notify_payment AFTER INSERT ON prepay.ledger
    FOR EACH ROW WHEN (NEW.kind = 'recharge') EXECUTE FUNCTION prepay._notify_payment();
COMMENT ON TRIGGER notify_payment ON prepay.ledger IS 'Tells the tenant a recharge arrived (sites with prepay.notify_site.payment_received).  Never fires for consumption entries.';

CREATE FUNCTION prepay._notify_restored() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.account_id IS NOT NULL
       AND EXISTS (SELECT 1 FROM prepay.notify_site s WHERE s.site_id = NEW.site_id AND s.supply_restored) THEN
        PERFORM prepay._notify_event(NEW.site_id, NEW.account_id, 'supply_restored', NULL);
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._notify_restored() IS 'Internal: AFTER UPDATE trigger on prepay.command: a supply_restored notification when a close command of an account is done, where the site asks for it.';
CREATE TRIGGER notify_restored AFTER UPDATE OF state ON prepay.command
    FOR EACH ROW WHEN (NEW.state = 'done' AND OLD.state <> 'done' AND NEW.action = 'close')
    EXECUTE FUNCTION prepay._notify_restored();
COMMENT ON TRIGGER notify_restored ON prepay.command IS 'Tells the tenant the supply is back (sites with prepay.notify_site.supply_restored).';

CREATE FUNCTION prepay._notify_bill() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM prepay.notify_site s WHERE s.site_id = NEW.site_id AND s.bill_issued)
       AND NEW.amount_due > 0 THEN
        PERFORM prepay._notify_event(NEW.site_id, NEW.account_id, 'bill_issued', NEW.amount_due,
                                     pg_catalog.jsonb_build_object('due_on', NEW.due_on::text));
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._notify_bill() IS 'Internal: AFTER UPDATE trigger on prepay.bill: a bill_issued notification (amount due, due date) when a bill with something to pay is issued, where the site asks for it.';
CREATE TRIGGER notify_bill AFTER UPDATE OF state ON prepay.bill
    FOR EACH ROW WHEN (NEW.state = 'issued' AND OLD.state <> 'issued')
    EXECUTE FUNCTION prepay._notify_bill();
COMMENT ON TRIGGER notify_bill ON prepay.bill IS 'Tells the tenant a bill was issued (sites with prepay.notify_site.bill_issued).';

-- ---------------------------------------------------------------------
-- the agent's side
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._url_encode(p_text text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(pg_catalog.string_agg(
               CASE WHEN b BETWEEN 48 AND 57 OR b BETWEEN 65 AND 90 OR b BETWEEN 97 AND 122 OR b IN (45, 46, 95, 126)
                    THEN pg_catalog.chr(b)
                    ELSE '%' || pg_catalog.upper(pg_catalog.lpad(pg_catalog.to_hex(b), 2, '0')) END, '' ORDER BY i), '')
      FROM (SELECT i, pg_catalog.get_byte(x.bytes, i) AS b
              FROM (SELECT pg_catalog.convert_to(p_text, 'UTF8') AS bytes) x,
                   pg_catalog.generate_series(0, pg_catalog.length(x.bytes) - 1) AS i) y
$$;
COMMENT ON FUNCTION prepay._url_encode(text) IS 'Internal: percent-encode UTF-8 text for a URL or a form body (RFC 3986 unreserved characters kept).';

CREATE FUNCTION prepay._sms_fill(p_template text, p_phone text, p_text text, p_key text, p_secret text)
RETURNS text LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
           pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(p_template,
               '{phone_url}', prepay._url_encode(coalesce(p_phone, ''))),
               '{text_url}', prepay._url_encode(coalesce(p_text, ''))),
               '{phone_json}', pg_catalog.to_json(coalesce(p_phone, ''))::text),
               '{text_json}', pg_catalog.to_json(coalesce(p_text, ''))::text),
               '{phone}', coalesce(p_phone, '')),
               '{text}', coalesce(p_text, '')),
               '{key}', coalesce(p_key, '')),
               '{secret}', coalesce(p_secret, ''))
$$;
COMMENT ON FUNCTION prepay._sms_fill(text, text, text, text, text) IS 'Internal: fill an SMS request template (URL, header or body) with the phone, the text, the idempotency key and the secret.';

CREATE FUNCTION prepay._mail_message(p_from text, p_to text, p_subject text, p_body text, p_key text)
RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'From: ' || p_from || E'\r\n'
        || 'To: ' || p_to || E'\r\n'
        || 'Subject: =?UTF-8?B?' || pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(p_subject, 'UTF8'), 'base64'), E'\n', '') || E'?=\r\n'
        || 'Date: ' || pg_catalog.to_char(pg_catalog.now() AT TIME ZONE 'UTC', 'Dy, DD Mon YYYY HH24:MI:SS') || E' +0000\r\n'
        || 'Message-ID: <' || p_key || E'@prepay>\r\n'
        || E'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n'
        || 'X-Prepay-Idempotency-Key: ' || p_key || E'\r\n\r\n'
        || pg_catalog.replace(p_body, E'\n', E'\r\n') || E'\r\n'
$$;
COMMENT ON FUNCTION prepay._mail_message(text, text, text, text, text) IS 'Internal: the RFC 5322 text of a notification e-mail (UTF-8 plain text, the subject RFC 2047 encoded, the idempotency key as Message-ID).';

CREATE FUNCTION prepay._delivery_request(p_site_id integer, p_notification_id bigint, p_channel text)
RETURNS TABLE (idempotency_key text, created_epoch numeric, url text, method text, headers text,
               body text, secret text, username text, mail_from text, mail_to text, timeout_s integer)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT k.key, pg_catalog.date_part('epoch', n.created_at)::numeric,
           CASE c.channel WHEN 'sms' THEN prepay._sms_fill(c.url, n.phone, n.message, k.key, x.secret) ELSE c.url END,
           CASE c.channel WHEN 'email' THEN c.smtp_tls WHEN 'webhook' THEN 'POST' ELSE c.method END,
           CASE c.channel WHEN 'webhook' THEN pg_catalog.array_to_string(ARRAY['Content-Type: application/json'] || c.headers, E'\n')
                          WHEN 'sms' THEN pg_catalog.array_to_string(ARRAY(SELECT prepay._sms_fill(h, n.phone, n.message, k.key, x.secret)
                                                                               FROM pg_catalog.unnest(c.headers) AS h), E'\n')
                          ELSE '' END,
           CASE c.channel
               WHEN 'webhook' THEN pg_catalog.json_build_object(
                   'notification_id', n.notification_id, 'idempotency_key', k.key,
                   'site_id', n.site_id, 'site', s.name, 'account_id', n.account_id, 'account', a.code,
                   'meters', (SELECT coalesce(pg_catalog.json_agg(m.code ORDER BY m.meter_id), '[]')
                                FROM prepay.meter m WHERE m.site_id = n.site_id AND m.account_id = n.account_id),
                   'kind', n.kind, 'level', n.alarm_level, 'balance', n.balance, 'currency', s.currency,
                   'message', n.message, 'created_at', n.created_at)::text
               WHEN 'sms' THEN prepay._sms_fill(c.body, n.phone, n.message, k.key, x.secret)
               ELSE prepay._mail_message(c.mail_from, n.email,
                        (prepay._notify_text(n.site_id, prepay._notify_template_of(n.kind, n.alarm_level),
                                            prepay._notify_language(n.site_id, n.account_id), '{}')).subject,
                        n.message, k.key) END,
           CASE c.channel WHEN 'sms' THEN NULL ELSE x.secret END,
           c.smtp_user, c.mail_from, CASE c.channel WHEN 'email' THEN n.email END,
           greatest(1, (pg_catalog.date_part('epoch', c.lease) / 2)::integer)
      FROM prepay.notification n
      JOIN prepay.site s ON s.site_id = n.site_id
      JOIN prepay.account a ON a.site_id = n.site_id AND a.account_id = n.account_id
      JOIN prepay.notify_channel c ON c.site_id = n.site_id AND c.channel = p_channel
      LEFT JOIN prepay.notify_secret x ON x.site_id = c.site_id AND x.channel = c.channel
     CROSS JOIN LATERAL (SELECT pg_catalog.format('prepay-%s-%s-%s', n.site_id, n.notification_id, p_channel) AS key) k
     WHERE n.site_id = p_site_id AND n.notification_id = p_notification_id
$$;
COMMENT ON FUNCTION prepay._delivery_request(integer, bigint, text) IS
'Internal: what the agent sends for a delivery: the idempotency key (prepay-<site>-<notification>-<channel>), the creation time, and per channel the URL, method (for email the TLS mode), headers, body (webhook: the JSON document; sms: the filled template; email: the message), the secret (webhook HMAC key, SMTP password), SMTP login and addresses, and the request timeout.  Reads the secrets: callable with effect only by their readers.';

CREATE FUNCTION prepay._delivery_dead(d prepay.notification_delivery, p_error text)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE prepay.notification_delivery
       SET dead_at = pg_catalog.now(), lease_until = NULL, last_error = p_error
     WHERE site_id = d.site_id AND notification_id = d.notification_id AND channel = d.channel;
    INSERT INTO prepay.alarm (site_id, kind, account_id, detail)
    VALUES (d.site_id, 'notification_dead', d.account_id,
            pg_catalog.format('notification %s by %s given up after %s attempts: %s',
                              d.notification_id, d.channel, d.attempts, p_error))
    ON CONFLICT DO NOTHING;
END $$;
COMMENT ON FUNCTION prepay._delivery_dead(prepay.notification_delivery, text) IS
'Internal: dead-letter a delivery with its last error and raise an alarm notification_dead for the account (one active alarm per account; the deliveries are in prepay.notification_delivery_status).';

CREATE FUNCTION prepay._deliveries_expire(p_sites integer[])
RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN
        SELECT x AS dl, CASE WHEN x.attempts >= c.max_attempts
                             THEN pg_catalog.format('no result reported within the lease of attempt %s (%s)', x.attempts,
                                                    coalesce(x.last_error, 'agent gone'))
                             ELSE pg_catalog.format('older than max_age %s; last error: %s', c.max_age,
                                                    coalesce(x.last_error, 'none')) END AS why
          FROM prepay.notify_channel c
          JOIN prepay.notification_delivery x ON x.site_id = c.site_id AND x.channel = c.channel
         WHERE c.site_id = ANY (p_sites)
           AND x.delivered_at IS NULL AND x.dead_at IS NULL AND x.next_attempt_at <= pg_catalog.now()
           AND coalesce(x.lease_until, '-infinity') <= pg_catalog.now()
           AND (x.attempts >= c.max_attempts OR x.created_at + c.max_age < pg_catalog.now())
           FOR UPDATE OF x SKIP LOCKED
    LOOP
        PERFORM prepay._delivery_dead(r.dl, r.why);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay._deliveries_expire(integer[]) IS
'Internal: dead-letter the due deliveries of these sites that are too old (max_age after they were written) or whose last attempt (max_attempts) was never reported.';

CREATE FUNCTION prepay.agent_claim_deliveries(p_agent_id text, p_limit integer DEFAULT 50)
RETURNS TABLE (site_id integer, notification_id bigint, channel text, attempt integer,
               idempotency_key text, created_epoch numeric, url text, method text, headers text, body text,
               secret text, username text, mail_from text, mail_to text, timeout_s integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    sites integer[];
BEGIN
    PERFORM prepay._authorize_agent_id(p_agent_id);
    sites := ARRAY(SELECT s.site_id FROM prepay.site s WHERE prepay._is_agent(s.site_id, p_agent_id));
    PERFORM prepay._deliveries_expire(sites);
    RETURN QUERY
    WITH due AS (
        SELECT d.site_id, d.notification_id, d.channel
          FROM prepay.notify_channel c
         CROSS JOIN LATERAL (
               SELECT c.max_per_minute - pg_catalog.count(*) AS room
                 FROM prepay.notification_delivery r
                WHERE r.site_id = c.site_id AND r.channel = c.channel
                  AND r.last_attempt_at > pg_catalog.now() - interval '1 minute') q
         CROSS JOIN LATERAL (
               SELECT x.site_id, x.notification_id, x.channel
                 FROM prepay.notification_delivery x
                WHERE x.site_id = c.site_id AND x.channel = c.channel
                  AND x.delivered_at IS NULL AND x.dead_at IS NULL AND x.next_attempt_at <= pg_catalog.now()
                  AND coalesce(x.lease_until, '-infinity') <= pg_catalog.now()
                ORDER BY x.next_attempt_at, x.notification_id
                LIMIT greatest(least(q.room, p_limit), 0)
                  FOR UPDATE SKIP LOCKED) d
         WHERE c.site_id = ANY (sites) AND c.enabled
         LIMIT greatest(p_limit, 1)
    ), claimed AS (
        UPDATE prepay.notification_delivery d
           SET attempts = d.attempts + 1, lease_until = pg_catalog.now() + c.lease, leased_by = p_agent_id,
               last_attempt_at = pg_catalog.now()
          FROM due, prepay.notify_channel c
         WHERE d.site_id = due.site_id AND d.notification_id = due.notification_id AND d.channel = due.channel
           AND c.site_id = d.site_id AND c.channel = d.channel
        RETURNING d.site_id, d.notification_id, d.channel, d.attempts
    )
    SELECT k.site_id, k.notification_id, k.channel, k.attempts, r.*
      FROM claimed k CROSS JOIN LATERAL prepay._delivery_request(k.site_id, k.notification_id, k.channel) r
     ORDER BY k.site_id, k.notification_id, k.channel;
END $$;
COMMENT ON FUNCTION prepay.agent_claim_deliveries(text, integer) IS
'The delivering agent takes up to p_limit due deliveries of the sites it is an agent of (FOR UPDATE SKIP LOCKED, so that two agents never take the same one): each gets attempts + 1 and a lease (notify_channel.lease) and is returned with everything needed to send it, secrets included (see prepay._delivery_request).  At most max_per_minute attempts per site and channel in any minute.  First dead-letters what is too old or was never reported.';

CREATE FUNCTION prepay._agent_delivery(p_agent_id text, p_site_id integer, p_notification_id bigint, p_channel text)
RETURNS prepay.notification_delivery LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d prepay.notification_delivery;
BEGIN
    IF NOT prepay._is_agent(p_site_id, p_agent_id) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied for site %s', p_site_id),
            pg_catalog.format('Agent %s does not deliver for site %s.', pg_catalog.quote_literal(p_agent_id), p_site_id),
            'Map the agent''s login in prepay.agent_access.');
    END IF;
    SELECT * INTO d FROM prepay.notification_delivery
     WHERE site_id = p_site_id AND notification_id = p_notification_id AND channel = p_channel FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM prepay._raise('PY501', 'unknown delivery',
            pg_catalog.format('Site %s has no delivery of notification %s by %s.', p_site_id, p_notification_id, p_channel),
            'Report only deliveries returned by prepay.agent_claim_deliveries.');
    END IF;
    RETURN d;
END $$;
COMMENT ON FUNCTION prepay._agent_delivery(text, integer, bigint, text) IS 'Internal: lock a delivery an agent reports on; 42501 if the agent does not serve the site, PY501 if unknown.';

CREATE FUNCTION prepay.agent_delivery_done(p_agent_id text, p_site_id integer, p_notification_id bigint,
                                           p_channel text, p_attempt integer, p_status integer DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d prepay.notification_delivery;
BEGIN
    PERFORM prepay._authorize_agent_id(p_agent_id);
    d := prepay._agent_delivery(p_agent_id, p_site_id, p_notification_id, p_channel);
    IF d.delivered_at IS NOT NULL THEN
        RETURN 'already delivered';
    END IF;
    UPDATE prepay.notification_delivery
       SET delivered_at = pg_catalog.now(), dead_at = NULL, lease_until = NULL, last_status = p_status
     WHERE site_id = p_site_id AND notification_id = p_notification_id AND channel = p_channel;
    UPDATE prepay.notification n SET delivered_at = pg_catalog.now()
     WHERE n.site_id = p_site_id AND n.notification_id = p_notification_id AND n.delivered_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM prepay.notification_delivery x
                        WHERE x.site_id = n.site_id AND x.notification_id = n.notification_id AND x.delivered_at IS NULL);
    RETURN 'delivered';
END $$;
COMMENT ON FUNCTION prepay.agent_delivery_done(text, integer, bigint, text, integer, integer) IS
'The agent delivered a claimed delivery (the receiver answered 2xx, the SMTP server accepted the message): delivered_at is set, and the notification''s delivered_at once every channel of it is delivered.  Accepted from any attempt, even after the lease ran out or after a dead letter (the message did arrive).  Returns delivered or already delivered.  42501, PY501.';

CREATE FUNCTION prepay._delivery_permanent(p_channel text, p_status integer) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(CASE p_channel WHEN 'email' THEN p_status BETWEEN 500 AND 599
                                   ELSE p_status BETWEEN 400 AND 499 AND p_status NOT IN (408, 429) END, false)
$$;
COMMENT ON FUNCTION prepay._delivery_permanent(text, integer) IS
'Whether an answer is a permanent failure, not worth retrying: for webhook and sms an HTTP 4xx other than 408 (timeout) and 429 (too many requests); for email an SMTP 5xx reply (a refused address or message).  A transport error (NULL status) is never permanent.';

CREATE FUNCTION prepay.agent_delivery_failed(p_agent_id text, p_site_id integer, p_notification_id bigint,
                                             p_channel text, p_attempt integer, p_error text, p_status integer DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d prepay.notification_delivery;
    c prepay.notify_channel;
    delay interval;
    why text := coalesce(p_status::text || ': ', '') || coalesce(p_error, 'unknown error');
BEGIN
    PERFORM prepay._authorize_agent_id(p_agent_id);
    d := prepay._agent_delivery(p_agent_id, p_site_id, p_notification_id, p_channel);
    IF d.delivered_at IS NOT NULL OR d.dead_at IS NOT NULL OR d.attempts IS DISTINCT FROM p_attempt THEN
        RETURN 'stale';       -- another attempt has taken over, or it is settled
    END IF;
    SELECT * INTO c FROM prepay.notify_channel WHERE site_id = p_site_id AND channel = p_channel;
    UPDATE prepay.notification_delivery SET last_status = p_status, last_error = why
     WHERE site_id = p_site_id AND notification_id = p_notification_id AND channel = p_channel;
    IF prepay._delivery_permanent(p_channel, p_status) OR d.attempts >= c.max_attempts THEN
        d.last_status := p_status;
        PERFORM prepay._delivery_dead(d, CASE WHEN prepay._delivery_permanent(p_channel, p_status)
                                              THEN 'permanent failure: ' ELSE '' END || why);
        RETURN 'dead';
    END IF;
    delay := least(c.backoff_max, c.backoff_base * pg_catalog.power(2, least(d.attempts - 1, 30))::integer);
    UPDATE prepay.notification_delivery
       SET lease_until = NULL, next_attempt_at = pg_catalog.now() + delay * (0.5 + 0.5 * pg_catalog.random())
     WHERE site_id = p_site_id AND notification_id = p_notification_id AND channel = p_channel;
    RETURN 'retry';
END $$;
COMMENT ON FUNCTION prepay.agent_delivery_failed(text, integer, bigint, text, integer, text, integer) IS
'The agent failed a claimed delivery (p_status: the HTTP status or SMTP reply code, NULL for a transport error).  A permanent failure (prepay._delivery_permanent) or the channel''s max_attempts-th attempt dead-letters it with an alarm notification_dead (returns dead); otherwise it is due again after backoff_base x 2^(attempts-1), at most backoff_max, times a random factor between 0.5 and 1 (returns retry).  A report of an attempt that is no longer the current one changes nothing (returns stale).  42501, PY501.';

-- ---------------------------------------------------------------------
-- pg_dump: configuration and delivery state are user data
-- ---------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('prepay.notify_site', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.account_language', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.notify_channel', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.notify_secret', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.notify_template', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.notification_delivery', '');

/*-------------------------------------------------------------------------
 * sql/schedule.sql
 *     The periodic jobs prepay needs, registered with pg_cron in one call:
 *     prepay.schedule_jobs() schedules them (idempotently: a second call
 *     leaves one of each and updates a changed schedule or command),
 *     prepay.scheduled_jobs() shows them with pg_cron's state and last
 *     run, prepay.unschedule_jobs() removes them, prepay.periodic_jobs()
 *     lists what they are.  docs/BILLING.md ("The daily run and pg_cron")
 *     explains the server settings pg_cron needs.
 *
 * Who: scheduling and removing need a superuser.  pg_cron runs a job as
 * the role that scheduled it (cron.job.username: current_user), and the
 * jobs do every site's bookkeeping (the billing run, batches, rollups,
 * reminders), which no site-mapped role may; a superuser's job passes
 * every prepay check.  The functions are SECURITY INVOKER, so that the job
 * belongs to the caller, never to the extension's owner by surprise.
 *
 * pg_cron is optional: without it (not installed in this database) the
 * scheduling functions refuse with 55000, a message and a hint, and
 * prepay.scheduled_jobs() still lists the jobs with that state.  pg_cron
 * can only be created in its cron.database_name, so prepay and pg_cron
 * share a database.  Queries on schema cron are reached only after the
 * extension was found (PL/pgSQL plans a statement when it first runs).
 *
 * Appended before security.sql, whose generic loop grants EXECUTE on these
 * functions to the prepay roles (they check the caller themselves).
 *-------------------------------------------------------------------------
 */

CREATE FUNCTION prepay.periodic_jobs()
RETURNS TABLE (jobname text, schedule text, command text, purpose text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES
        ('prepay-daily', '5 * * * *', 'SELECT count(*) FROM prepay.run_periodic_all()',
         'the daily billing run of every site on its local day (basic charges, settlement, apportionment, '
         'allowances, fees, bills; docs/BILLING.md); hourly, since every step is idempotent and the first '
         'run after local midnight does the day''s work'),
        ('prepay-batches', '* * * * *', 'SELECT count(*) FROM prepay.run_due_batches(1000)',
         'the batch runner: scheduled batch operations whose time has come (docs/BATCH.md)'),
        ('prepay-fold', '* * * * *', 'SELECT prepay.fold_rollups()',
         'fold the energy rollups'' deltas, so that the report views stay fast (docs/REPORTS.md)'),
        ('prepay-cut-reminders', '*/5 * * * *', 'SELECT prepay.send_cut_reminders()',
         'the reminder before a predicted cut, cut_reminder_lead ahead (docs/REPORTS.md)')
$$;
COMMENT ON FUNCTION prepay.periodic_jobs() IS
'The periodic jobs prepay needs: pg_cron job name, default schedule (cron format, the server''s time zone), the command, and what it is for.  prepay.schedule_jobs() registers exactly these.';

CREATE FUNCTION prepay._cron_installed() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_cron')
$$;
COMMENT ON FUNCTION prepay._cron_installed() IS 'Internal: whether pg_cron is installed in this database.';

CREATE FUNCTION prepay._cron_prerequisites(p_what text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied: prepay.%s needs a superuser', p_what),
            pg_catalog.format('Role %s is not a superuser.  pg_cron runs a job as the role that scheduled it, and '
                              'prepay''s jobs do the bookkeeping of every site.', current_user),
            'Connect as a superuser (for example postgres) and call it again.');
    END IF;
    IF NOT prepay._cron_installed() THEN
        PERFORM prepay._raise('55000', pg_catalog.format('pg_cron is not installed in database %s', pg_catalog.current_database()),
            'prepay''s periodic jobs (the billing run, the batch runner, the rollup fold, the cut reminders) are '
            'scheduled with pg_cron; without them no fees are charged, no scheduled batch runs, no reminder is sent.',
            pg_catalog.format('Install postgresql-15-cron; in postgresql.conf set shared_preload_libraries = ''pg_cron'', '
                              'cron.database_name = %L and, on a server without TCP (listen_addresses = ''''), '
                              'cron.use_background_workers = on; restart; then CREATE EXTENSION pg_cron; (docs/BILLING.md).',
                              pg_catalog.current_database()));
    END IF;
END $$;
COMMENT ON FUNCTION prepay._cron_prerequisites(text) IS
'Internal: refuse to schedule or unschedule unless the caller (current_user, whom pg_cron runs the jobs as) is a superuser (42501) and pg_cron is installed in this database (55000, with a hint naming the settings).';

CREATE FUNCTION prepay._cron_reachable() RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- without background workers pg_cron runs a job over libpq to cron.host
    -- (localhost by default), which a socket-only server does not listen on
    IF pg_catalog.current_setting('listen_addresses') = ''
       AND coalesce(pg_catalog.current_setting('cron.use_background_workers', true), 'off') <> 'on'
       AND coalesce(pg_catalog.current_setting('cron.host', true), 'localhost') !~ '^/' THEN
        RAISE WARNING USING
            MESSAGE = 'pg_cron cannot reach this server: it listens on no TCP address and cron.use_background_workers is off',
            DETAIL = pg_catalog.format('pg_cron connects to cron.host = %s; every job run will fail to connect '
                                       '(prepay.scheduled_jobs() shows the failures).',
                                       coalesce(pg_catalog.current_setting('cron.host', true), 'localhost')),
            HINT = 'Set cron.use_background_workers = on in postgresql.conf (or cron.host to the socket directory) and restart.';
    END IF;
END $$;
COMMENT ON FUNCTION prepay._cron_reachable() IS
'Internal: warn when pg_cron''s job runs cannot connect: a server without TCP (listen_addresses empty) while cron.use_background_workers is off and cron.host is not a socket directory.';

CREATE FUNCTION prepay._job_schedules(p_schedules jsonb)
RETURNS TABLE (jobname text, schedule text, command text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    unknown text;
BEGIN
    IF p_schedules IS NOT NULL AND pg_catalog.jsonb_typeof(p_schedules) <> 'object' THEN
        PERFORM prepay._raise('22023', 'schedules must be a JSON object of job name to cron schedule',
            pg_catalog.format('Given: %s.', pg_catalog.left(p_schedules::text, 200)),
            'For example {"prepay-cut-reminders": "*/2 * * * *"}; prepay.periodic_jobs() lists the job names.');
    END IF;
    SELECT pg_catalog.string_agg(k, ', ' ORDER BY k) INTO unknown
      FROM pg_catalog.jsonb_each(coalesce(p_schedules, '{}')) AS e (k, v)
     WHERE k NOT IN (SELECT j.jobname FROM prepay.periodic_jobs() j) OR pg_catalog.jsonb_typeof(v) <> 'string';
    IF unknown IS NOT NULL THEN
        PERFORM prepay._raise('22023', 'schedules name unknown jobs or give a schedule that is not a string',
            pg_catalog.format('Not a prepay job, or not a string: %s.', pg_catalog.left(unknown, 200)),
            pg_catalog.format('The jobs are %s; a schedule is a cron string such as "*/5 * * * *".',
                              (SELECT pg_catalog.string_agg(j.jobname, ', ') FROM prepay.periodic_jobs() j)));
    END IF;
    RETURN QUERY
    SELECT j.jobname, coalesce(p_schedules ->> j.jobname, j.schedule), j.command FROM prepay.periodic_jobs() j;
END $$;
COMMENT ON FUNCTION prepay._job_schedules(jsonb) IS
'Internal: the jobs with their schedules, the defaults overridden by p_schedules ({"job name": "cron schedule"}); 22023 for anything but an object of known job names to strings.';

CREATE FUNCTION prepay.scheduled_jobs()
RETURNS TABLE (jobname text, jobid bigint, schedule text, command text, active boolean, run_as text,
               last_run_at timestamptz, last_status text, last_message text, state text, purpose text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT prepay._cron_installed() THEN
        RETURN QUERY SELECT j.jobname, NULL::bigint, j.schedule, j.command, NULL::boolean, NULL::text,
                            NULL::timestamptz, NULL::text, NULL::text, 'pg_cron is not installed'::text, j.purpose
                       FROM prepay.periodic_jobs() j ORDER BY j.jobname;
        RETURN;
    END IF;
    IF NOT pg_catalog.has_schema_privilege('cron', 'USAGE') THEN
        RETURN QUERY SELECT j.jobname, NULL::bigint, j.schedule, j.command, NULL::boolean, NULL::text,
                            NULL::timestamptz, NULL::text, NULL::text,
                            pg_catalog.format('pg_cron''s jobs are not visible to %s', current_user), j.purpose
                       FROM prepay.periodic_jobs() j ORDER BY j.jobname;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT j.jobname, c.jobid, coalesce(c.schedule, j.schedule), coalesce(c.command, j.command), c.active,
           c.username::text, r.start_time, r.status, r.return_message,
           CASE WHEN c.jobid IS NULL THEN 'not scheduled'
                WHEN NOT c.active THEN 'inactive'
                WHEN c.command <> j.command THEN 'scheduled with another command'
                ELSE 'scheduled' END,
           j.purpose
      FROM prepay.periodic_jobs() j
      LEFT JOIN cron.job c ON c.jobname = j.jobname
      LEFT JOIN LATERAL (SELECT d.start_time, d.status, d.return_message FROM cron.job_run_details d
                          WHERE d.jobid = c.jobid ORDER BY d.runid DESC LIMIT 1) AS r ON true
     ORDER BY j.jobname, c.jobid;
END $$;
COMMENT ON FUNCTION prepay.scheduled_jobs() IS
'prepay''s periodic jobs as pg_cron has them: job id, schedule, command, whether active, the role a run acts as, the last run (start, status, pg_cron''s message) and a state (scheduled, not scheduled, inactive, scheduled with another command, pg_cron is not installed, not visible to the caller).  Works without pg_cron.';

CREATE FUNCTION prepay.schedule_jobs(p_schedules jsonb DEFAULT '{}')
RETURNS TABLE (jobname text, jobid bigint, schedule text, command text, active boolean, run_as text,
               last_run_at timestamptz, last_status text, last_message text, state text, purpose text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
    other bigint;
BEGIN
    PERFORM prepay._cron_prerequisites('schedule_jobs');
    PERFORM prepay._cron_reachable();
    FOR j IN SELECT * FROM prepay._job_schedules(p_schedules) LOOP
        -- one of each: the same job scheduled by another role would run twice
        FOR other IN SELECT c.jobid FROM cron.job c WHERE c.jobname = j.jobname AND c.username <> current_user LOOP
            PERFORM cron.unschedule(other);
        END LOOP;
        -- pg_cron updates the caller's job of that name in place (same job id)
        PERFORM cron.schedule(j.jobname, j.schedule, j.command);
    END LOOP;
    RETURN QUERY SELECT * FROM prepay.scheduled_jobs();
END $$;
COMMENT ON FUNCTION prepay.schedule_jobs(jsonb) IS
'Register every periodic job prepay needs (prepay.periodic_jobs()) with pg_cron, to run as the caller, and return them as prepay.scheduled_jobs() shows them.  Idempotent: calling it again leaves one job of each name (a same-named job of another role is removed) and updates a changed schedule or command in place.  p_schedules overrides default schedules, e.g. {"prepay-cut-reminders": "*/2 * * * *"} (22023 for an unknown job name or a non-string; pg_cron refuses an invalid schedule).  Needs a superuser (42501) and pg_cron in this database (55000, with a hint naming the postgresql.conf settings); warns when pg_cron cannot reach a socket-only server.';

CREATE FUNCTION prepay.unschedule_jobs()
RETURNS integer LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint;
    n integer := 0;
BEGIN
    PERFORM prepay._cron_prerequisites('unschedule_jobs');
    FOR id IN SELECT c.jobid FROM cron.job c
               WHERE c.jobname IN (SELECT j.jobname FROM prepay.periodic_jobs() j) ORDER BY c.jobid LOOP
        PERFORM cron.unschedule(id);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION prepay.unschedule_jobs() IS
'Remove prepay''s periodic jobs (the names prepay.periodic_jobs() lists, whoever scheduled them) from pg_cron; returns how many were removed.  Jobs scheduled by hand under other names are left alone.  Needs a superuser (42501) and pg_cron in this database (55000).';
/*-------------------------------------------------------------------------
 * sql/api.sql
 *     The tenant's and the payment service's API, shaped for a REST
 *     gateway (PostgREST exposes each function as POST /rpc/<name> with
 *     the parameter names as JSON keys): a tenant reads its balance,
 *     meters, recent charges with their pricing, bills, payments and
 *     forecast; a payment service (a cashier role) credits a provider's
 *     payment and refund idempotently by the provider's id and gets the
 *     new balance back in the same call.  Appended before security.sql
 *     into prepay--<version>.sql.  docs/INTEGRATION.md is the deployment
 *     (authenticator, claims, pooling) and the table of SQLSTATEs and HTTP
 *     statuses; docs/SECURITY.md the identity model.
 *
 * Vocabulary
 *     my accounts the accounts the role a request acts as may see as a
 *                 tenant: mapped to it in prepay.tenant_access, or named
 *                 by the verified claims its authenticator passed
 *                 (prepay._my_accounts()).  Every tenant function takes an
 *                 optional p_account_id that narrows them to one.
 *     provider    the payment provider; its name is the ledger's channel
 *                 and its transaction (or refund) id the external_ref, so
 *                 one id credits once (prepay.recharge's idempotency).
 *
 * Rows are JSON-friendly: enums as text, amounts as numeric (exact in
 * JSON), explanations and bill lines as jsonb arrays.
 *
 * Errors: 42501 not a tenant, or no such account of the caller's, or no
 * money capability at the site; 22023 a bad amount, limit or empty
 * provider id; PY001 unknown account, PY002 closed account, PY004 a
 * provider id already used for a different payment, PY005 a refund above
 * the refundable balance, PY203 claims an authenticator passed that name
 * no valid account.
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- the tenant: which accounts a request may read
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._authorize_tenant(p_account_id bigint)
RETURNS TABLE (site_id integer, account_id bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_catalog.pg_has_role(prepay._caller(), 'prepay_tenant', 'USAGE') THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied: %s is not a tenant', prepay._caller_name()),
            pg_catalog.format('Role %s does not have the privileges of prepay_tenant.', prepay._caller_name()),
            'The tenant API answers tenant roles (GRANT prepay_tenant TO the role the gateway switches to).');
    END IF;
    IF prepay._caller_is_superuser() THEN       -- superusers pass every check: any account
        RETURN QUERY SELECT a.site_id, a.account_id FROM prepay.account a
                      WHERE p_account_id IS NULL OR a.account_id = p_account_id
                      ORDER BY 1, 2;
    ELSE
        RETURN QUERY SELECT t.site_id, t.account_id FROM prepay._my_accounts() t
                      WHERE p_account_id IS NULL OR t.account_id = p_account_id
                      ORDER BY 1, 2;
    END IF;
    IF NOT FOUND THEN
        PERFORM prepay._raise('42501', CASE WHEN p_account_id IS NULL
                                            THEN pg_catalog.format('permission denied: %s has no account', prepay._caller_name())
                                            ELSE pg_catalog.format('permission denied for account %s', p_account_id) END,
            pg_catalog.format('Role %s is mapped to no such account (prepay.tenant_access) and the request carries no claims '
                              'its login may vouch for (prepay.api_authenticator).', prepay._caller_name()),
            'Map the tenant role to its account, or have the gateway''s authenticator pass the verified claims {"site_id", "account_id"}.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._authorize_tenant(bigint) IS
'Internal: the accounts (site_id, account_id) the calling tenant may read (prepay._my_accounts(): mapped, or named by verified claims; every account for a superuser), narrowed to p_account_id if given.  Raises 42501 if the caller is not a tenant or has no such account.  Every tenant function of sql/api.sql starts with it.';

CREATE FUNCTION prepay._api_limit(p_limit integer)
RETURNS integer LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1000 THEN
        PERFORM prepay._raise('22023', 'limit must be between 1 and 1000',
            pg_catalog.format('The limit given was %s.', coalesce(p_limit::text, 'NULL')),
            'Ask for at most 1000 rows at a time.');
    END IF;
    RETURN p_limit;
END $$;
COMMENT ON FUNCTION prepay._api_limit(integer) IS 'Internal: refuse a row limit outside 1 .. 1000 (22023).';

-- ---------------------------------------------------------------------
-- the tenant's reads
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay.my_balance(p_account_id bigint DEFAULT NULL)
RETURNS TABLE (site_id integer, account_id bigint, account_code text, account_name text, mode text, currency text,
               balance numeric, credit_limit numeric, available numeric, allowance_left numeric, alarm_level smallint,
               closed boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT a.site_id, a.account_id, a.code, a.name, a.mode::text, s.currency::text,
           a.balance, a.credit_limit, a.balance + a.credit_limit, a.allowance_left, a.alarm_level,
           a.closed_at IS NOT NULL
      FROM prepay._authorize_tenant(p_account_id) t
      JOIN prepay.account a ON a.site_id = t.site_id AND a.account_id = t.account_id
      JOIN prepay.site s ON s.site_id = a.site_id
     ORDER BY a.site_id, a.account_id;
END $$;
COMMENT ON FUNCTION prepay.my_balance(bigint) IS
'Tenant API: the balance of each of the caller''s accounts (or of p_account_id): balance, credit limit, available (balance + credit limit), unspent allowance, alarm level (0 ok, 1 low, 2 pre-trip, 3 arrears), in the site''s currency.  42501 for a caller that is not a tenant or has no such account.';

CREATE FUNCTION prepay.my_meters(p_account_id bigint DEFAULT NULL)
RETURNS TABLE (site_id integer, account_id bigint, meter_id bigint, meter_code text, kind text, building text,
               floor text, room text, relay_state text, last_read_at timestamptz, last_energy numeric, lost boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT m.site_id, m.account_id, m.meter_id, m.code, m.kind::text, m.building, m.floor, m.room,
           m.relay_state::text, m.last_read_at, m.last_energy, m.lost_since IS NOT NULL
      FROM prepay._authorize_tenant(p_account_id) t
      JOIN prepay.meter m ON m.site_id = t.site_id AND m.account_id = t.account_id AND m.active
     ORDER BY m.site_id, m.account_id, m.meter_id;
END $$;
COMMENT ON FUNCTION prepay.my_meters(bigint) IS
'Tenant API: the active meters of the caller''s accounts (or of p_account_id): where they are, the relay state, the last reading (time and register) and whether contact is lost.  42501 as prepay.my_balance.';

CREATE FUNCTION prepay.my_charges(p_account_id bigint DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS TABLE (site_id integer, account_id bigint, entry_id bigint, kind text, created_at timestamptz, amount numeric,
               balance_after numeric, meter_id bigint, read_from timestamptz, read_to timestamptz, energy numeric,
               explanation jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._api_limit(p_limit);
    RETURN QUERY
    SELECT l.site_id, l.account_id, l.entry_id, l.kind::text, l.created_at, l.amount, l.balance_after,
           l.meter_id, l.read_from, l.read_to, l.energy,
           CASE WHEN l.kind = 'consumption' AND l.pieces IS NOT NULL THEN
               (SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(x) - 'entry_id' - 'meter_id' - 'read_from' - 'read_to'
                                            ORDER BY x.piece_from, x.tier)
                  FROM prepay.explain_charge(l.site_id, l.entry_id) AS x) END
      FROM prepay._authorize_tenant(p_account_id) t
     CROSS JOIN LATERAL (SELECT e.* FROM prepay.ledger e
                          WHERE e.site_id = t.site_id AND e.account_id = t.account_id
                            AND e.kind NOT IN ('recharge', 'refund', 'closing_refund', 'bill_payment')
                          ORDER BY e.entry_id DESC LIMIT p_limit) AS l
     ORDER BY l.site_id, l.account_id, l.entry_id DESC;
END $$;
COMMENT ON FUNCTION prepay.my_charges(bigint, integer) IS
'Tenant API: the p_limit (1 .. 1000, default 20) most recent charges and corrections of each of the caller''s accounts (everything but payments, refunds and bill payments), newest first; a consumption charge carries its explanation (prepay.explain_charge: the two register values, the multiplier and each priced piece with its period, tier, energy, unit price and exact amount) as a jsonb array.  42501 as prepay.my_balance; 22023 for a bad limit.';

CREATE FUNCTION prepay.my_payments(p_account_id bigint DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS TABLE (site_id integer, account_id bigint, entry_id bigint, kind text, created_at timestamptz, amount numeric,
               balance_after numeric, channel text, reference text, reverses_entry bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._api_limit(p_limit);
    RETURN QUERY
    SELECT l.site_id, l.account_id, l.entry_id, l.kind::text, l.created_at, l.amount, l.balance_after,
           l.channel, l.external_ref, l.reverses_entry
      FROM prepay._authorize_tenant(p_account_id) t
     CROSS JOIN LATERAL (SELECT e.* FROM prepay.ledger e
                          WHERE e.site_id = t.site_id AND e.account_id = t.account_id
                            AND (e.kind IN ('recharge', 'refund', 'closing_refund', 'bill_payment')
                                 OR e.kind = 'reversal' AND EXISTS (
                                        SELECT 1 FROM prepay.ledger r
                                         WHERE r.site_id = e.site_id AND r.entry_id = e.reverses_entry
                                           AND r.kind IN ('recharge', 'refund')))
                          ORDER BY e.entry_id DESC LIMIT p_limit) AS l
     ORDER BY l.site_id, l.account_id, l.entry_id DESC;
END $$;
COMMENT ON FUNCTION prepay.my_payments(bigint, integer) IS
'Tenant API: the p_limit (1 .. 1000, default 20) most recent payments of each of the caller''s accounts, newest first: recharges, refunds, their reversals, the closing refund and bill payments, with the channel and its reference (the receipt or the provider''s transaction id).  42501 as prepay.my_balance; 22023 for a bad limit.';

CREATE FUNCTION prepay.my_bills(p_account_id bigint DEFAULT NULL, p_limit integer DEFAULT 12)
RETURNS TABLE (site_id integer, account_id bigint, bill_id bigint, period_start date, period_end date, state text,
               energy numeric, charges numeric, amount_due numeric, paid numeric, outstanding numeric, due_on date,
               issued_at timestamptz, lines jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM prepay._api_limit(p_limit);
    RETURN QUERY
    SELECT b.site_id, b.account_id, b.bill_id, b.period_start, b.period_end, b.state, b.energy, b.charges,
           b.amount_due, b.paid, b.amount_due - b.paid, b.due_on, b.issued_at,
           (SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(bl) - 'site_id' - 'bill_id' ORDER BY bl.line_no)
              FROM prepay.bill_line bl WHERE bl.site_id = b.site_id AND bl.bill_id = b.bill_id)
      FROM prepay._authorize_tenant(p_account_id) t
     CROSS JOIN LATERAL (SELECT x.* FROM prepay.bill x
                          WHERE x.site_id = t.site_id AND x.account_id = t.account_id AND x.state IN ('issued', 'paid')
                          ORDER BY x.period_start DESC LIMIT p_limit) AS b
     ORDER BY b.site_id, b.account_id, b.period_start DESC;
END $$;
COMMENT ON FUNCTION prepay.my_bills(bigint, integer) IS
'Tenant API: the p_limit (1 .. 1000, default 12) latest issued or paid bills of each of the caller''s accounts (drafts stay with the back office), newest period first, with what is outstanding and the bill lines as a jsonb array.  42501 as prepay.my_balance; 22023 for a bad limit.';

CREATE FUNCTION prepay.my_forecast(p_account_id bigint DEFAULT NULL)
RETURNS TABLE (site_id integer, account_id bigint, balance numeric, available numeric, cost_per_day numeric,
               run_out_at timestamptz, days_left integer, status text, message text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT f.site_id, f.account_id, f.balance, f.available, f.recent_cost_per_day, f.run_out_at, d.days,
           f.status,
           CASE WHEN f.status <> 'forecast' THEN f.reason
                WHEN d.days < 1 THEN 'less than a day left'
                WHEN d.days = 1 THEN 'about 1 day left'
                ELSE pg_catalog.format('about %s days left', d.days) END
      FROM (SELECT DISTINCT t.site_id FROM prepay._authorize_tenant(p_account_id) t) AS ts
     CROSS JOIN LATERAL prepay.balance_forecast_at(ts.site_id, pg_catalog.now()) AS f
     CROSS JOIN LATERAL (SELECT greatest(pg_catalog.floor(EXTRACT(epoch FROM f.run_out_at - pg_catalog.now()) / 86400),
                                         0)::integer AS days) AS d
     WHERE (f.site_id, f.account_id) IN (SELECT t.site_id, t.account_id FROM prepay._authorize_tenant(p_account_id) t)
     ORDER BY f.site_id, f.account_id;
END $$;
COMMENT ON FUNCTION prepay.my_forecast(bigint) IS
'Tenant API: for each of the caller''s open accounts (or p_account_id) the balance forecast of prepay.balance_forecast_at as of now: recent cost per day, when the money runs out, the whole days left and a message ("about 3 days left", or the forecast''s reason when there is no forecast: postpaid, no recent consumption, in arrears, ...).  42501 as prepay.my_balance.';

-- ---------------------------------------------------------------------
-- the payment service: a provider's payments and refunds
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._api_payment(p_site_id integer, p_entry_id bigint, p_replayed boolean)
RETURNS TABLE (site_id integer, account_id bigint, entry_id bigint, kind text, amount numeric, balance numeric,
               currency text, posted_at timestamptz, replayed boolean)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT l.site_id, l.account_id, l.entry_id, l.kind::text, l.amount, a.balance, s.currency::text, l.created_at,
           p_replayed
      FROM prepay.ledger l
      JOIN prepay.account a ON a.site_id = l.site_id AND a.account_id = l.account_id
      JOIN prepay.site s ON s.site_id = l.site_id
     WHERE l.site_id = p_site_id AND l.entry_id = p_entry_id
$$;
COMMENT ON FUNCTION prepay._api_payment(integer, bigint, boolean) IS
'Internal: the answer of prepay.credit_payment and prepay.refund_payment: the ledger entry, the account''s balance now, the currency and whether the call was a replay of an id already posted.';

CREATE FUNCTION prepay.credit_payment(p_site_id integer, p_account_id bigint, p_amount numeric,
                                      p_provider text, p_transaction_id text)
RETURNS TABLE (site_id integer, account_id bigint, entry_id bigint, kind text, amount numeric, balance numeric,
               currency text, posted_at timestamptz, replayed boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    existing bigint;
    entry bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'money');
    PERFORM prepay._check_amount(p_amount, 'payment');
    PERFORM prepay._check_text(p_provider, 'provider');
    PERFORM prepay._check_text(p_transaction_id, 'provider transaction id');
    -- under the account lock a second delivery of the same callback waits
    -- for the first and then finds its entry
    PERFORM prepay._lock_account(p_site_id, p_account_id);
    existing := prepay._payment_replay(p_site_id, p_account_id, 'recharge', p_amount, p_provider, p_transaction_id);
    IF existing IS NULL THEN
        entry := prepay.recharge(p_site_id, p_account_id, p_amount, p_provider, p_transaction_id);
    END IF;
    -- a statement of its own, so that its snapshot sees the new entry
    RETURN QUERY SELECT * FROM prepay._api_payment(p_site_id, coalesce(existing, entry), existing IS NOT NULL);
END $$;
COMMENT ON FUNCTION prepay.credit_payment(integer, bigint, numeric, text, text) IS
'Payment service API: credit a provider''s payment to an account (prepay.recharge with the provider as channel and its transaction id as reference) and return the entry and the new balance in one row.  Idempotent: the same (provider, transaction id) credits once; a repeated or concurrent delivery returns the same entry with replayed = true; the same id for a different payment is refused (PY004).  Needs the money capability at the site (a cashier role): 42501.  PY001, PY002, 22023 as recharge.';

CREATE FUNCTION prepay.refund_payment(p_site_id integer, p_account_id bigint, p_amount numeric,
                                      p_provider text, p_refund_id text, p_reason text DEFAULT NULL)
RETURNS TABLE (site_id integer, account_id bigint, entry_id bigint, kind text, amount numeric, balance numeric,
               currency text, posted_at timestamptz, replayed boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    existing bigint;
    entry bigint;
BEGIN
    PERFORM prepay._authorize(p_site_id, 'money');
    PERFORM prepay._check_amount(p_amount, 'refund');
    PERFORM prepay._check_text(p_provider, 'provider');
    PERFORM prepay._check_text(p_refund_id, 'provider refund id');
    PERFORM prepay._lock_account(p_site_id, p_account_id);
    existing := prepay._payment_replay(p_site_id, p_account_id, 'refund', -p_amount, p_provider, p_refund_id);
    IF existing IS NULL THEN
        entry := prepay.refund(p_site_id, p_account_id, p_amount, p_provider, p_refund_id, p_reason);
    END IF;
    -- a statement of its own, so that its snapshot sees the new entry
    RETURN QUERY SELECT * FROM prepay._api_payment(p_site_id, coalesce(existing, entry), existing IS NOT NULL);
END $$;
COMMENT ON FUNCTION prepay.refund_payment(integer, bigint, numeric, text, text, text) IS
'Payment service API: record a provider''s refund (money paid back out of the wallet: prepay.refund with the provider as channel and the provider''s refund id as reference) and return the entry and the new balance.  Idempotent per (provider, refund id) like credit_payment (replayed = true on a repeat); PY005 if it exceeds the balance less the unspent allowance, PY004 for an id used for a different payment; 42501 without the money capability at the site.';

/*-------------------------------------------------------------------------
 * sql/security.sql
 *     Least privilege for prepay: the roles, the mapping of logins to
 *     sites, accounts and agents, the authorization helpers every
 *     SECURITY DEFINER function calls, row-level security by site, the
 *     append-only audit trail, and the grants.  Appended last into
 *     prepay--<version>.sql, so its generic part (the loops at the end)
 *     covers the tables, views and functions of every earlier file.
 *     docs/SECURITY.md explains the model and what a new file must do.
 *
 * Vocabulary
 *     caller      the role a call acts for: the session user, or the role
 *                 it switched to with SET ROLE (prepay._caller(), C).
 *                 SECURITY DEFINER functions do not change it.
 *     capability  what a public function needs: manage, relay, money,
 *                 read, administer (prepay._capability_roles lists the
 *                 roles that have each one), and the agent's own.
 *     mapping     prepay.site_access (staff logins or group roles to
 *                 sites), prepay.tenant_access (tenant logins to
 *                 accounts), prepay.agent_access (agent logins to an
 *                 agent id at a site).  A row names a role; its members
 *                 are mapped too, so a group role is a site group.
 *                 Mappings follow the caller too (prepay._mapping_role):
 *                 the role an authenticator switched to has that role's
 *                 mappings, not the authenticator's.  Only a login that
 *                 switches to one of the six prepay_* group roles keeps
 *                 its own mappings (SET ROLE narrows what, not where).
 *     authenticator  a login a pooler or REST gateway connects as and
 *                 switches roles from (prepay.api_authenticator); the
 *                 claims it passes in request.jwt.claims name a tenant's
 *                 account, and nobody else's claims are trusted.
 *
 * The model in one paragraph: GRANTs decide what kind of object a role
 * may touch; row-level security (FORCE'd, on every table with a site_id)
 * decides which sites' (or which accounts') rows; SECURITY DEFINER
 * functions, with a pinned search_path, are the only way to move money or
 * queue relay commands, and each one starts with prepay._authorize*.
 * Superusers bypass all of it.
 *
 * Errors raised here: 42501 (permission denied, with the role and what
 * is missing), 42704 (mapping of a role that does not exist), PY201
 * (the audit trail is append-only), PY202 (a prepay_* role exists with
 * superuser or bypassrls), PY203 (an authenticator passed claims that are
 * not a JSON object with integer site_id and account_id), PY204 (a
 * function of schema prepay without its pinned search_path or with a
 * security mode the rule does not give it: prepay._check_routines).
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- roles (cluster-wide: created once, reused by every database)
-- ---------------------------------------------------------------------

DO $$
DECLARE
    r record;
    existing pg_catalog.pg_roles;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('prepay_admin',    'prepay administrators: everything in their sites (prepay.site_access), including mapping other logins to them.'),
        ('prepay_operator', 'prepay operators: sites, gateways, meters, accounts, tariffs and relay commands in their sites; money only through the documented functions.'),
        ('prepay_cashier',  'prepay cashiers: recharge, refund, reverse and read balances in their sites; nothing else.'),
        ('prepay_reader',   'prepay readers (BI tools, auditors): read-only access to every table, view and the audit trail of their sites.'),
        ('prepay_tenant',   'prepay tenants: their own accounts, balances, readings, ledger, bills and notifications (prepay.tenant_access).'),
        ('prepay_agent',    'prepay acquisition agents: read the configuration of their gateways, write readings, report on their relay commands (prepay.agent_access).')
    ) AS v (name, description) LOOP
        SELECT * INTO existing FROM pg_catalog.pg_roles WHERE rolname = r.name;
        IF NOT FOUND THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r.name);
        ELSIF existing.rolsuper OR existing.rolbypassrls THEN
            PERFORM prepay._raise('PY202', pg_catalog.format('role %s exists with superuser or bypassrls', r.name),
                'prepay''s group roles are subject to row-level security; a superuser or BYPASSRLS member would see every site.',
                pg_catalog.format('ALTER ROLE %I NOSUPERUSER NOBYPASSRLS, then CREATE EXTENSION prepay again.', r.name));
        END IF;
        EXECUTE pg_catalog.format('COMMENT ON ROLE %I IS %L', r.name, r.description);
    END LOOP;
END $$;

-- ---------------------------------------------------------------------
-- who is calling
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._caller() RETURNS oid
AS 'MODULE_PATHNAME', 'prepay_caller'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION prepay._caller() IS
'Internal: OID of the role the current call acts for (the session user, or the role set with SET ROLE), unchanged inside SECURITY DEFINER functions.  extension/security.c.';

CREATE FUNCTION prepay._caller_name() RETURNS name
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = prepay._caller()
$$;
COMMENT ON FUNCTION prepay._caller_name() IS 'Internal: name of the role the current call acts for (prepay._caller()).';

CREATE FUNCTION prepay._caller_is_superuser() RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = prepay._caller()), false)
$$;
COMMENT ON FUNCTION prepay._caller_is_superuser() IS 'Internal: whether the role the current call acts for is a superuser (superusers pass every check).';

-- ---------------------------------------------------------------------
-- mappings: which sites, accounts and agents a role acts on
-- ---------------------------------------------------------------------

CREATE TABLE prepay.site_access (
    site_id    integer NOT NULL REFERENCES prepay.site,
    grantee    name NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    granted_by name NOT NULL DEFAULT SESSION_USER,
    PRIMARY KEY (site_id, grantee)
);
CREATE INDEX site_access_grantee ON prepay.site_access (grantee);
COMMENT ON TABLE prepay.site_access IS 'Which sites a staff role (administrator, operator, cashier, reader) acts on.  grantee is a login or a group role; members of a mapped group are mapped too, so a group role mapped to several sites is a site group.  Row-level security and prepay._authorize read it.';
COMMENT ON COLUMN prepay.site_access.site_id IS 'Site the role may act on.';
COMMENT ON COLUMN prepay.site_access.grantee IS 'Role (login or group) mapped to the site; must exist.';
COMMENT ON COLUMN prepay.site_access.granted_at IS 'When the mapping was made.';
COMMENT ON COLUMN prepay.site_access.granted_by IS 'Database user who made it (session_user).';
COMMENT ON INDEX prepay.site_access_grantee IS 'The mappings of a role: what prepay._my_sites() looks up.';

CREATE TABLE prepay.tenant_access (
    site_id    integer NOT NULL,
    account_id bigint NOT NULL,
    grantee    name NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    granted_by name NOT NULL DEFAULT SESSION_USER,
    PRIMARY KEY (site_id, account_id, grantee),
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account
);
CREATE INDEX tenant_access_grantee ON prepay.tenant_access (grantee);
COMMENT ON TABLE prepay.tenant_access IS 'Which accounts a tenant role sees: its rows of account, meter, reading, ledger, notification and of every later table with an account_id.';
COMMENT ON COLUMN prepay.tenant_access.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.tenant_access.account_id IS 'Account the role may see.';
COMMENT ON COLUMN prepay.tenant_access.grantee IS 'Tenant role (login, or a group such as a family sharing an account); must exist.';
COMMENT ON COLUMN prepay.tenant_access.granted_at IS 'When the mapping was made.';
COMMENT ON COLUMN prepay.tenant_access.granted_by IS 'Database user who made it (session_user).';
COMMENT ON INDEX prepay.tenant_access_grantee IS 'The accounts of a role: what prepay._my_accounts() looks up.';

CREATE TABLE prepay.agent_access (
    site_id    integer NOT NULL REFERENCES prepay.site,
    agent_id   text NOT NULL,
    grantee    name NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    granted_by name NOT NULL DEFAULT SESSION_USER,
    PRIMARY KEY (site_id, agent_id, grantee)
);
CREATE INDEX agent_access_grantee ON prepay.agent_access (grantee);
COMMENT ON TABLE prepay.agent_access IS 'Which agent a login is at a site: it reads the configuration of the gateways whose agent_id this is, writes readings of the site and reports on the commands of those gateways'' meters.';
COMMENT ON COLUMN prepay.agent_access.site_id IS 'Site of the gateways.';
COMMENT ON COLUMN prepay.agent_access.agent_id IS 'The agent id, as in prepay.gateway.agent_id and the agent''s configuration.';
COMMENT ON COLUMN prepay.agent_access.grantee IS 'The agent''s login role; must exist.';
COMMENT ON COLUMN prepay.agent_access.granted_at IS 'When the mapping was made.';
COMMENT ON COLUMN prepay.agent_access.granted_by IS 'Database user who made it (session_user).';
COMMENT ON INDEX prepay.agent_access_grantee IS 'The agent mappings of a role: what prepay._my_agents() looks up.';

CREATE TABLE prepay.api_authenticator (
    site_id    integer NOT NULL REFERENCES prepay.site,
    grantee    name NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    granted_by name NOT NULL DEFAULT SESSION_USER,
    PRIMARY KEY (site_id, grantee)
);
CREATE INDEX api_authenticator_grantee ON prepay.api_authenticator (grantee);
COMMENT ON TABLE prepay.api_authenticator IS 'Which logins are authenticators at a site: the login a connection pooler or REST gateway (PostgREST) connects as before it switches to the request''s role with SET LOCAL ROLE.  The claims such a login passes in request.jwt.claims identify a tenant''s account of that site; claims set by any other login are ignored.  A registered authenticator that switches to a prepay_* group role gets that role''s (empty) mappings, never its own.  docs/INTEGRATION.md.';
COMMENT ON COLUMN prepay.api_authenticator.site_id IS 'Site whose tenants the authenticator''s claims may name.';
COMMENT ON COLUMN prepay.api_authenticator.grantee IS 'The authenticator login (session user of the gateway''s or pooler''s connections); must exist.';
COMMENT ON COLUMN prepay.api_authenticator.granted_at IS 'When the authenticator was registered.';
COMMENT ON COLUMN prepay.api_authenticator.granted_by IS 'Database user who registered it (session_user).';
COMMENT ON INDEX prepay.api_authenticator_grantee IS 'Whether the session user is an authenticator: what prepay._mapping_role() and prepay._authenticated_claims() look up.';

CREATE FUNCTION prepay._mapping_role() RETURNS oid
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN c.oid <> s.oid AND s.rolinherit
                     AND c.rolname IN ('prepay_admin', 'prepay_operator', 'prepay_cashier', 'prepay_reader',
                                       'prepay_tenant', 'prepay_agent')
                     AND NOT EXISTS (SELECT 1 FROM prepay.api_authenticator a WHERE a.grantee = s.rolname)
                THEN s.oid ELSE c.oid END
      FROM pg_catalog.pg_roles c, pg_catalog.pg_roles s
     WHERE c.oid = prepay._caller() AND s.rolname = SESSION_USER
$$;
COMMENT ON FUNCTION prepay._mapping_role() IS
'Internal: OID of the role whose mappings apply to the current call: the caller (prepay._caller(): the login, or the role it switched to with SET ROLE), so that a pooler''s or gateway''s authenticator that switches to a role gets that role''s mappings and not its own.  One exception keeps direct logins as they were: a login that switches to one of the six prepay_* group roles (which are never mapped) keeps its own mappings, SET ROLE narrowing what it may do, not where; not for an authenticator (prepay.api_authenticator) nor for a NOINHERIT login (as PostgREST''s authenticator is).  Called from the SECURITY DEFINER helpers.';

CREATE FUNCTION prepay._my_roles() RETURNS name[]
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE member_of (oid) AS (
        SELECT prepay._mapping_role()
        UNION
        SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN member_of ON m.member = member_of.oid
    )
    SELECT pg_catalog.array_agg(r.rolname) FROM pg_catalog.pg_roles r JOIN member_of ON r.oid = member_of.oid
$$;
COMMENT ON FUNCTION prepay._my_roles() IS
'Internal: the role whose mappings apply (prepay._mapping_role(): the caller, after SET ROLE) and every role it is a member of, directly or through groups: the names a mapping row may name to cover the call.  Not the memberships of the session user: an authenticator that is a member of many roles lends none of their mappings to the role it switched to.  Called from the SECURITY DEFINER helpers.';

CREATE FUNCTION prepay._authenticated_claims() RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    raw text := pg_catalog.current_setting('request.jwt.claims', true);
    claims jsonb;
BEGIN
    IF raw IS NULL OR raw = ''
       OR NOT EXISTS (SELECT 1 FROM prepay.api_authenticator a WHERE a.grantee = SESSION_USER) THEN
        RETURN NULL;                        -- no claims, or claims nobody vouches for
    END IF;
    BEGIN
        claims := raw::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        claims := NULL;
    END;
    IF claims IS NULL OR pg_catalog.jsonb_typeof(claims) <> 'object' THEN
        PERFORM prepay._raise('PY203', 'request.jwt.claims is not a JSON object',
            pg_catalog.format('Authenticator %s passed %s.', SESSION_USER, pg_catalog.left(raw, 200)),
            'The gateway sets request.jwt.claims to the verified token''s claims, a JSON object.');
    END IF;
    RETURN claims;
END $$;
COMMENT ON FUNCTION prepay._authenticated_claims() IS
'Internal: the request''s claims (setting request.jwt.claims, as PostgREST sets it per transaction) when the session user is an authenticator (prepay.api_authenticator), else NULL: claims set by any other login are ignored.  PY203 if an authenticator''s claims are not a JSON object.  The audit trail records them.';

CREATE FUNCTION prepay._claimed_accounts() RETURNS TABLE (site_id integer, account_id bigint)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    claims jsonb := prepay._authenticated_claims();
BEGIN
    IF claims IS NULL OR NOT claims ? 'account_id' THEN
        RETURN;
    END IF;
    IF pg_catalog.jsonb_typeof(claims -> 'site_id') IS DISTINCT FROM 'number'
       OR pg_catalog.jsonb_typeof(claims -> 'account_id') IS DISTINCT FROM 'number'
       OR (claims ->> 'site_id') !~ '^[0-9]{1,9}$' OR (claims ->> 'account_id') !~ '^[0-9]{1,18}$' THEN
        PERFORM prepay._raise('PY203', 'request.jwt.claims names no valid account',
            pg_catalog.format('Authenticator %s passed site_id %s and account_id %s.', SESSION_USER,
                              coalesce(claims ->> 'site_id', 'none'), claims ->> 'account_id'),
            'A tenant''s claims carry the integer site_id and account_id of its account.');
    END IF;
    -- the authenticator vouches for its own sites only, and for the role it switched to
    IF NOT EXISTS (SELECT 1 FROM prepay.api_authenticator a
                    WHERE a.grantee = SESSION_USER AND a.site_id = (claims ->> 'site_id')::integer)
       OR (claims ? 'role' AND (claims ->> 'role') IS DISTINCT FROM prepay._caller_name()::text) THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT (claims ->> 'site_id')::integer, (claims ->> 'account_id')::bigint;
END $$;
COMMENT ON FUNCTION prepay._claimed_accounts() IS
'Internal: the tenant account named by the request''s verified claims (site_id, account_id): only when the session user is an authenticator of that site (prepay.api_authenticator) and the claims'' role, if any, is the role the request acts as.  No row otherwise; PY203 for claims an authenticator passed without integer ids.  prepay._my_accounts() adds it to the mapped accounts.';

CREATE FUNCTION prepay._check_grantee() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.grantee) THEN
        PERFORM prepay._raise('42704', pg_catalog.format('role %s does not exist', NEW.grantee),
            pg_catalog.format('prepay.%s maps roles; %L is not one.', TG_TABLE_NAME, NEW.grantee),
            'Create the login first (CREATE ROLE ... LOGIN) and grant it a prepay_* role.');
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION prepay._check_grantee() IS 'Internal: BEFORE INSERT OR UPDATE trigger of the mapping tables refusing a role that does not exist (42704).';
CREATE TRIGGER site_access_grantee BEFORE INSERT OR UPDATE ON prepay.site_access
    FOR EACH ROW EXECUTE FUNCTION prepay._check_grantee();
CREATE TRIGGER tenant_access_grantee BEFORE INSERT OR UPDATE ON prepay.tenant_access
    FOR EACH ROW EXECUTE FUNCTION prepay._check_grantee();
CREATE TRIGGER agent_access_grantee BEFORE INSERT OR UPDATE ON prepay.agent_access
    FOR EACH ROW EXECUTE FUNCTION prepay._check_grantee();
COMMENT ON TRIGGER site_access_grantee ON prepay.site_access IS 'Refuses a mapping of a role that does not exist.';
COMMENT ON TRIGGER tenant_access_grantee ON prepay.tenant_access IS 'Refuses a mapping of a role that does not exist.';
COMMENT ON TRIGGER agent_access_grantee ON prepay.agent_access IS 'Refuses a mapping of a role that does not exist.';
CREATE TRIGGER api_authenticator_grantee BEFORE INSERT OR UPDATE ON prepay.api_authenticator
    FOR EACH ROW EXECUTE FUNCTION prepay._check_grantee();
COMMENT ON TRIGGER api_authenticator_grantee ON prepay.api_authenticator IS 'Refuses registering a role that does not exist.';

CREATE FUNCTION prepay._my_sites() RETURNS integer[]
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN prepay._caller_is_superuser()
                THEN ARRAY(SELECT s.site_id FROM prepay.site s ORDER BY 1)
                ELSE ARRAY(SELECT DISTINCT a.site_id FROM prepay.site_access a
                            WHERE a.grantee = ANY (prepay._my_roles()) ORDER BY 1) END
$$;
COMMENT ON FUNCTION prepay._my_sites() IS
'Internal: the sites the caller acts on as staff (prepay.site_access, through any group it belongs to); every site for a superuser.  The site policies call it once per statement.';

CREATE FUNCTION prepay._my_accounts() RETURNS TABLE (site_id integer, account_id bigint)
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.site_id, t.account_id FROM prepay.tenant_access t WHERE t.grantee = ANY (prepay._my_roles())
    UNION
    SELECT c.site_id, c.account_id FROM prepay._claimed_accounts() c
$$;
COMMENT ON FUNCTION prepay._my_accounts() IS 'Internal: the accounts the caller sees as a tenant: those mapped to it (prepay.tenant_access) and the one its verified claims name (prepay._claimed_accounts()).';

CREATE FUNCTION prepay._my_agents() RETURNS TABLE (site_id integer, agent_id text)
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT DISTINCT a.site_id, a.agent_id FROM prepay.agent_access a WHERE a.grantee = ANY (prepay._my_roles())
$$;
COMMENT ON FUNCTION prepay._my_agents() IS 'Internal: the (site, agent id) pairs the caller acts as (prepay.agent_access).';

CREATE FUNCTION prepay._is_agent(p_site_id integer, p_agent_id text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT prepay._caller_is_superuser()
        OR EXISTS (SELECT 1 FROM prepay._my_agents() a WHERE a.site_id = p_site_id AND a.agent_id = p_agent_id)
$$;
COMMENT ON FUNCTION prepay._is_agent(integer, text) IS 'Internal: whether the caller acts as this agent at this site (always for a superuser).';

CREATE FUNCTION prepay._reading_sites() RETURNS integer[]
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY(
        SELECT s.site_id FROM pg_catalog.unnest(prepay._my_sites()) AS s (site_id)
         WHERE pg_catalog.pg_has_role(CURRENT_USER, 'prepay_admin', 'USAGE')
            OR pg_catalog.pg_has_role(CURRENT_USER, 'prepay_operator', 'USAGE')
            OR pg_catalog.pg_has_role(CURRENT_USER, 'prepay_cashier', 'USAGE')
            OR pg_catalog.pg_has_role(CURRENT_USER, 'prepay_reader', 'USAGE')
        UNION
        SELECT a.site_id FROM prepay._my_agents() AS a
         WHERE pg_catalog.pg_has_role(CURRENT_USER, 'prepay_agent', 'USAGE')
        ORDER BY 1)
$$;
COMMENT ON FUNCTION prepay._reading_sites() IS
'Internal: the sites whose readings the current user may insert, as the INSERT policies of prepay.reading allow (site_staff: the staff roles'' prepay._my_sites(); agent_insert: an agent''s prepay._my_agents() sites), ascending.  reading_skip_duplicate asks it once per statement for a writer under row security and refuses the rows of other sites one by one (extension/intake.c); keep it in step with those policies.';

CREATE FUNCTION prepay._site_creator_access() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT prepay._caller_is_superuser() THEN
        INSERT INTO prepay.site_access (site_id, grantee)
        SELECT NEW.site_id, r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = prepay._mapping_role()
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._site_creator_access() IS 'Internal: AFTER INSERT trigger on prepay.site mapping the administrator who created a site to it (the role whose mappings apply to the call, prepay._mapping_role(); a superuser maps logins explicitly).';
CREATE TRIGGER site_creator_access AFTER INSERT ON prepay.site
    FOR EACH ROW EXECUTE FUNCTION prepay._site_creator_access();
COMMENT ON TRIGGER site_creator_access ON prepay.site IS 'An administrator who creates a site is mapped to it.';

-- ---------------------------------------------------------------------
-- authorization: one helper per kind of caller; every SECURITY DEFINER
-- function of the public API starts with one of them
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._capability_roles(p_capability text) RETURNS name[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    CASE p_capability
        WHEN 'administer' THEN RETURN '{prepay_admin}';
        WHEN 'manage' THEN RETURN '{prepay_admin,prepay_operator}';
        WHEN 'relay' THEN RETURN '{prepay_admin,prepay_operator}';
        WHEN 'money' THEN RETURN '{prepay_admin,prepay_cashier}';
        WHEN 'read' THEN RETURN '{prepay_admin,prepay_operator,prepay_cashier,prepay_reader}';
        ELSE
            PERFORM prepay._raise('22023', pg_catalog.format('unknown capability %L', p_capability),
                'The capabilities are administer, manage, relay, money and read.',
                'Use one of them, or add the new one to prepay._capability_roles and docs/SECURITY.md.');
    END CASE;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._capability_roles(text) IS
'Internal: the prepay roles that hold a capability: administer (admin), manage and relay (admin, operator), money (admin, cashier), read (admin, operator, cashier, reader).  The table of docs/SECURITY.md.';

CREATE FUNCTION prepay._has_capability(p_capability text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT prepay._caller_is_superuser()
        OR EXISTS (SELECT 1 FROM pg_catalog.unnest(prepay._capability_roles(p_capability)) AS r (name)
                    JOIN pg_catalog.pg_roles g ON g.rolname = r.name
                   WHERE pg_catalog.pg_has_role(prepay._caller(), g.oid, 'USAGE'))
$$;
COMMENT ON FUNCTION prepay._has_capability(text) IS 'Internal: whether the caller has the privileges of a role holding the capability (always for a superuser).';

CREATE FUNCTION prepay._authorize(p_site_id integer, p_capability text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF prepay._caller_is_superuser() THEN
        RETURN;
    END IF;
    IF NOT prepay._has_capability(p_capability) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied: %s needs the %s capability',
                                                         prepay._caller_name(), p_capability),
            pg_catalog.format('Role %s has none of the roles %s.', prepay._caller_name(),
                              pg_catalog.array_to_string(prepay._capability_roles(p_capability), ', ')),
            pg_catalog.format('GRANT %s TO %s;', (prepay._capability_roles(p_capability))[
                pg_catalog.array_length(prepay._capability_roles(p_capability), 1)], prepay._caller_name()));
    END IF;
    IF p_site_id IS NULL OR NOT p_site_id = ANY (prepay._my_sites()) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied for site %s', coalesce(p_site_id::text, 'NULL')),
            pg_catalog.format('Role %s is not mapped to site %s.', prepay._caller_name(), coalesce(p_site_id::text, 'NULL')),
            'An administrator of the site maps the login (or a group role it belongs to) in prepay.site_access.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._authorize(integer, text) IS
'Check that the caller may use a capability (manage, relay, money, read, administer) at a site: it has the privileges of one of the capability''s roles and is mapped to the site in prepay.site_access.  Raises 42501 otherwise; superusers always pass.  Call it first in every SECURITY DEFINER function of the public API.';

CREATE FUNCTION prepay._authorize_account(p_site_id integer, p_account_id bigint, p_capability text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF prepay._caller_is_superuser() THEN
        RETURN;
    END IF;
    IF prepay._has_capability(p_capability) AND p_site_id = ANY (prepay._my_sites()) THEN
        RETURN;
    END IF;
    IF pg_catalog.pg_has_role(prepay._caller(), 'prepay_tenant', 'USAGE')
       AND EXISTS (SELECT 1 FROM prepay._my_accounts() t WHERE t.site_id = p_site_id AND t.account_id = p_account_id) THEN
        RETURN;
    END IF;
    PERFORM prepay._raise('42501', pg_catalog.format('permission denied for account %s of site %s',
                                                     coalesce(p_account_id::text, 'NULL'), coalesce(p_site_id::text, 'NULL')),
        pg_catalog.format('Role %s neither has the %s capability at the site nor is a tenant of the account.',
                          prepay._caller_name(), p_capability),
        'Staff are mapped to sites in prepay.site_access, tenants to accounts in prepay.tenant_access.');
END $$;
COMMENT ON FUNCTION prepay._authorize_account(integer, bigint, text) IS
'Like prepay._authorize for a function about one account, which the account''s tenants (prepay.tenant_access, role prepay_tenant) may also call.  Raises 42501.';

CREATE FUNCTION prepay._authorize_agent(p_site_id integer, p_gateway_id bigint) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    gateway_agent text;
BEGIN
    IF prepay._caller_is_superuser() THEN
        RETURN;
    END IF;
    IF NOT pg_catalog.pg_has_role(prepay._caller(), 'prepay_agent', 'USAGE') THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied: %s is not an agent', prepay._caller_name()),
            pg_catalog.format('Role %s does not have the privileges of prepay_agent.', prepay._caller_name()),
            pg_catalog.format('GRANT prepay_agent TO %s;', prepay._caller_name()));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM prepay._my_agents() a WHERE a.site_id = p_site_id) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied for site %s', coalesce(p_site_id::text, 'NULL')),
            pg_catalog.format('Role %s is no agent of site %s.', prepay._caller_name(), coalesce(p_site_id::text, 'NULL')),
            'Map the agent''s login in prepay.agent_access.');
    END IF;
    SELECT g.agent_id INTO gateway_agent FROM prepay.gateway g WHERE g.site_id = p_site_id AND g.gateway_id = p_gateway_id;
    IF FOUND AND NOT prepay._is_agent(p_site_id, gateway_agent) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied for gateway %s of site %s', p_gateway_id, p_site_id),
            pg_catalog.format('Gateway %s is polled by agent %s, not by role %s.', p_gateway_id,
                              coalesce(pg_catalog.quote_literal(gateway_agent), 'none'), prepay._caller_name()),
            'An agent reports only on its own gateways, meters and commands.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._authorize_agent(integer, bigint) IS
'Check that the caller is an agent of the site (prepay.agent_access) and, when the gateway exists, the agent that polls it.  An unknown gateway passes so that the calling function reports it with its own SQLSTATE.  Raises 42501; superusers always pass.';

CREATE FUNCTION prepay._authorize_agent_id(p_agent_id text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF prepay._caller_is_superuser() THEN
        RETURN;
    END IF;
    IF NOT pg_catalog.pg_has_role(prepay._caller(), 'prepay_agent', 'USAGE')
       OR NOT EXISTS (SELECT 1 FROM prepay._my_agents() a WHERE a.agent_id = p_agent_id) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied for agent %s', coalesce(pg_catalog.quote_literal(p_agent_id), 'NULL')),
            pg_catalog.format('Role %s is not mapped as agent %s at any site.', prepay._caller_name(),
                              coalesce(pg_catalog.quote_literal(p_agent_id), 'NULL')),
            'Map the agent''s login in prepay.agent_access and GRANT prepay_agent to it.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._authorize_agent_id(text) IS
'Check that the caller is an agent mapped under this agent id at one site at least (prepay.agent_access); the calling function then serves only those sites (prepay._is_agent).  Raises 42501; superusers always pass.';

-- ---------------------------------------------------------------------
-- the audit trail
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.audit_id_seq;
COMMENT ON SEQUENCE prepay.audit_id_seq IS 'Source of audit entry ids; increasing ids give the order of entries.';

CREATE TABLE prepay.audit (
    site_id          integer NOT NULL,
    audit_id         bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.audit_id_seq'),
    logged_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    login            name NOT NULL DEFAULT SESSION_USER,
    acting_role      name NOT NULL,
    application_name text,
    client_addr      inet DEFAULT pg_catalog.inet_client_addr(),
    transaction_id   xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    action           text NOT NULL,
    object           text NOT NULL,
    object_key       jsonb NOT NULL,
    before_values    jsonb,
    after_values     jsonb,
    claims           jsonb DEFAULT prepay._authenticated_claims(),
    PRIMARY KEY (site_id, audit_id)
);
COMMENT ON TABLE prepay.audit IS 'Append-only audit trail: every money movement other than consumption charges (from the ledger), and every direct change to a configuration table (tariffs, thresholds, protect flags, meters, accounts, gateways, mappings, ...) and to relay commands, with who, when, what and the values before and after.  UPDATE, DELETE and TRUNCATE are refused (PY201).  Read it through prepay.audit_trail.';
COMMENT ON COLUMN prepay.audit.site_id IS 'Site of the changed row.';
COMMENT ON COLUMN prepay.audit.audit_id IS 'Entry id; increasing with time.';
COMMENT ON COLUMN prepay.audit.logged_at IS 'Transaction time of the change.';
COMMENT ON COLUMN prepay.audit.login IS 'The session user (the login that connected).';
COMMENT ON COLUMN prepay.audit.acting_role IS 'The role the change was made as (prepay._caller()): the login, or the role it switched to with SET ROLE or SET LOCAL ROLE (behind a pooler or REST gateway, the request''s role while login is the authenticator).';
COMMENT ON COLUMN prepay.audit.application_name IS 'The client''s application_name (set by the client: informative, not proof).';
COMMENT ON COLUMN prepay.audit.client_addr IS 'The client''s address; NULL over a Unix socket.';
COMMENT ON COLUMN prepay.audit.transaction_id IS 'The changing transaction: entries of one call share it.';
COMMENT ON COLUMN prepay.audit.action IS 'insert, update or delete for a row change; the ledger kind (recharge, refund, reversal, closing_refund, ...) for a money movement.';
COMMENT ON COLUMN prepay.audit.object IS 'Table changed (ledger for a money movement).';
COMMENT ON COLUMN prepay.audit.object_key IS 'Primary key of the changed row.';
COMMENT ON COLUMN prepay.audit.before_values IS 'The row before the change (NULL for an insert); for a money movement the account''s balance before.';
COMMENT ON COLUMN prepay.audit.after_values IS 'The row after the change (NULL for a delete); for a money movement the ledger entry and the balance after.';
COMMENT ON COLUMN prepay.audit.claims IS 'The request''s verified claims (request.jwt.claims) when the login is an authenticator (prepay.api_authenticator): which end user a REST gateway acted for.  NULL for any other login, whose claims are not trusted.';

CREATE FUNCTION prepay._audit_refuse_change() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM prepay._raise('PY201', 'the prepay audit trail is append-only',
        pg_catalog.format('%s on prepay.audit was refused.', TG_OP),
        'Audit entries are never changed; a superuser can archive old ones in session_replication_role = replica.');
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._audit_refuse_change() IS 'Internal: refuses UPDATE, DELETE and TRUNCATE on the audit trail (PY201).';
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON prepay.audit
    FOR EACH STATEMENT EXECUTE FUNCTION prepay._audit_refuse_change();
COMMENT ON TRIGGER audit_append_only ON prepay.audit IS 'The audit trail is append-only.';

CREATE FUNCTION prepay._audit_free_id() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WHILE EXISTS (SELECT 1 FROM prepay.audit a WHERE a.site_id = NEW.site_id AND a.audit_id = NEW.audit_id) LOOP
        NEW.audit_id := pg_catalog.nextval('prepay.audit_id_seq');
    END LOOP;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION prepay._audit_free_id() IS
'Internal: BEFORE INSERT trigger on prepay.audit giving an entry whose id is taken the next free one.  Only a restore outside session_replication_role = replica needs it: the restored tables'' audit triggers write entries before the dumped ones are copied in, and neither may be lost.';
CREATE TRIGGER audit_free_id BEFORE INSERT ON prepay.audit
    FOR EACH ROW EXECUTE FUNCTION prepay._audit_free_id();
COMMENT ON TRIGGER audit_free_id ON prepay.audit IS 'Renumbers an entry whose id is taken (a restore outside replica mode), so that no entry is lost.';

CREATE FUNCTION prepay._audit_row() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_values jsonb;
    new_values jsonb;
    key jsonb := '{}';
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_values := pg_catalog.to_jsonb(OLD);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_values := pg_catalog.to_jsonb(NEW);
    END IF;
    IF old_values = new_values THEN
        RETURN NULL;                        -- an UPDATE that changed nothing
    END IF;
    FOR i IN 0 .. TG_NARGS - 1 LOOP
        key := key || pg_catalog.jsonb_build_object(TG_ARGV[i], coalesce(new_values, old_values) -> TG_ARGV[i]);
    END LOOP;
    INSERT INTO prepay.audit (site_id, acting_role, application_name, action, object, object_key,
                              before_values, after_values)
    VALUES ((coalesce(new_values, old_values) ->> 'site_id')::integer, prepay._caller_name(),
            pg_catalog.current_setting('application_name'), pg_catalog.lower(TG_OP), TG_TABLE_NAME, key,
            old_values, new_values);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._audit_row() IS
'Internal: AFTER row trigger writing one audit entry per inserted, updated or deleted row (its arguments name the primary key columns).  Attached to every configuration table by sql/security.sql.';

CREATE FUNCTION prepay._audit_money() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO prepay.audit (site_id, acting_role, application_name, action, object, object_key,
                              before_values, after_values)
    VALUES (NEW.site_id, prepay._caller_name(), pg_catalog.current_setting('application_name'), NEW.kind::text,
            'ledger', pg_catalog.jsonb_build_object('site_id', NEW.site_id, 'entry_id', NEW.entry_id),
            pg_catalog.jsonb_build_object('account_id', NEW.account_id, 'balance', NEW.balance_after - NEW.amount),
            (pg_catalog.to_jsonb(NEW) - 'pieces' - 'balance_after')
                || pg_catalog.jsonb_build_object('balance', NEW.balance_after));
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._audit_money() IS
'Internal: AFTER INSERT row trigger on prepay.ledger writing one audit entry per money movement other than a consumption charge (recharge, refund, reversal, closing refund, adjustment, fees, ...): the balance before, the entry and the balance after.';
CREATE TRIGGER audit_money AFTER INSERT ON prepay.ledger
    FOR EACH ROW WHEN (NEW.kind <> 'consumption') EXECUTE FUNCTION prepay._audit_money();
COMMENT ON TRIGGER audit_money ON prepay.ledger IS 'Every money movement but consumption charges (the rating trigger''s, explained by their readings) is audited.';

CREATE VIEW prepay.audit_trail AS
SELECT a.site_id, a.audit_id, a.logged_at, a.login, a.acting_role, a.application_name, a.client_addr,
       a.transaction_id, a.action, a.object, a.object_key,
       c.changed,
       CASE WHEN a.action = 'update'
            THEN (SELECT pg_catalog.jsonb_object_agg(k, a.before_values -> k) FROM pg_catalog.unnest(c.changed) AS k)
            ELSE a.before_values END AS before_values,
       CASE WHEN a.action = 'update'
            THEN (SELECT pg_catalog.jsonb_object_agg(k, a.after_values -> k) FROM pg_catalog.unnest(c.changed) AS k)
            ELSE a.after_values END AS after_values,
       a.claims
  FROM prepay.audit a
  LEFT JOIN LATERAL (
        SELECT pg_catalog.array_agg(k ORDER BY k) AS changed
          FROM pg_catalog.jsonb_object_keys(a.after_values) AS k
         WHERE a.action = 'update' AND (a.after_values -> k) IS DISTINCT FROM (a.before_values -> k)) AS c ON true;
COMMENT ON VIEW prepay.audit_trail IS 'The audit trail for auditors: who (login, acting role, application, address), when, what (action, table, key) and, for an update, only the columns that changed with their values before and after.';
COMMENT ON COLUMN prepay.audit_trail.site_id IS 'Site of the changed row.';
COMMENT ON COLUMN prepay.audit_trail.audit_id IS 'Entry id.';
COMMENT ON COLUMN prepay.audit_trail.logged_at IS 'Transaction time of the change.';
COMMENT ON COLUMN prepay.audit_trail.login IS 'The session user.';
COMMENT ON COLUMN prepay.audit_trail.acting_role IS 'The role the change was made as (after SET ROLE).';
COMMENT ON COLUMN prepay.audit_trail.application_name IS 'The client''s application_name.';
COMMENT ON COLUMN prepay.audit_trail.client_addr IS 'The client''s address (NULL over a Unix socket).';
COMMENT ON COLUMN prepay.audit_trail.transaction_id IS 'The changing transaction.';
COMMENT ON COLUMN prepay.audit_trail.action IS 'insert, update, delete, or the ledger kind of a money movement.';
COMMENT ON COLUMN prepay.audit_trail.object IS 'Table changed.';
COMMENT ON COLUMN prepay.audit_trail.object_key IS 'Primary key of the changed row.';
COMMENT ON COLUMN prepay.audit_trail.changed IS 'For an update, the columns that changed; NULL otherwise.';
COMMENT ON COLUMN prepay.audit_trail.before_values IS 'Values before: the changed columns of an update, the whole deleted row, the balance before a money movement.';
COMMENT ON COLUMN prepay.audit_trail.after_values IS 'Values after: the changed columns of an update, the whole inserted row, the entry and balance after a money movement.';
COMMENT ON COLUMN prepay.audit_trail.claims IS 'The verified claims of a request through an authenticator (REST gateway); NULL otherwise.';

-- ---------------------------------------------------------------------
-- The generic part.  Everything below loops over the catalog, so that
-- the tables, views and functions of every earlier file are covered.
-- The few per-object decisions are in the lists at the top of each block;
-- docs/SECURITY.md says when a new file must add to them.
-- ---------------------------------------------------------------------

-- functions: the check (prepay._check_routines), then the grants.  Each
-- function declares its security mode and its pinned search_path in its own
-- CREATE FUNCTION; the check refuses the install (PY204, naming the
-- function) when a function of any earlier file breaks the rule.
CREATE FUNCTION prepay._check_routines() RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f record;
    -- the per-row trigger probes the primary key index directly (SPI only
    -- once per statement, and as the owner for the rare rows it refuses):
    -- SECURITY INVOKER so that COPY pays no per-row role switch; the bulk
    -- intake's drain must insert with its writer's own rights
    invoker_triggers constant text[] := '{reading_skip_duplicate,reading_intake_drain}';
    -- SECURITY DEFINER helpers the policies and authorizing functions use
    helpers constant text[] := '{_my_sites,_my_accounts,_my_agents,_is_agent,_authorize,_authorize_account,'
                               '_authorize_agent,_authorize_agent_id}';
    pinned constant text := 'search_path=pg_catalog, pg_temp';
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure AS sig, p.proname, p.prosecdef, p.proconfig,
               p.prorettype = 'pg_catalog.trigger'::pg_catalog.regtype AS is_trigger,
               p.prosrc ~ 'prepay\._authorize' AS authorizes
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'prepay'::pg_catalog.regnamespace
           AND p.prokind <> 'a'              -- an aggregate has no SET clause; its support functions are checked
         ORDER BY p.oid
    LOOP
        IF NOT pinned = ANY (coalesce(f.proconfig, '{}')) THEN
            PERFORM prepay._raise('PY204', pg_catalog.format('function %s has no pinned search_path', f.sig),
                'Every function of schema prepay runs with search_path = pg_catalog, pg_temp, whatever its security mode, so that no object of a caller''s schema (public, "$user") can stand in for a built-in.',
                'Add SET search_path = pg_catalog, pg_temp to its CREATE FUNCTION and qualify what its body names (prepay.x).');
        END IF;
        IF f.prosecdef <> ((f.is_trigger AND NOT f.proname = ANY (invoker_triggers)) OR f.proname = ANY (helpers)
                           OR (f.authorizes AND f.proname !~ '^_')) THEN
            PERFORM prepay._raise('PY204', pg_catalog.format('function %s is declared SECURITY %s', f.sig,
                                                             CASE WHEN f.prosecdef THEN 'DEFINER' ELSE 'INVOKER' END),
                CASE WHEN f.prosecdef
                     THEN 'Only trigger functions, the authorization helpers and public functions that call prepay._authorize* first are SECURITY DEFINER.'
                     ELSE 'A public function that calls prepay._authorize*, and a trigger function other than reading_skip_duplicate and reading_intake_drain, is SECURITY DEFINER.' END,
                'Declare the mode in its CREATE FUNCTION as docs/SECURITY.md ("What a new SQL file must do") says.');
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay._check_routines() IS
'Internal: raise PY204, naming the function, if a function of schema prepay has no pinned search_path (pg_catalog, pg_temp) or declares a security mode the rule does not give it: SECURITY DEFINER for trigger functions (but reading_skip_duplicate, per row, and reading_intake_drain, which must insert with the writer''s own rights), the authorization helpers and the public functions that call prepay._authorize*; SECURITY INVOKER for the rest.  The install runs it after every file''s functions exist.';

-- EXECUTE for the prepay roles only, never for PUBLIC, none on triggers
DO $$
DECLARE
    f record;
    roles constant text := 'prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent';
BEGIN
    PERFORM prepay._check_routines();
    FOR f IN
        SELECT p.oid::regprocedure AS sig, p.prorettype = 'pg_catalog.trigger'::pg_catalog.regtype AS is_trigger
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'prepay'::pg_catalog.regnamespace
         ORDER BY p.oid
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', f.sig);
        -- triggers do prepay's bookkeeping with the owner's rights; nobody
        -- may attach them to a table of their own (CREATE TRIGGER needs EXECUTE)
        CONTINUE WHEN f.is_trigger;
        -- SECURITY INVOKER functions run with the caller's own grants and
        -- policies; SECURITY DEFINER ones authorize their caller
        EXECUTE pg_catalog.format('GRANT EXECUTE ON ROUTINE %s TO %s', f.sig, roles);
    END LOOP;
END $$;

-- tables: row-level security by site (FORCE'd), tenant and agent policies,
-- grants, audit triggers
DO $$
DECLARE
    t record;
    staff constant text := 'prepay_admin, prepay_operator, prepay_cashier, prepay_reader';
    mine constant text := 'site_id = ANY ((SELECT prepay._my_sites())::integer[])';
    -- tables with an account_id that tenants do not see
    tenant_hidden constant text[] := '{command,alarm,tenant_access}';
    -- tables not audited row by row: readings and alarms are telemetry,
    -- notifications an outbox, the ledger is audited by audit_money; what
    -- the billing jobs and batch runners derive is read-only and kept with
    -- its inputs (period_charge.inputs, apportionment, batch_item results)
    not_audited constant text[] := '{reading,reading_refused,ledger,alarm,notification,audit,period_charge,apportionment,bill_line,'
                                   'bill_entry,bill_payment,batch_item,energy_day_folded,energy_month_folded,energy_pending,consumption_posting_day,'
                                   'cut_reminder,multiplier_change,notify_secret,notification_delivery}';
    account_config constant text := 'code, name, phone, email, floor_area, capacity_kva, mode, tariff_id, credit_limit, '
                                    'low_balance_threshold, pretrip_threshold';
    meter_config constant text := 'code, kind, multiplier, max_per_hour, building, floor, room, gateway_id, unit_id, '
                                  'device_profile, tariff_id';
    reading_input constant text := 'site_id, meter_id, read_at, energy, sharp, peak, flat, valley, power, relay_state';
    config_dml constant text := 'SELECT, INSERT, UPDATE, DELETE';
    -- COPY FROM is refused on a table with row security: the bulk intake
    -- has none, and no role may read it (INSERT only; extension/intake.c)
    no_row_security constant text[] := '{reading_intake}';
    grants text[];
    grant_row text[];
    granted boolean;
    keys text;
    audited_columns text;
BEGIN
    -- explicit grants of the tables prepay.sql, tariff.sql, agent.sql and
    -- this file create; a table missing here gets the defaults below
    grants := ARRAY[
        ['site', 'prepay_admin', config_dml], ['site', 'prepay_operator', 'SELECT, UPDATE'],
        ['site', 'prepay_cashier', 'SELECT'], ['site', 'prepay_reader', 'SELECT'],
        ['no_cut_window', 'prepay_admin', config_dml], ['no_cut_window', 'prepay_operator', config_dml],
        ['no_cut_window', 'prepay_reader', 'SELECT'],
        ['gateway', 'prepay_admin', config_dml], ['gateway', 'prepay_operator', config_dml],
        ['gateway', 'prepay_reader', 'SELECT'], ['gateway', 'prepay_agent', 'SELECT'],
        ['tariff', 'prepay_admin', config_dml], ['tariff', 'prepay_operator', config_dml],
        ['tariff', 'prepay_reader', 'SELECT'],
        ['tariff_version', 'prepay_admin', config_dml], ['tariff_version', 'prepay_operator', config_dml],
        ['tariff_version', 'prepay_reader', 'SELECT'],
        ['holiday', 'prepay_admin', config_dml], ['holiday', 'prepay_operator', config_dml],
        ['holiday', 'prepay_reader', 'SELECT'],
        ['device_profile', 'prepay_admin', config_dml], ['device_profile', 'prepay_operator', config_dml],
        ['device_profile', 'prepay_reader', 'SELECT'], ['device_profile', 'prepay_agent', 'SELECT'],
        ['profile_register', 'prepay_admin', config_dml], ['profile_register', 'prepay_operator', config_dml],
        ['profile_register', 'prepay_reader', 'SELECT'], ['profile_register', 'prepay_agent', 'SELECT'],
        ['account', 'prepay_admin', 'SELECT, UPDATE (' || account_config || ')'],
        ['account', 'prepay_operator', 'SELECT, UPDATE (' || account_config || ')'],
        ['account', 'prepay_cashier', 'SELECT'], ['account', 'prepay_reader', 'SELECT'],
        ['meter', 'prepay_admin', 'SELECT, INSERT (site_id, ' || meter_config || '), UPDATE (' || meter_config || ')'],
        ['meter', 'prepay_operator', 'SELECT, INSERT (site_id, ' || meter_config || '), UPDATE (' || meter_config || ')'],
        ['meter', 'prepay_reader', 'SELECT'],
        ['meter', 'prepay_agent', 'SELECT (site_id, meter_id, gateway_id, unit_id, kind, device_profile, active, lost_since)'],
        ['reading', 'prepay_admin', 'SELECT, INSERT (' || reading_input || ')'],
        ['reading', 'prepay_operator', 'SELECT, INSERT (' || reading_input || ')'],
        ['reading', 'prepay_reader', 'SELECT'], ['reading', 'prepay_tenant', 'SELECT'],
        ['reading', 'prepay_agent', 'INSERT (' || reading_input || ')'],
        ['reading_intake', 'prepay_admin', 'INSERT (' || reading_input || ')'],
        ['reading_intake', 'prepay_operator', 'INSERT (' || reading_input || ')'],
        ['reading_intake', 'prepay_agent', 'INSERT (' || reading_input || ')'],
        ['reading_refused', 'prepay_admin', 'SELECT'], ['reading_refused', 'prepay_operator', 'SELECT'],
        ['reading_refused', 'prepay_reader', 'SELECT'],
        ['ledger', 'prepay_admin', 'SELECT'], ['ledger', 'prepay_operator', 'SELECT'],
        ['ledger', 'prepay_cashier', 'SELECT'], ['ledger', 'prepay_reader', 'SELECT'],
        ['command', 'prepay_admin', 'SELECT'], ['command', 'prepay_operator', 'SELECT'],
        ['command', 'prepay_reader', 'SELECT'],
        ['alarm', 'prepay_admin', 'SELECT, UPDATE (cleared_at)'], ['alarm', 'prepay_operator', 'SELECT, UPDATE (cleared_at)'],
        ['alarm', 'prepay_reader', 'SELECT'],
        ['notification', 'prepay_admin', 'SELECT, UPDATE (delivered_at)'],
        ['notification', 'prepay_operator', 'SELECT, UPDATE (delivered_at)'],
        ['notification', 'prepay_reader', 'SELECT'],
        ['audit', 'prepay_admin', 'SELECT'], ['audit', 'prepay_reader', 'SELECT'],
        ['site_access', 'prepay_admin', config_dml],
        ['tenant_access', 'prepay_admin', config_dml],
        ['agent_access', 'prepay_admin', config_dml],
        ['api_authenticator', 'prepay_admin', config_dml],
        -- billing (billing.sql): rules are configuration; what the jobs and
        -- the bill functions write is read-only for everyone
        ['account_group', 'prepay_admin', config_dml], ['account_group', 'prepay_operator', config_dml],
        ['account_group', 'prepay_reader', 'SELECT'],
        ['account_group_member', 'prepay_admin', config_dml], ['account_group_member', 'prepay_operator', config_dml],
        ['account_group_member', 'prepay_reader', 'SELECT'],
        ['charge_item', 'prepay_admin', config_dml], ['charge_item', 'prepay_operator', config_dml],
        ['charge_item', 'prepay_reader', 'SELECT'],
        ['allowance_rule', 'prepay_admin', config_dml], ['allowance_rule', 'prepay_operator', config_dml],
        ['allowance_rule', 'prepay_reader', 'SELECT'],
        ['apportion_rule', 'prepay_admin', config_dml], ['apportion_rule', 'prepay_operator', config_dml],
        ['apportion_rule', 'prepay_reader', 'SELECT'],
        ['period_charge', 'prepay_admin', 'SELECT'], ['period_charge', 'prepay_operator', 'SELECT'],
        ['period_charge', 'prepay_cashier', 'SELECT'], ['period_charge', 'prepay_reader', 'SELECT'],
        ['apportionment', 'prepay_admin', 'SELECT'], ['apportionment', 'prepay_operator', 'SELECT'],
        ['apportionment', 'prepay_reader', 'SELECT'],
        ['bill', 'prepay_admin', 'SELECT'], ['bill', 'prepay_operator', 'SELECT'],
        ['bill', 'prepay_cashier', 'SELECT'], ['bill', 'prepay_reader', 'SELECT'],
        ['bill_line', 'prepay_admin', 'SELECT'], ['bill_line', 'prepay_operator', 'SELECT'],
        ['bill_line', 'prepay_cashier', 'SELECT'], ['bill_line', 'prepay_reader', 'SELECT'],
        ['bill_line', 'prepay_tenant', 'SELECT'],
        ['bill_entry', 'prepay_admin', 'SELECT'], ['bill_entry', 'prepay_operator', 'SELECT'],
        ['bill_entry', 'prepay_reader', 'SELECT'],
        ['bill_payment', 'prepay_admin', 'SELECT'], ['bill_payment', 'prepay_operator', 'SELECT'],
        ['bill_payment', 'prepay_cashier', 'SELECT'], ['bill_payment', 'prepay_reader', 'SELECT'],
        -- batch operations (batch.sql): written only through create_batch and the runners
        ['batch', 'prepay_admin', 'SELECT'], ['batch', 'prepay_operator', 'SELECT'],
        ['batch', 'prepay_reader', 'SELECT'],
        ['batch_item', 'prepay_admin', 'SELECT'], ['batch_item', 'prepay_operator', 'SELECT'],
        ['batch_item', 'prepay_reader', 'SELECT'],
        -- reports (reports.sql): rollups and logs kept by triggers and jobs
        ['energy_day_folded', 'prepay_admin', 'SELECT'], ['energy_day_folded', 'prepay_operator', 'SELECT'],
        ['energy_day_folded', 'prepay_reader', 'SELECT'],
        ['energy_month_folded', 'prepay_admin', 'SELECT'], ['energy_month_folded', 'prepay_operator', 'SELECT'],
        ['energy_month_folded', 'prepay_reader', 'SELECT'],
        ['energy_pending', 'prepay_admin', 'SELECT'], ['energy_pending', 'prepay_operator', 'SELECT'],
        ['energy_pending', 'prepay_reader', 'SELECT'],
        ['consumption_posting_day', 'prepay_admin', 'SELECT'], ['consumption_posting_day', 'prepay_operator', 'SELECT'],
        ['consumption_posting_day', 'prepay_reader', 'SELECT'],
        ['cut_reminder', 'prepay_admin', 'SELECT'], ['cut_reminder', 'prepay_operator', 'SELECT'],
        ['cut_reminder', 'prepay_reader', 'SELECT'],
        ['multiplier_change', 'prepay_admin', 'SELECT'], ['multiplier_change', 'prepay_operator', 'SELECT'],
        ['multiplier_change', 'prepay_reader', 'SELECT'],
        -- notification delivery (notify.sql): secrets for administrators only
        -- (the agent gets them from agent_claim_deliveries); deliveries are
        -- written by triggers and the agent functions
        ['notify_site', 'prepay_admin', config_dml], ['notify_site', 'prepay_operator', config_dml],
        ['notify_site', 'prepay_reader', 'SELECT'],
        ['account_language', 'prepay_admin', config_dml], ['account_language', 'prepay_operator', config_dml],
        ['account_language', 'prepay_reader', 'SELECT'],
        ['notify_channel', 'prepay_admin', config_dml], ['notify_channel', 'prepay_operator', 'SELECT'],
        ['notify_channel', 'prepay_reader', 'SELECT'],
        ['notify_secret', 'prepay_admin', config_dml],
        ['notify_template', 'prepay_admin', config_dml], ['notify_template', 'prepay_operator', config_dml],
        ['notify_template', 'prepay_reader', 'SELECT'],
        ['notification_delivery', 'prepay_admin', 'SELECT'], ['notification_delivery', 'prepay_operator', 'SELECT'],
        ['notification_delivery', 'prepay_reader', 'SELECT']];

    FOR t IN
        SELECT c.oid::regclass AS rel, c.relname,
               EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'site_id' AND NOT a.attisdropped) AS has_site,
               EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'account_id' AND NOT a.attisdropped) AS has_account
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'prepay'::pg_catalog.regnamespace AND c.relkind IN ('r', 'p')
         ORDER BY c.relname
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON TABLE %s FROM PUBLIC', t.rel);

        -- grants: the explicit list, else administrators may change and
        -- operators and readers read a table of a later file
        granted := false;
        FOREACH grant_row SLICE 1 IN ARRAY grants LOOP
            IF grant_row[1] = t.relname THEN
                EXECUTE pg_catalog.format('GRANT %s ON TABLE %s TO %I', grant_row[3], t.rel, grant_row[2]);
                granted := true;
            END IF;
        END LOOP;
        IF NOT granted THEN
            EXECUTE pg_catalog.format('GRANT %s ON TABLE %s TO prepay_admin', config_dml, t.rel);
            EXECUTE pg_catalog.format('GRANT SELECT ON TABLE %s TO prepay_operator, prepay_reader', t.rel);
        END IF;

        CONTINUE WHEN NOT t.has_site;       -- 12_security lists such a table as a defect
        CONTINUE WHEN t.relname = ANY (no_row_security);

        -- row-level security: staff see and write the rows of their sites
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t.rel);
        EXECUTE pg_catalog.format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t.rel);
        EXECUTE pg_catalog.format('CREATE POLICY site_staff ON %s TO %s USING (%s) WITH CHECK (%s)', t.rel, staff, mine, mine);
        EXECUTE pg_catalog.format('COMMENT ON POLICY site_staff ON %s IS %L', t.rel,
            'Administrators, operators, cashiers and readers see and change only the rows of the sites they are mapped to (prepay.site_access); their grants decide which changes.');

        -- tenants see the rows of their own accounts
        IF t.has_account AND NOT t.relname = ANY (tenant_hidden) THEN
            EXECUTE pg_catalog.format('GRANT SELECT ON TABLE %s TO prepay_tenant', t.rel);
            EXECUTE pg_catalog.format('CREATE POLICY account_tenant ON %s FOR SELECT TO prepay_tenant '
                                      'USING ((site_id, account_id) IN (SELECT t.site_id, t.account_id FROM prepay._my_accounts() t))', t.rel);
            EXECUTE pg_catalog.format('COMMENT ON POLICY account_tenant ON %s IS %L', t.rel,
                'Tenants see only the rows of the accounts mapped to them (prepay.tenant_access).');
        END IF;

        -- the audit trail: every change of a configuration table; for
        -- account, meter and gateway only the columns people set, not the
        -- state the rating trigger and the agent keep
        CONTINUE WHEN t.relname = ANY (not_audited);
        SELECT pg_catalog.string_agg(pg_catalog.quote_literal(a.attname), ', ' ORDER BY k.ord) INTO keys
          FROM pg_catalog.pg_constraint pk
         CROSS JOIN LATERAL pg_catalog.unnest(pk.conkey) WITH ORDINALITY AS k (attnum, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = pk.conrelid AND a.attnum = k.attnum
         WHERE pk.conrelid = t.rel AND pk.contype = 'p';
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO audited_columns
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = t.rel AND a.attnum > 0 AND NOT a.attisdropped
           AND NOT (t.relname = 'account' AND a.attname IN ('balance', 'alarm_level'))
           AND NOT (t.relname = 'meter' AND a.attname IN ('relay_state', 'relay_state_at', 'lost_since', 'last_read_at',
                    'last_energy', 'charge_carry', 'cycle_start', 'cycle_used', 'last_sharp', 'last_peak', 'last_flat',
                    'last_valley'))
           AND NOT (t.relname = 'gateway' AND a.attname = 'lost_since');
        EXECUTE pg_catalog.format('CREATE TRIGGER audit AFTER INSERT OR DELETE OR UPDATE OF %s ON %s '
                                  'FOR EACH ROW EXECUTE FUNCTION prepay._audit_row(%s)',
                                  audited_columns, t.rel, coalesce(keys, ''));
        EXECUTE pg_catalog.format('COMMENT ON TRIGGER audit ON %s IS %L', t.rel,
            'Every change of this table is written to the audit trail (prepay.audit), with the values before and after.');
    END LOOP;
END $$;

-- the policies that are not one per table
CREATE POLICY site_create ON prepay.site FOR INSERT TO prepay_admin WITH CHECK (true);
COMMENT ON POLICY site_create ON prepay.site IS 'Administrators may create sites; the creator is mapped to the new site (trigger site_creator_access).  Read the new site_id back with a SELECT: RETURNING is checked before the mapping exists.';

CREATE POLICY reading_tenant ON prepay.reading FOR SELECT TO prepay_tenant USING (
    EXISTS (SELECT 1 FROM prepay.meter m
              JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id
             WHERE m.site_id = reading.site_id AND m.meter_id = reading.meter_id AND reading.read_at >= a.opened_at));
COMMENT ON POLICY reading_tenant ON prepay.reading IS 'Tenants see the readings of the meters of their accounts since the account was opened (not the previous occupant''s).';

CREATE POLICY bill_line_tenant ON prepay.bill_line FOR SELECT TO prepay_tenant USING (
    EXISTS (SELECT 1 FROM prepay.bill b WHERE b.site_id = bill_line.site_id AND b.bill_id = bill_line.bill_id));
COMMENT ON POLICY bill_line_tenant ON prepay.bill_line IS 'Tenants see the lines of the bills they see (their own accounts'').';

CREATE POLICY agent_gateway ON prepay.gateway FOR SELECT TO prepay_agent
    USING ((site_id, agent_id) IN (SELECT a.site_id, a.agent_id FROM prepay._my_agents() a));
COMMENT ON POLICY agent_gateway ON prepay.gateway IS 'An agent sees the gateways it polls (prepay.agent_access).';
CREATE POLICY agent_meter ON prepay.meter FOR SELECT TO prepay_agent
    USING ((site_id, gateway_id) IN (SELECT g.site_id, g.gateway_id FROM prepay.gateway g));
COMMENT ON POLICY agent_meter ON prepay.meter IS 'An agent sees the meters on the gateways it sees.';
CREATE POLICY agent_site ON prepay.device_profile FOR SELECT TO prepay_agent
    USING (site_id IN (SELECT a.site_id FROM prepay._my_agents() a));
COMMENT ON POLICY agent_site ON prepay.device_profile IS 'An agent sees the device profiles of the sites it is an agent of.';
CREATE POLICY agent_site ON prepay.profile_register FOR SELECT TO prepay_agent
    USING (site_id IN (SELECT a.site_id FROM prepay._my_agents() a));
COMMENT ON POLICY agent_site ON prepay.profile_register IS 'An agent sees the registers of the device profiles of the sites it is an agent of.';
CREATE POLICY agent_insert ON prepay.reading FOR INSERT TO prepay_agent
    WITH CHECK (site_id IN (SELECT a.site_id FROM prepay._my_agents() a));
COMMENT ON POLICY agent_insert ON prepay.reading IS 'An agent writes readings of the sites it is an agent of (of any meter there, so that a reading of a meter just moved is kept and quarantined, never refused).';

-- views read with the caller's rights (security_invoker), so the policies
-- of their tables apply; materialized views are left to superusers
DO $$
DECLARE
    v record;
BEGIN
    FOR v IN
        SELECT c.oid::regclass AS rel, c.relname, c.relkind,
               EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'account_id' AND NOT a.attisdropped) AS has_account
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'prepay'::pg_catalog.regnamespace AND c.relkind IN ('v', 'm')
         ORDER BY c.relname
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON TABLE %s FROM PUBLIC', v.rel);
        CONTINUE WHEN v.relkind = 'm';     -- no row-level security on a materialized view
        EXECUTE pg_catalog.format('ALTER VIEW %s SET (security_invoker = true)', v.rel);
        IF v.relname = 'audit_trail' THEN
            EXECUTE pg_catalog.format('GRANT SELECT ON TABLE %s TO prepay_admin, prepay_reader', v.rel);
        ELSE
            EXECUTE pg_catalog.format('GRANT SELECT ON TABLE %s TO prepay_admin, prepay_operator, prepay_reader', v.rel);
            IF v.has_account THEN
                EXECUTE pg_catalog.format('GRANT SELECT ON TABLE %s TO prepay_tenant', v.rel);
            END IF;
        END IF;
    END LOOP;
END $$;

-- cashiers collect what issued bills still ask for
GRANT SELECT ON prepay.bill_arrears TO prepay_cashier;

GRANT USAGE ON SCHEMA prepay TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA prepay TO prepay_admin, prepay_operator;

-- ---------------------------------------------------------------------
-- pg_dump: the mappings and the audit trail are user data
-- ---------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('prepay.site_access', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.tenant_access', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.agent_access', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.api_authenticator', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.audit', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.audit_id_seq', '');
