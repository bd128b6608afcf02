/*
 * smtp_session.c: the inbound SMTP session and its protocol guard.
 *
 * A session is a state (enum smtp_state), a transaction (struct txn) that
 * RSET, HELO/EHLO and the end of DATA reset, and bounded buffers.  Input is
 * read by one function (session_process) that takes one command line at a
 * time, never buffering more than SMTP_LINE_MAX for a command, and feeds
 * DATA through the pure smtp_data reader.  Commands are dispatched through
 * one table (lookup, state check and the generic 503 happen once).
 *
 * Every reply goes through session_reply(): it writes the line, and when
 * it carries a reason code it logs the refusal and counts it.  Every check
 * that trips goes through session_apply(), which turns the configured
 * action into a verdict (policy.c) and applies it the same way for every
 * check, observe mode included.
 *
 * Lifetime: session_close() marks the session closing, stops reading, and
 * frees it from a zero-delay event (or once its last reply is flushed).
 * Asynchronous work (the group commit of a message) keeps a struct commit
 * that outlives the session: when the session is gone the commit still
 * enqueues the durable message and simply has nobody to answer.
 *
 * PIPELINING (RFC 2920): commands are processed in order; while one waits
 * (commit, tarpit) processing pauses and resumes from the buffered input.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "delivery.h"
#include "guard.h"
#include "limiter.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "reason.h"
#include "smtp_data.h"
#include "smtp_parse.h"
#include "smtp_session.h"
#include "spool.h"
#include "spool_sync.h"
#include "util.h"

#define SESSION_READ_HIGH	(64 * 1024)	/* input buffered at most */
#define SESSION_WRITE_HIGH	(64 * 1024)	/* replies buffered, then wait */
#define SESSION_DATA_CHUNK	(16 * 1024)
#define SESSION_MAX_DOMAINS	8		/* distinct domains per txn */
#define SESSION_SKIP_MAX	(64 * 1024)	/* overlong line discard cap */
#define SESSION_FLUSH_WAIT	5		/* s to flush a last reply */

enum smtp_state {
	SMTP_STATE_GREETING,	/* banner not complete (greet pause) */
	SMTP_STATE_HELO,	/* waiting for EHLO/HELO */
	SMTP_STATE_MAIL,	/* waiting for MAIL */
	SMTP_STATE_RCPT,	/* in a transaction */
	SMTP_STATE_DATA,	/* reading the message */
	SMTP_STATE_COMMIT	/* message being made durable */
};

#define ST(x)	(1u << SMTP_STATE_##x)

struct rcpt_group {
	char			 domain[256];
	char			(*rcpts)[SPOOL_ADDR_MAX];
	size_t			 nrcpts;
	struct spool_writer	*writer;
	char			 qid[QID_LEN + 1];
};

struct txn {
	char			 sender[SPOOL_ADDR_MAX];
	bool			 null_sender;
	uint64_t		 size_declared;
	enum smtp_body		 body;
	struct rcpt_group	 groups[SESSION_MAX_DOMAINS];
	size_t			 ngroups;
	size_t			 nrcpts;
	struct smtp_data	 data;
	uint64_t		 body_bytes;
	bool			 oversize;
	bool			 write_failed;
	time_t			 data_start;
	unsigned		 pending;	/* commits in flight */
	int			 commit_error;
	char			 qids[SESSION_MAX_DOMAINS * (QID_LEN + 1)];
};

struct commit;

struct session {
	TAILQ_ENTRY(session)	 entry;
	uint64_t		 id;
	char			 sid[17];
	char			 ip[INET6_ADDRSTRLEN];
	struct bufferevent	*bev;
	enum smtp_state		 state;
	bool			 esmtp;		/* EHLO, PIPELINING offered */
	bool			 closing;
	bool			 flushing;	/* closing once output drains */
	bool			 paused;	/* waiting: do not read on */
	bool			 tripped;	/* a guard check tripped */
	bool			 early;		/* pregreet already counted */
	bool			 skip_line;	/* discarding an overlong line */
	bool			 backlog;	/* replies unread: not reading */
	size_t			 skipped;
	char			 helo[256];
	unsigned		 errors;
	unsigned		 junk;
	unsigned		 messages;
	uint64_t		 tarpit;	/* ms to delay the next reply */
	time_t			 started;
	time_t			 line_deadline;	/* command line complete by */
	struct limiter_client	 limits;
	struct txn		 txn;
	struct evbuffer		*held;		/* reply waiting for tarpit */
	struct event		*ev_timer;	/* greet pause, tarpit */
	struct event		*ev_life;	/* session duration */
	struct event		*ev_free;	/* deferred free / resume */
	struct commit		*commits[SESSION_MAX_DOMAINS];
};

/* Outlives the session: a durable message must be enqueued regardless. */
struct commit {
	struct session		*session;	/* NULL once it is gone */
	size_t			 group;
	struct spool_envelope	 env;
};

static TAILQ_HEAD(, session)	 sessions = TAILQ_HEAD_INITIALIZER(sessions);
static struct smtp_server	*srv;
static uint64_t			 next_session_id;
static bool			 overload;

static void	session_process(struct session *);
static void	session_close(struct session *, bool flush);
static void	session_reply(struct session *, enum reason, const char *,
		    ...) __attribute__((format(printf, 3, 4)));
static void	txn_reset(struct session *);
static void	session_arm_timeouts(struct session *);

/* The command table: one row per verb, read by session_command(). */
#define CMD_JUNK	0x01	/* counts toward the junk limit */
#define CMD_GROUP_END	0x02	/* must be last in a pipelined group */

struct command_def {
	unsigned	states;
	unsigned	flags;
	void		(*fn)(struct session *, struct smtp_command *);
};

static void	cmd_helo(struct session *, struct smtp_command *);
static void	cmd_mail(struct session *, struct smtp_command *);
static void	cmd_rcpt(struct session *, struct smtp_command *);
static void	cmd_data(struct session *, struct smtp_command *);
static void	cmd_rset(struct session *, struct smtp_command *);
static void	cmd_noop(struct session *, struct smtp_command *);
static void	cmd_quit(struct session *, struct smtp_command *);
static void	cmd_vrfy(struct session *, struct smtp_command *);
static void	cmd_help(struct session *, struct smtp_command *);
static void	cmd_not_impl(struct session *, struct smtp_command *);

#define ST_ANY	(ST(HELO) | ST(MAIL) | ST(RCPT))

