/* sockops: on established, hand the original destination to the proxy and
 * pair same-node app <-> proxy sockets for sk_msg; clean up on close.
 *
 * Cost is paid only by steered sockets: connect4 cannot mark a socket, so
 * the connect callback looks its cookie up once and, for a steered socket,
 * turns on state callbacks; that flag then tells every later callback
 * "steered" without another lookup. Everything else returns at once. */
#include "lib/maps.h"
#include "lib/stats.h"

static __always_inline void sock_key(struct bpf_sock_ops *skops,
                                     struct nm_sock_key *key)
{
    key->local_ip = skops->local_ip4;
    key->remote_ip = skops->remote_ip4;
    key->local_port = skops->local_port;
    key->remote_port = bpf_ntohl(skops->remote_port);
}

/* 0 when the socket joined sock_pairs. */
static __always_inline int pair(struct bpf_sock_ops *skops)
{
    struct nm_sock_key key = {};
    sock_key(skops, &key);
    /* a statement of its own: bcc's rewrite of this call appends a ';' */
    long rc = sock_pairs.sock_hash_update(skops, &key, BPF_NOEXIST);
    count(rc == 0 ? NM_R_SOCKHASH_ADDED : NM_R_SOCKHASH_FAILED);
    return rc == 0 ? 0 : -1;
}

static __always_inline int steered(struct bpf_sock_ops *skops)
{
    return skops->bpf_sock_ops_cb_flags & BPF_SOCK_OPS_STATE_CB_FLAG;
}

/* The app's side: its connect() was steered by connect4. Only a local
 * proxy reads accept records; a remote one learns the service from its port. */
static __always_inline void app_established(struct bpf_sock_ops *skops)
{
    __u64 cookie = bpf_get_socket_cookie(skops);
    struct nm_orig_dst *orig = orig_dst.lookup(&cookie);
    if (!orig || orig->target != NM_TARGET_LOCAL)
        return;
    struct nm_orig_dst rec = *orig;
    if ((rec.flags & NM_ORIG_PAIR) && pair(skops) != 0)
        rec.flags &= ~NM_ORIG_PAIR;
    struct nm_addr_key client = {};
    client.ip = skops->local_ip4;
    client.port = bpf_htons((__u16)skops->local_port);
    if (accept_records.update(&client, &rec) == 0)
        count(NM_R_RECORD_ADDED);
    else
        count(NM_R_RECORD_FAILED);
}

/* The proxy's side: an accepted connection on the local proxy port whose
 * client's end was paired (its accept record says so; the client reaches
 * established first, before it sends the handshake's last ACK). */
static __always_inline void proxy_established(struct bpf_sock_ops *skops)
{
    __u32 zero = 0;
    struct nm_proxy_config *cfg = proxy.lookup(&zero);
    if (!cfg || cfg->local_port == 0)
        return;
    if (skops->local_port != bpf_ntohs(cfg->local_port))
        return;
    if (cfg->local_ip != 0 && skops->local_ip4 != cfg->local_ip)
        return;
    struct nm_addr_key client = {};
    client.ip = skops->remote_ip4;
    client.port = bpf_htons((__u16)bpf_ntohl(skops->remote_port));
    struct nm_orig_dst *rec = accept_records.lookup(&client);
    if (rec && (rec->flags & NM_ORIG_PAIR))
        pair(skops);
}

/* Ask for state changes of steered sockets: close cleans up even when the
 * connection never got established, and the flag marks the socket. */
static __always_inline void watch_if_steered(struct bpf_sock_ops *skops)
{
    __u64 cookie = bpf_get_socket_cookie(skops);
    if (orig_dst.lookup(&cookie))
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
                                             BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* A steered socket closes: its records go (the accept record may already
 * be gone: the proxy deletes it on accept). */
static __always_inline void closed(struct bpf_sock_ops *skops)
{
    __u64 cookie = bpf_get_socket_cookie(skops);
    if (orig_dst.delete(&cookie) == 0)
        count(NM_R_CLOSED);
    struct nm_addr_key client = {};
    client.ip = skops->local_ip4;
    client.port = bpf_htons((__u16)skops->local_port);
    accept_records.delete(&client);
}

int sockops(struct bpf_sock_ops *skops)
{
    if (skops->family != 2 /* AF_INET */)
        return 1;
    __u32 op = skops->op;
    if (op == BPF_SOCK_OPS_TCP_CONNECT_CB)
        watch_if_steered(skops);
    else if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && steered(skops))
        app_established(skops);
    else if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
        proxy_established(skops);
    else if (op == BPF_SOCK_OPS_STATE_CB && skops->args[1] == BPF_TCP_CLOSE)
        closed(skops);
    return 1;
}
