/* cgroup/getpeername4: a steered app sees the VIP it dialled as its peer. */
#include "lib/maps.h"
#include "lib/stats.h"

int getpeername4(struct bpf_sock_addr *ctx)
{
    __u64 cookie = bpf_get_socket_cookie(ctx);
    struct nm_orig_dst *orig = orig_dst.lookup(&cookie);
    if (!orig)
        return 1;
    ctx->user_ip4 = orig->ip;
    ctx->user_port = orig->port;
    count(NM_R_PEERNAME_RESTORED);
    return 1;
}
