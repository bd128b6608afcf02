/*
 * limits.h: per-client and per-network limits (DoS protection).
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
#ifndef MOAT_LIMITS_H
#define MOAT_LIMITS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "reason.h"

struct config;
struct limits_entry;

#define LIMITS_NETS	2	/* v4: /24; v6: /56, /48 */

/* What a session holds while connected (released at disconnect). */
struct limits_client {
	struct limits_entry	*ip;
	struct limits_entry	*net[LIMITS_NETS];
};

/*
 * Counts a new connection.  Returns true and fills *lc when it is within
 * the limits; false with *why otherwise (nothing is held then).
 */
bool	limits_connect(const struct config *, const struct sockaddr *,
	    time_t now, struct limits_client *lc, enum reason *why);
void	limits_disconnect(struct limits_client *);
/* A MAIL command: false with *why if the message rate or byte rate of
 * the client is exhausted. */
bool	limits_message(const struct config *, struct limits_client *,
	    time_t now, enum reason *why);
/* A RCPT command: false with *why when over the recipient rate. */
bool	limits_rcpt(const struct config *, struct limits_client *,
	    time_t now, enum reason *why);
/* Message bytes accepted from the client. */
void	limits_bytes(struct limits_client *, uint64_t, time_t now);
/* Drops idle entries; call every few seconds.  Bounded work per call. */
void	limits_sweep(time_t now);
uint64_t limits_entries(void);
/* The client's current counts, for `moatctl status` and tests. */
unsigned limits_conns(const struct limits_client *);

#endif
