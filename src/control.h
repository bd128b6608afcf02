/*
 * control.h: the operator control channel (moatctl <-> moatd).
 *
 * Protocol, over a UNIX stream socket (mode 0600): the client sends ONE
 * line of at most CONTROL_LINE_MAX bytes ending in "\n": space-separated
 * words, optionally "--json" first, then the command and its arguments.
 * The server answers a first line "OK" or "ERR <message>", then the body
 * (text for humans, or one JSON document with --json; with --json an ERR
 * body is {"error":"<message>"}), then closes the connection.
 *
 * The commands are one X-macro table, CONTROL_COMMANDS, read both by the
 * PURE side (control_parse.c: syntax, arity, usage; linked into moatctl
 * so that usage errors are found before connecting) and by the server
 * (control.c: the handler of each command).
 */
#ifndef MOAT_CONTROL_H
#define MOAT_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONTROL_LINE_MAX	4096	/* request line, without "\n" */
#define CONTROL_MAX_ARGS	16	/* words, without "--json" */
#define CONTROL_TIMEOUT		10	/* seconds per connection */
#define CONTROL_MAX_CONNS	16	/* concurrent control connections */

/*
 * X(id, handler, words, min args, max args, usage): words is the command
 * (one or two words); min/max count the arguments after it.
 */
#define CONTROL_COMMANDS(X)						\
	X(STATUS, status, "status", 0, 0, "status")			\
	X(QUEUE_LIST, queue_list, "queue list", 0, 6,			\
	    "queue list [--domain D] [--state ready|active|deferred|held]" \
	    " [--older-than DURATION]")					\
	X(QUEUE_SUMMARY, queue_summary, "queue summary", 0, 0,		\
	    "queue summary")						\
	X(QUEUE_SHOW, queue_show, "queue show", 1, 1, "queue show ID")	\
	X(QUEUE_FLUSH, queue_flush, "queue flush", 0, 1,		\
	    "queue flush [ID]")						\
	X(QUEUE_DELETE, queue_delete, "queue delete", 1, 1,		\
	    "queue delete ID")						\
	X(QUEUE_HOLD, queue_hold, "queue hold", 1, 1,			\
	    "queue hold ID|--all")					\
	X(QUEUE_RELEASE, queue_release, "queue release", 1, 1,		\
	    "queue release ID|--all")					\
	X(RELOAD, reload, "reload", 0, 0, "reload")			\
	X(HELP, help, "help", 0, 0, "help")

enum control_cmd {
#define CONTROL_CMD_ENUM(id, fn, words, min, max, usage) CONTROL_CMD_##id,
	CONTROL_COMMANDS(CONTROL_CMD_ENUM)
#undef CONTROL_CMD_ENUM
	CONTROL_CMD_MAX
};

struct control_command {
	enum control_cmd	 id;
	const char		*words;		/* "queue list" */
	int			 min, max;	/* arguments after words */
	const char		*usage;
};

/* A parsed request: argv points into buf. */
struct control_request {
	bool		 json;
	int		 argc;
	char		*argv[CONTROL_MAX_ARGS];
	char		 buf[CONTROL_LINE_MAX + 1];
};

/* Filters of "queue list". */
struct control_list_filter {
	const char	*domain;	/* NULL = any; points into argv */
	int		 state;		/* enum delivery_state, -1 = any */
	int64_t		 older_than;	/* seconds, 0 = any */
};

/*
 * PURE request parser (fuzzed): line is len bytes without the "\n" (a
 * trailing "\r" is ignored).  Splits it into at most CONTROL_MAX_ARGS
 * words of printable ASCII separated by spaces or tabs, and takes a
 * leading "--json" as the flag.  Returns 0, or -1 with a static reason
 * in *why (too long, NUL, control or 8-bit byte, empty, too many words).
 */
int		 control_parse_request(const char *line, size_t len,
		    struct control_request *out, const char **why);
/*
 * Finds the command of argv, or NULL when it is unknown.  Its arguments
 * start at argv[control_parse_nwords(cmd)]; arity and options are
 * checked by control_parse_check() on those arguments.
 */
const struct control_command *
		 control_parse_lookup(int argc, char **argv);
int		 control_parse_nwords(const struct control_command *);
/* Returns 0 if argc arguments (after the words) suit cmd, else -1. */
int		 control_parse_check(const struct control_command *,
		    int argc, char **argv, const char **why);
/* The command table, CONTROL_CMD_MAX entries. */
const struct control_command *
		 control_parse_commands(void);
/* "10m", "2h", "30s", "1d", "45" (seconds) -> seconds; -1 if invalid. */
int64_t		 control_parse_duration(const char *);
/* Options of "queue list"; returns 0 or -1 with a static reason. */
int		 control_parse_list_filter(int argc, char **argv,
		    struct control_list_filter *, const char **why);

/* Server side (control.c), inside moatd. */
struct event_base;
struct delivery;
struct spool;
struct config;
struct json;
struct control;

struct control_hooks {
	/* Adds extra fields to the status object (may be NULL). */
	void	(*status)(void *arg, struct json *);
	/* Reloads the configuration; -1 with an allocated *cause. */
	int	(*reload)(void *arg, char **cause);
	void	*arg;
};

/*
 * Removes a stale socket file at path (refusing if a daemon answers on
 * it or it is not a socket), binds with mode 0600 and listens.  hooks is
 * copied; delivery and spool must outlive the control.
 */
struct control	*control_new(struct event_base *, const char *path,
		    struct delivery *, struct spool *,
		    const struct control_hooks *, char **cause);
/* The config shown by status (path); moatd calls it again on reload. */
void		 control_set_config(struct control *, const struct config *);
/* Closes the socket and every open connection, unlinks the path. */
void		 control_free(struct control *);

#endif
