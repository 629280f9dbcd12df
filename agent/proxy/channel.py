"""The supervisor <-> worker channel: length-prefixed messages over a socketpair.

Messages are (kind, id, payload) tuples, pickled: both ends are processes
of the same nodemesh installation started by the supervisor, the socketpair
is private to them (never a listening socket), so pickle's trust model
holds. Configuration travels as serialized protobufs inside the payload.
`request()` waits for the ("reply", id, payload) of its id.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import struct
from typing import Callable, Dict, Optional

_LEN = struct.Struct(">I")
MAX_MESSAGE = 256 << 20     # a full configuration of 50,000 services fits


class ChannelClosed(ConnectionError):
    pass


class Channel(asyncio.Protocol):
    def __init__(self, on_message: Callable[["Channel", tuple], None],
                 on_lost: Optional[Callable[["Channel"], None]] = None):
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport = None
        self._buf = bytearray()
        self._ids = itertools.count(1)
        self._waiting: Dict[int, asyncio.Future] = {}
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        buf = self._buf
        buf += data
        while len(buf) >= 4:
            (size,) = _LEN.unpack_from(buf)
            if size > MAX_MESSAGE:
                self.transport.close()
                return
            if len(buf) < 4 + size:
                break
            msg = pickle.loads(bytes(buf[4:4 + size]))
            del buf[:4 + size]
            if msg[0] == "reply":
                fut = self._waiting.pop(msg[1], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg[2])
            else:
                self.on_message(self, msg)

    def connection_lost(self, exc):
        self.closed = True
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ChannelClosed("worker channel closed"))
        self._waiting.clear()
        if self.on_lost is not None:
            self.on_lost(self)

    def send(self, kind: str, payload=None, msg_id: int = 0) -> None:
        if self.closed or self.transport is None:
            raise ChannelClosed("worker channel closed")
        raw = pickle.dumps((kind, msg_id, payload), protocol=pickle.HIGHEST_PROTOCOL)
        self.transport.write(_LEN.pack(len(raw)) + raw)

    def reply(self, msg_id: int, payload) -> None:
        self.send("reply", payload, msg_id)

    async def request(self, kind: str, payload=None, timeout: float = 5.0):
        msg_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = fut
        try:
            self.send(kind, payload, msg_id)
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(msg_id, None)

    def close(self):
        if self.transport is not None:
            self.transport.close()
