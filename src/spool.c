/*
 * spool.c: queue files: format, writing, validation, recovery.
 *
 * Called by the SMTP session (spool_writer_*), by spool_sync.c on its
 * thread (spool_writer_fd, spool_writer_commit: nothing else here is
 * touched from that thread), and by delivery.c and the control socket
 * (scan, open, hold, release, rewrite, remove).
 *
 * File format, version 1 (all integers big-endian):
 *
 *   "MOATQ1\n"                 magic; the digit is the format version
 *   type:1 len:4 value:len     records, in this order:
 *     'Q' qid (18)  'S' sender  'D' domain  'H' helo  'C' client ip
 *     'I' session id  'T' created (8, signed)  'F' flags (4)
 *     'R' recipient, once per recipient (1..SPOOL_RCPT_MAX)
 *   'B' len=8 value=body length (8), then the body bytes themselves
 *   'E' len=4 value=crc32 of every byte of the file before the value
 *
 * Invariants the parser enforces: the magic matches; the file ends in a
 * valid END whose checksum matches; every record fits inside the file;
 * string values fit their struct fields and hold no NUL; single-valued
 * records appear at most once, 'Q', 'S', 'T', 'F' and one 'R' at least;
 * the body runs exactly up to END, so it is one contiguous region at
 * body_off that delivery can stream from the file.  Record types 0x80 and
 * above are optional extensions an older reader skips; any other unknown
 * type is an error, so an incompatible change must bump the version.
 *
 * Why crc32 (zlib) rather than SHA-256: the checksum guards against torn
 * and damaged files, not against an attacker (who could write the spool
 * could forge any hash too).  The body length is written as a placeholder
 * and patched once the body is complete; crc32_combine() lets the writer
 * compute the checksum of the final file in a single pass without
 * rereading the body or buffering it, which no cryptographic hash allows.
 *
 * Recycled files (free/): spool_remove does not unlink a delivered file
 * but renames it to free/<qid> and truncates it, and spool_writer_create
 * renames such a file to tmp/<new qid> instead of creating one, up to
 * SPOOL_FREE_MAX files.  Why: creating an inode is the dearest part of
 * accepting a small message on ext4 without a journal, where the inode
 * allocator skips (reading each one's inode block) every inode freed in
 * the last 5-10 s; at 1,000 msg/s accepted and delivered that was half
 * of moatd's CPU time (perf: recently_deleted, find_inode_bit).  A file
 * in free/ is empty garbage with no meaning: spool_open unlinks them all,
 * and a crash that loses the rename out of queue/ only means the message
 * is delivered again (or, truncated, quarantined), as a lost unlink would.
 * The pool is touched only on the loop thread (spool_remove and the
 * writer's creation), never by the sync thread.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "log.h"
#include "qid.h"
#include "spool.h"

#define SPOOL_MAGIC		"MOATQ1\n"
#define SPOOL_MAGIC_LEN		(sizeof(SPOOL_MAGIC) - 1)
#define SPOOL_MAGIC_PREFIX_LEN	5	/* "MOATQ": same family, any version */
#define SPOOL_HDR_LEN		5	/* type + 4-byte length */
#define SPOOL_END_LEN		(SPOOL_HDR_LEN + 4)
#define SPOOL_RECORD_MAX	65536	/* any record but the body */
#define SPOOL_WRITER_BUFSZ	65536
#define SPOOL_NBUCKETS		256
#define SPOOL_FREE_MAX		16384	/* recycled files kept in free/ */

enum spool_rec {
	SPOOL_REC_QID = 'Q',
	SPOOL_REC_SENDER = 'S',
	SPOOL_REC_DOMAIN = 'D',
	SPOOL_REC_HELO = 'H',
	SPOOL_REC_CLIENT = 'C',
	SPOOL_REC_SESSION = 'I',
	SPOOL_REC_CREATED = 'T',
	SPOOL_REC_FLAGS = 'F',
	SPOOL_REC_RCPT = 'R',
	SPOOL_REC_BODY = 'B',
	SPOOL_REC_END = 'E',
	SPOOL_REC_OPTIONAL = 0x80	/* and above: skippable extensions */
};

struct spool {
	char	dir[PATH_MAX];
	/* Names of the empty files in free/, a stack (loop thread only). */
	char	free_names[SPOOL_FREE_MAX][QID_LEN + 1];
	size_t	nfree;
};

enum spool_writer_state {
	SPOOL_WRITER_WRITING,
	SPOOL_WRITER_FINISHED,
	SPOOL_WRITER_FAILED
};

struct spool_writer {
	struct spool		*sp;
	char			 qid[QID_LEN + 1];
	char			 path[PATH_MAX];	/* tmp/<qid> */
	int			 fd;
	enum spool_writer_state	 state;
	int			 error;		/* errno of the failure */
	uint8_t			*buf;
	size_t			 buflen;
	uint64_t		 flushed;	/* file offset of buf[0] */
	uLong			 crc_head;	/* bytes before body length */
	uLong			 crc_body;	/* body bytes */
	uint64_t		 body_len;
	uint64_t		 body_len_off;	/* offset of the placeholder */
};

/* Byte order helpers. */

static void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static void
put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, v >> 32);
	put_be32(p + 4, (uint32_t)v);
}

