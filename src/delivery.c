/*
 * delivery.c: relays queued messages to the protected servers.
 *
 * The in-memory queue has one struct dq_entry per message in the spool,
 * found by qid through a hash table and linked in one list oldest first
 * (qids sort by creation time; delivery_load sorts, new messages are
 * appended and usually land at the tail in O(1)).  Every protected domain
 * has a destination (struct dq_dest) with two binary heaps: "ready"
 * (due now, ordered by qid so the oldest goes first) and "wait" (deferred,
 * ordered by next attempt).  An entry is in at most one heap; held and
 * active entries are in none.  All hot-path operations are O(log n).
 *
 * Each destination has one timer that does all its work (dest_run): it
 * moves due entries from wait to ready, hands ready entries to pooled
 * smtp_client connections within the concurrency and rate limits, runs
 * the circuit breaker's probes and closes idle connections.  Client
 * callbacks only record outcomes and "kick" the timer (zero delay), so
 * no smtp_client call is made from inside that client's own callback
 * except sending the first transaction from the ready callback.
 *
 * Files are truth: a message is removed from the spool only after every
 * recipient has a final outcome, and a partial delivery is made durable
 * with spool_rewrite before it is forgotten.  Retry state lives only in
 * memory, so after a crash every message is simply due again
 * (at-least-once).
 *
 * Called by moatd.c (new/load/set_config/free), the SMTP session
 * (delivery_accepting, delivery_enqueue after commit) and control.c
 * (operator functions).
 */
#include <sys/queue.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "config.h"
#include "delivery.h"
#include "dsn.h"
#include "log.h"
#include "qid.h"
#include "smtp_client.h"
#include "spool.h"
#include "spool_sync.h"

#ifndef TAILQ_FOREACH_SAFE	/* glibc's sys/queue.h lacks it */
#define TAILQ_FOREACH_SAFE(var, head, field, tvar)			\
	for ((var) = TAILQ_FIRST(head);					\
	    (var) != NULL && ((tvar) = TAILQ_NEXT(var, field), 1);	\
	    (var) = (tvar))
#endif

#define DQ_IDLE_CLOSE_MS	2000	/* idle connection lifetime */
#define DQ_SWEEP_MAX_MS		60000	/* expiry sweep period, at most */
#define DQ_SWEEP_MIN_MS		1000
#define DQ_SWEEP_BUDGET		10000	/* entries looked at per sweep */
#define DQ_DISK_CACHE_MS	1000	/* statvfs cache */
#define DQ_ERROR_MAX		(SMTP_CLIENT_REPLY_MAX + 16)
#define DQ_MIN_RETRY_MS		100	/* floors against a spinning loop */
#define DQ_MIN_PROBE_MS		100
#define DQ_NO_CONFIG		"domain not configured"
#define DQ_EXPIRED		"delivery time expired"

struct dq_dest;
struct dq_heap;

struct dq_entry {
	char			 qid[QID_LEN + 1];
	char			 domain[256];
	char			 sender[SPOOL_ADDR_MAX];
	char			*first_rcpt;
	size_t			 nrcpts;
	uint64_t		 size;
	int64_t			 created;	/* unix seconds */
	uint64_t		 created_us;	/* from the qid when valid */
	uint32_t		 flags;		/* SPOOL_F_* */
	unsigned		 attempts;
	uint64_t		 next_attempt;	/* unix ms, 0 = now */
	enum delivery_state	 state;
	char			*last_error;
	bool			 del_pending;	/* delete when done */
	bool			 hold_pending;	/* hold when done */

	struct dq_dest		*dest;		/* NULL while held */
	struct dq_heap		*heap;		/* ready, wait or NULL */
	size_t			 heap_idx;

	TAILQ_ENTRY(dq_entry)	 link;		/* oldest first */
	struct dq_entry		*hnext;		/* hash chain */
};
TAILQ_HEAD(dq_entries, dq_entry);

enum dq_heap_kind {
	DQ_HEAP_READY,		/* by qid: oldest first */
	DQ_HEAP_WAIT		/* by next attempt */
};

struct dq_heap {
	enum dq_heap_kind	  kind;
	struct dq_entry		**v;
	size_t			  n, cap;
};

enum dq_conn_state {
	DQ_CONN_CONNECTING,	/* entry assigned, waiting for ready */
	DQ_CONN_BUSY,		/* transaction running */
	DQ_CONN_IDLE
};

struct dq_conn {
	struct dq_dest		*dest;
	struct smtp_client	*client;
	enum dq_conn_state	 state;
	size_t			 server;	/* index being tried / used */
	unsigned		 sent;		/* transactions on it */
	uint64_t		 idle_since;
	bool			 probe;
	bool			 in_connect;	/* inside smtp_client_connect */
	bool			 sync_failed;
	bool			 sync_ready;
	char			 error[DQ_ERROR_MAX];
	struct dq_entry		*entry;
	struct spool_message	 msg;
	bool			 msg_open;
	TAILQ_ENTRY(dq_conn)	 link;
};
TAILQ_HEAD(dq_conns, dq_conn);

struct dq_server {
	char		 host[CONFIG_HOST_MAX];
	char		 port[8];
	uint64_t	 down_until;	/* unix ms */
};

struct dq_dest {
	struct delivery		*d;
	char			 name[CONFIG_HOST_MAX];
	bool			 relay;		/* the DSN relay */
	bool			 configured;
	struct dq_server	 servers[CONFIG_MAX_SERVERS];
	size_t			 nservers;
	char			 server_used[CONFIG_HOST_MAX + 16];

	struct dq_heap		 ready, wait;
	struct dq_conns		 conns;
	unsigned		 nconns;

	enum delivery_circuit	 circuit;
	unsigned		 failures;
	char			 last_error[DQ_ERROR_MAX];
	uint64_t		 opened_at;	/* unix ms */
	uint64_t		 next_probe;	/* unix ms */

	double			 tokens;
	uint64_t		 tokens_at;

	struct event		*timer;
	bool			 kicked;

	uint64_t		 messages, bytes;
	uint64_t		 delivered, deferred, bounced;
	TAILQ_ENTRY(dq_dest)	 link;
};
TAILQ_HEAD(dq_dests, dq_dest);

/*
 * A DSN handed to spool_sync, waiting for its commit.  What the bounce
 * replaces -- the original's file (remove), or its bounced recipients
 * (rewrite: the original keeps only rw_rcpts) -- goes only once the DSN
 * is durable.
 */
struct dq_pending {
	struct delivery		*d;	/* NULL after delivery_free */
	struct spool_envelope	 env;
	char			 remove[QID_LEN + 1];	/* or "" */
	char			 rw_qid[QID_LEN + 1];	/* or "" */
	char			(*rw_rcpts)[SPOOL_ADDR_MAX];
	size_t			 rw_n;
	uint32_t		 rw_flags;
	TAILQ_ENTRY(dq_pending)	 link;
};
TAILQ_HEAD(dq_pendings, dq_pending);

struct delivery {
	struct event_base	*base;
	struct evdns_base	*dns;
	struct spool		*spool;
	struct spool_sync	*sync;
	const struct config	*cfg;

	struct dq_entries	 entries;
	struct dq_entry		**hash;
	size_t			 hash_size;	/* power of two */
	struct dq_dests		 dests;
	struct dq_dest		*relay;
	struct dq_pendings	 pendings;

	struct event		*sweep;
	char			 sweep_cursor[QID_LEN + 1];

	int64_t			 disk_free;
	uint64_t		 disk_checked;	/* unix ms */

	struct delivery_stats	 stats;
};

static void	dest_run(struct dq_dest *);
static void	dest_kick(struct dq_dest *);
static void	conn_try(struct dq_conn *);
static void	conn_send(struct dq_conn *);
static void	entry_expire(struct delivery *, struct dq_entry *);
static uint64_t	entry_defer(struct delivery *, struct dq_entry *, uint64_t);

static uint64_t
probe_interval(const struct config *cfg)
{
	return cfg->circuit_probe < DQ_MIN_PROBE_MS ? DQ_MIN_PROBE_MS :
	    cfg->circuit_probe;
}

/* ---------------------------------------------------------------- time */

static uint64_t
now_ms(void)
{
	struct timespec	ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) == -1)
		fatal("clock_gettime");
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
ms_to_tv(uint64_t ms, struct timeval *tv)
{
	tv->tv_sec = (time_t)(ms / 1000);
	tv->tv_usec = (suseconds_t)((ms % 1000) * 1000);
}

/* ------------------------------------------------------------- backoff */

/*
 * min(max, min * 2^(attempts-1)) with +-10% jitter so that messages
 * deferred together do not come back together.  attempts 0 counts as 1.
 */
uint64_t
delivery_backoff(unsigned attempts, uint64_t min_ms, uint64_t max_ms)
{
	uint64_t	base = min_ms, span;
	unsigned	i;

	if (max_ms < min_ms)
		max_ms = min_ms;
	for (i = 1; i < attempts && base < max_ms; i++) {
		if (base > UINT64_MAX / 2) {
			base = max_ms;
			break;
		}
		base *= 2;
	}
	if (base > max_ms)
		base = max_ms;
	span = base / 10;
	if (span == 0)
		return base;
	/* random() is enough: jitter only spreads load. */
	return base - span + ((uint64_t)random() % (2 * span + 1));
}

/* ---------------------------------------------------------------- heap */

static bool
heap_less(const struct dq_heap *h, const struct dq_entry *a,
    const struct dq_entry *b)
{
	if (h->kind == DQ_HEAP_WAIT && a->next_attempt != b->next_attempt)
		return a->next_attempt < b->next_attempt;
	return strcmp(a->qid, b->qid) < 0;
}

static void
heap_set(struct dq_heap *h, size_t i, struct dq_entry *e)
{
	h->v[i] = e;
	e->heap_idx = i;
}

