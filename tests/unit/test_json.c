/*
 * test_json.c: the JSON writer (json.c): string escaping, UTF-8
 * handling, nesting and error stickiness, text mode, durations.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "json.h"

/* evbuffer contents as a NUL-terminated string (static, per call). */
static const char *
buf_str(struct evbuffer *b)
{
	static char	 out[4096];
	size_t		 n = evbuffer_get_length(b);

	assert_true(n < sizeof out);
	evbuffer_copyout(b, out, n);
	out[n] = '\0';
	return out;
}

static void
check_str(const char *what, const char *got, const char *want)
{
	if (strcmp(got, want) != 0) {
		print_error("%s: got=%s want=%s\n", what, got, want);
		fail();
	}
}

static void
test_escape(void **state)
{
	static const struct {
		const char	*name;
		const char	*in;
		size_t		 len;
		const char	*want;
	} cases[] = {
		{ "plain", "abc", 3, "abc" },
		{ "empty", "", 0, "" },
		{ "quote", "a\"b", 3, "a\\\"b" },
		{ "backslash", "a\\b", 3, "a\\\\b" },
		{ "newline tab cr", "\n\t\r", 3, "\\n\\t\\r" },
		{ "bs ff", "\b\f", 2, "\\b\\f" },
		{ "c0 controls", "\x01\x1f", 2, "\\u0001\\u001f" },
		{ "NUL inside", "a\0b", 3, "a\\u0000b" },
		{ "DEL", "\x7f", 1, "\\u007f" },
		{ "utf-8 2 bytes raw", "caf\xc3\xa9", 5, "caf\xc3\xa9" },
		{ "utf-8 3 bytes raw", "\xe2\x82\xac", 3, "\xe2\x82\xac" },
		{ "utf-8 4 bytes raw", "\xf0\x9f\x98\x80", 4,
		    "\xf0\x9f\x98\x80" },
		{ "latin-1 byte", "\xe9t\xe9", 3, "\\u00e9t\\u00e9" },
		{ "lone continuation", "\x80", 1, "\\u0080" },
		{ "overlong slash", "\xc0\xaf", 2, "\\u00c0\\u00af" },
		{ "overlong 3", "\xe0\x80\xaf", 3, "\\u00e0\\u0080\\u00af" },
		{ "surrogate", "\xed\xa0\x80", 3, "\\u00ed\\u00a0\\u0080" },
		{ "beyond U+10FFFF", "\xf4\x90\x80\x80", 4,
		    "\\u00f4\\u0090\\u0080\\u0080" },
		{ "truncated seq", "\xe2\x82", 2, "\\u00e2\\u0082" },
		{ "0xff", "\xff", 1, "\\u00ff" },
		{ "html stays", "</script>", 9, "</script>" },
	};
	size_t	i;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct evbuffer *b = evbuffer_new();

		assert_non_null(b);
		assert_int_equal(json_escape(b, cases[i].in, cases[i].len),
		    0);
		check_str(cases[i].name, buf_str(b), cases[i].want);
		evbuffer_free(b);
	}
}

static void
test_nesting(void **state)
{
	struct evbuffer	*b = evbuffer_new();
	struct json	 j;

	(void)state;
	json_init(&j, b, JSON_MODE_JSON);
	json_object_open(&j, NULL);
	json_string(&j, "s", "x\"y");
	json_uint(&j, "u", 18446744073709551615ULL);
	json_int(&j, "i", -5);
	json_bool(&j, "t", true);
	json_null(&j, "n");
	json_string(&j, "ns", NULL);
	json_array_open(&j, "a");
	json_string(&j, NULL, "one");
	json_object_open(&j, NULL);
	json_duration(&j, "d", 90);
	json_time(&j, "t", 86400);
	json_object_close(&j);
	json_array_open(&j, NULL);
	json_array_close(&j);
	json_array_close(&j);
	json_object_open(&j, "empty");
	json_object_close(&j);
	json_object_close(&j);
	assert_int_equal(json_finish(&j), 0);
	check_str("nesting", buf_str(b),
	    "{\"s\":\"x\\\"y\",\"u\":18446744073709551615,\"i\":-5,"
	    "\"t\":true,\"n\":null,\"ns\":null,"
	    "\"a\":[\"one\",{\"d\":90,\"t\":86400},[]],\"empty\":{}}\n");
	evbuffer_free(b);
}

