/*
 * limiter.c: the in-memory counters of limiter.h.
 *
 * A chained hash table of entries keyed by (family, masked address,
 * prefix length).  An entry lives while a connection holds it or while
 * its rate windows still count (two minutes); limiter_sweep frees the
 * rest a slice of buckets at a time, so no call does unbounded work.
 * The table is capped at LIMITER_MAX_ENTRIES: past it new clients are
 * admitted without per-client counting (fail open, logged) rather than
 * letting an address flood grow memory without bound; the global session
 * limit still holds then.
 */
#include <netinet/in.h>

#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "limiter.h"
#include "log.h"

#define LIMITER_BUCKETS		(1u << 16)
#define LIMITER_MAX_ENTRIES	(1u << 20)
#define LIMITER_WINDOW		60	/* seconds */
#define LIMITER_SWEEP_SLICE	4096	/* buckets per sweep call */

/* A sliding minute: the count of this window and of the one before. */
struct limits_rate {
	time_t		start;
	uint64_t	cur;
	uint64_t	prev;
};

struct limiter_entry {
	struct limiter_entry	*next;
	uint8_t			 key[18];	/* family, prefix, address */
	unsigned		 conns;
	time_t			 last;
	struct limits_rate	 conn_rate, msg_rate, rcpt_rate, byte_rate;
};

static struct limiter_entry	*buckets[LIMITER_BUCKETS];
static uint64_t			 nentries;
static unsigned			 sweep_next;
static time_t			 full_logged;

static void
rate_roll(struct limits_rate *r, time_t now)
{
	time_t	window = now - now % LIMITER_WINDOW;

	if (r->start == window)
		return;
	r->prev = r->start == window - LIMITER_WINDOW ? r->cur : 0;
	r->cur = 0;
	r->start = window;
}

/* The count over the last minute, weighting the previous window. */
static uint64_t
rate_count(struct limits_rate *r, time_t now)
{
	uint64_t elapsed;

	rate_roll(r, now);
	elapsed = (uint64_t)(now - r->start);
	return r->cur + r->prev * (LIMITER_WINDOW - elapsed) / LIMITER_WINDOW;
}

static void
rate_add(struct limits_rate *r, time_t now, uint64_t n)
{
	rate_roll(r, now);
	r->cur += n;
}

static uint32_t
key_hash(const uint8_t *key)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < 18; i++) {
		h ^= key[i];
		h *= 16777619u;
	}
	return h;
}

static void
make_key(uint8_t *key, const struct sockaddr *sa, unsigned prefix)
{
	const uint8_t	*addr;
	size_t		 len;

	memset(key, 0, 18);
	if (sa->sa_family == AF_INET) {
		addr = (const uint8_t *)
		    &((const struct sockaddr_in *)sa)->sin_addr;
		len = 4;
	} else {
		addr = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		len = 16;
	}
	key[0] = (uint8_t)sa->sa_family;
	key[1] = (uint8_t)prefix;
	for (size_t i = 0; i < len && i * 8 < prefix; i++) {
		unsigned bits = prefix - (unsigned)i * 8;

		key[2 + i] = bits >= 8 ? addr[i] :
		    (uint8_t)(addr[i] & (0xff << (8 - bits)));
	}
}

static struct limiter_entry *
lookup(const uint8_t *key, time_t now)
{
	uint32_t		 b = key_hash(key) & (LIMITER_BUCKETS - 1);
	struct limiter_entry	*e;

	for (e = buckets[b]; e != NULL; e = e->next)
		if (memcmp(e->key, key, sizeof e->key) == 0)
			break;
	if (e == NULL) {
		if (nentries >= LIMITER_MAX_ENTRIES) {
			if (full_logged != now) {
				full_logged = now;
				log_warnx("event=limits_full entries=%llu",
				    (unsigned long long)nentries);
			}
			return NULL;
		}
		if ((e = calloc(1, sizeof *e)) == NULL)
			return NULL;
		memcpy(e->key, key, sizeof e->key);
		e->next = buckets[b];
		buckets[b] = e;
		nentries++;
	}
	e->last = now;
	return e;
}

