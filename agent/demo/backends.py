"""Demo backends: each names itself in its replies, so routing is visible.

    python -m agent.demo.backends http1|thrift|dubbo HOST PORT NAME

redis-server is started as is (a real one); these three are small but real
servers: http.server (HTTP/1.1 keep-alive), thriftpy2 (framed binary) and a
Dubbo provider answering hessian2 requests. Each prints "ready" when listening.
"""

import socketserver
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import dubbo_wire


def http1(host, port, name):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = -1           # one write per response (flushed per request), no 40 ms stall

        def do_GET(self):
            body = f"{name} {self.headers.get('x-pod', '-')}\n".encode()
            self.send_response(200)
            self.send_header("X-Backend", name)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    _ready()
    server.serve_forever()


def thrift(host, port, name):
    import thriftpy2
    from thriftpy2.rpc import make_server
    from thriftpy2.transport import TFramedTransportFactory

    from .rpc_clients import IDL

    echo = thriftpy2.load(IDL, module_name="echo_thrift")

    class Handler:
        def echo(self, message):
            return f"{name} {message}"

        def note(self, message):
            pass

    server = make_server(echo.Echo, Handler(), host, port,
                         trans_factory=TFramedTransportFactory(), client_timeout=None)
    _ready()
    server.serve()


def dubbo(host, port, name):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                try:
                    flags, _, rid, body = dubbo_wire.read_frame(self.request)
                except (ConnectionError, OSError, ValueError):
                    return
                if flags & dubbo_wire.FLAG_EVENT:
                    self.request.sendall(dubbo_wire.heartbeat_reply(rid))
                    continue
                arg = _dubbo_argument(body)
                self.request.sendall(dubbo_wire.response(rid, f"{name} {arg}"))

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    server = Server((host, port), Handler)
    _ready()
    server.serve_forever()


def _dubbo_argument(body: bytes) -> str:
    """The one String argument: the sixth hessian string of the body (each 'S' + 16-bit
    length, as the demo's consumer writes them)."""
    out, i = [], 0
    while len(out) < 6 and i < len(body) and body[i:i + 1] == b"S":
        n = int.from_bytes(body[i + 1:i + 3], "big")
        out.append(body[i + 3:i + 3 + n].decode())
        i += 3 + n
    return out[5] if len(out) == 6 else "?"


def _ready():
    print("ready", flush=True)


SERVERS = {"http1": http1, "thrift": thrift, "dubbo": dubbo}

if __name__ == "__main__":
    kind, host, port, name = sys.argv[1:5]
    SERVERS[kind](host, int(port), name)
