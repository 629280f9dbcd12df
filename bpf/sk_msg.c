/* sk_msg: a send on one end of a same-node app <-> proxy pair goes straight
 * to the other end's receive queue, skipping TCP/IP. Attached to both
 * sockhashes; a socket's key is in its own family's (IPv4-mapped IPv6
 * sockets are keyed by their IPv4 addresses, as sockops paired them). */
#include "lib/maps.h"
#include "lib/stats.h"
#include "lib/addr.h"

static __always_inline long redirect6(struct sk_msg_md *msg)
{
    struct nm_sock6_key peer6 = {};
    NM_CTX_IP6(peer6.local_ip6, msg->remote_ip6);
    NM_CTX_IP6(peer6.remote_ip6, msg->local_ip6);
    peer6.local_port = bpf_ntohl(msg->remote_port);
    peer6.remote_port = msg->local_port;
    return sock_pairs6.msg_redirect_hash(msg, &peer6, BPF_F_INGRESS);
}

static __always_inline long redirect4(struct sk_msg_md *msg)
{
    struct nm_sock_key peer = {};
    peer.local_ip = msg->remote_ip4;
    peer.remote_ip = msg->local_ip4;
    peer.local_port = bpf_ntohl(msg->remote_port);
    peer.remote_port = msg->local_port;
    return sock_pairs.msg_redirect_hash(msg, &peer, BPF_F_INGRESS);
}

int sk_msg(struct sk_msg_md *msg)
{
    __u32 size = msg->size;
    long verdict;
    if (msg->family == 10 /* AF_INET6 */) {
        __u32 peer[4];
        NM_CTX_IP6(peer, msg->remote_ip6);
        verdict = ip6_is_v4_mapped(peer) ? redirect4(msg) : redirect6(msg);
    } else {
        verdict = redirect4(msg);
    }
    if (verdict == SK_PASS) {
        count(NM_R_MSG_REDIRECTED);
        count_n(NM_R_MSG_REDIRECTED_BYTES, size);
    } else {
        count(NM_R_MSG_PASSED);
    }
    return SK_PASS;
}
