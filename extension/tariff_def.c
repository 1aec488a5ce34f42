/*-------------------------------------------------------------------------
 *
 * extension/tariff_def.c
 *	  Tariff definitions: parse and validate the JSONB document a DBA
 *	  writes into prepay.tariff_version.definition, and compile it into the
 *	  TariffVersion the pure core rates with.
 *
 * The document's grammar is in docs/TARIFFS.md.  Everything that is wrong
 * with a definition is reported with SQLSTATE PY015 and a message that
 * names the offending key, so the same code validates on INSERT (the
 * tariff_version trigger) and compiles for rating.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/tariff_def.c
 *
 *-------------------------------------------------------------------------
 */
#include "prepay.h"
#include "tariff.h"
#include "tariff_def.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

PG_FUNCTION_INFO_V1(prepay_tariff_check);

/* Refuse the definition: PY015 with a message naming the problem. */
#define def_error(...) \
	ereport(ERROR, \
			(errcode(ERRCODE_PREPAY_BAD_TARIFF), \
			 errmsg("invalid tariff definition: %s", psprintf(__VA_ARGS__)), \
			 errhint("docs/TARIFFS.md describes tariff definitions, with examples.")))

static JsonbContainer *container_of(JsonbValue *v, const char *key, bool want_object);
static void check_keys(JsonbContainer *obj, const char *where, const char *const *allowed);
static JsonbValue *member(JsonbContainer *obj, const char *key);
static int64 fixed_value(JsonbValue *v, int scale, const char *what);
static int	int_value(JsonbValue *v, int lo, int hi, const char *what);
static char *string_value(JsonbValue *v, const char *what);
static void parse_periods(JsonbContainer *doc, TariffVersion *v, int64 *base, bool *has_base);
static void add_period(TariffVersion *v, const char *name);
static int	period_index(const TariffVersion *v, const char *name, const char *where);
static void parse_schedules(JsonbContainer *doc, TariffVersion *v);
static void parse_schedule(JsonbContainer *s, int n, TariffVersion *v);
static void check_coverage(const TariffVersion *v);
static void parse_tiers(JsonbContainer *doc, TariffVersion *v, const int64 *base, bool has_base);
static void parse_block(JsonbContainer *b, int n, bool last, TariffVersion *v,
						const int64 *base, bool has_base);
static void parse_options(JsonbContainer *doc, TariffVersion *v);

static const char *const top_keys[] = {"price", "periods", "schedules", "tiers", "split", "basic", NULL};
static const char *const schedule_keys[] = {"months", "days", "switches", NULL};
static const char *const tier_keys[] = {"cycle", "start_day", "start_month", "blocks", NULL};
static const char *const block_keys[] = {"upto", "price", "prices", "add", NULL};
static const char *const basic_keys[] = {"by", "price", NULL};
static const char *const day_names[] = {"weekday", "weekend", "holiday"};

/*
 * tariff_compile
 *		Validate `definition` and fill in *v (valid_from is the caller's).
 */
void
tariff_compile(Jsonb *definition, TariffVersion *v)
{
	JsonbContainer *doc = &definition->root;
	int64		base[TARIFF_MAX_PERIODS];
	bool		has_base = false;

	memset(v, 0, sizeof(*v));
	if (!JsonContainerIsObject(doc))
		def_error("the definition must be a JSON object");
	check_keys(doc, "the definition", top_keys);
	parse_periods(doc, v, base, &has_base);
	parse_schedules(doc, v);
	parse_tiers(doc, v, base, has_base);
	parse_options(doc, v);
}

/*
 * prepay_tariff_check
 *		SQL: prepay.tariff_check(definition jsonb) raises PY015 if the
 *		definition is not valid, else returns nothing.
 */
Datum
prepay_tariff_check(PG_FUNCTION_ARGS)
{
	TariffVersion *v = palloc(sizeof(TariffVersion));

	tariff_compile(PG_GETARG_JSONB_P(0), v);
	pfree(v);
	PG_RETURN_VOID();
}

/* The value of `key` in an object (palloc'd), or NULL. */
static JsonbValue *
member(JsonbContainer *obj, const char *key)
{
	return getKeyJsonValueFromContainer(obj, key, strlen(key), NULL);
}

