/*
 * test_smtp_parse.c: table-driven tests of smtp_parse.c.
 *
 * Each row is one command line and the expected status, command and
 * fields; a mismatch prints the row and got=.. want=.. .
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "smtp_parse.h"

struct pcase {
	const char		*line;
	size_t			 len;	/* 0: strlen(line) */
	enum smtp_parse_status	 st;
	enum smtp_cmd		 cmd;
	const char		*arg;	/* NULL: not checked */
	const char		*addr;	/* NULL: not checked */
	const char		*local;
	const char		*domain;
	bool			 null;
	bool			 literal;
	bool			 has_size;
	uint64_t		 size;
	enum smtp_body		 body;
};

#define OK	SMTP_PARSE_OK
#define C(x)	SMTP_CMD_##x
#define S(x)	SMTP_PARSE_##x
/* A row; PB for lines holding NUL bytes, which need an explicit length. */
#define P(l, s, c, ...)	{ .line = l, .st = s, .cmd = c, __VA_ARGS__ }
#define PB(l, s, c, ...) \
	{ .line = l, .len = sizeof(l) - 1, .st = s, .cmd = c, __VA_ARGS__ }

static const struct pcase pcases[] = {
	/* Every verb, case-insensitive, argument rules. */
	P("HELO mx.example.com", OK, C(HELO), .arg = "mx.example.com"),
	P("helo mx.example.com", OK, C(HELO), .arg = "mx.example.com"),
	P("HELO", S(SYNTAX), C(HELO)),
	P("HELO    ", S(SYNTAX), C(HELO)),
	P("EHLO [192.0.2.1]", OK, C(EHLO), .arg = "[192.0.2.1]"),
	P("EhLo x  ", OK, C(EHLO), .arg = "x"),
	P("EHLO not a domain", OK, C(EHLO), .arg = "not a domain"),
	P("EHLO", S(SYNTAX), C(EHLO)),
	P("DATA", OK, C(DATA), .arg = ""),
	P("data   ", OK, C(DATA)),
	P("DATA x", S(SYNTAX), C(DATA)),
	P("RSET", OK, C(RSET)),
	P("rset \t ", OK, C(RSET)),
	P("RSET now", S(SYNTAX), C(RSET)),
	P("NOOP", OK, C(NOOP), .arg = ""),
	P("noop hello there", OK, C(NOOP), .arg = "hello there"),
	P("QUIT", OK, C(QUIT)),
	P("QUIT ", OK, C(QUIT)),
	P("QUIT please", S(SYNTAX), C(QUIT)),
	P("VRFY", OK, C(VRFY)),
	P("VRFY root", OK, C(VRFY), .arg = "root"),
	P("EXPN staff", OK, C(EXPN), .arg = "staff"),
	P("HELP", OK, C(HELP)),
	P("help MAIL", OK, C(HELP), .arg = "MAIL"),
	P("STARTTLS", OK, C(STARTTLS)),
	P("starttls x", S(SYNTAX), C(STARTTLS)),
	P("AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=", OK, C(AUTH),
	    .arg = "PLAIN dGVzdAB0ZXN0AHRlc3Q="),
	P("AUTH", S(SYNTAX), C(AUTH)),
	P("BDAT 100 LAST", OK, C(BDAT), .arg = "100 LAST"),
	P("BDAT", S(SYNTAX), C(BDAT)),
	P("FOO", S(UNKNOWN), C(UNKNOWN)),
	P("MAILX FROM:<a@b.example>", S(UNKNOWN), C(UNKNOWN)),
	P(" HELO x", S(UNKNOWN), C(UNKNOWN)),
	P("HELO\tx", S(UNKNOWN), C(UNKNOWN)),
	P("", S(EMPTY), C(NONE)),
	P("   \t", S(EMPTY), C(NONE)),

	/* NUL and 8-bit bytes. */
	PB("HELO x\0y", S(NUL), C(HELO)),
	PB("\0", S(NUL), C(UNKNOWN)),
	PB("MAIL FROM:<a\0@b.example>", S(NUL), C(MAIL)),
	P("HELO caf\xc3\xa9.example", S(8BIT), C(HELO)),
	P("RCPT TO:<j\xc3\xb6rg@example.com>", S(8BIT), C(RCPT)),
	P("\xff\xfe", S(8BIT), C(UNKNOWN)),

	/* MAIL forms. */
	P("MAIL FROM:<>", OK, C(MAIL), .addr = "", .null = true),
	P("MAIL FROM: <>", OK, C(MAIL), .addr = "", .null = true),
	P("MAIL FROM:<a@b.example>", OK, C(MAIL), .addr = "a@b.example",
	    .local = "a", .domain = "b.example"),
	P("MAIL FROM: <a@b.example>", OK, C(MAIL), .addr = "a@b.example"),
	P("MAIL FROM:  <a@b.example>", S(SYNTAX), C(MAIL)),
	P("MAIL FROM:a@b.example", S(SYNTAX), C(MAIL)),
	P("MAIL FROM:<a@b.example", S(SYNTAX), C(MAIL)),
	P("MAIL FROM:<a", S(SYNTAX), C(MAIL)),
	P("MAIL FROM:<", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:", S(SYNTAX), C(MAIL)),
	P("MAIL FROM <a@b.example>", S(SYNTAX), C(MAIL)),
	P("MAIL", S(SYNTAX), C(MAIL)),
	P("MAIL TO:<a@b.example>", S(SYNTAX), C(MAIL)),
	P("mail from:<User.Name+tag@Example.COM>", OK, C(MAIL),
	    .addr = "User.Name+tag@example.com", .local = "User.Name+tag",
	    .domain = "example.com"),
	P("MAIL FROM:<a@b.example>   ", OK, C(MAIL), .addr = "a@b.example"),
	P("MAIL FROM:<a@b.example>x", S(SYNTAX), C(MAIL)),
	P("MAIL FROM:<a b@c.example>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a..b@example.com>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<.a@example.com>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a.@example.com>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@-x.example>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@x-.example>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@x_y.example>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@x..example>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@example.>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@b@c.example>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<postmaster>", S(BAD_PATH), C(MAIL)),
	/* Quoted local parts. */
	P("MAIL FROM:<\"john doe\"@example.com>", OK, C(MAIL),
	    .local = "\"john doe\"", .addr = "\"john doe\"@example.com"),
	P("MAIL FROM:<\"a\\\"b\"@example.com>", OK, C(MAIL),
	    .local = "\"a\\\"b\""),
	P("MAIL FROM:<\"a>b\"@example.com>", OK, C(MAIL),
	    .local = "\"a>b\""),
	P("MAIL FROM:<\"\"@example.com>", OK, C(MAIL), .local = "\"\""),
	P("MAIL FROM:<\"abc@example.com>", S(SYNTAX), C(MAIL)),
	P("MAIL FROM:<\"a\\", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<\"a\tb\"@example.com>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<\"ab\"c@example.com>", S(BAD_PATH), C(MAIL)),
	/* Address literals. */
	P("MAIL FROM:<a@[192.0.2.1]>", OK, C(MAIL), .literal = true,
	    .domain = "[192.0.2.1]", .addr = "a@[192.0.2.1]"),
	P("MAIL FROM:<a@[IPv6:2001:DB8::1]>", OK, C(MAIL), .literal = true,
	    .domain = "[ipv6:2001:db8::1]"),
	P("MAIL FROM:<a@[256.1.1.1]>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@[1.2.3]>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@[1.2.3.4.5]>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@[1.2.3.4>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@[IPv6:zz::1]>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@[IPv6:1.2.3.4]>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@[tag:stuff]>", S(BAD_PATH), C(MAIL)),
	P("MAIL FROM:<a@[192.0.2.1]x>", S(BAD_PATH), C(MAIL)),
	/* Source routes. */
	P("MAIL FROM:<@a.example,@b.example:user@d.example>",
	    S(SOURCE_ROUTE), C(MAIL)),
	P("RCPT TO:<@a.example:user@d.example>", S(SOURCE_ROUTE),
	    C(RCPT)),
	/* Parameters. */
	P("MAIL FROM:<a@b.example> SIZE=1000", OK, C(MAIL),
	    .has_size = true, .size = 1000),
	P("MAIL FROM:<> SIZE=0", OK, C(MAIL), .null = true,
	    .has_size = true, .size = 0),
	P("MAIL FROM:<a@b.example> SIZE=18446744073709551615", OK, C(MAIL),
	    .has_size = true, .size = UINT64_MAX),
	P("MAIL FROM:<a@b.example> SIZE=18446744073709551616",
	    S(BAD_PARAM), C(MAIL)),
	P("MAIL FROM:<a@b.example> SIZE=99999999999999999999",
	    S(BAD_PARAM), C(MAIL)),
	P("MAIL FROM:<a@b.example> SIZE=000000000000000000001",
	    S(BAD_PARAM), C(MAIL)),
	P("MAIL FROM:<a@b.example> SIZE=12a", S(BAD_PARAM), C(MAIL)),
	P("MAIL FROM:<a@b.example> SIZE=-1", S(BAD_PARAM), C(MAIL)),
	P("MAIL FROM:<a@b.example> SIZE", S(BAD_PARAM), C(MAIL)),
	P("MAIL FROM:<a@b.example> SIZE=", S(SYNTAX), C(MAIL)),
	P("MAIL FROM:<a@b.example> SIZE=1 SIZE=2", S(BAD_PARAM), C(MAIL)),
	P("MAIL FROM:<a@b.example> BODY=8BITMIME", OK, C(MAIL),
	    .body = SMTP_BODY_8BITMIME),
	P("MAIL FROM:<a@b.example>  body=7bit   size=5", OK, C(MAIL),
	    .body = SMTP_BODY_7BIT, .has_size = true, .size = 5),
	P("MAIL FROM:<a@b.example> BODY=BINARYMIME", S(BAD_PARAM),
	    C(MAIL)),
	P("MAIL FROM:<a@b.example> BODY=7BIT BODY=7BIT", S(BAD_PARAM),
	    C(MAIL)),
	P("MAIL FROM:<a@b.example> SMTPUTF8", S(BAD_PARAM), C(MAIL)),
	P("MAIL FROM:<a@b.example> RET=HDRS", S(BAD_PARAM), C(MAIL)),
	P("MAIL FROM:<a@b.example> AUTH=<>", S(BAD_PARAM), C(MAIL)),
	P("MAIL FROM:<a@b.example> =x", S(SYNTAX), C(MAIL)),
	P("MAIL FROM:<a@b.example> SIZE=1=2", S(SYNTAX), C(MAIL)),

	/* RCPT forms. */
	P("RCPT TO:<u@example.com>", OK, C(RCPT), .addr = "u@example.com"),
	P("rcpt to: <U@EXAMPLE.com>", OK, C(RCPT),
	    .addr = "U@example.com"),
	P("RCPT TO:<>", S(BAD_PATH), C(RCPT)),
	P("RCPT TO:<Postmaster>", OK, C(RCPT), .local = "Postmaster",
	    .domain = "", .addr = "Postmaster"),
	P("RCPT TO:<postmaster@Example.COM>", OK, C(RCPT),
	    .addr = "postmaster@example.com"),
	P("RCPT TO:<postmasterx>", S(BAD_PATH), C(RCPT)),
	P("RCPT TO:<\"postmaster\">", S(BAD_PATH), C(RCPT)),
	P("RCPT TO:<u@example.com> SIZE=10", S(BAD_PARAM), C(RCPT)),
	P("RCPT TO:<u@example.com> NOTIFY=NEVER", S(BAD_PARAM), C(RCPT)),
	P("RCPT TO:u@example.com", S(SYNTAX), C(RCPT)),
	P("RCPT FROM:<u@example.com>", S(SYNTAX), C(RCPT)),
	P("RCPT TO:<u@example.com", S(SYNTAX), C(RCPT)),

	/* Other protocols. */
	P("GET / HTTP/1.1", S(NON_SMTP), C(NON_SMTP)),
	P("get /index.html", S(NON_SMTP), C(NON_SMTP)),
	P("POST /x HTTP/1.0", S(NON_SMTP), C(NON_SMTP)),
	P("HEAD / HTTP/1.1", S(NON_SMTP), C(NON_SMTP)),
	P("PUT /x", S(NON_SMTP), C(NON_SMTP)),
	P("DELETE /x", S(NON_SMTP), C(NON_SMTP)),
	P("OPTIONS * HTTP/1.1", S(NON_SMTP), C(NON_SMTP)),
	P("CONNECT mx.example.com:25 HTTP/1.0", S(NON_SMTP), C(NON_SMTP)),
	P("TRACE /", S(NON_SMTP), C(NON_SMTP)),
	P("PATCH /x", S(NON_SMTP), C(NON_SMTP)),
	P("BREW /pot HTTP/1.1", S(NON_SMTP), C(NON_SMTP)),
	P("PRI * HTTP/2.0", S(NON_SMTP), C(NON_SMTP)),
	P("Host: example.com", S(NON_SMTP), C(NON_SMTP)),
	P("user-agent: curl/8.0", S(NON_SMTP), C(NON_SMTP)),
	P("Accept: */*", S(NON_SMTP), C(NON_SMTP)),
	P("Content-Type: text/plain", S(NON_SMTP), C(NON_SMTP)),
	P("CONTENT-LENGTH: 5", S(NON_SMTP), C(NON_SMTP)),
	P("Connection: close", S(NON_SMTP), C(NON_SMTP)),
	PB("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", S(NON_SMTP),
	    C(NON_SMTP)),
	PB("\x80\x2e\x01\x00\x02", S(NON_SMTP), C(NON_SMTP)),
	P("SSH-2.0-OpenSSH_9.2", S(NON_SMTP), C(NON_SMTP)),
	PB("\x04\x01\x00\x19\x7f\x00\x00\x01", S(NON_SMTP), C(NON_SMTP)),
	PB("\x05\x01\x00", S(NON_SMTP), C(NON_SMTP)),
	PB("\x05\x02\x00\x02", S(NON_SMTP), C(NON_SMTP)),
	P("a001 LOGIN user pass", S(NON_SMTP), C(NON_SMTP)),
	P("a1 capability", S(NON_SMTP), C(NON_SMTP)),
	P("CAPABILITY", S(NON_SMTP), C(NON_SMTP)),
	P("USER bob", S(NON_SMTP), C(NON_SMTP)),
	P("PASS secret", S(NON_SMTP), C(NON_SMTP)),
	P("CAPA", S(NON_SMTP), C(NON_SMTP)),
	/* ... but only when the first word is not an SMTP verb. */
	P("NOOP GET / HTTP/1.1", OK, C(NOOP), .arg = "GET / HTTP/1.1"),
	P("HELP Host:", OK, C(HELP)),
	P("CAPAX", S(UNKNOWN), C(UNKNOWN)),
	P("GETS", S(UNKNOWN), C(UNKNOWN)),
	P("x HTTP/1.1", S(UNKNOWN), C(UNKNOWN)),
};

static void
check_str(size_t i, const char *what, const char *got, const char *want)
{
	if (want != NULL && strcmp(got, want) != 0)
		fail_msg("case %zu (%s): %s got=\"%s\" want=\"%s\"", i,
		    pcases[i].line, what, got, want);
}

static void
test_parse_table(void **state)
{
	const struct pcase	*c;
	struct smtp_command	 cmd;
	enum smtp_parse_status	 st;
	size_t			 i, len;

	(void)state;
	for (i = 0; i < sizeof(pcases) / sizeof(pcases[0]); i++) {
		c = &pcases[i];
		len = c->len != 0 ? c->len : strlen(c->line);
		st = smtp_parse_command(c->line, len, &cmd);
		if (st != c->st)
			fail_msg("case %zu (%s): status got=%s want=%s why=%s",
			    i, c->line, smtp_parse_status_name(st),
			    smtp_parse_status_name(c->st),
			    cmd.why ? cmd.why : "-");
		if (cmd.cmd != c->cmd)
			fail_msg("case %zu (%s): cmd got=%s want=%s", i,
			    c->line, smtp_parse_cmd_name(cmd.cmd),
			    smtp_parse_cmd_name(c->cmd));
		if (st != SMTP_PARSE_OK) {
			if (cmd.why == NULL)
				fail_msg("case %zu (%s): why got=NULL "
				    "want=text", i, c->line);
			continue;
		}
		if (cmd.why != NULL)
			fail_msg("case %zu (%s): why got=%s want=NULL", i,
			    c->line, cmd.why);
		check_str(i, "arg", cmd.arg, c->arg);
		check_str(i, "addr", cmd.path.addr, c->addr);
		check_str(i, "local", cmd.path.local, c->local);
		check_str(i, "domain", cmd.path.domain, c->domain);
		if (cmd.path.null != c->null ||
		    cmd.path.domain_literal != c->literal ||
		    cmd.has_size != c->has_size || cmd.size != c->size ||
		    cmd.body != c->body)
			fail_msg("case %zu (%s): null/literal/has_size/size/"
			    "body got=%d/%d/%d/%llu/%d want=%d/%d/%d/%llu/%d",
			    i, c->line, cmd.path.null,
			    cmd.path.domain_literal, cmd.has_size,
			    (unsigned long long)cmd.size, cmd.body, c->null,
			    c->literal, c->has_size,
			    (unsigned long long)c->size, c->body);
	}
}

/* Build "<prefix><n x fill><suffix>" into buf. */
static size_t
build(char *buf, size_t cap, const char *prefix, size_t n, char fill,
    const char *suffix)
{
	size_t	pl = strlen(prefix), sl = strlen(suffix);

	assert_true(pl + n + sl < cap);
	memcpy(buf, prefix, pl);
	memset(buf + pl, fill, n);
	memcpy(buf + pl + n, suffix, sl);
	buf[pl + n + sl] = '\0';
	return pl + n + sl;
}

/* Valid domain of total length n made of 50-char labels (n >= 1). */
static void
build_domain(char *buf, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		buf[i] = (i % 51 == 50) ? '.' : 'd';
	if (buf[n - 1] == '.')
		buf[n - 1] = 'd';
	buf[n] = '\0';
}

struct lcase {
	const char		*what;
	size_t			 local, domain;
	enum smtp_parse_status	 st;
};

static void
test_parse_lengths(void **state)
{
	static const struct lcase lc[] = {
		{ "local 64", 64, 10, OK },
		{ "local 65", 65, 10, S(PATH_TOO_LONG) },
		{ "domain 252, path 256", 1, 252, OK },
		{ "domain 253, path 257", 1, 253, S(PATH_TOO_LONG) },
		{ "local 64 + domain 189 = path 256", 64, 189, OK },
		{ "local 64 + domain 190 = path 257", 64, 190,
		    S(PATH_TOO_LONG) },
		{ "domain 255", 1, 255, S(PATH_TOO_LONG) },
		{ "domain 256", 1, 256, S(PATH_TOO_LONG) },
		{ "domain 300", 1, 300, S(PATH_TOO_LONG) },
	};
	char			 line[1024], local[512], dom[512];
	struct smtp_command	 cmd;
	enum smtp_parse_status	 st;
	size_t			 i, len;
	int			 r;

	(void)state;
	for (i = 0; i < sizeof(lc) / sizeof(lc[0]); i++) {
		memset(local, 'l', lc[i].local);
		local[lc[i].local] = '\0';
		build_domain(dom, lc[i].domain);
		r = snprintf(line, sizeof(line), "RCPT TO:<%s@%s>", local, dom);
		assert_true(r > 0 && (size_t)r < sizeof(line));
		st = smtp_parse_command(line, (size_t)r, &cmd);
		if (st != lc[i].st)
			fail_msg("%s: status got=%s want=%s", lc[i].what,
			    smtp_parse_status_name(st),
			    smtp_parse_status_name(lc[i].st));
		if (st == OK && strlen(cmd.path.addr) != lc[i].local + 1 +
		    lc[i].domain)
			fail_msg("%s: addr length got=%zu want=%zu",
			    lc[i].what, strlen(cmd.path.addr),
			    lc[i].local + 1 + lc[i].domain);
	}

	/* Command line limit: 510 bytes + CRLF fits, 511 does not. */
	len = build(line, sizeof(line), "NOOP ", 505, 'x', "");
	st = smtp_parse_command(line, len, &cmd);
	if (st != OK || strlen(cmd.arg) != 505)
		fail_msg("510 bytes: got=%s/%zu want=ok/505",
		    smtp_parse_status_name(st), strlen(cmd.arg));
	len = build(line, sizeof(line), "NOOP ", 506, 'x', "");
	st = smtp_parse_command(line, len, &cmd);
	if (st != S(TOO_LONG))
		fail_msg("511 bytes: got=%s want=too_long",
		    smtp_parse_status_name(st));
	/* A long TLS hello is named for what it is. */
	len = build(line, sizeof(line), "\x16\x03\x01", 600, 'x', "");
	st = smtp_parse_command(line, len, &cmd);
	if (st != S(NON_SMTP))
		fail_msg("long TLS hello: got=%s want=non_smtp",
		    smtp_parse_status_name(st));
	/* Long verb is truncated in verb[], still unknown. */
	len = build(line, sizeof(line), "", 40, 'Z', "");
	st = smtp_parse_command(line, len, &cmd);
	if (st != S(UNKNOWN) || strlen(cmd.verb) != sizeof(cmd.verb) - 1)
		fail_msg("long verb: got=%s/%zu want=unknown/15",
		    smtp_parse_status_name(st), strlen(cmd.verb));
}

struct vcase {
	const char	*s;
	bool		 helo;		/* smtp_parse_helo_valid */
	bool		 domain;	/* smtp_parse_domain_valid */
};

static void
test_parse_validators(void **state)
{
	static const struct vcase vc[] = {
		{ "mx.example.com", true, true },
		{ "localhost", true, true },
		{ "a-b.c0", true, true },
		{ "123.example", true, true },
		{ "[192.0.2.1]", true, false },
		{ "[IPv6:::1]", true, false },
		{ "[ipv6:2001:db8::1]", true, false },
		{ "[IPv6:::ffff:192.0.2.1]", true, false },
		{ "[192.0.2.256]", false, false },
		{ "[192.0.2]", false, false },
		{ "[0192.0.2.1]", false, false },
		{ "[]", false, false },
		{ "[192.0.2.1", false, false },
		{ "192.0.2.1]", false, false },
		{ "", false, false },
		{ ".", false, false },
		{ "a.", false, false },
		{ ".a", false, false },
		{ "a..b", false, false },
		{ "-a.b", false, false },
		{ "a-.b", false, false },
		{ "a_b.c", false, false },
		{ "a b", false, false },
		{ "mx.example.com extra", false, false },
		{ "exa\xc3\xa9mple.com", false, false },
		{ "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.com",	/* 63 */
		    true, true },
		{ "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.com",	/* 64 */
		    false, false },
	};
	char	dom[300];
	size_t	i;
	bool	got;

	(void)state;
	for (i = 0; i < sizeof(vc) / sizeof(vc[0]); i++) {
		if ((got = smtp_parse_helo_valid(vc[i].s)) != vc[i].helo)
			fail_msg("helo_valid(%s) got=%d want=%d", vc[i].s, got,
			    vc[i].helo);
		if ((got = smtp_parse_domain_valid(vc[i].s)) != vc[i].domain)
			fail_msg("domain_valid(%s) got=%d want=%d", vc[i].s,
			    got, vc[i].domain);
	}
	build_domain(dom, 255);
	assert_true(smtp_parse_domain_valid(dom));
	build_domain(dom, 256);
	assert_false(smtp_parse_domain_valid(dom));
}

/* Every verb name parses back to its command, in any case. */
static void
test_parse_names(void **state)
{
	struct smtp_command	 cmd;
	char			 line[64];
	const char		*name;
	size_t			 k;
	int			 c, r;

	(void)state;
	assert_string_equal(smtp_parse_cmd_name(SMTP_CMD_NONE), "none");
	assert_string_equal(smtp_parse_cmd_name(SMTP_CMD_UNKNOWN), "unknown");
	assert_string_equal(smtp_parse_cmd_name(SMTP_CMD_NON_SMTP),
	    "non_smtp");
	assert_string_equal(smtp_parse_cmd_name(SMTP_CMD_MAX), "invalid");
	for (c = SMTP_CMD_HELO; c < SMTP_CMD_MAX; c++) {
		name = smtp_parse_cmd_name((enum smtp_cmd)c);
		r = snprintf(line, sizeof(line), "%s", name);
		assert_true(r > 0 && (size_t)r < sizeof(line));
		for (k = 0; k < (size_t)r; k += 2)
			line[k] = (char)(line[k] - 'A' + 'a');
		(void)smtp_parse_command(line, (size_t)r, &cmd);
		if (cmd.cmd != (enum smtp_cmd)c)
			fail_msg("verb %s: cmd got=%s want=%s", line,
			    smtp_parse_cmd_name(cmd.cmd), name);
		if (strcmp(cmd.verb, line) != 0)
			fail_msg("verb %s: verb got=%s want=%s", line,
			    cmd.verb, line);
	}
	assert_string_equal(smtp_parse_status_name(SMTP_PARSE_BAD_PARAM),
	    "bad_param");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_table),
		cmocka_unit_test(test_parse_lengths),
		cmocka_unit_test(test_parse_validators),
		cmocka_unit_test(test_parse_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
