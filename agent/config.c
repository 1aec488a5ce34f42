/*-------------------------------------------------------------------------
 * agent/config.c
 *     Local configuration: "key = value" lines in a file (default
 *     /etc/prepay/agent.conf), overridden by PREPAY_* environment
 *     variables, overridden by command-line flags.  One sorted table of
 *     keys serves the file, the environment and --check-config.
 *
 * Locking: runs before any thread exists.
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

#ifndef AGENT_VERSION
#define AGENT_VERSION "0.1"
#endif

struct config_key {
	const char *name; /* file key; flag is --name with _ -> - */
	const char *env;
	size_t offset;
	size_t size;
	const char *def;
};

/* sorted by name */
static const struct config_key keys[] = {
	{ "agent_id", "PREPAY_AGENT_ID", offsetof(struct config, agent_id), sizeof(((struct config *)0)->agent_id),
	  "" },
	{ "conninfo", "PREPAY_CONNINFO", offsetof(struct config, conninfo), sizeof(((struct config *)0)->conninfo),
	  "" },
	{ "log_level", "PREPAY_LOG_LEVEL", offsetof(struct config, log_level), sizeof(((struct config *)0)->log_level),
	  "info" },
	{ "metrics", "PREPAY_METRICS", offsetof(struct config, metrics), sizeof(((struct config *)0)->metrics),
	  "127.0.0.1:9187" },
	{ "notifications", "PREPAY_NOTIFICATIONS", offsetof(struct config, notifications),
	  sizeof(((struct config *)0)->notifications), "off" },
	{ "spool_dir", "PREPAY_SPOOL_DIR", offsetof(struct config, spool_dir), sizeof(((struct config *)0)->spool_dir),
	  "/var/lib/prepay/spool" },
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static const struct config_key *find_key(const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

/* flag_key: the key a flag sets (--agent-id sets agent_id) */
static const struct config_key *flag_key(const char *flag)
{
	char name[64];

	snprintf(name, sizeof(name), "%s", flag);
	for (char *p = name; *p; p++)
		if (*p == '-')
			*p = '_';
	return find_key(name);
}

/* set_key: copy value into the field; -1 if it does not fit */
static int set_key(struct config *cfg, const struct config_key *k, const char *value)
{
	if (strlen(value) >= k->size) {
		log_error("config: value of %s is too long", k->name);
		return -1;
	}
	strcpy((char *)cfg + k->offset, value);
	return 0;
}

static char *trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

/* read_file: apply "key = value" lines; a missing default file is fine */
static int read_file(struct config *cfg, const char *path, int must_exist)
{
	FILE *f = fopen(path, "r");
	char line[2048];
	int lineno = 0, rc = 0;

	if (!f) {
		if (!must_exist && errno == ENOENT)
			return 0;
		log_error("config: cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *s = trim(line), *eq;
		const struct config_key *k;

		lineno++;
		if (*s == '\0' || *s == '#')
			continue;
		eq = strchr(s, '=');
		if (!eq) {
			log_error("config: %s:%d: expected key = value", path, lineno);
			rc = -1;
			continue;
		}
		*eq = '\0';
		k = find_key(trim(s));
		if (!k) {
			log_error("config: %s:%d: unknown key \"%s\"", path, lineno, trim(s));
			rc = -1;
			continue;
		}
		if (set_key(cfg, k, trim(eq + 1)) < 0)
			rc = -1;
	}
	fclose(f);
	return rc;
}

static void usage(const char *prog)
{
	printf("Usage: %s [OPTIONS]\n"
	       "prepay acquisition agent: polls Modbus meters, delivers readings to PostgreSQL,\n"
	       "carries out relay commands.  Gateways, meters and profiles come from the database.\n\n"
	       "  --config FILE        configuration file (default %s)\n"
	       "  --conninfo STR       libpq connection string (PREPAY_CONNINFO)\n"
	       "  --agent-id ID        this agent's id, gateway.agent_id (PREPAY_AGENT_ID)\n"
	       "  --spool-dir DIR      durable spool while the database is down (PREPAY_SPOOL_DIR)\n"
	       "  --metrics ADDR:PORT  HTTP /metrics and /healthz, \"off\" to disable (PREPAY_METRICS)\n"
	       "  --log-level LEVEL    error, warning, info or debug (PREPAY_LOG_LEVEL)\n"
	       "  --notifications deliver|off  deliver the notification outbox (PREPAY_NOTIFICATIONS)\n"
	       "  --check-config       validate and print the effective configuration, then exit\n"
	       "  --once               poll every gateway once, deliver, exit\n"
	       "  --help, --version\n",
	       prog, CONFIG_DEFAULT_FILE);
}

/* config_load: see config.h */
int config_load(struct config *cfg, int argc, char **argv)
{
	/* 'K': a flag of a key, found by its name (see flag_key) */
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "conninfo", required_argument, NULL, 'K' },
		{ "agent-id", required_argument, NULL, 'K' },
		{ "spool-dir", required_argument, NULL, 'K' },
		{ "metrics", required_argument, NULL, 'K' },
		{ "log-level", required_argument, NULL, 'K' },
		{ "notifications", required_argument, NULL, 'K' },
		{ "check-config", no_argument, NULL, 'k' },
		{ "once", no_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *flag_value[NKEYS] = { 0 };
	const char *file = NULL;
	int c, longindex, rc = 0;

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NKEYS; i++)
		set_key(cfg, &keys[i], keys[i].def);
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, &longindex)) != -1) {
		switch (c) {
		case 'c':
			file = optarg;
			break;
		case 'K':
			flag_value[flag_key(opts[longindex].name) - keys] = optarg;
			break;
		case 'k':
			cfg->check_only = 1;
			break;
		case 'o':
			cfg->once = 1;
			break;
		case 'h':
			usage(argv[0]);
			return 1;
		case 'V':
			printf("prepay-agent %s\n", AGENT_VERSION);
			return 1;
		default:
			usage(argv[0]);
			return -1;
		}
	}
	if (optind < argc) {
		log_error("config: unexpected argument \"%s\"", argv[optind]);
		return -1;
	}
	if (!file)
		file = getenv("PREPAY_CONFIG");
	snprintf(cfg->file, sizeof(cfg->file), "%s", file ? file : CONFIG_DEFAULT_FILE);
	if (read_file(cfg, cfg->file, file != NULL) < 0)
		rc = -1;
	for (size_t i = 0; i < NKEYS; i++) {
		const char *env = getenv(keys[i].env);

		if (env && set_key(cfg, &keys[i], env) < 0)
			rc = -1;
		if (flag_value[i] && set_key(cfg, &keys[i], flag_value[i]) < 0)
			rc = -1;
	}
	return rc;
}

