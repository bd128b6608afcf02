/*
 * smtp_parse.c: PURE SMTP command-line parser (RFC 5321 4.1, 4.5.3.1).
 *
 * Input is one line without its CRLF, of any length and any bytes: it
 * comes straight from the Internet.  Invariants:
 *  - nothing is read past len, nothing is written past the fixed arrays
 *    of struct smtp_command (lengths are checked before every copy);
 *  - out is reset first, so a failed parse never leaves stale fields;
 *  - every status other than OK comes with a static reason text in
 *    out->why, suitable for the 5xx reply.
 *
 * Order of checks: the verb is looked up first; only a line whose first
 * word is not an SMTP verb is compared against the non-SMTP table, before
 * the length/NUL/8-bit checks, because a TLS ClientHello or an HTTP
 * request is binary or long and we want to name it for what it is.
 *
 * Called by smtp_session.c (one call per command line), the unit tests
 * and fuzz/fuzz_smtp_parse.c.  No libevent, no sockets, no clock.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "smtp_parse.h"

/* What a verb accepts after it. */
enum smtp_parse_arg {
	SMTP_ARG_NONE,		/* nothing (trailing blanks are fine) */
	SMTP_ARG_OPTIONAL,	/* anything, kept raw in arg */
	SMTP_ARG_REQUIRED,	/* something, kept raw in arg */
	SMTP_ARG_MAIL,		/* FROM:<reverse-path> [params] */
	SMTP_ARG_RCPT		/* TO:<forward-path> [params] */
};

struct smtp_parse_verb {
	const char		*name;
	enum smtp_parse_arg	 arg;
};

/* The verb table, indexed by enum smtp_cmd; NULL names are not verbs. */
static const struct smtp_parse_verb smtp_parse_verbs[SMTP_CMD_MAX] = {
	[SMTP_CMD_HELO] =	{ "HELO",	SMTP_ARG_REQUIRED },
	[SMTP_CMD_EHLO] =	{ "EHLO",	SMTP_ARG_REQUIRED },
	[SMTP_CMD_MAIL] =	{ "MAIL",	SMTP_ARG_MAIL },
	[SMTP_CMD_RCPT] =	{ "RCPT",	SMTP_ARG_RCPT },
	[SMTP_CMD_DATA] =	{ "DATA",	SMTP_ARG_NONE },
	[SMTP_CMD_RSET] =	{ "RSET",	SMTP_ARG_NONE },
	[SMTP_CMD_NOOP] =	{ "NOOP",	SMTP_ARG_OPTIONAL },
	[SMTP_CMD_QUIT] =	{ "QUIT",	SMTP_ARG_NONE },
	[SMTP_CMD_VRFY] =	{ "VRFY",	SMTP_ARG_OPTIONAL },
	[SMTP_CMD_EXPN] =	{ "EXPN",	SMTP_ARG_OPTIONAL },
	[SMTP_CMD_HELP] =	{ "HELP",	SMTP_ARG_OPTIONAL },
	[SMTP_CMD_STARTTLS] =	{ "STARTTLS",	SMTP_ARG_NONE },
	[SMTP_CMD_AUTH] =	{ "AUTH",	SMTP_ARG_REQUIRED },
	[SMTP_CMD_BDAT] =	{ "BDAT",	SMTP_ARG_REQUIRED },
};

static const char *const smtp_parse_status_names[] = {
	[SMTP_PARSE_OK] = "ok",
	[SMTP_PARSE_EMPTY] = "empty",
	[SMTP_PARSE_UNKNOWN] = "unknown",
	[SMTP_PARSE_NON_SMTP] = "non_smtp",
	[SMTP_PARSE_SYNTAX] = "syntax",
	[SMTP_PARSE_NUL] = "nul",
	[SMTP_PARSE_8BIT] = "8bit",
	[SMTP_PARSE_TOO_LONG] = "too_long",
	[SMTP_PARSE_BAD_PATH] = "bad_path",
	[SMTP_PARSE_PATH_TOO_LONG] = "path_too_long",
	[SMTP_PARSE_SOURCE_ROUTE] = "source_route",
	[SMTP_PARSE_BAD_PARAM] = "bad_param",
};

