/*
 * config.c: reads moat's configuration file into a struct config.
 *
 * The syntax is the nginx-like subset of libucl (key = value; blocks in
 * braces; lists in brackets; size and time suffixes).  DESIGN.md names
 * libucl, but vstakhov's libucl is not packaged in Debian 12 (Debian's
 * libucl-dev is an unrelated compression library), so this file carries
 * its own small, bounded parser for that subset instead:
 *
 *	# comment to the end of the line, and C-style block comments
 *	key = value;	key value;	key: value	(';' or newline ends)
 *	"strings with \" \\ \n escapes", bare-words, 25mb, 10min, yes
 *	list = [a, "b", c,];
 *	section { ... }		domain "example.test" { ... }
 *
 * Two passes.  parse_*() turns the bytes into a small tree of nodes (key,
 * line, scalar / list / block); nothing there knows any key.  Then ONE
 * table, config_keys[], drives the mapping: each entry has the dotted key
 * name, a type, the offset and size of its struct config field, a range,
 * the default as text and a help line.  The same table produces the
 * defaults (config_default() parses each default text with the same
 * code), the validation, and docs/configuration.md (config_dump_doc()),
 * so the three cannot drift apart.
 *
 * Invariants: the input is bounded (1 MiB file, nesting 8, tokens 4096
 * bytes); every error is "FILE:LINE: KEY: REASON"; config_load() either
 * returns a complete, cross-checked config or fails and changes nothing,
 * so a reload never half-applies.
 *
 * Called by moatd at start, on reload (SIGHUP / moatctl reload) and for
 * --dump-config-doc; by the unit tests.
 */

#include <sys/stat.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#define CONFIG_FILE_MAX		(1024 * 1024)
#define CONFIG_DEPTH_MAX	8
#define CONFIG_TOKEN_MAX	4096
#define CONFIG_DOMAINS_MAX	100000

#define nitems(a)	(sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------- */
/* The key table.                                                   */

enum ckey_type {
	CKEY_STRING,		/* char[] field; size bounds the length */
	CKEY_BOOL,		/* bool */
	CKEY_UINT,		/* plain number; unsigned, size_t or uint64_t */
	CKEY_SIZE,		/* bytes, with k/kb/m/mb/g/gb suffixes */
	CKEY_TIME,		/* milliseconds, with ms/s/min/h/d/w */
	CKEY_LISTEN_LIST,	/* listen[][128] + nlisten */
	CKEY_CHECK,		/* struct config_check: action word or off */
	CKEY_SERVER_LIST	/* struct config_domain servers, per domain */
};

/* Optional extra check for a string value; 0 or -1 with a reason. */
typedef int (*ckey_check_fn)(const char *, char *, size_t);

struct ckey {
	const char	*name;		/* "smtp.message_size_max" */
	enum ckey_type	 type;
	size_t		 offset;	/* in config or config_domain */
	size_t		 size;		/* of that field */
	uint64_t	 min, max;	/* numbers: inclusive range */
	const char	*def;		/* default as it would be written */
	ckey_check_fn	 check;
	const char	*help;
};

static int	check_hostname(const char *, char *, size_t);
static int	check_log_level(const char *, char *, size_t);
static int	check_hostport_opt(const char *, char *, size_t);
static int	check_path(const char *, char *, size_t);

#define F(f)		offsetof(struct config, f), \
			sizeof(((struct config *)NULL)->f)
#define FD(f)		offsetof(struct config_domain, f), \
			sizeof(((struct config_domain *)NULL)->f)
#define SEC		1000ULL
#define MIN		(60 * SEC)
#define HOUR		(60 * MIN)
#define DAY		(24 * HOUR)
#define KB		1024ULL
#define MB		(1024 * KB)
#define GB		(1024 * MB)
#define TB		(1024 * GB)