/* The object or array inside a JSON value, or an error naming `key`. */
static JsonbContainer *
container_of(JsonbValue *v, const char *key, bool want_object)
{
	if (v->type != jbvBinary ||
		(want_object ? !JsonContainerIsObject(v->val.binary.data)
		 : !JsonContainerIsArray(v->val.binary.data)))
		def_error("%s must be a JSON %s", key, want_object ? "object" : "array");
	return v->val.binary.data;
}

/* Refuse keys not in `allowed`: a typo must not be silently ignored. */
static void
check_keys(JsonbContainer *obj, const char *where, const char *const *allowed)
{
	JsonbIterator *it = JsonbIteratorInit(obj);
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		bool		known = false;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		for (int i = 0; allowed[i] != NULL; i++)
			known = known || strcmp(key, allowed[i]) == 0;
		if (!known)
			def_error("%s has an unknown key \"%s\"", where, key);
	}
}

/* A number (or numeric string) with at most `scale` decimals, >= 0. */
static int64
fixed_value(JsonbValue *v, int scale, const char *what)
{
	Datum		num;
	int64		fixed;

	if (v->type != jbvNumeric)
		def_error("%s must be a JSON number", what);
	num = NumericGetDatum(v->val.numeric);
	if (DatumGetBool(DirectFunctionCall2(numeric_lt, num, fixed_to_numeric(0, 0))))
		def_error("%s must not be negative (%s)", what,
				  DatumGetCString(DirectFunctionCall1(numeric_out, num)));
	fixed = fixed_from_numeric(num, scale);
	if (!DatumGetBool(DirectFunctionCall2(numeric_eq, num, fixed_to_numeric(fixed, scale))))
		def_error("%s has more than %d decimals (%s)", what, scale,
				  DatumGetCString(DirectFunctionCall1(numeric_out, num)));
	return fixed;
}

static int
int_value(JsonbValue *v, int lo, int hi, const char *what)
{
	int64		n;

	if (v->type != jbvNumeric)
		def_error("%s must be a whole number from %d to %d", what, lo, hi);
	n = fixed_from_numeric(NumericGetDatum(v->val.numeric), 0);
	if (n < lo || n > hi ||
		!DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(v->val.numeric),
										  fixed_to_numeric(n, 0))))
		def_error("%s must be a whole number from %d to %d", what, lo, hi);
	return (int) n;
}

