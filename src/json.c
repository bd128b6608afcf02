/*
 * json.c: the streaming JSON (and indented text) writer of json.h.
 *
 * Invariants: depth is the number of open containers, 0..JSON_DEPTH_MAX;
 * kind[i]/nonempty[i] describe container i.  Once error is set nothing
 * more is written, so a caller may chain calls and check json_finish()
 * once.  Hand-written because the need is tiny (a writer, no parser) and
 * the escaping rules must be exactly ours; no Debian JSON library writes
 * onto an evbuffer.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "json.h"

void
json_init(struct json *j, struct evbuffer *out, enum json_mode mode)
{
	memset(j, 0, sizeof *j);
	j->out = out;
	j->mode = mode;
}

static void
json_add(struct json *j, const char *s, size_t n)
{
	if (j->error)
		return;
	if (evbuffer_add(j->out, s, n) != 0)
		j->error = true;
}

static void
json_adds(struct json *j, const char *s)
{
	json_add(j, s, strlen(s));
}

size_t
json_utf8_len(const unsigned char *s, size_t n)
{
	unsigned char	c = s[0];
	size_t		len, i;
	uint32_t	cp;

	if (n == 0)
		return 0;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
	} else
		return 0;	/* continuation byte, 0xc0/0xc1, 0xf5.. */
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, UTF-16 surrogates, beyond Unicode. */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

/*
 * Escapes for JSON (text == false) or for the human text mode, where the
 * only goal is one clean line: controls and invalid bytes as \xHH.
 */
static int
json_escape_mode(struct evbuffer *out, const char *s, size_t n, bool text)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 i = 0, run, ulen;
	char			 tmp[8];
	const char		*esc;

	while (i < n) {
		/* Copy the longest run that needs no escaping at once. */
		run = 0;
		while (i + run < n) {
			unsigned char c = p[i + run];

			if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
				run++;
			else if (c == '"' && text)
				run++;
			else if (c >= 0x80 &&
			    (ulen = json_utf8_len(p + i + run, n - i - run))
			    > 0)
				run += ulen;
			else
				break;
		}
		if (run > 0 && evbuffer_add(out, p + i, run) != 0)
			return -1;
		i += run;
		if (i >= n)
			break;

		esc = NULL;
		if (!text) {
			switch (p[i]) {
			case '"':  esc = "\\\""; break;
			case '\\': esc = "\\\\"; break;
			case '\b': esc = "\\b"; break;
			case '\f': esc = "\\f"; break;
			case '\n': esc = "\\n"; break;
			case '\r': esc = "\\r"; break;
			case '\t': esc = "\\t"; break;
			}
		} else if (p[i] == '\\')
			esc = "\\\\";
		if (esc == NULL) {
			(void)snprintf(tmp, sizeof tmp,
			    text ? "\\x%02x" : "\\u%04x", p[i]);
			esc = tmp;
		}
		if (evbuffer_add(out, esc, strlen(esc)) != 0)
			return -1;
		i++;
	}
	return 0;
}

int
json_escape(struct evbuffer *out, const char *s, size_t n)
{
	return json_escape_mode(out, s, n, false);
}

void
json_format_duration(char *buf, size_t len, int64_t secs)
{
	static const struct {
		char	 unit;
		int64_t	 secs;
	} units[] = {
		{ 'd', 86400 }, { 'h', 3600 }, { 'm', 60 }, { 's', 1 }
	};
	size_t	off = 0;
	int	r;

	if (len == 0)
		return;
	buf[0] = '\0';
	if (secs < 0)
		secs = 0;
	if (secs == 0) {
		(void)snprintf(buf, len, "0s");
		return;
	}
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		int64_t n = secs / units[i].secs;

		if (n == 0)
			continue;
		secs -= n * units[i].secs;
		r = snprintf(buf + off, len - off, "%" PRId64 "%c", n,
		    units[i].unit);
		if (r < 0 || (size_t)r >= len - off)
			return;		/* truncated: keep what fits */
		off += (size_t)r;
	}
}

/* Indentation for a line at the current depth (text mode). */
static void
json_text_indent(struct json *j)
{
	int	d = j->depth, i, n;
	bool	dash = false;

	/* Members and items are indented two spaces per nesting level. */
	n = d > 0 ? (d - 1) * 2 : 0;
	/*
	 * First member of an object inside an array: "- key: value", the
	 * dash in the two columns of the object's own indentation.
	 */
	if (d >= 2 && j->kind[d - 1] == 'o' && j->kind[d - 2] == 'a' &&
	    !j->nonempty[d - 1]) {
		dash = true;
		n -= 2;
	}
	/* Item of an array: "- value". */
	if (d >= 1 && j->kind[d - 1] == 'a')
		dash = true;
	for (i = 0; i < n; i++)
		json_add(j, " ", 1);
	if (dash)
		json_add(j, "- ", 2);
}

/*
 * Common prologue of every value: checks key against the container,
 * writes the separator and the key.  Returns false if nothing may be
 * written.  container is true when the value opens an object/array.
 */