static uint32_t
get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t
get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/*
 * Paths.  spool_open refuses a directory name long enough to make any of
 * these overflow, so truncation here is a broken invariant.
 */
static void
spool_path(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
spool_path(char *buf, size_t len, const char *fmt, ...)
{
	va_list	ap;
	int	n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len)
		fatalx("spool: path too long");
}

static void
spool_queue_path(const struct spool *sp, const char *qid, char *buf,
    size_t len)
{
	char	b[3];

	qid_bucket(qid, b);
	spool_path(buf, len, "%s/queue/%s/%s", sp->dir, b, qid);
}

int
spool_fsync_dir(const char *path)
{
	int	fd, saved;

	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	if (fsync(fd) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	close(fd);
	return 0;
}

static int
spool_write_full(int fd, const uint8_t *p, size_t n)
{
	ssize_t	w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Opening. */

static int
spool_mkdir(const char *path, char **cause)
{
	struct stat	st;

	if (mkdir(path, 0700) == 0)
		return 0;
	if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return 0;
	if (errno == EEXIST)
		errno = ENOTDIR;
	if (asprintf(cause, "spool: %s: %s", path, strerror(errno)) == -1)
		*cause = NULL;
	return -1;
}

/* Empties tmp/ (interrupted writes) or free/ (recycled files). */
static int
spool_clean_tmp(struct spool *sp, const char *sub, char **cause)
{
	char		 path[PATH_MAX], esc[LOG_ESCAPE_MAX + 1];
	DIR		*d;
	struct dirent	*de;
	int		 dfd;
	bool		 quiet = strcmp(sub, "free") == 0;

	spool_path(path, sizeof(path), "%s/%s", sp->dir, sub);
	if ((d = opendir(path)) == NULL)
		goto fail;
	dfd = dirfd(d);
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL)
			break;
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		log_escape(esc, sizeof(esc), de->d_name, strlen(de->d_name));
		if (unlinkat(dfd, de->d_name, 0) == -1) {
			log_warn("event=spool_tmp_cleanup file=%s", esc);
			continue;
		}
		if (!quiet)
			log_info("event=spool_tmp_cleanup file=%s", esc);
	}
	if (errno != 0) {
		closedir(d);
		goto fail;
	}
	closedir(d);
	return 0;
fail:
	if (asprintf(cause, "spool: %s: %s", path, strerror(errno)) == -1)
		*cause = NULL;
	return -1;
}

static int
spool_probe(struct spool *sp, char **cause)
{
	char	path[PATH_MAX];
	int	fd;

	spool_path(path, sizeof(path), "%s/tmp/.probe.%ld", sp->dir,
	    (long)getpid());
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1 || spool_write_full(fd, (const uint8_t *)"x", 1) == -1) {
		if (asprintf(cause, "spool: %s: %s", path,
		    strerror(errno)) == -1)
			*cause = NULL;
		if (fd != -1) {
			close(fd);
			unlink(path);
		}
		return -1;
	}
	close(fd);
	if (unlink(path) == -1) {
		if (asprintf(cause, "spool: %s: %s", path,
		    strerror(errno)) == -1)
			*cause = NULL;
		return -1;
	}
	return 0;
}

struct spool *
spool_open(const char *dir, char **cause)
{
	static const char *const subdirs[] = { "tmp", "queue", "hold",
	    "corrupt", "free" };
	struct spool	*sp;
	char		 path[PATH_MAX];
	size_t		 i, len;

	*cause = NULL;
	len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		len--;
	/* Room for "/queue/xx/<qid>" and "/tmp/.probe.<pid>" after dir. */
	if (len == 0 || len + 64 >= PATH_MAX) {
		if (asprintf(cause, "spool: %s: %s", dir,
		    len == 0 ? "empty path" : strerror(ENAMETOOLONG)) == -1)
			*cause = NULL;
		return NULL;
	}
	if ((sp = calloc(1, sizeof(*sp))) == NULL) {
		if (asprintf(cause, "spool: %s", strerror(errno)) == -1)
			*cause = NULL;
		return NULL;
	}
	memcpy(sp->dir, dir, len);
	sp->dir[len] = '\0';

	if (spool_mkdir(sp->dir, cause) == -1)
		goto fail;
	for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		spool_path(path, sizeof(path), "%s/%s", sp->dir, subdirs[i]);
		if (spool_mkdir(path, cause) == -1)
			goto fail;
	}
	for (i = 0; i < SPOOL_NBUCKETS; i++) {
		spool_path(path, sizeof(path), "%s/queue/%02zx", sp->dir, i);
		if (spool_mkdir(path, cause) == -1)
			goto fail;
	}
	if (spool_probe(sp, cause) == -1)
		goto fail;
	if (spool_clean_tmp(sp, "tmp", cause) == -1 ||
	    spool_clean_tmp(sp, "free", cause) == -1)
		goto fail;
	return sp;
fail:
	free(sp);
	return NULL;
}

void
spool_close(struct spool *sp)
{
	free(sp);
}

const char *
spool_dir(const struct spool *sp)
{
	return sp->dir;
}

/* Envelopes. */

void
spool_envelope_clear(struct spool_envelope *env)
{
	free(env->rcpts);
	env->rcpts = NULL;
	env->nrcpts = 0;
}

