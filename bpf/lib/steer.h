/*
 * The connect-time decision, in the order of DESIGN.md: local proxy if it
 * listens and the connection is not in the spill share; else the remote
 * pool at the service's remote port; else the original destination.
 */
#ifndef NODEMESH_STEER_H
#define NODEMESH_STEER_H

#include "maps.h"

#ifndef BPF_F_CURRENT_NETNS
#define BPF_F_CURRENT_NETNS (-1L)
#endif

struct steer {
    __u32 ip;        /* network order */
    __u16 port;      /* network order */
    __u8 target;     /* nm_target */
    __u32 reason;    /* nm_reason */
};

/* A listening socket at the local proxy address, seen from the pod's netns. */
static __always_inline int local_proxy_listens(struct bpf_sock_addr *ctx,
                                               const struct nm_proxy_config *cfg,
                                               const struct nm_pod *pod)
{
    struct bpf_sock_tuple tuple = {};
    tuple.ipv4.daddr = cfg->local_ip;
    tuple.ipv4.dport = cfg->local_port;
    __u64 netns = pod->proxy_netns < 0 ? (__u64)BPF_F_CURRENT_NETNS
                                       : (__u64)pod->proxy_netns;
    struct bpf_sock *sk = bpf_sk_lookup_tcp(ctx, &tuple, sizeof(tuple.ipv4),
                                            netns, 0);
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
                                      __u32 reason)
{
    if (cfg->remote_ip == 0 || svc->remote_port == 0) {
        s->reason = NM_R_FAILOPEN_NO_REMOTE;
        return;
    }
    s->ip = cfg->remote_ip;
    s->port = bpf_htons(svc->remote_port);
    s->target = NM_TARGET_REMOTE;
    s->reason = reason;
}

static __always_inline void steer(struct bpf_sock_addr *ctx,
                                  const struct nm_proxy_config *cfg,
                                  const struct nm_service *svc,
                                  const struct nm_pod *pod, struct steer *s)
{
    s->target = NM_TARGET_ORIGINAL;
    /* if/else, not switch: a jump table would be an indirect jump */
    if (cfg->mode == NM_MODE_LOCAL) {
        if (cfg->local_ip == 0 || cfg->local_port == 0)
            to_remote(s, cfg, svc, NM_R_REMOTE_NO_LISTENER);
        else if (!local_proxy_listens(ctx, cfg, pod))
            to_remote(s, cfg, svc, NM_R_REMOTE_NO_LISTENER);
        else if (in_spill_share(cfg, pod))
            to_remote(s, cfg, svc, NM_R_REMOTE_SPILL);
        else {
            s->ip = cfg->local_ip;
            s->port = cfg->local_port;
            s->target = NM_TARGET_LOCAL;
            s->reason = NM_R_LOCAL;
        }
    } else if (cfg->mode == NM_MODE_REMOTE) {
        to_remote(s, cfg, svc, NM_R_REMOTE_MODE);
    } else if (cfg->mode == NM_MODE_BYPASS) {
        s->reason = NM_R_BYPASS_MODE;
    } else {
        s->reason = NM_R_FAILOPEN_BAD_CONFIG;
    }
}

#endif
