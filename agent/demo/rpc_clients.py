"""Thrift (thriftpy2) and Dubbo (hessian2) demo clients for load.py."""

import os
import select
import socket

from . import dubbo_wire
from .load import CONNECT_TIMEOUT, REQUEST_TIMEOUT, Lost, peer_closed

IDL = os.path.join(os.path.dirname(__file__), "echo.thrift")


class ThriftClient:
    """A real Thrift client: thriftpy2, binary protocol, framed transport."""

    def __init__(self, host, port, pod):
        import thriftpy2

        self.echo = thriftpy2.load(IDL, module_name="echo_thrift")
        self.host, self.port, self.pod = host, port, pod
        self.client = self.tsocket = None

    def _connect(self):
        from thriftpy2.protocol import TBinaryProtocolFactory
        from thriftpy2.thrift import TClient
        from thriftpy2.transport import TFramedTransportFactory, TSocket

        self.tsocket = TSocket(self.host, self.port, socket_timeout=int(REQUEST_TIMEOUT * 1000),
                               connect_timeout=int(CONNECT_TIMEOUT * 1000))
        transport = TFramedTransportFactory().get_transport(self.tsocket)
        transport.open()
        self.client = TClient(self.echo.Echo, TBinaryProtocolFactory().get_protocol(transport))

    def request(self):
        from thriftpy2.transport import TTransportException

        try:
            if self.client is not None and peer_closed(self.tsocket.sock):
                self.reconnect()                 # closed while idle (a draining proxy)
            if self.client is None:
                self._connect()
            reply = self.client.echo(self.pod)
        except (TTransportException, OSError, EOFError) as e:
            self.reconnect()
            raise Lost(str(e)) from None
        backend, _, echoed = reply.partition(" ")
        if echoed != self.pod:
            raise ValueError(f"echo returned {reply!r}")
        return backend

    def reconnect(self):
        if self.tsocket is not None:
            self.tsocket.close()
        self.client = self.tsocket = None


class DubboClient:
    """A Dubbo consumer: hessian2 request bodies, one request at a time."""

    SERVICE = "org.apache.dubbo.demo.EchoService"

    def __init__(self, host, port, pod):
        self.addr, self.pod = (host, port), pod
        self.sock, self.rid, self.reconnect_after = None, 0, False

    def request(self):
        self.rid += 1
        try:
            if self.sock is not None and self._told_to_go():
                self.reconnect()                 # readonly event or closed, while idle
            if self.sock is None:
                self.sock = socket.create_connection(self.addr, timeout=CONNECT_TIMEOUT)
                self.sock.settimeout(REQUEST_TIMEOUT)
            self.sock.sendall(dubbo_wire.request(self.rid, self.SERVICE, "echo", self.pod,
                                                 {"pod": self.pod}))
            while True:
                flags, status, rid, body = dubbo_wire.read_frame(self.sock)
                if flags & dubbo_wire.FLAG_EVENT:
                    if flags & dubbo_wire.FLAG_REQUEST:
                        self.reconnect_after = True      # the readonly event: proxy draining
                    continue
                break
        except (OSError, ConnectionError) as e:
            self.reconnect()
            raise Lost(str(e)) from None
        if self.reconnect_after:
            self.reconnect()
        if status != dubbo_wire.OK or rid != self.rid:
            raise ValueError(f"dubbo status {status} for request {rid}")
        backend, _, echoed = dubbo_wire.last_string(body).partition(" ")
        if echoed != self.pod:
            raise ValueError(f"echo returned {echoed!r}")
        return backend

    def _told_to_go(self) -> bool:
        """Read what arrived while idle, as a consumer's I/O thread does: the provider's
        readonly event (a draining proxy) or a close retire this channel."""
        while not peer_closed(self.sock):
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return self.reconnect_after
            flags, _, _, _ = dubbo_wire.read_frame(self.sock)
            if flags & dubbo_wire.FLAG_EVENT and flags & dubbo_wire.FLAG_REQUEST:
                self.reconnect_after = True
        return True

    def reconnect(self):
        self.reconnect_after = False
        if self.sock is not None:
            self.sock.close()
        self.sock = None

