/*
 * test_spool.c: queue ids, the queue file format and the spool directory
 * operations (write, commit, open, scan, hold, release, rewrite, remove,
 * quarantine).  Each test works in its own mkdtemp directory.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "log.h"
#include "qid.h"
#include "spool.h"

struct fixture {
	char		 dir[64];
	struct spool	*sp;
};

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(path);
}

static int
setup(void **state)
{
	struct fixture	*fx;
	char		*cause = NULL;

	fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/moat-test-spool-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	fx->sp = spool_open(fx->dir, &cause);
	if (fx->sp == NULL)
		fail_msg("spool_open: %s", cause);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture	*fx = *state;

	spool_close(fx->sp);
	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

static void
make_env(struct spool_envelope *env, size_t nrcpts)
{
	size_t	i;

	memset(env, 0, sizeof(*env));
	snprintf(env->sender, sizeof(env->sender), "alice@example.org");
	snprintf(env->domain, sizeof(env->domain), "example.com");
	snprintf(env->helo, sizeof(env->helo), "mx.example.org");
	snprintf(env->client_ip, sizeof(env->client_ip), "203.0.113.9");
	snprintf(env->session_id, sizeof(env->session_id), "7f3a0001");
	env->created = 1700000000;
	env->flags = SPOOL_F_8BITMIME;
	env->nrcpts = nrcpts;
	env->rcpts = calloc(nrcpts ? nrcpts : 1, sizeof(*env->rcpts));
	assert_non_null(env->rcpts);
	for (i = 0; i < nrcpts; i++)
		snprintf(env->rcpts[i], sizeof(env->rcpts[i]),
		    "user%zu@example.com", i);
}

/* Writes and commits a message (without spool_sync); fills qid. */
static void
write_msg(struct spool *sp, const struct spool_envelope *env,
    const void *body, size_t len, size_t chunk, char *qid)
{
	struct spool_writer	*w;
	char			*cause = NULL, dirpath[PATH_MAX];
	const uint8_t		*p = body;
	size_t			 off, n;

	w = spool_writer_new(sp, env, &cause);
	if (w == NULL)
		fail_msg("spool_writer_new: %s", cause);
	memcpy(qid, spool_writer_qid(w), QID_LEN + 1);
	for (off = 0; off < len; off += n) {
		n = len - off < chunk ? len - off : chunk;
		assert_int_equal(spool_writer_write(w, p + off, n), 0);
	}
	assert_int_equal(spool_writer_body_len(w), len);
	assert_int_equal(spool_writer_finish(w), 0);
	assert_int_equal(spool_writer_commit(w, dirpath, sizeof(dirpath)), 0);
	assert_non_null(strstr(dirpath, "/queue/"));
}

static uint8_t *
read_file(const char *path, size_t *len)
{
	struct stat	 st;
	uint8_t		*p;
	int		 fd;

	fd = open(path, O_RDONLY);
	assert_true(fd != -1);
	assert_int_equal(fstat(fd, &st), 0);
	p = malloc(st.st_size + 1);
	assert_non_null(p);
	assert_int_equal(pread(fd, p, st.st_size, 0), st.st_size);
	close(fd);
	*len = st.st_size;
	return p;
}

static void
queue_path(struct fixture *fx, const char *qid, char *buf, size_t len)
{
	char	b[3];

	qid_bucket(qid, b);
	snprintf(buf, len, "%s/queue/%s/%s", fx->dir, b, qid);
}

static bool
exists(const char *path)
{
	struct stat	st;

	return stat(path, &st) == 0;
}

/* qid */

static void
test_qid_format(void **state)
{
	static const struct {
		const char	*s;
		bool		 want;
	} cases[] = {
		{ "0123456789abcdef01", true },
		{ "18a2b3c4d5e6f00001", true },
		{ "0123456789ABCDEF01", false },	/* upper case */
		{ "0123456789abcdef0", false },		/* short */
		{ "0123456789abcdef012", false },	/* long */
		{ "0123456789abcdeg01", false },	/* not hex */
		{ "../../etc/passwd01", false },
		{ "", false },
		{ NULL, false },
	};
	size_t	i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (qid_valid(cases[i].s) != cases[i].want)
			fail_msg("qid_valid(%s): got=%d want=%d",
			    cases[i].s ? cases[i].s : "NULL",
			    !cases[i].want, cases[i].want);
	}
}

