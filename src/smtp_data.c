/*
 * smtp_data.c: TEMPORARY stand-in (branch `client` only) for the parse
 * helper's smtp_data.c: dot-stuffing for the SMTP client (RFC 5321
 * 4.5.2).  PURE.  The merge must keep the parse helper's version.
 */
#include "smtp_data.h"

void
smtp_stuff_init(struct smtp_stuff *st)
{
	st->bol = true;
}

size_t
smtp_stuff(struct smtp_stuff *st, const uint8_t *in, size_t inlen,
    uint8_t *out)
{
	size_t	 i, o = 0;

	for (i = 0; i < inlen; i++) {
		if (st->bol && in[i] == '.')
			out[o++] = '.';
		out[o++] = in[i];
		st->bol = in[i] == '\n';
	}
	return o;
}
