/*
 * test_delivery.c: the delivery scheduler.
 *
 * delivery_backoff is checked against a table.  The rest drives a real
 * event_base, spool and spool_sync against a tiny scripted SMTP server
 * (a pthread with blocking sockets on 127.0.0.1, one thread per
 * connection) whose replies depend on the recipient's local part:
 *   bad...  -> 550 5.1.1
 *   tmp...  -> 451 4.2.0 on the first try, then 250
 *   else    -> 250
 * Each test works in its own mkdtemp spool.
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "config.h"
#include "delivery.h"
#include "log.h"
#include "qid.h"
#include "spool.h"
#include "spool_sync.h"

/* ------------------------------------------------------------ backoff */

static void
test_backoff(void **state)
{
	static const struct {
		unsigned	attempts;
		uint64_t	min, max, want;	/* want +-10% */
	} cases[] = {
		{ 0, 1000, 60000, 1000 },
		{ 1, 1000, 60000, 1000 },
		{ 2, 1000, 60000, 2000 },
		{ 3, 1000, 60000, 4000 },
		{ 6, 1000, 60000, 32000 },
		{ 7, 1000, 60000, 60000 },
		{ 50, 1000, 60000, 60000 },
		{ 200, 1000, 60000, 60000 },
		{ 4000000000u, 300000, 14400000, 14400000 },
		{ 1, 100, 50, 100 },		/* max < min: min wins */
		{ 3, 5, 1000, 20 },
		{ 1, 0, 0, 0 },
	};
	size_t		i;
	int		k;
	uint64_t	got, lo, hi;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		lo = cases[i].want - cases[i].want / 10;
		hi = cases[i].want + cases[i].want / 10;
		for (k = 0; k < 200; k++) {
			got = delivery_backoff(cases[i].attempts, cases[i].min,
			    cases[i].max);
			if (got < lo || got > hi)
				fail_msg("case %zu attempts=%u: got=%llu "
				    "want=[%llu,%llu]", i, cases[i].attempts,
				    (unsigned long long)got,
				    (unsigned long long)lo,
				    (unsigned long long)hi);
		}
	}
}

static void
test_names(void **state)
{
	(void)state;
	assert_string_equal(delivery_state_name(DELIVERY_HELD), "held");
	assert_string_equal(delivery_state_name(DELIVERY_DEFERRED),
	    "deferred");
	assert_string_equal(delivery_circuit_name(DELIVERY_CIRCUIT_OPEN),
	    "open");
	assert_string_equal(delivery_circuit_name(DELIVERY_CIRCUIT_HALF_OPEN),
	    "half_open");
}

/* ------------------------------------------------------ scripted server */

struct srv {
	int		 lfd;
	int		 port;
	pthread_t	 th;
	volatile bool	 stop;
	pthread_mutex_t	 mu;
	int		 messages;	/* accepted with 250 after DATA */
	int		 null_sender;	/* of which MAIL FROM:<> */
	int		 tmp_seen;	/* 451s given */
	int		 connections;
	char		 order[64][32];	/* rcpts of accepted messages */
};

struct srv_conn {
	struct srv	*s;
	int		 fd;
	char		 buf[8192];
	size_t		 len;
};

static int
srv_line(struct srv_conn *c, char *out, size_t outlen)
{
	char	*nl;
	ssize_t	 n;
	size_t	 l;

	for (;;) {
		if ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
			l = (size_t)(nl - c->buf);
			if (l > 0 && c->buf[l - 1] == '\r')
				l--;
			if (l >= outlen)
				l = outlen - 1;
			memcpy(out, c->buf, l);
			out[l] = '\0';
			l = (size_t)(nl - c->buf) + 1;
			memmove(c->buf, c->buf + l, c->len - l);
			c->len -= l;
			return 0;
		}
		if (c->len == sizeof(c->buf))
			return -1;
		n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
		if (n <= 0)
			return -1;
		c->len += (size_t)n;
	}
}

static void
srv_say(struct srv_conn *c, const char *s)
{
	(void)!send(c->fd, s, strlen(s), MSG_NOSIGNAL);
}

