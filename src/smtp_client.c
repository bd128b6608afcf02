/*
 * smtp_client.c: asynchronous SMTP client to the protected server
 * (libevent bufferevents).  Called by the delivery scheduler (delivery.c)
 * through smtp_client.h.
 *
 * One client is one connection and runs one transaction at a time:
 *
 *   CONNECTING -> GREETING -> EHLO [-> HELO] -> IDLE
 *   IDLE -> TXN (MAIL, RCPT..., DATA; pipelined per RFC 2920 when the
 *   server offers PIPELINING) -> BODY -> DOT -> IDLE
 *   failed transaction: ... -> [ABORT_DOT] -> RSET -> IDLE
 *   IDLE -> QUIT -> freed;  any state -> BROKEN (no connection)
 *
 * Invariants:
 *  - every reply line is bounded (SC_LINE_MAX) before it is buffered
 *    further, a reply has at most SC_REPLY_LINES lines and one code;
 *  - exactly one callback per connect or send; never one after
 *    smtp_client_free();
 *  - the client is only destroyed when none of its libevent callbacks is
 *    on the stack (busy == 0): every entry point takes busy, and freeing
 *    inside a callback only marks the client dead (CONVENTIONS 3);
 *  - the body is read from the spool fd in chunks and queued only while
 *    the output buffer is below SC_BODY_HIWAT, so a large message is
 *    never held in memory;
 *  - once a transaction's outcome is known (MAIL refused, no recipient
 *    accepted, DATA refused), losing the connection while cleaning up
 *    (RSET) does not change the outcome reported: the result is OK and
 *    the client becomes BROKEN, so its next transaction fails with
 *    NETWORK.  The same happens after a 421 reply or an unsolicited
 *    reply or close while idle.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "log.h"
#include "smtp_client.h"
#include "smtp_data.h"
#include "spool.h"

#define SC_LINE_MAX		2048	/* longest reply line, CRLF excluded */
#define SC_REPLY_LINES		100	/* most lines in one reply */
#define SC_CHUNK		(64 * 1024)	/* body read size */
#define SC_BODY_LOWAT		(64 * 1024)	/* refill below this */
#define SC_BODY_HIWAT		(256 * 1024)	/* queue body up to this */
#define SC_QUIT_TIMEOUT		5000	/* ms, most we wait for 221 */

enum sc_state {
	SC_CONNECTING,
	SC_GREETING,
	SC_EHLO,
	SC_HELO,
	SC_IDLE,
	SC_TXN,		/* replies to MAIL, RCPT..., DATA */
	SC_BODY,	/* streaming the body */
	SC_DOT,		/* waiting for the reply to the final dot */
	SC_ABORT_DOT,	/* 354 though no recipient: sent an empty message */
	SC_RSET,
	SC_QUIT,
	SC_BROKEN	/* no connection; next transaction fails */
};

struct smtp_client {
	struct event_base		*base;
	struct bufferevent		*bev;
	struct event			*timer;
	struct event			*defer;
	enum sc_state			 state;
	unsigned			 busy;
	bool				 dead;
	bool				 in_connect;

	char				 helo[256];
	uint64_t			 connect_timeout;
	uint64_t			 reply_timeout;
	uint64_t			 data_timeout;
	const char			*what;	/* what we wait for */

	smtp_client_cb			 cb;
	void				*cbarg;
	struct smtp_client_result	 res;
	enum smtp_client_status		 pending_status;
	char				 broken[SMTP_CLIENT_REPLY_MAX];

	/* The reply being read. */
	int				 rcode;
	unsigned			 rlines;
	struct smtp_client_reply	 reply;

	/* What EHLO said. */
	bool				 pipelining;
	bool				 size;
	bool				 eightbit;
	uint64_t			 max_size;

	/* The transaction: command 0 MAIL, 1..n RCPT, n+1 DATA. */
	const struct spool_message	*msg;
	size_t				 ncmds;
	size_t				 next_send;
	size_t				 next_reply;
	size_t				 accepted;
	bool				 mail_failed;
	bool				 known;		/* outcome decided */

	/* The body. */
	uint64_t			 body_sent;
	struct smtp_stuff		 stuff;
	uint8_t				 last[2];
	uint8_t				*rbuf;		/* SC_CHUNK */
	uint8_t				*sbuf;		/* 2 * SC_CHUNK */
};

