/*
 * smtp_data.c: PURE DATA-phase reader (RFC 5321 4.1.1.4, 4.5.2) and the
 * dot-stuffer for the outbound client.
 *
 * SMTP smuggling works by sending an end-of-data sequence that one hop
 * honours and the next does not ("\n.\n", "\r\n.\r", ...), so that the
 * text after it becomes a second, forged message downstream.  moat
 * defends by being exact on input and canonical on output:
 *
 *  1. The message ends ONLY at CRLF "." CRLF.  The start of DATA counts
 *     as following a CRLF, so an immediate ".\r\n" is an empty message.
 *     Nothing else ends it: "\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r",
 *     "\r\n.\r" + other byte are all content.
 *  2. Only CRLF ends a line.  A bare LF (LF not preceded by CR) or bare CR
 *     (CR not followed by LF) sets SMTP_DATA_F_BARE_LF / _BARE_CR and is
 *     written as CRLF, so the output is always canonical CRLF text with
 *     no lone CR or LF, whatever `normalise` says (the session refuses
 *     the message when a flag is set and normalise is off).
 *  3. Dot-unstuffing applies to a line that starts after a real CRLF (or
 *     at the start of DATA): its first "." is removed unless the line is
 *     exactly "." CRLF (the terminator, which is not written).  This
 *     includes "." followed by a bare CR or bare LF: the dot is removed
 *     and the bare line end becomes CRLF.
 *  4. A "." right after a bare LF or bare CR is NOT at a line start (rule
 *     2), so it neither ends the message nor is unstuffed: it is kept as
 *     content.  "a\n.\r\nb" is written "a\r\n.\r\nb".  In the output it
 *     does start a line, which is why smtp_stuff() doubles it again when
 *     relaying: the protected server sees content, never a terminator.
 *  5. NUL bytes set SMTP_DATA_F_NUL and pass through.  A line longer than
 *     line_max bytes (counted as received: the stuffing dot counts, the
 *     line end does not) sets SMTP_DATA_F_LONG_LINE and passes through;
 *     line_max 0 disables that check.
 *
 * The reader is a byte-at-a-time state machine whose output depends only
 * on (state, byte); pending bytes (a CR, a dot at line start) are held in
 * the state, never in a buffer.  Hence the output is identical however
 * the input is split across calls.  Invariant: out needs at most two
 * bytes per input byte plus 4 (a pending ".\r" resolved as a bare CR
 * writes CRLF plus the next byte).
 *
 * Callers: smtp_session.c (inbound DATA), smtp_client.c (smtp_stuff),
 * tests/unit/test_smtp_data.c, fuzz/fuzz_smtp_data.c.
 */
#include <string.h>

#include "smtp_data.h"

enum smtp_data_state {
	SMTP_DATA_S_BOL,	/* line start after a real CRLF / start */
	SMTP_DATA_S_DOT,	/* BOL "." held */
	SMTP_DATA_S_DOT_CR,	/* BOL "." CR held */
	SMTP_DATA_S_TEXT,	/* inside a line, or after a bare LF/CR */
	SMTP_DATA_S_CR,		/* CR held inside a line */
	SMTP_DATA_S_DONE	/* terminator seen */
};

void
smtp_data_init(struct smtp_data *d, size_t line_max, bool normalise)
{
	memset(d, 0, sizeof(*d));
	d->state = SMTP_DATA_S_BOL;
	d->line_max = line_max;
	d->normalise = normalise;
}

/* Count one content byte of the current line. */
static void
smtp_data_count(struct smtp_data *d)
{
	d->linelen++;
	if (d->line_max != 0 && d->linelen > d->line_max)
		d->flags |= SMTP_DATA_F_LONG_LINE;
}

/* Length of the run of bytes at p that are none of CR, LF and NUL. */
static size_t
smtp_data_plain(const uint8_t *p, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++) {
		if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
			break;
	}
	return i;
}