static void *
srv_conn_main(void *arg)
{
	struct srv_conn	*c = arg;
	struct srv	*s = c->s;
	char		 line[1024], rcpt[32][64], *p;
	int		 nrcpt = 0, ok = 0, i;
	bool		 null_sender = false;

	srv_say(c, "220 test ESMTP\r\n");
	while (srv_line(c, line, sizeof(line)) == 0) {
		if (strncasecmp(line, "EHLO", 4) == 0 ||
		    strncasecmp(line, "HELO", 4) == 0)
			srv_say(c, "250 test\r\n");
		else if (strncasecmp(line, "MAIL FROM:", 10) == 0) {
			null_sender = strncmp(line + 10, "<>", 2) == 0;
			nrcpt = ok = 0;
			srv_say(c, "250 2.1.0 ok\r\n");
		} else if (strncasecmp(line, "RCPT TO:<", 9) == 0) {
			p = line + 9;
			pthread_mutex_lock(&s->mu);
			if (strncmp(p, "bad", 3) == 0)
				srv_say(c, "550 5.1.1 no such user\r\n");
			else if (strncmp(p, "tmp", 3) == 0 &&
			    s->tmp_seen == 0) {
				s->tmp_seen++;
				srv_say(c, "451 4.2.0 try later\r\n");
			} else {
				if (nrcpt < 32) {
					snprintf(rcpt[nrcpt],
					    sizeof(rcpt[nrcpt]), "%.60s", p);
					nrcpt++;
				}
				ok++;
				srv_say(c, "250 2.1.5 ok\r\n");
			}
			pthread_mutex_unlock(&s->mu);
		} else if (strcasecmp(line, "DATA") == 0) {
			if (ok == 0) {
				srv_say(c, "554 no valid recipients\r\n");
				continue;
			}
			srv_say(c, "354 go\r\n");
			while (srv_line(c, line, sizeof(line)) == 0 &&
			    strcmp(line, ".") != 0)
				;
			pthread_mutex_lock(&s->mu);
			if (s->messages < 64)
				snprintf(s->order[s->messages],
				    sizeof(s->order[0]), "%.30s",
				    nrcpt > 0 ? rcpt[0] : "");
			s->messages++;
			if (null_sender)
				s->null_sender++;
			pthread_mutex_unlock(&s->mu);
			srv_say(c, "250 2.0.0 queued\r\n");
		} else if (strcasecmp(line, "RSET") == 0 ||
		    strcasecmp(line, "NOOP") == 0)
			srv_say(c, "250 ok\r\n");
		else if (strcasecmp(line, "QUIT") == 0) {
			srv_say(c, "221 bye\r\n");
			break;
		} else
			srv_say(c, "500 what\r\n");
	}
	(void)i;
	close(c->fd);
	free(c);
	return NULL;
}

static void *
srv_main(void *arg)
{
	struct srv	*s = arg;
	struct pollfd	 pfd;
	struct srv_conn	*c;
	pthread_t	 th;
	int		 fd;

	while (!s->stop) {
		pfd.fd = s->lfd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 20) <= 0)
			continue;
		if ((fd = accept(s->lfd, NULL, NULL)) == -1)
			continue;
		pthread_mutex_lock(&s->mu);
		s->connections++;
		pthread_mutex_unlock(&s->mu);
		c = calloc(1, sizeof(*c));
		assert_non_null(c);
		c->s = s;
		c->fd = fd;
		if (pthread_create(&th, NULL, srv_conn_main, c) != 0)
			abort();
		pthread_detach(th);
	}
	close(s->lfd);
	return NULL;
}

/* Binds 127.0.0.1:port (0 = any) and returns the fd; *port is set. */
static int
srv_bind(int *port, bool do_listen)
{
	struct sockaddr_in	sin;
	socklen_t		len = sizeof(sin);
	int			fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)*port);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port = ntohs(sin.sin_port);
	if (do_listen)
		assert_int_equal(listen(fd, 64), 0);
	return fd;
}

static void
srv_start(struct srv *s, int port)
{
	s->port = port;
	s->stop = false;
	s->lfd = srv_bind(&s->port, true);
	pthread_mutex_init(&s->mu, NULL);
	assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void
srv_stop(struct srv *s)
{
	s->stop = true;
	pthread_join(s->th, NULL);
}

/* A port with nothing listening (bound then closed). */
static int
dead_port(void)
{
	int	port = 0, fd;

	fd = srv_bind(&port, false);
	close(fd);
	return port;
}

/* ------------------------------------------------------------ fixture */

struct fx {
	char			 dir[64];
	struct event_base	*base;
	struct spool		*sp;
	struct spool_sync	*sync;
	struct config		*cfg;
	struct config_domain	 dom;
	struct delivery		*d;
	struct srv		 srv;
	bool			 srv_running;
};

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(path);
}

static void
set_server(struct fx *fx, size_t i, int port)
{
	snprintf(fx->dom.servers[i].host, sizeof(fx->dom.servers[i].host),
	    "127.0.0.1");
	snprintf(fx->dom.servers[i].port, sizeof(fx->dom.servers[i].port),
	    "%d", port);
	if (fx->dom.nservers < i + 1)
		fx->dom.nservers = i + 1;
}

static int
setup(void **state)
{
	struct fx	*fx;
	char		*cause = NULL;

	fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/moat-test-delivery-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	fx->base = event_base_new();
	assert_non_null(fx->base);
	fx->sp = spool_open(fx->dir, &cause);
	if (fx->sp == NULL)
		fail_msg("spool_open: %s", cause);
	fx->sync = spool_sync_new(fx->base, fx->sp, &cause);
	if (fx->sync == NULL)
		fail_msg("spool_sync_new: %s", cause);

	fx->cfg = calloc(1, sizeof(*fx->cfg));
	assert_non_null(fx->cfg);
	snprintf(fx->cfg->hostname, sizeof(fx->cfg->hostname), "mx.test");
	snprintf(fx->dom.name, sizeof(fx->dom.name), "example.test");
	fx->cfg->domains = &fx->dom;
	fx->cfg->ndomains = 1;
	fx->cfg->retry_min = 100;
	fx->cfg->retry_max = 400;
	fx->cfg->delivery_concurrency = 2;
	fx->cfg->messages_per_connection = 10;
	fx->cfg->connect_timeout = 1000;
	fx->cfg->reply_timeout = 2000;
	fx->cfg->circuit_failures = 3;
	fx->cfg->circuit_probe = 300;
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx	*fx = *state;

	if (fx->d != NULL)
		delivery_free(fx->d);
	if (fx->srv_running)
		srv_stop(&fx->srv);
	spool_sync_free(fx->sync);
	spool_close(fx->sp);
	event_base_free(fx->base);
	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(fx->cfg);
	free(fx);
	return 0;
}