static char *
string_value(JsonbValue *v, const char *what)
{
	if (v->type != jbvString)
		def_error("%s must be a string", what);
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * parse_periods
 *		The period names and their base prices: "price" (one period named
 *		"all"), "periods" as {name: price} or as [name, ...] (prices then
 *		come from the tiers).
 */
static void
parse_periods(JsonbContainer *doc, TariffVersion *v, int64 *base, bool *has_base)
{
	JsonbValue *price = member(doc, "price");
	JsonbValue *periods = member(doc, "periods");

	if (price != NULL && periods != NULL)
		def_error("give either \"price\" or \"periods\", not both");
	if (periods == NULL)
	{
		v->nperiods = 1;
		strlcpy(v->period_name[0], "all", TARIFF_NAME_LEN);
		if (price != NULL)
			base[0] = fixed_value(price, PRICE_SCALE, "price");
		*has_base = price != NULL;
		return;
	}
	if (periods->type == jbvBinary && JsonContainerIsArray(periods->val.binary.data))
	{
		JsonbContainer *names = periods->val.binary.data;

		for (int i = 0; i < (int) JsonContainerSize(names); i++)
			add_period(v, string_value(getIthJsonbValueFromContainer(names, i), "a period name"));
		*has_base = false;
	}
	else
	{
		JsonbIterator *it = JsonbIteratorInit(container_of(periods, "\"periods\"", true));
		JsonbValue	val;
		JsonbIteratorToken tok;
		char	   *name = NULL;

		while ((tok = JsonbIteratorNext(&it, &val, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
			{
				name = pnstrdup(val.val.string.val, val.val.string.len);
				add_period(v, name);
			}
			else if (tok == WJB_VALUE)
				base[v->nperiods - 1] = fixed_value(&val, PRICE_SCALE,
													psprintf("the price of period \"%s\"", name));
		}
		*has_base = true;
	}
	if (v->nperiods == 0)
		def_error("\"periods\" must name at least one period");
}

/* Append a period name: 1 to 31 characters, at most 12 periods, no repeats. */
static void
add_period(TariffVersion *v, const char *name)
{
	if (v->nperiods == TARIFF_MAX_PERIODS)
		def_error("at most %d periods are allowed", TARIFF_MAX_PERIODS);
	if (strlen(name) == 0 || strlen(name) >= TARIFF_NAME_LEN)
		def_error("period name \"%s\" must have 1 to %d characters", name, TARIFF_NAME_LEN - 1);
	for (int j = 0; j < v->nperiods; j++)
		if (strcmp(v->period_name[j], name) == 0)
			def_error("period \"%s\" is listed twice", name);
	strlcpy(v->period_name[v->nperiods++], name, TARIFF_NAME_LEN);
}

static int
period_index(const TariffVersion *v, const char *name, const char *where)
{
	StringInfoData known;

	for (int i = 0; i < v->nperiods; i++)
		if (strcmp(v->period_name[i], name) == 0)
			return i;
	initStringInfo(&known);
	for (int i = 0; i < v->nperiods; i++)
		appendStringInfo(&known, "%s%s", i > 0 ? ", " : "", v->period_name[i]);
	def_error("%s names unknown period \"%s\" (the periods are %s)", where, name, known.data);
	return -1;
}

/*
 * parse_schedules
 *		The time-of-use schedules; required when there is more than one
 *		period, and together they must give every weekday and weekend day
 *		of every month exactly one schedule.
 */
static void
parse_schedules(JsonbContainer *doc, TariffVersion *v)
{
	JsonbValue *schedules = member(doc, "schedules");
	JsonbContainer *list;

	if (schedules == NULL)
	{
		if (v->nperiods > 1)
			def_error("%d periods need \"schedules\" saying when each applies", v->nperiods);
		return;
	}
	list = container_of(schedules, "\"schedules\"", false);
	v->nschedules = JsonContainerSize(list);
	if (v->nschedules == 0 || v->nschedules > TARIFF_MAX_SCHEDULES)
		def_error("\"schedules\" must have 1 to %d schedules", TARIFF_MAX_SCHEDULES);
	for (int i = 0; i < v->nschedules; i++)
	{
		JsonbValue *s = getIthJsonbValueFromContainer(list, i);

		parse_schedule(container_of(s, psprintf("schedule %d", i + 1), true), i, v);
	}
	check_coverage(v);
}

static void
parse_schedule(JsonbContainer *obj, int n, TariffVersion *v)
{
	TariffSchedule *s = &v->schedules[n];
	char	   *where = psprintf("schedule %d", n + 1);
	JsonbValue *months = member(obj, "months");
	JsonbValue *days = member(obj, "days");
	JsonbValue *switches = member(obj, "switches");
	JsonbContainer *list;

	check_keys(obj, where, schedule_keys);
	s->months = 0x1FFE;			/* months 1..12 */
	if (months != NULL)
	{
		list = container_of(months, psprintf("%s \"months\"", where), false);
		s->months = 0;
		for (int i = 0; i < (int) JsonContainerSize(list); i++)
			s->months |= 1u << int_value(getIthJsonbValueFromContainer(list, i), 1, 12,
										 psprintf("%s: a month", where));
	}
	s->days = TARIFF_WEEKDAY | TARIFF_WEEKEND;
	if (days != NULL)
	{
		list = container_of(days, psprintf("%s \"days\"", where), false);
		s->days = 0;
		for (int i = 0; i < (int) JsonContainerSize(list); i++)
		{
			char	   *day = string_value(getIthJsonbValueFromContainer(list, i), "a day type");
			int			d = 0;

			while (d < 3 && strcmp(day, day_names[d]) != 0)
				d++;
			if (d == 3)
				def_error("%s: unknown day type \"%s\" (use weekday, weekend, holiday)", where, day);
			s->days |= 1 << d;
		}
	}
	if (switches == NULL)
		def_error("%s has no \"switches\"", where);
	list = container_of(switches, psprintf("%s \"switches\"", where), false);
	s->nswitches = JsonContainerSize(list);
	if (s->nswitches == 0 || s->nswitches > TARIFF_MAX_SWITCHES)
		def_error("%s must have 1 to %d switches", where, TARIFF_MAX_SWITCHES);
	for (int i = 0; i < s->nswitches; i++)
	{
		JsonbContainer *pair = container_of(getIthJsonbValueFromContainer(list, i),
											psprintf("%s switch %d", where, i + 1), false);
		char	   *at;
		int			hh,
					mm;
		char		extra;

		if (JsonContainerSize(pair) != 2)
			def_error("%s switch %d must be [\"HH:MM\", \"period\"]", where, i + 1);
		at = string_value(getIthJsonbValueFromContainer(pair, 0), "a switch time");
		if (sscanf(at, "%2d:%2d%c", &hh, &mm, &extra) != 2 || strlen(at) != 5 ||
			hh < 0 || hh > 23 || mm < 0 || mm > 59)
			def_error("%s: switch time \"%s\" is not HH:MM between 00:00 and 23:59", where, at);
		s->minute[i] = hh * 60 + mm;
		s->period[i] = period_index(v, string_value(getIthJsonbValueFromContainer(pair, 1), "a period"),
									psprintf("%s at %s", where, at));
		if (i == 0 && s->minute[0] != 0)
			def_error("%s leaves 00:00-%s without a period: the first switch must be at 00:00", where, at);
		if (i > 0 && s->minute[i] <= s->minute[i - 1])
			def_error("%s: switch %s is not after %02d:%02d (hours overlap or are out of order)",
					  where, at, s->minute[i - 1] / 60, s->minute[i - 1] % 60);
	}
}

/* Exactly one schedule per (month, weekday|weekend); at most one for holidays. */
static void
check_coverage(const TariffVersion *v)
{
	for (int m = 1; m <= 12; m++)
		for (int d = 0; d < 3; d++)
		{
			int			first = -1;

			for (int i = 0; i < v->nschedules; i++)
			{
				if (!(v->schedules[i].months & (1u << m)) || !(v->schedules[i].days & (1 << d)))
					continue;
				if (first >= 0)
					def_error("schedules %d and %d both cover %ss in month %d", first + 1, i + 1, day_names[d], m);
				first = i;
			}
			if (first < 0 && d < 2)
				def_error("no schedule covers %ss in month %d", day_names[d], m);
		}
}

/*
 * parse_tiers
 *		Tier blocks on cycle-to-date consumption; without "tiers" the
 *		tariff has one tier priced at the base prices.
 */
static void
parse_tiers(JsonbContainer *doc, TariffVersion *v, const int64 *base, bool has_base)
{
	JsonbValue *tiers = member(doc, "tiers");
	JsonbContainer *obj;
	JsonbContainer *blocks;
	JsonbValue *value;

	if (tiers == NULL)
	{
		if (!has_base)
			def_error("no prices: give \"price\", \"periods\" with prices, or \"tiers\"");
		v->ntiers = 1;
		v->tier_upto[0] = TARIFF_NO_TIER_LIMIT;
		memcpy(v->price[0], base, sizeof(int64) * v->nperiods);
		return;
	}
	obj = container_of(tiers, "\"tiers\"", true);
	check_keys(obj, "\"tiers\"", tier_keys);
	value = member(obj, "cycle");
	if (value == NULL)
		def_error("\"tiers\" needs a \"cycle\": \"monthly\" or \"yearly\"");
	if (strcmp(string_value(value, "\"cycle\""), "monthly") == 0)
		v->cycle = TARIFF_CYCLE_MONTHLY;
	else if (strcmp(string_value(value, "\"cycle\""), "yearly") == 0)
		v->cycle = TARIFF_CYCLE_YEARLY;
	else
		def_error("\"cycle\" must be \"monthly\" or \"yearly\"");
	value = member(obj, "start_day");
	v->cycle_start_day = value ? int_value(value, 1, 28, "\"start_day\"") : 1;
	value = member(obj, "start_month");
	v->cycle_start_month = value ? int_value(value, 1, 12, "\"start_month\"") : 1;
	if (value != NULL && v->cycle != TARIFF_CYCLE_YEARLY)
		def_error("\"start_month\" applies to yearly cycles only");

	value = member(obj, "blocks");
	if (value == NULL)
		def_error("\"tiers\" needs \"blocks\"");
	blocks = container_of(value, "\"blocks\"", false);
	v->ntiers = JsonContainerSize(blocks);
	if (v->ntiers == 0 || v->ntiers > TARIFF_MAX_TIERS)
		def_error("\"blocks\" must have 1 to %d tiers", TARIFF_MAX_TIERS);
	for (int i = 0; i < v->ntiers; i++)
		parse_block(container_of(getIthJsonbValueFromContainer(blocks, i),
								 psprintf("tier %d", i + 1), true),
					i, i == v->ntiers - 1, v, base, has_base);
}

static void
parse_block(JsonbContainer *b, int n, bool last, TariffVersion *v, const int64 *base, bool has_base)
{
	char	   *where = psprintf("tier %d", n + 1);
	JsonbValue *upto = member(b, "upto");
	JsonbValue *price = member(b, "price");
	JsonbValue *prices = member(b, "prices");
	JsonbValue *add = member(b, "add");

	check_keys(b, where, block_keys);
	if (last && upto != NULL)
		def_error("the last tier must not have \"upto\": it holds everything above tier %d", n);
	if (!last && upto == NULL)
		def_error("%s needs \"upto\" (its ceiling of cycle-to-date consumption)", where);
	v->tier_upto[n] = last ? TARIFF_NO_TIER_LIMIT : fixed_value(upto, ENERGY_SCALE, psprintf("%s \"upto\"", where));
	if (!last && v->tier_upto[n] == 0)
		def_error("%s \"upto\" must be above 0", where);
	if (n > 0 && v->tier_upto[n] <= v->tier_upto[n - 1])
		def_error("tiers are out of order: %s \"upto\" %s is not above tier %d's %s", where,
				  fixed_format(v->tier_upto[n], ENERGY_SCALE), n, fixed_format(v->tier_upto[n - 1], ENERGY_SCALE));
	if ((price != NULL) + (prices != NULL) + (add != NULL) != 1)
		def_error("%s needs exactly one of \"price\", \"prices\" or \"add\"", where);

	if (price != NULL)
	{
		int64		p = fixed_value(price, PRICE_SCALE, psprintf("%s \"price\"", where));

		for (int i = 0; i < v->nperiods; i++)
			v->price[n][i] = p;
	}
	else if (add != NULL)
	{
		int64		a = fixed_value(add, PRICE_SCALE, psprintf("%s \"add\"", where));

		if (!has_base)
			def_error("%s \"add\" needs base prices in \"price\" or \"periods\"", where);
		for (int i = 0; i < v->nperiods; i++)
			v->price[n][i] = base[i] + a;
	}
	else
	{
		JsonbContainer *obj = container_of(prices, psprintf("%s \"prices\"", where), true);

		if ((int) JsonContainerSize(obj) != v->nperiods)
			def_error("%s \"prices\" must price each of the %d periods once", where, v->nperiods);
		for (int i = 0; i < v->nperiods; i++)
		{
			JsonbValue *p = member(obj, v->period_name[i]);

			if (p == NULL)
				def_error("%s \"prices\" has no price for period \"%s\"", where, v->period_name[i]);
			v->price[n][i] = fixed_value(p, PRICE_SCALE,
										 psprintf("%s price of \"%s\"", where, v->period_name[i]));
		}
	}
}

/* "split" and "basic". */
static void
parse_options(JsonbContainer *doc, TariffVersion *v)
{
	JsonbValue *split = member(doc, "split");
	JsonbValue *basic = member(doc, "basic");

	if (split != NULL)
	{
		char	   *s = string_value(split, "\"split\"");

		if (strcmp(s, "registers") == 0)
		{
			v->split = TARIFF_SPLIT_REGISTERS;
			for (int i = 0; i < v->nperiods; i++)
			{
				if (tariff_register_index(v->period_name[i]) < 0)
					def_error("\"split\": \"registers\" needs periods named after the meter's registers "
							  "(sharp, peak, flat, valley), not \"%s\"", v->period_name[i]);
			}
		}
		else if (strcmp(s, "uniform") != 0)
			def_error("\"split\" must be \"uniform\" or \"registers\"");
	}
	if (basic != NULL)
	{
		JsonbContainer *obj = container_of(basic, "\"basic\"", true);
		JsonbValue *value;
		char	   *by;

		check_keys(obj, "\"basic\"", basic_keys);
		value = member(obj, "by");
		by = value ? string_value(value, "\"basic\" \"by\"") : "";
		if (strcmp(by, "capacity") == 0)
			v->basic = TARIFF_BASIC_CAPACITY;
		else if (strcmp(by, "demand") == 0)
			v->basic = TARIFF_BASIC_DEMAND;
		else
			def_error("\"basic\" needs \"by\": \"capacity\" (per kVA) or \"demand\" (per kW of maximum demand)");
		value = member(obj, "price");
		if (value == NULL)
			def_error("\"basic\" needs a \"price\" per month");
		v->basic_price = fixed_value(value, PRICE_SCALE, "\"basic\" \"price\"");
	}
}