static void
test_qid_order(void **state)
{
	enum { N = 10000 };
	char	(*ids)[QID_LEN + 1];
	char	  b[3];
	size_t	  i;

	(void)state;
	ids = calloc(N, sizeof(*ids));
	assert_non_null(ids);
	for (i = 0; i < N; i++) {
		qid_new(ids[i]);
		if (!qid_valid(ids[i]))
			fail_msg("qid %zu invalid: got=%s", i, ids[i]);
		qid_bucket(ids[i], b);
		assert_string_equal(b, ids[i] + QID_LEN - 2);
		/* Strictly increasing implies unique. */
		if (i > 0 && strcmp(ids[i - 1], ids[i]) >= 0)
			fail_msg("qid order at %zu: got=%s after %s", i,
			    ids[i], ids[i - 1]);
	}
	free(ids);
}

/* Round trip */

static void
check_roundtrip(struct fixture *fx, size_t nrcpts, const uint8_t *body,
    size_t len, size_t chunk)
{
	struct spool_envelope	 env;
	struct spool_message	 msg;
	char			 qid[QID_LEN + 1];
	uint8_t			*got;
	bool			 held = true;
	size_t			 i;

	make_env(&env, nrcpts);
	write_msg(fx->sp, &env, body, len, chunk, qid);
	assert_int_equal(spool_message_open(fx->sp, qid, &msg, &held), 0);
	assert_false(held);
	assert_string_equal(msg.env.qid, qid);
	assert_string_equal(msg.env.sender, env.sender);
	assert_string_equal(msg.env.domain, env.domain);
	assert_string_equal(msg.env.helo, env.helo);
	assert_string_equal(msg.env.client_ip, env.client_ip);
	assert_string_equal(msg.env.session_id, env.session_id);
	assert_int_equal(msg.env.created, env.created);
	assert_int_equal(msg.env.flags, env.flags);
	if (msg.env.nrcpts != nrcpts)
		fail_msg("nrcpts: got=%zu want=%zu", msg.env.nrcpts, nrcpts);
	for (i = 0; i < nrcpts; i++)
		assert_string_equal(msg.env.rcpts[i], env.rcpts[i]);
	if (msg.env.body_len != len)
		fail_msg("body_len: got=%llu want=%zu",
		    (unsigned long long)msg.env.body_len, len);
	got = malloc(len + 1);
	assert_non_null(got);
	assert_int_equal(pread(msg.fd, got, len, msg.body_off), (ssize_t)len);
	assert_memory_equal(got, body, len);
	free(got);
	spool_message_close(&msg);
	spool_envelope_clear(&env);
}

static void
test_roundtrip(void **state)
{
	struct fixture	*fx = *state;
	static const char crlf[] = "From: a@example.org\r\nSubject: hi\r\n"
	    "\r\nline one\r\n.dot\r\n\r\n";
	uint8_t		 bin[512], *big;
	size_t		 i, biglen = 300 * 1024 + 7;

	for (i = 0; i < sizeof(bin); i++)
		bin[i] = (uint8_t)(i * 131 + 7);	/* 8-bit incl. NUL */
	big = malloc(biglen);
	assert_non_null(big);
	for (i = 0; i < biglen; i++)
		big[i] = (uint8_t)(i % 251);

	check_roundtrip(fx, 1, (const uint8_t *)"", 0, 1);
	check_roundtrip(fx, 1, (const uint8_t *)crlf, strlen(crlf), 7);
	check_roundtrip(fx, 3, bin, sizeof(bin), sizeof(bin));
	check_roundtrip(fx, SPOOL_RCPT_MAX, bin, sizeof(bin), 100);
	/* Larger than the writer's buffer: the length is pwrite()n. */
	check_roundtrip(fx, 2, big, biglen, 1000);
	check_roundtrip(fx, 2, big, biglen, biglen);
	free(big);
}

/* An image of a small valid file. */
static uint8_t *
sample_image(struct fixture *fx, size_t *len, char *qid)
{
	struct spool_envelope	 env;
	char			 path[PATH_MAX];
	static const char	 body[] = "Subject: t\r\n\r\n\x80\xff body\r\n";

	make_env(&env, 3);
	write_msg(fx->sp, &env, body, sizeof(body) - 1, 5, qid);
	spool_envelope_clear(&env);
	queue_path(fx, qid, path, sizeof(path));
	return read_file(path, len);
}

