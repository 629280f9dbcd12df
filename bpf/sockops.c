/* sockops: on established, hand the original destination to the proxy and
 * pair same-node app <-> proxy sockets for sk_msg; clean up on close.
 *
 * Cost is paid only by steered sockets: connect4/6 cannot mark a socket, so
 * the connect callback looks its cookie up once and, for a steered socket,
 * turns on state callbacks; that flag then tells every later callback
 * "steered" without another lookup. Everything else returns at once.
 *
 * IPv4 sockets, and IPv6 sockets with IPv4-mapped addresses (the kernel
 * fills their IPv4 fields), use the IPv4 maps; other IPv6 sockets the *6
 * maps. The proxy reads a record under the address it sees: a.b.c.d, or
 * ::ffff:a.b.c.d on a dual-stack listener, both in accept_records. */
#include "lib/maps.h"
#include "lib/stats.h"
#include "lib/addr.h"

#define NM_AF_INET 2
#define NM_AF_INET6 10

/* 0 when the socket joined its family's sockhash. */
static __always_inline int pair(struct bpf_sock_ops *skops, int v6)
{
    long rc;
    if (v6) {
        struct nm_sock6_key key6 = {};
        NM_CTX_IP6(key6.local_ip6, skops->local_ip6);
        NM_CTX_IP6(key6.remote_ip6, skops->remote_ip6);
        key6.local_port = skops->local_port;
        key6.remote_port = bpf_ntohl(skops->remote_port);
        /* a statement of its own: bcc's rewrite of this call appends a ';' */
        rc = sock_pairs6.sock_hash_update(skops, &key6, BPF_NOEXIST);
    } else {
        struct nm_sock_key key = {};
        key.local_ip = skops->local_ip4;
        key.remote_ip = skops->remote_ip4;
        key.local_port = skops->local_port;
        key.remote_port = bpf_ntohl(skops->remote_port);
        rc = sock_pairs.sock_hash_update(skops, &key, BPF_NOEXIST);
    }
    count(rc == 0 ? NM_R_SOCKHASH_ADDED : NM_R_SOCKHASH_FAILED);
    return rc == 0 ? 0 : -1;
}

/* Accept record keys: the app's own address, as sockops sees it on the
 * app's socket (own_*) and on the proxy's accepted one (peer_*). */
static __always_inline void own_key(struct bpf_sock_ops *skops, struct nm_addr_key *key)
{
    key->ip = skops->local_ip4;
    key->port = bpf_htons((__u16)skops->local_port);
}

static __always_inline void peer_key(struct bpf_sock_ops *skops, struct nm_addr_key *key)
{
    key->ip = skops->remote_ip4;
    key->port = bpf_htons((__u16)bpf_ntohl(skops->remote_port));
}

static __always_inline void own_key6(struct bpf_sock_ops *skops, struct nm_addr6_key *key)
{
    NM_CTX_IP6(key->ip6, skops->local_ip6);
    key->port = bpf_htons((__u16)skops->local_port);
}

static __always_inline void peer_key6(struct bpf_sock_ops *skops, struct nm_addr6_key *key)
{
    NM_CTX_IP6(key->ip6, skops->remote_ip6);
    key->port = bpf_htons((__u16)bpf_ntohl(skops->remote_port));
}

static __always_inline int steered(struct bpf_sock_ops *skops)
{
    return skops->bpf_sock_ops_cb_flags & BPF_SOCK_OPS_STATE_CB_FLAG;
}

/* The app's side: its connect() was steered. Only a local proxy reads
 * accept records; a remote one learns the service from its port. */