static const struct command_def commands[SMTP_CMD_MAX] = {
	[SMTP_CMD_HELO] = { ST_ANY, CMD_GROUP_END, cmd_helo },
	[SMTP_CMD_EHLO] = { ST_ANY, CMD_GROUP_END, cmd_helo },
	[SMTP_CMD_MAIL] = { ST(MAIL), 0, cmd_mail },
	[SMTP_CMD_RCPT] = { ST(RCPT), 0, cmd_rcpt },
	[SMTP_CMD_DATA] = { ST(RCPT), CMD_GROUP_END, cmd_data },
	[SMTP_CMD_RSET] = { ST_ANY, CMD_JUNK, cmd_rset },
	[SMTP_CMD_NOOP] = { ST_ANY, CMD_JUNK | CMD_GROUP_END, cmd_noop },
	[SMTP_CMD_QUIT] = { ST_ANY, 0, cmd_quit },
	[SMTP_CMD_VRFY] = { ST_ANY, CMD_JUNK | CMD_GROUP_END, cmd_vrfy },
	[SMTP_CMD_EXPN] = { ST_ANY, CMD_JUNK | CMD_GROUP_END, cmd_not_impl },
	[SMTP_CMD_HELP] = { ST_ANY, CMD_JUNK, cmd_help },
	[SMTP_CMD_STARTTLS] = { ST_ANY, CMD_GROUP_END, cmd_not_impl },
	[SMTP_CMD_AUTH] = { ST_ANY, 0, cmd_not_impl },
	[SMTP_CMD_BDAT] = { ST_ANY, 0, cmd_not_impl },
};

void
smtp_session_init(struct smtp_server *server)
{
	srv = server;
}

unsigned
smtp_session_count(void)
{
	return (unsigned)metrics.sessions_active;
}

bool
smtp_session_waiting(void)
{
	struct session *s;

	TAILQ_FOREACH(s, &sessions, entry)
		if (s->paused && !s->closing)
			return true;
	return false;
}

static const struct config *
cfg(void)
{
	return srv->cfg;
}

/*
 * Overload mode (Postfix's stress mode): past overload_sessions, idle and
 * slow clients are what starves the rest, so timeouts shrink to a quarter
 * and the hard error limit halves; back to normal below 80%.
 */
static void
overload_update(void)
{
	const struct config	*c = cfg();
	uint64_t		 n = metrics.sessions_active;

	if (c->overload_sessions == 0)
		return;
	if (!overload && n >= c->overload_sessions) {
		overload = true;
		log_warnx("event=overload state=on sessions=%llu",
		    (unsigned long long)n);
	} else if (overload && n * 10 < (uint64_t)c->overload_sessions * 8) {
		overload = false;
		log_warnx("event=overload state=off sessions=%llu",
		    (unsigned long long)n);
	}
}

bool
smtp_session_overload(void)
{
	return overload;
}

static uint64_t
tighten(uint64_t ms)
{
	if (!overload || ms == 0)
		return ms;
	return ms / 4 > 5000 ? ms / 4 : (ms < 5000 ? ms : 5000);
}

/*
 * Replies.  fmt starts with the code and the enhanced code ("550 5.7.1
 * ...").  When a tarpit delay is pending the reply is held back and sent
 * by a timer; input processing pauses meanwhile (a timer, not a sleep:
 * thousands of tarpitted sessions cost only memory).
 */
static void
session_reply(struct session *s, enum reason reason, const char *fmt, ...)
{
	char		 line[1024], esc[LOG_ESCAPE_MAX + 1];
	va_list		 ap;
	int		 n;
	struct evbuffer	*out;

	if (s->closing)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof line - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = snprintf(line, sizeof line, "451 4.3.0 Internal error");
	if ((size_t)n >= sizeof line - 2)
		n = sizeof line - 3;
	if (reason != REASON_NONE) {
		metrics.refused[reason]++;
		if (log_enabled(LOG_LEVEL_INFO))
			log_info("session=%s ip=%s event=refuse reason=%s "
			    "reply=\"%s\"", s->sid, s->ip, reason_name(reason),
			    log_escape(esc, sizeof esc, line, (size_t)n));
	} else if (log_enabled(LOG_LEVEL_DEBUG))
		log_debug("session=%s ip=%s event=reply reply=\"%s\"",
		    s->sid, s->ip, log_escape(esc, sizeof esc, line,
		    (size_t)n));
	line[n++] = '\r';
	line[n++] = '\n';
	if (s->tarpit > 0 || evbuffer_get_length(s->held) > 0) {
		out = s->held;
		if (s->tarpit > 0) {
			struct timeval tv = {
				(time_t)(s->tarpit / 1000),
				(suseconds_t)(s->tarpit % 1000) * 1000
			};

			s->tarpit = 0;
			s->paused = true;
			evtimer_add(s->ev_timer, &tv);
		}
	} else
		out = bufferevent_get_output(s->bev);
	if (evbuffer_add(out, line, n) == -1)
		session_close(s, false);
}

/* Multi-line reply pieces (EHLO), never tarpitted mid-way. */
static void
session_reply_raw(struct session *s, const char *text)
{
	struct evbuffer *out = evbuffer_get_length(s->held) > 0 ?
	    s->held : bufferevent_get_output(s->bev);

	if (!s->closing && evbuffer_add(out, text, strlen(text)) == -1)
		session_close(s, false);
}

/*
 * Applies the verdict of a tripped check.  Returns true when the command
 * goes on as if the check passed (observe mode, tarpit), false when a
 * reply was sent instead (the caller stops).
 */
static bool
session_apply(struct session *s, struct verdict v, const char *text)
{
	const struct config *c = cfg();

	switch (v.kind) {
	case VERDICT_PASS:
		if (v.reason != REASON_NONE) {
			metrics.observed[v.reason]++;
			log_info("session=%s ip=%s event=observe reason=%s "
			    "would=%s", s->sid, s->ip, reason_name(v.reason),
			    text);
		}
		return true;
	case VERDICT_TARPIT:
		s->tripped = true;
		metrics.refused[v.reason]++;
		log_info("session=%s ip=%s event=tarpit reason=%s delay=%" PRIu64
		    "ms", s->sid, s->ip, reason_name(v.reason), v.delay);
		s->tarpit += v.delay;
		return true;
	case VERDICT_TEMPFAIL:
		s->tripped = true;
		session_reply(s, v.reason, "421 4.7.0 %s %s, closing",
		    c->hostname, text);
		session_close(s, true);
		return false;
	case VERDICT_REJECT:
		s->tripped = true;
		session_reply(s, v.reason, "554 5.7.1 %s %s, closing",
		    c->hostname, text);
		session_close(s, true);
		return false;
	case VERDICT_DROP:
		s->tripped = true;
		metrics.refused[v.reason]++;
		log_info("session=%s ip=%s event=drop reason=%s", s->sid,
		    s->ip, reason_name(v.reason));
		session_close(s, false);
		return false;
	}
	return true;
}

static bool
session_trip(struct session *s, const struct config_check *check,
    enum reason reason, const char *text)
{
	return session_apply(s, policy_trip(check, reason, cfg()->error_delay),
	    text);
}

