/* Bulk scanners: substring search and frame-boundary splitting over one segment.
 *
 * Strategy. A cffi call costs ~110-140 ns here, more than a small frame is
 * worth, so Python crosses into C once per *segment*, never once per frame:
 * mb_scan_frames walks a whole segment and writes the body [start, end)
 * offsets of every complete frame into a caller-owned uint64_t array (reused
 * between calls), and Python slices the segment from that list. The scanner
 * only looks at bytes: it never allocates, keeps no state between calls, and
 * takes no lock (cffi releases the GIL; the caller owns the buffer).
 *
 * Contract of mb_scan_frames (see scan.h):
 *  - frames are only reported when complete inside buf[start:end];
 *  - state[0] ("stop") is where scanning stopped: the start of the first frame
 *    not reported (an incomplete one, one past the offsets array's capacity,
 *    or a malformed one), or `end`;
 *  - state[1] says why: MB_SCAN_END (ran out of bytes; a frame may straddle
 *    into the next segment, which Python handles in its slow path),
 *    MB_SCAN_FULL (call again from stop), MB_SCAN_MALFORMED (the frame at
 *    stop has a body over max_frame, a LEB128 prefix over 10 bytes or 64 bits,
 *    or no delimiter within max_frame + dlen bytes).
 *  - LEB128 accepts non-canonical (padded) encodings, as the Reader does.
 *
 * Complexity: O(n) for prefixed frames; O(n * dlen) worst case for
 * delimiters (memchr on the first byte, then memcmp).
 */
#include "scan.h"

#include <string.h>

int64_t mb_scan_find(const char *buf, size_t n, const char *sub, size_t m)
{
    if (m == 0)
        return 0;
    if (m > n)
        return -1;
    const char *p = buf;
    const char *last = buf + (n - m);     /* last possible match start */
    const char first = sub[0];
    while (p <= last) {
        p = memchr(p, first, (size_t)(last - p) + 1);
        if (p == NULL)
            return -1;
        if (memcmp(p + 1, sub + 1, m - 1) == 0)
            return (int64_t)(p - buf);
        p++;
    }
    return -1;
}

/* Decode a LEB128 prefix at p[0:avail]. Returns its length (1..10), 0 when it is
 * incomplete, or -1 when it is over 10 bytes or 64 bits. */
static int mb_scan_leb128(const unsigned char *p, size_t avail, uint64_t *value)
{
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if ((size_t)i >= avail)
            return 0;
        unsigned b = p[i];
        if (i == 9 && b > 1)                 /* continuation on byte 10, or bits past 63 */
            return -1;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (b < 0x80) {
            *value = v;
            return i + 1;
        }
    }
    return -1;                               /* unreachable: byte 10 returns above */
}

static size_t mb_scan_delim(const unsigned char *p, size_t pos, size_t end,
                            const char *delim, size_t dlen, uint64_t max_frame,
                            uint64_t *offs, size_t cap, uint64_t *state)
{
    size_t k = 0;
    int status = MB_SCAN_END;
    /* The delimiter must end within max_frame + dlen bytes of a frame's start. */
    while (pos < end) {
        if (k == cap) {
            status = MB_SCAN_FULL;
            break;
        }
        size_t span = end - pos;
        size_t window = span;
        int bounded = 0;
        if (max_frame < (uint64_t)SIZE_MAX - dlen && max_frame + dlen <= span) {
            window = (size_t)max_frame + dlen;
            bounded = 1;
        }
        int64_t j = mb_scan_find((const char *)p + pos, window, delim, dlen);
        if (j < 0) {
            if (bounded)
                status = MB_SCAN_MALFORMED;
            break;
        }
        offs[2 * k] = pos;
        offs[2 * k + 1] = pos + (size_t)j;
        k++;
        pos += (size_t)j + dlen;
    }
    state[0] = pos;
    state[1] = (uint64_t)status;
    return k;
}

size_t mb_scan_frames(const char *buf, size_t start, size_t end, int kind,
                      const char *delim, size_t dlen, uint64_t max_frame,
                      uint64_t *offs, size_t cap, uint64_t *state)
{
    const unsigned char *p = (const unsigned char *)buf;
    if (kind == MB_FRAME_DELIM)
        return mb_scan_delim(p, start, end, delim, dlen, max_frame, offs, cap, state);
    if (kind != MB_FRAME_LEB128 && kind != MB_FRAME_BE16 && kind != MB_FRAME_BE24 &&
        kind != MB_FRAME_BE32) {
        state[0] = start;                    /* not a frame kind: report, scan nothing */
        state[1] = MB_SCAN_MALFORMED;
        return 0;
    }

    size_t pos = start, k = 0;
    int status = MB_SCAN_END;
    while (pos < end) {
        if (k == cap) {
            status = MB_SCAN_FULL;
            break;
        }
        size_t avail = end - pos;
        size_t plen;
        uint64_t len;
        if (kind == MB_FRAME_LEB128) {
            int r = mb_scan_leb128(p + pos, avail, &len);
            if (r == 0)
                break;
            if (r < 0) {
                status = MB_SCAN_MALFORMED;
                break;
            }
            plen = (size_t)r;
        } else {
            plen = (size_t)kind;             /* MB_FRAME_BE16/24/32 are the widths */
            if (avail < plen)
                break;
            len = 0;
            for (size_t i = 0; i < plen; i++)
                len = (len << 8) | p[pos + i];
        }
        if (len > max_frame) {
            status = MB_SCAN_MALFORMED;
            break;
        }
        if (len > avail - plen)              /* body not all here yet */
            break;
        offs[2 * k] = pos + plen;
        offs[2 * k + 1] = pos + plen + (size_t)len;
        k++;
        pos += plen + (size_t)len;
    }
    state[0] = pos;
    state[1] = (uint64_t)status;
    return k;
}