static void	sc_read_cb(struct bufferevent *, void *);
static void	sc_write_cb(struct bufferevent *, void *);
static void	sc_event_cb(struct bufferevent *, short, void *);
static void	sc_timer_cb(evutil_socket_t, short, void *);
static void	sc_defer_cb(evutil_socket_t, short, void *);
static void	sc_fail(struct smtp_client *, enum smtp_client_status,
		    const char *, ...) __attribute__((format(printf, 3, 4)));

static void
sc_destroy(struct smtp_client *c)
{
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	if (c->timer != NULL)
		event_free(c->timer);
	if (c->defer != NULL)
		event_free(c->defer);
	free(c->res.rcpt);
	free(c->rbuf);
	free(c->sbuf);
	free(c);
}

/* Every libevent entry point: hold, work, release. */
static void
sc_hold(struct smtp_client *c)
{
	c->busy++;
}

static void
sc_release(struct smtp_client *c)
{
	if (--c->busy == 0 && c->dead)
		sc_destroy(c);
}

static void
sc_close(struct smtp_client *c)
{
	if (c->bev != NULL) {
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	if (c->timer != NULL)
		evtimer_del(c->timer);
}

static void
sc_timer_arm(struct smtp_client *c, uint64_t ms, const char *what)
{
	struct timeval	 tv;

	c->what = what;
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
	evtimer_add(c->timer, &tv);
}

/* Copies s[0..n) into r->text as printable ASCII, cut to fit. */
static void
sc_set_text(struct smtp_client_reply *r, const char *s, size_t n)
{
	size_t	 i;

	if (n > sizeof(r->text) - 1)
		n = sizeof(r->text) - 1;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		r->text[i] = (ch >= 0x20 && ch <= 0x7e) ? (char)ch : '?';
	}
	r->text[n] = '\0';
}

static void
sc_vset_conn(struct smtp_client *c, const char *fmt, va_list ap)
{
	char	 buf[SMTP_CLIENT_REPLY_MAX];
	int	 n;

	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	if (n < 0)
		n = 0;
	else if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;	/* cut: the text is informative */
	sc_set_text(&c->res.conn, buf, (size_t)n);
}

/*
 * Ends the current connect or transaction with status and calls the
 * owner's callback once.  On a failure the client is closed and dead
 * first (freed when the outermost entry point returns).  The callback
 * may call smtp_client_send/quit/free: callers return right after.
 */
static void
sc_finish(struct smtp_client *c, enum smtp_client_status status)
{
	struct smtp_client_result	 res;
	smtp_client_cb			 cb = c->cb;
	void				*arg = c->cbarg;

	res = c->res;
	res.status = status;
	memset(&c->res, 0, sizeof(c->res));
	c->cb = NULL;
	c->cbarg = NULL;
	c->msg = NULL;
	if (c->timer != NULL)
		evtimer_del(c->timer);
	if (status != SMTP_CLIENT_OK) {
		sc_close(c);
		c->dead = true;
	} else if (c->state != SC_BROKEN)
		c->state = SC_IDLE;
	log_debug("event=smtp_client_result status=%d code=%d", (int)status,
	    res.conn.code);
	if (cb != NULL) {
		c->busy++;
		cb(arg, c, &res);
		c->busy--;
	}
	free(res.rcpt);
}

/* Drops the connection but keeps the client for its owner. */
static void
sc_break(struct smtp_client *c, const char *why)
{
	sc_close(c);
	c->state = SC_BROKEN;
	(void)snprintf(c->broken, sizeof(c->broken), "%s", why);
	if (log_enabled(LOG_LEVEL_DEBUG)) {
		char	 esc[LOG_ESCAPE_MAX + 8];

		log_debug("event=smtp_client_broken why=%s", log_escape(esc,
		    sizeof(esc), why, strlen(why)));
	}
}

/* Calls the callback from a zero-delay event, never from the API call. */
static void
sc_defer(struct smtp_client *c, enum smtp_client_status status,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
sc_defer(struct smtp_client *c, enum smtp_client_status status,
    const char *fmt, ...)
{
	struct timeval	 tv = { 0, 0 };
	va_list		 ap;

	va_start(ap, fmt);
	sc_vset_conn(c, fmt, ap);
	va_end(ap);
	c->pending_status = status;
	sc_close(c);
	evtimer_add(c->defer, &tv);
}

static void
sc_defer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct smtp_client	*c = arg;

	(void)fd;
	(void)ev;
	sc_hold(c);
	if (!c->dead)
		sc_finish(c, c->pending_status);
	sc_release(c);
}

/*
 * A network or protocol failure: ends the current operation.  If the
 * outcome of the transaction is already known it is reported as OK and
 * the client breaks; while idle the client just breaks; while quitting
 * it is freed.
 */
