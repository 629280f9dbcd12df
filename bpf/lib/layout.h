/*
 * Layouts shared by the BPF programs and the agent: map keys and values,
 * the reasons counted, the trace event. Python (agent/bpf/layout.py) parses
 * the part between the cdef markers with cffi, so the two sides cannot drift.
 *
 * Byte order: addresses and ports are in network order wherever the kernel
 * hands them over that way (sock_addr ctx, sockops remote side); the comment
 * on each field says which.
 *
 * Codes are append-only: the agent, the CLI and dashboards key on them.
 * Values grow only at their end: a datapath loaded over maps pinned by an
 * older version re-creates the maps whose layout changed and copies their
 * entries, zero-filling the new fields (agent/bpf/upgrade.py). A key never
 * changes: a new key is a new map.
 */
#ifndef NODEMESH_LAYOUT_H
#define NODEMESH_LAYOUT_H

/* cdef-begin */

/* The proxy map's mode: where connections to mesh services go. */
enum nm_mode {
    NM_MODE_LOCAL = 0,    /* the node's proxy, if it listens; else remote */
    NM_MODE_REMOTE = 1,   /* the remote proxy pool */
    NM_MODE_BYPASS = 2    /* original destination (kube-proxy routes it) */
};

/* Where a connection was sent (nm_orig_dst.target). */
enum nm_target {
    NM_TARGET_ORIGINAL = 0,
    NM_TARGET_LOCAL = 1,
    NM_TARGET_REMOTE = 2
};

/* Per-CPU counters, one slot per reason, both families (connect6 and
 * getpeername6 count as their IPv4 twins do). Never renumber. */
enum nm_reason {
    NM_R_NOT_SERVICE = 0,          /* connect4: not a mesh VIP:port, untouched */
    NM_R_NOT_ENROLLED = 1,         /* connect4: mesh service, pod not enrolled */
    NM_R_LOCAL = 2,                /* connect4: sent to the local proxy */
    NM_R_REMOTE_MODE = 3,          /* connect4: mode remote */
    NM_R_REMOTE_NO_LISTENER = 4,   /* connect4: local proxy not listening */
    NM_R_REMOTE_SPILL = 5,         /* connect4: in the spill share */
    NM_R_BYPASS_MODE = 6,          /* connect4: mode bypass, original dst */
    NM_R_FAILOPEN_NO_REMOTE = 7,   /* connect4: remote wanted, none configured */
    NM_R_FAILOPEN_NO_CONFIG = 8,   /* connect4: proxy map never written */
    NM_R_FAILOPEN_MAP_FULL = 9,    /* connect4: orig_dst full, not redirected */
    NM_R_FAILOPEN_BAD_CONFIG = 10, /* connect4: unknown mode or bad addresses */
    NM_R_RECORD_ADDED = 11,        /* sockops: accept record for the proxy */
    NM_R_RECORD_FAILED = 12,       /* sockops: accept record not stored */
    NM_R_SOCKHASH_ADDED = 13,      /* sockops: socket joined sock_pairs */
    NM_R_SOCKHASH_FAILED = 14,     /* sockops: sock_pairs full or refused */
    NM_R_MSG_REDIRECTED = 15,      /* sk_msg: messages sent to the peer socket */
    NM_R_MSG_PASSED = 16,          /* sk_msg: messages left to the stack */
    NM_R_MSG_REDIRECTED_BYTES = 17,/* sk_msg: bytes of redirected messages */
    NM_R_PEERNAME_RESTORED = 18,   /* getpeername4: VIP shown to the app */
    NM_R_TRACE_LOST = 19,          /* ring buffer full, event dropped */
    NM_R_CLOSED = 20,              /* sockops: redirected socket closed */
    NM_R_RECORD_STALE = 21,        /* sockops: a leftover accept record of an
                                    * earlier connection from the same
                                    * address, deleted unread */
    NM_R_MAX = 32
};

/* services: key. A mesh service's virtual address. */
struct nm_service_key {
    __u32 vip;          /* network order */
    __u16 port;         /* network order */
    __u16 pad;
};

/* services6: key. An IPv6 mesh service's virtual address. IPv4-mapped
 * destinations (::ffff:a.b.c.d) of IPv6 sockets are looked up in services. */
struct nm_service6_key {
    __u32 vip6[4];      /* network order */
    __u16 port;         /* network order */
    __u16 pad;
};

/* services, services6: value. */
struct nm_service {
    __u32 id;           /* service id, also in accept records and traces */
    __u16 remote_port;  /* host order: the remote pool's port for it; 0 = none */
    __u8 protocol;      /* nm_protocol of native/codec.h, informational */
    __u8 flags;         /* NM_SVC_* */
};

