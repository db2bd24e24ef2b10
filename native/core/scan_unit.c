/* native/scan.c compiled into membuf._core as well.
 *
 * Its functions are pure (no state, no allocation, no lock), so the compiled Reader
 * and framers call their own copy directly rather than going through the allocator's
 * entry table (api.h): a Reader works without any allocator, and the search stays a
 * direct call. Including the file here (instead of listing it in two build recipes)
 * keeps setup.py's native/core glob and the ASan build (native/build_asan.py) right.
 * The symbols are hidden, so they never clash with membuf._native's copy (the headers
 * come first, so that only scan.c's own definitions fall under the pragma). */
#include <stdint.h>
#include <string.h>

#include "scan.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif
#include "scan.c"
#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
