/*
 * control_parse.c: PURE side of the control protocol (control.h).
 *
 * Bytes in, words out: no libevent, no sockets, no clock.  The server
 * (control.c) runs every request through here before dispatching, and
 * moatctl runs the same code on its own arguments so that a usage error
 * exits 2 without touching the daemon.  The fuzzer (fuzz/fuzz_control.c)
 * hits control_parse_request() and the checks directly.
 *
 * Only printable ASCII is accepted in a request: every argument is a
 * command word, a queue id, a domain (A-labels), a state or a duration,
 * so anything else is either a mistake or an attack on the terminal of
 * whoever reads the log.
 */
#include <ctype.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "control.h"
#include "delivery.h"

static const struct control_command control_parse_table[] = {
#define CONTROL_CMD_ROW(id_, fn, words_, min_, max_, usage_)		\
	{ .id = CONTROL_CMD_##id_, .words = words_,			\
	  .min = min_, .max = max_, .usage = usage_ },
	CONTROL_COMMANDS(CONTROL_CMD_ROW)
#undef CONTROL_CMD_ROW
};

const struct control_command *
control_parse_commands(void)
{
	return control_parse_table;
}

int
control_parse_nwords(const struct control_command *cmd)
{
	return strchr(cmd->words, ' ') != NULL ? 2 : 1;
}

int
control_parse_request(const char *line, size_t len,
    struct control_request *out, const char **why)
{
	size_t	 i;
	char	*p;
	bool	 inword = false;

	memset(out, 0, sizeof *out);
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len > CONTROL_LINE_MAX) {
		*why = "request too long";
		return -1;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if (c == '\0') {
			*why = "NUL byte in request";
			return -1;
		}
		if (c != ' ' && c != '\t' && (c < 0x21 || c > 0x7e)) {
			*why = "invalid character in request";
			return -1;
		}
	}
	memcpy(out->buf, line, len);
	out->buf[len] = '\0';

	for (p = out->buf; *p != '\0'; p++) {
		if (*p == ' ' || *p == '\t') {
			*p = '\0';
			inword = false;
			continue;
		}
		if (inword)
			continue;
		inword = true;
		if (out->argc == 0 && !out->json &&
		    strncmp(p, "--json", 6) == 0 &&
		    (p[6] == '\0' || p[6] == ' ' || p[6] == '\t')) {
			out->json = true;
			continue;
		}
		if (out->argc == CONTROL_MAX_ARGS) {
			*why = "too many arguments";
			return -1;
		}
		out->argv[out->argc++] = p;
	}
	if (out->argc == 0) {
		*why = "empty request";
		return -1;
	}
	return 0;
}

const struct control_command *
control_parse_lookup(int argc, char **argv)
{
	const struct control_command	*cmd;
	size_t				 i, n;

	for (i = 0; i < CONTROL_CMD_MAX; i++) {
		cmd = &control_parse_table[i];
		if (argc < control_parse_nwords(cmd))
			continue;
		n = strlen(argv[0]);
		if (strncmp(cmd->words, argv[0], n) != 0)
			continue;
		if (control_parse_nwords(cmd) == 1) {
			if (cmd->words[n] == '\0')
				return cmd;
		} else if (cmd->words[n] == ' ' &&
		    strcmp(cmd->words + n + 1, argv[1]) == 0)
			return cmd;
	}
	return NULL;
}

int
control_parse_check(const struct control_command *cmd, int argc,
    char **argv, const char **why)
{
	struct control_list_filter	filter;

	if (argc < cmd->min || argc > cmd->max) {
		*why = "wrong number of arguments";
		return -1;
	}
	if (cmd->id == CONTROL_CMD_QUEUE_LIST)
		return control_parse_list_filter(argc, argv, &filter, why);
	return 0;
}

int64_t
control_parse_duration(const char *s)
{
	static const struct {
		const char	*suffix;
		int64_t		 secs;
	} units[] = {
		{ "", 1 }, { "s", 1 }, { "sec", 1 }, { "m", 60 },
		{ "min", 60 }, { "h", 3600 }, { "d", 86400 }, { "w", 604800 }
	};
	int64_t		 v = 0;
	const char	*p = s;
	size_t		 i;

	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (INT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (*p - '0');
	}
	for (i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (strcmp(p, units[i].suffix) != 0)
			continue;
		if (v > INT64_MAX / units[i].secs)
			return -1;
		return v * units[i].secs;
	}
	return -1;
}

/* Names of enum delivery_state, in order (delivery.h). */
static const char *const control_parse_states[] = {
	[DELIVERY_READY] = "ready",
	[DELIVERY_ACTIVE] = "active",
	[DELIVERY_DEFERRED] = "deferred",
	[DELIVERY_HELD] = "held"
};

int
control_parse_list_filter(int argc, char **argv,
    struct control_list_filter *f, const char **why)
{
	int	i;
	size_t	s;

	f->domain = NULL;
	f->state = -1;
	f->older_than = 0;
	for (i = 0; i < argc; i++) {
		if (i + 1 >= argc) {
			*why = "option needs a value";
			return -1;
		}
		if (strcmp(argv[i], "--domain") == 0) {
			f->domain = argv[++i];
			if (strlen(f->domain) > 255) {
				*why = "domain too long";
				return -1;
			}
		} else if (strcmp(argv[i], "--state") == 0) {
			i++;
			for (s = 0; s < sizeof control_parse_states /
			    sizeof control_parse_states[0]; s++)
				if (strcasecmp(argv[i],
				    control_parse_states[s]) == 0)
					break;
			if (s == sizeof control_parse_states /
			    sizeof control_parse_states[0]) {
				*why = "state must be ready, active, "
				    "deferred or held";
				return -1;
			}
			f->state = (int)s;
		} else if (strcmp(argv[i], "--older-than") == 0) {
			f->older_than = control_parse_duration(argv[++i]);
			if (f->older_than < 0) {
				*why = "bad duration (e.g. 30s, 10m, 2h, 1d)";
				return -1;
			}
		} else {
			*why = "unknown option";
			return -1;
		}
	}
	return 0;
}
