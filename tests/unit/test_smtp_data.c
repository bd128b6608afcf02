/*
 * test_smtp_data.c: table-driven tests of smtp_data.c, the DATA reader
 * (end of message, dot-unstuffing, bare CR/LF, smuggling) and stuffer.
 *
 * Every row is checked fed in one piece and in every fixed chunk size
 * from 1 byte up, with normalise on and off: the result must not depend
 * on either.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "smtp_data.h"

#define LF	SMTP_DATA_F_BARE_LF
#define CR	SMTP_DATA_F_BARE_CR
#define LONG	SMTP_DATA_F_LONG_LINE
#define NUL	SMTP_DATA_F_NUL
#define MORE	SMTP_DATA_MORE
#define DONE	SMTP_DATA_DONE
#define ALL	((size_t)-1)

struct dcase {
	const char		*name;
	const char		*in;
	size_t			 inlen;
	enum smtp_data_status	 st;
	const char		*out;
	size_t			 outlen;
	size_t			 consumed;	/* ALL: inlen */
	uint32_t		 flags;
	size_t			 line_max;
};

/* Strings may hold NULs: lengths come from sizeof. */
#define D(n, i, s, o, c, f)						\
	{ n, i, sizeof(i) - 1, s, o, sizeof(o) - 1, c, f, 998 }
#define DL(n, i, s, o, c, f, m)						\
	{ n, i, sizeof(i) - 1, s, o, sizeof(o) - 1, c, f, m }

