/* cgroup/connect4: steer an enrolled pod's connect() to a mesh service. */
#include "lib/connect.h"

int connect4(struct bpf_sock_addr *ctx)
{
    if (ctx->type != 1 /* SOCK_STREAM: TCP only */)
        return 1;
    struct nm_service_key key = {};
    key.vip = ctx->user_ip4;
    key.port = (__u16)ctx->user_port;
    struct nm_service *svc = services.lookup(&key);
    if (!svc || (svc->flags & NM_SVC_DISABLED)) {
        count(NM_R_NOT_SERVICE);
        return 1;
    }
    __u64 cgroup_id = 0;
    struct nm_pod *pod = NULL;
    struct nm_proxy_config *cfg = admit(&cgroup_id, &pod);
    if (!cfg)
        return 1;

    struct steer s = {};
    steer(ctx, cfg, svc, pod, &s, NM_V4);
    __u64 cookie = bpf_get_socket_cookie(ctx);
    __u32 ip = key.vip;
    __u16 port = key.port;
    if (s.target != NM_TARGET_ORIGINAL) {
        struct nm_orig_dst orig = {};
        orig_init(&orig, cgroup_id, svc, &s);
        orig.ip = key.vip;
        orig.port = key.port;
        if (remember(cookie, &orig, &s) == 0) {
            ip = s.target == NM_TARGET_LOCAL ? cfg->local_ip : cfg->remote_ip;
            port = target_port(cfg, svc, &s);
            ctx->user_ip4 = ip;
            ctx->user_port = port;
        }
    }
    count(s.reason);
    if (cfg->flags & NM_PROXY_TRACE) {
        struct nm_trace_event ev = {};
        trace_start(&ev, cookie, cgroup_id, svc, &s);
        ev.family = 2 /* AF_INET */;
        ev.orig_ip = key.vip;
        ev.orig_port = key.port;
        ev.new_ip = ip;
        ev.new_port = port;
        trace_emit(&ev);
    }
    return 1;
}
