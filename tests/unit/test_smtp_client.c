/*
 * test_smtp_client.c: the SMTP client against a scripted SMTP server run
 * in the same event loop on 127.0.0.1 (an evconnlistener with canned
 * replies).  Checks pipelining, per-recipient results, dot-stuffing of a
 * large body streamed from a real file, failures (refused, timeout,
 * close mid-DATA, garbage) and connection reuse.
 */
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "smtp_client.h"
#include "spool.h"

/* --- the scripted server --- */

struct srv {
	struct event_base	*base;
	struct evconnlistener	*lis;
	int			 port;
	/* script; NULL means the default */
	const char		*greeting;
	const char		*ehlo;
	const char		*mail;
	const char		*reject_rcpt;	/* substring -> 550 */
	const char		*dot;
	bool			 force_354;
	bool			 close_in_data;
	bool			 silent_rcpt;	/* then silent for good */
	bool			 mute;
	bool			 stall_data;	/* stop reading after 354 */
	const char		*rcpt_421;	/* this rcpt: 421 and close */
	/* what it saw */
	int			 connections;
	int			 transactions;
	int			 accepted;	/* in current transaction */
	bool			 mail_ok;
	bool			 mail_had_more;
	bool			 saw_quit;
	bool			 saw_rset;
	struct evbuffer		*log;	/* command lines */
	struct evbuffer		*body;	/* raw DATA lines, stuffed */
	struct bufferevent	*conn;	/* the last one */
	bool			 in_data;
};

static void
srv_reply(struct bufferevent *bev, const char *s)
{
	bufferevent_write(bev, s, strlen(s));
}

static void
srv_drop(struct srv *s)
{
	if (s->conn != NULL) {
		bufferevent_free(s->conn);
		s->conn = NULL;
	}
}

static void
srv_close_when_flushed(struct bufferevent *bev, void *arg)
{
	struct srv	*s = arg;

	(void)bev;
	srv_drop(s);
}

static void
srv_read(struct bufferevent *bev, void *arg)
{
	struct srv	*s = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);
	char		*line;
	size_t		 n;

	while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT)) !=
	    NULL) {
		if (s->in_data) {
			if (strcmp(line, ".") == 0) {
				s->in_data = false;
				s->mail_ok = false;
				s->transactions++;
				srv_reply(bev, s->dot ? s->dot :
				    "250 2.0.0 queued\r\n");
			} else {
				if (s->close_in_data) {
					free(line);
					srv_drop(s);
					return;
				}
				evbuffer_add(s->body, line, n);
				evbuffer_add(s->body, "\r\n", 2);
			}
			free(line);
			continue;
		}
		evbuffer_add_printf(s->log, "%s\n", line);
		if (s->mute)
			;
		else if (strncasecmp(line, "EHLO", 4) == 0)
			srv_reply(bev, s->ehlo ? s->ehlo : "250-srv\r\n"
			    "250-PIPELINING\r\n250-SIZE 10000000\r\n"
			    "250 8BITMIME\r\n");
		else if (strncasecmp(line, "HELO", 4) == 0)
			srv_reply(bev, "250 srv\r\n");
		else if (strncasecmp(line, "MAIL", 4) == 0) {
			s->mail_had_more = evbuffer_get_length(in) > 0;
			s->accepted = 0;
			srv_reply(bev, s->mail ? s->mail : "250 2.1.0 ok\r\n");
			s->mail_ok = s->mail == NULL || s->mail[0] == '2';
		} else if (strncasecmp(line, "RCPT", 4) == 0) {
			if (!s->mail_ok)
				srv_reply(bev, "503 5.5.1 MAIL first\r\n");
			else if (s->silent_rcpt)
				s->mute = true;
			else if (s->rcpt_421 != NULL &&
			    strstr(line, s->rcpt_421) != NULL) {
				srv_reply(bev, "421 4.3.2 shutting down\r\n");
				bufferevent_setcb(bev, NULL,
				    srv_close_when_flushed, NULL, s);
				free(line);
				return;
			}
			else if (s->reject_rcpt != NULL &&
			    strstr(line, s->reject_rcpt) != NULL)
				srv_reply(bev, "550 5.1.1 no such user\r\n");
			else {
				s->accepted++;
				srv_reply(bev, "250 2.1.5 ok\r\n");
			}
		} else if (strncasecmp(line, "DATA", 4) == 0) {
			if (!s->mail_ok)
				srv_reply(bev, "503 5.5.1 MAIL first\r\n");
			else if (s->accepted == 0 && !s->force_354)
				srv_reply(bev, "554 5.5.1 no valid "
				    "recipients\r\n");
			else {
				s->in_data = true;
				srv_reply(bev, "354 go ahead\r\n");
				if (s->stall_data) {
					bufferevent_disable(bev, EV_READ);
					free(line);
					return;
				}
			}
		} else if (strncasecmp(line, "RSET", 4) == 0) {
			s->saw_rset = true;
			s->accepted = 0;
			s->mail_ok = false;
			srv_reply(bev, "250 2.0.0 reset\r\n");
		} else if (strncasecmp(line, "QUIT", 4) == 0) {
			s->saw_quit = true;
			srv_reply(bev, "221 2.0.0 bye\r\n");
			bufferevent_setcb(bev, NULL, srv_close_when_flushed,
			    NULL, s);
			free(line);
			return;
		} else
			srv_reply(bev, "500 5.5.2 what\r\n");
		free(line);
	}
}