static const struct ckey config_keys[] = {
	/* top level */
	{ "listen", CKEY_LISTEN_LIST, F(listen), 1, CONFIG_MAX_LISTEN,
	  "[\"127.0.0.1:2525\"]", NULL,
	  "Addresses to accept SMTP on, as \"host:port\" (IPv6 as "
	  "\"[::1]:25\"). The public MX listens on port 25." },
	{ "hostname", CKEY_STRING, F(hostname), 0, 0,
	  "moat.example.test", check_hostname,
	  "Name in the banner and Received headers; set it to the MX name." },
	{ "queue_dir", CKEY_STRING, F(queue_dir), 0, 0, "./var/queue",
	  check_path, "Spool directory: one file per queued message." },
	{ "data_dir", CKEY_STRING, F(data_dir), 0, 0, "./var/data",
	  check_path, "Reputation and state databases." },
	{ "control_socket", CKEY_STRING, F(control_socket), 0, 0,
	  "./var/moat.sock", check_path,
	  "UNIX socket moatctl talks to." },
	{ "log_level", CKEY_STRING, F(log_level), 0, 0, "info",
	  check_log_level, "One of err, warn, info, debug." },
	{ "log_syslog", CKEY_BOOL, F(log_syslog), 0, 0, "no", NULL,
	  "Log to syslog (mail facility) instead of stderr." },

	/* smtp { } */
	{ "smtp.message_size_max", CKEY_SIZE, F(message_size_max),
	  1 * KB, 2 * GB, "25mb", NULL,
	  "Largest message accepted (SIZE in EHLO; 552 past it)." },
	{ "smtp.rcpt_max", CKEY_UINT, F(rcpt_max), 1, 100000, "100", NULL,
	  "Recipients per message; RFC 5321 asks servers to take 100." },
	{ "smtp.line_max", CKEY_SIZE, F(line_max), 80, 64 * KB, "998", NULL,
	  "Longest text line in DATA, without CRLF (RFC 5322: 998); "
	  "longer lines are relayed unchanged and counted as observed "
	  "proto.line_too_long (real mailers send them)." },
	{ "smtp.max_sessions", CKEY_UINT, F(max_sessions), 1, 1000000,
	  "20000", NULL,
	  "Concurrent SMTP sessions in all; past it new ones get 421." },
	{ "smtp.timeout_greeting", CKEY_TIME, F(timeout_greeting),
	  1 * SEC, 1 * HOUR, "5min", NULL,
	  "Client silent after the banner (RFC 5321: 5 minutes)." },
	{ "smtp.timeout_command", CKEY_TIME, F(timeout_command),
	  1 * SEC, 1 * HOUR, "5min", NULL,
	  "Wait for the next command (RFC 5321: 5 minutes)." },
	{ "smtp.timeout_data", CKEY_TIME, F(timeout_data),
	  1 * SEC, 1 * HOUR, "10min", NULL,
	  "Wait between reads inside DATA (RFC 5321 asks at least 3 "
	  "minutes)." },
	{ "smtp.timeout_session", CKEY_TIME, F(timeout_session),
	  1 * SEC, 1 * DAY, "1h", NULL,
	  "Longest whole session, however active." },
	{ "smtp.data_min_rate", CKEY_SIZE, F(data_min_rate), 0, 1 * GB,
	  "0", NULL,
	  "Slowest DATA transfer in bytes per second before the session is "
	  "closed (slow-drip defence); 0 = off." },
	{ "smtp.data_rate_grace", CKEY_TIME, F(data_rate_grace),
	  1 * SEC, 1 * DAY, "30s", NULL,
	  "Time into DATA before smtp.data_min_rate applies (a slow start "
	  "is normal: TCP slow start, the client's own disk)." },
	{ "smtp.bare_lf_normalise", CKEY_BOOL, F(bare_lf_normalise), 0, 0,
	  "no", NULL,
	  "Accept a bare LF in DATA as CRLF instead of applying "
	  "guard.bare_lf (SMTP smuggling defence: leave off)." },

	/* guard { } */
	{ "guard.greet_pause", CKEY_TIME, F(greet_pause), 0, 5 * MIN, "0",
	  NULL,
	  "Wait this long before the banner and catch clients that talk "
	  "first; 0 = off (opt in, e.g. 5s)." },
	{ "guard.pregreet", CKEY_CHECK, F(check_pregreet), 0, 0, "reject",
	  NULL, "Client sent data before the banner." },
	{ "guard.non_smtp", CKEY_CHECK, F(check_non_smtp), 0, 0, "drop",
	  NULL, "Client speaks another protocol (HTTP, binary)." },
	{ "guard.line_too_long", CKEY_CHECK, F(check_line_too_long), 0, 0,
	  "drop", NULL,
	  "Command line over 512 bytes (an overflow attempt)." },
	{ "guard.bare_lf", CKEY_CHECK, F(check_bare_lf), 0, 0, "reject",
	  NULL, "Bare LF or CR in commands or DATA (SMTP smuggling)." },
	{ "guard.pipelining", CKEY_CHECK, F(check_pipelining), 0, 0,
	  "reject", NULL,
	  "Commands sent ahead without PIPELINING or before EHLO." },
	{ "guard.errors", CKEY_CHECK, F(check_errors), 0, 0, "drop", NULL,
	  "What happens at guard.errors_hard errors in one session." },
	{ "guard.junk", CKEY_CHECK, F(check_junk), 0, 0, "drop", NULL,
	  "More than guard.junk_max NOOP/RSET/VRFY/HELP in one session." },
	{ "guard.helo", CKEY_CHECK, F(check_helo), 0, 0, "log", NULL,
	  "Malformed HELO/EHLO argument (many real servers send one, so "
	  "only logged by default)." },
	{ "guard.errors_soft", CKEY_UINT, F(errors_soft), 1, 1000, "3", NULL,
	  "Errors in a session after which each reply is delayed by "
	  "guard.error_delay." },
	{ "guard.errors_hard", CKEY_UINT, F(errors_hard), 1, 1000, "10",
	  NULL, "Errors in a session at which guard.errors applies." },
	{ "guard.error_delay", CKEY_TIME, F(error_delay), 0, 1 * MIN, "1s",
	  NULL, "Tarpit delay per reply past guard.errors_soft." },
	{ "guard.junk_max", CKEY_UINT, F(junk_max), 1, 100000, "50", NULL,
	  "NOOP/RSET/VRFY/HELP allowed per session." },
	{ "guard.pass_remember", CKEY_TIME, F(pass_remember), 0, 30 * DAY,
	  "1d", NULL,
	  "How long an IP that passed the greet pause skips it; 0 = never." },

	/* limits { } */
	{ "limits.conn_per_ip", CKEY_UINT, F(conn_per_ip), 0, 1000000, "20",
	  NULL, "Concurrent connections per client IP; 0 = unlimited." },
	{ "limits.conn_per_net", CKEY_UINT, F(conn_per_net), 0, 1000000,
	  "100", NULL,
	  "Concurrent connections per IPv4 /24 or IPv6 /64; 0 = unlimited." },
	{ "limits.conn_rate_per_ip", CKEY_UINT, F(conn_rate_per_ip), 0,
	  1000000, "120", NULL,
	  "New connections per IP per minute; 0 = unlimited." },
	{ "limits.msg_rate_per_ip", CKEY_UINT, F(msg_rate_per_ip), 0,
	  1000000, "600", NULL,
	  "Messages per IP per minute; 0 = unlimited." },
	{ "limits.rcpt_rate_per_ip", CKEY_UINT, F(rcpt_rate_per_ip), 0,
	  10000000, "3000", NULL,
	  "Recipients per IP per minute; 0 = unlimited." },
	{ "limits.byte_rate_per_ip", CKEY_SIZE, F(byte_rate_per_ip), 0,
	  1 * TB, "1gb", NULL,
	  "Message bytes per IP per minute; 0 = unlimited." },
	{ "limits.overload_sessions", CKEY_UINT, F(overload_sessions), 0,
	  1000000, "15000", NULL,
	  "Sessions at which overload mode starts (shorter timeouts, "
	  "stricter limits); 0 = never." },

	/* queue { } */
	{ "queue.queue_max_messages", CKEY_UINT, F(queue_max_messages), 0,
	  UINT64_MAX, "1000000", NULL,
	  "Queued messages past which new mail gets 452; 0 = unlimited." },
	{ "queue.queue_max_bytes", CKEY_SIZE, F(queue_max_bytes), 0,
	  UINT64_MAX, "10gb", NULL,
	  "Queued bytes past which new mail gets 452; 0 = unlimited." },
	{ "queue.disk_min_free", CKEY_SIZE, F(disk_min_free), 0, UINT64_MAX,
	  "256mb", NULL,
	  "Free space on the queue file system below which MAIL gets 452." },
	{ "queue.queue_lifetime", CKEY_TIME, F(queue_lifetime), 1 * SEC,
	  60 * DAY, "5d", NULL,
	  "Age at which an undelivered message is bounced." },
	{ "queue.delay_warning", CKEY_TIME, F(delay_warning), 0, 60 * DAY,
	  "4h", NULL,
	  "Age at which the sender gets a delay notice; 0 = none." },

	/* delivery { } */
	{ "delivery.retry_min", CKEY_TIME, F(retry_min), 1 * SEC, 1 * DAY,
	  "1min", NULL, "First retry delay; doubles up to retry_max." },
	{ "delivery.retry_max", CKEY_TIME, F(retry_max), 1 * SEC, 1 * DAY,
	  "1h", NULL, "Longest retry delay." },
	{ "delivery.delivery_concurrency", CKEY_UINT,
	  F(delivery_concurrency), 1, 1000, "10", NULL,
	  "Connections to a protected domain's servers at once." },
	{ "delivery.delivery_rate", CKEY_UINT, F(delivery_rate), 0, 1000000,
	  "0", NULL,
	  "Messages per second to a domain (paced drain); 0 = unlimited." },
	{ "delivery.messages_per_connection", CKEY_UINT,
	  F(messages_per_connection), 1, 100000, "100", NULL,
	  "Messages sent over one connection before it is closed." },
	{ "delivery.connect_timeout", CKEY_TIME, F(connect_timeout),
	  1 * SEC, 10 * MIN, "30s", NULL,
	  "Connecting to a protected server." },
	{ "delivery.reply_timeout", CKEY_TIME, F(reply_timeout), 1 * SEC,
	  1 * HOUR, "5min", NULL,
	  "Waiting for each reply of a protected server." },
	{ "delivery.circuit_failures", CKEY_UINT, F(circuit_failures), 1,
	  1000, "5", NULL,
	  "Consecutive failures after which a server is marked down." },
	{ "delivery.circuit_probe", CKEY_TIME, F(circuit_probe), 1 * SEC,
	  1 * HOUR, "30s", NULL,
	  "How often a server marked down is probed." },
	{ "delivery.dsn_relay", CKEY_STRING, F(dsn_relay), 0, 0, "",
	  check_hostport_opt,
	  "host:port that sends bounces to the world; empty = the first "
	  "server of the recipient's domain." },

	/* control { } */
	{ "control.http_listen", CKEY_STRING, F(http_listen), 0, 0, "",
	  check_hostport_opt,
	  "host:port for /metrics, /healthz and the dashboard; empty = off. "
	  "Keep it on loopback." },

	/* domain "NAME" { } */
	{ "domain.server", CKEY_SERVER_LIST, FD(servers), 1,
	  CONFIG_MAX_SERVERS, NULL, NULL,
	  "Required. The protected servers as \"host:port\" (port 25 if "
	  "left out); the first is the primary, the rest are backups "
	  "tried in order." },
};
#define NKEYS	nitems(config_keys)

static const char *const config_sections[] = {
	"smtp", "guard", "limits", "queue", "delivery", "control", "domain"
};

static const char *const config_section_help[] = {
	"Top level",
	"smtp: the SMTP server",
	"guard: connection analysis (protocol checks)",
	"limits: DoS protection",
	"queue: the durable queue",
	"delivery: relaying to the protected servers",
	"control: operator interfaces",
	"domain \"NAME\": protected domains (repeat per domain)",
};

static const char *const config_action_names[] = {
	[CONFIG_ACTION_LOG] = "log",
	[CONFIG_ACTION_TARPIT] = "tarpit",
	[CONFIG_ACTION_TEMPFAIL] = "tempfail",
	[CONFIG_ACTION_REJECT] = "reject",
	[CONFIG_ACTION_DROP] = "drop",
};

/* ---------------------------------------------------------------- */
/* The syntax tree.                                                 */

enum cnode_type {
	CNODE_SCALAR,
	CNODE_LIST,
	CNODE_BLOCK
};

struct cnode {
	char		*key;		/* NULL for list items */
	int		 line;
	enum cnode_type	 type;
	char		*value;		/* scalar text; block name or NULL */
	struct cnode	*child;		/* list items or block body */
	struct cnode	*next;
};

/* Parse state for one file. */
struct cparse {
	const char	*file;		/* name used in messages */
	const char	*p, *end;
	int		 line;
	char		*cause;
};

enum ctok {
	CTOK_EOF,
	CTOK_WORD,
	CTOK_STRING,
	CTOK_EQUAL,		/* '=' or ':' */
	CTOK_SEMI,
	CTOK_COMMA,
	CTOK_LBRACE,
	CTOK_RBRACE,
	CTOK_LBRACKET,
	CTOK_RBRACKET,
	CTOK_ERROR
};

