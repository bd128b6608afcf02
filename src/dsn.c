/*
 * dsn.c: builds delivery status notifications (RFC 3464, RFC 6522).
 *
 * PURE: bytes in, one allocated message out; no clock (the caller passes
 * `now`), no I/O.  The delivery scheduler calls dsn_build() when it
 * bounces or warns about a message, then queues the result with a null
 * sender and SPOOL_F_DSN.
 *
 * Invariants of the output, whatever the input:
 *  - every line ends in CRLF, no bare CR or LF, no NUL;
 *  - no line is longer than DSN_LINE_MAX (< 998 octets, RFC 5322 2.1.1);
 *  - everything we write ourselves is printable ASCII: envelope strings
 *    and server diagnostics are sanitised (they came from the network);
 *  - the MIME boundary does not occur in any part (checked, not hoped).
 *
 * The quoted original headers (text/rfc822-headers) are cut at the first
 * empty line and at DSN_HEADERS_MAX, control and 8-bit bytes are replaced
 * by '?' and over-long lines are folded, so a hostile header cannot make
 * the bounce itself malformed.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsn.h"
#include "spool.h"

/* Longest line we emit, CRLF excluded; RFC 5322 allows 998. */
#define DSN_LINE_MAX		990
/* Longest sanitised text field (diagnostic, address, host). */
#define DSN_FIELD_MAX		600

struct dsn_buf {
	char	*p;
	size_t	 len;
	size_t	 cap;
	bool	 failed;
};

static void
dsn_buf_reserve(struct dsn_buf *b, size_t more)
{
	size_t	 ncap;
	char	*np;

	if (b->failed)
		return;
	if (more > SIZE_MAX / 2 - b->len) {
		b->failed = true;
		return;
	}
	if (b->len + more + 1 <= b->cap)
		return;
	ncap = b->cap ? b->cap : 4096;
	while (ncap < b->len + more + 1)
		ncap *= 2;
	if ((np = realloc(b->p, ncap)) == NULL) {
		b->failed = true;
		return;
	}
	b->p = np;
	b->cap = ncap;
}

static void
dsn_buf_add(struct dsn_buf *b, const void *data, size_t len)
{
	dsn_buf_reserve(b, len);
	if (b->failed)
		return;
	memcpy(b->p + b->len, data, len);
	b->len += len;
	b->p[b->len] = '\0';
}

static void dsn_buf_printf(struct dsn_buf *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static void
dsn_buf_printf(struct dsn_buf *b, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	if (b->failed)
		return;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->failed = true;
		return;
	}
	dsn_buf_reserve(b, (size_t)n);
	if (b->failed)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= b->cap - b->len) {
		b->failed = true;
		return;
	}
	b->len += (size_t)n;
}

/*
 * Copies s into out (size outlen, >= 4) as printable ASCII on one line:
 * CR, LF and TAB become a space, other controls and 8-bit bytes '?';
 * text beyond outlen is cut and marked with "...".
 */
static void
dsn_sanitise(char *out, size_t outlen, const char *s)
{
	size_t	 i, o = 0;
	unsigned char c;

	if (s == NULL)
		s = "";
	for (i = 0; s[i] != '\0'; i++) {
		if (o + 1 >= outlen) {
			if (outlen >= 4)
				memcpy(out + outlen - 4, "...", 3);
			o = outlen - 1;
			break;
		}
		c = (unsigned char)s[i];
		if (c == '\r' || c == '\n' || c == '\t')
			c = ' ';
		else if (c < 0x20 || c > 0x7e)
			c = '?';
		out[o++] = (char)c;
	}
	out[o] = '\0';
}

