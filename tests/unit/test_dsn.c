/*
 * test_dsn.c: structure of the DSNs built by dsn_build(): headers, the
 * three MIME parts, per-recipient fields, CRLF-only line ends, line
 * length, and the cut of the quoted original headers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dsn.h"
#include "spool.h"

#define NOW	((time_t)1796417146)	/* Fri, 04 Dec 2026 20:45:46 UTC */

static void
env_init(struct spool_envelope *env, const char *sender)
{
	memset(env, 0, sizeof(*env));
	snprintf(env->qid, sizeof(env->qid), "%s", "0005f1a2b3c4d5e601");
	snprintf(env->sender, sizeof(env->sender), "%s", sender);
	env->created = 1796400000;
}

static bool
has(const char *msg, size_t len, const char *needle)
{
	if (memmem(msg, len, needle, strlen(needle)) == NULL) {
		print_error("missing=\"%s\"\n", needle);
		return false;
	}
	return true;
}

static size_t
count(const char *msg, size_t len, const char *needle)
{
	size_t		 n = 0, nl = strlen(needle);
	const char	*p = msg, *e = msg + len, *q;

	while ((q = memmem(p, (size_t)(e - p), needle, nl)) != NULL) {
		n++;
		p = q + nl;
	}
	return n;
}

/* Every LF preceded by CR, every CR followed by LF, lines < 998. */
static void
check_lines(const char *msg, size_t len)
{
	size_t	 i, col = 0, maxcol = 0;

	for (i = 0; i < len; i++) {
		if (msg[i] == '\0')
			fail_msg("NUL at %zu", i);
		if (msg[i] == '\r') {
			if (i + 1 >= len || msg[i + 1] != '\n')
				fail_msg("bare CR at %zu", i);
			continue;
		}
		if (msg[i] == '\n') {
			if (i == 0 || msg[i - 1] != '\r')
				fail_msg("bare LF at %zu", i);
			if (col > maxcol)
				maxcol = col;
			col = 0;
			continue;
		}
		col++;
	}
	if (col != 0)
		fail_msg("no final CRLF: trailing=%zu", col);
	if (maxcol >= 998)
		fail_msg("line too long: got=%zu want<998", maxcol);
}

/* The boundary parameter value. */
static void
get_boundary(const char *msg, char *b, size_t blen)
{
	const char	*p, *q;

	p = strstr(msg, "boundary=\"");
	assert_non_null(p);
	p += strlen("boundary=\"");
	q = strchr(p, '"');
	assert_non_null(q);
	assert_true((size_t)(q - p) < blen);
	memcpy(b, p, (size_t)(q - p));
	b[q - p] = '\0';
}

static void
test_failed_structure(void **state)
{
	struct spool_envelope	 env;
	struct dsn_rcpt		 r[] = {
		{ "bob@example.org", "5.1.1", "550 5.1.1 <bob@example.org>: "
		    "User unknown\r\nInjected: header", "mx.example.org" },
		{ "carol@example.org", "5.7.1", NULL, NULL },
	};
	const char	*hdr = "Received: from x\r\nSubject: hello\r\n"
	    "Message-ID: <abc@x>\r\n\r\nBody line\r\nX-Not-Header: 1\r\n";
	char		*m, b[128], delim[160];
	size_t		 len;
	static const char *const want[] = {
		"From: Mail Delivery System <MAILER-DAEMON@moat.example.net>\r\n",
		"To: <alice@sender.example>\r\n",
		"Subject: Undelivered Mail Returned to Sender\r\n",
		"Date: Fri, 04 Dec 2026 20:45:46 +0000\r\n",
		"Message-ID: <",
		"@moat.example.net>\r\n",
		"Auto-Submitted: auto-replied\r\n",
		"MIME-Version: 1.0\r\n",
		"Content-Type: multipart/report; report-type=delivery-status;",
		"Content-Type: text/plain",
		"Content-Type: message/delivery-status\r\n",
		"Content-Type: text/rfc822-headers\r\n",
		"Reporting-MTA: dns; moat.example.net\r\n",
		"Arrival-Date: ",
		"Final-Recipient: rfc822; bob@example.org\r\n"
		    "Action: failed\r\nStatus: 5.1.1\r\n"
		    "Remote-MTA: dns; mx.example.org\r\n"
		    "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: "
		    "User unknown  Injected: header\r\n",
		"Final-Recipient: rfc822; carol@example.org\r\n"
		    "Action: failed\r\nStatus: 5.7.1\r\n",
		"Subject: hello\r\nMessage-ID: <abc@x>\r\n",
	};
	size_t	 i;

	(void)state;
	env_init(&env, "alice@sender.example");
	assert_int_equal(dsn_build("moat.example.net", &env,
	    (const uint8_t *)hdr, strlen(hdr), DSN_FAILED, r, 2, NOW, &m,
	    &len), 0);
	assert_int_equal(strlen(m), len);
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		assert_true(has(m, len, want[i]));
	check_lines(m, len);
	/* Header cut at the empty line: the body is not quoted. */
	assert_null(memmem(m, len, "Body line", 9));
	assert_null(memmem(m, len, "X-Not-Header", 12));
	/* The injected CRLF did not start a header line. */
	assert_null(memmem(m, len, "\r\nInjected:", 11));
	/* Three parts and a close delimiter. */
	get_boundary(m, b, sizeof(b));
	snprintf(delim, sizeof(delim), "\r\n--%s\r\n", b);
	if (count(m, len, delim) != 3)
		fail_msg("delimiters got=%zu want=3", count(m, len, delim));
	snprintf(delim, sizeof(delim), "\r\n--%s--\r\n", b);
	assert_int_equal(count(m, len, delim), 1);
	/* Carol has no remote MTA and no diagnostic line. */
	assert_int_equal(count(m, len, "Remote-MTA:"), 1);
	assert_int_equal(count(m, len, "Diagnostic-Code:"), 1);
	free(m);
}