/*
 * Counts a client error (unknown command, syntax, refused recipient, bad
 * sequence).  Past errors_soft each reply is delayed; past errors_hard
 * the session ends.  Returns false when the session was closed.
 */
static bool
session_error(struct session *s)
{
	const struct config *c = cfg();

	s->errors++;
	if (!c->check_errors.enabled)
		return true;
	if (c->errors_hard > 0 && s->errors >= (overload ?
	    (c->errors_hard + 1) / 2 : c->errors_hard)) {
		struct verdict v = policy_trip(&c->check_errors,
		    REASON_PROTO_ERRORS, c->error_delay);

		if (v.kind == VERDICT_TARPIT)
			v.kind = VERDICT_TEMPFAIL;
		return session_apply(s, v, "Error: too many errors");
	}
	if (s->errors > c->errors_soft) {
		if (c->check_errors.action == CONFIG_ACTION_LOG) {
			metrics.observed[REASON_PROTO_ERRORS]++;
			return true;
		}
		s->tarpit += c->error_delay;
	}
	return true;
}

/*
 * An error reply plus its count.  Counted first, so that the reply to the
 * error past errors_soft is the one delayed, and the error that reaches
 * errors_hard is answered by that limit alone.
 */
#define session_fail(s, reason, ...) do {				\
	if (session_error(s))						\
		session_reply((s), (reason), __VA_ARGS__);		\
} while (0)

static void
txn_abort_writers(struct txn *t)
{
	for (size_t i = 0; i < t->ngroups; i++) {
		if (t->groups[i].writer != NULL) {
			spool_writer_abort(t->groups[i].writer);
			t->groups[i].writer = NULL;
		}
	}
}

static void
txn_reset(struct session *s)
{
	struct txn *t = &s->txn;

	txn_abort_writers(t);
	for (size_t i = 0; i < t->ngroups; i++)
		free(t->groups[i].rcpts);
	memset(t, 0, sizeof *t);
}

static void
session_free(struct session *s)
{
	for (size_t i = 0; i < SESSION_MAX_DOMAINS; i++)
		if (s->commits[i] != NULL)
			s->commits[i]->session = NULL;
	txn_reset(s);
	TAILQ_REMOVE(&sessions, s, entry);
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	if (s->held != NULL)
		evbuffer_free(s->held);
	if (s->ev_timer != NULL)
		event_free(s->ev_timer);
	if (s->ev_life != NULL)
		event_free(s->ev_life);
	if (s->ev_free != NULL)
		event_free(s->ev_free);
	limiter_disconnect(&s->limits);
	metrics.sessions_active--;
	overload_update();
	log_info("session=%s ip=%s event=disconnect messages=%u errors=%u "
	    "duration=%lds", s->sid, s->ip, s->messages, s->errors,
	    (long)(time(NULL) - s->started));
	free(s);
}

/* Zero-delay event: frees a closing session, or resumes a paused one. */
static void
session_deferred_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	(void)fd;
	(void)what;
	if (s->closing) {
		/* A resume queued before a flushing close must not free the
		 * session under its last reply: write_cb or the write
		 * timeout finishes the job. */
		if (s->flushing &&
		    evbuffer_get_length(bufferevent_get_output(s->bev)) > 0)
			return;
		session_free(s);
		return;
	}
	session_process(s);
}

static void
session_write_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	(void)bev;
	if (s->closing)
		event_active(s->ev_free, 0, 0);
	else if (s->backlog) {
		/* The client read its replies: read and process again. */
		s->backlog = false;
		bufferevent_enable(s->bev, EV_READ);
		session_arm_timeouts(s);
		if (!s->paused)
			event_active(s->ev_free, 0, 0);
	}
}

static void
session_close(struct session *s, bool flush)
{
	struct timeval tv = { SESSION_FLUSH_WAIT, 0 };

	if (s->closing)
		return;
	s->closing = true;
	bufferevent_disable(s->bev, EV_READ);
	evtimer_del(s->ev_timer);
	/* A reply held by the tarpit goes out now: its timer is gone. */
	if (flush && evbuffer_get_length(s->held) > 0 &&
	    evbuffer_add_buffer(bufferevent_get_output(s->bev), s->held) == -1)
		flush = false;
	if (flush &&
	    evbuffer_get_length(bufferevent_get_output(s->bev)) > 0) {
		/* write_cb fires when the output drained; the timeout
		 * bounds a client that never reads. */
		bufferevent_set_timeouts(s->bev, NULL, &tv);
		bufferevent_enable(s->bev, EV_WRITE);
		s->flushing = true;
		return;
	}
	event_active(s->ev_free, 0, 0);
}

static void
session_resume(struct session *s)
{
	/* A reply held by a tarpit resumes the session when it is sent. */
	if (evbuffer_get_length(s->held) > 0)
		return;
	s->paused = false;
	if (!s->closing) {
		/* A fresh wait for the next command after a pause. */
		session_arm_timeouts(s);
		event_active(s->ev_free, 0, 0);
	}
}

static void
session_banner(struct session *s)
{
	char line[512];

	snprintf(line, sizeof line, "220 %s ESMTP moat\r\n", cfg()->hostname);
	session_reply_raw(s, line);
	s->state = SMTP_STATE_HELO;
}

/* Greet pause over, or a tarpit delay over. */
static void
session_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session		*s = arg;
	struct bufferevent	*bev = s->bev;

	(void)fd;
	(void)what;
	if (s->closing)
		return;
	if (s->state == SMTP_STATE_GREETING) {
		if (evbuffer_get_length(bufferevent_get_input(bev)) > 0 &&
		    !s->early && !session_trip(s, &cfg()->check_pregreet,
		    REASON_PROTO_PREGREET, "Error: talked before greeting"))
			return;
		session_banner(s);
		session_resume(s);
		return;
	}
	/* Tarpit over: release the held reply and read on, unless the
	 * session still waits for its queue commit. */
	if (evbuffer_add_buffer(bufferevent_get_output(bev), s->held) == -1) {
		session_close(s, false);
		return;
	}
	if (s->state != SMTP_STATE_COMMIT)
		session_resume(s);
}

static void
session_life_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	(void)fd;
	(void)what;
	session_reply(s, REASON_PROTO_SESSION_TIME,
	    "421 4.4.2 %s Error: session too long, closing", cfg()->hostname);
	session_close(s, true);
}

static void
session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;

	(void)bev;
	if (what & BEV_EVENT_TIMEOUT) {
		if (s->closing) {
			s->flushing = false;	/* it never read: give up */
			event_active(s->ev_free, 0, 0);
			return;
		}
		session_reply(s, REASON_PROTO_TIMEOUT,
		    "421 4.4.2 %s Error: timeout exceeded, closing",
		    cfg()->hostname);
		session_close(s, true);
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (!s->closing && s->state == SMTP_STATE_DATA)
			log_info("session=%s ip=%s event=lost state=data",
			    s->sid, s->ip);
		s->closing = true;
		s->flushing = false;
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		event_active(s->ev_free, 0, 0);
	}
}