static void
fx_start(struct fx *fx)
{
	fx->d = delivery_new(fx->base, fx->sp, fx->sync, fx->cfg);
	assert_non_null(fx->d);
}

/* Writes a message straight into queue/ and hands it to delivery. */
static void
fx_queue(struct fx *fx, const char *sender, const char *rcpt1,
    const char *rcpt2, char *qid)
{
	struct spool_envelope	 env;
	struct spool_writer	*w;
	char			 dirpath[1024], *cause = NULL, rc[2][257];
	const char		*body = "Subject: test\r\n\r\nhello\r\n";

	memset(&env, 0, sizeof(env));
	memset(rc, 0, sizeof(rc));
	snprintf(env.sender, sizeof(env.sender), "%s", sender);
	snprintf(env.domain, sizeof(env.domain), "example.test");
	snprintf(rc[0], sizeof(rc[0]), "%s", rcpt1);
	if (rcpt2 != NULL)
		snprintf(rc[1], sizeof(rc[1]), "%s", rcpt2);
	env.rcpts = rc;
	env.nrcpts = rcpt2 != NULL ? 2 : 1;
	env.created = time(NULL);
	w = spool_writer_new(fx->sp, &env, &cause);
	if (w == NULL)
		fail_msg("spool_writer_new: %s", cause);
	snprintf(env.qid, sizeof(env.qid), "%s", spool_writer_qid(w));
	assert_int_equal(spool_writer_write(w, body, strlen(body)), 0);
	assert_int_equal(spool_writer_finish(w), 0);
	env.body_len = strlen(body);
	assert_int_equal(spool_writer_commit(w, dirpath, sizeof(dirpath)), 0);
	if (qid != NULL)
		snprintf(qid, QID_LEN + 1, "%s", env.qid);
	if (fx->d != NULL)
		delivery_enqueue(fx->d, &env);
}

static void
tick_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	(void)arg;
}

/* Runs the loop until pred holds or ms pass; returns pred. */
static bool
run_until(struct fx *fx, bool (*pred)(struct fx *, void *), void *arg,
    int ms)
{
	struct event	*tick;
	struct timeval	 tv = { 0, 10000 };
	struct timespec	 t0, t1;
	bool		 ok;

	tick = event_new(fx->base, -1, EV_PERSIST, tick_cb, NULL);
	evtimer_add(tick, &tv);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if ((ok = pred(fx, arg)))
			break;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if ((t1.tv_sec - t0.tv_sec) * 1000 +
		    (t1.tv_nsec - t0.tv_nsec) / 1000000 > ms)
			break;
		event_base_loop(fx->base, EVLOOP_ONCE);
	}
	event_free(tick);
	return ok;
}

static bool
queue_empty(struct fx *fx, void *arg)
{
	struct delivery_stats	st;

	(void)arg;
	delivery_get_stats(fx->d, &st);
	return st.messages == 0;
}

static int
srv_messages(struct fx *fx)
{
	int	n;

	pthread_mutex_lock(&fx->srv.mu);
	n = fx->srv.messages;
	pthread_mutex_unlock(&fx->srv.mu);
	return n;
}

static bool
srv_has(struct fx *fx, void *arg)
{
	return srv_messages(fx) >= *(int *)arg;
}

static bool
file_exists(struct fx *fx, const char *qid)
{
	struct spool_message	msg;
	bool			held;

	if (spool_message_open(fx->sp, qid, &msg, &held) == -1)
		return false;
	spool_message_close(&msg);
	return true;
}

struct dest_probe {
	enum delivery_circuit	circuit;
	unsigned		failures;
	uint64_t		messages;
	bool			found;
};

static void
dest_cb(void *arg, const struct delivery_dest_info *di)
{
	struct dest_probe	*p = arg;

	if (strcmp(di->domain, "example.test") != 0)
		return;
	p->found = true;
	p->circuit = di->circuit;
	p->failures = di->failures;
	p->messages = di->messages;
}

static bool
circuit_is(struct fx *fx, void *arg)
{
	struct dest_probe	p;

	memset(&p, 0, sizeof(p));
	delivery_iterate_dests(fx->d, dest_cb, &p);
	return p.found && p.circuit == *(enum delivery_circuit *)arg;
}

struct entry_probe {
	bool			found;
	enum delivery_state	state;
	unsigned		attempts;
	char			error[128];
};

static void
entry_cb(void *arg, const struct delivery_entry_info *ei)
{
	struct entry_probe	*p = arg;

	p->found = true;
	p->state = ei->state;
	p->attempts = ei->attempts;
	snprintf(p->error, sizeof(p->error), "%s", ei->last_error);
}

/* ------------------------------------------------------------ tests */

static void
test_delivered(void **state)
{
	struct fx		*fx = *state;
	struct delivery_stats	 st;
	char			 qid[QID_LEN + 1];
	int			 want = 1;

	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, fx->srv.port);
	fx_start(fx);
	fx_queue(fx, "alice@example.org", "bob@example.test", NULL, qid);
	assert_true(file_exists(fx, qid));
	if (!run_until(fx, queue_empty, NULL, 3000))
		fail_msg("queue not empty after 3 s");
	assert_true(srv_has(fx, &want));
	assert_false(file_exists(fx, qid));
	delivery_get_stats(fx->d, &st);
	if (st.delivered != 1 || st.bounced != 0)
		fail_msg("delivered got=%llu want=1 bounced got=%llu want=0",
		    (unsigned long long)st.delivered,
		    (unsigned long long)st.bounced);
}

