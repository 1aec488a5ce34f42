/*-------------------------------------------------------------------------
 * test/sim/probe/sim_probe.c
 *	  A small libmodbus client for prepay-sim: its self-check, one-off reads
 *	  for fault tests, and the benchmark's service-time floor.  Not part of
 *	  the simulator binary (the Makefile builds only the .c files directly in test/sim); the TAP
 *	  test and test/bench/agent.sh compile it.
 *
 *	  sim_probe check HOST PORT M       ddsy1352 checks on a TCP gateway
 *	  sim_probe check-rtu DEVICE M      the same over an RTU line
 *	  sim_probe check-adf HOST PORT     adf400l checks on unit 1
 *	  sim_probe read HOST PORT UNIT     one energy read: "ok <centikwh>" or
 *	                                    "error <errno name>"
 *	  sim_probe sweep HOST PORT M REPS  read units 1..M sequentially REPS
 *	                                    times; prints "sweep_s=<best seconds>"
 *
 * The checks assert no timing: the simulator runs with a huge --speedup so
 * that any elapsed millisecond adds energy, and the probe sleeps a few
 * milliseconds between the two reads it compares.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <modbus.h>

static int	failures;

#define CHECK(cond, ...) check((cond), #cond, __VA_ARGS__)

static void
check(int ok, const char *expr, const char *fmt, ...)
{
	va_list		args;

	printf("%s - ", ok ? "ok" : "not ok");
	va_start(args, fmt);
	vprintf(fmt, args);
	va_end(args);
	printf("\n");
	if (!ok)
	{
		printf("#   failed: %s (errno %d: %s)\n", expr, errno, modbus_strerror(errno));
		failures++;
	}
}

static void
sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/*
 * read_energy: unit's total energy register (0000H, U32 high word first).
 */
static long long
read_energy(modbus_t *ctx, int unit)
{
	uint16_t	r[2];

	modbus_set_slave(ctx, unit);
	if (modbus_read_registers(ctx, 0x0000, 2, r) != 2)
		return -1;
	return ((long long) r[0] << 16) | r[1];
}

static int
write_relay(modbus_t *ctx, int enable, int state)
{
	uint16_t	v[2] = {(uint16_t) enable, (uint16_t) state};

	return modbus_write_registers(ctx, 0x0057, 2, v);
}

/*
 * check_block: the whole 0000H-0010H block reads, TOU registers add up.
 */
static void
check_block(modbus_t *ctx)
{
	uint16_t	r[17];
	long long	total,
				tou = 0;

	modbus_set_slave(ctx, 1);
	CHECK(modbus_read_registers(ctx, 0x0000, 17, r) == 17, "block 0000H-0010H reads");
	total = ((long long) r[0] << 16) | r[1];
	for (int i = 1; i <= 4; i++)
		tou += ((long long) r[2 * i] << 16) | r[2 * i + 1];
	CHECK(tou == total, "sharp+peak+flat+valley = total (%lld)", total);
	CHECK(r[11] == 2200 && r[16] == 1000, "voltage 220.0 V, PF 1.000");
	CHECK(r[13] == 1000, "active power 1.000 kW");
}

/*
 * check_relay: energy grows while closed, stops while tripped, grows again.
 */
static void
check_relay(modbus_t *ctx)
{
	uint16_t	rb[2];
	long long	a,
				b;

	a = read_energy(ctx, 1);
	sleep_ms(5);
	b = read_energy(ctx, 1);
	CHECK(a >= 0 && b > a, "energy grows while closed (%lld -> %lld)", a, b);
	CHECK(write_relay(ctx, 1, 1) == 2, "trip written (FC16 0057H {1,1})");
	CHECK(modbus_read_registers(ctx, 0x0057, 2, rb) == 2 && rb[0] == 1 && rb[1] == 1,
		  "relay read-back {1,1}");
	a = read_energy(ctx, 1);
	sleep_ms(5);
	b = read_energy(ctx, 1);
	CHECK(a >= 0 && b == a, "energy stands still while tripped (%lld)", a);
	CHECK(write_relay(ctx, 1, 0) == 2, "close written (FC16 0057H {1,0})");
	sleep_ms(5);
	b = read_energy(ctx, 1);
	CHECK(b > a, "energy grows again after close (%lld -> %lld)", a, b);
}

/*
 * check_errors: exceptions 01, 02, 03 and the absent unit.
 */
static void
check_errors(modbus_t *ctx, int meters, int tcp)
{
	uint16_t	r[2];
	uint8_t		raw[] = {1, 0x20};
	uint8_t		rsp[MODBUS_TCP_MAX_ADU_LENGTH];
	int			hl = modbus_get_header_length(ctx);
	int			n;

	modbus_set_slave(ctx, 1);
	errno = 0;
	CHECK(modbus_read_registers(ctx, 0x0100, 2, r) == -1 && errno == EMBXILADD,
		  "unmapped 0100H: exception 02");
	errno = 0;
	CHECK(write_relay(ctx, 2, 0) == -1 && errno == EMBXILVAL, "relay {2,0}: exception 03");
	n = modbus_send_raw_request(ctx, raw, sizeof(raw)) > 0
		? modbus_receive_confirmation(ctx, rsp) : -1;
	CHECK(n > hl && rsp[hl] == 0xA0 && rsp[hl + 1] == 0x01, "function 20H: exception 01");
	modbus_set_slave(ctx, meters + 1);
	errno = 0;
	if (tcp)
		CHECK(modbus_read_registers(ctx, 0x0000, 2, r) == -1 && errno == EMBXGTAR,
			  "absent unit %d: exception 0B", meters + 1);
	else
		CHECK(modbus_read_registers(ctx, 0x0000, 2, r) == -1 && errno == ETIMEDOUT,
			  "absent unit %d: no answer", meters + 1);
	CHECK(read_energy(ctx, meters) > 0, "last unit %d answers", meters);
}