int
spool_envelope_copy(struct spool_envelope *dst,
    const struct spool_envelope *src)
{
	char	(*rcpts)[SPOOL_ADDR_MAX] = NULL;

	if (src->nrcpts > 0) {
		rcpts = calloc(src->nrcpts, sizeof(*rcpts));
		if (rcpts == NULL)
			return -1;
		memcpy(rcpts, src->rcpts, src->nrcpts * sizeof(*rcpts));
	}
	*dst = *src;
	dst->rcpts = rcpts;
	return 0;
}

/* A string field is valid if it is NUL-terminated inside its array. */
#define FIELD_OK(f)	(strnlen((f), sizeof(f)) < sizeof(f))

static const char *
spool_envelope_check(const struct spool_envelope *env)
{
	size_t	i;

	if (!FIELD_OK(env->sender) || !FIELD_OK(env->domain) ||
	    !FIELD_OK(env->helo) || !FIELD_OK(env->client_ip) ||
	    !FIELD_OK(env->session_id))
		return "unterminated field";
	if (env->nrcpts == 0 || env->rcpts == NULL)
		return "no recipients";
	if (env->nrcpts > SPOOL_RCPT_MAX)
		return "too many recipients";
	for (i = 0; i < env->nrcpts; i++) {
		if (!FIELD_OK(env->rcpts[i]) || env->rcpts[i][0] == '\0')
			return "bad recipient";
	}
	return NULL;
}

/* Writing. */

static void
spool_writer_fail(struct spool_writer *w, int error)
{
	if (w->state != SPOOL_WRITER_FAILED) {
		w->state = SPOOL_WRITER_FAILED;
		w->error = error != 0 ? error : EIO;
		log_warnx("event=spool_write_error qid=%s error=\"%s\"",
		    w->qid, strerror(w->error));
	}
}

static int
spool_writer_flush(struct spool_writer *w)
{
	if (w->buflen == 0)
		return 0;
	if (spool_write_full(w->fd, w->buf, w->buflen) == -1) {
		spool_writer_fail(w, errno);
		return -1;
	}
	w->flushed += w->buflen;
	w->buflen = 0;
	return 0;
}

/* Raw output: buffered, no checksum (callers account for it). */
static int
spool_writer_emit(struct spool_writer *w, const void *p, size_t n)
{
	if (n <= SPOOL_WRITER_BUFSZ - w->buflen) {
		memcpy(w->buf + w->buflen, p, n);
		w->buflen += n;
		return 0;
	}
	if (spool_writer_flush(w) == -1)
		return -1;
	if (n < SPOOL_WRITER_BUFSZ) {
		memcpy(w->buf, p, n);
		w->buflen = n;
		return 0;
	}
	if (spool_write_full(w->fd, p, n) == -1) {
		spool_writer_fail(w, errno);
		return -1;
	}
	w->flushed += n;
	return 0;
}

/* An envelope record, counted in crc_head. */
static int
spool_writer_record(struct spool_writer *w, uint8_t type, const void *v,
    size_t n)
{
	uint8_t	hdr[SPOOL_HDR_LEN];

	hdr[0] = type;
	put_be32(hdr + 1, (uint32_t)n);
	w->crc_head = crc32_z(w->crc_head, hdr, sizeof(hdr));
	w->crc_head = crc32_z(w->crc_head, v, n);
	if (spool_writer_emit(w, hdr, sizeof(hdr)) == -1 ||
	    spool_writer_emit(w, v, n) == -1)
		return -1;
	return 0;
}

static int
spool_writer_string(struct spool_writer *w, uint8_t type, const char *s)
{
	return spool_writer_record(w, type, s, strlen(s));
}

static int
spool_writer_envelope(struct spool_writer *w,
    const struct spool_envelope *env)
{
	uint8_t	v[8], hdr[SPOOL_HDR_LEN];
	size_t	i;

	w->crc_head = crc32_z(0, NULL, 0);
	w->crc_head = crc32_z(w->crc_head, (const uint8_t *)SPOOL_MAGIC,
	    SPOOL_MAGIC_LEN);
	if (spool_writer_emit(w, SPOOL_MAGIC, SPOOL_MAGIC_LEN) == -1)
		return -1;
	if (spool_writer_string(w, SPOOL_REC_QID, w->qid) == -1 ||
	    spool_writer_string(w, SPOOL_REC_SENDER, env->sender) == -1 ||
	    spool_writer_string(w, SPOOL_REC_DOMAIN, env->domain) == -1 ||
	    spool_writer_string(w, SPOOL_REC_HELO, env->helo) == -1 ||
	    spool_writer_string(w, SPOOL_REC_CLIENT, env->client_ip) == -1 ||
	    spool_writer_string(w, SPOOL_REC_SESSION, env->session_id) == -1)
		return -1;
	put_be64(v, (uint64_t)env->created);
	if (spool_writer_record(w, SPOOL_REC_CREATED, v, 8) == -1)
		return -1;
	put_be32(v, env->flags);
	if (spool_writer_record(w, SPOOL_REC_FLAGS, v, 4) == -1)
		return -1;
	for (i = 0; i < env->nrcpts; i++) {
		if (spool_writer_string(w, SPOOL_REC_RCPT,
		    env->rcpts[i]) == -1)
			return -1;
	}

	/* BODY header; its 8-byte value is patched at finish. */
	hdr[0] = SPOOL_REC_BODY;
	put_be32(hdr + 1, 8);
	w->crc_head = crc32_z(w->crc_head, hdr, sizeof(hdr));
	if (spool_writer_emit(w, hdr, sizeof(hdr)) == -1)
		return -1;
	w->body_len_off = w->flushed + w->buflen;
	memset(v, 0, sizeof(v));
	if (spool_writer_emit(w, v, 8) == -1)
		return -1;
	w->crc_body = crc32_z(0, NULL, 0);
	return 0;
}

