/*
 * guard.c: the pass cache of guard.h, a direct-mapped table of 64Ki slots.
 */
#include <string.h>

#include "guard.h"

#define GUARD_SLOTS	65536
#define GUARD_IP_MAX	48

struct guard_slot {
	char	ip[GUARD_IP_MAX];
	int64_t	until;		/* unix seconds */
};

static struct guard_slot guard_slots[GUARD_SLOTS];

/* FNV-1a: cheap and good enough for a cache index, not a security hash. */
static uint32_t
guard_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

void
guard_pass_remember(const char *ip, int64_t now, uint64_t ttl_ms)
{
	struct guard_slot *sl = &guard_slots[guard_hash(ip) % GUARD_SLOTS];
	size_t n = strlen(ip);

	if (ttl_ms == 0 || n >= GUARD_IP_MAX)
		return;
	memcpy(sl->ip, ip, n + 1);
	sl->until = now + (int64_t)(ttl_ms / 1000);
}

bool
guard_pass_known(const char *ip, int64_t now)
{
	const struct guard_slot *sl =
	    &guard_slots[guard_hash(ip) % GUARD_SLOTS];

	return sl->until > now && strcmp(sl->ip, ip) == 0;
}

void
guard_pass_forget_all(void)
{
	memset(guard_slots, 0, sizeof guard_slots);
}