struct ctoken {
	enum ctok	 type;
	int		 line;
	char		 text[CONFIG_TOKEN_MAX + 1];
	size_t		 len;
};

static int
cerr(char **cause, const char *file, int line, const char *key,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * Formats "FILE:LINE: KEY: REASON" into *cause unless a cause is already
 * set (the first error wins).  Always returns -1.
 */
static int
cerr(char **cause, const char *file, int line, const char *key,
    const char *fmt, ...)
{
	va_list	 ap;
	char	*reason;

	if (*cause != NULL)
		return (-1);
	va_start(ap, fmt);
	if (vasprintf(&reason, fmt, ap) == -1)
		reason = NULL;
	va_end(ap);
	if (reason == NULL ||
	    asprintf(cause, "%s:%d: %s: %s", file, line, key, reason) == -1)
		*cause = strdup("configuration error (out of memory)");
	free(reason);
	return (-1);
}

/* Copies a value into buf for a message: printable, bounded. */
static const char *
show(char *buf, size_t len, const char *s)
{
	size_t	 i, o = 0;

	for (i = 0; s[i] != '\0' && o + 5 < len; i++) {
		unsigned char c = s[i];

		if (i >= 60) {
			buf[o++] = '.';
			buf[o++] = '.';
			buf[o++] = '.';
			break;
		}
		if (c >= 0x20 && c < 0x7f && c != '\'')
			buf[o++] = c;
		else
			o += snprintf(buf + o, len - o, "\\x%02x", c);
	}
	buf[o] = '\0';
	return (buf);
}

static void
cnode_free(struct cnode *n)
{
	struct cnode	*next;

	for (; n != NULL; n = next) {
		next = n->next;
		cnode_free(n->child);
		free(n->key);
		free(n->value);
		free(n);
	}
}

static struct cnode *
cnode_new(struct cparse *ps, const char *key, int line, enum cnode_type t)
{
	struct cnode	*n;

	if ((n = calloc(1, sizeof(*n))) == NULL ||
	    (key != NULL && (n->key = strdup(key)) == NULL)) {
		free(n);
		cerr(&ps->cause, ps->file, line, key ? key : "syntax",
		    "out of memory");
		return (NULL);
	}
	n->line = line;
	n->type = t;
	return (n);
}

static bool
is_word_char(unsigned char c)
{
	if (c <= ' ' || c >= 0x7f)
		return (false);
	return (strchr("{}[];,=:\"#'", c) == NULL);
}

/* Skips white space and comments; errors on an unterminated comment. */
static int
skip_space(struct cparse *ps)
{
	int	 start;

	while (ps->p < ps->end) {
		if (*ps->p == '\n') {
			ps->line++;
			ps->p++;
		} else if (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\r')
			ps->p++;
		else if (*ps->p == '#') {
			while (ps->p < ps->end && *ps->p != '\n')
				ps->p++;
		} else if (*ps->p == '/' && ps->p + 1 < ps->end &&
		    ps->p[1] == '*') {
			start = ps->line;
			ps->p += 2;
			for (;;) {
				if (ps->p + 1 >= ps->end)
					return (cerr(&ps->cause, ps->file,
					    start, "syntax",
					    "unterminated comment"));
				if (ps->p[0] == '*' && ps->p[1] == '/')
					break;
				if (*ps->p == '\n')
					ps->line++;
				ps->p++;
			}
			ps->p += 2;
		} else
			break;
	}
	return (0);
}

/* Reads the next token into t; returns t->type (CTOK_ERROR on error). */
static enum ctok
next_token(struct cparse *ps, struct ctoken *t)
{
	unsigned char	 c;
	const char	*punct = "=:;,{}[]";
	static const enum ctok ptype[] = { CTOK_EQUAL, CTOK_EQUAL, CTOK_SEMI,
	    CTOK_COMMA, CTOK_LBRACE, CTOK_RBRACE, CTOK_LBRACKET,
	    CTOK_RBRACKET };
	const char	*q;

	t->len = 0;
	t->text[0] = '\0';
	/* An error sticks: later reads must not look like success. */
	if (ps->cause != NULL)
		return (t->type = CTOK_ERROR);
	if (skip_space(ps) == -1)
		return (t->type = CTOK_ERROR);
	t->line = ps->line;
	if (ps->p >= ps->end)
		return (t->type = CTOK_EOF);
	c = *ps->p;
	if (c != '\0' && (q = strchr(punct, c)) != NULL) {
		ps->p++;
		t->text[0] = c;
		t->text[1] = '\0';
		t->len = 1;
		return (t->type = ptype[q - punct]);
	}
	if (c == '"') {
		ps->p++;
		for (;;) {
			if (ps->p >= ps->end) {
				cerr(&ps->cause, ps->file, t->line, "syntax",
				    "unterminated string");
				return (t->type = CTOK_ERROR);
			}
			c = *ps->p++;
			if (c == '"')
				break;
			if (c == '\n') {
				cerr(&ps->cause, ps->file, t->line, "syntax",
				    "unterminated string");
				return (t->type = CTOK_ERROR);
			}
			if (c == '\\') {
				if (ps->p >= ps->end)
					continue;	/* reported above */
				c = *ps->p++;
				if (c == 'n')
					c = '\n';
				else if (c == 't')
					c = '\t';
				else if (c != '"' && c != '\\') {
					cerr(&ps->cause, ps->file, ps->line,
					    "syntax", "unknown escape '\\%c' "
					    "in string (use \\\" \\\\ \\n)",
					    isprint(c) ? c : '?');
					return (t->type = CTOK_ERROR);
				}
			}
			if (c == '\0') {
				cerr(&ps->cause, ps->file, ps->line, "syntax",
				    "NUL byte in string");
				return (t->type = CTOK_ERROR);
			}
			if (t->len >= CONFIG_TOKEN_MAX) {
				cerr(&ps->cause, ps->file, t->line, "syntax",
				    "string longer than %d bytes",
				    CONFIG_TOKEN_MAX);
				return (t->type = CTOK_ERROR);
			}
			t->text[t->len++] = c;
		}
		t->text[t->len] = '\0';
		return (t->type = CTOK_STRING);
	}
	if (!is_word_char(c)) {
		cerr(&ps->cause, ps->file, ps->line, "syntax",
		    "unexpected character '%s'",
		    show((char[16]){ 0 }, 16, (char[2]){ (char)c, 0 }));
		return (t->type = CTOK_ERROR);
	}
	while (ps->p < ps->end && is_word_char(*ps->p)) {
		if (t->len >= CONFIG_TOKEN_MAX) {
			cerr(&ps->cause, ps->file, t->line, "syntax",
			    "word longer than %d bytes", CONFIG_TOKEN_MAX);
			return (t->type = CTOK_ERROR);
		}
		t->text[t->len++] = *ps->p++;
	}
	t->text[t->len] = '\0';
	return (t->type = CTOK_WORD);
}

/* Looks at the next token without consuming it. */
static enum ctok
peek_token(struct cparse *ps, struct ctoken *t)
{
	const char	*p = ps->p;
	int		 line = ps->line;
	enum ctok	 type;

	type = next_token(ps, t);
	ps->p = p;
	ps->line = line;
	return (type);
}

static const char *
tok_desc(const struct ctoken *t)
{
	switch (t->type) {
	case CTOK_EOF:
		return ("end of file");
	case CTOK_WORD:
	case CTOK_STRING:
		return ("a value");
	default:
		return (t->text);
	}
}

static int	parse_body(struct cparse *, struct cnode **, int, int,
		    const char *);

/* "section.key" (or just "key" at the top) for messages. */
static void
full_name(char *buf, size_t len, const char *prefix, const char *key)
{
	if (*prefix == '\0')
		snprintf(buf, len, "%s", key);
	else
		snprintf(buf, len, "%s.%s", prefix, key);
}

/* Parses "[ v, v, ... ]" after the '[' into n->child. */
static int
parse_list(struct cparse *ps, struct cnode *n, int start, const char *key)
{
	struct ctoken	*t;
	struct cnode	*item, **tail = &n->child;
	int		 rv = -1;

	if ((t = malloc(sizeof(*t))) == NULL)
		return (cerr(&ps->cause, ps->file, start, key,
		    "out of memory"));
	for (;;) {
		switch (next_token(ps, t)) {
		case CTOK_ERROR:
			goto out;
		case CTOK_EOF:
			cerr(&ps->cause, ps->file, start, key,
			    "unterminated list, '[' has no matching ']'");
			goto out;
		case CTOK_RBRACKET:
			rv = 0;
			goto out;
		case CTOK_WORD:
		case CTOK_STRING:
			break;
		default:
			cerr(&ps->cause, ps->file, t->line, key,
			    "expected a list item or ']', got '%s'",
			    tok_desc(t));
			goto out;
		}
		if ((item = cnode_new(ps, NULL, t->line, CNODE_SCALAR)) ==
		    NULL)
			goto out;
		*tail = item;
		tail = &item->next;
		if ((item->value = strdup(t->text)) == NULL) {
			cerr(&ps->cause, ps->file, t->line, key,
			    "out of memory");
			goto out;
		}
		switch (next_token(ps, t)) {
		case CTOK_ERROR:
			goto out;
		case CTOK_COMMA:
			break;
		case CTOK_RBRACKET:
			rv = 0;
			goto out;
		case CTOK_EOF:
			cerr(&ps->cause, ps->file, start, key,
			    "unterminated list, '[' has no matching ']'");
			goto out;
		default:
			cerr(&ps->cause, ps->file, t->line, key,
			    "expected ',' or ']' in list, got '%s'",
			    tok_desc(t));
			goto out;
		}
	}
out:
	free(t);
	return (rv);
}

/*
 * Parses one statement whose key token is in t.  *out gets the node.
 */
static int
parse_stmt(struct cparse *ps, struct ctoken *t, struct cnode **out,
    int depth, const char *prefix)
{
	struct cnode	*n = NULL;
	int		 line = t->line;
	bool		 equal = false;
	char		 name[128], key[256], b[80];

	if (t->len >= sizeof(name))
		return (cerr(&ps->cause, ps->file, line, "syntax",
		    "key longer than %zu bytes", sizeof(name) - 1));
	memcpy(name, t->text, t->len + 1);
	full_name(key, sizeof(key), prefix, show(b, sizeof(b), name));

	if (next_token(ps, t) == CTOK_EQUAL) {
		equal = true;
		next_token(ps, t);
	}
	switch (t->type) {
	case CTOK_ERROR:
		return (-1);
	case CTOK_LBRACE:
		if (equal)
			goto block_named_equal;
		if ((n = cnode_new(ps, name, line, CNODE_BLOCK)) == NULL)
			return (-1);
		*out = n;
		return (parse_body(ps, &n->child, depth + 1, line, key));
	case CTOK_LBRACKET:
		if (depth + 1 > CONFIG_DEPTH_MAX)
			return (cerr(&ps->cause, ps->file, line, key,
			    "nested deeper than %d", CONFIG_DEPTH_MAX));
		if ((n = cnode_new(ps, name, line, CNODE_LIST)) == NULL)
			return (-1);
		*out = n;
		if (parse_list(ps, n, t->line, key) == -1)
			return (-1);
		break;
	case CTOK_WORD:
	case CTOK_STRING:
		if ((n = cnode_new(ps, name, line, CNODE_SCALAR)) == NULL)
			return (-1);
		*out = n;
		if ((n->value = strdup(t->text)) == NULL)
			return (cerr(&ps->cause, ps->file, line, key,
			    "out of memory"));
		if (peek_token(ps, t) == CTOK_ERROR)
			return (-1);
		if (t->type == CTOK_LBRACE && !equal) {
			/* domain "example.test" { ... } */
			next_token(ps, t);
			n->type = CNODE_BLOCK;
			full_name(key, sizeof(key), prefix, name);
			snprintf(key + strlen(key), sizeof(key) - strlen(key),
			    " \"%s\"", show(b, sizeof(b), n->value));
			return (parse_body(ps, &n->child, depth + 1, line,
			    key));
		}
		break;
	case CTOK_EOF:
	case CTOK_SEMI:
	case CTOK_RBRACE:
		return (cerr(&ps->cause, ps->file, line, key,
		    "missing value"));
	default:
		return (cerr(&ps->cause, ps->file, t->line, key,
		    "unexpected '%s'", tok_desc(t)));
	}

	/* A value ends at ';', '}', end of file or the end of its line. */
	switch (peek_token(ps, t)) {
	case CTOK_ERROR:
		return (-1);
	case CTOK_SEMI:
		next_token(ps, t);
		return (0);
	case CTOK_RBRACE:
	case CTOK_EOF:
		return (0);
	default:
		if (t->line != ps->line)
			return (0);
		return (cerr(&ps->cause, ps->file, t->line, key,
		    "expected ';' after the value, got '%s'", tok_desc(t)));
	}

block_named_equal:
	return (cerr(&ps->cause, ps->file, line, key,
	    "a block takes no '=' (write '%s { ... }')", name));
}

/*
 * Parses statements until '}' (depth > 0) or end of file (depth 0).
 * open_line and name say where the block began, for "unterminated".
 */
static int
parse_body(struct cparse *ps, struct cnode **head, int depth, int open_line,
    const char *name)
{
	struct ctoken	*t;
	struct cnode	**tail = head, *n;
	int		 rv = -1;

	if (depth > CONFIG_DEPTH_MAX)
		return (cerr(&ps->cause, ps->file, open_line, name,
		    "nested deeper than %d", CONFIG_DEPTH_MAX));
	if ((t = malloc(sizeof(*t))) == NULL)
		return (cerr(&ps->cause, ps->file, open_line, name,
		    "out of memory"));
	for (;;) {
		switch (next_token(ps, t)) {
		case CTOK_ERROR:
			goto out;
		case CTOK_EOF:
			if (depth > 0) {
				cerr(&ps->cause, ps->file, open_line, name,
				    "unterminated block, '{' has no "
				    "matching '}'");
				goto out;
			}
			rv = 0;
			goto out;
		case CTOK_RBRACE:
			if (depth == 0) {
				cerr(&ps->cause, ps->file, t->line, "syntax",
				    "'}' without a matching '{'");
				goto out;
			}
			rv = 0;
			goto out;
		case CTOK_SEMI:
			continue;	/* empty statement */
		case CTOK_WORD:
			break;
		default:		/* keys are bare words, never quoted */
			cerr(&ps->cause, ps->file, t->line, "syntax",
			    "expected a key, got '%s'", tok_desc(t));
			goto out;
		}
		n = NULL;
		if (parse_stmt(ps, t, &n, depth, depth == 0 ? "" : name) ==
		    -1) {
			if (n != NULL) {
				*tail = n;
			}
			goto out;
		}
		*tail = n;
		tail = &n->next;
	}
out:
	free(t);
	return (rv);
}

/* ---------------------------------------------------------------- */
/* Values.                                                          */

/* Parses digits and a suffix from units[]; 0 or -1. */
struct cunit {
	const char	*suffix;
	uint64_t	 mult;
};

static const struct cunit size_units[] = {
	{ "", 1 }, { "b", 1 }, { "k", KB }, { "kb", KB }, { "m", MB },
	{ "mb", MB }, { "g", GB }, { "gb", GB }, { "t", TB }, { "tb", TB },
};
static const struct cunit time_units[] = {
	{ "", SEC }, { "ms", 1 }, { "s", SEC },
	{ "min", MIN }, { "h", HOUR }, { "d", DAY }, { "w", 7 * DAY },
};

static int
parse_number(const char *s, const struct cunit *u, size_t nu,
    uint64_t *out)
{
	uint64_t	 v = 0;
	const char	*p = s;
	size_t		 i;

	if (!isdigit((unsigned char)*p))
		return (-1);
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return (-1);
		v = v * 10 + (uint64_t)(*p - '0');
	}
	for (i = 0; i < nu; i++) {
		if (strcasecmp(p, u[i].suffix) == 0) {
			if (v != 0 && u[i].mult > UINT64_MAX / v)
				return (-1);
			*out = v * u[i].mult;
			return (0);
		}
	}
	return (-1);
}

/* Writes v as the shortest exact text with the largest unit. */
static const char *
fmt_unit(char *buf, size_t len, uint64_t v, enum ckey_type type)
{
	static const struct { const char *s; uint64_t m; } sz[] = {
		{ "tb", TB }, { "gb", GB }, { "mb", MB }, { "kb", KB },
	}, tm[] = {
		{ "w", 7 * DAY }, { "d", DAY }, { "h", HOUR }, { "min", MIN },
		{ "s", SEC },
	};
	size_t	 i;

	if (v == UINT64_MAX) {
		snprintf(buf, len, "unlimited");
		return (buf);
	}
	if (type == CKEY_SIZE) {
		for (i = 0; i < nitems(sz); i++)
			if (v != 0 && v % sz[i].m == 0) {
				snprintf(buf, len, "%llu%s",
				    (unsigned long long)(v / sz[i].m), sz[i].s);
				return (buf);
			}
		snprintf(buf, len, "%llu", (unsigned long long)v);
	} else if (type == CKEY_TIME) {
		for (i = 0; i < nitems(tm); i++)
			if (v != 0 && v % tm[i].m == 0) {
				snprintf(buf, len, "%llu%s",
				    (unsigned long long)(v / tm[i].m), tm[i].s);
				return (buf);
			}
		if (v == 0)
			snprintf(buf, len, "0");
		else
			snprintf(buf, len, "%llums", (unsigned long long)v);
	} else
		snprintf(buf, len, "%llu", (unsigned long long)v);
	return (buf);
}

/*
 * Copies s into a fixed field, zeroing the rest of it so that two equal
 * configs compare equal byte for byte (snprintf may leave bytes past its
 * NUL).  Returns -1 if s does not fit.
 */
static int
set_field(char *dst, size_t len, const char *s, size_t slen)
{
	if (slen >= len)
		return (-1);
	memset(dst, 0, len);
	memcpy(dst, s, slen);
	return (0);
}

static bool
valid_hostname(const char *s)
{
	size_t	 len = strlen(s), label = 0, i;

	if (len == 0 || len > 253)
		return (false);
	for (i = 0; i <= len; i++) {
		if (s[i] == '.' || s[i] == '\0') {
			if (label == 0 || label > 63 || s[i - 1] == '-')
				return (false);
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)s[i]) && s[i] != '-')
			return (false);
		if (label == 0 && s[i] == '-')
			return (false);
		label++;
	}
	return (true);
}

