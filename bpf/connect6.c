/* cgroup/connect6: the IPv6 twin of connect4. An IPv6 socket dialling an
 * IPv4-mapped address (::ffff:a.b.c.d, as dual-stack runtimes such as Java
 * do) is an IPv4 connection: its VIP is in services, and it goes to the
 * IPv4 proxy written ::ffff:<proxy>. */
#include "lib/connect.h"

static __always_inline struct nm_service *lookup6(const __u32 *dst, __u16 port)
{
    if (ip6_is_v4_mapped(dst)) {
        struct nm_service_key key = {};
        key.vip = dst[3];
        key.port = port;
        return services.lookup(&key);
    }
    struct nm_service6_key key6 = {};
    NM_COPY_IP6(key6.vip6, dst);
    key6.port = port;
    return services6.lookup(&key6);
}

/* The chosen proxy's address as this socket dials it. */
static __always_inline void target_ip6(const struct nm_proxy_config *cfg,
                                       const struct steer *s, int mapped, __u32 *out)
{
    int local = s->target == NM_TARGET_LOCAL;
    if (mapped) {
        out[0] = 0;
        out[1] = 0;
        out[2] = bpf_htonl(0xffff);
        out[3] = local ? cfg->local_ip : cfg->remote_ip;
        return;
    }
    if (local)
        NM_COPY_IP6(out, cfg->local_ip6);
    else
        NM_COPY_IP6(out, cfg->remote_ip6);
}

static __always_inline void trace6(__u64 cookie, __u64 cgroup_id, const struct nm_service *svc,
                                   const struct steer *s, const __u32 *dst,
                                   __u16 dport, const __u32 *ip, __u16 port)
{
    struct nm_trace_event ev = {};
    trace_start(&ev, cookie, cgroup_id, svc, s);
    ev.family = 10 /* AF_INET6 */;
    ev.orig_port = dport;
    ev.new_port = port;
    NM_COPY_IP6(ev.orig_ip6, dst);
    NM_COPY_IP6(ev.new_ip6, ip);
    trace_emit(&ev);
}

int connect6(struct bpf_sock_addr *ctx)
{
    if (ctx->type != 1 /* SOCK_STREAM: TCP only */)
        return 1;
    __u32 dst[4];
    NM_CTX_IP6(dst, ctx->user_ip6);
    __u16 dport = (__u16)ctx->user_port;
    struct nm_service *svc = lookup6(dst, dport);
    if (!svc || (svc->flags & NM_SVC_DISABLED)) {
        count(NM_R_NOT_SERVICE);
        return 1;
    }
    __u64 cgroup_id = 0;
    struct nm_pod *pod = NULL;
    struct nm_proxy_config *cfg = admit(&cgroup_id, &pod);
    if (!cfg)
        return 1;

    int mapped = ip6_is_v4_mapped(dst);
    struct steer s = {};
    if (mapped)
        steer(ctx, cfg, svc, pod, &s, NM_V4);
    else
        steer(ctx, cfg, svc, pod, &s, NM_V6);
    __u64 cookie = bpf_get_socket_cookie(ctx);
    __u32 ip[4] = {dst[0], dst[1], dst[2], dst[3]};
    __u16 port = dport;
    if (s.target != NM_TARGET_ORIGINAL) {
        struct nm_orig_dst orig = {};
        orig_init(&orig, cgroup_id, svc, &s);
        orig.flags |= NM_ORIG_V6;
        orig.ip = mapped ? dst[3] : 0;
        orig.port = dport;
        NM_COPY_IP6(orig.ip6, dst);
        if (remember(cookie, &orig, &s) == 0) {
            target_ip6(cfg, &s, mapped, ip);
            port = target_port(cfg, svc, &s);
            NM_CTX_SET_IP6(ctx->user_ip6, ip);
            ctx->user_port = port;
        }
    }
    count(s.reason);
    if (cfg->flags & NM_PROXY_TRACE)
        trace6(cookie, cgroup_id, svc, &s, dst, dport, ip, port);
    return 1;
}
