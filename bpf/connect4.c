/* cgroup/connect4: steer an enrolled pod's connect() to a mesh service. */
#include "lib/maps.h"
#include "lib/stats.h"
#include "lib/pods.h"
#include "lib/steer.h"

static __always_inline void trace(struct bpf_sock_addr *ctx, __u64 cookie,
                                  __u64 cgroup_id,
                                  const struct nm_service *svc,
                                  const struct steer *s,
                                  const struct nm_proxy_config *cfg)
{
    if (!(cfg->flags & NM_PROXY_TRACE))
        return;
    struct nm_trace_event ev = {};
    ev.ts_ns = bpf_ktime_get_ns();
    ev.cookie = cookie;
    ev.cgroup_id = cgroup_id;
    ev.orig_ip = ctx->user_ip4;
    ev.orig_port = (__u16)ctx->user_port;
    ev.new_ip = s->target == NM_TARGET_ORIGINAL ? ctx->user_ip4 : s->ip;
    ev.new_port = s->target == NM_TARGET_ORIGINAL ? (__u16)ctx->user_port : s->port;
    ev.service_id = svc->id;
    ev.reason = s->reason;
    ev.pid = bpf_get_current_pid_tgid() >> 32;
    if (trace_events.ringbuf_output(&ev, sizeof(ev), 0) != 0)
        count(NM_R_TRACE_LOST);
}

int connect4(struct bpf_sock_addr *ctx)
{
    struct nm_service_key key = {};
    if (ctx->type != 1 /* SOCK_STREAM: TCP only */)
        return 1;
    key.vip = ctx->user_ip4;
    key.port = (__u16)ctx->user_port;
    struct nm_service *svc = services.lookup(&key);
    if (!svc || (svc->flags & NM_SVC_DISABLED)) {
        count(NM_R_NOT_SERVICE);
        return 1;
    }

    __u64 cgroup_id = 0;
    struct nm_pod *pod = enrolled_pod(&cgroup_id);
    if (!pod) {
        count(NM_R_NOT_ENROLLED);
        return 1;
    }

    __u32 zero = 0;
    struct nm_proxy_config *cfg = proxy.lookup(&zero);
    if (!cfg || cfg->generation == 0) {
        count(NM_R_FAILOPEN_NO_CONFIG);
        return 1;
    }

    struct steer s = {};
    steer(ctx, cfg, svc, pod, &s);
    __u64 cookie = bpf_get_socket_cookie(ctx);

    if (s.target != NM_TARGET_ORIGINAL) {
        struct nm_orig_dst orig = {};
        orig.cgroup_id = cgroup_id;
        orig.ip = ctx->user_ip4;
        orig.port = (__u16)ctx->user_port;
        orig.service_id = svc->id;
        orig.target = s.target;
        if (s.target == NM_TARGET_LOCAL && (svc->flags & NM_SVC_PAIR))
            orig.flags = NM_ORIG_PAIR;
        /* Without the record getpeername and the proxy would be blind:
         * better not to redirect at all. */
        if (orig_dst.insert(&cookie, &orig) != 0) {
            s.target = NM_TARGET_ORIGINAL;
            s.reason = NM_R_FAILOPEN_MAP_FULL;
        } else {
            ctx->user_ip4 = s.ip;
            ctx->user_port = s.port;
        }
    }
    count(s.reason);
    trace(ctx, cookie, cgroup_id, svc, &s, cfg);
    return 1;
}
