"""Request decoders kept for reuse, per filter chain.

A decoder holds a couple of KiB of C arrays. A client connection takes one
on its first bytes; when it has been idle for a while with no partial frame
the worker hands the decoder back here, so 10,000 idle keep-alive clients do
not hold 10,000 decoders. Only codecs whose decoder keeps no state between
complete frames are recycled: Redis and Dubbo requests. (HTTP/1.1 stops
after an upgrade, Thrift pins the transport it detected, a length-field
layout may be either; they keep theirs for the connection's life.)
"""

from __future__ import annotations

from typing import Dict, List

RECYCLED = frozenset({"redis", "dubbo"})
MAX_KEPT = 256           # per chain: enough for bursts of returning clients, bounded


class DecoderPool:
    def __init__(self):
        self._free: Dict[tuple, List] = {}
        self._replies: Dict[tuple, object] = {}

    def take(self, chain):
        free = self._free.get(chain.identity)
        return free.pop() if free else chain.request_decoder()

    def give(self, chain, decoder) -> bool:
        if chain.codec not in RECYCLED:
            return False
        free = self._free.setdefault(chain.identity, [])
        if len(free) >= MAX_KEPT:
            return True                   # dropped: the connection re-creates one if needed
        free.append(decoder)
        return True

    def for_replies(self, chain):
        """A decoder to build local replies with (they depend on the options only)."""
        dec = self._replies.get(chain.identity)
        if dec is None:
            dec = self._replies[chain.identity] = chain.request_decoder()
        return dec

    def clear(self) -> None:
        self._free.clear()
        self._replies.clear()