static void
heap_up(struct dq_heap *h, size_t i)
{
	struct dq_entry	*e = h->v[i];

	while (i > 0 && heap_less(h, e, h->v[(i - 1) / 2])) {
		heap_set(h, i, h->v[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(h, i, e);
}

static void
heap_down(struct dq_heap *h, size_t i)
{
	struct dq_entry	*e = h->v[i];
	size_t		 c;

	for (;;) {
		c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && heap_less(h, h->v[c + 1], h->v[c]))
			c++;
		if (!heap_less(h, h->v[c], e))
			break;
		heap_set(h, i, h->v[c]);
		i = c;
	}
	heap_set(h, i, e);
}

static void
heap_push(struct dq_heap *h, struct dq_entry *e)
{
	struct dq_entry	**v;
	size_t		  cap;

	if (e->heap != NULL)
		fatalx("entry %s already in a heap", e->qid);
	if (h->n == h->cap) {
		cap = h->cap == 0 ? 64 : h->cap * 2;
		v = reallocarray(h->v, cap, sizeof(*v));
		if (v == NULL)
			fatal("reallocarray");
		h->v = v;
		h->cap = cap;
	}
	e->heap = h;
	heap_set(h, h->n++, e);
	heap_up(h, h->n - 1);
}

static void
heap_remove(struct dq_entry *e)
{
	struct dq_heap	*h = e->heap;
	size_t		 i = e->heap_idx;

	if (h == NULL)
		return;
	if (i >= h->n || h->v[i] != e)
		fatalx("heap index broken for %s", e->qid);
	struct dq_entry	*moved;

	e->heap = NULL;
	h->n--;
	if (i == h->n)
		return;
	moved = h->v[h->n];
	heap_set(h, i, moved);
	heap_down(h, i);
	heap_up(h, moved->heap_idx);
}

static struct dq_entry *
heap_top(const struct dq_heap *h)
{
	return h->n == 0 ? NULL : h->v[0];
}

/* ---------------------------------------------------------------- hash */

static size_t
hash_qid(const char *qid)
{
	uint64_t	h = 1469598103934665603ULL;	/* FNV-1a */

	while (*qid != '\0') {
		h ^= (unsigned char)*qid++;
		h *= 1099511628211ULL;
	}
	return (size_t)h;
}

static struct dq_entry *
hash_find(struct delivery *d, const char *qid)
{
	struct dq_entry	*e;

	for (e = d->hash[hash_qid(qid) & (d->hash_size - 1)]; e != NULL;
	    e = e->hnext)
		if (strcmp(e->qid, qid) == 0)
			return e;
	return NULL;
}

static void
hash_insert(struct delivery *d, struct dq_entry *e)
{
	struct dq_entry	**nh, *x, *next;
	size_t		  i, ns, b;

	if (d->stats.messages >= d->hash_size) {
		ns = d->hash_size * 2;
		nh = calloc(ns, sizeof(*nh));
		if (nh != NULL) {
			for (i = 0; i < d->hash_size; i++) {
				for (x = d->hash[i]; x != NULL; x = next) {
					next = x->hnext;
					b = hash_qid(x->qid) & (ns - 1);
					x->hnext = nh[b];
					nh[b] = x;
				}
			}
			free(d->hash);
			d->hash = nh;
			d->hash_size = ns;
		}
		/* Without memory the chains just get longer. */
	}
	b = hash_qid(e->qid) & (d->hash_size - 1);
	e->hnext = d->hash[b];
	d->hash[b] = e;
}

static void
hash_remove(struct delivery *d, struct dq_entry *e)
{
	struct dq_entry	**p;

	for (p = &d->hash[hash_qid(e->qid) & (d->hash_size - 1)]; *p != NULL;
	    p = &(*p)->hnext) {
		if (*p == e) {
			*p = e->hnext;
			return;
		}
	}
	fatalx("entry %s not in hash", e->qid);
}

/* ------------------------------------------------------------- replies */

/* "550 5.1.1 text" whether or not the client kept the code in text. */
static const char *
reply_format(char *buf, size_t len, int code, const char *text)
{
	size_t	n;

	if (code == 0) {
		snprintf(buf, len, "%s", text[0] != '\0' ? text :
		    "no reply");
		return buf;
	}
	n = strlen(text);
	if (n >= 3 && text[0] >= '0' && text[0] <= '9' &&
	    atoi(text) == code)
		snprintf(buf, len, "%s", text);
	else
		snprintf(buf, len, "%d %s", code, text);
	return buf;
}

/* Finds an RFC 3463 enhanced code "c.s.d" in the reply, or def. */
static const char *
reply_status(char *buf, size_t len, const char *text, const char *def)
{
	const char	*p = text, *q;
	size_t		 n;

	/* Skip the reply code if the text starts with it. */
	if (strlen(p) >= 3 && p[0] >= '2' && p[0] <= '5' &&
	    p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' &&
	    (p[3] == ' ' || p[3] == '-' || p[3] == '\0'))
		p += 3;
	while (*p == ' ' || *p == '-')
		p++;
	q = p;
	if ((*q == '2' || *q == '4' || *q == '5') && q[1] == '.') {
		q += 2;
		n = strspn(q, "0123456789");
		if (n >= 1 && n <= 3 && q[n] == '.') {
			q += n + 1;
			n = strspn(q, "0123456789");
			if (n >= 1 && n <= 3 && (q[n] == ' ' ||
			    q[n] == '\0')) {
				q += n;
				if ((size_t)(q - p) < len) {
					memcpy(buf, p, (size_t)(q - p));
					buf[q - p] = '\0';
					return buf;
				}
			}
		}
	}
	snprintf(buf, len, "%s", def);
	return buf;
}

static void
entry_set_error(struct dq_entry *e, const char *err)
{
	char	*s;

	if (e->last_error != NULL && strcmp(e->last_error, err) == 0)
		return;
	if ((s = strdup(err)) == NULL)
		return;		/* keep the old text */
	free(e->last_error);
	e->last_error = s;
}

/* ---------------------------------------------------------------- dests */

static int
parse_hostport(const char *s, char *host, size_t hostlen, char *port,
    size_t portlen)
{
	const char	*colon, *h = s, *end;
	size_t		 n;

	if (*s == '[') {
		if ((end = strchr(s, ']')) == NULL)
			return -1;
		h = s + 1;
		n = (size_t)(end - h);
		colon = end[1] == ':' ? end + 1 : NULL;
	} else {
		colon = strrchr(s, ':');
		n = colon != NULL ? (size_t)(colon - s) : strlen(s);
	}
	if (n == 0 || n >= hostlen)
		return -1;
	memcpy(host, h, n);
	host[n] = '\0';
	if (snprintf(port, portlen, "%s", colon != NULL ? colon + 1 : "25") >=
	    (int)portlen)
		return -1;
	return 0;
}

static void
dest_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	dest_run(arg);
}

static struct dq_dest *
dest_find(struct delivery *d, const char *name)
{
	struct dq_dest	*ds;

	TAILQ_FOREACH(ds, &d->dests, link)
		if (!ds->relay && strcasecmp(ds->name, name) == 0)
			return ds;
	return NULL;
}

static struct dq_dest *
dest_new(struct delivery *d, const char *name, bool relay)
{
	struct dq_dest	*ds;

	if ((ds = calloc(1, sizeof(*ds))) == NULL)
		fatal("calloc");
	ds->d = d;
	snprintf(ds->name, sizeof(ds->name), "%s", name);
	ds->relay = relay;
	ds->ready.kind = DQ_HEAP_READY;
	ds->wait.kind = DQ_HEAP_WAIT;
	TAILQ_INIT(&ds->conns);
	ds->circuit = DELIVERY_CIRCUIT_CLOSED;
	ds->tokens_at = now_ms();
	ds->tokens = 1.0;
	if ((ds->timer = evtimer_new(d->base, dest_timer_cb, ds)) == NULL)
		fatalx("evtimer_new");
	TAILQ_INSERT_TAIL(&d->dests, ds, link);
	return ds;
}

/* Copies the server list; keeps down marks of servers that stay. */
static void
dest_set_servers(struct dq_dest *ds, const struct dq_server *srv, size_t n)
{
	struct dq_server	old[CONFIG_MAX_SERVERS];
	size_t			oldn = ds->nservers, i, j;

	memcpy(old, ds->servers, sizeof(old));
	for (i = 0; i < n; i++) {
		ds->servers[i] = srv[i];
		ds->servers[i].down_until = 0;
		for (j = 0; j < oldn; j++)
			if (strcmp(old[j].host, srv[i].host) == 0 &&
			    strcmp(old[j].port, srv[i].port) == 0)
				ds->servers[i].down_until = old[j].down_until;
	}
	ds->nservers = n;
}

/* Applies d->cfg to every destination; creates the configured ones. */
static void
dests_configure(struct delivery *d)
{
	const struct config	*cfg = d->cfg;
	struct dq_server	 srv[CONFIG_MAX_SERVERS];
	struct dq_dest		*ds;
	size_t			 i, j, n;

	TAILQ_FOREACH(ds, &d->dests, link)
		ds->configured = false;
	for (i = 0; i < cfg->ndomains; i++) {
		const struct config_domain *cd = &cfg->domains[i];

		if ((ds = dest_find(d, cd->name)) == NULL)
			ds = dest_new(d, cd->name, false);
		n = 0;
		for (j = 0; j < cd->nservers && j < CONFIG_MAX_SERVERS; j++) {
			memset(&srv[n], 0, sizeof(srv[n]));
			snprintf(srv[n].host, sizeof(srv[n].host), "%s",
			    cd->servers[j].host);
			snprintf(srv[n].port, sizeof(srv[n].port), "%s",
			    cd->servers[j].port[0] != '\0' ?
			    cd->servers[j].port : "25");
			n++;
		}
		dest_set_servers(ds, srv, n);
		ds->configured = n > 0;
	}
	if (d->relay == NULL)
		d->relay = dest_new(d, "dsn-relay", true);
	d->relay->configured = false;
	if (cfg->dsn_relay[0] != '\0') {
		memset(&srv[0], 0, sizeof(srv[0]));
		if (parse_hostport(cfg->dsn_relay, srv[0].host,
		    sizeof(srv[0].host), srv[0].port,
		    sizeof(srv[0].port)) == 0) {
			dest_set_servers(d->relay, srv, 1);
			d->relay->configured = true;
		} else
			log_warnx("event=config_error key=dsn_relay "
			    "value=\"%s\" why=\"bad host:port\"",
			    cfg->dsn_relay);
	}
}

/* Where an entry goes: the DSN relay, or its domain (maybe unconfigured). */
static struct dq_dest *
entry_route(struct delivery *d, const struct dq_entry *e)
{
	struct dq_dest	*ds;

	if ((e->flags & SPOOL_F_DSN) && d->relay->configured)
		return d->relay;
	if ((ds = dest_find(d, e->domain)) == NULL)
		ds = dest_new(d, e->domain, false);
	return ds;
}

static void
dest_kick(struct dq_dest *ds)
{
	struct timeval	tv = { 0, 0 };

	ds->kicked = true;
	evtimer_add(ds->timer, &tv);
}

/* ------------------------------------------------------------- entries */

static void
entry_attach(struct dq_entry *e, struct dq_dest *ds)
{
	e->dest = ds;
	ds->messages++;
	ds->bytes += e->size;
}

static void
entry_detach(struct dq_entry *e)
{
	heap_remove(e);
	if (e->dest == NULL)
		return;
	e->dest->messages--;
	e->dest->bytes -= e->size;
	e->dest = NULL;
}

/* Makes a non-held entry due now on its (re)computed destination. */
static void
entry_ready(struct delivery *d, struct dq_entry *e)
{
	struct dq_dest	*ds = entry_route(d, e);

	heap_remove(e);
	if (e->dest != ds) {
		entry_detach(e);
		entry_attach(e, ds);
	}
	e->next_attempt = 0;
	if (ds->configured) {
		e->state = DELIVERY_READY;
		if (e->last_error != NULL &&
		    strcmp(e->last_error, DQ_NO_CONFIG) == 0) {
			free(e->last_error);
			e->last_error = NULL;
		}
	} else {
		e->state = DELIVERY_DEFERRED;
		entry_set_error(e, DQ_NO_CONFIG);
	}
	heap_push(&ds->ready, e);
	dest_kick(ds);
}

/* Defers an entry until next_attempt (already set). */
static void
entry_wait(struct delivery *d, struct dq_entry *e)
{
	struct dq_dest	*ds = entry_route(d, e);

	heap_remove(e);
	if (e->dest != ds) {
		entry_detach(e);
		entry_attach(e, ds);
	}
	e->state = DELIVERY_DEFERRED;
	heap_push(&ds->wait, e);
	dest_kick(ds);
}

static struct dq_entry *
entry_new(const struct spool_envelope *env)
{
	struct dq_entry	*e;
	char		 hex[14];

	if ((e = calloc(1, sizeof(*e))) == NULL)
		return NULL;
	snprintf(e->qid, sizeof(e->qid), "%s", env->qid);
	snprintf(e->domain, sizeof(e->domain), "%s", env->domain);
	snprintf(e->sender, sizeof(e->sender), "%s", env->sender);
	e->first_rcpt = strdup(env->nrcpts > 0 ? env->rcpts[0] : "");
	if (e->first_rcpt == NULL) {
		free(e);
		return NULL;
	}
	e->nrcpts = env->nrcpts;
	e->size = env->body_len;
	e->created = env->created;
	e->flags = env->flags;
	e->created_us = (uint64_t)env->created * 1000000;
	if (qid_valid(env->qid)) {
		memcpy(hex, env->qid, 13);
		hex[13] = '\0';
		e->created_us = strtoull(hex, NULL, 16);
	}
	e->state = DELIVERY_READY;
	return e;
}

/* Links a new entry into the oldest-first list and the hash. */
static void
entry_insert(struct delivery *d, struct dq_entry *e)
{
	struct dq_entry	*x;

	/* New qids are the newest: usually a tail append. */
	x = TAILQ_LAST(&d->entries, dq_entries);
	while (x != NULL && strcmp(x->qid, e->qid) > 0)
		x = TAILQ_PREV(x, dq_entries, link);
	if (x == NULL)
		TAILQ_INSERT_HEAD(&d->entries, e, link);
	else
		TAILQ_INSERT_AFTER(&d->entries, x, e, link);
	hash_insert(d, e);
	d->stats.messages++;
	d->stats.bytes += e->size;
}

/* Forgets an entry (the spool file is the caller's business). */
static void
entry_free(struct delivery *d, struct dq_entry *e)
{
	entry_detach(e);
	if (e->state == DELIVERY_HELD && d->stats.held > 0)
		d->stats.held--;
	hash_remove(d, e);
	TAILQ_REMOVE(&d->entries, e, link);
	d->stats.messages--;
	d->stats.bytes -= e->size;
	free(e->first_rcpt);
	free(e->last_error);
	free(e);
}

static void
entry_update_rcpts(struct dq_entry *e, char (*rcpts)[SPOOL_ADDR_MAX],
    size_t n)
{
	char	*s;

	e->nrcpts = n;
	if (n > 0 && (s = strdup(rcpts[0])) != NULL) {
		free(e->first_rcpt);
		e->first_rcpt = s;
	}
}

static bool
entry_expired(const struct delivery *d, const struct dq_entry *e,
    uint64_t now)
{
	uint64_t	life = d->cfg->queue_lifetime;

	return life > 0 && e->created_us / 1000 + life <= now;
}

static bool
entry_wants_warning(const struct delivery *d, const struct dq_entry *e,
    uint64_t now)
{
	uint64_t	warn = d->cfg->delay_warning;

	return warn > 0 && !(e->flags & (SPOOL_F_WARNED | SPOOL_F_DSN)) &&
	    e->sender[0] != '\0' && e->created_us / 1000 + warn <= now;
}

/* ----------------------------------------------------------------- DSNs */

/*
 * The bounce for some recipients is durable: drop them from the
 * original.  Gone meanwhile (delivered, deleted) is fine; should the
 * rewrite fail they stay, are tried again and bounce again (a duplicate
 * bounce, never a lost one).
 */
static void
dsn_rewrite(struct delivery *d, struct dq_pending *p)
{
	struct dq_entry	*e = hash_find(d, p->rw_qid);

	if (spool_rewrite(d->spool, p->rw_qid, p->rw_rcpts, p->rw_n,
	    e != NULL ? e->flags : p->rw_flags) == -1) {
		if (errno != ENOENT)
			log_warnx("event=rewrite_error qid=%s", p->rw_qid);
		return;
	}
	if (e != NULL)
		entry_update_rcpts(e, p->rw_rcpts, p->rw_n);
}

static void
dsn_committed(uint64_t cookie, int error, const char *qid)
{
	struct dq_pending	*p = (struct dq_pending *)(uintptr_t)cookie;
	struct delivery		*d = p->d;

	if (d != NULL) {
		TAILQ_REMOVE(&d->pendings, p, link);
		if (error != 0) {
			/*
			 * The original stays on disk (out of the in-memory
			 * queue): the next start delivers or bounces it
			 * again rather than lose the bounce.
			 */
			log_warnx("event=dsn_lost qid=%s error=\"%s\" "
			    "kept=%s", p->env.qid, strerror(error),
			    p->remove[0] != '\0' ? p->remove : "none");
		} else {
			snprintf(p->env.qid, sizeof(p->env.qid), "%s", qid);
			if (p->remove[0] != '\0' &&
			    spool_remove(d->spool, p->remove) == -1)
				log_warnx("event=remove_error qid=%s",
				    p->remove);
			if (p->rw_qid[0] != '\0')
				dsn_rewrite(d, p);
			delivery_enqueue(d, &p->env);
		}
	}
	spool_envelope_clear(&p->env);
	free(p->rw_rcpts);
	free(p);
}

/*
 * Builds a DSN about msg for rcpts and queues it (sender "", one
 * recipient: the original sender, domain: the original domain).
 * Writes the new qid into qidbuf.  Returns 0 or -1 (logged).
 *
 * With remove set, the original's file is removed only once the DSN
 * is durable, so that a crash in between bounces again instead of
 * losing the bounce (the caller removes it itself when -1).  With rw
 * set (allocated; taken over on success only), the original is
 * rewritten to list only those nrw recipients once the DSN is durable.
 */
static int
dsn_queue(struct delivery *d, const struct spool_message *msg,
    enum dsn_action action, const struct dsn_rcpt *rcpts, size_t n,
    const char *remove, char (*rw)[SPOOL_ADDR_MAX], size_t nrw,
    char *qidbuf, size_t qidlen)
{
	struct spool_writer	*w;
	struct dq_pending	*p;
	uint8_t			*hdr = NULL;
	char			*out = NULL, *cause = NULL;
	size_t			 outlen, hlen;
	ssize_t			 r;

	snprintf(qidbuf, qidlen, "none");
	hlen = msg->env.body_len < DSN_HEADERS_MAX ?
	    (size_t)msg->env.body_len : DSN_HEADERS_MAX;
	if (hlen > 0 && (hdr = malloc(hlen)) == NULL)
		goto fail;
	if (hlen > 0) {
		r = pread(msg->fd, hdr, hlen, msg->body_off);
		hlen = r < 0 ? 0 : (size_t)r;
	}
	if (dsn_build(d->cfg->hostname, &msg->env, hdr, hlen, action, rcpts,
	    n, time(NULL), &out, &outlen) == -1)
		goto fail;
	free(hdr);
	hdr = NULL;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		goto fail;
	p->d = d;
	if (remove != NULL)
		snprintf(p->remove, sizeof(p->remove), "%s", remove);
	if ((p->env.rcpts = calloc(1, sizeof(*p->env.rcpts))) == NULL) {
		free(p);
		goto fail;
	}
	p->env.nrcpts = 1;
	snprintf(p->env.rcpts[0], sizeof(p->env.rcpts[0]), "%s",
	    msg->env.sender);
	p->env.sender[0] = '\0';
	snprintf(p->env.domain, sizeof(p->env.domain), "%s",
	    msg->env.domain);
	snprintf(p->env.helo, sizeof(p->env.helo), "%s", d->cfg->hostname);
	snprintf(p->env.client_ip, sizeof(p->env.client_ip), "127.0.0.1");
	snprintf(p->env.session_id, sizeof(p->env.session_id), "dsn");
	p->env.created = time(NULL);
	p->env.flags = SPOOL_F_DSN;
	p->env.body_len = outlen;

	if ((w = spool_writer_new(d->spool, &p->env, &cause)) == NULL) {
		log_warnx("event=dsn_error qid=%s error=\"%s\"",
		    msg->env.qid, cause != NULL ? cause : "spool");
		free(cause);
		spool_envelope_clear(&p->env);
		free(p);
		free(out);
		return -1;
	}
	snprintf(p->env.qid, sizeof(p->env.qid), "%s", spool_writer_qid(w));
	if (spool_writer_write(w, out, outlen) == -1 ||
	    spool_writer_finish(w) == -1) {
		spool_writer_abort(w);
		spool_envelope_clear(&p->env);
		free(p);
		goto fail;
	}
	free(out);
	snprintf(qidbuf, qidlen, "%s", p->env.qid);
	if (rw != NULL) {
		snprintf(p->rw_qid, sizeof(p->rw_qid), "%s", msg->env.qid);
		p->rw_rcpts = rw;
		p->rw_n = nrw;
		p->rw_flags = msg->env.flags;
	}
	TAILQ_INSERT_TAIL(&d->pendings, p, link);
	spool_sync_commit(d->sync, w, dsn_committed, (uint64_t)(uintptr_t)p);
	return 0;

fail:
	log_warnx("event=dsn_error qid=%s error=\"%s\"", msg->env.qid,
	    strerror(errno));
	free(hdr);
	free(out);
	return -1;
}

static bool
dsn_allowed(const struct spool_envelope *env)
{
	return env->sender[0] != '\0' && !(env->flags & SPOOL_F_DSN);
}

/*
 * Sends the one delayed-DSN of a message still deferred past
 * delay_warning and persists SPOOL_F_WARNED.  msg may be NULL.
 */
static void
entry_warn(struct delivery *d, struct dq_entry *e, struct spool_message *msg)
{
	char			 ea[LOG_ESCAPE_MAX + 1];
	struct spool_message	 own;
	struct dsn_rcpt		*dr;
	char			 dsnq[QID_LEN + 8], st[16];
	bool			 held;
	size_t			 i;

	if (msg == NULL) {
		if (spool_message_open(d->spool, e->qid, &own, &held) == -1)
			return;
		msg = &own;
	}
	if (msg->env.nrcpts == 0 || !dsn_allowed(&msg->env))
		goto out;
	if ((dr = calloc(msg->env.nrcpts, sizeof(*dr))) == NULL)
		goto out;
	reply_status(st, sizeof(st), e->last_error != NULL ?
	    e->last_error : "", "4.0.0");
	if (st[0] != '4')
		snprintf(st, sizeof(st), "4.0.0");
	for (i = 0; i < msg->env.nrcpts; i++) {
		dr[i].addr = msg->env.rcpts[i];
		dr[i].status = st;
		dr[i].diagnostic = e->last_error;
		dr[i].remote_mta = NULL;
	}
	if (dsn_queue(d, msg, DSN_DELAYED, dr, msg->env.nrcpts, NULL, NULL, 0,
	    dsnq, sizeof(dsnq)) == 0) {
		if (spool_rewrite(d->spool, e->qid, msg->env.rcpts,
		    msg->env.nrcpts, e->flags | SPOOL_F_WARNED) == -1)
			log_warnx("event=rewrite_error qid=%s", e->qid);
		/* Also in memory: one warning per run at worst. */
		e->flags |= SPOOL_F_WARNED;
		msg->env.flags |= SPOOL_F_WARNED;
		log_info("event=delay_warning qid=%s from=\"<%s>\" nrcpts=%zu "
		    "dsn=%s", e->qid, log_addr(ea, e->sender),
		    msg->env.nrcpts, dsnq);
	}
	free(dr);
out:
	if (msg == &own)
		spool_message_close(&own);
}

/*
 * Bounces every recipient of an expired message (4.4.7), removes it.
 * The entry must not be active.
 */
static void
entry_expire(struct delivery *d, struct dq_entry *e)
{
	char			 ea[LOG_ESCAPE_MAX + 1], eb[LOG_ESCAPE_MAX + 1];
	struct spool_message	 msg;
	struct dsn_rcpt		*dr;
	char			 dsnq[QID_LEN + 8], esc[LOG_ESCAPE_MAX + 1];
	char			 diag[DQ_ERROR_MAX + 64];
	bool			 held, removing = false, keep = false;
	size_t			 i;
	uint64_t		 age, delay;

	snprintf(dsnq, sizeof(dsnq), "none");
	if (e->last_error != NULL && e->last_error[0] != '\0')
		snprintf(diag, sizeof(diag), "%s; last error: %s", DQ_EXPIRED,
		    e->last_error);
	else
		snprintf(diag, sizeof(diag), "%s", DQ_EXPIRED);
	if (spool_message_open(d->spool, e->qid, &msg, &held) == 0) {
		if (dsn_allowed(&msg.env) && msg.env.nrcpts > 0) {
			if ((dr = calloc(msg.env.nrcpts, sizeof(*dr))) !=
			    NULL) {
				for (i = 0; i < msg.env.nrcpts; i++) {
					dr[i].addr = msg.env.rcpts[i];
					dr[i].status = "4.4.7";
					dr[i].diagnostic = diag;
					dr[i].remote_mta = NULL;
				}
				removing = dsn_queue(d, &msg, DSN_FAILED, dr,
				    msg.env.nrcpts, e->qid, NULL, 0, dsnq,
				    sizeof(dsnq)) == 0;
				free(dr);
			}
			keep = !removing;
		}
		spool_message_close(&msg);
	} else if (errno != ENOENT && errno != EBADMSG)
		keep = true;	/* unreadable now (EMFILE...), not gone */
	if (keep) {
		/*
		 * The bounce is owed but not durable: removing the file
		 * now would lose both the message and the news of its
		 * failure.  Keep it and try the expiry again later.
		 */
		delay = entry_defer(d, e, now_ms());
		log_warnx("event=expire_deferred qid=%s why=\"bounce not "
		    "queued\" next_retry=%.1fs", e->qid,
		    (double)delay / 1000.0);
		entry_wait(d, e);
		return;
	}
	age = (now_ms() - e->created_us / 1000) / 1000;
	log_info("event=expired qid=%s from=\"<%s>\" to=\"<%s>\" "
	    "nrcpts=%zu reply=\"%s\" age=%" PRIu64 "s attempts=%u dsn=%s",
	    e->qid, log_addr(ea, e->sender), log_addr(eb, e->first_rcpt),
	    e->nrcpts,
	    log_escape(esc, sizeof(esc), "4.4.7 " DQ_EXPIRED,
	    strlen("4.4.7 " DQ_EXPIRED)), age, e->attempts, dsnq);
	d->stats.expired++;
	if (e->dest != NULL)
		e->dest->bounced++;
	if (!removing && spool_remove(d->spool, e->qid) == -1)
		log_warnx("event=remove_error qid=%s", e->qid);
	entry_free(d, e);
}

/* ------------------------------------------------------------- circuit */

static void
dest_success(struct dq_dest *ds, uint64_t now)
{
	struct dq_entry	*e;

	if (ds->circuit != DELIVERY_CIRCUIT_CLOSED) {
		log_info("event=circuit domain=%s state=closed failures=%u "
		    "downtime=%.1fs", ds->name, ds->failures,
		    (double)(now - ds->opened_at) / 1000.0);
		ds->circuit = DELIVERY_CIRCUIT_CLOSED;
		/* The server is back: the whole backlog is due, oldest
		 * first, at the paced rate. */
		while ((e = heap_top(&ds->wait)) != NULL) {
			heap_remove(e);
			e->next_attempt = 0;
			e->state = DELIVERY_READY;
			heap_push(&ds->ready, e);
		}
		dest_kick(ds);
	}
	ds->failures = 0;
}

static void
dest_failure(struct dq_dest *ds, const char *err, uint64_t now)
{
	unsigned	limit = ds->d->cfg->circuit_failures;
	char		esc[LOG_ESCAPE_MAX + 1];

	ds->failures++;
	snprintf(ds->last_error, sizeof(ds->last_error), "%s", err);
	if (ds->circuit == DELIVERY_CIRCUIT_HALF_OPEN) {
		ds->circuit = DELIVERY_CIRCUIT_OPEN;
		ds->next_probe = now + probe_interval(ds->d->cfg);
		log_info("event=circuit domain=%s state=open failures=%u "
		    "last_error=\"%s\" probe=failed", ds->name, ds->failures,
		    log_escape(esc, sizeof(esc), err, strlen(err)));
	} else if (ds->circuit == DELIVERY_CIRCUIT_CLOSED && limit > 0 &&
	    ds->failures >= limit) {
		ds->circuit = DELIVERY_CIRCUIT_OPEN;
		ds->opened_at = now;
		ds->next_probe = now + probe_interval(ds->d->cfg);
		log_info("event=circuit domain=%s state=open failures=%u "
		    "last_error=\"%s\"", ds->name, ds->failures,
		    log_escape(esc, sizeof(esc), err, strlen(err)));
	}
	dest_kick(ds);
}

/* ------------------------------------------------------------ outcomes */

/* Defers an entry after a failed attempt (attempts already counted). */
static uint64_t
entry_defer(struct delivery *d, struct dq_entry *e, uint64_t now)
{
	uint64_t	delay;

	delay = delivery_backoff(e->attempts,
	    d->cfg->retry_min < DQ_MIN_RETRY_MS ? DQ_MIN_RETRY_MS :
	    d->cfg->retry_min, d->cfg->retry_max);
	e->next_attempt = now + delay;
	return delay;
}

/* Bookkeeping after an attempt that did not reach the transaction. */
static void
entry_connect_failed(struct delivery *d, struct dq_entry *e,
    const char *err, const char *server, bool probe)
{
	char			 ea[LOG_ESCAPE_MAX + 1];
	uint64_t	now = now_ms(), delay;
	char		esc[LOG_ESCAPE_MAX + 1];

	entry_set_error(e, err);
	if (e->del_pending) {
		if (spool_remove(d->spool, e->qid) == -1)
			log_warnx("event=remove_error qid=%s", e->qid);
		log_info("event=deleted qid=%s", e->qid);
		entry_free(d, e);
		return;
	}
	if (e->hold_pending) {
		e->hold_pending = false;
		if (spool_hold(d->spool, e->qid) == 0) {
			entry_detach(e);
			e->state = DELIVERY_HELD;
			d->stats.held++;
			return;
		}
	}
	if (probe) {
		/* Circuit-waiting messages do not age their attempts. */
		entry_ready(d, e);
		return;
	}
	e->attempts++;
	if (entry_expired(d, e, now)) {
		entry_expire(d, e);
		return;
	}
	delay = entry_defer(d, e, now);
	d->stats.deferred++;
	if (e->dest != NULL)
		e->dest->deferred++;
	log_info("event=deferred qid=%s to=\"<%s>\" server=%s "
	    "reply=\"%s\" attempts=%u next_retry=%.1fs", e->qid,
	    log_addr(ea, e->first_rcpt), server,
	    log_escape(esc, sizeof(esc), err, strlen(err)), e->attempts,
	    (double)delay / 1000.0);
	if (entry_wants_warning(d, e, now))
		entry_warn(d, e, NULL);
	entry_wait(d, e);
}

struct dq_outcome {
	int		 code;
	const char	*text;
};

/*
 * Applies the per-recipient outcome of one transaction: logs, DSN for
 * the failed ones, then removes, rewrites or defers the message.
 */
static void
entry_transaction_done(struct delivery *d, struct dq_entry *e,
    struct spool_message *msg, const struct dq_outcome *out,
    const char *server, const char *host)
{
	char			 ea[LOG_ESCAPE_MAX + 1];
	struct dsn_rcpt	 *dr = NULL;
	char		(*left)[SPOOL_ADDR_MAX] = NULL;
	size_t		  n = msg->env.nrcpts, nleft = 0, nfail = 0, i;
	uint64_t	  now = now_ms(), delay = 0;
	char		  rbuf[DQ_ERROR_MAX], esc[LOG_ESCAPE_MAX + 1];
	char		 *st = NULL, dsnq[QID_LEN + 8];
	double		  age;
	bool		  removing = false, bounce_kept = false;
	char		(*rw)[SPOOL_ADDR_MAX] = NULL;

	e->attempts++;
	age = (double)(now * 1000 - (e->created_us < now * 1000 ?
	    e->created_us : now * 1000)) / 1e6;
	if (n > 0) {
		dr = calloc(n, sizeof(*dr));
		left = calloc(n, sizeof(*left));
		st = calloc(n, 16);
		if (dr == NULL || left == NULL || st == NULL)
			fatal("calloc");
	}
	for (i = 0; i < n; i++) {
		if (out[i].code >= 500 && out[i].code < 600) {
			reply_format(rbuf, sizeof(rbuf), out[i].code,
			    out[i].text);
			reply_status(st + i * 16, 16, out[i].text, "5.0.0");
			if (st[i * 16] != '5')
				snprintf(st + i * 16, 16, "5.0.0");
			dr[nfail].addr = msg->env.rcpts[i];
			dr[nfail].status = st + i * 16;
			dr[nfail].diagnostic = out[i].text;
			dr[nfail].remote_mta = host;
			nfail++;
		} else if (out[i].code < 200 || out[i].code >= 300)
			memcpy(left[nleft++], msg->env.rcpts[i],
			    SPOOL_ADDR_MAX);
	}

	/* The bounce first, so that its qid can be logged. */
	snprintf(dsnq, sizeof(dsnq), "none");
	if (nfail > 0 && dsn_allowed(&msg->env)) {
		/* Some recipients wait on: the bounced ones leave the file
		 * only once their DSN is durable (dsn_rewrite). */
		if (nleft > 0 && !e->del_pending) {
			if ((rw = calloc(nleft, sizeof(*rw))) == NULL)
				fatal("calloc");
			memcpy(rw, left, nleft * sizeof(*left));
		}
		if (dsn_queue(d, msg, DSN_FAILED, dr, nfail,
		    nleft == 0 && !e->del_pending ? e->qid : NULL, rw, nleft,
		    dsnq, sizeof(dsnq)) == 0) {
			removing = nleft == 0 && !e->del_pending;
			for (i = 0; rw != NULL && i < n; i++)
				if (out[i].code >= 500 && out[i].code < 600)
					memcpy(left[nleft++],
					    msg->env.rcpts[i], SPOOL_ADDR_MAX);
		} else if (!e->del_pending) {
			free(rw);
			/*
			 * The bounce is not durable: forgetting the failed
			 * recipients now would lose the news of their
			 * failure.  They stay in the file, as deferred, and
			 * the next attempt bounces them again.
			 */
			bounce_kept = true;
			for (i = 0; i < n; i++)
				if (out[i].code >= 500 && out[i].code < 600)
					memcpy(left[nleft++],
					    msg->env.rcpts[i], SPOOL_ADDR_MAX);
		}
	}
	if (nleft > 0 && !e->del_pending)
		delay = entry_defer(d, e, now);

	for (i = 0; i < n; i++) {
		reply_format(rbuf, sizeof(rbuf), out[i].code, out[i].text);
		log_escape(esc, sizeof(esc), rbuf, strlen(rbuf));
		if (out[i].code >= 200 && out[i].code < 300) {
			log_info("event=delivered qid=%s to=\"<%s>\" "
			    "server=%s reply=\"%s\" delay=%.1fs attempts=%u",
			    e->qid, log_addr(ea, msg->env.rcpts[i]), server,
			    esc, age, e->attempts);
			d->stats.delivered++;
			e->dest->delivered++;
		} else if (out[i].code >= 500 && out[i].code < 600 &&
		    !bounce_kept) {
			log_info("event=bounced qid=%s to=\"<%s>\" "
			    "server=%s reply=\"%s\" attempts=%u dsn=%s",
			    e->qid, log_addr(ea, msg->env.rcpts[i]), server,
			    esc, e->attempts, dsnq);
			d->stats.bounced++;
			e->dest->bounced++;
		} else {
			log_info("event=deferred qid=%s to=\"<%s>\" "
			    "server=%s reply=\"%s\" attempts=%u "
			    "next_retry=%.1fs", e->qid,
			    log_addr(ea, msg->env.rcpts[i]), server, esc,
			    e->attempts, (double)delay / 1000.0);
			d->stats.deferred++;
			e->dest->deferred++;
			entry_set_error(e, rbuf);
		}
	}

	if (nleft == 0 || e->del_pending) {
		if (!removing && spool_remove(d->spool, e->qid) == -1)
			log_warnx("event=remove_error qid=%s", e->qid);
		if (e->del_pending)
			log_info("event=deleted qid=%s", e->qid);
		entry_free(d, e);
		goto out;
	}
	if (nleft < n) {
		/* Durable before we forget who already has it. */
		if (spool_rewrite(d->spool, e->qid, left, nleft,
		    msg->env.flags) == -1)
			log_warnx("event=rewrite_error qid=%s", e->qid);
		else {
			entry_update_rcpts(e, left, nleft);
			/* The envelope now lists only those left. */
			memcpy(msg->env.rcpts, left, nleft * sizeof(*left));
			msg->env.nrcpts = nleft;
		}
	}
	if (e->hold_pending) {
		e->hold_pending = false;
		if (spool_hold(d->spool, e->qid) == 0) {
			entry_detach(e);
			e->state = DELIVERY_HELD;
			d->stats.held++;
			goto out;
		}
	}
	if (entry_expired(d, e, now)) {
		entry_expire(d, e);
		goto out;
	}
	if (entry_wants_warning(d, e, now))
		entry_warn(d, e, msg);
	entry_wait(d, e);
out:
	free(dr);
	free(left);
	free(st);
}

/* --------------------------------------------------------- connections */

static void
conn_close_msg(struct dq_conn *c)
{
	if (c->msg_open) {
		spool_message_close(&c->msg);
		c->msg_open = false;
	}
}

/* Unlinks and frees; quits the client politely if it is idle. */
static void
conn_free(struct dq_conn *c, bool polite)
{
	struct dq_dest	*ds = c->dest;

	conn_close_msg(c);
	if (c->client != NULL) {
		if (polite && c->state == DQ_CONN_IDLE)
			smtp_client_quit(c->client);
		else
			smtp_client_free(c->client);
	}
	TAILQ_REMOVE(&ds->conns, c, link);
	ds->nconns--;
	free(c);
}

static const char *
conn_server(const struct dq_conn *c, char *buf, size_t len)
{
	const struct dq_dest	*ds = c->dest;

	if (c->server >= ds->nservers) {
		snprintf(buf, len, "none");
		return buf;
	}
	snprintf(buf, len, "%s:%s", ds->servers[c->server].host,
	    ds->servers[c->server].port);
	return buf;
}

/* First server not marked down (or the primary if all are). */
static size_t
dest_first_server(const struct dq_dest *ds, size_t from, uint64_t now)
{
	size_t	i;

	for (i = from; i < ds->nservers; i++)
		if (ds->servers[i].down_until <= now)
			return i;
	return from == 0 ? 0 : ds->nservers;
}

static void
result_error(const struct smtp_client_result *r, char *buf, size_t len)
{
	if (r->conn.code != 0 || r->conn.text[0] != '\0')
		reply_format(buf, len, r->conn.code, r->conn.text);
	else
		snprintf(buf, len, "%s", r->status == SMTP_CLIENT_PROTOCOL ?
		    "protocol error" : "connection failed");
}

/* Every server failed: one failure for the circuit, the entry waits. */
static void
conn_all_failed(struct dq_conn *c)
{
	struct dq_dest	*ds = c->dest;
	struct delivery	*d = ds->d;
	struct dq_entry	*e = c->entry;
	char		 err[DQ_ERROR_MAX], srv[CONFIG_HOST_MAX + 16];
	bool		 probe = c->probe;

	snprintf(err, sizeof(err), "%s", c->error);
	snprintf(srv, sizeof(srv), "%s", ds->nservers > 0 ?
	    ds->servers[ds->nservers - 1].host : "none");
	if (ds->nservers > 0)
		snprintf(srv, sizeof(srv), "%s:%s",
		    ds->servers[ds->nservers - 1].host,
		    ds->servers[ds->nservers - 1].port);
	c->client = NULL;
	c->entry = NULL;
	conn_free(c, false);
	dest_failure(ds, err, now_ms());
	if (e != NULL)
		entry_connect_failed(d, e, err, srv, probe);
}

static void
conn_ready(void *arg, struct smtp_client *client,
    const struct smtp_client_result *r)
{
	struct dq_conn	*c = arg;
	struct dq_dest	*ds = c->dest;
	char		 srv[CONFIG_HOST_MAX + 16], esc[LOG_ESCAPE_MAX + 1];
	uint64_t	 now = now_ms();

	if (r->status != SMTP_CLIENT_OK) {
		result_error(r, c->error, sizeof(c->error));
		if (c->in_connect) {
			c->sync_failed = true;
			return;
		}
		c->client = NULL;
		log_info("event=connect_failed domain=%s server=%s "
		    "error=\"%s\"", ds->name, conn_server(c, srv, sizeof(srv)),
		    log_escape(esc, sizeof(esc), c->error,
		    strlen(c->error)));
		ds->servers[c->server].down_until = now +
		    probe_interval(ds->d->cfg);
		c->server = dest_first_server(ds, c->server + 1, now);
		conn_try(c);
		return;
	}
	c->client = client;
	snprintf(ds->server_used, sizeof(ds->server_used), "%s",
	    conn_server(c, srv, sizeof(srv)));
	if (c->in_connect) {
		c->sync_ready = true;
		return;		/* conn_try sends */
	}
	c->state = DQ_CONN_BUSY;
	conn_send(c);
}

/* The resolver, created on first use for a server given by name. */
static struct evdns_base *
delivery_dns(struct delivery *d, const char *host)
{
	struct evutil_addrinfo	hints, *ai = NULL;

	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = EVUTIL_AI_NUMERICHOST;
	if (evutil_getaddrinfo(host, NULL, &hints, &ai) == 0) {
		evutil_freeaddrinfo(ai);
		return d->dns;		/* a literal needs none */
	}
	if (d->dns == NULL && (d->dns = evdns_base_new(d->base,
	    EVDNS_BASE_INITIALIZE_NAMESERVERS)) == NULL)
		log_warnx("event=dns_error why=\"cannot start resolver\"");
	return d->dns;
}

/* Connects to c->server or the next ones; gives up after the last. */
static void
conn_try(struct dq_conn *c)
{
	struct dq_dest			*ds = c->dest;
	const struct config		*cfg = ds->d->cfg;
	struct smtp_client_options	 opt;
	struct smtp_client		*client;
	char				 srv[CONFIG_HOST_MAX + 16];
	char				 esc[LOG_ESCAPE_MAX + 1];
	uint64_t			 now;

	memset(&opt, 0, sizeof(opt));
	opt.helo_name = cfg->hostname;
	opt.connect_timeout = cfg->connect_timeout;
	opt.reply_timeout = cfg->reply_timeout;
	opt.data_timeout = cfg->reply_timeout;
	while (c->server < ds->nservers) {
		const struct dq_server *s = &ds->servers[c->server];

		c->in_connect = true;
		c->sync_failed = false;
		c->sync_ready = false;
		c->client = NULL;
		client = smtp_client_connect(ds->d->base, delivery_dns(ds->d,
		    s->host), s->host,
		    s->port, &opt, conn_ready, c);
		c->in_connect = false;
		if (client != NULL && !c->sync_failed) {
			c->client = client;
			if (c->sync_ready) {
				/* Ready already ran inside connect. */
				c->sync_ready = false;
				conn_send(c);
			}
			return;
		}
		if (client == NULL && c->error[0] == '\0')
			snprintf(c->error, sizeof(c->error),
			    "cannot connect");
		now = now_ms();
		log_info("event=connect_failed domain=%s server=%s "
		    "error=\"%s\"", ds->name, conn_server(c, srv, sizeof(srv)),
		    log_escape(esc, sizeof(esc), c->error,
		    strlen(c->error)));
		ds->servers[c->server].down_until = now + probe_interval(cfg);
		c->server = dest_first_server(ds, c->server + 1, now);
	}
	conn_all_failed(c);
}

static void
conn_done(void *arg, struct smtp_client *client,
    const struct smtp_client_result *r)
{
	struct dq_conn		*c = arg;
	struct dq_dest		*ds = c->dest;
	struct delivery		*d = ds->d;
	struct dq_entry		*e = c->entry;
	struct dq_outcome	*out;
	char			 err[DQ_ERROR_MAX], srv[CONFIG_HOST_MAX + 16];
	size_t			 i, n = c->msg.env.nrcpts;
	uint64_t		 now = now_ms();
	bool			 lost, server_ok;
	int			 code;

	(void)client;
	c->entry = NULL;
	conn_server(c, srv, sizeof(srv));
	lost = r->status != SMTP_CLIENT_OK;
	if (lost)
		c->client = NULL;	/* already freed by the client */
	if (lost && r->status == SMTP_CLIENT_NETWORK && c->sent > 0 &&
	    e != NULL && !e->del_pending && !e->hold_pending) {
		/*
		 * A reused connection the server (or a middlebox) closed
		 * while idle: not the message's fault nor a sign of an
		 * outage.  Try again at once on a fresh connection, which
		 * counts normally if it fails too.
		 */
		log_debug("event=connection_lost domain=%s server=%s qid=%s "
		    "sent=%u", ds->name, srv, e->qid, c->sent);
		conn_close_msg(c);
		conn_free(c, false);
		entry_ready(d, e);
		return;
	}
	c->sent++;
	server_ok = !lost && !(r->conn.code >= 400 && r->conn.code < 500);

	if ((out = calloc(n > 0 ? n : 1, sizeof(*out))) == NULL)
		fatal("calloc");
	err[0] = '\0';
	if (lost || r->conn.code != 0) {
		result_error(r, err, sizeof(err));
		code = lost ? 0 : r->conn.code;
		for (i = 0; i < n; i++) {
			out[i].code = code;
			out[i].text = lost ? err : r->conn.text;
		}
	} else {
		for (i = 0; i < n; i++) {
			const struct smtp_client_reply *rc = i < r->nrcpts ?
			    &r->rcpt[i] : NULL;

			if (rc == NULL || rc->code == 0) {
				out[i].code = 0;
				out[i].text = "no reply to RCPT";
			} else if (rc->code >= 200 && rc->code < 300) {
				out[i].code = r->data.code;
				out[i].text = r->data.code != 0 ?
				    r->data.text : "no reply to DATA";
			} else {
				out[i].code = rc->code;
				out[i].text = rc->text;
			}
		}
	}
	if (server_ok)
		dest_success(ds, now);
	else
		dest_failure(ds, err, now);
	c->probe = false;

	if (e != NULL)
		entry_transaction_done(d, e, &c->msg, out,
		    srv, ds->servers[c->server < ds->nservers ?
		    c->server : 0].host);
	free(out);
	conn_close_msg(c);
	if (lost)
		conn_free(c, false);
	else {
		c->state = DQ_CONN_IDLE;
		c->idle_since = now;
	}
	dest_kick(ds);
}

/*
 * A probe that ends without a word from the server (its message could not
 * be read or handed to the client) proves nothing either way.  Left
 * half-open the destination would stall for good: dest_run sends only
 * when the circuit is closed and probes only when it is open.  Back to
 * open, and probe again at once with the next message.
 */
static void
conn_probe_void(struct dq_conn *c)
{
	struct dq_dest	*ds = c->dest;

	if (!c->probe)
		return;
	c->probe = false;
	if (ds->circuit == DELIVERY_CIRCUIT_HALF_OPEN) {
		ds->circuit = DELIVERY_CIRCUIT_OPEN;
		ds->next_probe = now_ms();
	}
}

/* Starts the transaction for c->entry on a ready connection. */
static void
conn_send(struct dq_conn *c)
{
	struct dq_dest	*ds = c->dest;
	struct delivery	*d = ds->d;
	struct dq_entry	*e = c->entry;
	bool		 held;
	int		 saved;

	c->state = DQ_CONN_BUSY;
	if (spool_message_open(d->spool, e->qid, &c->msg, &held) == -1) {
		saved = errno;
		c->entry = NULL;
		if (saved == ENOENT || saved == EBADMSG || saved == EINVAL) {
			/* Gone or quarantined (logged by spool): forget it. */
			log_warnx("event=dropped qid=%s why=\"cannot open "
			    "queue file\"", e->qid);
			entry_free(d, e);
		} else {
			/*
			 * Still on disk but unreadable now (EMFILE, EIO):
			 * forgetting it would strand it until a restart.
			 */
			e->next_attempt = now_ms() + (d->cfg->retry_min <
			    DQ_MIN_RETRY_MS ? DQ_MIN_RETRY_MS :
			    d->cfg->retry_min);
			log_warnx("event=open_error qid=%s error=\"%s\"",
			    e->qid, strerror(saved));
			entry_wait(d, e);
		}
		conn_probe_void(c);
		c->state = DQ_CONN_IDLE;
		c->idle_since = now_ms();
		dest_kick(ds);
		return;
	}
	c->msg_open = true;
	if (smtp_client_send(c->client, &c->msg, conn_done, c) == -1) {
		conn_close_msg(c);
		c->entry = NULL;
		conn_probe_void(c);
		entry_ready(d, e);
		conn_free(c, false);
		dest_kick(ds);
	}
}

/* A new connection for e (already taken off the ready heap). */
static void
conn_start(struct dq_dest *ds, struct dq_entry *e, bool probe)
{
	struct dq_conn	*c;
	uint64_t	 now = now_ms();

	if ((c = calloc(1, sizeof(*c))) == NULL)
		fatal("calloc");
	c->dest = ds;
	c->state = DQ_CONN_CONNECTING;
	c->probe = probe;
	c->entry = e;
	c->server = dest_first_server(ds, 0, now);
	e->state = DELIVERY_ACTIVE;
	TAILQ_INSERT_TAIL(&ds->conns, c, link);
	ds->nconns++;
	conn_try(c);
}

/* ------------------------------------------------------------ dispatch */

static bool
dest_take_token(struct dq_dest *ds, uint64_t now, uint64_t *wait_ms)
{
	unsigned	rate = ds->d->cfg->delivery_rate;
	double		cap;

	if (rate == 0)
		return true;
	/* A burst of at most a tenth of a second: a drain after an outage
	 * must look paced to the server, not like rate messages at once. */
	cap = rate / 10.0 > 1.0 ? rate / 10.0 : 1.0;
	if (now > ds->tokens_at) {
		ds->tokens += (double)(now - ds->tokens_at) * rate / 1000.0;
		if (ds->tokens > cap)
			ds->tokens = cap;
	}
	ds->tokens_at = now;
	if (ds->tokens >= 1.0) {
		ds->tokens -= 1.0;
		return true;
	}
	*wait_ms = (uint64_t)((1.0 - ds->tokens) * 1000.0 / rate) + 1;
	return false;
}

static struct dq_conn *
dest_idle_conn(struct dq_dest *ds)
{
	struct dq_conn	*c;
	unsigned	 mpc = ds->d->cfg->messages_per_connection;

	TAILQ_FOREACH(c, &ds->conns, link)
		if (c->state == DQ_CONN_IDLE && (mpc == 0 || c->sent < mpc))
			return c;
	return NULL;
}

static void
dest_run(struct dq_dest *ds)
{
	struct delivery	*d = ds->d;
	const struct config *cfg = d->cfg;
	struct dq_entry	*e;
	struct dq_conn	*c, *cnext;
	struct timeval	 tv;
	uint64_t	 now = now_ms(), next = UINT64_MAX, w = 0;
	unsigned	 conc, mpc = cfg->messages_per_connection;
	bool		 connecting;

	ds->kicked = false;
	conc = cfg->delivery_concurrency > 0 ? cfg->delivery_concurrency : 1;

	/* Used-up connections go first: they hold concurrency slots. */
	TAILQ_FOREACH_SAFE(c, &ds->conns, link, cnext)
		if (c->state == DQ_CONN_IDLE && ((mpc > 0 && c->sent >= mpc) ||
		    !ds->configured))
			conn_free(c, true);

	/* Deferred entries whose time has come. */
	while ((e = heap_top(&ds->wait)) != NULL && e->next_attempt <= now) {
		heap_remove(e);
		if (entry_expired(d, e, now)) {
			entry_expire(d, e);
			continue;
		}
		e->next_attempt = 0;
		e->state = DELIVERY_READY;
		if (!ds->configured) {
			e->state = DELIVERY_DEFERRED;
			entry_set_error(e, DQ_NO_CONFIG);
		}
		heap_push(&ds->ready, e);
	}

	if (ds->configured && ds->circuit == DELIVERY_CIRCUIT_OPEN &&
	    heap_top(&ds->ready) != NULL) {
		if (now >= ds->next_probe) {
			e = heap_top(&ds->ready);
			heap_remove(e);
			ds->circuit = DELIVERY_CIRCUIT_HALF_OPEN;
			log_info("event=circuit domain=%s state=half_open "
			    "probe=%s", ds->name, e->qid);
			conn_start(ds, e, true);
		} else if (ds->next_probe < next)
			next = ds->next_probe;
	}

	while (ds->configured && ds->circuit == DELIVERY_CIRCUIT_CLOSED &&
	    heap_top(&ds->ready) != NULL) {
		c = dest_idle_conn(ds);
		connecting = false;
		if (c == NULL) {
			if (ds->nconns >= conc)
				break;
			connecting = true;
		}
		if (!dest_take_token(ds, now, &w)) {
			if (now + w < next)
				next = now + w;
			break;
		}
		e = heap_top(&ds->ready);
		heap_remove(e);
		if (connecting)
			conn_start(ds, e, false);
		else {
			c->entry = e;
			e->state = DELIVERY_ACTIVE;
			conn_send(c);
		}
	}

	/* Connections idle for a while with nothing to do. */
	TAILQ_FOREACH_SAFE(c, &ds->conns, link, cnext) {
		if (c->state != DQ_CONN_IDLE)
			continue;
		if (now >= c->idle_since + DQ_IDLE_CLOSE_MS)
			conn_free(c, true);
		else if (c->idle_since + DQ_IDLE_CLOSE_MS < next)
			next = c->idle_since + DQ_IDLE_CLOSE_MS;
	}

	if ((e = heap_top(&ds->wait)) != NULL && e->next_attempt < next)
		next = e->next_attempt;
	if (ds->kicked)
		return;		/* a zero-delay run is already pending */
	if (next == UINT64_MAX) {
		evtimer_del(ds->timer);
		return;
	}
	ms_to_tv(next > now ? next - now : 0, &tv);
	evtimer_add(ds->timer, &tv);
}

/* --------------------------------------------------------------- sweep */

static uint64_t
sweep_interval(const struct config *cfg)
{
	uint64_t	iv = DQ_SWEEP_MAX_MS;

	if (cfg->queue_lifetime > 0 && cfg->queue_lifetime / 4 < iv)
		iv = cfg->queue_lifetime / 4;
	if (cfg->delay_warning > 0 && cfg->delay_warning / 4 < iv)
		iv = cfg->delay_warning / 4;
	return iv < DQ_SWEEP_MIN_MS ? DQ_SWEEP_MIN_MS : iv;
}

static void
sweep_arm(struct delivery *d)
{
	struct timeval	tv;

	ms_to_tv(sweep_interval(d->cfg), &tv);
	evtimer_add(d->sweep, &tv);
}

/*
 * Expires and warns messages that no retry will look at soon (stuck
 * behind an open circuit, or deferred for long).  The list is oldest
 * first, so the work is a prefix; at most DQ_SWEEP_BUDGET entries per
 * tick, resuming from a cursor.
 */
static void
sweep_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct delivery		*d = arg;
	const struct config	*cfg = d->cfg;
	struct dq_entry		*e, *next;
	uint64_t		 now = now_ms(), horizon;
	unsigned		 budget = DQ_SWEEP_BUDGET;

	(void)fd;
	(void)ev;
	horizon = cfg->queue_lifetime;
	if (cfg->delay_warning > 0 && (horizon == 0 ||
	    cfg->delay_warning < horizon))
		horizon = cfg->delay_warning;
	e = NULL;
	if (d->sweep_cursor[0] != '\0')
		e = hash_find(d, d->sweep_cursor);
	if (e == NULL)
		e = TAILQ_FIRST(&d->entries);
	d->sweep_cursor[0] = '\0';
	for (; e != NULL && horizon > 0; e = next) {
		next = TAILQ_NEXT(e, link);
		if (e->created_us / 1000 + horizon > now)
			break;		/* younger from here on */
		if (budget-- == 0) {
			snprintf(d->sweep_cursor, sizeof(d->sweep_cursor),
			    "%s", e->qid);
			break;
		}
		if (e->state == DELIVERY_ACTIVE || e->state == DELIVERY_HELD)
			continue;
		if (entry_expired(d, e, now))
			entry_expire(d, e);
		else if (entry_wants_warning(d, e, now) &&
		    (e->state == DELIVERY_DEFERRED || (e->dest != NULL &&
		    e->dest->circuit != DELIVERY_CIRCUIT_CLOSED)))
			entry_warn(d, e, NULL);
	}
	sweep_arm(d);
}

