/*
 * test_config.c: config_load() on good and bad snippets, the defaults,
 * etc/moat.conf and docs/configuration.md against the key table.
 *
 * Each snippet is written to a temporary file.  Bad snippets must fail
 * with exactly "FILE:LINE: KEY: REASON"; the table holds the part after
 * "FILE:".
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static char	tmp_path[64];

static const char *
write_tmp(const char *text)
{
	int	 fd;
	size_t	 len = strlen(text);

	snprintf(tmp_path, sizeof(tmp_path), "/tmp/test_config.XXXXXX");
	fd = mkstemp(tmp_path);
	assert_true(fd != -1);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
	return (tmp_path);
}

static int
load_text(const char *text, struct config **c, char **cause)
{
	const char	*path = write_tmp(text);
	int		 rv;

	rv = config_load(path, c, cause);
	unlink(path);
	return (rv);
}

/* ---- good snippets ---- */

#define MS(x)	((uint64_t)(x))
#define S(x)	((uint64_t)(x) * 1000)

struct good {
	const char	*text;
	const char	*what;		/* field to check, see check_good */
	uint64_t	 want;
	const char	*want_s;
};

static const struct good goods[] = {
	{ "smtp { message_size_max = 25mb; }", "message_size_max",
	  25ULL << 20, NULL },
	{ "smtp { message_size_max 10MB }", "message_size_max",
	  10ULL << 20, NULL },
	{ "smtp { message_size_max: 512k; }", "message_size_max",
	  512ULL << 10, NULL },
	{ "smtp { message_size_max = 2g; }", "message_size_max",
	  2ULL << 30, NULL },
	{ "smtp { message_size_max = 4096; }", "message_size_max", 4096,
	  NULL },
	{ "smtp { line_max = 2kb; }", "line_max", 2048, NULL },
	{ "smtp { timeout_command = 90; }", "timeout_command", S(90),
	  NULL },
	{ "smtp { timeout_command = 1500ms; }", "timeout_command", MS(1500),
	  NULL },
	{ "smtp { timeout_command = 2MIN; }", "timeout_command", S(120),
	  NULL },
	{ "smtp { timeout_session = 1h }", "timeout_session", S(3600),
	  NULL },
	{ "queue { queue_lifetime = 1w; }", "queue_lifetime",
	  S(7 * 86400), NULL },
	{ "queue { queue_lifetime = 2d; }", "queue_lifetime", S(2 * 86400),
	  NULL },
	{ "queue { queue_max_messages = 0; }", "queue_max_messages", 0,
	  NULL },
	{ "delivery { retry_min = 1s; retry_max = 5s; }", "retry_max", S(5),
	  NULL },
	{ "log_syslog = yes;", "log_syslog", 1, NULL },
	{ "log_syslog = On;", "log_syslog", 1, NULL },
	{ "log_syslog = false;", "log_syslog", 0, NULL },
	{ "smtp { bare_lf_normalise = true; }", "bare_lf_normalise", 1,
	  NULL },
	{ "guard { pregreet = tarpit; }", "pregreet", 1,
	  "tarpit" },
	{ "guard { pregreet = off; }", "pregreet", 0, NULL },
	{ "guard { helo = LOG; }", "helo", 1, "log" },
	{ "guard { non_smtp = tempfail; }", "non_smtp", 1, "tempfail" },
	{ "hostname = \"mx1.example.org\";", "hostname", 0,
	  "mx1.example.org" },
	{ "hostname mx1.example.org", "hostname", 0, "mx1.example.org" },
	{ "queue_dir = \"/var/spool/moat\";", "queue_dir", 0,
	  "/var/spool/moat" },
	{ "queue_dir = \"/a \\\"b\\\" \\\\c\";", "queue_dir", 0,
	  "/a \"b\" \\c" },
	{ "# comment\n/* multi\nline */ log_level = debug # trailing\n",
	  "log_level", 0, "debug" },
	{ "log_level = \"warn\"\nhostname = a.b\n", "log_level", 0, "warn" },
	{ "listen = \"0.0.0.0:25\";", "listen", 1, "0.0.0.0:25" },
	{ "listen = [\"127.0.0.1:25\", \"[::1]:2525\",];", "listen", 2,
	  "[::1]:2525" },
	{ "listen = [\n \"[2001:db8::1]:25\"\n]\n", "listen", 1,
	  "[2001:db8::1]:25" },
	{ "delivery { dsn_relay = \"relay.example.org:587\"; }",
	  "dsn_relay", 0, "relay.example.org:587" },
	{ "control { http_listen = \"127.0.0.1:8025\"; }", "http_listen", 0,
	  "127.0.0.1:8025" },
	{ "limits { conn_per_ip = 0; byte_rate_per_ip = 0; }",
	  "conn_per_ip", 0, NULL },
	{ "guard { errors_soft = 10; errors_hard = 10; }", "errors_soft",
	  10, NULL },
	{ "smtp { }\nguard { }\n;;\n", "rcpt_max", 100, NULL },
};

