/* sk_msg: a send on one end of a same-node app <-> proxy pair goes straight
 * to the other end's receive queue, skipping TCP/IP. */
#include "lib/maps.h"
#include "lib/stats.h"

int sk_msg(struct sk_msg_md *msg)
{
    struct nm_sock_key peer = {};
    peer.local_ip = msg->remote_ip4;
    peer.remote_ip = msg->local_ip4;
    peer.local_port = bpf_ntohl(msg->remote_port);
    peer.remote_port = msg->local_port;
    __u32 size = msg->size;
    long verdict = sock_pairs.msg_redirect_hash(msg, &peer, BPF_F_INGRESS);
    if (verdict == SK_PASS) {
        count(NM_R_MSG_REDIRECTED);
        count_n(NM_R_MSG_REDIRECTED_BYTES, size);
    } else {
        count(NM_R_MSG_PASSED);
    }
    return SK_PASS;
}
