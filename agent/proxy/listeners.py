"""Listening sockets of one worker, and how an accepted connection finds its listener.

Every worker binds its own sockets with SO_REUSEPORT: the kernel spreads
new connections over the workers, with no hand-off between processes.

- local role: one port (127.0.0.1:15001 by default). The listener is the one
  whose (VIP, port) is the connection's original destination, read from the
  datapath's accept record (agent.bpf.datapath.Control, one per worker, map
  opened once); the source pod is the record's cgroup id.
- remote role: one port per listener (Listener.remote_port) on the --listen
  host, and a shared port (--listen's port) where each request names its
  service (agent.proxy.shared_port). The source pod is the client address.
"""

from __future__ import annotations

import collections
import logging
import socket
from typing import Dict, Optional

log = logging.getLogger("nodemesh.proxy")
BACKLOG = 4096


def reuseport_socket(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class LocalBinding:
    """Local role: the original destination and source cgroup from the BPF record."""

    def __init__(self, pin_dir: str):
        self.pin_dir = pin_dir
        self._control = None

    def control(self):
        if self._control is None:
            from agent.bpf.datapath import Control
            from agent.bpf.loader import Settings

            self._control = Control(Settings(pin_dir=self.pin_dir))
        return self._control

    def resolve(self, worker, transport):
        peer = transport.get_extra_info("peername")
        try:
            rec = self.control().accept_record(peer[0], peer[1])
        except Exception as exc:         # noqa: BLE001 - the datapath is gone: count, close
            log.warning("accept record lookup failed: %s", exc)
            rec = None
        if rec is None:
            worker.rejected("no_record")
            return None
        vip, _, port = rec["original_dst"].rpartition(":")
        listener = worker.snapshot.listener_for(vip, int(port))
        lr = worker.listener_rts.get(listener.name) if listener is not None else None
        if lr is None:
            worker.rejected("no_listener")
            return None
        chain = lr.chain_for(vip)
        if chain is None:
            worker.rejected("no_filter_chain")
            return None
        return chain, str(rec["cgroup_id"]), (vip, int(port))

    def close(self):
        if self._control is not None:
            self._control.close()
            self._control = None


class PortBinding:
    """Remote role: the listener whose remote_port the client connected to."""

    def __init__(self, port: int):
        self.port = port

    def resolve(self, worker, transport):
        listener = worker.snapshot.listener_on_remote_port(self.port)
        chain = worker.chains.get(listener.name) if listener is not None else None
        if chain is None:
            worker.rejected("no_listener")
            return None
        return chain, transport.get_extra_info("peername")[0], None


class _Listeners:
    def __init__(self, worker):
        self.worker = worker
        self.servers: Dict[int, object] = {}
        self.errors: Dict[int, str] = {}
        self.closed = False

    def _serve(self, host, port, factory) -> Optional[object]:
        try:
            sock = reuseport_socket(host, port)
        except OSError as exc:
            self.errors[port] = f"{host}:{port}: {exc.strerror or exc}"
            log.error("cannot listen on %s:%d: %s", host, port, exc)
            return None
        self.errors.pop(port, None)
        bound = sock.getsockname()[1]
        task = self.worker.loop.create_task(
            self.worker.loop.create_server(factory, sock=sock, backlog=BACKLOG))
        self.servers[bound] = task
        return task

    async def close(self):
        self.closed = True
        servers, self.servers = self.servers, {}
        for task in servers.values():
            server = await task
            server.close()

    def _close_port(self, port):
        task = self.servers.pop(port, None)
        if task is not None:
            task.add_done_callback(lambda t: t.result().close() if not t.exception() else None)

    def describe(self) -> dict:
        return {"ports": sorted(self.servers), "errors": dict(self.errors)}

    def port(self) -> Optional[int]:
        """The first bound port (tests bind port 0)."""
        return min(self.servers) if self.servers else None


class LocalListeners(_Listeners):
    async def open(self, snapshot):
        from .session import Session

        host, port = self.worker.settings.resolved_listen()
        binding = self.binding = LocalBinding(self.worker.settings.pin_dir)
        task = self._serve(host, port, lambda: Session(self.worker, binding))
        if task is not None:
            await task

    def update(self, snapshot, before=None, changed=None):
        pass

    async def close(self):
        await super().close()
        if getattr(self, "binding", None) is not None:
            self.binding.close()


class RemoteListeners(_Listeners):
    users: Optional[collections.Counter] = None     # remote port -> listeners naming it

    async def open(self, snapshot):
        from .shared_port import SharedSession

        host, port = self.worker.settings.resolved_listen()
        self.host = host
        if port:
            self.shared_port = port
            task = self._serve(host, port, lambda: SharedSession(self.worker))
            if task is not None:
                await task
        self.update(snapshot)

    def update(self, snapshot, before=None, changed=None):
        """Serve each remote port some listener names. `changed`: the listeners that
        changed since `before` (None: count every listener again)."""
        if changed is None or self.users is None:
            self.users = collections.Counter(
                ln.remote_port for ln in snapshot.listeners.values() if ln.remote_port)
        else:
            for name in changed:
                for snap, step in ((before, -1), (snapshot, 1)):
                    ln = snap.listeners.get(name)
                    if ln is not None and ln.remote_port:
                        self.users[ln.remote_port] += step
        if self.closed or not hasattr(self, "host"):
            return
        self._follow(+self.users)

    def _follow(self, want):
        from .session import Session

        shared = getattr(self, "shared_port", None)
        for port in sorted(want.keys() - self.servers.keys()):
            binding = PortBinding(port)
            self._serve(self.host, port, lambda b=binding: Session(self.worker, b))
        for port in self.servers.keys() - want.keys() - {shared}:
            self._close_port(port)


def listeners_for(worker):
    return LocalListeners(worker) if worker.settings.role == "local" else RemoteListeners(worker)