static uint64_t
check_num(const struct config *c, const char *what)
{
	if (strcmp(what, "message_size_max") == 0)
		return (c->message_size_max);
	if (strcmp(what, "line_max") == 0)
		return (c->line_max);
	if (strcmp(what, "timeout_command") == 0)
		return (c->timeout_command);
	if (strcmp(what, "timeout_session") == 0)
		return (c->timeout_session);
	if (strcmp(what, "queue_lifetime") == 0)
		return (c->queue_lifetime);
	if (strcmp(what, "queue_max_messages") == 0)
		return (c->queue_max_messages);
	if (strcmp(what, "retry_max") == 0)
		return (c->retry_max);
	if (strcmp(what, "log_syslog") == 0)
		return (c->log_syslog);
	if (strcmp(what, "bare_lf_normalise") == 0)
		return (c->bare_lf_normalise);
	if (strcmp(what, "pregreet") == 0)
		return (c->check_pregreet.enabled);
	if (strcmp(what, "helo") == 0)
		return (c->check_helo.enabled);
	if (strcmp(what, "non_smtp") == 0)
		return (c->check_non_smtp.enabled);
	if (strcmp(what, "listen") == 0)
		return (c->nlisten);
	if (strcmp(what, "conn_per_ip") == 0)
		return (c->conn_per_ip + c->byte_rate_per_ip);
	if (strcmp(what, "errors_soft") == 0)
		return (c->errors_soft);
	if (strcmp(what, "rcpt_max") == 0)
		return (c->rcpt_max);
	return (0);
}

static const char *
check_str(const struct config *c, const char *what)
{
	if (strcmp(what, "pregreet") == 0)
		return (config_action_name(c->check_pregreet.action));
	if (strcmp(what, "helo") == 0)
		return (config_action_name(c->check_helo.action));
	if (strcmp(what, "non_smtp") == 0)
		return (config_action_name(c->check_non_smtp.action));
	if (strcmp(what, "hostname") == 0)
		return (c->hostname);
	if (strcmp(what, "queue_dir") == 0)
		return (c->queue_dir);
	if (strcmp(what, "log_level") == 0)
		return (c->log_level);
	if (strcmp(what, "listen") == 0)
		return (c->listen[c->nlisten - 1]);
	if (strcmp(what, "dsn_relay") == 0)
		return (c->dsn_relay);
	if (strcmp(what, "http_listen") == 0)
		return (c->http_listen);
	return ("?");
}

