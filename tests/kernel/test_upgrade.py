"""A datapath loaded over maps pinned by another version: maps whose layout,
type or size changed are re-created with their entries, the rest adopted;
a failed load leaves the running datapath as it was."""

import os
import pathlib
import struct

import pytest

from agent.bpf import layout, libbpf, maps
from agent.bpf.loader import Datapath, Settings

from .node import Held, Node, dial, free_port

pytestmark = pytest.mark.kernel

VIP = ("198.18.30.1", 80)


def pin_old_map(pin_dir, name, mtype, key_size, value_size, entries, items=()):
    """A map as the first (IPv4-only) version pinned it, with raw entries."""
    fd = libbpf.map_create(mtype, name, key_size, value_size, entries)
    try:
        for key, value in items:
            libbpf.check(libbpf.lib().bpf_map_update_elem(fd, key, value, 0), f"fill {name}")
        libbpf.obj_pin(fd, os.path.join(pin_dir, name))
    finally:
        os.close(fd)


def map_id(pin_dir, name):
    fd = libbpf.obj_get(os.path.join(pin_dir, name))
    try:
        return libbpf.info(fd, "map").id
    finally:
        os.close(fd)


def test_maps_of_the_first_layout_are_upgraded_with_their_entries():
    n = Node("nm-upg")
    n.cgroup.mkdir(exist_ok=True)
    try:
        local = ("127.0.0.1", free_port())
        n.listen(*local)
        pins = n.settings.pin_dir
        pathlib.Path(pins).mkdir(parents=True)
        # proxy: 20-byte value (no IPv6 addresses), local mode, generation 1
        old_proxy = struct.pack("<IIHHBBHI", layout.ip_to_be32(local[0]), 0,
                                layout.port_to_be16(local[1]), 0, 0, 0, 0, 1)
        old_service = struct.pack("<IHBB", 7, 0, 0, 0)            # id 7: pairs, as then
        vip_key = struct.pack("<IHH", layout.ip_to_be32(VIP[0]), layout.port_to_be16(VIP[1]), 0)
        pin_old_map(pins, "proxy", maps.ARRAY, 4, 20, 1, [(struct.pack("<I", 0), old_proxy)])
        pin_old_map(pins, "services", maps.HASH, 8, 8, 65536, [(vip_key, old_service)])
        pin_old_map(pins, "accept_records", maps.LRU_HASH, 8, 24, 262144)
        n.start(loader="inprocess")
        assert n.up_result["action"] == "loaded"
        assert n.up_result["upgraded_maps"] == {"proxy": "copied 1 entries",
                                                "accept_records": "copied 0 entries"}
        assert Datapath(n.settings).up()["action"] == "adopted"   # nothing stale now
        assert n.ctl.proxy()["local_proxy"] == "%s:%d" % local    # IPv6 fields zero
        assert n.ctl.services()[0]["id"] == 7
        n.ctl.enroll(n.cg("pod-a"))
        [seen] = dial(n, "pod-a", VIP, send=b"u" * 1000)
        assert seen["server"] == "%s:%d" % local and seen["echo_ok"]
        assert n.ctl.counters()["sockhash_added"] == 2
    finally:
        n.stop()


def test_accept_records_of_the_plain_hash_layout_are_carried_over():
    """The version before the server sequence number: accept_records a plain
    hash of 40-byte values. Its records are copied into the LRU map, and one
    copied for a connection not yet accepted is still read by the proxy."""
    n = Node("nm-upg5")
    n.cgroup.mkdir(exist_ok=True)
    try:
        pins = n.settings.pin_dir
        pathlib.Path(pins).mkdir(parents=True)
        key = struct.pack("<IHH", layout.ip_to_be32("127.0.0.1"), layout.port_to_be16(40000), 0)
        old_rec = struct.pack("<QIIHBBI16x", 99, layout.ip_to_be32(VIP[0]), 3,
                              layout.port_to_be16(VIP[1]), layout.C.NM_TARGET_LOCAL, 0, 0)
        assert len(old_rec) == 40
        pin_old_map(pins, "accept_records", maps.HASH, 8, 40, 262144, [(key, old_rec)])
        n.start(loader="inprocess")
        assert n.up_result["upgraded_maps"] == {"accept_records": "copied 1 entries"}
        assert maps.PinnedMap(pins, "accept_records").path.exists()
        rec = n.ctl.accept_record("127.0.0.1", 40000)
        assert rec["service_id"] == 3 and rec["cgroup_id"] == 99
        assert rec["original_dst"] == "%s:%d" % VIP
    finally:
        n.stop()


def test_a_running_datapath_is_reloaded_over_changed_capacities():
    n = Node("nm-upg2").start(loader="inprocess")
    try:
        local = ("127.0.0.1", free_port())
        n.listen(*local)
        n.ctl.set_proxy(local="%s:%d" % local, mode="local")
        n.ctl.add_service("%s:%d" % VIP, 3, "tcp")
        n.ctl.enroll(n.cg("pod-a"))
        kept = map_id(n.settings.pin_dir, "services")
        with Held(n, "pod-a", VIP) as conn:
            s = Settings(**{**vars(n.settings), "defines": {"NM_MAX_CONNS": 4096}})
            result = Datapath(s).up()
            assert result["action"] == "reloaded"
            up = result["upgraded_maps"]
            assert up["orig_dst"] == "copied 1 entries"          # the held connection
            assert up["accept_records"] == "copied 1 entries"
            assert up["sock_pairs"] == "re-created empty (nothing to copy)"
            assert map_id(n.settings.pin_dir, "services") == kept  # unchanged: adopted
            assert n.ctl.accept_record(*conn.client, delete=False)["service_id"] == 3
        assert Datapath(s).up()["action"] == "adopted"
        [seen] = dial(n, "pod-a", VIP, send=b"v" * 1000)
        assert seen["echo_ok"] and seen["peername"] == "%s:%d" % VIP
    finally:
        n.stop()


