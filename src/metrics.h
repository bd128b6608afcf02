/*
 * metrics.h: process-wide counters, read by `moatctl status` and (later)
 * /metrics.  The event loop is the only writer, so plain integers do.
 */
#ifndef MOAT_METRICS_H
#define MOAT_METRICS_H

#include <stdint.h>

#include "reason.h"

struct metrics {
	uint64_t	sessions_total;
	uint64_t	sessions_active;
	uint64_t	messages_accepted;
	uint64_t	bytes_accepted;
	uint64_t	refused[REASON_MAX];	/* acted upon */
	uint64_t	observed[REASON_MAX];	/* action = log: would have */
};

extern struct metrics metrics;

#endif
