"""Dubbo and Thrift request/response through the proxy: nodemesh (L7) vs plain L4 relays
vs the backend direct.

    python -m bench.proxy_rpc [--quick] [--workers N] [--rounds R] [--profile]

Frames are real: the Dubbo request is built by agent.demo.dubbo_wire (hessian2
body from python-hessian), the Thrift call by the `thrift` package
(TBinaryProtocol over TFramedTransport). Each reply is the one the demo's
real server (agent.demo.backends: a Dubbo provider, a thriftpy2 server) gave
to that request, captured once at start-up. The measured backend is
bench/proxy_load.c's rpc-serve, which answers every request with that reply
and the request's own id; the load generator is proxy_load.c's rpc-load
(32 connections, 1 or 16 requests in flight on each, a fresh id per request,
replies matched by id). Python servers or clients would be the bottleneck.

Peers (same backend, rotating order, medians over rounds):
  direct        client to backend;
  uvloop-relay  bench/proxy_relay.py: a byte relay on the proxy's own runtime;
                the reference of the >= 0.8x target (what L7 adds on top of
                forwarding in the same runtime);
  haproxy-tcp   HAProxy `mode tcp` (a C byte relay), nbthread = --workers;
  nodemesh-tcp  (full run) nodemesh's own L4 tcp_proxy chain;
  nodemesh      nodemesh's MetaProtocol chain: decode, route on metadata
                (Dubbo: interface + method; Thrift: method), multiplex upstream
                by rewritten request id.
  nodemesh-catchall  (full run) the same chain with one catch-all route: nothing
                is decided per request, so runs of requests travel as batches
                (agent/proxy/batch.py); the gap to `nodemesh` is what per-request
                routing costs today.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

from bench.common import write_results
from bench.proxy_bootstrap import cluster_yaml, meta_listener_yaml, tcp_listener_yaml
from bench.proxy_common import (
    HOST,
    ROOT,
    NodemeshProxy,
    Peer,
    Ports,
    Procs,
    alternate,
    arg_parser,
    build_load_tool,
    candidate_info,
    claim,
    direct_peer,
    haproxy_peer,
    print_rows,
    proxy_commit,
    run_json,
    summarize,
    uvloop_relay_peer,
)
from bench.proxy_profile import print_profile, profile

FULL = {"rounds": 3, "seconds": 3.0, "depths": (1, 16), "nodemesh_tcp": True, "haproxy": True,
        "catchall": True, "profile": True}
QUICK = {"rounds": 1, "seconds": 1.5, "depths": (1,), "nodemesh_tcp": False, "haproxy": True,
         "catchall": False, "profile": False}
CONNS = 32
MAX_REQUESTS = 3_000_000          # per load run; every run is also bounded in time

DUBBO_SERVICE = "org.apache.dubbo.samples.basic.api.DemoService"


class Protocol:
    """A protocol's frames and where its length and request id sit."""

    def __init__(self, name, request: bytes, reply: bytes, length: str, req_id: str,
                 reply_id: int, routes: str):
        self.name, self.request, self.reply = name, request, reply
        self.length, self.req_id, self.reply_id, self.routes = length, req_id, reply_id, routes

    def write(self, tmp):
        self.request_file, self.reply_file = tmp / f"{self.name}.req", tmp / f"{self.name}.rep"
        self.request_file.write_bytes(self.request)
        self.reply_file.write_bytes(self.reply)

    def framing(self):
        return ["-L", self.length, "-i", self.req_id, "-r", str(self.reply_id)]


def dubbo_request() -> bytes:
    from agent.demo import dubbo_wire

    return dubbo_wire.request(1, DUBBO_SERVICE, "sayHello", "bench", {"pod": "bench"})


def thrift_request() -> bytes:
    from thrift.Thrift import TMessageType

    return thrift_message(TMessageType.CALL, "echo_args", "message", 1)


def thrift_message(kind: int, struct: str, field: str, field_id: int) -> bytes:
    """A framed binary `echo` message (seqid 1) whose struct holds one string "bench"."""
    from thrift.protocol import TBinaryProtocol
    from thrift.Thrift import TType
    from thrift.transport import TTransport

    buf = TTransport.TMemoryBuffer()
    framed = TTransport.TFramedTransport(buf)
    proto = TBinaryProtocol.TBinaryProtocol(framed)
    proto.writeMessageBegin("echo", kind, 1)
    proto.writeStructBegin(struct)
    proto.writeFieldBegin(field, TType.STRING, field_id)
    proto.writeString("bench")
    proto.writeFieldEnd()
    proto.writeFieldStop()
    proto.writeStructEnd()
    proto.writeMessageEnd()
    framed.flush()
    return buf.getvalue()