static const struct dcase dcases[] = {
	D("plain", "Hello\r\nWorld\r\n.\r\n", DONE, "Hello\r\nWorld\r\n",
	    ALL, 0),
	D("empty message", ".\r\n", DONE, "", ALL, 0),
	D("empty line message", "\r\n.\r\n", DONE, "\r\n", ALL, 0),
	D("dot-stuffed line", "..foo\r\n.\r\n", DONE, ".foo\r\n", ALL, 0),
	D("stuffed lone dot", "a\r\n..\r\n.\r\n", DONE, "a\r\n.\r\n", ALL, 0),
	D("three dots", "...\r\n.\r\n", DONE, "..\r\n", ALL, 0),
	D("unstuffed dot dropped", ".a\r\n.\r\n", DONE, "a\r\n", ALL, 0),
	D("dot mid-line", "a.b\r\n a.\r\n.\r\n", DONE, "a.b\r\n a.\r\n",
	    ALL, 0),
	D("dot space is content", "a\r\n. \r\n.\r\n", DONE, "a\r\n \r\n",
	    ALL, 0),
	D("pipelined command left over", "x\r\n.\r\nQUIT\r\n", DONE,
	    "x\r\n", 6, 0),
	D("pipelined dot left over", ".\r\n.\r\n", DONE, "", 3, 0),
	D("no terminator yet", "x\r\n", MORE, "x\r\n", ALL, 0),
	D("pending CR", "x\r", MORE, "x", ALL, 0),
	D("pending dot", "x\r\n.", MORE, "x\r\n", ALL, 0),
	D("pending dot CR", "x\r\n.\r", MORE, "x\r\n", ALL, 0),
	D("missing final CRLF", "x.\r\n", MORE, "x.\r\n", ALL, 0),

	/* Smuggling: none of these ends the message. */
	D("LF.LF", "a\n.\nb\r\n", MORE, "a\r\n.\r\nb\r\n", ALL, LF),
	D("LF.CRLF", "a\n.\r\nb\r\n", MORE, "a\r\n.\r\nb\r\n", ALL, LF),
	D("CRLF.LF", "a\r\n.\nb\r\n", MORE, "a\r\n\r\nb\r\n", ALL, LF),
	D("CR.CR", "a\r.\rb\r\n", MORE, "a\r\n.\r\nb\r\n", ALL, CR),
	D("CRLF.CR", "a\r\n.\rb\r\n", MORE, "a\r\n\r\nb\r\n", ALL, CR),
	D("CRLF.CR CRLF", "a\r\n.\r\r\n", MORE, "a\r\n\r\n\r\n", ALL, CR),
	D("CR.CRLF", "a\r.\r\nb\r\n", MORE, "a\r\n.\r\nb\r\n", ALL, CR),
	D("CR.LF", "a\r.\nb", MORE, "a\r\n.\r\nb", ALL, CR | LF),
	D("LF.CR", "a\n.\rb", MORE, "a\r\n.\r\nb", ALL, CR | LF),
	D("LF.LF at start", "\n.\n", MORE, "\r\n.\r\n", ALL, LF),
	D("dot LF at start", ".\n", MORE, "\r\n", ALL, LF),
	D("dot CR at start", ".\rx", MORE, "\r\nx", ALL, CR),
	D("LF..LF kept", "a\n..\n", MORE, "a\r\n..\r\n", ALL, LF),
	D("smuggled message stays content",
	    "a\n.\nMAIL FROM:<x@y>\r\nRCPT TO:<v@w>\r\nDATA\r\nevil\r\n"
	    ".\r\nQUIT\r\n", DONE,
	    "a\r\n.\r\nMAIL FROM:<x@y>\r\nRCPT TO:<v@w>\r\nDATA\r\nevil\r\n",
	    sizeof("a\n.\nMAIL FROM:<x@y>\r\nRCPT TO:<v@w>\r\nDATA\r\nevil\r\n"
	    ".\r\n") - 1, LF),
	D("smuggled CR.CR then real end", "a\r.\rMAIL\r\n.\r\n", DONE,
	    "a\r\n.\r\nMAIL\r\n", ALL, CR),
	/* A real CRLF.CRLF after bare line ends does end it. */
	D("bare CR then CRLF.CRLF", "a\r\r\n.\r\n", DONE, "a\r\n\r\n", ALL,
	    CR),
	D("bare LF then CRLF.CRLF", "a\n\r\n.\r\n", DONE, "a\r\n\r\n", ALL,
	    LF),
	D("CR CR LF", "a\r\r\nb\r\n", MORE, "a\r\n\r\nb\r\n", ALL, CR),
	D("LF CR", "\n\r", MORE, "\r\n", ALL, LF),

	/* NUL and long lines. */
	D("NUL passes", "a\0b\r\n.\r\n", DONE, "a\0b\r\n", ALL, NUL),
	D("NUL after dot", ".\0\r\n.\r\n", DONE, "\0\r\n", ALL, NUL),
	DL("line at max", "0123456789\r\n.\r\n", DONE, "0123456789\r\n",
	    ALL, 0, 10),
	DL("line over max", "0123456789A\r\n.\r\n", DONE,
	    "0123456789A\r\n", ALL, LONG, 10),
	DL("stuffed line at max", "..23456789\r\n.\r\n", DONE,
	    ".23456789\r\n", ALL, 0, 10),
	DL("stuffed line over max", "..234567890\r\n.\r\n", DONE,
	    ".234567890\r\n", ALL, LONG, 10),
	DL("bare LF resets line", "01234\n56789\r\n.\r\n", DONE,
	    "01234\r\n56789\r\n", ALL, LF, 5),
	DL("line_max 0 disables", "0123456789\r\n.\r\n", DONE,
	    "0123456789\r\n", ALL, 0, 0),
};

struct feed_result {
	enum smtp_data_status	 st;
	uint8_t			*out;
	size_t			 outlen;
	size_t			 consumed;
	uint32_t		 flags;
};

