/*
 * spool_sync.c: group commit of queue files on a few writer threads.
 *
 * The event loop hands finished writers to spool_sync_commit(), which
 * only appends them to a mutex-protected pending list and wakes a
 * thread.  A thread takes everything pending as one batch and:
 *
 *   1. sync_file_range(SYNC_FILE_RANGE_WRITE) on every file, so the
 *      kernel starts write-back of all of them at once;
 *   2. fdatasync() on each file, in turn (mostly waiting on I/O that
 *      step 1 already issued; on ext4/xfs the first one's journal commit
 *      carries the others' allocation metadata too);
 *   3. spool_writer_commit(): rename tmp/<qid> into queue/<bucket>/;
 *   4. fsync() of each distinct bucket directory, once per batch;
 *   5. appends the results to the done list and makes an event active on
 *      the loop's base; the loop side runs the callbacks.
 *
 * While a batch runs, new commits pile up in pending and become the next
 * batch: the more sessions commit concurrently, the more files share one
 * journal commit, so disk latency is paid per batch, not per message.
 *
 * Why SPOOL_SYNC_THREADS threads and not one: where the file system has
 * no journal to share (ext4 without one, as on the bench machine), every
 * fdatasync and directory fsync is its own write and cache flush, so a
 * batch costs per file, not per batch, and one thread waiting on them in
 * turn caps the accept rate (about 0.3 ms a file there).  While one
 * thread waits on the disk another takes the next batch, so the device
 * sees several requests at once.  Each message's own order is unchanged
 * (its file synced, then renamed, then its directory synced, then its
 * callback), and batches are independent: no message waits on another.
 *
 * When the threads are idle, spool_sync_commit does not wake one directly:
 * it makes a "kick" event active, which runs after the callbacks already
 * due in this loop iteration, so every session that finished DATA in the
 * same iteration lands in the same batch (measured in test_spool_sync:
 * in a closed loop on ext4, 8 sessions went from 2.7 to 4-7 files per
 * batch and 64 sessions from 13.6 to 24-60).
 *
 * Why fdatasync and not fsync for a new file: fdatasync(2) flushes the
 * data and every piece of metadata needed to read it back, which for a
 * file that was just written includes its size and block allocation
 * (POSIX: "all I/O operations associated with the file" needed for data
 * integrity completion; the Linux man page names st_size explicitly).
 * What it skips is timestamps, which moat never reads.  The name of the
 * file is directory data, made durable by step 4, after the rename.
 *
 * Threading: event_active() is called from the writer threads, which is
 * safe only if the process called evthread_use_pthreads() before creating
 * the event base (moatd's main does; so must tests).  The threads touch
 * no other libevent object and calls only spool_writer_fd/commit/abort.
 * Callbacks always run on the loop thread.
 */
#include <sys/queue.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "qid.h"
#include "spool.h"
#include "spool_sync.h"

#define SPOOL_SYNC_THREADS	4

struct spool_sync_item {
	TAILQ_ENTRY(spool_sync_item)	 entry;
	struct spool_writer		*w;
	spool_sync_cb			 cb;
	uint64_t			 cookie;
	char				 qid[QID_LEN + 1];
	int				 error;
	size_t				 dir;	/* index in the batch's dirs */
};
TAILQ_HEAD(spool_sync_list, spool_sync_item);

struct spool_sync {
	struct event_base	*base;
	struct spool		*sp;
	struct event		*ev_done;
	struct event		*ev_kick;
	pthread_t		 threads[SPOOL_SYNC_THREADS];
	size_t			 nthreads;
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
	struct spool_sync_list	 pending;	/* under lock */
	struct spool_sync_list	 done;		/* under lock */
	bool			 stopping;	/* under lock */
	uint64_t		 batches;	/* under lock */
	uint64_t		 files;		/* under lock */
};

/* The distinct directories of one batch (at most the 256 buckets). */
struct spool_sync_dirs {
	char	(*path)[PATH_MAX];
	size_t	  n, cap;
};

/* Undoes a commit whose directory could not be synced. */
static void
spool_sync_unlink(const char *dir, const char *qid)
{
	char	path[PATH_MAX];
	int	n;

	n = snprintf(path, sizeof(path), "%s/%s", dir, qid);
	if (n > 0 && (size_t)n < sizeof(path))
		(void)unlink(path);
}

/* Returns the index of path in dirs, adding it; SIZE_MAX on ENOMEM. */
static size_t
spool_sync_dir_index(struct spool_sync_dirs *dirs, const char *path)
{
	char	(*np)[PATH_MAX];
	size_t	  i;

	for (i = 0; i < dirs->n; i++) {
		if (strcmp(dirs->path[i], path) == 0)
			return i;
	}
	if (dirs->n == dirs->cap) {
		np = reallocarray(dirs->path, dirs->cap == 0 ? 16 :
		    dirs->cap * 2, sizeof(*np));
		if (np == NULL)
			return SIZE_MAX;
		dirs->path = np;
		dirs->cap = dirs->cap == 0 ? 16 : dirs->cap * 2;
	}
	/* path came from a PATH_MAX buffer: it fits. */
	memcpy(dirs->path[dirs->n], path, strlen(path) + 1);
	return dirs->n++;
}

