/*
 * policy.c: mapping of check actions to verdicts and verdict combination.
 *
 * Observe mode lives here: a check whose action is "log" yields PASS, and
 * the caller counts the would-be refusal (smtp_session.c does, through its
 * one reply path), so an administrator can switch a check on with evidence.
 */
#include "policy.h"

static const char *const verdict_names[] = {
	[VERDICT_PASS] = "pass",
	[VERDICT_TARPIT] = "tarpit",
	[VERDICT_TEMPFAIL] = "tempfail",
	[VERDICT_REJECT] = "reject",
	[VERDICT_DROP] = "drop",
};

static const enum verdict_kind action_verdicts[] = {
	[CONFIG_ACTION_LOG] = VERDICT_PASS,
	[CONFIG_ACTION_TARPIT] = VERDICT_TARPIT,
	[CONFIG_ACTION_TEMPFAIL] = VERDICT_TEMPFAIL,
	[CONFIG_ACTION_REJECT] = VERDICT_REJECT,
	[CONFIG_ACTION_DROP] = VERDICT_DROP,
};

struct verdict
policy_trip(const struct config_check *check, enum reason reason,
    uint64_t tarpit_delay)
{
	struct verdict	v = { VERDICT_PASS, reason, 0 };

	if (!check->enabled)
		return v;
	if ((unsigned)check->action <
	    sizeof action_verdicts / sizeof action_verdicts[0])
		v.kind = action_verdicts[check->action];
	if (v.kind == VERDICT_TARPIT)
		v.delay = tarpit_delay;
	return v;
}

struct verdict
policy_combine(struct verdict a, struct verdict b)
{
	return b.kind > a.kind ? b : a;
}

const char *
policy_verdict_name(enum verdict_kind k)
{
	if ((unsigned)k >= sizeof verdict_names / sizeof verdict_names[0])
		return "invalid";
	return verdict_names[k];
}
