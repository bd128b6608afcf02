/*
 * smtp_data.h: PURE DATA-phase stream reader and dot-stuffer.
 *
 * smtp_data_feed() reads the bytes a client sends after "354", removes
 * dot-stuffing, canonicalises line ends and stops exactly after the one
 * terminator RFC 5321 defines: CRLF "." CRLF.  It is the SMTP smuggling
 * defence (CVE-2023-51764 family): no other sequence ends a message.
 * smtp_stuff() is the reverse, for smtp_client.c sending to the protected
 * server.  Callers: smtp_session.c, smtp_client.c, unit tests, fuzzers.
 * See smtp_data.c for the exact rules; in short: output is always
 * canonical CRLF; bare CR/LF set a flag and become CRLF; the first "."
 * of a line that follows a real CRLF is removed; a "." after a bare CR/LF
 * is content (kept, never a terminator).
 */
#ifndef MOAT_SMTP_DATA_H
#define MOAT_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_DATA_F_BARE_LF	0x01	/* LF not preceded by CR */
#define SMTP_DATA_F_BARE_CR	0x02	/* CR not followed by LF */
#define SMTP_DATA_F_LONG_LINE	0x04	/* line longer than line_max */
#define SMTP_DATA_F_NUL		0x08	/* NUL byte in the content */

/* Output capacity needed for a feed of n input bytes. */
#define SMTP_DATA_OUT_MAX(n)	((n) * 2 + 4)
/* Output capacity needed for smtp_stuff() of n bytes. */
#define SMTP_STUFF_OUT_MAX(n)	((n) * 2)
/* Longest terminator smtp_stuff_finish() writes: CRLF "." CRLF. */
#define SMTP_STUFF_FINISH_MAX	5

enum smtp_data_status {
	SMTP_DATA_MORE,		/* terminator not seen yet */
	SMTP_DATA_DONE		/* terminator consumed, message done */
};

struct smtp_data {
	int		 state;		/* private: see smtp_data.c */
	size_t		 linelen;	/* private: bytes in this line */
	uint32_t	 flags;		/* SMTP_DATA_F_* seen so far */
	uint64_t	 in_bytes;	/* bytes consumed, terminator incl. */
	uint64_t	 out_bytes;	/* message bytes written */
	size_t		 line_max;	/* for SMTP_DATA_F_LONG_LINE */
	bool		 normalise;	/* kept for the session; the
					   output is canonical either way */
};

void			smtp_data_init(struct smtp_data *, size_t line_max,
			    bool normalise);
/*
 * Consume up to inlen bytes, write message bytes to out (capacity
 * >= SMTP_DATA_OUT_MAX(inlen)).  Returns DONE right after the CRLF.CRLF
 * terminator, with *consumed the bytes used: the rest of the input is the
 * next pipelined command.  On MORE, *consumed == inlen.  After DONE,
 * further calls consume nothing and return DONE.
 */
enum smtp_data_status	smtp_data_feed(struct smtp_data *,
			    const uint8_t *in, size_t inlen, size_t *consumed,
			    uint8_t *out, size_t *outlen);

struct smtp_stuff {
	bool	bol;		/* at the beginning of a line */
};

void			smtp_stuff_init(struct smtp_stuff *);
/*
 * Dot-stuff canonical CRLF text for sending: a "." at the beginning of a
 * line is doubled.  out capacity >= SMTP_STUFF_OUT_MAX(inlen).  Returns
 * bytes written.
 */
size_t			smtp_stuff(struct smtp_stuff *, const uint8_t *in,
			    size_t inlen, uint8_t *out);
/*
 * Write the end-of-data terminator: ".\r\n" if the text ended with CRLF
 * (or was empty), else "\r\n.\r\n".  out capacity >= SMTP_STUFF_FINISH_MAX.
 * Returns bytes written.
 */
size_t			smtp_stuff_finish(struct smtp_stuff *,
			    uint8_t *out);

#endif /* MOAT_SMTP_DATA_H */