static void
test_good(void **state)
{
	struct config	*c;
	char		*cause;
	size_t		 i;
	int		 fails = 0;
	uint64_t	 got;

	(void)state;
	for (i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
		const struct good *g = &goods[i];

		c = NULL;
		cause = NULL;
		if (load_text(g->text, &c, &cause) != 0) {
			print_error("good[%zu] %s: failed: %s\n", i, g->what,
			    cause);
			free(cause);
			fails++;
			continue;
		}
		got = check_num(c, g->what);
		if (g->want_s == NULL || g->want != 0) {
			if (got != g->want) {
				print_error("good[%zu] %s: got=%llu "
				    "want=%llu\n", i, g->what,
				    (unsigned long long)got,
				    (unsigned long long)g->want);
				fails++;
			}
		}
		if (g->want_s != NULL &&
		    strcmp(check_str(c, g->what), g->want_s) != 0) {
			print_error("good[%zu] %s: got=%s want=%s\n", i,
			    g->what, check_str(c, g->what), g->want_s);
			fails++;
		}
		config_free(c);
	}
	assert_int_equal(fails, 0);
}

/* ---- bad snippets ---- */

struct bad {
	const char	*text;
	const char	*want;		/* after "FILE:" */
};

static const struct bad bads[] = {
	{ "smtp {\n message_size_max = 25xb;\n}\n",
	  "2: smtp.message_size_max: '25xb' is not a size "
	  "(use e.g. 25mb, 512kb, 1gb)" },
	{ "foo = 1;\n", "1: foo: unknown key" },
	{ "smtp { mesage_size_max = 1m; }",
	  "1: smtp.mesage_size_max: unknown key (did you mean "
	  "'smtp.message_size_max'?)" },
	{ "message_size_max = 1m;",
	  "1: message_size_max: unknown key (did you mean "
	  "'smtp.message_size_max'?)" },
	{ "smtp { rcpt_max = 0; }",
	  "1: smtp.rcpt_max: 0 is out of range (1..100000)" },
	{ "smtp { rcpt_max = ten; }",
	  "1: smtp.rcpt_max: 'ten' is not a number" },
	{ "smtp { rcpt_max = 99999999999999999999999; }",
	  "1: smtp.rcpt_max: '99999999999999999999999' is not a number" },
	{ "smtp { message_size_max = 1tb; }",
	  "1: smtp.message_size_max: 1tb is out of range (1kb..2gb)" },
	{ "smtp { timeout_command = 5m; }",
	  "1: smtp.timeout_command: '5m' is not a time (use 5min for "
	  "minutes)" },
	{ "smtp { timeout_command = soon; }",
	  "1: smtp.timeout_command: 'soon' is not a time (use e.g. 500ms, "
	  "30s, 5min, 1h, 5d, 1w)" },
	{ "smtp { timeout_command = 2h; }",
	  "1: smtp.timeout_command: 2h is out of range (1s..1h)" },
	{ "log_syslog = maybe;", "1: log_syslog: 'maybe' is not yes or no" },
	{ "log_level = loud;", "1: log_level: 'loud' is not a log level "
	  "(use err, warn, info or debug)" },
	{ "hostname = \"bad_host\";",
	  "1: hostname: 'bad_host' is not a host name" },
	{ "guard { pregreet = kill; }",
	  "1: guard.pregreet: 'kill' is not an action (use log, tarpit, "
	  "tempfail, reject, drop or off)" },
	{ "listen = \"127.0.0.1\";",
	  "1: listen: '127.0.0.1' has no port (use host:port)" },
	{ "listen = \"127.0.0.1:0\";",
	  "1: listen: '127.0.0.1:0' has a bad port (use 1..65535)" },
	{ "listen = [\"127.0.0.1:25\",\n \"127.0.0.1:65536\"];",
	  "2: listen: '127.0.0.1:65536' has a bad port (use 1..65535)" },
	{ "listen = \"::1:25\";",
	  "1: listen: IPv6 address must be in brackets, as \"[::1]:25\"" },
	{ "listen = \"[::g]:25\";",
	  "1: listen: '::g' is not an IPv6 address" },
	{ "listen = [\"127.0.0.1:25\", \"127.0.0.1:25\"];",
	  "1: listen: '127.0.0.1:25' listed twice" },
	{ "listen = [];",
	  "1: listen: empty list (give at least one host:port)" },
	{ "domain \"a.test\" { server = [\"h:1\"]; }\n"
	  "domain \"A.TEST\" { server = [\"h:1\"]; }\n",
	  "2: domain \"A.TEST\": duplicate domain" },
	{ "domain \"bad..test\" { server = [\"h\"]; }",
	  "1: domain: 'bad..test' is not a domain name" },
	{ "domain \"a.test\" { server = []; }",
	  "1: domain \"a.test\".server: empty server list" },
	{ "domain \"a.test\" {\n}\n",
	  "1: domain \"a.test\": no server list (add server = "
	  "[\"host:port\"];)" },
	{ "domain \"a.test\" { server = [\"h\"]; port = 2; }",
	  "1: domain \"a.test\".port: unknown key (a domain block takes "
	  "'server')" },
	{ "domain { server = [\"h\"]; }",
	  "1: domain: expected domain \"NAME\" { server = [...]; }" },
	{ "domain \"a.test\" { server = \"h:99999\"; }",
	  "1: domain \"a.test\".server: 'h:99999' has a bad port "
	  "(use 1..65535)" },
	{ "delivery {\n retry_min = 2h;\n retry_max = 1h;\n}\n",
	  "3: delivery.retry_min: 2h is longer than delivery.retry_max "
	  "(1h)" },
	{ "guard { errors_soft = 11; }",
	  "1: guard.errors_soft: 11 is more than guard.errors_hard (10)" },
	{ "smtp { rcpt_max = 5;\n rcpt_max = 6; }",
	  "2: smtp.rcpt_max: set twice (first on line 1)" },
	{ "hostname = \"abc\n", "1: syntax: unterminated string" },
	{ "\n\nsmtp {\n rcpt_max = 5;\n",
	  "3: smtp: unterminated block, '{' has no matching '}'" },
	{ "}\n", "1: syntax: '}' without a matching '{'" },
	{ "listen = [\"a:1\"\n", "1: listen: unterminated list, '[' has no "
	  "matching ']'" },
	{ "a /* never\nclosed", "1: syntax: unterminated comment" },
	{ "smtp { rcpt_max 5 6; }",
	  "1: smtp.rcpt_max: expected ';' after the value, got 'a value'" },
	{ "smtp { rcpt_max = ; }", "1: smtp.rcpt_max: missing value" },
	{ "smtp = 5;", "1: smtp: expected smtp { ... }" },
	{ "smtp { x { } }", "1: smtp.x: unexpected block" },
	{ "bogus { }", "1: bogus: unknown section" },
	{ "smtp { rcpt_max = [1, 2]; }",
	  "1: smtp.rcpt_max: expected a single value, not a list" },
	{ "a { b { c { d { e { f { g { h { i { } } } } } } } } }",
	  "1: a.b.c.d.e.f.g.h.i: nested deeper than 8" },
	{ "hostname = \"a\\qb\";",
	  "1: syntax: unknown escape '\\q' in string (use \\\" \\\\ \\n)" },
	{ "hostname = 'x';", "1: syntax: unexpected character '\\x27'" },
	{ "queue_dir = \"\";", "1: queue_dir: must not be empty" },
	{ "control { http_listen = \"localhost\"; }",
	  "1: control.http_listen: 'localhost' has no port (use "
	  "host:port)" },
	{ "\"hostname\" = a.b;", "1: syntax: expected a key, got 'a value'" },
	{ "listen = abc\"x\n", "1: syntax: unterminated string" },
	{ "smtp { line_max = [1, 2 3]; }",
	  "1: smtp.line_max: expected ',' or ']' in list, got 'a value'" },
};