static void
test_tempfail_then_delivered(void **state)
{
	struct fx		*fx = *state;
	struct delivery_stats	 st;
	char			 qid[QID_LEN + 1];

	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, fx->srv.port);
	fx_start(fx);
	fx_queue(fx, "alice@example.org", "tmp@example.test", NULL, qid);
	if (!run_until(fx, queue_empty, NULL, 3000))
		fail_msg("queue not empty after 3 s");
	delivery_get_stats(fx->d, &st);
	if (st.deferred != 1 || st.delivered != 1)
		fail_msg("deferred got=%llu want=1 delivered got=%llu want=1",
		    (unsigned long long)st.deferred,
		    (unsigned long long)st.delivered);
	assert_false(file_exists(fx, qid));
}

static void
test_partial_and_bounce(void **state)
{
	struct fx		*fx = *state;
	struct delivery_stats	 st;
	char			 qid[QID_LEN + 1];
	int			 want = 2;

	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, fx->srv.port);
	fx_start(fx);
	/* One good, one unknown: delivered + bounce, the DSN is sent too. */
	fx_queue(fx, "alice@example.org", "bob@example.test",
	    "bad@example.test", qid);
	if (!run_until(fx, srv_has, &want, 3000))
		fail_msg("server messages got=%d want=2", srv_messages(fx));
	if (!run_until(fx, queue_empty, NULL, 3000))
		fail_msg("queue not empty after 3 s");
	delivery_get_stats(fx->d, &st);
	if (st.bounced != 1 || st.delivered != 2)
		fail_msg("bounced got=%llu want=1 delivered got=%llu want=2",
		    (unsigned long long)st.bounced,
		    (unsigned long long)st.delivered);
	pthread_mutex_lock(&fx->srv.mu);
	if (fx->srv.null_sender != 1)
		fail_msg("DSNs got=%d want=1", fx->srv.null_sender);
	pthread_mutex_unlock(&fx->srv.mu);
	assert_false(file_exists(fx, qid));
}

static void
test_no_dsn_for_null_sender(void **state)
{
	struct fx		*fx = *state;
	struct delivery_stats	 st;

	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, fx->srv.port);
	fx_start(fx);
	fx_queue(fx, "", "bad@example.test", NULL, NULL);
	if (!run_until(fx, queue_empty, NULL, 3000))
		fail_msg("queue not empty after 3 s");
	delivery_get_stats(fx->d, &st);
	if (st.bounced != 1)
		fail_msg("bounced got=%llu want=1",
		    (unsigned long long)st.bounced);
	run_until(fx, queue_empty, NULL, 200);
	delivery_get_stats(fx->d, &st);
	if (st.messages != 0)
		fail_msg("messages got=%llu want=0 (DSN for <>?)",
		    (unsigned long long)st.messages);
}

static void
test_circuit(void **state)
{
	struct fx		*fx = *state;
	enum delivery_circuit	 open = DELIVERY_CIRCUIT_OPEN;
	enum delivery_circuit	 closed = DELIVERY_CIRCUIT_CLOSED;
	struct entry_probe	 ep;
	struct delivery_stats	 st;
	char			 qid[8][QID_LEN + 1], rc[32];
	int			 port = dead_port(), i;

	set_server(fx, 0, port);
	fx->cfg->delivery_concurrency = 1;
	fx->cfg->retry_min = 5000;	/* no retries during the test */
	fx->cfg->retry_max = 5000;
	fx_start(fx);
	for (i = 0; i < 6; i++) {
		snprintf(rc, sizeof(rc), "u%d@example.test", i);
		fx_queue(fx, "alice@example.org", rc, NULL, qid[i]);
	}
	if (!run_until(fx, circuit_is, &open, 3000))
		fail_msg("circuit did not open");
	/* Waiting for the circuit does not count as attempts. */
	run_until(fx, queue_empty, NULL, 700);
	memset(&ep, 0, sizeof(ep));
	assert_int_equal(delivery_info(fx->d, qid[5], entry_cb, &ep), 1);
	if (ep.attempts != 0 || ep.state != DELIVERY_DEFERRED)
		fail_msg("waiting entry attempts got=%u want=0 state got=%s "
		    "want=deferred", ep.attempts,
		    delivery_state_name(ep.state));
	delivery_get_stats(fx->d, &st);
	assert_int_equal(st.messages, 6);

	/* The server comes back on the same port: probe, close, drain. */
	srv_start(&fx->srv, port);
	fx->srv_running = true;
	if (!run_until(fx, circuit_is, &closed, 3000))
		fail_msg("circuit did not close");
	if (!run_until(fx, queue_empty, NULL, 3000))
		fail_msg("queue not drained: messages left");
	assert_int_equal(srv_messages(fx), 6);
	for (i = 0; i < 6; i++)
		assert_false(file_exists(fx, qid[i]));
}

static void
test_backup_server(void **state)
{
	struct fx		*fx = *state;
	enum delivery_circuit	 closed = DELIVERY_CIRCUIT_CLOSED;

	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, dead_port());
	set_server(fx, 1, fx->srv.port);
	fx_start(fx);
	fx_queue(fx, "alice@example.org", "bob@example.test", NULL, NULL);
	fx_queue(fx, "alice@example.org", "carol@example.test", NULL, NULL);
	if (!run_until(fx, queue_empty, NULL, 3000))
		fail_msg("queue not empty via backup");
	assert_true(circuit_is(fx, &closed));
	assert_int_equal(srv_messages(fx), 2);
}

