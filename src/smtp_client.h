/*
 * smtp_client.h: asynchronous SMTP client to the protected server.
 *
 * One struct smtp_client is one connection.  It connects, reads the
 * greeting, says EHLO (HELO if refused), and then runs transactions one
 * at a time: MAIL, RCPT..., DATA (pipelined when the server offers
 * PIPELINING), the body streamed from the spool file with dot-stuffing
 * and canonical CRLF, and the final dot.  A connection is reused for
 * several transactions; the owner decides when to QUIT.
 *
 * Every reply line is bounded; a server that sends garbage or too much is
 * a protocol failure, not a crash.
 */
#ifndef MOAT_SMTP_CLIENT_H
#define MOAT_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evdns_base;
struct spool_message;
struct smtp_client;

#define SMTP_CLIENT_REPLY_MAX	512

enum smtp_client_status {
	SMTP_CLIENT_OK,		/* replies below are meaningful */
	SMTP_CLIENT_NETWORK,	/* connect failed, timeout, connection lost */
	SMTP_CLIENT_PROTOCOL	/* the server broke the protocol */
};

/*
 * text is the whole last line of the reply including its code
 * ("550 5.1.1 <x@y>: unknown"), CRLF removed, non-printable bytes as '?',
 * cut to fit.  For a NETWORK/PROTOCOL failure conn.code is 0 and
 * conn.text describes it ("connect: Connection refused", "timeout
 * waiting for reply to RCPT", "connection closed by server").
 */
struct smtp_client_reply {
	int	code;		/* 0 = never got one */
	char	text[SMTP_CLIENT_REPLY_MAX];	/* last line, CRLF removed */
};

struct smtp_client_options {
	const char	*helo_name;
	uint64_t	 connect_timeout;	/* ms */
	uint64_t	 reply_timeout;		/* ms, per reply */
	uint64_t	 data_timeout;		/* ms, for the final reply */
};

/*
 * Outcome of a connection attempt (ready callback) or of a transaction
 * (done callback).  For the ready callback only status and conn are set.
 * For a transaction: if status != OK or conn.code is set (MAIL refused),
 * the whole transaction failed with conn; else rcpt[i] holds each
 * recipient's reply and data the reply to the final dot (code 0 if no
 * recipient was accepted).
 *
 * Details (smtp_client.c):
 *  - ready with status OK and conn.code >= 400 means the server refused
 *    the session (4xx/5xx greeting, or EHLO and HELO refused): conn is
 *    that reply, e.g. 421 or 554.  The client is then not freed but is
 *    unusable: the owner must smtp_client_free() (or _quit()) it; a
 *    transaction on it fails with NETWORK.  Otherwise conn is the
 *    EHLO/HELO reply (2xx).
 *  - data holds the DATA reply when DATA itself was refused (4xx/5xx)
 *    while recipients had been accepted, so accepted recipients never
 *    look delivered without a 2xx in data.
 *  - a recipient whose reply never came (the server said 421 and
 *    closed) has code 0: treat it as a temporary failure.
 *  - if the connection is lost after the outcome is already known (MAIL
 *    or all RCPTs refused, DATA refused, 421), the result is still OK
 *    with those replies; the client is then unusable and its next
 *    transaction fails with NETWORK (so free it or let that happen).
 *  - a local failure (spool read error) is reported as NETWORK with a
 *    conn.text starting with "local:"; the connection is dropped so the
 *    server discards the partial message.
 *  - the result and its rcpt array are valid only during the callback.
 */
struct smtp_client_result {
	enum smtp_client_status		 status;
	struct smtp_client_reply	 conn;
	struct smtp_client_reply	*rcpt;	/* nrcpts entries */
	size_t				 nrcpts;
	struct smtp_client_reply	 data;
};

typedef void	(*smtp_client_cb)(void *arg, struct smtp_client *,
		    const struct smtp_client_result *);

/*
 * Starts connecting to host:port (an IP literal, or a name resolved with
 * dns, which may be NULL for literals only).  ready is called once: with
 * status OK after a 2xx greeting and EHLO/HELO, or with the failure; after
 * a failure the client is already freed.  The callback never runs before
 * this function returns.  Returns NULL only if memory is exhausted (no
 * callback then).
 */
struct smtp_client	*smtp_client_connect(struct event_base *,
			    struct evdns_base *dns, const char *host,
			    const char *port,
			    const struct smtp_client_options *,
			    smtp_client_cb ready, void *arg);
/*
 * Runs one transaction for msg (the client reads msg->fd from
 * msg->body_off but does not own msg; msg must stay valid until done).
 * done is called once.  After a NETWORK or PROTOCOL result the client is
 * already freed; after OK it can run another transaction.
 * Returns -1 if a transaction is already running (or on allocation
 * failure); the callback never runs before this function returns.  The
 * callback may call smtp_client_send/quit/free on this client.
 */
int			 smtp_client_send(struct smtp_client *,
			    const struct spool_message *msg,
			    smtp_client_cb done, void *arg);
/* Server advertised... (valid after ready). */
bool			 smtp_client_has_pipelining(const struct smtp_client *);
uint64_t		 smtp_client_max_size(const struct smtp_client *);
/*
 * Sends QUIT politely and frees the client in the background (within
 * the reply timeout, 5 s at most); if a transaction is running or the
 * connection is gone it frees at once.  No callback is called.
 */
void			 smtp_client_quit(struct smtp_client *);
/* Drops the connection now and frees; no callback is called. */
void			 smtp_client_free(struct smtp_client *);

#endif