static void
test_bad(void **state)
{
	struct config	*c;
	char		*cause, want[512];
	size_t		 i;
	int		 fails = 0;

	(void)state;
	for (i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		c = NULL;
		cause = NULL;
		if (load_text(bads[i].text, &c, &cause) == 0) {
			print_error("bad[%zu]: loaded, want=%s\n", i,
			    bads[i].want);
			config_free(c);
			fails++;
			continue;
		}
		if (c != NULL) {
			print_error("bad[%zu]: *out was set\n", i);
			fails++;
		}
		snprintf(want, sizeof(want), "%s:%s", tmp_path, bads[i].want);
		if (cause == NULL || strcmp(cause, want) != 0) {
			print_error("bad[%zu]:\n got=%s\nwant=%s\n", i,
			    cause ? cause : "(null)", want);
			fails++;
		}
		free(cause);
	}
	assert_int_equal(fails, 0);
}

static void
test_unreadable(void **state)
{
	struct config	*c = NULL;
	char		*cause = NULL;

	(void)state;
	assert_int_equal(config_load("/nonexistent/moat.conf", &c, &cause),
	    -1);
	assert_null(c);
	assert_string_equal(cause,
	    "/nonexistent/moat.conf: No such file or directory");
	free(cause);
}

static void
test_too_big(void **state)
{
	struct config	*c = NULL;
	char		*cause = NULL, *text, want[128];
	size_t		 n = 1024 * 1024 + 10;

	(void)state;
	text = malloc(n + 1);
	assert_non_null(text);
	memset(text, '\n', n);
	text[n] = '\0';
	assert_int_equal(load_text(text, &c, &cause), -1);
	snprintf(want, sizeof(want), "%s: larger than 1048576 bytes",
	    tmp_path);
	assert_string_equal(cause, want);
	free(cause);
	free(text);
}