static void
test_load_and_operator(void **state)
{
	struct fx		*fx = *state;
	struct entry_probe	 ep;
	struct delivery_stats	 st;
	char			 qid[3][QID_LEN + 1];
	enum reason		 why;

	/* Three messages in the spool before delivery starts, for an
	 * unconfigured domain: they wait. */
	fx->cfg->ndomains = 0;
	fx_queue(fx, "alice@example.org", "a@example.test", NULL, qid[0]);
	fx_queue(fx, "alice@example.org", "b@example.test", NULL, qid[1]);
	fx_queue(fx, "alice@example.org", "c@example.test", NULL, qid[2]);
	fx_start(fx);
	assert_int_equal(delivery_load(fx->d), 3);
	run_until(fx, queue_empty, NULL, 100);

	memset(&ep, 0, sizeof(ep));
	assert_int_equal(delivery_info(fx->d, qid[0], entry_cb, &ep), 1);
	assert_int_equal(ep.state, DELIVERY_DEFERRED);
	assert_string_equal(ep.error, "domain not configured");
	assert_int_equal(delivery_info(fx->d, "0000000000000000ff", entry_cb,
	    &ep), -1);

	fx->cfg->queue_max_messages = 3;
	assert_false(delivery_accepting(fx->d, 10, &why));
	assert_int_equal(why, REASON_QUEUE_FULL);
	fx->cfg->queue_max_messages = 0;
	fx->cfg->queue_max_bytes = 1000;
	assert_true(delivery_accepting(fx->d, 10, &why));
	assert_false(delivery_accepting(fx->d, 1000, &why));
	assert_int_equal(why, REASON_QUEUE_FULL);
	fx->cfg->queue_max_bytes = 0;

	assert_int_equal(delivery_hold(fx->d, qid[1]), 1);
	assert_int_equal(delivery_hold(fx->d, qid[1]), 0);
	delivery_get_stats(fx->d, &st);
	assert_int_equal(st.held, 1);
	memset(&ep, 0, sizeof(ep));
	delivery_info(fx->d, qid[1], entry_cb, &ep);
	assert_int_equal(ep.state, DELIVERY_HELD);
	assert_int_equal(delivery_delete(fx->d, qid[2]), 1);
	assert_false(file_exists(fx, qid[2]));
	assert_int_equal(delivery_delete(fx->d, qid[2]), -1);

	/* Reload with the domain configured: everything goes but held. */
	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, fx->srv.port);
	fx->cfg->ndomains = 1;
	delivery_set_config(fx->d, fx->cfg);
	{
		int	one = 1;

		if (!run_until(fx, srv_has, &one, 3000))
			fail_msg("nothing delivered after reload");
	}
	run_until(fx, queue_empty, NULL, 300);
	delivery_get_stats(fx->d, &st);
	if (st.messages != 1 || st.held != 1)
		fail_msg("messages got=%llu want=1 held got=%llu want=1",
		    (unsigned long long)st.messages,
		    (unsigned long long)st.held);
	assert_int_equal(delivery_release(fx->d, qid[1]), 1);
	if (!run_until(fx, queue_empty, NULL, 3000))
		fail_msg("released message not delivered");
	assert_int_equal(srv_messages(fx), 2);
}

static void
test_one_per_connection(void **state)
{
	struct fx	*fx = *state;
	int		 i, conns;

	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, fx->srv.port);
	fx->cfg->delivery_concurrency = 1;
	fx->cfg->messages_per_connection = 1;
	fx_start(fx);
	for (i = 0; i < 3; i++)
		fx_queue(fx, "alice@example.org", "bob@example.test", NULL,
		    NULL);
	if (!run_until(fx, queue_empty, NULL, 3000))
		fail_msg("queue not empty (stalled on a used-up connection?)");
	pthread_mutex_lock(&fx->srv.mu);
	conns = fx->srv.connections;
	pthread_mutex_unlock(&fx->srv.mu);
	if (conns != 3)
		fail_msg("connections got=%d want=3", conns);
}

static void
test_rate(void **state)
{
	struct fx	*fx = *state;
	struct timespec	 t0, t1;
	long		 ms;
	int		 i;

	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, fx->srv.port);
	fx->cfg->delivery_rate = 5;
	fx_start(fx);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < 15; i++)
		fx_queue(fx, "alice@example.org", "bob@example.test", NULL,
		    NULL);
	if (!run_until(fx, queue_empty, NULL, 6000))
		fail_msg("queue not empty after 6 s");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 +
	    (t1.tv_nsec - t0.tv_nsec) / 1000000;
	/* 5 at once, then 10 at 5/s: about 2 s. */
	if (ms < 1700 || ms > 4000)
		fail_msg("15 messages at 5/s took got=%ldms want=[1700,4000]",
		    ms);
}

static bool
expired_one(struct fx *fx, void *arg)
{
	struct delivery_stats	st;

	(void)arg;
	delivery_get_stats(fx->d, &st);
	return st.expired >= 1;
}

static bool
one_message(struct fx *fx, void *arg)
{
	struct delivery_stats	st;

	(void)arg;
	delivery_get_stats(fx->d, &st);
	return st.messages >= 1;
}