static void
sc_fail(struct smtp_client *c, enum smtp_client_status status,
    const char *fmt, ...)
{
	char		 buf[SMTP_CLIENT_REPLY_MAX];
	va_list		 ap;
	int		 n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		buf[0] = '\0';
	if (log_enabled(LOG_LEVEL_DEBUG)) {
		char	 esc[LOG_ESCAPE_MAX + 8];

		log_debug("event=smtp_client_fail status=%d why=%s",
		    (int)status, log_escape(esc, sizeof(esc), buf,
		    strlen(buf)));
	}

	switch (c->state) {
	case SC_QUIT:
		sc_close(c);
		c->dead = true;
		return;
	case SC_IDLE:
	case SC_BROKEN:
		sc_break(c, buf);
		return;
	default:
		break;
	}
	if (c->in_connect) {
		sc_defer(c, status, "%s", buf);
		return;
	}
	if (c->known) {
		sc_break(c, buf);
		sc_finish(c, SMTP_CLIENT_OK);
		return;
	}
	sc_set_text(&c->res.conn, buf, strlen(buf));
	sc_finish(c, status);
}

static int
sc_write(struct smtp_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
sc_write(struct smtp_client *c, const char *fmt, ...)
{
	char	 buf[1024];
	va_list	 ap;
	int	 n;

	if (c->bev == NULL)
		return -1;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -1;
	if (log_enabled(LOG_LEVEL_DEBUG)) {
		char	 esc[LOG_ESCAPE_MAX + 8];

		log_debug("event=smtp_client_send line=%s", log_escape(esc,
		    sizeof(esc), buf, n >= 2 ? (size_t)n - 2 : (size_t)n));
	}
	return bufferevent_write(c->bev, buf, (size_t)n);
}

/* Envelope strings go on a command line: no controls, no '<' '>'. */
static bool
sc_addr_ok(const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < 0x20 || ch == 0x7f || ch == '<' || ch == '>')
			return false;
	}
	return true;
}

/* EHLO keyword lines (RFC 5321 4.1.1.1); t is the text after "250-". */
static void
sc_ehlo_keyword(struct smtp_client *c, const char *t, size_t n)
{
	char		 kw[32], num[24];
	size_t		 k, i;

	for (k = 0; k < n && t[k] != ' ' && k < sizeof(kw) - 1; k++)
		kw[k] = t[k];
	kw[k] = '\0';
	if (strcasecmp(kw, "PIPELINING") == 0)
		c->pipelining = true;
	else if (strcasecmp(kw, "8BITMIME") == 0)
		c->eightbit = true;
	else if (strcasecmp(kw, "SIZE") == 0) {
		c->size = true;
		c->max_size = 0;
		while (k < n && t[k] == ' ')
			k++;
		for (i = 0; k < n && i < sizeof(num) - 1 && t[k] >= '0' &&
		    t[k] <= '9'; k++)
			num[i++] = t[k];
		num[i] = '\0';
		if (i > 0 && i < 20)
			c->max_size = strtoull(num, NULL, 10);
	}
}

/*
 * Reads one complete reply into c->reply.  Returns 1 when done, 0 when
 * more input is needed, -1 on a protocol error (*why set).
 */
static int
sc_read_reply(struct smtp_client *c, const char **why)
{
	struct evbuffer		*in = bufferevent_get_input(c->bev);
	struct evbuffer_ptr	 p;
	size_t			 eol, len;
	char			 line[SC_LINE_MAX + 1];
	int			 code;
	bool			 last;

	for (;;) {
		p = evbuffer_search_eol(in, NULL, &eol, EVBUFFER_EOL_CRLF);
		if (p.pos == -1) {
			if (evbuffer_get_length(in) > SC_LINE_MAX) {
				*why = "reply line too long";
				return -1;
			}
			return 0;
		}
		len = (size_t)p.pos;
		if (len > SC_LINE_MAX) {
			*why = "reply line too long";
			return -1;
		}
		if (evbuffer_remove(in, line, len) != (int)len ||
		    evbuffer_drain(in, eol) != 0) {
			*why = "reading reply failed";
			return -1;
		}
		line[len] = '\0';
		if (len < 3 || line[0] < '2' || line[0] > '5' ||
		    line[1] < '0' || line[1] > '9' || line[2] < '0' ||
		    line[2] > '9' || (len > 3 && line[3] != ' ' &&
		    line[3] != '-')) {
			*why = "malformed reply";
			return -1;
		}
		code = (line[0] - '0') * 100 + (line[1] - '0') * 10 +
		    (line[2] - '0');
		if (c->rlines > 0 && code != c->rcode) {
			*why = "inconsistent reply codes";
			return -1;
		}
		if (++c->rlines > SC_REPLY_LINES) {
			*why = "reply has too many lines";
			return -1;
		}
		c->rcode = code;
		last = len == 3 || line[3] == ' ';
		if (c->state == SC_EHLO && c->rlines > 1 && len > 4)
			sc_ehlo_keyword(c, line + 4, len - 4);
		if (last) {
			c->reply.code = code;
			sc_set_text(&c->reply, line, len);
			c->rlines = 0;
			c->rcode = 0;
			if (log_enabled(LOG_LEVEL_DEBUG)) {
				char	 esc[LOG_ESCAPE_MAX + 8];

				log_debug("event=smtp_client_reply line=%s",
				    log_escape(esc, sizeof(esc), line, len));
			}
			return 1;
		}
	}
}

