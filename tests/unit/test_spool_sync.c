/*
 * test_spool_sync.c: group commit on a real event base.  Many writers
 * committed at once must all come back with error 0 on the loop thread,
 * be in queue/, and share fewer batches than there are files.
 */
#include <sys/stat.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "log.h"
#include "qid.h"
#include "spool.h"
#include "spool_sync.h"

#define NWRITERS	200

struct result {
	char	qid[QID_LEN + 1];
	int	error;
	int	calls;
};

static struct result	 results[NWRITERS];
static int		 ndone;
static pthread_t	 loop_thread;
static struct event_base *test_base;

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(path);
}

static void
done_cb(uint64_t cookie, int error, const char *qid)
{
	assert_true(pthread_equal(pthread_self(), loop_thread));
	assert_true(cookie < NWRITERS);
	results[cookie].error = error;
	results[cookie].calls++;
	assert_string_equal(results[cookie].qid, qid);
	if (++ndone == NWRITERS)
		event_base_loopbreak(test_base);
}

static void
timeout_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	(void)arg;
	fail_msg("timeout: got=%d callbacks want=%d", ndone, NWRITERS);
}

static struct spool_writer *
new_writer(struct spool *sp, int i)
{
	struct spool_envelope	 env;
	struct spool_writer	*w;
	char			 rcpt[1][SPOOL_ADDR_MAX] = { "bob@example.com" };
	char			 body[128], *cause = NULL;
	int			 n;

	memset(&env, 0, sizeof(env));
	snprintf(env.sender, sizeof(env.sender), "a%d@example.org", i);
	env.rcpts = rcpt;
	env.nrcpts = 1;
	w = spool_writer_new(sp, &env, &cause);
	if (w == NULL)
		fail_msg("spool_writer_new: %s", cause);
	n = snprintf(body, sizeof(body), "Subject: %d\r\n\r\nbody %d\r\n", i,
	    i);
	assert_int_equal(spool_writer_write(w, body, n), 0);
	assert_int_equal(spool_writer_finish(w), 0);
	return w;
}