/*
 * Non-SMTP detection.  Clients of other protocols that reach port 25
 * (scanners, proxies probing for open relays, confused browsers) are
 * named so the session can drop them at once instead of counting errors.
 */
struct smtp_parse_nonsmtp;
typedef bool (*smtp_parse_nonsmtp_fn)(const uint8_t *, size_t,
    const struct smtp_parse_nonsmtp *);

struct smtp_parse_nonsmtp {
	smtp_parse_nonsmtp_fn	 match;
	const char		*pat;	/* prefix or word */
	size_t			 len;	/* pat may hold NULs */
	const char		*mask;	/* binary byte mask, or NULL */
	const char		*why;
};

static bool	smtp_parse_ns_prefix_ci(const uint8_t *, size_t,
		    const struct smtp_parse_nonsmtp *);
static bool	smtp_parse_ns_bytes(const uint8_t *, size_t,
		    const struct smtp_parse_nonsmtp *);
static bool	smtp_parse_ns_word_ci(const uint8_t *, size_t,
		    const struct smtp_parse_nonsmtp *);
static bool	smtp_parse_ns_http(const uint8_t *, size_t,
		    const struct smtp_parse_nonsmtp *);
static bool	smtp_parse_ns_tagged(const uint8_t *, size_t,
		    const struct smtp_parse_nonsmtp *);

#define NS_CI(s, w) \
	{ smtp_parse_ns_prefix_ci, s, sizeof(s) - 1, NULL, w }
#define NS_WORD(s, w) \
	{ smtp_parse_ns_word_ci, s, sizeof(s) - 1, NULL, w }
#define NS_BIN(s, m, w)	{ smtp_parse_ns_bytes, s, sizeof(s) - 1, m, w }

static const char smtp_parse_why_http[] = "HTTP request to an SMTP server";

static const struct smtp_parse_nonsmtp smtp_parse_nonsmtp_table[] = {
	NS_CI("GET ", smtp_parse_why_http),
	NS_CI("POST ", smtp_parse_why_http),
	NS_CI("HEAD ", smtp_parse_why_http),
	NS_CI("PUT ", smtp_parse_why_http),
	NS_CI("DELETE ", smtp_parse_why_http),
	NS_CI("OPTIONS ", smtp_parse_why_http),
	NS_CI("CONNECT ", smtp_parse_why_http),
	NS_CI("TRACE ", smtp_parse_why_http),
	NS_CI("PATCH ", smtp_parse_why_http),
	NS_CI("Host:", smtp_parse_why_http),
	NS_CI("User-Agent:", smtp_parse_why_http),
	NS_CI("Accept:", smtp_parse_why_http),
	NS_CI("Content-Type:", smtp_parse_why_http),
	NS_CI("Content-Length:", smtp_parse_why_http),
	NS_CI("Connection:", smtp_parse_why_http),
	{ smtp_parse_ns_http, NULL, 0, NULL, smtp_parse_why_http },
	/* TLS record, handshake type, version 3.x: a ClientHello. */
	NS_BIN("\x16\x03", NULL, "TLS handshake without STARTTLS"),
	/* SSLv2: 2-byte header with the high bit set, then CLIENT-HELLO. */
	NS_BIN("\x80\x00\x01", "\x80\x00\xff",
	    "SSLv2 handshake without STARTTLS"),
	NS_BIN("SSH-", NULL, "SSH client on the SMTP port"),
	NS_BIN("\x04\x01", NULL, "SOCKS4 request to an SMTP server"),
	NS_BIN("\x04\x02", NULL, "SOCKS4 request to an SMTP server"),
	NS_BIN("\x05\x01", NULL, "SOCKS5 greeting to an SMTP server"),
	NS_BIN("\x05\x02", NULL, "SOCKS5 greeting to an SMTP server"),
	NS_CI("USER ", "POP3 command to an SMTP server"),
	NS_CI("PASS ", "POP3 command to an SMTP server"),
	NS_CI("APOP ", "POP3 command to an SMTP server"),
	NS_WORD("CAPA", "POP3 command to an SMTP server"),
	NS_WORD("CAPABILITY", "IMAP command to an SMTP server"),
	{ smtp_parse_ns_tagged, NULL, 0, NULL,
	    "IMAP command to an SMTP server" },
};