static bool
sc_2xx(int code)
{
	return code >= 200 && code <= 299;
}

static void
sc_send_ehlo(struct smtp_client *c, bool helo)
{
	c->pipelining = c->size = c->eightbit = false;
	c->max_size = 0;
	c->state = helo ? SC_HELO : SC_EHLO;
	if (sc_write(c, "%s %s\r\n", helo ? "HELO" : "EHLO", c->helo) != 0) {
		sc_fail(c, SMTP_CLIENT_NETWORK, "cannot queue %s",
		    helo ? "HELO" : "EHLO");
		return;
	}
	sc_timer_arm(c, c->reply_timeout, helo ? "reply to HELO" :
	    "reply to EHLO");
}

/*
 * The server refused the session (4xx/5xx greeting, EHLO/HELO): ready
 * is called with OK and conn = that reply; the client is BROKEN, so the
 * owner must free or quit it and any transaction fails with NETWORK.
 */
static void
sc_refused(struct smtp_client *c)
{
	char	 why[SMTP_CLIENT_REPLY_MAX + 32];

	c->res.conn = c->reply;
	(void)snprintf(why, sizeof(why), "session refused: %s",
	    c->reply.text);
	sc_break(c, why);
	sc_finish(c, SMTP_CLIENT_OK);
}

static void
sc_send_cmd(struct smtp_client *c, size_t i)
{
	const struct spool_envelope	*env = &c->msg->env;
	char				 size[40] = "";
	int				 r;

	if (i == 0) {
		if (c->size)
			(void)snprintf(size, sizeof(size), " SIZE=%llu",
			    (unsigned long long)env->body_len);
		r = sc_write(c, "MAIL FROM:<%s>%s%s\r\n", env->sender, size,
		    (env->flags & SPOOL_F_8BITMIME) && c->eightbit ?
		    " BODY=8BITMIME" : "");
	} else if (i <= env->nrcpts)
		r = sc_write(c, "RCPT TO:<%s>\r\n", env->rcpts[i - 1]);
	else
		r = sc_write(c, "DATA\r\n");
	if (r != 0)
		sc_fail(c, SMTP_CLIENT_NETWORK, "cannot queue command");
}

static const char *
sc_cmd_name(struct smtp_client *c, size_t i)
{
	if (i == 0)
		return "reply to MAIL";
	if (i < c->ncmds - 1)
		return "reply to RCPT";
	return "reply to DATA";
}

/*
 * Sends what may be sent now: with PIPELINING the whole group MAIL,
 * RCPT..., DATA at once (RFC 2920 3.1: DATA ends the group); otherwise
 * the next command once the previous reply is in.
 */
static void
sc_send_pending(struct smtp_client *c)
{
	if (c->pipelining) {
		while (c->next_send < c->ncmds && !c->dead &&
		    c->bev != NULL && c->state == SC_TXN)
			sc_send_cmd(c, c->next_send++);
	} else if (c->next_send == c->next_reply && c->next_send < c->ncmds)
		sc_send_cmd(c, c->next_send++);
}

static void
sc_rset(struct smtp_client *c)
{
	c->state = SC_RSET;
	if (sc_write(c, "RSET\r\n") != 0) {
		sc_fail(c, SMTP_CLIENT_NETWORK, "cannot queue RSET");
		return;
	}
	sc_timer_arm(c, c->reply_timeout, "reply to RSET");
}

