/*
 * fuzz_spool.c: libFuzzer harness for spool_parse(), the queue file
 * reader.  Any byte string must be rejected or parsed without a crash or
 * an over-read.
 *
 * A random input almost never carries a valid crc32, so the parser would
 * stop at the checksum and the record rules would go unfuzzed.  Each
 * input is therefore parsed twice: as is, and with the last four bytes
 * replaced by the crc32 of everything before them, as the writer does.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "spool.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
parse(const uint8_t *p, size_t len)
{
	struct spool_envelope	 env;
	const char		*why;
	size_t			 off, i;

	if (spool_parse(p, len, &env, &off, &why) == 0) {
		/* Touch what the reader would: the body and every field. */
		if (off + env.body_len != len - 9 || env.nrcpts == 0 ||
		    env.nrcpts > SPOOL_RCPT_MAX || !qid_valid(env.qid))
			abort();
		for (i = 0; i < env.nrcpts; i++) {
			if (strlen(env.rcpts[i]) >= SPOOL_ADDR_MAX)
				abort();
		}
		(void)crc32(0, p + off, (uInt)env.body_len);
		spool_envelope_clear(&env);
	} else if (why == NULL || env.rcpts != NULL)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	uint8_t	*copy;
	uLong	 crc;

	parse(data, len);
	if (len < 4)
		return 0;
	/* An exact-size copy so that ASan catches any over-read. */
	if ((copy = malloc(len)) == NULL)
		return 0;
	memcpy(copy, data, len);
	crc = crc32(0, copy, (uInt)(len - 4));
	copy[len - 4] = crc >> 24;
	copy[len - 3] = crc >> 16;
	copy[len - 2] = crc >> 8;
	copy[len - 1] = crc;
	parse(copy, len);
	free(copy);
	return 0;
}