/* ----------------------------------------------------------------- API */

struct delivery *
delivery_new(struct event_base *base, struct spool *spool,
    struct spool_sync *sync, const struct config *cfg)
{
	struct delivery	*d;

	if ((d = calloc(1, sizeof(*d))) == NULL)
		return NULL;
	d->base = base;
	d->spool = spool;
	d->sync = sync;
	d->cfg = cfg;
	TAILQ_INIT(&d->entries);
	TAILQ_INIT(&d->dests);
	TAILQ_INIT(&d->pendings);
	d->hash_size = 1024;
	if ((d->hash = calloc(d->hash_size, sizeof(*d->hash))) == NULL) {
		free(d);
		return NULL;
	}
	if ((d->sweep = evtimer_new(base, sweep_cb, d)) == NULL) {
		free(d->hash);
		free(d);
		return NULL;
	}
	srandom((unsigned)(now_ms() ^ (uint64_t)getpid()));
	dests_configure(d);
	sweep_arm(d);
	return d;
}

void
delivery_set_config(struct delivery *d, const struct config *cfg)
{
	struct dq_entry	*e;
	struct dq_dest	*ds, *nd;

	d->cfg = cfg;
	dests_configure(d);
	/* Re-route every waiting entry; O(n) once per reload. */
	TAILQ_FOREACH(e, &d->entries, link) {
		if (e->state == DELIVERY_ACTIVE || e->state == DELIVERY_HELD ||
		    e->dest == NULL)
			continue;
		nd = entry_route(d, e);
		if (e->heap == &e->dest->wait) {
			if (nd != e->dest)
				entry_wait(d, e);
		} else
			entry_ready(d, e);
	}
	TAILQ_FOREACH(ds, &d->dests, link)
		dest_kick(ds);
	sweep_arm(d);
}