/* IMAP commands that follow a tag ("a001 LOGIN ..."). */
static const char *const smtp_parse_imap_words[] = {
	"LOGIN", "CAPABILITY", "AUTHENTICATE", "LOGOUT", "SELECT", "STARTTLS",
};

static int
smtp_parse_lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

static bool
smtp_parse_is_alpha(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool
smtp_parse_is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static bool
smtp_parse_is_alnum(int c)
{
	return smtp_parse_is_alpha(c) || smtp_parse_is_digit(c);
}

/* RFC 5322 atext. */
static bool
smtp_parse_is_atext(int c)
{
	if (smtp_parse_is_alnum(c))
		return true;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* Case-insensitive compare of n ASCII bytes. */
static bool
smtp_parse_eq_ci(const uint8_t *a, const char *b, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		if (smtp_parse_lower(a[i]) != smtp_parse_lower((uint8_t)b[i]))
			return false;
	return true;
}

static bool
smtp_parse_ns_prefix_ci(const uint8_t *p, size_t len,
    const struct smtp_parse_nonsmtp *ns)
{
	return len >= ns->len && smtp_parse_eq_ci(p, ns->pat, ns->len);
}

static bool
smtp_parse_ns_bytes(const uint8_t *p, size_t len,
    const struct smtp_parse_nonsmtp *ns)
{
	size_t	i;
	uint8_t	m;

	if (len < ns->len)
		return false;
	for (i = 0; i < ns->len; i++) {
		m = ns->mask != NULL ? (uint8_t)ns->mask[i] : 0xff;
		if ((p[i] & m) != ((uint8_t)ns->pat[i] & m))
			return false;
	}
	return true;
}

/* The first word is pat, followed by a space or the end of the line. */
static bool
smtp_parse_ns_word_ci(const uint8_t *p, size_t len,
    const struct smtp_parse_nonsmtp *ns)
{
	return smtp_parse_ns_prefix_ci(p, len, ns) &&
	    (len == ns->len || p[ns->len] == ' ');
}

/* "<TOKEN> <something> HTTP/d.d": any request line, any method. */
static bool
smtp_parse_ns_http(const uint8_t *p, size_t len,
    const struct smtp_parse_nonsmtp *ns)
{
	const uint8_t	*sp, *t;

	(void)ns;
	if (len < 12)
		return false;
	t = p + len - 9;		/* " HTTP/d.d" */
	if (t[0] != ' ' || !smtp_parse_eq_ci(t + 1, "HTTP/", 5) ||
	    !smtp_parse_is_digit(t[6]) || t[7] != '.' ||
	    !smtp_parse_is_digit(t[8]))
		return false;
	sp = memchr(p, ' ', len - 9);
	/* A non-empty token, a space, then a non-empty target. */
	return sp != NULL && sp != p && sp + 1 < t;
}

/* IMAP: "<tag> LOGIN ...", "<tag> CAPABILITY" and friends. */
static bool
smtp_parse_ns_tagged(const uint8_t *p, size_t len,
    const struct smtp_parse_nonsmtp *ns)
{
	const uint8_t	*sp, *w;
	size_t		 i, n, wl;

	(void)ns;
	sp = memchr(p, ' ', len);
	if (sp == NULL || sp == p)
		return false;
	w = sp + 1;
	n = len - (size_t)(w - p);
	for (i = 0; i < sizeof(smtp_parse_imap_words) /
	    sizeof(smtp_parse_imap_words[0]); i++) {
		wl = strlen(smtp_parse_imap_words[i]);
		if (n >= wl && smtp_parse_eq_ci(w, smtp_parse_imap_words[i],
		    wl) && (n == wl || w[wl] == ' '))
			return true;
	}
	return false;
}

static const struct smtp_parse_nonsmtp *
smtp_parse_nonsmtp(const uint8_t *p, size_t len)
{
	size_t	i;

	for (i = 0; i < sizeof(smtp_parse_nonsmtp_table) /
	    sizeof(smtp_parse_nonsmtp_table[0]); i++) {
		if (smtp_parse_nonsmtp_table[i].match(p, len,
		    &smtp_parse_nonsmtp_table[i]))
			return &smtp_parse_nonsmtp_table[i];
	}
	return NULL;
}

static enum smtp_parse_status
smtp_parse_fail(struct smtp_command *out, enum smtp_parse_status st,
    const char *why)
{
	out->why = why;
	return st;
}

static enum smtp_cmd
smtp_parse_lookup(const uint8_t *p, size_t n)
{
	size_t	i;

	for (i = 0; i < SMTP_CMD_MAX; i++) {
		if (smtp_parse_verbs[i].name == NULL)
			continue;
		if (strlen(smtp_parse_verbs[i].name) == n &&
		    smtp_parse_eq_ci(p, smtp_parse_verbs[i].name, n))
			return (enum smtp_cmd)i;
	}
	return SMTP_CMD_UNKNOWN;
}

static bool
smtp_parse_ipv4_valid(const char *s, size_t n)
{
	size_t		 i, digits = 0, parts = 0;
	unsigned int	 v = 0;

	for (i = 0; i <= n; i++) {
		if (i == n || s[i] == '.') {
			if (digits == 0 || v > 255)
				return false;
			parts++;
			digits = 0;
			v = 0;
			continue;
		}
		if (!smtp_parse_is_digit((uint8_t)s[i]) || ++digits > 3)
			return false;
		v = v * 10 + (unsigned int)(s[i] - '0');
	}
	return parts == 4;
}

bool
smtp_parse_literal_valid(const char *s, size_t n)
{
	char		 buf[INET6_ADDRSTRLEN + 1];
	struct in6_addr	 a6;

	if (n < 3 || s[0] != '[' || s[n - 1] != ']')
		return false;
	s++;
	n -= 2;
	if (n >= 5 && smtp_parse_eq_ci((const uint8_t *)s, "IPv6:", 5)) {
		s += 5;
		n -= 5;
		if (n == 0 || n >= sizeof(buf) || memchr(s, '\0', n) != NULL)
			return false;
		memcpy(buf, s, n);
		buf[n] = '\0';
		return inet_pton(AF_INET6, buf, &a6) == 1;
	}
	/* General-address-literal (tag:content) is not accepted. */
	return smtp_parse_ipv4_valid(s, n);
}

bool
smtp_parse_domain_valid(const char *d)
{
	size_t	n, i, lab = 0;
	int	c;

	n = strnlen(d, SMTP_DOMAIN_MAX + 1);
	if (n == 0 || n > SMTP_DOMAIN_MAX)
		return false;
	for (i = 0; i < n; i++) {
		c = (uint8_t)d[i];
		if (c == '.') {
			/* no empty label, no label ending in '-' */
			if (lab == 0 || d[i - 1] == '-')
				return false;
			lab = 0;
			continue;
		}
		if (!smtp_parse_is_alnum(c) && c != '-')
			return false;
		if (c == '-' && lab == 0)
			return false;
		if (++lab > 63)
			return false;
	}
	return lab != 0 && d[n - 1] != '-';
}

bool
smtp_parse_helo_valid(const char *arg)
{
	size_t	n;

	n = strnlen(arg, SMTP_LINE_MAX + 1);
	if (n > SMTP_LINE_MAX)
		return false;
	if (n > 0 && arg[0] == '[')
		return smtp_parse_literal_valid(arg, n);
	return smtp_parse_domain_valid(arg);
}

const char *
smtp_parse_cmd_name(enum smtp_cmd cmd)
{
	switch (cmd) {
	case SMTP_CMD_NONE:
		return "none";
	case SMTP_CMD_UNKNOWN:
		return "unknown";
	case SMTP_CMD_NON_SMTP:
		return "non_smtp";
	default:
		break;
	}
	if ((unsigned int)cmd < SMTP_CMD_MAX &&
	    smtp_parse_verbs[cmd].name != NULL)
		return smtp_parse_verbs[cmd].name;
	return "invalid";
}

const char *
smtp_parse_status_name(enum smtp_parse_status st)
{
	if ((size_t)st < sizeof(smtp_parse_status_names) /
	    sizeof(smtp_parse_status_names[0]))
		return smtp_parse_status_names[st];
	return "invalid";
}

/*
 * Path: "<" [ A-d-l ":" ] Mailbox ">" (RFC 5321 4.1.2).  *ip points at
 * the "<" and is left just past the ">".  The path is built only after
 * every length has been checked.
 */
static enum smtp_parse_status
smtp_parse_path(struct smtp_command *out, const char *s, size_t n,
    size_t *ip, bool mail)
{
	struct smtp_path	*path = &out->path;
	size_t			 i = *ip + 1, ls, ll, ds, dl, k;
	const char		*e;
	bool			 need, literal = false;
	int			 c, r;

	if (i < n && s[i] == '>') {
		if (!mail)
			return smtp_parse_fail(out, SMTP_PARSE_BAD_PATH,
			    "null recipient address");
		path->null = true;
		*ip = i + 1;
		return SMTP_PARSE_OK;
	}
	if (i < n && s[i] == '@')
		return smtp_parse_fail(out, SMTP_PARSE_SOURCE_ROUTE,
		    "source routes are not accepted");

	/* Local-part: Dot-string or Quoted-string. */
	ls = i;
	if (i < n && s[i] == '"') {
		for (i++;; i++) {
			if (i >= n)
				return smtp_parse_fail(out, SMTP_PARSE_SYNTAX,
				    "unterminated quoted local part");
			c = (uint8_t)s[i];
			if (c == '"')
				break;
			if (c == '\\') {
				/* quoted-pair: backslash, then %d32-126 */
				if (i + 1 >= n || (uint8_t)s[i + 1] < 32 ||
				    (uint8_t)s[i + 1] > 126)
					return smtp_parse_fail(out,
					    SMTP_PARSE_BAD_PATH,
					    "bad escape in quoted local part");
				i++;
				continue;
			}
			if (c < 32 || c > 126)
				return smtp_parse_fail(out, SMTP_PARSE_BAD_PATH,
				    "bad character in quoted local part");
		}
		i++;			/* closing quote */
	} else {
		need = true;
		for (; i < n && (smtp_parse_is_atext((uint8_t)s[i]) ||
		    s[i] == '.'); i++) {
			if (s[i] == '.') {
				if (need)
					return smtp_parse_fail(out,
					    SMTP_PARSE_BAD_PATH,
					    "bad dot in local part");
				need = true;
			} else
				need = false;
		}
		if (need)
			return smtp_parse_fail(out, SMTP_PARSE_BAD_PATH,
			    "empty or bad local part");
	}
	ll = i - ls;
	if (i >= n)
		return smtp_parse_fail(out, SMTP_PARSE_SYNTAX,
		    "missing closing >");

	if (s[i] == '>') {
		/* No domain: only RCPT TO:<postmaster> (RFC 5321 4.5.1). */
		if (mail || ll != 10 || !smtp_parse_eq_ci((const uint8_t *)s +
		    ls, "postmaster", 10))
			return smtp_parse_fail(out, SMTP_PARSE_BAD_PATH,
			    "address without domain");
		memcpy(path->local, s + ls, ll);
		path->local[ll] = '\0';
		memcpy(path->addr, s + ls, ll);
		path->addr[ll] = '\0';
		*ip = i + 1;
		return SMTP_PARSE_OK;
	}
	if (s[i] != '@')
		return smtp_parse_fail(out, SMTP_PARSE_BAD_PATH,
		    "bad character in local part");
	if (ll > SMTP_LOCAL_MAX)
		return smtp_parse_fail(out, SMTP_PARSE_PATH_TOO_LONG,
		    "local part too long");

	/* Domain or address literal. */
	ds = ++i;
	if (i < n && s[i] == '[') {
		e = memchr(s + i, ']', n - i);
		if (e == NULL)
			return smtp_parse_fail(out, SMTP_PARSE_BAD_PATH,
			    "unterminated address literal");
		dl = (size_t)(e - (s + i)) + 1;
		if (dl > SMTP_DOMAIN_MAX)
			return smtp_parse_fail(out, SMTP_PARSE_PATH_TOO_LONG,
			    "domain too long");
		if (!smtp_parse_literal_valid(s + i, dl))
			return smtp_parse_fail(out, SMTP_PARSE_BAD_PATH,
			    "bad address literal");
		literal = true;
		i += dl;
	} else {
		for (; i < n && (smtp_parse_is_alnum((uint8_t)s[i]) ||
		    s[i] == '-' || s[i] == '.'); i++)
			;
		dl = i - ds;
		if (dl > SMTP_DOMAIN_MAX)
			return smtp_parse_fail(out, SMTP_PARSE_PATH_TOO_LONG,
			    "domain too long");
	}
	if (i >= n)
		return smtp_parse_fail(out, SMTP_PARSE_SYNTAX,
		    "missing closing >");
	if (s[i] != '>')
		return smtp_parse_fail(out, SMTP_PARSE_BAD_PATH,
		    "bad character in domain");
	if (ll + 1 + dl + 2 > SMTP_PATH_MAX)
		return smtp_parse_fail(out, SMTP_PARSE_PATH_TOO_LONG,
		    "address too long");

	for (k = 0; k < dl; k++)
		path->domain[k] = (char)smtp_parse_lower((uint8_t)s[ds + k]);
	path->domain[dl] = '\0';
	if (!literal && !smtp_parse_domain_valid(path->domain)) {
		path->domain[0] = '\0';
		return smtp_parse_fail(out, SMTP_PARSE_BAD_PATH,
		    "bad domain");
	}
	path->domain_literal = literal;
	memcpy(path->local, s + ls, ll);
	path->local[ll] = '\0';
	r = snprintf(path->addr, sizeof(path->addr), "%s@%s", path->local,
	    path->domain);
	if (r < 0 || (size_t)r >= sizeof(path->addr))
		return smtp_parse_fail(out, SMTP_PARSE_PATH_TOO_LONG,
		    "address too long");
	*ip = i + 1;
	return SMTP_PARSE_OK;
}

/* ESMTP parameters we accept; everything else is refused. */
struct smtp_parse_param {
	const char	*name;
	bool		 mail_only;
	enum smtp_parse_status (*parse)(struct smtp_command *, const char *,
			    size_t);
};

static enum smtp_parse_status
smtp_parse_param_size(struct smtp_command *out, const char *v, size_t n)
{
	uint64_t	x = 0;
	size_t		i;
	unsigned int	d;

	if (out->has_size)
		return smtp_parse_fail(out, SMTP_PARSE_BAD_PARAM,
		    "duplicate SIZE parameter");
	if (n == 0 || n > 20)
		return smtp_parse_fail(out, SMTP_PARSE_BAD_PARAM,
		    "bad SIZE value");
	for (i = 0; i < n; i++) {
		if (!smtp_parse_is_digit((uint8_t)v[i]))
			return smtp_parse_fail(out, SMTP_PARSE_BAD_PARAM,
			    "bad SIZE value");
		d = (unsigned int)(v[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			return smtp_parse_fail(out, SMTP_PARSE_BAD_PARAM,
			    "SIZE value out of range");
		x = x * 10 + d;
	}
	out->has_size = true;
	out->size = x;
	return SMTP_PARSE_OK;
}

static enum smtp_parse_status
smtp_parse_param_body(struct smtp_command *out, const char *v, size_t n)
{
	if (out->body != SMTP_BODY_DEFAULT)
		return smtp_parse_fail(out, SMTP_PARSE_BAD_PARAM,
		    "duplicate BODY parameter");
	if (n == 4 && smtp_parse_eq_ci((const uint8_t *)v, "7BIT", 4))
		out->body = SMTP_BODY_7BIT;
	else if (n == 8 && smtp_parse_eq_ci((const uint8_t *)v, "8BITMIME", 8))
		out->body = SMTP_BODY_8BITMIME;
	else
		return smtp_parse_fail(out, SMTP_PARSE_BAD_PARAM,
		    "bad BODY value");
	return SMTP_PARSE_OK;
}

static const struct smtp_parse_param smtp_parse_params[] = {
	{ "SIZE", true, smtp_parse_param_size },	/* RFC 1870 */
	{ "BODY", true, smtp_parse_param_body },	/* RFC 6152 */
};

/* " KEY=VALUE KEY=VALUE": s starts at the space after ">". */
static enum smtp_parse_status
smtp_parse_esmtp_params(struct smtp_command *out, const char *s, size_t n,
    bool mail)
{
	const struct smtp_parse_param	*pp;
	size_t				 i = 0, ks, kl, vs, vl, k;
	enum smtp_parse_status		 st;
	int				 c;

	for (;;) {
		while (i < n && s[i] == ' ')
			i++;
		if (i >= n)
			return SMTP_PARSE_OK;
		/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
		ks = i;
		if (!smtp_parse_is_alnum((uint8_t)s[i]))
			return smtp_parse_fail(out, SMTP_PARSE_SYNTAX,
			    "bad parameter syntax");
		for (; i < n && (smtp_parse_is_alnum((uint8_t)s[i]) ||
		    s[i] == '-'); i++)
			;
		kl = i - ks;
		vs = vl = 0;
		if (i < n && s[i] == '=') {
			/* esmtp-value = 1*(%d33-60 / %d62-126) */
			vs = ++i;
			for (; i < n && (c = (uint8_t)s[i]) >= 33 && c <= 126 &&
			    c != '='; i++)
				;
			vl = i - vs;
			if (vl == 0)
				return smtp_parse_fail(out, SMTP_PARSE_SYNTAX,
				    "empty parameter value");
		}
		if (i < n && s[i] != ' ')
			return smtp_parse_fail(out, SMTP_PARSE_SYNTAX,
			    "bad parameter syntax");
		pp = NULL;
		for (k = 0; k < sizeof(smtp_parse_params) /
		    sizeof(smtp_parse_params[0]); k++) {
			if (strlen(smtp_parse_params[k].name) == kl &&
			    smtp_parse_eq_ci((const uint8_t *)s + ks,
			    smtp_parse_params[k].name, kl)) {
				pp = &smtp_parse_params[k];
				break;
			}
		}
		if (pp == NULL || (pp->mail_only && !mail))
			return smtp_parse_fail(out, SMTP_PARSE_BAD_PARAM,
			    "parameter not supported");
		if (vs == 0)
			return smtp_parse_fail(out, SMTP_PARSE_BAD_PARAM,
			    "parameter needs a value");
		if ((st = pp->parse(out, s + vs, vl)) != SMTP_PARSE_OK)
			return st;
	}
}

/* "FROM:<path> [params]" or "TO:<path> [params]". */
static enum smtp_parse_status
smtp_parse_mail_rcpt(struct smtp_command *out, bool mail)
{
	const char		*s = out->arg, *kw = mail ? "FROM:" : "TO:";
	size_t			 n = strlen(out->arg), kl = strlen(kw), i;
	enum smtp_parse_status	 st;

	if (n < kl || !smtp_parse_eq_ci((const uint8_t *)s, kw, kl))
		return smtp_parse_fail(out, SMTP_PARSE_SYNTAX, mail ?
		    "syntax: MAIL FROM:<address>" :
		    "syntax: RCPT TO:<address>");
	i = kl;
	/* One space after the colon is tolerated, as Postfix does. */
	if (i < n && s[i] == ' ')
		i++;
	if (i >= n || s[i] != '<')
		return smtp_parse_fail(out, SMTP_PARSE_SYNTAX,
		    "address must be in angle brackets");
	if ((st = smtp_parse_path(out, s, n, &i, mail)) != SMTP_PARSE_OK)
		return st;
	if (i < n) {
		if (s[i] != ' ')
			return smtp_parse_fail(out, SMTP_PARSE_SYNTAX,
			    "junk after address");
		if ((st = smtp_parse_esmtp_params(out, s + i, n - i, mail)) !=
		    SMTP_PARSE_OK)
			return st;
	}
	return SMTP_PARSE_OK;
}

enum smtp_parse_status
smtp_parse_command(const char *line, size_t len, struct smtp_command *out)
{
	const uint8_t			*p = (const uint8_t *)line;
	const struct smtp_parse_nonsmtp	*ns;
	size_t				 end, vlen, a, i;

	memset(out, 0, sizeof(*out));
	out->cmd = SMTP_CMD_NONE;

	/* Trailing blanks are not part of the command. */
	for (end = len; end > 0 && (p[end - 1] == ' ' || p[end - 1] == '\t');
	    end--)
		;
	if (end == 0)
		return smtp_parse_fail(out, SMTP_PARSE_EMPTY, "empty command");

	vlen = 0;
	while (vlen < end && p[vlen] != ' ')
		vlen++;
	for (i = 0; i < vlen && i < sizeof(out->verb) - 1; i++)
		out->verb[i] = (p[i] > 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
	out->verb[i] = '\0';
	out->cmd = smtp_parse_lookup(p, vlen);

	if (out->cmd == SMTP_CMD_UNKNOWN &&
	    (ns = smtp_parse_nonsmtp(p, len)) != NULL) {
		out->cmd = SMTP_CMD_NON_SMTP;
		return smtp_parse_fail(out, SMTP_PARSE_NON_SMTP, ns->why);
	}
	if (len + 2 > SMTP_LINE_MAX)
		return smtp_parse_fail(out, SMTP_PARSE_TOO_LONG,
		    "line too long");
	if (memchr(p, '\0', len) != NULL)
		return smtp_parse_fail(out, SMTP_PARSE_NUL,
		    "NUL byte in command");
	for (i = 0; i < len; i++)
		if (p[i] >= 0x80)
			return smtp_parse_fail(out, SMTP_PARSE_8BIT,
			    "8-bit byte in command (no SMTPUTF8)");
	if (out->cmd == SMTP_CMD_UNKNOWN)
		return smtp_parse_fail(out, SMTP_PARSE_UNKNOWN,
		    "command not recognized");

	/* The argument: after the verb and its separating space(s). */
	for (a = vlen; a < end && p[a] == ' '; a++)
		;
	memcpy(out->arg, p + a, end - a);	/* end - a < SMTP_LINE_MAX */
	out->arg[end - a] = '\0';

	switch (smtp_parse_verbs[out->cmd].arg) {
	case SMTP_ARG_NONE:
		if (end > a)
			return smtp_parse_fail(out, SMTP_PARSE_SYNTAX,
			    "no argument allowed");
		break;
	case SMTP_ARG_REQUIRED:
		if (end == a)
			return smtp_parse_fail(out, SMTP_PARSE_SYNTAX,
			    "argument required");
		break;
	case SMTP_ARG_OPTIONAL:
		break;
	case SMTP_ARG_MAIL:
		return smtp_parse_mail_rcpt(out, true);
	case SMTP_ARG_RCPT:
		return smtp_parse_mail_rcpt(out, false);
	}
	return SMTP_PARSE_OK;
}
