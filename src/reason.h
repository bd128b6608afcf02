/*
 * reason.h: the one vocabulary of refusal reasons.
 *
 * Every non-PASS verdict, every refusal reply, log line, metric label and
 * (later) reputation counter names one of these codes.  Adding a check
 * means adding a row here, nothing else.  The table is an X-macro so the
 * enum and the name array cannot drift apart.
 */
#ifndef MOAT_REASON_H
#define MOAT_REASON_H

#define REASON_TABLE(X)							\
	X(NONE,			"none")					\
	X(PROTO_PREGREET,	"proto.pregreet")			\
	X(PROTO_LINE_TOO_LONG,	"proto.line_too_long")			\
	X(PROTO_NON_SMTP,	"proto.non_smtp")			\
	X(PROTO_BARE_LF,	"proto.bare_lf")			\
	X(PROTO_BARE_CR,	"proto.bare_cr")			\
	X(PROTO_PIPELINING,	"proto.pipelining")			\
	X(PROTO_ERRORS,		"proto.errors")				\
	X(PROTO_JUNK,		"proto.junk")				\
	X(PROTO_SYNTAX,		"proto.syntax")				\
	X(PROTO_UNKNOWN_CMD,	"proto.unknown_command")		\
	X(PROTO_SEQUENCE,	"proto.sequence")			\
	X(PROTO_NUL,		"proto.nul")				\
	X(PROTO_8BIT,		"proto.8bit_command")			\
	X(PROTO_BAD_HELO,	"proto.bad_helo")			\
	X(PROTO_BAD_ADDRESS,	"proto.bad_address")			\
	X(PROTO_TIMEOUT,	"proto.timeout")			\
	X(PROTO_SLOW_DATA,	"proto.slow_data")			\
	X(PROTO_SESSION_TIME,	"proto.session_time")			\
	X(PROTO_TOO_MANY_RCPTS,	"proto.too_many_rcpts")			\
	X(RELAY_DENIED,		"relay.denied")				\
	X(SIZE_EXCEEDED,	"size.exceeded")			\
	X(QUEUE_FULL,		"queue.full")				\
	X(QUEUE_DISK,		"queue.disk_low")			\
	X(QUEUE_IO,		"queue.io_error")			\
	X(LIMIT_CONN_GLOBAL,	"limit.conn_global")			\
	X(LIMIT_CONN_PER_IP,	"limit.conn_per_ip")			\
	X(LIMIT_CONN_PER_NET,	"limit.conn_per_net")			\
	X(LIMIT_CONN_RATE,	"limit.conn_rate")			\
	X(LIMIT_MSG_RATE,	"limit.msg_rate")			\
	X(LIMIT_RCPT_RATE,	"limit.rcpt_rate")			\
	X(LIMIT_BYTE_RATE,	"limit.byte_rate")			\
	X(LIMIT_FD,		"limit.fd_exhausted")			\
	X(LIMIT_OVERLOAD,	"limit.overload")			\
	X(DHA_INVALID_RCPT,	"dha.invalid_rcpt")			\
	X(DHA_BLOCKED,		"dha.blocked")				\
	X(REP_DNSBL,		"rep.dnsbl")				\
	X(REP_SCORE,		"rep.score")				\
	X(REP_DENY_LIST,	"rep.deny_list")			\
	X(CONTENT_VIRUS,	"content.virus")			\
	X(CONTENT_SPAM,		"content.spam")				\
	X(SHUTDOWN,		"moat.shutdown")

enum reason {
#define REASON_ENUM(id, name) REASON_##id,
	REASON_TABLE(REASON_ENUM)
#undef REASON_ENUM
	REASON_MAX
};

const char	*reason_name(enum reason);
/* Returns REASON_MAX when the name is unknown. */
enum reason	 reason_from_name(const char *);

#endif