static int
run_checks(modbus_t *ctx, int meters, int tcp)
{
	modbus_set_response_timeout(ctx, 0, 300000);
	if (modbus_connect(ctx) < 0)
	{
		printf("not ok - connect: %s\n", modbus_strerror(errno));
		return 1;
	}
	check_block(ctx);
	check_relay(ctx);
	check_errors(ctx, meters, tcp);
	modbus_close(ctx);
	modbus_free(ctx);
	return failures ? 1 : 0;
}

/*
 * check_adf: adf400l energy, TOU sum and the forced-control word.
 */
static int
check_adf(modbus_t *ctx)
{
	uint16_t	r[8],
				word;
	uint16_t	trip = 0x0100,
				close = 0x0001;
	long long	a,
				b,
				tou = 0;

	modbus_set_response_timeout(ctx, 0, 300000);
	modbus_set_slave(ctx, 1);
	if (modbus_connect(ctx) < 0)
		return 1;
	CHECK(modbus_read_registers(ctx, 0x0306, 2, r) == 2, "energy 0306H reads");
	a = ((long long) r[0] << 16) | r[1];
	CHECK(modbus_read_registers(ctx, 0x0400, 8, r) == 8, "TOU 0400H-0407H read");
	for (int i = 0; i < 4; i++)
		tou += ((long long) r[2 * i] << 16) | r[2 * i + 1];
	CHECK(tou >= a, "TOU sum %lld >= earlier total %lld", tou, a);
	CHECK(modbus_write_registers(ctx, 0x0801, 1, &trip) == 1, "trip word 0100H written");
	CHECK(modbus_read_registers(ctx, 0x0801, 1, &word) == 1 && word == 0x0100, "read-back 0100H");
	modbus_read_registers(ctx, 0x0306, 2, r);
	a = ((long long) r[0] << 16) | r[1];
	sleep_ms(5);
	modbus_read_registers(ctx, 0x0306, 2, r);
	b = ((long long) r[0] << 16) | r[1];
	CHECK(a == b, "energy stands still while tripped (%lld)", a);
	CHECK(modbus_write_registers(ctx, 0x0801, 1, &close) == 1, "close word 0001H written");
	CHECK(modbus_read_registers(ctx, 0x0801, 1, &word) == 1 && word == 0x0001, "read-back 0001H");
	errno = 0;
	CHECK(modbus_read_registers(ctx, 0x0000, 2, r) == -1 && errno == EMBXILADD,
		  "0000H is unmapped on adf400l: exception 02");
	modbus_close(ctx);
	modbus_free(ctx);
	return failures ? 1 : 0;
}

static const char *
errno_name(int e)
{
	switch (e)
	{
		case ETIMEDOUT:
			return "timeout";
		case EMBXSFAIL:
			return "exception04";
		case EMBBADDATA:
		case EMBBADCRC:
		case EMBBADSLAVE:
			return "corrupt";
		case ECONNREFUSED:
			return "refused";
	}
	return "other";
}

static int
read_once(const char *host, int port, int unit)
{
	modbus_t   *ctx = modbus_new_tcp(host, port);
	long long	e = -1;

	modbus_set_response_timeout(ctx, 1, 0);
	if (modbus_connect(ctx) == 0)
		e = read_energy(ctx, unit);
	if (e >= 0)
		printf("ok %lld\n", e);
	else
		printf("error %s\n", errno_name(errno));
	modbus_close(ctx);
	modbus_free(ctx);
	return e >= 0 ? 0 : 1;
}

/*
 * sweep: the best of REPS sequential passes over units 1..M of one gateway.
 */
static int
sweep(const char *host, int port, int meters, int reps)
{
	modbus_t   *ctx = modbus_new_tcp(host, port);
	double		best = 1e9;

	if (modbus_connect(ctx) < 0)
	{
		fprintf(stderr, "sim_probe: connect: %s\n", modbus_strerror(errno));
		return 1;
	}
	for (int k = 0; k < reps; k++)
	{
		double		t0 = now_s();

		for (int u = 1; u <= meters; u++)
			if (read_energy(ctx, u) < 0)
			{
				fprintf(stderr, "sim_probe: unit %d: %s\n", u, modbus_strerror(errno));
				return 1;
			}
		if (now_s() - t0 < best)
			best = now_s() - t0;
	}
	printf("sweep_s=%.6f\n", best);
	modbus_close(ctx);
	modbus_free(ctx);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "check") == 0)
		return run_checks(modbus_new_tcp(argv[2], atoi(argv[3])), atoi(argv[4]), 1);
	if (argc == 4 && strcmp(argv[1], "check-rtu") == 0)
		return run_checks(modbus_new_rtu(argv[2], 9600, 'N', 8, 1), atoi(argv[3]), 0);
	if (argc == 4 && strcmp(argv[1], "check-adf") == 0)
		return check_adf(modbus_new_tcp(argv[2], atoi(argv[3])));
	if (argc == 5 && strcmp(argv[1], "read") == 0)
		return read_once(argv[2], atoi(argv[3]), atoi(argv[4]));
	if (argc == 6 && strcmp(argv[1], "sweep") == 0)
		return sweep(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
	fprintf(stderr, "usage: sim_probe check HOST PORT M | check-rtu DEVICE M | check-adf HOST PORT | "
			"read HOST PORT UNIT | sweep HOST PORT M REPS\n");
	return 2;
}
