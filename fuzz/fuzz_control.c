/*
 * fuzz_control.c: libFuzzer harness for the control protocol's PURE
 * side (control_parse.c) and for the JSON string escaper (json.c), the
 * two places where bytes from a control client end up.
 *
 * Checks, beyond "no crash": a parsed request has 1..CONTROL_MAX_ARGS
 * non-empty words of printable ASCII without blanks; and the escaped
 * form of any input contains no control byte and is well-formed UTF-8,
 * so it is always a valid JSON string body.
 *
 * The Makefile links every library source into a harness.  On a branch
 * without delivery.c/spool.c/qid.c, control.c's references to them are
 * satisfied by the weak stubs below; in the full tree the real (strong)
 * definitions win and the stubs vanish.  They are never called here.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "control.h"
#include "delivery.h"
#include "json.h"
#include "qid.h"
#include "spool.h"

#define WEAK	__attribute__((weak))

WEAK bool qid_valid(const char *s) { (void)s; return false; }
WEAK void delivery_iterate(struct delivery *d, delivery_entry_cb cb,
    void *a) { (void)d; (void)cb; (void)a; }
WEAK int delivery_info(struct delivery *d, const char *q,
    delivery_entry_cb cb, void *a) { (void)d; (void)q; (void)cb; (void)a;
    return -1; }
WEAK void delivery_iterate_dests(struct delivery *d, delivery_dest_cb cb,
    void *a) { (void)d; (void)cb; (void)a; }
WEAK void delivery_get_stats(struct delivery *d, struct delivery_stats *s)
    { (void)d; memset(s, 0, sizeof *s); }
WEAK int delivery_flush(struct delivery *d, const char *q)
    { (void)d; (void)q; return -1; }
WEAK int delivery_delete(struct delivery *d, const char *q)
    { (void)d; (void)q; return -1; }
WEAK int delivery_hold(struct delivery *d, const char *q)
    { (void)d; (void)q; return -1; }
WEAK int delivery_release(struct delivery *d, const char *q)
    { (void)d; (void)q; return -1; }
WEAK const char *delivery_state_name(enum delivery_state s)
    { (void)s; return "?"; }
WEAK const char *delivery_circuit_name(enum delivery_circuit c)
    { (void)c; return "?"; }
WEAK int spool_message_open(struct spool *s, const char *q,
    struct spool_message *m, bool *h) { (void)s; (void)q; (void)m;
    (void)h; return -1; }
WEAK void spool_message_close(struct spool_message *m) { (void)m; }

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check_request(const struct control_request *req)
{
	int		 i;
	const char	*p;

	if (req->argc < 1 || req->argc > CONTROL_MAX_ARGS)
		abort();
	for (i = 0; i < req->argc; i++) {
		if (req->argv[i][0] == '\0')
			abort();
		for (p = req->argv[i]; *p != '\0'; p++)
			if (*p <= ' ' || *p > '~')
				abort();
	}
}

static void
check_escaped(const uint8_t *data, size_t size)
{
	struct evbuffer	*b = evbuffer_new();
	unsigned char	*out;
	size_t		 n, i, l;

	if (b == NULL)
		return;
	if (json_escape(b, (const char *)data, size) != 0)
		abort();
	n = evbuffer_get_length(b);
	out = evbuffer_pullup(b, -1);
	for (i = 0; i < n; i += l) {
		if (out[i] < 0x20 || out[i] == 0x7f)
			abort();
		/* A quote is always escaped: preceded by a backslash. */
		if (out[i] == '"' && (i == 0 || out[i - 1] != '\\'))
			abort();
		if ((l = json_utf8_len(out + i, n - i)) == 0)
			abort();
	}
	evbuffer_free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct control_request		 req;
	struct control_list_filter	 filter;
	const struct control_command	*cmd;
	const char			*why = NULL;
	int				 nw, i;

	check_escaped(data, size);
	if (control_parse_request((const char *)data, size, &req,
	    &why) != 0) {
		if (why == NULL)
			abort();
		return 0;
	}
	check_request(&req);
	for (i = 0; i < req.argc; i++)
		(void)control_parse_duration(req.argv[i]);
	if ((cmd = control_parse_lookup(req.argc, req.argv)) == NULL)
		return 0;
	nw = control_parse_nwords(cmd);
	if (nw > req.argc)
		abort();
	(void)control_parse_check(cmd, req.argc - nw, req.argv + nw, &why);
	(void)control_parse_list_filter(req.argc - nw, req.argv + nw,
	    &filter, &why);
	return 0;
}
