/* Bulk scanners over one contiguous segment: substring search and frame
 * boundary splitting (LEB128 / big-endian length prefixes, delimiters).
 * See scan.c for the strategy. No allocation, no locks, no global state. */
#ifndef MEMBUF_SCAN_H
#define MEMBUF_SCAN_H

#include <stddef.h>
#include <stdint.h>

/* Status of a frame scan (out[] of mb_scan_state). */
#define MB_SCAN_END       0   /* stopped at the end of the buffer (maybe mid-frame) */
#define MB_SCAN_FULL      1   /* the offsets array is full: call again from `stop` */
#define MB_SCAN_MALFORMED 2   /* the frame at `stop` is over-long or its prefix is bad */

/* Frame kinds for mb_scan_frames. */
#define MB_FRAME_LEB128 0
#define MB_FRAME_BE16   2
#define MB_FRAME_BE24   3
#define MB_FRAME_BE32   4
#define MB_FRAME_DELIM  8

/* Index of the first occurrence of sub[0:m] in buf[0:n], or -1 (m == 0 gives 0). */
int64_t mb_scan_find(const char *buf, size_t n, const char *sub, size_t m);

/* Find the complete frames of buf[start:end].
 *
 * kind: one of MB_FRAME_*; delim/dlen: the delimiter for MB_FRAME_DELIM.
 * max_frame: the largest allowed frame body (bytes without prefix/delimiter).
 * offs: room for cap frames as body start/end pairs (2 * cap entries), offsets
 *       relative to buf.
 * state: state[0] = stop (offset where the first incomplete, unscanned or
 *        malformed frame begins), state[1] = status (MB_SCAN_*).
 * Returns the number of complete frames written. */
size_t mb_scan_frames(const char *buf, size_t start, size_t end, int kind,
                      const char *delim, size_t dlen, uint64_t max_frame,
                      uint64_t *offs, size_t cap, uint64_t *state);

#endif
