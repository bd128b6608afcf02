/*
 * dsn.h: delivery status notifications (RFC 3464) for bounced and
 * delayed mail.
 *
 * PURE: builds the complete message text (RFC 5322 headers and a
 * multipart/report body, CRLF line ends, no dot-stuffing) from the
 * original envelope, the original headers and the per-recipient outcome.
 * The caller queues it like any message, with a null sender and the
 * SPOOL_F_DSN flag, so a DSN is never bounced again.
 */
#ifndef MOAT_DSN_H
#define MOAT_DSN_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct spool_envelope;

enum dsn_action {
	DSN_FAILED,
	DSN_DELAYED
};

struct dsn_rcpt {
	const char	*addr;
	const char	*status;	/* enhanced code "5.1.1", "4.4.7" */
	const char	*diagnostic;	/* server reply text, or NULL */
	const char	*remote_mta;	/* host that answered, or NULL */
};

/* Most original header bytes a DSN quotes (text/rfc822-headers). */
#define DSN_HEADERS_MAX		(64 * 1024)

/*
 * On success returns 0 and an allocated message in *out (length *outlen).
 * orig_headers is the start of the original message (it is cut at the
 * first empty line and at DSN_HEADERS_MAX).
 */
int	dsn_build(const char *reporting_mta, const struct spool_envelope *orig,
	    const uint8_t *orig_headers, size_t orig_headers_len,
	    enum dsn_action, const struct dsn_rcpt *rcpts, size_t nrcpts,
	    time_t now, char **out, size_t *outlen);

#endif