def capture_reply(procs: Procs, ports: Ports, kind: str, request: bytes, length) -> bytes:
    """The reply a real server (agent.demo.backends) gives to `request`."""
    port = ports.take()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = procs.start([sys.executable, "-m", "agent.demo.backends", kind, HOST, port,
                          "backend"], port=port, ready_line="ready", cwd=ROOT, env=env)
    try:
        with socket.create_connection((HOST, port), timeout=10) as s:
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError(f"{kind} server closed without a reply")
                data += chunk
                n = length(data)
                if n and len(data) >= n:
                    return data[:n]
    finally:
        procs.stop_one(server)


def protocols(procs: Procs, ports: Ports) -> list:
    dubbo_req = dubbo_request()
    dubbo_rep = capture_reply(procs, ports, "dubbo", dubbo_req,
                              lambda d: 16 + struct.unpack(">I", d[12:16])[0] if len(d) >= 16
                              else 0)
    thrift_req = thrift_request()
    thrift_rep = capture_reply(procs, ports, "thrift", thrift_req,
                               lambda d: 4 + struct.unpack(">I", d[:4])[0] if len(d) >= 4 else 0)
    # binary protocol: frame length, version, name length, name "echo", then the seqid
    assert thrift_req[12:16] == b"echo" and thrift_rep[12:16] == b"echo", thrift_rep[:20]
    assert dubbo_rep[:2] == b"\xda\xbb" and dubbo_rep[3] == 20, dubbo_rep[:16]
    dubbo_routes = f"""\
- name: demo
  match:
    metadata:
    - {{name: interface, exact_match: {DUBBO_SERVICE}}}
    - {{name: method, prefix_match: say}}
  route: {{cluster: dubbo}}
"""
    thrift_routes = """\
- name: echo
  match:
    metadata:
    - {name: method, exact_match: echo}
  route: {cluster: thrift}
"""
    return [Protocol("dubbo", dubbo_req, dubbo_rep, "12:4:16", "4:8", 4, dubbo_routes),
            Protocol("thrift", thrift_req, thrift_rep, "0:4:4", "16:4", 16, thrift_routes)]


def load(exe, proto: Protocol, port: int, depth: int, seconds: float) -> dict:
    sample = run_json([exe, "rpc-load", "-a", f"{HOST}:{port}", "-f", proto.request_file,
                       *proto.framing(), "-c", CONNS, "-p", depth, "-d", seconds,
                       "-n", MAX_REQUESTS], timeout=seconds + 60)
    if sample["failed"] or sample["errors"]:
        raise RuntimeError(f"{proto.name} load on :{port} failed: {sample}")
    return sample


CATCH_ALL = """\
- name: all
  route: {{cluster: {cluster}}}
"""


def nodemesh_proxy(procs, ports, backends: dict, protos, workers: int, tcp: bool, root=ROOT,
                   catchall: bool = False):
    """One nodemesh proxy with an L7 listener per protocol (and an L4 one with tcp, a
    catch-all L7 one with catchall)."""
    listeners, clusters, remote = "", "", {}
    for i, proto in enumerate(protos):
        port = ports.take()
        listeners += meta_listener_yaml(proto.name, f"198.18.29.{10 + i}", 20880, proto.name,
                                        proto.routes)
        clusters += cluster_yaml(proto.name, backends[proto.name])
        remote[proto.name] = port
        if tcp:
            listeners += tcp_listener_yaml(f"{proto.name}-tcp", f"198.18.29.{20 + i}", 20880,
                                           proto.name)
            remote[f"{proto.name}-tcp"] = ports.take()
        if catchall:
            listeners += meta_listener_yaml(f"{proto.name}-all", f"198.18.29.{30 + i}", 20880,
                                            proto.name, CATCH_ALL.format(cluster=proto.name))
            remote[f"{proto.name}-all"] = ports.take()
    return NodemeshProxy(procs, listeners, clusters, remote, workers, root).start(), remote