static void
session_read_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	(void)bev;
	if (s->state == SMTP_STATE_GREETING) {
		/* Anything before the banner is complete: an early talker.
		 * What it said is processed once the banner is out. */
		if (!s->early) {
			s->early = true;
			(void)session_trip(s, &cfg()->check_pregreet,
			    REASON_PROTO_PREGREET,
			    "Error: talked before greeting");
		}
		return;
	}
	session_process(s);
}

static void
session_arm_timeouts(struct session *s)
{
	const struct config	*c = cfg();
	uint64_t		 ms;
	struct timeval		 tv;

	switch (s->state) {
	case SMTP_STATE_GREETING:
	case SMTP_STATE_HELO:
		ms = c->timeout_greeting;
		break;
	case SMTP_STATE_DATA:
		ms = c->timeout_data;
		break;
	default:
		ms = c->timeout_command;
		break;
	}
	ms = tighten(ms);
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	bufferevent_set_timeouts(s->bev, ms > 0 ? &tv : NULL, NULL);
	s->line_deadline = ms > 0 ? time(NULL) + (time_t)((ms + 999) / 1000) :
	    0;
}

void
smtp_session_accept(int fd, const struct sockaddr *sa, socklen_t salen,
    const struct limiter_client *lc)
{
	const struct config	*c = cfg();
	struct session		*s;
	struct timeval		 tv;
	char			 line[512];

	(void)salen;
	if ((s = calloc(1, sizeof *s)) == NULL) {
		log_warn("session: calloc");
		close(fd);
		return;
	}
	s->id = ++next_session_id;
	snprintf(s->sid, sizeof s->sid, "%016" PRIx64,
	    ((uint64_t)time(NULL) << 24) ^ s->id);
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr,
		    s->ip, sizeof s->ip);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6,
		    &((const struct sockaddr_in6 *)sa)->sin6_addr, s->ip,
		    sizeof s->ip);
	else
		snprintf(s->ip, sizeof s->ip, "unknown");
	s->started = time(NULL);
	s->limits = *lc;
	TAILQ_INSERT_TAIL(&sessions, s, entry);
	metrics.sessions_active++;
	metrics.sessions_total++;
	overload_update();

	s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	s->held = evbuffer_new();
	s->ev_timer = evtimer_new(srv->base, session_timer_cb, s);
	s->ev_life = evtimer_new(srv->base, session_life_cb, s);
	s->ev_free = event_new(srv->base, -1, 0, session_deferred_cb, s);
	if (s->bev == NULL || s->held == NULL || s->ev_timer == NULL ||
	    s->ev_life == NULL || s->ev_free == NULL) {
		log_warnx("session=%s event=error what=\"out of memory\"",
		    s->sid);
		if (s->bev == NULL)
			close(fd);
		s->closing = true;
		if (s->ev_free != NULL)
			event_active(s->ev_free, 0, 0);
		else
			session_free(s);
		return;
	}
	bufferevent_setcb(s->bev, session_read_cb, session_write_cb,
	    session_event_cb, s);
	/* Input is bounded: libevent stops reading at the high mark. */
	bufferevent_setwatermark(s->bev, EV_READ, 0, SESSION_READ_HIGH);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	log_info("session=%s ip=%s event=connect", s->sid, s->ip);

	if (c->timeout_session > 0) {
		tv.tv_sec = (time_t)(c->timeout_session / 1000);
		tv.tv_usec = (suseconds_t)(c->timeout_session % 1000) * 1000;
		evtimer_add(s->ev_life, &tv);
	}
	if (c->greet_pause > 0 && c->check_pregreet.enabled &&
	    !guard_pass_known(s->ip, time(NULL))) {
		/* First line of a multi-line banner, then wait: a client
		 * that speaks now did not wait for the greeting. */
		snprintf(line, sizeof line, "220-%s ESMTP moat\r\n",
		    c->hostname);
		session_reply_raw(s, line);
		s->state = SMTP_STATE_GREETING;
		tv.tv_sec = (time_t)(c->greet_pause / 1000);
		tv.tv_usec = (suseconds_t)(c->greet_pause % 1000) * 1000;
		evtimer_add(s->ev_timer, &tv);
		s->paused = true;
	} else
		session_banner(s);
	session_arm_timeouts(s);
}

/*
 * Reads what the buffer holds: command lines one at a time, or DATA.
 * Stops when the input is exhausted, or the session pauses or closes.
 */
static void	session_command(struct session *, char *, size_t, bool);
static bool	session_data_input(struct session *);

/*
 * A binary protocol (a TLS ClientHello, SOCKS) sends no line end and waits
 * for an answer: a partial line that starts with a control or 8-bit byte
 * and that the parser already knows as another protocol is judged as a
 * line now, instead of holding the connection until the timeout.
 */
static bool
session_binary_hello(struct evbuffer *in, size_t len)
{
	char			 line[SMTP_LINE_MAX];
	struct smtp_command	 cmd;
	unsigned char		 c;

	if (len == 0 || len > sizeof line ||
	    evbuffer_copyout(in, line, len) != (ev_ssize_t)len)
		return false;
	c = (unsigned char)line[0];
	if (c >= 0x20 && c < 0x7f)
		return false;
	return smtp_parse_command(line, len, &cmd) == SMTP_PARSE_NON_SMTP;
}

/*
 * A client that sends commands and never reads the replies would make
 * the output grow without bound (a short command can earn a long reply):
 * stop reading until it has read them (session_write_cb), and give it the
 * command timeout to do so.
 */
static void
session_backlog(struct session *s)
{
	uint64_t	ms = tighten(cfg()->timeout_command);
	struct timeval	tv;

	s->backlog = true;
	bufferevent_disable(s->bev, EV_READ);
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	bufferevent_set_timeouts(s->bev, NULL, ms > 0 ? &tv : NULL);
}