static __always_inline void app_established(struct bpf_sock_ops *skops, int v6)
{
    __u64 cookie = bpf_get_socket_cookie(skops);
    struct nm_orig_dst *orig = orig_dst.lookup(&cookie);
    if (!orig || orig->target != NM_TARGET_LOCAL)
        return;
    struct nm_orig_dst rec = *orig;
    if ((rec.flags & NM_ORIG_PAIR) && pair(skops, v6) != 0)
        rec.flags &= ~NM_ORIG_PAIR;
    rec.server_seq = skops->rcv_nxt;
    long rc;
    if (v6) {
        struct nm_addr6_key client6 = {};
        own_key6(skops, &client6);
        rc = accept_records6.update(&client6, &rec);
    } else {
        struct nm_addr_key client = {};
        own_key(skops, &client);
        rc = accept_records.update(&client, &rec);
    }
    count(rc == 0 ? NM_R_RECORD_ADDED : NM_R_RECORD_FAILED);
}

/* A record that was not written for this connection: the server sequence
 * number the client saw is another socket's (records of older versions
 * carry none). */
static __always_inline int stale(struct bpf_sock_ops *skops, struct nm_orig_dst *rec)
{
    if (rec->server_seq == 0 || rec->server_seq == skops->snd_nxt)
        return 0;
    count(NM_R_RECORD_STALE);
    return 1;
}

/* The proxy's side: an accepted connection on the local proxy port whose
 * client's end was paired (its accept record says so; the client reaches
 * established first, before it sends the handshake's last ACK). */
static __always_inline void proxy_established(struct bpf_sock_ops *skops, int v6)
{
    __u32 zero = 0;
    struct nm_proxy_config *cfg = proxy.lookup(&zero);
    if (!cfg || cfg->local_port == 0)
        return;
    if (skops->local_port != bpf_ntohs(cfg->local_port))
        return;
    struct nm_orig_dst *rec;
    if (v6) {
        __u32 own[4];
        NM_CTX_IP6(own, skops->local_ip6);
        if (!ip6_is_zero(cfg->local_ip6) && !ip6_equal(own, cfg->local_ip6))
            return;
        struct nm_addr6_key client6 = {};
        peer_key6(skops, &client6);
        rec = accept_records6.lookup(&client6);
        if (rec && stale(skops, rec)) {
            accept_records6.delete(&client6);
            return;
        }
    } else {
        if (cfg->local_ip != 0 && skops->local_ip4 != cfg->local_ip)
            return;
        struct nm_addr_key client = {};
        peer_key(skops, &client);
        rec = accept_records.lookup(&client);
        if (rec && stale(skops, rec)) {
            accept_records.delete(&client);
            return;
        }
    }
    if (rec && (rec->flags & NM_ORIG_PAIR))
        pair(skops, v6);
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

/* A steered socket closes: its orig_dst record goes. Its accept record
 * stays for the proxy, which may accept the connection after the client
 * is gone and must still read the bytes it sent. */
static __always_inline void closed(struct bpf_sock_ops *skops)
{
    __u64 cookie = bpf_get_socket_cookie(skops);
    if (orig_dst.delete(&cookie) == 0)
        count(NM_R_CLOSED);
}

/* Pure IPv6, as opposed to IPv4 or IPv4-mapped. The peer decides: a
 * socket's two ends are of one kind. */
static __always_inline int is_v6(struct bpf_sock_ops *skops)
{
    if (skops->family != NM_AF_INET6)
        return 0;
    __u32 peer[4];
    NM_CTX_IP6(peer, skops->remote_ip6);
    return !ip6_is_v4_mapped(peer);
}

int sockops(struct bpf_sock_ops *skops)
{
    __u32 family = skops->family;
    if (family != NM_AF_INET && family != NM_AF_INET6)
        return 1;
    __u32 op = skops->op;
    if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
        watch_if_steered(skops);
    } else if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
        if (steered(skops)) {
            if (is_v6(skops))
                app_established(skops, NM_V6);
            else
                app_established(skops, NM_V4);
        }
    } else if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
        if (is_v6(skops))
            proxy_established(skops, NM_V6);
        else
            proxy_established(skops, NM_V4);
    } else if (op == BPF_SOCK_OPS_STATE_CB && skops->args[1] == BPF_TCP_CLOSE) {
        closed(skops);
    }
    return 1;
}