static void
srv_event(struct bufferevent *bev, short what, void *arg)
{
	struct srv	*s = arg;

	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		srv_drop(s);
}

static void
srv_accept(struct evconnlistener *lis, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct srv	*s = arg;

	(void)lis;
	(void)sa;
	(void)salen;
	srv_drop(s);
	s->connections++;
	s->in_data = false;
	s->conn = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(s->conn);
	bufferevent_setcb(s->conn, srv_read, NULL, srv_event, s);
	bufferevent_enable(s->conn, EV_READ | EV_WRITE);
	srv_reply(s->conn, s->greeting ? s->greeting :
	    "220 srv ESMTP test\r\n");
}

/* --- the test fixture --- */

struct fx {
	struct event_base	*base;
	struct srv		 srv;
	/* callback record */
	int			 calls;
	enum smtp_client_status	 status;
	struct smtp_client_reply conn, data, rcpt[8];
	size_t			 nrcpts;
	bool			 free_in_cb;
	struct smtp_client	*c;
	/* the message */
	char			 path[64];
	struct spool_message	 msg;
};

static int
setup(void **state)
{
	struct fx		*f;
	struct sockaddr_in	 sin;
	socklen_t		 len = sizeof(sin);

	f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->msg.fd = -1;
	assert_non_null(f->base = event_base_new());
	f->srv.base = f->base;
	assert_non_null(f->srv.log = evbuffer_new());
	assert_non_null(f->srv.body = evbuffer_new());
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->srv.lis = evconnlistener_new_bind(f->base, srv_accept, &f->srv,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
	    (struct sockaddr *)&sin, sizeof(sin));
	assert_non_null(f->srv.lis);
	assert_int_equal(getsockname(evconnlistener_get_fd(f->srv.lis),
	    (struct sockaddr *)&sin, &len), 0);
	f->srv.port = ntohs(sin.sin_port);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx	*f = *state;

	srv_drop(&f->srv);
	if (f->srv.lis != NULL)
		evconnlistener_free(f->srv.lis);
	evbuffer_free(f->srv.log);
	evbuffer_free(f->srv.body);
	event_base_free(f->base);
	if (f->msg.fd != -1) {
		close(f->msg.fd);
		unlink(f->path);
	}
	free(f->msg.env.rcpts);
	free(f);
	return 0;
}

