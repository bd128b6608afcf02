/*
 * control.c: the control socket server inside moatd (protocol in
 * control.h, client in moatctl.c).
 *
 * One evconnlistener on a UNIX socket (mode 0600, and the peer must be
 * root or our own uid); per connection one bufferevent that reads ONE
 * request line, bounded by CONTROL_LINE_MAX before more is buffered (read
 * high watermark plus a length check), answers it, and closes once the
 * answer is flushed.  At most CONTROL_MAX_CONNS connections at a time,
 * each at most CONTROL_TIMEOUT seconds: a stuck or hostile client costs
 * one slot for a bounded time and never blocks the loop.
 *
 * Dispatch goes through the CONTROL_COMMANDS table (control.h): the PURE
 * parser checks syntax and arity, then the handler of the command runs.
 * Handlers build their answer with the json.h writer, in JSON mode for
 * --json and in text mode otherwise, except the tables of "queue list"
 * and "queue summary", which are laid out by hand for humans.
 *
 * Queue operations call delivery.h (the in-memory queue) and, for
 * "queue show", spool.h for the full envelope; queue ids are checked
 * with qid_valid() before use.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "config.h"
#include "control.h"
#include "delivery.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "qid.h"
#include "reason.h"
#include "spool.h"

#ifndef MOAT_VERSION
#define MOAT_VERSION	"0.1.0"
#endif

struct control_conn {
	TAILQ_ENTRY(control_conn)	 entry;
	struct control			*c;
	struct bufferevent		*bev;
	bool				 answered;
};

struct control {
	struct event_base		*base;
	struct evconnlistener		*listener;
	char				 path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct delivery			*delivery;
	struct spool			*spool;
	struct control_hooks		 hooks;
	const struct config		*config;
	time_t				 started;
	TAILQ_HEAD(, control_conn)	 conns;
	unsigned			 nconns;
};

/* One request being answered. */
struct control_ctx {
	struct control	*c;
	bool		 json;
	time_t		 now;
	struct evbuffer	*body;
	struct json	 j;
	char		 err[512];
};

typedef int	(*control_handler)(struct control_ctx *, int, char **);

#define CONTROL_HANDLER_DECL(id, fn, words, min, max, usage)		\
	static int control_cmd_##fn(struct control_ctx *, int, char **);
CONTROL_COMMANDS(CONTROL_HANDLER_DECL)
#undef CONTROL_HANDLER_DECL