/*
 * Renames a recycled file from free/ to path (tmp/<qid>) and opens it;
 * -1 when the pool is empty or that file is gone (the caller creates
 * one).  RENAME_NOREPLACE keeps the O_EXCL guarantee of a fresh file.
 */
static int
spool_free_take(struct spool *sp, const char *path)
{
	char	from[PATH_MAX];
	int	fd;

	while (sp->nfree > 0) {
		sp->nfree--;
		spool_path(from, sizeof(from), "%s/free/%s", sp->dir,
		    sp->free_names[sp->nfree]);
		if (renameat2(AT_FDCWD, from, AT_FDCWD, path,
		    RENAME_NOREPLACE) == -1) {
			if (errno == EEXIST) {
				sp->nfree++;	/* still there: keep it */
				return -1;
			}
			continue;
		}
		fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
		if (fd == -1)
			(void)unlink(path);
		return fd;
	}
	return -1;
}

/*
 * Creates tmp/<qid> and writes the envelope.  Shared by spool_writer_new
 * (fresh qid) and spool_rewrite (the message's own qid).
 */
static struct spool_writer *
spool_writer_create(struct spool *sp, const struct spool_envelope *env,
    const char *qid, char **cause)
{
	struct spool_writer	*w;
	const char		*why;

	if (cause != NULL)
		*cause = NULL;
	if ((why = spool_envelope_check(env)) != NULL) {
		errno = EINVAL;
		if (cause != NULL &&
		    asprintf(cause, "spool: bad envelope: %s", why) == -1)
			*cause = NULL;
		return NULL;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL ||
	    (w->buf = malloc(SPOOL_WRITER_BUFSZ)) == NULL) {
		if (w != NULL)
			free(w);
		if (cause != NULL &&
		    asprintf(cause, "spool: %s", strerror(ENOMEM)) == -1)
			*cause = NULL;
		errno = ENOMEM;
		return NULL;
	}
	w->sp = sp;
	memcpy(w->qid, qid, QID_LEN + 1);
	spool_path(w->path, sizeof(w->path), "%s/tmp/%s", sp->dir, qid);
	w->fd = spool_free_take(sp, w->path);
	if (w->fd == -1)
		w->fd = open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		    0600);
	if (w->fd == -1) {
		int saved = errno;

		if (cause != NULL && asprintf(cause, "spool: %s: %s",
		    w->path, strerror(saved)) == -1)
			*cause = NULL;
		free(w->buf);
		free(w);
		errno = saved;
		return NULL;
	}
	w->state = SPOOL_WRITER_WRITING;
	if (spool_writer_envelope(w, env) == -1) {
		int saved = w->error;

		if (cause != NULL && asprintf(cause, "spool: %s: %s",
		    w->path, strerror(saved)) == -1)
			*cause = NULL;
		spool_writer_abort(w);
		errno = saved;
		return NULL;
	}
	return w;
}

struct spool_writer *
spool_writer_new(struct spool *sp, const struct spool_envelope *env,
    char **cause)
{
	struct spool_envelope	 e;
	char			 qid[QID_LEN + 1];

	e = *env;
	if (e.created == 0)
		e.created = time(NULL);
	qid_new(qid);
	return spool_writer_create(sp, &e, qid, cause);
}

const char *
spool_writer_qid(const struct spool_writer *w)
{
	return w->qid;
}

int
spool_writer_write(struct spool_writer *w, const void *p, size_t n)
{
	if (w->state != SPOOL_WRITER_WRITING) {
		errno = w->state == SPOOL_WRITER_FAILED ? w->error : EINVAL;
		return -1;
	}
	w->crc_body = crc32_z(w->crc_body, p, n);
	w->body_len += n;
	return spool_writer_emit(w, p, n);
}

uint64_t
spool_writer_body_len(const struct spool_writer *w)
{
	return w->body_len;
}

int
spool_writer_finish(struct spool_writer *w)
{
	uint8_t		lenv[8], end[SPOOL_END_LEN];
	uLong		crc;
	ssize_t		n;

	if (w->state != SPOOL_WRITER_WRITING) {
		errno = w->state == SPOOL_WRITER_FAILED ? w->error : EINVAL;
		return -1;
	}
	put_be64(lenv, w->body_len);
	crc = crc32_z(w->crc_head, lenv, sizeof(lenv));
	crc = crc32_combine(crc, w->crc_body, (z_off_t)w->body_len);

	/* Patch the body length: in the buffer if still there, else pwrite. */
	if (w->body_len_off >= w->flushed)
		memcpy(w->buf + (w->body_len_off - w->flushed), lenv, 8);
	else {
		n = pwrite(w->fd, lenv, sizeof(lenv), (off_t)w->body_len_off);
		if (n != (ssize_t)sizeof(lenv)) {
			spool_writer_fail(w, n == -1 ? errno : EIO);
			errno = w->error;
			return -1;
		}
	}

	end[0] = SPOOL_REC_END;
	put_be32(end + 1, 4);
	crc = crc32_z(crc, end, SPOOL_HDR_LEN);
	put_be32(end + SPOOL_HDR_LEN, (uint32_t)crc);
	if (spool_writer_emit(w, end, sizeof(end)) == -1 ||
	    spool_writer_flush(w) == -1) {
		errno = w->error;
		return -1;
	}
	/* Finished writers may wait for the sync thread: drop the buffer. */
	free(w->buf);
	w->buf = NULL;
	w->state = SPOOL_WRITER_FINISHED;
	return 0;
}