int
config_parse_hostport(const char *s, const char *defport, char *host,
    size_t hostlen, char *port, size_t portlen, char **cause)
{
	const char		*colon, *h, *p;
	size_t			 hlen;
	struct in6_addr		 in6;
	char			 tmp[CONFIG_HOST_MAX], pbuf[16];
	unsigned long		 n;
	char			*ep;

	*cause = NULL;
	if (*s == '[') {
		if ((colon = strchr(s, ']')) == NULL)
			goto bad;
		h = s + 1;
		hlen = colon - h;
		colon++;
		if (*colon != '\0' && *colon != ':')
			goto bad;
		if (*colon == '\0')
			colon = NULL;
		if (hlen == 0 || hlen >= sizeof(tmp))
			goto bad;
		memcpy(tmp, h, hlen);
		tmp[hlen] = '\0';
		if (inet_pton(AF_INET6, tmp, &in6) != 1) {
			if (asprintf(cause, "'%s' is not an IPv6 address",
			    show((char[80]){ 0 }, 80, tmp)) == -1)
				*cause = NULL;
			return (-1);
		}
	} else {
		colon = strrchr(s, ':');
		if (colon != NULL && strchr(s, ':') != colon) {
			if (asprintf(cause, "IPv6 address must be in "
			    "brackets, as \"[::1]:25\"") == -1)
				*cause = NULL;
			return (-1);
		}
		h = s;
		hlen = colon != NULL ? (size_t)(colon - s) : strlen(s);
		if (hlen == 0 || hlen >= sizeof(tmp))
			goto bad;
		memcpy(tmp, h, hlen);
		tmp[hlen] = '\0';
		if (!valid_hostname(tmp) && strcmp(tmp, "*") != 0)
			goto bad;
	}
	if (colon != NULL) {
		p = colon + 1;
		errno = 0;
		n = strtoul(p, &ep, 10);
		if (!isdigit((unsigned char)*p) || *ep != '\0' || errno != 0 ||
		    n < 1 || n > 65535) {
			if (asprintf(cause, "'%s' has a bad port (use "
			    "1..65535)", show((char[80]){ 0 }, 80, s)) == -1)
				*cause = NULL;
			return (-1);
		}
	} else if (defport == NULL) {
		if (asprintf(cause, "'%s' has no port (use host:port)",
		    show((char[80]){ 0 }, 80, s)) == -1)
			*cause = NULL;
		return (-1);
	} else
		p = defport;
	/* The port as digits without leading zeros: "025" is "25". */
	n = strtoul(p, NULL, 10);
	if (snprintf(pbuf, sizeof(pbuf), "%lu", n) >= (int)sizeof(pbuf) ||
	    set_field(host, hostlen, tmp, hlen) == -1 ||
	    set_field(port, portlen, pbuf, strlen(pbuf)) == -1)
		goto bad;
	return (0);
bad:
	if (asprintf(cause, "'%s' is not host:port (IPv6 as [::1]:25)",
	    show((char[80]){ 0 }, 80, s)) == -1)
		*cause = NULL;
	return (-1);
}

