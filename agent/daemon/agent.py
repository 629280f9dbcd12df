"""The agent process: wires the datapath, the xDS client, the relay and the admin API.

    agent = Agent(load_bootstrap(path), AgentOptions(...))
    await agent.start(); ...; await agent.stop()

Start order: static resources (a bad bootstrap stops here) -> admin API
(so probes answer while the rest comes up) -> datapath up (or adopted
after a restart) -> relay -> ADS client -> first configuration (the
control plane's, or the last good one when the control plane does not
answer in time) -> BPF services map reconciled -> components. Stop order
is the reverse; the datapath stays up (it keeps steering without the
agent, and the next agent adopts it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import List, Optional

from agent.admin import AdminServer
from agent.xds.applier import Applier
from agent.xds.channel import Target, TlsFiles
from agent.xds.client import AdsConfig, XdsClient
from agent.xds.config_api import ConfigError, ConfigStore
from agent.xds.node import build_node
from agent.xds.relay import Relay
from agent.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

from . import admin_api, memory
from .components import Running, call
from .last_good import LastGood
from .services_sync import ServicesSync

log = logging.getLogger("nodemesh.agent")


@dataclass
class AgentOptions:
    """Process-level choices; the node's settings come from the bootstrap."""

    datapath: bool = True
    """Load/adopt the BPF datapath and program its services map. Off: xDS and
    relay only (a host without BPF, or tests)."""
    loader_settings: object = None
    """agent.bpf.loader.Settings (pin dir, cgroup root, run dir); None: from env."""
    admin_path: Optional[str] = None
    """Admin socket; None: the bootstrap's nodemesh.admin."""
    relay_path: Optional[str] = None
    """The proxy workers' xDS socket; None: $NODEMESH_RUN_DIR/xds.sock."""
    persist_path: Optional[str] = None
    """Last good configuration; None: the bootstrap's nodemesh.xds.persist_path;
    "" disables persistence."""
    initial_fetch_timeout: float = 10.0
    """Seconds to wait for the control plane's first configuration before serving
    the last good one (Envoy waits 15 s per resource; a restarted node agent
    should not leave a node without services that long)."""
    warming_timeout: float = 15.0
    """Seconds a listener/cluster waits for its RDS/EDS (Envoy's default)."""
    persist_interval: float = 1.0
    max_message_bytes: int = 64 * 1024 * 1024
    backoff_base: float = 0.5
    backoff_cap: float = 30.0


