/*
 * fuzz_session.c: libFuzzer harness for the whole inbound SMTP session:
 * smtp_session.c driven over a real socket, with the real parser, DATA
 * reader, policy, guard, limiter, spool, group commit (spool_sync, its
 * writer thread included) and delivery queue.  Any byte stream from a
 * client must end without a crash, a leak, a stuck session or a file
 * left behind in the spool.
 *
 * Input layout: four header bytes choose the configuration and how the
 * stream is cut into writes (see struct knobs); the rest is what the
 * client sends.  Per input:
 *
 *   1. socketpair; moat's end goes to smtp_session_accept() with a fake
 *      127.0.0.2 address and limits from limiter_connect();
 *   2. the stream is written in chunks while the event loop runs, and
 *      whatever moat answers is read and thrown away (so it never blocks
 *      on a full socket);
 *   3. the client waits while moat is paused (greet pause, tarpit,
 *      commit: smtp_session_waiting()), unless the header says to hang
 *      up at once; then it half-closes (or, in "stall" mode, goes silent
 *      so that the timeouts end the session) and the loop runs until the
 *      session is gone, within a wall-clock bound (past it: abort, a
 *      stuck session is a bug);
 *   4. spool_sync is freed (which waits for every commit in flight and
 *      runs its callback, also for sessions already gone), every queued
 *      message is deleted through delivery_delete(), and fresh spool_sync
 *      and delivery objects are made, so each input starts from an empty
 *      queue and the next run does not depend on this one.
 *
 * Delivery never touches the network: it gets its own config with no
 * domains, so queued messages wait as "no route" until deleted.  The
 * session's config names ten protected domains (one more than a
 * transaction may hold groups for).  Timers are at most a few ms so that
 * tarpits and greet pauses finish quickly.
 *
 * Checks: during a run, the heap never grows by more than
 * HEAP_GROWTH_MAX (a session's input and output are bounded); after
 * every input, no session is left (metrics.sessions_active),
 * limiter_connect succeeds (no connection slot leaked), the spool's tmp/
 * is empty, and every so often that queue/ holds no message.  Leaks are
 * libFuzzer's own check (LeakSanitizer).
 *
 * To see what an input does: FUZZ_SESSION_VERBOSE=1 (moat's replies and
 * debug log on stderr), FUZZ_SESSION_HEAP=1 (heap growth per run).
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include <sanitizer/allocator_interface.h>

#include "config.h"
#include "delivery.h"
#include "limiter.h"
#include "log.h"
#include "metrics.h"
#include "smtp_session.h"
#include "spool.h"
#include "spool_sync.h"

int	LLVMFuzzerInitialize(int *, char ***);
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define HDR_LEN		4
#define NDOMAINS	10
#define RUN_LIMIT_MS	10000	/* a session that outlives this is stuck */
#define SCAN_EVERY	128	/* runs between full queue/ checks */
#define REPEAT_MAX	(80u << 10)	/* bytes sent at most with repeats */
#define WRITES_MAX	256	/* then the rest goes in one piece */
#define HEAP_GROWTH_MAX	(16u << 20)	/* per session: input and output
					   are bounded at 64 KiB each */

static struct event_base	*base;
static struct event		*watchdog;
static struct config		*cfg;	/* the session's */
static struct config		*dcfg;	/* delivery's: no routes */
static struct spool		*sp;
static struct spool_sync	*sync_;
static struct delivery		*dlv;
static struct smtp_server	 server;
static char			 spooldir[] = "/dev/shm/fuzz_session.XXXXXX";
static char			 tmpdir[sizeof spooldir + 8];
static unsigned long		 runs;
static bool			 verbose;	/* FUZZ_SESSION_VERBOSE set */
static bool			 heapwatch;	/* FUZZ_SESSION_HEAP set */


static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	(void)remove(path);
	return 0;
}