void
spool_writer_abort(struct spool_writer *w)
{
	if (w == NULL)
		return;
	if (w->fd != -1) {
		close(w->fd);
		if (unlink(w->path) == -1 && errno != ENOENT)
			log_warn("event=spool_unlink path=%s", w->path);
	}
	free(w->buf);
	free(w);
}

int
spool_writer_fd(const struct spool_writer *w)
{
	return w->fd;
}

/* Renames a finished writer's file to dst and frees the writer. */
static int
spool_writer_rename(struct spool_writer *w, const char *dst)
{
	int	saved;

	if (w->state != SPOOL_WRITER_FINISHED) {
		saved = w->state == SPOOL_WRITER_FAILED ? w->error : EINVAL;
		spool_writer_abort(w);
		errno = saved;
		return -1;
	}
	if (rename(w->path, dst) == -1) {
		saved = errno;
		log_warn("event=spool_rename qid=%s", w->qid);
		spool_writer_abort(w);
		errno = saved;
		return -1;
	}
	close(w->fd);
	free(w->buf);
	free(w);
	return 0;
}

int
spool_writer_commit(struct spool_writer *w, char *dirpath, size_t dirpathlen)
{
	char	dst[PATH_MAX], b[3];
	int	n;

	qid_bucket(w->qid, b);
	n = snprintf(dirpath, dirpathlen, "%s/queue/%s", w->sp->dir, b);
	if (n < 0 || (size_t)n >= dirpathlen) {
		spool_writer_abort(w);
		errno = ENAMETOOLONG;
		return -1;
	}
	spool_path(dst, sizeof(dst), "%s/%s", dirpath, w->qid);
	return spool_writer_rename(w, dst);
}

/* Parsing (PURE). */

static int
spool_parse_string(char *dst, size_t dstlen, const uint8_t *v, size_t n)
{
	if (n >= dstlen || memchr(v, '\0', n) != NULL)
		return -1;
	memcpy(dst, v, n);
	dst[n] = '\0';
	return 0;
}