/* config_validate: 0 when the configuration can run; logs every problem */
int config_validate(const struct config *cfg)
{
	int rc = 0;

	if (cfg->conninfo[0] == '\0') {
		log_error("config: conninfo is required");
		rc = -1;
	}
	if (cfg->agent_id[0] == '\0') {
		log_error("config: agent_id is required");
		rc = -1;
	}
	if (cfg->spool_dir[0] != '/') {
		log_error("config: spool_dir must be an absolute path");
		rc = -1;
	}
	if (log_parse_level(cfg->log_level) < 0) {
		log_error("config: log_level must be error, warning, info or debug");
		rc = -1;
	}
	if (strcmp(cfg->notifications, "deliver") != 0 && strcmp(cfg->notifications, "off") != 0) {
		log_error("config: notifications must be deliver or off");
		rc = -1;
	}
	if (cfg->metrics[0] && strcmp(cfg->metrics, "off") != 0) {
		const char *colon = strrchr(cfg->metrics, ':');

		if (!colon || colon == cfg->metrics || atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535) {
			log_error("config: metrics must be ADDR:PORT or off");
			rc = -1;
		}
	}
	return rc;
}

/* config_print: the effective configuration, as a config file */
void config_print(const struct config *cfg)
{
	printf("# effective configuration (file %s)\n", cfg->file);
	for (size_t i = 0; i < NKEYS; i++)
		printf("%s = %s\n", keys[i].name, (const char *)cfg + keys[i].offset);
}
