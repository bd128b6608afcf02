/*
 * fuzz_config.c: the configuration parser on arbitrary files.
 *
 * config_load reads a path, so each input is written to a private temp
 * file first.  Invariants: no crash or leak, and a refused file always
 * comes with a one-line cause.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char	 path[64];
	struct config	*c = NULL;
	char		*cause = NULL;
	FILE		*f;

	if (path[0] == '\0')
		snprintf(path, sizeof path, "/tmp/moat-fuzzcfg.%d",
		    (int)getpid());
	if ((f = fopen(path, "w")) == NULL)
		abort();
	if (size > 0 && fwrite(data, 1, size, f) != size)
		abort();
	if (fclose(f) != 0)
		abort();
	if (config_load(path, &c, &cause) == 0) {
		if (cause != NULL)
			abort();
		(void)config_find_domain(c, "example.test");
		config_free(c);
	} else {
		if (cause == NULL || strchr(cause, '\n') != NULL)
			abort();
		free(cause);
	}
	return 0;
}
