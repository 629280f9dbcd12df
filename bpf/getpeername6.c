/* cgroup/getpeername6: a steered IPv6 app sees what it dialled (a VIP, or
 * ::ffff:<VIP> for a dual-stack socket), not the proxy, as its peer. */
#include "lib/maps.h"
#include "lib/stats.h"
#include "lib/addr.h"

int getpeername6(struct bpf_sock_addr *ctx)
{
    __u64 cookie = bpf_get_socket_cookie(ctx);
    struct nm_orig_dst *orig = orig_dst.lookup(&cookie);
    if (!orig)
        return 1;
    if (orig->flags & NM_ORIG_V6) {
        NM_CTX_SET_IP6(ctx->user_ip6, orig->ip6);
    } else {    /* not written by connect6; shown as IPv4-mapped all the same */
        __u32 mapped[4] = {0, 0, bpf_htonl(0xffff), orig->ip};
        NM_CTX_SET_IP6(ctx->user_ip6, mapped);
    }
    ctx->user_port = orig->port;
    count(NM_R_PEERNAME_RESTORED);
    return 1;
}