static void
test_expire_behind_open_circuit(void **state)
{
	struct fx		*fx = *state;
	enum delivery_circuit	 open = DELIVERY_CIRCUIT_OPEN;
	struct delivery_stats	 st;
	char			 qid[QID_LEN + 1];

	set_server(fx, 0, dead_port());
	fx->cfg->circuit_failures = 1;
	fx->cfg->circuit_probe = 60000;
	fx->cfg->queue_lifetime = 1500;
	fx_start(fx);
	fx_queue(fx, "alice@example.org", "bob@example.test", NULL, qid);
	if (!run_until(fx, circuit_is, &open, 2000))
		fail_msg("circuit did not open");
	if (!run_until(fx, expired_one, NULL, 4000))
		fail_msg("message behind the open circuit did not expire");
	/* The bounce is queued in its place (waiting for the circuit);
	 * the original goes once the bounce is durable. */
	run_until(fx, one_message, NULL, 1000);
	assert_false(file_exists(fx, qid));
	delivery_get_stats(fx->d, &st);
	if (st.messages != 1)
		fail_msg("messages got=%llu want=1 (the DSN)",
		    (unsigned long long)st.messages);
}

/*
 * Makes the spool's tmp/ unusable (a file in its place; root ignores
 * permissions), so that no new queue file, hence no DSN, can be written.
 */
static void
break_tmp(struct fx *fx, bool broken)
{
	char	tmp[128], saved[128];
	int	fd;

	snprintf(tmp, sizeof(tmp), "%s/tmp", fx->dir);
	snprintf(saved, sizeof(saved), "%s/tmp.saved", fx->dir);
	if (broken) {
		assert_int_equal(rename(tmp, saved), 0);
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
		assert_true(fd != -1);
		close(fd);
	} else {
		assert_int_equal(unlink(tmp), 0);
		assert_int_equal(rename(saved, tmp), 0);
	}
}

static bool
deferred_one(struct fx *fx, void *arg)
{
	struct delivery_stats	st;

	(void)arg;
	delivery_get_stats(fx->d, &st);
	return st.deferred >= 1;
}

static bool
dsn_sent(struct fx *fx, void *arg)
{
	int	n;

	(void)arg;
	pthread_mutex_lock(&fx->srv.mu);
	n = fx->srv.null_sender;
	pthread_mutex_unlock(&fx->srv.mu);
	return n >= 1 && queue_empty(fx, NULL);
}

/* A 5xx whose bounce cannot be queued keeps the message (no loss). */
static void
test_bounce_not_durable(void **state)
{
	struct fx		*fx = *state;
	struct delivery_stats	 st;
	char			 qid[QID_LEN + 1];

	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, fx->srv.port);
	fx_start(fx);
	fx_queue(fx, "alice@example.org", "bad@example.test", NULL, qid);
	break_tmp(fx, true);
	if (!run_until(fx, deferred_one, NULL, 3000))
		fail_msg("no deferral after a 5xx without a durable bounce");
	run_until(fx, queue_empty, NULL, 50);
	if (!file_exists(fx, qid))
		fail_msg("queue file got=removed want=kept (bounce lost)");
	delivery_get_stats(fx->d, &st);
	if (st.messages != 1 || st.bounced != 0)
		fail_msg("messages got=%llu want=1 bounced got=%llu want=0",
		    (unsigned long long)st.messages,
		    (unsigned long long)st.bounced);
	/* Once the spool works again the bounce is sent and it goes. */
	break_tmp(fx, false);
	if (!run_until(fx, dsn_sent, NULL, 4000))
		fail_msg("bounce not sent after the spool recovered");
	assert_false(file_exists(fx, qid));
}

/* An expired message whose bounce cannot be queued is kept too. */
static void
test_expire_bounce_not_durable(void **state)
{
	struct fx		*fx = *state;
	enum delivery_circuit	 open = DELIVERY_CIRCUIT_OPEN;
	struct delivery_stats	 st;
	char			 qid[QID_LEN + 1];

	set_server(fx, 0, dead_port());
	fx->cfg->circuit_failures = 1;
	fx->cfg->circuit_probe = 60000;
	fx->cfg->queue_lifetime = 1000;
	fx_start(fx);
	fx_queue(fx, "alice@example.org", "bob@example.test", NULL, qid);
	break_tmp(fx, true);
	if (!run_until(fx, circuit_is, &open, 2000))
		fail_msg("circuit did not open");
	run_until(fx, expired_one, NULL, 2500);
	if (!file_exists(fx, qid))
		fail_msg("queue file got=removed want=kept (bounce lost)");
	delivery_get_stats(fx->d, &st);
	if (st.messages != 1 || st.expired != 0)
		fail_msg("messages got=%llu want=1 expired got=%llu want=0",
		    (unsigned long long)st.messages,
		    (unsigned long long)st.expired);
	break_tmp(fx, false);
	if (!run_until(fx, expired_one, NULL, 4000))
		fail_msg("did not expire after the spool recovered");
	run_until(fx, one_message, NULL, 500);
	assert_false(file_exists(fx, qid));
}

/*
 * The probe's message vanished from the spool: the probe says nothing
 * about the server, so another message probes; the circuit must not
 * stay half-open forever.
 */