static void
sc_body_fill(struct smtp_client *c)
{
	const struct spool_message	*m = c->msg;
	struct evbuffer			*out;
	uint64_t			 len = m->env.body_len;
	size_t				 n, sn;
	ssize_t				 r;

	out = bufferevent_get_output(c->bev);
	while (evbuffer_get_length(out) < SC_BODY_HIWAT &&
	    c->body_sent < len) {
		n = len - c->body_sent > SC_CHUNK ? SC_CHUNK :
		    (size_t)(len - c->body_sent);
		do {
			r = pread(m->fd, c->rbuf, n,
			    m->body_off + (off_t)c->body_sent);
		} while (r == -1 && errno == EINTR);
		if (r <= 0) {
			/*
			 * moat's own spool failed: drop the connection so
			 * the server discards the partial message; never
			 * send the final dot after a short body.
			 */
			sc_fail(c, SMTP_CLIENT_NETWORK, "local: read spool: %s",
			    r == 0 ? "file truncated" : strerror(errno));
			return;
		}
		sn = smtp_stuff(&c->stuff, c->rbuf, (size_t)r, c->sbuf);
		if (evbuffer_add(out, c->sbuf, sn) != 0) {
			sc_fail(c, SMTP_CLIENT_NETWORK, "local: out of memory");
			return;
		}
		if (r >= 2) {
			c->last[0] = c->rbuf[r - 2];
			c->last[1] = c->rbuf[r - 1];
		} else {
			c->last[0] = c->last[1];
			c->last[1] = c->rbuf[0];
		}
		c->body_sent += (uint64_t)r;
	}
	if (c->body_sent < len) {
		sc_timer_arm(c, c->reply_timeout, "the server to read the body");
		return;
	}
	if (len > 0 && (c->last[0] != '\r' || c->last[1] != '\n') &&
	    evbuffer_add(out, "\r\n", 2) != 0) {
		sc_fail(c, SMTP_CLIENT_NETWORK, "local: out of memory");
		return;
	}
	if (evbuffer_add(out, ".\r\n", 3) != 0) {
		sc_fail(c, SMTP_CLIENT_NETWORK, "local: out of memory");
		return;
	}
	c->state = SC_DOT;
	sc_timer_arm(c, c->data_timeout, "reply to end of data");
}

static void
sc_body_start(struct smtp_client *c)
{
	if (c->rbuf == NULL && (c->rbuf = malloc(SC_CHUNK)) == NULL) {
		sc_fail(c, SMTP_CLIENT_NETWORK, "local: out of memory");
		return;
	}
	if (c->sbuf == NULL && (c->sbuf = malloc(2 * SC_CHUNK)) == NULL) {
		sc_fail(c, SMTP_CLIENT_NETWORK, "local: out of memory");
		return;
	}
	c->state = SC_BODY;
	c->body_sent = 0;
	c->last[0] = c->last[1] = 0;
	smtp_stuff_init(&c->stuff);
	sc_body_fill(c);
}

/* A reply to command i = c->next_reply of the transaction. */
static void
sc_txn_reply(struct smtp_client *c)
{
	struct smtp_client_reply	*r = &c->reply;
	size_t				 i = c->next_reply++;
	size_t				 nrcpts = c->ncmds - 2;

	if (i == 0) {
		if (!sc_2xx(r->code)) {
			c->res.conn = *r;
			c->mail_failed = c->known = true;
		}
	} else if (i <= nrcpts) {
		c->res.rcpt[i - 1] = *r;
		if (sc_2xx(r->code))
			c->accepted++;
		if (i == nrcpts && c->accepted == 0)
			c->known = true;
	} else {
		/* DATA: the last of the group. */
		if (c->mail_failed || c->accepted == 0) {
			if (r->code == 354) {
				/* RFC 2920 3.1: terminate an empty message. */
				c->state = SC_ABORT_DOT;
				if (sc_write(c, ".\r\n") != 0)
					sc_fail(c, SMTP_CLIENT_NETWORK,
					    "cannot queue end of data");
				else
					sc_timer_arm(c, c->reply_timeout,
					    "reply to end of data");
				return;
			}
			sc_rset(c);
			return;
		}
		if (r->code == 354) {
			sc_body_start(c);
			return;
		}
		if (r->code < 400) {
			sc_fail(c, SMTP_CLIENT_PROTOCOL, "unexpected reply to "
			    "DATA: %s", r->text);
			return;
		}
		c->res.data = *r;
		c->known = true;
		sc_rset(c);
		return;
	}
	if (c->next_reply < c->next_send) {
		sc_timer_arm(c, c->reply_timeout,
		    sc_cmd_name(c, c->next_reply));
		return;
	}
	/* Nothing outstanding (no PIPELINING): decide the next step. */
	if (c->mail_failed || (i == nrcpts && c->accepted == 0)) {
		sc_rset(c);
		return;
	}
	sc_send_pending(c);
	if (!c->dead && c->state == SC_TXN)
		sc_timer_arm(c, c->reply_timeout,
		    sc_cmd_name(c, c->next_reply));
}

