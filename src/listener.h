/*
 * listener.h: the SMTP listening sockets.
 *
 * Accepts connections on every configured address and hands them to the
 * session layer, after the cheapest checks that need no parsing: the
 * global session limit answers 421 at once instead of letting clients
 * hang, and running out of file descriptors pauses accepting briefly
 * instead of busy-looping.
 */
#ifndef MOAT_LISTENER_H
#define MOAT_LISTENER_H

struct config;
struct event_base;

int	listener_open(struct event_base *, const struct config *,
	    char **cause);
/* The config changed (reload): limits are read from it from now on. */
void	listener_set_config(const struct config *);
void	listener_close_all(void);

#endif
