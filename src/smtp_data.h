/*
 * smtp_data.h: TEMPORARY stand-in (branch `client` only) for the DATA
 * stream helpers owned by the parse helper.  Only the dot-stuffing API
 * used by smtp_client.c is declared here; the merge must keep the parse
 * helper's version of this file.
 */
#ifndef MOAT_SMTP_DATA_H
#define MOAT_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct smtp_stuff {
	bool	bol;
};

void	smtp_stuff_init(struct smtp_stuff *);
/* out >= 2*inlen; doubles '.' at beginning of line; input is canonical CRLF */
size_t	smtp_stuff(struct smtp_stuff *, const uint8_t *in, size_t inlen,
	    uint8_t *out);

#endif
