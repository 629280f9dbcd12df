/* cgroup/getpeername4: a steered app sees the VIP it dialled as its peer. */
#include "lib/maps.h"
#include "lib/stats.h"

int getpeername4(struct bpf_sock_addr *ctx)
{
    struct bpf_sock *sk = ctx->sk;
    if (!sk)
        return 1;
    struct nm_orig_dst *orig = orig_dst.sk_storage_get(sk, 0, 0);
    if (!orig)
        return 1;
    ctx->user_ip4 = orig->ip;
    ctx->user_port = orig->port;
    count(NM_R_PEERNAME_RESTORED);
    return 1;
}