static void
sc_reply(struct smtp_client *c)
{
	struct smtp_client_reply	*r = &c->reply;

	evtimer_del(c->timer);
	/* 3xx only makes sense as 354 to DATA. */
	if (r->code >= 300 && r->code <= 399 && !(c->state == SC_TXN &&
	    c->next_reply == c->ncmds - 1)) {
		sc_fail(c, SMTP_CLIENT_PROTOCOL, "unexpected reply: %s",
		    r->text);
		return;
	}
	/* 421: the server is closing the channel (RFC 5321 3.8). */
	if (r->code == 421 && c->state != SC_GREETING &&
	    c->state != SC_EHLO && c->state != SC_HELO &&
	    c->state != SC_QUIT) {
		char	 why[SMTP_CLIENT_REPLY_MAX + 16];

		(void)snprintf(why, sizeof(why), "server closing: %s",
		    r->text);
		if (c->state == SC_TXN) {
			/* Count it where it belongs, then stop. */
			sc_txn_reply(c);
			if (c->dead || c->state == SC_IDLE ||
			    c->state == SC_BROKEN)
				return;
			/* Accepted recipients must not look delivered. */
			if (c->accepted > 0 && c->res.data.code == 0)
				c->res.data = *r;
			c->known = true;
		} else if (c->state == SC_BODY || c->state == SC_DOT) {
			c->res.data = *r;
			c->known = true;
		}
		sc_fail(c, SMTP_CLIENT_NETWORK, "%s", why);
		return;
	}

	switch (c->state) {
	case SC_GREETING:
		if (r->code != 220) {
			if (r->code >= 400) {
				sc_refused(c);
				return;
			}
			sc_fail(c, SMTP_CLIENT_PROTOCOL, "unexpected greeting: "
			    "%s", r->text);
			return;
		}
		sc_send_ehlo(c, false);
		break;
	case SC_EHLO:
	case SC_HELO:
		if (sc_2xx(r->code)) {
			if (c->state == SC_HELO)
				c->pipelining = c->size = c->eightbit = false;
			c->res.conn = *r;
			sc_finish(c, SMTP_CLIENT_OK);
			return;
		}
		c->pipelining = c->size = c->eightbit = false;
		if (c->state == SC_EHLO && r->code >= 500) {
			sc_send_ehlo(c, true);
			return;
		}
		sc_refused(c);
		break;
	case SC_TXN:
		sc_txn_reply(c);
		break;
	case SC_BODY:
		/* A reply before the end of data: the server gave up. */
		if (sc_2xx(r->code)) {
			sc_fail(c, SMTP_CLIENT_PROTOCOL, "reply before end of "
			    "data: %s", r->text);
			return;
		}
		c->res.data = *r;
		c->known = true;
		sc_fail(c, SMTP_CLIENT_NETWORK, "reply before end of data: %s",
		    r->text);
		break;
	case SC_DOT:
		c->res.data = *r;
		sc_finish(c, SMTP_CLIENT_OK);
		break;
	case SC_ABORT_DOT:
		sc_rset(c);
		break;
	case SC_RSET:
		if (!sc_2xx(r->code)) {
			char	 why[SMTP_CLIENT_REPLY_MAX + 16];

			(void)snprintf(why, sizeof(why), "RSET refused: %s",
			    r->text);
			sc_break(c, why);
		}
		sc_finish(c, SMTP_CLIENT_OK);
		break;
	case SC_QUIT:
		sc_close(c);
		c->dead = true;
		break;
	case SC_IDLE:
		/* Unsolicited: typically 421 idle timeout.  Stop using it. */
		sc_break(c, "unsolicited reply while idle");
		break;
	case SC_CONNECTING:
	case SC_BROKEN:
		break;
	}
}

static void
sc_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client	*c = arg;
	const char		*why = NULL;
	int			 r;

	(void)bev;
	sc_hold(c);
	while (!c->dead && c->bev != NULL) {
		if ((r = sc_read_reply(c, &why)) == 0)
			break;
		if (r == -1) {
			sc_fail(c, SMTP_CLIENT_PROTOCOL, "%s", why);
			break;
		}
		sc_reply(c);
	}
	sc_release(c);
}