int
spool_parse(const uint8_t *buf, size_t len, struct spool_envelope *env,
    size_t *body_off, const char **why)
{
	char		(*rcpts)[SPOOL_ADDR_MAX] = NULL, (*nr)[SPOOL_ADDR_MAX];
	size_t		 nrcpts = 0, cap = 0, off, end_off, rlen, boff;
	uint64_t	 blen;
	uint32_t	 seen = 0, bit;
	uint8_t		 type;
	const uint8_t	*v;
	char		*field;
	size_t		 fieldlen;
	bool		 body = false;

	memset(env, 0, sizeof(*env));
	*body_off = 0;
	*why = NULL;

	if (buf == NULL || len < SPOOL_MAGIC_LEN + SPOOL_HDR_LEN + 8 +
	    SPOOL_END_LEN) {
		*why = "short_file";
		return -1;
	}
	if (memcmp(buf, SPOOL_MAGIC, SPOOL_MAGIC_LEN) != 0) {
		*why = memcmp(buf, SPOOL_MAGIC, SPOOL_MAGIC_PREFIX_LEN) == 0 ?
		    "unsupported_version" : "bad_magic";
		return -1;
	}
	end_off = len - SPOOL_END_LEN;
	if (buf[end_off] != SPOOL_REC_END ||
	    get_be32(buf + end_off + 1) != 4) {
		*why = "no_end_record";
		return -1;
	}
	if ((uint32_t)crc32_z(0, buf, len - 4) != get_be32(buf + len - 4)) {
		*why = "bad_checksum";
		return -1;
	}

	off = SPOOL_MAGIC_LEN;
	while (!body) {
		if (end_off - off < SPOOL_HDR_LEN) {
			*why = "truncated_record";
			goto fail;
		}
		type = buf[off];
		rlen = get_be32(buf + off + 1);
		off += SPOOL_HDR_LEN;
		if (rlen > end_off - off) {
			*why = "truncated_record";
			goto fail;
		}
		if (rlen > SPOOL_RECORD_MAX) {
			*why = "record_too_long";
			goto fail;
		}
		v = buf + off;
		off += rlen;

		field = NULL;
		fieldlen = 0;
		bit = 0;
		switch (type) {
		case SPOOL_REC_QID:
			bit = 1 << 0;
			if (rlen != QID_LEN) {
				*why = "bad_qid";
				goto fail;
			}
			field = env->qid;
			fieldlen = sizeof(env->qid);
			break;
		case SPOOL_REC_SENDER:
			bit = 1 << 1;
			field = env->sender;
			fieldlen = sizeof(env->sender);
			break;
		case SPOOL_REC_DOMAIN:
			bit = 1 << 2;
			field = env->domain;
			fieldlen = sizeof(env->domain);
			break;
		case SPOOL_REC_HELO:
			bit = 1 << 3;
			field = env->helo;
			fieldlen = sizeof(env->helo);
			break;
		case SPOOL_REC_CLIENT:
			bit = 1 << 4;
			field = env->client_ip;
			fieldlen = sizeof(env->client_ip);
			break;
		case SPOOL_REC_SESSION:
			bit = 1 << 5;
			field = env->session_id;
			fieldlen = sizeof(env->session_id);
			break;
		case SPOOL_REC_CREATED:
			bit = 1 << 6;
			if (rlen != 8) {
				*why = "bad_created";
				goto fail;
			}
			env->created = (int64_t)get_be64(v);
			break;
		case SPOOL_REC_FLAGS:
			bit = 1 << 7;
			if (rlen != 4) {
				*why = "bad_flags";
				goto fail;
			}
			env->flags = get_be32(v);
			break;
		case SPOOL_REC_RCPT:
			if (nrcpts == SPOOL_RCPT_MAX) {
				*why = "too_many_recipients";
				goto fail;
			}
			if (rlen == 0) {
				*why = "bad_recipient";
				goto fail;
			}
			if (nrcpts == cap) {
				cap = cap == 0 ? 4 : cap * 2;
				if (cap > SPOOL_RCPT_MAX)
					cap = SPOOL_RCPT_MAX;
				nr = reallocarray(rcpts, cap, sizeof(*rcpts));
				if (nr == NULL) {
					*why = "out_of_memory";
					goto fail;
				}
				rcpts = nr;
			}
			if (spool_parse_string(rcpts[nrcpts],
			    sizeof(rcpts[nrcpts]), v, rlen) == -1) {
				*why = "bad_recipient";
				goto fail;
			}
			nrcpts++;
			break;
		case SPOOL_REC_BODY:
			if (rlen != 8) {
				*why = "bad_body_record";
				goto fail;
			}
			blen = get_be64(v);
			boff = off;
			/* The body runs exactly up to END. */
			if (blen != end_off - boff) {
				*why = "bad_body_length";
				goto fail;
			}
			env->body_len = blen;
			*body_off = boff;
			body = true;
			break;
		default:
			if (type < SPOOL_REC_OPTIONAL) {
				*why = "unknown_record";
				goto fail;
			}
			break;
		}
		if (bit != 0) {
			if (seen & bit) {
				*why = "duplicate_record";
				goto fail;
			}
			seen |= bit;
		}
		if (field != NULL && spool_parse_string(field, fieldlen, v,
		    rlen) == -1) {
			*why = "bad_field";
			goto fail;
		}
	}

	/* QID, SENDER, CREATED and FLAGS are mandatory. */
	if ((seen & (1 << 0 | 1 << 1 | 1 << 6 | 1 << 7)) !=
	    (1 << 0 | 1 << 1 | 1 << 6 | 1 << 7)) {
		*why = "missing_record";
		goto fail;
	}
	if (!qid_valid(env->qid)) {
		*why = "bad_qid";
		goto fail;
	}
	if (nrcpts == 0) {
		*why = "no_recipients";
		goto fail;
	}
	env->rcpts = rcpts;
	env->nrcpts = nrcpts;
	return 0;
fail:
	free(rcpts);
	memset(env, 0, sizeof(*env));
	*body_off = 0;
	return -1;
}

/* Reading. */

/*
 * Validates the open file fd against qid.  Returns 0, or -1 with *why
 * set when the content is bad (quarantine) or NULL on an I/O error.
 */
static int
spool_validate_fd(int fd, const char *qid, struct spool_envelope *env,
    size_t *body_off, const char **why)
{
	struct stat	 st;
	void		*p = NULL;
	int		 r;

	*why = NULL;
	if (fstat(fd, &st) == -1)
		return -1;
	if (!S_ISREG(st.st_mode)) {
		*why = "not_a_file";
		return -1;
	}
	if (st.st_size > 0) {
		p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd,
		    0);
		if (p == MAP_FAILED)
			return -1;
	}
	r = spool_parse(p, (size_t)st.st_size, env, body_off, why);
	if (p != NULL)
		munmap(p, (size_t)st.st_size);
	if (r == 0 && strcmp(env->qid, qid) != 0) {
		spool_envelope_clear(env);
		*why = "qid_mismatch";
		return -1;
	}
	return r;
}

/* Opens qid in queue/ or hold/; *held tells which. */
static int
spool_open_file(struct spool *sp, const char *qid, bool *held)
{
	char	path[PATH_MAX];
	int	fd;

	spool_queue_path(sp, qid, path, sizeof(path));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) != -1) {
		*held = false;
		return fd;
	}
	if (errno != ENOENT)
		return -1;
	spool_path(path, sizeof(path), "%s/hold/%s", sp->dir, qid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) != -1) {
		*held = true;
		return fd;
	}
	return -1;
}

int
spool_message_open(struct spool *sp, const char *qid,
    struct spool_message *msg, bool *held)
{
	const char	*why;
	size_t		 off;
	bool		 h;
	int		 fd, saved;

