/* Tests of the bulk scanners (scan.c), meant to run under ASan + UBSan:
 *   cc -std=c99 -g -O1 -Wall -Wextra -Werror -Inative \
 *      -fsanitize=address,undefined -fno-sanitize-recover=all \
 *      -o native/tests/test_scan native/tests/test_scan.c native/scan.c
 * Every buffer is malloc'd at its exact size, so a read past the end trips ASan. */
#include "scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/testhelper.h"

/* A heap copy of exactly n bytes (no slack for an overrun to hide in). */
static char *dup_exact(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    if (p == NULL)
        abort();
    memcpy(p, s, n);
    return p;
}

static size_t frames(const char *data, size_t n, size_t start, int kind, const char *delim,
                     uint64_t max_frame, size_t cap, uint64_t *offs, uint64_t *state)
{
    char *buf = dup_exact(data, n);
    size_t k = mb_scan_frames(buf, start, n, kind, delim, delim ? strlen(delim) : 0,
                              max_frame, offs, cap, state);
    free(buf);
    return k;
}

static void test_find(void)
{
    char *b = dup_exact("abcabdab", 8);
    CHECK(mb_scan_find(b, 8, "abd", 3) == 3);
    CHECK(mb_scan_find(b, 8, "ab", 2) == 0);
    CHECK(mb_scan_find(b, 8, "dab", 3) == 5);      /* match ends exactly at the end */
    CHECK(mb_scan_find(b, 8, "abx", 3) == -1);
    CHECK(mb_scan_find(b, 8, "", 0) == 0);
    CHECK(mb_scan_find(b, 2, "abc", 3) == -1);     /* needle longer than haystack */
    CHECK(mb_scan_find(b, 0, "a", 1) == -1);
    free(b);
}

static void test_leb128(void)
{
    uint64_t offs[16], st[2];
    /* frames "a", "" and 130 x's: prefixes 01, 00, 82 01 */
    char data[1 + 1 + 1 + 2 + 130];
    size_t n = 0;
    data[n++] = 1; data[n++] = 'a'; data[n++] = 0;
    data[n++] = (char)0x82; data[n++] = 0x01;
    memset(data + n, 'x', 130); n += 130;
    size_t k = frames(data, n, 0, MB_FRAME_LEB128, NULL, 1000, 8, offs, st);
    CHECK(k == 3 && st[0] == n && st[1] == MB_SCAN_END);
    CHECK(offs[0] == 1 && offs[1] == 2 && offs[2] == 3 && offs[3] == 3);
    CHECK(offs[4] == 5 && offs[5] == n);
    /* every truncation stops at the start of the incomplete frame */
    for (size_t cut = 0; cut < n; cut++) {
        k = frames(data, cut, 0, MB_FRAME_LEB128, NULL, 1000, 8, offs, st);
        size_t want = cut < 2 ? 0 : cut < 3 ? 1 : cut < n ? 2 : 3;
        size_t stop = want == 0 ? 0 : want == 1 ? 2 : 3;
        CHECK(k == want && st[0] == stop && st[1] == MB_SCAN_END);
    }
    /* capacity: FULL, resume from stop */
    k = frames(data, n, 0, MB_FRAME_LEB128, NULL, 1000, 1, offs, st);
    CHECK(k == 1 && st[0] == 2 && st[1] == MB_SCAN_FULL);
    k = frames(data, n, 2, MB_FRAME_LEB128, NULL, 1000, 8, offs, st);
    CHECK(k == 2 && st[0] == n);
    /* max_frame */
    k = frames(data, n, 0, MB_FRAME_LEB128, NULL, 129, 8, offs, st);
    CHECK(k == 2 && st[0] == 3 && st[1] == MB_SCAN_MALFORMED);
    /* 2**64 - 1 in ten bytes is fine as a length, but over max_frame */
    char big[10];
    memset(big, 0xff, 9); big[9] = 0x01;
    k = frames(big, 10, 0, MB_FRAME_LEB128, NULL, UINT64_MAX - 1, 8, offs, st);
    CHECK(k == 0 && st[0] == 0 && st[1] == MB_SCAN_MALFORMED);
    k = frames(big, 10, 0, MB_FRAME_LEB128, NULL, UINT64_MAX, 8, offs, st);
    CHECK(k == 0 && st[0] == 0 && st[1] == MB_SCAN_END);   /* body can never be here */
    /* over 64 bits, and 11 bytes */
    big[9] = 0x02;
    k = frames(big, 10, 0, MB_FRAME_LEB128, NULL, UINT64_MAX, 8, offs, st);
    CHECK(k == 0 && st[1] == MB_SCAN_MALFORMED);
    char eleven[11];
    memset(eleven, 0x80, 10); eleven[10] = 0;
    k = frames(eleven, 11, 0, MB_FRAME_LEB128, NULL, UINT64_MAX, 8, offs, st);
    CHECK(k == 0 && st[1] == MB_SCAN_MALFORMED);
    /* nine continuation bytes: still incomplete, not malformed */
    k = frames(eleven, 9, 0, MB_FRAME_LEB128, NULL, UINT64_MAX, 8, offs, st);
    CHECK(k == 0 && st[0] == 0 && st[1] == MB_SCAN_END);
}