static void
sc_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client	*c = arg;

	(void)bev;
	sc_hold(c);
	if (!c->dead && c->state == SC_BODY)
		sc_body_fill(c);
	sc_release(c);
}

static void
sc_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_client	*c = arg;
	int			 err = EVUTIL_SOCKET_ERROR();
	int			 dnserr, on = 1;
	evutil_socket_t		 fd;

	sc_hold(c);
	if (c->dead)
		goto out;
	if (what & BEV_EVENT_CONNECTED) {
		/*
		 * No Nagle: the tail of a message longer than one segment
		 * (64 KiB on loopback) would wait for the server's delayed
		 * ACK, 40 ms a message.  Only a hint if it fails.
		 */
		fd = bufferevent_getfd(bev);
		if (fd != -1 && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on,
		    sizeof(on)) == -1)
			log_debug("event=smtp_client_nodelay error=\"%s\"",
			    strerror(errno));
		c->state = SC_GREETING;
		evtimer_del(c->timer);
		sc_timer_arm(c, c->reply_timeout, "greeting");
		log_debug("event=smtp_client_connected");
		goto out;
	}
	if (c->state == SC_CONNECTING) {
		if ((dnserr = bufferevent_socket_get_dns_error(bev)) != 0)
			sc_fail(c, SMTP_CLIENT_NETWORK, "cannot resolve: %s",
			    evutil_gai_strerror(dnserr));
		else
			sc_fail(c, SMTP_CLIENT_NETWORK, "connect: %s",
			    err != 0 ? strerror(err) : "failed");
		goto out;
	}
	if (what & BEV_EVENT_EOF)
		sc_fail(c, SMTP_CLIENT_NETWORK, "connection closed by server%s",
		    c->state == SC_BODY ? " while sending body" : "");
	else if (what & BEV_EVENT_ERROR)
		sc_fail(c, SMTP_CLIENT_NETWORK, "connection error%s: %s",
		    c->state == SC_BODY ? " while sending body" : "",
		    err != 0 ? strerror(err) : "unknown");
out:
	sc_release(c);
}

static void
sc_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct smtp_client	*c = arg;

	(void)fd;
	(void)ev;
	sc_hold(c);
	if (!c->dead) {
		if (c->state == SC_CONNECTING)
			sc_fail(c, SMTP_CLIENT_NETWORK, "connect: timeout");
		else if (c->state == SC_BODY)
			sc_fail(c, SMTP_CLIENT_NETWORK,
			    "timeout sending message body");
		else
			sc_fail(c, SMTP_CLIENT_NETWORK,
			    "timeout waiting for %s", c->what ? c->what :
			    "reply");
	}
	sc_release(c);
}

