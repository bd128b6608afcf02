/*
 * limiter.h: per-client and per-network limits (DoS protection).
 *
 * Counters are kept per client address and per network: IPv4 /32 and
 * /24; IPv6 /64 (one host usually owns a whole /64, so that is its
 * "address"), /56 and /48.  Each counts concurrent connections and, over
 * a sliding minute, new connections, messages, recipients and bytes.
 *
 * The interface does not show where counters live: today a bounded
 * in-memory table on the event loop; the reputation store can back it
 * later (shared between nodes) without changing the callers.
 */
#ifndef MOAT_LIMITER_H
#define MOAT_LIMITER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "reason.h"

struct config;
struct limiter_entry;

#define LIMITER_NETS	2	/* v4: /24; v6: /56, /48 */

/* What a session holds while connected (released at disconnect). */
struct limiter_client {
	struct limiter_entry	*ip;
	struct limiter_entry	*net[LIMITER_NETS];
};

/*
 * Counts a new connection.  Returns true and fills *lc when it is within
 * the limits; false with *why otherwise (nothing is held then).
 */
bool	limiter_connect(const struct config *, const struct sockaddr *,
	    time_t now, struct limiter_client *lc, enum reason *why);
void	limiter_disconnect(struct limiter_client *);
/* A MAIL command: false with *why if the message rate or byte rate of
 * the client is exhausted. */
bool	limiter_message(const struct config *, struct limiter_client *,
	    time_t now, enum reason *why);
/* A RCPT command: false with *why when over the recipient rate. */
bool	limiter_rcpt(const struct config *, struct limiter_client *,
	    time_t now, enum reason *why);
/* Message bytes accepted from the client. */
void	limiter_bytes(struct limiter_client *, uint64_t, time_t now);
/* Drops idle entries; call every few seconds.  Bounded work per call. */
void	limiter_sweep(time_t now);
uint64_t limiter_entries(void);
/* The client's current counts, for `moatctl status` and tests. */
unsigned limiter_conns(const struct limiter_client *);

#endif