enum smtp_data_status
smtp_data_feed(struct smtp_data *d, const uint8_t *in, size_t inlen,
    size_t *consumed, uint8_t *out, size_t *outlen)
{
	size_t	i, o = 0, run;
	uint8_t	c;

	*consumed = 0;
	*outlen = 0;
	if (d->state == SMTP_DATA_S_DONE)
		return SMTP_DATA_DONE;

	for (i = 0; i < inlen; i++) {
		/*
		 * Fast path, most of a message: inside a line, copy the run
		 * up to the next CR, LF or NUL at once; the same as taking
		 * its bytes one by one through SMTP_DATA_S_TEXT below.
		 */
		if (d->state == SMTP_DATA_S_TEXT &&
		    (run = smtp_data_plain(in + i, inlen - i)) > 0) {
			memcpy(out + o, in + i, run);
			o += run;
			d->linelen += run;
			if (d->line_max != 0 && d->linelen > d->line_max)
				d->flags |= SMTP_DATA_F_LONG_LINE;
			i += run;
			if (i == inlen)
				break;
		}
		c = in[i];
 again:
		switch (d->state) {
		case SMTP_DATA_S_BOL:
			if (c == '.') {
				smtp_data_count(d);
				d->state = SMTP_DATA_S_DOT;
				break;
			}
			d->state = SMTP_DATA_S_TEXT;
			goto again;
		case SMTP_DATA_S_DOT:
			if (c == '\r') {
				d->state = SMTP_DATA_S_DOT_CR;
				break;
			}
			/* Not the terminator: the held dot is dropped. */
			d->state = SMTP_DATA_S_TEXT;
			goto again;
		case SMTP_DATA_S_DOT_CR:
			if (c == '\n') {
				d->state = SMTP_DATA_S_DONE;
				*consumed = i + 1;
				*outlen = o;
				d->in_bytes += i + 1;
				d->out_bytes += o;
				return SMTP_DATA_DONE;
			}
			/* "." then a bare CR: dot dropped, CR becomes CRLF. */
			d->flags |= SMTP_DATA_F_BARE_CR;
			out[o++] = '\r';
			out[o++] = '\n';
			d->linelen = 0;
			d->state = SMTP_DATA_S_TEXT;
			goto again;
		case SMTP_DATA_S_TEXT:
			if (c == '\r') {
				d->state = SMTP_DATA_S_CR;
				break;
			}
			if (c == '\n') {
				/* Bare LF: a line end for output only. */
				d->flags |= SMTP_DATA_F_BARE_LF;
				out[o++] = '\r';
				out[o++] = '\n';
				d->linelen = 0;
				break;
			}
			if (c == '\0')
				d->flags |= SMTP_DATA_F_NUL;
			smtp_data_count(d);
			out[o++] = c;
			break;
		case SMTP_DATA_S_CR:
			out[o++] = '\r';
			out[o++] = '\n';
			d->linelen = 0;
			if (c == '\n') {
				d->state = SMTP_DATA_S_BOL;
				break;
			}
			/* Bare CR: not a line start, reprocess c as text. */
			d->flags |= SMTP_DATA_F_BARE_CR;
			d->state = SMTP_DATA_S_TEXT;
			goto again;
		default:
			/* SMTP_DATA_S_DONE is handled above. */
			break;
		}
	}
	*consumed = inlen;
	*outlen = o;
	d->in_bytes += inlen;
	d->out_bytes += o;
	return SMTP_DATA_MORE;
}

void
smtp_stuff_init(struct smtp_stuff *s)
{
	s->bol = true;
}

/*
 * Input must be canonical CRLF text (smtp_data_feed() output is).  A line
 * start is the start of the text or the byte after LF.
 */
size_t
smtp_stuff(struct smtp_stuff *s, const uint8_t *in, size_t inlen,
    uint8_t *out)
{
	const uint8_t	*nl;
	size_t		 i = 0, o = 0, n;

	/* A line at a time: double a leading dot, copy up to its LF. */
	while (i < inlen) {
		if (s->bol && in[i] == '.')
			out[o++] = '.';
		nl = memchr(in + i, '\n', inlen - i);
		n = nl == NULL ? inlen - i : (size_t)(nl - (in + i)) + 1;
		memcpy(out + o, in + i, n);
		o += n;
		i += n;
		s->bol = nl != NULL;
	}
	return o;
}

size_t
smtp_stuff_finish(struct smtp_stuff *s, uint8_t *out)
{
	static const char	term[] = "\r\n.\r\n";
	size_t			off;

	off = s->bol ? 2 : 0;
	memcpy(out, term + off, sizeof(term) - 1 - off);
	s->bol = true;
	return sizeof(term) - 1 - off;
}
