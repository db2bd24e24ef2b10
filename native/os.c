#define _DEFAULT_SOURCE
#include "os.h"

#include <sys/mman.h>
#include <unistd.h>

size_t mb_os_page_size(void)
{
    static size_t page;
    if (!page) {
        long p = sysconf(_SC_PAGESIZE);
        page = p > 0 ? (size_t)p : 4096;
    }
    return page;
}

void *mb_os_map(size_t size, int hugepages)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (hugepages)
        (void)madvise(p, size, MADV_HUGEPAGE);      /* advisory: ignore refusal */
#else
    (void)hugepages;
#endif
    return p;
}

void mb_os_unmap(void *p, size_t size)
{
    if (p)
        (void)munmap(p, size);
}