struct load_ctx {
	struct dq_entry	**v;
	size_t		  n, cap;
	bool		 *held;
	bool		  failed;
};

static void
load_cb(void *arg, const struct spool_envelope *env, bool held)
{
	struct load_ctx	 *lc = arg;
	struct dq_entry	**v;
	bool		 *h;
	size_t		  cap;

	if (lc->n == lc->cap) {
		cap = lc->cap == 0 ? 256 : lc->cap * 2;
		v = reallocarray(lc->v, cap, sizeof(*v));
		if (v == NULL) {
			lc->failed = true;
			return;
		}
		lc->v = v;
		h = reallocarray(lc->held, cap, sizeof(*h));
		if (h == NULL) {
			lc->failed = true;
			return;
		}
		lc->held = h;
		lc->cap = cap;
	}
	if ((lc->v[lc->n] = entry_new(env)) == NULL) {
		lc->failed = true;
		return;
	}
	lc->held[lc->n++] = held;
}

static int
load_cmp(const void *a, const void *b)
{
	const struct dq_entry	*x = *(struct dq_entry *const *)a;
	const struct dq_entry	*y = *(struct dq_entry *const *)b;

	return strcmp(x->qid, y->qid);
}

int
delivery_load(struct delivery *d)
{
	struct load_ctx	 lc;
	struct dq_entry	*e;
	size_t		 i, nheld = 0;
	int		 n, loaded = 0;

	memset(&lc, 0, sizeof(lc));
	n = spool_scan(d->spool, load_cb, &lc);
	if (n == -1 || lc.failed) {
		for (i = 0; i < lc.n; i++) {
			free(lc.v[i]->first_rcpt);
			free(lc.v[i]);
		}
		free(lc.v);
		free(lc.held);
		log_warnx("event=queue_load_failed");
		return -1;
	}
	if (lc.n > 0)	/* qsort(NULL, 0) is undefined (UBSan) */
		qsort(lc.v, lc.n, sizeof(*lc.v), load_cmp);
	for (i = 0; i < lc.n; i++) {
		e = lc.v[i];
		if (hash_find(d, e->qid) != NULL) {
			free(e->first_rcpt);
			free(e);
			continue;
		}
		entry_insert(d, e);
		loaded++;
		if (lc.held[i]) {
			e->state = DELIVERY_HELD;
			d->stats.held++;
			nheld++;
		} else
			entry_ready(d, e);
	}
	free(lc.v);
	free(lc.held);
	log_info("event=queue_loaded messages=%d held=%zu bytes=%" PRIu64,
	    loaded, nheld, d->stats.bytes);
	return loaded;
}

