/*
 * metrics.c: the counters declared in metrics.h.
 */
#include "metrics.h"

struct metrics metrics;