static bool
sc_helo_ok(const char *s)
{
	if (s == NULL || *s == '\0' || strlen(s) > 255)
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

struct smtp_client *
smtp_client_connect(struct event_base *base, struct evdns_base *dns,
    const char *host, const char *port,
    const struct smtp_client_options *opts, smtp_client_cb ready, void *arg)
{
	struct smtp_client	*c;
	struct addrinfo		 hints, *ai = NULL;
	char			*end;
	unsigned long		 portnum;
	int			 rv;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->base = base;
	c->cb = ready;
	c->cbarg = arg;
	c->state = SC_CONNECTING;
	c->connect_timeout = opts->connect_timeout ? opts->connect_timeout :
	    30000;
	c->reply_timeout = opts->reply_timeout ? opts->reply_timeout : 300000;
	c->data_timeout = opts->data_timeout ? opts->data_timeout : 600000;
	(void)snprintf(c->helo, sizeof(c->helo), "%s",
	    sc_helo_ok(opts->helo_name) ? opts->helo_name : "localhost");
	if ((c->timer = evtimer_new(base, sc_timer_cb, c)) == NULL ||
	    (c->defer = evtimer_new(base, sc_defer_cb, c)) == NULL) {
		sc_destroy(c);
		return NULL;
	}
	c->in_connect = true;

	errno = 0;
	portnum = strtoul(port ? port : "", &end, 10);
	if (port == NULL || *port == '\0' || *end != '\0' || portnum == 0 ||
	    portnum > 65535 || errno != 0) {
		sc_defer(c, SMTP_CLIENT_NETWORK, "invalid port");
		goto done;
	}
	if ((c->bev = bufferevent_socket_new(base, -1,
	    BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		sc_defer(c, SMTP_CLIENT_NETWORK, "local: cannot create socket");
		goto done;
	}
	bufferevent_setcb(c->bev, sc_read_cb, sc_write_cb, sc_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_WRITE, SC_BODY_LOWAT, 0);
	bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) != 0) {
		sc_defer(c, SMTP_CLIENT_NETWORK, "local: cannot enable I/O");
		goto done;
	}
	sc_timer_arm(c, c->connect_timeout, "connection");

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if (host != NULL && (rv = getaddrinfo(host, port, &hints, &ai)) == 0) {
		rv = bufferevent_socket_connect(c->bev, ai->ai_addr,
		    (int)ai->ai_addrlen);
		freeaddrinfo(ai);
		if (rv != 0)
			sc_defer(c, SMTP_CLIENT_NETWORK, "connect: %s",
			    strerror(errno));
	} else if (dns == NULL || host == NULL)
		sc_defer(c, SMTP_CLIENT_NETWORK, "cannot resolve %s: no "
		    "resolver", host ? host : "(null)");
	else if (bufferevent_socket_connect_hostname(c->bev, dns, AF_UNSPEC,
	    host, (int)portnum) != 0)
		sc_defer(c, SMTP_CLIENT_NETWORK, "cannot resolve %s", host);
	log_debug("event=smtp_client_connect port=%lu", portnum);
done:
	c->in_connect = false;
	return c;
}

int
smtp_client_send(struct smtp_client *c, const struct spool_message *msg,
    smtp_client_cb done, void *arg)
{
	size_t	 i, n = msg->env.nrcpts;

	if (c->dead || c->cb != NULL ||
	    (c->state != SC_IDLE && c->state != SC_BROKEN))
		return -1;
	if ((c->res.rcpt = calloc(n ? n : 1, sizeof(*c->res.rcpt))) == NULL)
		return -1;
	c->res.nrcpts = n;
	c->cb = done;
	c->cbarg = arg;
	c->msg = msg;
	if (c->state == SC_BROKEN) {
		sc_defer(c, SMTP_CLIENT_NETWORK, "%s", c->broken);
		return 0;
	}
	if (n == 0) {
		sc_defer(c, SMTP_CLIENT_PROTOCOL, "local: no recipients");
		return 0;
	}
	if (!sc_addr_ok(msg->env.sender)) {
		sc_defer(c, SMTP_CLIENT_PROTOCOL, "local: bad sender address");
		return 0;
	}
	for (i = 0; i < n; i++) {
		if (msg->env.rcpts[i][0] == '\0' ||
		    !sc_addr_ok(msg->env.rcpts[i])) {
			sc_defer(c, SMTP_CLIENT_PROTOCOL,
			    "local: bad recipient address");
			return 0;
		}
	}
	c->ncmds = n + 2;
	c->next_send = c->next_reply = 0;
	c->accepted = 0;
	c->mail_failed = c->known = false;
	c->state = SC_TXN;
	/*
	 * Writing only queues: errors surface from the event callback, so
	 * sc_fail cannot run the callback from inside this call.
	 */
	c->in_connect = true;
	sc_send_pending(c);
	c->in_connect = false;
	if (c->state == SC_TXN && c->bev != NULL)
		sc_timer_arm(c, c->reply_timeout, "reply to MAIL");
	return 0;
}

bool
smtp_client_has_pipelining(const struct smtp_client *c)
{
	return c->pipelining;
}

uint64_t
smtp_client_max_size(const struct smtp_client *c)
{
	return c->size ? c->max_size : 0;
}

void
smtp_client_quit(struct smtp_client *c)
{
	if (c == NULL || c->dead)
		return;
	c->cb = NULL;
	c->cbarg = NULL;
	if (c->state == SC_IDLE && c->bev != NULL &&
	    sc_write(c, "QUIT\r\n") == 0) {
		c->state = SC_QUIT;
		evtimer_del(c->defer);
		sc_timer_arm(c, c->reply_timeout < SC_QUIT_TIMEOUT ?
		    c->reply_timeout : SC_QUIT_TIMEOUT, "reply to QUIT");
		return;
	}
	smtp_client_free(c);
}

void
smtp_client_free(struct smtp_client *c)
{
	if (c == NULL || c->dead)
		return;
	c->cb = NULL;
	c->cbarg = NULL;
	c->dead = true;
	if (c->busy == 0) {
		sc_destroy(c);
		return;
	}
	sc_close(c);
	evtimer_del(c->defer);
}