static void
test_truncated(void **state)
{
	struct fixture		*fx = *state;
	struct spool_envelope	 env;
	char			 qid[QID_LEN + 1];
	const char		*why;
	uint8_t			*img, *cut;
	size_t			 len, i, off;

	img = sample_image(fx, &len, qid);
	assert_int_equal(spool_parse(img, len, &env, &off, &why), 0);
	spool_envelope_clear(&env);
	for (i = 0; i < len; i++) {
		/* An exact-size copy so ASan sees any over-read. */
		cut = malloc(i ? i : 1);
		assert_non_null(cut);
		memcpy(cut, img, i);
		if (spool_parse(cut, i, &env, &off, &why) != -1)
			fail_msg("truncated at %zu/%zu: got=0 want=-1", i, len);
		assert_non_null(why);
		assert_null(env.rcpts);
		free(cut);
	}
	free(img);
}

static void
test_flipped(void **state)
{
	struct fixture		*fx = *state;
	struct spool_envelope	 env;
	char			 qid[QID_LEN + 1];
	const char		*why;
	uint8_t			*img;
	size_t			 len, i, off;
	int			 bit;

	img = sample_image(fx, &len, qid);
	for (i = 0; i < len; i++) {
		for (bit = 0; bit < 8; bit += 3) {
			img[i] ^= 1 << bit;
			if (spool_parse(img, len, &env, &off, &why) != -1)
				fail_msg("flip byte %zu bit %d: got=0 want=-1",
				    i, bit);
			img[i] ^= 1 << bit;
		}
	}
	/* A flip inside the body is caught by the checksum. */
	img[len - 12] ^= 0x01;
	assert_int_equal(spool_parse(img, len, &env, &off, &why), -1);
	assert_string_equal(why, "bad_checksum");
	free(img);
}

/* Crafted files with a correct checksum: the record rules. */

struct img {
	uint8_t	p[400000];
	size_t	len;
};

static void
img_raw(struct img *im, const void *v, size_t n)
{
	assert_true(im->len + n <= sizeof(im->p));
	memcpy(im->p + im->len, v, n);
	im->len += n;
}

static void
img_rec(struct img *im, uint8_t type, const void *v, size_t n)
{
	uint8_t	h[5] = { type, n >> 24, n >> 16, n >> 8, n };

	img_raw(im, h, 5);
	img_raw(im, v, n);
}

static void
img_str(struct img *im, uint8_t type, const char *s)
{
	img_rec(im, type, s, strlen(s));
}

static void
img_end(struct img *im)
{
	uint8_t	h[5] = { 'E', 0, 0, 0, 4 }, c[4];
	uLong	crc;

	img_raw(im, h, 5);
	crc = crc32(0, im->p, im->len);
	c[0] = crc >> 24;
	c[1] = crc >> 16;
	c[2] = crc >> 8;
	c[3] = crc;
	img_raw(im, c, 4);
}

enum variant {
	V_GOOD, V_GOOD_OPTIONAL, V_VERSION2, V_BAD_MAGIC, V_DUP_QID,
	V_NO_FLAGS, V_NO_RCPT, V_UNKNOWN, V_BODY_SHORT, V_BODY_LONG,
	V_RCPT_NUL, V_SENDER_LONG, V_TOO_MANY_RCPTS, V_BAD_QID, V_HUGE_LEN,
	V_EMPTY_RCPT, V_NO_BODY, V_MAX_RCPTS
};

