/* The allocator's lock: test-and-test-and-set with a yield after a short spin.
 *
 * Critical sections are a few dozen nanoseconds (a tree walk), and the common
 * case is one trio task per allocator, so the uncontended path is one atomic
 * exchange to take and one release store to give back: cheaper than a
 * pthread mutex. Under contention waiters spin briefly on a plain load, then
 * yield the CPU (an arena mmap can take a while). */
#ifndef MEMBUF_LOCK_H
#define MEMBUF_LOCK_H

#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#define MB_CPU_RELAX() __builtin_ia32_pause()
#else
#define MB_CPU_RELAX() ((void)0)
#endif

typedef struct mb_lock { int held; } mb_lock;

static inline void mb_lock_take(mb_lock *l)
{
    while (__atomic_exchange_n(&l->held, 1, __ATOMIC_ACQUIRE)) {
        for (int spin = 0; __atomic_load_n(&l->held, __ATOMIC_RELAXED); spin++) {
            if (spin < 64)
                MB_CPU_RELAX();
            else
                sched_yield();
        }
    }
}

static inline void mb_lock_give(mb_lock *l) { __atomic_store_n(&l->held, 0, __ATOMIC_RELEASE); }

#endif
