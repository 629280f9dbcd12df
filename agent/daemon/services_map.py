"""Writing many entries of the BPF `services` map at once.

A full sync of 10,000 services wrote 10,000 entries one syscall each, with
the VIP text parsed by `ipaddress` for every key: ~0.2 s of the initial
load. Here the IPv4 keys and values are packed into two arrays and written
with BPF_MAP_UPDATE_BATCH (Linux 5.6+, libbpf's bpf_map_update_batch): one
syscall. Anything the batch path cannot do (IPv6 keys, a pinned map whose
value layout is another version's, a kernel without batch ops) goes through
Control.add_service entry by entry, as before.
"""

from __future__ import annotations

import logging
import socket
from typing import Iterable, List, Tuple

log = logging.getLogger("nodemesh.agent")

BATCH_MIN = 32
"""Fewer entries than this are written one by one: the batch's array set-up
costs more than it saves for a handful."""

Item = Tuple[Tuple[str, int], int, str, int]      # ((vip, port), id, protocol, remote_port)


class ServicesMapWriter:
    def __init__(self, control, *, batch_min: int = BATCH_MIN):
        self.control = control
        self.batch_min = batch_min
        self.batch_ok = True                    # off after the first batch the kernel refuses
        self.batches = 0

    def write(self, items: List[Item]) -> None:
        """Add or update every item (ids already assigned)."""
        single: Iterable[Item] = items
        if len(items) >= self.batch_min and self.batch_ok:
            v4 = [it for it in items if ":" not in it[0][0]]
            if len(v4) >= self.batch_min and self._batch(v4):
                single = [it for it in items if ":" in it[0][0]]
        for (ip, port), service_id, protocol, remote_port in single:
            vip = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
            self.control.add_service(vip, service_id, protocol, remote_port or 0)

    def _batch(self, items: List[Item]) -> bool:
        from agent.bpf import layout
        from agent.bpf.datapath import PROTOCOL_IDS, service_value
        from agent.bpf.errors import DatapathError

        if any(it[2] not in PROTOCOL_IDS for it in items):
            return False                        # add_service names the bad protocol
        n = len(items)
        try:
            keys = layout.ffi.new("struct nm_service_key[]", n)
            values = layout.ffi.new("struct nm_service[]", n)
            for i, ((ip, port), service_id, protocol, remote_port) in enumerate(items):
                keys[i].vip = int.from_bytes(socket.inet_aton(ip), "little")
                keys[i].port = socket.htons(port)
                values[i] = service_value(service_id, protocol, remote_port)[0]
            if not self.control.map("services").set_many(keys, values, n):
                return False                    # another version's values: entry by entry
        except (OSError, OverflowError, DatapathError) as exc:
            log.warning("services map: batch write failed (%s); writing entry by entry", exc)
            self.batch_ok = False
            return False
        self.batches += 1
        return True