static void
build(struct img *im, enum variant v)
{
	static const char	 body[] = "hello\r\n";
	uint8_t			 t[8] = { 0, 0, 0, 0, 0x65, 0x53, 0xf1, 0x00 };
	uint8_t			 f[4] = { 0, 0, 0, 1 }, bl[8] = { 0 };
	char			 big[300];
	int			 i, n;

	im->len = 0;
	img_raw(im, v == V_VERSION2 ? "MOATQ2\n" : v == V_BAD_MAGIC ?
	    "MOATX1\n" : "MOATQ1\n", 7);
	img_str(im, 'Q', v == V_BAD_QID ? "0123456789ABCDEF01" :
	    "0123456789abcdef01");
	if (v == V_DUP_QID)
		img_str(im, 'Q', "0123456789abcdef01");
	if (v == V_SENDER_LONG) {
		memset(big, 'a', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		img_str(im, 'S', big);
	} else
		img_str(im, 'S', "a@example.org");
	img_str(im, 'D', "example.com");
	if (v == V_GOOD_OPTIONAL)
		img_rec(im, 0x81, "future", 6);
	if (v == V_UNKNOWN)
		img_rec(im, 'Z', "x", 1);
	img_rec(im, 'T', t, 8);
	if (v != V_NO_FLAGS)
		img_rec(im, 'F', f, 4);
	if (v == V_HUGE_LEN) {
		uint8_t h[5] = { 'H', 0xff, 0xff, 0xff, 0xf0 };

		img_raw(im, h, 5);
	}
	n = v == V_NO_RCPT ? 0 : v == V_TOO_MANY_RCPTS ? SPOOL_RCPT_MAX + 1 :
	    v == V_MAX_RCPTS ? SPOOL_RCPT_MAX : 2;
	for (i = 0; i < n; i++)
		img_str(im, 'R', "b@example.com");
	if (v == V_RCPT_NUL)
		img_rec(im, 'R', "b@ex\0ample.com", 14);
	if (v == V_EMPTY_RCPT)
		img_rec(im, 'R', "", 0);
	if (v != V_NO_BODY) {
		bl[7] = sizeof(body) - 1 + (v == V_BODY_LONG) -
		    (v == V_BODY_SHORT);
		img_rec(im, 'B', bl, 8);
		img_raw(im, body, sizeof(body) - 1);
	}
	img_end(im);
}

static void
test_parse_rules(void **state)
{
	static const struct {
		enum variant	 v;
		int		 want;
		const char	*why;
	} cases[] = {
		{ V_GOOD, 0, NULL },
		{ V_GOOD_OPTIONAL, 0, NULL },
		{ V_MAX_RCPTS, 0, NULL },
		{ V_VERSION2, -1, "unsupported_version" },
		{ V_BAD_MAGIC, -1, "bad_magic" },
		{ V_DUP_QID, -1, "duplicate_record" },
		{ V_NO_FLAGS, -1, "missing_record" },
		{ V_NO_RCPT, -1, "no_recipients" },
		{ V_UNKNOWN, -1, "unknown_record" },
		{ V_BODY_SHORT, -1, "bad_body_length" },
		{ V_BODY_LONG, -1, "bad_body_length" },
		{ V_RCPT_NUL, -1, "bad_recipient" },
		{ V_EMPTY_RCPT, -1, "bad_recipient" },
		{ V_SENDER_LONG, -1, "bad_field" },
		{ V_TOO_MANY_RCPTS, -1, "too_many_recipients" },
		{ V_BAD_QID, -1, "bad_qid" },
		{ V_HUGE_LEN, -1, "truncated_record" },
		{ V_NO_BODY, -1, "truncated_record" },
	};
	struct spool_envelope	 env;
	struct img		*im;
	const char		*why;
	size_t			 i, off;
	int			 r;

	(void)state;
	im = malloc(sizeof(*im));
	assert_non_null(im);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		build(im, cases[i].v);
		r = spool_parse(im->p, im->len, &env, &off, &why);
		if (r != cases[i].want)
			fail_msg("case %zu: got=%d (%s) want=%d", i, r,
			    why ? why : "", cases[i].want);
		if (r == 0) {
			assert_string_equal(env.qid, "0123456789abcdef01");
			assert_int_equal(env.body_len, 7);
			assert_memory_equal(im->p + off, "hello\r\n", 7);
			assert_int_equal(env.created, 0x6553f100);
			assert_int_equal(env.flags, 1);
			spool_envelope_clear(&env);
		} else if (why == NULL ||
		    strcmp(why, cases[i].why) != 0)
			fail_msg("case %zu: got=%s want=%s", i,
			    why ? why : "NULL", cases[i].why);
	}
	free(im);
}

/* Directory operations */

