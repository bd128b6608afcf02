/*
 * smtp_session.h: the inbound SMTP server session (RFC 5321) and its
 * protocol guard.
 *
 * One struct session per client connection, all on the one event loop.
 * The daemon (moatd.c) fills a struct smtp_server once; the listener hands
 * every accepted socket to smtp_session_accept().
 */
#ifndef MOAT_SMTP_SESSION_H
#define MOAT_SMTP_SESSION_H

#include <stdbool.h>
#include <sys/socket.h>

struct config;
struct limiter_client;
struct delivery;
struct event_base;
struct spool;
struct spool_sync;

struct smtp_server {
	struct event_base	*base;
	const struct config	*cfg;		/* current; swapped on reload */
	struct spool		*spool;
	struct spool_sync	*sync;
	struct delivery		*delivery;
	bool			 shutting_down;
};

void		smtp_session_init(struct smtp_server *);
/* Takes ownership of fd (non-blocking) and of the limits it holds. */
void		smtp_session_accept(int fd, const struct sockaddr *,
		    socklen_t, const struct limiter_client *);
/* Frees every session (after the loop ended). */
void		smtp_session_free_all(void);
/* Overload mode: many sessions, so timeouts and error limits tighten. */
bool		smtp_session_overload(void);
/* 421 to every session and close them (SIGTERM). */
void		smtp_session_shutdown_all(void);
unsigned	smtp_session_count(void);
/*
 * True while some session is paused: in its greet pause, holding a
 * tarpitted reply or waiting for a commit.  For tests and the fuzzer,
 * whose client waits for moat before it hangs up.
 */
bool		smtp_session_waiting(void);

#endif