def main(argv=None) -> int:
    ap = arg_parser("bench.proxy_rpc")
    ap.add_argument("--only", choices=("dubbo", "thrift"), help="one protocol")
    ap.add_argument("--depth", type=int, action="append",
                    help="requests in flight per connection (repeatable; default 1 and 16)")
    args = ap.parse_args(argv)
    p = QUICK if args.quick else FULL
    rounds = args.rounds or p["rounds"]
    ports = Ports()
    results = {"workers": args.workers, "connections": CONNS, "seconds": p["seconds"],
               "rounds": rounds, "proxy_commit": proxy_commit(), "rows": [], "profiles": [],
               **candidate_info(args.candidate)}
    summaries = {}
    with Procs() as procs:
        exe = build_load_tool(procs)
        protos = protocols(procs, ports)
        backends = {}
        for proto in protos:
            proto.write(procs.tmp)
            backends[proto.name] = ports.take()
            procs.start([exe, "rpc-serve", "-t", f"{HOST}:{backends[proto.name]}", "-f",
                         proto.reply_file, *proto.framing(), "-T", "900"],
                        port=backends[proto.name], ready_line="ready")
        proxy, remote = nodemesh_proxy(procs, ports, backends, protos, args.workers,
                                       p["nodemesh_tcp"], catchall=p["catchall"])
        cand = cand_remote = None
        if args.candidate:
            cand, cand_remote = nodemesh_proxy(procs, ports, backends, protos, args.workers,
                                               False, args.candidate)
        for proto in protos:
            if args.only and proto.name != args.only:
                continue
            backend = backends[proto.name]
            peers = [direct_peer(backend), uvloop_relay_peer(procs, ports, backend)]
            if p["haproxy"]:
                peers.append(haproxy_peer(procs, ports, "tcp", backend, args.workers,
                                          "haproxy-tcp"))
            if p["nodemesh_tcp"]:
                peers.append(Peer("nodemesh-tcp", remote[f"{proto.name}-tcp"], proxy.pids,
                                  note="nodemesh tcp_proxy chain"))
            if p["catchall"]:
                peers.append(Peer("nodemesh-catchall", remote[f"{proto.name}-all"], proxy.pids,
                                  note="MetaProtocol chain, one catch-all route (batches)"))
            nm = Peer("nodemesh", remote[proto.name], proxy.pids, note="MetaProtocol chain")
            peers.append(nm)
            if cand is not None:
                peers.append(Peer("candidate", cand_remote[proto.name], cand.pids,
                                  note=f"nodemesh from {args.candidate}"))
            for peer in peers:
                load(exe, proto, peer.port, 1, 0.3)          # warm up
            for depth in args.depth or p["depths"]:
                shape = f"{proto.name} depth {depth}"
                samples = alternate(peers, rounds, lambda peer, proto=proto, depth=depth: load(
                    exe, proto, peer.port, depth, p["seconds"]), shape)
                rows = summarize(samples, reference="uvloop-relay")
                for row in rows:
                    row.update(protocol=proto.name, depth=depth)
                summaries[(proto.name, depth)] = {r["peer"]: r for r in rows}
                results["rows"] += rows
                print_rows(f"{proto.name}: {CONNS} connections x {depth} in flight "
                           f"(medians of {rounds})", rows,
                           ["peer", "rate", "vs_uvloop-relay", "p50_us", "p99_us",
                            "cpu_us_per_req", "user_us_per_req", "system_us_per_req"])
            if (p["profile"] and not args.candidate) or args.profile:
                for depth in args.depth or p["depths"]:
                    prof = profile(nm, lambda proto=proto, nm=nm, depth=depth: load(
                        exe, proto, nm.port, depth, 4.0), procs.tmp,
                                   spy_pid=proxy.worker_pids[0], seconds=3.0)
                    prof.update(protocol=proto.name, depth=depth)
                    results["profiles"].append(prof)
                    print_profile(prof)
            for peer in peers:
                peer.stop()
        proxy.stop()
        if cand is not None:
            cand.stop()
    if not args.candidate:                  # an A/B run is not the record
        results["claims"] = claims(summaries, args.workers)
    write_results(f"proxy_rpc{'_ab' if args.candidate else ''}", results)
    return 0


def claims(s: dict, workers: int) -> list:
    out = []
    for (proto, depth), rows in sorted(s.items()):
        nm, relay = rows["nodemesh"], rows["uvloop-relay"]
        note = f"CPU/request {nm['cpu_us_per_req']:.1f} us vs relay {relay['cpu_us_per_req']:.1f} us"
        if "haproxy-tcp" in rows:
            ha = rows["haproxy-tcp"]
            note += (f"; vs haproxy mode tcp {nm['rate'] / max(ha['rate'], 1):.2f}x "
                     f"({ha['cpu_us_per_req']:.1f} us/request)")
        out.append(claim(f"{proto.capitalize()} {CONNS} connections x {depth} in flight: "
                         f"nodemesh L7 req/s vs a plain uvloop L4 relay (--workers {workers})",
                         nm["vs_uvloop-relay"], 0.8, note=note))
    for (proto, depth), rows in sorted(s.items()):
        nm = rows["nodemesh"]
        out.append(claim(f"{proto.capitalize()} depth {depth}: nodemesh vCPU per 1,000 req/s "
                         "(Istio sidecar 0.20, waypoint 0.25)", nm["proxy_vcpu_per_1k_rps"],
                         0.05, "<=", "vCPU", note=f"{nm['cpu_us_per_req']:.1f} us CPU per request"))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
