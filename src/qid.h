/*
 * qid.h: queue ids.
 *
 * A qid is QID_LEN lower-case hex digits: microseconds since the epoch
 * (13 digits) then a 5-digit per-process sequence mixed with the pid, so
 * ids sort by creation time and never repeat within one spool.  The same
 * string names the file, appears in the log and in the "250" reply.
 */
#ifndef MOAT_QID_H
#define MOAT_QID_H

#include <stdbool.h>

#define QID_LEN		18

/* buf must hold QID_LEN + 1 bytes. */
void	qid_new(char *buf);
bool	qid_valid(const char *);
/* Bucket directory name for a qid: two hex digits, buf holds 3. */
void	qid_bucket(const char *qid, char *buf);

#endif
