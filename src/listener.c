/*
 * listener.c: bind, accept, global session limit, fd exhaustion.
 *
 * Fairness: each wakeup accepts at most LISTENER_ACCEPT_BURST clients,
 * then the loop serves the sessions that are ready before it comes back
 * (the listening socket is level-triggered, so nothing is lost).  With
 * libevent's evconnlistener, which accepts until the queue is empty, a
 * connection flood queued thousands of accepts ahead of every command
 * of the sessions in progress: a legitimate sender's reply waited for
 * the whole batch (bench/dos part d, ~13,000 hostile connections/s on
 * 2 cores: good client p99 230-300 ms without the cap, 110-120 ms with).
 *
 * Memory: after a flood of idle sessions (about 5 KiB each) ends, the
 * freed session memory is scattered through the heap and glibc keeps
 * it; the periodic sweep hands it back (malloc_trim) once the sessions
 * fall below a quarter of their peak, so a 20,000-session flood does
 * not leave moatd 100 MB larger for good (glibc only).
 *
 * EMFILE/ENFILE: a level-triggered listener whose accept() fails would
 * wake the loop forever.  We keep one spare descriptor; when accept fails
 * for lack of descriptors we free the spare, accept the pending client,
 * tell it 421 and close it, take the spare back, and pause accepting for
 * a moment so the sessions in progress keep the CPU.
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/util.h>

#include "config.h"
#include "limiter.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "smtp_session.h"

#define LISTENER_BACKLOG	4096
#define LISTENER_PAUSE_MS	100
#define LISTENER_ACCEPT_BURST	32	/* accepts per wakeup */
#define LISTENER_TRIM_MIN	1000	/* session peak worth a trim */

static struct event		*listeners[CONFIG_MAX_LISTEN];
static size_t			 nlisteners;
static const struct config	*listener_cfg;
static struct event		*ev_resume;
static struct event		*ev_sweep;
static int			 spare_fd = -1;
static time_t			 last_full_log;
static uint64_t			 fd_cap;	/* sessions the fds allow */
static uint64_t			 session_peak;	/* since the last trim */

static void
listener_refuse(int fd, const char *text)
{
	/* Best effort, never blocks: the socket buffer takes one line. */
	(void)send(fd, text, strlen(text), MSG_DONTWAIT | MSG_NOSIGNAL);
	close(fd);
}

static void
listener_accept(int fd, struct sockaddr *sa, socklen_t salen)
{
	const struct config	*c = listener_cfg;
	char			 line[512];
	time_t			 now;
	struct limiter_client	 lc;
	enum reason		 why = REASON_NONE;

	if ((c->max_sessions > 0 &&
	    metrics.sessions_active >= c->max_sessions) ||
	    metrics.sessions_active >= fd_cap) {
		metrics.refused[REASON_LIMIT_CONN_GLOBAL]++;
		now = time(NULL);
		if (now != last_full_log) {
			last_full_log = now;
			log_warnx("event=refuse reason=%s sessions=%llu",
			    reason_name(REASON_LIMIT_CONN_GLOBAL),
			    (unsigned long long)metrics.sessions_active);
		}
		snprintf(line, sizeof line, "421 4.7.0 %s Too many "
		    "connections, try again later\r\n", c->hostname);
		listener_refuse(fd, line);
		return;
	}
	/* Per-client limits, before a single byte is parsed. */
	if (!limiter_connect(c, sa, time(NULL), &lc, &why)) {
		metrics.refused[why]++;
		log_info("event=refuse reason=%s", reason_name(why));
		snprintf(line, sizeof line, "421 4.7.0 %s Too many "
		    "connections from your %s, try again later\r\n",
		    c->hostname, why == REASON_LIMIT_CONN_PER_NET ?
		    "network" : "address");
		listener_refuse(fd, line);
		return;
	}
	smtp_session_accept(fd, sa, salen, &lc);
	if (metrics.sessions_active > session_peak)
		session_peak = metrics.sessions_active;
}

static void	listener_error(int, int);

static void
listener_read_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	int			 fd;

	(void)what;
	(void)arg;
	for (int i = 0; i < LISTENER_ACCEPT_BURST; i++) {
		sslen = sizeof ss;
		fd = accept4(lfd, (struct sockaddr *)&ss, &sslen,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			/* EAGAIN: queue empty; the others concern one
			 * client that went away before we took it. */
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR && errno != ECONNABORTED &&
			    errno != EPROTO)
				listener_error(lfd, errno);
			return;
		}
		listener_accept(fd, (struct sockaddr *)&ss, sslen);
	}
}

static void
listener_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	limiter_sweep(time(NULL));
	if (session_peak >= LISTENER_TRIM_MIN &&
	    metrics.sessions_active < session_peak / 4) {
		log_info("event=trim sessions=%llu peak=%llu",
		    (unsigned long long)metrics.sessions_active,
		    (unsigned long long)session_peak);
#ifdef __GLIBC__
		(void)malloc_trim(0);
#endif
		session_peak = metrics.sessions_active;
	}
}

