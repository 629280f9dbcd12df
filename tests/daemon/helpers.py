"""Bootstraps and agents for the daemon tests."""

from __future__ import annotations

import asyncio

from agent.bpf.loader import Settings
from agent.config.bootstrap import parse_bootstrap
from agent.daemon.agent import Agent, AgentOptions


def ads_bootstrap(address: str, *, delta: bool = True, persist: str = "",
                  local_proxy: str = "127.0.0.1:15001", remote_proxy: str = None,
                  extra_static: str = "", token_path: str = "") -> str:
    host, port = address.rsplit(":", 1)
    remote = f"\n  remote_proxy: {remote_proxy}" if remote_proxy else ""
    persist_kv = f', persist_path: "{persist}"' if persist else ""
    persist_kv += f', token_path: "{token_path}"' if token_path else ""
    return f"""
node: {{id: "sidecar~198.18.0.2~nodemesh-test.nodemesh~nodemesh.svc.cluster.local",
        cluster: nodemesh}}
dynamic_resources:
  ads_config:
    api_type: {"DELTA_GRPC" if delta else "GRPC"}
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address:
                  {{address: "{host}", port_value: {port}}}}}}}}}]}}]
{extra_static}
nodemesh:
  local_proxy: "{local_proxy}"{remote}
  xds: {{plaintext: true{persist_kv}}}
"""


def make_agent(tmp_path, address, *, datapath=False, settings: Settings = None,
               initial_fetch_timeout=5.0, delta=True, persist=None, **boot_kw) -> Agent:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    persist = str(tmp_path / "last-good.pb") if persist is None else persist
    b = parse_bootstrap(ads_bootstrap(address, delta=delta, persist=persist, **boot_kw))
    settings = settings or Settings(pin_dir=str(tmp_path / "no-pins"), run_dir=str(run_dir))
    opts = AgentOptions(datapath=datapath, loader_settings=settings,
                        admin_path=str(run_dir / "admin.sock"),
                        relay_path=str(run_dir / "xds.sock"), persist_path=persist,
                        initial_fetch_timeout=initial_fetch_timeout, persist_interval=0.05,
                        backoff_base=0.05, backoff_cap=0.3)
    return Agent(b, opts)


async def admin_get(agent: Agent, path: str):
    """GET on the agent's admin socket from a thread (the client is blocking)."""
    from agent.admin import AdminClient

    client = AdminClient(agent.admin.path, timeout=5)
    status, body = await asyncio.get_running_loop().run_in_executor(
        None, lambda: client.request("GET", path, ok=(200, 404, 503)))
    return status, body
