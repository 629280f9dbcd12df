/* What connect4 and connect6 share once the service is known: who may be
 * steered, the record of a steered socket, the trace event. */
#ifndef NODEMESH_CONNECT_H
#define NODEMESH_CONNECT_H

#include "maps.h"
#include "stats.h"
#include "pods.h"
#include "steer.h"

/* The proxy settings, if the calling pod is enrolled and they were ever
 * written; NULL (counted) when the connection stays untouched. */
static __always_inline struct nm_proxy_config *admit(__u64 *cgroup_id,
                                                     struct nm_pod **pod)
{
    *pod = enrolled_pod(cgroup_id);
    if (!*pod) {
        count(NM_R_NOT_ENROLLED);
        return NULL;
    }
    __u32 zero = 0;
    struct nm_proxy_config *cfg = proxy.lookup(&zero);
    if (!cfg || cfg->generation == 0) {
        count(NM_R_FAILOPEN_NO_CONFIG);
        return NULL;
    }
    return cfg;
}

static __always_inline void orig_init(struct nm_orig_dst *orig, __u64 cgroup_id,
                                      const struct nm_service *svc,
                                      const struct steer *s)
{
    orig->cgroup_id = cgroup_id;
    orig->service_id = svc->id;
    orig->target = s->target;
    if (s->target == NM_TARGET_LOCAL && !(svc->flags & NM_SVC_NO_PAIR))
        orig->flags |= NM_ORIG_PAIR;
}

/* Store a steered socket's record; 0 when stored. Without it getpeername
 * and the proxy would be blind: better not to redirect at all. */
static __always_inline int remember(__u64 cookie, struct nm_orig_dst *orig,
                                    struct steer *s)
{
    if (orig_dst.insert(&cookie, orig) == 0)
        return 0;
    s->target = NM_TARGET_ORIGINAL;
    s->reason = NM_R_FAILOPEN_MAP_FULL;
    return -1;
}

/* The family-independent part of a trace event. */
static __always_inline void trace_start(struct nm_trace_event *ev, __u64 cookie,
                                        __u64 cgroup_id,
                                        const struct nm_service *svc,
                                        const struct steer *s)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    ev->ts_ns = bpf_ktime_get_ns();
    ev->cookie = cookie;
    ev->cgroup_id = cgroup_id;
    ev->service_id = svc->id;
    ev->reason = s->reason;
    ev->target = s->target;
    ev->pid = pid_tgid >> 32;
    ev->tid = (__u32)pid_tgid;
#ifdef NM_TRACE_COMM
    bpf_get_current_comm(ev->comm, sizeof(ev->comm));
#endif
}

static __always_inline void trace_emit(struct nm_trace_event *ev)
{
    if (trace_events.ringbuf_output(ev, sizeof(*ev), 0) != 0)
        count(NM_R_TRACE_LOST);
}

#endif
