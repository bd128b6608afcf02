/*
 * test_control.c: the control protocol.
 *
 * The PURE side (control_parse.c) is tested through tables: request
 * splitting, --json, bounds, bad bytes, command lookup and arity, list
 * filters and durations.  The server (control.c) is tested over a real
 * UNIX socket against a fake queue: the delivery_* and spool_message_*
 * functions control.c calls are defined below (libmoat.a of this branch
 * has no delivery.c; in the merged tree these strong definitions keep
 * delivery.o and spool.o out of this test's link).
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "control.h"
#include "delivery.h"
#include "json.h"
#include "metrics.h"
#include "qid.h"
#include "spool.h"

/* --- fake queue ------------------------------------------------------- */

#define QID_A	"0005f1e2d3c4b5a601"
#define QID_B	"0005f1e2d3c4b5a702"
#define QID_C	"0005f1e2d3c4b5a803"
#define QID_NONE "0005f1e2d3c4b5a9ff"

struct fake_msg {
	const char		*qid, *domain, *sender, *rcpt, *error;
	size_t			 nrcpts;
	uint64_t		 size;
	int64_t			 created;	/* seconds ago; 0: unknown */
	enum delivery_state	 state;
	unsigned		 attempts;
};

static const struct fake_msg fake_msgs[] = {
	{ QID_A, "a.test", "alice@x.test", "bob@a.test", "", 1, 100, 0,
	    DELIVERY_READY, 0 },
	{ QID_B, "a.test", "ev\"il\n@x", "c@a.test", "451 4.3.0 try later",
	    3, 200, 0, DELIVERY_DEFERRED, 2 },
	{ QID_C, "b.test", "", "d@b.test", "", 1, 50, 7200,
	    DELIVERY_HELD, 1 },
};
#define NFAKE	(sizeof fake_msgs / sizeof fake_msgs[0])

static char	last_op[32];
static char	last_qid[QID_LEN + 1];

