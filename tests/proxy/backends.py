"""Real upstream servers for the proxy tests, each run as its own process:

    python -m tests.proxy.backends http|dubbo|thrift|garbage PORT NAME [OPTIONS]

- http: http.server (HTTP/1.1 keep-alive). GET /status/N answers N, /sleep/MS waits,
  /count returns how many requests it served; every answer names the backend
  (X-Backend header, JSON body with the request's headers). OPTIONS: status=N answers
  every other request with N (a failing host).
- dubbo: a Dubbo 2 provider (consumers write bodies with python-hessian's encoder;
  hessian_values() reads them). One thread per request, so replies can overtake each
  other; methods: sleep(ms), fail (SERVER_ERROR), garbage (bytes that are not
  Dubbo), count; anything else answers "NAME|method|arg|attachments-json".
- thrift: the `thrift` package's TThreadedServer with a hand-written processor;
  OPTIONS: binary|compact framed|buffered. Methods echo(1: string), sleep(1: i32 ms),
  count(), oneway note(1: string).
- garbage: answers every read with bytes no codec accepts.
Each prints "ready" once listening.
"""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTS: dict = {}
_LOCK = threading.Lock()


def _count(key: str) -> None:
    with _LOCK:
        COUNTS[key] = COUNTS.get(key, 0) + 1


def _ready() -> None:
    print("ready", flush=True)


# -- HTTP/1.1 --------------------------------------------------------------------------

def http(host, port, name, *opts):
    fixed = int(opts[0].split("=", 1)[1]) if opts and opts[0].startswith("status=") else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = -1

        def _answer(self, body_wanted=True):
            path = self.path
            if path != "/count":
                _count("requests")
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            status = fixed or 200
            if path.startswith("/status/"):
                status = int(path.split("/")[2])
            elif path.startswith("/sleep/"):
                time.sleep(int(path.split("/")[2]) / 1000)
            if path == "/count":
                body = json.dumps(COUNTS).encode()
            else:
                body = json.dumps({"backend": name, "path": path, "method": self.command,
                                   "headers": {k.lower(): v for k, v in self.headers.items()}}
                                  ).encode()
            self.send_response(status)
            self.send_header("X-Backend", name)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body_wanted:
                self.wfile.write(body)

        def do_GET(self):
            self._answer()

        do_POST = do_PUT = do_DELETE = do_GET

        def do_HEAD(self):
            self._answer(body_wanted=False)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    _ready()
    server.serve_forever()


# -- Dubbo -----------------------------------------------------------------------------

DUBBO_HEADER = struct.Struct(">HBBqI")


def hessian_values(body: bytes) -> list:
    """The hessian2 values of a Dubbo body (strings, ints, null, booleans, maps): enough
    for what consumers write. (pyhessian's own reader drops bytes 0x7a-0x7f from strings,
    so it only encodes here.)"""
    out, pos = [], 0
    while pos < len(body):
        value, pos = _hvalue(body, pos)
        out.append(value)
    return out


def _hvalue(b: bytes, i: int):
    c = b[i]
    if c <= 0x1F:
        return _hchars(b, i + 1, c)
    if 0x30 <= c <= 0x33:
        return _hchars(b, i + 2, ((c - 0x30) << 8) | b[i + 1])
    if c in (0x52, 0x53):                       # 'R' chunk, 'S' final chunk
        text, j = _hchars(b, i + 3, int.from_bytes(b[i + 1:i + 3], "big"))
        if c == 0x52:
            rest, j = _hvalue(b, j)
            text += rest
        return text, j
    if 0x80 <= c <= 0xBF:
        return c - 0x90, i + 1
    if c == 0x49:                               # 'I'
        return int.from_bytes(b[i + 1:i + 5], "big", signed=True), i + 5
    if c == 0x4E:
        return None, i + 1
    if c in (0x54, 0x46):
        return c == 0x54, i + 1
    if c in (0x48, 0x4D):                       # 'H' untyped map, 'M' typed map
        j = i + 1
        if c == 0x4D:
            _, j = _hvalue(b, j)
        out = {}
        while b[j] != 0x5A:
            k, j = _hvalue(b, j)
            v, j = _hvalue(b, j)
            out[k] = v
        return out, j + 1
    raise ValueError(f"hessian2 code {c:#x} at {i} not supported by the test reader")


def _hchars(b: bytes, i: int, n: int):
    """n UTF-16 units of UTF-8 from i (BMP only, as the tests write)."""
    j = i
    for _ in range(n):
        lead = b[j]
        j += 1 if lead < 0x80 else 2 if lead < 0xE0 else 3
    return b[i:j].decode("utf-8"), j


def _hstring(text: str) -> bytes:
    raw = text.encode()
    return b"S" + struct.pack(">H", len(text)) + raw


def dubbo_response(rid: int, value: str, status: int = 20) -> bytes:
    body = (b"\x91" + _hstring(value)) if status == 20 else _hstring(value)
    return DUBBO_HEADER.pack(0xDABB, 2, status, rid, len(body)) + body