static void
cleanup(void)
{
	(void)nftw(spooldir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void
die(const char *what)
{
	fprintf(stderr, "fuzz_session: %s\n", what);
	cleanup();
	abort();
}

static void
watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void
backend_new(void)
{
	char *cause = NULL;

	if ((sync_ = spool_sync_new(base, sp, &cause)) == NULL)
		die(cause != NULL ? cause : "spool_sync_new");
	if ((dlv = delivery_new(base, sp, sync_, dcfg)) == NULL)
		die("delivery_new");
	server.sync = sync_;
	server.delivery = dlv;
}

/*
 * Waits for every commit in flight (spool_sync_free runs their callbacks,
 * which enqueue into delivery), then deletes every queued message.
 */
static void
backend_reset(void)
{
	spool_sync_free(sync_);
	(void)delivery_delete(dlv, NULL);
	delivery_free(dlv);
	backend_new();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct timeval	 tv = { 0, 50 * 1000 };
	char		*cause = NULL;
	size_t		 i;

	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	/* FUZZ_SESSION_VERBOSE=1: moat's replies and debug log on stderr,
	 * to see what an input (a crash, a seed) does. */
	verbose = getenv("FUZZ_SESSION_VERBOSE") != NULL;
	/* FUZZ_SESSION_HEAP=1: print how far the heap grew during a run. */
	heapwatch = getenv("FUZZ_SESSION_HEAP") != NULL;
	log_init("fuzz_session", verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERR,
	    false);
	if (evthread_use_pthreads() == -1)
		die("evthread_use_pthreads");
	if ((base = event_base_new()) == NULL)
		die("event_base_new");
	/* Bounds every blocking loop iteration. */
	watchdog = event_new(base, -1, EV_PERSIST, watchdog_cb, NULL);
	if (watchdog == NULL || event_add(watchdog, &tv) == -1)
		die("watchdog");

	if (mkdtemp(spooldir) == NULL) {
		memcpy(spooldir, "/tmp/fuzz_session.XXXXXX",
		    sizeof "/tmp/fuzz_session.XXXXXX");
		if (mkdtemp(spooldir) == NULL)
			die("mkdtemp");
	}
	atexit(cleanup);
	snprintf(tmpdir, sizeof tmpdir, "%s/tmp", spooldir);
	if ((sp = spool_open(spooldir, &cause)) == NULL)
		die(cause != NULL ? cause : "spool_open");

	if ((cfg = config_default()) == NULL || (dcfg = config_default()) ==
	    NULL)
		die("config_default");
	/* Ten protected domains: the session takes at most eight groups. */
	free(cfg->domains);
	if ((cfg->domains = calloc(NDOMAINS, sizeof *cfg->domains)) == NULL)
		die("calloc");
	for (i = 0; i < NDOMAINS; i++) {
		struct config_domain *d = &cfg->domains[i];

		if (i == 0)
			snprintf(d->name, sizeof d->name, "example.test");
		else
			snprintf(d->name, sizeof d->name, "d%zu.test", i);
		snprintf(d->servers[0].host, sizeof d->servers[0].host,
		    "127.0.0.1");
		snprintf(d->servers[0].port, sizeof d->servers[0].port, "1");
		d->nservers = 1;
	}
	cfg->ndomains = NDOMAINS;
	/* Delivery: no route anywhere, so nothing ever connects out. */
	free(dcfg->domains);
	dcfg->domains = NULL;
	dcfg->ndomains = 0;
	dcfg->dsn_relay[0] = '\0';

	memset(&server, 0, sizeof server);
	server.base = base;
	server.cfg = cfg;
	server.spool = sp;
	backend_new();
	smtp_session_init(&server);
	return 0;
}

static const enum config_action act4[][4] = {
	/* pipelining */
	{ CONFIG_ACTION_REJECT, CONFIG_ACTION_LOG, CONFIG_ACTION_TARPIT,
	  CONFIG_ACTION_DROP },
	/* bare_lf */
	{ CONFIG_ACTION_REJECT, CONFIG_ACTION_TEMPFAIL, CONFIG_ACTION_LOG,
	  CONFIG_ACTION_DROP },
	/* non_smtp */
	{ CONFIG_ACTION_DROP, CONFIG_ACTION_LOG, CONFIG_ACTION_REJECT,
	  CONFIG_ACTION_TARPIT },
	/* line_too_long */
	{ CONFIG_ACTION_DROP, CONFIG_ACTION_LOG, CONFIG_ACTION_TARPIT,
	  CONFIG_ACTION_REJECT },
	/* errors */
	{ CONFIG_ACTION_DROP, CONFIG_ACTION_TEMPFAIL, CONFIG_ACTION_LOG,
	  CONFIG_ACTION_TARPIT },
	/* junk, helo */
	{ CONFIG_ACTION_LOG, CONFIG_ACTION_DROP, CONFIG_ACTION_TARPIT,
	  CONFIG_ACTION_REJECT },
};

static void
check_set(struct config_check *c, int table, unsigned bits)
{
	c->enabled = true;
	c->action = act4[table][bits & 3];
}

/* How the stream is cut into writes. */
enum chunking {
	CHUNK_ALL,	/* as much as the socket takes */
	CHUNK_TINY,	/* 1..16 bytes */
	CHUNK_LINE,	/* up to and including each LF */
	CHUNK_SMALL,	/* 1..512 bytes */
	CHUNK_GROUP	/* up to a command that ends an RFC 2920 group,
			   or the end of DATA: a well-behaved pipeliner */
};

struct knobs {
	enum chunking	chunking;
	bool		stall;		/* no EOF: the timeouts end it */
	bool		hangup;		/* EOF without waiting for moat */
	bool		shutdown;	/* moat shuts down mid-stream */
	bool		noread;		/* reads only when it cannot write */
	unsigned	repeat;		/* the stream is sent this many times */
	uint32_t	rng;
};

/*
 * Header bytes:
 *   h0: bits 0-1 pipelining, 2-3 bare_lf, 4-5 non_smtp actions;
 *       bit 6 bare_lf_normalise; bit 7 greet pause (2ms)
 *   h1: bits 0-1 line_too_long, 2-3 errors, 4-5 junk and helo actions;
 *       bits 6-7 chunking
 *   h2: bit 0 tight limits; bit 1 error_delay 1ms (else 0; always 0
 *       with 64 copies); bit 2 stall; bit 3 overload mode; bit 4 queue
 *       full after one message; bit 5 disk "full"; bit 6 pregreet
 *       action log (else reject); bit 7 guard checks off
 *   h3: bit 0 hang up without waiting for moat; bit 1 moat shuts down
 *       (smtp_session_shutdown_all) half-way through; bit 2 the client
 *       reads replies only when its write would block, over small socket
 *       buffers (moat's output backs up); bits 3-4 the stream is sent
 *       once (0, 1), twice (2) or 64 times up to REPEAT_MAX (3: long
 *       lines, big messages and floods from short inputs); bit 5
 *       chunking by RFC 2920 groups instead; the byte seeds the chunk
 *       sizes
 */
static void
configure(const uint8_t *h, struct knobs *k)
{
	bool tight = h[2] & 0x01;

	check_set(&cfg->check_pipelining, 0, h[0]);
	check_set(&cfg->check_bare_lf, 1, h[0] >> 2);
	check_set(&cfg->check_non_smtp, 2, h[0] >> 4);
	cfg->bare_lf_normalise = (h[0] & 0x40) != 0;
	cfg->greet_pause = (h[0] & 0x80) ? 2 : 0;
	check_set(&cfg->check_line_too_long, 3, h[1]);
	check_set(&cfg->check_errors, 4, h[1] >> 2);
	check_set(&cfg->check_junk, 5, h[1] >> 4);
	check_set(&cfg->check_helo, 5, h[1] >> 4);
	cfg->check_pregreet.enabled = true;
	cfg->check_pregreet.action = (h[2] & 0x40) ? CONFIG_ACTION_LOG :
	    CONFIG_ACTION_REJECT;
	if (h[2] & 0x80) {
		cfg->check_pipelining.enabled = false;
		cfg->check_bare_lf.enabled = false;
		cfg->check_non_smtp.enabled = false;
		cfg->check_line_too_long.enabled = false;
		cfg->check_errors.enabled = false;
		cfg->check_junk.enabled = false;
		cfg->check_helo.enabled = false;
		cfg->check_pregreet.enabled = false;
	}
	cfg->message_size_max = tight ? 1024 : 64 * 1024;
	cfg->rcpt_max = tight ? 3 : 100;
	cfg->line_max = tight ? 80 : 998;
	cfg->errors_soft = tight ? 1 : 3;
	cfg->errors_hard = tight ? 4 : 10;
	cfg->junk_max = tight ? 5 : 50;
	/* 1ms per tarpitted reply, never with 64 copies: a stream that
	 * trips on every line would take seconds. */
	cfg->error_delay = (h[2] & 0x02) && (h[3] & 0x18) != 0x18 ? 1 : 0;
	cfg->pass_remember = 0;		/* no state across inputs */
	cfg->data_min_rate = 0;
	cfg->overload_sessions = (h[2] & 0x08) ? 1 : 0;
	/* Per-IP rates would carry over from input to input. */
	cfg->conn_per_ip = 4;
	cfg->conn_per_net = 8;
	cfg->conn_rate_per_ip = 0;
	cfg->msg_rate_per_ip = 0;
	cfg->rcpt_rate_per_ip = 0;
	cfg->byte_rate_per_ip = 0;
	k->stall = (h[2] & 0x04) != 0;
	if (k->stall) {
		cfg->timeout_greeting = 4;
		cfg->timeout_command = 3;
		cfg->timeout_data = 3;
		cfg->timeout_session = (h[2] & 0x01) ? 5 : 1000;
	} else {
		cfg->timeout_greeting = 60 * 1000;
		cfg->timeout_command = 60 * 1000;
		cfg->timeout_data = 60 * 1000;
		cfg->timeout_session = 60 * 1000;
	}

	dcfg->queue_max_messages = (h[2] & 0x10) ? 1 : 0;
	dcfg->queue_max_bytes = 0;
	dcfg->disk_min_free = (h[2] & 0x20) ? UINT64_MAX / 2 : 0;

	k->chunking = (h[3] & 0x20) ? CHUNK_GROUP :
	    (enum chunking)((h[1] >> 6) & 3);
	k->hangup = (h[3] & 0x01) != 0;
	k->shutdown = (h[3] & 0x02) != 0;
	k->noread = (h[3] & 0x04) != 0;
	k->repeat = (const unsigned[]){ 1, 1, 2, 64 }[(h[3] >> 3) & 3];
	k->rng = 0x9e3779b9u ^ h[3];
}

/* Does this line end a group of pipelined commands (RFC 2920 3.1)? */
static bool
group_end(const uint8_t *line, size_t len)
{
	static const char *const verbs[] = { "EHLO", "HELO", "DATA", "NOOP",
	    "QUIT", "VRFY", "EXPN", "STARTTLS" };
	size_t i;

	if (line[0] == '.' && (len == 2 || (len == 3 && line[1] == '\r')))
		return true;
	for (i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
		if (len >= strlen(verbs[i]) &&
		    strncasecmp((const char *)line, verbs[i],
		    strlen(verbs[i])) == 0)
			return true;
	return false;
}

static size_t
chunk_len(struct knobs *k, const uint8_t *p, size_t left)
{
	const uint8_t	*lf, *q;
	size_t		 n, rem, ll;

	k->rng = k->rng * 1103515245u + 12345u;
	switch (k->chunking) {
	case CHUNK_TINY:
		n = 1 + (k->rng >> 16) % 16;
		break;
	case CHUNK_LINE:
		lf = memchr(p, '\n', left);
		n = lf != NULL ? (size_t)(lf - p) + 1 : left;
		break;
	case CHUNK_SMALL:
		n = 1 + (k->rng >> 16) % 512;
		break;
	case CHUNK_GROUP:
		for (q = p, rem = left; rem > 0; q += ll, rem -= ll) {
			if ((lf = memchr(q, '\n', rem)) == NULL)
				return left;
			ll = (size_t)(lf - q) + 1;
			if (group_end(q, ll)) {
				q += ll;
				break;
			}
		}
		n = (size_t)(q - p);
		break;
	default:
		n = left;
		break;
	}
	return n < left ? n : left;
}

/* Reads and drops whatever moat wrote. */
static void
drain_fd(int fd)
{
	char buf[16384];

	ssize_t	n;

	while ((n = read(fd, buf, sizeof buf)) > 0)
		if (verbose)
			(void)fwrite(buf, 1, (size_t)n, stderr);
}

static size_t	heap_start, heap_peak;

static void
drain(int fd)
{
	size_t	now;

	drain_fd(fd);
	now = __sanitizer_get_current_allocated_bytes();
	if (now > heap_peak)
		heap_peak = now;
	if (heap_peak - heap_start > HEAP_GROWTH_MAX)
		die("heap grows without bound during one session");
}

static void
check_deadline(uint64_t start)
{
	if (now_ms() - start > RUN_LIMIT_MS)
		die("session still alive long after the client stopped");
}

static size_t
count_dir(const char *path)
{
	DIR		*d;
	struct dirent	*de;
	size_t		 n = 0;

	if ((d = opendir(path)) == NULL)
		die("opendir");
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void
scan_cb(void *arg, const struct spool_envelope *env, bool held)
{
	(void)arg;
	(void)env;
	(void)held;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct sockaddr_in	 sin;
	struct limiter_client	 lc;
	struct knobs		 k;
	enum reason		 why;
	const uint8_t		*p;
	size_t			 off, total, at, n, writes = 0;
	ssize_t			 w;
	uint64_t		 start;
	int			 fds[2], sz = 4096;
	char			 esc[LOG_ESCAPE_MAX + 1];

	if (len < HDR_LEN)
		return 0;
	configure(data, &k);
	p = data + HDR_LEN;
	len -= HDR_LEN;
	/* Logging is off while fuzzing; its escaper still sees the bytes. */
	(void)log_escape(esc, sizeof esc, (const char *)p, len);
	(void)log_escape(esc, 8, (const char *)p, len);

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	    fds) == -1)
		die("socketpair");
	if (k.noread && (setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sz,
	    sizeof sz) == -1 || setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &sz,
	    sizeof sz) == -1))
		die("setsockopt");
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons(40000);
	sin.sin_addr.s_addr = htonl(0x7f000002);
	memset(&lc, 0, sizeof lc);
	/* conn_per_ip is 4: failing here means a session leaked its slot. */
	if (!limiter_connect(cfg, (struct sockaddr *)&sin, time(NULL), &lc,
	    &why))
		die("limiter_connect refused: a connection slot leaked");
	smtp_session_accept(fds[0], (struct sockaddr *)&sin, sizeof sin, &lc);

	heap_start = heap_peak = __sanitizer_get_current_allocated_bytes();
	start = now_ms();
	off = 0;
	/* Past the 64 KiB caps is enough; more only costs time. */
	total = len * k.repeat;
	if (k.repeat > 1 && total > REPEAT_MAX)
		total = len > REPEAT_MAX ? len : REPEAT_MAX;
	while (off < total && smtp_session_count() > 0) {
		at = off % len;
		/* Thousands of tiny writes cost time, not coverage. */
		if (++writes > WRITES_MAX)
			k.chunking = CHUNK_ALL;
		n = chunk_len(&k, p + at, len - at);
		w = write(fds[1], p + at, n);
		if (w > 0)
			off += (size_t)w;
		else if (w == -1 && errno != EAGAIN && errno != EINTR)
			break;		/* moat closed the connection */
		if (k.shutdown && off >= total / 2) {
			/* SIGTERM: 421 to every session, then close. */
			smtp_session_shutdown_all();
			k.shutdown = false;
		}
		/* A noread client reads only once its write would block. */
		if (w <= 0 || !k.noread)
			drain(fds[1]);
		/* No progress: moat is paused or busy, wait for an event. */
		event_base_loop(base, w > 0 ? EVLOOP_NONBLOCK : EVLOOP_ONCE);
		if (!k.noread)
			drain(fds[1]);
		/* A well-behaved pipeliner waits for the group's replies. */
		while (k.chunking == CHUNK_GROUP && smtp_session_waiting()) {
			event_base_loop(base, EVLOOP_ONCE);
			drain(fds[1]);
			check_deadline(start);
		}
		check_deadline(start);
	}
	/* A client that waits for the replies before it hangs up.  A
	 * resumed session processes its input from a zero-delay event,
	 * hence the non-blocking pass between waits. */
	while (!k.hangup && smtp_session_count() > 0) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		drain(fds[1]);
		if (!smtp_session_waiting())
			break;
		while (smtp_session_waiting()) {
			event_base_loop(base, EVLOOP_ONCE);
			drain(fds[1]);
			check_deadline(start);
		}
	}
	if (!k.stall)
		(void)shutdown(fds[1], SHUT_WR);
	while (smtp_session_count() > 0) {
		event_base_loop(base, EVLOOP_ONCE);
		drain(fds[1]);
		check_deadline(start);
	}
	close(fds[1]);
	if (heapwatch)
		fprintf(stderr, "fuzz_session: heap grew by at most %zu bytes, "
		    "%llu ms, header %02x%02x%02x%02x\n", heap_peak - heap_start,
		    (unsigned long long)(now_ms() - start), data[0], data[1],
		    data[2], data[3]);
	if (metrics.sessions_active != 0)
		die("sessions_active not back to zero");

	backend_reset();
	limiter_sweep(time(NULL));
	/* Aborted writers unlink their file; committed ones were deleted. */
	if (count_dir(tmpdir) != 0)
		die("file left in the spool's tmp/");
	if (++runs % SCAN_EVERY == 0 && spool_scan(sp, scan_cb, NULL) != 0)
		die("message left in the spool's queue/");
	return 0;
}