static void
test_errors(void **state)
{
	struct evbuffer	*b = evbuffer_new();
	struct json	 j;
	int		 i;

	(void)state;
	/* Missing key inside an object. */
	json_init(&j, b, JSON_MODE_JSON);
	json_object_open(&j, NULL);
	json_string(&j, NULL, "x");
	json_object_close(&j);
	assert_int_equal(json_finish(&j), -1);

	/* Key inside an array. */
	json_init(&j, b, JSON_MODE_JSON);
	json_array_open(&j, NULL);
	json_string(&j, "k", "x");
	assert_int_equal(json_finish(&j), -1);

	/* Mismatched close. */
	json_init(&j, b, JSON_MODE_JSON);
	json_object_open(&j, NULL);
	json_array_close(&j);
	assert_int_equal(json_finish(&j), -1);

	/* Unclosed. */
	json_init(&j, b, JSON_MODE_JSON);
	json_object_open(&j, NULL);
	assert_int_equal(json_finish(&j), -1);

	/* Too deep: the writer refuses JSON_DEPTH_MAX + 1 levels. */
	json_init(&j, b, JSON_MODE_JSON);
	json_array_open(&j, NULL);
	for (i = 1; i < JSON_DEPTH_MAX; i++)
		json_array_open(&j, NULL);
	assert_false(j.error);
	json_array_open(&j, NULL);
	assert_true(j.error);
	assert_int_equal(json_finish(&j), -1);

	/* Close at top level. */
	json_init(&j, b, JSON_MODE_JSON);
	json_object_close(&j);
	assert_int_equal(json_finish(&j), -1);
	evbuffer_free(b);
}

static void
test_text_mode(void **state)
{
	struct evbuffer	*b = evbuffer_new();
	struct json	 j;

	(void)state;
	json_init(&j, b, JSON_MODE_TEXT);
	json_object_open(&j, NULL);
	json_string(&j, "version", "1.0");
	json_duration(&j, "uptime", 3723);
	json_time(&j, "created", 86400);
	json_object_open(&j, "sessions");
	json_uint(&j, "active", 2);
	json_object_close(&j);
	json_array_open(&j, "destinations");
	json_object_open(&j, NULL);
	json_string(&j, "domain", "a.test");
	json_string(&j, "server", "1.2.3.4:25");
	json_object_close(&j);
	json_object_open(&j, NULL);
	json_string(&j, "domain", "b\n\x01\"\\");
	json_object_close(&j);
	json_array_close(&j);
	json_array_open(&j, "flags");
	json_string(&j, NULL, "dsn");
	json_array_close(&j);
	json_object_close(&j);
	assert_int_equal(json_finish(&j), 0);
	check_str("text", buf_str(b),
	    "version: 1.0\n"
	    "uptime: 1h2m3s\n"
	    "created: 1970-01-02T00:00:00Z\n"
	    "sessions:\n"
	    "  active: 2\n"
	    "destinations:\n"
	    "  - domain: a.test\n"
	    "    server: 1.2.3.4:25\n"
	    "  - domain: b\\x0a\\x01\"\\\\\n"
	    "flags:\n"
	    "  - dsn\n");
	evbuffer_free(b);
}

static void
test_duration(void **state)
{
	static const struct {
		int64_t		 secs;
		const char	*want;
	} cases[] = {
		{ 0, "0s" }, { -5, "0s" }, { 59, "59s" }, { 60, "1m" },
		{ 3600, "1h" }, { 3661, "1h1m1s" }, { 86400 + 120, "1d2m" },
	};
	char	buf[32], tiny[3];
	size_t	i;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_format_duration(buf, sizeof buf, cases[i].secs);
		check_str("duration", buf, cases[i].want);
	}
	/* Truncation keeps a terminated prefix. */
	json_format_duration(tiny, sizeof tiny, 3661);
	check_str("tiny", tiny, "1h");
}

static void
test_utf8_len(void **state)
{
	(void)state;
	assert_int_equal(json_utf8_len((const unsigned char *)"a", 1), 1);
	assert_int_equal(json_utf8_len((const unsigned char *)"\xc3\xa9",
	    2), 2);
	assert_int_equal(json_utf8_len((const unsigned char *)"\xc3", 1),
	    0);
	assert_int_equal(json_utf8_len((const unsigned char *)"\xc1\xbf",
	    2), 0);
	assert_int_equal(json_utf8_len((const unsigned char *)"", 0), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_nesting),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_text_mode),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_utf8_len),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
