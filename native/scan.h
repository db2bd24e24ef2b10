/* Bulk boundary scanners (frame splitting): filled in by the codecs work. */
#ifndef MEMBUF_SCAN_H
#define MEMBUF_SCAN_H

#include <stddef.h>
#include <stdint.h>

#endif
