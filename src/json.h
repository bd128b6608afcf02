/*
 * json.h: a tiny streaming JSON writer onto an evbuffer.
 *
 * The writer keeps only a fixed stack of nesting levels (JSON_DEPTH_MAX)
 * and writes straight into the caller's evbuffer, so it never allocates.
 * Errors (nesting too deep, a close that does not match its open, a key
 * missing inside an object or present inside an array, evbuffer failure)
 * are sticky: the writer stops writing and json_finish() returns -1.
 *
 * Strings are escaped so that the output is always valid JSON (RFC 8259)
 * whatever bytes the caller passes: '"', '\\' and the C0 controls are
 * escaped (\n, \t, ... or \u00XX), DEL becomes \u007f, well-formed UTF-8
 * is copied raw, and every byte that is not part of well-formed UTF-8
 * (overlong forms, surrogates, truncated sequences, > U+10FFFF) becomes
 * \u00XX, i.e. it is read as Latin-1.  Client-supplied text such as an
 * envelope sender therefore cannot break the document.
 *
 * A second mode, JSON_MODE_TEXT, renders the same calls as indented
 * "key: value" lines for humans (moatctl without --json), so one builder
 * serves both outputs; in text mode strings are cleaned the same way
 * minus the quotes (controls and invalid bytes as \xHH).
 *
 * Used by control.c (moatctl answers) and by moatd's status hook.
 */
#ifndef MOAT_JSON_H
#define MOAT_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define JSON_DEPTH_MAX	16

enum json_mode {
	JSON_MODE_JSON,
	JSON_MODE_TEXT
};

struct json {
	struct evbuffer	*out;
	enum json_mode	 mode;
	int		 depth;			/* open containers */
	bool		 error;
	/* Per level: 'o' object or 'a' array, and whether it has members. */
	char		 kind[JSON_DEPTH_MAX];
	bool		 nonempty[JSON_DEPTH_MAX];
};

void	json_init(struct json *, struct evbuffer *, enum json_mode);
/*
 * Containers and values.  key must be given inside an object and must be
 * NULL at top level and inside an array.
 */
void	json_object_open(struct json *, const char *key);
void	json_object_close(struct json *);
void	json_array_open(struct json *, const char *key);
void	json_array_close(struct json *);
void	json_string(struct json *, const char *key, const char *);
void	json_stringn(struct json *, const char *key, const char *, size_t);
void	json_uint(struct json *, const char *key, uint64_t);
void	json_int(struct json *, const char *key, int64_t);
void	json_bool(struct json *, const char *key, bool);
void	json_null(struct json *, const char *key);
/* Unix time: a number in JSON, "2026-01-02T03:04:05Z" in text mode. */
void	json_time(struct json *, const char *key, int64_t);
/* Seconds: a number in JSON, "1h2m3s" in text mode. */
void	json_duration(struct json *, const char *key, int64_t);
/*
 * Ends the document (a newline in JSON mode).  Returns 0, or -1 if any
 * error happened or containers are still open.
 */
int	json_finish(struct json *);

/*
 * Appends s (n bytes) to out with JSON string escaping, without the
 * surrounding quotes.  Exposed for the tests.
 */
int	json_escape(struct evbuffer *out, const char *s, size_t n);
/* Length of the well-formed UTF-8 sequence at s (1..4), or 0 if none. */
size_t	json_utf8_len(const unsigned char *s, size_t n);
/* Formats seconds as "1d2h3m4s" (largest units, zeros omitted; "0s"). */
void	json_format_duration(char *buf, size_t len, int64_t secs);

#endif
