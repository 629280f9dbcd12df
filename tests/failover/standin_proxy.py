"""A stand-in for `nodemesh proxy` in the failover tests, until the real one lands.

An L4 relay with the admin API failover relies on (the proxy brief's contract):
GET /ready (503 while starting or draining), /healthz, /stats (pid, per-worker
loop lag p50/max in ms, active connections/requests, per-source-pod request
rates keyed by cgroup id), POST /drain?deadline=S, plus POST /fault {"cpu_ms"}
to make each request burn CPU in the event loop (the overload scenario).

Request boundaries are guessed for line-based request/response protocols
(Redis RESP, the tests' echo protocol): a connection is idle when the last
bytes went to the client and ended with a newline. Drain accepts what is
already queued, closes the listener, closes connections idle for
--drain-idle-ms (a client about to reuse a connection the moment it is
closed would lose that request: protocols without a close signal are only
safe to close once the client has gone quiet), keeps serving the others
until their clients close them, and exits when none is left or at the
deadline (the connections cut then are counted).

    python -m tests.failover.standin_proxy --role local --listen IP:PORT \
        --backends '{"1": ["198.18.66.2", 26379]}' --admin PATH [--cgroup DIR]
"""

import argparse
import asyncio
import collections
import json
import os
import socket
import statistics
import sys
import time

RATE_WINDOW_S = 2.0
LAG_WINDOW_S = 2.0
LAG_TICK_S = 0.01


class Relay:
    def __init__(self, args):
        self.args = args
        self.backends = {int(k): tuple(v) for k, v in json.loads(args.backends).items()}
        self.ctl = None
        if args.role == "local":
            from agent.bpf.datapath import Control
            from agent.bpf.loader import Settings

            self.ctl = Control(Settings(pin_dir=args.pin_dir))
        self.conns = {}                 # client writer -> connection state
        self.cpu_ms = args.cpu_ms
        self.draining = False
        self.ready_at = time.monotonic() + args.ready_delay
        self.lags = collections.deque()
        self.requests = collections.defaultdict(collections.deque)   # cgroup id -> times
        self.listeners = []
        self.cut = 0

    # -- accepting: a plain socket, so a drain can take in what is queued ---------------

    def listen(self, ip, port, key):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        ls.bind((ip, port))
        ls.listen(1024)
        ls.setblocking(False)
        asyncio.get_running_loop().add_reader(ls.fileno(), self._accept_all, ls, key)
        self.listeners.append(ls)

    def _accept_all(self, ls, key):
        while True:
            try:
                conn, peer = ls.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            asyncio.get_running_loop().create_task(self.serve(conn, peer, key))

    def stop_accepting(self):
        loop = asyncio.get_running_loop()
        for ls in self.listeners:
            loop.remove_reader(ls.fileno())
            self._accept_all(ls, ls.getsockname()[1] if self.ctl is None else None)
            ls.close()
        self.listeners.clear()

    # -- one client connection -------------------------------------------------------------

    async def serve(self, conn, peer, port_key):
        conn.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=conn)
        cgroup = 0
        if self.ctl is not None:
            rec = self.ctl.accept_record(*peer[:2])
            key = rec["service_id"] if rec else None
            cgroup = rec["cgroup_id"] if rec else 0
        else:
            key = port_key
        if key not in self.backends:
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection(*self.backends[key])
        except OSError as e:
            print(f"upstream {self.backends[key]}: {e}", file=sys.stderr, flush=True)
            writer.close()
            return
        state = {"busy": False, "cgroup": cgroup, "since": time.monotonic()}
        self.conns[writer] = state
        try:
            await asyncio.gather(self.upstream(reader, up_w, state),
                                 self.downstream(up_r, writer, state))
        finally:
            self.conns.pop(writer, None)
            if state["busy"]:
                self.cut += 1
            for w in (writer, up_w):
                w.close()

    async def upstream(self, reader, up_w, state):
        try:
            while data := await reader.read(65536):
                state["busy"] = True
                now = time.monotonic()
                self.requests[state["cgroup"]].append(now)
                if self.cpu_ms:
                    end = time.perf_counter() + self.cpu_ms / 1000.0
                    while time.perf_counter() < end:     # CPU-bound fault, on the loop
                        pass
                up_w.write(data)
                await up_w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            up_w.close()

    async def downstream(self, up_r, writer, state):
        try:
            while data := await up_r.read(65536):
                writer.write(data)
                await writer.drain()
                if data.endswith(b"\n"):
                    state["busy"], state["since"] = False, time.monotonic()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    # -- drain ----------------------------------------------------------------------------

    async def drain(self, deadline):
        self.draining = True
        self.stop_accepting()
        end = time.monotonic() + deadline
        idle = self.args.drain_idle_ms / 1000.0
        while time.monotonic() < end:
            now = time.monotonic()
            for w, st in list(self.conns.items()):
                if not st["busy"] and now - st["since"] >= idle:
                    w.close()
                    self.conns.pop(w, None)
            if not self.conns:
                break
            await asyncio.sleep(0.01)
        self.cut += sum(1 for st in self.conns.values() if st["busy"])
        print(json.dumps({"drained": True, "cut": self.cut}), flush=True)
        try:
            os.unlink(self.args.admin)
        except OSError:
            pass
        os._exit(0)

    # -- signals for failover ------------------------------------------------------------------

    async def measure_lag(self):
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(LAG_TICK_S)
            now = time.monotonic()
            self.lags.append((now, max(0.0, (now - t0 - LAG_TICK_S) * 1000.0)))
            while self.lags and self.lags[0][0] < now - LAG_WINDOW_S:
                self.lags.popleft()

    def stats(self):
        now = time.monotonic()
        pods = {}
        for cid, times in self.requests.items():
            while times and times[0] < now - RATE_WINDOW_S:
                times.popleft()
            if cid and times:
                pods[str(cid)] = {"cgroup_id": cid, "rps": round(len(times) / RATE_WINDOW_S, 2)}
        lags = [lag for _, lag in self.lags] or [0.0]
        worker = {"pid": os.getpid(), "loop_lag_ms": {"p50": round(statistics.median(lags), 2),
                                                      "max": round(max(lags), 2)},
                  "active_connections": len(self.conns),
                  "active_requests": sum(1 for s in self.conns.values() if s["busy"])}
        return {"pid": os.getpid(), "workers": [worker], "source_pods": pods,
                "draining": self.draining}


