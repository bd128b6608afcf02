/*
 * guard.h: what the protocol guard remembers across sessions.
 *
 * A client that passed the deep protocol checks (a clean transaction or a
 * clean QUIT) is remembered for guard.pass_remember and skips the greet
 * pause next time, so good senders are not delayed twice (postscreen's
 * "pass" cache, without the forced reconnect).
 *
 * The cache is a fixed table indexed by a hash of the address: bounded
 * memory whatever the number of clients; a collision only forgets a pass.
 * Later, the reputation store (rep.c) takes this role for all nodes.
 */
#ifndef MOAT_GUARD_H
#define MOAT_GUARD_H

#include <stdbool.h>
#include <stdint.h>

void	guard_pass_remember(const char *ip, int64_t now, uint64_t ttl_ms);
bool	guard_pass_known(const char *ip, int64_t now);
void	guard_pass_forget_all(void);

#endif