/* Feed in chunks of `chunk` bytes (0: one piece); stop at DONE. */
static void
feed(const uint8_t *in, size_t inlen, size_t chunk, size_t line_max,
    bool normalise, struct feed_result *r)
{
	struct smtp_data	 d;
	size_t			 off = 0, n, used, olen;

	r->out = malloc(SMTP_DATA_OUT_MAX(inlen));
	assert_non_null(r->out);
	r->outlen = 0;
	r->st = SMTP_DATA_MORE;
	smtp_data_init(&d, line_max, normalise);
	do {
		n = chunk == 0 || inlen - off < chunk ? inlen - off : chunk;
		r->st = smtp_data_feed(&d, in + off, n, &used, r->out +
		    r->outlen, &olen);
		assert_true(used <= n);
		assert_true(olen <= SMTP_DATA_OUT_MAX(n));
		if (r->st == SMTP_DATA_MORE)
			assert_int_equal(used, n);
		off += used;
		r->outlen += olen;
	} while (r->st == SMTP_DATA_MORE && off < inlen);
	r->consumed = off;
	r->flags = d.flags;
	assert_int_equal(d.in_bytes, off);
	assert_int_equal(d.out_bytes, r->outlen);
	/* After DONE nothing more is taken. */
	if (r->st == SMTP_DATA_DONE) {
		assert_int_equal(smtp_data_feed(&d, in, inlen, &used, r->out,
		    &olen), SMTP_DATA_DONE);
		assert_int_equal(used, 0);
		assert_int_equal(olen, 0);
	}
}

/* Output must be canonical: every CR followed by LF, every LF after CR. */
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

static void
show(char *buf, size_t cap, const uint8_t *p, size_t n)
{
	size_t	i, o = 0;
	int	r;

	for (i = 0; i < n && o + 5 < cap; i++) {
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
			buf[o++] = (char)p[i];
		else {
			r = snprintf(buf + o, cap - o, "\\x%02x", p[i]);
			if (r < 0 || (size_t)r >= cap - o)
				break;
			o += (size_t)r;
		}
	}
	buf[o] = '\0';
}

static void
test_data_table(void **state)
{
	const struct dcase	*c;
	struct feed_result	 r;
	char			 got[512], want[512];
	size_t			 i, chunk, consumed;
	int			 norm;

	(void)state;
	for (i = 0; i < sizeof(dcases) / sizeof(dcases[0]); i++) {
		c = &dcases[i];
		consumed = c->consumed == ALL ? c->inlen : c->consumed;
		for (norm = 0; norm < 2; norm++)
		for (chunk = 0; chunk <= c->inlen; chunk++) {
			feed((const uint8_t *)c->in, c->inlen, chunk,
			    c->line_max, norm, &r);
			if (r.st != c->st || r.outlen != c->outlen ||
			    memcmp(r.out, c->out, r.outlen) != 0) {
				show(got, sizeof(got), r.out, r.outlen);
				show(want, sizeof(want),
				    (const uint8_t *)c->out, c->outlen);
				fail_msg("%s (chunk %zu): got=%s \"%s\" "
				    "want=%s \"%s\"", c->name, chunk,
				    r.st == DONE ? "DONE" : "MORE", got,
				    c->st == DONE ? "DONE" : "MORE", want);
			}
			if (r.consumed != consumed)
				fail_msg("%s (chunk %zu): consumed got=%zu "
				    "want=%zu", c->name, chunk, r.consumed,
				    consumed);
			if (r.flags != c->flags)
				fail_msg("%s (chunk %zu): flags got=%#x "
				    "want=%#x", c->name, chunk, r.flags,
				    c->flags);
			if (!canonical(r.out, r.outlen))
				fail_msg("%s (chunk %zu): output not "
				    "canonical", c->name, chunk);
			free(r.out);
		}
	}
}

struct scase {
	const char	*in;
	const char	*stuffed;	/* with terminator */
};

