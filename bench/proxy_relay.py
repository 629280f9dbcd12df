"""A plain L4 byte relay on uvloop protocol callbacks: the proxy benchmarks' floor.

    python -m bench.proxy_relay LISTEN_HOST LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT

The same runtime as the nodemesh proxy (uvloop, asyncio.Protocol, one
process) doing nothing but forwarding: what is left between it and the proxy
is the proxy's L7 work. Bytes that arrive before the upstream connection is
up are held; a slow side pauses reading on the other.
"""

import asyncio
import sys


class Upstream(asyncio.Protocol):
    def __init__(self, client):
        self.client = client

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.client.transport.write(data)

    def pause_writing(self):
        self.client.transport.pause_reading()

    def resume_writing(self):
        self.client.transport.resume_reading()

    def connection_lost(self, exc):
        self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, upstream_addr):
        self.upstream_addr = upstream_addr
        self.upstream = None
        self.early = []

    def connection_made(self, transport):
        self.transport = transport
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self):
        loop = asyncio.get_running_loop()
        try:
            _, self.upstream = await loop.create_connection(lambda: Upstream(self),
                                                            *self.upstream_addr)
        except OSError:
            self.transport.close()
            return
        if self.early:
            self.upstream.transport.write(b"".join(self.early))
            self.early = []

    def data_received(self, data):
        if self.upstream is None:
            self.early.append(data)
        else:
            self.upstream.transport.write(data)

    def pause_writing(self):
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self):
        if self.upstream is not None:
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc):
        if self.upstream is not None:
            self.upstream.transport.close()


async def serve(host, port, up_host, up_port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client((up_host, up_port)), host, port,
                                      reuse_address=True, backlog=4096)
    await server.serve_forever()


def main(argv):
    import uvloop

    host, port, up_host, up_port = argv
    uvloop.run(serve(host, int(port), up_host, int(up_port)))


if __name__ == "__main__":
    main(sys.argv[1:])
