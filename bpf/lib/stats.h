/* Counting and tracing: every decision bumps its reason's per-CPU slot. */
#ifndef NODEMESH_STATS_H
#define NODEMESH_STATS_H

#include "maps.h"

static __always_inline void count_n(__u32 reason, __u64 n)
{
    __u64 *slot = counters.lookup(&reason);
    if (slot)
        *slot += n;   /* per-CPU: no atomics needed */
}

static __always_inline void count(__u32 reason)
{
    count_n(reason, 1);
}

#endif
