/*
 * moatd.c: the daemon's main: arguments, configuration check, the stores,
 * signals (SIGTERM shutdown, SIGHUP reload) and the one event loop.
 *
 * Start order matters for durability: the spool is opened (and its tmp/
 * emptied) and the queue rebuilt before the first connection is accepted,
 * so everything queued before a crash resumes delivery at once.
 */
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"
#include "control.h"
#include "delivery.h"
#include "json.h"
#include "limiter.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "smtp_session.h"
#include "spool.h"
#include "spool_sync.h"

#define MOAT_VERSION		"0.1.0"
#define SHUTDOWN_GRACE_MS	1500	/* to flush 421s before exit */

static struct smtp_server	 server;
static struct config		*config;
static struct control		*control;
static time_t			 started;
static struct event		*ev_drain;	/* shutdown in progress */

static enum log_level
level_from_name(const char *name)
{
	static const char *const names[] = { "err", "warn", "info",
	    "debug" };

	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strcmp(names[i], name) == 0)
			return (enum log_level)i;
	return LOG_LEVEL_INFO;
}

/* mkdir -p of path's directories (all of it when whole). */
static int
make_dirs(const char *path, bool whole)
{
	char	buf[CONFIG_PATH_MAX];
	size_t	n;

	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (!whole) {
		char *slash = strrchr(buf, '/');

		if (slash == NULL)
			return 0;
		*slash = '\0';
	}
	n = strlen(buf);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0750) == -1 && errno != EEXIST)
			return -1;
		if (i < n)
			buf[i] = '/';
	}
	return 0;
}

/* Every session costs a descriptor: take all the kernel allows us. */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			log_warn("setrlimit NOFILE");
	}
}

static void
status_hook(void *arg, struct json *j)
{
	(void)arg;
	json_string(j, "hostname", config->hostname);
	json_uint(j, "max_sessions", config->max_sessions);
	json_bool(j, "shutting_down", server.shutting_down);
	json_bool(j, "overload", smtp_session_overload());
	json_uint(j, "limiter_entries", limiter_entries());
	json_int(j, "started", (int64_t)started);
}

static int
reload(char **cause)
{
	struct config	*nc, *old = config;
	char		*why = NULL;

	if (config->path[0] == '\0') {
		if (asprintf(cause, "running on embedded defaults; nothing "
		    "to reload") == -1)
			*cause = NULL;
		return -1;
	}
	if (config_load(config->path, &nc, &why) == -1) {
		log_warnx("event=reload status=refused cause=\"%s\"",
		    why != NULL ? why : "?");
		*cause = why;
		return -1;
	}
	if (nc->nlisten != old->nlisten ||
	    memcmp(nc->listen, old->listen, sizeof nc->listen) != 0 ||
	    strcmp(nc->queue_dir, old->queue_dir) != 0 ||
	    strcmp(nc->control_socket, old->control_socket) != 0)
		log_warnx("event=reload note=\"listen, queue_dir and "
		    "control_socket changes take effect at restart\"");
	config = nc;
	server.cfg = nc;
	listener_set_config(nc);
	delivery_set_config(server.delivery, nc);
	control_set_config(control, nc);
	log_set_level(level_from_name(nc->log_level));
	config_free(old);
	log_info("event=reload status=ok config=%s domains=%zu", nc->path,
	    nc->ndomains);
	return 0;
}

static int
reload_hook(void *arg, char **cause)
{
	(void)arg;
	return reload(cause);
}

static void
sighup_cb(evutil_socket_t sig, short what, void *arg)
{
	char *cause = NULL;

	(void)sig;
	(void)what;
	(void)arg;
	if (reload(&cause) == -1)
		free(cause);
}

/*
 * While shutting down: leave the loop once every session has flushed its
 * 421 and gone, or when the grace time is over.
 */
static void
drain_cb(evutil_socket_t fd, short what, void *arg)
{
	static unsigned	ticks;

	(void)fd;
	(void)what;
	(void)arg;
	if (metrics.sessions_active == 0 ||
	    ++ticks * 50 >= SHUTDOWN_GRACE_MS)
		event_base_loopbreak(server.base);
}

