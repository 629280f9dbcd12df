/*
 * The connect-time decision, in the order of DESIGN.md: local proxy if it
 * listens and the connection is not in the spill share; else the remote
 * pool at the service's remote port; else the original destination.
 *
 * One decision for both families: `v6` says which proxy addresses the
 * connection uses (NM_V6 for an IPv6 service; NM_V4 for IPv4 ones, also
 * when an IPv6 socket dials ::ffff:a.b.c.d). Call sites pass a constant, so
 * each inlined copy keeps only its own family's code.
 */
#ifndef NODEMESH_STEER_H
#define NODEMESH_STEER_H

#include "maps.h"
#include "addr.h"

#ifndef BPF_F_CURRENT_NETNS
#define BPF_F_CURRENT_NETNS (-1L)
#endif

struct steer {
    __u8 target;     /* nm_target */
    __u32 reason;    /* nm_reason */
};

static __always_inline int local_configured(const struct nm_proxy_config *cfg, int v6)
{
    if (cfg->local_port == 0)
        return 0;
    return v6 ? !ip6_is_zero(cfg->local_ip6) : cfg->local_ip != 0;
}

static __always_inline int remote_configured(const struct nm_proxy_config *cfg,
                                             const struct nm_service *svc, int v6)
{
    if (svc->remote_port == 0)
        return 0;
    return v6 ? !ip6_is_zero(cfg->remote_ip6) : cfg->remote_ip != 0;
}

/* A listening socket at the local proxy address, seen from the pod's netns. */
static __always_inline int local_proxy_listens(struct bpf_sock_addr *ctx,
                                               const struct nm_proxy_config *cfg,
                                               const struct nm_pod *pod, int v6)
{
    struct bpf_sock_tuple tuple = {};
    __u32 size;
    if (v6) {
        NM_COPY_IP6(tuple.ipv6.daddr, cfg->local_ip6);
        tuple.ipv6.dport = cfg->local_port;
        size = sizeof(tuple.ipv6);
    } else {
        tuple.ipv4.daddr = cfg->local_ip;
        tuple.ipv4.dport = cfg->local_port;
        size = sizeof(tuple.ipv4);
    }
    __u64 netns = pod->proxy_netns < 0 ? (__u64)BPF_F_CURRENT_NETNS
                                       : (__u64)pod->proxy_netns;
    struct bpf_sock *sk = bpf_sk_lookup_tcp(ctx, &tuple, size, netns, 0);
    if (!sk)
        return 0;
    bpf_sk_release(sk);
    return 1;
}

static __always_inline int in_spill_share(const struct nm_proxy_config *cfg,
                                          const struct nm_pod *pod)
{
    __u32 spill = pod->spill != NM_SPILL_UNSET ? pod->spill : cfg->spill;
    if (spill == 0)
        return 0;
    return bpf_get_prandom_u32() % NM_SPILL_SCALE < spill;
}

static __always_inline void to_remote(struct steer *s,
                                      const struct nm_proxy_config *cfg,
                                      const struct nm_service *svc,
                                      __u32 reason, int v6)
{
    if (!remote_configured(cfg, svc, v6)) {
        s->reason = NM_R_FAILOPEN_NO_REMOTE;
        return;
    }
    s->target = NM_TARGET_REMOTE;
    s->reason = reason;
}

static __always_inline void steer(struct bpf_sock_addr *ctx,
                                  const struct nm_proxy_config *cfg,
                                  const struct nm_service *svc,
                                  const struct nm_pod *pod, struct steer *s,
                                  int v6)
{
    s->target = NM_TARGET_ORIGINAL;
    /* if/else, not switch: a jump table would be an indirect jump */
    if (cfg->mode == NM_MODE_LOCAL) {
        if (!local_configured(cfg, v6))
            to_remote(s, cfg, svc, NM_R_REMOTE_NO_LISTENER, v6);
        else if (!local_proxy_listens(ctx, cfg, pod, v6))
            to_remote(s, cfg, svc, NM_R_REMOTE_NO_LISTENER, v6);
        else if (in_spill_share(cfg, pod))
            to_remote(s, cfg, svc, NM_R_REMOTE_SPILL, v6);
        else {
            s->target = NM_TARGET_LOCAL;
            s->reason = NM_R_LOCAL;
        }
    } else if (cfg->mode == NM_MODE_REMOTE) {
        to_remote(s, cfg, svc, NM_R_REMOTE_MODE, v6);
    } else if (cfg->mode == NM_MODE_BYPASS) {
        s->reason = NM_R_BYPASS_MODE;
    } else {
        s->reason = NM_R_FAILOPEN_BAD_CONFIG;
    }
}

/* The port the chosen target listens on, network order. */
static __always_inline __u16 target_port(const struct nm_proxy_config *cfg,
                                         const struct nm_service *svc,
                                         const struct steer *s)
{
    return s->target == NM_TARGET_LOCAL ? cfg->local_port : bpf_htons(svc->remote_port);
}

#endif