def test_a_failed_upgrade_leaves_the_running_datapath_alone():
    n = Node("nm-upg3").start(loader="inprocess")
    try:
        local = ("127.0.0.1", free_port())
        n.listen(*local)
        n.ctl.set_proxy(local="%s:%d" % local, mode="local")
        n.ctl.add_service("%s:%d" % VIP, 3, "tcp")
        n.ctl.enroll(n.cg("pod-a"))
        before = {m: map_id(n.settings.pin_dir, m) for m in ("orig_dst", "services")}
        progs = n.our_prog_ids()
        # a capacity change makes orig_dst stale; a bad depth makes the load fail
        s = Settings(**{**vars(n.settings),
                        "defines": {"NM_MAX_CONNS": 4096, "NM_MAX_CGROUP_DEPTH": "x"}})
        with pytest.raises(Exception, match="Failed to compile"):
            Datapath(s).up()
        assert {m: map_id(n.settings.pin_dir, m) for m in before} == before
        assert n.our_prog_ids() == progs
        [seen] = dial(n, "pod-a", VIP)
        assert seen["server"] == "%s:%d" % local
    finally:
        n.stop()


def link_prog_ids(pin_dir) -> dict:
    out = {}
    for link in pathlib.Path(pin_dir, "links").iterdir():
        fd = libbpf.obj_get(link)
        try:
            out[link.name] = libbpf.info(fd, "link").prog_id
        finally:
            os.close(fd)
    return out


def test_a_refused_new_program_leaves_the_running_datapath_alone():
    """An older datapath without connect6 is running; an exclusive connect6
    program on an ancestor makes the new link fail: nothing may change."""
    from agent.bpf.bcc_import import import_bcc

    n = Node("nm-upg4")
    n.cgroup.mkdir(exist_ok=True)
    n.settings.cgroup_root = str(n.cg("managed"))      # the ancestor is n.cgroup
    bcc = import_bcc()
    b = bcc.BPF(text=b"int legacy_connect6(struct bpf_sock_addr *ctx) { return 1; }")
    cg_fd = os.open(n.cgroup, os.O_RDONLY | os.O_DIRECTORY)
    attached = False
    try:
        n.start(loader="inprocess")
        dp = Datapath(n.settings)
        assert dp._remove_link("connect6")               # as a version without it
        links, progs = link_prog_ids(n.settings.pin_dir), n.our_prog_ids()
        fn = b.load_func(b"legacy_connect6", bcc.BPF.CGROUP_SOCK_ADDR,
                         attach_type=libbpf.ATTACH["connect6"])
        libbpf.check(libbpf.lib().bpf_prog_attach(fn.fd, cg_fd, libbpf.ATTACH["connect6"], 0),
                     "attach exclusive")
        attached = True
        with pytest.raises(OSError, match="attach connect6 to the cgroup"):
            Datapath(n.settings).up()
        assert link_prog_ids(n.settings.pin_dir) == links  # no link swapped, none added
        assert n.our_prog_ids() == progs
        fd = libbpf.obj_get(os.path.join(n.settings.pin_dir, "sock_pairs"))
        try:                                               # the running sk_msg, back
            assert set(libbpf.prog_query(fd, libbpf.ATTACH["sk_msg"])) <= progs
        finally:
            os.close(fd)
    finally:
        if attached:
            libbpf.lib().bpf_prog_detach2(fn.fd, cg_fd, libbpf.ATTACH["connect6"])
        os.close(cg_fd)
        b.cleanup()
        n.stop()


def test_control_keeps_the_fields_of_a_newer_version(tmp_path):
    """A proxy map pinned by a newer version (a longer value): this version
    reads its prefix and, on update, leaves the fields it does not know."""
    from agent.bpf.datapath import Control

    pins = f"/sys/fs/bpf/nm-upg5-{os.getpid()}"
    os.makedirs(pins)
    try:
        ours = layout.ffi.sizeof("struct nm_proxy_config")
        value = bytearray(ours + 16)
        value[ours:] = b"newer-version-ok"
        value[16:20] = struct.pack("<I", 1)                       # generation 1
        pin_old_map(pins, "proxy", maps.ARRAY, 4, len(value), 1,
                    [(struct.pack("<I", 0), bytes(value))])
        ctl = Control(Settings(pin_dir=pins, run_dir=str(tmp_path)))
        ctl.set_proxy(local="127.0.0.1:15001,[fd00::1]:15001", mode="remote")
        assert ctl.proxy()["local_proxy"] == "127.0.0.1:15001,[fd00::1]:15001"
        assert ctl.proxy()["mode"] == "remote"
        ctl.close()
        fd = libbpf.obj_get(os.path.join(pins, "proxy"))
        raw = layout.ffi.new("char[]", len(value))
        libbpf.check(libbpf.lib().bpf_map_lookup_elem(fd, layout.ffi.new("__u32 *", 0), raw),
                     "lookup")
        os.close(fd)
        assert bytes(layout.ffi.buffer(raw))[ours:] == b"newer-version-ok"
    finally:
        for f in os.listdir(pins):
            os.unlink(os.path.join(pins, f))
        os.rmdir(pins)