static void
session_process(struct session *s)
{
	struct evbuffer		*in = bufferevent_get_input(s->bev);
	struct evbuffer_ptr	 p;
	size_t			 eol_len, len;
	char			 line[SMTP_LINE_MAX + 1];
	bool			 crlf;

	while (!s->paused && !s->closing) {
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) >
		    SESSION_WRITE_HIGH) {
			session_backlog(s);
			break;
		}
		if (s->state == SMTP_STATE_DATA) {
			if (!session_data_input(s))
				break;
			continue;
		}
		if (evbuffer_get_length(in) == 0)
			break;
		p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
		if (s->skip_line) {
			/* Discarding the rest of an overlong line, with a
			 * cap so that an endless line ends the session. */
			len = p.pos < 0 ? evbuffer_get_length(in) :
			    (size_t)p.pos + eol_len;
			s->skipped += len;
			evbuffer_drain(in, len);
			if (s->skipped > SESSION_SKIP_MAX) {
				session_reply(s, REASON_PROTO_LINE_TOO_LONG,
				    "421 4.7.0 %s Error: line too long, "
				    "closing", cfg()->hostname);
				session_close(s, true);
				break;
			}
			if (p.pos < 0)
				break;
			s->skip_line = false;
			/* The check already counted it (observe, tarpit). */
			if (session_error(s))
				session_reply(s, REASON_PROTO_SYNTAX,
				    "500 5.5.2 Error: line too long");
			continue;
		}
		if (p.pos < 0) {
			/* Slowloris: each byte resets the read timeout, so
			 * a line dribbled a byte at a time must still be
			 * complete within the command timeout. */
			if (s->line_deadline != 0 &&
			    time(NULL) >= s->line_deadline) {
				session_reply(s, REASON_PROTO_TIMEOUT,
				    "421 4.4.2 %s Error: timeout exceeded, "
				    "closing", cfg()->hostname);
				session_close(s, true);
				break;
			}
			len = evbuffer_get_length(in);
			if (len < SMTP_LINE_MAX && session_binary_hello(in, len))
				eol_len = 0;	/* judge it now */
			else if (len < SMTP_LINE_MAX)
				break;		/* wait for the rest */
			else
				len = SMTP_LINE_MAX + 1;
		} else
			len = (size_t)p.pos + eol_len;
		if (len > SMTP_LINE_MAX) {
			/* Never buffer more than a command line. */
			if (!session_trip(s, &cfg()->check_line_too_long,
			    REASON_PROTO_LINE_TOO_LONG,
			    "Error: line too long"))
				break;
			s->skip_line = true;
			s->skipped = 0;
			continue;
		}
		if (evbuffer_remove(in, line, len) != (int)len) {
			session_close(s, false);
			break;
		}
		len -= eol_len;
		crlf = len > 0 && line[len - 1] == '\r';
		if (crlf)
			len--;
		line[len] = '\0';
		/* A bare LF line end or a bare CR inside: a line end that
		 * another hop may read differently (guard.bare_lf). */
		if (eol_len > 0 && (!crlf || memchr(line, '\r', len) != NULL) &&
		    !cfg()->bare_lf_normalise &&
		    !session_trip(s, &cfg()->check_bare_lf,
		    REASON_PROTO_BARE_LF, "Error: bare CR or LF in command"))
			break;
		session_command(s, line, len, evbuffer_get_length(in) > 0);
		if (!s->closing)
			session_arm_timeouts(s);
	}
	/* libevent stops reading at the watermark; re-enable after drain. */
}

static void
session_command(struct session *s, char *line, size_t len, bool more)
{
	const struct config		*c = cfg();
	const struct command_def	*def;
	struct smtp_command		 cmd;
	enum smtp_parse_status		 st;
	char				 esc[LOG_ESCAPE_MAX + 1];

	st = smtp_parse_command(line, len, &cmd);
	if (log_enabled(LOG_LEVEL_DEBUG))
		log_debug("session=%s ip=%s event=command line=\"%s\"",
		    s->sid, s->ip, log_escape(esc, sizeof esc, line, len));
	switch (st) {
	case SMTP_PARSE_OK:
		break;
	case SMTP_PARSE_NON_SMTP:
		if (!session_trip(s, &c->check_non_smtp, REASON_PROTO_NON_SMTP,
		    "Error: not an SMTP client"))
			return;
		/* Observed or tarpitted (counted there): a plain 500. */
		session_fail(s, REASON_PROTO_UNKNOWN_CMD,
		    "500 5.5.2 Error: command not recognized");
		return;
	case SMTP_PARSE_EMPTY:
	case SMTP_PARSE_UNKNOWN:
		session_fail(s, REASON_PROTO_UNKNOWN_CMD,
		    "500 5.5.2 Error: command not recognized");
		return;
	case SMTP_PARSE_NUL:
		session_fail(s, REASON_PROTO_NUL,
		    "500 5.5.2 Error: NUL byte in command");
		return;
	case SMTP_PARSE_8BIT:
		session_fail(s, REASON_PROTO_8BIT,
		    "500 5.5.2 Error: 8-bit data in command");
		return;
	case SMTP_PARSE_TOO_LONG:
		session_fail(s, REASON_PROTO_LINE_TOO_LONG,
		    "500 5.5.2 Error: line too long");
		return;
	case SMTP_PARSE_BAD_PARAM:
		session_fail(s, REASON_PROTO_SYNTAX, "555 5.5.4 Error: %s",
		    cmd.why != NULL ? cmd.why : "unsupported parameter");
		return;
	case SMTP_PARSE_PATH_TOO_LONG:
	case SMTP_PARSE_BAD_PATH:
	case SMTP_PARSE_SOURCE_ROUTE:
		session_fail(s, REASON_PROTO_BAD_ADDRESS,
		    "501 5.1.3 Error: %s", cmd.why != NULL ? cmd.why :
		    "bad address syntax");
		return;
	default:
		session_fail(s, REASON_PROTO_SYNTAX, "501 5.5.4 Error: %s",
		    cmd.why != NULL ? cmd.why : "syntax error");
		return;
	}

	def = (unsigned)cmd.cmd < SMTP_CMD_MAX ? &commands[cmd.cmd] : NULL;
	if (def == NULL || def->fn == NULL) {
		session_fail(s, REASON_PROTO_UNKNOWN_CMD,
		    "500 5.5.2 Error: command not recognized");
		return;
	}
	/*
	 * RFC 2920: without PIPELINING offered (HELO, or before the EHLO
	 * reply) a client must wait for each reply, and some commands end a
	 * group in any case.  More input already waiting means the client
	 * did not wait: bots that blast a canned dialogue.
	 */
	if (more && (!s->esmtp || (def->flags & CMD_GROUP_END)) &&
	    cmd.cmd != SMTP_CMD_QUIT &&
	    !session_trip(s, &c->check_pipelining, REASON_PROTO_PIPELINING,
	    "Error: improper command pipelining"))
		return;
	if (def->flags & CMD_JUNK) {
		s->junk++;
		if (c->junk_max > 0 && s->junk > c->junk_max) {
			struct verdict v = policy_trip(&c->check_junk,
			    REASON_PROTO_JUNK, c->error_delay);

			if (!session_apply(s, v, "Error: too many commands "
			    "without mail"))
				return;
		}
	}
	if (!(def->states & (1u << s->state))) {
		const char *what = s->state == SMTP_STATE_HELO ?
		    "send HELO/EHLO first" : s->state == SMTP_STATE_MAIL ?
		    "need MAIL command" : "nested MAIL command";

		if (cmd.cmd == SMTP_CMD_DATA && s->state == SMTP_STATE_MAIL)
			what = "need RCPT command";
		session_fail(s, REASON_PROTO_SEQUENCE,
		    "503 5.5.1 Error: %s", what);
		return;
	}
	def->fn(s, &cmd);
}