bool __attribute__((weak))
qid_valid(const char *s)
{
	size_t	i;

	for (i = 0; i < QID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[QID_LEN] == '\0';
}

static void
fake_info(const struct fake_msg *m, struct delivery_entry_info *e)
{
	memset(e, 0, sizeof *e);
	snprintf(e->qid, sizeof e->qid, "%s", m->qid);
	snprintf(e->domain, sizeof e->domain, "%s", m->domain);
	snprintf(e->sender, sizeof e->sender, "%s", m->sender);
	e->first_rcpt = m->rcpt;
	e->nrcpts = m->nrcpts;
	e->size = m->size;
	/* control.c reads its clock first: the age is 7200 or 7199. */
	e->created = m->created > 0 ? (int64_t)time(NULL) - m->created : 0;
	e->state = m->state;
	e->attempts = m->attempts;
	e->last_error = m->error;
}

void
delivery_iterate(struct delivery *d, delivery_entry_cb cb, void *arg)
{
	struct delivery_entry_info	e;
	size_t				i;

	(void)d;
	for (i = 0; i < NFAKE; i++) {
		fake_info(&fake_msgs[i], &e);
		cb(arg, &e);
	}
}

int
delivery_info(struct delivery *d, const char *qid, delivery_entry_cb cb,
    void *arg)
{
	struct delivery_entry_info	e;
	size_t				i;

	(void)d;
	for (i = 0; i < NFAKE; i++) {
		if (strcmp(fake_msgs[i].qid, qid) != 0)
			continue;
		fake_info(&fake_msgs[i], &e);
		cb(arg, &e);
		return 1;
	}
	return -1;
}

void
delivery_iterate_dests(struct delivery *d, delivery_dest_cb cb, void *arg)
{
	struct delivery_dest_info	di;

	(void)d;
	memset(&di, 0, sizeof di);
	di.domain = "a.test";
	di.server = "127.0.0.1:2526";
	di.circuit = DELIVERY_CIRCUIT_OPEN;
	di.failures = 5;
	di.messages = 2;
	di.bytes = 300;
	cb(arg, &di);
}

void
delivery_get_stats(struct delivery *d, struct delivery_stats *st)
{
	(void)d;
	memset(st, 0, sizeof *st);
	st->messages = 3;
	st->bytes = 350;
	st->held = 1;
	st->delivered = 7;
}

static int
fake_op(const char *op, const char *qid)
{
	size_t	i;

	snprintf(last_op, sizeof last_op, "%s", op);
	snprintf(last_qid, sizeof last_qid, "%s", qid != NULL ? qid : "");
	if (qid == NULL)
		return (int)NFAKE;
	for (i = 0; i < NFAKE; i++)
		if (strcmp(fake_msgs[i].qid, qid) == 0)
			return 1;
	return -1;
}

int
delivery_flush(struct delivery *d, const char *qid)
{
	(void)d;
	return fake_op("flush", qid);
}

int
delivery_delete(struct delivery *d, const char *qid)
{
	(void)d;
	return fake_op("delete", qid);
}

int
delivery_hold(struct delivery *d, const char *qid)
{
	(void)d;
	return fake_op("hold", qid);
}

int
delivery_release(struct delivery *d, const char *qid)
{
	(void)d;
	return fake_op("release", qid);
}

const char *
delivery_state_name(enum delivery_state s)
{
	static const char *const names[] = {
		"ready", "active", "deferred", "held"
	};

	return (unsigned)s < 4 ? names[s] : "?";
}

const char *
delivery_circuit_name(enum delivery_circuit c)
{
	static const char *const names[] = { "closed", "open", "half-open" };

	return (unsigned)c < 3 ? names[c] : "?";
}

static char fake_rcpts[2][SPOOL_ADDR_MAX] = { "bob@a.test", "eve@a.test" };

int
spool_message_open(struct spool *s, const char *qid,
    struct spool_message *m, bool *held)
{
	(void)s;
	memset(m, 0, sizeof *m);
	m->fd = -1;
	*held = false;
	if (strcmp(qid, QID_A) != 0)
		return -1;
	snprintf(m->env.qid, sizeof m->env.qid, "%s", qid);
	snprintf(m->env.sender, sizeof m->env.sender, "alice@x.test");
	snprintf(m->env.domain, sizeof m->env.domain, "a.test");
	snprintf(m->env.helo, sizeof m->env.helo, "mx.x.test");
	snprintf(m->env.client_ip, sizeof m->env.client_ip, "192.0.2.1");
	snprintf(m->env.session_id, sizeof m->env.session_id, "s1");
	m->env.created = 0;
	m->env.flags = SPOOL_F_8BITMIME | SPOOL_F_DSN;
	m->env.rcpts = fake_rcpts;
	m->env.nrcpts = 2;
	return 0;
}

void
spool_message_close(struct spool_message *m)
{
	m->env.rcpts = NULL;
	m->fd = -1;
}

/* --- request parser --------------------------------------------------- */

static void
test_parse_request(void **state)
{
	static const struct {
		const char	*name;
		const char	*line;
		size_t		 len;	/* 0: strlen */
		int		 rc;
		bool		 json;
		int		 argc;
		const char	*words;	/* argv joined by '|' */
	} cases[] = {
		{ "one word", "status", 0, 0, false, 1, "status" },
		{ "json", "--json status", 0, 0, true, 1, "status" },
		{ "words", "queue list --domain a.test", 0, 0, false, 4,
		    "queue|list|--domain|a.test" },
		{ "blanks", "  queue \t show   X  ", 0, 0, false, 3,
		    "queue|show|X" },
		{ "trailing CR", "status\r", 0, 0, false, 1, "status" },
		{ "json later is a word", "queue --json", 0, 0, false, 2,
		    "queue|--json" },
		{ "json twice", "--json --json", 0, 0, true, 1, "--json" },
		{ "jsonx is a word", "--jsonx", 0, 0, false, 1, "--jsonx" },
		{ "empty", "", 0, -1, false, 0, "" },
		{ "blank only", "   ", 0, -1, false, 0, "" },
		{ "json only", "--json", 0, -1, true, 0, "" },
		{ "NUL", "sta\0tus", 7, -1, false, 0, "" },
		{ "newline inside", "a\nb", 0, -1, false, 0, "" },
		{ "8-bit", "queue show \xc3\xa9", 0, -1, false, 0, "" },
		{ "DEL", "status\x7f", 0, -1, false, 0, "" },
		{ "16 words", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16", 0, 0,
		    false, 16, "1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|16" },
		{ "17 words", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", 0,
		    -1, false, 0, "" },
		{ "16 words + json", "--json 1 2 3 4 5 6 7 8 9 10 11 12 13 "
		    "14 15 16", 0, 0, true, 16,
		    "1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|16" },
	};
	struct control_request	req;
	const char		*why;
	char			 joined[CONTROL_LINE_MAX + 1];
	size_t			 i, len;
	int			 rc, a;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		len = cases[i].len != 0 ? cases[i].len :
		    strlen(cases[i].line);
		why = NULL;
		rc = control_parse_request(cases[i].line, len, &req, &why);
		if (rc != cases[i].rc) {
			print_error("%s: rc got=%d want=%d (%s)\n",
			    cases[i].name, rc, cases[i].rc,
			    why != NULL ? why : "");
			fail();
		}
		if (rc != 0) {
			assert_non_null(why);
			continue;
		}
		joined[0] = '\0';
		for (a = 0; a < req.argc; a++) {
			if (a > 0)
				strncat(joined, "|", sizeof joined -
				    strlen(joined) - 1);
			strncat(joined, req.argv[a], sizeof joined -
			    strlen(joined) - 1);
		}
		if (req.json != cases[i].json || req.argc != cases[i].argc ||
		    strcmp(joined, cases[i].words) != 0) {
			print_error("%s: got=json%d argc%d %s want=json%d "
			    "argc%d %s\n", cases[i].name, req.json, req.argc,
			    joined, cases[i].json, cases[i].argc,
			    cases[i].words);
			fail();
		}
	}
}