void
delivery_enqueue(struct delivery *d, const struct spool_envelope *env)
{
	struct dq_entry	*e;

	if (hash_find(d, env->qid) != NULL)
		return;
	if ((e = entry_new(env)) == NULL) {
		/* Safe on disk; found again at the next start. */
		log_warnx("event=enqueue_failed qid=%s why=\"out of memory\"",
		    env->qid);
		return;
	}
	entry_insert(d, e);
	entry_ready(d, e);
}

bool
delivery_accepting(struct delivery *d, uint64_t size, enum reason *why)
{
	const struct config	*cfg = d->cfg;
	uint64_t		 now;

	if (why != NULL)
		*why = REASON_NONE;
	if ((cfg->queue_max_messages > 0 &&
	    d->stats.messages >= cfg->queue_max_messages) ||
	    (cfg->queue_max_bytes > 0 &&
	    d->stats.bytes + size > cfg->queue_max_bytes)) {
		if (why != NULL)
			*why = REASON_QUEUE_FULL;
		return false;
	}
	if (cfg->disk_min_free > 0) {
		now = now_ms();
		if (d->disk_checked == 0 ||
		    now >= d->disk_checked + DQ_DISK_CACHE_MS ||
		    now < d->disk_checked) {
			d->disk_free = spool_disk_free(d->spool);
			d->disk_checked = now;
		}
		if (d->disk_free < 0 ||
		    (uint64_t)d->disk_free < cfg->disk_min_free + size) {
			if (why != NULL)
				*why = REASON_QUEUE_DISK;
			return false;
		}
	}
	return true;
}

