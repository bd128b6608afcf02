/*
 * spool.h: the durable queue, plain files in a spool directory.
 *
 *   DIR/tmp/<qid>              being written; emptied at start
 *   DIR/queue/<bucket>/<qid>   committed: will be delivered or bounced
 *   DIR/hold/<qid>             put on hold by the operator
 *   DIR/corrupt/<qid>          failed validation; never read again
 *
 * A queue file is a sequence of self-checking records (type, length,
 * value) ending in an END record that carries a checksum of everything
 * before it: a file without a valid END is not a message.  The body is
 * stored once, unstuffed, with canonical CRLF line ends, as one
 * contiguous region so that delivery can stream it straight from the file.
 *
 * Durability: spool_writer_finish() only writes; the message exists once
 * spool_sync (spool_sync.h) has fsynced it, renamed it into queue/ and
 * fsynced the directory.  Only then may the client get "250".
 *
 * Retry state (attempts, next attempt) lives in memory in delivery.c:
 * files are truth for what must be delivered, not for when.
 */
#ifndef MOAT_SPOOL_H
#define MOAT_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "qid.h"

#define SPOOL_ADDR_MAX		257	/* RFC 5321 path 256 + NUL */
#define SPOOL_RCPT_MAX		1000	/* hard cap on recipients per file */

/* Envelope flags. */
#define SPOOL_F_DSN		0x0001	/* a bounce: never bounce it again */
#define SPOOL_F_8BITMIME	0x0002	/* BODY=8BITMIME was given */
#define SPOOL_F_WARNED		0x0004	/* delayed DSN already sent */

struct spool_envelope {
	char		 qid[QID_LEN + 1];
	char		 sender[SPOOL_ADDR_MAX];	/* "" = null sender <> */
	char		 domain[256];	/* protected domain it goes to */
	char		 helo[256];
	char		 client_ip[64];
	char		 session_id[32];
	int64_t		 created;	/* unix time, seconds */
	uint32_t	 flags;
	char		(*rcpts)[SPOOL_ADDR_MAX];	/* allocated */
	size_t		 nrcpts;
	uint64_t	 body_len;	/* bytes of body, canonical CRLF */
};

/* A validated message opened for delivery. */
struct spool_message {
	struct spool_envelope	 env;
	int			 fd;		/* read-only */
	off_t			 body_off;	/* body is [off, off+len) */
};

struct spool;
struct spool_writer;

/*
 * Opens (creating as needed) the spool directory, checks that it is
 * writable and empties tmp/ and free/.  Fails with a clear cause otherwise.
 */
struct spool	*spool_open(const char *dir, char **cause);
void		 spool_close(struct spool *);
const char	*spool_dir(const struct spool *);

/* Free the rcpts array of an envelope (not the envelope itself). */
void		 spool_envelope_clear(struct spool_envelope *);
/* Deep copy; returns -1 on allocation failure. */
int		 spool_envelope_copy(struct spool_envelope *dst,
		    const struct spool_envelope *src);

/*
 * Writing.  spool_writer_new assigns a fresh qid (readable with
 * spool_writer_qid), opens tmp/<qid> and writes the envelope records.
 * The body is then appended with spool_writer_write (buffered), and
 * spool_writer_finish writes the END record.  Any error leaves the writer
 * failed: later calls return -1 and spool_writer_abort unlinks the file.
 */
struct spool_writer *
		 spool_writer_new(struct spool *,
		    const struct spool_envelope *env, char **cause);
const char	*spool_writer_qid(const struct spool_writer *);
int		 spool_writer_write(struct spool_writer *, const void *,
		    size_t);
uint64_t	 spool_writer_body_len(const struct spool_writer *);
int		 spool_writer_finish(struct spool_writer *);
void		 spool_writer_abort(struct spool_writer *);	/* frees */

/*
 * Used by spool_sync: after fsync of writer_fd, rename tmp into queue/
 * (path for the directory fsync in *dirpath).  Frees the writer.
 */
int		 spool_writer_fd(const struct spool_writer *);
int		 spool_writer_commit(struct spool_writer *,
		    char *dirpath, size_t dirpathlen);

/*
 * Reading.  spool_message_open validates the whole file (records and
 * checksum); on failure the file is moved to corrupt/ with a log line and
 * -1 is returned.  spool_message_close closes the fd and frees the
 * envelope.  A held message is found too (see *held).
 */
int		 spool_message_open(struct spool *, const char *qid,
		    struct spool_message *, bool *held);
void		 spool_message_close(struct spool_message *);

/*
 * Calls cb for every valid message in queue/ and hold/, in no particular
 * order (the caller sorts); invalid files are quarantined on the way.
 * Returns the number of messages seen, or -1 if a directory could not be
 * read.
 */
typedef void	(*spool_scan_cb)(void *arg, const struct spool_envelope *,
		    bool held);
int		 spool_scan(struct spool *, spool_scan_cb, void *arg);

/*
 * Removes a message from queue/ or hold/ (not durably: a lost removal is
 * a duplicate).  Its file is kept, empty, in free/ for the next writer.
 * Loop thread only.
 */
int		 spool_remove(struct spool *, const char *qid);
int		 spool_hold(struct spool *, const char *qid);
int		 spool_release(struct spool *, const char *qid);
int		 spool_quarantine(struct spool *, const char *qid,
		    const char *why);
/*
 * After partial delivery: atomically replace the message with one whose
 * recipients are rcpts[0..n) (and whose flags are flags), keeping the
 * body.  Durable (fsync, rename, directory fsync) before it returns.
 */
int		 spool_rewrite(struct spool *, const char *qid,
		    char (*rcpts)[SPOOL_ADDR_MAX], size_t n, uint32_t flags);
/* fsync of a directory, so that a rename into it is durable. */
int		 spool_fsync_dir(const char *path);
/* Free bytes available to moat on the spool's filesystem, or -1. */
int64_t		 spool_disk_free(const struct spool *);

/*
 * PURE parser of a queue file image, for the reader, the unit tests and
 * the fuzzer: validates records and checksum, fills env (allocating
 * rcpts) and the body offset.  Returns 0, or -1 with a static reason.
 */
int		 spool_parse(const uint8_t *buf, size_t len,
		    struct spool_envelope *env, size_t *body_off,
		    const char **why);

#endif
