/*-------------------------------------------------------------------------
 * test/sim/sim_main.c
 *	  prepay-sim: a Modbus meter simulator for prepay's agent tests, demo
 *	  and benchmark.  Parses the options, builds the gateways and their
 *	  meters, starts one thread per gateway, runs the HTTP control server
 *	  and the signal handlers on a libevent loop in the main thread, and
 *	  on SIGTERM/SIGINT stops the threads and frees everything.
 *
 * Locking: see sim.h.  The main thread writes the configuration before any
 * gateway thread starts and sim->stopping once, after the loop ends.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <modbus.h>

#include "sim.h"

#define MAX_FAULTS 256

struct fault_option {
	int gateway;
	struct sim_fault fault;
};

static struct fault_option fault_options[MAX_FAULTS];
static int n_fault_options;

static void usage(FILE *out)
{
	fprintf(out, "prepay-sim: a Modbus meter simulator (prepay tests, demo, benchmark)\n"
	             "\n"
	             "Usage: prepay-sim [options]\n"
	             "  --tcp-gateways N        N Modbus-TCP gateways on 127.0.0.1:BASE+g\n"
	             "  --base-port BASE        first TCP port (default 15020)\n"
	             "  --meters-per-gateway M  unit ids 1..M on every gateway (default 1, max 247)\n"
	             "  --rtu DEVICE            one more gateway on this serial line (repeatable)\n"
	             "  --baud B --parity N|E|O --data-bits 7|8 --stop-bits 1|2   (default 9600 8N1)\n"
	             "  --profile ddsy1352|adf400l   register map of every meter (default ddsy1352)\n"
	             "  --load-w W              constant load of every meter in W (default 1000)\n"
	             "  --speedup K             energy grows K times faster than wall time (default 1)\n"
	             "  --initial-kwh X         starting total energy (default 100.00)\n"
	             "  --fault G:MODE          dead|silent|exception|corrupt|slow=MS|hostile[=SEED[:FRAMES]]\n"
	             "                          on gateway G (repeatable); hostile answers each request with a\n"
	             "                          seeded random valid, corrupt, wrong-unit, exception, partial,\n"
	             "                          endless, oversized or missing reply, for FRAMES requests\n"
	             "                          (default seed 0, FRAMES 0 = without end)\n"
	             "  --control HOST:PORT     HTTP control server (GET /meters /hostile /healthz;\n"
	             "                          POST /fault /load /relay)\n"
	             "  --history FILE          append \"epoch_ms gateway unit energy_centikwh relay(1 closed)\" per "
	             "energy read\n"
	             "  --pidfile FILE          write the process id\n"
	             "  --help, --version\n"
	             "\n"
	             "See docs/SIMULATOR.md.\n");
}

/*
 * parse_long: a whole decimal number within [lo, hi].
 */
static bool parse_long(const char *text, long lo, long hi, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(text, &end, 10);
	return errno == 0 && end != text && *end == '\0' && *out >= lo && *out <= hi;
}

/*
 * parse_centi: "123", "123.4" or "123.45" as exact hundredths.
 */
static bool parse_centi(const char *text, int64_t *out)
{
	const char *dot = strchr(text, '.');
	long whole;
	int64_t frac = 0;
	char intpart[32];
	size_t n = dot ? (size_t)(dot - text) : strlen(text);

	if (n == 0 || n >= sizeof(intpart))
		return false;
	memcpy(intpart, text, n);
	intpart[n] = '\0';
	if (!parse_long(intpart, 0, 40000000, &whole))
		return false;
	if (dot) {
		size_t digits = strlen(dot + 1);

		if (digits == 0 || digits > 2 || strspn(dot + 1, "0123456789") != digits)
			return false;
		frac = strtol(dot + 1, NULL, 10) * (digits == 1 ? 10 : 1);
	}
	*out = (int64_t)whole * 100 + frac;
	return true;
}

/*
 * parse_fault_option: "G:MODE".
 */
static bool parse_fault_option(const char *text)
{
	const char *colon = strchr(text, ':');
	char g[16];
	long gateway;

	if (colon == NULL || colon == text || (size_t)(colon - text) >= sizeof(g) || n_fault_options == MAX_FAULTS)
		return false;
	memcpy(g, text, (size_t)(colon - text));
	g[colon - text] = '\0';
	if (!parse_long(g, 0, 100000, &gateway))
		return false;
	fault_options[n_fault_options].gateway = (int)gateway;
	return fault_parse(colon + 1, &fault_options[n_fault_options++].fault);
}

enum {
	OPT_TCP = 1000,
	OPT_BASE,
	OPT_METERS,
	OPT_RTU,
	OPT_BAUD,
	OPT_PARITY,
	OPT_DATA,
	OPT_STOP,
	OPT_PROFILE,
	OPT_LOAD,
	OPT_SPEEDUP,
	OPT_INITIAL,
	OPT_FAULT,
	OPT_CONTROL,
	OPT_HISTORY,
	OPT_PIDFILE,
	OPT_HELP,
	OPT_VERSION
};