void
delivery_free(struct delivery *d)
{
	struct dq_dest		*ds;
	struct dq_conn		*c;
	struct dq_entry		*e;
	struct dq_pending	*p;

	if (d == NULL)
		return;
	while ((p = TAILQ_FIRST(&d->pendings)) != NULL) {
		/* The commit callback frees it and sees no delivery. */
		TAILQ_REMOVE(&d->pendings, p, link);
		p->d = NULL;
	}
	while ((ds = TAILQ_FIRST(&d->dests)) != NULL) {
		/*
		 * Drop, not QUIT: the loop may never run again to finish a
		 * polite close, and the server copes with a closed socket.
		 */
		while ((c = TAILQ_FIRST(&ds->conns)) != NULL) {
			c->entry = NULL;
			conn_free(c, false);
		}
		TAILQ_REMOVE(&d->dests, ds, link);
		event_free(ds->timer);
		free(ds->ready.v);
		free(ds->wait.v);
		free(ds);
	}
	while ((e = TAILQ_FIRST(&d->entries)) != NULL) {
		TAILQ_REMOVE(&d->entries, e, link);
		free(e->first_rcpt);
		free(e->last_error);
		free(e);
	}
	event_free(d->sweep);
	if (d->dns != NULL)
		evdns_base_free(d->dns, 0);
	free(d->hash);
	free(d);
}