static void
test_parse_length(void **state)
{
	struct control_request	 req;
	const char		*why;
	char			*line;

	(void)state;
	line = malloc(CONTROL_LINE_MAX + 2);
	assert_non_null(line);
	memset(line, 'a', CONTROL_LINE_MAX + 1);
	/* Exactly the maximum is accepted (one long word). */
	assert_int_equal(control_parse_request(line, CONTROL_LINE_MAX, &req,
	    &why), 0);
	assert_int_equal(req.argc, 1);
	assert_int_equal(strlen(req.argv[0]), CONTROL_LINE_MAX);
	/* One more is refused; a CR does not count. */
	assert_int_equal(control_parse_request(line, CONTROL_LINE_MAX + 1,
	    &req, &why), -1);
	assert_string_equal(why, "request too long");
	line[CONTROL_LINE_MAX] = '\r';
	assert_int_equal(control_parse_request(line, CONTROL_LINE_MAX + 1,
	    &req, &why), 0);
	free(line);
}

static void
test_lookup(void **state)
{
	static const struct {
		const char	*line;
		int		 id;	/* -1: unknown */
		int		 check;	/* control_parse_check rc */
	} cases[] = {
		{ "status", CONTROL_CMD_STATUS, 0 },
		{ "status now", CONTROL_CMD_STATUS, -1 },
		{ "stat", -1, 0 },
		{ "statusx", -1, 0 },
		{ "queue", -1, 0 },
		{ "queue lis", -1, 0 },
		{ "queue list", CONTROL_CMD_QUEUE_LIST, 0 },
		{ "queue list --domain a.test --state held --older-than 2h",
		    CONTROL_CMD_QUEUE_LIST, 0 },
		{ "queue list --domain", CONTROL_CMD_QUEUE_LIST, -1 },
		{ "queue list --state sleeping", CONTROL_CMD_QUEUE_LIST, -1 },
		{ "queue list --older-than 10x", CONTROL_CMD_QUEUE_LIST, -1 },
		{ "queue list --color red", CONTROL_CMD_QUEUE_LIST, -1 },
		{ "queue summary", CONTROL_CMD_QUEUE_SUMMARY, 0 },
		{ "queue show", CONTROL_CMD_QUEUE_SHOW, -1 },
		{ "queue show X", CONTROL_CMD_QUEUE_SHOW, 0 },
		{ "queue show X Y", CONTROL_CMD_QUEUE_SHOW, -1 },
		{ "queue flush", CONTROL_CMD_QUEUE_FLUSH, 0 },
		{ "queue flush X", CONTROL_CMD_QUEUE_FLUSH, 0 },
		{ "queue delete", CONTROL_CMD_QUEUE_DELETE, -1 },
		{ "queue hold --all", CONTROL_CMD_QUEUE_HOLD, 0 },
		{ "queue release X", CONTROL_CMD_QUEUE_RELEASE, 0 },
		{ "reload", CONTROL_CMD_RELOAD, 0 },
		{ "help", CONTROL_CMD_HELP, 0 },
	};
	struct control_request		 req;
	const struct control_command	*cmd;
	const char			*why;
	size_t				 i;
	int				 nw, rc;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_int_equal(control_parse_request(cases[i].line,
		    strlen(cases[i].line), &req, &why), 0);
		cmd = control_parse_lookup(req.argc, req.argv);
		if ((cmd == NULL ? -1 : (int)cmd->id) != cases[i].id) {
			print_error("%s: got=%d want=%d\n", cases[i].line,
			    cmd == NULL ? -1 : (int)cmd->id, cases[i].id);
			fail();
		}
		if (cmd == NULL)
			continue;
		nw = control_parse_nwords(cmd);
		rc = control_parse_check(cmd, req.argc - nw, req.argv + nw,
		    &why);
		if (rc != cases[i].check) {
			print_error("%s: check got=%d want=%d\n",
			    cases[i].line, rc, cases[i].check);
			fail();
		}
	}
}