static const struct option long_options[] = { { "tcp-gateways", required_argument, NULL, OPT_TCP },
	                                      { "base-port", required_argument, NULL, OPT_BASE },
	                                      { "meters-per-gateway", required_argument, NULL, OPT_METERS },
	                                      { "rtu", required_argument, NULL, OPT_RTU },
	                                      { "baud", required_argument, NULL, OPT_BAUD },
	                                      { "parity", required_argument, NULL, OPT_PARITY },
	                                      { "data-bits", required_argument, NULL, OPT_DATA },
	                                      { "stop-bits", required_argument, NULL, OPT_STOP },
	                                      { "profile", required_argument, NULL, OPT_PROFILE },
	                                      { "load-w", required_argument, NULL, OPT_LOAD },
	                                      { "speedup", required_argument, NULL, OPT_SPEEDUP },
	                                      { "initial-kwh", required_argument, NULL, OPT_INITIAL },
	                                      { "fault", required_argument, NULL, OPT_FAULT },
	                                      { "control", required_argument, NULL, OPT_CONTROL },
	                                      { "history", required_argument, NULL, OPT_HISTORY },
	                                      { "pidfile", required_argument, NULL, OPT_PIDFILE },
	                                      { "help", no_argument, NULL, OPT_HELP },
	                                      { "version", no_argument, NULL, OPT_VERSION },
	                                      { NULL, 0, NULL, 0 } };

/*
 * apply_option: one parsed option into the configuration; false if invalid.
 */
static bool apply_option(struct sim_config *c, int opt, const char *arg)
{
	long v;

	switch (opt) {
	case OPT_TCP:
		return parse_long(arg, 0, 10000, &v) && (c->tcp_gateways = (int)v, true);
	case OPT_BASE:
		return parse_long(arg, 1, 65535, &v) && (c->base_port = (int)v, true);
	case OPT_METERS:
		return parse_long(arg, 1, SIM_MAX_UNITS, &v) && (c->meters_per_gateway = (int)v, true);
	case OPT_RTU:
		if (c->n_rtu == (int)(sizeof(c->rtu_devices) / sizeof(c->rtu_devices[0])))
			return false;
		c->rtu_devices[c->n_rtu++] = arg;
		return true;
	case OPT_BAUD:
		return parse_long(arg, 50, 4000000, &v) && (c->baud = (int)v, true);
	case OPT_PARITY:
		c->parity = arg[0];
		return strlen(arg) == 1 && strchr("NEO", arg[0]) != NULL;
	case OPT_DATA:
		return parse_long(arg, 7, 8, &v) && (c->data_bits = (int)v, true);
	case OPT_STOP:
		return parse_long(arg, 1, 2, &v) && (c->stop_bits = (int)v, true);
	case OPT_PROFILE:
		return (c->profile = profile_find(arg)) != NULL;
	case OPT_LOAD:
		return parse_long(arg, 0, 10000000, &v) && (c->load_w = (int32_t)v, true);
	case OPT_SPEEDUP:
		return parse_long(arg, 1, 1000000, &v) && (c->speedup = v, true);
	case OPT_INITIAL:
		return parse_centi(arg, &c->initial_ck);
	case OPT_FAULT:
		return parse_fault_option(arg);
	case OPT_CONTROL:
		c->control = arg;
		return true;
	case OPT_HISTORY:
		c->history = arg;
		return true;
	case OPT_PIDFILE:
		c->pidfile = arg;
		return true;
	}
	return false;
}

/*
 * parse_options: fill sim->config; exits on --help, --version or an error.
 */
static void parse_options(struct sim *sim, int argc, char **argv)
{
	struct sim_config *c = &sim->config;
	int opt;

	*c = (struct sim_config){
		.base_port = 15020,
		.meters_per_gateway = 1,
		.baud = 9600,
		.parity = 'N',
		.data_bits = 8,
		.stop_bits = 1,
		.profile = profile_find("ddsy1352"),
		.load_w = 1000,
		.speedup = 1,
		.initial_ck = 10000,
	};
	while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
		if (opt == OPT_HELP) {
			usage(stdout);
			exit(0);
		}
		if (opt == OPT_VERSION) {
			printf("prepay-sim %s (libmodbus %s)\n", SIM_VERSION, LIBMODBUS_VERSION_STRING);
			exit(0);
		}
		if (opt == '?' || !apply_option(c, opt, optarg)) {
			if (opt != '?')
				fprintf(stderr, "prepay-sim: invalid value for --%s: %s\n",
				        long_options[opt - OPT_TCP].name, optarg);
			fprintf(stderr, "Try \"prepay-sim --help\".\n");
			exit(2);
		}
	}
	if (optind < argc || c->tcp_gateways + c->n_rtu == 0 || c->base_port + c->tcp_gateways - 1 > 65535) {
		fprintf(stderr, "prepay-sim: need --tcp-gateways N (ports within 1..65535) or --rtu DEVICE, "
		                "and no other arguments\n");
		exit(2);
	}
}

