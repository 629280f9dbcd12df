"""The few libbpf calls the agent makes itself (maps, pins, links, queries).

bcc compiles and loads the programs; everything that must work without a
compiler (the CLI reading pinned maps, adopting a running datapath,
uninstall) goes through libbpf's stable C API, loaded with cffi.
"""

import errno
import os

from cffi import FFI

ffi = FFI()
ffi.cdef("""
int bpf_obj_pin(int fd, const char *pathname);
int bpf_map_create(int map_type, const char *map_name, uint32_t key_size,
                   uint32_t value_size, uint32_t max_entries, const void *opts);
int bpf_obj_get(const char *pathname);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int bpf_map_update_batch(int fd, const void *keys, const void *values, uint32_t *count,
                         const void *opts);
int bpf_prog_attach(int prog_fd, int attachable_fd, int type, unsigned int flags);
int bpf_prog_detach2(int prog_fd, int attachable_fd, int type);
int bpf_link_create(int prog_fd, int target_fd, int attach_type, const void *opts);
int bpf_link_detach(int link_fd);
int bpf_link_update(int link_fd, int new_prog_fd, const void *opts);
int bpf_prog_get_fd_by_id(uint32_t id);
int bpf_prog_query(int target_fd, int type, uint32_t query_flags,
                   uint32_t *attach_flags, uint32_t *prog_ids, uint32_t *prog_cnt);
int bpf_obj_get_info_by_fd(int bpf_fd, void *info, uint32_t *info_len);
int libbpf_num_possible_cpus(void);

struct ring_buffer;
typedef int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size);
struct ring_buffer *ring_buffer__new(int map_fd, ring_buffer_sample_fn sample_cb,
                                     void *ctx, const void *opts);
int ring_buffer__poll(struct ring_buffer *rb, int timeout_ms);
int ring_buffer__consume(struct ring_buffer *rb);
void ring_buffer__free(struct ring_buffer *rb);

/* enough of struct bpf_map_info / bpf_prog_info / bpf_link_info */
struct nm_map_info {
    uint32_t type; uint32_t id; uint32_t key_size; uint32_t value_size;
    uint32_t max_entries; uint32_t map_flags; char name[16];
    uint8_t rest[128];
};
struct nm_prog_info {
    uint32_t type; uint32_t id; uint8_t tag[8]; uint32_t jited_prog_len;
    uint32_t xlated_prog_len; uint64_t jited_prog_insns; uint64_t xlated_prog_insns;
    uint64_t load_time; uint32_t created_by_uid; uint32_t nr_map_ids;
    uint64_t map_ids; char name[16];
    uint8_t rest[256];
};
struct nm_link_info {
    uint32_t type; uint32_t id; uint32_t prog_id; uint32_t pad;
    uint64_t cgroup_id; uint32_t attach_type; uint32_t pad2;
    uint8_t rest[64];
};
""")

_lib = None

# enum bpf_attach_type (uapi/linux/bpf.h), as integers for bcc 0.26 too.
ATTACH = {
    "sockops": 3,            # BPF_CGROUP_SOCK_OPS
    "sk_msg": 7,             # BPF_SK_MSG_VERDICT
    "connect4": 10,          # BPF_CGROUP_INET4_CONNECT
    "connect6": 11,
    "getpeername4": 29,      # BPF_CGROUP_INET4_GETPEERNAME
    "getpeername6": 30,
}
ATTACH_NAMES = {
    0: "ingress", 1: "egress", 2: "sock_create", 3: "sock_ops", 6: "device",
    8: "bind4", 9: "bind6", 10: "connect4", 11: "connect6", 12: "post_bind4",
    13: "post_bind6", 14: "sendmsg4", 15: "sendmsg6", 18: "sysctl", 19: "recvmsg4",
    20: "recvmsg6", 21: "getsockopt", 22: "setsockopt", 29: "getpeername4",
    30: "getpeername6", 31: "getsockname4", 32: "getsockname6", 33: "xdp_devmap",
    34: "sock_release",
}
BPF_F_ALLOW_MULTI = 2
BPF_NOEXIST, BPF_EXIST, BPF_ANY = 1, 2, 0


class BPFError(OSError):
    pass


def lib():
    global _lib
    if _lib is None:
        try:
            _lib = ffi.dlopen("libbpf.so.1")
        except OSError as exc:
            raise BPFError(errno.ENOENT, "libbpf.so.1 not found: install libbpf1 "
                                         "(it comes with python3-bpfcc)") from exc
    return _lib


def check(rc: int, what: str) -> int:
    """libbpf returns -errno (and sets errno); raise with the errno's name."""
    if rc < 0:
        err = -rc if rc < -1 else ffi.errno or 1
        raise BPFError(err, f"{what}: {os.strerror(err)}")
    return rc


def map_update_batch(fd: int, keys, values, n: int, what: str) -> None:
    """n entries in one syscall (BPF_MAP_UPDATE_BATCH, Linux 5.6+); raises
    when the kernel refused any (count says how many went in)."""
    count = ffi.new("uint32_t *", n)
    check(lib().bpf_map_update_batch(fd, keys, values, count, ffi.NULL), what)
    if count[0] != n:
        raise BPFError(errno.EIO, f"{what}: {count[0]} of {n} entries written")


def obj_get(path: str) -> int:
    return check(lib().bpf_obj_get(str(path).encode()), f"open pinned {path}")


def obj_pin(fd: int, path: str) -> None:
    check(lib().bpf_obj_pin(fd, str(path).encode()), f"pin {path}")


def map_create(map_type: int, name: str, key_size: int, value_size: int,
               max_entries: int) -> int:
    """A new map's fd (tests build maps as an older version pinned them)."""
    return check(lib().bpf_map_create(map_type, name.encode(), key_size, value_size,
                                      max_entries, ffi.NULL), f"create map {name}")


def num_cpus() -> int:
    return check(lib().libbpf_num_possible_cpus(), "possible CPUs")


def info(fd: int, kind: str):
    obj = ffi.new(f"struct nm_{kind}_info *")
    size = ffi.new("uint32_t *", ffi.sizeof(obj[0]))
    check(lib().bpf_obj_get_info_by_fd(fd, obj, size), f"{kind} info")
    return obj


def prog_query(cgroup_fd: int, attach_type: int) -> list:
    """Program ids attached to a cgroup for one attach type (effective=0)."""
    ids = ffi.new("uint32_t[]", 64)
    cnt = ffi.new("uint32_t *", 64)
    flags = ffi.new("uint32_t *")
    rc = lib().bpf_prog_query(cgroup_fd, attach_type, 0, flags, ids, cnt)
    if rc < 0:
        return []
    return [ids[i] for i in range(cnt[0])]


def prog_query_flags(cgroup_fd: int, attach_type: int) -> int:
    ids = ffi.new("uint32_t[]", 64)
    cnt = ffi.new("uint32_t *", 64)
    flags = ffi.new("uint32_t *")
    if lib().bpf_prog_query(cgroup_fd, attach_type, 0, flags, ids, cnt) < 0:
        return 0
    return flags[0]