/* ------------------------------------------------------------ operator */

static enum delivery_state
entry_shown_state(const struct dq_entry *e)
{
	if (e->state == DELIVERY_READY && e->dest != NULL &&
	    (!e->dest->configured ||
	    e->dest->circuit == DELIVERY_CIRCUIT_OPEN))
		return DELIVERY_DEFERRED;
	return e->state;
}

static void
entry_info(const struct dq_entry *e, struct delivery_entry_info *info)
{
	memset(info, 0, sizeof(*info));
	snprintf(info->qid, sizeof(info->qid), "%s", e->qid);
	snprintf(info->domain, sizeof(info->domain), "%s", e->domain);
	snprintf(info->sender, sizeof(info->sender), "%s", e->sender);
	info->first_rcpt = e->first_rcpt;
	info->nrcpts = e->nrcpts;
	info->size = e->size;
	info->created = e->created;
	info->attempts = e->attempts;
	info->state = entry_shown_state(e);
	info->next_attempt = (int64_t)(e->next_attempt / 1000);
	if (info->state == DELIVERY_DEFERRED && e->next_attempt == 0 &&
	    e->dest != NULL && e->dest->circuit == DELIVERY_CIRCUIT_OPEN)
		info->next_attempt = (int64_t)(e->dest->next_probe / 1000);
	info->last_error = e->last_error != NULL ? e->last_error : "";
	if (info->last_error[0] == '\0' && e->dest != NULL &&
	    e->dest->circuit != DELIVERY_CIRCUIT_CLOSED)
		info->last_error = e->dest->last_error;
}