static int
check_hostname(const char *s, char *err, size_t len)
{
	char	 b[80];

	if (valid_hostname(s))
		return (0);
	snprintf(err, len, "'%s' is not a host name", show(b, sizeof(b), s));
	return (-1);
}

static int
check_log_level(const char *s, char *err, size_t len)
{
	char	 b[80];

	if (strcmp(s, "err") == 0 || strcmp(s, "warn") == 0 ||
	    strcmp(s, "info") == 0 || strcmp(s, "debug") == 0)
		return (0);
	snprintf(err, len, "'%s' is not a log level (use err, warn, info or "
	    "debug)", show(b, sizeof(b), s));
	return (-1);
}

static int
check_hostport_opt(const char *s, char *err, size_t len)
{
	char	 host[CONFIG_HOST_MAX], port[8], *cause;

	if (*s == '\0')
		return (0);
	if (config_parse_hostport(s, NULL, host, sizeof(host), port,
	    sizeof(port), &cause) == 0)
		return (0);
	snprintf(err, len, "%s", cause != NULL ? cause : "out of memory");
	free(cause);
	return (-1);
}

static int
check_path(const char *s, char *err, size_t len)
{
	if (*s != '\0')
		return (0);
	snprintf(err, len, "must not be empty");
	return (-1);
}

/* ---------------------------------------------------------------- */
/* Mapping the tree onto struct config through the table.           */

struct cload {
	const char	*file;
	struct config	*conf;
	char		*cause;
	int		 set_line[NKEYS];	/* 0 = default */
};

static const struct ckey *
key_find(const char *name)
{
	size_t	 i;

	for (i = 0; i < NKEYS; i++)
		if (strcmp(config_keys[i].name, name) == 0)
			return (&config_keys[i]);
	return (NULL);
}

static size_t
edit_distance(const char *a, const char *b)
{
	size_t	 la = strlen(a), lb = strlen(b), i, j, prev, tmp;
	size_t	 row[64];

	if (la >= nitems(row) || lb >= nitems(row))
		return (SIZE_MAX);
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		for (j = 1; j <= lb; j++) {
			tmp = row[j];
			row[j] = prev + (a[i - 1] != b[j - 1]);
			if (row[j - 1] + 1 < row[j])
				row[j] = row[j - 1] + 1;
			if (tmp + 1 < row[j])
				row[j] = tmp + 1;
			prev = tmp;
		}
	}
	return (row[lb]);
}

/* The closest key name to a misspelled one, or NULL. */
static const char *
key_suggest(const char *name)
{
	const char	*best = NULL, *leaf, *kleaf, *dot;
	size_t		 i, d, bestd = 3;

	leaf = (dot = strrchr(name, '.')) != NULL ? dot + 1 : name;
	for (i = 0; i < NKEYS; i++) {
		if (strncmp(config_keys[i].name, "domain.", 7) == 0)
			continue;
		kleaf = (dot = strrchr(config_keys[i].name, '.')) != NULL ?
		    dot + 1 : config_keys[i].name;
		/* Right key, wrong section. */
		if (strcmp(kleaf, leaf) == 0)
			return (config_keys[i].name);
		d = edit_distance(name, config_keys[i].name);
		if (d < bestd) {
			bestd = d;
			best = config_keys[i].name;
		}
	}
	return (best);
}

static int
want_scalar(struct cload *ld, const struct cnode *n, const char *name)
{
	if (n->type == CNODE_SCALAR)
		return (0);
	return (cerr(&ld->cause, ld->file, n->line, name, "expected a "
	    "single value, not a %s", n->type == CNODE_LIST ? "list" :
	    "block"));
}

/* Stores a number into a field of 4 or 8 bytes (unsigned, size_t, u64). */
static int
store_uint(struct cload *ld, const struct ckey *k, void *field, uint64_t v,
    const struct cnode *n, const char *name)
{
	char	 a[32], b[32], c[32];
	uint64_t max = k->max;

	if (k->size == sizeof(unsigned) && max > UINT_MAX)
		max = UINT_MAX;
	if (v < k->min || v > max)
		return (cerr(&ld->cause, ld->file, n->line, name,
		    "%s is out of range (%s..%s)",
		    fmt_unit(a, sizeof(a), v, k->type),
		    fmt_unit(b, sizeof(b), k->min, k->type),
		    fmt_unit(c, sizeof(c), max, k->type)));
	if (k->size == sizeof(unsigned)) {
		unsigned u = (unsigned)v;
		memcpy(field, &u, sizeof(u));
	} else if (k->size == sizeof(uint64_t)) {
		uint64_t u = v;
		memcpy(field, &u, sizeof(u));
	} else
		fatalx("config key %s: field size %zu", k->name, k->size);
	return (0);
}