static void
sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
	struct timeval		 tv = { 0, 50 * 1000 };

	(void)what;
	(void)arg;
	if (server.shutting_down)
		return;
	server.shutting_down = true;
	log_info("event=shutdown signal=%d sessions=%llu", (int)sig,
	    (unsigned long long)metrics.sessions_active);
	listener_close_all();
	smtp_session_shutdown_all();
	if ((ev_drain = event_new(server.base, -1, EV_PERSIST, drain_cb,
	    NULL)) == NULL || event_add(ev_drain, &tv) == -1)
		event_base_loopbreak(server.base);
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: moatd [-t] [-d] [-c FILE]\n"
	    "       moatd --dump-config-doc\n"
	    "  -c FILE  configuration file (default: embedded defaults)\n"
	    "  -t       check the configuration and exit (0 ok, 1 bad)\n"
	    "  -d       debug logging\n"
	    "  -V       print the version\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dump-config-doc", no_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	const char		*path = NULL;
	bool			 check = false, debug = false;
	char			*cause = NULL;
	int			 ch, n;
	struct event		*ev_term, *ev_int, *ev_hup;
	struct control_hooks	 hooks = { status_hook, reload_hook, NULL };

	while ((ch = getopt_long(argc, argv, "c:dtVh", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'd':
			debug = true;
			break;
		case 't':
			check = true;
			break;
		case 'V':
			printf("moatd %s\n", MOAT_VERSION);
			return 0;
		case 'D':
			config_dump_doc(stdout);
			return 0;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();

	if (path != NULL) {
		if (config_load(path, &config, &cause) == -1) {
			fprintf(stderr, "%s\n", cause != NULL ? cause :
			    "moatd: cannot load the configuration");
			free(cause);
			return 1;
		}
	} else if ((config = config_default()) == NULL) {
		fprintf(stderr, "moatd: out of memory\n");
		return 1;
	}
	if (check) {
		printf("%s: configuration ok (%zu protected domains)\n",
		    path != NULL ? path : "embedded defaults",
		    config->ndomains);
		config_free(config);
		return 0;
	}

	log_init("moatd", debug ? LOG_LEVEL_DEBUG :
	    level_from_name(config->log_level), config->log_syslog);
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	if (evthread_use_pthreads() == -1)
		fatalx("libevent: no thread support");
	if ((server.base = event_base_new()) == NULL)
		fatalx("libevent: cannot create the event base");
	server.cfg = config;
	started = time(NULL);

	if (make_dirs(config->queue_dir, false) == -1 ||
	    make_dirs(config->data_dir, true) == -1 ||
	    make_dirs(config->control_socket, false) == -1) {
		fprintf(stderr, "moatd: cannot create directories for %s, %s, "
		    "%s: %s\n", config->queue_dir, config->data_dir,
		    config->control_socket, strerror(errno));
		return 1;
	}
	if ((server.spool = spool_open(config->queue_dir, &cause)) == NULL) {
		fprintf(stderr, "moatd: cannot use queue directory %s: %s\n",
		    config->queue_dir, cause != NULL ? cause : "?");
		log_warnx("event=start status=failed cause=\"%s\"",
		    cause != NULL ? cause : "?");
		return 1;
	}
	if ((server.sync = spool_sync_new(server.base, server.spool,
	    &cause)) == NULL)
		fatalx("spool sync: %s", cause != NULL ? cause : "?");
	if ((server.delivery = delivery_new(server.base, server.spool,
	    server.sync, config)) == NULL)
		fatalx("delivery: cannot start");
	if ((n = delivery_load(server.delivery)) == -1)
		fatalx("delivery: cannot read the queue in %s",
		    config->queue_dir);
	smtp_session_init(&server);
	if (listener_open(server.base, config, &cause) == -1) {
		fprintf(stderr, "moatd: %s\n", cause != NULL ? cause : "?");
		log_warnx("event=start status=failed cause=\"%s\"",
		    cause != NULL ? cause : "?");
		return 1;
	}
	if ((control = control_new(server.base, config->control_socket,
	    server.delivery, server.spool, &hooks, &cause)) == NULL) {
		fprintf(stderr, "moatd: control socket %s: %s\n",
		    config->control_socket, cause != NULL ? cause : "?");
		return 1;
	}
	control_set_config(control, config);

	ev_term = evsignal_new(server.base, SIGTERM, sigterm_cb, NULL);
	ev_int = evsignal_new(server.base, SIGINT, sigterm_cb, NULL);
	ev_hup = evsignal_new(server.base, SIGHUP, sighup_cb, NULL);
	if (ev_term == NULL || ev_int == NULL || ev_hup == NULL ||
	    evsignal_add(ev_term, NULL) == -1 ||
	    evsignal_add(ev_int, NULL) == -1 ||
	    evsignal_add(ev_hup, NULL) == -1)
		fatalx("cannot install signal handlers");

	log_info("event=start version=%s config=%s queued=%d domains=%zu",
	    MOAT_VERSION, path != NULL ? path : "(embedded)", n,
	    config->ndomains);
	if (event_base_dispatch(server.base) == -1)
		fatalx("event loop failed");

	/* Queued mail is untouched: files are truth for the next start. */
	smtp_session_free_all();
	if (ev_drain != NULL)
		event_free(ev_drain);
	control_free(control);
	/*
	 * The sync thread first: commits still in flight call back into
	 * delivery (delivery_enqueue, the DSN's dsn_committed), which must
	 * still exist.  The loop has left only once every session has
	 * gone, not every commit.
	 */
	spool_sync_free(server.sync);
	delivery_free(server.delivery);
	spool_close(server.spool);
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	event_base_free(server.base);
	config_free(config);
	log_info("event=stop");
	return 0;
}