static void
test_long_string(void **state)
{
	struct config	*c = NULL;
	char		*cause = NULL, *text, want[128];
	size_t		 n = 5000;

	(void)state;
	text = malloc(n + 32);
	assert_non_null(text);
	memcpy(text, "queue_dir = \"", 13);
	memset(text + 13, 'a', n);
	memcpy(text + 13 + n, "\";", 3);
	assert_int_equal(load_text(text, &c, &cause), -1);
	snprintf(want, sizeof(want), "%s:1: syntax: string longer than "
	    "4096 bytes", tmp_path);
	assert_string_equal(cause, want);
	free(cause);
	free(text);
}

static void
test_domains(void **state)
{
	struct config			*c = NULL;
	char				*cause = NULL;
	const struct config_domain	*d;

	(void)state;
	assert_int_equal(load_text(
	    "domain \"Example.ORG\" {\n"
	    "  server = [\"mx1.example.org\", \"10.0.0.2:2525\",\n"
	    "            \"[2001:db8::25]\", \"[::1]:2526\"];\n"
	    "}\n"
	    "domain other.test { server \"127.0.0.1:2526\" }\n",
	    &c, &cause), 0);
	assert_null(cause);
	assert_int_equal(c->ndomains, 2);
	d = config_find_domain(c, "EXAMPLE.org");
	assert_non_null(d);
	assert_string_equal(d->name, "example.org");
	assert_int_equal(d->nservers, 4);
	assert_string_equal(d->servers[0].host, "mx1.example.org");
	assert_string_equal(d->servers[0].port, "25");
	assert_int_equal(d->servers[0].priority, 0);
	assert_string_equal(d->servers[1].host, "10.0.0.2");
	assert_string_equal(d->servers[1].port, "2525");
	assert_string_equal(d->servers[2].host, "2001:db8::25");
	assert_string_equal(d->servers[2].port, "25");
	assert_string_equal(d->servers[3].host, "::1");
	assert_string_equal(d->servers[3].port, "2526");
	assert_int_equal(d->servers[3].priority, 3);
	assert_ptr_equal(config_find_domain(c, "example.org."), d);
	assert_null(config_find_domain(c, "sub.example.org"));
	assert_null(config_find_domain(c, "example.or"));
	assert_null(config_find_domain(c, "example.test"));
	d = config_find_domain(c, "other.test");
	assert_non_null(d);
	assert_int_equal(d->nservers, 1);
	assert_string_equal(d->servers[0].port, "2526");
	/* Scalars not in the file keep their defaults. */
	assert_int_equal(c->message_size_max, 25ULL << 20);
	config_free(c);

	/* A file without domains has none: not even the demo. */
	assert_int_equal(load_text("hostname = mx.example.org;\n", &c,
	    &cause), 0);
	assert_int_equal(c->ndomains, 0);
	assert_null(config_find_domain(c, "example.test"));
	config_free(c);
}