def dubbo(host, port, name, *_):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            lock = threading.Lock()
            sock = self.request
            while True:
                head = _read(sock, 16)
                if head is None:
                    return
                _, flags, _, rid, length = DUBBO_HEADER.unpack(head)
                body = _read(sock, length) or b""
                if flags & 0x20:                       # event: heartbeat or readonly
                    _count("events")
                    if flags & 0x40:
                        with lock:
                            sock.sendall(DUBBO_HEADER.pack(0xDABB, 0x22, 20, rid, 1) + b"N")
                    continue
                values = hessian_values(body)
                method, args = values[3], values[5:-1]
                attachments = values[-1] if isinstance(values[-1], dict) else {}
                _count(method)
                if not flags & 0x40:                   # oneway
                    continue
                threading.Thread(target=self._call, args=(sock, lock, rid, method, args,
                                                          attachments), daemon=True).start()

        def _call(self, sock, lock, rid, method, args, attachments):
            arg = args[0] if args else ""
            if method == "sleep":
                time.sleep(int(arg) / 1000)
            if method == "garbage":
                out = b"this is not dubbo at all" * 2
            elif method == "fail":
                out = dubbo_response(rid, f"{name} failed", status=80)
            elif method == "count":
                out = dubbo_response(rid, json.dumps(COUNTS))
            else:
                out = dubbo_response(rid, f"{name}|{method}|{arg}|{json.dumps(attachments)}")
            with lock:
                try:
                    sock.sendall(out)
                except OSError:
                    pass

    _threaded_tcp(host, port, Handler)


def _read(sock, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def _threaded_tcp(host, port, handler):
    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    server = Server((host, port), handler)
    _ready()
    server.serve_forever()


# -- Thrift (the `thrift` package) -----------------------------------------------------

class ThriftProcessor:
    """echo/sleep/count and oneway note, written against TProtocol directly."""

    def __init__(self, name):
        self.name = name

    def process(self, iprot, oprot):
        from thrift.Thrift import TMessageType, TType

        method, mtype, seqid = iprot.readMessageBegin()
        args = {}
        iprot.readStructBegin()
        while True:
            _, ftype, fid = iprot.readFieldBegin()
            if ftype == TType.STOP:
                break
            if ftype == TType.STRING:
                args[fid] = iprot.readString()
            elif ftype == TType.I32:
                args[fid] = iprot.readI32()
            else:
                iprot.skip(ftype)
            iprot.readFieldEnd()
        iprot.readStructEnd()
        iprot.readMessageEnd()
        _count(method)
        if mtype == TMessageType.ONEWAY:
            return True
        if method == "sleep":
            time.sleep(args.get(1, 0) / 1000)
            result = f"{self.name} slept"
        elif method == "count":
            result = json.dumps(COUNTS)
        else:
            result = f"{self.name} {args.get(1, '')}"
        oprot.writeMessageBegin(method, TMessageType.REPLY, seqid)
        oprot.writeStructBegin("result")
        oprot.writeFieldBegin("success", TType.STRING, 0)
        oprot.writeString(result)
        oprot.writeFieldEnd()
        oprot.writeFieldStop()
        oprot.writeStructEnd()
        oprot.writeMessageEnd()
        oprot.trans.flush()
        return True


def thrift_factories(protocol: str, transport: str):
    from thrift.protocol import TBinaryProtocol, TCompactProtocol
    from thrift.transport import TTransport

    pf = TCompactProtocol.TCompactProtocolFactory() if protocol == "compact" else \
        TBinaryProtocol.TBinaryProtocolFactory()
    tf = TTransport.TFramedTransportFactory() if transport == "framed" else \
        TTransport.TBufferedTransportFactory()
    return pf, tf


def thrift(host, port, name, protocol="binary", transport="framed"):
    from thrift.server import TServer
    from thrift.transport import TSocket

    pf, tf = thrift_factories(protocol, transport)
    server = TServer.TThreadedServer(ThriftProcessor(name), TSocket.TServerSocket(host, port),
                                     tf, pf, daemon=True)
    server.serverTransport.listen()
    server.serverTransport.listen = lambda: None    # already listening: say ready first
    _ready()
    server.serve()


# -- a private length-field protocol (see LF_OPTIONS) ----------------------------------

LF_HEADER = struct.Struct(">HBBII8s")      # magic, kind, status, length (whole frame), id, method
LF_OPTIONS = {"magic": 0x4E4D, "magic_size": 2, "length_offset": 4, "length_size": 4,
              "length_includes_header": 1, "header_length": 20, "id_offset": 8, "id_size": 4,
              "kind_offset": 2, "kind_response_mask": 1, "kind_oneway_mask": 2,
              "kind_heartbeat_mask": 4,
              "fields": [{"name": "status", "offset": 3, "length": 1, "integer": True},
                         {"name": "method", "offset": 12, "length": 8}]}


def lf_frame(kind: int, rid: int, method: str, body: bytes, status: int = 0) -> bytes:
    return LF_HEADER.pack(0x4E4D, kind, status, 20 + len(body), rid,
                          method.encode().ljust(8, b"\0")) + body


def lengthfield(host, port, name, *_):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                head = _read(self.request, 20)
                if head is None:
                    return
                _, kind, _, length, rid, method = LF_HEADER.unpack(head)
                body = _read(self.request, length - 20) or b""
                method = method.rstrip(b"\0").decode()
                _count(method)
                if kind & 2:
                    continue
                self.request.sendall(lf_frame(kind | 1, rid, method,
                                              f"{name} {method} ".encode() + body))

    _threaded_tcp(host, port, Handler)


# -- garbage ---------------------------------------------------------------------------

def garbage(host, port, name, *_):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                try:
                    data = self.request.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                _count("reads")
                self.request.sendall(b"\x00\xffnot a reply in any protocol\r\n")

    _threaded_tcp(host, port, Handler)


def echo(host, port, name, *_):
    """Echoes bytes back; on EOF from the client, finishes and closes (half-close)."""
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                try:
                    data = self.request.recv(1 << 16)
                except OSError:
                    return
                if not data:
                    self.request.shutdown(socket.SHUT_WR)
                    return
                self.request.sendall(data)

    _threaded_tcp(host, port, Handler)


SERVERS = {"echo": echo, "http": http, "dubbo": dubbo, "thrift": thrift, "lengthfield": lengthfield,
           "garbage": garbage}

if __name__ == "__main__":
    kind, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    SERVERS[kind]("127.0.0.1", port, name, *sys.argv[4:])
