/* The names of the invariants in check.h. */
#include "check.h"

const char *mb_check_name(int code)
{
    switch (code) {
#define MB_INVARIANT_CASE(name, value, text) \
    case value:                              \
        return text;
        MB_INVARIANTS(MB_INVARIANT_CASE)
#undef MB_INVARIANT_CASE
    }
    return "unknown invariant";
}
