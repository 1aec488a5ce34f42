/*-------------------------------------------------------------------------
 * test/sim/sim.h
 *	  Shared declarations of prepay-sim, the Modbus meter simulator.
 *
 * Vocabulary:
 *	  meter    one simulated prepaid meter: an energy register that grows
 *	           with its load while its relay is closed, and a relay;
 *	  profile  the register map a meter answers with (ddsy1352, adf400l);
 *	  gateway  one Modbus-TCP port or one RTU serial line; it serves the
 *	           meters at unit ids 1..M, strictly one request at a time,
 *	           in its own thread;
 *	  fault    how a gateway misbehaves (dead, silent, exception, corrupt,
 *	           slow, hostile), settable at start and at run time;
 *	  hostile  the fault that answers each request with a seeded
 *	           pseudo-random choice among valid and malformed replies
 *	           (sim_hostile.c), optionally for a fixed number of frames.
 *
 * Locking: every gateway has one mutex, `lock`, that guards its meters and
 * its fault (and the hostile generator's state).  A thread holds at most one gateway lock at a time and never
 * sleeps or does socket I/O while holding it.  The history file has its own
 * mutex, taken without any gateway lock held.
 *-------------------------------------------------------------------------
 */
#ifndef SIM_H
#define SIM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <modbus.h>

#define SIM_VERSION   "0.1"
#define SIM_MAX_UNITS 247

/* One centi-kWh (0.01 kWh) is 36,000,000 milli-watt-seconds (mJ). */
#define SIM_MWS_PER_CENTIKWH INT64_C(36000000)

/* Time-of-use registers, in the order the meters lay them out. */
enum sim_tou { TOU_SHARP, TOU_PEAK, TOU_FLAT, TOU_VALLEY, TOU_COUNT };

enum sim_fault_mode { FAULT_NONE, FAULT_DEAD, FAULT_SILENT, FAULT_EXCEPTION, FAULT_CORRUPT, FAULT_SLOW, FAULT_HOSTILE };

struct sim_fault {
	enum sim_fault_mode mode;
	int slow_ms;
	uint64_t seed;   /* hostile: the generator's seed */
	uint64_t frames; /* hostile: frames to serve hostile, 0 = no end */
};

/* What a hostile gateway answers one request with. */
enum hostile_kind {
	HOSTILE_VALID,      /* the right reply (libmodbus) */
	HOSTILE_CORRUPT,    /* bad transaction/protocol id or CRC, garbled bytes */
	HOSTILE_WRONG_UNIT, /* the right registers under another unit id */
	HOSTILE_EXCEPTION,  /* an exception, code 1..11 or an undefined one */
	HOSTILE_PARTIAL,    /* a truncated reply, then silence */
	HOSTILE_ENDLESS,    /* a reply that never ends (trickle or flood) */
	HOSTILE_OVERSIZED,  /* more data than asked for */
	HOSTILE_NONE,       /* no reply */
	HOSTILE_KINDS
};

/* The hostile generator of one gateway; guarded by its gateway's lock. */
struct sim_hostile {
	uint64_t rng; /* xorshift64* state, never 0 */
	uint64_t seed;
	uint64_t budget; /* frames to serve hostile; 0 = no end */
	uint64_t frames; /* hostile frames served so far */
	uint64_t served[HOSTILE_KINDS];
};

/* One meter; guarded by its gateway's lock. */
struct sim_meter {
	int64_t energy_ck;         /* total active energy, centi-kWh */
	int64_t tou_ck[TOU_COUNT]; /* sum equals energy_ck */
	int64_t rest_mws;          /* energy not yet a whole centi-kWh, mJ */
	int64_t last_ms;           /* monotonic time of the last advance */
	int32_t load_w;
	bool tripped;
	uint16_t relay_regs[2]; /* raw relay registers as last written */
	uint16_t password;
	uint64_t trips;  /* trip commands received */
	uint64_t closes; /* close (or hand-back) commands received */
	uint64_t reads;  /* FC03 reads that included the energy register */
};

