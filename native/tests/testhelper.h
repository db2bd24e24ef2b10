/* What the C tests share: CHECK counts a failed condition and goes on, so one run
 * reports every broken rule; main returns `failures != 0`. */
#ifndef MEMBUF_TESTHELPER_H
#define MEMBUF_TESTHELPER_H

#include <stdio.h>

static int failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

#endif