static void
listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	for (size_t i = 0; i < nlisteners; i++)
		if (event_add(listeners[i], NULL) == -1)
			log_warnx("event=listen_resume error=\"event_add\"");
}

static void
listener_error(int lfd, int err)
{
	struct timeval	tv = { 0, LISTENER_PAUSE_MS * 1000 };
	int		fd;

	if (err != EMFILE && err != ENFILE && err != ENOBUFS &&
	    err != ENOMEM) {
		log_warnx("event=accept_error error=\"%s\"", strerror(err));
		return;
	}
	metrics.refused[REASON_LIMIT_FD]++;
	if (spare_fd != -1) {
		close(spare_fd);
		spare_fd = -1;
		fd = accept(lfd, NULL, NULL);
		if (fd != -1)
			listener_refuse(fd, "421 4.3.2 Service busy, try "
			    "again later\r\n");
		spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	if (time(NULL) != last_full_log) {
		last_full_log = time(NULL);
		log_warnx("event=refuse reason=%s error=\"%s\"",
		    reason_name(REASON_LIMIT_FD), strerror(err));
	}
	for (size_t i = 0; i < nlisteners; i++)
		event_del(listeners[i]);
	evtimer_add(ev_resume, &tv);
}

int
listener_open(struct event_base *base, const struct config *c, char **cause)
{
	struct sockaddr_storage	 ss;
	int			 sslen, fd, on = 1;
	struct event		*l;

	struct timeval		 sweep = { 5, 0 };
	struct rlimit		 rl;

	/* Each session costs a descriptor and a delivery connection or a
	 * queue file may need more: keep a reserve so that running out of
	 * descriptors answers 421 rather than failing mid-transaction. */
	fd_cap = UINT64_MAX;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		fd_cap = rl.rlim_cur > 512 ? rl.rlim_cur - 256 :
		    rl.rlim_cur / 2;
	if (fd_cap != UINT64_MAX &&
	    (c->max_sessions == 0 || fd_cap < c->max_sessions))
		log_warnx("event=start note=\"at most %llu sessions: the "
		    "descriptor limit is %llu\"", (unsigned long long)fd_cap,
		    (unsigned long long)rl.rlim_cur);
	listener_cfg = c;
	if ((ev_resume = evtimer_new(base, listener_resume_cb, NULL)) ==
	    NULL || (ev_sweep = event_new(base, -1, EV_PERSIST,
	    listener_sweep_cb, NULL)) == NULL ||
	    event_add(ev_sweep, &sweep) == -1) {
		if (asprintf(cause, "listener: out of memory") == -1)
			*cause = NULL;
		return -1;
	}
	spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	for (size_t i = 0; i < c->nlisten; i++) {
		sslen = sizeof ss;
		memset(&ss, 0, sizeof ss);
		if (evutil_parse_sockaddr_port(c->listen[i],
		    (struct sockaddr *)&ss, &sslen) == -1) {
			if (asprintf(cause, "listen %s: not an address:port",
			    c->listen[i]) == -1)
				*cause = NULL;
			return -1;
		}
		fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);
		if (fd == -1 ||
		    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on,
		    sizeof on) == -1 ||
		    (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6,
		    IPV6_V6ONLY, &on, sizeof on) == -1) ||
		    bind(fd, (struct sockaddr *)&ss, (socklen_t)sslen) == -1 ||
		    listen(fd, LISTENER_BACKLOG) == -1) {
			if (asprintf(cause, "listen %s: %s", c->listen[i],
			    strerror(errno)) == -1)
				*cause = NULL;
			if (fd != -1)
				close(fd);
			return -1;
		}
		/* Our own accept loop, not evconnlistener: that one
		 * accepts until the queue is empty (see the top), and
		 * with backlog -1 it calls listen(fd, 128) again, cutting
		 * the backlog: a burst then overflows the accept queue
		 * and every client's SYN waits a 1 s retransmit. */
		l = event_new(base, fd, EV_READ | EV_PERSIST,
		    listener_read_cb, NULL);
		if (l == NULL || event_add(l, NULL) == -1) {
			if (l != NULL)
				event_free(l);
			if (asprintf(cause, "listen %s: cannot listen",
			    c->listen[i]) == -1)
				*cause = NULL;
			close(fd);
			return -1;
		}
		listeners[nlisteners++] = l;
		log_info("event=listen address=%s", c->listen[i]);
	}
	return 0;
}

void
listener_set_config(const struct config *c)
{
	listener_cfg = c;
}

void
listener_close_all(void)
{
	int	fd;

	for (size_t i = 0; i < nlisteners; i++) {
		fd = event_get_fd(listeners[i]);
		event_free(listeners[i]);
		close(fd);
	}
	nlisteners = 0;
	if (ev_resume != NULL) {
		event_free(ev_resume);
		ev_resume = NULL;
	}
	if (ev_sweep != NULL) {
		event_free(ev_sweep);
		ev_sweep = NULL;
	}
	if (spare_fd != -1) {
		close(spare_fd);
		spare_fd = -1;
	}
}
