# Makefile for prepay: the PostgreSQL extension (PGXS) and, later, the agent.
#
#   make test      install missing Debian packages, build, install, and run
#                  every test against a throwaway cluster (the README command)
#   make bench     the rating benchmark (prints "bench rating: ..." last)
#   make installcheck  the pg_regress and isolation suites against a server
#                      you already run (PGHOST/PGPORT)

EXTENSION  = prepay
EXTVERSION = 0.1

MODULE_big = prepay
OBJS = \
	extension/prepay.o \
	extension/fixed.o \
	extension/spi_util.o \
	extension/rating.o \
	extension/reading.o \
	extension/balance.o

DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(wildcard sql/$(EXTENSION)--*--*.sql)
EXTRA_CLEAN = $(DATA_built) results output_iso regression.diffs regression.out

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

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql
	cp $< $@

.PHONY: test bench deps demo

deps:
	test/install-deps.sh

test: deps
	$(MAKE) all
	test/run.sh

bench: deps
	$(MAKE) all
	test/run.sh test/bench/rating.sh

demo:
	@echo "make demo arrives with prepay-agent and its meter simulator (issue 4); not built yet" >&2
	@exit 2