/* A spool-like file: junk "records", then the body at body_off. */
static void
make_msg(struct fx *f, const char *sender, const char *const *rcpts,
    size_t n, const uint8_t *body, size_t bodylen, uint32_t flags)
{
	static const char	 junk[] = "HDR-RECORDS-NOT-BODY\r\n.\r\n";
	size_t			 i;

	if (f->msg.fd != -1) {
		close(f->msg.fd);
		unlink(f->path);
	}
	free(f->msg.env.rcpts);
	memset(&f->msg, 0, sizeof(f->msg));
	snprintf(f->path, sizeof(f->path), "/tmp/test_smtp_client.XXXXXX");
	assert_true((f->msg.fd = mkstemp(f->path)) != -1);
	assert_int_equal(write(f->msg.fd, junk, sizeof(junk) - 1),
	    (ssize_t)sizeof(junk) - 1);
	assert_int_equal(write(f->msg.fd, body, bodylen), (ssize_t)bodylen);
	/* Trailing bytes beyond body_len must never be sent. */
	assert_int_equal(write(f->msg.fd, "TRAILER", 7), 7);
	f->msg.body_off = sizeof(junk) - 1;
	f->msg.env.body_len = bodylen;
	f->msg.env.flags = flags;
	snprintf(f->msg.env.sender, sizeof(f->msg.env.sender), "%s", sender);
	f->msg.env.rcpts = calloc(n, sizeof(*f->msg.env.rcpts));
	assert_non_null(f->msg.env.rcpts);
	for (i = 0; i < n; i++)
		snprintf(f->msg.env.rcpts[i], SPOOL_ADDR_MAX, "%s", rcpts[i]);
	f->msg.env.nrcpts = n;
}

static void
record_cb(void *arg, struct smtp_client *c,
    const struct smtp_client_result *r)
{
	struct fx	*f = arg;
	size_t		 i;

	f->calls++;
	f->status = r->status;
	f->conn = r->conn;
	f->data = r->data;
	f->nrcpts = r->nrcpts;
	memset(f->rcpt, 0, sizeof(f->rcpt));
	for (i = 0; i < r->nrcpts && i < 8; i++)
		f->rcpt[i] = r->rcpt[i];
	if (r->status != SMTP_CLIENT_OK)
		f->c = NULL;	/* already freed */
	else if (f->free_in_cb) {
		smtp_client_free(c);
		f->c = NULL;
	}
	event_base_loopbreak(f->base);
}

/* Runs the loop until one callback arrived (or 10 s passed). */
static void
run_until_cb(struct fx *f)
{
	struct timeval	 tv = { 10, 0 };
	int		 before = f->calls;

	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
	if (f->calls != before + 1)
		fail_msg("callbacks got=%d want=%d", f->calls - before, 1);
}