bool
limiter_connect(const struct config *c, const struct sockaddr *sa,
    time_t now, struct limiter_client *lc, enum reason *why)
{
	static const unsigned	 v4[] = { 32, 24, 0 };
	static const unsigned	 v6[] = { 64, 56, 48 };
	const unsigned		*prefixes;
	uint8_t			 key[18];

	memset(lc, 0, sizeof *lc);
	if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
		return true;
	prefixes = sa->sa_family == AF_INET ? v4 : v6;
	make_key(key, sa, prefixes[0]);
	if ((lc->ip = lookup(key, now)) == NULL)
		return true;
	for (size_t i = 0; i < LIMITER_NETS; i++) {
		if (prefixes[i + 1] == 0)
			continue;
		make_key(key, sa, prefixes[i + 1]);
		lc->net[i] = lookup(key, now);
	}
	if (c->conn_per_ip > 0 && lc->ip->conns >= c->conn_per_ip) {
		*why = REASON_LIMIT_CONN_PER_IP;
		goto refuse;
	}
	for (size_t i = 0; i < LIMITER_NETS; i++) {
		if (lc->net[i] != NULL && c->conn_per_net > 0 &&
		    lc->net[i]->conns >= c->conn_per_net) {
			*why = REASON_LIMIT_CONN_PER_NET;
			goto refuse;
		}
	}
	/* A refused attempt counts too: hammering keeps the door shut. */
	rate_add(&lc->ip->conn_rate, now, 1);
	if (c->conn_rate_per_ip > 0 &&
	    rate_count(&lc->ip->conn_rate, now) > c->conn_rate_per_ip) {
		*why = REASON_LIMIT_CONN_RATE;
		goto refuse;
	}
	lc->ip->conns++;
	for (size_t i = 0; i < LIMITER_NETS; i++)
		if (lc->net[i] != NULL)
			lc->net[i]->conns++;
	return true;
refuse:
	memset(lc, 0, sizeof *lc);
	return false;
}

void
limiter_disconnect(struct limiter_client *lc)
{
	if (lc->ip != NULL && lc->ip->conns > 0)
		lc->ip->conns--;
	for (size_t i = 0; i < LIMITER_NETS; i++)
		if (lc->net[i] != NULL && lc->net[i]->conns > 0)
			lc->net[i]->conns--;
	memset(lc, 0, sizeof *lc);
}

bool
limiter_message(const struct config *c, struct limiter_client *lc,
    time_t now, enum reason *why)
{
	if (lc->ip == NULL)
		return true;
	lc->ip->last = now;
	if (c->byte_rate_per_ip > 0 &&
	    rate_count(&lc->ip->byte_rate, now) >= c->byte_rate_per_ip) {
		*why = REASON_LIMIT_BYTE_RATE;
		return false;
	}
	if (c->msg_rate_per_ip > 0 &&
	    rate_count(&lc->ip->msg_rate, now) >= c->msg_rate_per_ip) {
		*why = REASON_LIMIT_MSG_RATE;
		return false;
	}
	rate_add(&lc->ip->msg_rate, now, 1);
	return true;
}

bool
limiter_rcpt(const struct config *c, struct limiter_client *lc, time_t now,
    enum reason *why)
{
	if (lc->ip == NULL)
		return true;
	if (c->rcpt_rate_per_ip > 0 &&
	    rate_count(&lc->ip->rcpt_rate, now) >= c->rcpt_rate_per_ip) {
		*why = REASON_LIMIT_RCPT_RATE;
		return false;
	}
	rate_add(&lc->ip->rcpt_rate, now, 1);
	return true;
}

void
limiter_bytes(struct limiter_client *lc, uint64_t n, time_t now)
{
	if (lc->ip != NULL)
		rate_add(&lc->ip->byte_rate, now, n);
}

void
limiter_sweep(time_t now)
{
	for (unsigned i = 0; i < LIMITER_SWEEP_SLICE; i++) {
		struct limiter_entry **pp = &buckets[sweep_next], *e;

		while ((e = *pp) != NULL) {
			if (e->conns == 0 &&
			    now - e->last > 2 * LIMITER_WINDOW) {
				*pp = e->next;
				free(e);
				nentries--;
			} else
				pp = &e->next;
		}
		sweep_next = (sweep_next + 1) & (LIMITER_BUCKETS - 1);
	}
}

uint64_t
limiter_entries(void)
{
	return nentries;
}

unsigned
limiter_conns(const struct limiter_client *lc)
{
	return lc->ip != NULL ? lc->ip->conns : 0;
}