static void
test_probe_message_gone(void **state)
{
	struct fx		*fx = *state;
	enum delivery_circuit	 open = DELIVERY_CIRCUIT_OPEN;
	enum delivery_circuit	 closed = DELIVERY_CIRCUIT_CLOSED;
	char			 qid[2][QID_LEN + 1], path[256], b[3];
	int			 port = dead_port(), want = 1;

	set_server(fx, 0, port);
	fx->cfg->circuit_failures = 1;
	fx->cfg->circuit_probe = 300;
	fx->cfg->delivery_concurrency = 1;
	fx_start(fx);
	fx_queue(fx, "alice@example.org", "u0@example.test", NULL, qid[0]);
	fx_queue(fx, "alice@example.org", "u1@example.test", NULL, qid[1]);
	if (!run_until(fx, circuit_is, &open, 2000))
		fail_msg("circuit did not open");
	/* The oldest (the next probe) disappears behind moat's back. */
	qid_bucket(qid[0], b);
	snprintf(path, sizeof(path), "%s/queue/%s/%s", fx->dir, b, qid[0]);
	assert_int_equal(unlink(path), 0);
	srv_start(&fx->srv, port);
	fx->srv_running = true;
	if (!run_until(fx, circuit_is, &closed, 3000))
		fail_msg("circuit got=stuck want=closed after a void probe");
	if (!run_until(fx, srv_has, &want, 3000))
		fail_msg("server messages got=%d want=1", srv_messages(fx));
	assert_false(file_exists(fx, qid[1]));
}

/*
 * A queue file that cannot be opened for a while (EMFILE, not a missing
 * or corrupt file) is tried again, not forgotten until a restart.
 */
static void
test_open_error_retried(void **state)
{
	struct fx		*fx = *state;
	struct rlimit		 rl, low;
	char			 qid[2][QID_LEN + 1];
	int			 want = 1, fd;

	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, fx->srv.port);
	fx->cfg->retry_min = 200;
	fx_start(fx);
	fx_queue(fx, "alice@example.org", "bob@example.test", NULL, qid[0]);
	if (!run_until(fx, srv_has, &want, 3000) ||
	    !run_until(fx, queue_empty, NULL, 3000))
		fail_msg("first message not delivered");
	/* The second goes over the idle connection, with no fd left. */
	fx_queue(fx, "alice@example.org", "carol@example.test", NULL, qid[1]);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	fd = dup(0);
	assert_true(fd != -1);
	close(fd);
	low = rl;
	low.rlim_cur = (rlim_t)fd;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	run_until(fx, queue_empty, NULL, 100);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	want = 2;
	if (!run_until(fx, srv_has, &want, 3000))
		fail_msg("server messages got=%d want=2 (entry forgotten)",
		    srv_messages(fx));
	if (!run_until(fx, queue_empty, NULL, 2000))
		fail_msg("queue not empty");
	assert_false(file_exists(fx, qid[1]));
}

/* Puts a file in place of every queue bucket but keep's (or back). */
static void
break_buckets(struct fx *fx, const char *keep, bool broken)
{
	char	path[256], aside[256], b[3], kb[3];
	int	i, fd;

	qid_bucket(keep, kb);
	for (i = 0; i < 256; i++) {	/* spool.c SPOOL_NBUCKETS */
		snprintf(b, sizeof(b), "%02x", (unsigned)i);
		if (strcmp(b, kb) == 0)
			continue;
		snprintf(path, sizeof(path), "%s/queue/%s", fx->dir, b);
		snprintf(aside, sizeof(aside), "%s/queue/%s.aside", fx->dir,
		    b);
		if (broken) {
			assert_int_equal(rename(path, aside), 0);
			fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
			assert_true(fd != -1);
			close(fd);
		} else {
			assert_int_equal(unlink(path), 0);
			assert_int_equal(rename(aside, path), 0);
		}
	}
}

static bool
rcpt_in_file(struct fx *fx, const char *qid, const char *rcpt)
{
	struct spool_message	msg;
	bool			held, found = false;

	if (spool_message_open(fx->sp, qid, &msg, &held) == -1)
		return false;
	for (size_t i = 0; i < msg.env.nrcpts; i++)
		if (strcmp(msg.env.rcpts[i], rcpt) == 0)
			found = true;
	spool_message_close(&msg);
	return found;
}

static bool
bad_gone(struct fx *fx, void *arg)
{
	return !rcpt_in_file(fx, arg, "bad@example.test") &&
	    rcpt_in_file(fx, arg, "tmp2@example.test");
}

/*
 * A partial delivery with one recipient bounced and one deferred: the
 * bounced one leaves the original only once its DSN is durable.  Here
 * the DSN's commit fails (its bucket is unusable): the recipient must
 * still be in the file, to bounce again later.
 */
