/*
 * reason.c: names of the reason codes declared in reason.h.
 */
#include <string.h>

#include "reason.h"

static const char *const reason_names[REASON_MAX] = {
#define REASON_NAME(id, name) [REASON_##id] = name,
	REASON_TABLE(REASON_NAME)
#undef REASON_NAME
};

const char *
reason_name(enum reason r)
{
	if ((unsigned)r >= REASON_MAX)
		return "invalid";
	return reason_names[r];
}

enum reason
reason_from_name(const char *name)
{
	for (unsigned i = 0; i < REASON_MAX; i++)
		if (strcmp(reason_names[i], name) == 0)
			return (enum reason)i;
	return REASON_MAX;
}
