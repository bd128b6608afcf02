/*
 * util.h: small string helpers that glibc 2.36 lacks.
 */
#ifndef MOAT_UTIL_H
#define MOAT_UTIL_H

#include <stdbool.h>
#include <stddef.h>

/* Copies src into dst (size bytes, always terminated); false if cut. */
bool	util_strlcpy(char *dst, const char *src, size_t size);

#endif
