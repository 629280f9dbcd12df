/*
 * Every map of the datapath, pinned under NM_PIN_DIR so that they outlive
 * the agent and a restarted agent adopts them. Each names its writer and
 * readers. Layouts are in layout.h.
 */
#ifndef NODEMESH_MAPS_H
#define NODEMESH_MAPS_H

#include "config.h"
#include "layout.h"

/* bcc's BPF_RINGBUF_OUTPUT and BPF_SOCKHASH, pinned: bcc's pinned-table
 * macro lacks the methods (ringbuf_output, sock_hash_update...) that its
 * rewriter turns into helper calls with the map's fd. */
#define NM_RINGBUF_PINNED(_name, _bytes, _path)                      \
    struct _name##_table_t {                                         \
        int key;                                                     \
        u32 leaf;                                                    \
        int (*ringbuf_output)(void *, u64, u64);                     \
        u32 max_entries;                                             \
    };                                                               \
    __attribute__((section("maps/ringbuf:" _path)))                  \
    struct _name##_table_t _name = { .max_entries = (_bytes) }

#define NM_SOCKHASH_PINNED(_name, _key_type, _max, _path)             \
    struct _name##_table_t {                                         \
        _key_type key;                                               \
        int leaf;                                                    \
        int (*update)(_key_type *, int *);                           \
        int (*delete)(_key_type *);                                  \
        int (*sock_hash_update)(void *, void *, u64);                \
        int (*msg_redirect_hash)(void *, void *, u64);               \
        u32 max_entries;                                             \
    };                                                               \
    __attribute__((section("maps/sockhash:" _path)))                 \
    struct _name##_table_t _name = { .max_entries = (_max) };        \
    BPF_ANNOTATE_KV_PAIR(_name, _key_type, int)

/* services: mesh VIP:port -> service.
 * Writer: agent (from the config snapshot) or `nodemesh service add`.
 * Readers: connect4, connect6 (IPv4-mapped destinations); CLI `services`. */
BPF_TABLE_PINNED("hash", struct nm_service_key, struct nm_service, services,
                 NM_MAX_SERVICES, NM_PIN_DIR "/services");

/* services6: mesh [VIP]:port -> service, for IPv6 VIPs.
 * Writer: as services. Readers: connect6; CLI `services`. */
BPF_TABLE_PINNED("hash", struct nm_service6_key, struct nm_service, services6,
                 NM_MAX_SERVICES, NM_PIN_DIR "/services6");

/* proxy: key 0 -> local/remote proxy addresses, mode, spill share.
 * Writer: agent failover controller or `nodemesh datapath set`.
 * Readers: connect4, connect6, sockops; CLI `status`, `failover status`. */
BPF_TABLE_PINNED("array", __u32, struct nm_proxy_config, proxy, 1,
                 NM_PIN_DIR "/proxy");

/* enrolled: cgroup v2 id of a pod -> pod settings.
 * Writer: agent k8s enrollment or `nodemesh enroll`.
 * Readers: connect4; CLI `pods`, `explain`. */
BPF_TABLE_PINNED("hash", __u64, struct nm_pod, enrolled, NM_MAX_PODS,
                 NM_PIN_DIR "/enrolled");

/* orig_dst: socket cookie -> original destination of a redirected socket.
 * Writers: connect4, connect6 (insert), sockops (delete on close).
 * Readers: sockops, getpeername4, getpeername6; CLI `conns`. Full -> fail open. */
BPF_TABLE_PINNED("hash", __u64, struct nm_orig_dst, orig_dst, NM_MAX_CONNS,
                 NM_PIN_DIR "/orig_dst");

/* accept_records: client (address, port) -> original destination + cgroup.
 * Writer: sockops on the client's established. Deleter: the proxy, which
 * reads it on accept. Not deleted when the client closes: a client that
 * sends and closes before the proxy accepts still has its record read.
 * A record is never read by another connection: it carries the server's
 * sequence number, and sockops deletes it when the proxy's end of a later
 * connection from that address is established with another one. LRU, so
 * records no proxy end ever reached (a handshake that failed half way)
 * make room for new ones. */
BPF_TABLE_PINNED("lru_hash", struct nm_addr_key, struct nm_orig_dst,
                 accept_records, NM_MAX_CONNS, NM_PIN_DIR "/accept_records");

/* accept_records6: the same for IPv6 clients (IPv4-mapped ones are in
 * accept_records, as the proxy sees them: a.b.c.d or ::ffff:a.b.c.d). */
BPF_TABLE_PINNED("lru_hash", struct nm_addr6_key, struct nm_orig_dst,
                 accept_records6, NM_MAX_CONNS, NM_PIN_DIR "/accept_records6");

/* sock_pairs: both ends of same-node app <-> local proxy connections.
 * Writer: sockops. Reader: sk_msg (redirect); CLI `conns`. */
NM_SOCKHASH_PINNED(sock_pairs, struct nm_sock_key, NM_MAX_CONNS,
                   NM_PIN_DIR "/sock_pairs");

/* sock_pairs6: the same for IPv6 sockets; sk_msg is attached to both. */
NM_SOCKHASH_PINNED(sock_pairs6, struct nm_sock6_key, NM_MAX_CONNS,
                   NM_PIN_DIR "/sock_pairs6");

/* counters: per-CPU, indexed by enum nm_reason.
 * Writers: every program. Readers: CLI `stats`, agent metrics. */
BPF_TABLE_PINNED("percpu_array", __u32, __u64, counters, NM_R_MAX,
                 NM_PIN_DIR "/counters");

/* trace_events: connect decisions, when the proxy map's NM_PROXY_TRACE is on.
 * Writers: connect4, connect6. Reader: agent/bpf/trace.py (CLI `trace`). */
NM_RINGBUF_PINNED(trace_events, NM_TRACE_BYTES, NM_PIN_DIR "/trace_events");

#endif
