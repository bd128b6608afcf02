/*
 * test_limiter.c: per-IP and per-network limits of limiter.c.
 *
 * Table-driven: each row opens a number of connections from an address
 * and says how many must be admitted.  Addresses are distinct per row so
 * rows do not share counters.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "limiter.h"

static struct sockaddr_storage
addr(const char *ip)
{
	struct sockaddr_storage	ss;

	memset(&ss, 0, sizeof ss);
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	}
	return ss;
}

static const struct conn_case {
	const char	*why;
	unsigned	 per_ip, per_net, rate;
	const char	*ips[4];	/* connections cycle over these */
	unsigned	 attempts;
	unsigned	 want_ok;
	enum reason	 want_reason;	/* of the last refusal */
} conn_cases[] = {
	{ "per ip", 5, 0, 0, { "192.0.2.1" }, 12, 5,
	    REASON_LIMIT_CONN_PER_IP },
	{ "per /24", 0, 6, 0, { "198.51.100.1", "198.51.100.2",
	    "198.51.100.3" }, 12, 6, REASON_LIMIT_CONN_PER_NET },
	{ "other /24 not counted", 0, 2, 0, { "203.0.113.1",
	    "203.0.114.1" }, 4, 4, REASON_NONE },
	{ "ipv6 /64 is one address", 3, 0, 0, { "2001:db8:1:1::1",
	    "2001:db8:1:1::2" }, 8, 3, REASON_LIMIT_CONN_PER_IP },
	{ "ipv6 /56 shares a net", 0, 4, 0, { "2001:db8:2:1::1",
	    "2001:db8:2:2::1" }, 8, 4, REASON_LIMIT_CONN_PER_NET },
	{ "rate", 0, 0, 10, { "192.0.2.77" }, 15, 10,
	    REASON_LIMIT_CONN_RATE },
	{ "unlimited", 0, 0, 0, { "192.0.2.99" }, 100, 100, REASON_NONE },
};

static void
test_connect_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof conn_cases / sizeof conn_cases[0];
	    i++) {
		const struct conn_case	*tc = &conn_cases[i];
		struct config		*c = config_default();
		struct limiter_client	 held[128];
		unsigned		 ok = 0, nips = 0;
		enum reason		 why = REASON_NONE, last = REASON_NONE;

		assert_non_null(c);
		c->conn_per_ip = tc->per_ip;
		c->conn_per_net = tc->per_net;
		c->conn_rate_per_ip = tc->rate;
		while (nips < 4 && tc->ips[nips] != NULL)
			nips++;
		for (unsigned n = 0; n < tc->attempts; n++) {
			struct sockaddr_storage ss = addr(tc->ips[n % nips]);

			if (limiter_connect(c, (struct sockaddr *)&ss, 1000,
			    &held[ok], &why))
				ok++;
			else
				last = why;
		}
		if (ok != tc->want_ok || last != tc->want_reason)
			fail_msg("%s: got=%u ok, reason %s want=%u ok, %s",
			    tc->why, ok, reason_name(last), tc->want_ok,
			    reason_name(tc->want_reason));
		for (unsigned n = 0; n < ok; n++)
			limiter_disconnect(&held[n]);
		config_free(c);
	}
}

/* A disconnect frees the slot; the sweep forgets idle entries. */
static void
test_disconnect_and_sweep(void **state)
{
	struct config		*c = config_default();
	struct sockaddr_storage	 ss = addr("192.0.2.200");
	struct limiter_client	 a, b;
	enum reason		 why;
	uint64_t		 before;

	(void)state;
	c->conn_per_ip = 1;
	c->conn_rate_per_ip = 0;
	assert_true(limiter_connect(c, (struct sockaddr *)&ss, 5000, &a,
	    &why));
	assert_false(limiter_connect(c, (struct sockaddr *)&ss, 5000, &b,
	    &why));
	assert_int_equal(limiter_conns(&a), 1);
	limiter_disconnect(&a);
	assert_true(limiter_connect(c, (struct sockaddr *)&ss, 5000, &b,
	    &why));
	limiter_disconnect(&b);
	before = limiter_entries();
	assert_true(before > 0);
	for (int i = 0; i < 20; i++)
		limiter_sweep(5000 + 1000);
	if (limiter_entries() != 0)
		fail_msg("got=%llu entries after sweep want=0",
		    (unsigned long long)limiter_entries());
	config_free(c);
}

/* Message and recipient rates answer per minute, sliding. */
static void
test_message_rates(void **state)
{
	struct config		*c = config_default();
	struct sockaddr_storage	 ss = addr("192.0.2.150");
	struct limiter_client	 lc;
	enum reason		 why = REASON_NONE;
	unsigned		 ok = 0;

	(void)state;
	c->msg_rate_per_ip = 30;
	c->rcpt_rate_per_ip = 5;
	assert_true(limiter_connect(c, (struct sockaddr *)&ss, 9000, &lc,
	    &why));
	for (int i = 0; i < 50; i++)
		if (limiter_message(c, &lc, 9000, &why))
			ok++;
	if (ok != 30 || why != REASON_LIMIT_MSG_RATE)
		fail_msg("got=%u %s want=30 limit.msg_rate", ok,
		    reason_name(why));
	/* Two windows later the count has slid away. */
	assert_true(limiter_message(c, &lc, 9000 + 121, &why));
	ok = 0;
	for (int i = 0; i < 9; i++)
		if (limiter_rcpt(c, &lc, 9000, &why))
			ok++;
	if (ok != 5 || why != REASON_LIMIT_RCPT_RATE)
		fail_msg("got=%u %s want=5 limit.rcpt_rate", ok,
		    reason_name(why));
	limiter_disconnect(&lc);
	config_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connect_table),
		cmocka_unit_test(test_disconnect_and_sweep),
		cmocka_unit_test(test_message_rates),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