static void
test_delayed(void **state)
{
	struct spool_envelope	 env;
	struct dsn_rcpt		 r = { "bob@example.org", "4.4.1",
	    "connect: Connection refused", NULL };
	char			*m;
	size_t			 len;

	(void)state;
	env_init(&env, "alice@sender.example");
	assert_int_equal(dsn_build("moat.example.net", &env, NULL, 0,
	    DSN_DELAYED, &r, 1, NOW, &m, &len), 0);
	assert_true(has(m, len, "Subject: Delayed Mail (still being "
	    "retried)\r\n"));
	assert_true(has(m, len, "Action: delayed\r\nStatus: 4.4.1\r\n"));
	check_lines(m, len);
	free(m);
}

static void
test_null_sender_refused(void **state)
{
	struct spool_envelope	 env;
	struct dsn_rcpt		 r = { "bob@example.org", "5.1.1", NULL, NULL };
	char			*m = (char *)1;
	size_t			 len = 1;

	(void)state;
	env_init(&env, "");
	assert_int_equal(dsn_build("m", &env, NULL, 0, DSN_FAILED, &r, 1,
	    NOW, &m, &len), -1);
	assert_null(m);
	assert_int_equal(len, 0);
}

/* Hostile headers: no blank line, huge, long lines, bare LF, 8-bit. */
static void
test_headers_cut_at_max(void **state)
{
	struct spool_envelope	 env;
	struct dsn_rcpt		 r = { "bob@example.org", "5.1.1", NULL, NULL };
	size_t			 hlen = DSN_HEADERS_MAX * 2, i, len;
	uint8_t			*h;
	char			*m;

	(void)state;
	env_init(&env, "alice@sender.example");
	assert_non_null(h = malloc(hlen));
	for (i = 0; i < hlen; i++) {
		if (i % 3000 == 2999)
			h[i] = '\n';		/* bare LF, long lines */
		else if (i % 777 == 0)
			h[i] = 0xe9;		/* 8-bit */
		else if (i % 1001 == 0)
			h[i] = '\r';		/* bare CR */
		else
			h[i] = 'a' + (i % 26);
	}
	assert_int_equal(dsn_build("moat.example.net", &env, h, hlen,
	    DSN_FAILED, &r, 1, NOW, &m, &len), 0);
	check_lines(m, len);
	if (len > DSN_HEADERS_MAX + 8192)
		fail_msg("DSN too big got=%zu want<=%d", len,
		    DSN_HEADERS_MAX + 8192);
	assert_null(memchr(m, 0xe9, len));
	free(m);
	free(h);
}

/* A header that contains what would be our boundary's prefix. */
static void
test_boundary_unique(void **state)
{
	struct spool_envelope	 env;
	struct dsn_rcpt		 r = { "bob@example.org", "5.1.1", NULL, NULL };
	char			*m1, *m2, b[128], hdr[256], delim[160];
	size_t			 l1, l2;

	(void)state;
	env_init(&env, "alice@sender.example");
	assert_int_equal(dsn_build("h", &env, NULL, 0, DSN_FAILED, &r, 1, NOW,
	    &m1, &l1), 0);
	get_boundary(m1, b, sizeof(b));
	/* Quote that exact boundary in the original headers. */
	snprintf(hdr, sizeof(hdr), "X-Evil: --%s\r\n\r\n", b);
	assert_int_equal(dsn_build("h", &env, (uint8_t *)hdr, strlen(hdr),
	    DSN_FAILED, &r, 1, NOW, &m2, &l2), 0);
	get_boundary(m2, delim, sizeof(delim));
	if (strcmp(b, delim) == 0)
		fail_msg("boundary reused got=%s", delim);
	assert_true(has(m2, l2, "X-Evil: --"));
	free(m1);
	free(m2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_failed_structure),
		cmocka_unit_test(test_delayed),
		cmocka_unit_test(test_null_sender_refused),
		cmocka_unit_test(test_headers_cut_at_max),
		cmocka_unit_test(test_boundary_unique),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
