/*
 * delivery.h: relays queued messages to the protected servers.
 *
 * In memory it keeps one entry per queued message (rebuilt from the spool
 * at start, oldest first) and one destination per protected domain with
 * its circuit breaker.  Messages that are due are sent oldest first over
 * pooled SMTP client connections, within a concurrency and rate limit per
 * destination.  2xx removes a message, 4xx or a network failure defers it
 * with exponential backoff, 5xx or expiry bounces it (DSN) to its sender.
 * Consecutive failures open the destination's circuit: messages wait and
 * one probe is tried on a schedule; a successful probe closes it and the
 * backlog drains at the configured pace.
 */
#ifndef MOAT_DELIVERY_H
#define MOAT_DELIVERY_H

#include <stdbool.h>
#include <stdint.h>

#include "qid.h"
#include "reason.h"

struct config;
struct event_base;
struct spool;
struct spool_envelope;
struct spool_sync;
struct delivery;

enum delivery_state {
	DELIVERY_READY,		/* due now, waiting for a connection */
	DELIVERY_ACTIVE,	/* being sent */
	DELIVERY_DEFERRED,	/* waiting for its next attempt */
	DELIVERY_HELD		/* held by the operator */
};

enum delivery_circuit {
	DELIVERY_CIRCUIT_CLOSED,	/* normal */
	DELIVERY_CIRCUIT_OPEN,		/* down: only probes */
	DELIVERY_CIRCUIT_HALF_OPEN	/* probe in flight */
};

struct delivery_entry_info {
	char			 qid[QID_LEN + 1];
	char			 domain[256];
	char			 sender[257];
	const char		*first_rcpt;
	size_t			 nrcpts;
	uint64_t		 size;
	int64_t			 created;	/* unix seconds */
	int64_t			 next_attempt;	/* unix seconds, 0 = now */
	unsigned		 attempts;
	enum delivery_state	 state;
	const char		*last_error;	/* server reply or "" */
};

struct delivery_dest_info {
	const char		*domain;
	const char		*server;	/* host:port in use */
	enum delivery_circuit	 circuit;
	unsigned		 failures;	/* consecutive */
	int64_t			 next_probe;	/* unix seconds, if open */
	unsigned		 connections;	/* open now */
	uint64_t		 messages;	/* queued for it */
	uint64_t		 bytes;
	int64_t			 oldest;	/* created of oldest, 0 if none */
	uint64_t		 delivered, deferred, bounced;
};

struct delivery_stats {
	uint64_t	 messages;	/* in queue, held included */
	uint64_t	 bytes;
	uint64_t	 held;
	uint64_t	 active;
	uint64_t	 delivered;	/* since start */
	uint64_t	 deferred;
	uint64_t	 bounced;
	uint64_t	 expired;
	uint64_t	 duplicates;	/* delivered again after a crash */
};

struct delivery	*delivery_new(struct event_base *, struct spool *,
		    struct spool_sync *, const struct config *);
/* Swap in a new config (reload); the caller keeps it alive. */
void		 delivery_set_config(struct delivery *, const struct config *);
/* Rebuilds the in-memory queue from the spool; returns messages or -1. */
int		 delivery_load(struct delivery *);
/* A message just became durable: schedule it now. */
void		 delivery_enqueue(struct delivery *,
		    const struct spool_envelope *);
/*
 * May a new message of about size bytes be accepted?  False when the
 * queue is at its message or byte limit or the disk is below its free
 * minimum; *why says which (REASON_QUEUE_FULL, REASON_QUEUE_DISK).
 */
bool		 delivery_accepting(struct delivery *, uint64_t size,
		    enum reason *why);
/* Stop starting new deliveries, close connections; frees. */
void		 delivery_free(struct delivery *);

/* Operator control (control.c).  qid NULL means every message.
 * Return the number of messages affected, or -1 for an unknown qid. */
typedef void	(*delivery_entry_cb)(void *arg,
		    const struct delivery_entry_info *);
typedef void	(*delivery_dest_cb)(void *arg,
		    const struct delivery_dest_info *);
void		 delivery_iterate(struct delivery *, delivery_entry_cb,
		    void *arg);		/* oldest first */
int		 delivery_info(struct delivery *, const char *qid,
		    delivery_entry_cb, void *arg);
void		 delivery_iterate_dests(struct delivery *, delivery_dest_cb,
		    void *arg);
void		 delivery_get_stats(struct delivery *,
		    struct delivery_stats *);
int		 delivery_flush(struct delivery *, const char *qid);
int		 delivery_delete(struct delivery *, const char *qid);
int		 delivery_hold(struct delivery *, const char *qid);
int		 delivery_release(struct delivery *, const char *qid);
const char	*delivery_state_name(enum delivery_state);
/*
 * Retry delay in ms after attempts failed attempts (0 counts as 1):
 * min(max_ms, min_ms * 2^(attempts-1)) with +-10% jitter.
 */
uint64_t	 delivery_backoff(unsigned attempts, uint64_t min_ms,
		    uint64_t max_ms);
const char	*delivery_circuit_name(enum delivery_circuit);

#endif