/* RFC 5322 date-time in UTC, independent of the locale. */
static void
dsn_date(char *buf, size_t len, time_t t)
{
	static const char *const days[] = {
		"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"
	};
	static const char *const months[] = {
		"Jan", "Feb", "Mar", "Apr", "May", "Jun",
		"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
	};
	struct tm	 tm;

	if (gmtime_r(&t, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 ||
	    tm.tm_mon < 0 || tm.tm_mon > 11) {
		t = 0;
		gmtime_r(&t, &tm);
	}
	(void)snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d +0000",
	    days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/*
 * Length of the header section of h: up to and including the line end
 * before the first empty line (CRLF or bare LF), or all of h.  Then cut
 * to max, at the last line end if there is one.
 */
static size_t
dsn_headers_len(const uint8_t *h, size_t len, size_t max)
{
	size_t	 i, end = len;

	if (h == NULL)
		return 0;
	for (i = 0; i < len; i++) {
		if (i == 0 || h[i - 1] == '\n') {
			if (h[i] == '\n' ||
			    (h[i] == '\r' && i + 1 < len && h[i + 1] == '\n')) {
				end = i;
				break;
			}
		}
	}
	if (end > max) {
		end = max;
		for (i = end; i > 0; i--) {
			if (h[i - 1] == '\n') {
				end = i;
				break;
			}
		}
	}
	return end;
}

/*
 * Appends the original headers h[0..len) normalised: CRLF line ends,
 * controls (but TAB) and 8-bit bytes as '?', lines folded with CRLF SP
 * before DSN_LINE_MAX.  Ends with CRLF if anything was added.
 */
static void
dsn_add_headers(struct dsn_buf *b, const uint8_t *h, size_t len)
{
	size_t	 i, col = 0;
	uint8_t	 c;

	for (i = 0; i < len && !b->failed; i++) {
		c = h[i];
		if (c == '\r' && i + 1 < len && h[i + 1] == '\n')
			continue;
		if (c == '\n' || c == '\r') {
			dsn_buf_add(b, "\r\n", 2);
			col = 0;
			continue;
		}
		if (c != '\t' && (c < 0x20 || c > 0x7e))
			c = '?';
		if (col >= DSN_LINE_MAX - 1) {
			dsn_buf_add(b, "\r\n ", 3);
			col = 1;
		}
		dsn_buf_add(b, &c, 1);
		col++;
	}
	if (col > 0)
		dsn_buf_add(b, "\r\n", 2);
}

static bool
dsn_contains(const char *hay, size_t haylen, const char *needle)
{
	return memmem(hay, haylen, needle, strlen(needle)) != NULL;
}

/* FNV-1a, to spread time and qid into the boundary. */
static uint64_t
dsn_hash(uint64_t h, const void *p, size_t len)
{
	const uint8_t	*s = p;
	size_t		 i;

	for (i = 0; i < len; i++) {
		h ^= s[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

int
dsn_build(const char *reporting_mta, const struct spool_envelope *orig,
    const uint8_t *orig_headers, size_t orig_headers_len,
    enum dsn_action action, const struct dsn_rcpt *rcpts, size_t nrcpts,
    time_t now, char **out, size_t *outlen)
{
	struct dsn_buf	 body = { 0 }, msg = { 0 };
	char		 mta[256], sender[SPOOL_ADDR_MAX], qid[QID_LEN + 1];
	char		 addr[SPOOL_ADDR_MAX], status[16], diag[DSN_FIELD_MAX];
	char		 remote[256], date[64], arrival[64], boundary[80];
	const char	*act = action == DSN_DELAYED ? "delayed" : "failed";
	size_t		 i, hlen, p2, p3;
	uint64_t	 h;
	unsigned	 attempt;
	int64_t		 t;

	*out = NULL;
	*outlen = 0;
	/* A DSN to the null sender would be a bounce loop (RFC 3461 6.2). */
	if (orig == NULL || orig->sender[0] == '\0' || nrcpts == 0 ||
	    rcpts == NULL)
		return -1;

	dsn_sanitise(mta, sizeof(mta), reporting_mta ? reporting_mta :
	    "localhost");
	dsn_sanitise(sender, sizeof(sender), orig->sender);
	dsn_sanitise(qid, sizeof(qid), orig->qid);
	dsn_date(date, sizeof(date), now);
	dsn_date(arrival, sizeof(arrival), (time_t)orig->created);

	/*
	 * The three parts first, without delimiters, so the boundary can
	 * be checked against their text; p2 and p3 are where parts 2 and 3
	 * start in body.
	 */
	/* Part 1: for people. */
	dsn_buf_printf(&body, "Content-Type: text/plain; charset=us-ascii\r\n"
	    "Content-Description: Notification\r\n\r\n");
	dsn_buf_printf(&body, "This is the mail system at host %s.\r\n\r\n",
	    mta);
	if (action == DSN_DELAYED)
		dsn_buf_printf(&body,
		    "Your message could not be delivered yet to the\r\n"
		    "recipients below.  It is still in the queue and will be\r\n"
		    "retried; you do not need to send it again.\r\n\r\n");
	else
		dsn_buf_printf(&body,
		    "I'm sorry to have to inform you that your message could\r\n"
		    "not be delivered to one or more recipients.  The reasons\r\n"
		    "are given below.\r\n\r\n");
	dsn_buf_printf(&body, "Queue ID: %s\r\n\r\n", qid);
	for (i = 0; i < nrcpts; i++) {
		dsn_sanitise(addr, sizeof(addr), rcpts[i].addr);
		dsn_sanitise(diag, sizeof(diag), rcpts[i].diagnostic ?
		    rcpts[i].diagnostic : "(no diagnostic)");
		dsn_sanitise(remote, sizeof(remote), rcpts[i].remote_mta);
		if (remote[0] != '\0')
			dsn_buf_printf(&body, "<%s>: host %s said:\r\n"
			    "    %s\r\n\r\n", addr, remote, diag);
		else
			dsn_buf_printf(&body, "<%s>:\r\n    %s\r\n\r\n", addr,
			    diag);
	}

	/* Part 2: for programs (RFC 3464 2.2, 2.3). */
	p2 = body.len;
	dsn_buf_printf(&body, "Content-Type: message/delivery-status\r\n"
	    "Content-Description: Delivery report\r\n\r\n");
	dsn_buf_printf(&body, "Reporting-MTA: dns; %s\r\n", mta);
	if (qid[0] != '\0')
		dsn_buf_printf(&body, "X-Moat-Queue-ID: %s\r\n", qid);
	dsn_buf_printf(&body, "Arrival-Date: %s\r\n", arrival);
	for (i = 0; i < nrcpts; i++) {
		dsn_sanitise(addr, sizeof(addr), rcpts[i].addr);
		dsn_sanitise(status, sizeof(status), rcpts[i].status ?
		    rcpts[i].status : (action == DSN_DELAYED ? "4.0.0" :
		    "5.0.0"));
		dsn_buf_printf(&body, "\r\nFinal-Recipient: rfc822; %s\r\n"
		    "Action: %s\r\nStatus: %s\r\n", addr, act, status);
		dsn_sanitise(remote, sizeof(remote), rcpts[i].remote_mta);
		if (remote[0] != '\0')
			dsn_buf_printf(&body, "Remote-MTA: dns; %s\r\n",
			    remote);
		if (rcpts[i].diagnostic != NULL) {
			dsn_sanitise(diag, sizeof(diag), rcpts[i].diagnostic);
			dsn_buf_printf(&body, "Diagnostic-Code: smtp; %s\r\n",
			    diag);
		}
		dsn_buf_printf(&body, "Last-Attempt-Date: %s\r\n", date);
	}

	/* Part 3: the original headers. */
	p3 = body.len;
	dsn_buf_printf(&body, "Content-Type: text/rfc822-headers\r\n"
	    "Content-Description: Undelivered Message Headers\r\n\r\n");
	hlen = dsn_headers_len(orig_headers, orig_headers_len,
	    DSN_HEADERS_MAX);
	dsn_add_headers(&body, orig_headers, hlen);
	if (body.failed)
		goto fail;

	/* A boundary that does not occur in any part. */
	h = dsn_hash(0xcbf29ce484222325ULL, &now, sizeof(now));
	h = dsn_hash(h, qid, strlen(qid));
	for (attempt = 0; ; attempt++) {
		h = dsn_hash(h, &attempt, sizeof(attempt));
		(void)snprintf(boundary, sizeof(boundary),
		    "moat-dsn-%016llx-%s-%u", (unsigned long long)h, qid,
		    attempt);
		if (!dsn_contains(body.p, body.len, boundary))
			break;
		if (attempt > 1000)
			goto fail;
	}

	/* The envelope of it all: RFC 5322 headers. */
	t = (int64_t)now;
	dsn_buf_printf(&msg, "From: Mail Delivery System "
	    "<MAILER-DAEMON@%s>\r\n", mta);
	dsn_buf_printf(&msg, "To: <%s>\r\n", sender);
	dsn_buf_printf(&msg, "Subject: %s\r\n", action == DSN_DELAYED ?
	    "Delayed Mail (still being retried)" :
	    "Undelivered Mail Returned to Sender");
	dsn_buf_printf(&msg, "Date: %s\r\n", date);
	dsn_buf_printf(&msg, "Message-ID: <%lld.%s.%s.dsn@%s>\r\n",
	    (long long)t, qid[0] ? qid : "noqid", act, mta);
	dsn_buf_printf(&msg, "Auto-Submitted: auto-replied\r\n");
	dsn_buf_printf(&msg, "MIME-Version: 1.0\r\n");
	dsn_buf_printf(&msg, "Content-Type: multipart/report; "
	    "report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary);
	dsn_buf_printf(&msg, "\r\nThis is a MIME-encapsulated message.\r\n");

	/* Parts, each preceded by its delimiter line (RFC 2046 5.1.1). */
	dsn_buf_printf(&msg, "\r\n--%s\r\n", boundary);
	dsn_buf_add(&msg, body.p, p2);
	dsn_buf_printf(&msg, "\r\n--%s\r\n", boundary);
	dsn_buf_add(&msg, body.p + p2, p3 - p2);
	dsn_buf_printf(&msg, "\r\n--%s\r\n", boundary);
	dsn_buf_add(&msg, body.p + p3, body.len - p3);
	dsn_buf_printf(&msg, "\r\n--%s--\r\n", boundary);
	if (msg.failed)
		goto fail;

	free(body.p);
	*out = msg.p;
	*outlen = msg.len;
	return 0;

fail:
	free(body.p);
	free(msg.p);
	return -1;
}