static void
test_group_commit(void **state)
{
	struct spool_writer	*ws[NWRITERS];
	struct spool_sync	*ss;
	struct spool		*sp;
	struct spool_message	 msg;
	struct event		*tmo;
	struct timeval		 tv = { 60, 0 };
	char			 dir[] = "/tmp/moat-test-sync-XXXXXX";
	char			*cause = NULL;
	uint64_t		 batches, files;
	int			 i;

	(void)state;
	assert_non_null(mkdtemp(dir));
	sp = spool_open(dir, &cause);
	if (sp == NULL)
		fail_msg("spool_open: %s", cause);
	test_base = event_base_new();
	assert_non_null(test_base);
	loop_thread = pthread_self();
	ss = spool_sync_new(test_base, sp, &cause);
	if (ss == NULL)
		fail_msg("spool_sync_new: %s", cause);
	tmo = evtimer_new(test_base, timeout_cb, NULL);
	assert_non_null(tmo);
	evtimer_add(tmo, &tv);

	/* All written first, then committed back to back, like sessions. */
	for (i = 0; i < NWRITERS; i++) {
		ws[i] = new_writer(sp, i);
		memcpy(results[i].qid, spool_writer_qid(ws[i]), QID_LEN + 1);
		results[i].error = -1;
	}
	for (i = 0; i < NWRITERS; i++)
		spool_sync_commit(ss, ws[i], done_cb, (uint64_t)i);
	assert_int_equal(event_base_dispatch(test_base), 0);

	if (ndone != NWRITERS)
		fail_msg("callbacks: got=%d want=%d", ndone, NWRITERS);
	for (i = 0; i < NWRITERS; i++) {
		if (results[i].error != 0 || results[i].calls != 1)
			fail_msg("writer %d: got=error %d calls %d want=0 1",
			    i, results[i].error, results[i].calls);
		assert_int_equal(spool_message_open(sp, results[i].qid, &msg,
		    NULL), 0);
		spool_message_close(&msg);
	}
	spool_sync_stats(ss, &batches, &files);
	printf("group commit: files=%llu batches=%llu (%.1f files/batch)\n",
	    (unsigned long long)files, (unsigned long long)batches,
	    (double)files / (double)batches);
	if (files != NWRITERS)
		fail_msg("files: got=%llu want=%d", (unsigned long long)files,
		    NWRITERS);
	if (batches >= NWRITERS)
		fail_msg("batches: got=%llu want<%d",
		    (unsigned long long)batches, NWRITERS);

	spool_sync_free(ss);
	event_free(tmo);
	event_base_free(test_base);
	spool_close(sp);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/*
 * spool_sync_free with work still queued: the thread finishes it and the
 * callbacks run from spool_sync_free itself; a failed (unfinished)
 * writer comes back with an error and leaves no file.
 */
static void
test_free_drains(void **state)
{
	struct spool_envelope	 env;
	struct spool_writer	*w;
	struct spool_sync	*ss;
	struct spool		*sp;
	struct spool_message	 msg;
	char			 rcpt[1][SPOOL_ADDR_MAX] = { "bob@example.com" };
	char			 dir[] = "/tmp/moat-test-sync-XXXXXX";
	char			*cause = NULL;
	int			 i;

	(void)state;
	assert_non_null(mkdtemp(dir));
	sp = spool_open(dir, &cause);
	assert_non_null(sp);
	test_base = event_base_new();
	assert_non_null(test_base);
	loop_thread = pthread_self();
	ss = spool_sync_new(test_base, sp, &cause);
	assert_non_null(ss);
	memset(results, 0, sizeof(results));
	ndone = 0;

	for (i = 0; i < 10; i++) {
		w = new_writer(sp, i);
		memcpy(results[i].qid, spool_writer_qid(w), QID_LEN + 1);
		spool_sync_commit(ss, w, done_cb, (uint64_t)i);
	}
	/* Not finished: must fail. */
	memset(&env, 0, sizeof(env));
	env.rcpts = rcpt;
	env.nrcpts = 1;
	w = spool_writer_new(sp, &env, &cause);
	assert_non_null(w);
	memcpy(results[10].qid, spool_writer_qid(w), QID_LEN + 1);
	spool_sync_commit(ss, w, done_cb, 10);

	spool_sync_free(ss);
	if (ndone != 11)
		fail_msg("callbacks: got=%d want=11", ndone);
	for (i = 0; i < 10; i++) {
		assert_int_equal(results[i].error, 0);
		assert_int_equal(spool_message_open(sp, results[i].qid, &msg,
		    NULL), 0);
		spool_message_close(&msg);
	}
	assert_int_not_equal(results[10].error, 0);
	assert_int_equal(spool_message_open(sp, results[10].qid, &msg, NULL),
	    -1);
	assert_int_equal(errno, ENOENT);

	event_base_free(test_base);
	spool_close(sp);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/*
 * Closed loop, as live sessions behave: C sessions each commit a message,
 * and each completion starts that session's next one, until TOTAL.  The
 * files-per-batch figure is the group-commit factor under that load.
 */
#define CL_TOTAL	600

static struct spool	*cl_sp;
static struct spool_sync *cl_ss;
static int		 cl_started, cl_done, cl_errors;

static void
cl_cb(uint64_t cookie, int error, const char *qid)
{
	(void)qid;
	if (error != 0)
		cl_errors++;
	if (cl_started < CL_TOTAL) {
		spool_sync_commit(cl_ss, new_writer(cl_sp, cl_started),
		    cl_cb, cookie);
		cl_started++;
	}
	if (++cl_done == CL_TOTAL)
		event_base_loopbreak(test_base);
}

static void
test_closed_loop(void **state)
{
	static const int	 conc[] = { 1, 8, 64 };
	struct event		*tmo;
	struct timeval		 tv = { 120, 0 };
	char			 dir[] = "/tmp/moat-test-sync-XXXXXX";
	char			*cause = NULL;
	uint64_t		 batches, files;
	size_t			 k;
	int			 i;

	(void)state;
	assert_non_null(mkdtemp(dir));
	cl_sp = spool_open(dir, &cause);
	assert_non_null(cl_sp);
	for (k = 0; k < sizeof(conc) / sizeof(conc[0]); k++) {
		test_base = event_base_new();
		assert_non_null(test_base);
		loop_thread = pthread_self();
		cl_ss = spool_sync_new(test_base, cl_sp, &cause);
		assert_non_null(cl_ss);
		tmo = evtimer_new(test_base, timeout_cb, NULL);
		evtimer_add(tmo, &tv);
		cl_started = cl_done = cl_errors = 0;
		for (i = 0; i < conc[k]; i++) {
			spool_sync_commit(cl_ss, new_writer(cl_sp, i), cl_cb,
			    (uint64_t)i);
			cl_started++;
		}
		assert_int_equal(event_base_dispatch(test_base), 0);
		spool_sync_stats(cl_ss, &batches, &files);
		printf("closed loop: sessions=%d files=%llu batches=%llu "
		    "(%.1f files/batch)\n", conc[k],
		    (unsigned long long)files, (unsigned long long)batches,
		    (double)files / (double)batches);
		if (cl_errors != 0 || cl_done != CL_TOTAL)
			fail_msg("got=%d done %d errors want=%d done 0 errors",
			    cl_done, cl_errors, CL_TOTAL);
		if (conc[k] > 1 && batches >= files)
			fail_msg("batches: got=%llu want<%llu",
			    (unsigned long long)batches,
			    (unsigned long long)files);
		spool_sync_free(cl_ss);
		event_free(tmo);
		event_base_free(test_base);
	}
	spool_close(cl_sp);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_group_commit),
		cmocka_unit_test(test_free_drains),
		cmocka_unit_test(test_closed_loop),
	};

	if (evthread_use_pthreads() == -1) {
		fprintf(stderr, "evthread_use_pthreads failed\n");
		return 1;
	}
	log_init("test_spool_sync", getenv("MOAT_DEBUG") ? LOG_LEVEL_DEBUG :
	    LOG_LEVEL_WARN, false);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
