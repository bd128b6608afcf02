/*
 * smtp_parse.h: PURE parser for one SMTP command line (RFC 5321).
 *
 * smtp_parse_command() turns a line (without its CRLF) into a verb, the
 * raw argument and, for MAIL/RCPT, a validated path and parameters.  It
 * never allocates, never reads past len, and fills only the fixed arrays
 * of struct smtp_command, sized by RFC 5321 4.5.3.1.  Called by
 * smtp_session.c for every command line, and by the unit tests and
 * fuzz/fuzz_smtp_parse.c.
 */
#ifndef MOAT_SMTP_PARSE_H
#define MOAT_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_LINE_MAX	512	/* command line incl. CRLF, 4.5.3.1.4 */
#define SMTP_LOCAL_MAX	64	/* local-part, 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX	255	/* domain, 4.5.3.1.2 */
#define SMTP_PATH_MAX	256	/* path incl. "<" ">", 4.5.3.1.3 */

enum smtp_cmd {
	SMTP_CMD_NONE,		/* empty line */
	SMTP_CMD_UNKNOWN,	/* not a verb we know */
	SMTP_CMD_NON_SMTP,	/* HTTP, TLS, SSH, SOCKS, IMAP, POP... */
	SMTP_CMD_HELO,
	SMTP_CMD_EHLO,
	SMTP_CMD_MAIL,
	SMTP_CMD_RCPT,
	SMTP_CMD_DATA,
	SMTP_CMD_RSET,
	SMTP_CMD_NOOP,
	SMTP_CMD_QUIT,
	SMTP_CMD_VRFY,
	SMTP_CMD_EXPN,
	SMTP_CMD_HELP,
	SMTP_CMD_STARTTLS,
	SMTP_CMD_AUTH,
	SMTP_CMD_BDAT,
	SMTP_CMD_MAX
};

enum smtp_parse_status {
	SMTP_PARSE_OK,
	SMTP_PARSE_EMPTY,		/* empty or whitespace-only line */
	SMTP_PARSE_UNKNOWN,		/* unknown verb */
	SMTP_PARSE_NON_SMTP,		/* another protocol talking to us */
	SMTP_PARSE_SYNTAX,		/* known verb, bad arguments */
	SMTP_PARSE_NUL,			/* NUL byte in the line */
	SMTP_PARSE_8BIT,		/* byte >= 0x80 (no SMTPUTF8) */
	SMTP_PARSE_TOO_LONG,		/* len + 2 > SMTP_LINE_MAX */
	SMTP_PARSE_BAD_PATH,		/* malformed mailbox */
	SMTP_PARSE_PATH_TOO_LONG,	/* local/domain/path over limit */
	SMTP_PARSE_SOURCE_ROUTE,	/* <@a,@b:user@d> */
	SMTP_PARSE_BAD_PARAM		/* unknown or bad ESMTP parameter */
};

struct smtp_path {
	bool	 null;				/* <> */
	char	 local[SMTP_LOCAL_MAX + 1];	/* as given */
	char	 domain[SMTP_DOMAIN_MAX + 1];	/* lower-cased; "" for
						   <postmaster> */
	bool	 domain_literal;		/* [1.2.3.4], [ipv6:..] */
	char	 addr[SMTP_PATH_MAX + 1];	/* "local@domain", domain
						   lower-cased; "" if null */
};

enum smtp_body {
	SMTP_BODY_DEFAULT,
	SMTP_BODY_7BIT,
	SMTP_BODY_8BITMIME
};

struct smtp_command {
	enum smtp_cmd	 cmd;
	char		 verb[16];	/* as typed, for logs; bytes
					   outside 0x21-0x7e shown as '?' */
	char		 arg[SMTP_LINE_MAX + 1]; /* raw argument after the
					   verb, trailing blanks removed */
	struct smtp_path path;		/* MAIL/RCPT */
	bool		 has_size;
	uint64_t	 size;
	enum smtp_body	 body;
	const char	*why;		/* static text for the 5xx
					   reply; NULL when OK */
};

/* line is WITHOUT the CRLF; len its length.  out is always fully set. */
enum smtp_parse_status	 smtp_parse_command(const char *line, size_t len,
			    struct smtp_command *out);
/* Domain name or address literal, nothing else. */
bool			 smtp_parse_helo_valid(const char *arg);
/* RFC 5321 Domain: dot-separated LDH labels of 1..63, total <= 255. */
bool			 smtp_parse_domain_valid(const char *dom);
/* "[1.2.3.4]" or "[IPv6:...]" (tag case-insensitive), validated. */
bool			 smtp_parse_literal_valid(const char *lit,
			    size_t len);
/* Upper-case verb ("MAIL"), or "none", "unknown", "non_smtp". */
const char		*smtp_parse_cmd_name(enum smtp_cmd);
/* Short stable name of a status ("ok", "syntax", ...) for logs/tests. */
const char		*smtp_parse_status_name(enum smtp_parse_status);

#endif /* MOAT_SMTP_PARSE_H */
