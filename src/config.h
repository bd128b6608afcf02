/*
 * config.h: moat's configuration, parsed from one file.
 *
 * The file uses the nginx-like syntax of libucl (key = value; blocks in
 * braces; lists in brackets; size and time suffixes such as 25mb, 10min).
 * Every key has a safe default; config_load() either returns a fully
 * valid struct config or fails with "file:line: key: reason" and changes
 * nothing, so a reload can never half-apply.
 *
 * Times are in milliseconds, sizes in bytes.
 */
#ifndef MOAT_CONFIG_H
#define MOAT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_LISTEN	16
#define CONFIG_MAX_SERVERS	8
#define CONFIG_HOST_MAX		256	/* RFC 5321 domain 255 + NUL */
#define CONFIG_PATH_MAX		1024

/* What a protocol check does when it trips (issue: connection analysis). */
enum config_action {
	CONFIG_ACTION_LOG,	/* observe: count and log, do nothing */
	CONFIG_ACTION_TARPIT,
	CONFIG_ACTION_TEMPFAIL,
	CONFIG_ACTION_REJECT,
	CONFIG_ACTION_DROP
};

struct config_check {
	bool			enabled;
	enum config_action	action;
};

struct config_server {
	char		host[CONFIG_HOST_MAX];	/* name or IP literal */
	char		port[8];
	int		priority;		/* lower is tried first */
};

struct config_domain {
	char			name[CONFIG_HOST_MAX];	/* lower case */
	struct config_server	servers[CONFIG_MAX_SERVERS];
	size_t			nservers;	/* sorted by priority */
};

struct config {
	char		 path[CONFIG_PATH_MAX];	/* file it was read from */

	/* listen = ["127.0.0.1:2525", "[::1]:2525"] */
	char		 listen[CONFIG_MAX_LISTEN][128];
	size_t		 nlisten;
	char		 hostname[CONFIG_HOST_MAX];	/* banner, Received */
	char		 queue_dir[CONFIG_PATH_MAX];
	char		 data_dir[CONFIG_PATH_MAX];
	char		 control_socket[CONFIG_PATH_MAX];
	char		 log_level[16];		/* err|warn|info|debug */
	bool		 log_syslog;

	/* domain "example.test" { server = ["127.0.0.1:2526"]; } */
	struct config_domain	*domains;
	size_t			 ndomains;

	/* smtp { ... } */
	uint64_t	 message_size_max;
	unsigned	 rcpt_max;		/* recipients per message */
	size_t		 line_max;		/* text line in DATA */
	unsigned	 max_sessions;		/* global concurrent sessions */
	uint64_t	 timeout_greeting;	/* client silent after banner */
	uint64_t	 timeout_command;	/* between commands */
	uint64_t	 timeout_data;		/* between DATA reads */
	uint64_t	 timeout_session;	/* whole session */
	uint64_t	 data_min_rate;		/* bytes/s, 0 = off */
	uint64_t	 data_rate_grace;	/* before data_min_rate applies */
	bool		 bare_lf_normalise;	/* else reject */

	/* guard { ... }: connection analysis */
	uint64_t		greet_pause;	/* 0 = off */
	struct config_check	check_pregreet;
	struct config_check	check_non_smtp;
	struct config_check	check_line_too_long;
	struct config_check	check_bare_lf;
	struct config_check	check_pipelining;
	struct config_check	check_errors;
	struct config_check	check_junk;
	struct config_check	check_helo;
	unsigned		errors_soft;	/* tarpit past this */
	unsigned		errors_hard;	/* 421 past this */
	uint64_t		error_delay;	/* tarpit delay per reply */
	unsigned		junk_max;	/* NOOP/RSET/VRFY/HELP */
	uint64_t		pass_remember;	/* skip greet pause after pass */

	/* limits { ... }: DoS protection (0 = unlimited) */
	unsigned	 conn_per_ip;
	unsigned	 conn_per_net;		/* per IPv4 /24, IPv6 /64 */
	unsigned	 conn_rate_per_ip;	/* new connections per minute */
	unsigned	 msg_rate_per_ip;	/* messages per minute */
	unsigned	 rcpt_rate_per_ip;	/* recipients per minute */
	uint64_t	 byte_rate_per_ip;	/* bytes per minute */
	unsigned	 overload_sessions;	/* overload mode threshold */

	/* queue { ... } */
	uint64_t	 queue_max_messages;	/* 0 = unlimited */
	uint64_t	 queue_max_bytes;	/* 0 = unlimited */
	uint64_t	 disk_min_free;		/* bytes free below: 452 */
	uint64_t	 queue_lifetime;	/* then bounce */
	uint64_t	 delay_warning;		/* 0 = no delayed DSN */

	/* delivery { ... } */
	uint64_t	 retry_min;
	uint64_t	 retry_max;
	unsigned	 delivery_concurrency;	/* connections per domain */
	unsigned	 delivery_rate;		/* messages/s per domain, 0 = off */
	unsigned	 messages_per_connection;
	uint64_t	 connect_timeout;
	uint64_t	 reply_timeout;
	unsigned	 circuit_failures;	/* consecutive, to open */
	uint64_t	 circuit_probe;		/* probe interval while open */
	char		 dsn_relay[CONFIG_HOST_MAX + 8];	/* host:port, "" = first server */

	/* control { ... } */
	char		 http_listen[128];	/* "" = off */
};

/*
 * Reads and validates path.  On success returns 0 and a new config in
 * *out.  On failure returns -1 and an allocated "file:line: key: reason"
 * in *cause; nothing else changes.
 */
int		 config_load(const char *path, struct config **out,
		    char **cause);
/* The embedded defaults, as if from an empty file. */
struct config	*config_default(void);
void		 config_free(struct config *);
/* The protected domain for an address's domain, or NULL (never relay). */
const struct config_domain *
		 config_find_domain(const struct config *, const char *domain);
const char	*config_action_name(enum config_action);
/*
 * Splits "host:port", "host", "[v6]:port" or "[v6]" into host (brackets
 * removed) and port; defport is used when the port is left out (NULL:
 * the port is required).  Returns 0, or -1 with an allocated reason.
 */
int		 config_parse_hostport(const char *, const char *defport,
		    char *host, size_t hostlen, char *port, size_t portlen,
		    char **cause);
/* Writes the key table as Markdown (docs/configuration.md is checked
 * against it). */
void		 config_dump_doc(FILE *);

#endif