static int
apply_listen(struct cload *ld, const struct ckey *k, const struct cnode *n,
    const char *name)
{
	const struct cnode	*it, *one = n;
	char			 host[CONFIG_HOST_MAX], port[8], *why;
	size_t			 count = 0, i;
	struct config		*c = ld->conf;

	(void)k;
	if (n->type == CNODE_BLOCK)
		return (want_scalar(ld, n, name));
	it = n->type == CNODE_LIST ? n->child : one;
	if (it == NULL)
		return (cerr(&ld->cause, ld->file, n->line, name,
		    "empty list (give at least one host:port)"));
	for (; it != NULL; it = n->type == CNODE_LIST ? it->next : NULL) {
		if (count >= CONFIG_MAX_LISTEN)
			return (cerr(&ld->cause, ld->file, it->line, name,
			    "more than %d addresses", CONFIG_MAX_LISTEN));
		if (config_parse_hostport(it->value, NULL, host, sizeof(host),
		    port, sizeof(port), &why) == -1) {
			cerr(&ld->cause, ld->file, it->line, name, "%s",
			    why != NULL ? why : "out of memory");
			free(why);
			return (-1);
		}
		for (i = 0; i < count; i++)
			if (strcmp(c->listen[i], it->value) == 0)
				return (cerr(&ld->cause, ld->file, it->line,
				    name, "'%s' listed twice",
				    show(host, sizeof(host), it->value)));
		if (set_field(c->listen[count], sizeof(c->listen[0]),
		    it->value, strlen(it->value)) == -1)
			return (cerr(&ld->cause, ld->file, it->line, name,
			    "address too long"));
		count++;
	}
	c->nlisten = count;
	return (0);
}

static int
apply_servers(struct cload *ld, struct config_domain *d,
    const struct cnode *n, const char *name)
{
	const struct cnode	*it;
	char			*why;
	size_t			 count = 0;

	if (n->type == CNODE_BLOCK)
		return (want_scalar(ld, n, name));
	it = n->type == CNODE_LIST ? n->child : n;
	if (it == NULL)
		return (cerr(&ld->cause, ld->file, n->line, name,
		    "empty server list"));
	for (; it != NULL; it = n->type == CNODE_LIST ? it->next : NULL) {
		if (count >= CONFIG_MAX_SERVERS)
			return (cerr(&ld->cause, ld->file, it->line, name,
			    "more than %d servers", CONFIG_MAX_SERVERS));
		if (config_parse_hostport(it->value, "25",
		    d->servers[count].host, sizeof(d->servers[count].host),
		    d->servers[count].port, sizeof(d->servers[count].port),
		    &why) == -1) {
			cerr(&ld->cause, ld->file, it->line, name, "%s",
			    why != NULL ? why : "out of memory");
			free(why);
			return (-1);
		}
		/* List order is priority: the first is the primary. */
		d->servers[count].priority = (int)count;
		count++;
	}
	d->nservers = count;
	return (0);
}

static int
parse_action(const char *s, struct config_check *chk)
{
	size_t	 i;

	if (strcasecmp(s, "off") == 0) {
		chk->enabled = false;
		chk->action = CONFIG_ACTION_LOG;
		return (0);
	}
	for (i = 0; i < nitems(config_action_names); i++)
		if (strcasecmp(s, config_action_names[i]) == 0) {
			chk->enabled = true;
			chk->action = (enum config_action)i;
			return (0);
		}
	return (-1);
}

/* Applies one value node to key k of ld->conf. */
static int
apply_key(struct cload *ld, const struct ckey *k, const struct cnode *n,
    const char *name)
{
	char		 b[80], err[256];
	char		*field = (char *)ld->conf + k->offset;
	uint64_t	 v;
	bool		 bv;
	size_t		 len;

	if (k->type == CKEY_LISTEN_LIST)
		return (apply_listen(ld, k, n, name));
	if (want_scalar(ld, n, name) == -1)
		return (-1);
	switch (k->type) {
	case CKEY_STRING:
		len = strlen(n->value);
		if (len >= k->size)
			return (cerr(&ld->cause, ld->file, n->line, name,
			    "longer than %zu bytes", k->size - 1));
		if (k->check != NULL &&
		    k->check(n->value, err, sizeof(err)) == -1)
			return (cerr(&ld->cause, ld->file, n->line, name,
			    "%s", err));
		(void)set_field(field, k->size, n->value, len);
		return (0);
	case CKEY_BOOL:
		if (strcasecmp(n->value, "yes") == 0 ||
		    strcasecmp(n->value, "true") == 0 ||
		    strcasecmp(n->value, "on") == 0)
			bv = true;
		else if (strcasecmp(n->value, "no") == 0 ||
		    strcasecmp(n->value, "false") == 0 ||
		    strcasecmp(n->value, "off") == 0)
			bv = false;
		else
			return (cerr(&ld->cause, ld->file, n->line, name,
			    "'%s' is not yes or no", show(b, sizeof(b),
			    n->value)));
		memcpy(field, &bv, sizeof(bv));
		return (0);
	case CKEY_UINT:
		if (parse_number(n->value, size_units, 1, &v) == -1)
			return (cerr(&ld->cause, ld->file, n->line, name,
			    "'%s' is not a number", show(b, sizeof(b),
			    n->value)));
		return (store_uint(ld, k, field, v, n, name));
	case CKEY_SIZE:
		if (parse_number(n->value, size_units, nitems(size_units),
		    &v) == -1)
			return (cerr(&ld->cause, ld->file, n->line, name,
			    "'%s' is not a size (use e.g. 25mb, 512kb, 1gb)",
			    show(b, sizeof(b), n->value)));
		return (store_uint(ld, k, field, v, n, name));
	case CKEY_TIME:
		if (parse_number(n->value, time_units, nitems(time_units),
		    &v) == -1) {
			len = strlen(n->value);
			if (len > 0 && tolower((unsigned char)
			    n->value[len - 1]) == 'm' && len < 40)
				return (cerr(&ld->cause, ld->file, n->line,
				    name, "'%s' is not a time (use %.*smin "
				    "for minutes)", show(b, sizeof(b),
				    n->value), (int)len - 1, n->value));
			return (cerr(&ld->cause, ld->file, n->line, name,
			    "'%s' is not a time (use e.g. 500ms, 30s, 5min, "
			    "1h, 5d, 1w)", show(b, sizeof(b), n->value)));
		}
		return (store_uint(ld, k, field, v, n, name));
	case CKEY_CHECK: {
		struct config_check chk;

		memset(&chk, 0, sizeof(chk));	/* padding, for memcmp */
		if (parse_action(n->value, &chk) == -1)
			return (cerr(&ld->cause, ld->file, n->line, name,
			    "'%s' is not an action (use log, tarpit, "
			    "tempfail, reject, drop or off)",
			    show(b, sizeof(b), n->value)));
		memcpy(field, &chk, sizeof(chk));
		return (0);
	}
	default:
		fatalx("config key %s: type %d", k->name, k->type);
	}
}

/* Sets key "name" from node n; checks unknown keys and repeats. */
static int
apply_named(struct cload *ld, const char *name, const struct cnode *n)
{
	const struct ckey	*k;
	const char		*hint;
	char			 b[80];
	size_t			 i;

	if ((k = key_find(name)) == NULL || k->type == CKEY_SERVER_LIST) {
		if ((hint = key_suggest(name)) != NULL)
			return (cerr(&ld->cause, ld->file, n->line, name,
			    "unknown key (did you mean '%s'?)", hint));
		return (cerr(&ld->cause, ld->file, n->line,
		    show(b, sizeof(b), name), "unknown key"));
	}
	i = (size_t)(k - config_keys);
	if (ld->set_line[i] != 0)
		return (cerr(&ld->cause, ld->file, n->line, name,
		    "set twice (first on line %d)", ld->set_line[i]));
	ld->set_line[i] = n->line;
	return (apply_key(ld, k, n, name));
}

