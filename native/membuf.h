/* membuf native core: one header per concern, included together here.
 * This is what the cffi extension and the C tests include. */
#ifndef MEMBUF_H
#define MEMBUF_H

#include "alloc.h"
#include "api.h"
#include "check.h"
#include "scan.h"

#endif
