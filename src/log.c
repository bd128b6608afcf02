/*
 * log.c: key=value event logging to stderr (journald) or syslog.
 *
 * A line is written with one write(2) so that lines from the daemon and
 * its sync thread never interleave.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char	*log_progname = "moat";
static enum log_level	 log_level = LOG_LEVEL_INFO;
static bool		 log_syslog;

static const char *const log_level_names[] = {
	[LOG_LEVEL_ERR] = "err",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

static const int log_syslog_prio[] = {
	[LOG_LEVEL_ERR] = LOG_ERR,
	[LOG_LEVEL_WARN] = LOG_WARNING,
	[LOG_LEVEL_INFO] = LOG_INFO,
	[LOG_LEVEL_DEBUG] = LOG_DEBUG,
};

void
log_init(const char *progname, enum log_level level, bool use_syslog)
{
	log_progname = progname;
	log_level = level;
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(progname, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_set_level(enum log_level level)
{
	log_level = level;
}

bool
log_enabled(enum log_level level)
{
	return level <= log_level;
}

static void
log_vwrite(enum log_level level, const char *fmt, va_list ap,
    const char *suffix)
{
	char		 line[4096];
	int		 n, m;
	struct timespec	 ts;
	struct tm	 tm;

	if (log_syslog) {
		n = vsnprintf(line, sizeof line, fmt, ap);
		if (n < 0)
			return;
		syslog(log_syslog_prio[level], "%s%s", line,
		    suffix != NULL ? suffix : "");
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof line,
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld] level=%s ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, log_progname,
	    (long)getpid(), log_level_names[level]);
	if (n < 0 || (size_t)n >= sizeof line)
		return;
	m = vsnprintf(line + n, sizeof line - n, fmt, ap);
	if (m < 0)
		return;
	n += m;
	if ((size_t)n >= sizeof line - 2)
		n = sizeof line - 2;	/* cut: a log line stays one line */
	if (suffix != NULL) {
		m = snprintf(line + n, sizeof line - n, "%s", suffix);
		if (m > 0)
			n += m;
		if ((size_t)n >= sizeof line - 2)
			n = sizeof line - 2;
	}
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	va_list	ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	log_vwrite(level, fmt, ap, NULL);
	va_end(ap);
}

void
log_warn(const char *fmt, ...)
{
	va_list	ap;
	char	suffix[256];

	snprintf(suffix, sizeof suffix, ": %s", strerror(errno));
	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_WARN, fmt, ap, suffix);
	va_end(ap);
}

void
log_fatal(const char *file, int line, bool with_errno, const char *fmt, ...)
{
	va_list	ap;
	char	suffix[512];
	int	saved = errno;

	snprintf(suffix, sizeof suffix, "%s%s (%s:%d)",
	    with_errno ? ": " : "", with_errno ? strerror(saved) : "",
	    file, line);
	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERR, fmt, ap, suffix);
	va_end(ap);
	exit(1);
}

const char *
log_escape(char *buf, size_t len, const char *s, size_t n)
{
	static const char	 hex[] = "0123456789abcdef";
	size_t			 o = 0, i;
	size_t			 cap;

	if (len == 0)
		return buf;
	cap = len - 1 < LOG_ESCAPE_MAX ? len - 1 : LOG_ESCAPE_MAX;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		/* Printable ASCII stays; values are quoted by callers. */
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			if (o + 1 > cap)
				break;
			buf[o++] = (char)c;
		} else {
			if (o + 4 > cap)
				break;
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 0xf];
		}
	}
	if (i < n && cap >= 3) {
		while (o + 3 > cap)
			o--;
		buf[o++] = '.';
		buf[o++] = '.';
		buf[o++] = '.';
	}
	buf[o] = '\0';
	return buf;
}