static int
apply_domain(struct cload *ld, const struct cnode *n)
{
	struct config		*c = ld->conf;
	struct config_domain	*d, *nd;
	const struct cnode	*it;
	char			 name[CONFIG_HOST_MAX + 16], b[80];
	char			 keyname[CONFIG_HOST_MAX + 32];
	size_t			 i;
	int			 server_line = 0;

	if (n->type != CNODE_BLOCK || n->value == NULL)
		return (cerr(&ld->cause, ld->file, n->line, "domain",
		    "expected domain \"NAME\" { server = [...]; }"));
	if (!valid_hostname(n->value))
		return (cerr(&ld->cause, ld->file, n->line, "domain",
		    "'%s' is not a domain name", show(b, sizeof(b),
		    n->value)));
	snprintf(name, sizeof(name), "domain \"%s\"", n->value);
	for (i = 0; i < c->ndomains; i++)
		if (strcasecmp(c->domains[i].name, n->value) == 0)
			return (cerr(&ld->cause, ld->file, n->line, name,
			    "duplicate domain"));
	if (c->ndomains >= CONFIG_DOMAINS_MAX)
		return (cerr(&ld->cause, ld->file, n->line, name,
		    "more than %d domains", CONFIG_DOMAINS_MAX));
	nd = reallocarray(c->domains, c->ndomains + 1, sizeof(*nd));
	if (nd == NULL)
		return (cerr(&ld->cause, ld->file, n->line, name,
		    "out of memory"));
	c->domains = nd;
	d = &nd[c->ndomains];
	memset(d, 0, sizeof(*d));
	for (i = 0; n->value[i] != '\0'; i++)
		d->name[i] = (char)tolower((unsigned char)n->value[i]);
	d->name[i] = '\0';
	c->ndomains++;		/* freed with c even if we fail below */

	for (it = n->child; it != NULL; it = it->next) {
		snprintf(keyname, sizeof(keyname), "%s.%s", name, it->key);
		if (strcmp(it->key, "server") != 0)
			return (cerr(&ld->cause, ld->file, it->line, keyname,
			    "unknown key (a domain block takes 'server')"));
		if (server_line != 0)
			return (cerr(&ld->cause, ld->file, it->line, keyname,
			    "set twice (first on line %d)", server_line));
		server_line = it->line;
		if (apply_servers(ld, d, it, keyname) == -1)
			return (-1);
	}
	if (server_line == 0)
		return (cerr(&ld->cause, ld->file, n->line, name,
		    "no server list (add server = [\"host:port\"];)"));
	return (0);
}

static bool
is_section(const char *key)
{
	size_t	 i;

	for (i = 0; i < nitems(config_sections); i++)
		if (strcmp(config_sections[i], key) == 0)
			return (true);
	return (false);
}

static int
apply_tree(struct cload *ld, const struct cnode *top)
{
	const struct cnode	*n, *it;
	char			 name[256], b[80];

	for (n = top; n != NULL; n = n->next) {
		if (strcmp(n->key, "domain") == 0) {
			if (apply_domain(ld, n) == -1)
				return (-1);
			continue;
		}
		if (!is_section(n->key)) {
			if (n->type == CNODE_BLOCK)
				return (cerr(&ld->cause, ld->file, n->line,
				    show(b, sizeof(b), n->key),
				    "unknown section"));
			if (apply_named(ld, n->key, n) == -1)
				return (-1);
			continue;
		}
		if (n->type != CNODE_BLOCK || n->value != NULL)
			return (cerr(&ld->cause, ld->file, n->line, n->key,
			    "expected %s { ... }", n->key));
		for (it = n->child; it != NULL; it = it->next) {
			if (snprintf(name, sizeof(name), "%s.%s", n->key,
			    it->key) >= (int)sizeof(name))
				return (cerr(&ld->cause, ld->file, it->line,
				    n->key, "key too long"));
			if (it->type == CNODE_BLOCK)
				return (cerr(&ld->cause, ld->file, it->line,
				    show(b, sizeof(b), name),
				    "unexpected block"));
			if (apply_named(ld, name, it) == -1)
				return (-1);
		}
	}
	return (0);
}

/* Checks between keys; reported on the later line of the pair. */
static int
cross_check(struct cload *ld)
{
	const struct config	*c = ld->conf;
	char			 a[32], b[32];
	int			 l1, l2;

	l1 = ld->set_line[key_find("delivery.retry_min") - config_keys];
	l2 = ld->set_line[key_find("delivery.retry_max") - config_keys];
	if (c->retry_min > c->retry_max)
		return (cerr(&ld->cause, ld->file, l1 > l2 ? l1 : l2,
		    "delivery.retry_min", "%s is longer than "
		    "delivery.retry_max (%s)",
		    fmt_unit(a, sizeof(a), c->retry_min, CKEY_TIME),
		    fmt_unit(b, sizeof(b), c->retry_max, CKEY_TIME)));
	l1 = ld->set_line[key_find("guard.errors_soft") - config_keys];
	l2 = ld->set_line[key_find("guard.errors_hard") - config_keys];
	if (c->errors_soft > c->errors_hard)
		return (cerr(&ld->cause, ld->file, l1 > l2 ? l1 : l2,
		    "guard.errors_soft", "%u is more than guard.errors_hard "
		    "(%u)", c->errors_soft, c->errors_hard));
	return (0);
}

/* Fills c with every table default.  Broken defaults are moat's bug. */
static void
apply_defaults(struct config *c)
{
	struct cload	 ld;
	struct cparse	 ps;
	struct cnode	*tree = NULL;
	size_t		 i;
	char		 text[256];

	for (i = 0; i < NKEYS; i++) {
		if (config_keys[i].def == NULL)
			continue;
		memset(&ld, 0, sizeof(ld));
		ld.file = "(default)";
		ld.conf = c;
		memset(&ps, 0, sizeof(ps));
		ps.file = "(default)";
		ps.line = 1;
		/* The text as an admin would write it: key = default; */
		if (snprintf(text, sizeof(text), "v = %s%s%s;",
		    config_keys[i].type == CKEY_STRING ? "\"" : "",
		    config_keys[i].def,
		    config_keys[i].type == CKEY_STRING ? "\"" : "") >=
		    (int)sizeof(text))
			fatalx("config default of %s too long",
			    config_keys[i].name);
		ps.p = text;
		ps.end = text + strlen(text);
		tree = NULL;
		if (parse_body(&ps, &tree, 0, 1, "(default)") == -1 ||
		    apply_key(&ld, &config_keys[i], tree,
		    config_keys[i].name) == -1)
			fatalx("config default of %s: %s", config_keys[i].name,
			    ps.cause != NULL ? ps.cause : ld.cause);
		cnode_free(tree);
	}
}

void
config_free(struct config *c)
{
	if (c == NULL)
		return;
	free(c->domains);
	free(c);
}

struct config *
config_default(void)
{
	struct config		*c;
	struct config_domain	*d;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return (NULL);
	apply_defaults(c);
	/* The demo: example.test relayed to a sink on 127.0.0.1:2526. */
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		free(c);
		return (NULL);
	}
	memcpy(d->name, "example.test", sizeof("example.test"));
	memcpy(d->servers[0].host, "127.0.0.1", sizeof("127.0.0.1"));
	memcpy(d->servers[0].port, "2526", sizeof("2526"));
	d->servers[0].priority = 0;
	d->nservers = 1;
	c->domains = d;
	c->ndomains = 1;
	return (c);
}

/* Reads the whole file, at most CONFIG_FILE_MAX bytes. */
static int
read_file(const char *path, char **buf, size_t *len, char **cause)
{
	int		 fd;
	struct stat	 st;
	char		*b;
	size_t		 have = 0;
	ssize_t		 n;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		goto syserr;
	if (fstat(fd, &st) == -1) {
		close(fd);
		goto syserr;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		if (asprintf(cause, "%s: not a regular file", path) == -1)
			*cause = NULL;
		return (-1);
	}
	if ((b = malloc(CONFIG_FILE_MAX + 1)) == NULL) {
		close(fd);
		goto syserr;
	}
	for (;;) {
		n = read(fd, b + have, CONFIG_FILE_MAX + 1 - have);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			free(b);
			close(fd);
			goto syserr;
		}
		if (n == 0)
			break;
		have += (size_t)n;
		if (have > CONFIG_FILE_MAX) {
			free(b);
			close(fd);
			if (asprintf(cause, "%s: larger than %d bytes", path,
			    CONFIG_FILE_MAX) == -1)
				*cause = NULL;
			return (-1);
		}
	}
	close(fd);
	*buf = b;
	*len = have;
	return (0);
syserr:
	if (asprintf(cause, "%s: %s", path, strerror(errno)) == -1)
		*cause = NULL;
	return (-1);
}