static void
run_for(struct fx *f, int ms)
{
	struct timeval	 tv = { 0, ms * 1000 };

	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

static const struct smtp_client_options opts = {
	.helo_name = "moat.test",
	.connect_timeout = 2000,
	.reply_timeout = 2000,
	.data_timeout = 5000,
};

static void
connect_ready(struct fx *f, const struct smtp_client_options *o)
{
	char	 port[16];

	snprintf(port, sizeof(port), "%d", f->srv.port);
	f->c = smtp_client_connect(f->base, NULL, "127.0.0.1", port,
	    o ? o : &opts, record_cb, f);
	assert_non_null(f->c);
	run_until_cb(f);
}

static void
send_msg(struct fx *f)
{
	assert_non_null(f->c);
	assert_int_equal(smtp_client_send(f->c, &f->msg, record_cb, f), 0);
	run_until_cb(f);
}

static void
quit(struct fx *f)
{
	if (f->c != NULL)
		smtp_client_quit(f->c);
	f->c = NULL;
	run_for(f, 100);
}

static bool
log_has(struct fx *f, const char *s)
{
	size_t		 len = evbuffer_get_length(f->srv.log);
	const char	*p = (const char *)evbuffer_pullup(f->srv.log, -1);

	return len > 0 && memmem(p, len, s, strlen(s)) != NULL;
}

static void
check_reply(const char *what, const struct smtp_client_reply *r, int code)
{
	if (r->code != code)
		fail_msg("%s code got=%d want=%d text=%s", what, r->code, code,
		    r->text);
}

/* Undo dot-stuffing of what the server got. */
static uint8_t *
unstuff(struct evbuffer *b, size_t *outlen)
{
	size_t		 len = evbuffer_get_length(b), i, o = 0;
	const uint8_t	*p = evbuffer_pullup(b, -1);
	uint8_t		*out = malloc(len + 1);
	bool		 bol = true;

	assert_non_null(out);
	for (i = 0; i < len; i++) {
		if (bol && p[i] == '.') {
			bol = false;
			continue;
		}
		out[o++] = p[i];
		bol = p[i] == '\n';
	}
	*outlen = o;
	return out;
}

/* --- tests --- */

static const char	 body1[] = "Subject: hi\r\n\r\nhello\r\n";

/* Table of single-transaction scenarios on a fresh connection. */
struct scenario {
	const char	*name;
	const char	*ehlo;
	const char	*mail;
	const char	*reject;
	bool		 force_354;
	const char	*rcpts[3];
	size_t		 nrcpts;
	int		 conn, rcpt[3], data;
	bool		 pipelined;
	bool		 rset;
};

static const struct scenario scenarios[] = {
	{ "pipelining, one of two refused", NULL, NULL, "bad@", false,
	    { "good@x.test", "bad@x.test" }, 2, 0, { 250, 550 }, 250,
	    true, false },
	{ "no pipelining", "250-srv\r\n250 SIZE\r\n", NULL, "bad@", false,
	    { "good@x.test", "bad@x.test", "also@x.test" }, 3, 0,
	    { 250, 550, 250 }, 250, false, false },
	{ "MAIL 451", NULL, "451 4.3.0 try later\r\n", NULL, false,
	    { "good@x.test" }, 1, 451, { 0 }, 0, true, true },
	{ "MAIL 451 no pipelining", "250 srv\r\n", "451 4.3.0 later\r\n",
	    NULL, false, { "good@x.test" }, 1, 451, { 0 }, 0, false, true },
	{ "all refused, DATA 554", NULL, NULL, "@x.test", false,
	    { "a@x.test", "b@x.test" }, 2, 0, { 550, 550 }, 0, true, true },
	{ "all refused, DATA 354 anyway", NULL, NULL, "@x.test", true,
	    { "a@x.test", "b@x.test" }, 2, 0, { 550, 550 }, 0, true, true },
	{ "all refused, no pipelining", "250 srv\r\n", NULL, "@x.test",
	    false, { "a@x.test" }, 1, 0, { 550 }, 0, false, true },
};

static void
test_scenarios(void **state)
{
	struct fx	*f = *state;
	size_t		 i, j;

	for (i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
		const struct scenario *t = &scenarios[i];

		print_message("scenario: %s\n", t->name);
		f->srv.ehlo = t->ehlo;
		f->srv.mail = t->mail;
		f->srv.reject_rcpt = t->reject;
		f->srv.force_354 = t->force_354;
		f->srv.saw_rset = false;
		evbuffer_drain(f->srv.body, evbuffer_get_length(f->srv.body));
		make_msg(f, "s@sender.test", t->rcpts, t->nrcpts,
		    (const uint8_t *)body1, strlen(body1), 0);
		connect_ready(f, NULL);
		assert_int_equal(f->status, SMTP_CLIENT_OK);
		check_reply("ehlo", &f->conn, 250);
		assert_int_equal(smtp_client_has_pipelining(f->c),
		    t->pipelined);
		send_msg(f);
		if (f->status != SMTP_CLIENT_OK)
			fail_msg("%s: status got=%d want=OK text=%s", t->name,
			    f->status, f->conn.text);
		check_reply("conn", &f->conn, t->conn);
		if (t->conn == 0) {
			assert_int_equal(f->nrcpts, t->nrcpts);
			for (j = 0; j < t->nrcpts; j++)
				check_reply(t->rcpts[j], &f->rcpt[j],
				    t->rcpt[j]);
		}
		check_reply("data", &f->data, t->data);
		if (f->srv.mail_had_more != t->pipelined)
			fail_msg("%s: pipelined got=%d want=%d", t->name,
			    f->srv.mail_had_more, t->pipelined);
		if (f->srv.saw_rset != t->rset)
			fail_msg("%s: RSET got=%d want=%d", t->name,
			    f->srv.saw_rset, t->rset);
		if (t->data == 250 && evbuffer_get_length(f->srv.body) !=
		    strlen(body1))
			fail_msg("%s: body len got=%zu want=%zu", t->name,
			    evbuffer_get_length(f->srv.body), strlen(body1));
		if (t->data == 0 && t->force_354 == false &&
		    evbuffer_get_length(f->srv.body) != 0)
			fail_msg("%s: body sent without recipients", t->name);
		/* The client is idle and usable: a second transaction. */
		f->srv.mail = NULL;
		f->srv.reject_rcpt = NULL;
		send_msg(f);
		assert_int_equal(f->status, SMTP_CLIENT_OK);
		check_reply("second data", &f->data, 250);
		quit(f);
		assert_true(f->srv.saw_quit);
		f->srv.saw_quit = false;
	}
}

static void
test_envelope_and_reuse(void **state)
{
	struct fx		*f = *state;
	const char *const	 r[] = { "a@x.test" };
	char			 want[128];

	make_msg(f, "s@sender.test", r, 1, (const uint8_t *)body1,
	    strlen(body1), SPOOL_F_8BITMIME);
	connect_ready(f, NULL);
	assert_int_equal(smtp_client_max_size(f->c), 10000000);
	send_msg(f);
	check_reply("data", &f->data, 250);
	send_msg(f);
	check_reply("data", &f->data, 250);
	assert_int_equal(f->srv.connections, 1);
	assert_int_equal(f->srv.transactions, 2);
	assert_true(log_has(f, "EHLO moat.test\n"));
	snprintf(want, sizeof(want), "MAIL FROM:<s@sender.test> SIZE=%zu "
	    "BODY=8BITMIME\n", strlen(body1));
	assert_true(log_has(f, want));
	assert_true(log_has(f, "RCPT TO:<a@x.test>\nDATA\n"));
	/* Null sender. */
	make_msg(f, "", r, 1, (const uint8_t *)body1, strlen(body1), 0);
	send_msg(f);
	check_reply("data", &f->data, 250);
	snprintf(want, sizeof(want), "MAIL FROM:<> SIZE=%zu\n",
	    strlen(body1));
	assert_true(log_has(f, want));
	quit(f);
}

/* A 3 MiB body with dot lines, streamed with flow control. */
static void
test_dot_stuffing(void **state)
{
	struct fx		*f = *state;
	const char *const	 r[] = { "a@x.test" };
	static const char *const lines[] = {
		".\r\n", "..\r\n", ".hidden\r\n", "normal line\r\n",
		"\r\n", "x.\r\n",
	};
	size_t			 cap = 3 * 1024 * 1024 + 64, len = 0, i, ul;
	struct smtp_client_options	 o = opts;
	uint8_t			*body = malloc(cap), *got;

	assert_non_null(body);
	for (i = 0; len + 16 < cap; i++) {
		const char *l = lines[i % 6];

		memcpy(body + len, l, strlen(l));
		len += strlen(l);
	}
	/* No final CRLF: the client must add one before the dot. */
	memcpy(body + len, "end", 3);
	len += 3;
	make_msg(f, "s@sender.test", r, 1, body, len, 0);
	/* Generous: the scripted server is slow under sanitizers. */
	o.reply_timeout = 20000;
	o.data_timeout = 20000;
	connect_ready(f, &o);
	send_msg(f);
	if (f->status != SMTP_CLIENT_OK)
		fail_msg("status got=%d want=OK text=%s", f->status,
		    f->conn.text);
	check_reply("data", &f->data, 250);
	assert_true(memmem(evbuffer_pullup(f->srv.body, -1),
	    evbuffer_get_length(f->srv.body), "\r\n..\r\n...\r\n..hidden\r\n",
	    21) != NULL);
	got = unstuff(f->srv.body, &ul);
	if (ul != len + 2)
		fail_msg("body len got=%zu want=%zu", ul, len + 2);
	assert_memory_equal(got, body, len);
	assert_memory_equal(got + len, "\r\n", 2);
	free(got);
	free(body);
	quit(f);
}

static void
test_connect_refused(void **state)
{
	struct fx	*f = *state;
	char		 port[16];
	int		 p = f->srv.port;

	evconnlistener_free(f->srv.lis);
	f->srv.lis = NULL;
	/* Nothing listens on that port any more. */
	snprintf(port, sizeof(port), "%d", p);
	f->c = smtp_client_connect(f->base, NULL, "127.0.0.1", port, &opts,
	    record_cb, f);
	assert_non_null(f->c);
	run_until_cb(f);
	assert_int_equal(f->status, SMTP_CLIENT_NETWORK);
	if (strstr(f->conn.text, "connect: Connection refused") == NULL)
		fail_msg("text got=%s want=connect: Connection refused",
		    f->conn.text);
	/* A name without a resolver. */
	f->c = smtp_client_connect(f->base, NULL, "mx.invalid", port, &opts,
	    record_cb, f);
	assert_non_null(f->c);
	run_until_cb(f);
	assert_int_equal(f->status, SMTP_CLIENT_NETWORK);
	assert_non_null(strstr(f->conn.text, "cannot resolve"));
}

static void
test_close_mid_data(void **state)
{
	struct fx		*f = *state;
	const char *const	 r[] = { "a@x.test" };
	size_t			 len = 1024 * 1024;
	uint8_t			*body = malloc(len);

	assert_non_null(body);
	memset(body, 'a', len);
	for (size_t i = 78; i + 1 < len; i += 80) {
		body[i] = '\r';
		body[i + 1] = '\n';
	}
	make_msg(f, "s@sender.test", r, 1, body, len, 0);
	f->srv.close_in_data = true;
	connect_ready(f, NULL);
	send_msg(f);
	assert_int_equal(f->status, SMTP_CLIENT_NETWORK);
	print_message("text=%s\n", f->conn.text);
	free(body);
}

static void
test_rcpt_timeout(void **state)
{
	struct fx			*f = *state;
	const char *const		 r[] = { "a@x.test" };
	struct smtp_client_options	 o = opts;

	o.reply_timeout = 300;
	f->srv.silent_rcpt = true;
	make_msg(f, "s@sender.test", r, 1, (const uint8_t *)body1,
	    strlen(body1), 0);
	connect_ready(f, &o);
	send_msg(f);
	assert_int_equal(f->status, SMTP_CLIENT_NETWORK);
	if (strcmp(f->conn.text, "timeout waiting for reply to RCPT") != 0)
		fail_msg("text got=%s want=timeout waiting for reply to RCPT",
		    f->conn.text);
}

/*
 * 421 to the second RCPT, then close: the first recipient's 250 and the
 * 421 are reported (OK); accepted recipients get data = 421 so they do
 * not look delivered; the next transaction fails with NETWORK.
 */
static void
test_rcpt_421(void **state)
{
	struct fx		*f = *state;
	const char *const	 r[] = { "a@x.test", "b@x.test", "c@x.test" };

	f->srv.rcpt_421 = "b@x.test";
	make_msg(f, "s@sender.test", r, 3, (const uint8_t *)body1,
	    strlen(body1), 0);
	connect_ready(f, NULL);
	send_msg(f);
	if (f->status != SMTP_CLIENT_OK)
		fail_msg("status got=%d want=OK text=%s", f->status,
		    f->conn.text);
	check_reply("conn", &f->conn, 0);
	check_reply("rcpt a", &f->rcpt[0], 250);
	check_reply("rcpt b", &f->rcpt[1], 421);
	check_reply("rcpt c", &f->rcpt[2], 0);
	check_reply("data", &f->data, 421);
	assert_non_null(f->c);
	send_msg(f);
	assert_int_equal(f->status, SMTP_CLIENT_NETWORK);
	assert_null(f->c);
}

/* The server stops reading the body: no progress is a timeout. */
static void
test_body_stall(void **state)
{
	struct fx			*f = *state;
	const char *const		 r[] = { "a@x.test" };
	struct smtp_client_options	 o = opts;
	size_t				 len = 16 * 1024 * 1024, i;
	uint8_t				*body = malloc(len);

	assert_non_null(body);
	memset(body, 'b', len);
	for (i = 98; i + 1 < len; i += 100) {
		body[i] = '\r';
		body[i + 1] = '\n';
	}
	make_msg(f, "s@sender.test", r, 1, body, len, 0);
	free(body);
	o.reply_timeout = 300;
	f->srv.stall_data = true;
	connect_ready(f, &o);
	send_msg(f);
	assert_int_equal(f->status, SMTP_CLIENT_NETWORK);
	if (strcmp(f->conn.text, "timeout sending message body") != 0)
		fail_msg("text got=%s want=timeout sending message body",
		    f->conn.text);
}

/* Names through evdns, answered from a hosts file. */
static void
test_dns(void **state)
{
	struct fx		*f = *state;
	const char *const	 r[] = { "a@x.test" };
	struct evdns_base	*dns;
	char			 hosts[] = "/tmp/test_smtp_client_hosts.XXXXXX";
	char			 port[16];
	int			 fd;

	assert_true((fd = mkstemp(hosts)) != -1);
	assert_int_equal(write(fd, "127.0.0.1 mx.test\n", 18), 18);
	close(fd);
	assert_non_null(dns = evdns_base_new(f->base, 0));
	assert_int_equal(evdns_base_load_hosts(dns, hosts), 0);
	unlink(hosts);
	make_msg(f, "s@sender.test", r, 1, (const uint8_t *)body1,
	    strlen(body1), 0);
	snprintf(port, sizeof(port), "%d", f->srv.port);

	f->c = smtp_client_connect(f->base, dns, "mx.test", port, &opts,
	    record_cb, f);
	assert_non_null(f->c);
	run_until_cb(f);
	if (f->status != SMTP_CLIENT_OK)
		fail_msg("status got=%d want=OK text=%s", f->status,
		    f->conn.text);
	send_msg(f);
	check_reply("data", &f->data, 250);
	quit(f);

	/* No nameserver knows it. */
	f->c = smtp_client_connect(f->base, dns, "nx.invalid", port, &opts,
	    record_cb, f);
	assert_non_null(f->c);
	run_until_cb(f);
	assert_int_equal(f->status, SMTP_CLIENT_NETWORK);
	print_message("text=%s\n", f->conn.text);
	/* Bad port. */
	f->c = smtp_client_connect(f->base, dns, "127.0.0.1", "99999", &opts,
	    record_cb, f);
	assert_non_null(f->c);
	run_until_cb(f);
	assert_int_equal(f->status, SMTP_CLIENT_NETWORK);
	/* Let cancelled lookups release their bufferevents. */
	evdns_base_free(dns, 1);
	run_for(f, 50);
}

/* Greetings and EHLO answers. */
struct greet {
	const char		*name;
	const char		*greeting;
	const char		*ehlo;
	enum smtp_client_status	 status;
	int			 code;
};

static const struct greet greets[] = {
	{ "554 greeting", "554 5.7.1 go away\r\n", NULL, SMTP_CLIENT_OK, 554 },
	{ "421 greeting", "421 4.3.2 busy\r\n", NULL, SMTP_CLIENT_OK, 421 },
	{ "multi-line greeting", "220-srv\r\n220-more\r\n220 ok\r\n", NULL,
	    SMTP_CLIENT_OK, 250 },
	{ "EHLO 502 -> HELO", NULL, "502 5.5.1 no\r\n", SMTP_CLIENT_OK, 250 },
	{ "EHLO 421", NULL, "421 4.3.2 no\r\n", SMTP_CLIENT_OK, 421 },
	{ "garbage", "garbage\r\n", NULL, SMTP_CLIENT_PROTOCOL, 0 },
	{ "bad continuation", "220-a\r\n250 b\r\n", NULL,
	    SMTP_CLIENT_PROTOCOL, 0 },
	{ "code 600", "600 x\r\n", NULL, SMTP_CLIENT_PROTOCOL, 0 },
	{ "354 greeting", "354 x\r\n", NULL, SMTP_CLIENT_PROTOCOL, 0 },
};

static void
test_greetings(void **state)
{
	struct fx		*f = *state;
	const char *const	 r[] = { "a@x.test" };
	size_t			 i;

	make_msg(f, "s@sender.test", r, 1, (const uint8_t *)body1,
	    strlen(body1), 0);
	for (i = 0; i < sizeof(greets) / sizeof(greets[0]); i++) {
		const struct greet *g = &greets[i];

		print_message("greeting: %s\n", g->name);
		f->srv.greeting = g->greeting;
		f->srv.ehlo = g->ehlo;
		connect_ready(f, NULL);
		if (f->status != g->status)
			fail_msg("%s: status got=%d want=%d text=%s", g->name,
			    f->status, g->status, f->conn.text);
		check_reply(g->name, &f->conn, g->code);
		if (g->status != SMTP_CLIENT_OK)
			continue;
		if (g->code >= 400) {
			/* Refused session: transactions fail cleanly. */
			send_msg(f);
			assert_int_equal(f->status, SMTP_CLIENT_NETWORK);
			assert_null(f->c);
			continue;
		}
		assert_false(g->ehlo != NULL &&
		    smtp_client_has_pipelining(f->c));
		send_msg(f);
		check_reply("data", &f->data, 250);
		smtp_client_free(f->c);
		f->c = NULL;
	}
}

/* A reply line without end, longer than any allowed. */
static void
test_long_line(void **state)
{
	struct fx	*f = *state;
	char		*g = malloc(5000);

	assert_non_null(g);
	memset(g, 'x', 4997);
	memcpy(g, "220 ", 4);
	memcpy(g + 4997, "\r\n", 3);
	f->srv.greeting = g;
	connect_ready(f, NULL);
	assert_int_equal(f->status, SMTP_CLIENT_PROTOCOL);
	free(g);
}

/* Freeing from inside the callback and before any callback. */
static void
test_free_paths(void **state)
{
	struct fx		*f = *state;
	const char *const	 r[] = { "a@x.test" };
	char			 port[16];
	int			 calls;

	make_msg(f, "s@sender.test", r, 1, (const uint8_t *)body1,
	    strlen(body1), 0);
	connect_ready(f, NULL);
	f->free_in_cb = true;
	send_msg(f);
	assert_null(f->c);
	f->free_in_cb = false;
	/* Free while connecting: no callback ever. */
	snprintf(port, sizeof(port), "%d", f->srv.port);
	f->c = smtp_client_connect(f->base, NULL, "127.0.0.1", port, &opts,
	    record_cb, f);
	assert_non_null(f->c);
	smtp_client_free(f->c);
	f->c = NULL;
	calls = f->calls;
	run_for(f, 200);
	assert_int_equal(f->calls, calls);
	/* Free in the middle of a transaction. */
	connect_ready(f, NULL);
	assert_int_equal(smtp_client_send(f->c, &f->msg, record_cb, f), 0);
	assert_int_equal(smtp_client_send(f->c, &f->msg, record_cb, f), -1);
	smtp_client_free(f->c);
	f->c = NULL;
	calls = f->calls;
	run_for(f, 200);
	assert_int_equal(f->calls, calls);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_scenarios, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_envelope_and_reuse, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_dot_stuffing, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_connect_refused, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_close_mid_data, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_rcpt_timeout, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_body_stall, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_dns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rcpt_421, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_greetings, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_long_line, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_free_paths, setup,
		    teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
