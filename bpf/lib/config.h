/* Compile-time settings, overridable with cflags (-DNM_MAX_CONNS=...).
 * `nodemesh datapath source` prints the flags a running datapath was built with. */
#ifndef NODEMESH_CONFIG_H
#define NODEMESH_CONFIG_H

#ifndef NM_PIN_DIR
#define NM_PIN_DIR "/sys/fs/bpf/nodemesh"
#endif
#ifndef NM_MAX_SERVICES
#define NM_MAX_SERVICES 65536      /* mesh VIP:port entries */
#endif
#ifndef NM_MAX_PODS
#define NM_MAX_PODS 16384          /* enrolled cgroups */
#endif
#ifndef NM_MAX_CONNS
#define NM_MAX_CONNS 262144        /* redirected sockets alive at once */
#endif
#ifndef NM_MAX_CGROUP_DEPTH
#define NM_MAX_CGROUP_DEPTH 12     /* ancestors searched for an enrolled pod */
#endif
#ifndef NM_TRACE_BYTES
#define NM_TRACE_BYTES (256 * 1024) /* ring buffer of decisions */
#endif

#endif