static void
test_duration(void **state)
{
	static const struct {
		const char	*in;
		int64_t		 want;
	} cases[] = {
		{ "30s", 30 }, { "10m", 600 }, { "10min", 600 },
		{ "2h", 7200 }, { "1d", 86400 }, { "1w", 604800 },
		{ "45", 45 }, { "0", 0 }, { "", -1 }, { "m", -1 },
		{ "-5m", -1 }, { "10x", -1 }, { "1 h", -1 },
		{ "99999999999999999999", -1 },
		{ "9223372036854775807w", -1 },
	};
	size_t	i;
	int64_t	got;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		got = control_parse_duration(cases[i].in);
		if (got != cases[i].want) {
			print_error("%s: got=%lld want=%lld\n", cases[i].in,
			    (long long)got, (long long)cases[i].want);
			fail();
		}
	}
}

/* --- server over a real socket --------------------------------------- */

static char	sock_dir[48];
static char	sock_path[100];

static void
hook_status(void *arg, struct json *j)
{
	(void)arg;
	json_string(j, "hook", "yes");
}

static int reload_fail;

static int
hook_reload(void *arg, char **cause)
{
	(void)arg;
	if (reload_fail) {
		*cause = strdup("moat.conf:3: listen: bad\naddress");
		return -1;
	}
	return 0;
}

/*
 * Sends raw bytes (no newline added) and returns the whole answer,
 * running the event loop until the server closes.
 */
static char *
roundtrip(struct event_base *base, const char *req, size_t len)
{
	struct sockaddr_un	 sun;
	static char		 ans[65536];
	size_t			 got = 0;
	ssize_t			 r;
	int			 fd, spins;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", sock_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof sun),
	    0);
	if (len > 0)
		assert_int_equal(write(fd, req, len), (ssize_t)len);
	for (spins = 0; spins < 100000; spins++) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		r = read(fd, ans + got, sizeof ans - 1 - got);
		if (r == 0)
			break;
		if (r > 0)
			got += (size_t)r;
		else if (errno != EAGAIN && errno != ECONNRESET)
			fail_msg("read: %s", strerror(errno));
		else if (errno == ECONNRESET)
			break;
		else
			usleep(100);
	}
	close(fd);
	ans[got] = '\0';
	return ans;
}

static int
server_setup(void **state)
{
	struct event_base	*base;
	struct control		*c;
	char			*cause = NULL;
	static const struct control_hooks hooks = {
		.status = hook_status, .reload = hook_reload, .arg = NULL
	};

	snprintf(sock_dir, sizeof sock_dir, "/tmp/moat-ctl-XXXXXX");
	if (mkdtemp(sock_dir) == NULL)
		return -1;
	snprintf(sock_path, sizeof sock_path, "%s/moat.sock", sock_dir);
	if ((base = event_base_new()) == NULL)
		return -1;
	c = control_new(base, sock_path, NULL, NULL, &hooks, &cause);
	if (c == NULL) {
		print_error("control_new: %s\n", cause != NULL ? cause : "");
		return -1;
	}
	((void **)*state)[0] = base;
	((void **)*state)[1] = c;
	return 0;
}

