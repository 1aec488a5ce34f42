# Makefile for prepay: the PostgreSQL extension (PGXS), the acquisition
# agent (agent/prepay-agent) and the meter simulator (test/sim/prepay-sim).
#
#   make test      install missing Debian packages, build, and run every
#                  test against a throwaway cluster (the README command)
#   make bench     the benchmarks (each prints a "bench ...:" line)
#   make installcheck  the pg_regress and isolation suites against a server
#                      you already run (PGHOST/PGPORT)

EXTENSION  = prepay
EXTVERSION = 0.2

MODULE_big = prepay
OBJS = \
	extension/prepay.o \
	extension/fixed.o \
	extension/spi_util.o \
	extension/rating.o \
	extension/reading.o \
	extension/meter_state.o \
	extension/site_key.o \
	extension/intake.o \
	extension/balance.o \
	extension/direct.o \
	extension/tariff.o \
	extension/tariff_def.o \
	extension/tariff_book.o \
	extension/rate.o \
	extension/rollup.o \
	extension/security.o

# The install script is the concatenation of the domain scripts, in order.
# Each release ships an upgrade script sql/prepay--OLD--NEW.sql, built by
# sql/upgrade/expand.pl from the files of sql/upgrade/OLD--NEW/ in name
# order, one file per change, whose `--@ copy` lines stand for definitions
# taken from the sources (docs/ARCHITECTURE.md, "Releases and upgrades").
SQL_SOURCES = $(wildcard sql/prepay.sql sql/tariff.sql sql/agent.sql sql/billing.sql sql/bill.sql sql/batch.sql \
	sql/reports.sql sql/integrity.sql sql/notify.sql sql/partition.sql sql/schedule.sql sql/api.sql sql/distribute.sql sql/security.sql)
UPGRADE_DIRS = $(wildcard sql/upgrade/*--*)
UPGRADE_SCRIPTS = $(patsubst sql/upgrade/%,sql/$(EXTENSION)--%.sql,$(UPGRADE_DIRS))
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql $(UPGRADE_SCRIPTS)

# The earlier releases, those an upgrade path starts from.  Release OLD is
# the commit named in sql/releases.txt (and git tag vOLD, when the clone has
# the tag: the two must agree); `make releases` builds its install script
# from that commit (as that release's own Makefile built it) into
# sql/releases/, which git ignores.  The commit is recorded in the tree
# because a clone does not always bring tags along.  Only
# test/t/200_upgrade.pl needs these scripts (test/run.sh runs `make
# install-releases` into its private installation); `make install` leaves
# them out, since an installed database upgrades with the upgrade scripts.
RELEASES = $(sort $(foreach d,$(UPGRADE_DIRS),$(firstword $(subst --, ,$(notdir $(d))))))
RELEASE_SCRIPTS = $(patsubst %,sql/releases/$(EXTENSION)--%.sql,$(RELEASES))
release_commit = $(word 2,$(shell grep '^$(1) ' sql/releases.txt))

# The agent and the simulator are ordinary programs; the *-asan builds
# (AddressSanitizer and UBSan) are the ones the end-to-end tests run, and
# agent/prepay-agent-small-spool is the ASan agent with a small spool bound.
AGENT = agent/prepay-agent
SIM = test/sim/prepay-sim
AGENT_SOURCES = $(wildcard agent/*.c)
SIM_SOURCES = $(wildcard test/sim/*.c)
PROGRAMS = $(if $(AGENT_SOURCES),$(AGENT) $(AGENT)-asan $(AGENT)-small-spool) $(if $(SIM_SOURCES),$(SIM) $(SIM)-asan)
PROGRAM_CFLAGS = -std=gnu11 -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter \
	$(shell pkg-config --cflags libmodbus libevent libcurl openssl 2>/dev/null) -I$(shell $(PG_CONFIG) --includedir 2>/dev/null)
PROGRAM_LIBS = $(shell pkg-config --libs libmodbus libevent_pthreads libevent libcurl openssl 2>/dev/null) -lpq -lpthread
ASAN_FLAGS = -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

EXTRA_CLEAN = $(DATA_built) sql/releases $(PROGRAMS) results output_iso regression.diffs regression.out

TESTS = $(wildcard test/sql/*.sql)
REGRESS = $(sort $(patsubst test/sql/%.sql,%,$(TESTS)))
REGRESS_OPTS = --inputdir=test --load-extension=$(EXTENSION) --dbname=prepay_regress
ISOLATION = $(sort $(patsubst test/specs/%.spec,%,$(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --load-extension=$(EXTENSION)

PG_CPPFLAGS = -Iextension
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Werror

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

.DEFAULT_GOAL := all

# On a machine without the PostgreSQL server headers the PGXS makefile does
# not exist yet; `make test` installs it first and then re-enters make.
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
else
all:
	@echo "PostgreSQL server headers not found: run 'make test' (installs them) or test/install-deps.sh" >&2
	@exit 1
endif

# PGXS tracks no header dependencies unless PostgreSQL was configured with
# --enable-depend: rebuild every module when a header changes.
$(OBJS): $(wildcard extension/*.h)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_SOURCES)
	cat $^ >$@

.SECONDEXPANSION:
# An upgrade script's `--@ copy` lines take their definitions from the
# sources of the version it upgrades to: this tree's while that version is
# the one in the making, the commit sql/releases.txt names once it is
# released, so that a released upgrade script never changes.
$(UPGRADE_SCRIPTS): sql/$(EXTENSION)--%.sql: $$(sort $$(wildcard sql/upgrade/%/*.sql)) sql/upgrade/expand.pl $(SQL_SOURCES) sql/releases.txt
	@commit='$(call release_commit,$(lastword $(subst --, ,$*)))'; sources='$(SQL_SOURCES)'; \
	if [ -n "$$commit" ]; then \
		rm -rf $@.src && mkdir -p $@.src && git archive "$$commit" sql | tar -x -C $@.src && \
		sources=$$(for f in $(SQL_SOURCES); do [ ! -f $@.src/$$f ] || echo $@.src/$$f; done); \
	fi; \
	perl sql/upgrade/expand.pl $$sources -- $(sort $(wildcard sql/upgrade/$*/*.sql)) >$@.tmp && mv $@.tmp $@ && rm -rf $@.src

