/*-------------------------------------------------------------------------
 * agent/config.h
 *     The agent's local configuration: only how to reach the database,
 *     which agent this is, where to spool, where to serve metrics and how
 *     much to log.  Everything else comes from the database.
 *
 * Locking: filled once by main() before any thread starts; read-only after.
 *-------------------------------------------------------------------------
 */
#ifndef AGENT_CONFIG_H
#define AGENT_CONFIG_H

#define CONFIG_DEFAULT_FILE "/etc/prepay/agent.conf"

struct config {
	char conninfo[1024];
	char agent_id[128];
	char spool_dir[512];
	char metrics[128]; /* ADDR:PORT, empty = no HTTP endpoint */
	char log_level[16];
	char notifications[16]; /* deliver: run the delivery role; off */
	char file[512];         /* the config file read */
	int once;               /* --once: one sweep, deliver, exit */
	int check_only;         /* --check-config */
};

/* config_load: defaults, file, environment, flags (later wins).
 * Returns 0, 1 to exit successfully (--help, --version), -1 on error. */
int config_load(struct config *cfg, int argc, char **argv);
int config_validate(const struct config *cfg);
void config_print(const struct config *cfg);

#endif