async def main(args):
    from agent.admin import AdminServer, Response

    relay = Relay(args)
    ip, _, port = args.listen.rpartition(":")
    if args.role == "local":
        relay.listen(ip, int(port), None)
    else:
        for key in relay.backends:
            relay.listen(ip, key, key)
    admin = AdminServer(args.admin)

    @admin.get("/ready")
    def ready(_req):
        if relay.draining:
            return Response(503, {"ready": False, "reason": "draining"})
        if time.monotonic() < relay.ready_at:
            return Response(503, {"ready": False, "reason": "starting"})
        return {"ready": True}

    @admin.get("/healthz")
    def healthz(_req):
        return {"ok": True}

    @admin.get("/stats")
    def stats(_req):
        return relay.stats()

    @admin.post("/drain")
    def drain(req):
        deadline = float(req.query.get("deadline", 30))
        if not relay.draining:
            asyncio.get_running_loop().create_task(relay.drain(deadline))
        return Response(202, {"draining": True, "deadline": deadline})

    @admin.post("/fault")
    def fault(req):
        relay.cpu_ms = float(req.json().get("cpu_ms", 0))
        return {"cpu_ms": relay.cpu_ms}

    await admin.start()
    asyncio.get_running_loop().create_task(relay.measure_lag())
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--role", choices=["local", "remote"], required=True)
    p.add_argument("--listen", required=True, help="IP:PORT (remote: IP:0, ports from backends)")
    p.add_argument("--backends", required=True,
                   help="JSON {service id (local) or listen port (remote): [ip, port]}")
    p.add_argument("--admin", required=True)
    p.add_argument("--pin-dir", default=os.environ.get("NODEMESH_PIN_DIR", "/sys/fs/bpf/nodemesh"))
    p.add_argument("--cgroup")
    p.add_argument("--ready-delay", type=float, default=0.0,
                   help="seconds /ready answers 503 after start (config loading)")
    p.add_argument("--cpu-ms", type=float, default=0.0)
    p.add_argument("--drain-idle-ms", type=float, default=200.0)
    a = p.parse_args()
    if a.cgroup:
        with open(os.path.join(a.cgroup, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(a))