int
config_load(const char *path, struct config **out, char **cause)
{
	struct cparse	 ps;
	struct cload	*ld = NULL;
	struct cnode	*tree = NULL;
	struct config	*c = NULL;
	char		*buf = NULL;
	size_t		 len;

	*cause = NULL;
	if (read_file(path, &buf, &len, cause) == -1) {
		if (*cause == NULL)
			*cause = strdup("cannot read configuration");
		return (-1);
	}
	memset(&ps, 0, sizeof(ps));
	ps.file = path;
	ps.p = buf;
	ps.end = buf + len;
	ps.line = 1;
	if (memchr(buf, '\0', len) != NULL) {
		cerr(&ps.cause, path, 1, "syntax", "NUL byte in file");
		goto fail;
	}
	if (parse_body(&ps, &tree, 0, 1, "(file)") == -1)
		goto fail;

	if ((ld = calloc(1, sizeof(*ld))) == NULL ||
	    (c = calloc(1, sizeof(*c))) == NULL) {
		cerr(&ps.cause, path, 1, "config", "out of memory");
		goto fail;
	}
	/* Scalars start from the defaults; domains only from the file. */
	apply_defaults(c);
	if (set_field(c->path, sizeof(c->path), path, strlen(path)) == -1) {
		cerr(&ps.cause, path, 1, "config", "file name too long");
		goto fail;
	}
	ld->file = path;
	ld->conf = c;
	if (apply_tree(ld, tree) == -1 || cross_check(ld) == -1) {
		ps.cause = ld->cause;
		ld->cause = NULL;
		goto fail;
	}
	cnode_free(tree);
	free(ld);
	free(buf);
	*out = c;
	return (0);
fail:
	*cause = ps.cause != NULL ? ps.cause :
	    strdup("configuration error");
	cnode_free(tree);
	free(ld);
	config_free(c);
	free(buf);
	return (-1);
}

const struct config_domain *
config_find_domain(const struct config *c, const char *domain)
{
	size_t	 i, len;

	if (c == NULL || domain == NULL)
		return (NULL);
	len = strlen(domain);
	/* A trailing dot names the same domain (absolute form). */
	if (len > 0 && domain[len - 1] == '.')
		len--;
	for (i = 0; i < c->ndomains; i++)
		if (strlen(c->domains[i].name) == len &&
		    strncasecmp(c->domains[i].name, domain, len) == 0)
			return (&c->domains[i]);
	return (NULL);
}

const char *
config_action_name(enum config_action a)
{
	if ((size_t)a < nitems(config_action_names) &&
	    config_action_names[a] != NULL)
		return (config_action_names[a]);
	return ("unknown");
}

/* ---------------------------------------------------------------- */
/* Documentation.                                                   */

static const char config_doc_example[] =
"listen = [\"127.0.0.1:2525\"];\n"
"hostname = \"mx.example.test\";\n"
"\n"
"smtp {\n"
"\tmessage_size_max = 25mb;\n"
"\ttimeout_command = 5min;\n"
"}\n"
"\n"
"guard {\n"
"\tgreet_pause = 5s;\n"
"\tpregreet = reject;\n"
"\thelo = off;\n"
"}\n"
"\n"
"domain \"example.test\" {\n"
"\t# first is the primary, the rest are backups; port 25 by default\n"
"\tserver = [\"10.0.0.25\", \"10.0.0.26:2525\", \"[2001:db8::25]:25\"];\n"
"}\n";

static const char *
type_name(enum ckey_type t)
{
	switch (t) {
	case CKEY_STRING:
		return ("string");
	case CKEY_BOOL:
		return ("boolean");
	case CKEY_UINT:
		return ("number");
	case CKEY_SIZE:
		return ("size");
	case CKEY_TIME:
		return ("time");
	case CKEY_LISTEN_LIST:
		return ("list of host:port");
	case CKEY_CHECK:
		return ("action");
	case CKEY_SERVER_LIST:
		return ("list of host[:port]");
	}
	return ("?");
}

static void
doc_range(char *buf, size_t len, const struct ckey *k)
{
	char	 a[32], b[32];
	uint64_t max = k->max;

	switch (k->type) {
	case CKEY_UINT:
	case CKEY_SIZE:
	case CKEY_TIME:
		if (k->size == sizeof(unsigned) && max > UINT_MAX)
			max = UINT_MAX;
		snprintf(buf, len, "%s .. %s",
		    fmt_unit(a, sizeof(a), k->min, k->type),
		    fmt_unit(b, sizeof(b), max, k->type));
		break;
	case CKEY_BOOL:
		snprintf(buf, len, "yes, no");
		break;
	case CKEY_CHECK:
		snprintf(buf, len, "log, tarpit, tempfail, reject, drop, off");
		break;
	case CKEY_LISTEN_LIST:
	case CKEY_SERVER_LIST:
		snprintf(buf, len, "1 .. %llu entries",
		    (unsigned long long)k->max);
		break;
	case CKEY_STRING:
		snprintf(buf, len, "up to %zu bytes", k->size - 1);
		break;
	}
}

void
config_dump_doc(FILE *f)
{
	size_t		 s, i, plen;
	const char	*sec, *leaf;
	char		 range[64];

	fprintf(f,
"# moat configuration\n"
"\n"
"<!-- Generated by `moatd --dump-config-doc` from the key table in\n"
"src/config.c; `make check-docs` fails when they differ. Do not edit. -->\n"
"\n"
"moat reads one file (`moatd -c FILE`; without `-c` it runs on the\n"
"embedded defaults below plus a demo domain `example.test` relayed to\n"
"127.0.0.1:2526). The syntax is the nginx-like subset of libucl:\n"
"`key = value;` or `key value;` (`=` or `:` optional; `;` or the end of\n"
"the line ends a value), `# comments` and `/* comments */`, strings in\n"
"double quotes (escapes `\\\"`, `\\\\`, `\\n`) or bare words, lists\n"
"`[a, b, c]`, and blocks `name { ... }`.\n"
"\n"
"- **size**: a number of bytes with an optional suffix `k`/`kb`,\n"
"  `m`/`mb`, `g`/`gb`, `t`/`tb` (1024-based, any case): `25mb`.\n"
"- **time**: a number with `ms`, `s`, `min`, `h`, `d` or `w`; a bare\n"
"  number is seconds: `10min`. (`m` is refused as ambiguous.)\n"
"- **boolean**: `yes`/`no`, `true`/`false`, `on`/`off`.\n"
"- **action** (guard checks): what a tripped check does: `log`\n"
"  (observe only), `tarpit`, `tempfail` (4xx), `reject` (5xx), `drop`\n"
"  (close), or `off` to disable the check.\n"
"- Numbers are whole numbers; `0` means off or unlimited where stated.\n"
"\n"
"Every key is optional and starts at its default. Protected domains\n"
"are the exception: a file's `domain` blocks are the only domains (the\n"
"demo domain is not added), and with none moat refuses every\n"
"recipient. A key given twice, an unknown key, a value of the wrong type\n"
"or out of range, or a bad address makes the whole file invalid; the\n"
"error reads `FILE:LINE: KEY: REASON`, and on reload the running\n"
"configuration stays. Limits: the file is at most 1 MiB, blocks nest at\n"
"most 8 deep, a string is at most 4096 bytes.\n"
"\n"
"A protected domain matches the recipient's domain exactly (any case);\n"
"subdomains need their own block.\n"
"\n"
"## Example\n"
"\n"
"```\n"
"%s"
"```\n", config_doc_example);

	for (s = 0; s <= nitems(config_sections); s++) {
		sec = s == 0 ? NULL : config_sections[s - 1];
		plen = sec == NULL ? 0 : strlen(sec) + 1;
		fprintf(f, "\n## %s\n\n", config_section_help[s]);
		fprintf(f, "| key | type | default | range | meaning |\n");
		fprintf(f, "| --- | --- | --- | --- | --- |\n");
		for (i = 0; i < NKEYS; i++) {
			const struct ckey *k = &config_keys[i];

			if (sec == NULL ? strchr(k->name, '.') != NULL :
			    (strncmp(k->name, sec, plen - 1) != 0 ||
			    k->name[plen - 1] != '.'))
				continue;
			leaf = k->name + plen;
			doc_range(range, sizeof(range), k);
			fprintf(f, "| `%s` | %s | %s%s%s | %s | %s |\n", leaf,
			    type_name(k->type),
			    k->def == NULL ? "" : "`",
			    k->def == NULL ? "(none)" :
			    (k->def[0] == '\0' ? "\"\"" : k->def),
			    k->def == NULL ? "" : "`",
			    range, k->help);
		}
	}
}