static size_t
spool_sync_run_batch(struct spool_sync_list *batch)
{
	struct spool_sync_dirs	 dirs = { NULL, 0, 0 };
	struct spool_sync_item	*it;
	struct timespec		 t0, t1;
	char			 dirpath[PATH_MAX];
	size_t			 i, n = 0, nok = 0;
	int			 fd, derr;

	clock_gettime(CLOCK_MONOTONIC, &t0);

	/* 1. Start write-back of every file before waiting on any. */
	TAILQ_FOREACH(it, batch, entry) {
		n++;
		fd = spool_writer_fd(it->w);
		/* Only a hint: fdatasync below reports real errors. */
		(void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	}

	/* 2. Wait for each file's data (and size) to be on disk. */
	TAILQ_FOREACH(it, batch, entry) {
		if (fdatasync(spool_writer_fd(it->w)) == -1) {
			it->error = errno;
			log_warnx("event=spool_fsync qid=%s error=\"%s\"",
			    it->qid, strerror(it->error));
			spool_writer_abort(it->w);
			it->w = NULL;
		}
	}

	/* 3. Rename into queue/; the writer is freed either way. */
	TAILQ_FOREACH(it, batch, entry) {
		if (it->w == NULL)
			continue;
		if (spool_writer_commit(it->w, dirpath, sizeof(dirpath)) == -1) {
			it->error = errno != 0 ? errno : EIO;
			it->w = NULL;
			continue;
		}
		it->w = NULL;
		it->dir = spool_sync_dir_index(&dirs, dirpath);
		if (it->dir == SIZE_MAX) {
			/* Cannot track the directory: fsync it right away. */
			if (spool_fsync_dir(dirpath) == -1) {
				it->error = errno;
				spool_sync_unlink(dirpath, it->qid);
			}
		}
	}

	/* 4. One fsync per distinct directory; on failure undo its files. */
	for (i = 0; i < dirs.n; i++) {
		if (spool_fsync_dir(dirs.path[i]) == 0)
			continue;
		derr = errno;
		log_warnx("event=spool_fsync dir=%s error=\"%s\"",
		    dirs.path[i], strerror(derr));
		TAILQ_FOREACH(it, batch, entry) {
			if (it->error != 0 || it->dir != i)
				continue;
			it->error = derr;
			/* The contract: on error the file is gone. */
			spool_sync_unlink(dirs.path[i], it->qid);
		}
	}
	free(dirs.path);

	TAILQ_FOREACH(it, batch, entry) {
		if (it->error == 0)
			nok++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	log_debug("event=sync_batch n=%zu ok=%zu dirs=%zu usec=%lld", n, nok,
	    dirs.n, (long long)((t1.tv_sec - t0.tv_sec) * 1000000 +
	    (t1.tv_nsec - t0.tv_nsec) / 1000));
	return n;
}

static void *
spool_sync_main(void *arg)
{
	struct spool_sync	*ss = arg;
	struct spool_sync_list	 batch;
	size_t			 n;

	pthread_mutex_lock(&ss->lock);
	for (;;) {
		while (TAILQ_EMPTY(&ss->pending) && !ss->stopping)
			pthread_cond_wait(&ss->cond, &ss->lock);
		/* Stop only once everything queued has been committed. */
		if (TAILQ_EMPTY(&ss->pending))
			break;
		TAILQ_INIT(&batch);
		TAILQ_CONCAT(&batch, &ss->pending, entry);
		pthread_mutex_unlock(&ss->lock);

		n = spool_sync_run_batch(&batch);

		pthread_mutex_lock(&ss->lock);
		TAILQ_CONCAT(&ss->done, &batch, entry);
		ss->batches++;
		ss->files += n;
		pthread_mutex_unlock(&ss->lock);
		event_active(ss->ev_done, EV_READ, 0);
		pthread_mutex_lock(&ss->lock);
	}
	pthread_mutex_unlock(&ss->lock);
	return NULL;
}

/* Loop side: runs the callbacks of every finished item. */
static void
spool_sync_run_done(struct spool_sync *ss)
{
	struct spool_sync_list	 done;
	struct spool_sync_item	*it;

	TAILQ_INIT(&done);
	pthread_mutex_lock(&ss->lock);
	TAILQ_CONCAT(&done, &ss->done, entry);
	pthread_mutex_unlock(&ss->lock);

	while ((it = TAILQ_FIRST(&done)) != NULL) {
		TAILQ_REMOVE(&done, it, entry);
		it->cb(it->cookie, it->error, it->qid);
		free(it);
	}
}

/* Loop side: wakes a thread once for all commits of this iteration. */
static void
spool_sync_kick_cb(evutil_socket_t fd, short events, void *arg)
{
	struct spool_sync	*ss = arg;

	(void)fd;
	(void)events;
	pthread_mutex_lock(&ss->lock);
	pthread_cond_signal(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
}

static void
spool_sync_done_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd;
	(void)events;
	spool_sync_run_done(arg);
}

struct spool_sync *
spool_sync_new(struct event_base *base, struct spool *sp, char **cause)
{
	struct spool_sync	*ss;
	sigset_t		 all, old;
	int			 error;

	*cause = NULL;
	if ((ss = calloc(1, sizeof(*ss))) == NULL) {
		if (asprintf(cause, "spool_sync: %s", strerror(errno)) == -1)
			*cause = NULL;
		return NULL;
	}
	ss->base = base;
	ss->sp = sp;
	TAILQ_INIT(&ss->pending);
	TAILQ_INIT(&ss->done);
	ss->ev_done = event_new(base, -1, 0, spool_sync_done_cb, ss);
	ss->ev_kick = event_new(base, -1, 0, spool_sync_kick_cb, ss);
	if (ss->ev_done == NULL || ss->ev_kick == NULL) {
		if (asprintf(cause, "spool_sync: event_new failed") == -1)
			*cause = NULL;
		if (ss->ev_done != NULL)
			event_free(ss->ev_done);
		if (ss->ev_kick != NULL)
			event_free(ss->ev_kick);
		free(ss);
		return NULL;
	}
	if ((error = pthread_mutex_init(&ss->lock, NULL)) != 0)
		goto fail_ev;
	if ((error = pthread_cond_init(&ss->cond, NULL)) != 0)
		goto fail_mutex;

	/* Signals are for the loop thread: the writer threads block all. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (error = 0; ss->nthreads < SPOOL_SYNC_THREADS; ss->nthreads++) {
		error = pthread_create(&ss->threads[ss->nthreads], NULL,
		    spool_sync_main, ss);
		if (error != 0)
			break;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	/* Fewer threads only cost speed; none is a failure. */
	if (ss->nthreads == 0)
		goto fail_cond;
	return ss;

fail_cond:
	pthread_cond_destroy(&ss->cond);
fail_mutex:
	pthread_mutex_destroy(&ss->lock);
fail_ev:
	if (asprintf(cause, "spool_sync: %s", strerror(error)) == -1)
		*cause = NULL;
	event_free(ss->ev_done);
	event_free(ss->ev_kick);
	free(ss);
	return NULL;
}

void
spool_sync_commit(struct spool_sync *ss, struct spool_writer *w,
    spool_sync_cb cb, uint64_t cookie)
{
	struct spool_sync_item	*it;
	char			 qid[QID_LEN + 1];

	if ((it = calloc(1, sizeof(*it))) == NULL) {
		/*
		 * No memory to queue it: fail this message only, now.  The
		 * callback runs before we return; callers find their session
		 * by cookie, so this is as safe as a later call.
		 */
		memcpy(qid, spool_writer_qid(w), sizeof(qid));
		spool_writer_abort(w);
		log_warnx("event=spool_sync_error qid=%s error=\"%s\"", qid,
		    strerror(ENOMEM));
		cb(cookie, ENOMEM, qid);
		return;
	}
	it->w = w;
	it->cb = cb;
	it->cookie = cookie;
	it->dir = SIZE_MAX;
	memcpy(it->qid, spool_writer_qid(w), sizeof(it->qid));

	pthread_mutex_lock(&ss->lock);
	TAILQ_INSERT_TAIL(&ss->pending, it, entry);
	pthread_mutex_unlock(&ss->lock);
	/* A no-op if already active: one wake-up per loop iteration. */
	event_active(ss->ev_kick, EV_READ, 0);
}

void
spool_sync_stats(struct spool_sync *ss, uint64_t *batches, uint64_t *files)
{
	pthread_mutex_lock(&ss->lock);
	if (batches != NULL)
		*batches = ss->batches;
	if (files != NULL)
		*files = ss->files;
	pthread_mutex_unlock(&ss->lock);
}

void
spool_sync_free(struct spool_sync *ss)
{
	size_t	i;
	int	error;

	if (ss == NULL)
		return;
	pthread_mutex_lock(&ss->lock);
	ss->stopping = true;
	pthread_cond_broadcast(&ss->cond);
	pthread_mutex_unlock(&ss->lock);
	for (i = 0; i < ss->nthreads; i++) {
		if ((error = pthread_join(ss->threads[i], NULL)) != 0)
			fatalx("spool_sync: pthread_join: %s",
			    strerror(error));
	}

	/* Report what the last batches did; we are on the loop thread. */
	spool_sync_run_done(ss);

	event_free(ss->ev_done);
	event_free(ss->ev_kick);
	pthread_cond_destroy(&ss->cond);
	pthread_mutex_destroy(&ss->lock);
	free(ss);
}
