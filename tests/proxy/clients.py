"""Real clients for the proxy tests: a Dubbo consumer (python-hessian bodies) and a
Thrift client on the `thrift` package's transports and protocols."""

from __future__ import annotations

import socket
import struct
import sys

from agent.demo import dubbo_wire

from .backends import DUBBO_HEADER, hessian_values, thrift_factories

HEARTBEAT = DUBBO_HEADER.pack(0xDABB, 0x80 | 0x40 | 0x20 | 2, 0, 0, 1) + b"N"


class DubboConsumer:
    """Blocking consumer; send() several requests then recv() their replies in any order."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.next_id = 1

    def send(self, method: str, arg: str = "", attachments=None, service="org.demo.Greeter",
             rid=None) -> int:
        rid = self.next_id if rid is None else rid
        self.next_id = max(self.next_id, rid) + 1
        self.sock.sendall(dubbo_wire.request(rid, service, method, str(arg), attachments))
        return rid

    def send_oneway(self, method: str, arg: str = "", service="org.demo.Greeter") -> None:
        frame = bytearray(dubbo_wire.request(0, service, method, str(arg)))
        frame[2] &= ~0x40                           # not two-way
        self.sock.sendall(bytes(frame))

    def recv(self):
        """(flags, status, request id, value or message) of the next frame."""
        flags, status, rid, body = dubbo_wire.read_frame(self.sock)
        if flags & 0x20:
            return flags, status, rid, body
        values = hessian_values(body)
        value = values[1] if status == 20 and len(values) > 1 else (values[0] if values else "")
        return flags, status, rid, value

    def call(self, method: str, arg: str = "", attachments=None, service="org.demo.Greeter"):
        rid = self.send(method, arg, attachments, service)
        while True:
            flags, status, got, value = self.recv()
            if got == rid and not flags & 0x20:
                return status, value

    def close(self):
        self.sock.close()


class ThriftError(Exception):
    pass


class ThriftClient:
    def __init__(self, port: int, protocol: str = "binary", transport: str = "framed",
                 timeout: float = 10.0):
        from thrift.transport import TSocket

        sock = TSocket.TSocket("127.0.0.1", port)
        sock.setTimeout(timeout * 1000)
        pf, tf = thrift_factories(protocol, transport)
        self.trans = tf.getTransport(sock)
        self.trans.open()
        self.proto = pf.getProtocol(self.trans)
        self.seqid = 0

    def _send(self, method: str, arg, mtype):
        from thrift.Thrift import TType

        self.seqid += 1
        p = self.proto
        p.writeMessageBegin(method, mtype, self.seqid)
        p.writeStructBegin("args")
        if isinstance(arg, int):
            p.writeFieldBegin("ms", TType.I32, 1)
            p.writeI32(arg)
            p.writeFieldEnd()
        elif arg is not None:
            p.writeFieldBegin("msg", TType.STRING, 1)
            p.writeString(arg)
            p.writeFieldEnd()
        p.writeFieldStop()
        p.writeStructEnd()
        p.writeMessageEnd()
        self.trans.flush()

    def call(self, method: str, arg=None) -> str:
        from thrift.Thrift import TApplicationException, TMessageType, TType

        self._send(method, arg, TMessageType.CALL)
        p = self.proto
        name, mtype, seqid = p.readMessageBegin()
        if mtype == TMessageType.EXCEPTION:
            exc = TApplicationException()
            exc.read(p)
            p.readMessageEnd()
            raise ThriftError(f"{exc.type}: {exc.message}")
        assert seqid == self.seqid, (seqid, self.seqid)
        result = None
        p.readStructBegin()
        while True:
            _, ftype, fid = p.readFieldBegin()
            if ftype == TType.STOP:
                break
            if fid == 0 and ftype == TType.STRING:
                result = p.readString()
            else:
                p.skip(ftype)
            p.readFieldEnd()
        p.readStructEnd()
        p.readMessageEnd()
        return result

    def oneway(self, method: str, arg=None) -> None:
        from thrift.Thrift import TMessageType

        self._send(method, arg, TMessageType.ONEWAY)

    def close(self):
        self.trans.close()


def backend_cmd(kind: str, port: int, name: str, *opts) -> list:
    return [sys.executable, "-m", "tests.proxy.backends", kind, str(port), name, *opts]


__all__ = ["DubboConsumer", "ThriftClient", "ThriftError", "HEARTBEAT", "backend_cmd",
           "struct"]


class Http:
    """A keep-alive HTTP/1.1 client (http.client), optionally from a given source address."""

    def __init__(self, port: int, source: str = "127.0.0.1", host: str = "web.local",
                 timeout: float = 10.0):
        import http.client

        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                               source_address=(source, 0))
        self.host = host

    def get(self, path: str = "/", method: str = "GET", headers=None):
        """(status, headers dict lower-cased, body bytes)."""
        self.conn.request(method, path, headers={"Host": self.host, **(headers or {})})
        resp = self.conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body

    def close(self):
        self.conn.close()