static void
test_defaults(void **state)
{
	struct config	*c, *e = NULL;
	char		*cause = NULL;

	(void)state;
	c = config_default();
	assert_non_null(c);
	assert_int_equal(c->nlisten, 1);
	assert_string_equal(c->listen[0], "127.0.0.1:2525");
	assert_string_equal(c->hostname, "moat.example.test");
	assert_string_equal(c->queue_dir, "./var/queue");
	assert_string_equal(c->data_dir, "./var/data");
	assert_string_equal(c->control_socket, "./var/moat.sock");
	assert_string_equal(c->log_level, "info");
	assert_false(c->log_syslog);
	assert_int_equal(c->message_size_max, 25ULL << 20);
	assert_int_equal(c->rcpt_max, 100);
	assert_int_equal(c->line_max, 998);
	assert_int_equal(c->max_sessions, 20000);
	assert_int_equal(c->timeout_greeting, 300000);
	assert_int_equal(c->timeout_data, 600000);
	assert_int_equal(c->timeout_session, 3600000);
	assert_int_equal(c->greet_pause, 0);
	assert_true(c->check_pregreet.enabled);
	assert_int_equal(c->check_pregreet.action, CONFIG_ACTION_REJECT);
	assert_int_equal(c->check_non_smtp.action, CONFIG_ACTION_DROP);
	assert_int_equal(c->check_helo.action, CONFIG_ACTION_LOG);
	assert_int_equal(c->errors_soft, 3);
	assert_int_equal(c->errors_hard, 10);
	assert_int_equal(c->error_delay, 1000);
	assert_int_equal(c->pass_remember, 86400000);
	assert_int_equal(c->conn_rate_per_ip, 120);
	assert_int_equal(c->byte_rate_per_ip, 1ULL << 30);
	assert_int_equal(c->queue_max_bytes, 10ULL << 30);
	assert_int_equal(c->disk_min_free, 256ULL << 20);
	assert_int_equal(c->queue_lifetime, 5ULL * 86400000);
	assert_int_equal(c->retry_min, 60000);
	assert_int_equal(c->retry_max, 3600000);
	assert_int_equal(c->circuit_probe, 30000);
	assert_string_equal(c->dsn_relay, "");
	assert_string_equal(c->http_listen, "");
	assert_int_equal(c->ndomains, 1);
	assert_string_equal(c->domains[0].name, "example.test");
	assert_string_equal(c->domains[0].servers[0].host, "127.0.0.1");
	assert_string_equal(c->domains[0].servers[0].port, "2526");
	assert_non_null(config_find_domain(c, "Example.Test"));

	/* An empty file gives the same scalars, and no domain. */
	assert_int_equal(load_text("", &e, &cause), 0);
	assert_int_equal(e->ndomains, 0);
	assert_memory_equal((char *)c + offsetof(struct config, listen),
	    (char *)e + offsetof(struct config, listen),
	    offsetof(struct config, domains) -
	    offsetof(struct config, listen));
	assert_memory_equal((char *)c + offsetof(struct config,
	    message_size_max), (char *)e + offsetof(struct config,
	    message_size_max), sizeof(struct config) -
	    offsetof(struct config, message_size_max));
	config_free(e);
	config_free(c);
}

