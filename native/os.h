/* The only place membuf talks to the OS for memory: anonymous private mmap. */
#ifndef MEMBUF_OS_H
#define MEMBUF_OS_H

#include <stddef.h>

size_t mb_os_page_size(void);
/* Map size bytes (a multiple of the page size), zeroed; NULL on failure.
 * hugepages asks for transparent huge pages and silently does without. */
void *mb_os_map(size_t size, int hugepages);
void mb_os_unmap(void *p, size_t size);

#endif