static void
test_open_cleans_tmp(void **state)
{
	struct fixture		*fx = *state;
	struct spool_envelope	 env;
	struct spool_writer	*w;
	char			 path[PATH_MAX], *cause = NULL;
	int			 fd;

	snprintf(path, sizeof(path), "%s/tmp/leftover", fx->dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd != -1);
	close(fd);
	/* An unfinished writer is a crash leftover too. */
	make_env(&env, 1);
	w = spool_writer_new(fx->sp, &env, &cause);
	assert_non_null(w);
	assert_int_equal(spool_writer_write(w, "abc", 3), 0);
	spool_envelope_clear(&env);

	spool_close(fx->sp);
	fx->sp = spool_open(fx->dir, &cause);
	if (fx->sp == NULL)
		fail_msg("spool_open: %s", cause);
	assert_false(exists(path));
	snprintf(path, sizeof(path), "%s/tmp/%s", fx->dir,
	    spool_writer_qid(w));
	assert_false(exists(path));
	spool_writer_abort(w);
	assert_string_equal(spool_dir(fx->sp), fx->dir);
}

struct seen {
	char	qids[8][QID_LEN + 1];
	bool	held[8];
	int	n;
};

static void
scan_cb(void *arg, const struct spool_envelope *env, bool held)
{
	struct seen	*s = arg;

	assert_true(s->n < 8);
	assert_true(env->nrcpts > 0);
	memcpy(s->qids[s->n], env->qid, QID_LEN + 1);
	s->held[s->n++] = held;
}

static int
seen_find(const struct seen *s, const char *qid)
{
	int	i;

	for (i = 0; i < s->n; i++) {
		if (strcmp(s->qids[i], qid) == 0)
			return i;
	}
	return -1;
}

static void
test_scan_quarantine(void **state)
{
	struct fixture		*fx = *state;
	struct spool_envelope	 env;
	struct spool_message	 msg;
	struct seen		 s;
	char			 q[4][QID_LEN + 1], path[PATH_MAX];
	char			 cpath[PATH_MAX];
	struct stat		 st;
	int			 i, fd;

	memset(&s, 0, sizeof(s));
	make_env(&env, 2);
	for (i = 0; i < 4; i++)
		write_msg(fx->sp, &env, "body\r\n", 6, 6, q[i]);
	spool_envelope_clear(&env);

	/* q[1] torn: drop its last byte. */
	queue_path(fx, q[1], path, sizeof(path));
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(truncate(path, st.st_size - 1), 0);
	/* q[2] held. */
	assert_int_equal(spool_hold(fx->sp, q[2]), 0);
	/* Strays are skipped, not fatal. */
	snprintf(path, sizeof(path), "%s/queue/00/junk~", fx->dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd != -1);
	close(fd);

	if ((i = spool_scan(fx->sp, scan_cb, &s)) != 3)
		fail_msg("scan: got=%d want=3", i);
	assert_true(seen_find(&s, q[0]) >= 0);
	assert_true(seen_find(&s, q[1]) == -1);
	assert_true(seen_find(&s, q[3]) >= 0);
	i = seen_find(&s, q[2]);
	assert_true(i >= 0);
	assert_true(s.held[i]);
	assert_false(s.held[seen_find(&s, q[0])]);

	queue_path(fx, q[1], path, sizeof(path));
	snprintf(cpath, sizeof(cpath), "%s/corrupt/%s", fx->dir, q[1]);
	assert_false(exists(path));
	assert_true(exists(cpath));
	assert_int_equal(spool_message_open(fx->sp, q[1], &msg, NULL), -1);
	assert_int_equal(errno, ENOENT);
}

static void
test_open_quarantines(void **state)
{
	struct fixture		*fx = *state;
	struct spool_envelope	 env;
	struct spool_message	 msg;
	char			 a[QID_LEN + 1], b[QID_LEN + 1];
	char			 pa[PATH_MAX], pb[PATH_MAX], cpath[PATH_MAX];

	make_env(&env, 1);
	write_msg(fx->sp, &env, "x\r\n", 3, 3, a);
	write_msg(fx->sp, &env, "y\r\n", 3, 3, b);
	spool_envelope_clear(&env);
	/* A valid file under another message's name is not that message. */
	queue_path(fx, a, pa, sizeof(pa));
	queue_path(fx, b, pb, sizeof(pb));
	assert_int_equal(rename(pa, pb), 0);
	assert_int_equal(spool_message_open(fx->sp, b, &msg, NULL), -1);
	assert_int_equal(errno, EBADMSG);
	snprintf(cpath, sizeof(cpath), "%s/corrupt/%s", fx->dir, b);
	assert_true(exists(cpath));
	assert_false(exists(pb));
	assert_int_equal(spool_message_open(fx->sp, "nonsense", &msg, NULL),
	    -1);
}