	memset(msg, 0, sizeof(*msg));
	msg->fd = -1;
	if (!qid_valid(qid)) {
		errno = EINVAL;
		return -1;
	}
	if ((fd = spool_open_file(sp, qid, &h)) == -1)
		return -1;
	if (spool_validate_fd(fd, qid, &msg->env, &off, &why) == -1) {
		saved = errno;
		close(fd);
		if (why != NULL) {
			spool_quarantine(sp, qid, why);
			errno = EBADMSG;
		} else {
			log_warnx("event=spool_read_error qid=%s error=\"%s\"",
			    qid, strerror(saved));
			errno = saved;
		}
		return -1;
	}
	msg->fd = fd;
	msg->body_off = (off_t)off;
	if (held != NULL)
		*held = h;
	return 0;
}

void
spool_message_close(struct spool_message *msg)
{
	if (msg->fd != -1)
		close(msg->fd);
	msg->fd = -1;
	spool_envelope_clear(&msg->env);
}

/*
 * Scans one directory of queue files.  Returns the number of valid
 * messages, or -1 if the directory cannot be read.
 */
static int
spool_scan_dir(struct spool *sp, const char *path, const char *bucket,
    spool_scan_cb cb, void *arg)
{
	struct spool_envelope	 env;
	DIR			*d;
	struct dirent		*de;
	const char		*why;
	char			 b[3], esc[LOG_ESCAPE_MAX + 1];
	size_t			 off;
	int			 fd, n = 0;

	if ((d = opendir(path)) == NULL) {
		log_warn("event=spool_scan_error dir=%s", path);
		return -1;
	}
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL)
			break;
		if (de->d_name[0] == '.')
			continue;
		if (!qid_valid(de->d_name)) {
			log_escape(esc, sizeof(esc), de->d_name,
			    strlen(de->d_name));
			log_warnx("event=spool_stray_file dir=%s file=%s",
			    path, esc);
			continue;
		}
		if (bucket != NULL) {
			qid_bucket(de->d_name, b);
			if (strcmp(b, bucket) != 0) {
				log_warnx("event=spool_stray_file dir=%s "
				    "file=%s reason=wrong_bucket", path,
				    de->d_name);
				continue;
			}
		}
		fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC);
		if (fd == -1) {
			log_warn("event=spool_read_error qid=%s", de->d_name);
			continue;
		}
		if (spool_validate_fd(fd, de->d_name, &env, &off, &why) == -1) {
			if (why != NULL)
				spool_quarantine(sp, de->d_name, why);
			else
				log_warn("event=spool_read_error qid=%s",
				    de->d_name);
			close(fd);
			continue;
		}
		close(fd);
		cb(arg, &env, bucket == NULL);
		spool_envelope_clear(&env);
		n++;
	}
	if (errno != 0) {
		log_warn("event=spool_scan_error dir=%s", path);
		closedir(d);
		return -1;
	}
	closedir(d);
	return n;
}

int
spool_scan(struct spool *sp, spool_scan_cb cb, void *arg)
{
	char	path[PATH_MAX], b[3];
	int	i, n, total = 0;

	for (i = 0; i < SPOOL_NBUCKETS; i++) {
		(void)snprintf(b, sizeof(b), "%02x", (unsigned int)i);
		spool_path(path, sizeof(path), "%s/queue/%s", sp->dir, b);
		if ((n = spool_scan_dir(sp, path, b, cb, arg)) == -1)
			return -1;
		total += n;
	}
	spool_path(path, sizeof(path), "%s/hold", sp->dir);
	if ((n = spool_scan_dir(sp, path, NULL, cb, arg)) == -1)
		return -1;
	return total + n;
}

/* Queue operations. */

/*
 * Moves the file at path to free/<qid>, empty, for spool_free_take to
 * reuse; -1 (errno set, the file still at path unless ENOENT) when the
 * pool is full or the rename failed, and the caller unlinks instead.
 */
static int
spool_free_put(struct spool *sp, const char *qid, const char *path)
{
	char	to[PATH_MAX];

	if (sp->nfree == SPOOL_FREE_MAX) {
		errno = ENOSPC;
		return -1;
	}
	spool_path(to, sizeof(to), "%s/free/%s", sp->dir, qid);
	if (rename(path, to) == -1)
		return -1;
	/* Give the blocks back now: free/ must not hold disk space. */
	if (truncate(to, 0) == -1) {
		(void)unlink(to);
		return 0;
	}
	memcpy(sp->free_names[sp->nfree++], qid, QID_LEN + 1);
	return 0;
}

int
spool_remove(struct spool *sp, const char *qid)
{
	char	path[PATH_MAX];

	if (!qid_valid(qid)) {
		errno = EINVAL;
		return -1;
	}
	/*
	 * No fsync: should the unlink (or the rename to free/) be lost in a
	 * crash the message is delivered again, a duplicate the durability
	 * contract allows.
	 */
	spool_queue_path(sp, qid, path, sizeof(path));
	if (spool_free_put(sp, qid, path) == 0 || unlink(path) == 0)
		return 0;
	if (errno != ENOENT)
		return -1;
	spool_path(path, sizeof(path), "%s/hold/%s", sp->dir, qid);
	if (spool_free_put(sp, qid, path) == 0)
		return 0;
	return unlink(path);
}

