"""Small real upstreams for the health-check tests, run as subprocesses so a
test can SIGKILL them: `python -m tests.proxy.policies.servers KIND PORT`.

- http:   HTTP/1.1 keep-alive server (http.server); /ok 200, /moved 302,
          /broken 500, /connections reports how many connections it accepted.
- dubbo:  Dubbo provider side of heartbeats, built on agent.codec: answers
          each heartbeat event with the codec's heartbeat_reply().
- dubbo-garbage: answers every request with bytes that are not Dubbo.
- thrift: Thrift server from the `thrift` package (TThreadedServer, framed
          binary) whose processor answers `ping` and raises
          TApplicationException(UNKNOWN_METHOD) for anything else.
"""

import asyncio
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PING_METHOD = "ping"


def serve_http(port: int) -> None:
    accepted = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            with lock:
                accepted["n"] += 1
            super().setup()

        def do_GET(self):
            status, body = {"/ok": (200, b"ok"), "/moved": (302, b""),
                            "/broken": (500, b"down")}.get(self.path, (404, b"no"))
            if self.path == "/connections":
                status, body = 200, str(accepted["n"]).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def serve_dubbo(port: int, garbage: bool = False) -> None:
    from agent.codec import CodecError, decoder_for

    async def handle(reader, writer):
        decoder = decoder_for("dubbo")
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    if garbage:
                        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    elif frame.kind == "heartbeat":
                        writer.write(decoder.heartbeat_reply(frame))
                await writer.drain()
        except (CodecError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def serve_thrift(port: int) -> None:
    from thrift.protocol import TBinaryProtocol
    from thrift.server import TServer
    from thrift.Thrift import TApplicationException, TMessageType, TType
    from thrift.transport import TSocket, TTransport

    class Processor:
        def process(self, iprot, oprot):
            name, _, seqid = iprot.readMessageBegin()
            iprot.skip(TType.STRUCT)
            iprot.readMessageEnd()
            if name == PING_METHOD:
                oprot.writeMessageBegin(name, TMessageType.REPLY, seqid)
                oprot.writeStructBegin("ping_result")
                oprot.writeFieldStop()
                oprot.writeStructEnd()
            else:
                oprot.writeMessageBegin(name, TMessageType.EXCEPTION, seqid)
                TApplicationException(TApplicationException.UNKNOWN_METHOD,
                                      f"unknown method {name}").write(oprot)
            oprot.writeMessageEnd()
            oprot.trans.flush()
            return True

    server = TServer.TThreadedServer(
        Processor(), TSocket.TServerSocket(host="127.0.0.1", port=port),
        TTransport.TFramedTransportFactory(), TBinaryProtocol.TBinaryProtocolFactory())
    server.daemon = True
    server.serve()


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    {"http": serve_http, "dubbo": serve_dubbo, "thrift": serve_thrift,
     "dubbo-garbage": lambda p: serve_dubbo(p, garbage=True)}[kind](port)