static void
cmd_helo(struct session *s, struct smtp_command *cmd)
{
	const struct config	*c = cfg();

	if (!smtp_parse_helo_valid(cmd->arg) &&
	    !session_trip(s, &c->check_helo, REASON_PROTO_BAD_HELO,
	    "Error: invalid HELO/EHLO argument"))
		return;
	txn_reset(s);
	(void)util_strlcpy(s->helo, cmd->arg, sizeof s->helo);
	/*
	 * guard.helo may only observe, so the name can be anything the
	 * parser lets through; it is written into the Received header.  A
	 * control byte there (a bare CR when bare_lf_normalise skips the
	 * command check) would forge a header line on the inner hop.
	 */
	for (char *p = s->helo; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	s->state = SMTP_STATE_MAIL;
	if (cmd->cmd == SMTP_CMD_HELO) {
		s->esmtp = false;
		session_reply(s, REASON_NONE, "250 %s", c->hostname);
		return;
	}
	s->esmtp = true;
	session_reply(s, REASON_NONE, "250-%s\r\n250-PIPELINING\r\n"
	    "250-SIZE %" PRIu64 "\r\n250-8BITMIME\r\n"
	    "250 ENHANCEDSTATUSCODES", c->hostname, c->message_size_max);
}

static void
cmd_mail(struct session *s, struct smtp_command *cmd)
{
	const struct config	*c = cfg();
	enum reason		 why;

	if (cmd->has_size && c->message_size_max > 0 &&
	    cmd->size > c->message_size_max) {
		session_fail(s, REASON_SIZE_EXCEEDED,
		    "552 5.3.4 Error: message size exceeds fixed limit");
		return;
	}
	if (!limiter_message(c, &s->limits, time(NULL), &why)) {
		session_fail(s, why, "451 4.7.1 Error: too many messages "
		    "from your address, slow down");
		return;
	}
	if (!delivery_accepting(srv->delivery, cmd->has_size ? cmd->size : 0,
	    &why)) {
		session_reply(s, why, why == REASON_QUEUE_DISK ?
		    "452 4.3.1 Insufficient system storage, try again later" :
		    "452 4.3.1 Queue full, try again later");
		return;
	}
	txn_reset(s);
	s->txn.null_sender = cmd->path.null;
	snprintf(s->txn.sender, sizeof s->txn.sender, "%s", cmd->path.addr);
	s->txn.size_declared = cmd->has_size ? cmd->size : 0;
	s->txn.body = cmd->body;
	s->state = SMTP_STATE_RCPT;
	session_reply(s, REASON_NONE, "250 2.1.0 Ok");
}

static void
cmd_rcpt(struct session *s, struct smtp_command *cmd)
{
	const struct config		*c = cfg();
	const struct config_domain	*dom;
	struct txn			*t = &s->txn;
	struct rcpt_group		*g = NULL;
	char				 addr[SMTP_LOCAL_MAX + 2 +
					     CONFIG_HOST_MAX];
	void				*p;
	size_t				 i;
	enum reason			 why;

	if (cmd->path.domain[0] == '\0') {
		/* <postmaster> (RFC 5321 4.5.1): the first protected domain */
		if (c->ndomains == 0) {
			session_fail(s, REASON_RELAY_DENIED,
			    "550 5.7.1 <%s>: Relay access denied",
			    cmd->path.local);
			return;
		}
		dom = &c->domains[0];
		snprintf(addr, sizeof addr, "%s@%s", cmd->path.local,
		    dom->name);
	} else {
		dom = cmd->path.domain_literal ? NULL :
		    config_find_domain(c, cmd->path.domain);
		snprintf(addr, sizeof addr, "%s", cmd->path.addr);
	}
	if (dom == NULL || strlen(addr) >= SPOOL_ADDR_MAX) {
		session_fail(s, REASON_RELAY_DENIED,
		    "550 5.7.1 <%s>: Relay access denied", cmd->path.addr);
		return;
	}
	if (!limiter_rcpt(c, &s->limits, time(NULL), &why)) {
		session_fail(s, why, "451 4.7.1 Error: too many recipients "
		    "from your address, slow down");
		return;
	}
	if (t->nrcpts >= c->rcpt_max || t->nrcpts >= SPOOL_RCPT_MAX) {
		session_reply(s, REASON_PROTO_TOO_MANY_RCPTS,
		    "452 4.5.3 Error: too many recipients");
		return;
	}
	for (i = 0; i < t->ngroups; i++)
		if (strcmp(t->groups[i].domain, dom->name) == 0)
			g = &t->groups[i];
	if (g == NULL) {
		if (t->ngroups == SESSION_MAX_DOMAINS) {
			session_reply(s, REASON_PROTO_TOO_MANY_RCPTS,
			    "452 4.5.3 Error: too many domains, send the "
			    "rest later");
			return;
		}
		g = &t->groups[t->ngroups++];
		snprintf(g->domain, sizeof g->domain, "%s", dom->name);
	}
	p = reallocarray(g->rcpts, g->nrcpts + 1, sizeof *g->rcpts);
	if (p == NULL) {
		session_reply(s, REASON_NONE,
		    "452 4.3.0 Error: insufficient resources");
		return;
	}
	g->rcpts = p;
	(void)util_strlcpy(g->rcpts[g->nrcpts++], addr, SPOOL_ADDR_MAX);
	t->nrcpts++;
	session_reply(s, REASON_NONE, "250 2.1.5 Ok");
}

/* Writes the Received trace header (RFC 5321 4.4) into one queue file. */
static int
write_received(struct session *s, struct rcpt_group *g)
{
	const struct config	*c = cfg();
	char			 hdr[1024], date[64];
	time_t			 now = time(NULL);
	struct tm		 tm;
	int			 n;

	gmtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	n = snprintf(hdr, sizeof hdr,
	    "Received: from %s ([%s])\r\n"
	    "\tby %s (moat) with %s id %s\r\n"
	    "\t(session %s)%s%s%s;\r\n"
	    "\t%s\r\n",
	    s->helo, s->ip, c->hostname, s->esmtp ? "ESMTP" : "SMTP", g->qid,
	    s->sid, g->nrcpts == 1 ? "\r\n\tfor <" : "",
	    g->nrcpts == 1 ? g->rcpts[0] : "", g->nrcpts == 1 ? ">" : "",
	    date);
	if (n < 0 || (size_t)n >= sizeof hdr)
		return -1;
	return spool_writer_write(g->writer, hdr, (size_t)n);
}

static void
cmd_data(struct session *s, struct smtp_command *cmd)
{
	const struct config	*c = cfg();
	struct txn		*t = &s->txn;
	struct spool_envelope	 env;
	char			*cause = NULL;

	(void)cmd;
	if (t->nrcpts == 0) {
		/* RFC 2920: a pipelined DATA after refused recipients */
		session_fail(s, REASON_PROTO_SEQUENCE,
		    "554 5.5.1 Error: no valid recipients");
		return;
	}
	for (size_t i = 0; i < t->ngroups; i++) {
		struct rcpt_group *g = &t->groups[i];

		memset(&env, 0, sizeof env);
		snprintf(env.sender, sizeof env.sender, "%s", t->sender);
		snprintf(env.domain, sizeof env.domain, "%s", g->domain);
		snprintf(env.helo, sizeof env.helo, "%s", s->helo);
		snprintf(env.client_ip, sizeof env.client_ip, "%s", s->ip);
		snprintf(env.session_id, sizeof env.session_id, "%s", s->sid);
		env.created = time(NULL);
		env.flags = t->body == SMTP_BODY_8BITMIME ?
		    SPOOL_F_8BITMIME : 0;
		env.rcpts = g->rcpts;
		env.nrcpts = g->nrcpts;
		g->writer = spool_writer_new(srv->spool, &env, &cause);
		if (g->writer == NULL) {
			log_warnx("session=%s event=spool_error what=\"%s\"",
			    s->sid, cause != NULL ? cause : "?");
			free(cause);
			txn_reset(s);
			s->state = SMTP_STATE_MAIL;
			session_reply(s, REASON_QUEUE_IO,
			    "451 4.3.0 Error: queue file write error");
			return;
		}
		snprintf(g->qid, sizeof g->qid, "%s",
		    spool_writer_qid(g->writer));
		if (write_received(s, g) == -1)
			t->write_failed = true;
	}
	smtp_data_init(&t->data, c->line_max, c->bare_lf_normalise);
	t->data_start = time(NULL);
	s->state = SMTP_STATE_DATA;
	session_reply(s, REASON_NONE,
	    "354 End data with <CR><LF>.<CR><LF>");
}

static void	session_data_end(struct session *);

/*
 * Feeds buffered input to the DATA reader.  Returns true if it should be
 * called again (the message ended and commands may follow), false when
 * the input is exhausted.
 */
static bool
session_data_input(struct session *s)
{
	const struct config	*c = cfg();
	struct txn		*t = &s->txn;
	struct evbuffer		*in = bufferevent_get_input(s->bev);
	struct evbuffer_iovec	 v;
	uint8_t			 out[SMTP_DATA_OUT_MAX(SESSION_DATA_CHUNK)];
	size_t			 consumed, outlen, n;
	enum smtp_data_status	 st;
	time_t			 elapsed;

	while (evbuffer_peek(in, -1, NULL, &v, 1) > 0) {
		n = v.iov_len < SESSION_DATA_CHUNK ? v.iov_len :
		    SESSION_DATA_CHUNK;
		st = smtp_data_feed(&t->data, v.iov_base, n, &consumed, out,
		    &outlen);
		evbuffer_drain(in, consumed);
		if (!t->oversize && c->message_size_max > 0 &&
		    t->body_bytes + outlen > c->message_size_max) {
			/* Keep reading to the end, store nothing more. */
			t->oversize = true;
			txn_abort_writers(t);
		}
		t->body_bytes += outlen;
		if (!t->oversize && !t->write_failed) {
			for (size_t i = 0; i < t->ngroups; i++)
				if (spool_writer_write(t->groups[i].writer,
				    out, outlen) == -1)
					t->write_failed = true;
		}
		if (st == SMTP_DATA_DONE) {
			session_data_end(s);
			return !s->paused && !s->closing;
		}
	}
	/* A client that trickles its message to hold a slot. */
	elapsed = time(NULL) - t->data_start;
	if (c->data_min_rate > 0 && elapsed > 0 &&
	    (uint64_t)elapsed * 1000 >= c->data_rate_grace &&
	    t->data.in_bytes / (uint64_t)elapsed < c->data_min_rate) {
		session_reply(s, REASON_PROTO_SLOW_DATA,
		    "421 4.4.2 %s Error: data rate too low, closing",
		    c->hostname);
		session_close(s, true);
	}
	return false;
}

static void	commit_cb(uint64_t cookie, int error, const char *qid);

static void
session_data_end(struct session *s)
{
	const struct config	*c = cfg();
	struct txn		*t = &s->txn;
	struct verdict		 v;

	s->state = SMTP_STATE_MAIL;
	if (t->oversize) {
		txn_reset(s);
		session_fail(s, REASON_SIZE_EXCEEDED,
		    "552 5.3.4 Error: message size exceeds fixed limit");
		return;
	}
	if ((t->data.flags & (SMTP_DATA_F_BARE_LF | SMTP_DATA_F_BARE_CR)) &&
	    !c->bare_lf_normalise) {
		/*
		 * SMTP smuggling: a lone LF or CR can end the message for a
		 * server behind that is lenient about line ends, and start a
		 * second, forged one.  The reader already made the content
		 * canonical; refuse it unless configured to normalise.
		 */
		v = policy_trip(&c->check_bare_lf, REASON_PROTO_BARE_LF,
		    c->error_delay);
		if (v.kind >= VERDICT_TEMPFAIL) {
			txn_reset(s);
			if (v.kind == VERDICT_DROP) {
				session_apply(s, v, "bare LF");
				return;
			}
			session_fail(s, REASON_PROTO_BARE_LF, v.kind ==
			    VERDICT_REJECT ? "550 5.5.2 Error: message "
			    "contains bare CR or LF (RFC 5321 2.3.8)" :
			    "451 4.5.2 Error: message contains bare CR or LF");
			return;
		}
		(void)session_apply(s, v, "Error: bare CR or LF");
	}
	if (t->data.flags & SMTP_DATA_F_LONG_LINE) {
		/* Over RFC 5322's 998, yet common in real mail: relayed
		 * unchanged, counted so that an administrator can see it. */
		metrics.observed[REASON_PROTO_LINE_TOO_LONG]++;
		log_info("session=%s ip=%s event=observe "
		    "reason=proto.line_too_long what=\"text line over "
		    "smtp.line_max\"", s->sid, s->ip);
	}
	if (t->write_failed) {
		txn_reset(s);
		session_reply(s, REASON_QUEUE_IO,
		    "451 4.3.0 Error: queue file write error");
		return;
	}
	s->state = SMTP_STATE_COMMIT;
	s->paused = true;
	for (size_t i = 0; i < t->ngroups; i++) {
		struct rcpt_group	*g = &t->groups[i];
		struct commit		*cm;

		if (spool_writer_finish(g->writer) == -1 ||
		    (cm = calloc(1, sizeof *cm)) == NULL) {
			spool_writer_abort(g->writer);
			g->writer = NULL;
			t->commit_error = EIO;
			continue;
		}
		cm->session = s;
		cm->group = i;
		snprintf(cm->env.qid, sizeof cm->env.qid, "%s", g->qid);
		snprintf(cm->env.sender, sizeof cm->env.sender, "%s",
		    t->sender);
		snprintf(cm->env.domain, sizeof cm->env.domain, "%s",
		    g->domain);
		snprintf(cm->env.helo, sizeof cm->env.helo, "%s", s->helo);
		snprintf(cm->env.client_ip, sizeof cm->env.client_ip, "%s",
		    s->ip);
		snprintf(cm->env.session_id, sizeof cm->env.session_id, "%s",
		    s->sid);
		cm->env.created = time(NULL);
		cm->env.flags = t->body == SMTP_BODY_8BITMIME ?
		    SPOOL_F_8BITMIME : 0;
		cm->env.rcpts = g->rcpts;	/* handed over */
		cm->env.nrcpts = g->nrcpts;
		cm->env.body_len = spool_writer_body_len(g->writer);
		g->rcpts = NULL;
		s->commits[i] = cm;
		t->pending++;
		spool_sync_commit(srv->sync, g->writer, commit_cb,
		    (uint64_t)(uintptr_t)cm);
		/*
		 * Without memory to queue it the commit fails at once and
		 * commit_cb, seeing nothing else pending, has already
		 * answered 451 and reset the transaction: stop here, or
		 * the client would get a second reply.
		 */
		if (s->state != SMTP_STATE_COMMIT)
			return;
		g->writer = NULL;
	}
	if (t->pending == 0) {
		txn_reset(s);
		s->state = SMTP_STATE_MAIL;
		session_reply(s, REASON_QUEUE_IO,
		    "451 4.3.0 Error: queue file write error");
		session_resume(s);
	}
}

/* On the loop thread, once the spool thread made a file durable (or not). */
static void
commit_cb(uint64_t cookie, int error, const char *qid)
{
	struct commit	*cm = (struct commit *)(uintptr_t)cookie;
	char		 ea[LOG_ESCAPE_MAX + 1];
	struct session	*s = cm->session;
	struct txn	*t;
	size_t		 off;

	if (error == 0) {
		metrics.messages_accepted++;
		metrics.bytes_accepted += cm->env.body_len;
		if (s != NULL)
			limiter_bytes(&s->limits, cm->env.body_len, time(NULL));
		log_info("session=%s ip=%s event=queued qid=%s from=\"<%s>\" "
		    "nrcpt=%zu size=%" PRIu64 " domain=%s", cm->env.session_id,
		    cm->env.client_ip, qid, log_addr(ea, cm->env.sender),
		    cm->env.nrcpts,
		    cm->env.body_len, cm->env.domain);
		delivery_enqueue(srv->delivery, &cm->env);
	} else
		log_warnx("session=%s event=spool_error qid=%s what=\"%s\"",
		    cm->env.session_id, qid, strerror(error));
	spool_envelope_clear(&cm->env);
	if (s == NULL) {
		free(cm);
		return;		/* the client left; the message stays */
	}
	t = &s->txn;
	s->commits[cm->group] = NULL;
	free(cm);
	if (error != 0)
		t->commit_error = error;
	else {
		off = strlen(t->qids);
		snprintf(t->qids + off, sizeof t->qids - off, "%s%s",
		    off > 0 ? " " : "", qid);
	}
	if (--t->pending > 0)
		return;
	s->state = SMTP_STATE_MAIL;
	if (t->commit_error != 0)
		session_reply(s, REASON_QUEUE_IO,
		    "451 4.3.0 Error: queue file write error");
	else {
		s->messages++;
		s->junk = 0;	/* junk_max counts commands without mail */
		/* Only a clean transaction earns the pass (as QUIT). */
		if (!s->tripped)
			guard_pass_remember(s->ip, time(NULL),
			    cfg()->pass_remember);
		session_reply(s, REASON_NONE, "250 2.0.0 Ok: queued as %s",
		    t->qids);
	}
	txn_reset(s);
	session_resume(s);
}

static void
cmd_rset(struct session *s, struct smtp_command *cmd)
{
	(void)cmd;
	txn_reset(s);
	if (s->state != SMTP_STATE_HELO)
		s->state = SMTP_STATE_MAIL;
	session_reply(s, REASON_NONE, "250 2.0.0 Ok");
}

static void
cmd_noop(struct session *s, struct smtp_command *cmd)
{
	(void)cmd;
	session_reply(s, REASON_NONE, "250 2.0.0 Ok");
}

static void
cmd_quit(struct session *s, struct smtp_command *cmd)
{
	(void)cmd;
	if (!s->tripped && s->errors == 0)
		guard_pass_remember(s->ip, time(NULL), cfg()->pass_remember);
	session_reply(s, REASON_NONE, "221 2.0.0 Bye");
	session_close(s, true);
}

static void
cmd_vrfy(struct session *s, struct smtp_command *cmd)
{
	(void)cmd;
	/* Never tell valid from invalid: that is what harvesters want. */
	session_reply(s, REASON_NONE, "252 2.5.0 Cannot VRFY user, but will "
	    "accept message and attempt delivery");
}

static void
cmd_help(struct session *s, struct smtp_command *cmd)
{
	(void)cmd;
	session_reply(s, REASON_NONE, "214 2.0.0 Commands: HELO EHLO MAIL "
	    "RCPT DATA RSET NOOP QUIT VRFY HELP");
}

static void
cmd_not_impl(struct session *s, struct smtp_command *cmd)
{
	session_fail(s, REASON_PROTO_UNKNOWN_CMD,
	    "502 5.5.1 Error: %s not implemented", smtp_parse_cmd_name(cmd->cmd));
}

void
smtp_session_shutdown_all(void)
{
	struct session *s;

	TAILQ_FOREACH(s, &sessions, entry) {
		if (s->closing)
			continue;
		s->tarpit = 0;
		evbuffer_drain(s->held, evbuffer_get_length(s->held));
		session_reply(s, REASON_SHUTDOWN,
		    "421 4.3.2 %s Service shutting down, closing",
		    cfg()->hostname);
		session_close(s, true);
	}
}

void
smtp_session_free_all(void)
{
	struct session *s;

	while ((s = TAILQ_FIRST(&sessions)) != NULL)
		session_free(s);
}