class Agent:
    def __init__(self, bootstrap, options: Optional[AgentOptions] = None, components=()):
        from agent.bpf.loader import Settings

        self.bootstrap = bootstrap
        self.options = options or AgentOptions()
        self.settings = bootstrap.settings
        self.loader_settings = self.options.loader_settings or Settings()
        self.store = ConfigStore(remote_ports=self.settings.remote_ports)
        self.applier = Applier(self.store, warming_timeout=self.options.warming_timeout,
                               rds_name_sources=_rds_name_sources(bootstrap))
        self.trimmer = memory.TrimAfterBursts()
        self.applier.sinks.append(self.trimmer)
        self.control = None
        self.admin = AdminServer(self.options.admin_path or self.settings.admin)
        self.relay: Optional[Relay] = None
        self.client: Optional[XdsClient] = None
        self.services: Optional[ServicesSync] = None
        persist_path = self.options.persist_path
        if persist_path is None:
            persist_path = self.settings.xds.persist_path
        self.last_good = LastGood(persist_path or None, self.applier,
                                  interval=self.options.persist_interval)
        self.components: List[Running] = [Running(c, getattr(c, "name", type(c).__name__))
                                          for c in components]
        self.config_ready = asyncio.Event()
        self.config_source = "none"
        self.datapath_state: Optional[dict] = None
        self.started_at: Optional[float] = None
        self._tasks: List[asyncio.Task] = []
        self._stopped = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self):
        self.started_at = time.time()
        self._apply_static()
        admin_api.install(self)
        await self.admin.start()                 # probes answer while the datapath loads
        if self.options.datapath:
            await asyncio.get_running_loop().run_in_executor(None, self._datapath_up)
        relay_path = self.options.relay_path or os.path.join(self.loader_settings.run_dir,
                                                             "xds.sock")
        self.relay = Relay(self.applier, relay_path,
                           max_message_bytes=self.options.max_message_bytes)
        await self.relay.start()
        if self.control is not None:
            self.services = ServicesSync(self.control, self.applier)
            self._spawn(self.services.run(self.config_ready), "services-sync")
        self._spawn(self.last_good.run(), "last-good")
        self.client = self._make_client()
        if self.client is not None:
            await self.client.start()
        self._spawn(self._first_configuration(), "first-config")
        for running in self.components:
            await self._start_component(running)
        log.info("agent started", extra={"admin": self.admin.path, "relay": relay_path,
                                          "ads": self.bootstrap.ads.address
                                          if self.bootstrap.ads else None})

    async def stop(self):
        for running in reversed(self.components):
            if running.state == "running":
                try:
                    await call(running.component.stop)
                except Exception:   # noqa: BLE001 - stop the rest anyway
                    log.exception("component %s failed to stop", running.name)
                running.state = "stopped"
        if self.client is not None:
            await self.client.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):   # noqa: BLE001
                pass
        if self.last_good.enabled and self.last_good._dirty_since is not None:
            await self.last_good.save()
        if self.relay is not None:
            await self.relay.stop()
        await self.admin.close()
        if self.control is not None:
            self.control.close()
        self._stopped.set()

    async def run(self, stop: asyncio.Event):
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    def add_component(self, component, name: Optional[str] = None):
        """Plug a component in (before start): start(agent) / stop(), plain or async."""
        self.components.append(Running(component, name or getattr(
            component, "name", type(component).__name__)))

    # -- parts -------------------------------------------------------------------------

    def _datapath_up(self):
        from agent.bpf.datapath import Control

        from .datapath_up import ensure_proxy_addresses, up

        self.datapath_state = up(self.loader_settings)
        self.control = Control(self.loader_settings)
        remote = self.settings.remote_proxy
        # compared first: a restart with the same bootstrap leaves the map untouched
        self.datapath_state["proxy_map_written"] = ensure_proxy_addresses(
            self.control, self.settings.local_proxy, remote if remote else "")
        log.info("datapath %s", self.datapath_state.get("action"),
                 extra={"pin_dir": self.loader_settings.pin_dir,
                        "proxy_map_written": self.datapath_state["proxy_map_written"]})

    def _apply_static(self):
        outcome = self.applier.apply_static(self.bootstrap.static_resources)
        if outcome.errors:
            from agent.config.errors import ConfigErrors

            raise ConfigErrors(outcome.errors)

    def _make_client(self) -> Optional[XdsClient]:
        ads = self.bootstrap.ads
        ads_config = None
        if ads is not None:
            types = [ROUTE, ENDPOINT]
            if self.bootstrap.lds_over_ads:
                types.insert(0, LISTENER)
            if self.bootstrap.cds_over_ads:
                types.insert(0, CLUSTER)
            ads_config = AdsConfig(self._target(ads), delta=ads.api_type == "DELTA_GRPC",
                                   types=tuple(types))
        if ads_config is None and not self.bootstrap.rds_sources:
            return None
        node = build_node(self.bootstrap.node, id_template=self.settings.xds.node_id_template)
        return XdsClient(self.applier, node, ads_config, rds_resolver=self._rds_target,
                         backoff_base=self.options.backoff_base,
                         backoff_cap=self.options.backoff_cap)

    def _target(self, source) -> Target:
        xds = self.settings.xds
        tls = None
        files = dict(ca=getattr(source, "tls_ca", None) or xds.tls_ca,
                     cert=getattr(source, "tls_cert", None) or xds.tls_cert,
                     key=getattr(source, "tls_key", None) or xds.tls_key)
        if any(files.values()) or getattr(source, "sni", None):
            tls = TlsFiles(server_name=getattr(source, "sni", None), **files)
        return Target(source.address, tls=tls, plaintext=xds.plaintext and tls is None,
                      token_path=xds.token_path, max_message_bytes=self.options.max_message_bytes,
                      metadata=tuple(getattr(source, "initial_metadata", ()) or ()))

    def _rds_target(self, cluster: str) -> Optional[Target]:
        """The RDS server a listener's config_source names: a static cluster, whether
        a static listener names it too (Bootstrap.rds_sources) or only dynamic ones
        (their FilterChain.rds_cluster)."""
        source = self.bootstrap.rds_sources.get(cluster)
        if source is None:
            from agent.config.bootstrap import ApiSource
            from agent.config.errors import FieldError

            try:
                found = self.bootstrap.cluster_target(cluster)
            except (KeyError, FieldError):
                return None
            source = ApiSource(api_type="GRPC", route_config_names=(), **found)
        return self._target(source)

    async def _first_configuration(self):
        """Control plane first; the last good configuration if it does not answer."""
        client = self.client
        if client is None or client.ads is None:
            self._config_from("static")
            return
        waits = [asyncio.ensure_future(client.synced.wait()),
                 asyncio.ensure_future(client.failed.wait())]
        try:
            await asyncio.wait(waits, timeout=self.options.initial_fetch_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if client.synced.is_set():
            self._config_from("control-plane")
            return
        restored = self.last_good.restore()
        client.resume_versions(self.applier.versions)
        self._config_from("last-good" if restored else "static")
        await client.synced.wait()
        self.config_source = "control-plane"
        log.info("control plane configuration received")

    def _config_from(self, source: str):
        self.config_source = source
        self.config_ready.set()

    async def _start_component(self, running: Running):
        try:
            await call(running.component.start, self)
            running.state = "running"
        except Exception as exc:   # noqa: BLE001 - the agent keeps serving without it
            running.state, running.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("component %s failed to start", running.name)

    def _spawn(self, coro, name):
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(_log_crash)
        self._tasks.append(task)
        return task

    # -- status --------------------------------------------------------------------------

    def uptime(self) -> float:
        return time.time() - self.started_at if self.started_at else 0.0

    def not_ready(self) -> List[str]:
        reasons = []
        if self.options.datapath and self.control is None:
            reasons.append("datapath not up yet")
        if not self.config_ready.is_set():
            reasons.append("waiting for the first configuration")
        if self.services is not None and not self.services.synced.is_set():
            reasons.append("BPF services map not programmed yet")
        for running in self.components:
            if running.state == "failed":
                reasons.append(f"component {running.name} failed: {running.error}")
        return reasons

    def component_status(self) -> list:
        return [r.status() for r in self.components]


def _rds_name_sources(bootstrap) -> dict:
    return {name: source.cluster for source in getattr(bootstrap, "rds_sources", {}).values()
            for name in source.route_config_names if source.cluster}


def _log_crash(task: asyncio.Task):
    if not task.cancelled() and task.exception() is not None:
        log.error("agent task %s crashed: %r", task.get_name(), task.exception())


__all__ = ["Agent", "AgentOptions", "ConfigError"]