static const control_handler control_handlers[CONTROL_CMD_MAX] = {
#define CONTROL_HANDLER_ROW(id, fn, words, min, max, usage)		\
	[CONTROL_CMD_##id] = control_cmd_##fn,
	CONTROL_COMMANDS(CONTROL_HANDLER_ROW)
#undef CONTROL_HANDLER_ROW
};

static void	control_conn_free(struct control_conn *);
static void	control_conn_event(struct bufferevent *, short, void *);

static int
control_fail(struct control_ctx *ctx, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	(void)vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
	va_end(ap);
	return -1;
}

/*
 * Text-mode cell: printable ASCII only (anything else, which came from
 * an SMTP client or server, becomes '?'), cut to width with a trailing
 * '+' when longer.
 */
static void
control_cell(char *buf, size_t len, const char *s, size_t width)
{
	size_t	i, n;

	if (s == NULL)
		s = "";
	n = strlen(s);
	if (width >= len)
		width = len - 1;
	for (i = 0; i < n && i < width; i++) {
		unsigned char c = (unsigned char)s[i];

		buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	if (n > width && width > 0)
		buf[width - 1] = '+';
	buf[i] = '\0';
}

static int64_t
control_age(const struct control_ctx *ctx, int64_t t)
{
	if (t <= 0 || t > (int64_t)ctx->now)
		return 0;
	return (int64_t)ctx->now - t;
}

static bool
control_check_qid(struct control_ctx *ctx, const char *qid)
{
	if (qid_valid(qid))
		return true;
	(void)control_fail(ctx, "invalid queue id %s", qid);
	return false;
}

/* --- status ----------------------------------------------------------- */

static void
control_dest_json(struct control_ctx *ctx, const struct delivery_dest_info *di)
{
	struct json	*j = &ctx->j;

	json_object_open(j, NULL);
	json_string(j, "domain", di->domain);
	json_string(j, "server", di->server != NULL ? di->server : "");
	json_string(j, "circuit", delivery_circuit_name(di->circuit));
	json_uint(j, "failures", di->failures);
	json_uint(j, "connections", di->connections);
	json_uint(j, "messages", di->messages);
	json_uint(j, "bytes", di->bytes);
	json_duration(j, "oldest_age", control_age(ctx, di->oldest));
	json_object_close(j);
}

static void
control_status_dest_cb(void *arg, const struct delivery_dest_info *di)
{
	control_dest_json(arg, di);
}

static void
control_reason_counters(struct json *j, const char *key,
    const uint64_t *counters)
{
	unsigned	r;

	json_object_open(j, key);
	for (r = 1; r < REASON_MAX; r++)
		if (counters[r] != 0)
			json_uint(j, reason_name((enum reason)r), counters[r]);
	json_object_close(j);
}

static int
control_cmd_status(struct control_ctx *ctx, int argc, char **argv)
{
	struct control		*c = ctx->c;
	struct json		*j = &ctx->j;
	struct delivery_stats	 st;

	(void)argc;
	(void)argv;
	memset(&st, 0, sizeof st);
	delivery_get_stats(c->delivery, &st);

	json_object_open(j, NULL);
	json_string(j, "version", MOAT_VERSION);
	json_int(j, "pid", (int64_t)getpid());
	json_duration(j, "uptime", (int64_t)(ctx->now - c->started));
	json_string(j, "config", c->config != NULL ? c->config->path : "");
	json_object_open(j, "sessions");
	json_uint(j, "active", metrics.sessions_active);
	json_uint(j, "total", metrics.sessions_total);
	json_object_close(j);
	json_uint(j, "accepted", metrics.messages_accepted);
	json_object_open(j, "queue");
	json_uint(j, "messages", st.messages);
	json_uint(j, "bytes", st.bytes);
	json_uint(j, "held", st.held);
	json_uint(j, "active", st.active);
	json_uint(j, "delivered", st.delivered);
	json_uint(j, "deferred", st.deferred);
	json_uint(j, "bounced", st.bounced);
	json_uint(j, "expired", st.expired);
	json_object_close(j);
	json_array_open(j, "destinations");
	delivery_iterate_dests(c->delivery, control_status_dest_cb, ctx);
	json_array_close(j);
	control_reason_counters(j, "refused", metrics.refused);
	control_reason_counters(j, "observed", metrics.observed);
	if (c->hooks.status != NULL)
		c->hooks.status(c->hooks.arg, j);
	json_object_close(j);
	return 0;
}

/* --- queue list ------------------------------------------------------- */

struct control_list {
	struct control_ctx		*ctx;
	struct control_list_filter	 filter;
	uint64_t			 count;
	uint64_t			 bytes;
};

#define CONTROL_LIST_HEADER						\
	"%-18s %8s %10s %-8s %4s  %-32s %-36s %-24s %s\n"

static void
control_list_cb(void *arg, const struct delivery_entry_info *e)
{
	struct control_list	*l = arg;
	struct control_ctx	*ctx = l->ctx;
	struct json		*j = &ctx->j;
	int64_t			 age = control_age(ctx, e->created);
	int64_t			 next = 0;
	char			 sage[32], sender[40], rcpt[48], domain[40];
	char			 error[128], more[32];

	if (l->filter.domain != NULL &&
	    strcasecmp(l->filter.domain, e->domain) != 0)
		return;
	if (l->filter.state >= 0 && (int)e->state != l->filter.state)
		return;
	if (l->filter.older_than > 0 && age < l->filter.older_than)
		return;
	l->count++;
	l->bytes += e->size;
	if (e->next_attempt > (int64_t)ctx->now)
		next = e->next_attempt - (int64_t)ctx->now;

	if (ctx->json) {
		json_object_open(j, NULL);
		json_string(j, "qid", e->qid);
		json_string(j, "domain", e->domain);
		json_string(j, "sender", e->sender);
		json_string(j, "rcpt", e->first_rcpt != NULL ?
		    e->first_rcpt : "");
		json_uint(j, "rcpts", e->nrcpts);
		json_uint(j, "size", e->size);
		json_int(j, "age", age);
		json_string(j, "state", delivery_state_name(e->state));
		json_uint(j, "attempts", e->attempts);
		json_int(j, "next_attempt_in", next);
		json_string(j, "last_error", e->last_error != NULL ?
		    e->last_error : "");
		json_object_close(j);
		return;
	}
	json_format_duration(sage, sizeof sage, age);
	control_cell(sender, sizeof sender,
	    e->sender[0] != '\0' ? e->sender : "<>", 32);
	more[0] = '\0';
	if (e->nrcpts > 1)
		(void)snprintf(more, sizeof more, " (+%zu)", e->nrcpts - 1);
	control_cell(rcpt, sizeof rcpt, e->first_rcpt,
	    36 - strlen(more));
	/* Both parts are bounded (36 + NUL <= sizeof rcpt). */
	(void)snprintf(rcpt + strlen(rcpt), sizeof rcpt - strlen(rcpt),
	    "%s", more);
	control_cell(domain, sizeof domain, e->domain, 24);
	control_cell(error, sizeof error, e->last_error != NULL &&
	    e->last_error[0] != '\0' ? e->last_error : "-", 120);
	if (evbuffer_add_printf(ctx->body,
	    "%-18s %8s %10llu %-8s %4u  %-32s %-36s %-24s %s\n",
	    e->qid, sage, (unsigned long long)e->size,
	    delivery_state_name(e->state), e->attempts, sender, rcpt,
	    domain, error) < 0)
		ctx->j.error = true;
}

static int
control_cmd_queue_list(struct control_ctx *ctx, int argc, char **argv)
{
	struct control_list	 l;
	const char		*why;

	memset(&l, 0, sizeof l);
	l.ctx = ctx;
	if (control_parse_list_filter(argc, argv, &l.filter, &why) != 0)
		return control_fail(ctx, "%s", why);
	if (ctx->json) {
		json_object_open(&ctx->j, NULL);
		json_array_open(&ctx->j, "messages");
	} else if (evbuffer_add_printf(ctx->body, CONTROL_LIST_HEADER,
	    "QID", "AGE", "SIZE", "STATE", "TRY", "SENDER", "RECIPIENT",
	    "DOMAIN", "LAST ERROR") < 0)
		return control_fail(ctx, "out of memory");
	delivery_iterate(ctx->c->delivery, control_list_cb, &l);
	if (ctx->json) {
		json_array_close(&ctx->j);
		json_uint(&ctx->j, "count", l.count);
		json_uint(&ctx->j, "bytes", l.bytes);
		json_object_close(&ctx->j);
	} else if (evbuffer_add_printf(ctx->body,
	    "%llu messages, %llu bytes\n", (unsigned long long)l.count,
	    (unsigned long long)l.bytes) < 0)
		return control_fail(ctx, "out of memory");
	return 0;
}

/* --- queue summary ---------------------------------------------------- */

static void
control_summary_cb(void *arg, const struct delivery_dest_info *di)
{
	struct control_ctx	*ctx = arg;
	char			 domain[40], server[48], oldest[32];

	if (ctx->json) {
		control_dest_json(ctx, di);
		return;
	}
	control_cell(domain, sizeof domain, di->domain, 32);
	control_cell(server, sizeof server, di->server, 40);
	json_format_duration(oldest, sizeof oldest,
	    control_age(ctx, di->oldest));
	if (evbuffer_add_printf(ctx->body,
	    "%-32s %-40s %-9s %8u %5u %8llu %12llu %8s\n", domain, server,
	    delivery_circuit_name(di->circuit), di->failures,
	    di->connections, (unsigned long long)di->messages,
	    (unsigned long long)di->bytes, oldest) < 0)
		ctx->j.error = true;
}

static int
control_cmd_queue_summary(struct control_ctx *ctx, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	if (ctx->json) {
		json_object_open(&ctx->j, NULL);
		json_array_open(&ctx->j, "destinations");
	} else if (evbuffer_add_printf(ctx->body,
	    "%-32s %-40s %-9s %8s %5s %8s %12s %8s\n", "DOMAIN", "SERVER",
	    "CIRCUIT", "FAILURES", "CONNS", "MESSAGES", "BYTES",
	    "OLDEST") < 0)
		return control_fail(ctx, "out of memory");
	delivery_iterate_dests(ctx->c->delivery, control_summary_cb, ctx);
	if (ctx->json) {
		json_array_close(&ctx->j);
		json_object_close(&ctx->j);
	}
	return 0;
}

/* --- queue show ------------------------------------------------------- */

struct control_show {
	bool				 found;
	struct delivery_entry_info	 e;
	char				 last_error[1024];
};

static void
control_show_cb(void *arg, const struct delivery_entry_info *e)
{
	struct control_show	*s = arg;

	s->found = true;
	s->e = *e;
	/* The pointers are only valid during the callback. */
	s->e.first_rcpt = NULL;
	(void)snprintf(s->last_error, sizeof s->last_error, "%s",
	    e->last_error != NULL ? e->last_error : "");
	s->e.last_error = s->last_error;
}

static int
control_cmd_queue_show(struct control_ctx *ctx, int argc, char **argv)
{
	static const struct {
		uint32_t	 flag;
		const char	*name;
	} flags[] = {
		{ SPOOL_F_DSN, "dsn" },
		{ SPOOL_F_8BITMIME, "8bitmime" },
		{ SPOOL_F_WARNED, "warned" }
	};
	struct control_show	 s;
	struct spool_message	 msg;
	struct json		*j = &ctx->j;
	bool			 held = false;
	size_t			 i;

	(void)argc;
	if (!control_check_qid(ctx, argv[0]))
		return -1;
	memset(&s, 0, sizeof s);
	if (delivery_info(ctx->c->delivery, argv[0], control_show_cb,
	    &s) < 0 || !s.found)
		return control_fail(ctx, "no such message %s", argv[0]);
	memset(&msg, 0, sizeof msg);
	msg.fd = -1;
	if (spool_message_open(ctx->c->spool, argv[0], &msg, &held) != 0)
		return control_fail(ctx, "message %s: cannot read queue file",
		    argv[0]);

	json_object_open(j, NULL);
	json_string(j, "qid", s.e.qid);
	json_string(j, "domain", s.e.domain);
	json_string(j, "sender", msg.env.sender);
	json_array_open(j, "rcpts");
	for (i = 0; i < msg.env.nrcpts; i++)
		json_string(j, NULL, msg.env.rcpts[i]);
	json_array_close(j);
	json_uint(j, "size", s.e.size);
	json_time(j, "created", msg.env.created);
	json_duration(j, "age", control_age(ctx, msg.env.created));
	json_string(j, "state", delivery_state_name(s.e.state));
	json_uint(j, "attempts", s.e.attempts);
	json_string(j, "last_error", s.last_error);
	json_string(j, "helo", msg.env.helo);
	json_string(j, "client_ip", msg.env.client_ip);
	json_string(j, "session", msg.env.session_id);
	json_array_open(j, "flags");
	for (i = 0; i < sizeof flags / sizeof flags[0]; i++)
		if (msg.env.flags & flags[i].flag)
			json_string(j, NULL, flags[i].name);
	json_array_close(j);
	json_object_close(j);
	spool_message_close(&msg);
	return 0;
}

/* --- flush, delete, hold, release ------------------------------------ */

static int
control_queue_op(struct control_ctx *ctx, int argc, char **argv,
    int (*op)(struct delivery *, const char *), bool allow_all,
    const char *verb)
{
	const char	*qid = NULL;
	int		 n;

	if (argc > 0) {
		if (allow_all && strcmp(argv[0], "--all") == 0)
			qid = NULL;
		else if (!control_check_qid(ctx, argv[0]))
			return -1;
		else
			qid = argv[0];
	}
	n = op(ctx->c->delivery, qid);
	if (n < 0)
		return control_fail(ctx, "no such message %s",
		    qid != NULL ? qid : "(all)");
	log_info("event=control_%s qid=%s affected=%d", verb,
	    qid != NULL ? qid : "all", n);
	if (ctx->json) {
		json_object_open(&ctx->j, NULL);
		json_int(&ctx->j, "affected", n);
		json_object_close(&ctx->j);
	} else if (evbuffer_add_printf(ctx->body, "%d messages %s\n", n,
	    verb) < 0)
		return control_fail(ctx, "out of memory");
	return 0;
}

static int
control_cmd_queue_flush(struct control_ctx *ctx, int argc, char **argv)
{
	/* "queue flush" alone flushes everything. */
	return control_queue_op(ctx, argc, argv, delivery_flush, false,
	    "flushed");
}

static int
control_cmd_queue_delete(struct control_ctx *ctx, int argc, char **argv)
{
	return control_queue_op(ctx, argc, argv, delivery_delete, false,
	    "deleted");
}

static int
control_cmd_queue_hold(struct control_ctx *ctx, int argc, char **argv)
{
	return control_queue_op(ctx, argc, argv, delivery_hold, true,
	    "held");
}

static int
control_cmd_queue_release(struct control_ctx *ctx, int argc, char **argv)
{
	return control_queue_op(ctx, argc, argv, delivery_release, true,
	    "released");
}

/* --- reload, help ----------------------------------------------------- */

static int
control_cmd_reload(struct control_ctx *ctx, int argc, char **argv)
{
	char	*cause = NULL;

	(void)argc;
	(void)argv;
	if (ctx->c->hooks.reload == NULL)
		return control_fail(ctx, "reload not supported");
	if (ctx->c->hooks.reload(ctx->c->hooks.arg, &cause) != 0) {
		(void)control_fail(ctx, "reload failed: %s",
		    cause != NULL ? cause : "unknown error");
		free(cause);
		return -1;
	}
	if (ctx->json) {
		json_object_open(&ctx->j, NULL);
		json_bool(&ctx->j, "reloaded", true);
		json_object_close(&ctx->j);
	} else if (evbuffer_add_printf(ctx->body, "configuration "
	    "reloaded\n") < 0)
		return control_fail(ctx, "out of memory");
	return 0;
}

static int
control_cmd_help(struct control_ctx *ctx, int argc, char **argv)
{
	const struct control_command	*cmds = control_parse_commands();
	int				 i;

	(void)argc;
	(void)argv;
	if (ctx->json) {
		json_object_open(&ctx->j, NULL);
		json_array_open(&ctx->j, "commands");
	}
	for (i = 0; i < CONTROL_CMD_MAX; i++) {
		if (ctx->json)
			json_string(&ctx->j, NULL, cmds[i].usage);
		else if (evbuffer_add_printf(ctx->body, "%s\n",
		    cmds[i].usage) < 0)
			return control_fail(ctx, "out of memory");
	}
	if (ctx->json) {
		json_array_close(&ctx->j);
		json_object_close(&ctx->j);
	}
	return 0;
}

/* --- dispatch --------------------------------------------------------- */

/*
 * Runs one request line and writes the whole answer (status line and
 * body) into reply.  Never fails: every error becomes an ERR answer.
 */
static void
control_run(struct control *c, const char *line, size_t len,
    struct evbuffer *reply)
{
	struct control_request		 req;
	const struct control_command	*cmd = NULL;
	struct control_ctx		 ctx;
	const char			*why;
	int				 rc = -1, nw;
	char				*p;
	struct json			 ej;

	memset(&ctx, 0, sizeof ctx);
	ctx.c = c;
	ctx.now = time(NULL);
	if ((ctx.body = evbuffer_new()) == NULL) {
		(void)evbuffer_add_printf(reply, "ERR out of memory\n");
		return;
	}
	if (control_parse_request(line, len, &req, &why) != 0) {
		/* Still answer in JSON if the client asked for it. */
		ctx.json = len >= 6 && strncmp(line, "--json", 6) == 0;
		(void)control_fail(&ctx, "%s", why);
		goto answer;
	}
	ctx.json = req.json;
	json_init(&ctx.j, ctx.body, ctx.json ? JSON_MODE_JSON :
	    JSON_MODE_TEXT);
	if ((cmd = control_parse_lookup(req.argc, req.argv)) == NULL) {
		(void)control_fail(&ctx, "unknown command %s (try help)",
		    req.argv[0]);
		goto answer;
	}
	nw = control_parse_nwords(cmd);
	if (control_parse_check(cmd, req.argc - nw, req.argv + nw,
	    &why) != 0) {
		(void)control_fail(&ctx, "%s; usage: %s", why, cmd->usage);
		goto answer;
	}
	rc = control_handlers[cmd->id](&ctx, req.argc - nw, req.argv + nw);
	if (rc == 0 && (json_finish(&ctx.j) != 0 || ctx.j.error)) {
		rc = control_fail(&ctx, "internal error writing the answer");
		evbuffer_drain(ctx.body, evbuffer_get_length(ctx.body));
	}

answer:
	log_info("event=control command=\"%s\" json=%d result=%s",
	    cmd != NULL ? cmd->words : "-", ctx.json ? 1 : 0,
	    rc == 0 ? "ok" : "err");
	if (rc == 0) {
		(void)evbuffer_add(reply, "OK\n", 3);
		(void)evbuffer_add_buffer(reply, ctx.body);
	} else {
		/* The status line is one line whatever the cause says. */
		for (p = ctx.err; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = ' ';
		(void)evbuffer_add_printf(reply, "ERR %s\n", ctx.err);
		if (ctx.json) {
			json_init(&ej, reply, JSON_MODE_JSON);
			json_object_open(&ej, NULL);
			json_string(&ej, "error", ctx.err);
			json_object_close(&ej);
			(void)json_finish(&ej);
		}
	}
	evbuffer_free(ctx.body);
}

/* --- connections ------------------------------------------------------ */

static void
control_conn_written(struct bufferevent *bev, void *arg)
{
	struct control_conn	*cc = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		control_conn_free(cc);
}

static void
control_conn_answer(struct control_conn *cc, const char *line, size_t len)
{
	struct evbuffer	*reply;

	cc->answered = true;
	bufferevent_disable(cc->bev, EV_READ);
	if ((reply = evbuffer_new()) == NULL) {
		control_conn_free(cc);
		return;
	}
	if (line != NULL)
		control_run(cc->c, line, len, reply);
	else
		(void)evbuffer_add_printf(reply, "ERR request too long\n");
	/* Writing after the client left fails: the event cb frees. */
	bufferevent_setcb(cc->bev, NULL, control_conn_written,
	    control_conn_event, cc);
	if (bufferevent_write_buffer(cc->bev, reply) != 0 ||
	    evbuffer_get_length(bufferevent_get_output(cc->bev)) == 0) {
		evbuffer_free(reply);
		control_conn_free(cc);
		return;
	}
	evbuffer_free(reply);
}

static void
control_conn_read(struct bufferevent *bev, void *arg)
{
	struct control_conn	*cc = arg;
	struct evbuffer		*in = bufferevent_get_input(bev);
	struct evbuffer_ptr	 eol;
	size_t			 eol_len;
	char			 line[CONTROL_LINE_MAX + 2];

	if (cc->answered)
		return;
	eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
	if (eol.pos < 0) {
		/* +1: a "\r" before the "\n" does not count. */
		if (evbuffer_get_length(in) > CONTROL_LINE_MAX + 1)
			control_conn_answer(cc, NULL, 0);
		return;
	}
	if ((size_t)eol.pos > CONTROL_LINE_MAX + 1) {
		control_conn_answer(cc, NULL, 0);
		return;
	}
	if (evbuffer_remove(in, line, (size_t)eol.pos) != (int)eol.pos) {
		control_conn_free(cc);
		return;
	}
	control_conn_answer(cc, line, (size_t)eol.pos);
}

static void
control_conn_event(struct bufferevent *bev, short what, void *arg)
{
	struct control_conn	*cc = arg;

	(void)bev;
	if (what & BEV_EVENT_TIMEOUT)
		log_info("event=control_timeout");
	control_conn_free(cc);
}

static void
control_conn_free(struct control_conn *cc)
{
	struct control	*c = cc->c;

	TAILQ_REMOVE(&c->conns, cc, entry);
	c->nconns--;
	bufferevent_free(cc->bev);
	free(cc);
}

/* Only root and moatd's own user may drive moatd (beyond mode 0600). */
static bool
control_peer_allowed(int fd)
{
	struct ucred	cred;
	socklen_t	len = sizeof cred;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
		return false;
	return cred.uid == 0 || cred.uid == geteuid();
}

static void
control_refuse(int fd, const char *msg)
{
	/* Best effort on a fresh non-blocking socket; then close. */
	(void)!write(fd, msg, strlen(msg));
	close(fd);
}

static void
control_accept(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct control		*c = arg;
	struct control_conn	*cc;
	struct timeval		 tv = { CONTROL_TIMEOUT, 0 };

	(void)lev;
	(void)sa;
	(void)salen;
	if (!control_peer_allowed(fd)) {
		log_warnx("event=control_refused reason=peer_uid");
		control_refuse(fd, "ERR permission denied\n");
		return;
	}
	if (c->nconns >= CONTROL_MAX_CONNS) {
		log_warnx("event=control_refused reason=too_many max=%d",
		    CONTROL_MAX_CONNS);
		control_refuse(fd, "ERR too many control connections\n");
		return;
	}
	if ((cc = calloc(1, sizeof *cc)) == NULL) {
		log_warn("control: calloc");
		close(fd);
		return;
	}
	cc->c = c;
	cc->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (cc->bev == NULL) {
		log_warnx("control: bufferevent_socket_new failed");
		close(fd);
		free(cc);
		return;
	}
	TAILQ_INSERT_TAIL(&c->conns, cc, entry);
	c->nconns++;
	/* Never buffer more than one request line (+ "\r\n"). */
	bufferevent_setwatermark(cc->bev, EV_READ, 0, CONTROL_LINE_MAX + 2);
	bufferevent_set_timeouts(cc->bev, &tv, &tv);
	bufferevent_setcb(cc->bev, control_conn_read, NULL,
	    control_conn_event, cc);
	if (bufferevent_enable(cc->bev, EV_READ | EV_WRITE) != 0)
		control_conn_free(cc);
}

/*
 * A socket file left by a previous moatd is removed, but only if it is a
 * socket and nobody answers on it: a second moatd must not steal the
 * socket of a running one.
 */
static int
control_remove_stale(const char *path, const struct sockaddr_un *sun,
    char **cause)
{
	struct stat	st;
	int		fd, r, saved;

	if (lstat(path, &st) != 0) {
		if (errno == ENOENT)
			return 0;
		if (asprintf(cause, "%s: %s", path, strerror(errno)) < 0)
			*cause = NULL;
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		if (asprintf(cause, "%s: exists and is not a socket",
		    path) < 0)
			*cause = NULL;
		return -1;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
		if (asprintf(cause, "socket: %s", strerror(errno)) < 0)
			*cause = NULL;
		return -1;
	}
	r = connect(fd, (const struct sockaddr *)sun, sizeof *sun);
	saved = errno;
	close(fd);
	if (r == 0) {
		if (asprintf(cause, "%s: another moatd is listening on it",
		    path) < 0)
			*cause = NULL;
		return -1;
	}
	if (saved != ECONNREFUSED && saved != ENOENT) {
		if (asprintf(cause, "%s: %s", path, strerror(saved)) < 0)
			*cause = NULL;
		return -1;
	}
	if (unlink(path) != 0 && errno != ENOENT) {
		if (asprintf(cause, "unlink %s: %s", path,
		    strerror(errno)) < 0)
			*cause = NULL;
		return -1;
	}
	log_info("event=control_stale_socket_removed path=%s", path);
	return 0;
}

struct control *
control_new(struct event_base *base, const char *path,
    struct delivery *delivery, struct spool *spool,
    const struct control_hooks *hooks, char **cause)
{
	struct control		*c;
	struct sockaddr_un	 sun;
	int			 fd = -1;

	*cause = NULL;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (path == NULL || *path == '\0' ||
	    strlen(path) >= sizeof sun.sun_path) {
		if (asprintf(cause, "control socket path too long or empty: "
		    "%s", path != NULL ? path : "") < 0)
			*cause = NULL;
		return NULL;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if ((c = calloc(1, sizeof *c)) == NULL) {
		if (asprintf(cause, "out of memory") < 0)
			*cause = NULL;
		return NULL;
	}
	TAILQ_INIT(&c->conns);
	c->base = base;
	c->delivery = delivery;
	c->spool = spool;
	if (hooks != NULL)
		c->hooks = *hooks;
	c->started = time(NULL);
	memcpy(c->path, path, strlen(path) + 1);

	if (control_remove_stale(path, &sun, cause) != 0)
		goto fail;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		if (asprintf(cause, "socket: %s", strerror(errno)) < 0)
			*cause = NULL;
		goto fail;
	}
	/*
	 * bind() creates the file with the umask's mode; chmod narrows it
	 * to 0600 before listen().  No umask() dance: umask is per process
	 * and the spool sync thread creates files concurrently.  The peer
	 * uid check in control_accept() covers the short window anyway.
	 */
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
		if (asprintf(cause, "bind %s: %s", path, strerror(errno)) < 0)
			*cause = NULL;
		goto fail;
	}
	if (chmod(path, 0600) != 0 || listen(fd, CONTROL_MAX_CONNS) != 0) {
		if (asprintf(cause, "%s: %s", path, strerror(errno)) < 0)
			*cause = NULL;
		unlink(path);
		goto fail;
	}
	c->listener = evconnlistener_new(base, control_accept, c,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (c->listener == NULL) {
		if (asprintf(cause, "%s: cannot listen", path) < 0)
			*cause = NULL;
		unlink(path);
		goto fail;
	}
	log_info("event=control_listening path=%s", path);
	return c;

fail:
	if (fd >= 0)
		close(fd);
	free(c);
	return NULL;
}

void
control_set_config(struct control *c, const struct config *config)
{
	c->config = config;
}

void
control_free(struct control *c)
{
	struct control_conn	*cc;

	if (c == NULL)
		return;
	while ((cc = TAILQ_FIRST(&c->conns)) != NULL)
		control_conn_free(cc);
	evconnlistener_free(c->listener);
	if (unlink(c->path) != 0 && errno != ENOENT)
		log_warn("unlink %s", c->path);
	free(c);
}