/* proxy: the single entry (key 0) of the proxy settings. */
struct nm_proxy_config {
    __u32 local_ip;     /* network order; 0 = no local proxy */
    __u32 remote_ip;    /* network order; 0 = no remote pool */
    __u16 local_port;   /* network order */
    __u16 spill;        /* per 10,000 new connections sent remote in local mode */
    __u8 mode;          /* nm_mode */
    __u8 flags;         /* NM_PROXY_* */
    __u16 pad;
    __u32 generation;   /* bumped by every write, for `status` */
    /* IPv6 services go to these (the same local_port); IPv4 and IPv4-mapped
     * destinations to the IPv4 ones above, written ::ffff:a.b.c.d for an
     * IPv6 socket. A v6-only socket cannot reach an IPv4 proxy, so IPv6
     * services never fall back to it. */
    __u32 local_ip6[4]; /* network order; :: = no IPv6 local proxy */
    __u32 remote_ip6[4];/* network order; :: = no IPv6 remote pool */
};

/* enrolled: value, keyed by cgroup v2 id (__u64). */
struct nm_pod {
    __u32 pod_index;    /* the agent's index, for per-pod views */
    __s32 proxy_netns;  /* netns id of the proxy as seen from the pod; -1 = same */
    __u16 spill;        /* per-pod spill override; 0xffff = use the proxy's */
    __u16 flags;
};

/* orig_dst (by socket cookie), accept_records and accept_records6 (by
 * client address). */
struct nm_orig_dst {
    __u64 cgroup_id;    /* the client's cgroup */
    __u32 ip;           /* original IPv4 destination (also of an IPv6 socket
                         * that dialled ::ffff:a.b.c.d), network order */
    __u32 service_id;
    __u16 port;         /* network order */
    __u8 target;        /* nm_target */
    __u8 flags;         /* NM_ORIG_* */
    __u32 pad2;
    __u32 ip6[4];       /* NM_ORIG_V6: what the IPv6 socket dialled */
    __u32 server_seq;   /* accept records: the proxy end's initial sequence
                         * number + 1, as the client saw it; 0 = written by
                         * a version without this field */
    __u32 pad3;
};

/* accept_records: key. The client's address as the proxy sees it on accept. */
struct nm_addr_key {
    __u32 ip;           /* network order */
    __u16 port;         /* network order */
    __u16 pad;
};

/* accept_records6: key. An IPv6 client (IPv4-mapped ones use nm_addr_key). */
struct nm_addr6_key {
    __u32 ip6[4];       /* network order */
    __u16 port;         /* network order */
    __u16 pad;
};

/* sock_pairs: key. Both ends of a same-node app <-> proxy connection
 * (IPv4, and IPv6 sockets with IPv4-mapped addresses). */
struct nm_sock_key {
    __u32 local_ip;     /* network order */
    __u32 remote_ip;    /* network order */
    __u32 local_port;   /* host order */
    __u32 remote_port;  /* host order */
};

/* sock_pairs6: key. The same for IPv6 sockets. */
struct nm_sock6_key {
    __u32 local_ip6[4]; /* network order */
    __u32 remote_ip6[4];/* network order */
    __u32 local_port;   /* host order */
    __u32 remote_port;  /* host order */
};

/* trace_events: one connect decision. */
struct nm_trace_event {
    __u64 ts_ns;        /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
    __u64 cookie;       /* the socket's */
    __u64 cgroup_id;
    __u32 orig_ip;      /* family AF_INET: network order */
    __u32 new_ip;       /* family AF_INET: network order */
    __u16 orig_port;    /* network order */
    __u16 new_port;     /* network order */
    __u32 service_id;
    __u32 reason;       /* nm_reason */
    __u32 pid;          /* the process (tgid) */
    __u32 tid;          /* the thread */
    __u8 family;        /* AF_INET: orig_ip/new_ip; AF_INET6: orig_ip6/new_ip6 */
    __u8 target;        /* nm_target */
    __u16 pad;
    __u32 orig_ip6[4];  /* family AF_INET6: network order */
    __u32 new_ip6[4];
    char comm[16];      /* the thread's name */
};

#define NM_SVC_DISABLED   1   /* present but not redirected (draining a VIP) */
#define NM_SVC_NO_PAIR    2   /* do not pair app and local proxy sockets for
                               * sk_msg: pairing's psock setup and teardown
                               * (~3 us a connection) pays back after a few
                               * requests, never for connect-and-close clients.
                               * Off (0, pairing) is what a service written by
                               * a version without the flag gets. */
#define NM_ORIG_PAIR      1   /* steered locally for a service that pairs; in an
                               * accept record: the app's end joined sock_pairs,
                               * so the proxy's end joins too */
#define NM_ORIG_V6        2   /* an IPv6 socket: ip6 is what it dialled */
#define NM_PROXY_TRACE    1   /* emit every decision to trace_events */
#define NM_SPILL_UNSET    65535
#define NM_SPILL_SCALE    10000

/* cdef-end */

#endif
