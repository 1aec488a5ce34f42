/*-------------------------------------------------------------------------
 * agent/alloc.c
 *     malloc, calloc, realloc and strdup that exit cleanly on
 *     out-of-memory (see alloc.h for why).  Safe from any thread: they
 *     keep no state, and log_error writes its line with one call.
 *-------------------------------------------------------------------------
 */
#include "alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static void out_of_memory(const char *what, size_t bytes) __attribute__((noreturn));

static void out_of_memory(const char *what, size_t bytes)
{
	log_error("out of memory: %s of %zu bytes failed; exiting with status %d (the spool keeps every reading)", what,
	          bytes, ALLOC_EXIT_STATUS);
	exit(ALLOC_EXIT_STATUS);
}

void *xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (!p)
		out_of_memory("malloc", size);
	return p;
}

void *xcalloc(size_t count, size_t size)
{
	void *p = calloc(count ? count : 1, size ? size : 1);

	if (!p)
		out_of_memory("calloc", count * size);
	return p;
}

/* realloc of count elements of size bytes; refuses a product that overflows */
void *xrealloc_array(void *ptr, size_t count, size_t size)
{
	size_t bytes;
	void *p;

	if (size && count > SIZE_MAX / size)
		out_of_memory("realloc (size overflows)", SIZE_MAX);
	bytes = count * size;
	p = realloc(ptr, bytes ? bytes : 1);
	if (!p)
		out_of_memory("realloc", bytes);
	return p;
}

char *xstrdup(const char *s)
{
	size_t len = strlen(s) + 1;

	return memcpy(xmalloc(len), s, len);
}