static int
server_teardown(void **state)
{
	void		**srv = *state;
	struct stat	  st;

	control_free(srv[1]);
	/* control_free unlinks the socket. */
	assert_int_equal(stat(sock_path, &st), -1);
	event_base_free(srv[0]);
	rmdir(sock_dir);
	return 0;
}

static void
check_answer(const char *what, const char *got, const char *want)
{
	if (strcmp(got, want) != 0) {
		print_error("%s:\ngot=%s\nwant=%s\n", what, got, want);
		fail();
	}
}

static void
test_server(void **state)
{
	void			**st = *state;
	struct event_base	 *base = st[0];
	struct stat		  sb;
	char			 *ans, *big, *p;
	static const struct {
		const char	*req;
		const char	*want;
	} cases[] = {
		{ "--json queue list\n",
		    "OK\n{\"messages\":["
		    "{\"qid\":\"" QID_A "\",\"domain\":\"a.test\","
		    "\"sender\":\"alice@x.test\",\"rcpt\":\"bob@a.test\","
		    "\"rcpts\":1,\"size\":100,\"age\":0,\"state\":\"ready\","
		    "\"attempts\":0,\"next_attempt_in\":0,"
		    "\"last_error\":\"\"},"
		    "{\"qid\":\"" QID_B "\",\"domain\":\"a.test\","
		    "\"sender\":\"ev\\\"il\\n@x\",\"rcpt\":\"c@a.test\","
		    "\"rcpts\":3,\"size\":200,\"age\":0,"
		    "\"state\":\"deferred\",\"attempts\":2,"
		    "\"next_attempt_in\":0,"
		    "\"last_error\":\"451 4.3.0 try later\"},"
		    "{\"qid\":\"" QID_C "\",\"domain\":\"b.test\","
		    "\"sender\":\"\",\"rcpt\":\"d@b.test\","
		    "\"rcpts\":1,\"size\":50,\"age\":7200,\"state\":\"held\","
		    "\"attempts\":1,\"next_attempt_in\":0,"
		    "\"last_error\":\"\"}],"
		    "\"count\":3,\"bytes\":350}\n" },
		{ "--json queue list --domain B.TEST --state held\r\n",
		    "OK\n{\"messages\":["
		    "{\"qid\":\"" QID_C "\",\"domain\":\"b.test\","
		    "\"sender\":\"\",\"rcpt\":\"d@b.test\","
		    "\"rcpts\":1,\"size\":50,\"age\":7200,\"state\":\"held\","
		    "\"attempts\":1,\"next_attempt_in\":0,"
		    "\"last_error\":\"\"}],"
		    "\"count\":1,\"bytes\":50}\n" },
		/* QID_C is the only one 1h old. */
		{ "--json queue list --older-than 1h\n",
		    NULL },
		{ "--json queue summary\n",
		    "OK\n{\"destinations\":[{\"domain\":\"a.test\","
		    "\"server\":\"127.0.0.1:2526\",\"circuit\":\"open\","
		    "\"failures\":5,\"connections\":0,\"messages\":2,"
		    "\"bytes\":300,\"oldest_age\":0}]}\n" },
		{ "--json queue show " QID_A "\n",
		    "OK\n{\"qid\":\"" QID_A "\",\"domain\":\"a.test\","
		    "\"sender\":\"alice@x.test\","
		    "\"rcpts\":[\"bob@a.test\",\"eve@a.test\"],"
		    "\"size\":100,\"created\":0,\"age\":0,"
		    "\"state\":\"ready\",\"attempts\":0,\"last_error\":\"\","
		    "\"helo\":\"mx.x.test\",\"client_ip\":\"192.0.2.1\","
		    "\"session\":\"s1\",\"flags\":[\"dsn\",\"8bitmime\"]}\n" },
		{ "queue show " QID_NONE "\n",
		    "ERR no such message " QID_NONE "\n" },
		{ "--json queue show " QID_NONE "\n",
		    "ERR no such message " QID_NONE "\n"
		    "{\"error\":\"no such message " QID_NONE "\"}\n" },
		{ "queue show " QID_B "\n",
		    "ERR message " QID_B ": cannot read queue file\n" },
		{ "queue show ../../etc/passwd\n",
		    "ERR invalid queue id ../../etc/passwd\n" },
		{ "queue delete --all\n",
		    "ERR invalid queue id --all\n" },
		{ "--json queue hold --all\n", "OK\n{\"affected\":3}\n" },
		{ "queue release " QID_A "\n", "OK\n1 messages released\n" },
		{ "queue flush\n", "OK\n3 messages flushed\n" },
		{ "queue delete " QID_NONE "\n",
		    "ERR no such message " QID_NONE "\n" },
		{ "bogus\n", "ERR unknown command bogus (try help)\n" },
		{ "--json bogus\n", "ERR unknown command bogus (try help)\n"
		    "{\"error\":\"unknown command bogus (try help)\"}\n" },
		{ "queue show\n", "ERR wrong number of arguments; usage: "
		    "queue show ID\n" },
		{ "\n", "ERR empty request\n" },
		{ "status \x01\n", "ERR invalid character in request\n" },
		{ "reload\n", "OK\nconfiguration reloaded\n" },
		{ "--json reload\n", "OK\n{\"reloaded\":true}\n" },
	};
	size_t	i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		ans = roundtrip(base, cases[i].req, strlen(cases[i].req));
		if ((p = strstr(ans, "\"age\":7199")) != NULL)
			memcpy(p, "\"age\":7200", 10);
		if (cases[i].want != NULL) {
			check_answer(cases[i].req, ans, cases[i].want);
			continue;
		}
		/* --older-than 1h: only QID_C. */
		if (strstr(ans, "\"count\":1,\"bytes\":50}") == NULL ||
		    strstr(ans, QID_C) == NULL) {
			print_error("older-than: got=%s\n", ans);
			fail();
		}
	}
	assert_string_equal(last_op, "delete");
	assert_string_equal(last_qid, QID_NONE);
	/* "queue flush" without an id means every message (qid NULL). */
	ans = roundtrip(base, "queue flush\n", 12);
	assert_string_equal(last_op, "flush");
	assert_string_equal(last_qid, "");

	/* Reload failure: cause on one line. */
	reload_fail = 1;
	ans = roundtrip(base, "reload\n", 7);
	check_answer("reload fail", ans, "ERR reload failed: moat.conf:3: "
	    "listen: bad address\n");
	reload_fail = 0;

	/* Text list: header, rows, total. */
	ans = roundtrip(base, "queue list\n", 11);
	assert_true(strncmp(ans, "OK\nQID ", 7) == 0);
	assert_non_null(strstr(ans, QID_B));
	assert_non_null(strstr(ans, "c@a.test (+2)"));
	assert_non_null(strstr(ans, "ev\"il?@x"));	/* no raw newline */
	assert_non_null(strstr(ans, "\n3 messages, 350 bytes\n"));

	/* Status: counters, hook field. */
	metrics.refused[REASON_PROTO_PREGREET] = 2;
	metrics.observed[REASON_DHA_INVALID_RCPT] = 4;
	metrics.sessions_total = 9;
	ans = roundtrip(base, "--json status\n", 14);
	assert_true(strncmp(ans, "OK\n{\"version\":\"", 15) == 0);
	assert_non_null(strstr(ans, "\"sessions\":{\"active\":0,"
	    "\"total\":9},\"accepted\":0,\"queue\":{\"messages\":3,"
	    "\"bytes\":350,\"held\":1,\"active\":0,\"delivered\":7,"
	    "\"deferred\":0,\"bounced\":0,\"expired\":0},"
	    "\"destinations\":[{\"domain\":\"a.test\""));
	assert_non_null(strstr(ans, ",\"refused\":{\"proto.pregreet\":2},"
	    "\"observed\":{\"dha.invalid_rcpt\":4},\"hook\":\"yes\"}\n"));
	ans = roundtrip(base, "status\n", 7);
	assert_non_null(strstr(ans, "\nrefused:\n  proto.pregreet: 2\n"));
	assert_non_null(strstr(ans, "\nhook: yes\n"));

	/* A line longer than the bound, without newline: refused. */
	big = malloc(CONTROL_LINE_MAX + 100);
	assert_non_null(big);
	memset(big, 'a', CONTROL_LINE_MAX + 100);
	ans = roundtrip(base, big, CONTROL_LINE_MAX + 100);
	check_answer("too long", ans, "ERR request too long\n");
	/* Exactly the bound with a newline: parsed (unknown command). */
	big[CONTROL_LINE_MAX] = '\n';
	ans = roundtrip(base, big, CONTROL_LINE_MAX + 1);
	assert_true(strncmp(ans, "ERR unknown command aaaa", 24) == 0);
	free(big);

	/* At most CONTROL_MAX_CONNS at once: the next one is refused. */
	{
		struct sockaddr_un	sun;
		int			fds[CONTROL_MAX_CONNS], k;

		memset(&sun, 0, sizeof sun);
		sun.sun_family = AF_UNIX;
		memcpy(sun.sun_path, sock_path, strlen(sock_path) + 1);
		for (k = 0; k < CONTROL_MAX_CONNS; k++) {
			fds[k] = socket(AF_UNIX, SOCK_STREAM, 0);
			assert_int_equal(connect(fds[k],
			    (struct sockaddr *)&sun, sizeof sun), 0);
			event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		}
		for (k = 0; k < 10; k++)
			event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		ans = roundtrip(base, "status\n", 7);
		check_answer("17th", ans, "ERR too many control "
		    "connections\n");
		for (k = 0; k < CONTROL_MAX_CONNS; k++)
			close(fds[k]);
		for (k = 0; k < 10; k++)
			event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		ans = roundtrip(base, "queue flush\n", 12);
		check_answer("after close", ans, "OK\n3 messages flushed\n");
	}

	/* Mode 0600. */
	assert_int_equal(stat(sock_path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
}

static void
test_server_stale(void **state)
{
	void		**st = *state;
	struct control	 *c2;
	char		 *cause = NULL;
	char		  path[100];
	int		  fd;

	/* A live socket is not stolen. */
	c2 = control_new(st[0], sock_path, NULL, NULL, NULL, &cause);
	assert_null(c2);
	assert_non_null(cause);
	assert_non_null(strstr(cause, "another moatd"));
	free(cause);

	/* A regular file is not removed. */
	snprintf(path, sizeof path, "%s/file", sock_dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	c2 = control_new(st[0], path, NULL, NULL, NULL, &cause);
	assert_null(c2);
	assert_non_null(strstr(cause, "not a socket"));
	free(cause);
	unlink(path);

	/* A stale socket (nobody listening) is replaced. */
	snprintf(path, sizeof path, "%s/stale.sock", sock_dir);
	{
		struct sockaddr_un sun;

		memset(&sun, 0, sizeof sun);
		sun.sun_family = AF_UNIX;
		snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		assert_int_equal(bind(fd, (struct sockaddr *)&sun,
		    sizeof sun), 0);
		close(fd);	/* the file stays, nobody listens */
	}
	c2 = control_new(st[0], path, NULL, NULL, NULL, &cause);
	if (c2 == NULL)
		fail_msg("stale: %s", cause);
	control_free(c2);
}

/*
 * MOAT_TEST_CONTROL_SERVE=seconds: serve the fake queue on
 * $MOAT_SOCKET for that long instead of testing, to try moatctl by hand.
 */
static int
serve(const char *secs)
{
	struct event_base	*base = event_base_new();
	struct control		*c;
	struct timeval		 tv = { atoi(secs), 0 };
	char			*cause = NULL;
	const char		*path = getenv("MOAT_SOCKET");
	static const struct control_hooks hooks = {
		.status = hook_status, .reload = hook_reload, .arg = NULL
	};

	if (base == NULL || path == NULL)
		return 1;
	if ((c = control_new(base, path, NULL, NULL, &hooks,
	    &cause)) == NULL) {
		fprintf(stderr, "%s\n", cause);
		return 1;
	}
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	control_free(c);
	event_base_free(base);
	return 0;
}

int
main(void)
{
	void	*server[2];
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_request),
		cmocka_unit_test(test_parse_length),
		cmocka_unit_test(test_lookup),
		cmocka_unit_test(test_duration),
		cmocka_unit_test_prestate_setup_teardown(test_server,
		    server_setup, server_teardown, server),
		cmocka_unit_test_prestate_setup_teardown(test_server_stale,
		    server_setup, server_teardown, server),
	};

	if (getenv("MOAT_TEST_CONTROL_SERVE") != NULL)
		return serve(getenv("MOAT_TEST_CONTROL_SERVE"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