static void
test_hold_release_remove(void **state)
{
	struct fixture		*fx = *state;
	struct spool_envelope	 env;
	struct spool_message	 msg;
	char			 q[QID_LEN + 1], path[PATH_MAX];
	bool			 held;

	make_env(&env, 1);
	write_msg(fx->sp, &env, "x\r\n", 3, 3, q);
	spool_envelope_clear(&env);

	assert_int_equal(spool_hold(fx->sp, q), 0);
	assert_int_equal(spool_hold(fx->sp, q), -1);	/* not in queue/ */
	assert_int_equal(spool_message_open(fx->sp, q, &msg, &held), 0);
	assert_true(held);
	spool_message_close(&msg);
	snprintf(path, sizeof(path), "%s/hold/%s", fx->dir, q);
	assert_true(exists(path));

	assert_int_equal(spool_release(fx->sp, q), 0);
	assert_false(exists(path));
	assert_int_equal(spool_message_open(fx->sp, q, &msg, &held), 0);
	assert_false(held);
	spool_message_close(&msg);

	assert_int_equal(spool_remove(fx->sp, q), 0);
	assert_int_equal(spool_message_open(fx->sp, q, &msg, &held), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(spool_remove(fx->sp, q), -1);

	/* A held message can be removed too. */
	make_env(&env, 1);
	write_msg(fx->sp, &env, "x\r\n", 3, 3, q);
	spool_envelope_clear(&env);
	assert_int_equal(spool_hold(fx->sp, q), 0);
	assert_int_equal(spool_remove(fx->sp, q), 0);
	assert_false(exists(path));
}

/*
 * A removed message's file is recycled: it waits empty in free/ (same
 * inode), the next writer takes it, and what it then holds is exactly
 * the new message (a long old body must not survive past a short one).
 */
static void
test_remove_recycles(void **state)
{
	struct fixture		*fx = *state;
	struct spool_envelope	 env;
	struct spool_message	 msg;
	struct stat		 st;
	char			 q1[QID_LEN + 1], q2[QID_LEN + 1];
	char			 path[PATH_MAX], *cause = NULL;
	static uint8_t		 big[100000];
	ino_t			 ino;
	bool			 held;

	memset(big, 'a', sizeof(big));
	big[sizeof(big) - 2] = '\r';
	big[sizeof(big) - 1] = '\n';
	make_env(&env, 1);
	write_msg(fx->sp, &env, big, sizeof(big), 4096, q1);
	queue_path(fx, q1, path, sizeof(path));
	assert_int_equal(stat(path, &st), 0);
	ino = st.st_ino;
	assert_int_equal(spool_remove(fx->sp, q1), 0);
	assert_false(exists(path));
	snprintf(path, sizeof(path), "%s/free/%s", fx->dir, q1);
	assert_int_equal(stat(path, &st), 0);
	if (st.st_size != 0)
		fail_msg("free file size got=%lld want=0",
		    (long long)st.st_size);

	write_msg(fx->sp, &env, "short\r\n", 7, 7, q2);
	spool_envelope_clear(&env);
	assert_false(exists(path));		/* taken from free/ */
	queue_path(fx, q2, path, sizeof(path));
	assert_int_equal(stat(path, &st), 0);
	if (st.st_ino != ino)
		fail_msg("inode got=%llu want=%llu (not recycled)",
		    (unsigned long long)st.st_ino, (unsigned long long)ino);
	assert_int_equal(spool_message_open(fx->sp, q2, &msg, &held), 0);
	assert_int_equal(msg.env.body_len, 7);
	spool_message_close(&msg);

	/* spool_open empties free/. */
	assert_int_equal(spool_remove(fx->sp, q2), 0);
	spool_close(fx->sp);
	fx->sp = spool_open(fx->dir, &cause);
	if (fx->sp == NULL)
		fail_msg("spool_open: %s", cause);
	snprintf(path, sizeof(path), "%s/free/%s", fx->dir, q2);
	assert_false(exists(path));
}

static void
test_rewrite(void **state)
{
	struct fixture		*fx = *state;
	struct spool_envelope	 env;
	struct spool_message	 msg;
	char			 q[QID_LEN + 1];
	char			 keep[2][SPOOL_ADDR_MAX] = { "user1@example.com",
				    "user3@example.com" };
	uint8_t			 body[100000], got[100000];
	bool			 held;
	size_t			 i;
	int			 pass;

	for (i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 7);
	for (pass = 0; pass < 2; pass++) {
		make_env(&env, 5);
		write_msg(fx->sp, &env, body, sizeof(body), 4096, q);
		spool_envelope_clear(&env);
		if (pass == 1)
			assert_int_equal(spool_hold(fx->sp, q), 0);

		assert_int_equal(spool_rewrite(fx->sp, q, keep, 2,
		    SPOOL_F_8BITMIME | SPOOL_F_WARNED), 0);
		assert_int_equal(spool_message_open(fx->sp, q, &msg, &held),
		    0);
		assert_int_equal(held, pass == 1);
		assert_string_equal(msg.env.qid, q);
		assert_int_equal(msg.env.nrcpts, 2);
		assert_string_equal(msg.env.rcpts[0], keep[0]);
		assert_string_equal(msg.env.rcpts[1], keep[1]);
		assert_int_equal(msg.env.flags,
		    SPOOL_F_8BITMIME | SPOOL_F_WARNED);
		assert_int_equal(msg.env.created, 1700000000);
		assert_string_equal(msg.env.sender, "alice@example.org");
		assert_int_equal(msg.env.body_len, sizeof(body));
		assert_int_equal(pread(msg.fd, got, sizeof(got),
		    msg.body_off), sizeof(got));
		assert_memory_equal(got, body, sizeof(body));
		spool_message_close(&msg);
	}
	assert_int_equal(spool_rewrite(fx->sp, q, keep, 0, 0), -1);
}

static void
test_writer_errors(void **state)
{
	struct fixture		*fx = *state;
	struct spool_envelope	 env;
	struct spool_writer	*w;
	char			 path[PATH_MAX], dirpath[PATH_MAX];
	char			*cause = NULL;

	make_env(&env, 0);
	assert_null(spool_writer_new(fx->sp, &env, &cause));
	assert_non_null(cause);
	assert_non_null(strstr(cause, "no recipients"));
	free(cause);
	spool_envelope_clear(&env);

	make_env(&env, 1);
	memset(env.sender, 'x', sizeof(env.sender));	/* unterminated */
	assert_null(spool_writer_new(fx->sp, &env, &cause));
	free(cause);
	spool_envelope_clear(&env);

	/* Abort unlinks; commit of an unfinished writer fails. */
	make_env(&env, 1);
	w = spool_writer_new(fx->sp, &env, &cause);
	assert_non_null(w);
	snprintf(path, sizeof(path), "%s/tmp/%s", fx->dir,
	    spool_writer_qid(w));
	assert_true(exists(path));
	spool_writer_abort(w);
	assert_false(exists(path));
	w = spool_writer_new(fx->sp, &env, &cause);
	assert_non_null(w);
	assert_int_equal(spool_writer_commit(w, dirpath, sizeof(dirpath)), -1);
	spool_envelope_clear(&env);

	assert_true(spool_disk_free(fx->sp) > 0);
}

static void
test_open_unwritable(void **state)
{
	static const struct {
		const char	*path;
		const char	*want;
	} cases[] = {
		{ "/etc/passwd/x", "Not a directory" },
		{ "/nonexistent-moat/a/b", "No such file or directory" },
		{ "", "empty path" },
	};
	struct spool	*sp;
	char		*cause;
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cause = NULL;
		sp = spool_open(cases[i].path, &cause);
		if (sp != NULL)
			fail_msg("spool_open(%s): got=ok want=fail",
			    cases[i].path);
		if (cause == NULL || strstr(cause, cases[i].want) == NULL ||
		    strncmp(cause, "spool: ", 7) != 0)
			fail_msg("spool_open(%s): got=%s want=%s",
			    cases[i].path, cause ? cause : "NULL",
			    cases[i].want);
		free(cause);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qid_format),
		cmocka_unit_test(test_qid_order),
		cmocka_unit_test(test_parse_rules),
		cmocka_unit_test(test_open_unwritable),
		cmocka_unit_test_setup_teardown(test_roundtrip, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_truncated, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_flipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_cleans_tmp, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_scan_quarantine, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_open_quarantines, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_hold_release_remove,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove_recycles, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_rewrite, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_errors, setup,
		    teardown),
	};

	log_init("test_spool", LOG_LEVEL_WARN, false);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