sql/releases/$(EXTENSION)--%.sql: sql/releases.txt
	@commit='$(call release_commit,$*)'; \
	[ -n "$$commit" ] || { echo "prepay: RELEASE $* NOT BUILT: sql/releases.txt names no commit for it." >&2; exit 1; }; \
	git cat-file -e "$$commit^{commit}" 2>/dev/null || { \
		echo "prepay: RELEASE $* NOT BUILT: its commit $$commit is not in this clone (a shallow clone?)." >&2; \
		echo "prepay: fetch the history (git fetch --unshallow) and run 'make releases'; test/t/200_upgrade.pl fails without it." >&2; \
		exit 1; }; \
	tag=$$(git rev-parse -q --verify 'refs/tags/v$*^{commit}' || true); \
	[ -z "$$tag" ] || [ "$$tag" = "$$(git rev-parse "$$commit^{commit}")" ] || { \
		echo "prepay: RELEASE $* NOT BUILT: git tag v$* is $$tag, sql/releases.txt says $$commit." >&2; exit 1; }; \
	rm -rf $@.tree && mkdir -p $@.tree && \
	git archive "$$commit" | tar -x -C $@.tree && \
	$(MAKE) -s -C $@.tree sql/$(EXTENSION)--$*.sql && \
	mv $@.tree/sql/$(EXTENSION)--$*.sql $@ && rm -rf $@.tree

releases: $(RELEASE_SCRIPTS)

install-releases: releases
	$(INSTALL_DATA) $(RELEASE_SCRIPTS) '$(DESTDIR)$(datadir)/extension/'

all: $(PROGRAMS)

$(AGENT): $(AGENT_SOURCES) $(wildcard agent/*.h)
	$(CC) $(PROGRAM_CFLAGS) -o $@ $(AGENT_SOURCES) $(PROGRAM_LIBS)
$(AGENT)-asan: $(AGENT_SOURCES) $(wildcard agent/*.h)
	$(CC) $(PROGRAM_CFLAGS) $(ASAN_FLAGS) -o $@ $(AGENT_SOURCES) $(PROGRAM_LIBS)
# A test build: the ASan agent with a 64 KiB spool bound, so that
# test/t/111_agent_spool_bound.pl reaches the bound in seconds (the bound is
# not a setting: see agent/spool.h)
$(AGENT)-small-spool: $(AGENT_SOURCES) $(wildcard agent/*.h)
	$(CC) $(PROGRAM_CFLAGS) $(ASAN_FLAGS) -DSPOOL_MAX_BYTES=65536 -o $@ $(AGENT_SOURCES) $(PROGRAM_LIBS)
$(SIM): $(SIM_SOURCES) $(wildcard test/sim/*.h)
	$(CC) $(PROGRAM_CFLAGS) -o $@ $(SIM_SOURCES) $(PROGRAM_LIBS)
$(SIM)-asan: $(SIM_SOURCES) $(wildcard test/sim/*.h)
	$(CC) $(PROGRAM_CFLAGS) $(ASAN_FLAGS) -o $@ $(SIM_SOURCES) $(PROGRAM_LIBS)

.PHONY: test bench deps demo releases install-releases

deps:
	test/install-deps.sh

test: deps
	$(MAKE) all
	test/run.sh

bench: deps
	$(MAKE) all
	for b in $(sort $(wildcard test/bench/*.sh)); do test/run.sh $$b || exit 1; done

demo: deps
	$(MAKE) all
	test/run.sh test/demo/demo.sh