static void test_big_endian(void)
{
    uint64_t offs[8], st[2];
    const char be16[] = {0, 2, 'h', 'i', 0, 0, 0, 3, 'a'};
    size_t k = frames(be16, sizeof be16, 0, MB_FRAME_BE16, NULL, 100, 4, offs, st);
    CHECK(k == 2 && st[0] == 6 && st[1] == MB_SCAN_END);
    CHECK(offs[0] == 2 && offs[1] == 4 && offs[2] == 6 && offs[3] == 6);
    const char be24[] = {0, 0, 1, 'z', 0, 1};
    k = frames(be24, sizeof be24, 0, MB_FRAME_BE24, NULL, 100, 4, offs, st);
    CHECK(k == 1 && st[0] == 4 && st[1] == MB_SCAN_END);
    k = frames(be24, sizeof be24, 0, 5, NULL, 100, 4, offs, st);   /* not a frame kind */
    CHECK(k == 0 && st[0] == 0 && st[1] == MB_SCAN_MALFORMED);
    const char be32[] = {0x7f, (char)0xff, (char)0xff, (char)0xff};
    k = frames(be32, sizeof be32, 0, MB_FRAME_BE32, NULL, 1u << 20, 4, offs, st);
    CHECK(k == 0 && st[0] == 0 && st[1] == MB_SCAN_MALFORMED);
    k = frames(be32, sizeof be32, 0, MB_FRAME_BE32, NULL, UINT64_MAX, 4, offs, st);
    CHECK(k == 0 && st[0] == 0 && st[1] == MB_SCAN_END);
}

static void test_delimited(void)
{
    uint64_t offs[8], st[2];
    const char *d = "a\r\n\r\nbcd\r\nef\r";
    size_t n = strlen(d);
    size_t k = frames(d, n, 0, MB_FRAME_DELIM, "\r\n", 10, 8, offs, st);
    CHECK(k == 3 && st[0] == 10 && st[1] == MB_SCAN_END);
    CHECK(offs[0] == 0 && offs[1] == 1 && offs[2] == 3 && offs[3] == 3);
    CHECK(offs[4] == 5 && offs[5] == 8);
    /* "bcd" is 3 bytes: max_frame 2 is malformed once 2 + 2 bytes show no delimiter */
    k = frames(d, n, 0, MB_FRAME_DELIM, "\r\n", 2, 8, offs, st);
    CHECK(k == 2 && st[0] == 5 && st[1] == MB_SCAN_MALFORMED);
    /* ... but "ef\r" could still end in time with max_frame 2 */
    k = frames(d, n, 10, MB_FRAME_DELIM, "\r\n", 2, 8, offs, st);
    CHECK(k == 0 && st[0] == 10 && st[1] == MB_SCAN_END);
    /* a huge max_frame must not overflow the window computation */
    k = frames(d, n, 0, MB_FRAME_DELIM, "\r\n", UINT64_MAX, 8, offs, st);
    CHECK(k == 3 && st[0] == 10);
}

int main(void)
{
    test_find();
    test_leb128();
    test_big_endian();
    test_delimited();
    if (failures) {
        fprintf(stderr, "test_scan: %d failures\n", failures);
        return 1;
    }
    puts("test_scan: all checks passed");
    return 0;
}
