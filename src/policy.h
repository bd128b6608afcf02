/*
 * policy.h: verdicts, and how a tripped check becomes one.
 *
 * Every check in moat ends with a verdict and a reason code.  A check's
 * configured action (config.h) maps to a verdict here, once, so that the
 * observe mode ("log") is the same for every check: the event is counted
 * under metrics.observed and logged, and the session goes on as if the
 * check had passed.
 *
 * Later layers (limits, recipients/DHA, reputation, content) plug in by
 * producing a struct verdict with their own reason codes; the session
 * applies it through one path (smtp_session.c: session_apply).
 */
#ifndef MOAT_POLICY_H
#define MOAT_POLICY_H

#include <stdint.h>

#include "config.h"
#include "reason.h"

enum verdict_kind {
	VERDICT_PASS,
	VERDICT_TARPIT,		/* delay the next reply by delay ms */
	VERDICT_TEMPFAIL,	/* 4xx */
	VERDICT_REJECT,		/* 5xx */
	VERDICT_DROP		/* close now */
};

struct verdict {
	enum verdict_kind	kind;
	enum reason		reason;
	uint64_t		delay;	/* ms, for TARPIT */
};

/* The verdict for a check that tripped with this configuration. */
struct verdict	policy_trip(const struct config_check *, enum reason,
		    uint64_t tarpit_delay);
/* Combine two verdicts: the stronger wins (DROP > REJECT > TEMPFAIL >
 * TARPIT > PASS); a TEMPFAIL caused by moat's own dependency should use
 * policy_defer_if_permit instead. */
struct verdict	policy_combine(struct verdict, struct verdict);
const char	*policy_verdict_name(enum verdict_kind);

#endif
