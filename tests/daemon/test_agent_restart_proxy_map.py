"""An agent restart leaves an unchanged BPF proxy map untouched (real kernel).

The map's generation counts writes; the failover controller, `failover
status` and anyone watching the map see a write as a change. The agent
writes only the addresses from its bootstrap, and only when they differ.
"""

from __future__ import annotations

import pytest

from tests.kernel.node import Node
from tests.xds.conftest import LoopRunner

from .helpers import make_agent

pytestmark = pytest.mark.kernel

NO_CONTROL_PLANE = "127.0.0.1:1"


@pytest.fixture(scope="module")
def node():
    n = Node("nm-fo-restart")
    n.start(loader="inline")
    yield n
    n.stop()


def start_stop(node, tmp_path, **boot) -> dict:
    """Start an agent on the node's datapath, stop it; what its start did."""
    async def run():
        agent = make_agent(tmp_path, NO_CONTROL_PLANE, datapath=True, settings=node.settings,
                           initial_fetch_timeout=0.2, **boot)
        await agent.start()
        try:
            return dict(agent.datapath_state)
        finally:
            await agent.stop()
    return LoopRunner("asyncio")(run())


def test_restart_with_the_same_addresses_writes_nothing(node, tmp_path):
    first = start_stop(node, tmp_path, local_proxy="127.0.0.1:35011",
                       remote_proxy="198.18.0.50:35012")
    assert first["proxy_map_written"] is True
    # what the failover controller would have set meanwhile
    node.ctl.set_proxy(mode="remote", spill=25)
    before = node.ctl.proxy()
    assert (before["local_proxy"], before["remote_proxy"]) == ("127.0.0.1:35011", "198.18.0.50")

    # the same addresses, spelt as the map does not store them (the pool's port)
    again = start_stop(node, tmp_path, local_proxy="127.0.0.1:35011", remote_proxy="198.18.0.50")
    assert again["action"] == "adopted"
    assert again["proxy_map_written"] is False
    assert node.ctl.proxy() == before                  # generation included: no write at all

    # a changed address is written, and only the address: mode and spill stay
    moved = start_stop(node, tmp_path, local_proxy="127.0.0.1:35011",
                       remote_proxy="198.18.0.51")
    assert moved["proxy_map_written"] is True
    after = node.ctl.proxy()
    assert after["remote_proxy"] == "198.18.0.51"
    assert after["generation"] != before["generation"]
    assert (after["mode"], after["spill_percent"]) == ("remote", 25.0)


def test_no_remote_pool_configured_clears_it_once(node, tmp_path):
    node.ctl.set_proxy(local="127.0.0.1:35011", remote="198.18.0.50")
    assert start_stop(node, tmp_path, local_proxy="127.0.0.1:35011")["proxy_map_written"]
    cleared = node.ctl.proxy()
    assert cleared["remote_proxy"] is None
    assert not start_stop(node, tmp_path, local_proxy="127.0.0.1:35011")["proxy_map_written"]
    assert node.ctl.proxy() == cleared