/* etc/moat.conf must equal the embedded defaults (run from the tree). */
static void
test_example_conf(void **state)
{
	struct config	*c, *e = NULL;
	char		*cause = NULL;

	(void)state;
	if (access("etc/moat.conf", R_OK) != 0) {
		print_message("etc/moat.conf not found, skipped\n");
		skip();
	}
	if (config_load("etc/moat.conf", &e, &cause) != 0) {
		print_error("etc/moat.conf: %s\n", cause);
		free(cause);
		fail();
	}
	c = config_default();
	assert_non_null(c);
	assert_string_equal(e->path, "etc/moat.conf");
	/* path differs; snprintf may leave bytes past its NUL. */
	assert_memory_equal((char *)c + offsetof(struct config, listen),
	    (char *)e + offsetof(struct config, listen),
	    offsetof(struct config, domains) -
	    offsetof(struct config, listen));
	assert_memory_equal((char *)c + offsetof(struct config,
	    message_size_max), (char *)e + offsetof(struct config,
	    message_size_max), sizeof(struct config) -
	    offsetof(struct config, message_size_max));
	assert_int_equal(c->ndomains, e->ndomains);
	assert_memory_equal(c->domains, e->domains,
	    sizeof(*c->domains) * c->ndomains);
	config_free(e);
	config_free(c);
}

/* docs/configuration.md must be what config_dump_doc() writes. */
static void
test_doc_in_sync(void **state)
{
	FILE	*f, *g;
	char	*buf = NULL, *doc;
	size_t	 len = 0, n;
	long	 size;

	(void)state;
	if ((g = fopen("docs/configuration.md", "r")) == NULL) {
		print_message("docs/configuration.md not found, skipped\n");
		skip();
	}
	f = open_memstream(&buf, &len);
	assert_non_null(f);
	config_dump_doc(f);
	fclose(f);
	assert_int_equal(fseek(g, 0, SEEK_END), 0);
	size = ftell(g);
	rewind(g);
	doc = calloc(1, (size_t)size + 1);
	assert_non_null(doc);
	n = fread(doc, 1, (size_t)size, g);
	fclose(g);
	assert_int_equal(n, (size_t)size);
	if (strcmp(doc, buf) != 0)
		print_error("docs/configuration.md is stale: regenerate "
		    "with moatd --dump-config-doc\n");
	assert_string_equal(doc, buf);
	free(doc);
	free(buf);
}

/* The example in the documentation must itself be valid. */
static void
test_doc_example(void **state)
{
	FILE		*f;
	char		*buf = NULL, *start, *end, *cause = NULL;
	size_t		 len = 0;
	struct config	*c = NULL;
	const char	*mark = "## Example\n\n```\n";

	(void)state;
	f = open_memstream(&buf, &len);
	assert_non_null(f);
	config_dump_doc(f);
	fclose(f);
	start = strstr(buf, mark);
	assert_non_null(start);
	start += strlen(mark);
	end = strstr(start, "```\n");
	assert_non_null(end);
	*end = '\0';
	if (load_text(start, &c, &cause) != 0) {
		print_error("doc example: %s\n", cause);
		free(cause);
		free(buf);
		fail();
	}
	assert_int_equal(c->ndomains, 1);
	assert_int_equal(c->domains[0].nservers, 3);
	assert_int_equal(c->greet_pause, 5000);
	assert_false(c->check_helo.enabled);
	config_free(c);
	free(buf);
}

static void
test_action_names(void **state)
{
	(void)state;
	assert_string_equal(config_action_name(CONFIG_ACTION_LOG), "log");
	assert_string_equal(config_action_name(CONFIG_ACTION_TARPIT),
	    "tarpit");
	assert_string_equal(config_action_name(CONFIG_ACTION_TEMPFAIL),
	    "tempfail");
	assert_string_equal(config_action_name(CONFIG_ACTION_REJECT),
	    "reject");
	assert_string_equal(config_action_name(CONFIG_ACTION_DROP), "drop");
	assert_string_equal(config_action_name((enum config_action)99),
	    "unknown");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_unreadable),
		cmocka_unit_test(test_too_big),
		cmocka_unit_test(test_long_string),
		cmocka_unit_test(test_domains),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_example_conf),
		cmocka_unit_test(test_doc_in_sync),
		cmocka_unit_test(test_doc_example),
		cmocka_unit_test(test_action_names),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