/* Stuff, then feed back: the original comes out, nothing is left. */
static void
test_stuff_roundtrip(void **state)
{
	static const struct scase sc[] = {
		{ "", ".\r\n" },
		{ "a\r\n", "a\r\n.\r\n" },
		{ ".\r\n", "..\r\n.\r\n" },
		{ "..\r\n", "...\r\n.\r\n" },
		{ ".a\r\nb\r\n.\r\n", "..a\r\nb\r\n..\r\n.\r\n" },
		{ "x\r\n.\r\n.\r\n", "x\r\n..\r\n..\r\n.\r\n" },
		{ "a.b\r\n", "a.b\r\n.\r\n" },
		{ "no final CRLF", "no final CRLF\r\n.\r\n" },
		{ ".", "..\r\n.\r\n" },
	};
	struct smtp_stuff	 s;
	struct feed_result	 r;
	uint8_t			 buf[256];
	char			 got[512];
	size_t			 i, n, inlen, wantlen;
	bool			 addcrlf;

	(void)state;
	for (i = 0; i < sizeof(sc) / sizeof(sc[0]); i++) {
		inlen = strlen(sc[i].in);
		smtp_stuff_init(&s);
		n = smtp_stuff(&s, (const uint8_t *)sc[i].in, inlen, buf);
		n += smtp_stuff_finish(&s, buf + n);
		if (n != strlen(sc[i].stuffed) ||
		    memcmp(buf, sc[i].stuffed, n) != 0) {
			show(got, sizeof(got), buf, n);
			fail_msg("stuff(%s): got=\"%s\" want=\"%s\"",
			    sc[i].in, got, sc[i].stuffed);
		}
		feed(buf, n, 1, 998, false, &r);
		/* finish() adds CRLF when the text did not end with one */
		addcrlf = inlen > 0 && sc[i].in[inlen - 1] != '\n';
		wantlen = inlen + (addcrlf ? 2 : 0);
		if (r.st != DONE || r.consumed != n || r.flags != 0 ||
		    r.outlen != wantlen || memcmp(r.out, sc[i].in, inlen) != 0)
			fail_msg("roundtrip(%s): got=%d/%zu/%#x/%zu "
			    "want=DONE/%zu/0/%zu", sc[i].in, r.st, r.consumed,
			    r.flags, r.outlen, n, wantlen);
		free(r.out);
	}
}

/*
 * Property test over a small alphabet rich in CR, LF and ".": random
 * chunking equals one-shot, output is canonical, and stuffing the output
 * gives it back.  Deterministic seed so a failure reproduces.
 */
static void
test_data_random(void **state)
{
	static const uint8_t	 alpha[] = { '\r', '\n', '.', 'a', '\0' };
	struct feed_result	 one, chunked, back;
	struct smtp_stuff	 s;
	uint8_t			 in[64], stuffed[2 * 64 + 8];
	size_t			 iter, n, k, sn;
	unsigned int		 seed = 12345;

	(void)state;
	for (iter = 0; iter < 20000; iter++) {
		seed = seed * 1103515245u + 12345u;
		n = (seed >> 16) % sizeof(in);
		for (k = 0; k < n; k++) {
			seed = seed * 1103515245u + 12345u;
			in[k] = alpha[(seed >> 16) % sizeof(alpha)];
		}
		seed = seed * 1103515245u + 12345u;
		feed(in, n, 0, 4, true, &one);
		feed(in, n, 1 + (seed >> 16) % 7, 4, false, &chunked);
		if (one.st != chunked.st || one.outlen != chunked.outlen ||
		    memcmp(one.out, chunked.out, one.outlen) != 0 ||
		    one.consumed != chunked.consumed ||
		    one.flags != chunked.flags)
			fail_msg("iter %zu: chunked got=%d/%zu want=%d/%zu",
			    iter, chunked.st, chunked.outlen, one.st,
			    one.outlen);
		if (!canonical(one.out, one.outlen))
			fail_msg("iter %zu: output not canonical", iter);
		smtp_stuff_init(&s);
		sn = smtp_stuff(&s, one.out, one.outlen, stuffed);
		sn += smtp_stuff_finish(&s, stuffed + sn);
		assert_true(sn <= sizeof(stuffed));
		feed(stuffed, sn, 0, 4, false, &back);
		if (back.st != DONE || back.consumed != sn ||
		    (back.flags & (LF | CR)) != 0 ||
		    back.outlen < one.outlen ||
		    memcmp(back.out, one.out, one.outlen) != 0)
			fail_msg("iter %zu: restuff got=%d/%zu/%#x "
			    "want=DONE/%zu/0", iter, back.st, back.outlen,
			    back.flags, one.outlen);
		free(one.out);
		free(chunked.out);
		free(back.out);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_data_table),
		cmocka_unit_test(test_stuff_roundtrip),
		cmocka_unit_test(test_data_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