/*
 * build_gateways: TCP gateways 0..N-1, then one per RTU line; every meter
 * starts closed at the initial energy.
 */
static void build_gateways(struct sim *sim)
{
	struct sim_config *c = &sim->config;

	sim->n_gateways = c->tcp_gateways + c->n_rtu;
	sim->gateways = calloc((size_t)sim->n_gateways, sizeof(struct sim_gateway));
	for (int g = 0; g < sim->n_gateways; g++) {
		struct sim_gateway *gw = &sim->gateways[g];

		gw->index = g;
		gw->transport = g < c->tcp_gateways ? TRANSPORT_TCP : TRANSPORT_RTU;
		gw->port = c->base_port + g;
		gw->device = g < c->tcp_gateways ? NULL : c->rtu_devices[g - c->tcp_gateways];
		pthread_mutex_init(&gw->lock, NULL);
		gw->n_meters = c->meters_per_gateway;
		gw->meters = calloc((size_t)gw->n_meters, sizeof(struct sim_meter));
		for (int u = 0; u < gw->n_meters; u++)
			meter_init(&gw->meters[u], c->initial_ck, c->load_w);
	}
}

/*
 * apply_faults: the --fault options, once the gateways exist.
 */
static bool apply_faults(struct sim *sim)
{
	for (int i = 0; i < n_fault_options; i++) {
		if (fault_options[i].gateway >= sim->n_gateways) {
			fprintf(stderr, "prepay-sim: --fault names gateway %d; there are %d\n",
			        fault_options[i].gateway, sim->n_gateways);
			return false;
		}
		struct sim_gateway *gw = &sim->gateways[fault_options[i].gateway];

		gw->fault = fault_options[i].fault;
		hostile_reset(&gw->hostile, gw->fault.seed, gw->fault.frames);
	}
	return true;
}

/*
 * start_gateways: one thread each, with SIGINT/SIGTERM blocked so that the
 * main thread's loop receives them.
 */
static bool start_gateways(struct sim *sim)
{
	sigset_t block, old;
	bool ok = true;

	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (int g = 0; g < sim->n_gateways && ok; g++)
		ok = gateway_start(sim, &sim->gateways[g]) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return ok;
}

static void stop_gateways(struct sim *sim)
{
	sim->stopping = 1;
	for (int g = 0; g < sim->n_gateways; g++)
		gateway_join(&sim->gateways[g]);
}

static void free_gateways(struct sim *sim)
{
	for (int g = 0; g < sim->n_gateways; g++) {
		pthread_mutex_destroy(&sim->gateways[g].lock);
		free(sim->gateways[g].meters);
	}
	free(sim->gateways);
}

static void on_signal(evutil_socket_t sig, short events, void *arg)
{
	event_base_loopbreak(arg);
}

static bool write_pidfile(const char *path)
{
	FILE *f = fopen(path, "w");

	if (f == NULL)
		return false;
	fprintf(f, "%d\n", (int)getpid());
	return fclose(f) == 0;
}

/*
 * run: start everything, serve until a signal, stop everything; the exit
 * status.
 */
static int run(struct sim *sim)
{
	struct event_base *base = event_base_new();
	struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
	struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	const struct sim_config *c = &sim->config;
	int status = 1;

	evsignal_add(sigint, NULL);
	evsignal_add(sigterm, NULL);
	if (c->history && history_open(c->history) < 0)
		perror("prepay-sim: --history");
	else if (!start_gateways(sim))
		;
	else if (c->control && control_start(sim, base, c->control) < 0)
		fprintf(stderr, "prepay-sim: cannot listen on %s for --control\n", c->control);
	else if (c->pidfile && !write_pidfile(c->pidfile))
		perror("prepay-sim: --pidfile");
	else {
		printf("prepay-sim: ready, %d gateways x %d meters (%s), control %s\n", sim->n_gateways,
		       c->meters_per_gateway, c->profile->name, c->control ? c->control : "off");
		fflush(stdout);
		event_base_dispatch(base);
		status = 0;
	}
	stop_gateways(sim);
	control_stop();
	history_close();
	if (c->pidfile && status == 0)
		unlink(c->pidfile);
	event_free(sigint);
	event_free(sigterm);
	event_base_free(base);
	return status;
}

int main(int argc, char **argv)
{
	struct sim sim = { 0 };
	int status;

	parse_options(&sim, argc, argv);
	sim_speedup = sim.config.speedup;
	signal(SIGPIPE, SIG_IGN);
	build_gateways(&sim);
	if (!apply_faults(&sim)) {
		free_gateways(&sim);
		return 2;
	}
	status = run(&sim);
	free_gateways(&sim);
	libevent_global_shutdown();
	return status;
}