/* Moves qid from queue/ to hold/ or back, durably. */
static int
spool_move(struct spool *sp, const char *qid, bool to_hold)
{
	char	qpath[PATH_MAX], hpath[PATH_MAX], qdir[PATH_MAX];
	char	hdir[PATH_MAX], b[3];

	if (!qid_valid(qid)) {
		errno = EINVAL;
		return -1;
	}
	qid_bucket(qid, b);
	spool_path(qdir, sizeof(qdir), "%s/queue/%s", sp->dir, b);
	spool_path(hdir, sizeof(hdir), "%s/hold", sp->dir);
	spool_path(qpath, sizeof(qpath), "%s/%s", qdir, qid);
	spool_path(hpath, sizeof(hpath), "%s/%s", hdir, qid);
	if (to_hold) {
		if (rename(qpath, hpath) == -1)
			return -1;
	} else {
		if (rename(hpath, qpath) == -1)
			return -1;
	}
	/* The new name first: a crash between the two leaves it findable. */
	if (spool_fsync_dir(to_hold ? hdir : qdir) == -1 ||
	    spool_fsync_dir(to_hold ? qdir : hdir) == -1) {
		log_warn("event=spool_fsync qid=%s", qid);
		return -1;
	}
	log_info("event=%s qid=%s", to_hold ? "hold" : "release", qid);
	return 0;
}

int
spool_hold(struct spool *sp, const char *qid)
{
	return spool_move(sp, qid, true);
}

int
spool_release(struct spool *sp, const char *qid)
{
	return spool_move(sp, qid, false);
}

int
spool_quarantine(struct spool *sp, const char *qid, const char *why)
{
	char	src[PATH_MAX], dst[PATH_MAX], esc[LOG_ESCAPE_MAX + 1];

	if (!qid_valid(qid)) {
		errno = EINVAL;
		return -1;
	}
	if (why == NULL)
		why = "unknown";
	log_escape(esc, sizeof(esc), why, strlen(why));
	log_warnx("event=quarantine qid=%s reason=%s", qid, esc);
	spool_path(dst, sizeof(dst), "%s/corrupt/%s", sp->dir, qid);
	spool_queue_path(sp, qid, src, sizeof(src));
	if (rename(src, dst) == 0)
		return 0;
	if (errno != ENOENT)
		goto fail;
	spool_path(src, sizeof(src), "%s/hold/%s", sp->dir, qid);
	if (rename(src, dst) == 0)
		return 0;
fail:
	log_warn("event=quarantine_error qid=%s", qid);
	return -1;
}

int
spool_rewrite(struct spool *sp, const char *qid,
    char (*rcpts)[SPOOL_ADDR_MAX], size_t n, uint32_t flags)
{
	struct spool_message	 msg;
	struct spool_envelope	 env;
	struct spool_writer	*w;
	struct stat		 st;
	char			 dst[PATH_MAX], dir[PATH_MAX], b[3];
	uint8_t			*p;
	bool			 held;
	int			 saved;

	if (n == 0 || n > SPOOL_RCPT_MAX || rcpts == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (spool_message_open(sp, qid, &msg, &held) == -1)
		return -1;
	env = msg.env;
	env.rcpts = rcpts;
	env.nrcpts = n;
	env.flags = flags;
	/*
	 * A committed qid is never used by a session's writer, so a
	 * tmp/<qid> can only be left over from an interrupted rewrite.
	 */
	spool_path(dst, sizeof(dst), "%s/tmp/%s", sp->dir, qid);
	(void)unlink(dst);
	if ((w = spool_writer_create(sp, &env, qid, NULL)) == NULL)
		goto fail;

	/* Copy the body from the validated file. */
	if (fstat(msg.fd, &st) == -1)
		goto fail_w;
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, msg.fd, 0);
	if (p == MAP_FAILED)
		goto fail_w;
	if (spool_writer_write(w, p + msg.body_off, msg.env.body_len) == -1) {
		saved = errno;
		munmap(p, (size_t)st.st_size);
		errno = saved;
		goto fail_w;
	}
	munmap(p, (size_t)st.st_size);
	if (spool_writer_finish(w) == -1 || fdatasync(w->fd) == -1)
		goto fail_w;

	if (held) {
		spool_path(dir, sizeof(dir), "%s/hold", sp->dir);
	} else {
		qid_bucket(qid, b);
		spool_path(dir, sizeof(dir), "%s/queue/%s", sp->dir, b);
	}
	spool_path(dst, sizeof(dst), "%s/%s", dir, qid);
	if (spool_writer_rename(w, dst) == -1)
		goto fail;
	spool_message_close(&msg);
	if (spool_fsync_dir(dir) == -1) {
		log_warn("event=spool_fsync qid=%s", qid);
		return -1;
	}
	log_info("event=rewrite qid=%s rcpts=%zu", qid, n);
	return 0;

fail_w:
	saved = errno;
	spool_writer_abort(w);
	errno = saved;
fail:
	saved = errno;
	spool_message_close(&msg);
	errno = saved;
	return -1;
}

int64_t
spool_disk_free(const struct spool *sp)
{
	struct statvfs	sv;

	if (statvfs(sp->dir, &sv) == -1)
		return -1;
	return (int64_t)((uint64_t)sv.f_bavail * sv.f_frsize);
}
