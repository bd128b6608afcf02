/*
 * fuzz_smtp_data.c: libFuzzer harness for smtp_data.c.
 *
 * Input layout: byte 0 = number of chunk sizes k (low 3 bits) and the
 * normalise flag (bit 3); byte 1 = line_max; then k bytes of chunk sizes
 * (each value + 1, used in turn); the rest is the DATA stream.
 *
 * Checks: feeding in those chunks gives the same status, consumed count,
 * flags and output as one feed; the output never holds a lone CR or LF;
 * consumed stops right after a CRLF "." CRLF when DONE; and dot-stuffing
 * the output plus the terminator reads back to the same output with no
 * bare CR/LF flag (the relay path cannot be smuggled through).
 *
 * Run: make build-fuzz/fuzz_smtp_data &&
 *   build-fuzz/fuzz_smtp_data -dict=fuzz/smtp.dict fuzz/corpus/fuzz_smtp_data
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_data.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define CHECK(x) do {							\
	if (!(x)) {							\
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,	\
		    __LINE__, #x);					\
		abort();						\
	}								\
} while (0)

struct result {
	enum smtp_data_status	 st;
	uint8_t			*out;
	size_t			 outlen;
	size_t			 consumed;
	uint32_t		 flags;
};

/* Feed with chunk sizes cycling through sizes[0..k) (k == 0: one feed). */
static void
feed(const uint8_t *in, size_t inlen, const uint8_t *sizes, size_t k,
    size_t line_max, bool normalise, struct result *r)
{
	struct smtp_data	 d;
	size_t			 off = 0, n, used, olen, j = 0;
	uint8_t			*chunk;

	r->out = malloc(SMTP_DATA_OUT_MAX(inlen));
	CHECK(r->out != NULL);
	r->outlen = 0;
	smtp_data_init(&d, line_max, normalise);
	do {
		n = inlen - off;
		if (k > 0 && n > (size_t)sizes[j % k] + 1)
			n = (size_t)sizes[j % k] + 1;
		j++;
		/* Exact-size copy so ASan sees any over-read of a chunk. */
		chunk = malloc(n + 1);
		CHECK(chunk != NULL);
		if (n > 0)
			memcpy(chunk, in + off, n);
		r->st = smtp_data_feed(&d, chunk, n, &used, r->out + r->outlen,
		    &olen);
		free(chunk);
		CHECK(used <= n);
		CHECK(olen <= SMTP_DATA_OUT_MAX(n));
		CHECK(r->st == SMTP_DATA_DONE || used == n);
		off += used;
		r->outlen += olen;
	} while (r->st == SMTP_DATA_MORE && off < inlen);
	CHECK(r->outlen <= SMTP_DATA_OUT_MAX(inlen));
	CHECK(d.in_bytes == off);
	CHECK(d.out_bytes == r->outlen);
	r->consumed = off;
	r->flags = d.flags;
}

static bool
canonical(const uint8_t *p, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++) {
		if (p[i] == '\r' && (i + 1 >= n || p[i + 1] != '\n'))
			return false;
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))
			return false;
	}
	return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct result		 one, chunked, back;
	struct smtp_stuff	 s;
	const uint8_t		*sizes, *in;
	uint8_t			*stuffed;
	size_t			 k, inlen, line_max, sn, extra;
	bool			 normalise;

	if (size < 2)
		return 0;
	k = data[0] & 7;
	normalise = (data[0] & 8) != 0;
	line_max = data[1];
	if (size < 2 + k)
		return 0;
	sizes = data + 2;
	in = data + 2 + k;
	inlen = size - 2 - k;

	feed(in, inlen, NULL, 0, line_max, normalise, &one);
	feed(in, inlen, sizes, k, line_max, !normalise, &chunked);
	CHECK(one.st == chunked.st);
	CHECK(one.consumed == chunked.consumed);
	CHECK(one.flags == chunked.flags);
	CHECK(one.outlen == chunked.outlen);
	CHECK(memcmp(one.out, chunked.out, one.outlen) == 0);
	CHECK(canonical(one.out, one.outlen));
	if (one.st == SMTP_DATA_DONE) {
		/* Consumed ends exactly at a CRLF "." CRLF (or ".\r\n"). */
		CHECK(one.consumed >= 3);
		CHECK(memcmp(in + one.consumed - 3, ".\r\n", 3) == 0);
		CHECK(one.consumed == 3 ||
		    (one.consumed >= 5 && in[one.consumed - 5] == '\r' &&
		    in[one.consumed - 4] == '\n'));
		/* A complete message ends with CRLF or is empty. */
		CHECK(one.outlen == 0 || (one.outlen >= 2 &&
		    one.out[one.outlen - 1] == '\n'));
	} else
		CHECK(one.consumed == inlen);

	/* Stuff the output for relaying and read it back. */
	stuffed = malloc(SMTP_STUFF_OUT_MAX(one.outlen) +
	    SMTP_STUFF_FINISH_MAX);
	CHECK(stuffed != NULL);
	smtp_stuff_init(&s);
	sn = smtp_stuff(&s, one.out, one.outlen, stuffed);
	CHECK(sn <= SMTP_STUFF_OUT_MAX(one.outlen));
	sn += smtp_stuff_finish(&s, stuffed + sn);
	feed(stuffed, sn, sizes, k, line_max, false, &back);
	extra = (one.outlen > 0 && one.out[one.outlen - 1] != '\n') ? 2 : 0;
	CHECK(back.st == SMTP_DATA_DONE);
	CHECK(back.consumed == sn);
	CHECK((back.flags & (SMTP_DATA_F_BARE_LF | SMTP_DATA_F_BARE_CR)) == 0);
	CHECK((back.flags & SMTP_DATA_F_NUL) == (one.flags & SMTP_DATA_F_NUL));
	CHECK(back.outlen == one.outlen + extra);
	CHECK(memcmp(back.out, one.out, one.outlen) == 0);
	if (extra)
		CHECK(memcmp(back.out + one.outlen, "\r\n", 2) == 0);

	free(stuffed);
	free(one.out);
	free(chunked.out);
	free(back.out);
	return 0;
}
