/*
 * test/unit/check.h: the checks of the C unit tests.  CHECK(cond) counts
 * and reports (file, line, condition) a condition that does not hold;
 * check_report(name) prints the verdict and is main's exit status.
 */
#ifndef TEST_UNIT_CHECK_H
#define TEST_UNIT_CHECK_H

#include <stdio.h>

static int	failures = 0;

#define CHECK(cond) \
	do { if (!(cond)) { failures++; fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)

static int
check_report(const char *name)
{
	printf("%s: %s\n", name, failures == 0 ? "all checks passed" : "FAILED");
	return failures == 0 ? 0 : 1;
}

#endif
