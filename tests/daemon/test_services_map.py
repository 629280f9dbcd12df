"""ServicesMapWriter without a kernel: when it batches and when it writes entry by entry.

The batch itself is checked against the real map in test_agent_kernel.py."""

from __future__ import annotations

from agent.bpf.errors import DatapathError
from agent.daemon.services_map import ServicesMapWriter


class FakeControl:
    """Control.add_service recorded; map() as a datapath that is not there."""

    def __init__(self):
        self.added = []

    def add_service(self, vip_port, service_id, protocol="tcp", remote_port=0):
        self.added.append((vip_port, service_id, protocol, remote_port))

    def map(self, name):
        raise DatapathError(f"datapath map {name} not found")


def items(n, ip="198.18.0.{}", protocol="redis"):
    return [((ip.format(i), 6379), i + 1, protocol, 20000 + i) for i in range(n)]


def test_a_few_entries_are_written_one_by_one():
    control = FakeControl()
    writer = ServicesMapWriter(control, batch_min=32)
    writer.write(items(3))
    assert control.added == [("198.18.0.0:6379", 1, "redis", 20000),
                             ("198.18.0.1:6379", 2, "redis", 20001),
                             ("198.18.0.2:6379", 3, "redis", 20002)]
    assert writer.batches == 0 and writer.batch_ok


def test_without_a_usable_map_every_entry_still_goes_through_add_service():
    control = FakeControl()
    writer = ServicesMapWriter(control, batch_min=2)
    writer.write(items(40))
    assert len(control.added) == 40 and writer.batches == 0
    assert not writer.batch_ok                      # not tried again


def test_ipv6_and_unknown_protocols_are_left_to_add_service():
    control = FakeControl()
    writer = ServicesMapWriter(control, batch_min=2)
    writer.write(items(3, ip="fd00::{}"))
    assert [a[0] for a in control.added] == ["[fd00::0]:6379", "[fd00::1]:6379",
                                             "[fd00::2]:6379"]
    control.added.clear()
    writer.write(items(3, protocol="nope"))          # add_service names the bad protocol
    assert len(control.added) == 3 and writer.batch_ok