struct sim_profile;

enum sim_transport { TRANSPORT_TCP, TRANSPORT_RTU };

struct sim_gateway {
	int index; /* 0-based; RTU lines after the TCP ports */
	enum sim_transport transport;
	int port;           /* TCP */
	const char *device; /* RTU */
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	struct sim_fault fault;
	struct sim_hostile hostile;
	int n_meters;
	struct sim_meter *meters; /* meters[u - 1] answers at unit id u */
};

struct sim_config {
	int tcp_gateways;
	int base_port;
	int meters_per_gateway;
	const char *rtu_devices[64];
	int n_rtu;
	int baud;
	char parity;
	int data_bits;
	int stop_bits;
	const struct sim_profile *profile;
	int32_t load_w;
	int64_t speedup;
	int64_t initial_ck;
	const char *control;
	const char *history;
	const char *pidfile;
};

struct sim {
	struct sim_config config;
	int n_gateways;
	struct sim_gateway *gateways;
	volatile int stopping; /* set once by the main thread */
};

/* sim_meter.c: the energy model */
extern int64_t sim_speedup;
int64_t sim_now_ms(void);
void meter_init(struct sim_meter *m, int64_t initial_ck, int32_t load_w);
void meter_advance(struct sim_meter *m, int64_t now_ms);
void meter_set_relay(struct sim_meter *m, bool tripped);
void meter_set_load(struct sim_meter *m, int32_t load_w);
uint32_t meter_current_centiamps(const struct sim_meter *m);
int32_t meter_power_w(const struct sim_meter *m);
enum sim_tou tou_of_hour(int hour);

/* sim_profile.c: the register maps */
enum {
	EXC_ILLEGAL_FUNCTION = 0x01,
	EXC_ILLEGAL_ADDRESS = 0x02,
	EXC_ILLEGAL_VALUE = 0x03,
	EXC_SERVER_FAILURE = 0x04,
	EXC_GATEWAY_TARGET = 0x0B
};

struct sim_profile {
	const char *name;
	bool (*read)(struct sim_meter *m, int addr, uint16_t *value);
	int (*write)(struct sim_meter *m, int addr, int qty, const uint16_t *values);
	int energy_addr; /* a read covering it counts as an energy read */
};

const struct sim_profile *profile_find(const char *name);
int profile_read(const struct sim_profile *p, struct sim_meter *m, int addr, int qty, uint16_t *out);

/* sim_gateway.c: one port or line, its thread */
int gateway_start(struct sim *sim, struct sim_gateway *gw);
void gateway_join(struct sim_gateway *gw);
const char *fault_name(enum sim_fault_mode mode);
uint16_t sim_crc16(const uint8_t *buf, int len);
bool fault_parse(const char *text, struct sim_fault *fault);

/* sim_hostile.c: the hostile fault's frames */
struct hostile_reply {
	modbus_t *ctx;         /* the serving context (exceptions, wrong unit) */
	modbus_mapping_t *map; /* scratch mapping for libmodbus replies */
	int fd;
	bool tcp;
	const uint8_t *req; /* the request as libmodbus received it */
	int req_len;
	int unit, fc, addr, qty;
	int exception;        /* the right reply is this exception (0: none) */
	const uint16_t *regs; /* the right registers of an FC03 */
	volatile int *stopping;
};

void hostile_reset(struct sim_hostile *h, uint64_t seed, uint64_t budget);
int hostile_pick(struct sim_hostile *h, uint64_t *frame_seed);
const char *hostile_kind_name(int kind);
bool hostile_send(int kind, uint64_t frame_seed, const struct hostile_reply *r);

/* sim_history.c: the read log */
int history_open(const char *path);
void history_write(int gateway, int unit, int64_t energy_ck, bool tripped);
void history_close(void);

/* sim_control.c: the HTTP control server, run by the main thread */
struct event_base;
int control_start(struct sim *sim, struct event_base *base, const char *listen);
void control_stop(void);

#endif /* SIM_H */
