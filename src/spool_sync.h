/*
 * spool_sync.h: group commit of queue files on writer threads.
 *
 * Sessions hand finished writers to spool_sync_commit().  A thread takes
 * every writer queued so far as one batch: starts write-back of all of
 * them, fsyncs each file, renames each into queue/, fsyncs each touched
 * directory once, then reports every result back on the event loop.  One
 * batch costs about one journal commit however many sessions are in it,
 * which is why accept throughput grows with concurrency.
 */
#ifndef MOAT_SPOOL_SYNC_H
#define MOAT_SPOOL_SYNC_H

#include <stdint.h>

struct event_base;
struct spool;
struct spool_writer;
struct spool_sync;

/*
 * Called on the event loop thread.  error is 0 when the message is
 * durable in queue/ under qid, else an errno value (the file is gone).
 */
typedef void	(*spool_sync_cb)(uint64_t cookie, int error, const char *qid);

struct spool_sync	*spool_sync_new(struct event_base *, struct spool *,
			    char **cause);
/* Takes ownership of the (finished) writer. */
void			 spool_sync_commit(struct spool_sync *,
			    struct spool_writer *, spool_sync_cb,
			    uint64_t cookie);
/*
 * Counters since spool_sync_new: batches run and files committed in them
 * (files / batches is the group-commit factor).  Safe on any thread.
 */
void			 spool_sync_stats(struct spool_sync *,
			    uint64_t *batches, uint64_t *files);
/* Waits for queued batches, stops the thread, frees. */
void			 spool_sync_free(struct spool_sync *);

#endif
