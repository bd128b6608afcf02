/*
 * fuzz_smtp_parse.c: libFuzzer harness for smtp_parse.c.
 *
 * The input is one command line (without CRLF).  Beyond memory safety
 * (ASan/UBSan), it checks the parser's promises: every string field is
 * terminated inside its array, the RFC 5321 length limits hold, a parsed
 * domain passes the validators, a failure always has a reason, and a
 * parsed MAIL/RCPT path parses again to the same address.
 *
 * Run: make build-fuzz/fuzz_smtp_parse &&
 *   build-fuzz/fuzz_smtp_parse -dict=fuzz/smtp.dict fuzz/corpus/fuzz_smtp_parse
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp_parse.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define CHECK(x) do {							\
	if (!(x)) {							\
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,	\
		    __LINE__, #x);					\
		abort();						\
	}								\
} while (0)

static void
check_terminated(const char *s, size_t cap)
{
	CHECK(memchr(s, '\0', cap) != NULL);
}

static void
check_reparse(const struct smtp_command *c)
{
	struct smtp_command	 again;
	char			 line[SMTP_LINE_MAX * 2];
	int			 r;

	r = snprintf(line, sizeof(line), "%s %s<%s>",
	    c->cmd == SMTP_CMD_MAIL ? "MAIL" : "RCPT",
	    c->cmd == SMTP_CMD_MAIL ? "FROM:" : "TO:", c->path.addr);
	CHECK(r > 0 && (size_t)r < sizeof(line));
	CHECK(smtp_parse_command(line, (size_t)r, &again) == SMTP_PARSE_OK);
	CHECK(strcmp(again.path.addr, c->path.addr) == 0);
	CHECK(strcmp(again.path.domain, c->path.domain) == 0);
	CHECK(strcmp(again.path.local, c->path.local) == 0);
	CHECK(again.path.null == c->path.null);
	CHECK(again.path.domain_literal == c->path.domain_literal);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_command	 c;
	enum smtp_parse_status	 st;
	char			*s;

	st = smtp_parse_command((const char *)data, size, &c);
	CHECK(st <= SMTP_PARSE_BAD_PARAM);
	CHECK(c.cmd < SMTP_CMD_MAX);
	CHECK(smtp_parse_cmd_name(c.cmd) != NULL);
	CHECK(smtp_parse_status_name(st) != NULL);
	check_terminated(c.verb, sizeof(c.verb));
	check_terminated(c.arg, sizeof(c.arg));
	check_terminated(c.path.local, sizeof(c.path.local));
	check_terminated(c.path.domain, sizeof(c.path.domain));
	check_terminated(c.path.addr, sizeof(c.path.addr));

	if (st != SMTP_PARSE_OK) {
		CHECK(c.why != NULL);
	} else {
		CHECK(c.why == NULL);
		CHECK(size + 2 <= SMTP_LINE_MAX);
		CHECK(memchr(data, '\0', size) == NULL);
		CHECK(c.cmd > SMTP_CMD_NON_SMTP);
		if ((c.cmd == SMTP_CMD_MAIL || c.cmd == SMTP_CMD_RCPT)) {
			if (c.path.null) {
				CHECK(c.cmd == SMTP_CMD_MAIL);
				CHECK(c.path.addr[0] == '\0');
			} else {
				CHECK(strlen(c.path.local) <= SMTP_LOCAL_MAX);
				CHECK(strlen(c.path.addr) + 2 <= SMTP_PATH_MAX);
				if (c.path.domain_literal)
					CHECK(smtp_parse_literal_valid(
					    c.path.domain,
					    strlen(c.path.domain)));
				else if (c.path.domain[0] != '\0')
					CHECK(smtp_parse_domain_valid(
					    c.path.domain));
				else
					CHECK(c.cmd == SMTP_CMD_RCPT &&
					    strcasecmp(c.path.local,
					    "postmaster") == 0);
			}
			check_reparse(&c);
		}
	}

	/* The validators on the raw input as a C string. */
	if ((s = malloc(size + 1)) == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (smtp_parse_domain_valid(s))
		CHECK(smtp_parse_helo_valid(s));
	(void)smtp_parse_helo_valid(s);
	(void)smtp_parse_literal_valid(s, size);
	free(s);
	return 0;
}
