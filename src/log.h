/*
 * log.h: one key=value line per event, to stderr or syslog.
 *
 * Callers format the key=value pairs themselves; any text that came from
 * a client must pass through log_escape() first so that a line stays one
 * line and has a bounded length.
 */
#ifndef MOAT_LOG_H
#define MOAT_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_LEVEL_ERR,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG
};

/* Longest escaped client text a log line carries. */
#define LOG_ESCAPE_MAX	256

void	log_init(const char *progname, enum log_level, bool use_syslog);
void	log_set_level(enum log_level);
bool	log_enabled(enum log_level);
void	log_msg(enum log_level, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
#define log_warnx(...)	log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)	log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)	log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
/* Like log_warnx, with ": strerror(errno)" appended. */
void	log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));

/*
 * Fatal errors are broken invariants of moat's own: they log file:line
 * and exit.  fatal() appends strerror(errno).
 */
#define fatal(...)	log_fatal(__FILE__, __LINE__, true, __VA_ARGS__)
#define fatalx(...)	log_fatal(__FILE__, __LINE__, false, __VA_ARGS__)
void	log_fatal(const char *, int, bool, const char *, ...)
	    __attribute__((format(printf, 4, 5), noreturn));

/*
 * Copies at most n bytes of s into buf (size len) so that the result is
 * printable ASCII without quotes or backslashes (callers quote the value):
 * other bytes become
 * \xHH, and text beyond LOG_ESCAPE_MAX output bytes is cut and marked with
 * "...".  Returns buf.
 */
const char	*log_escape(char *buf, size_t len, const char *s, size_t n);
/*
 * An envelope address for a quoted value (from="<%s>"): a quoted local
 * part may hold spaces, quotes and '>', so it is escaped like any client
 * text.  buf is an array of LOG_ESCAPE_MAX + 1 bytes.
 */
#define log_addr(buf, a)	log_escape((buf), sizeof(buf), (a), strlen(a))

#endif
