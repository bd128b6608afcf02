/*
 * qid.c: queue ids (see qid.h for the format).
 *
 * The first 13 hex digits are microseconds since the epoch, forced to be
 * strictly increasing within the process: a clock stepped backwards or
 * two ids in the same microsecond still yield distinct ids that sort in
 * creation order.  The last 5 digits are a per-process counter added to
 * a hash of the pid, so that two processes sharing a spool (the daemon
 * and, say, a recovery tool) cannot collide in the same microsecond.
 * The bucket is taken from those last digits because they are evenly
 * spread, unlike the slowly moving time prefix.
 *
 * Called from the event loop (spool_writer_new); a mutex keeps it safe
 * should another thread ever create ids.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "log.h"
#include "qid.h"

#define QID_TIME_DIGITS	13
#define QID_SEQ_DIGITS	5
#define QID_TIME_MAX	((UINT64_C(1) << (4 * QID_TIME_DIGITS)) - 1)
#define QID_SEQ_MASK	((UINT32_C(1) << (4 * QID_SEQ_DIGITS)) - 1)

static pthread_mutex_t	 qid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t		 qid_last_usec;
static uint32_t		 qid_seq;

void
qid_new(char *buf)
{
	struct timeval	 tv;
	uint64_t	 usec;
	uint32_t	 mix;
	int		 n;

	if (gettimeofday(&tv, NULL) == -1)
		fatal("gettimeofday");
	usec = (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;

	pthread_mutex_lock(&qid_lock);
	if (usec <= qid_last_usec)
		usec = qid_last_usec + 1;
	qid_last_usec = usec;
	/* Knuth's multiplicative hash spreads consecutive pids apart. */
	mix = ((uint32_t)getpid() * UINT32_C(2654435761)) >> 12;
	mix = (mix + qid_seq++) & QID_SEQ_MASK;
	pthread_mutex_unlock(&qid_lock);

	if (usec > QID_TIME_MAX)
		fatalx("qid: clock beyond year 2112");
	n = snprintf(buf, QID_LEN + 1, "%013llx%05x",
	    (unsigned long long)usec, (unsigned int)mix);
	if (n != QID_LEN)
		fatalx("qid: bad length %d", n);
}

bool
qid_valid(const char *s)
{
	size_t	i;

	if (s == NULL)
		return false;
	for (i = 0; i < QID_LEN; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return s[QID_LEN] == '\0';
}

void
qid_bucket(const char *qid, char *buf)
{
	buf[0] = qid[QID_LEN - 2];
	buf[1] = qid[QID_LEN - 1];
	buf[2] = '\0';
}