static void
test_partial_bounce_waits_for_dsn(void **state)
{
	struct fx		*fx = *state;
	struct delivery_stats	 st;
	char			 qid[QID_LEN + 1];

	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, fx->srv.port);
	fx->cfg->retry_min = 5000;	/* no retry during the first part */
	fx->cfg->retry_max = 5000;
	fx_start(fx);
	fx_queue(fx, "alice@example.org", "tmp1@example.test",
	    "bad@example.test", qid);
	break_buckets(fx, qid, true);
	if (!run_until(fx, deferred_one, NULL, 3000))
		fail_msg("no deferral for tmp1");
	run_until(fx, queue_empty, NULL, 300);	/* the DSN commit fails */
	delivery_get_stats(fx->d, &st);
	pthread_mutex_lock(&fx->srv.mu);
	if (fx->srv.null_sender == 0 && st.messages == 1 &&
	    !rcpt_in_file(fx, qid, "bad@example.test"))
		fail_msg("bad@ got=dropped want=kept: its bounce never "
		    "became durable");
	pthread_mutex_unlock(&fx->srv.mu);
	if (!rcpt_in_file(fx, qid, "tmp1@example.test"))
		fail_msg("tmp1@ got=dropped want=kept (deferred)");
	break_buckets(fx, qid, false);

	/* With a durable DSN the bounced recipient does leave the file. */
	pthread_mutex_lock(&fx->srv.mu);
	fx->srv.tmp_seen = 0;		/* tmp2 gets its 451 too */
	pthread_mutex_unlock(&fx->srv.mu);
	fx_queue(fx, "alice@example.org", "tmp2@example.test",
	    "bad@example.test", qid);
	if (!run_until(fx, bad_gone, qid, 3000))
		fail_msg("bad@ got=kept want=dropped after a durable DSN");
	if (!rcpt_in_file(fx, qid, "tmp2@example.test"))
		fail_msg("tmp2@ got=dropped want=kept (deferred)");
}

static bool
two_messages(struct fx *fx, void *arg)
{
	struct delivery_stats	st;

	(void)arg;
	delivery_get_stats(fx->d, &st);
	return st.messages >= 2;
}

static void
test_delay_warning(void **state)
{
	struct fx		*fx = *state;
	struct delivery_stats	 st;
	struct spool_message	 msg;
	char			 qid[QID_LEN + 1];
	bool			 held;

	set_server(fx, 0, dead_port());
	fx->cfg->circuit_failures = 0;	/* never opens: plain retries */
	fx->cfg->retry_min = 100;
	fx->cfg->retry_max = 150;
	fx->cfg->delay_warning = 300;
	fx_start(fx);
	fx_queue(fx, "alice@example.org", "bob@example.test", NULL, qid);
	if (!run_until(fx, two_messages, NULL, 3000))
		fail_msg("no delayed DSN queued");
	/* Only one warning, however many retries follow. */
	run_until(fx, queue_empty, NULL, 800);
	delivery_get_stats(fx->d, &st);
	if (st.messages != 2)
		fail_msg("messages got=%llu want=2",
		    (unsigned long long)st.messages);
	assert_int_equal(spool_message_open(fx->sp, qid, &msg, &held), 0);
	if (!(msg.env.flags & SPOOL_F_WARNED))
		fail_msg("flags got=%#x want SPOOL_F_WARNED",
		    (unsigned)msg.env.flags);
	spool_message_close(&msg);
}

/* Loaded from the spool (scan order is by bucket): sent oldest first. */
static void
test_load_oldest_first(void **state)
{
	struct fx	*fx = *state;
	char		 rc[32], want[32];
	int		 i, n = 40;

	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, fx->srv.port);
	fx->cfg->delivery_concurrency = 1;
	fx->cfg->messages_per_connection = 100;
	for (i = 0; i < n; i++) {
		snprintf(rc, sizeof(rc), "u%02d@example.test", i);
		fx_queue(fx, "alice@example.org", rc, NULL, NULL);
	}
	fx_start(fx);
	assert_int_equal(delivery_load(fx->d), n);
	if (!run_until(fx, queue_empty, NULL, 5000))
		fail_msg("queue not empty after 5 s");
	pthread_mutex_lock(&fx->srv.mu);
	for (i = 0; i < n; i++) {
		snprintf(want, sizeof(want), "u%02d@example.test>", i);
		if (strcmp(fx->srv.order[i], want) != 0)
			fail_msg("message %d: got=%s want=%s", i,
			    fx->srv.order[i], want);
	}
	pthread_mutex_unlock(&fx->srv.mu);
}

/* Many messages: the hot path must not be O(n) per event. */
static void
test_many(void **state)
{
	struct fx		*fx = *state;
	struct delivery_stats	 st;
	struct timespec		 t0, t1;
	long			 ms;
	int			 i, n = 5000;

	srv_start(&fx->srv, 0);
	fx->srv_running = true;
	set_server(fx, 0, fx->srv.port);
	fx->cfg->delivery_concurrency = 4;
	fx->cfg->messages_per_connection = 1000;
	fx->cfg->circuit_failures = 3;
	for (i = 0; i < n; i++)
		fx_queue(fx, "alice@example.org", "bob@example.test", NULL,
		    NULL);
	fx_start(fx);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(delivery_load(fx->d), n);
	if (!run_until(fx, queue_empty, NULL, 60000))
		fail_msg("queue not empty after 60 s");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 +
	    (t1.tv_nsec - t0.tv_nsec) / 1000000;
	delivery_get_stats(fx->d, &st);
	assert_int_equal(st.delivered, n);
	fprintf(stderr, "test_many: %d messages in %ld ms\n", n, ms);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_names),
		cmocka_unit_test_setup_teardown(test_delivered, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tempfail_then_delivered,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_and_bounce,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_dsn_for_null_sender,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_circuit, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_backup_server, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_load_and_operator, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_one_per_connection, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_rate, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_expire_behind_open_circuit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bounce_not_durable, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_expire_bounce_not_durable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_probe_message_gone, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_open_error_retried, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_partial_bounce_waits_for_dsn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delay_warning, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_load_oldest_first, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_many, setup, teardown),
	};

	log_init("test_delivery", LOG_LEVEL_INFO, false);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