void
delivery_iterate(struct delivery *d, delivery_entry_cb cb, void *arg)
{
	struct delivery_entry_info	 info;
	struct dq_entry			*e;

	TAILQ_FOREACH(e, &d->entries, link) {
		entry_info(e, &info);
		cb(arg, &info);
	}
}

int
delivery_info(struct delivery *d, const char *qid, delivery_entry_cb cb,
    void *arg)
{
	struct delivery_entry_info	 info;
	struct dq_entry			*e;

	if ((e = hash_find(d, qid)) == NULL)
		return -1;
	entry_info(e, &info);
	cb(arg, &info);
	return 1;
}

void
delivery_iterate_dests(struct delivery *d, delivery_dest_cb cb, void *arg)
{
	struct delivery_dest_info	 info;
	struct dq_dest			*ds;
	char				 first[CONFIG_HOST_MAX + 16];
	struct dq_entry			*e;
	size_t				 i, left = 0;
	int64_t				*oldest;
	struct dq_dest			**idx;
	size_t				 n = 0;

	TAILQ_FOREACH(ds, &d->dests, link)
		n++;
	oldest = calloc(n > 0 ? n : 1, sizeof(*oldest));
	idx = calloc(n > 0 ? n : 1, sizeof(*idx));
	i = 0;
	TAILQ_FOREACH(ds, &d->dests, link) {
		if (idx != NULL)
			idx[i] = ds;
		if (ds->messages > 0)
			left++;
		i++;
	}
	/* The oldest of each: first hit in the oldest-first list. */
	if (oldest != NULL && idx != NULL) {
		TAILQ_FOREACH(e, &d->entries, link) {
			if (left == 0)
				break;
			if (e->dest == NULL)
				continue;
			for (i = 0; i < n; i++)
				if (idx[i] == e->dest && oldest[i] == 0) {
					oldest[i] = e->created;
					left--;
				}
		}
	}
	i = 0;
	TAILQ_FOREACH(ds, &d->dests, link) {
		if (ds->configured || ds->messages > 0) {
			memset(&info, 0, sizeof(info));
			info.domain = ds->name;
			first[0] = '\0';
			if (ds->nservers > 0)
				snprintf(first, sizeof(first), "%s:%s",
				    ds->servers[0].host, ds->servers[0].port);
			info.server = ds->server_used[0] != '\0' ?
			    ds->server_used : first;
			info.circuit = ds->circuit;
			info.failures = ds->failures;
			info.next_probe = ds->circuit ==
			    DELIVERY_CIRCUIT_CLOSED ? 0 :
			    (int64_t)(ds->next_probe / 1000);
			info.connections = ds->nconns;
			info.messages = ds->messages;
			info.bytes = ds->bytes;
			info.oldest = oldest != NULL ? oldest[i] : 0;
			info.delivered = ds->delivered;
			info.deferred = ds->deferred;
			info.bounced = ds->bounced;
			cb(arg, &info);
		}
		i++;
	}
	free(oldest);
	free(idx);
}

void
delivery_get_stats(struct delivery *d, struct delivery_stats *st)
{
	struct dq_dest	*ds;
	struct dq_conn	*c;

	*st = d->stats;
	st->active = 0;
	TAILQ_FOREACH(ds, &d->dests, link)
		TAILQ_FOREACH(c, &ds->conns, link)
			if (c->entry != NULL)
				st->active++;
}

/* Makes one entry due now; returns 1 if it was waiting. */
static int
entry_flush(struct delivery *d, struct dq_entry *e, uint64_t now)
{
	struct dq_dest	*ds = e->dest;

	if (e->state == DELIVERY_ACTIVE || e->state == DELIVERY_HELD ||
	    ds == NULL)
		return 0;
	if (ds->circuit == DELIVERY_CIRCUIT_OPEN)
		ds->next_probe = now;
	if (e->heap == &ds->wait) {
		entry_ready(d, e);
		return 1;
	}
	dest_kick(ds);
	return entry_shown_state(e) == DELIVERY_DEFERRED ? 1 : 0;
}

int
delivery_flush(struct delivery *d, const char *qid)
{
	struct dq_entry	*e, *next;
	uint64_t	 now = now_ms();
	int		 n = 0;

	if (qid != NULL) {
		if ((e = hash_find(d, qid)) == NULL)
			return -1;
		n = entry_flush(d, e, now);
	} else {
		TAILQ_FOREACH_SAFE(e, &d->entries, link, next)
			n += entry_flush(d, e, now);
	}
	log_info("event=flush qid=%s messages=%d", qid != NULL ? qid : "all",
	    n);
	return n;
}

/*
 * Operator commands act on one message (qid) or on all (NULL): returns the
 * number affected, or -1 for an unknown qid.
 */
static int
entries_apply(struct delivery *d, const char *qid,
    int (*fn)(struct delivery *, struct dq_entry *))
{
	struct dq_entry	*e, *next;
	int		 n = 0;

	if (qid != NULL) {
		if ((e = hash_find(d, qid)) == NULL)
			return -1;
		return fn(d, e);
	}
	TAILQ_FOREACH_SAFE(e, &d->entries, link, next)
		n += fn(d, e);
	return n;
}

static int
entry_delete(struct delivery *d, struct dq_entry *e)
{
	if (e->state == DELIVERY_ACTIVE) {
		e->del_pending = true;
		return 1;
	}
	if (spool_remove(d->spool, e->qid) == -1) {
		log_warnx("event=remove_error qid=%s", e->qid);
		return 0;
	}
	log_info("event=deleted qid=%s", e->qid);
	entry_free(d, e);
	return 1;
}

int
delivery_delete(struct delivery *d, const char *qid)
{
	return entries_apply(d, qid, entry_delete);
}

static int
entry_hold(struct delivery *d, struct dq_entry *e)
{
	if (e->state == DELIVERY_HELD)
		return 0;
	if (e->state == DELIVERY_ACTIVE) {
		e->hold_pending = true;
		return 1;
	}
	if (spool_hold(d->spool, e->qid) == -1) {
		log_warnx("event=hold_error qid=%s", e->qid);
		return 0;
	}
	entry_detach(e);
	e->state = DELIVERY_HELD;
	d->stats.held++;	/* spool_hold logs it */
	return 1;
}

int
delivery_hold(struct delivery *d, const char *qid)
{
	return entries_apply(d, qid, entry_hold);
}

static int
entry_release(struct delivery *d, struct dq_entry *e)
{
	if (e->hold_pending) {
		e->hold_pending = false;
		return 1;
	}
	if (e->state != DELIVERY_HELD)
		return 0;
	if (spool_release(d->spool, e->qid) == -1) {
		log_warnx("event=release_error qid=%s", e->qid);
		return 0;
	}
	d->stats.held--;
	e->state = DELIVERY_READY;	/* spool_release logs it */
	entry_ready(d, e);
	return 1;
}

int
delivery_release(struct delivery *d, const char *qid)
{
	return entries_apply(d, qid, entry_release);
}

const char *
delivery_state_name(enum delivery_state s)
{
	static const char *const names[] = {
		[DELIVERY_READY] = "ready",
		[DELIVERY_ACTIVE] = "active",
		[DELIVERY_DEFERRED] = "deferred",
		[DELIVERY_HELD] = "held"
	};

	if ((size_t)s >= sizeof(names) / sizeof(names[0]))
		return "unknown";
	return names[s];
}

const char *
delivery_circuit_name(enum delivery_circuit c)
{
	static const char *const names[] = {
		[DELIVERY_CIRCUIT_CLOSED] = "closed",
		[DELIVERY_CIRCUIT_OPEN] = "open",
		[DELIVERY_CIRCUIT_HALF_OPEN] = "half_open"
	};

	if ((size_t)c >= sizeof(names) / sizeof(names[0]))
		return "unknown";
	return names[c];
}