static bool
json_member(struct json *j, const char *key, bool container)
{
	char	 kind;

	if (j->error)
		return false;
	kind = j->depth > 0 ? j->kind[j->depth - 1] : 0;
	if ((kind == 'o') != (key != NULL)) {
		j->error = true;	/* caller bug: key/no key mismatch */
		return false;
	}
	if (j->mode == JSON_MODE_JSON) {
		if (j->depth > 0 && j->nonempty[j->depth - 1])
			json_add(j, ",", 1);
		if (key != NULL) {
			json_add(j, "\"", 1);
			if (!j->error && json_escape(j->out, key,
			    strlen(key)) != 0)
				j->error = true;
			json_add(j, "\":", 2);
		}
	} else if (j->depth > 0) {
		/*
		 * Text: the top-level container has no line of its own;
		 * a nested container inside an array gets no line either
		 * (its first member carries the dash).
		 */
		if (!(container && kind == 'a')) {
			json_text_indent(j);
			if (key != NULL) {
				json_adds(j, key);
				json_adds(j, container ? ":\n" : ": ");
			}
		}
	}
	if (j->depth > 0)
		j->nonempty[j->depth - 1] = true;
	return !j->error;
}

static void
json_open(struct json *j, const char *key, char kind)
{
	if (j->error)
		return;
	if (j->depth >= JSON_DEPTH_MAX) {
		j->error = true;
		return;
	}
	/*
	 * In text mode an object inside an array has no line of its own:
	 * its first member carries the "- " (see json_text_indent).
	 */
	if (!json_member(j, key, true))
		return;
	if (j->mode == JSON_MODE_JSON)
		json_add(j, kind == 'o' ? "{" : "[", 1);
	j->kind[j->depth] = kind;
	j->nonempty[j->depth] = false;
	j->depth++;
}

static void
json_close(struct json *j, char kind)
{
	if (j->error)
		return;
	if (j->depth == 0 || j->kind[j->depth - 1] != kind) {
		j->error = true;
		return;
	}
	j->depth--;
	if (j->mode == JSON_MODE_JSON)
		json_add(j, kind == 'o' ? "}" : "]", 1);
}

void
json_object_open(struct json *j, const char *key)
{
	json_open(j, key, 'o');
}

void
json_object_close(struct json *j)
{
	json_close(j, 'o');
}

void
json_array_open(struct json *j, const char *key)
{
	json_open(j, key, 'a');
}

void
json_array_close(struct json *j)
{
	json_close(j, 'a');
}

/* A scalar already formatted (number, true, null...). */
static void
json_raw(struct json *j, const char *key, const char *text)
{
	if (!json_member(j, key, false))
		return;
	json_adds(j, text);
	if (j->mode == JSON_MODE_TEXT)
		json_add(j, "\n", 1);
}

void
json_stringn(struct json *j, const char *key, const char *s, size_t n)
{
	if (s == NULL) {
		json_null(j, key);
		return;
	}
	if (!json_member(j, key, false))
		return;
	if (j->mode == JSON_MODE_JSON) {
		json_add(j, "\"", 1);
		if (!j->error && json_escape_mode(j->out, s, n, false) != 0)
			j->error = true;
		json_add(j, "\"", 1);
	} else {
		if (!j->error && json_escape_mode(j->out, s, n, true) != 0)
			j->error = true;
		json_add(j, "\n", 1);
	}
}

void
json_string(struct json *j, const char *key, const char *s)
{
	json_stringn(j, key, s, s != NULL ? strlen(s) : 0);
}

void
json_uint(struct json *j, const char *key, uint64_t v)
{
	char	buf[32];

	(void)snprintf(buf, sizeof buf, "%" PRIu64, v);
	json_raw(j, key, buf);
}

void
json_int(struct json *j, const char *key, int64_t v)
{
	char	buf[32];

	(void)snprintf(buf, sizeof buf, "%" PRId64, v);
	json_raw(j, key, buf);
}

void
json_bool(struct json *j, const char *key, bool v)
{
	json_raw(j, key, v ? "true" : "false");
}

void
json_null(struct json *j, const char *key)
{
	json_raw(j, key, j->mode == JSON_MODE_JSON ? "null" : "-");
}

void
json_duration(struct json *j, const char *key, int64_t secs)
{
	char	buf[64];

	if (j->mode == JSON_MODE_JSON) {
		json_int(j, key, secs);
		return;
	}
	json_format_duration(buf, sizeof buf, secs);
	json_raw(j, key, buf);
}

void
json_time(struct json *j, const char *key, int64_t t)
{
	char		buf[64];
	time_t		tt = (time_t)t;
	struct tm	tm;

	if (j->mode == JSON_MODE_JSON) {
		json_int(j, key, t);
		return;
	}
	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		(void)snprintf(buf, sizeof buf, "%" PRId64, t);
	json_raw(j, key, buf);
}

int
json_finish(struct json *j)
{
	if (j->error || j->depth != 0)
		return -1;
	if (j->mode == JSON_MODE_JSON)
		json_add(j, "\n", 1);
	return j->error ? -1 : 0;
}
